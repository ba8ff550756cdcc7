// Token embedding plus positions on the GPU, as layers/encoder.h's:
//   inp is (B,T) token ids, wte is (V,C), pos is (T,C), out is (B,T,C):
//   out[b,t] = scale * wte[inp[b,t]] + pos[t]
// The backward pass sums each token's rows in a fixed order, from an index of the
// batch's positions by token that the host builds (EncoderIndex): no atomics, so the
// gradients are the same on every run.
#ifndef CUDA_ENCODER_CUH
#define CUDA_ENCODER_CUH

#include <math.h>
#include <stdlib.h>
#include "cuda/common.cuh"

// fairseq's sinusoids, computed on the host exactly as layers/encoder.h's
// sinusoid_table (see there): table[t,i] = sin((t+2) w_i), table[t,C/2+i] = cos((t+2) w_i).
static void sinusoid_table(float* table, int T, int C) {
    int half = C / 2;
    double step = half > 1 ? log(10000.0) / (half - 1) : 0.0;
    for (int t = 0; t < T; t++) {
        float* row = table + (long)t * C;
        for (int i = 0; i < half; i++) {
            double angle = (t + 2) * exp(-step * i);
            row[i] = (float)sin(angle);
            row[half + i] = (float)cos(angle);
        }
        if (C % 2) row[C - 1] = 0;
    }
}

// A thread per element of out.
__global__ void encoder_forward_kernel(float* out, const int* inp, const float* wte, const float* pos, float scale,
                                       int BT, int T, int C) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)BT * C) return;
    int n = (int)(i / C), c = (int)(i % C);
    out[i] = scale * wte[(long)inp[n] * C + c] + pos[(long)(n % T) * C + c];
}

static void encoder_forward(float* out, const int* inp, const float* wte, const float* pos, float scale, int B, int T,
                            int C) {
    encoder_forward_kernel<<<blocks_for((long)B * T * C, THREADS), THREADS>>>(out, inp, wte, pos, scale, B * T, T, C);
    CUDA_LAUNCHED();
}

// The positions of a batch grouped by token: token tokens[u] is at positions
// positions[starts[u] .. starts[u+1]), in increasing order. Built on the host
// (encoder_index_build), its arrays copied to the device (the d_ ones).
typedef struct {
    int ntokens;         // distinct tokens in the batch
    int *tokens, *starts, *positions;          // host: (ntokens), (ntokens + 1), (B*T)
    int *d_tokens, *d_starts, *d_positions;    // device copies
    int capacity;        // positions the arrays hold
} EncoderIndex;

static int compare_token_position(const void* a, const void* b) {
    const int *x = (const int*)a, *y = (const int*)b;
    return x[0] != y[0] ? (x[0] > y[0]) - (x[0] < y[0]) : (x[1] > y[1]) - (x[1] < y[1]);
}

// The index of the n token ids inp (host memory), copied to the device.
static void encoder_index_build(EncoderIndex* e, const int* inp, int n) {
    if (n > e->capacity) {
        free(e->tokens);
        free(e->starts);
        free(e->positions);
        CUDA_CHECK(cudaFree(e->d_tokens));
        CUDA_CHECK(cudaFree(e->d_starts));
        CUDA_CHECK(cudaFree(e->d_positions));
        e->tokens = (int*)malloc_check((size_t)n * sizeof(int));
        e->starts = (int*)malloc_check(((size_t)n + 1) * sizeof(int));
        e->positions = (int*)malloc_check((size_t)n * sizeof(int));
        CUDA_CHECK(cudaMalloc(&e->d_tokens, (size_t)n * sizeof(int)));
        CUDA_CHECK(cudaMalloc(&e->d_starts, ((size_t)n + 1) * sizeof(int)));
        CUDA_CHECK(cudaMalloc(&e->d_positions, (size_t)n * sizeof(int)));
        e->capacity = n;
    }
    int* pairs = (int*)malloc_check(2 * (size_t)n * sizeof(int));  // (token, position), sorted by both
    for (int i = 0; i < n; i++) { pairs[2 * i] = inp[i]; pairs[2 * i + 1] = i; }
    qsort(pairs, (size_t)n, 2 * sizeof(int), compare_token_position);
    e->ntokens = 0;
    for (int i = 0; i < n; i++) {
        if (i == 0 || pairs[2 * i] != pairs[2 * i - 2]) {
            e->tokens[e->ntokens] = pairs[2 * i];
            e->starts[e->ntokens++] = i;
        }
        e->positions[i] = pairs[2 * i + 1];
    }
    e->starts[e->ntokens] = n;
    free(pairs);
    to_device(e->d_tokens, e->tokens, (size_t)e->ntokens * sizeof(int));
    to_device(e->d_starts, e->starts, ((size_t)e->ntokens + 1) * sizeof(int));
    to_device(e->d_positions, e->positions, (size_t)n * sizeof(int));
}

static void encoder_index_free(EncoderIndex* e) {
    free(e->tokens);
    free(e->starts);
    free(e->positions);
    CUDA_CHECK(cudaFree(e->d_tokens));
    CUDA_CHECK(cudaFree(e->d_starts));
    CUDA_CHECK(cudaFree(e->d_positions));
}

// dwte[token] += scale * (sum of dout at the token's positions): a block per distinct
// token (blockIdx.x), a thread per channel.
__global__ void encoder_backward_wte_kernel(float* dwte, const float* dout, const int* tokens, const int* starts,
                                            const int* positions, float scale, int C) {
    int u = blockIdx.x;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float sum = 0;
        for (int j = starts[u]; j < starts[u + 1]; j++) sum += dout[(long)positions[j] * C + c];
        dwte[(long)tokens[u] * C + c] += scale * sum;
    }
}

// dpos[t] += sum over the batch of dout[b,t]: a thread per element of dpos.
__global__ void encoder_backward_pos_kernel(float* dpos, const float* dout, int B, int T, int C) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)T * C) return;
    float sum = 0;
    for (int b = 0; b < B; b++) sum += dout[(long)b * T * C + i];
    dpos[i] += sum;
}

// dwte += scale * dout rows at the token ids (indexed by e, built from this batch's
// inputs); dpos += dout summed over the batch (dpos NULL for fixed positions).
static void encoder_backward(float* dwte, float* dpos, const float* dout, const EncoderIndex* e, float scale, int B,
                             int T, int C) {
    encoder_backward_wte_kernel<<<e->ntokens, THREADS>>>(dwte, dout, e->d_tokens, e->d_starts, e->d_positions,
                                                          scale, C);
    CUDA_LAUNCHED();
    if (dpos != NULL) {
        encoder_backward_pos_kernel<<<blocks_for((long)T * C, THREADS), THREADS>>>(dpos, dout, B, T, C);
        CUDA_LAUNCHED();
    }
}

#endif
