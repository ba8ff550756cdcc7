// GELU, tanh approximation (GPT-2, nanoGPT's default):
//   gelu(x) = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
// tanh is fastmath.h's tanh_fast, so the loops vectorise. In float32, gelu is
// within 8e-7 max(1, |gelu(x)|) of the formula evaluated exactly, and gelu'
// within 5e-6 max(1, |gelu'(x)|), the most near x = -4.8, where 1 - tanh^2
// cancels (dev/test/test_fastmath.c). gelu' is NaN once 0.134 x^2 overflows
// (|x| > 5e18).
#ifndef LAYERS_GELU_H
#define LAYERS_GELU_H

#include <stdlib.h>
#include "utils/real.h"
#include "layers/fastmath.h"
#include "layers/colsum.h"
#include "utils/utils.h"
#include "utils/scratch.h"

#define GELU_SCALE ((real)0.7978845608028654) // sqrt(2/pi)
#define GELU_CUBIC ((real)0.044715)

static inline real gelu(real x) {
    return (real)0.5 * x * ((real)1 + tanh_fast(GELU_SCALE * (x + GELU_CUBIC * x * x * x)));
}

// d gelu(x) / dx
static inline real gelu_grad(real x) {
    real th = tanh_fast(GELU_SCALE * (x + GELU_CUBIC * x * x * x));
    real sech2 = (real)1 - th * th;
    real du = GELU_SCALE * ((real)1 + (real)3 * GELU_CUBIC * x * x);
    return (real)0.5 * ((real)1 + th) + (real)0.5 * x * sech2 * du;
}

// inp, out are (N).
static void gelu_forward(real* out, const real* inp, long N) {
#pragma omp parallel for simd
    for (long i = 0; i < N; i++) out[i] = gelu(inp[i]);
}

// dinp += gelu'(inp) dout; all (N).
static void gelu_backward(real* dinp, const real* inp, const real* dout, long N) {
#pragma omp parallel for simd
    for (long i = 0; i < N; i++) dinp[i] += gelu_grad(inp[i]) * dout[i];
}

// GELU with the bias of the matmul before it folded in, so that the matmul
// (matmul_forward with bias NULL) writes its output once and this reads it once:
//   out = gelu(inp + bias); inp, out are (N, C), bias is (C).
// The pre-activation inp + bias is not stored; the backward pass recomputes it.
static void bias_gelu_forward(real* out, const real* inp, const real* bias, int N, int C) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const real* x = inp + (long)n * C;
        real* o = out + (long)n * C;
#pragma omp simd
        for (int c = 0; c < C; c++) o[c] = gelu(x[c] + bias[c]);
    }
}

// dinp = gelu'(inp + bias) dout, WRITTEN, not accumulated (it is both the
// pre-activation's gradient and that of the bias-free matmul output, so it saves
// the trainer a memset and a read); dbias (C) += its column sums, in the same
// pass. dinp may be dout. Shapes as bias_gelu_forward.
static void bias_gelu_backward(real* dinp, real* dbias, const real* dout, const real* inp,
                               const real* bias, int N, int C) {
    int nblocks = colsum_blocks(N);
    static Scratch scratch;
    real* partial = (real*)scratch_get(&scratch, (size_t)nblocks * C * sizeof(real));
#pragma omp parallel for
    for (int b = 0; b < nblocks; b++) {
        real* db = partial + (long)b * C;
        for (int c = 0; c < C; c++) db[c] = 0;
        int n1 = (b + 1) * COLSUM_ROWS < N ? (b + 1) * COLSUM_ROWS : N;
        for (int n = b * COLSUM_ROWS; n < n1; n++) {
            const real* x = inp + (long)n * C;
            const real* d = dout + (long)n * C;
            real* di = dinp + (long)n * C;
#pragma omp simd
            for (int c = 0; c < C; c++) {
                real g = gelu_grad(x[c] + bias[c]) * d[c];
                di[c] = g;
                db[c] += g;
            }
        }
    }
    colsum_reduce(dbias, partial, nblocks, C);
}

#endif
