// GELU, tanh approximation (GPT-2, nanoGPT's default):
//   out = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); inp, out are (N).
#ifndef LAYERS_GELU_H
#define LAYERS_GELU_H

#include "utils/real.h"

#define GELU_SCALE ((real)0.7978845608028654) // sqrt(2/pi)

// tanh that vectorises: libm's tanhf is a scalar call and made GELU a quarter of
// a training step. In float32 a rational approximation (Eigen's ptanh_float:
// odd degree-13 over even degree-6 polynomial, inputs clamped to +-7.9053) with
// relative error below 4e-7; float64 builds (the gradient tests) use libm's tanh,
// so the analytic derivative 1 - tanh^2 stays exact there.
static inline real tanh_fast(real x) {
#ifdef REAL_DOUBLE
    return tanh(x);
#else
    const float c = 7.90531110763549805f;
    x = x < -c ? -c : (x > c ? c : x);
    float x2 = x * x;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 - 8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    return x * p / q;
#endif
}

static void gelu_forward(real* out, const real* inp, long N) {
#pragma omp parallel for simd
    for (long i = 0; i < N; i++) {
        real x = inp[i];
        out[i] = (real)0.5 * x * ((real)1 + tanh_fast(GELU_SCALE * (x + (real)0.044715 * x * x * x)));
    }
}

// dinp += gelu'(inp) dout
static void gelu_backward(real* dinp, const real* inp, const real* dout, long N) {
#pragma omp parallel for simd
    for (long i = 0; i < N; i++) {
        real x = inp[i];
        real u = GELU_SCALE * (x + (real)0.044715 * x * x * x);
        real th = tanh_fast(u);
        real sech2 = (real)1 - th * th;
        real du = GELU_SCALE * ((real)1 + (real)3 * (real)0.044715 * x * x);
        dinp[i] += ((real)0.5 * ((real)1 + th) + (real)0.5 * x * sech2 * du) * dout[i];
    }
}

#endif
