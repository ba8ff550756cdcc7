// exp, tanh, sigmoid and sqrt that vectorise: libm's expf and tanhf are scalar
// calls, and sqrtf is one too under gcc's default -fmath-errno, so any loop that
// calls them stays scalar. In float32 these are branch-free polynomial or
// rational approximations that gcc inlines and vectorises inside `omp simd`
// loops. float64 builds (the finite-difference and reference tests) get libm's
// exact functions, so analytic derivatives stay exact there.
// The error bounds below are relative to the exact value, the largest over
// every float of the range (measured once against libm in float64); 1 ulp of
// float32 is 2^-23 = 1.19e-7 relative at most. dev/test/test_fastmath.c asserts
// them on samples of millions of floats. NaN in gives NaN out.
#ifndef LAYERS_FASTMATH_H
#define LAYERS_FASTMATH_H

#include <stdint.h>
#include <string.h>
#include "utils/real.h"

// e^x. Cephes' expf: x = n ln2 + r with |r| <= ln2/2, e^r by a degree-6
// polynomial, 2^n built in the exponent bits. Relative error at most 8.6e-8
// (0.72 ulp) on [-87, 88]. Inputs are clamped to that range: below -87 the
// result is e^-87 = 1.6e-38 instead of a denormal or 0 (harmless in a sum of
// probabilities), above 88 it is e^88 instead of overflowing.
static inline real exp_fast(real x) {
#ifdef REAL_DOUBLE
    return exp(x);
#else
    // written so that a NaN fails both comparisons and passes through
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    // n = round(x / ln2): adding 1.5 * 2^23 leaves n in the low bits of t's mantissa
    // (no float-to-int conversion, which would keep the loop from vectorising)
    float t = x * 1.44269504088896341f + 12582912.0f;
    int32_t tbits;
    memcpy(&tbits, &t, sizeof(tbits));
    int32_t ni = tbits - 0x4B400000;
    float n = t - 12582912.0f;
    // ln2 in two parts, so that n * 0.693359375 is exact
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    uint32_t bits = (uint32_t)(ni + 127) << 23;
    float two_n;
    memcpy(&two_n, &bits, sizeof(two_n));
    return p * two_n;
#endif
}

// tanh(x). Eigen's ptanh_float: odd degree-13 over even degree-6 polynomial on
// [-c, c], c = 7.9053. Beyond, where tanh is within 2.7e-7 of +-1, the result is
// exactly +-1, so that 1 - tanh^2 (GELU's derivative) vanishes there as it should.
// Relative error at most 3.0e-7 (2.5 ulp) for all floats, -0 and +-inf included.
static inline real tanh_fast(real x) {
#ifdef REAL_DOUBLE
    return tanh(x);
#else
    const float c = 7.90531110763549805f;
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
    // x times the quotient (near 1), not x p / q: x p would lose a tiny x to underflow
    float t = x * (p / q);
    return x > c ? 1.0f : (x < -c ? -1.0f : t);
#endif
}

// 1 / (1 + e^-x). From e = e^-|x| <= 1, which cannot overflow: 1 / (1 + e) for
// x >= 0 and e / (1 + e) for x < 0. Relative error at most 2.1e-7 (1.7 ulp) for
// x >= -87; below that the result is e^-87 = 1.65e-38 instead of a denormal or 0,
// an absolute error of at most 1.65e-38.
static inline real sigmoid_fast(real x) {
#ifdef REAL_DOUBLE
    return (real)1 / ((real)1 + exp(-x));
#else
    float e = exp_fast(-fabs(x));
    float r = 1.0f / (1.0f + e);
    return x >= 0 ? r : e * r;
#endif
}

// sqrt(x) for finite x >= 0. 1/sqrt(x) from the halved exponent bits (the "fast
// inverse square root" constant, 3.4% off), two Newton steps (4.7e-6 off), then
// one Newton step on sqrt itself with its residual x - s^2 from a fused
// multiply-add. Relative error at most 8.9e-8 (0.75 ulp) for normal x; exact at
// 0; for denormal x (below 1.2e-38, where the first guess is poor) an absolute
// error of at most 6.1e-21 (the square roots there are below 1.1e-19).
static inline real sqrt_fast(real x) {
#ifdef REAL_DOUBLE
    return sqrt(x);
#else
    uint32_t bits;
    memcpy(&bits, &x, sizeof(bits));
    bits = 0x5f375a86u - (bits >> 1);
    float y;
    memcpy(&y, &bits, sizeof(y));
    y = y * (1.5f - 0.5f * x * y * y);
    y = y * (1.5f - 0.5f * x * y * y);
    float s = x * y;
    return s + 0.5f * y * (x - s * s);
#endif
}

#endif
