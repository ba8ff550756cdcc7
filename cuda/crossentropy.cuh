// Softmax + cross-entropy over a vocabulary on the GPU, fused as in
// layers/crossentropy.h: one buffer holds a row's logits and then, in place, their
// gradient, so the probabilities are never stored. The trainer goes further: it
// computes the logits a chunk of rows at a time and consumes each chunk's gradient at
// once (train_gpt_flow.cu's output layer), so that the (B,T,V) logits are never whole:
// for WikiText-103 (V = 267,744) and 2,048 tokens they would be 2.2 GB.
//   logits is (N,V); targets is (N), a target < 0 marks a row that is not scored (loss
//   0, no gradient). A block per row: an online max and sum of exps (Milakov and
//   Gimelshein) over the row's strided elements, then one combine across the block.
#ifndef CUDA_CROSSENTROPY_CUH
#define CUDA_CROSSENTROPY_CUH

#include "cuda/common.cuh"

// The log-sum-exp of the block's row l (V), in every thread.
__device__ float row_logsumexp(const float* l, int V) {
    float m = -FLT_MAX, s = 0;  // this thread's running max and sum of exp(x - m)
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        float x = l[v];
        if (x > m) {
            s = s * expf(m - x) + 1.0f;
            m = x;
        } else {
            s += expf(x - m);
        }
    }
    float row_max = block_max(m);
    return row_max + logf(block_sum(s * expf(m - row_max)));
}

// losses[n] = log(sum(exp(logits[n]))) - logits[n, targets[n]] (0 where targets[n] < 0).
__global__ void crossentropy_forward_kernel(float* losses, const float* logits, const int* targets, int V) {
    int n = blockIdx.x;
    const float* l = logits + (long)n * V;
    float lse = row_logsumexp(l, V);
    if (threadIdx.x == 0) losses[n] = targets[n] >= 0 ? lse - l[targets[n]] : 0.0f;
}

// The losses, and logits replaced by the gradient of dloss * sum(losses):
// dloss * (softmax(logits) - onehot(target)), zero on rows not scored.
__global__ void crossentropy_forward_backward_kernel(float* losses, float* logits, const int* targets, float dloss,
                                                     int V) {
    int n = blockIdx.x, target = targets[n];
    float* l = logits + (long)n * V;
    if (target < 0) {
        for (int v = threadIdx.x; v < V; v += blockDim.x) l[v] = 0;
        if (threadIdx.x == 0) losses[n] = 0;
        return;
    }
    float lse = row_logsumexp(l, V), target_logit = l[target];
    __syncthreads();  // every thread has read the target's logit before it is overwritten
    for (int v = threadIdx.x; v < V; v += blockDim.x) l[v] = (expf(l[v] - lse) - (v == target)) * dloss;
    if (threadIdx.x == 0) losses[n] = lse - target_logit;
}

// losses (N) of the rows of logits (N,V).
static void crossentropy_forward(float* losses, const float* logits, const int* targets, int N, int V) {
    crossentropy_forward_kernel<<<N, THREADS>>>(losses, logits, targets, V);
    CUDA_LAUNCHED();
}

// crossentropy_forward, and logits (N,V) turned into their gradient.
static void crossentropy_forward_backward(float* losses, float* logits, const int* targets, float dloss, int N,
                                          int V) {
    crossentropy_forward_backward_kernel<<<N, THREADS>>>(losses, logits, targets, dloss, V);
    CUDA_LAUNCHED();
}

#endif
