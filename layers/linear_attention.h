// Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs"),
// feature map phi(x) = elu(x) + 1, forward and backward. One row of the table in
// layers/attention.h ("linear").
//   R_i = sum_j (phi(q_i) . phi(k_j)) v_j / (phi(q_i) . sum_j phi(k_j) + eps)
// with j <= i when causal. eps = 1e-6 as in the authors' code.
// The causal form walks the sequence in chunks as causal Flow-Attention does
// (layers/flow_attention.h), with the same causal product; work is split over
// (batch element, head) pairs, each thread using its own scratch (layers/vec.h).
#ifndef LAYERS_LINEAR_ATTENTION_H
#define LAYERS_LINEAR_ATTENTION_H

#include <string.h>
#include "utils/real.h"
#include "utils/utils.h"
#include "layers/vec.h"
#include "layers/fastmath.h"
#include "layers/attention_types.h"
#include "layers/causal_dot_product.h"

#define LINEAR_EPS ((real)1e-6)

static inline real elu1(real x) { return x > 0 ? x + (real)1 : exp_fast(x); }
static inline real elu1_grad(real x) { return x > 0 ? (real)1 : exp_fast(x); }

// dst (n,D) = phi of n rows of src, `stride` apart
static void elu1_rows(real* dst, const real* src, int n, int stride, int D) {
    for (int t = 0; t < n; t++) {
        const real* row = src + (size_t)t * stride;
        #pragma omp simd
        for (int d = 0; d < D; d++) dst[t * D + d] = elu1(row[d]);
    }
}

// dsrc's n rows (`stride` apart) += dfeat * phi'(src)
static void elu1_rows_backward(real* dsrc, const real* dfeat, const real* src, int n, int stride, int D) {
    for (int t = 0; t < n; t++) {
        real* drow = dsrc + (size_t)t * stride;
        const real* row = src + (size_t)t * stride;
        #pragma omp simd
        for (int d = 0; d < D; d++) drow[d] += dfeat[t * D + d] * elu1_grad(row[d]);
    }
}

// dst (n,M) = n rows of src, `stride` apart
static void copy_rows(real* dst, const real* src, int n, int stride, int M) {
    for (int t = 0; t < n; t++) memcpy(dst + (size_t)t * M, src + (size_t)t * stride, (size_t)M * sizeof(real));
}

// ----------------------------------------------------------------------------
// Causal: per chunk, the features, the running sum z of phi(k) and each
// denominator, then the chunk's step of the causal product.

// Reals of scratch a head's forward pass takes: the chunk's q, k (C,D), v, p
// (C,M), the product's state (D,M) and scores (C,C), z (D).
static size_t linear_causal_forward_scratch(int D, int M) {
    return CDP_CHUNK * 2 * ((size_t)D + M) + (size_t)D * M + CDP_CHUNK * CDP_CHUNK + D;
}

// cache: the denominator of each (batch, head, query)
static void linear_causal_head_forward(const Attention* a, int b, int h, real* out, real* den,
                                       const real* q, const real* k, const real* v, real* scratch) {
    int T = a->L, D = a->D, M = a->M, out_stride = a->H * M;
    const real *Q = HEAD_Q(a, q, b, h), *K = HEAD_K(a, k, b, h), *V = HEAD_V(a, v, b, h);
    real* R = HEAD_OUT(a, out, b, h);
    real *qc = scratch, *kc = qc + CDP_CHUNK * D, *vc = kc + CDP_CHUNK * D, *pc = vc + CDP_CHUNK * M;
    real *S = pc + CDP_CHUNK * M, *scores = S + (size_t)D * M, *z = scores + CDP_CHUNK * CDP_CHUNK;
    memset(S, 0, (size_t)D * M * sizeof(real));
    memset(z, 0, (size_t)D * sizeof(real));
    for (int c0 = 0; c0 < T; c0 += CDP_CHUNK) {
        int n = T - c0 < CDP_CHUNK ? T - c0 : CDP_CHUNK;
        elu1_rows(qc, Q + (size_t)c0 * a->q_stride, n, a->q_stride, D);
        elu1_rows(kc, K + (size_t)c0 * a->k_stride, n, a->k_stride, D);
        copy_rows(vc, V + (size_t)c0 * a->v_stride, n, a->v_stride, M);
        for (int i = 0; i < n; i++) {
            vec_axpy(z, 1, kc + i * D, D);
            den[c0 + i] = vec_dot(qc + i * D, z, D) + LINEAR_EPS;
        }
        cdp_chunk_forward(pc, qc, kc, vc, n, D, M, S, scores);
        for (int i = 0; i < n; i++) {
            real inv = (real)1 / den[c0 + i], *r = R + (size_t)(c0 + i) * out_stride;
            #pragma omp simd
            for (int m = 0; m < M; m++) r[m] = inv * pc[i * M + m];
        }
    }
}

// Reals of scratch a head's backward pass takes: per chunk, the product's state
// and z at its start; the chunk's q, k, dq, dk (C,D), v, g, dv (C,M), scores
// (C,C), the reverse state G (D,M), z and its suffix gradient, C scalars.
static size_t linear_causal_backward_scratch(int T, int D, int M) {
    size_t chunks = (T + CDP_CHUNK - 1) / CDP_CHUNK;
    return chunks * ((size_t)D * M + D) + CDP_CHUNK * (4 * (size_t)D + 3 * (size_t)M) + CDP_CHUNK * CDP_CHUNK
           + (size_t)D * M + 2 * (size_t)D + CDP_CHUNK;
}

static void linear_causal_head_backward(const Attention* a, int b, int h, real* dq, real* dk, real* dv,
                                        const real* dout, const real* out, const real* den,
                                        const real* q, const real* k, const real* v, real* scratch) {
    int T = a->L, D = a->D, M = a->M, out_stride = a->H * M;
    const real *Q = HEAD_Q(a, q, b, h), *K = HEAD_K(a, k, b, h), *V = HEAD_V(a, v, b, h);
    const real *dR = HEAD_OUT(a, dout, b, h), *R = HEAD_OUT(a, out, b, h);
    real *dQ = HEAD_Q(a, dq, b, h), *dK = HEAD_K(a, dk, b, h), *dV = HEAD_V(a, dv, b, h);
    size_t chunks = (T + CDP_CHUNK - 1) / CDP_CHUNK, state = (size_t)D * M + D;
    real *states = scratch, *qc = states + chunks * state, *kc = qc + CDP_CHUNK * D;
    real *dqc = kc + CDP_CHUNK * D, *dkc = dqc + CDP_CHUNK * D, *vc = dkc + CDP_CHUNK * D;
    real *gc = vc + CDP_CHUNK * M, *dvc = gc + CDP_CHUNK * M, *scores = dvc + CDP_CHUNK * M;
    real *G = scores + CDP_CHUNK * CDP_CHUNK, *z = G + (size_t)D * M, *rz = z + D, *dden = rz + D;

    // Forwards: the product's state S (in G) and z at each chunk's start.
    memset(G, 0, (size_t)D * M * sizeof(real));
    memset(z, 0, (size_t)D * sizeof(real));
    for (int c0 = 0, ci = 0; c0 < T; c0 += CDP_CHUNK, ci++) {
        int n = T - c0 < CDP_CHUNK ? T - c0 : CDP_CHUNK;
        memcpy(states + ci * state, G, (size_t)D * M * sizeof(real));
        memcpy(states + ci * state + (size_t)D * M, z, (size_t)D * sizeof(real));
        elu1_rows(kc, K + (size_t)c0 * a->k_stride, n, a->k_stride, D);
        copy_rows(vc, V + (size_t)c0 * a->v_stride, n, a->v_stride, M);
        for (int i = 0; i < n; i++) vec_axpy(z, 1, kc + i * D, D);
        cdp_state_add(G, kc, vc, n, D, M);
    }

    // Backwards over the chunks, G now the product's reverse state.
    memset(G, 0, (size_t)D * M * sizeof(real));
    memset(rz, 0, (size_t)D * sizeof(real));
    for (int ci = (int)chunks - 1; ci >= 0; ci--) {
        int c0 = ci * CDP_CHUNK, n = T - c0 < CDP_CHUNK ? T - c0 : CDP_CHUNK;
        elu1_rows(qc, Q + (size_t)c0 * a->q_stride, n, a->q_stride, D);
        elu1_rows(kc, K + (size_t)c0 * a->k_stride, n, a->k_stride, D);
        copy_rows(vc, V + (size_t)c0 * a->v_stride, n, a->v_stride, M);
        // R_i = p_i / den_i: dp_i = dout_i / den_i, dden_i = -(dout_i . R_i) / den_i
        for (int i = 0; i < n; i++) {
            const real *dr = dR + (size_t)(c0 + i) * out_stride, *r = R + (size_t)(c0 + i) * out_stride;
            real inv = (real)1 / den[c0 + i];
            dden[i] = -vec_dot(dr, r, M) * inv;
            #pragma omp simd
            for (int m = 0; m < M; m++) gc[i * M + m] = inv * dr[m];
        }
        cdp_chunk_backward(dqc, dkc, dvc, gc, qc, kc, vc, n, D, M, states + ci * state, G, scores);
        // den_i = phi(q_i) . z_i + eps, z_i = sum_{j<=i} phi(k_j): dk_j gets the suffix
        // sum over i >= j of dden_i phi(q_i), dq_i gets dden_i z_i.
        for (int i = n - 1; i >= 0; i--) {
            vec_axpy(rz, dden[i], qc + i * D, D);
            vec_axpy(dkc + i * D, 1, rz, D);
        }
        memcpy(z, states + ci * state + (size_t)D * M, (size_t)D * sizeof(real));
        for (int i = 0; i < n; i++) {
            vec_axpy(z, 1, kc + i * D, D);
            vec_axpy(dqc + i * D, dden[i], z, D);
            vec_axpy(dV + (size_t)(c0 + i) * a->v_stride, 1, dvc + i * M, M);
        }
        elu1_rows_backward(dQ + (size_t)c0 * a->q_stride, dqc, Q + (size_t)c0 * a->q_stride, n, a->q_stride, D);
        elu1_rows_backward(dK + (size_t)c0 * a->k_stride, dkc, K + (size_t)c0 * a->k_stride, n, a->k_stride, D);
    }
}

// ----------------------------------------------------------------------------
// Normal: R_i = phi(q_i)^T kv / (phi(q_i) . z + eps), kv and z summed over all keys.

// Reals of scratch a head's forward pass takes: q (L,D), k (S,D), v (S,M), p (L,M), kv (D,M), z (D).
static size_t linear_normal_forward_scratch(int L, int S, int D, int M) {
    return (size_t)(L + S) * D + (size_t)(L + S) * M + (size_t)D * M + D;
}

static void linear_normal_head_forward(const Attention* a, int b, int h, real* out, real* den,
                                       const real* q, const real* k, const real* v, real* scratch) {
    int L = a->L, S = a->S, D = a->D, M = a->M, out_stride = a->H * M;
    real *qf = scratch, *kf = qf + (size_t)L * D, *vh = kf + (size_t)S * D, *p = vh + (size_t)S * M;
    real *kv = p + (size_t)L * M, *z = kv + (size_t)D * M;
    elu1_rows(qf, HEAD_Q(a, q, b, h), L, a->q_stride, D);
    elu1_rows(kf, HEAD_K(a, k, b, h), S, a->k_stride, D);
    copy_rows(vh, HEAD_V(a, v, b, h), S, a->v_stride, M);
    full_dot_product_forward(p, qf, kf, vh, L, S, D, M, kv);
    memset(z, 0, (size_t)D * sizeof(real));
    for (int j = 0; j < S; j++) vec_axpy(z, 1, kf + (size_t)j * D, D);
    real* R = HEAD_OUT(a, out, b, h);
    for (int i = 0; i < L; i++) {
        den[i] = vec_dot(qf + (size_t)i * D, z, D) + LINEAR_EPS;
        real inv = (real)1 / den[i], *r = R + (size_t)i * out_stride;
        #pragma omp simd
        for (int m = 0; m < M; m++) r[m] = inv * p[(size_t)i * M + m];
    }
}

// Reals of scratch a head's backward pass takes: q, dq (L,D), k, dk (S,D), v, dv
// (S,M), g (L,M), kv and dkv (D,M), z and its gradient (D), L scalars.
static size_t linear_normal_backward_scratch(int L, int S, int D, int M) {
    return 2 * (size_t)(L + S) * D + (size_t)(L + 2 * S) * M + 2 * (size_t)D * M + 2 * (size_t)D + L;
}

static void linear_normal_head_backward(const Attention* a, int b, int h, real* dq, real* dk, real* dv,
                                        const real* dout, const real* out, const real* den,
                                        const real* q, const real* k, const real* v, real* scratch) {
    int L = a->L, S = a->S, D = a->D, M = a->M, out_stride = a->H * M;
    const real *Q = HEAD_Q(a, q, b, h), *K = HEAD_K(a, k, b, h);
    const real *dR = HEAD_OUT(a, dout, b, h), *R = HEAD_OUT(a, out, b, h);
    real *qf = scratch, *kf = qf + (size_t)L * D, *dqf = kf + (size_t)S * D, *dkf = dqf + (size_t)L * D;
    real *vh = dkf + (size_t)S * D, *dvh = vh + (size_t)S * M, *g = dvh + (size_t)S * M;
    real *kv = g + (size_t)L * M, *dkv = kv + (size_t)D * M, *z = dkv + (size_t)D * M, *rz = z + D, *dden = rz + D;
    elu1_rows(qf, Q, L, a->q_stride, D);
    elu1_rows(kf, K, S, a->k_stride, D);
    copy_rows(vh, HEAD_V(a, v, b, h), S, a->v_stride, M);
    // R_i = p_i / den_i: dp_i = dout_i / den_i, dden_i = -(dout_i . R_i) / den_i
    for (int i = 0; i < L; i++) {
        const real *dr = dR + (size_t)i * out_stride, *r = R + (size_t)i * out_stride;
        real inv = (real)1 / den[i];
        dden[i] = -vec_dot(dr, r, M) * inv;
        #pragma omp simd
        for (int m = 0; m < M; m++) g[(size_t)i * M + m] = inv * dr[m];
    }
    memset(dqf, 0, (size_t)(L + S) * D * sizeof(real)); // dqf and dkf, adjacent
    memset(dvh, 0, (size_t)S * M * sizeof(real));
    full_dot_product_backward(dqf, dkf, dvh, g, qf, kf, vh, L, S, D, M, kv, dkv);
    // den_i = phi(q_i) . z + eps, z = sum_j phi(k_j)
    memset(z, 0, 2 * (size_t)D * sizeof(real));
    for (int j = 0; j < S; j++) vec_axpy(z, 1, kf + (size_t)j * D, D);
    for (int i = 0; i < L; i++) {
        vec_axpy(dqf + (size_t)i * D, dden[i], z, D);
        vec_axpy(rz, dden[i], qf + (size_t)i * D, D);
    }
    for (int j = 0; j < S; j++) vec_axpy(dkf + (size_t)j * D, 1, rz, D);
    elu1_rows_backward(HEAD_Q(a, dq, b, h), dqf, Q, L, a->q_stride, D);
    elu1_rows_backward(HEAD_K(a, dk, b, h), dkf, K, S, a->k_stride, D);
    real* dV = HEAD_V(a, dv, b, h);
    for (int j = 0; j < S; j++) vec_axpy(dV + (size_t)j * a->v_stride, 1, dvh + (size_t)j * M, M);
}

// ----------------------------------------------------------------------------
// Multi-head: one (batch element, head) per task, scheduled as Flow-Attention's.

static void linear_attention_forward(const Attention* a, real* out, real* cache,
                                     const real* q, const real* k, const real* v) {
    size_t scratch = a->causal ? linear_causal_forward_scratch(a->D, a->M)
                               : linear_normal_forward_scratch(a->L, a->S, a->D, a->M);
    #pragma omp parallel for schedule(dynamic)
    for (int bh = 0; bh < a->B * a->H; bh++) {
        int b = bh / a->H, h = bh % a->H;
        real* den = cache + (size_t)bh * a->L;
        if (a->causal) linear_causal_head_forward(a, b, h, out, den, q, k, v, thread_scratch(scratch));
        else linear_normal_head_forward(a, b, h, out, den, q, k, v, thread_scratch(scratch));
    }
}

static void linear_attention_backward(const Attention* a, real* dq, real* dk, real* dv,
                                      const real* dout, const real* out, const real* cache,
                                      const real* q, const real* k, const real* v) {
    size_t scratch = a->causal ? linear_causal_backward_scratch(a->L, a->D, a->M)
                               : linear_normal_backward_scratch(a->L, a->S, a->D, a->M);
    #pragma omp parallel for schedule(dynamic)
    for (int bh = 0; bh < a->B * a->H; bh++) {
        int b = bh / a->H, h = bh % a->H;
        const real* den = cache + (size_t)bh * a->L;
        if (a->causal) linear_causal_head_backward(a, b, h, dq, dk, dv, dout, out, den, q, k, v, thread_scratch(scratch));
        else linear_normal_head_backward(a, b, h, dq, dk, dv, dout, out, den, q, k, v, thread_scratch(scratch));
    }
}

static size_t linear_attention_cache_size(const Attention* a) { return (size_t)a->B * a->H * a->L; }

// Recurrent form: state = kv (D*M) and z (D), the running sums over positions 0..t.
static size_t linear_attention_state_size(const Attention* a, int max_T) {
    return (size_t)a->D * a->M + a->D;
}

static void linear_attention_step(const Attention* a, real* state, int t, real* out,
                                  const real* Q, const real* K, const real* V) {
    int D = a->D, M = a->M;
    real *kv = state, *z = state + (size_t)D * M;
    real q[D], k[D];
    for (int d = 0; d < D; d++) { q[d] = elu1(Q[d]); k[d] = elu1(K[d]); }
    vec_axpy(z, 1, k, D);
    for (int d = 0; d < D; d++) vec_axpy(kv + (size_t)d * M, k[d], V, M);
    real den = vec_dot(q, z, D) + LINEAR_EPS;
    for (int m = 0; m < M; m++) out[m] = 0;
    for (int d = 0; d < D; d++) vec_axpy(out, q[d] / den, kv + (size_t)d * M, M);
}

#endif
