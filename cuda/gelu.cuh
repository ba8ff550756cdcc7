// GELU, tanh approximation, on the GPU, as layers/gelu.h's:
//   gelu(x) = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
// with CUDA's tanhf (within 2 ulp) where the CPU has its vectorised tanh_fast.
#ifndef CUDA_GELU_CUH
#define CUDA_GELU_CUH

#include "cuda/common.cuh"
#include "cuda/colsum.cuh"

#define GELU_SCALE 0.7978845608028654f  // sqrt(2/pi)
#define GELU_CUBIC 0.044715f

__device__ __forceinline__ float gelu(float x) {
    return 0.5f * x * (1.0f + tanhf(GELU_SCALE * (x + GELU_CUBIC * x * x * x)));
}

// d gelu(x) / dx
__device__ __forceinline__ float gelu_grad(float x) {
    float th = tanhf(GELU_SCALE * (x + GELU_CUBIC * x * x * x));
    float sech2 = 1.0f - th * th;
    float du = GELU_SCALE * (1.0f + 3.0f * GELU_CUBIC * x * x);
    return 0.5f * (1.0f + th) + 0.5f * x * sech2 * du;
}

// out = gelu(inp + bias[column]) over (N, C); bias NULL: none.
__global__ void bias_gelu_forward_kernel(float* out, const float* inp, const float* bias, long N, int C) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < N * C) out[i] = gelu(inp[i] + (bias != NULL ? bias[i % C] : 0.0f));
}

// dinp = gelu'(inp + bias[column]) dout, written.
__global__ void bias_gelu_backward_kernel(float* dinp, const float* dout, const float* inp, const float* bias,
                                          long N, int C) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < N * C) dinp[i] = gelu_grad(inp[i] + bias[i % C]) * dout[i];
}

// inp, out are (N).
static void gelu_forward(float* out, const float* inp, long N) {
    bias_gelu_forward_kernel<<<blocks_for(N, THREADS), THREADS>>>(out, inp, NULL, N, 1);
    CUDA_LAUNCHED();
}

// GELU with the bias of the matmul before it folded in: out = gelu(inp + bias);
// inp, out are (N, C), bias is (C). The pre-activation is not stored.
static void bias_gelu_forward(float* out, const float* inp, const float* bias, int N, int C) {
    bias_gelu_forward_kernel<<<blocks_for((long)N * C, THREADS), THREADS>>>(out, inp, bias, N, C);
    CUDA_LAUNCHED();
}

// dinp = gelu'(inp + bias) dout, WRITTEN, not accumulated (as on the CPU: it is both the
// pre-activation's gradient and that of the bias-free matmul output); dbias (C) += its
// column sums. dinp may be dout.
static void bias_gelu_backward(float* dinp, float* dbias, const float* dout, const float* inp, const float* bias,
                               int N, int C) {
    bias_gelu_backward_kernel<<<blocks_for((long)N * C, THREADS), THREADS>>>(dinp, dout, inp, bias, N, C);
    CUDA_LAUNCHED();
    colsum_add(dbias, dinp, N, C);
}

#endif
