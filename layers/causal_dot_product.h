// The product at the heart of every linear-time attention, for one head:
//   causal:  out_i = sum_{j<=i} (q_i . k_j) w_j
//   full:    out_i = sum_{j}    (q_i . k_j) w_j  =  q_i^T (sum_j k_j w_j^T)
// q is (L,D), k is (S,D), w is (S,M), out is (L,M), all contiguous.
//
// The causal form never builds the L x D x M tensor of prefix sums. It walks
// the sequence in chunks of CDP_CHUNK positions, carrying the D x M state
// state = sum_{j before the chunk} k_j w_j^T:
//   out_i = q_i^T state + sum_{chunk start <= j <= i} (q_i . k_j) w_j
// so extra memory is D*M + CDP_CHUNK^2 reals and time is O(L*D*M).
// The backward pass runs the same scan forwards (for dq) and backwards (for dk, dw).
#ifndef LAYERS_CAUSAL_DOT_PRODUCT_H
#define LAYERS_CAUSAL_DOT_PRODUCT_H

#include <string.h>
#include "real.h"

#define CDP_CHUNK 64

static inline real vec_dot(const real* x, const real* y, int n) {
    real acc = 0;
    #pragma omp simd reduction(+:acc)
    for (int i = 0; i < n; i++) acc += x[i] * y[i];
    return acc;
}

// y += a * x
static inline void vec_axpy(real* y, real a, const real* x, int n) {
    #pragma omp simd
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

// out (n,M) += x (n,D) @ state (D,M)
static void rows_times_state(real* out, const real* x, const real* state, int n, int D, int M) {
    for (int i = 0; i < n; i++) {
        for (int d = 0; d < D; d++) vec_axpy(out + i * M, x[i * D + d], state + d * M, M);
    }
}

// state (D,M) += x (n,D)^T @ y (n,M)
static void state_add_outer(real* state, const real* x, const real* y, int n, int D, int M) {
    for (int i = 0; i < n; i++) {
        for (int d = 0; d < D; d++) vec_axpy(state + d * M, x[i * D + d], y + i * M, M);
    }
}

// out (n,D) += y (n,M) @ state (D,M)^T
static void rows_times_state_t(real* out, const real* y, const real* state, int n, int D, int M) {
    for (int i = 0; i < n; i++) {
        for (int d = 0; d < D; d++) out[i * D + d] += vec_dot(y + i * M, state + d * M, M);
    }
}

// scores (n,n) lower triangle: scores[i][j] = a_i . b_j for j <= i (upper part untouched)
static void lower_scores(real* scores, const real* a, const real* b, int n, int dim) {
    for (int i = 0; i < n; i++) {
        for (int j = 0; j <= i; j++) scores[i * CDP_CHUNK + j] = vec_dot(a + i * dim, b + j * dim, dim);
    }
}

// out (L,M) = causal product; state is D*M scratch, scores CDP_CHUNK^2 scratch.
static void causal_dot_product_forward(real* out, const real* q, const real* k, const real* w,
                                       int T, int D, int M, real* state, real* scores) {
    memset(state, 0, (size_t)D * M * sizeof(real));
    memset(out, 0, (size_t)T * M * sizeof(real));
    for (int c0 = 0; c0 < T; c0 += CDP_CHUNK) {
        int n = T - c0 < CDP_CHUNK ? T - c0 : CDP_CHUNK;
        const real *qc = q + (size_t)c0 * D, *kc = k + (size_t)c0 * D, *wc = w + (size_t)c0 * M;
        real* oc = out + (size_t)c0 * M;
        rows_times_state(oc, qc, state, n, D, M);
        lower_scores(scores, qc, kc, n, D);
        for (int i = 0; i < n; i++) {
            for (int j = 0; j <= i; j++) vec_axpy(oc + i * M, scores[i * CDP_CHUNK + j], wc + j * M, M);
        }
        state_add_outer(state, kc, wc, n, D, M);
    }
}

// Given dout (T,M): dq (T,D) += ..., dk (T,D) += ..., dw (T,M) += ...
static void causal_dot_product_backward(real* dq, real* dk, real* dw, const real* dout,
                                        const real* q, const real* k, const real* w,
                                        int T, int D, int M, real* state, real* scores) {
    // dq_i = state_i dout_i + sum_{chunk start <= j <= i} (dout_i . w_j) k_j, state as in the forward pass
    memset(state, 0, (size_t)D * M * sizeof(real));
    for (int c0 = 0; c0 < T; c0 += CDP_CHUNK) {
        int n = T - c0 < CDP_CHUNK ? T - c0 : CDP_CHUNK;
        const real *kc = k + (size_t)c0 * D, *wc = w + (size_t)c0 * M, *gc = dout + (size_t)c0 * M;
        real* dqc = dq + (size_t)c0 * D;
        rows_times_state_t(dqc, gc, state, n, D, M);
        lower_scores(scores, gc, wc, n, M);
        for (int i = 0; i < n; i++) {
            for (int j = 0; j <= i; j++) vec_axpy(dqc + i * D, scores[i * CDP_CHUNK + j], kc + j * D, D);
        }
        state_add_outer(state, kc, wc, n, D, M);
    }
    // Backwards, with state = sum_{i after the chunk} q_i dout_i^T:
    // dk_j = state w_j + sum_{j <= i < chunk end} (dout_i . w_j) q_i
    // dw_j = state^T k_j + sum_{j <= i < chunk end} (q_i . k_j) dout_i
    memset(state, 0, (size_t)D * M * sizeof(real));
    int last = ((T - 1) / CDP_CHUNK) * CDP_CHUNK;
    for (int c0 = last; c0 >= 0; c0 -= CDP_CHUNK) {
        int n = T - c0 < CDP_CHUNK ? T - c0 : CDP_CHUNK;
        const real *qc = q + (size_t)c0 * D, *kc = k + (size_t)c0 * D;
        const real *wc = w + (size_t)c0 * M, *gc = dout + (size_t)c0 * M;
        real *dkc = dk + (size_t)c0 * D, *dwc = dw + (size_t)c0 * M;
        rows_times_state_t(dkc, wc, state, n, D, M);
        rows_times_state(dwc, kc, state, n, D, M);
        lower_scores(scores, gc, wc, n, M);
        for (int i = 0; i < n; i++) {
            for (int j = 0; j <= i; j++) vec_axpy(dkc + j * D, scores[i * CDP_CHUNK + j], qc + i * D, D);
        }
        lower_scores(scores, qc, kc, n, D);
        for (int i = 0; i < n; i++) {
            for (int j = 0; j <= i; j++) vec_axpy(dwc + j * M, scores[i * CDP_CHUNK + j], gc + i * M, M);
        }
        state_add_outer(state, qc, gc, n, D, M);
    }
}

// out (L,M) = q (L,D) @ kv, kv (D,M) = k (S,D)^T @ w (S,M)
static void full_dot_product_forward(real* out, const real* q, const real* k, const real* w,
                                     int L, int S, int D, int M, real* kv) {
    memset(kv, 0, (size_t)D * M * sizeof(real));
    state_add_outer(kv, k, w, S, D, M);
    memset(out, 0, (size_t)L * M * sizeof(real));
    rows_times_state(out, q, kv, L, D, M);
}

// dq (L,D) += dout kv^T, dk (S,D) += w dkv^T, dw (S,M) += k dkv, with dkv = q^T dout.
// kv is recomputed into `kv`; dkv is D*M scratch.
static void full_dot_product_backward(real* dq, real* dk, real* dw, const real* dout,
                                      const real* q, const real* k, const real* w,
                                      int L, int S, int D, int M, real* kv, real* dkv) {
    memset(kv, 0, (size_t)D * M * sizeof(real));
    state_add_outer(kv, k, w, S, D, M);
    rows_times_state_t(dq, dout, kv, L, D, M);
    memset(dkv, 0, (size_t)D * M * sizeof(real));
    state_add_outer(dkv, q, dout, L, D, M);
    rows_times_state_t(dk, w, dkv, S, D, M);
    rows_times_state(dw, k, dkv, S, D, M);
}

#endif
