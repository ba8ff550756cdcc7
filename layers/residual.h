// Residual connection: out = inp1 + inp2, all (N). Its backward pass passes the
// gradient unchanged to both inputs, so the trainers accumulate the residual
// stream's gradient in place instead of calling a function for it.
#ifndef LAYERS_RESIDUAL_H
#define LAYERS_RESIDUAL_H

#include "utils/real.h"

static void residual_forward(real* out, const real* inp1, const real* inp2, long N) {
#pragma omp parallel for simd
    for (long i = 0; i < N; i++) out[i] = inp1[i] + inp2[i];
}

#endif
