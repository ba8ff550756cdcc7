// Sequence pooling before a classifier head: the mean over the tokens (global
// average pooling) or the first token (a class token).
//   inp is (B, T, C); out is (B, C).
#ifndef LAYERS_POOL_H
#define LAYERS_POOL_H

#include <string.h>
#include "utils/real.h"

typedef enum { POOL_MEAN = 0, POOL_CLS = 1 } PoolKind;

static void pool_forward(real* out, const real* inp, PoolKind kind, int B, int T, int C) {
#pragma omp parallel for
    for (int b = 0; b < B; b++) {
        real* o = out + (long)b * C;
        const real* x = inp + (long)b * T * C;
        if (kind == POOL_CLS) {
            memcpy(o, x, sizeof(real) * C);
            continue;
        }
        for (int c = 0; c < C; c++) o[c] = 0;
        for (int t = 0; t < T; t++)
#pragma omp simd
            for (int c = 0; c < C; c++) o[c] += x[(long)t * C + c];
        real s = (real)1 / T;
        for (int c = 0; c < C; c++) o[c] *= s;
    }
}

// dinp += the pooling's gradient of dout (B, C).
static void pool_backward(real* dinp, const real* dout, PoolKind kind, int B, int T, int C) {
    real s = kind == POOL_CLS ? (real)1 : (real)1 / T;
    int rows = kind == POOL_CLS ? 1 : T;
#pragma omp parallel for
    for (int b = 0; b < B; b++) {
        const real* d = dout + (long)b * C;
        for (int t = 0; t < rows; t++) {
            real* di = dinp + ((long)b * T + t) * C;
#pragma omp simd
            for (int c = 0; c < C; c++) di[c] += s * d[c];
        }
    }
}

#endif
