// Layer normalisation over the last dimension, with variance floor eps
// (LAYERNORM_EPS = 1e-5 as PyTorch and fairseq; the authors' vision models use 1e-6).
//   inp, out are (N,C); weight, bias are (C); mean, rstd are (N) and are kept
//   for the backward pass.
#ifndef LAYERS_LAYERNORM_H
#define LAYERS_LAYERNORM_H

#include "utils/real.h"

#define LAYERNORM_EPS ((real)1e-5)

static void layernorm_forward(real* out, real* mean, real* rstd, const real* inp,
                              const real* weight, const real* bias, int N, int C, real eps) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const real* x = inp + (long)n * C;
        real m = 0;
#pragma omp simd reduction(+:m)
        for (int c = 0; c < C; c++) m += x[c];
        m /= C;
        real v = 0;
#pragma omp simd reduction(+:v)
        for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
        v /= C;
        real s = (real)1 / sqrt(v + eps);
        real* o = out + (long)n * C;
#pragma omp simd
        for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * weight[c] + bias[c];
        mean[n] = m;
        rstd[n] = s;
    }
}

// dinp += d(out)/d(inp) dout; dweight, dbias += their gradients.
// Rows are independent for dinp; the parameter gradients are summed over rows
// per column, so each thread owns a slice of columns and the sums stay in a
// fixed order (bitwise reproducible whatever the thread count).
static void layernorm_backward(real* dinp, real* dweight, real* dbias, const real* dout,
                               const real* inp, const real* weight, const real* mean,
                               const real* rstd, int N, int C) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const real* x = inp + (long)n * C;
        const real* d = dout + (long)n * C;
        real m = mean[n], s = rstd[n];
        real dmean = 0, dnorm = 0;
#pragma omp simd reduction(+:dmean, dnorm)
        for (int c = 0; c < C; c++) {
            real g = weight[c] * d[c];
            dmean += g;
            dnorm += g * (x[c] - m) * s;
        }
        dmean /= C;
        dnorm /= C;
        real* di = dinp + (long)n * C;
#pragma omp simd
        for (int c = 0; c < C; c++)
            di[c] += (weight[c] * d[c] - dmean - (x[c] - m) * s * dnorm) * s;
    }
    int blocks = (C + 31) / 32;
#pragma omp parallel for
    for (int blk = 0; blk < blocks; blk++) {
        int c0 = blk * 32, c1 = c0 + 32 < C ? c0 + 32 : C;
        real dw[32] = {0}, db[32] = {0};
        for (int n = 0; n < N; n++) {
            const real* x = inp + (long)n * C;
            const real* d = dout + (long)n * C;
            real m = mean[n], s = rstd[n];
            for (int c = c0; c < c1; c++) {
                dw[c - c0] += (x[c] - m) * s * d[c];
                db[c - c0] += d[c];
            }
        }
        for (int c = c0; c < c1; c++) {
            dweight[c] += dw[c - c0];
            dbias[c] += db[c - c0];
        }
    }
}

#endif
