// Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs"),
// feature map phi(x) = elu(x) + 1, forward and backward. One row of the table in
// layers/attention.h ("linear").
//   R_i = sum_j (phi(q_i) . phi(k_j)) v_j / (phi(q_i) . sum_j phi(k_j) + eps)
// with j <= i when causal. eps = 1e-6 as in the authors' code.
// The causal form walks the sequence in chunks as causal Flow-Attention does
// (layers/flow_attention.h), with the same causal product and the same groups of
// heads in lockstep; each thread uses its own scratch (layers/vec.h).
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
// phi'(x) from f = phi(x): 1 where x > 0 (f > 1), else e^x = f
static inline real elu1_grad(real f) { return f > 1 ? (real)1 : f; }

// dst (n,D) = phi of n rows of src, `stride` apart, asking for rows VEC_ROWS_AHEAD ahead
static void elu1_rows(real* dst, const real* src, int n, int stride, int D) {
    for (int t = 0; t < n; t++) {
        const real* row = src + (size_t)t * stride;
        if (t + VEC_ROWS_AHEAD < n) vec_prefetch(row + VEC_ROWS_AHEAD * (size_t)stride, D, 0);
        #pragma omp simd
        for (int d = 0; d < D; d++) dst[t * D + d] = elu1(row[d]);
    }
}

// dsrc's n rows (`stride` apart) += dfeat * phi'(src), given feat = phi(src)
static void elu1_rows_backward(real* dsrc, const real* dfeat, const real* feat, int n, int stride, int D) {
    for (int t = 0; t < n; t++) {
        real* drow = dsrc + (size_t)t * stride;
        if (t + VEC_ROWS_AHEAD < n) vec_prefetch(drow + VEC_ROWS_AHEAD * (size_t)stride, D, 1);
        #pragma omp simd
        for (int d = 0; d < D; d++) drow[d] += dfeat[t * D + d] * elu1_grad(feat[t * D + d]);
    }
}

// ----------------------------------------------------------------------------
// Causal: the chunked walk of layers/causal_dot_product.h, as causal
// Flow-Attention's (layers/flow_attention.h), with the running sum z of phi(k)
// for the denominators. The cache holds every head's denominators, then every
// head's checkpoints: the product's state (D,M) and z (D) every CDP_SEGMENT positions.

static size_t linear_checkpoint_size(int D, int M) { return (size_t)D * M + D; }

static size_t linear_checkpoints_per_head(int T, int D, int M) {
    return (size_t)(T + CDP_SEGMENT - 1) / CDP_SEGMENT * linear_checkpoint_size(D, M);
}

// One (batch element, head) of a call, as FlowHead: its rows in the call's
// arrays, its part of the cache. The forward pass leaves the gradients NULL.
typedef struct {
    const real *Q, *K, *V, *dR;
    real *R, *dQ, *dK, *dV;
    real *den, *checkpoints;
} LinearHead;

static LinearHead linear_head(const Attention* a, int bh, real* cache, const real* q, const real* k, const real* v,
                              real* out) {
    int b = bh / a->H, h = bh % a->H, T = a->L;
    LinearHead hd = {.Q = HEAD_Q(a, q, b, h), .K = HEAD_K(a, k, b, h), .V = HEAD_V(a, v, b, h),
                     .R = HEAD_OUT(a, out, b, h), .den = cache + (size_t)bh * T,
                     .checkpoints = cache + (size_t)a->B * a->H * T + bh * linear_checkpoints_per_head(T, a->D, a->M)};
    return hd;
}

// The same with the gradients the backward pass reads and adds to.
static LinearHead linear_head_backward(const Attention* a, int bh, const real* cache, const real* q, const real* k,
                                       const real* v, const real* out, real* dq, real* dk, real* dv, const real* dout) {
    int b = bh / a->H, h = bh % a->H;
    LinearHead hd = linear_head(a, bh, (real*)cache, q, k, v, (real*)out);
    hd.dR = HEAD_OUT(a, dout, b, h), hd.dQ = HEAD_Q(a, dq, b, h), hd.dK = HEAD_K(a, dk, b, h), hd.dV = HEAD_V(a, dv, b, h);
    return hd;
}

// Reals of scratch a group's forward pass takes: the chunk's q, k (C,D), v, p
// (C,M) and scores (C,C); per head the product's state (D,M) and z (D).
static size_t linear_causal_forward_scratch(int heads, int D, int M) {
    return CDP_CHUNK * 2 * ((size_t)D + M) + CDP_CHUNK * CDP_CHUNK + heads * vec_lines(linear_checkpoint_size(D, M));
}

// Chunk [c0, c0 + CDP_CHUNK) of one head. state: the head's product state (D,M), then z.
static void linear_causal_chunk_forward(const Attention* a, const LinearHead* hd, int c0, real* state, real* buf) {
    int T = a->L, D = a->D, M = a->M, out_stride = a->H * M, n = T - c0 < CDP_CHUNK ? T - c0 : CDP_CHUNK;
    real *S = state, *z = state + (size_t)D * M;
    real *qc = buf, *kc = qc + CDP_CHUNK * D, *vc = kc + CDP_CHUNK * D, *pc = vc + CDP_CHUNK * M;
    real* scores = pc + CDP_CHUNK * M;
    if (c0 % CDP_SEGMENT == 0) // a checkpoint: the state
        memcpy(hd->checkpoints + (size_t)(c0 / CDP_SEGMENT) * linear_checkpoint_size(D, M), state,
               linear_checkpoint_size(D, M) * sizeof(real));
    elu1_rows(qc, hd->Q + (size_t)c0 * a->q_stride, n, a->q_stride, D);
    elu1_rows(kc, hd->K + (size_t)c0 * a->k_stride, n, a->k_stride, D);
    vec_gather_rows(vc, hd->V + (size_t)c0 * a->v_stride, n, a->v_stride, M);
    for (int i = 0; i < n; i++) {
        vec_axpy(z, 1, kc + i * D, D);
        hd->den[c0 + i] = vec_dot(qc + i * D, z, D) + LINEAR_EPS;
    }
    int next = c0 + CDP_CHUNK, next_end = next + CDP_CHUNK < T ? next + CDP_CHUNK : T;
    vec_prefetch_rows(hd->Q, next, next_end, a->q_stride, D, 0);
    vec_prefetch_rows(hd->K, next, next_end, a->k_stride, D, 0);
    vec_prefetch_rows(hd->V, next, next_end, a->v_stride, M, 0);
    vec_prefetch_rows(hd->R, next, next_end, out_stride, M, 1);
    cdp_chunk_forward(pc, qc, kc, vc, n, D, M, S, scores);
    for (int i = 0; i < n; i++) {
        real inv = (real)1 / hd->den[c0 + i], *r = hd->R + (size_t)(c0 + i) * out_stride;
        #pragma omp simd
        for (int m = 0; m < M; m++) r[m] = inv * pc[i * M + m];
    }
}

// Heads [bh0, bh0 + heads), in lockstep.
static void linear_causal_group_forward(const Attention* a, int bh0, int heads, real* out, real* cache,
                                        const real* q, const real* k, const real* v) {
    int D = a->D, M = a->M;
    size_t state = vec_lines(linear_checkpoint_size(D, M));
    real* buf = thread_scratch(linear_causal_forward_scratch(heads, D, M));
    real* states = buf + CDP_CHUNK * 2 * ((size_t)D + M) + CDP_CHUNK * CDP_CHUNK;
    memset(states, 0, heads * state * sizeof(real));
    LinearHead hds[CDP_GROUP];
    for (int i = 0; i < heads; i++) hds[i] = linear_head(a, bh0 + i, cache, q, k, v, out);
    for (int c0 = 0; c0 < a->L; c0 += CDP_CHUNK)
        for (int i = 0; i < heads; i++)
            linear_causal_chunk_forward(a, &hds[i], c0, states + i * state, buf);
}

// Reals of a head's segment arrays in the backward pass: its q, k (SEG,D),
// v (SEG,M) and a checkpoint per chunk.
static size_t linear_segment_size(int D, int M) {
    return vec_lines(CDP_SEGMENT * (2 * (size_t)D + M) + CDP_SEGMENT / CDP_CHUNK * linear_checkpoint_size(D, M));
}

// Chunk j's part of a head's segment arrays: its features, its values, its checkpoint.
typedef struct { real *q, *k, *v, *checkpoint; } LinearSegmentChunk;

static LinearSegmentChunk linear_segment_chunk(real* seg, int j, int D, int M) {
    LinearSegmentChunk sc = {seg + j * CDP_CHUNK * D, seg + CDP_SEGMENT * D + j * CDP_CHUNK * D,
                             seg + 2 * CDP_SEGMENT * D + j * CDP_CHUNK * M,
                             seg + CDP_SEGMENT * (2 * D + M) + j * linear_checkpoint_size(D, M)};
    return sc;
}

// Reals of scratch a group's backward pass takes: the chunk's dq, dk (C,D), g,
// dv (C,M), scores (C,C), z (D) and a scalar per position; per head its segment
// arrays and reverse state: the product's G (D,M) and the suffix sum rz (D).
static size_t linear_causal_backward_scratch(int heads, int D, int M) {
    return CDP_CHUNK * 2 * ((size_t)D + M) + CDP_CHUNK * CDP_CHUNK + D + CDP_CHUNK
           + heads * (linear_segment_size(D, M) + vec_lines(linear_checkpoint_size(D, M)));
}

// Forwards over chunk j of the segment that starts at s0, one head: its
// features and values into the segment arrays, and the next chunk's checkpoint.
static void linear_causal_chunk_replay(const Attention* a, const LinearHead* hd, int s0, int j, real* seg) {
    int T = a->L, D = a->D, M = a->M, c0 = s0 + j * CDP_CHUNK, n = T - c0 < CDP_CHUNK ? T - c0 : CDP_CHUNK;
    size_t cp_size = linear_checkpoint_size(D, M);
    LinearSegmentChunk sc = linear_segment_chunk(seg, j, D, M);
    real *qc = sc.q, *kc = sc.k, *vc = sc.v, *cp = sc.checkpoint;
    if (j == 0) memcpy(cp, hd->checkpoints + (size_t)(s0 / CDP_SEGMENT) * cp_size, cp_size * sizeof(real));
    elu1_rows(qc, hd->Q + (size_t)c0 * a->q_stride, n, a->q_stride, D);
    elu1_rows(kc, hd->K + (size_t)c0 * a->k_stride, n, a->k_stride, D);
    vec_gather_rows(vc, hd->V + (size_t)c0 * a->v_stride, n, a->v_stride, M);
    int next = c0 + CDP_CHUNK, next_end = next + CDP_CHUNK < T ? next + CDP_CHUNK : T;
    if (next >= T || next - s0 >= CDP_SEGMENT) return; // the segment's last chunk
    vec_prefetch_rows(hd->Q, next, next_end, a->q_stride, D, 0);
    vec_prefetch_rows(hd->K, next, next_end, a->k_stride, D, 0);
    vec_prefetch_rows(hd->V, next, next_end, a->v_stride, M, 0);
    real* next_cp = cp + cp_size;
    memcpy(next_cp, cp, cp_size * sizeof(real));
    for (int i = 0; i < n; i++) vec_axpy(next_cp + (size_t)D * M, 1, kc + i * D, D);
    cdp_state_add(next_cp, kc, vc, n, D, M);
}

// Backwards over chunk j of the segment that starts at s0, one head, from its
// segment arrays and reverse state rev.
static void linear_causal_chunk_backward(const Attention* a, const LinearHead* hd, int s0, int j, real* seg,
                                         real* rev, real* buf) {
    int T = a->L, D = a->D, M = a->M, out_stride = a->H * M, c0 = s0 + j * CDP_CHUNK;
    int n = T - c0 < CDP_CHUNK ? T - c0 : CDP_CHUNK;
    LinearSegmentChunk sc = linear_segment_chunk(seg, j, D, M);
    const real *qc = sc.q, *kc = sc.k, *vc = sc.v, *cp = sc.checkpoint;
    real *dqc = buf, *dkc = dqc + CDP_CHUNK * D, *gc = dkc + CDP_CHUNK * D, *dvc = gc + CDP_CHUNK * M;
    real *scores = dvc + CDP_CHUNK * M, *z = scores + CDP_CHUNK * CDP_CHUNK, *dden = z + D;
    real *G = rev, *rz = G + (size_t)D * M;
    vec_prefetch_rows(hd->dR, c0 - CDP_CHUNK, c0, out_stride, M, 0);
    vec_prefetch_rows(hd->R, c0 - CDP_CHUNK, c0, out_stride, M, 0);
    vec_prefetch_rows(hd->dQ, c0 - CDP_CHUNK, c0, a->q_stride, D, 1);
    vec_prefetch_rows(hd->dK, c0 - CDP_CHUNK, c0, a->k_stride, D, 1);
    vec_prefetch_rows(hd->dV, c0 - CDP_CHUNK, c0, a->v_stride, M, 1);
    vec_prefetch_rows(hd->Q, c0 - CDP_SEGMENT, c0 - CDP_SEGMENT + CDP_CHUNK, a->q_stride, D, 0);
    vec_prefetch_rows(hd->K, c0 - CDP_SEGMENT, c0 - CDP_SEGMENT + CDP_CHUNK, a->k_stride, D, 0);
    vec_prefetch_rows(hd->V, c0 - CDP_SEGMENT, c0 - CDP_SEGMENT + CDP_CHUNK, a->v_stride, M, 0);
    // R_i = p_i / den_i: dp_i = dout_i / den_i, dden_i = -(dout_i . R_i) / den_i
    for (int i = 0; i < n; i++) {
        const real *dr = hd->dR + (size_t)(c0 + i) * out_stride, *r = hd->R + (size_t)(c0 + i) * out_stride;
        real inv = (real)1 / hd->den[c0 + i];
        dden[i] = -vec_dot(dr, r, M) * inv;
        #pragma omp simd
        for (int m = 0; m < M; m++) gc[i * M + m] = inv * dr[m];
    }
    cdp_chunk_backward(dqc, dkc, dvc, gc, qc, kc, vc, n, D, M, cp, G, scores);
    // den_i = phi(q_i) . z_i + eps, z_i = sum_{j<=i} phi(k_j): dk_j gets the suffix
    // sum over i >= j of dden_i phi(q_i), dq_i gets dden_i z_i.
    for (int i = n - 1; i >= 0; i--) {
        vec_axpy(rz, dden[i], qc + i * D, D);
        vec_axpy(dkc + i * D, 1, rz, D);
    }
    memcpy(z, cp + (size_t)D * M, (size_t)D * sizeof(real));
    for (int i = 0; i < n; i++) {
        vec_axpy(z, 1, kc + i * D, D);
        vec_axpy(dqc + i * D, dden[i], z, D);
    }
    elu1_rows_backward(hd->dQ + (size_t)c0 * a->q_stride, dqc, qc, n, a->q_stride, D);
    elu1_rows_backward(hd->dK + (size_t)c0 * a->k_stride, dkc, kc, n, a->k_stride, D);
    vec_add_rows(hd->dV + (size_t)c0 * a->v_stride, dvc, n, a->v_stride, M);
}

// Heads [bh0, bh0 + heads), in lockstep.
static void linear_causal_group_backward(const Attention* a, int bh0, int heads, real* dq, real* dk, real* dv,
                                         const real* dout, const real* out, const real* cache,
                                         const real* q, const real* k, const real* v) {
    int T = a->L, D = a->D, M = a->M;
    size_t seg_size = linear_segment_size(D, M), rev_size = vec_lines(linear_checkpoint_size(D, M));
    real* buf = thread_scratch(linear_causal_backward_scratch(heads, D, M));
    real* segs = buf + CDP_CHUNK * 2 * ((size_t)D + M) + CDP_CHUNK * CDP_CHUNK + D + CDP_CHUNK;
    real* revs = segs + heads * seg_size;
    memset(revs, 0, heads * rev_size * sizeof(real));
    LinearHead hds[CDP_GROUP];
    for (int i = 0; i < heads; i++)
        hds[i] = linear_head_backward(a, bh0 + i, cache, q, k, v, out, dq, dk, dv, dout);
    for (int s0 = (T - 1) / CDP_SEGMENT * CDP_SEGMENT; s0 >= 0; s0 -= CDP_SEGMENT) {
        int chunks = ((T - s0 < CDP_SEGMENT ? T - s0 : CDP_SEGMENT) + CDP_CHUNK - 1) / CDP_CHUNK;
        for (int j = 0; j < chunks; j++)
            for (int i = 0; i < heads; i++) linear_causal_chunk_replay(a, &hds[i], s0, j, segs + i * seg_size);
        for (int j = chunks - 1; j >= 0; j--)
            for (int i = 0; i < heads; i++)
                linear_causal_chunk_backward(a, &hds[i], s0, j, segs + i * seg_size, revs + i * rev_size, buf);
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
    vec_gather_rows(vh, HEAD_V(a, v, b, h), S, a->v_stride, M);
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
    vec_gather_rows(vh, HEAD_V(a, v, b, h), S, a->v_stride, M);
    // R_i = p_i / den_i: dp_i = dout_i / den_i, dden_i = -(dout_i . R_i) / den_i
    for (int i = 0; i < L; i++) {
        const real *dr = dR + (size_t)i * out_stride, *r = R + (size_t)i * out_stride;
        if (i + VEC_ROWS_AHEAD < L) {
            vec_prefetch(dr + VEC_ROWS_AHEAD * (size_t)out_stride, M, 0);
            vec_prefetch(r + VEC_ROWS_AHEAD * (size_t)out_stride, M, 0);
        }
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
    elu1_rows_backward(HEAD_Q(a, dq, b, h), dqf, qf, L, a->q_stride, D);
    elu1_rows_backward(HEAD_K(a, dk, b, h), dkf, kf, S, a->k_stride, D);
    vec_add_rows(HEAD_V(a, dv, b, h), dvh, S, a->v_stride, M);
}

// ----------------------------------------------------------------------------
// Multi-head, scheduled as Flow-Attention's: causal heads in lockstep groups,
// normal heads one per task.

static void linear_attention_forward(const Attention* a, real* out, real* cache,
                                     const real* q, const real* k, const real* v) {
    int pairs = a->B * a->H;
    if (a->causal) {
        int group = cdp_group_size(pairs), groups = (pairs + group - 1) / group;
        #pragma omp parallel for schedule(dynamic)
        for (int g = 0; g < groups; g++) {
            int heads = pairs - g * group < group ? pairs - g * group : group;
            linear_causal_group_forward(a, g * group, heads, out, cache, q, k, v);
        }
        return;
    }
    size_t scratch = linear_normal_forward_scratch(a->L, a->S, a->D, a->M);
    #pragma omp parallel for schedule(dynamic)
    for (int bh = 0; bh < pairs; bh++)
        linear_normal_head_forward(a, bh / a->H, bh % a->H, out, cache + (size_t)bh * a->L, q, k, v,
                                   thread_scratch(scratch));
}

static void linear_attention_backward(const Attention* a, real* dq, real* dk, real* dv,
                                      const real* dout, const real* out, const real* cache,
                                      const real* q, const real* k, const real* v) {
    int pairs = a->B * a->H;
    if (a->causal) {
        int group = cdp_group_size(pairs), groups = (pairs + group - 1) / group;
        #pragma omp parallel for schedule(dynamic)
        for (int g = 0; g < groups; g++) {
            int heads = pairs - g * group < group ? pairs - g * group : group;
            linear_causal_group_backward(a, g * group, heads, dq, dk, dv, dout, out, cache, q, k, v);
        }
        return;
    }
    size_t scratch = linear_normal_backward_scratch(a->L, a->S, a->D, a->M);
    #pragma omp parallel for schedule(dynamic)
    for (int bh = 0; bh < pairs; bh++)
        linear_normal_head_backward(a, bh / a->H, bh % a->H, dq, dk, dv, dout, out, cache + (size_t)bh * a->L,
                                    q, k, v, thread_scratch(scratch));
}

// The products, plus about 20 operations per position and feature for the features,
// the normaliser and their gradients.
static double linear_attention_flops(const Attention* a) {
    double product = a->causal ? a->L * causal_dot_product_flops(a->D, a->M)
                               : (a->L + a->S) / 2.0 * full_dot_product_flops(a->D, a->M);
    return (double)a->B * a->H * (product + 20.0 * (a->L + a->S) * a->D);
}

// Every head's denominators, then for causal attention every head's checkpoints.
static size_t linear_attention_cache_size(const Attention* a) {
    size_t per_head = a->L;
    if (a->causal) per_head += linear_checkpoints_per_head(a->L, a->D, a->M);
    return (size_t)a->B * a->H * per_head;
}

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
