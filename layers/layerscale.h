// LayerScale (Touvron et al., CaiT 2021): a learned per-channel gain on a
// residual branch, initialised small so that deep models start near identity.
//   inp, out are (N, C); gamma is (C). out may be inp.
#ifndef LAYERS_LAYERSCALE_H
#define LAYERS_LAYERSCALE_H

#include "utils/real.h"

static void layerscale_forward(real* out, const real* inp, const real* gamma, long N, int C) {
#pragma omp parallel for
    for (long n = 0; n < N; n++) {
#pragma omp simd
        for (int c = 0; c < C; c++) out[n * C + c] = gamma[c] * inp[n * C + c];
    }
}

// dinp += gamma * dout; dgamma += sum over rows of inp * dout. Columns are
// split into blocks so the per-channel sums keep a fixed order.
static void layerscale_backward(real* dinp, real* dgamma, const real* dout, const real* inp,
                                const real* gamma, long N, int C) {
#pragma omp parallel for
    for (long n = 0; n < N; n++) {
#pragma omp simd
        for (int c = 0; c < C; c++) dinp[n * C + c] += gamma[c] * dout[n * C + c];
    }
    int blocks = (C + 31) / 32;
#pragma omp parallel for
    for (int blk = 0; blk < blocks; blk++) {
        int c0 = blk * 32, c1 = c0 + 32 < C ? c0 + 32 : C;
        real acc[32] = {0};
        for (long n = 0; n < N; n++)
            for (int c = c0; c < c1; c++) acc[c - c0] += inp[n * C + c] * dout[n * C + c];
        for (int c = c0; c < c1; c++) dgamma[c] += acc[c - c0];
    }
}

#endif
