// Stochastic depth ("drop path", Huang et al. 2016; timm's DropPath): during
// training a residual branch is dropped for a whole sample with probability p and
// scaled by 1/(1-p) otherwise. Sample b keeps its branch when hash(key, b) >= p
// (the counter-based masks of layers/dropout.h), so the backward pass recomputes
// the mask from the key.
//   res, branch are (B, N) with N values per sample; p in [0, 1).
#ifndef LAYERS_DROPPATH_H
#define LAYERS_DROPPATH_H

#include "layers/dropout.h"

static inline real droppath_scale(uint64_t key, int b, real p) {
    if (p <= 0) return 1;
    return dropout_keep(key, b, dropout_threshold(p)) ? (real)1 / ((real)1 - p) : 0;
}

// out = res + scale_b * branch; out may be res.
static void droppath_add_forward(real* out, const real* res, const real* branch, int B, long N,
                                 real p, uint64_t key) {
    for (int b = 0; b < B; b++) {
        real s = droppath_scale(key, b, p);
        long base = (long)b * N;
#pragma omp parallel for simd
        for (long i = 0; i < N; i++) out[base + i] = res[base + i] + s * branch[base + i];
    }
}

// dbranch += scale_b * dout (the residual's gradient is dout itself).
static void droppath_add_backward(real* dbranch, const real* dout, int B, long N, real p, uint64_t key) {
    for (int b = 0; b < B; b++) {
        real s = droppath_scale(key, b, p);
        if (s == 0) continue;
        long base = (long)b * N;
#pragma omp parallel for simd
        for (long i = 0; i < N; i++) dbranch[base + i] += s * dout[base + i];
    }
}

#endif
