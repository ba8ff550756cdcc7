// Block-wide scans over one head's positions, for the kernels that give each head a
// block and walk its positions in tiles of TILE rows (cuda/flow_attention.cuh,
// cuda/linear_attention.cuh): sums down the columns of a tile that continue a sum
// carried from the tiles before, dot products of rows, and prefix sums of one scalar
// per row. A prefix sum of the CPU's forward loop is a column scan here; a suffix sum
// of its backward loop, the same scan in reverse.
#ifndef CUDA_SCAN_CUH
#define CUDA_SCAN_CUH

#include "cuda/common.cuh"

#define TILE 32           // rows of a tile: one per lane of a warp, for the scalar scans
#define HEAD_MAX 64       // the widest head these kernels take
#define SCAN_THREADS 128  // threads of a block: two column scans of HEAD_MAX at once

typedef float Tile[TILE][HEAD_MAX];

// tile = rows [t0, t0 + n) of a head's (., D) rows at src.
__device__ void load_tile(Tile tile, const float* src, int t0, int n, int D) {
    for (int e = threadIdx.x; e < n * D; e += blockDim.x) tile[e / D][e % D] = src[(long)(t0 + e / D) * D + e % D];
    __syncthreads();
}

// One column scan: dst[i][d] = carry[d] + the sum over rows j <= i (reverse: j >= i)
// of weight[j] * (src[j][d] + eps), for the n rows of a tile and d < D; carry[d]
// becomes the sum with the whole tile. weight NULL: 1. dst may be src.
typedef struct {
    float (*dst)[HEAD_MAX];
    const float (*src)[HEAD_MAX];
    const float* weight;
    float eps;
    float* carry;
} ColumnScan;

// Runs `count` column scans at once, thread t taking column t % D of scan t / D.
__device__ void scan_columns(const ColumnScan* scans, int count, int n, int D, int reverse) {
    for (int t = threadIdx.x; t < count * D; t += blockDim.x) {
        ColumnScan s = scans[t / D];
        int d = t % D;
        float acc = s.carry[d];
        for (int r = 0; r < n; r++) {
            int i = reverse ? n - 1 - r : r;
            acc += (s.weight != NULL ? s.weight[i] : 1.0f) * (s.src[i][d] + s.eps);
            s.dst[i][d] = acc;
        }
        s.carry[d] = acc;
    }
    __syncthreads();
}

// out[i] = sum_d (x[i][d] + eps) (y[i][d] + eps) for the n rows of two tiles, a warp per row.
__device__ void dot_rows(float* out, const Tile x, const Tile y, float eps, int n, int D) {
    int lane = threadIdx.x % 32;
    for (int i = threadIdx.x / 32; i < n; i += blockDim.x / 32) {
        float s = 0;
        for (int d = lane; d < D; d += 32) s += (x[i][d] + eps) * (y[i][d] + eps);
        s = warp_sum(s);
        if (lane == 0) out[i] = s;
    }
    __syncthreads();
}

// x[i] = carry + the sum over j <= i (reverse: j >= i) of x[j], for n <= TILE values,
// by the first warp (lane r holds the r-th value in the scan's order); carry becomes
// the total.
__device__ void scan_scalars(float* x, int n, float* carry, int reverse) {
    if (threadIdx.x < 32) {
        int lane = threadIdx.x, i = reverse ? n - 1 - lane : lane;
        float v = lane < n ? x[i] : 0.0f;
        for (int offset = 1; offset < 32; offset <<= 1) {
            float before = __shfl_up_sync(0xffffffffu, v, offset);
            if (lane >= offset) v += before;
        }
        v += *carry;
        if (lane < n) x[i] = v;
        float total = __shfl_sync(0xffffffffu, v, 31);
        if (lane == 0) *carry = total;
    }
    __syncthreads();
}

#endif
