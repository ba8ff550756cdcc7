// Residual connection on the GPU: out = inp1 + inp2, all (N). As on the CPU, its
// backward pass is the residual stream's gradient passed on unchanged.
#ifndef CUDA_RESIDUAL_CUH
#define CUDA_RESIDUAL_CUH

#include "cuda/common.cuh"

__global__ void residual_forward_kernel(float* out, const float* inp1, const float* inp2, long N) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < N) out[i] = inp1[i] + inp2[i];
}

static void residual_forward(float* out, const float* inp1, const float* inp2, long N) {
    residual_forward_kernel<<<blocks_for(N, THREADS), THREADS>>>(out, inp1, inp2, N);
    CUDA_LAUNCHED();
}

#endif
