// ReLU (fairseq's transformer_lm): out = max(x, 0); inp, out are (N).
#ifndef LAYERS_RELU_H
#define LAYERS_RELU_H

#include "utils/real.h"

static void relu_forward(real* out, const real* inp, long N) {
#pragma omp parallel for simd
    for (long i = 0; i < N; i++) out[i] = inp[i] > 0 ? inp[i] : 0;
}

// dinp += (inp > 0) dout
static void relu_backward(real* dinp, const real* inp, const real* dout, long N) {
#pragma omp parallel for simd
    for (long i = 0; i < N; i++) dinp[i] += inp[i] > 0 ? dout[i] : 0;
}

#endif
