// Softmax attention (the vanilla Transformer's), forward and backward, scores
// scaled by 1/sqrt(D). One row of the table in layers/attention.h ("softmax").
// Memory stays linear in the sequence like the other kernels, as FlashAttention
// (Dao et al. 2022, and its second version's loop order) does it:
//  - forward: per block of SM_BLOCK queries, the keys SM_BLOCK at a time with an
//    online softmax (a running maximum and sum per query, the partial output
//    rescaled when the maximum grows); only each query's log-sum-exp is saved;
//  - backward: per block of keys, the queries that see it, the probabilities
//    recomputed from the log-sum-exp; the key block's gradients stay in L1.
// Every product is a 64 x 64 x 64 block through layers/matmul.h's gemm, and the
// exponentials are vectorised (layers/fastmath.h). A head's rows are first
// copied out of the strided q, k, v into contiguous scratch (layers/vec.h):
// they are read once per block of the other side, and memory serves contiguous
// rows several times faster than a head's scattered pieces. Time is O(L*S*D).
//
// FLOPs, causal, per head: two products forward and five backward, each about
// T^2 D (half of 2 T^2 D, the future masked), so 7 T^2 D at M = D
// (softmax_causal_flops); the exponentials and scaling add O(T^2).
#ifndef LAYERS_SOFTMAX_ATTENTION_H
#define LAYERS_SOFTMAX_ATTENTION_H

#include <math.h>
#include <string.h>
#include <omp.h>
#include "utils/real.h"
#include "utils/utils.h"
#include "layers/vec.h"
#include "layers/fastmath.h"
#include "layers/attention_types.h"
#include "layers/matmul.h"

#define SM_BLOCK 64

// Multiply-adds times two of causal softmax attention over T positions of one
// head, forward and backward, as executed (the benchmark's GFLOP/s): each
// (query, key) pair of a block on or below the diagonal costs 2 products of the
// forward pass and 5 of the backward, 2 (4D + 3M) in all.
static double softmax_causal_flops(int T, int D, int M) {
    double pairs = 0;
    for (int i0 = 0; i0 < T; i0 += SM_BLOCK) {
        int rows = T - i0 < SM_BLOCK ? T - i0 : SM_BLOCK;
        pairs += (double)rows * (i0 + rows);
    }
    return pairs * 2.0 * (4.0 * D + 3.0 * M);
}

// Keys of a block starting at j0 that query i sees: all n, or up to i when causal.
static inline int sm_seen(int causal, int i, int j0, int n) {
    if (!causal) return n;
    int seen = i - j0 + 1;
    return seen < 0 ? 0 : (seen < n ? seen : n);
}

// Reals of scratch a head's forward pass takes: k (S,D), v (S,M), a block of
// scores (SM_BLOCK^2), of output (SM_BLOCK,M), each query's running max and sum.
static size_t softmax_forward_scratch(int S, int D, int M) {
    return (size_t)S * (D + M) + SM_BLOCK * SM_BLOCK + SM_BLOCK * (size_t)M + 2 * SM_BLOCK;
}

// cache: log-sum-exp of the scaled scores, one per (batch, head, query)
static void softmax_head_forward(const Attention* a, int b, int h, real* out, real* lse,
                                 const real* q, const real* k, const real* v, real* scratch) {
    int D = a->D, M = a->M, L = a->L, S = a->S, out_stride = a->H * M;
    real scale = (real)1 / sqrt((real)D);
    const real* Q = HEAD_Q(a, q, b, h);
    real *K = scratch, *V = K + (size_t)S * D, *p = V + (size_t)S * M, *acc = p + SM_BLOCK * SM_BLOCK;
    real *mx = acc + SM_BLOCK * M, *sum = mx + SM_BLOCK;
    vec_gather_rows(K, HEAD_K(a, k, b, h), S, a->k_stride, D);
    vec_gather_rows(V, HEAD_V(a, v, b, h), S, a->v_stride, M);
    for (int i0 = 0; i0 < L; i0 += SM_BLOCK) {
        int rows = L - i0 < SM_BLOCK ? L - i0 : SM_BLOCK;
        int keys = a->causal ? i0 + rows : S; // keys any row of the block sees
        const real* Qb = Q + (size_t)i0 * a->q_stride;
        for (int r = 0; r < rows; r++) mx[r] = -INFINITY, sum[r] = 0;
        memset(acc, 0, (size_t)rows * M * sizeof(real));
        for (int j0 = 0; j0 < keys; j0 += SM_BLOCK) {
            int n = keys - j0 < SM_BLOCK ? keys - j0 : SM_BLOCK;
            gemm(rows, n, D, Qb, a->q_stride, 1, K + (size_t)j0 * D, 1, D, p, SM_BLOCK, 0); // scores = q k^T
            for (int r = 0; r < rows; r++) {
                int seen = sm_seen(a->causal, i0 + r, j0, n);
                real *pr = p + r * SM_BLOCK, *ar = acc + r * M, m = mx[r];
                #pragma omp simd reduction(max:m)
                for (int j = 0; j < seen; j++) m = scale * pr[j] > m ? scale * pr[j] : m;
                real rescale = exp_fast(mx[r] - m), s = 0; // 0 at the first block: mx was -inf
                #pragma omp simd reduction(+:s)
                for (int j = 0; j < n; j++) {
                    pr[j] = j < seen ? exp_fast(scale * pr[j] - m) : 0;
                    s += pr[j];
                }
                sum[r] = sum[r] * rescale + s;
                mx[r] = m;
                if (rescale != 1) {
                    #pragma omp simd
                    for (int e = 0; e < M; e++) ar[e] *= rescale;
                }
            }
            gemm(rows, M, n, p, SM_BLOCK, 1, V + (size_t)j0 * M, M, 1, acc, M, 1); // acc += p v
        }
        real* Ob = HEAD_OUT(a, out, b, h) + (size_t)i0 * out_stride;
        for (int r = 0; r < rows; r++) {
            real inv = (real)1 / sum[r];
            #pragma omp simd
            for (int e = 0; e < M; e++) Ob[(size_t)r * out_stride + e] = acc[r * M + e] * inv;
            lse[i0 + r] = mx[r] + log(sum[r]);
        }
    }
}

// Reals of scratch a head's backward pass takes: q, dq (L,D), dout (L,M), k (S,D),
// v (S,M), dout . out per query (L), blocks of probabilities and of their
// gradients (SM_BLOCK^2 each), a key block's dk (SM_BLOCK,D) and dv (SM_BLOCK,M).
static size_t softmax_backward_scratch(int L, int S, int D, int M) {
    return (size_t)L * (2 * D + M + 1) + (size_t)S * (D + M) + 2 * SM_BLOCK * SM_BLOCK + SM_BLOCK * (size_t)(D + M);
}

static void softmax_head_backward(const Attention* a, int b, int h, real* dq, real* dk, real* dv,
                                  const real* dout, const real* out, const real* lse,
                                  const real* q, const real* k, const real* v, real* scratch) {
    int D = a->D, M = a->M, L = a->L, S = a->S, out_stride = a->H * M;
    real scale = (real)1 / sqrt((real)D);
    real *Q = scratch, *dQ = Q + (size_t)L * D, *dO = dQ + (size_t)L * D, *K = dO + (size_t)L * M;
    real *V = K + (size_t)S * D, *dO_O = V + (size_t)S * M, *p = dO_O + L, *ds = p + SM_BLOCK * SM_BLOCK;
    real *dKb = ds + SM_BLOCK * SM_BLOCK, *dVb = dKb + SM_BLOCK * D;
    vec_gather_rows(Q, HEAD_Q(a, q, b, h), L, a->q_stride, D);
    vec_gather_rows(dO, HEAD_OUT(a, dout, b, h), L, out_stride, M);
    vec_gather_rows(K, HEAD_K(a, k, b, h), S, a->k_stride, D);
    vec_gather_rows(V, HEAD_V(a, v, b, h), S, a->v_stride, M);
    memset(dQ, 0, (size_t)L * D * sizeof(real));
    // softmax backward: dscore_j = p_j (dp_j - sum_j' p_j' dp_j'), the sum being dout . out
    const real* O = HEAD_OUT(a, out, b, h);
    for (int i = 0; i < L; i++) {
        if (i + VEC_ROWS_AHEAD < L) vec_prefetch(O + (size_t)(i + VEC_ROWS_AHEAD) * out_stride, M, 0);
        dO_O[i] = vec_dot(dO + (size_t)i * M, O + (size_t)i * out_stride, M);
    }
    for (int j0 = 0; j0 < S; j0 += SM_BLOCK) {
        int n = S - j0 < SM_BLOCK ? S - j0 : SM_BLOCK;
        const real *Kb = K + (size_t)j0 * D, *Vb = V + (size_t)j0 * M;
        memset(dKb, 0, (size_t)n * D * sizeof(real));
        memset(dVb, 0, (size_t)n * M * sizeof(real));
        for (int i0 = a->causal ? j0 / SM_BLOCK * SM_BLOCK : 0; i0 < L; i0 += SM_BLOCK) {
            int rows = L - i0 < SM_BLOCK ? L - i0 : SM_BLOCK;
            const real *Qb = Q + (size_t)i0 * D, *dOb = dO + (size_t)i0 * M;
            gemm(rows, n, D, Qb, D, 1, Kb, 1, D, p, SM_BLOCK, 0);     // scores = q k^T
            gemm(rows, n, M, dOb, M, 1, Vb, 1, M, ds, SM_BLOCK, 0);   // dp = dout v^T
            for (int r = 0; r < rows; r++) {
                int seen = sm_seen(a->causal, i0 + r, j0, n);
                real *pr = p + r * SM_BLOCK, *dsr = ds + r * SM_BLOCK, l = lse[i0 + r], dd = dO_O[i0 + r];
                #pragma omp simd
                for (int j = 0; j < n; j++) {
                    pr[j] = j < seen ? exp_fast(scale * pr[j] - l) : 0;
                    dsr[j] = scale * pr[j] * (dsr[j] - dd);
                }
            }
            gemm(n, M, rows, p, 1, SM_BLOCK, dOb, M, 1, dVb, M, 1);            // dv += p^T dout
            gemm(n, D, rows, ds, 1, SM_BLOCK, Qb, D, 1, dKb, D, 1);            // dk += ds^T q
            gemm(rows, D, n, ds, SM_BLOCK, 1, Kb, D, 1, dQ + (size_t)i0 * D, D, 1); // dq += ds k
        }
        vec_add_rows(HEAD_K(a, dk, b, h) + (size_t)j0 * a->k_stride, dKb, n, a->k_stride, D);
        vec_add_rows(HEAD_V(a, dv, b, h) + (size_t)j0 * a->v_stride, dVb, n, a->v_stride, M);
    }
    vec_add_rows(HEAD_Q(a, dq, b, h), dQ, L, a->q_stride, D);
}

// Multi-head: one (batch element, head) per task, scheduled as Flow-Attention's.
static void softmax_attention_forward(const Attention* a, real* out, real* cache,
                                      const real* q, const real* k, const real* v) {
    size_t scratch = softmax_forward_scratch(a->S, a->D, a->M);
    #pragma omp parallel for schedule(dynamic)
    for (int bh = 0; bh < a->B * a->H; bh++)
        softmax_head_forward(a, bh / a->H, bh % a->H, out, cache + (size_t)bh * a->L, q, k, v, thread_scratch(scratch));
}

static void softmax_attention_backward(const Attention* a, real* dq, real* dk, real* dv,
                                       const real* dout, const real* out, const real* cache,
                                       const real* q, const real* k, const real* v) {
    size_t scratch = softmax_backward_scratch(a->L, a->S, a->D, a->M);
    #pragma omp parallel for schedule(dynamic)
    for (int bh = 0; bh < a->B * a->H; bh++)
        softmax_head_backward(a, bh / a->H, bh % a->H, dq, dk, dv, dout, out, cache + (size_t)bh * a->L,
                              q, k, v, thread_scratch(scratch));
}

// The FLOPs as counted above, for every head.
static double softmax_attention_flops(const Attention* a) {
    double per_head = a->causal ? softmax_causal_flops(a->L, a->D, a->M)
                                : (double)a->L * a->S * 2.0 * (4.0 * a->D + 3.0 * a->M);
    return (double)a->B * a->H * per_head;
}

static size_t softmax_attention_cache_size(const Attention* a) { return (size_t)a->B * a->H * a->L; }

// Recurrent form: the state holds every key and value seen, (D+M) reals per
// position. A step reads them once, SM_BLOCK keys at a time with the online
// softmax of the forward pass; a long cache is split among the threads, each
// part's maximum, sum and partial output merged at the end (as FlashDecoding).
#define SM_STEP_SPLIT 4096 // keys from which a step splits its cache among the threads

static size_t softmax_attention_state_size(const Attention* a, int max_T) {
    return (size_t)max_T * (a->D + a->M);
}

// Keys [j0, j1) of the cache against q: *mx their largest scaled score, *sum
// and out (M) the sums of exp(score - *mx) and of exp(score - *mx) v.
static void softmax_step_part(const real* cache, int j0, int j1, const real* q, int D, int M, real scale,
                              real* mx, real* sum, real* out) {
    real scores[SM_BLOCK], m = -INFINITY, s = 0;
    memset(out, 0, (size_t)M * sizeof(real));
    for (int b0 = j0; b0 < j1; b0 += SM_BLOCK) {
        int n = j1 - b0 < SM_BLOCK ? j1 - b0 : SM_BLOCK;
        real bm = m;
        for (int j = 0; j < n; j++) {
            scores[j] = scale * vec_dot(q, cache + (size_t)(b0 + j) * (D + M), D);
            bm = scores[j] > bm ? scores[j] : bm;
        }
        real rescale = exp_fast(m - bm); // 0 at the first block: m was -inf
        if (rescale != 1) {
            s *= rescale;
            #pragma omp simd
            for (int e = 0; e < M; e++) out[e] *= rescale;
        }
        m = bm;
        #pragma omp simd
        for (int j = 0; j < n; j++) scores[j] = exp_fast(scores[j] - m);
        for (int j = 0; j < n; j++) {
            s += scores[j];
            vec_axpy(out, scores[j], cache + (size_t)(b0 + j) * (D + M) + D, M);
        }
    }
    *mx = m, *sum = s;
}

static void softmax_attention_step(const Attention* a, real* state, int t, real* out,
                                   const real* q, const real* k, const real* v) {
    int D = a->D, M = a->M, keys = t + 1;
    real* row = state + (size_t)t * (D + M);
    memcpy(row, k, (size_t)D * sizeof(real));
    memcpy(row + D, v, (size_t)M * sizeof(real));
    real scale = (real)1 / sqrt((real)D);
    int parts = keys >= SM_STEP_SPLIT ? omp_get_max_threads() : 1;
    real mx[parts], sum[parts], outs[parts * M];
    #pragma omp parallel for num_threads(parts) if (parts > 1)
    for (int p = 0; p < parts; p++)
        softmax_step_part(state, (int)((long)keys * p / parts), (int)((long)keys * (p + 1) / parts), q, D, M,
                          scale, &mx[p], &sum[p], outs + p * M);
    real m = mx[0], total = 0;
    for (int p = 1; p < parts; p++) m = mx[p] > m ? mx[p] : m;
    memset(out, 0, (size_t)M * sizeof(real));
    for (int p = 0; p < parts; p++) {
        real w = exp_fast(mx[p] - m);
        total += w * sum[p];
        vec_axpy(out, w, outs + p * M, M);
    }
    for (int e = 0; e < M; e++) out[e] /= total;
}

#endif
