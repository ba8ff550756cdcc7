// ReLU on the GPU (fairseq's transformer_lm), as layers/relu.h's: out = max(x, 0); inp, out are (N).
#ifndef CUDA_RELU_CUH
#define CUDA_RELU_CUH

#include "cuda/common.cuh"

__global__ void relu_forward_kernel(float* out, const float* inp, long N) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < N) out[i] = inp[i] > 0 ? inp[i] : 0.0f;
}

__global__ void relu_backward_kernel(float* dinp, const float* inp, const float* dout, long N) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < N && inp[i] > 0) dinp[i] += dout[i];
}

static void relu_forward(float* out, const float* inp, long N) {
    relu_forward_kernel<<<blocks_for(N, THREADS), THREADS>>>(out, inp, N);
    CUDA_LAUNCHED();
}

// dinp += (inp > 0) dout
static void relu_backward(float* dinp, const float* inp, const float* dout, long N) {
    relu_backward_kernel<<<blocks_for(N, THREADS), THREADS>>>(dinp, inp, dout, N);
    CUDA_LAUNCHED();
}

#endif
