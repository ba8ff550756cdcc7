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
#include "utils/real.h"
#include "layers/matmul.h"

#define CDP_CHUNK 64

// Every step below is a small matrix product, done by layers/matmul.h's gemm:
// gemm(M, N, K, a, a_row, a_col, b, b_row, b_col, c, ldc, accumulate) sets or
// adds C (M,N) = A (M,K) B (K,N), with the strides of A and B expressing transposes.
// Called from inside the per-head parallel loop, it runs on its caller's thread.

// FLOPs of the forward and backward pass of one head's product over T positions.
// Per chunk of n positions: forward q state, q k^T, scores w, the state update (4
// products); backward 11 products, 5 of them (D x M) and 6 (n x n). So per
// position about 14 D M + 8 n (D + M) (the masked half of each block is computed too).
static double causal_dot_product_flops(int T, int D, int M) {
    double n = T < CDP_CHUNK ? T : CDP_CHUNK;
    return (double)T * (14.0 * D * M + 8.0 * n * (D + M));
}

// The same for the bidirectional product (L queries, S keys): kv = k^T w and q kv
// forward; kv again, dq, dkv, dk, dw backward.
static double full_dot_product_flops(int L, int S, int D, int M) {
    return 2.0 * D * M * (4.0 * S + 3.0 * L);
}

// Zeroes scores[i][j] for j > i (the future) in an n x n block of row stride CDP_CHUNK.
static void mask_future(real* scores, int n) {
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) scores[i * CDP_CHUNK + j] = 0;
}

// out (T,M) = causal product; state is D*M scratch, scores CDP_CHUNK^2 scratch.
static void causal_dot_product_forward(real* out, const real* q, const real* k, const real* w,
                                       int T, int D, int M, real* state, real* scores) {
    memset(state, 0, (size_t)D * M * sizeof(real));
    for (int c0 = 0; c0 < T; c0 += CDP_CHUNK) {
        int n = T - c0 < CDP_CHUNK ? T - c0 : CDP_CHUNK;
        const real *qc = q + (size_t)c0 * D, *kc = k + (size_t)c0 * D, *wc = w + (size_t)c0 * M;
        real* oc = out + (size_t)c0 * M;
        gemm(n, M, D, qc, D, 1, state, M, 1, oc, M, 0);          // out_c  = q_c state
        gemm(n, n, D, qc, D, 1, kc, 1, D, scores, CDP_CHUNK, 0); // scores = q_c k_c^T
        mask_future(scores, n);
        gemm(n, M, n, scores, CDP_CHUNK, 1, wc, M, 1, oc, M, 1); // out_c += scores w_c
        gemm(D, M, n, kc, 1, D, wc, M, 1, state, M, 1);          // state += k_c^T w_c
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
        gemm(n, D, M, gc, M, 1, state, 1, M, dqc, D, 1);          // dq_c += dout_c state^T
        gemm(n, n, M, gc, M, 1, wc, 1, M, scores, CDP_CHUNK, 0);  // scores = dout_c w_c^T
        mask_future(scores, n);
        gemm(n, D, n, scores, CDP_CHUNK, 1, kc, D, 1, dqc, D, 1); // dq_c += scores k_c
        gemm(D, M, n, kc, 1, D, wc, M, 1, state, M, 1);           // state += k_c^T w_c
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
        gemm(n, D, M, wc, M, 1, state, 1, M, dkc, D, 1);          // dk_c += w_c state^T
        gemm(n, M, D, kc, D, 1, state, M, 1, dwc, M, 1);          // dw_c += k_c state
        gemm(n, n, M, gc, M, 1, wc, 1, M, scores, CDP_CHUNK, 0);  // scores = dout_c w_c^T
        mask_future(scores, n);
        gemm(n, D, n, scores, 1, CDP_CHUNK, qc, D, 1, dkc, D, 1); // dk_c += scores^T q_c
        gemm(n, n, D, qc, D, 1, kc, 1, D, scores, CDP_CHUNK, 0);  // scores = q_c k_c^T
        mask_future(scores, n);
        gemm(n, M, n, scores, 1, CDP_CHUNK, gc, M, 1, dwc, M, 1); // dw_c += scores^T dout_c
        gemm(D, M, n, qc, 1, D, gc, M, 1, state, M, 1);           // state += q_c^T dout_c
    }
}

// out (L,M) = q (L,D) kv, kv (D,M) = k (S,D)^T w (S,M)
static void full_dot_product_forward(real* out, const real* q, const real* k, const real* w,
                                     int L, int S, int D, int M, real* kv) {
    gemm(D, M, S, k, 1, D, w, M, 1, kv, M, 0);
    gemm(L, M, D, q, D, 1, kv, M, 1, out, M, 0);
}

// dq (L,D) += dout kv^T, dk (S,D) += w dkv^T, dw (S,M) += k dkv, with dkv = q^T dout.
// kv is recomputed into `kv`; dkv is D*M scratch.
static void full_dot_product_backward(real* dq, real* dk, real* dw, const real* dout,
                                      const real* q, const real* k, const real* w,
                                      int L, int S, int D, int M, real* kv, real* dkv) {
    gemm(D, M, S, k, 1, D, w, M, 1, kv, M, 0);
    gemm(L, D, M, dout, M, 1, kv, 1, M, dq, D, 1);
    gemm(D, M, L, q, 1, D, dout, M, 1, dkv, M, 0);
    gemm(S, D, M, w, M, 1, dkv, 1, M, dk, D, 1);
    gemm(S, M, D, k, D, 1, dkv, M, 1, dw, M, 1);
}

#endif
