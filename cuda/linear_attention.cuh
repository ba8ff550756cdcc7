// Linear attention (Katharopoulos et al. 2020) on the GPU, feature map phi(x) = elu(x) + 1,
// forward and backward, as layers/linear_attention.h:
//   R_i = sum_j (phi(q_i) . phi(k_j)) v_j / (phi(q_i) . sum_j phi(k_j) + eps)
// with j <= i when causal. The numerator is cuda/causal_dot_product.cuh's product; the
// denominators take a block per head (cuda/scan.cuh), which walks the positions in
// tiles carrying the running sum of phi(k) (causal) or uses its total (normal).
#ifndef CUDA_LINEAR_ATTENTION_CUH
#define CUDA_LINEAR_ATTENTION_CUH

#include "utils/params.h"
#include "cuda/common.cuh"
#include "cuda/scan.cuh"
#include "cuda/attention_types.cuh"
#include "cuda/causal_dot_product.cuh"

#define LINEAR_EPS 1e-6f

typedef struct {
    float *qf, *kf, *vf;     // (BH, Lp, D), (BH, Sp, D), (BH, Sp, M): phi(q), phi(k), v per head
    float *dqf, *dkf, *dvf;  // their gradients (backward)
    float *p, *g;            // (BH, Lp, M) the product, and its output gradient dout / den
    float *dden;             // (BH, L) gradient of each denominator
    float *product;          // the product's own scratch
} LinearScratch;

static size_t linear_scratch_layout(LinearScratch* s, float* base, const Attention* a) {
    size_t BH = (size_t)a->B * a->H, used = 0;
    int Lp = a->causal ? chunked(a->L) : a->L, Sp = a->causal ? chunked(a->S) : a->S;
    s->qf = carve(base, &used, BH * Lp * a->D);
    s->kf = carve(base, &used, BH * Sp * a->D);
    s->vf = carve(base, &used, BH * Sp * a->M);
    s->dqf = carve(base, &used, BH * Lp * a->D);
    s->dkf = carve(base, &used, BH * Sp * a->D);
    s->dvf = carve(base, &used, BH * Sp * a->M);
    s->p = carve(base, &used, BH * Lp * a->M);
    s->g = carve(base, &used, BH * Lp * a->M);
    s->dden = carve(base, &used, BH * a->L);
    s->product = carve(base, &used, a->causal ? causal_dot_product_scratch((int)BH, a->L, a->D, a->M)
                                              : full_dot_product_scratch((int)BH, a->D, a->M));
    return used;
}

static size_t linear_attention_scratch_size(const Attention* a) {
    LinearScratch s;
    return linear_scratch_layout(&s, NULL, a);
}

// den_i = phi(q_i) . z_i + eps with z_i = sum_{j (<= i)} phi(k_j): a block per head.
__global__ void __launch_bounds__(SCAN_THREADS)
linear_den_kernel(float* den, const float* qf, const float* kf, int L, int S, int Lp, int Sp, int D, int causal) {
    int bh = blockIdx.x;
    const float *q = qf + (long)bh * Lp * D, *k = kf + (long)bh * Sp * D;
    float* dh = den + (long)bh * L;
    __shared__ Tile qs, zs;
    __shared__ float z[HEAD_MAX], dot[TILE];
    for (int d = threadIdx.x; d < D; d += blockDim.x) z[d] = 0;
    __syncthreads();
    if (!causal) {  // z = the sum over every key, broadcast to the rows of zs
        for (int t0 = 0; t0 < S; t0 += TILE) {
            int n = S - t0 < TILE ? S - t0 : TILE;
            load_tile(zs, k, t0, n, D);
            ColumnScan total = {zs, zs, NULL, 0, z};
            scan_columns(&total, 1, n, D, 0);
        }
        for (int e = threadIdx.x; e < TILE * D; e += blockDim.x) zs[e / D][e % D] = z[e % D];
    }
    for (int t0 = 0; t0 < L; t0 += TILE) {
        int n = L - t0 < TILE ? L - t0 : TILE;
        load_tile(qs, q, t0, n, D);
        if (causal) {
            load_tile(zs, k, t0, n, D);
            ColumnScan prefix = {zs, zs, NULL, 0, z};
            scan_columns(&prefix, 1, n, D, 0);
        }
        dot_rows(dot, qs, zs, 0, n, D);
        for (int i = threadIdx.x; i < n; i += blockDim.x) dh[t0 + i] = dot[i] + LINEAR_EPS;
        __syncthreads();
    }
}

// out (B, L, H*M) = p_i / den_i for every head's rows, a thread per element.
__global__ void linear_output_kernel(float* out, const float* p, const float* den, int B, int L, int Lp, int H,
                                     int M) {
    long e = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (long)B * L * H * M) return;
    int m = (int)(e % M), h = (int)(e / M % H), i = (int)(e / ((long)H * M) % L), b = (int)(e / ((long)L * H * M));
    int bh = b * H + h;
    out[e] = p[((long)bh * Lp + i) * M + m] / den[(long)bh * L + i];
}

// R_i = p_i / den_i: g_i = dout_i / den_i, dden_i = -(dout_i . R_i) / den_i, a warp per
// row of each head; rows past L up to Lp get zeros.
__global__ void linear_backward_start_kernel(float* g, float* dden, const float* dout, const float* out,
                                             const float* den, int B, int L, int Lp, int H, int M) {
    long row = (long)blockIdx.x * WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= (long)B * H * Lp) return;
    int bh = (int)(row / Lp), i = (int)(row % Lp), b = bh / H, h = bh % H;
    float* gr = g + row * M;
    if (i >= L) {
        for (int m = lane; m < M; m += 32) gr[m] = 0;
        return;
    }
    const float *dr = dout + ((long)b * L + i) * H * M + h * M, *o = out + ((long)b * L + i) * H * M + h * M;
    float dn = den[(long)bh * L + i], dot = 0;
    for (int m = lane; m < M; m += 32) {
        dot += dr[m] * o[m];
        gr[m] = dr[m] / dn;
    }
    dot = warp_sum(dot);
    if (lane == 0) dden[(long)bh * L + i] = -dot / dn;
}

// The denominators' gradients, a block per head: dq_i += dden_i z_i and
// dk_j += sum_{i (>= j)} dden_i phi(q_i), the sum a suffix sum when causal.
__global__ void __launch_bounds__(SCAN_THREADS)
linear_den_backward_kernel(float* dqf, float* dkf, const float* dden_all, const float* qf, const float* kf, int L,
                           int S, int Lp, int Sp, int D, int causal) {
    int bh = blockIdx.x;
    const float *q = qf + (long)bh * Lp * D, *k = kf + (long)bh * Sp * D, *dden = dden_all + (long)bh * L;
    float *dq = dqf + (long)bh * Lp * D, *dk = dkf + (long)bh * Sp * D;
    __shared__ Tile t1;
    __shared__ float z[HEAD_MAX], rz[HEAD_MAX], w[TILE];
    for (int d = threadIdx.x; d < D; d += blockDim.x) z[d] = rz[d] = 0;
    __syncthreads();
    if (causal) {
        // forwards: z_i, the prefix sums of phi(k)
        for (int t0 = 0; t0 < L; t0 += TILE) {
            int n = L - t0 < TILE ? L - t0 : TILE;
            load_tile(t1, k, t0, n, D);
            ColumnScan prefix = {t1, t1, NULL, 0, z};
            scan_columns(&prefix, 1, n, D, 0);
            for (int e = threadIdx.x; e < n * D; e += blockDim.x)
                dq[(long)(t0 + e / D) * D + e % D] += dden[t0 + e / D] * t1[e / D][e % D];
            __syncthreads();
        }
        // backwards: rz_j = sum_{i >= j} dden_i phi(q_i)
        for (int t0 = (L - 1) / TILE * TILE; t0 >= 0; t0 -= TILE) {
            int n = L - t0 < TILE ? L - t0 : TILE;
            load_tile(t1, q, t0, n, D);
            for (int i = threadIdx.x; i < n; i += blockDim.x) w[i] = dden[t0 + i];
            __syncthreads();
            ColumnScan suffix = {t1, t1, w, 0, rz};
            scan_columns(&suffix, 1, n, D, 1);
            for (int e = threadIdx.x; e < n * D; e += blockDim.x)
                dk[(long)(t0 + e / D) * D + e % D] += t1[e / D][e % D];
            __syncthreads();
        }
    } else {
        // z = sum_j phi(k_j) and rz = sum_i dden_i phi(q_i), by threads [0, D) and [D, 2D)
        int d = (int)threadIdx.x % HEAD_MAX;
        float acc = 0;
        if (threadIdx.x < (unsigned)D) {
            for (int j = 0; j < S; j++) acc += k[(long)j * D + d];
            z[d] = acc;
        } else if (threadIdx.x >= HEAD_MAX && d < D) {
            for (int i = 0; i < L; i++) acc += dden[i] * q[(long)i * D + d];
            rz[d] = acc;
        }
        __syncthreads();
        for (long e = threadIdx.x; e < (long)L * D; e += blockDim.x) dq[e] += dden[e / D] * z[e % D];
        for (long e = threadIdx.x; e < (long)S * D; e += blockDim.x) dk[e] += rz[e % D];
    }
}

static void linear_attention_forward(const Attention* a, float* out, float* cache, const float* q, const float* k,
                                     const float* v, float* scratch) {
    int B = a->B, H = a->H, D = a->D, M = a->M, L = a->L, S = a->S, BH = B * H;
    int Lp = a->causal ? chunked(L) : L, Sp = a->causal ? chunked(S) : S;
    LinearScratch s;
    linear_scratch_layout(&s, scratch, a);
    gather_heads(s.qf, q, B, L, Lp, H, D, a->q_stride, FEATURE_ELU1);
    gather_heads(s.kf, k, B, S, Sp, H, D, a->k_stride, FEATURE_ELU1);
    gather_heads(s.vf, v, B, S, Sp, H, M, a->v_stride, FEATURE_IDENTITY);
    if (a->causal) causal_dot_product_forward(s.p, s.qf, s.kf, s.vf, BH, L, D, M, s.product);
    else full_dot_product_forward(s.p, s.qf, s.kf, s.vf, BH, L, S, D, M, s.product);
    linear_den_kernel<<<BH, SCAN_THREADS>>>(cache, s.qf, s.kf, L, S, Lp, Sp, D, a->causal);
    CUDA_LAUNCHED();
    linear_output_kernel<<<blocks_for((long)B * L * H * M, THREADS), THREADS>>>(out, s.p, cache, B, L, Lp, H, M);
    CUDA_LAUNCHED();
}

static void linear_attention_backward(const Attention* a, float* dq, float* dk, float* dv, const float* dout,
                                      const float* out, const float* cache, const float* q, const float* k,
                                      const float* v, float* scratch) {
    int B = a->B, H = a->H, D = a->D, M = a->M, L = a->L, S = a->S, BH = B * H;
    int Lp = a->causal ? chunked(L) : L, Sp = a->causal ? chunked(S) : S;
    LinearScratch s;
    linear_scratch_layout(&s, scratch, a);
    gather_heads(s.qf, q, B, L, Lp, H, D, a->q_stride, FEATURE_ELU1);
    gather_heads(s.kf, k, B, S, Sp, H, D, a->k_stride, FEATURE_ELU1);
    gather_heads(s.vf, v, B, S, Sp, H, M, a->v_stride, FEATURE_IDENTITY);
    linear_backward_start_kernel<<<blocks_for((long)BH * Lp, WARPS), THREADS>>>(s.g, s.dden, dout, out, cache, B, L,
                                                                                Lp, H, M);
    CUDA_LAUNCHED();
    if (a->causal) causal_dot_product_backward(s.dqf, s.dkf, s.dvf, s.g, s.qf, s.kf, s.vf, BH, L, D, M, s.product);
    else full_dot_product_backward(s.dqf, s.dkf, s.dvf, s.g, s.qf, s.kf, s.vf, BH, L, S, D, M, s.product);
    linear_den_backward_kernel<<<BH, SCAN_THREADS>>>(s.dqf, s.dkf, s.dden, s.qf, s.kf, L, S, Lp, Sp, D, a->causal);
    CUDA_LAUNCHED();
    scatter_heads(dq, s.dqf, q, B, L, Lp, H, D, a->q_stride, FEATURE_ELU1);
    scatter_heads(dk, s.dkf, k, B, S, Sp, H, D, a->k_stride, FEATURE_ELU1);
    scatter_heads(dv, s.dvf, v, B, S, Sp, H, M, a->v_stride, FEATURE_IDENTITY);
}

// Recurrent form: state = kv (D*M) and z (D), the running sums over positions 0..t,
// as on the CPU. A block per head.
static size_t linear_attention_state_size(const Attention* a, int max_T) {
    return (size_t)a->D * a->M + a->D;
}

__global__ void linear_step_kernel(float* states, float* out, const float* Q, const float* K, const float* V, int D,
                                   int M, long state_size) {
    int h = blockIdx.x, d = threadIdx.x;
    float *kv = states + h * state_size, *z = kv + (long)D * M;
    __shared__ float q[HEAD_MAX], k[HEAD_MAX];
    if (d < D) {
        q[d] = feature(Q[h * D + d], FEATURE_ELU1);
        k[d] = feature(K[h * D + d], FEATURE_ELU1);
        z[d] += k[d];
    }
    float den = block_sum(d < D ? q[d] * z[d] : 0.0f) + LINEAR_EPS;
    for (int e = d; e < D * M; e += blockDim.x) kv[e] += k[e / M] * V[h * M + e % M];
    __syncthreads();
    for (int m = d; m < M; m += blockDim.x) {
        float acc = 0;
        for (int j = 0; j < D; j++) acc += q[j] / den * kv[j * M + m];
        out[h * M + m] = acc;
    }
}

static void linear_attention_step(const Attention* a, float* states, int t, float* out, const float* q,
                                  const float* k, const float* v) {
    linear_step_kernel<<<a->H, SCAN_THREADS>>>(states, out, q, k, v, a->D, a->M,
                                               (long)linear_attention_state_size(a, a->L));
    CUDA_LAUNCHED();
}

static size_t linear_attention_cache_size(const Attention* a) { return (size_t)a->B * a->H * a->L; }

// The products, plus about 20 operations per position and feature for the features,
// the denominators and their gradients.
static double linear_attention_flops(const Attention* a) {
    double D = a->D, M = a->M, n = CHUNK;
    double product = a->causal ? 2.0 * chunked(a->L) * (7.0 * D * M + n * (4.0 * D + 3.0 * M))
                               : 2.0 * D * M * (4.0 * a->S + 3.0 * a->L);
    return (double)a->B * a->H * (product + 20.0 * (a->L + a->S) * D);
}

static void linear_attention_check(const Attention* a) {
    if (a->D > HEAD_MAX)
        fail("attention: the CUDA linear attention kernels take heads of up to %d channels, got %d", HEAD_MAX, a->D);
}

#endif
