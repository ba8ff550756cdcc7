// Fully connected layer on the GPU, forward and backward, as layers/matmul.h's, the
// products by cuBLAS (cuda/common.cuh's gemm).
//   inp is (N, C), weight is (OC, C) as in PyTorch's nn.Linear, bias is (OC),
//   out is (N, OC).
#ifndef CUDA_MATMUL_CUH
#define CUDA_MATMUL_CUH

#include "cuda/common.cuh"
#include "cuda/colsum.cuh"

// out[n, o] = bias[o]
__global__ void broadcast_rows_kernel(float* out, const float* bias, long N, int OC) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < N * OC) out[i] = bias[i % OC];
}

// out (N,OC) = inp (N,C) weight^T + bias; bias may be NULL. As on the CPU, out starts
// as the bias and the product is added to it.
static void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C,
                           int OC) {
    if (bias != NULL) {
        broadcast_rows_kernel<<<blocks_for((long)N * OC, THREADS), THREADS>>>(out, bias, N, OC);
        CUDA_LAUNCHED();
    }
    gemm(N, OC, C, inp, C, 1, weight, 1, C, out, OC, 1.0f, bias != NULL ? 1.0f : 0.0f);
}

// dinp (N,C) += dout weight; dweight (OC,C) += dout^T inp; dbias (OC) += column sums
// of dout. dinp or dbias may be NULL when not wanted.
static void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                            const float* weight, int N, int C, int OC) {
    if (dinp != NULL) gemm(N, C, OC, dout, OC, 1, weight, C, 1, dinp, C, 1.0f, 1.0f);
    gemm(OC, C, N, dout, 1, OC, inp, C, 1, dweight, C, 1.0f, 1.0f);
    if (dbias != NULL) colsum_add(dbias, dout, N, OC);
}

#endif
