// Fully connected layer (a matmul plus bias), forward and backward, on top of
// one cache-blocked, OpenMP-parallel matrix product.
//   inp is (N, C), weight is (OC, C) as in PyTorch's nn.Linear, bias is (OC),
//   out is (N, OC).
// The product follows Goto's scheme: a block of B (MM_KC x MM_NB) is packed once
// into NR-column panels shared by all threads; each thread takes a block of rows of
// A (up to MM_MC x MM_KC) and sweeps it across B's panels; the innermost kernel
// keeps an MM_MR x MM_NR block of the result in vector registers. A is read in
// place through its strides (MM_MR rows at a time, one scalar per row and step),
// which costs the kernel nothing and saves packing it.
// Every element of the result is summed by one thread in a fixed order, so
// results do not depend on the thread count.
#ifndef LAYERS_MATMUL_H
#define LAYERS_MATMUL_H

#include <stdlib.h>
#include <omp.h>
#include "utils/real.h"
#include "utils/utils.h"

#define MM_MR 8     // rows of the register tile
#define MM_NR 32    // columns of the register tile: two AVX-512 (four AVX2) vectors of floats
#define MM_MC 128   // rows of a thread's block of A (MM_MR times a power of two)
#define MM_KC 256   // depth of the packed blocks
#define MM_NB 2048  // columns of the shared packed block of B (a multiple of MM_NR)

// Packed blocks of B, shared (filled by all threads together).
// Allocated on first use and kept; OpenMP threads persist between regions.
// Called from inside a parallel region (the attention kernels run their small
// products in each thread's own head), gemm's team is the calling thread alone,
// and it packs B into a buffer of that thread's, not the shared one.
static real* mm_packed_b = NULL;
static real* mm_packed_b_own = NULL;
#pragma omp threadprivate(mm_packed_b_own)

// c (mr x nr valid of MM_MR x MM_NR, row stride ldc) = (load ? c : 0) + a . b
// over kc steps: row i of a at a + i*a_row, step p at + p*a_col (read in place,
// rows past mr repeat row 0), b packed with MM_NR reals per step.
static inline void mm_kernel(int kc, const real* restrict a, long a_row, long a_col,
                             const real* restrict b, real* restrict c, long ldc, int mr, int nr, int load) {
    real acc[MM_MR][MM_NR];
    const real* ar[MM_MR];
    for (int i = 0; i < MM_MR; i++) ar[i] = a + (i < mr ? i : 0) * a_row;
    for (int i = 0; i < MM_MR; i++)
        for (int j = 0; j < MM_NR; j++) acc[i][j] = 0;
    for (int p = 0; p < kc; p++) {
        const real* bp = b + (long)p * MM_NR;
        long off = (long)p * a_col;
#pragma GCC unroll 8
        for (int i = 0; i < MM_MR; i++) {
            real ai = ar[i][off];
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

// dst (kc x MM_NR) = depths k0..k0+kc-1, columns j0..j0+nr-1 of B, zero-padded.
static void mm_pack_b(real* dst, const real* b, long b_row, long b_col, int k0, int kc, int j0, int nr) {
    if (b_col == 1) {
        for (int p = 0; p < kc; p++) {
            const real* src = b + (long)(k0 + p) * b_row + j0;
            real* d = dst + p * MM_NR;
            for (int j = 0; j < nr; j++) d[j] = src[j];
            for (int j = nr; j < MM_NR; j++) d[j] = 0;
        }
    } else {
        for (int j = 0; j < MM_NR; j++) {
            const real* src = b + (long)(j0 + j) * b_col + (long)k0 * b_row;
            for (int p = 0; p < kc; p++) dst[p * MM_NR + j] = j < nr ? src[p * b_row] : 0;
        }
    }
}

// C (M,N) = (accumulate ? C : 0) + A (M,K) B (K,N), where element (i,p) of A is
// a[i*a_row + p*a_col] and element (p,j) of B is b[p*b_row + j*b_col]:
// the strides express transposes, so one routine serves all three products.
static void gemm(int M, int N, int K, const real* a, long a_row, long a_col,
                 const real* b, long b_row, long b_col, real* c, long ldc, int accumulate) {
    if (M <= 0 || N <= 0) return;
    if (M < MM_MR || K == 0) {
        // a few rows (generation feeds one token at a time): dot products, no packing
#pragma omp parallel for
        for (int j = 0; j < N; j++) {
            for (int i = 0; i < M; i++) {
                real acc = 0;
                for (int p = 0; p < K; p++) acc += a[(long)i * a_row + (long)p * a_col] * b[(long)p * b_row + (long)j * b_col];
                real* ci = c + (long)i * ldc + j;
                *ci = accumulate ? *ci + acc : acc;
            }
        }
        return;
    }
    real** packed_b_slot = omp_in_parallel() ? &mm_packed_b_own : &mm_packed_b;
    if (*packed_b_slot == NULL) *packed_b_slot = (real*)malloc_check(sizeof(real) * MM_KC * MM_NB);
    real* packed_b = *packed_b_slot;
    int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
#pragma omp parallel
    {
        for (int j0 = 0; j0 < N; j0 += MM_NB) {
            int nb = N - j0 < MM_NB ? N - j0 : MM_NB;
            int panels = (nb + MM_NR - 1) / MM_NR;
            // Tiles of the result: whole row blocks across this block of B when there
            // are enough of them, else narrower, so that every thread has work.
            int tile_m = MM_MC, tile_p = panels; // rows, and panels of MM_NR columns
            while (((M + tile_m - 1) / tile_m) * ((panels + tile_p - 1) / tile_p) < 2 * threads &&
                   threads > 1) {
                if (tile_m > 4 * MM_MR) tile_m /= 2;
                else if (tile_p > 1) tile_p = (tile_p + 1) / 2;
                else if (tile_m > MM_MR) tile_m /= 2;
                else break;
            }
            int mtiles = (M + tile_m - 1) / tile_m, ntiles = (panels + tile_p - 1) / tile_p;
            for (int k0 = 0; k0 < K; k0 += MM_KC) {
                int kc = K - k0 < MM_KC ? K - k0 : MM_KC;
#pragma omp for schedule(static)
                for (int jp = 0; jp < panels; jp++) {
                    int nr = nb - jp * MM_NR < MM_NR ? nb - jp * MM_NR : MM_NR;
                    mm_pack_b(packed_b + (long)jp * kc * MM_NR, b, b_row, b_col, k0, kc, j0 + jp * MM_NR, nr);
                }
                int load = accumulate || k0 > 0;
#pragma omp for collapse(2) schedule(dynamic, 1)
                for (int mt = 0; mt < mtiles; mt++) {
                    for (int nt = 0; nt < ntiles; nt++) {
                        int i0 = mt * tile_m;
                        int mc = M - i0 < tile_m ? M - i0 : tile_m;
                        int p_end = (nt + 1) * tile_p < panels ? (nt + 1) * tile_p : panels;
                        for (int jp = nt * tile_p; jp < p_end; jp++) {
                            int nr = nb - jp * MM_NR < MM_NR ? nb - jp * MM_NR : MM_NR;
                            for (int ir = 0; ir < mc; ir += MM_MR) {
                                int mr = mc - ir < MM_MR ? mc - ir : MM_MR;
                                mm_kernel(kc, a + (long)(i0 + ir) * a_row + (long)k0 * a_col, a_row, a_col, packed_b + (long)jp * kc * MM_NR,
                                          c + (long)(i0 + ir) * ldc + j0 + jp * MM_NR, ldc, mr, nr, load);
                            }
                        }
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
        // each thread owns blocks of 64 columns and sums them over rows in order
        int blocks = (OC + 63) / 64;
#pragma omp parallel for
        for (int blk = 0; blk < blocks; blk++) {
            int o0 = blk * 64, width = OC - o0 < 64 ? OC - o0 : 64;
            real sum[64] = {0};
            for (int n = 0; n < N; n++) {
                const real* row = dout + (long)n * OC + o0;
#pragma omp simd
                for (int o = 0; o < width; o++) sum[o] += row[o];
            }
            for (int o = 0; o < width; o++) dbias[o0 + o] += sum[o];
        }
    }
}

#endif
