// Small vector helpers over n reals, shared by the attention kernels.
// Each loop is one SIMD reduction or update; the compiler vectorises them. They
// are always inlined: a call costs as much as the loop for a head of 64.
#ifndef LAYERS_VEC_H
#define LAYERS_VEC_H

#include "utils/real.h"

#define VEC_INLINE __attribute__((always_inline)) static inline

// x . y
VEC_INLINE real vec_dot(const real* x, const real* y, int n) {
    real acc = 0;
    #pragma omp simd reduction(+:acc)
    for (int i = 0; i < n; i++) acc += x[i] * y[i];
    return acc;
}

// y += a * x
VEC_INLINE void vec_axpy(real* y, real a, const real* x, int n) {
    #pragma omp simd
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

// (x + eps) . (y + eps), eps added to every component of both
VEC_INLINE real vec_dot_eps(const real* x, const real* y, int n, real eps) {
    real acc = 0;
    #pragma omp simd reduction(+:acc)
    for (int i = 0; i < n; i++) acc += (x[i] + eps) * (y[i] + eps);
    return acc;
}

// y += a * (x + eps)
VEC_INLINE void vec_axpy_eps(real* y, real a, const real* x, int n, real eps) {
    #pragma omp simd
    for (int i = 0; i < n; i++) y[i] += a * (x[i] + eps);
}

#endif
