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
// Work is split over (batch element, head) pairs: causal ones in groups whose
// chunks go in lockstep (layers/causal_dot_product.h), normal ones one per task.
// Each thread carves its arrays out of its own scratch (layers/vec.h), which is
// allocated once and reused. Where to read what:
//   flow_causal_advance         one position of the causal forward pass (and of generation)
//   flow_causal_chunk_forward   a chunk of the causal forward pass
//   flow_causal_chunk_backward  a chunk of the causal backward pass
//   flow_normal_head_forward / flow_normal_head_backward   the bidirectional form
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
// of the operator, one per position. Causal: 6 per position (its checkpoints
// follow every head's scalars); normal: 2 per query and 3 per key. Both fit in 3*(L+S).
static size_t flow_cache_per_head(int L, int S) { return 3 * ((size_t)L + S); }

static inline real clampr(real x, real c) { return x < -c ? -c : (x > c ? c : x); }

// The row helpers below read or write n rows `stride` apart, a head's piece of
// each: they ask for rows VEC_ROWS_AHEAD ahead (vec_prefetch), which matters
// where n is a whole sequence (the normal form) and costs little in a chunk.

// dst (n,D) = sigmoid of n rows of src
static void sigmoid_rows(real* dst, const real* src, int n, int stride, int D) {
    for (int t = 0; t < n; t++) {
        const real* row = src + (size_t)t * stride;
        if (t + VEC_ROWS_AHEAD < n) vec_prefetch(row + VEC_ROWS_AHEAD * (size_t)stride, D, 0);
        #pragma omp simd
        for (int d = 0; d < D; d++) dst[t * D + d] = sigmoid_fast(row[d]);
    }
}

// dsrc's n rows += dfeat * sigmoid'(src), given feat = sigmoid(src)
static void sigmoid_rows_backward(real* dsrc, const real* dfeat, const real* feat, int n, int stride, int D) {
    for (int t = 0; t < n; t++) {
        real* row = dsrc + (size_t)t * stride;
        if (t + VEC_ROWS_AHEAD < n) vec_prefetch(row + VEC_ROWS_AHEAD * (size_t)stride, D, 1);
        #pragma omp simd
        for (int d = 0; d < D; d++) row[d] += dfeat[t * D + d] * feat[t * D + d] * ((real)1 - feat[t * D + d]);
    }
}

// dst (n,M) = scale[t] * n rows of src
static void scale_rows(real* dst, const real* scale, const real* src, int n, int stride, int M) {
    for (int t = 0; t < n; t++) {
        const real* row = src + (size_t)t * stride;
        if (t + VEC_ROWS_AHEAD < n) vec_prefetch(row + VEC_ROWS_AHEAD * (size_t)stride, M, 0);
        #pragma omp simd
        for (int m = 0; m < M; m++) dst[t * M + m] = scale[t] * row[m];
    }
}

// dst's n rows += scale[t] * src (n,M)
static void scale_rows_backward(real* dst, const real* scale, const real* src, int n, int stride, int M) {
    for (int t = 0; t < n; t++) {
        real* row = dst + (size_t)t * stride;
        if (t + VEC_ROWS_AHEAD < n) vec_prefetch(row + VEC_ROWS_AHEAD * (size_t)stride, M, 1);
        vec_axpy(row, scale[t], src + (size_t)t * M, M);
    }
}

// ----------------------------------------------------------------------------
// Causal Flow-Attention
//
// The sequence is walked in chunks of CDP_CHUNK positions (layers/causal_dot_product.h).
// Forward, per chunk: the sigmoid features; a scan over the chunk's positions
// that carries the running sums and gives each position's flows; the chunk's
// step of the causal product of q, k and w = C v; R = A I times the product.
// Every CDP_SEGMENT positions the forward pass also saves a checkpoint.
// Backward, segment by segment from the last: from its checkpoint, the
// segment's features and each chunk's state again (a replay); then, last chunk
// first, the product's backward step and two scans over the chunk's positions:
// backwards, where every prefix sum of the forward pass becomes a suffix sum of
// gradients, and forwards, for the terms that multiply the prefix sums
// themselves. The heads of a group go in lockstep (layers/causal_dot_product.h).

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
    return (size_t)(T + CDP_SEGMENT - 1) / CDP_SEGMENT * flow_checkpoint_size(D, M);
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

// One (batch element, head) of a call: its rows in the call's arrays, its part
// of the cache (scalars and checkpoints). The forward pass leaves the gradients NULL.
typedef struct {
    const real *Q, *K, *V, *dR;
    real *R, *dQ, *dK, *dV;
    real *I, *O, *A, *C, *Z, *raw;
    real* checkpoints;
} FlowHead;

static FlowHead flow_head(const Attention* a, int bh, real* cache, const real* q, const real* k, const real* v,
                          real* out) {
    int b = bh / a->H, h = bh % a->H, T = a->L;
    size_t per_head = flow_cache_per_head(T, T);
    real* ch = cache + (size_t)bh * per_head;
    FlowHead hd = {.Q = HEAD_Q(a, q, b, h), .K = HEAD_K(a, k, b, h), .V = HEAD_V(a, v, b, h),
                   .R = HEAD_OUT(a, out, b, h), .I = ch + FC_I * T, .O = ch + FC_O * T, .A = ch + FC_A * T,
                   .C = ch + FC_C * T, .Z = ch + FC_Z * T, .raw = ch + FC_RAW * T,
                   .checkpoints = cache + (size_t)a->B * a->H * per_head + bh * flow_checkpoints_per_head(T, a->D, a->M)};
    return hd;
}

// The same with the gradients the backward pass reads and adds to.
static FlowHead flow_head_backward(const Attention* a, int bh, const real* cache, const real* q, const real* k,
                                   const real* v, const real* out, real* dq, real* dk, real* dv, const real* dout) {
    int b = bh / a->H, h = bh % a->H;
    FlowHead hd = flow_head(a, bh, (real*)cache, q, k, v, (real*)out);
    hd.dR = HEAD_OUT(a, dout, b, h), hd.dQ = HEAD_Q(a, dq, b, h), hd.dK = HEAD_K(a, dk, b, h), hd.dV = HEAD_V(a, dv, b, h);
    return hd;
}

// Reals of scratch a group's forward pass takes: the chunk's q, k (C,D), w, p
// (C,M) and scores (C,C); per head the product's state (D,M) and running sums.
static size_t flow_causal_forward_scratch(int heads, int D, int M) {
    return CDP_CHUNK * 2 * ((size_t)D + M) + CDP_CHUNK * CDP_CHUNK + heads * vec_lines((size_t)D * M + flow_sums_size(D));
}

// Chunk [c0, c0 + CDP_CHUNK) of one head. state: the head's product state (D,M),
// then its running sums; buf holds the chunk's arrays.
static void flow_causal_chunk_forward(const Attention* a, const FlowHead* hd, int c0, real* state, real* buf) {
    int T = a->L, D = a->D, M = a->M, out_stride = a->H * M, n = T - c0 < CDP_CHUNK ? T - c0 : CDP_CHUNK;
    real *S = state, *sums = state + (size_t)D * M;
    real *qc = buf, *kc = qc + CDP_CHUNK * D, *wc = kc + CDP_CHUNK * D, *pc = wc + CDP_CHUNK * M;
    real* scores = pc + CDP_CHUNK * M;
    if (c0 % CDP_SEGMENT == 0) // a checkpoint: the state but z
        memcpy(hd->checkpoints + (size_t)(c0 / CDP_SEGMENT) * flow_checkpoint_size(D, M), state,
               flow_checkpoint_size(D, M) * sizeof(real));
    sigmoid_rows(qc, hd->Q + (size_t)c0 * a->q_stride, n, a->q_stride, D);
    sigmoid_rows(kc, hd->K + (size_t)c0 * a->k_stride, n, a->k_stride, D);
    for (int t = c0; t < c0 + n; t++) {
        FlowPosition f = flow_causal_advance(sums, t, qc + (t - c0) * D, kc + (t - c0) * D, D, a->clamp);
        hd->I[t] = f.I, hd->O[t] = f.O, hd->A[t] = f.A, hd->C[t] = f.C, hd->Z[t] = f.Z, hd->raw[t] = f.raw;
    }
    scale_rows(wc, hd->C + c0, hd->V + (size_t)c0 * a->v_stride, n, a->v_stride, M);
    int next = c0 + CDP_CHUNK, next_end = next + CDP_CHUNK < T ? next + CDP_CHUNK : T;
    vec_prefetch_rows(hd->Q, next, next_end, a->q_stride, D, 0);
    vec_prefetch_rows(hd->K, next, next_end, a->k_stride, D, 0);
    vec_prefetch_rows(hd->V, next, next_end, a->v_stride, M, 0);
    vec_prefetch_rows(hd->R, next, next_end, out_stride, M, 1);
    cdp_chunk_forward(pc, qc, kc, wc, n, D, M, S, scores);
    for (int i = 0; i < n; i++) {
        real ai = hd->A[c0 + i] * hd->I[c0 + i], *r = hd->R + (size_t)(c0 + i) * out_stride;
        #pragma omp simd
        for (int m = 0; m < M; m++) r[m] = ai * pc[i * M + m];
    }
}

// Heads [bh0, bh0 + heads), in lockstep.
static void flow_causal_group_forward(const Attention* a, int bh0, int heads, real* out, real* cache,
                                      const real* q, const real* k, const real* v) {
    int D = a->D, M = a->M;
    size_t state = vec_lines((size_t)D * M + flow_sums_size(D));
    real* buf = thread_scratch(flow_causal_forward_scratch(heads, D, M));
    real* states = buf + CDP_CHUNK * 2 * ((size_t)D + M) + CDP_CHUNK * CDP_CHUNK;
    memset(states, 0, heads * state * sizeof(real));
    FlowHead hds[CDP_GROUP];
    for (int i = 0; i < heads; i++) hds[i] = flow_head(a, bh0 + i, cache, q, k, v, out);
    for (int c0 = 0; c0 < a->L; c0 += CDP_CHUNK)
        for (int i = 0; i < heads; i++)
            flow_causal_chunk_forward(a, &hds[i], c0, states + i * state, buf);
}

// Reals of a head's segment arrays in the backward pass: its q, k (SEG,D),
// w (SEG,M) and a checkpoint per chunk.
static size_t flow_segment_size(int D, int M) {
    return vec_lines(CDP_SEGMENT * (2 * (size_t)D + M) + CDP_SEGMENT / CDP_CHUNK * flow_checkpoint_size(D, M));
}

// Chunk j's part of a head's segment arrays: its features, its w, its checkpoint.
typedef struct { real *q, *k, *w, *checkpoint; } FlowSegmentChunk;

static FlowSegmentChunk flow_segment_chunk(real* seg, int j, int D, int M) {
    FlowSegmentChunk sc = {seg + j * CDP_CHUNK * D, seg + CDP_SEGMENT * D + j * CDP_CHUNK * D,
                           seg + 2 * CDP_SEGMENT * D + j * CDP_CHUNK * M,
                           seg + CDP_SEGMENT * (2 * D + M) + j * flow_checkpoint_size(D, M)};
    return sc;
}

// Reals of a head's reverse state: the product's G (D,M), the suffix sums
// rqi, rko, rks, rqs (4D) and zsuffix.
static size_t flow_reverse_state_size(int D, int M) { return vec_lines((size_t)D * M + 4 * (size_t)D + 1); }

// Reals of scratch a group's backward pass takes: the chunk's dq, dk (C,D),
// g, dw (C,M), scores (C,C), running sums (4D) and 6 scalars per position; per
// head its segment arrays and reverse state.
static size_t flow_causal_backward_scratch(int heads, int D, int M) {
    return CDP_CHUNK * 2 * ((size_t)D + M) + CDP_CHUNK * CDP_CHUNK + 4 * (size_t)D + 6 * CDP_CHUNK
           + heads * (flow_segment_size(D, M) + flow_reverse_state_size(D, M));
}

// Forwards over chunk j of the segment that starts at s0, one head: its
// features and w = C v into the head's segment arrays, and the next chunk's
// checkpoint (this one's plus the chunk).
static void flow_causal_chunk_replay(const Attention* a, const FlowHead* hd, int s0, int j, real* seg) {
    int T = a->L, D = a->D, M = a->M, c0 = s0 + j * CDP_CHUNK, n = T - c0 < CDP_CHUNK ? T - c0 : CDP_CHUNK;
    size_t cp_size = flow_checkpoint_size(D, M);
    FlowSegmentChunk sc = flow_segment_chunk(seg, j, D, M);
    if (j == 0) memcpy(sc.checkpoint, hd->checkpoints + (size_t)(s0 / CDP_SEGMENT) * cp_size, cp_size * sizeof(real));
    sigmoid_rows(sc.q, hd->Q + (size_t)c0 * a->q_stride, n, a->q_stride, D);
    sigmoid_rows(sc.k, hd->K + (size_t)c0 * a->k_stride, n, a->k_stride, D);
    scale_rows(sc.w, hd->C + c0, hd->V + (size_t)c0 * a->v_stride, n, a->v_stride, M);
    int next = c0 + CDP_CHUNK, next_end = next + CDP_CHUNK < T ? next + CDP_CHUNK : T;
    if (next >= T || next - s0 >= CDP_SEGMENT) return; // the segment's last chunk
    vec_prefetch_rows(hd->Q, next, next_end, a->q_stride, D, 0);
    vec_prefetch_rows(hd->K, next, next_end, a->k_stride, D, 0);
    vec_prefetch_rows(hd->V, next, next_end, a->v_stride, M, 0);
    real* next_cp = sc.checkpoint + cp_size;
    memcpy(next_cp, sc.checkpoint, cp_size * sizeof(real));
    for (int t = c0; t < c0 + n; t++)
        flow_causal_resum(next_cp + (size_t)D * M, t, sc.q + (t - c0) * D, sc.k + (t - c0) * D, hd->I[t], hd->O[t], D);
    cdp_state_add(next_cp, sc.k, sc.w, n, D, M);
}

// Backwards over chunk j of the segment that starts at s0, one head, from its
// replayed segment arrays and its reverse state rev; buf holds the chunk's arrays.
static void flow_causal_chunk_backward(const Attention* a, const FlowHead* hd, int s0, int j, real* seg,
                                       real* rev, real* buf) {
    int T = a->L, D = a->D, M = a->M, out_stride = a->H * M, c0 = s0 + j * CDP_CHUNK;
    int n = T - c0 < CDP_CHUNK ? T - c0 : CDP_CHUNK;
    real c = a->clamp;
    const real *I = hd->I, *O = hd->O, *A = hd->A, *C = hd->C, *Z = hd->Z, *raw = hd->raw;
    FlowSegmentChunk sc = flow_segment_chunk(seg, j, D, M);
    const real *qc = sc.q, *kc = sc.k, *wc = sc.w, *cp = sc.checkpoint;
    real *dqc = buf, *dkc = dqc + CDP_CHUNK * D, *gc = dkc + CDP_CHUNK * D, *dwc = gc + CDP_CHUNK * M;
    real *scores = dwc + CDP_CHUNK * M, *sums = scores + CDP_CHUNK * CDP_CHUNK;
    real *dA = sums + 4 * D, *dI = dA + CDP_CHUNK, *draw = dI + CDP_CHUNK, *dIc = draw + CDP_CHUNK;
    real *ddenI = dIc + CDP_CHUNK, *ddenO = ddenI + CDP_CHUNK;
    // suffix sums over positions m >= t of the gradients with respect to the
    // prefix sums qi_m, ko_m, ksum_m, qsum_m, each of which holds position t's term
    real *G = rev, *rqi = G + (size_t)D * M, *rko = rqi + D, *rks = rko + D, *rqs = rks + D;
    real* zsuffix = rqs + D; // sum_{m >= t} C_m dC_m / Z_m

    // the rows of the next chunk (the one before), and of its counterpart in the segment before
    vec_prefetch_rows(hd->dR, c0 - CDP_CHUNK, c0, out_stride, M, 0);
    vec_prefetch_rows(hd->R, c0 - CDP_CHUNK, c0, out_stride, M, 0);
    vec_prefetch_rows(hd->dQ, c0 - CDP_CHUNK, c0, a->q_stride, D, 1);
    vec_prefetch_rows(hd->dK, c0 - CDP_CHUNK, c0, a->k_stride, D, 1);
    vec_prefetch_rows(hd->dV, c0 - CDP_CHUNK, c0, a->v_stride, M, 1);
    vec_prefetch_rows(hd->Q, c0 - CDP_SEGMENT, c0 - CDP_SEGMENT + CDP_CHUNK, a->q_stride, D, 0);
    vec_prefetch_rows(hd->K, c0 - CDP_SEGMENT, c0 - CDP_SEGMENT + CDP_CHUNK, a->k_stride, D, 0);
    vec_prefetch_rows(hd->V, c0 - CDP_SEGMENT, c0 - CDP_SEGMENT + CDP_CHUNK, a->v_stride, M, 0);

    // R_t = A_t I_t p_t, so dout_t . p_t = (dout_t . R_t) / (A_t I_t)
    for (int i = 0; i < n; i++) {
        int t = c0 + i;
        const real *dr = hd->dR + (size_t)t * out_stride, *r = hd->R + (size_t)t * out_stride;
        real dr_r = vec_dot(dr, r, M), ai = A[t] * I[t];
        dA[i] = dr_r / A[t];
        dI[i] = dr_r / I[t];
        #pragma omp simd
        for (int m = 0; m < M; m++) gc[i * M + m] = ai * dr[m];
    }
    cdp_chunk_backward(dqc, dkc, dwc, gc, qc, kc, wc, n, D, M, cp, G, scores);

    // Backwards over the chunk's positions.
    for (int i = n - 1; i >= 0; i--) {
        int t = c0 + i;
        const real *qr = qc + i * D, *kr = kc + i * D;
        real *dqr = dqc + i * D, *dkr = dkc + i * D;
        real nt = (real)(t + 1);
        // competition C_t = n_t exp(Oc_t) / Z_t, Z_t = sum_{j<=t} exp(Oc_j); w_t = C_t v_t
        // (C_t > 0), so dC_t = dw_t . v_t = dw_t . w_t / C_t, without reading v again
        real dC = vec_dot(dwc + i * M, wc + i * M, M) / C[t];
        *zsuffix += C[t] * dC / Z[t];
        real e = C[t] * Z[t] / nt;
        real dOc = C[t] * dC - e * *zsuffix;
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
    sigmoid_rows_backward(hd->dQ + (size_t)c0 * a->q_stride, dqc, qc, n, a->q_stride, D);
    sigmoid_rows_backward(hd->dK + (size_t)c0 * a->k_stride, dkc, kc, n, a->k_stride, D);
    scale_rows_backward(hd->dV + (size_t)c0 * a->v_stride, C + c0, dwc, n, a->v_stride, M); // w_t = C_t v_t
}

// Heads [bh0, bh0 + heads), in lockstep.
static void flow_causal_group_backward(const Attention* a, int bh0, int heads, real* dq, real* dk, real* dv,
                                       const real* dout, const real* out, const real* cache,
                                       const real* q, const real* k, const real* v) {
    int T = a->L, D = a->D, M = a->M;
    size_t seg_size = flow_segment_size(D, M), rev_size = flow_reverse_state_size(D, M);
    real* buf = thread_scratch(flow_causal_backward_scratch(heads, D, M));
    real* segs = buf + CDP_CHUNK * 2 * ((size_t)D + M) + CDP_CHUNK * CDP_CHUNK + 4 * (size_t)D + 6 * CDP_CHUNK;
    real* revs = segs + heads * seg_size;
    memset(revs, 0, heads * rev_size * sizeof(real));
    FlowHead hds[CDP_GROUP];
    for (int i = 0; i < heads; i++)
        hds[i] = flow_head_backward(a, bh0 + i, cache, q, k, v, out, dq, dk, dv, dout);
    for (int s0 = (T - 1) / CDP_SEGMENT * CDP_SEGMENT; s0 >= 0; s0 -= CDP_SEGMENT) {
        int chunks = ((T - s0 < CDP_SEGMENT ? T - s0 : CDP_SEGMENT) + CDP_CHUNK - 1) / CDP_CHUNK;
        for (int j = 0; j < chunks; j++)
            for (int i = 0; i < heads; i++) flow_causal_chunk_replay(a, &hds[i], s0, j, segs + i * seg_size);
        for (int j = chunks - 1; j >= 0; j--)
            for (int i = 0; i < heads; i++)
                flow_causal_chunk_backward(a, &hds[i], s0, j, segs + i * seg_size, revs + i * rev_size, buf);
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
        if (i + VEC_ROWS_AHEAD < L) {
            vec_prefetch(dr + VEC_ROWS_AHEAD * (size_t)out_stride, M, 0);
            vec_prefetch(r + VEC_ROWS_AHEAD * (size_t)out_stride, M, 0);
        }
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

    // competition C_j = S softmax_j(Oc): dOc_j = C_j (dC_j - mean_m C_m dC_m);
    // w_j = C_j v_j (C_j > 0), so dC_j = dw_j . v_j = dw_j . w_j / C_j
    real mean = 0;
    for (int j = 0; j < S; j++) {
        dC[j] = vec_dot(dw + (size_t)j * M, w + (size_t)j * M, M) / C[j];
        mean += C[j] * dC[j];
    }
    mean /= (real)S;
    scale_rows_backward(HEAD_V(a, dv, b, h), C, dw, S, a->v_stride, M);
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
    int pairs = a->B * a->H;
    if (a->causal) {
        int group = cdp_group_size(pairs), groups = (pairs + group - 1) / group;
        #pragma omp parallel for schedule(dynamic)
        for (int g = 0; g < groups; g++) {
            int heads = pairs - g * group < group ? pairs - g * group : group;
            flow_causal_group_forward(a, g * group, heads, out, cache, q, k, v);
        }
        return;
    }
    size_t per_head = flow_cache_per_head(a->L, a->S), scratch = flow_normal_forward_scratch(a->L, a->S, a->D, a->M);
    #pragma omp parallel for schedule(dynamic)
    for (int bh = 0; bh < pairs; bh++)
        flow_normal_head_forward(a, bh / a->H, bh % a->H, out, cache + (size_t)bh * per_head, q, k, v,
                                 thread_scratch(scratch));
}

static void flow_attention_backward(const Attention* a, real* dq, real* dk, real* dv,
                                    const real* dout, const real* out, const real* cache,
                                    const real* q, const real* k, const real* v) {
    int pairs = a->B * a->H;
    if (a->causal) {
        int group = cdp_group_size(pairs), groups = (pairs + group - 1) / group;
        #pragma omp parallel for schedule(dynamic)
        for (int g = 0; g < groups; g++) {
            int heads = pairs - g * group < group ? pairs - g * group : group;
            flow_causal_group_backward(a, g * group, heads, dq, dk, dv, dout, out, cache, q, k, v);
        }
        return;
    }
    size_t per_head = flow_cache_per_head(a->L, a->S), scratch = flow_normal_backward_scratch(a->L, a->S, a->D, a->M);
    #pragma omp parallel for schedule(dynamic)
    for (int bh = 0; bh < pairs; bh++)
        flow_normal_head_backward(a, bh / a->H, bh % a->H, dq, dk, dv, dout, out, cache + (size_t)bh * per_head,
                                  q, k, v, thread_scratch(scratch));
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

// The products, plus about 60 operations per position and feature for the scans,
// the features and their gradients.
static double flow_attention_flops(const Attention* a) {
    double product = a->causal ? a->L * causal_dot_product_flops(a->D, a->M)
                               : (a->L + a->S) / 2.0 * full_dot_product_flops(a->D, a->M);
    return (double)a->B * a->H * (product + 60.0 * (a->L + a->S) * a->D);
}

static void flow_attention_check(const Attention* a) {
    if (!(a->clamp > 0 && a->clamp <= FLOW_MAX_CLAMP))
        fail("attention: flow clamp bound must be in (0, %g], got %g", (double)FLOW_MAX_CLAMP, (double)a->clamp);
}

#endif
