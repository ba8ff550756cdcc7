// Layer normalisation over the last dimension on the GPU, as layers/layernorm.h's:
//   inp, out are (N,C); weight, bias are (C); mean, rstd are (N), kept for the backward pass.
// A warp per row; the parameter gradients are column sums (cuda/colsum.cuh).
#ifndef CUDA_LAYERNORM_CUH
#define CUDA_LAYERNORM_CUH

#include "cuda/common.cuh"
#include "cuda/colsum.cuh"

#define LAYERNORM_EPS 1e-5f

// out = (x - mean) * rstd * weight + bias over the row x, whose sum the caller has
// taken; one warp, lanes over the channels.
__device__ __forceinline__ void layernorm_row(float* out, float* mean_out, float* rstd_out, const float* x, float sum,
                                              const float* weight, const float* bias, int C, float eps) {
    int lane = threadIdx.x % 32;
    float m = sum / C, v = 0;
    for (int c = lane; c < C; c += 32) v += (x[c] - m) * (x[c] - m);
    float s = 1.0f / sqrtf(warp_sum(v) / C + eps);
    for (int c = lane; c < C; c += 32) out[c] = (x[c] - m) * s * weight[c] + bias[c];
    if (lane == 0) { *mean_out = m; *rstd_out = s; }
}

__global__ void layernorm_forward_kernel(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                                         const float* bias, int N, int C, float eps) {
    int n = blockIdx.x * WARPS + threadIdx.x / 32;
    if (n >= N) return;
    const float* x = inp + (long)n * C;
    float sum = 0;
    for (int c = threadIdx.x % 32; c < C; c += 32) sum += x[c];
    layernorm_row(out + (long)n * C, mean + n, rstd + n, x, warp_sum(sum), weight, bias, C, eps);
}

// res = inp1 + inp2, then out = layernorm(res); res may be inp1 or inp2.
__global__ void residual_layernorm_forward_kernel(float* res, float* out, float* mean, float* rstd,
                                                  const float* inp1, const float* inp2, const float* weight,
                                                  const float* bias, int N, int C, float eps) {
    int n = blockIdx.x * WARPS + threadIdx.x / 32;
    if (n >= N) return;
    const float *a = inp1 + (long)n * C, *b = inp2 + (long)n * C;
    float* r = res + (long)n * C;
    float sum = 0;
    for (int c = threadIdx.x % 32; c < C; c += 32) {
        r[c] = a[c] + b[c];
        sum += r[c];
    }
    layernorm_row(out + (long)n * C, mean + n, rstd + n, r, warp_sum(sum), weight, bias, C, eps);
}

static void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                              const float* bias, int N, int C, float eps) {
    layernorm_forward_kernel<<<blocks_for(N, WARPS), THREADS>>>(out, mean, rstd, inp, weight, bias, N, C,
                                                                         eps);
    CUDA_LAUNCHED();
}

// The residual add and the LayerNorm after it in one pass: res = inp1 + inp2;
// out = layernorm(res). The backward pass needs no fusing (see layers/layernorm.h).
static void residual_layernorm_forward(float* res, float* out, float* mean, float* rstd, const float* inp1,
                                       const float* inp2, const float* weight, const float* bias, int N, int C,
                                       float eps) {
    residual_layernorm_forward_kernel<<<blocks_for(N, WARPS), THREADS>>>(res, out, mean, rstd, inp1, inp2,
                                                                                  weight, bias, N, C, eps);
    CUDA_LAUNCHED();
}

// dinp += d(out)/d(inp) dout, a warp per row.
__global__ void layernorm_backward_inp_kernel(float* dinp, const float* dout, const float* inp, const float* weight,
                                              const float* mean, const float* rstd, int N, int C) {
    int n = blockIdx.x * WARPS + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= N) return;
    const float *x = inp + (long)n * C, *d = dout + (long)n * C;
    float* di = dinp + (long)n * C;
    float m = mean[n], s = rstd[n], dmean = 0, dnorm = 0;
    for (int c = lane; c < C; c += 32) {
        float g = weight[c] * d[c];
        dmean += g;
        dnorm += g * (x[c] - m) * s;
    }
    dmean = warp_sum(dmean) / C;
    dnorm = warp_sum(dnorm) / C;
    for (int c = lane; c < C; c += 32) di[c] += (weight[c] * d[c] - dmean - (x[c] - m) * s * dnorm) * s;
}

// The partial column sums (cuda/colsum.cuh) of xhat * dout and of dout, the terms of
// dweight and dbias: grid (colsum_blocks(N), blocks of columns), a thread per column.
__global__ void layernorm_backward_params_kernel(float* partial_w, float* partial_b, const float* dout,
                                                 const float* inp, const float* mean, const float* rstd, int N,
                                                 int C) {
    int b = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C) return;
    int n1 = (b + 1) * COLSUM_ROWS < N ? (b + 1) * COLSUM_ROWS : N;
    float dw = 0, db = 0;
    for (int n = b * COLSUM_ROWS; n < n1; n++) {
        float d = dout[(long)n * C + c];
        dw += (inp[(long)n * C + c] - mean[n]) * rstd[n] * d;
        db += d;
    }
    partial_w[(long)b * C + c] = dw;
    partial_b[(long)b * C + c] = db;
}

// dinp += d(out)/d(inp) dout; dweight, dbias += their gradients.
static void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                               const float* weight, const float* mean, const float* rstd, int N, int C) {
    layernorm_backward_inp_kernel<<<blocks_for(N, WARPS), THREADS>>>(dinp, dout, inp, weight, mean, rstd, N,
                                                                              C);
    CUDA_LAUNCHED();
    static DeviceScratch scratch;
    int nblocks = colsum_blocks(N);
    float* partial = device_scratch(&scratch, 2 * (size_t)nblocks * C, "LayerNorm gradients");
    dim3 grid(nblocks, blocks_for(C, THREADS));
    layernorm_backward_params_kernel<<<grid, THREADS>>>(partial, partial + (size_t)nblocks * C, dout, inp, mean,
                                                        rstd, N, C);
    CUDA_LAUNCHED();
    colsum_reduce(dweight, partial, nblocks, C);
    colsum_reduce(dbias, partial + (size_t)nblocks * C, nblocks, C);
}

#endif
