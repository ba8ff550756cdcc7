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
//
// Work is split over (batch element, head) pairs, one per task; each thread
// carves its arrays out of its own scratch (layers/vec.h), which is allocated
// once and reused.
#ifndef LAYERS_FLOW_ATTENTION_H
#define LAYERS_FLOW_ATTENTION_H

#include <string.h>
#include "utils/real.h"
#include "utils/utils.h"
#include "layers/vec.h"
#include "layers/fastmath.h"
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

// dst (n,D) = sigmoid of n rows of src, `stride` apart
static void sigmoid_rows(real* dst, const real* src, int n, int stride, int D) {
    for (int t = 0; t < n; t++) {
        const real* row = src + (size_t)t * stride;
        #pragma omp simd
        for (int d = 0; d < D; d++) dst[t * D + d] = sigmoid_fast(row[d]);
    }
}

// dsrc's n rows (`stride` apart) += dfeat * sigmoid'(src), given feat = sigmoid(src)
static void sigmoid_rows_backward(real* dsrc, const real* dfeat, const real* feat, int n, int stride, int D) {
    for (int t = 0; t < n; t++) {
        real* row = dsrc + (size_t)t * stride;
        #pragma omp simd
        for (int d = 0; d < D; d++) row[d] += dfeat[t * D + d] * feat[t * D + d] * ((real)1 - feat[t * D + d]);
    }
}

// dst (n,M) = scale[t] * n rows of src, `stride` apart
static void scale_rows(real* dst, const real* scale, const real* src, int n, int stride, int M) {
    for (int t = 0; t < n; t++) {
        const real* row = src + (size_t)t * stride;
        #pragma omp simd
        for (int m = 0; m < M; m++) dst[t * M + m] = scale[t] * row[m];
    }
}

// ----------------------------------------------------------------------------
// Causal Flow-Attention
//
// The sequence is walked in chunks of CDP_CHUNK positions (layers/causal_dot_product.h).
// Forward, per chunk: the sigmoid features; a scan over the chunk's positions
// that carries the running sums and gives each position's flows; the chunk's
// step of the causal product of q, k and w = C v; R = A I times the product.
// Every FLOW_SEGMENT positions the forward pass also saves the product's state
// and the running sums (a checkpoint).
// Backward, segment by segment from the last: from its checkpoint, the
// segment's features and each chunk's state again; then, last chunk first, the
// product's backward step and two scans over the chunk's positions: backwards,
// where every prefix sum of the forward pass becomes a suffix sum of gradients,
// and forwards, for the terms that multiply the prefix sums themselves. A
// segment's arrays stay in L2, and q, k, v are read once by each pass.

#define FLOW_SEGMENT (8 * CDP_CHUNK)

// cache of one head: I, O, A, C, Z (running softmax denominator), Oc before the clamp, each (T,)
enum { FC_I, FC_O, FC_A, FC_C, FC_Z, FC_RAW };

// The running sums over positions 0..t of one head, in this order: ksum = sum k_j,
// qsum = sum q_j, ko = sum n_j O_j k_j, qi = sum n_j I_j q_j (D reals each), then
// z = sum exp(Oc_j - c). Generation's recurrent state starts with them.
static size_t flow_sums_size(int D) { return 4 * (size_t)D + 1; }

// A checkpoint: the product's state (D,M), then ksum, qsum, ko, qi.
static size_t flow_checkpoint_size(int D, int M) { return (size_t)D * M + 4 * (size_t)D; }

// Reals of checkpoints per head, after every head's scalars in the cache.
static size_t flow_checkpoints_per_head(int T, int D, int M) {
    return (size_t)(T + FLOW_SEGMENT - 1) / FLOW_SEGMENT * flow_checkpoint_size(D, M);
}

typedef struct { real I, O, A, C, Z, raw; } FlowPosition;

// Position t (0-based) of causal Flow-Attention, features q and k: takes them
// into the running sums and returns the position's flows.
VEC_INLINE FlowPosition flow_causal_advance(real* sums, int t, const real* q, const real* k, int D, real c) {
    real *ksum = sums, *qsum = ksum + D, *ko = qsum + D, *qi = ko + D, *z = qi + D;
    real n = (real)(t + 1);
    FlowPosition f;
    vec_axpy(ksum, 1, k, D);
    vec_axpy(qsum, 1, q, D);
    f.I = (real)1 / vec_dot_eps(q, ksum, D, FLOW_EPS);
    f.O = (real)1 / vec_dot_eps(k, qsum, D, FLOW_EPS);
    vec_axpy(ko, n * f.O, k, D);
    vec_axpy(qi, n * f.I, q, D);
    f.A = sigmoid_fast(vec_dot_eps(q, ko, D, FLOW_EPS) / n);
    f.raw = vec_dot_eps(k, qi, D, FLOW_EPS) / n;
    // exp(Oc - c) <= 1: the same softmax, safe from overflow for any clamp bound
    real e = exp_fast(clampr(f.raw, c) - c);
    *z += e;
    f.Z = *z;
    f.C = n * e / *z;
    return f;
}

// The same sums but z, from the flows I and O that the forward pass saved.
VEC_INLINE void flow_causal_resum(real* sums, int t, const real* q, const real* k, real I, real O, int D) {
    real *ksum = sums, *qsum = ksum + D, *ko = qsum + D, *qi = ko + D;
    real n = (real)(t + 1);
    vec_axpy(ksum, 1, k, D);
    vec_axpy(qsum, 1, q, D);
    vec_axpy(ko, n * O, k, D);
    vec_axpy(qi, n * I, q, D);
}

// Reals of scratch a head's forward pass takes: the chunk's q, k (C,D), w, p (C,M),
// the product's state (D,M) and scores (C,C), the running sums.
static size_t flow_causal_forward_scratch(int D, int M) {
    return CDP_CHUNK * 2 * ((size_t)D + M) + (size_t)D * M + CDP_CHUNK * CDP_CHUNK + flow_sums_size(D);
}

static void flow_causal_head_forward(const Attention* a, int b, int h, real* out, real* cache, real* checkpoints,
                                     const real* q, const real* k, const real* v, real* scratch) {
    int T = a->L, D = a->D, M = a->M, out_stride = a->H * M;
    const real *Q = HEAD_Q(a, q, b, h), *K = HEAD_K(a, k, b, h), *V = HEAD_V(a, v, b, h);
    real* R = HEAD_OUT(a, out, b, h);
    real *I = cache + FC_I * T, *O = cache + FC_O * T, *A = cache + FC_A * T;
    real *C = cache + FC_C * T, *Z = cache + FC_Z * T, *raw = cache + FC_RAW * T;
    real *qc = scratch, *kc = qc + CDP_CHUNK * D, *wc = kc + CDP_CHUNK * D, *pc = wc + CDP_CHUNK * M;
    real *S = pc + CDP_CHUNK * M, *scores = S + (size_t)D * M, *sums = scores + CDP_CHUNK * CDP_CHUNK;
    memset(S, 0, (size_t)D * M * sizeof(real));
    memset(sums, 0, flow_sums_size(D) * sizeof(real));
    for (int c0 = 0; c0 < T; c0 += CDP_CHUNK) {
        int n = T - c0 < CDP_CHUNK ? T - c0 : CDP_CHUNK;
        if (c0 % FLOW_SEGMENT == 0) {
            real* cp = checkpoints + (size_t)(c0 / FLOW_SEGMENT) * flow_checkpoint_size(D, M);
            memcpy(cp, S, (size_t)D * M * sizeof(real));
            memcpy(cp + (size_t)D * M, sums, 4 * (size_t)D * sizeof(real));
        }
        sigmoid_rows(qc, Q + (size_t)c0 * a->q_stride, n, a->q_stride, D);
        sigmoid_rows(kc, K + (size_t)c0 * a->k_stride, n, a->k_stride, D);
        for (int t = c0; t < c0 + n; t++) {
            FlowPosition f = flow_causal_advance(sums, t, qc + (t - c0) * D, kc + (t - c0) * D, D, a->clamp);
            I[t] = f.I, O[t] = f.O, A[t] = f.A, C[t] = f.C, Z[t] = f.Z, raw[t] = f.raw;
        }
        scale_rows(wc, C + c0, V + (size_t)c0 * a->v_stride, n, a->v_stride, M);
        for (int t = c0 + CDP_CHUNK; t < c0 + 2 * CDP_CHUNK && t < T; t++) { // the next chunk's rows
            vec_prefetch(Q + (size_t)t * a->q_stride, D, 0);
            vec_prefetch(K + (size_t)t * a->k_stride, D, 0);
            vec_prefetch(V + (size_t)t * a->v_stride, M, 0);
            vec_prefetch(R + (size_t)t * out_stride, M, 1);
        }
        cdp_chunk_forward(pc, qc, kc, wc, n, D, M, S, scores);
        for (int i = 0; i < n; i++) {
            real ai = A[c0 + i] * I[c0 + i], *r = R + (size_t)(c0 + i) * out_stride;
            #pragma omp simd
            for (int m = 0; m < M; m++) r[m] = ai * pc[i * M + m];
        }
    }
}

// Reals of scratch a head's backward pass takes: the segment's q, k (SEG,D) and
// w (SEG,M), a checkpoint per chunk of it; the chunk's dq, dk (C,D), g, dw (C,M),
// scores (C,C); the reverse state G (D,M), the running and suffix sums (4D each),
// 6 scalars per position of a chunk.
static size_t flow_causal_backward_scratch(int D, int M) {
    return FLOW_SEGMENT * (2 * (size_t)D + M) + FLOW_SEGMENT / CDP_CHUNK * flow_checkpoint_size(D, M)
           + CDP_CHUNK * 2 * ((size_t)D + M) + CDP_CHUNK * CDP_CHUNK + (size_t)D * M + 8 * (size_t)D
           + 6 * CDP_CHUNK;
}

static void flow_causal_head_backward(const Attention* a, int b, int h, real* dq, real* dk, real* dv,
                                      const real* dout, const real* out, const real* cache,
                                      const real* checkpoints, const real* q, const real* k, const real* v,
                                      real* scratch) {
    int T = a->L, D = a->D, M = a->M, out_stride = a->H * M;
    real c = a->clamp;
    const real *Q = HEAD_Q(a, q, b, h), *K = HEAD_K(a, k, b, h), *V = HEAD_V(a, v, b, h);
    const real *dR = HEAD_OUT(a, dout, b, h), *R = HEAD_OUT(a, out, b, h);
    real *dQ = HEAD_Q(a, dq, b, h), *dK = HEAD_K(a, dk, b, h), *dV = HEAD_V(a, dv, b, h);
    const real *I = cache + FC_I * T, *O = cache + FC_O * T, *A = cache + FC_A * T;
    const real *C = cache + FC_C * T, *Z = cache + FC_Z * T, *raw = cache + FC_RAW * T;
    size_t cp_size = flow_checkpoint_size(D, M);
    real *qs = scratch, *ks = qs + FLOW_SEGMENT * D, *ws = ks + FLOW_SEGMENT * D;
    real *chunk_cps = ws + FLOW_SEGMENT * M, *dqc = chunk_cps + FLOW_SEGMENT / CDP_CHUNK * cp_size;
    real *dkc = dqc + CDP_CHUNK * D, *gc = dkc + CDP_CHUNK * D, *dwc = gc + CDP_CHUNK * M;
    real *scores = dwc + CDP_CHUNK * M, *G = scores + CDP_CHUNK * CDP_CHUNK, *sums = G + (size_t)D * M;
    // suffix sums over positions m >= t of the gradients with respect to the
    // prefix sums qi_m, ko_m, ksum_m, qsum_m, each of which holds position t's term
    real *rqi = sums + 4 * D, *rko = rqi + D, *rks = rko + D, *rqs = rks + D;
    real *dA = rqs + D, *dI = dA + CDP_CHUNK, *draw = dI + CDP_CHUNK, *dIc = draw + CDP_CHUNK;
    real *ddenI = dIc + CDP_CHUNK, *ddenO = ddenI + CDP_CHUNK;

    memset(G, 0, (size_t)D * M * sizeof(real)); // the product's reverse state
    memset(rqi, 0, 4 * (size_t)D * sizeof(real));
    real zsuffix = 0; // sum_{m >= t} C_m dC_m / Z_m
    for (int s0 = (T - 1) / FLOW_SEGMENT * FLOW_SEGMENT; s0 >= 0; s0 -= FLOW_SEGMENT) {
        int chunks = ((T - s0 < FLOW_SEGMENT ? T - s0 : FLOW_SEGMENT) + CDP_CHUNK - 1) / CDP_CHUNK;
        // Forwards from the segment's checkpoint: features, w = C v, each chunk's checkpoint.
        memcpy(chunk_cps, checkpoints + (size_t)(s0 / FLOW_SEGMENT) * cp_size, cp_size * sizeof(real));
        for (int j = 0; j < chunks; j++) {
            int c0 = s0 + j * CDP_CHUNK, n = T - c0 < CDP_CHUNK ? T - c0 : CDP_CHUNK;
            real *qc = qs + j * CDP_CHUNK * D, *kc = ks + j * CDP_CHUNK * D, *wc = ws + j * CDP_CHUNK * M;
            sigmoid_rows(qc, Q + (size_t)c0 * a->q_stride, n, a->q_stride, D);
            sigmoid_rows(kc, K + (size_t)c0 * a->k_stride, n, a->k_stride, D);
            scale_rows(wc, C + c0, V + (size_t)c0 * a->v_stride, n, a->v_stride, M);
            if (j + 1 < chunks) { // the next chunk's checkpoint: this one's plus the chunk
                real *cp = chunk_cps + j * cp_size, *next = cp + cp_size;
                memcpy(next, cp, cp_size * sizeof(real));
                for (int t = c0; t < c0 + n; t++)
                    flow_causal_resum(next + (size_t)D * M, t, qc + (t - c0) * D, kc + (t - c0) * D, I[t], O[t], D);
                cdp_state_add(next, kc, wc, n, D, M);
            }
        }
        // Backwards over the segment's chunks.
        for (int j = chunks - 1; j >= 0; j--) {
            int c0 = s0 + j * CDP_CHUNK, n = T - c0 < CDP_CHUNK ? T - c0 : CDP_CHUNK;
            const real *qc = qs + j * CDP_CHUNK * D, *kc = ks + j * CDP_CHUNK * D, *wc = ws + j * CDP_CHUNK * M;
            const real* cp = chunk_cps + j * cp_size;
            // this chunk's counterpart in the segment before, next to be read
            for (int t = c0 - FLOW_SEGMENT; t < c0 - FLOW_SEGMENT + CDP_CHUNK && t >= 0; t++) {
                vec_prefetch(Q + (size_t)t * a->q_stride, D, 0);
                vec_prefetch(K + (size_t)t * a->k_stride, D, 0);
                vec_prefetch(V + (size_t)t * a->v_stride, M, 0);
            }
            // the rows the next chunk's gradients read and write
            for (int t = c0 - CDP_CHUNK; t < c0 && t >= 0; t++) {
                vec_prefetch(dR + (size_t)t * out_stride, M, 0);
                vec_prefetch(R + (size_t)t * out_stride, M, 0);
                vec_prefetch(dQ + (size_t)t * a->q_stride, D, 1);
                vec_prefetch(dK + (size_t)t * a->k_stride, D, 1);
                vec_prefetch(dV + (size_t)t * a->v_stride, M, 1);
            }
            // R_t = A_t I_t p_t, so dout_t . p_t = (dout_t . R_t) / (A_t I_t)
            for (int i = 0; i < n; i++) {
                int t = c0 + i;
                const real *dr = dR + (size_t)t * out_stride, *r = R + (size_t)t * out_stride;
                real dr_r = vec_dot(dr, r, M), ai = A[t] * I[t];
                dA[i] = dr_r / A[t];
                dI[i] = dr_r / I[t];
                #pragma omp simd
                for (int m = 0; m < M; m++) gc[i * M + m] = ai * dr[m];
            }
            cdp_chunk_backward(dqc, dkc, dwc, gc, qc, kc, wc, n, D, M, cp, G, scores);

            for (int i = n - 1; i >= 0; i--) {
                int t = c0 + i;
                const real *qr = qc + i * D, *kr = kc + i * D;
                real *dqr = dqc + i * D, *dkr = dkc + i * D;
                real nt = (real)(t + 1);
                // competition C_t = n_t exp(Oc_t) / Z_t, Z_t = sum_{j<=t} exp(Oc_j)
                real dC = vec_dot(dwc + i * M, V + (size_t)t * a->v_stride, M);
                vec_axpy(dV + (size_t)t * a->v_stride, C[t], dwc + i * M, M);
                zsuffix += C[t] * dC / Z[t];
                real e = C[t] * Z[t] / nt;
                real dOc = C[t] * dC - e * zsuffix;
                draw[i] = (raw[t] >= -c && raw[t] <= c) ? dOc : 0;
                // allocation A_t = sigmoid(Ic_t)
                dIc[i] = dA[i] * A[t] * ((real)1 - A[t]);
                // Oc_t = (k_t + eps) . (qi_t + eps) / n_t with qi_t = sum_{j<=t} n_j I_j q_j
                vec_axpy_eps(rqi, draw[i] / nt, kr, D, FLOW_EPS);
                // Ic_t = (q_t + eps) . (ko_t + eps) / n_t with ko_t = sum_{j<=t} n_j O_j k_j
                vec_axpy_eps(rko, dIc[i] / nt, qr, D, FLOW_EPS);
                real dIt = dI[i] + nt * vec_dot(qr, rqi, D);
                vec_axpy(dqr, nt * I[t], rqi, D);
                real dOt = nt * vec_dot(kr, rko, D);
                vec_axpy(dkr, nt * O[t], rko, D);
                // I_t = 1 / (q_t + eps) . (ksum_t + eps), O_t = 1 / (k_t + eps) . (qsum_t + eps)
                ddenI[i] = -I[t] * I[t] * dIt;
                ddenO[i] = -O[t] * O[t] * dOt;
                vec_axpy_eps(rks, ddenI[i], qr, D, FLOW_EPS);
                vec_axpy(dkr, 1, rks, D);
                vec_axpy_eps(rqs, ddenO[i], kr, D, FLOW_EPS);
                vec_axpy(dqr, 1, rqs, D);
            }
            // Forwards over the chunk for the terms that multiply the prefix sums.
            memcpy(sums, cp + (size_t)D * M, 4 * (size_t)D * sizeof(real));
            real *ksum = sums, *qsum = ksum + D, *ko = qsum + D, *qi = ko + D;
            for (int i = 0; i < n; i++) {
                int t = c0 + i;
                real nt = (real)(t + 1), *dqr = dqc + i * D, *dkr = dkc + i * D;
                flow_causal_resum(sums, t, qc + i * D, kc + i * D, I[t], O[t], D);
                vec_axpy_eps(dqr, ddenI[i], ksum, D, FLOW_EPS);
                vec_axpy_eps(dqr, dIc[i] / nt, ko, D, FLOW_EPS);
                vec_axpy_eps(dkr, ddenO[i], qsum, D, FLOW_EPS);
                vec_axpy_eps(dkr, draw[i] / nt, qi, D, FLOW_EPS);
            }
            sigmoid_rows_backward(dQ + (size_t)c0 * a->q_stride, dqc, qc, n, a->q_stride, D);
            sigmoid_rows_backward(dK + (size_t)c0 * a->k_stride, dkc, kc, n, a->k_stride, D);
        }
    }
}

// ----------------------------------------------------------------------------
// Normal (bidirectional) Flow-Attention, L queries and S keys

// cache of one head: I and A over the L queries, then O, C and Oc before the clamp over the S keys
enum { FN_I, FN_A, FN_O, FN_C, FN_RAW };
static real* flow_normal_cache(real* cache, int L, int S, int which) {
    return which <= FN_A ? cache + (size_t)which * L : cache + 2 * (size_t)L + (size_t)(which - FN_O) * S;
}

// Reals of scratch a head's forward pass takes: q (L,D), k (S,D), w (S,M),
// p (L,M), kv (D,M) and four sums of D.
static size_t flow_normal_forward_scratch(int L, int S, int D, int M) {
    return (size_t)(L + S) * D + (size_t)(S + L) * M + (size_t)D * M + 4 * (size_t)D;
}

static void flow_normal_head_forward(const Attention* a, int b, int h, real* out, real* cache,
                                     const real* q, const real* k, const real* v, real* scratch) {
    int L = a->L, S = a->S, D = a->D, M = a->M, out_stride = a->H * M;
    real c = a->clamp;
    real *I = flow_normal_cache(cache, L, S, FN_I), *A = flow_normal_cache(cache, L, S, FN_A);
    real *O = flow_normal_cache(cache, L, S, FN_O), *C = flow_normal_cache(cache, L, S, FN_C);
    real *raw = flow_normal_cache(cache, L, S, FN_RAW);
    real *qf = scratch, *kf = qf + (size_t)L * D, *w = kf + (size_t)S * D, *p = w + (size_t)S * M;
    real *kv = p + (size_t)L * M, *ksum = kv + (size_t)D * M, *qsum = ksum + D, *ko = qsum + D, *qi = ko + D;
    sigmoid_rows(qf, HEAD_Q(a, q, b, h), L, a->q_stride, D);
    sigmoid_rows(kf, HEAD_K(a, k, b, h), S, a->k_stride, D);
    memset(ksum, 0, 4 * (size_t)D * sizeof(real));
    for (int j = 0; j < S; j++) vec_axpy(ksum, 1, kf + (size_t)j * D, D);
    for (int i = 0; i < L; i++) vec_axpy(qsum, 1, qf + (size_t)i * D, D);
    for (int i = 0; i < L; i++) {
        I[i] = (real)1 / vec_dot_eps(qf + (size_t)i * D, ksum, D, FLOW_EPS);
        vec_axpy(qi, I[i], qf + (size_t)i * D, D);
    }
    for (int j = 0; j < S; j++) {
        O[j] = (real)1 / vec_dot_eps(kf + (size_t)j * D, qsum, D, FLOW_EPS);
        vec_axpy(ko, O[j], kf + (size_t)j * D, D);
    }
    for (int i = 0; i < L; i++) A[i] = sigmoid_fast(vec_dot_eps(qf + (size_t)i * D, ko, D, FLOW_EPS) * (real)L / (real)S);
    real z = 0;
    for (int j = 0; j < S; j++) {
        raw[j] = vec_dot_eps(kf + (size_t)j * D, qi, D, FLOW_EPS);
        C[j] = exp_fast(clampr(raw[j], c) - c); // shifted by c: the softmax is unchanged and cannot overflow
        z += C[j];
    }
    for (int j = 0; j < S; j++) C[j] *= (real)S / z;
    scale_rows(w, C, HEAD_V(a, v, b, h), S, a->v_stride, M);
    full_dot_product_forward(p, qf, kf, w, L, S, D, M, kv);
    real* R = HEAD_OUT(a, out, b, h);
    for (int i = 0; i < L; i++) {
        real ai = A[i] * I[i], *r = R + (size_t)i * out_stride;
        #pragma omp simd
        for (int m = 0; m < M; m++) r[m] = ai * p[(size_t)i * M + m];
    }
}

// Reals of scratch a head's backward pass takes: q, dq (L,D), k, dk (S,D),
// g (L,M), w, dw (S,M), kv and dkv (D,M), four sums of D and the gradients
// of four more, 2L + S scalars.
static size_t flow_normal_backward_scratch(int L, int S, int D, int M) {
    return 2 * (size_t)(L + S) * D + (size_t)(L + 2 * S) * M + 2 * (size_t)D * M + 8 * (size_t)D + 2 * (size_t)L + S;
}

static void flow_normal_head_backward(const Attention* a, int b, int h, real* dq, real* dk, real* dv,
                                      const real* dout, const real* out, const real* cache,
                                      const real* q, const real* k, const real* v, real* scratch) {
    int L = a->L, S = a->S, D = a->D, M = a->M, out_stride = a->H * M;
    real c = a->clamp;
    const real *I = flow_normal_cache((real*)cache, L, S, FN_I), *A = flow_normal_cache((real*)cache, L, S, FN_A);
    const real *O = flow_normal_cache((real*)cache, L, S, FN_O), *C = flow_normal_cache((real*)cache, L, S, FN_C);
    const real* raw = flow_normal_cache((real*)cache, L, S, FN_RAW);
    const real *V = HEAD_V(a, v, b, h), *dR = HEAD_OUT(a, dout, b, h), *R = HEAD_OUT(a, out, b, h);
    real* dV = HEAD_V(a, dv, b, h);
    real *qf = scratch, *kf = qf + (size_t)L * D, *dqf = kf + (size_t)S * D, *dkf = dqf + (size_t)L * D;
    real *g = dkf + (size_t)S * D, *w = g + (size_t)L * M, *dw = w + (size_t)S * M;
    real *kv = dw + (size_t)S * M, *dkv = kv + (size_t)D * M;
    real *ksum = dkv + (size_t)D * M, *qsum = ksum + D, *ko = qsum + D, *qi = ko + D;
    real *dksum = qi + D, *dqsum = dksum + D, *dko = dqsum + D, *dqi = dko + D;
    real *dA = dqi + D, *dI = dA + L, *dC = dI + L;
    sigmoid_rows(qf, HEAD_Q(a, q, b, h), L, a->q_stride, D);
    sigmoid_rows(kf, HEAD_K(a, k, b, h), S, a->k_stride, D);
    for (int i = 0; i < L; i++) {
        const real *dr = dR + (size_t)i * out_stride, *r = R + (size_t)i * out_stride;
        real dr_r = vec_dot(dr, r, M), ai = A[i] * I[i];
        dA[i] = dr_r / A[i];
        dI[i] = dr_r / I[i];
        #pragma omp simd
        for (int m = 0; m < M; m++) g[(size_t)i * M + m] = ai * dr[m];
    }
    scale_rows(w, C, V, S, a->v_stride, M);
    memset(dqf, 0, (size_t)(L + S) * D * sizeof(real)); // dqf and dkf, adjacent
    memset(dw, 0, (size_t)S * M * sizeof(real));
    full_dot_product_backward(dqf, dkf, dw, g, qf, kf, w, L, S, D, M, kv, dkv);

    memset(ksum, 0, 8 * (size_t)D * sizeof(real)); // the sums and their gradients
    for (int j = 0; j < S; j++) vec_axpy(ksum, 1, kf + (size_t)j * D, D);
    for (int i = 0; i < L; i++) vec_axpy(qsum, 1, qf + (size_t)i * D, D);
    for (int j = 0; j < S; j++) vec_axpy(ko, O[j], kf + (size_t)j * D, D);
    for (int i = 0; i < L; i++) vec_axpy(qi, I[i], qf + (size_t)i * D, D);

    // competition C_j = S softmax_j(Oc): dOc_j = C_j (dC_j - mean_m C_m dC_m)
    real mean = 0;
    for (int j = 0; j < S; j++) {
        dC[j] = vec_dot(dw + (size_t)j * M, V + (size_t)j * a->v_stride, M);
        vec_axpy(dV + (size_t)j * a->v_stride, C[j], dw + (size_t)j * M, M);
        mean += C[j] * dC[j];
    }
    mean /= (real)S;
    for (int j = 0; j < S; j++) {
        const real* kr = kf + (size_t)j * D;
        real dOc = C[j] * (dC[j] - mean);
        real draw = (raw[j] >= -c && raw[j] <= c) ? dOc : 0;
        // raw_j = (k_j + eps) . (qi + eps)
        vec_axpy_eps(dkf + (size_t)j * D, draw, qi, D, FLOW_EPS);
        vec_axpy_eps(dqi, draw, kr, D, FLOW_EPS);
    }
    // allocation A_i = sigmoid(Ic_i L/S), Ic_i = (q_i + eps) . (ko + eps); qi = sum_i I_i q_i
    for (int i = 0; i < L; i++) {
        const real* qr = qf + (size_t)i * D;
        real* dqr = dqf + (size_t)i * D;
        real dIc = dA[i] * A[i] * ((real)1 - A[i]) * (real)L / (real)S;
        vec_axpy_eps(dqr, dIc, ko, D, FLOW_EPS);
        vec_axpy_eps(dko, dIc, qr, D, FLOW_EPS);
        real dIi = dI[i] + vec_dot(qr, dqi, D);
        vec_axpy(dqr, I[i], dqi, D);
        // I_i = 1 / (q_i + eps) . (ksum + eps)
        real dden = -I[i] * I[i] * dIi;
        vec_axpy_eps(dqr, dden, ksum, D, FLOW_EPS);
        vec_axpy_eps(dksum, dden, qr, D, FLOW_EPS);
    }
    // ko = sum_j O_j k_j, O_j = 1 / (k_j + eps) . (qsum + eps)
    for (int j = 0; j < S; j++) {
        const real* kr = kf + (size_t)j * D;
        real* dkr = dkf + (size_t)j * D;
        real dO = vec_dot(kr, dko, D);
        vec_axpy(dkr, O[j], dko, D);
        real dden = -O[j] * O[j] * dO;
        vec_axpy_eps(dkr, dden, qsum, D, FLOW_EPS);
        vec_axpy_eps(dqsum, dden, kr, D, FLOW_EPS);
        vec_axpy(dkr, 1, dksum, D);
    }
    for (int i = 0; i < L; i++) vec_axpy(dqf + (size_t)i * D, 1, dqsum, D);
    sigmoid_rows_backward(HEAD_Q(a, dq, b, h), dqf, qf, L, a->q_stride, D);
    sigmoid_rows_backward(HEAD_K(a, dk, b, h), dkf, kf, S, a->k_stride, D);
}

// ----------------------------------------------------------------------------
// Multi-head: one (batch element, head) per task. Dynamic scheduling, so that a
// thread that the machine's other work holds up does not hold up the rest.

static void flow_attention_forward(const Attention* a, real* out, real* cache,
                                   const real* q, const real* k, const real* v) {
    size_t per_head = flow_cache_per_head(a->L, a->S);
    size_t scratch = a->causal ? flow_causal_forward_scratch(a->D, a->M)
                               : flow_normal_forward_scratch(a->L, a->S, a->D, a->M);
    real* checkpoints = cache + (size_t)a->B * a->H * per_head;
    #pragma omp parallel for schedule(dynamic)
    for (int bh = 0; bh < a->B * a->H; bh++) {
        int b = bh / a->H, h = bh % a->H;
        real* ch = cache + (size_t)bh * per_head;
        if (a->causal)
            flow_causal_head_forward(a, b, h, out, ch, checkpoints + bh * flow_checkpoints_per_head(a->L, a->D, a->M),
                                     q, k, v, thread_scratch(scratch));
        else flow_normal_head_forward(a, b, h, out, ch, q, k, v, thread_scratch(scratch));
    }
}

static void flow_attention_backward(const Attention* a, real* dq, real* dk, real* dv,
                                    const real* dout, const real* out, const real* cache,
                                    const real* q, const real* k, const real* v) {
    size_t per_head = flow_cache_per_head(a->L, a->S);
    size_t scratch = a->causal ? flow_causal_backward_scratch(a->D, a->M)
                               : flow_normal_backward_scratch(a->L, a->S, a->D, a->M);
    const real* checkpoints = cache + (size_t)a->B * a->H * per_head;
    #pragma omp parallel for schedule(dynamic)
    for (int bh = 0; bh < a->B * a->H; bh++) {
        int b = bh / a->H, h = bh % a->H;
        const real* ch = cache + (size_t)bh * per_head;
        if (a->causal)
            flow_causal_head_backward(a, b, h, dq, dk, dv, dout, out, ch,
                                      checkpoints + bh * flow_checkpoints_per_head(a->L, a->D, a->M),
                                      q, k, v, thread_scratch(scratch));
        else flow_normal_head_backward(a, b, h, dq, dk, dv, dout, out, ch, q, k, v, thread_scratch(scratch));
    }
}

// ----------------------------------------------------------------------------
// Recurrent form of causal Flow-Attention: every sum above is a running prefix
// sum, so position t needs only these sums over positions 0..t.
// state: the running sums (flow_sums_size), then kv = sum_j C_j k_j v_j^T (D*M).
static size_t flow_attention_state_size(const Attention* a, int max_T) {
    return flow_sums_size(a->D) + (size_t)a->D * a->M;
}

static void flow_attention_step(const Attention* a, real* state, int t, real* out,
                                const real* Q, const real* K, const real* V) {
    int D = a->D, M = a->M;
    real* kv = state + flow_sums_size(D);
    real q[D], k[D];
    for (int d = 0; d < D; d++) { q[d] = sigmoid_fast(Q[d]); k[d] = sigmoid_fast(K[d]); }
    FlowPosition f = flow_causal_advance(state, t, q, k, D, a->clamp);
    for (int d = 0; d < D; d++) vec_axpy(kv + (size_t)d * M, f.C * k[d], V, M);
    for (int m = 0; m < M; m++) out[m] = 0;
    for (int d = 0; d < D; d++) vec_axpy(out, f.A * f.I * q[d], kv + (size_t)d * M, M);
}

// Every head's scalars, then for causal attention every head's checkpoints.
static size_t flow_attention_cache_size(const Attention* a) {
    size_t per_head = flow_cache_per_head(a->L, a->S);
    if (a->causal) per_head += flow_checkpoints_per_head(a->L, a->D, a->M);
    return (size_t)a->B * a->H * per_head;
}

static void flow_attention_check(const Attention* a) {
    if (!(a->clamp > 0 && a->clamp <= FLOW_MAX_CLAMP))
        fail("attention: flow clamp bound must be in (0, %g], got %g", (double)FLOW_MAX_CLAMP, (double)a->clamp);
}

#endif
