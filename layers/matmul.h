// Fully connected layer (a matmul plus bias), forward and backward, on top of
// one cache-blocked, OpenMP-parallel matrix product.
//   inp is (N, C), weight is (OC, C) as in PyTorch's nn.Linear, bias is (OC),
//   out is (N, OC).
// The product packs blocks of both operands into contiguous panels (Goto's
// scheme) so that the innermost kernel streams through L1 and keeps an
// MM_MR x MM_NR block of the result in vector registers; each thread packs
// its own blocks, so tiles of the result are independent and parallel.
#ifndef LAYERS_MATMUL_H
#define LAYERS_MATMUL_H

#include <stdlib.h>
#include <omp.h>
#include "real.h"
#include "../utils/utils.h"

#define MM_MR 8     // rows of the register tile
#define MM_NR 32    // columns of the register tile: two AVX-512 (four AVX2) vectors of floats
#define MM_MC 128   // rows of a cache tile (MM_MR times a power of two)
#define MM_NC 256   // columns of a cache tile (MM_NR times a power of two)
#define MM_KC 256   // depth of a cache tile

// Per-thread packing buffers, allocated on first use and kept (threads persist).
static real* mm_pack_buffer = NULL;
#pragma omp threadprivate(mm_pack_buffer)

// c (mr x nr valid of MM_MR x MM_NR, row stride ldc) = (load ? c : 0) + a . b
// over kc packed steps: a holds MM_MR reals per step, b holds MM_NR.
static inline void mm_kernel(int kc, const real* restrict a, const real* restrict b,
                             real* restrict c, long ldc, int mr, int nr, int load) {
    real acc[MM_MR][MM_NR];
    for (int i = 0; i < MM_MR; i++)
        for (int j = 0; j < MM_NR; j++) acc[i][j] = 0;
    for (int p = 0; p < kc; p++) {
        const real* bp = b + (long)p * MM_NR;
        const real* ap = a + (long)p * MM_MR;
#pragma GCC unroll 8
        for (int i = 0; i < MM_MR; i++) {
            real ai = ap[i];
#pragma omp simd
            for (int j = 0; j < MM_NR; j++) acc[i][j] += ai * bp[j];
        }
    }
    for (int i = 0; i < mr; i++) {
        real* ci = c + i * ldc;
        if (load) for (int j = 0; j < nr; j++) ci[j] += acc[i][j];
        else for (int j = 0; j < nr; j++) ci[j] = acc[i][j];
    }
}

// C (M,N) = (accumulate ? C : 0) + A (M,K) B (K,N), where element (i,p) of A is
// a[i*a_row + p*a_col] and element (p,j) of B is b[p*b_row + j*b_col]:
// the strides express transposes, so one routine serves all three products.
static void gemm(int M, int N, int K, const real* a, long a_row, long a_col,
                 const real* b, long b_row, long b_col, real* c, long ldc, int accumulate) {
    // Shrink the cache tiles until every thread has a few (a weight gradient of
    // 128 x 128 would otherwise be one tile, and one busy thread).
    int tile_m = MM_MC, tile_n = MM_NC;
    int want = 4 * omp_get_max_threads();
    while (((M + tile_m - 1) / tile_m) * ((N + tile_n - 1) / tile_n) < want) {
        if (tile_n > MM_NR && (tile_n >= 2 * tile_m || tile_m <= MM_MR)) tile_n /= 2;
        else if (tile_m > MM_MR) tile_m /= 2;
        else break;
    }
    int mtiles = (M + tile_m - 1) / tile_m, ntiles = (N + tile_n - 1) / tile_n;
    if (K == 0) {
        if (!accumulate)
            for (int i = 0; i < M; i++) for (int j = 0; j < N; j++) c[(long)i * ldc + j] = 0;
        return;
    }
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int mt = 0; mt < mtiles; mt++) {
        for (int nt = 0; nt < ntiles; nt++) {
            if (mm_pack_buffer == NULL)
                mm_pack_buffer = (real*)malloc_check(sizeof(real) * (MM_MC + MM_NC) * MM_KC);
            real* pa = mm_pack_buffer;
            real* pb = mm_pack_buffer + MM_MC * MM_KC;
            int i0 = mt * tile_m, j0 = nt * tile_n;
            int mc = M - i0 < tile_m ? M - i0 : tile_m;
            int nc = N - j0 < tile_n ? N - j0 : tile_n;
            for (int k0 = 0; k0 < K; k0 += MM_KC) {
                int kc = K - k0 < MM_KC ? K - k0 : MM_KC;
                // A block as panels of MM_MR rows, zero-padded past M
                for (int ir = 0; ir < mc; ir += MM_MR) {
                    real* dst = pa + (long)ir * kc;
                    for (int i = 0; i < MM_MR; i++) {
                        if (ir + i < mc) {
                            const real* src = a + (long)(i0 + ir + i) * a_row + (long)k0 * a_col;
                            for (int p = 0; p < kc; p++) dst[p * MM_MR + i] = src[p * a_col];
                        } else {
                            for (int p = 0; p < kc; p++) dst[p * MM_MR + i] = 0;
                        }
                    }
                }
                // B block as panels of MM_NR columns, zero-padded past N
                for (int jr = 0; jr < nc; jr += MM_NR) {
                    real* dst = pb + (long)jr * kc;
                    int nr = nc - jr < MM_NR ? nc - jr : MM_NR;
                    for (int p = 0; p < kc; p++) {
                        const real* src = b + (long)(k0 + p) * b_row + (long)(j0 + jr) * b_col;
                        real* d = dst + p * MM_NR;
                        if (b_col == 1) {
                            for (int j = 0; j < nr; j++) d[j] = src[j];
                        } else {
                            for (int j = 0; j < nr; j++) d[j] = src[j * b_col];
                        }
                        for (int j = nr; j < MM_NR; j++) d[j] = 0;
                    }
                }
                int load = accumulate || k0 > 0;
                for (int jr = 0; jr < nc; jr += MM_NR) {
                    int nr = nc - jr < MM_NR ? nc - jr : MM_NR;
                    for (int ir = 0; ir < mc; ir += MM_MR) {
                        int mr = mc - ir < MM_MR ? mc - ir : MM_MR;
                        mm_kernel(kc, pa + (long)ir * kc, pb + (long)jr * kc,
                                  c + (long)(i0 + ir) * ldc + j0 + jr, ldc, mr, nr, load);
                    }
                }
            }
        }
    }
}

// out (N,OC) = inp (N,C) weight^T + bias; bias may be NULL.
static void matmul_forward(real* out, const real* inp, const real* weight, const real* bias,
                           int N, int C, int OC) {
    if (bias != NULL) {
#pragma omp parallel for
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) out[(long)n * OC + o] = bias[o];
    }
    gemm(N, OC, C, inp, C, 1, weight, 1, C, out, OC, bias != NULL);
}

// dinp (N,C) += dout weight; dweight (OC,C) += dout^T inp; dbias (OC) += column sums
// of dout. dinp or dbias may be NULL when not wanted.
static void matmul_backward(real* dinp, real* dweight, real* dbias, const real* dout,
                            const real* inp, const real* weight, int N, int C, int OC) {
    if (dinp != NULL) gemm(N, C, OC, dout, OC, 1, weight, C, 1, dinp, C, 1);
    gemm(OC, C, N, dout, 1, OC, inp, C, 1, dweight, C, 1);
    if (dbias != NULL) {
#pragma omp parallel for
        for (int o = 0; o < OC; o++) {
            real sum = 0;
            for (int n = 0; n < N; n++) sum += dout[(long)n * OC + o];
            dbias[o] += sum;
        }
    }
}

#endif
