// What the attention kernels share besides the matrix product: vector loops
// over a head's n reals, reading and writing a head's rows of the strided
// q, k, v arrays, and each thread's scratch memory.
// Each vector loop is one SIMD reduction or update; the compiler vectorises
// them. They are always inlined: a call costs as much as the loop for a head of 64.
#ifndef LAYERS_VEC_H
#define LAYERS_VEC_H

#include <stdlib.h>
#include <string.h>
#include "utils/real.h"
#include "utils/utils.h"

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

// Asks for n reals at p to be brought into cache ahead of use, for reading or
// for writing. A head's rows are a short piece of each row of q, k, v (256 bytes
// of 2 KiB with 8 heads of 64), a pattern the hardware prefetchers follow
// poorly (asking for the next chunk's rows made the causal flow forward pass 8%
// faster at T = 16384, the bidirectional one 20-30%).
VEC_INLINE void vec_prefetch(const real* p, int n, int for_write) {
    for (int i = 0; i < n; i += 64 / (int)sizeof(real)) {
        if (for_write) __builtin_prefetch(p + i, 1, 2);
        else __builtin_prefetch(p + i, 0, 2);
    }
}

// How far ahead a loop over strided rows asks for them.
#define VEC_ROWS_AHEAD 8

// vec_prefetch over rows [t0, t1) of an array of rows `stride` apart, n reals each.
VEC_INLINE void vec_prefetch_rows(const real* rows, int t0, int t1, int stride, int n, int for_write) {
    for (int t = t0 < 0 ? 0 : t0; t < t1; t++) vec_prefetch(rows + (size_t)t * stride, n, for_write);
}

// dst (n,m) = n rows of src, `stride` apart (a head's piece of each), asking
// for rows VEC_ROWS_AHEAD ahead.
static void vec_gather_rows(real* dst, const real* src, int n, int stride, int m) {
    for (int t = 0; t < n; t++) {
        const real* row = src + (size_t)t * stride;
        if (t + VEC_ROWS_AHEAD < n) vec_prefetch(row + VEC_ROWS_AHEAD * (size_t)stride, m, 0);
        memcpy(dst + (size_t)t * m, row, (size_t)m * sizeof(real));
    }
}

// dst's n rows (`stride` apart) += src (n,m), asking for rows VEC_ROWS_AHEAD ahead.
static void vec_add_rows(real* dst, const real* src, int n, int stride, int m) {
    for (int t = 0; t < n; t++) {
        real* row = dst + (size_t)t * stride;
        if (t + VEC_ROWS_AHEAD < n) vec_prefetch(row + VEC_ROWS_AHEAD * (size_t)stride, m, 1);
        vec_axpy(row, 1, src + (size_t)t * m, m);
    }
}

// n rounded up to whole cache lines of reals. Arrays carved one after another
// out of scratch then each start on a line: a vector that straddles two lines
// is slow to load, and a load of one just stored cannot be served from the
// store (the running sums of the attention scans went 1.5x slower so).
static size_t vec_lines(size_t n) {
    size_t line = 64 / sizeof(real);
    return (n + line - 1) / line * line;
}

// Scratch of the calling thread, at least n reals, contents undefined. It only
// grows (to the largest call so far) and is kept for the next call, so that a
// training step allocates nothing once the first has run. One buffer per
// thread, shared by every kernel: a kernel must be done with it before another
// kernel runs on the same thread.
static _Thread_local real* vec_scratch = NULL;
static _Thread_local size_t vec_scratch_size = 0;

static real* thread_scratch(size_t n) {
    if (n > vec_scratch_size) {
        free(vec_scratch);
        vec_scratch = (real*)aligned_alloc(64, (n * sizeof(real) + 63) / 64 * 64);
        if (vec_scratch == NULL) fail("out of memory allocating %zu reals of attention scratch", n);
        vec_scratch_size = n;
    }
    return vec_scratch;
}

#endif
