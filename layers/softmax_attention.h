// Softmax attention (the vanilla Transformer's), forward and backward, scores
// scaled by 1/sqrt(D). One row of the table in layers/attention.h ("softmax").
// Memory stays linear in the sequence like the other kernels: the forward pass
// keeps only each query's log-sum-exp, and the backward pass recomputes the
// probabilities (as FlashAttention does), SM_BLOCK queries at a time, with the
// products done by layers/matmul.h's gemm. Time is O(L*S*D).
#ifndef LAYERS_SOFTMAX_ATTENTION_H
#define LAYERS_SOFTMAX_ATTENTION_H

#include <math.h>
#include <string.h>
#include "utils/real.h"
#include "utils/utils.h"
#include "layers/vec.h"
#include "layers/attention_types.h"
#include "layers/matmul.h"

#define SM_BLOCK 64

// Turns a block's scaled scores into probabilities, row by row; row r sees
// keys j < seen(r) and gets zeros up to n. Stores each row's log-sum-exp.
static void block_softmax(real* p, int ld, int rows, int n, int i0, int causal, real scale, real* lse) {
    for (int r = 0; r < rows; r++) {
        int nr = causal ? i0 + r + 1 : n;
        real* pr = p + (size_t)r * ld;
        real mx = -INFINITY, sum = 0;
        for (int j = 0; j < nr; j++) { pr[j] *= scale; if (pr[j] > mx) mx = pr[j]; }
        for (int j = 0; j < nr; j++) { pr[j] = exp(pr[j] - mx); sum += pr[j]; }
        for (int j = 0; j < nr; j++) pr[j] /= sum;
        for (int j = nr; j < n; j++) pr[j] = 0;
        lse[r] = mx + log(sum);
    }
}

// cache: log-sum-exp of the scaled scores, one per (batch, head, query)
static void softmax_attention_forward(const Attention* a, real* out, real* cache,
                                      const real* q, const real* k, const real* v) {
    int D = a->D, M = a->M, L = a->L, S = a->S;
    real scale = (real)1 / sqrt((real)D);
    #pragma omp parallel
    {
        real* p = (real*)malloc_check((size_t)SM_BLOCK * S * sizeof(real));
        #pragma omp for schedule(static)
        for (int bh = 0; bh < a->B * a->H; bh++) {
            int b = bh / a->H, h = bh % a->H;
            const real *qh = HEAD_Q(a, q, b, h), *kh = HEAD_K(a, k, b, h), *vh = HEAD_V(a, v, b, h);
            real* oh = HEAD_OUT(a, out, b, h);
            for (int i0 = 0; i0 < L; i0 += SM_BLOCK) {
                int rows = L - i0 < SM_BLOCK ? L - i0 : SM_BLOCK;
                int n = a->causal ? i0 + rows : S; // keys any row of the block sees
                const real* qb = qh + (size_t)i0 * a->q_stride;
                gemm(rows, n, D, qb, a->q_stride, 1, kh, 1, a->k_stride, p, S, 0);   // scores = q k^T
                block_softmax(p, S, rows, n, i0, a->causal, scale, cache + (size_t)bh * L + i0);
                gemm(rows, M, n, p, S, 1, vh, a->v_stride, 1, oh + (size_t)i0 * a->H * M, a->H * M, 0); // out = p v
            }
        }
        free(p);
    }
}

static void softmax_attention_backward(const Attention* a, real* dq, real* dk, real* dv,
                                       const real* dout, const real* out, const real* cache,
                                       const real* q, const real* k, const real* v) {
    int D = a->D, M = a->M, L = a->L, S = a->S;
    real scale = (real)1 / sqrt((real)D);
    #pragma omp parallel
    {
        // probabilities and score gradients of a block; this head's gradients,
        // summed here and added to dq, dk, dv once
        size_t size = 2 * (size_t)SM_BLOCK * S + (size_t)SM_BLOCK * D + (size_t)S * (D + M);
        real* p = (real*)malloc_check(size * sizeof(real));
        real *ds = p + (size_t)SM_BLOCK * S, *dqb = ds + (size_t)SM_BLOCK * S;
        real *dkh = dqb + (size_t)SM_BLOCK * D, *dvh = dkh + (size_t)S * D;
        #pragma omp for schedule(static)
        for (int bh = 0; bh < a->B * a->H; bh++) {
            int b = bh / a->H, h = bh % a->H;
            const real *qh = HEAD_Q(a, q, b, h), *kh = HEAD_K(a, k, b, h), *vh = HEAD_V(a, v, b, h);
            const real *oh = HEAD_OUT(a, out, b, h), *doh = HEAD_OUT(a, dout, b, h);
            const real* lse = cache + (size_t)bh * L;
            memset(dkh, 0, (size_t)S * (D + M) * sizeof(real));
            for (int i0 = 0; i0 < L; i0 += SM_BLOCK) {
                int rows = L - i0 < SM_BLOCK ? L - i0 : SM_BLOCK;
                int n = a->causal ? i0 + rows : S;
                const real *qb = qh + (size_t)i0 * a->q_stride, *dob = doh + (size_t)i0 * a->H * M;
                gemm(rows, n, D, qb, a->q_stride, 1, kh, 1, a->k_stride, p, S, 0);   // scores = q k^T
                gemm(rows, n, M, dob, a->H * M, 1, vh, 1, a->v_stride, ds, S, 0);  // dp = dout v^T
                for (int r = 0; r < rows; r++) {
                    int nr = a->causal ? i0 + r + 1 : n;
                    real *pr = p + (size_t)r * S, *dsr = ds + (size_t)r * S;
                    // softmax backward: dscore_j = p_j (dp_j - sum_j' p_j' dp_j'), the sum being dout_r . out_r
                    real dout_out = vec_dot(dob + (size_t)r * a->H * M, oh + (size_t)(i0 + r) * a->H * M, M);
                    for (int j = 0; j < nr; j++) {
                        pr[j] = exp(scale * pr[j] - lse[i0 + r]);
                        dsr[j] = scale * pr[j] * (dsr[j] - dout_out);
                    }
                    for (int j = nr; j < n; j++) pr[j] = dsr[j] = 0;
                }
                gemm(rows, D, n, ds, S, 1, kh, a->k_stride, 1, dqb, D, 0);      // dq  = ds k
                gemm(n, D, rows, ds, 1, S, qb, a->q_stride, 1, dkh, D, 1);      // dk += ds^T q
                gemm(n, M, rows, p, 1, S, dob, a->H * M, 1, dvh, M, 1);         // dv += p^T dout
                for (int r = 0; r < rows; r++)
                    vec_axpy(HEAD_Q(a, dq, b, h) + (size_t)(i0 + r) * a->q_stride, 1, dqb + (size_t)r * D, D);
            }
            for (int j = 0; j < S; j++) {
                vec_axpy(HEAD_K(a, dk, b, h) + (size_t)j * a->k_stride, 1, dkh + (size_t)j * D, D);
                vec_axpy(HEAD_V(a, dv, b, h) + (size_t)j * a->v_stride, 1, dvh + (size_t)j * M, M);
            }
        }
        free(p);
    }
}

// Forward: scores q k^T and p v; backward: scores again, dout v^T, dq, dk, dv: 7
// products over the query-key pairs a block computes (causal blocks stop at their
// last query, so about half), each 2 (D or M) FLOPs a pair.
static double softmax_attention_flops(const Attention* a) {
    double pairs = a->causal ? (double)a->L * (a->L + SM_BLOCK) / 2 : (double)a->L * a->S;
    return (double)a->B * a->H * pairs * (8.0 * a->D + 6.0 * a->M);
}

static size_t softmax_attention_cache_size(const Attention* a) { return (size_t)a->B * a->H * a->L; }

// Recurrent form: the state holds every key and value seen, (D+M) reals per position.
static size_t softmax_attention_state_size(const Attention* a, int max_T) {
    return (size_t)max_T * (a->D + a->M);
}

static void softmax_attention_step(const Attention* a, real* state, int t, real* out,
                                   const real* q, const real* k, const real* v) {
    int D = a->D, M = a->M;
    real* kv = state + (size_t)t * (D + M);
    memcpy(kv, k, (size_t)D * sizeof(real));
    memcpy(kv + D, v, (size_t)M * sizeof(real));
    real scale = (real)1 / sqrt((real)D);
    real mx = -INFINITY;
    for (int j = 0; j <= t; j++) {
        real s = scale * vec_dot(q, state + (size_t)j * (D + M), D);
        if (s > mx) mx = s;
    }
    real sum = 0;
    for (int m = 0; m < M; m++) out[m] = 0;
    for (int j = 0; j <= t; j++) {
        const real* row = state + (size_t)j * (D + M);
        real p = exp(scale * vec_dot(q, row, D) - mx);
        sum += p;
        vec_axpy(out, p, row + D, M);
    }
    for (int m = 0; m < M; m++) out[m] /= sum;
}

#endif
