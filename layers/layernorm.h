// Layer normalisation over the last dimension, with variance floor eps
// (LAYERNORM_EPS = 1e-5 as PyTorch and fairseq; the authors' vision models use 1e-6).
//   inp, out are (N,C); weight, bias are (C); mean, rstd are (N) and are kept
//   for the backward pass.
#ifndef LAYERS_LAYERNORM_H
#define LAYERS_LAYERNORM_H

#include <stdlib.h>
#include "utils/real.h"
#include "layers/colsum.h"
#include "utils/utils.h"
#include "utils/scratch.h"

#define LAYERNORM_EPS ((real)1e-5)

// The variance and output passes over one row x of C whose mean m the caller
// has summed (in the pass that reads the row from memory):
// out = (x - m) * rstd * weight + bias. The row is in L1 by then.
static inline void layernorm_row(real* out, real* rstd, const real* x, real m, const real* weight,
                                 const real* bias, int C, real eps) {
    real v = 0;
#pragma omp simd reduction(+:v)
    for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
    v /= C;
    real s = (real)1 / sqrt(v + eps);
#pragma omp simd
    for (int c = 0; c < C; c++) out[c] = (x[c] - m) * s * weight[c] + bias[c];
    *rstd = s;
}

static void layernorm_forward(real* out, real* mean, real* rstd, const real* inp,
                              const real* weight, const real* bias, int N, int C, real eps) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const real* x = inp + (long)n * C;
        real m = 0;
#pragma omp simd reduction(+:m)
        for (int c = 0; c < C; c++) m += x[c];
        mean[n] = m / C;
        layernorm_row(out + (long)n * C, rstd + n, x, mean[n], weight, bias, C, eps);
    }
}

// The residual add and the LayerNorm after it in one pass over memory:
//   res = inp1 + inp2; out = layernorm(res); inp1, inp2, res are (N,C).
// res may be inp1 or inp2 (a residual stream updated in place). The backward
// pass needs no fusing: layernorm_backward accumulating into the stream's
// gradient is the pair's backward, as that gradient is both inputs' gradient.
static void residual_layernorm_forward(real* res, real* out, real* mean, real* rstd,
                                       const real* inp1, const real* inp2, const real* weight,
                                       const real* bias, int N, int C, real eps) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const real* a = inp1 + (long)n * C;
        const real* b = inp2 + (long)n * C;
        real* r = res + (long)n * C;
        // the mean is summed as the sum is stored: summing r in a loop of its own,
        // right after the stores, made this slower than the two layers it replaces
        real m = 0;
#pragma omp simd reduction(+:m)
        for (int c = 0; c < C; c++) {
            real x = a[c] + b[c];
            r[c] = x;
            m += x;
        }
        mean[n] = m / C;
        layernorm_row(out + (long)n * C, rstd + n, r, mean[n], weight, bias, C, eps);
    }
}

// dinp += d(out)/d(inp) dout; dweight, dbias += their gradients. One pass over
// the rows: each row's dinp, and its terms of the parameter gradients summed
// into fixed blocks of rows (colsum.h), so the result is bitwise the same for
// any thread count.
static void layernorm_backward(real* dinp, real* dweight, real* dbias, const real* dout,
                               const real* inp, const real* weight, const real* mean,
                               const real* rstd, int N, int C) {
    int nblocks = colsum_blocks(N);
    static Scratch scratch;
    real* partial = (real*)scratch_get(&scratch, 2 * (size_t)nblocks * C * sizeof(real));
    real* partial_w = partial;
    real* partial_b = partial + (size_t)nblocks * C;
#pragma omp parallel for
    for (int b = 0; b < nblocks; b++) {
        real* dw = partial_w + (long)b * C;
        real* db = partial_b + (long)b * C;
        for (int c = 0; c < C; c++) dw[c] = db[c] = 0;
        int n1 = (b + 1) * COLSUM_ROWS < N ? (b + 1) * COLSUM_ROWS : N;
        for (int n = b * COLSUM_ROWS; n < n1; n++) {
            const real* x = inp + (long)n * C;
            const real* d = dout + (long)n * C;
            real* di = dinp + (long)n * C;
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
#pragma omp simd
            for (int c = 0; c < C; c++) {
                real xhat = (x[c] - m) * s;
                di[c] += (weight[c] * d[c] - dmean - xhat * dnorm) * s;
                dw[c] += xhat * d[c];
                db[c] += d[c];
            }
        }
    }
    colsum_reduce(dweight, partial_w, nblocks, C);
    colsum_reduce(dbias, partial_b, nblocks, C);
}

#endif
