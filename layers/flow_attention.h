// Flow-Attention (Flowformer, Wu et al. ICML 2022), forward and backward,
// bidirectional ("normal") and causal, exactly as doc/FLOW_ATTENTION.md.
// One row of the table in layers/attention.h ("flow").
//
// Per (batch element, head), with q = sigmoid(Q), k = sigmoid(K), eps added to
// every component in the dot products written (x + eps) . (y + eps):
//   I_i  = 1 / (q_i + eps) . (sum_j k_j + eps)          incoming flow of sink i
//   O_j  = 1 / (k_j + eps) . (sum_i q_i + eps)          outgoing flow of source j
//   Ic_i = (q_i + eps) . (sum_j O_j k_j + eps)          conserved sink
//   Oc_j = clamp((k_j + eps) . (sum_i I_i q_i + eps), -c, c)   conserved source
//   A_i  = sigmoid(Ic_i * L / S)                        allocation
//   C_j  = S * softmax_j(Oc)                            competition
//   R_i  = A_i * I_i * sum_j (q_i . k_j) C_j V_j
// The causal form turns every sum over the sequence into a prefix sum and
// rescales by the position count n_i = i + 1 (see doc/FLOW_ATTENTION.md).
#ifndef LAYERS_FLOW_ATTENTION_H
#define LAYERS_FLOW_ATTENTION_H

#include <string.h>
#include "utils/real.h"
#include "utils/utils.h"
#include "layers/vec.h"
#include "layers/attention_types.h"
#include "layers/causal_dot_product.h"

#define FLOW_EPS ((real)1e-6)
// The competition computes exp(Oc - c) in [exp(-2c), 1]: up to this bound the
// smallest term stays a normal float32 (exp(-80) = 1.8e-35)
#define FLOW_MAX_CLAMP 40

// Per-(batch, head) reals saved by the forward pass: the scalars of each step
// of the operator, one per position. Causal: 6 per position; normal: 2 per
// query and 3 per key. Both fit in 3*(L+S).
static size_t flow_cache_per_head(int L, int S) { return 3 * ((size_t)L + S); }

static inline real clampr(real x, real c) { return x < -c ? -c : (x > c ? c : x); }

// dst (T,D) = sigmoid of one head's rows of src (rows `stride` apart)
static void gather_sigmoid(real* dst, const real* src, int T, int stride, int D) {
    for (int t = 0; t < T; t++) {
        for (int d = 0; d < D; d++) dst[t * D + d] = sigmoidr(src[(size_t)t * stride + d]);
    }
}

// dsrc rows += dfeat * sigmoid'(src) where feat = sigmoid(src), given as feat
static void scatter_sigmoid_grad(real* dsrc, const real* dfeat, const real* feat, int T, int stride, int D) {
    for (int t = 0; t < T; t++) {
        for (int d = 0; d < D; d++) {
            real f = feat[t * D + d];
            dsrc[(size_t)t * stride + d] += dfeat[t * D + d] * f * ((real)1 - f);
        }
    }
}

// ----------------------------------------------------------------------------
// Causal Flow-Attention

// cache of one head: I, O, A, C, Z (running softmax denominator), Oc before the clamp, each (T,)
enum { FC_I, FC_O, FC_A, FC_C, FC_Z, FC_RAW };

// One head. q, k are sigmoid features (T,D), v is (T,M) rows v_stride apart;
// writes R to out rows (H*M apart) and the per-position scalars to cache.
// w is (T,M) scratch, p is (T,M) scratch, state is D*M + CDP_CHUNK^2 + 4*D scratch.
static void flow_causal_head_forward(real* out, real* cache, const real* q, const real* k,
                                     const real* v, int T, int D, int M, int v_stride, int out_stride,
                                     real c, real* w, real* p, real* scratch) {
    real *I = cache + FC_I * T, *O = cache + FC_O * T, *A = cache + FC_A * T;
    real *C = cache + FC_C * T, *Z = cache + FC_Z * T, *raw = cache + FC_RAW * T;
    real *ksum = scratch, *qsum = ksum + D, *ko = qsum + D, *qi = ko + D;
    memset(scratch, 0, 4 * (size_t)D * sizeof(real));
    real z = 0;
    for (int i = 0; i < T; i++) {
        const real *qr = q + (size_t)i * D, *kr = k + (size_t)i * D;
        real n = (real)(i + 1);
        vec_axpy(ksum, 1, kr, D);
        vec_axpy(qsum, 1, qr, D);
        I[i] = (real)1 / vec_dot_eps(qr, ksum, D, FLOW_EPS);
        O[i] = (real)1 / vec_dot_eps(kr, qsum, D, FLOW_EPS);
        vec_axpy(ko, n * O[i], kr, D);
        vec_axpy(qi, n * I[i], qr, D);
        A[i] = sigmoidr(vec_dot_eps(qr, ko, D, FLOW_EPS) / n);
        raw[i] = vec_dot_eps(kr, qi, D, FLOW_EPS) / n;
        // exp(Oc - c) <= 1: the same softmax, safe from overflow for any clamp bound
        real e = exp(clampr(raw[i], c) - c);
        z += e;
        Z[i] = z;
        C[i] = n * e / z;
        for (int m = 0; m < M; m++) w[(size_t)i * M + m] = C[i] * v[(size_t)i * v_stride + m];
    }
    causal_dot_product_forward(p, q, k, w, T, D, M, scratch + 4 * D, scratch + 4 * D + (size_t)D * M);
    for (int i = 0; i < T; i++) {
        for (int m = 0; m < M; m++) out[(size_t)i * out_stride + m] = A[i] * I[i] * p[(size_t)i * M + m];
    }
}

// One head, backward. dq, dk are (T,D) gradients with respect to the sigmoid
// features (zeroed by the caller); dv rows (v_stride apart) are accumulated.
// g and w are (T,M) scratch, dw (T,M) zeroed scratch, s (6*T) scratch,
// scratch as in the forward pass.
static void flow_causal_head_backward(real* dq, real* dk, real* dv, const real* dout, const real* out,
                                      const real* cache, const real* q, const real* k, const real* v,
                                      int T, int D, int M, int v_stride, int out_stride, real c,
                                      real* g, real* w, real* dw, real* s, real* scratch) {
    const real *I = cache + FC_I * T, *O = cache + FC_O * T, *A = cache + FC_A * T;
    const real *C = cache + FC_C * T, *Z = cache + FC_Z * T, *raw = cache + FC_RAW * T;
    real *dA = s, *dIdirect = s + T;
    // R_i = A_i I_i p_i, so dout_i . p_i = (dout_i . R_i) / (A_i I_i)
    for (int i = 0; i < T; i++) {
        const real *dr = dout + (size_t)i * out_stride, *r = out + (size_t)i * out_stride;
        real dr_r = vec_dot(dr, r, M);
        dA[i] = dr_r / A[i];
        dIdirect[i] = dr_r / I[i];
        for (int m = 0; m < M; m++) {
            g[(size_t)i * M + m] = A[i] * I[i] * dr[m];
            w[(size_t)i * M + m] = C[i] * v[(size_t)i * v_stride + m];
        }
    }
    causal_dot_product_backward(dq, dk, dw, g, q, k, w, T, D, M, scratch + 4 * D, scratch + 4 * D + (size_t)D * M);

    // Backwards over positions: every prefix sum of the forward pass becomes a
    // suffix sum here. The terms that need the forward prefix sums themselves
    // are left for the second scan, their scalar factors kept in s.
    real *draw = s + 2 * T, *dIc = s + 3 * T, *ddenI = s + 4 * T, *ddenO = s + 5 * T;
    // rqi, rko, rks, rqs: suffix sums over m >= i of the gradients with respect to
    // the prefix sums qi_m, ko_m, ksum_m, qsum_m, each of which holds position i's term.
    real *rqi = scratch, *rko = rqi + D, *rks = rko + D, *rqs = rks + D;
    memset(scratch, 0, 4 * (size_t)D * sizeof(real));
    real zsuffix = 0; // sum_{m >= i} C_m dC_m / Z_m
    for (int i = T - 1; i >= 0; i--) {
        const real *qr = q + (size_t)i * D, *kr = k + (size_t)i * D;
        real *dqr = dq + (size_t)i * D, *dkr = dk + (size_t)i * D;
        real n = (real)(i + 1);
        // competition C_i = n_i exp(Oc_i) / Z_i, Z_i = sum_{j<=i} exp(Oc_j)
        real dC = vec_dot(dw + (size_t)i * M, v + (size_t)i * v_stride, M);
        vec_axpy(dv + (size_t)i * v_stride, C[i], dw + (size_t)i * M, M);
        zsuffix += C[i] * dC / Z[i];
        real e = C[i] * Z[i] / n;
        real dOc = C[i] * dC - e * zsuffix;
        draw[i] = (raw[i] >= -c && raw[i] <= c) ? dOc : 0;
        // allocation A_i = sigmoid(Ic_i)
        real dIc_i = dA[i] * A[i] * ((real)1 - A[i]);
        // Oc_i = (k_i + eps) . (qi_i + eps) / n_i with qi_i = sum_{j<=i} n_j I_j q_j
        vec_axpy_eps(rqi, draw[i] / n, kr, D, FLOW_EPS);
        // Ic_i = (q_i + eps) . (ko_i + eps) / n_i with ko_i = sum_{j<=i} n_j O_j k_j
        vec_axpy_eps(rko, dIc_i / n, qr, D, FLOW_EPS);
        real dI = dIdirect[i] + n * vec_dot(qr, rqi, D);
        vec_axpy(dqr, n * I[i], rqi, D);
        real dO = n * vec_dot(kr, rko, D);
        vec_axpy(dkr, n * O[i], rko, D);
        // I_i = 1 / (q_i + eps) . (ksum_i + eps), O_i = 1 / (k_i + eps) . (qsum_i + eps)
        ddenI[i] = -I[i] * I[i] * dI;
        ddenO[i] = -O[i] * O[i] * dO;
        vec_axpy_eps(rks, ddenI[i], qr, D, FLOW_EPS);
        vec_axpy(dkr, 1, rks, D);
        vec_axpy_eps(rqs, ddenO[i], kr, D, FLOW_EPS);
        vec_axpy(dqr, 1, rqs, D);
        dIc[i] = dIc_i;
    }
    // Forwards again for the terms that multiply the prefix sums.
    real *ksum = scratch, *qsum = ksum + D, *ko = qsum + D, *qi = ko + D;
    memset(scratch, 0, 4 * (size_t)D * sizeof(real));
    for (int i = 0; i < T; i++) {
        const real *qr = q + (size_t)i * D, *kr = k + (size_t)i * D;
        real *dqr = dq + (size_t)i * D, *dkr = dk + (size_t)i * D;
        real n = (real)(i + 1);
        vec_axpy(ksum, 1, kr, D);
        vec_axpy(qsum, 1, qr, D);
        vec_axpy(ko, n * O[i], kr, D);
        vec_axpy(qi, n * I[i], qr, D);
        vec_axpy_eps(dqr, ddenI[i], ksum, D, FLOW_EPS);
        vec_axpy_eps(dqr, dIc[i] / n, ko, D, FLOW_EPS);
        vec_axpy_eps(dkr, ddenO[i], qsum, D, FLOW_EPS);
        vec_axpy_eps(dkr, draw[i] / n, qi, D, FLOW_EPS);
    }
}

// ----------------------------------------------------------------------------
// Normal (bidirectional) Flow-Attention, L queries and S keys

// cache of one head: I and A over the L queries, then O, C and Oc before the clamp over the S keys
enum { FN_I, FN_A, FN_O, FN_C, FN_RAW };
static real* flow_normal_cache(real* cache, int L, int S, int which) {
    return which <= FN_A ? cache + (size_t)which * L : cache + 2 * (size_t)L + (size_t)(which - FN_O) * S;
}

// One head. q (L,D), k (S,D) sigmoid features; v rows v_stride apart; out rows out_stride apart.
// w (S,M), p (L,M) scratch; scratch has D*M + 4*D reals.
static void flow_normal_head_forward(real* out, real* cache, const real* q, const real* k,
                                     const real* v, int L, int S, int D, int M, int v_stride, int out_stride,
                                     real c, real* w, real* p, real* scratch) {
    real *I = flow_normal_cache(cache, L, S, FN_I), *A = flow_normal_cache(cache, L, S, FN_A);
    real *O = flow_normal_cache(cache, L, S, FN_O), *C = flow_normal_cache(cache, L, S, FN_C);
    real *raw = flow_normal_cache(cache, L, S, FN_RAW);
    real *ksum = scratch, *qsum = ksum + D, *ko = qsum + D, *qi = ko + D;
    memset(scratch, 0, 4 * (size_t)D * sizeof(real));
    for (int j = 0; j < S; j++) vec_axpy(ksum, 1, k + (size_t)j * D, D);
    for (int i = 0; i < L; i++) vec_axpy(qsum, 1, q + (size_t)i * D, D);
    for (int i = 0; i < L; i++) I[i] = (real)1 / vec_dot_eps(q + (size_t)i * D, ksum, D, FLOW_EPS);
    for (int j = 0; j < S; j++) O[j] = (real)1 / vec_dot_eps(k + (size_t)j * D, qsum, D, FLOW_EPS);
    for (int j = 0; j < S; j++) vec_axpy(ko, O[j], k + (size_t)j * D, D);
    for (int i = 0; i < L; i++) vec_axpy(qi, I[i], q + (size_t)i * D, D);
    for (int i = 0; i < L; i++) A[i] = sigmoidr(vec_dot_eps(q + (size_t)i * D, ko, D, FLOW_EPS) * (real)L / (real)S);
    real z = 0;
    for (int j = 0; j < S; j++) {
        raw[j] = vec_dot_eps(k + (size_t)j * D, qi, D, FLOW_EPS);
        C[j] = exp(clampr(raw[j], c) - c); // shifted by c: the softmax is unchanged and cannot overflow
        z += C[j];
    }
    for (int j = 0; j < S; j++) {
        C[j] *= (real)S / z;
        for (int m = 0; m < M; m++) w[(size_t)j * M + m] = C[j] * v[(size_t)j * v_stride + m];
    }
    full_dot_product_forward(p, q, k, w, L, S, D, M, scratch + 4 * D);
    for (int i = 0; i < L; i++) {
        for (int m = 0; m < M; m++) out[(size_t)i * out_stride + m] = A[i] * I[i] * p[(size_t)i * M + m];
    }
}

// One head, backward; as flow_causal_head_backward. g (L,M), w (S,M), dw (S,M) zeroed;
// s has 2*L + S reals; scratch has 2*D*M + 4*D reals.
static void flow_normal_head_backward(real* dq, real* dk, real* dv, const real* dout, const real* out,
                                      const real* cache, const real* q, const real* k, const real* v,
                                      int L, int S, int D, int M, int v_stride, int out_stride, real c,
                                      real* g, real* w, real* dw, real* s, real* scratch) {
    const real *I = flow_normal_cache((real*)cache, L, S, FN_I), *A = flow_normal_cache((real*)cache, L, S, FN_A);
    const real *O = flow_normal_cache((real*)cache, L, S, FN_O), *C = flow_normal_cache((real*)cache, L, S, FN_C);
    const real *raw = flow_normal_cache((real*)cache, L, S, FN_RAW);
    real *dA = s, *dI = s + L, *dC = s + 2 * L;
    for (int i = 0; i < L; i++) {
        const real *dr = dout + (size_t)i * out_stride, *r = out + (size_t)i * out_stride;
        real dr_r = vec_dot(dr, r, M);
        dA[i] = dr_r / A[i];
        dI[i] = dr_r / I[i];
        for (int m = 0; m < M; m++) g[(size_t)i * M + m] = A[i] * I[i] * dr[m];
    }
    for (int j = 0; j < S; j++) {
        for (int m = 0; m < M; m++) w[(size_t)j * M + m] = C[j] * v[(size_t)j * v_stride + m];
    }
    real *kv = scratch + 4 * D, *dkv = kv + (size_t)D * M;
    full_dot_product_backward(dq, dk, dw, g, q, k, w, L, S, D, M, kv, dkv);

    real *ksum = scratch, *qsum = ksum + D, *ko = qsum + D, *qi = ko + D;
    memset(scratch, 0, 4 * (size_t)D * sizeof(real));
    for (int j = 0; j < S; j++) vec_axpy(ksum, 1, k + (size_t)j * D, D);
    for (int i = 0; i < L; i++) vec_axpy(qsum, 1, q + (size_t)i * D, D);
    for (int j = 0; j < S; j++) vec_axpy(ko, O[j], k + (size_t)j * D, D);
    for (int i = 0; i < L; i++) vec_axpy(qi, I[i], q + (size_t)i * D, D);
    // Gradients with respect to these sums, accumulated in dkv's first 4*D reals.
    real *dksum = dkv, *dqsum = dksum + D, *dko = dqsum + D, *dqi = dko + D;
    memset(dkv, 0, 4 * (size_t)D * sizeof(real));

    // competition C_j = S softmax_j(Oc): dOc_j = C_j (dC_j - mean_m C_m dC_m)
    real mean = 0;
    for (int j = 0; j < S; j++) {
        dC[j] = vec_dot(dw + (size_t)j * M, v + (size_t)j * v_stride, M);
        vec_axpy(dv + (size_t)j * v_stride, C[j], dw + (size_t)j * M, M);
        mean += C[j] * dC[j];
    }
    mean /= (real)S;
    for (int j = 0; j < S; j++) {
        const real* kr = k + (size_t)j * D;
        real dOc = C[j] * (dC[j] - mean);
        real draw = (raw[j] >= -c && raw[j] <= c) ? dOc : 0;
        // raw_j = (k_j + eps) . (qi + eps)
        vec_axpy_eps(dk + (size_t)j * D, draw, qi, D, FLOW_EPS);
        vec_axpy_eps(dqi, draw, kr, D, FLOW_EPS);
    }
    // allocation A_i = sigmoid(Ic_i L/S), Ic_i = (q_i + eps) . (ko + eps); qi = sum_i I_i q_i
    for (int i = 0; i < L; i++) {
        const real* qr = q + (size_t)i * D;
        real dIc = dA[i] * A[i] * ((real)1 - A[i]) * (real)L / (real)S;
        vec_axpy_eps(dq + (size_t)i * D, dIc, ko, D, FLOW_EPS);
        vec_axpy_eps(dko, dIc, qr, D, FLOW_EPS);
        dI[i] += vec_dot(qr, dqi, D);
        vec_axpy(dq + (size_t)i * D, I[i], dqi, D);
        // I_i = 1 / (q_i + eps) . (ksum + eps)
        real dden = -I[i] * I[i] * dI[i];
        vec_axpy_eps(dq + (size_t)i * D, dden, ksum, D, FLOW_EPS);
        vec_axpy_eps(dksum, dden, qr, D, FLOW_EPS);
    }
    // ko = sum_j O_j k_j, O_j = 1 / (k_j + eps) . (qsum + eps)
    for (int j = 0; j < S; j++) {
        const real* kr = k + (size_t)j * D;
        real dO = vec_dot(kr, dko, D);
        vec_axpy(dk + (size_t)j * D, O[j], dko, D);
        real dden = -O[j] * O[j] * dO;
        vec_axpy_eps(dk + (size_t)j * D, dden, qsum, D, FLOW_EPS);
        vec_axpy_eps(dqsum, dden, kr, D, FLOW_EPS);
        vec_axpy(dk + (size_t)j * D, 1, dksum, D);
    }
    for (int i = 0; i < L; i++) vec_axpy(dq + (size_t)i * D, 1, dqsum, D);
}

// ----------------------------------------------------------------------------
// Multi-head: one (batch element, head) per task, each with its own scratch.

static void flow_attention_forward(const Attention* a, real* out, real* cache,
                                   const real* q, const real* k, const real* v) {
    int D = a->D, M = a->M, L = a->L, S = a->S;
    size_t per_head = flow_cache_per_head(L, S);
    #pragma omp parallel
    {
        real* qf = (real*)malloc_check(((size_t)L * D + (size_t)S * D + (size_t)S * M + (size_t)L * M
                                        + (size_t)D * M + CDP_CHUNK * CDP_CHUNK + 4 * (size_t)D) * sizeof(real));
        real *kf = qf + (size_t)L * D, *w = kf + (size_t)S * D, *p = w + (size_t)S * M, *scratch = p + (size_t)L * M;
        #pragma omp for schedule(static)
        for (int bh = 0; bh < a->B * a->H; bh++) {
            int b = bh / a->H, h = bh % a->H;
            gather_sigmoid(qf, HEAD_Q(a, q, b, h), L, a->q_stride, D);
            gather_sigmoid(kf, HEAD_K(a, k, b, h), S, a->k_stride, D);
            real* ch = cache + (size_t)bh * per_head;
            if (a->causal)
                flow_causal_head_forward(HEAD_OUT(a, out, b, h), ch, qf, kf, HEAD_V(a, v, b, h),
                                         L, D, M, a->v_stride, a->H * M, a->clamp, w, p, scratch);
            else
                flow_normal_head_forward(HEAD_OUT(a, out, b, h), ch, qf, kf, HEAD_V(a, v, b, h),
                                         L, S, D, M, a->v_stride, a->H * M, a->clamp, w, p, scratch);
        }
        free(qf);
    }
}

static void flow_attention_backward(const Attention* a, real* dq, real* dk, real* dv,
                                    const real* dout, const real* out, const real* cache,
                                    const real* q, const real* k, const real* v) {
    int D = a->D, M = a->M, L = a->L, S = a->S;
    size_t per_head = flow_cache_per_head(L, S);
    #pragma omp parallel
    {
        size_t feats = (size_t)(L + S) * D, grads = feats, mats = (size_t)L * M + 2 * (size_t)S * M;
        size_t scratch_size = 2 * (size_t)D * M + CDP_CHUNK * CDP_CHUNK + 4 * (size_t)D;
        size_t scalars = 6 * (size_t)L + S;
        real* qf = (real*)malloc_check((feats + grads + mats + scalars + scratch_size) * sizeof(real));
        real *kf = qf + (size_t)L * D, *dqf = kf + (size_t)S * D, *dkf = dqf + (size_t)L * D;
        real *g = dkf + (size_t)S * D, *w = g + (size_t)L * M, *dw = w + (size_t)S * M;
        real *s = dw + (size_t)S * M, *scratch = s + scalars;
        #pragma omp for schedule(static)
        for (int bh = 0; bh < a->B * a->H; bh++) {
            int b = bh / a->H, h = bh % a->H;
            gather_sigmoid(qf, HEAD_Q(a, q, b, h), L, a->q_stride, D);
            gather_sigmoid(kf, HEAD_K(a, k, b, h), S, a->k_stride, D);
            memset(dqf, 0, grads * sizeof(real)); // dqf and dkf, adjacent
            memset(dw, 0, (size_t)S * M * sizeof(real));
            const real* ch = cache + (size_t)bh * per_head;
            if (a->causal)
                flow_causal_head_backward(dqf, dkf, HEAD_V(a, dv, b, h), HEAD_OUT(a, dout, b, h),
                                          HEAD_OUT(a, out, b, h), ch, qf, kf, HEAD_V(a, v, b, h),
                                          L, D, M, a->v_stride, a->H * M, a->clamp, g, w, dw, s, scratch);
            else
                flow_normal_head_backward(dqf, dkf, HEAD_V(a, dv, b, h), HEAD_OUT(a, dout, b, h),
                                          HEAD_OUT(a, out, b, h), ch, qf, kf, HEAD_V(a, v, b, h),
                                          L, S, D, M, a->v_stride, a->H * M, a->clamp, g, w, dw, s, scratch);
            scatter_sigmoid_grad(HEAD_Q(a, dq, b, h), dqf, qf, L, a->q_stride, D);
            scatter_sigmoid_grad(HEAD_K(a, dk, b, h), dkf, kf, S, a->k_stride, D);
        }
        free(qf);
    }
}

// ----------------------------------------------------------------------------
// Recurrent form of causal Flow-Attention: every sum above is a running prefix
// sum, so position t needs only these sums over positions 0..t.
// state: ksum, qsum, ko, qi (D each), Z (1), kv (D*M).
static size_t flow_attention_state_size(const Attention* a, int max_T) {
    return 4 * (size_t)a->D + 1 + (size_t)a->D * a->M;
}

static void flow_attention_step(const Attention* a, real* state, int t, real* out,
                                const real* Q, const real* K, const real* V) {
    int D = a->D, M = a->M;
    real c = a->clamp;
    real *ksum = state, *qsum = ksum + D, *ko = qsum + D, *qi = ko + D, *z = qi + D, *kv = z + 1;
    real q[D], k[D];
    for (int d = 0; d < D; d++) { q[d] = sigmoidr(Q[d]); k[d] = sigmoidr(K[d]); }
    real n = (real)(t + 1);
    vec_axpy(ksum, 1, k, D);
    vec_axpy(qsum, 1, q, D);
    real I = (real)1 / vec_dot_eps(q, ksum, D, FLOW_EPS);
    real O = (real)1 / vec_dot_eps(k, qsum, D, FLOW_EPS);
    vec_axpy(ko, n * O, k, D);
    vec_axpy(qi, n * I, q, D);
    real A = sigmoidr(vec_dot_eps(q, ko, D, FLOW_EPS) / n);
    real e = exp(clampr(vec_dot_eps(k, qi, D, FLOW_EPS) / n, c) - c);
    *z += e;
    real C = n * e / *z;
    for (int d = 0; d < D; d++) vec_axpy(kv + (size_t)d * M, C * k[d], V, M);
    for (int m = 0; m < M; m++) out[m] = 0;
    for (int d = 0; d < D; d++) vec_axpy(out, A * I * q[d], kv + (size_t)d * M, M);
}

static size_t flow_attention_cache_size(const Attention* a) {
    return (size_t)a->B * a->H * flow_cache_per_head(a->L, a->S);
}

// The products, plus about 60 operations per position and feature for the scans,
// the features and their gradients.
static double flow_attention_flops(const Attention* a) {
    double product = a->causal ? causal_dot_product_flops(a->L, a->D, a->M)
                               : full_dot_product_flops(a->L, a->S, a->D, a->M);
    return (double)a->B * a->H * (product + 60.0 * (a->L + a->S) * a->D);
}

static void flow_attention_check(const Attention* a) {
    if (!(a->clamp > 0 && a->clamp <= FLOW_MAX_CLAMP))
        fail("attention: flow clamp bound must be in (0, %g], got %g", (double)FLOW_MAX_CLAMP, (double)a->clamp);
}

#endif
