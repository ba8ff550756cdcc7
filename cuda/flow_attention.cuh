// Flow-Attention on the GPU, causal and normal, forward and backward, and the recurrent
// step, exactly as doc/FLOW_ATTENTION.md and layers/flow_attention.h (read that first:
// the formulas and the backward pass's derivation are there, and the steps below keep
// its names).
//
// A call runs, for every head at once:
//   1. the sigmoid features q, k of the heads, contiguous per head (gather_heads);
//   2. the flows: a block per head walks its positions in tiles (cuda/scan.cuh),
//      carrying the running sums of the causal form (the sums over the whole sequence
//      of the normal form), and writes the per-position scalars (I, O, A, C, ...) to the
//      cache and the product's right-hand side w_i = C_i v_i;
//   3. the product sum_j (q_i . k_j) w_j, causal or full (cuda/causal_dot_product.cuh,
//      batched cuBLAS products);
//   4. out_i = A_i I_i p_i.
// The backward pass recomputes the features and w, runs the product's backward pass,
// then the flows' backward pass: for the causal form a block per head walks its tiles
// backwards (every prefix sum of the forward pass becomes a suffix sum) and then
// forwards again (the terms that multiply the prefix sums themselves).
// Memory is linear in the sequence: a few floats per position and head in the cache,
// scratch of O(T*D) per head. The flows' scans are sequential over each head's tiles,
// B*H blocks in all: for long sequences of few heads they, not the products, set the
// time; in training (4 x 8 heads of 512 positions for WikiText-103) they are a sliver.
#ifndef CUDA_FLOW_ATTENTION_CUH
#define CUDA_FLOW_ATTENTION_CUH

#include "utils/params.h"
#include "cuda/common.cuh"
#include "cuda/scan.cuh"
#include "cuda/attention_types.cuh"
#include "cuda/causal_dot_product.cuh"

#define FLOW_EPS 1e-6f
#define FLOW_MAX_CLAMP 40  // exp(Oc - c) >= exp(-2c) stays a normal float (layers/flow_attention.h)

// The per-head cache, laid out as the CPU's: causal, I, O, A, C, Z (the running sum of
// exp(Oc - c)) and Oc before the clamp, T each; normal, I and A over the L queries,
// then O, C and Oc before the clamp over the S keys.
enum { FC_I, FC_O, FC_A, FC_C, FC_Z, FC_RAW };
enum { FN_I, FN_A, FN_O, FN_C, FN_RAW };

__host__ __device__ static size_t flow_cache_per_head(int L, int S) { return 3 * ((size_t)L + S); }

__device__ __forceinline__ float clampf(float x, float c) { return x < -c ? -c : (x > c ? c : x); }

// ----------------------------------------------------------------------------
// Scratch: what a call keeps in device memory, carved (utils/params.h's carve) out of
// the kind's scratch. Rows of the causal form are padded to whole chunks (Lp = Sp = Tp).

typedef struct {
    float *qf, *kf;      // (BH, Lp, D), (BH, Sp, D) sigmoid features
    float *dqf, *dkf;    // their gradients (backward)
    float *w, *dw;       // (BH, Sp, M) C_j v_j and its gradient
    float *p, *g;        // (BH, Lp, M) the product, and the product's output gradient A I dout
    float *dA, *dI;      // (BH, L) dout_i . R_i / A_i and / I_i
    float *rows;         // (BH, 2(L + S)) per-position scalars the backward pass hands on
    float *product;      // the product's own scratch
} FlowScratch;

static size_t flow_scratch_layout(FlowScratch* s, float* base, const Attention* a) {
    size_t BH = (size_t)a->B * a->H, used = 0;
    int Lp = a->causal ? chunked(a->L) : a->L, Sp = a->causal ? chunked(a->S) : a->S;
    s->qf = carve(base, &used, BH * Lp * a->D);
    s->kf = carve(base, &used, BH * Sp * a->D);
    s->dqf = carve(base, &used, BH * Lp * a->D);
    s->dkf = carve(base, &used, BH * Sp * a->D);
    s->w = carve(base, &used, BH * Sp * a->M);
    s->dw = carve(base, &used, BH * Sp * a->M);
    s->p = carve(base, &used, BH * Lp * a->M);
    s->g = carve(base, &used, BH * Lp * a->M);
    s->dA = carve(base, &used, BH * a->L);
    s->dI = carve(base, &used, BH * a->L);
    s->rows = carve(base, &used, BH * 2 * ((size_t)a->L + a->S));
    s->product = carve(base, &used, a->causal ? causal_dot_product_scratch((int)BH, a->L, a->D, a->M)
                                              : full_dot_product_scratch((int)BH, a->D, a->M));
    return used;
}

static size_t flow_attention_scratch_size(const Attention* a) {
    FlowScratch s;
    return flow_scratch_layout(&s, NULL, a);
}

// ----------------------------------------------------------------------------
// Causal flows, forward: a block of SCAN_THREADS per head (blockIdx.x = bh).
// q, k are the head's features (Tp, D), v its rows in the trainer's layout.

__global__ void __launch_bounds__(SCAN_THREADS)
flow_causal_flows_kernel(float* cache, float* w, const float* qf, const float* kf, const float* v, int T, int Tp,
                         int H, int D, int M, int v_stride, float c) {
    int bh = blockIdx.x;
    const float *q = qf + (long)bh * Tp * D, *k = kf + (long)bh * Tp * D;
    const float* vh = v + (long)(bh / H) * T * v_stride + (bh % H) * M;
    float* wh = w + (long)bh * Tp * M;
    float* ch = cache + (long)bh * flow_cache_per_head(T, T);
    __shared__ Tile qs, ks, s1, s2;                    // the tile's features, two running sums
    __shared__ float ksum[HEAD_MAX], qsum[HEAD_MAX];   // the sums carried from tile to tile
    __shared__ float ko[HEAD_MAX], qi[HEAD_MAX], z;
    __shared__ float I[TILE], O[TILE], nO[TILE], nI[TILE], A[TILE], raw[TILE], e[TILE], Z[TILE];
    for (int d = threadIdx.x; d < D; d += blockDim.x) ksum[d] = qsum[d] = ko[d] = qi[d] = 0;
    if (threadIdx.x == 0) z = 0;
    __syncthreads();
    for (int t0 = 0; t0 < T; t0 += TILE) {
        int n = T - t0 < TILE ? T - t0 : TILE;
        load_tile(qs, q, t0, n, D);
        load_tile(ks, k, t0, n, D);
        // I_i = 1 / (q_i + eps) . (ksum_i + eps), O_i = 1 / (k_i + eps) . (qsum_i + eps)
        ColumnScan sums[2] = {{s1, ks, NULL, 0, ksum}, {s2, qs, NULL, 0, qsum}};
        scan_columns(sums, 2, n, D, 0);
        dot_rows(I, qs, s1, FLOW_EPS, n, D);
        dot_rows(O, ks, s2, FLOW_EPS, n, D);
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            float pos = (float)(t0 + i + 1);
            I[i] = 1.0f / I[i];
            O[i] = 1.0f / O[i];
            nO[i] = pos * O[i];
            nI[i] = pos * I[i];
        }
        __syncthreads();
        // A_i = sigmoid((q_i + eps) . (ko_i + eps) / n_i), ko_i = sum_{j<=i} n_j O_j k_j;
        // raw_i = (k_i + eps) . (qi_i + eps) / n_i, qi_i = sum_{j<=i} n_j I_j q_j
        ColumnScan flows[2] = {{s1, ks, nO, 0, ko}, {s2, qs, nI, 0, qi}};
        scan_columns(flows, 2, n, D, 0);
        dot_rows(A, qs, s1, FLOW_EPS, n, D);
        dot_rows(raw, ks, s2, FLOW_EPS, n, D);
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            float pos = (float)(t0 + i + 1);
            A[i] = sigmoidf(A[i] / pos);
            raw[i] /= pos;
            e[i] = Z[i] = expf(clampf(raw[i], c) - c);  // exp(Oc - c) <= 1: safe for any clamp bound
        }
        __syncthreads();
        // C_i = n_i exp(Oc_i) / sum_{j<=i} exp(Oc_j)
        scan_scalars(Z, n, &z, 0);
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            int t = t0 + i;
            ch[FC_I * T + t] = I[i];
            ch[FC_O * T + t] = O[i];
            ch[FC_A * T + t] = A[i];
            ch[FC_C * T + t] = (float)(t + 1) * e[i] / Z[i];
            ch[FC_Z * T + t] = Z[i];
            ch[FC_RAW * T + t] = raw[i];
        }
        for (int j = threadIdx.x; j < n * M; j += blockDim.x) {
            int i = j / M, m = j % M, t = t0 + i;
            wh[(long)t * M + m] = (float)(t + 1) * e[i] / Z[i] * vh[(long)t * v_stride + m];
        }
        __syncthreads();  // before the next tile overwrites the tiles and scalars
    }
    for (long j = (long)T * M + threadIdx.x; j < (long)Tp * M; j += blockDim.x) wh[j] = 0;  // padding
}

// ----------------------------------------------------------------------------
// Normal flows, forward: a block per head. Every sum is over the whole sequence, so
// each is a column sum over the head's rows, by D threads of the block.

// sum[d] = the sum over the n rows r of x (rows D apart) of weight[r] * (x[r][d] + eps),
// by threads [first, first + D); weight NULL: 1. The caller synchronises.
__device__ void sum_rows(float* sum, const float* x, const float* weight, float eps, int n, int D, int first) {
    int d = (int)threadIdx.x - first;
    if (d < 0 || d >= D) return;
    float acc = 0;
    for (int r = 0; r < n; r++) acc += (weight != NULL ? weight[r] : 1.0f) * (x[(long)r * D + d] + eps);
    sum[d] = acc;
}

// (x_r + eps) . (y + eps) for row r of x (rows D apart) and the vector y, by one warp.
__device__ float dot_row(const float* x, int r, const float* y, float eps, int D) {
    float s = 0;
    for (int d = threadIdx.x % 32; d < D; d += 32) s += (x[(long)r * D + d] + eps) * (y[d] + eps);
    return warp_sum(s);
}

__global__ void __launch_bounds__(SCAN_THREADS)
flow_normal_flows_kernel(float* cache, float* w, const float* qf, const float* kf, const float* v, int L, int S,
                         int H, int D, int M, int v_stride, float c) {
    int bh = blockIdx.x, lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    const float *q = qf + (long)bh * L * D, *k = kf + (long)bh * S * D;
    const float* vh = v + (long)(bh / H) * S * v_stride + (bh % H) * M;
    float* wh = w + (long)bh * S * M;
    float* ch = cache + (long)bh * flow_cache_per_head(L, S);
    float *I = ch + FN_I * L, *A = ch + FN_A * L, *O = ch + 2 * L, *C = O + S, *raw = C + S;
    __shared__ float ksum[HEAD_MAX], qsum[HEAD_MAX], ko[HEAD_MAX], qi[HEAD_MAX];
    sum_rows(ksum, k, NULL, 0, S, D, 0);
    sum_rows(qsum, q, NULL, 0, L, D, D);
    __syncthreads();
    // I_i = 1 / (q_i + eps) . (ksum + eps), O_j = 1 / (k_j + eps) . (qsum + eps)
    for (int i = warp; i < L; i += nwarps) {
        float dot = dot_row(q, i, ksum, FLOW_EPS, D);
        if (lane == 0) I[i] = 1.0f / dot;
    }
    for (int j = warp; j < S; j += nwarps) {
        float dot = dot_row(k, j, qsum, FLOW_EPS, D);
        if (lane == 0) O[j] = 1.0f / dot;
    }
    __syncthreads();
    // ko = sum_j O_j k_j, qi = sum_i I_i q_i
    sum_rows(ko, k, O, 0, S, D, 0);
    sum_rows(qi, q, I, 0, L, D, D);
    __syncthreads();
    // A_i = sigmoid((q_i + eps) . (ko + eps) L/S); raw_j = (k_j + eps) . (qi + eps)
    for (int i = warp; i < L; i += nwarps) {
        float dot = dot_row(q, i, ko, FLOW_EPS, D);
        if (lane == 0) A[i] = sigmoidf(dot * (float)L / (float)S);
    }
    float z = 0;  // this thread's part of sum_j exp(Oc_j - c)
    for (int j = warp; j < S; j += nwarps) {
        float dot = dot_row(k, j, qi, FLOW_EPS, D);
        if (lane == 0) {
            raw[j] = dot;
            C[j] = expf(clampf(dot, c) - c);
            z += C[j];
        }
    }
    // C_j = S softmax_j(Oc), w_j = C_j v_j
    z = block_sum(z);
    for (int j = threadIdx.x; j < S; j += blockDim.x) C[j] *= (float)S / z;
    __syncthreads();
    for (long e = threadIdx.x; e < (long)S * M; e += blockDim.x)
        wh[e] = C[e / M] * vh[e / M * v_stride + e % M];
}

// ----------------------------------------------------------------------------
// The output and what the backward pass starts from

// out (B, L, H*M) = A_i I_i p_i for every head's rows i < L; a thread per element.
__global__ void flow_output_kernel(float* out, const float* p, const float* cache, int B, int L, int Lp, int H,
                                   int M, int S, int a_at) {
    long e = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (long)B * L * H * M) return;
    int m = (int)(e % M), h = (int)(e / M % H), i = (int)(e / ((long)H * M) % L), b = (int)(e / ((long)L * H * M));
    int bh = b * H + h;
    const float* ch = cache + (long)bh * flow_cache_per_head(L, S);
    out[e] = ch[a_at + i] * ch[i] * p[((long)bh * Lp + i) * M + m];  // I is first in both caches
}

// R_i = A_i I_i p_i, so dout_i . p_i = (dout_i . R_i) / (A_i I_i): per query row i of
// each head (a warp per row), g_i = A_i I_i dout_i (the product's output gradient),
// dA_i = dout_i . R_i / A_i, dI_i = dout_i . R_i / I_i; per key row j, w_j = C_j v_j.
// Rows past L (S) up to Lp (Sp) get zeros.
__global__ void flow_backward_start_kernel(float* g, float* w, float* dA, float* dI, const float* dout,
                                           const float* out, const float* v, const float* cache, int B, int L,
                                           int S, int Lp, int Sp, int H, int M, int v_stride, int a_at, int c_at) {
    long row = (long)blockIdx.x * WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32, rows = Lp > Sp ? Lp : Sp;
    if (row >= (long)B * H * rows) return;
    int bh = (int)(row / rows), r = (int)(row % rows), b = bh / H, h = bh % H;
    const float* ch = cache + (long)bh * flow_cache_per_head(L, S);
    if (r < Lp) {
        float* gr = g + ((long)bh * Lp + r) * M;
        if (r < L) {
            const float *dr = dout + ((long)b * L + r) * H * M + h * M, *o = out + ((long)b * L + r) * H * M + h * M;
            float dot = 0;
            for (int m = lane; m < M; m += 32) dot += dr[m] * o[m];
            dot = warp_sum(dot);
            float A = ch[a_at + r], I = ch[r];
            for (int m = lane; m < M; m += 32) gr[m] = A * I * dr[m];
            if (lane == 0) {
                dA[(long)bh * L + r] = dot / A;
                dI[(long)bh * L + r] = dot / I;
            }
        } else {
            for (int m = lane; m < M; m += 32) gr[m] = 0;
        }
    }
    if (r < Sp) {
        float* wr = w + ((long)bh * Sp + r) * M;
        const float* vr = v + ((long)b * S + r) * v_stride + h * M;
        for (int m = lane; m < M; m += 32) wr[m] = r < S ? ch[c_at + r] * vr[m] : 0.0f;
    }
}

// ----------------------------------------------------------------------------
// Causal flows, backward: a block per head, as flow_causal_head_backward. dq, dk are
// the features' gradients from the product's backward pass, updated in place; dv
// (trainer's layout) += C_i dw_i. rows holds 4 scalars per position for the second pass.

// dst[i][d] += weight[i] * (src[i][d] + eps) for the tile's rows, into a head's (., D)
// rows at dst + t0 rows: the row updates of the backward pass.
__device__ void add_rows(float* dst, int t0, const Tile src, const float* weight, float eps, int n, int D) {
    for (int e = threadIdx.x; e < n * D; e += blockDim.x) {
        int i = e / D, d = e % D;
        dst[(long)(t0 + i) * D + d] += weight[i] * (src[i][d] + eps);
    }
    __syncthreads();
}

__global__ void __launch_bounds__(SCAN_THREADS)
flow_causal_flows_backward_kernel(float* dqf, float* dkf, float* dv, float* rows, const float* qf, const float* kf,
                                  const float* v, const float* dw, const float* cache, const float* dA_all,
                                  const float* dI_all, int T, int Tp, int H, int D, int M, int v_stride, float c) {
    int bh = blockIdx.x, lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    const float *q = qf + (long)bh * Tp * D, *k = kf + (long)bh * Tp * D, *dwh = dw + (long)bh * Tp * M;
    float *dq = dqf + (long)bh * Tp * D, *dk = dkf + (long)bh * Tp * D;
    const float* vh = v + (long)(bh / H) * T * v_stride + (bh % H) * M;
    float* dvh = dv + (long)(bh / H) * T * v_stride + (bh % H) * M;
    const float* ch = cache + (long)bh * flow_cache_per_head(T, T);
    const float *dA = dA_all + (long)bh * T, *dIdirect = dI_all + (long)bh * T;
    // the scalars the second pass needs, per position
    float *draw_all = rows + (long)bh * 4 * T, *dIc_all = draw_all + T, *ddenI_all = dIc_all + T;
    float* ddenO_all = ddenI_all + T;
    __shared__ Tile qs, ks, s1, s2;
    // suffix sums carried from tile to tile (backwards): of draw/n (k + eps), dIc/n (q + eps),
    // ddenI (q + eps), ddenO (k + eps); forwards: the prefix sums of the forward pass
    __shared__ float rqi[HEAD_MAX], rko[HEAD_MAX], rks[HEAD_MAX], rqs[HEAD_MAX], zsuffix;
    __shared__ float zs[TILE], wq[TILE], wk[TILE], dI[TILE], dO[TILE], ddenI[TILE], ddenO[TILE], nI[TILE], nO[TILE];
    for (int d = threadIdx.x; d < D; d += blockDim.x) rqi[d] = rko[d] = rks[d] = rqs[d] = 0;
    if (threadIdx.x == 0) zsuffix = 0;
    __syncthreads();
    int last = (T - 1) / TILE * TILE;
    for (int t0 = last; t0 >= 0; t0 -= TILE) {
        int n = T - t0 < TILE ? T - t0 : TILE;
        load_tile(qs, q, t0, n, D);
        load_tile(ks, k, t0, n, D);
        // competition C_i = n_i exp(Oc_i) / Z_i: dC_i = dw_i . v_i, and dv_i += C_i dw_i
        for (int i = warp; i < n; i += nwarps) {
            int t = t0 + i;
            float dC = 0;
            for (int m = lane; m < M; m += 32) dC += dwh[(long)t * M + m] * vh[(long)t * v_stride + m];
            dC = warp_sum(dC);
            if (lane == 0) zs[i] = ch[FC_C * T + t] * dC / ch[FC_Z * T + t];  // C_i dC_i / Z_i, for the suffix sum
            if (lane == 0) wq[i] = dC;
        }
        for (int e = threadIdx.x; e < n * M; e += blockDim.x) {
            int t = t0 + e / M, m = e % M;
            dvh[(long)t * v_stride + m] += ch[FC_C * T + t] * dwh[(long)t * M + m];
        }
        __syncthreads();
        scan_scalars(zs, n, &zsuffix, 1);  // zs_i = sum_{m >= i} C_m dC_m / Z_m
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            int t = t0 + i;
            float pos = (float)(t + 1), C = ch[FC_C * T + t], A = ch[FC_A * T + t], raw = ch[FC_RAW * T + t];
            float e = C * ch[FC_Z * T + t] / pos;
            float dOc = C * wq[i] - e * zs[i];
            float draw = raw >= -c && raw <= c ? dOc : 0.0f;
            float dIc = dA[t] * A * (1.0f - A);  // allocation A_i = sigmoid(Ic_i)
            draw_all[t] = draw;
            dIc_all[t] = dIc;
            wq[i] = draw / pos;
            wk[i] = dIc / pos;
        }
        __syncthreads();
        // Oc_i = (k_i + eps) . (qi_i + eps) / n_i and Ic_i = (q_i + eps) . (ko_i + eps) / n_i:
        // rqi_i, rko_i are the suffix sums of their gradients with respect to qi_m, ko_m
        ColumnScan flows[2] = {{s1, ks, wq, FLOW_EPS, rqi}, {s2, qs, wk, FLOW_EPS, rko}};
        scan_columns(flows, 2, n, D, 1);
        dot_rows(dI, qs, s1, 0, n, D);
        dot_rows(dO, ks, s2, 0, n, D);
        // qi_m holds n_i I_i q_i and ko_m holds n_i O_i k_i
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            int t = t0 + i;
            float pos = (float)(t + 1), I = ch[FC_I * T + t], O = ch[FC_O * T + t];
            nI[i] = pos * I;
            nO[i] = pos * O;
            // I_i = 1 / (q_i + eps) . (ksum_i + eps), O_i = 1 / (k_i + eps) . (qsum_i + eps)
            ddenI[i] = -I * I * (dIdirect[t] + pos * dI[i]);
            ddenO[i] = -O * O * pos * dO[i];
            ddenI_all[t] = ddenI[i];
            ddenO_all[t] = ddenO[i];
        }
        __syncthreads();
        add_rows(dq, t0, s1, nI, 0, n, D);
        add_rows(dk, t0, s2, nO, 0, n, D);
        // ksum_m and qsum_m hold k_i and q_i
        ColumnScan sums[2] = {{s1, qs, ddenI, FLOW_EPS, rks}, {s2, ks, ddenO, FLOW_EPS, rqs}};
        scan_columns(sums, 2, n, D, 1);
        for (int e = threadIdx.x; e < n * D; e += blockDim.x) {
            int i = e / D, d = e % D;
            dk[(long)(t0 + i) * D + d] += s1[i][d];
            dq[(long)(t0 + i) * D + d] += s2[i][d];
        }
        __syncthreads();
    }
    // Forwards again for the terms that multiply the prefix sums: the sums rebuilt as in
    // the forward pass, in the same shared arrays.
    float *ksum = rqi, *qsum = rko, *ko = rks, *qi = rqs;
    for (int d = threadIdx.x; d < D; d += blockDim.x) ksum[d] = qsum[d] = ko[d] = qi[d] = 0;
    __syncthreads();
    for (int t0 = 0; t0 < T; t0 += TILE) {
        int n = T - t0 < TILE ? T - t0 : TILE;
        load_tile(qs, q, t0, n, D);
        load_tile(ks, k, t0, n, D);
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            int t = t0 + i;
            float pos = (float)(t + 1);
            nO[i] = pos * ch[FC_O * T + t];
            nI[i] = pos * ch[FC_I * T + t];
            ddenI[i] = ddenI_all[t];
            ddenO[i] = ddenO_all[t];
            wk[i] = dIc_all[t] / pos;
            wq[i] = draw_all[t] / pos;
        }
        ColumnScan sums[2] = {{s1, ks, NULL, 0, ksum}, {s2, qs, NULL, 0, qsum}};
        scan_columns(sums, 2, n, D, 0);
        add_rows(dq, t0, s1, ddenI, FLOW_EPS, n, D);
        add_rows(dk, t0, s2, ddenO, FLOW_EPS, n, D);
        ColumnScan flows[2] = {{s1, ks, nO, 0, ko}, {s2, qs, nI, 0, qi}};
        scan_columns(flows, 2, n, D, 0);
        add_rows(dq, t0, s1, wk, FLOW_EPS, n, D);
        add_rows(dk, t0, s2, wq, FLOW_EPS, n, D);
    }
}

// ----------------------------------------------------------------------------
// Normal flows, backward: a block per head, as flow_normal_head_backward. rows holds
// a scalar per query and per key.

// dst rows r < n (rows D apart) += weight[r] * (y + eps), by the whole block.
__device__ void add_vector(float* dst, const float* weight, const float* y, float eps, int n, int D) {
    for (long e = threadIdx.x; e < (long)n * D; e += blockDim.x) dst[e] += weight[e / D] * (y[e % D] + eps);
}

__global__ void __launch_bounds__(SCAN_THREADS)
flow_normal_flows_backward_kernel(float* dqf, float* dkf, float* dv, float* rows, const float* qf, const float* kf,
                                  const float* v, const float* dw, const float* cache, const float* dA_all,
                                  const float* dI_all, int L, int S, int H, int D, int M, int v_stride, float c) {
    int bh = blockIdx.x, lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    const float *q = qf + (long)bh * L * D, *k = kf + (long)bh * S * D, *dwh = dw + (long)bh * S * M;
    float *dq = dqf + (long)bh * L * D, *dk = dkf + (long)bh * S * D;
    const float* vh = v + (long)(bh / H) * S * v_stride + (bh % H) * M;
    float* dvh = dv + (long)(bh / H) * S * v_stride + (bh % H) * M;
    const float* ch = cache + (long)bh * flow_cache_per_head(L, S);
    const float *I = ch + FN_I * L, *A = ch + FN_A * L, *O = ch + 2 * L, *C = O + S, *raw = C + S;
    const float *dA = dA_all + (long)bh * L, *dIdirect = dI_all + (long)bh * L;
    float *per_query = rows + (long)bh * 2 * (L + S), *per_key = per_query + L;
    __shared__ float ksum[HEAD_MAX], qsum[HEAD_MAX], ko[HEAD_MAX], qi[HEAD_MAX];
    // gradients with respect to those sums
    __shared__ float dksum[HEAD_MAX], dqsum[HEAD_MAX], dko[HEAD_MAX], dqi[HEAD_MAX];
    sum_rows(ksum, k, NULL, 0, S, D, 0);
    sum_rows(qsum, q, NULL, 0, L, D, D);
    __syncthreads();
    sum_rows(ko, k, O, 0, S, D, 0);
    sum_rows(qi, q, I, 0, L, D, D);
    // competition C_j = S softmax_j(Oc): dOc_j = C_j (dC_j - mean_m C_m dC_m), dC_j = dw_j . v_j
    float mean = 0;  // this thread's part of sum_j C_j dC_j
    for (int j = warp; j < S; j += nwarps) {
        float dC = 0;
        for (int m = lane; m < M; m += 32) dC += dwh[(long)j * M + m] * vh[(long)j * v_stride + m];
        dC = warp_sum(dC);
        if (lane == 0) {
            per_key[j] = dC;
            mean += C[j] * dC;
        }
    }
    for (long e = threadIdx.x; e < (long)S * M; e += blockDim.x)
        dvh[e / M * v_stride + e % M] += C[e / M] * dwh[e];
    mean = block_sum(mean) / (float)S;
    for (int j = threadIdx.x; j < S; j += blockDim.x) {
        float dOc = C[j] * (per_key[j] - mean);
        per_key[j] = raw[j] >= -c && raw[j] <= c ? dOc : 0.0f;  // draw_j
    }
    __syncthreads();
    // raw_j = (k_j + eps) . (qi + eps)
    add_vector(dk, per_key, qi, FLOW_EPS, S, D);
    sum_rows(dqi, k, per_key, FLOW_EPS, S, D, 0);
    // allocation A_i = sigmoid(Ic_i L/S), Ic_i = (q_i + eps) . (ko + eps)
    for (int i = threadIdx.x; i < L; i += blockDim.x) per_query[i] = dA[i] * A[i] * (1.0f - A[i]) * (float)L / (float)S;
    __syncthreads();
    add_vector(dq, per_query, ko, FLOW_EPS, L, D);
    sum_rows(dko, q, per_query, FLOW_EPS, L, D, D);
    __syncthreads();
    // qi = sum_i I_i q_i; I_i = 1 / (q_i + eps) . (ksum + eps)
    for (int i = warp; i < L; i += nwarps) {
        float dI = dot_row(q, i, dqi, 0, D);  // the eps of dot_row, 0 here: a plain dot
        if (lane == 0) per_query[i] = -I[i] * I[i] * (dIdirect[i] + dI);  // dden_i
    }
    __syncthreads();
    add_vector(dq, I, dqi, 0, L, D);
    add_vector(dq, per_query, ksum, FLOW_EPS, L, D);
    sum_rows(dksum, q, per_query, FLOW_EPS, L, D, 0);
    // ko = sum_j O_j k_j, O_j = 1 / (k_j + eps) . (qsum + eps)
    for (int j = warp; j < S; j += nwarps) {
        float dO = dot_row(k, j, dko, 0, D);
        if (lane == 0) per_key[j] = -O[j] * O[j] * dO;  // dden_j
    }
    __syncthreads();
    add_vector(dk, O, dko, 0, S, D);
    add_vector(dk, per_key, qsum, FLOW_EPS, S, D);
    sum_rows(dqsum, k, per_key, FLOW_EPS, S, D, D);
    __syncthreads();
    // every k_j is in ksum and every q_i in qsum
    for (long e = threadIdx.x; e < (long)S * D; e += blockDim.x) dk[e] += dksum[e % D];
    for (long e = threadIdx.x; e < (long)L * D; e += blockDim.x) dq[e] += dqsum[e % D];
}

// ----------------------------------------------------------------------------
// The calls

static void flow_attention_forward(const Attention* a, float* out, float* cache, const float* q, const float* k,
                                   const float* v, float* scratch) {
    int B = a->B, H = a->H, D = a->D, M = a->M, L = a->L, S = a->S, BH = B * H;
    int Lp = a->causal ? chunked(L) : L, Sp = a->causal ? chunked(S) : S;
    FlowScratch s;
    flow_scratch_layout(&s, scratch, a);
    gather_heads(s.qf, q, B, L, Lp, H, D, a->q_stride, FEATURE_SIGMOID);
    gather_heads(s.kf, k, B, S, Sp, H, D, a->k_stride, FEATURE_SIGMOID);
    if (a->causal) {
        flow_causal_flows_kernel<<<BH, SCAN_THREADS>>>(cache, s.w, s.qf, s.kf, v, L, Lp, H, D, M, a->v_stride,
                                                       a->clamp);
        CUDA_LAUNCHED();
        causal_dot_product_forward(s.p, s.qf, s.kf, s.w, BH, L, D, M, s.product);
    } else {
        flow_normal_flows_kernel<<<BH, SCAN_THREADS>>>(cache, s.w, s.qf, s.kf, v, L, S, H, D, M, a->v_stride,
                                                       a->clamp);
        CUDA_LAUNCHED();
        full_dot_product_forward(s.p, s.qf, s.kf, s.w, BH, L, S, D, M, s.product);
    }
    flow_output_kernel<<<blocks_for((long)B * L * H * M, THREADS), THREADS>>>(out, s.p, cache, B, L, Lp, H, M, S,
                                                                             a->causal ? FC_A * L : FN_A * L);
    CUDA_LAUNCHED();
}

static void flow_attention_backward(const Attention* a, float* dq, float* dk, float* dv, const float* dout,
                                    const float* out, const float* cache, const float* q, const float* k,
                                    const float* v, float* scratch) {
    int B = a->B, H = a->H, D = a->D, M = a->M, L = a->L, S = a->S, BH = B * H;
    int Lp = a->causal ? chunked(L) : L, Sp = a->causal ? chunked(S) : S;
    FlowScratch s;
    flow_scratch_layout(&s, scratch, a);
    gather_heads(s.qf, q, B, L, Lp, H, D, a->q_stride, FEATURE_SIGMOID);
    gather_heads(s.kf, k, B, S, Sp, H, D, a->k_stride, FEATURE_SIGMOID);
    int rows = Lp > Sp ? Lp : Sp;
    flow_backward_start_kernel<<<blocks_for((long)BH * rows, WARPS), THREADS>>>(
        s.g, s.w, s.dA, s.dI, dout, out, v, cache, B, L, S, Lp, Sp, H, M, a->v_stride,
        a->causal ? FC_A * L : FN_A * L, a->causal ? FC_C * L : 2 * L + S);
    CUDA_LAUNCHED();
    if (a->causal) {
        causal_dot_product_backward(s.dqf, s.dkf, s.dw, s.g, s.qf, s.kf, s.w, BH, L, D, M, s.product);
        flow_causal_flows_backward_kernel<<<BH, SCAN_THREADS>>>(s.dqf, s.dkf, dv, s.rows, s.qf, s.kf, v, s.dw, cache,
                                                                s.dA, s.dI, L, Lp, H, D, M, a->v_stride, a->clamp);
    } else {
        full_dot_product_backward(s.dqf, s.dkf, s.dw, s.g, s.qf, s.kf, s.w, BH, L, S, D, M, s.product);
        flow_normal_flows_backward_kernel<<<BH, SCAN_THREADS>>>(s.dqf, s.dkf, dv, s.rows, s.qf, s.kf, v, s.dw, cache,
                                                                s.dA, s.dI, L, S, H, D, M, a->v_stride, a->clamp);
    }
    CUDA_LAUNCHED();
    scatter_heads(dq, s.dqf, q, B, L, Lp, H, D, a->q_stride, FEATURE_SIGMOID);
    scatter_heads(dk, s.dkf, k, B, S, Sp, H, D, a->k_stride, FEATURE_SIGMOID);
}

// ----------------------------------------------------------------------------
// Recurrent form of causal Flow-Attention: every sum above is a running sum, so
// position t needs only these sums over positions 0..t. A block per head.
// state: ksum, qsum, ko, qi (D each), Z (1), kv (D*M), as on the CPU.
static size_t flow_attention_state_size(const Attention* a, int max_T) {
    return 4 * (size_t)a->D + 1 + (size_t)a->D * a->M;
}

__global__ void flow_step_kernel(float* states, int t, float* out, const float* Q, const float* K, const float* V,
                                 int D, int M, long state_size, float c) {
    int h = blockIdx.x, d = threadIdx.x;
    float* st = states + h * state_size;
    float *ksum = st, *qsum = ksum + D, *ko = qsum + D, *qi = ko + D, *z = qi + D, *kv = z + 1;
    __shared__ float q[HEAD_MAX], k[HEAD_MAX];
    float pos = (float)(t + 1);
    if (d < D) {
        q[d] = sigmoidf(Q[h * D + d]);
        k[d] = sigmoidf(K[h * D + d]);
        ksum[d] += k[d];
        qsum[d] += q[d];
    }
    float I = 1.0f / block_sum(d < D ? (q[d] + FLOW_EPS) * (ksum[d] + FLOW_EPS) : 0.0f);
    float O = 1.0f / block_sum(d < D ? (k[d] + FLOW_EPS) * (qsum[d] + FLOW_EPS) : 0.0f);
    if (d < D) {
        ko[d] += pos * O * k[d];
        qi[d] += pos * I * q[d];
    }
    float A = sigmoidf(block_sum(d < D ? (q[d] + FLOW_EPS) * (ko[d] + FLOW_EPS) : 0.0f) / pos);
    float e = expf(clampf(block_sum(d < D ? (k[d] + FLOW_EPS) * (qi[d] + FLOW_EPS) : 0.0f) / pos, c) - c);
    float zt = *z + e;
    float C = pos * e / zt;
    __syncthreads();  // every thread has read z
    if (d == 0) *z = zt;
    for (int e2 = d; e2 < D * M; e2 += blockDim.x) kv[e2] += C * k[e2 / M] * V[h * M + e2 % M];
    __syncthreads();
    for (int m = d; m < M; m += blockDim.x) {
        float acc = 0;
        for (int j = 0; j < D; j++) acc += A * I * q[j] * kv[j * M + m];
        out[h * M + m] = acc;
    }
}

static void flow_attention_step(const Attention* a, float* states, int t, float* out, const float* q,
                                const float* k, const float* v) {
    flow_step_kernel<<<a->H, SCAN_THREADS>>>(states, t, out, q, k, v, a->D, a->M,
                                             (long)flow_attention_state_size(a, a->L), a->clamp);
    CUDA_LAUNCHED();
}

static size_t flow_attention_cache_size(const Attention* a) {
    return (size_t)a->B * a->H * flow_cache_per_head(a->L, a->S);
}

// The products (batched cuBLAS: 4 forward and 11 backward for the causal form, counted
// whole, the masked half of each block of scores too; 2 and 5 for the normal form),
// plus about 60 operations per position and feature for the flows, features and gradients.
static double flow_attention_flops(const Attention* a) {
    double D = a->D, M = a->M, n = CHUNK;
    double product = a->causal ? 2.0 * chunked(a->L) * (7.0 * D * M + n * (4.0 * D + 3.0 * M))
                               : 2.0 * D * M * (4.0 * a->S + 3.0 * a->L);
    return (double)a->B * a->H * (product + 60.0 * (a->L + a->S) * D);
}

static void flow_attention_check(const Attention* a) {
    if (!(a->clamp > 0 && a->clamp <= FLOW_MAX_CLAMP))
        fail("attention: flow clamp bound must be in (0, %g], got %g", (double)FLOW_MAX_CLAMP, (double)a->clamp);
    if (a->D > HEAD_MAX)
        fail("attention: the CUDA Flow-Attention kernels take heads of up to %d channels, got %d", HEAD_MAX, a->D);
}

#endif
