// Softmax attention (the vanilla Transformer's) on the GPU, scores scaled by 1/sqrt(D),
// forward and backward, as layers/softmax_attention.h: the forward pass keeps only each
// query's log-sum-exp, and the backward pass recomputes the probabilities. Queries go
// in blocks of rows, each block's scores for every head at once by batched cuBLAS
// products (causal blocks stop at their last query's key), so the scores held at once
// are bounded by SOFTMAX_SCORES floats, whatever the sequence. Time is O(L*S*D).
#ifndef CUDA_SOFTMAX_ATTENTION_CUH
#define CUDA_SOFTMAX_ATTENTION_CUH

#include <math.h>
#include "utils/params.h"
#include "cuda/common.cuh"
#include "cuda/attention_types.cuh"

#define SOFTMAX_SCORES (1L << 25)  // floats of scores per block of queries (128 MiB), at least 64 rows' worth

// Query rows per block: a multiple of 64 that keeps the block's scores within SOFTMAX_SCORES,
// and at most 256 when causal, so that a block wastes little on masked keys.
static int softmax_block_rows(const Attention* a) {
    long rows = SOFTMAX_SCORES / ((long)a->B * a->H * a->S) / 64 * 64;
    if (rows < 64) rows = 64;
    if (a->causal && rows > 256) rows = 256;
    return rows < a->L ? (int)rows : a->L;
}

typedef struct {
    float *q, *k, *v, *o;      // (BH, L, D), (BH, S, D), (BH, S, M), (BH, L, M) per head: o is dout when backward
    float *dq, *dk, *dv;       // their gradients (backward)
    float *dot;                // (BH, L) dout_i . out_i
    float *p, *dp;             // (BH, rows, S) a block's scores, then probabilities; their gradient
} SoftmaxScratch;

static size_t softmax_scratch_layout(SoftmaxScratch* s, float* base, const Attention* a) {
    size_t BH = (size_t)a->B * a->H, L = a->L, S = a->S, used = 0;
    s->q = carve(base, &used, BH * L * a->D);
    s->k = carve(base, &used, BH * S * a->D);
    s->v = carve(base, &used, BH * S * a->M);
    s->o = carve(base, &used, BH * L * a->M);
    s->dq = carve(base, &used, BH * L * a->D);
    s->dk = carve(base, &used, BH * S * a->D);
    s->dv = carve(base, &used, BH * S * a->M);
    s->dot = carve(base, &used, BH * L);
    s->p = carve(base, &used, BH * softmax_block_rows(a) * S);
    s->dp = carve(base, &used, BH * softmax_block_rows(a) * S);
    return used;
}

static size_t softmax_attention_scratch_size(const Attention* a) {
    SoftmaxScratch s;
    return softmax_scratch_layout(&s, NULL, a);
}

// The scores of query rows i0 .. i0+rows of every head (p: BH blocks of rows x n, rows
// S apart) become probabilities, a warp per row: row r sees keys j < (causal ? i0+r+1 : n)
// and gets zeros up to n; lse[bh][i0 + r] = the log-sum-exp of its scaled scores.
__global__ void softmax_rows_kernel(float* p, float* lse, int BH, int rows, int n, int L, int S, int i0, int causal,
                                    float scale) {
    long row = (long)blockIdx.x * WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= (long)BH * rows) return;
    int bh = (int)(row / rows), r = (int)(row % rows), seen = causal ? i0 + r + 1 : n;
    float* pr = p + row * S;
    float mx = -FLT_MAX, sum = 0;
    for (int j = lane; j < seen; j += 32) mx = fmaxf(mx, scale * pr[j]);
    mx = warp_max(mx);
    for (int j = lane; j < seen; j += 32) sum += expf(scale * pr[j] - mx);
    sum = warp_sum(sum);
    for (int j = lane; j < n; j += 32) pr[j] = j < seen ? expf(scale * pr[j] - mx) / sum : 0.0f;
    if (lane == 0) lse[(long)bh * L + i0 + r] = mx + logf(sum);
}

// The block's probabilities recomputed from its scores and lse, and dp turned into the
// scores' gradient: ds_j = scale * p_j (dp_j - dout . out), the sum over j of p_j dp_j
// being dout . out. A warp per row, as softmax_rows_kernel.
__global__ void softmax_rows_backward_kernel(float* p, float* dp, const float* lse, const float* dot, int BH,
                                             int rows, int n, int L, int S, int i0, int causal, float scale) {
    long row = (long)blockIdx.x * WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= (long)BH * rows) return;
    int bh = (int)(row / rows), r = (int)(row % rows), seen = causal ? i0 + r + 1 : n;
    float *pr = p + row * S, *dpr = dp + row * S;
    float m = lse[(long)bh * L + i0 + r], dout_out = dot[(long)bh * L + i0 + r];
    for (int j = lane; j < n; j += 32) {
        float pj = j < seen ? expf(scale * pr[j] - m) : 0.0f;
        pr[j] = pj;
        dpr[j] = scale * pj * (dpr[j] - dout_out);
    }
}

// dot[bh][i] = dout_i . out_i over each head's columns (B, L, H*M), a warp per row.
__global__ void head_row_dots_kernel(float* dot, const float* dout, const float* out, int B, int L, int H, int M) {
    long row = (long)blockIdx.x * WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= (long)B * H * L) return;
    int bh = (int)(row / L), i = (int)(row % L), b = bh / H, h = bh % H;
    const float *dr = dout + ((long)b * L + i) * H * M + h * M, *o = out + ((long)b * L + i) * H * M + h * M;
    float s = 0;
    for (int m = lane; m < M; m += 32) s += dr[m] * o[m];
    s = warp_sum(s);
    if (lane == 0) dot[row] = s;
}

// out (B, L, H*M) = o (BH, L, M), every head's rows put in their columns.
__global__ void put_heads_kernel(float* out, const float* o, int B, int L, int H, int M) {
    long e = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (long)B * L * H * M) return;
    int m = (int)(e % M), h = (int)(e / M % H), i = (int)(e / ((long)H * M) % L), b = (int)(e / ((long)L * H * M));
    out[e] = o[(((long)b * H + h) * L + i) * M + m];
}

// cache: log-sum-exp of the scaled scores, one per (batch, head, query)
static void softmax_attention_forward(const Attention* a, float* out, float* cache, const float* q, const float* k,
                                      const float* v, float* scratch) {
    int B = a->B, H = a->H, D = a->D, M = a->M, L = a->L, S = a->S, BH = B * H, block = softmax_block_rows(a);
    float scale = 1.0f / sqrtf((float)D);
    SoftmaxScratch s;
    softmax_scratch_layout(&s, scratch, a);
    gather_heads(s.q, q, B, L, L, H, D, a->q_stride, FEATURE_IDENTITY);
    gather_heads(s.k, k, B, S, S, H, D, a->k_stride, FEATURE_IDENTITY);
    gather_heads(s.v, v, B, S, S, H, M, a->v_stride, FEATURE_IDENTITY);
    long qs = (long)L * D, ks = (long)S * D, vs = (long)S * M, os = (long)L * M, ps = (long)block * S;
    for (int i0 = 0; i0 < L; i0 += block) {
        int rows = L - i0 < block ? L - i0 : block;
        int n = a->causal ? i0 + rows : S;  // keys any row of the block sees
        // p = softmax(scale q k^T) over the keys each row sees; o = p v
        gemm_batched(rows, n, D, s.q + (long)i0 * D, D, 1, qs, s.k, 1, D, ks, s.p, S, ps, BH, 1, 0);
        softmax_rows_kernel<<<blocks_for((long)BH * rows, WARPS), THREADS>>>(s.p, cache, BH, rows, n, L, S, i0,
                                                                            a->causal, scale);
        CUDA_LAUNCHED();
        gemm_batched(rows, M, n, s.p, S, 1, ps, s.v, M, 1, vs, s.o + (long)i0 * M, M, os, BH, 1, 0);
    }
    put_heads_kernel<<<blocks_for((long)B * L * H * M, THREADS), THREADS>>>(out, s.o, B, L, H, M);
    CUDA_LAUNCHED();
}

static void softmax_attention_backward(const Attention* a, float* dq, float* dk, float* dv, const float* dout,
                                       const float* out, const float* cache, const float* q, const float* k,
                                       const float* v, float* scratch) {
    int B = a->B, H = a->H, D = a->D, M = a->M, L = a->L, S = a->S, BH = B * H, block = softmax_block_rows(a);
    float scale = 1.0f / sqrtf((float)D);
    SoftmaxScratch s;
    softmax_scratch_layout(&s, scratch, a);
    gather_heads(s.q, q, B, L, L, H, D, a->q_stride, FEATURE_IDENTITY);
    gather_heads(s.k, k, B, S, S, H, D, a->k_stride, FEATURE_IDENTITY);
    gather_heads(s.v, v, B, S, S, H, M, a->v_stride, FEATURE_IDENTITY);
    gather_heads(s.o, dout, B, L, L, H, M, H * M, FEATURE_IDENTITY);
    head_row_dots_kernel<<<blocks_for((long)BH * L, WARPS), THREADS>>>(s.dot, dout, out, B, L, H, M);
    CUDA_LAUNCHED();
    CUDA_CHECK(cudaMemset(s.dk, 0, (size_t)BH * S * (D + M) * sizeof(float)));  // dk and dv, adjacent
    long qs = (long)L * D, ks = (long)S * D, vs = (long)S * M, os = (long)L * M, ps = (long)block * S;
    for (int i0 = 0; i0 < L; i0 += block) {
        int rows = L - i0 < block ? L - i0 : block;
        int n = a->causal ? i0 + rows : S;
        const float *qb = s.q + (long)i0 * D, *dob = s.o + (long)i0 * M;
        gemm_batched(rows, n, D, qb, D, 1, qs, s.k, 1, D, ks, s.p, S, ps, BH, 1, 0);       // scores = q k^T
        gemm_batched(rows, n, M, dob, M, 1, os, s.v, 1, M, vs, s.dp, S, ps, BH, 1, 0);     // dp = dout v^T
        softmax_rows_backward_kernel<<<blocks_for((long)BH * rows, WARPS), THREADS>>>(s.p, s.dp, cache, s.dot, BH,
                                                                                     rows, n, L, S, i0, a->causal,
                                                                                     scale);
        CUDA_LAUNCHED();
        gemm_batched(rows, D, n, s.dp, S, 1, ps, s.k, D, 1, ks, s.dq + (long)i0 * D, D, qs, BH, 1, 0);  // dq = ds k
        gemm_batched(n, D, rows, s.dp, 1, S, ps, qb, D, 1, qs, s.dk, D, ks, BH, 1, 1);   // dk += ds^T q
        gemm_batched(n, M, rows, s.p, 1, S, ps, dob, M, 1, os, s.dv, M, vs, BH, 1, 1);   // dv += p^T dout
    }
    scatter_heads(dq, s.dq, q, B, L, L, H, D, a->q_stride, FEATURE_IDENTITY);
    scatter_heads(dk, s.dk, k, B, S, S, H, D, a->k_stride, FEATURE_IDENTITY);
    scatter_heads(dv, s.dv, v, B, S, S, H, M, a->v_stride, FEATURE_IDENTITY);
}

// Recurrent form: the state holds every key and value seen, (D+M) floats per position,
// as on the CPU. A block per head: the scores of the t+1 positions, then their softmax
// and the weighted sum of the values.
static size_t softmax_attention_state_size(const Attention* a, int max_T) { return (size_t)max_T * (a->D + a->M); }

// score of position j: scale * q . k_j
__device__ float softmax_step_score(const float* q, const float* state, int j, int D, int M, float scale) {
    float s = 0;
    for (int d = 0; d < D; d++) s += q[d] * state[(long)j * (D + M) + d];
    return scale * s;
}

__global__ void softmax_step_kernel(float* states, int t, float* out, const float* Q, const float* K, const float* V,
                                    int D, int M, long state_size, float scale) {
    int h = blockIdx.x;
    float* st = states + h * state_size;
    const float* q = Q + h * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) st[(long)t * (D + M) + d] = K[h * D + d];
    for (int m = threadIdx.x; m < M; m += blockDim.x) st[(long)t * (D + M) + D + m] = V[h * M + m];
    __syncthreads();
    float mx = -FLT_MAX;
    for (int j = threadIdx.x; j <= t; j += blockDim.x) mx = fmaxf(mx, softmax_step_score(q, st, j, D, M, scale));
    mx = block_max(mx);
    float sum = 0;
    for (int j = threadIdx.x; j <= t; j += blockDim.x) sum += expf(softmax_step_score(q, st, j, D, M, scale) - mx);
    sum = block_sum(sum);
    for (int m = threadIdx.x; m < M; m += blockDim.x) {
        float acc = 0;
        for (int j = 0; j <= t; j++)
            acc += expf(softmax_step_score(q, st, j, D, M, scale) - mx) * st[(long)j * (D + M) + D + m];
        out[h * M + m] = acc / sum;
    }
}

static void softmax_attention_step(const Attention* a, float* states, int t, float* out, const float* q,
                                   const float* k, const float* v) {
    softmax_step_kernel<<<a->H, THREADS>>>(states, t, out, q, k, v, a->D, a->M,
                                           (long)softmax_attention_state_size(a, a->L), 1.0f / sqrtf((float)a->D));
    CUDA_LAUNCHED();
}

static size_t softmax_attention_cache_size(const Attention* a) { return (size_t)a->B * a->H * a->L; }

// Forward: scores and p v; backward: scores again, dout v^T, dq, dk, dv: 7 products over
// the query-key pairs a block computes (causal blocks stop at their last query).
static double softmax_attention_flops(const Attention* a) {
    int block = softmax_block_rows(a);
    double pairs = a->causal ? (double)a->L * (a->L + block) / 2 : (double)a->L * a->S;
    return (double)a->B * a->H * pairs * (8.0 * a->D + 6.0 * a->M);
}

#endif
