// Fully connected layer (a matmul plus bias), forward and backward, on top of
// one matrix product, gemm, which the attention kernels also call.
//   inp is (N, C), weight is (OC, C) as in PyTorch's nn.Linear, bias is (OC),
//   out is (N, OC).
//
// gemm follows Goto and van de Geijn (as BLIS and OpenBLAS do):
// - A micro-kernel keeps an MR x NR block of C in vector registers and adds kc
//   rank-1 updates to it, each one row of B (NR reals) times MR broadcast reals
//   of A. AVX-512: 8 x 32 (16 zmm accumulators), AVX2+FMA: 6 x 16 (12 ymm),
//   portable C: 4 x 16. That is enough independent sums to hide the FMA latency
//   on current Intel and AMD cores, with registers left for B and A.
// - Loops, outermost first: blocks of nc columns; blocks of kc depths, where
//   B's block (kc x nc, 512 KiB with AVX-512) is packed into panels of NR
//   columns, to be read from L2; micro-panels of MR rows of A, packed (MR x kc,
//   8 KiB) to stay in L1 while the kernel sweeps them across B's panels.
// - Packing copies without transposing A: rows contiguous in K (the forward
//   pass's inp, the input gradient's dout) stay rows of kc, columns contiguous
//   in K (the weight gradient's dout^T) become kc steps of MR; the kernel reads
//   either. B is packed as NR reals per depth, which is a transpose for the
//   forward pass's W^T (done 8 x 8 in registers).
// - Threads: the product is split once into one rectangle of C per thread (row
//   ranges by column ranges, whichever split leaves the busiest thread least
//   work), and each thread packs what its rectangle reads into its own buffers.
//   No thread ever waits for another before the end, which matters on a machine
//   shared with other work, where a wait can cost a time slice.
// - Every element of C is summed by one thread, in K order, over depth blocks
//   that depend on K alone, with micro-panels at fixed multiples of MR and NR:
//   results do not depend on the thread count.
// - Small products (the attention kernels run many per head, from inside their
//   own parallel region, where gemm runs on the calling thread) read A's rows
//   and B's rows in place when they are contiguous: there packing would cost
//   more than it saves. A product of a few rows (generation feeds one token at
//   a time) is done as dot products or row updates, reading B once, in place.
// The kernel family is chosen once from the CPU (cpuid), or forced with the
// environment variable FLOWFORMER_ISA=avx512|avx2|generic. float64 builds
// (REAL_DOUBLE, for the gradient tests) have only the portable kernel.
#ifndef LAYERS_MATMUL_H
#define LAYERS_MATMUL_H

#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include "utils/real.h"
#include "utils/utils.h"

#if defined(__x86_64__) && !defined(REAL_DOUBLE)
#define MM_X86_KERNELS
#include <immintrin.h>
#endif

#define MM_MR_MAX 8                // the largest MR, NR and kc below
#define MM_NR_MAX 32
#define MM_KC_MAX 256
#define MM_FEW_ROWS 4              // fewer rows of A than this: no micro-kernel
#define MM_SMALL_PANELS 8          // at most this many micro-panels of A: a small product
#define MM_THREAD_FMAS (1L << 20)  // multiply-adds that pay for starting one more thread

// ---- micro-kernels ------------------------------------------------------------

// c (MR x NR, row stride ldc) = (load ? c : 0) + A B over kc depths, where A's
// element (i, p) is a[i*a_row + p*a_col] with either a_col == 1 (rows of A) or
// a_row == 1, a_col == MR (a packed micro-panel by steps), and B's row p is NR
// reals at b + p*b_row.
typedef void (*MMKernel)(int kc, const real* a, long a_row, long a_col, const real* b, long b_row,
                         real* c, long ldc, int load);

// A kernel's body is inlined once for each layout of A, so that the compiler
// sees a constant stride in each.
#define MM_KERNEL_FOR_LAYOUTS(body, MR)                                                         \
    if (a_col == 1) body(kc, a, a_row, 1, b, b_row, c, ldc, load);                               \
    else body(kc, a, 1, MR, b, b_row, c, ldc, load);

#define MM_GENERIC_MR 4
#define MM_GENERIC_NR 16

__attribute__((always_inline)) static inline void
mm_tile_generic(int kc, const real* restrict a, long a_row, long a_col, const real* restrict b, long b_row,
                real* restrict c, long ldc, int load) {
    real acc[MM_GENERIC_MR][MM_GENERIC_NR] = {{0}};
    for (int p = 0; p < kc; p++, a += a_col, b += b_row) {
        for (int i = 0; i < MM_GENERIC_MR; i++) {
            real ai = a[i * a_row];
#pragma omp simd
            for (int j = 0; j < MM_GENERIC_NR; j++) acc[i][j] += ai * b[j];
        }
    }
    for (int i = 0; i < MM_GENERIC_MR; i++)
        for (int j = 0; j < MM_GENERIC_NR; j++) c[i * ldc + j] = load ? c[i * ldc + j] + acc[i][j] : acc[i][j];
}

static void mm_kernel_generic(int kc, const real* a, long a_row, long a_col, const real* b, long b_row,
                              real* c, long ldc, int load) {
    MM_KERNEL_FOR_LAYOUTS(mm_tile_generic, MM_GENERIC_MR)
}

#ifdef MM_X86_KERNELS
#define MM_AVX512_MR 8
#define MM_AVX512_NR 32

__attribute__((target("avx512f"), always_inline)) static inline void
mm_tile_avx512(int kc, const float* a, long a_row, long a_col, const float* b, long b_row,
               float* c, long ldc, int load) {
    __m512 acc0[MM_AVX512_MR], acc1[MM_AVX512_MR];
#pragma GCC unroll 8
    for (int i = 0; i < MM_AVX512_MR; i++) {
        acc0[i] = acc1[i] = _mm512_setzero_ps();
        // C's block is needed only at the end: fetch it meanwhile (its rows span up to 3 lines)
        _mm_prefetch((const char*)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char*)(c + i * ldc + 16), _MM_HINT_T0);
        _mm_prefetch((const char*)(c + i * ldc + 31), _MM_HINT_T0);
    }
    for (int p = 0; p < kc; p++, a += a_col, b += b_row) {
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 8
        for (int i = 0; i < MM_AVX512_MR; i++) {
            __m512 ai = _mm512_set1_ps(a[i * a_row]);
            acc0[i] = _mm512_fmadd_ps(ai, b0, acc0[i]);
            acc1[i] = _mm512_fmadd_ps(ai, b1, acc1[i]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MM_AVX512_MR; i++) {
        float* ci = c + i * ldc;
        if (load) {
            acc0[i] = _mm512_add_ps(_mm512_loadu_ps(ci), acc0[i]);
            acc1[i] = _mm512_add_ps(_mm512_loadu_ps(ci + 16), acc1[i]);
        }
        _mm512_storeu_ps(ci, acc0[i]);
        _mm512_storeu_ps(ci + 16, acc1[i]);
    }
}

__attribute__((target("avx512f"))) static void
mm_kernel_avx512(int kc, const float* a, long a_row, long a_col, const float* b, long b_row,
                 float* c, long ldc, int load) {
    MM_KERNEL_FOR_LAYOUTS(mm_tile_avx512, MM_AVX512_MR)
}

#define MM_AVX2_MR 6
#define MM_AVX2_NR 16

__attribute__((target("avx2,fma"), always_inline)) static inline void
mm_tile_avx2(int kc, const float* a, long a_row, long a_col, const float* b, long b_row,
             float* c, long ldc, int load) {
    __m256 acc0[MM_AVX2_MR], acc1[MM_AVX2_MR];
#pragma GCC unroll 6
    for (int i = 0; i < MM_AVX2_MR; i++) {
        acc0[i] = acc1[i] = _mm256_setzero_ps();
        _mm_prefetch((const char*)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char*)(c + i * ldc + 15), _MM_HINT_T0);
    }
    for (int p = 0; p < kc; p++, a += a_col, b += b_row) {
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 6
        for (int i = 0; i < MM_AVX2_MR; i++) {
            __m256 ai = _mm256_broadcast_ss(a + i * a_row);
            acc0[i] = _mm256_fmadd_ps(ai, b0, acc0[i]);
            acc1[i] = _mm256_fmadd_ps(ai, b1, acc1[i]);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < MM_AVX2_MR; i++) {
        float* ci = c + i * ldc;
        if (load) {
            acc0[i] = _mm256_add_ps(_mm256_loadu_ps(ci), acc0[i]);
            acc1[i] = _mm256_add_ps(_mm256_loadu_ps(ci + 8), acc1[i]);
        }
        _mm256_storeu_ps(ci, acc0[i]);
        _mm256_storeu_ps(ci + 8, acc1[i]);
    }
}

__attribute__((target("avx2,fma"))) static void
mm_kernel_avx2(int kc, const float* a, long a_row, long a_col, const float* b, long b_row,
               float* c, long ldc, int load) {
    MM_KERNEL_FOR_LAYOUTS(mm_tile_avx2, MM_AVX2_MR)
}
#endif

// ---- packing --------------------------------------------------------------------

// Copies mr rows (of a micro-panel of MR) and kc depths of A, from a, into dst,
// zero past mr, and sets the strides that read it there: rows contiguous in K
// stay rows of kc (a memcpy each), otherwise each depth holds MR reals.
__attribute__((always_inline)) static inline void
mm_pack_a(real* restrict dst, long* dst_row, long* dst_col, const real* restrict a, long a_row, long a_col,
          int mr, int MR, int kc) {
    if (a_col == 1) {
        for (int i = 0; i < mr; i++) memcpy(dst + (long)i * kc, a + i * a_row, (size_t)kc * sizeof(real));
        memset(dst + (long)mr * kc, 0, (size_t)(MR - mr) * kc * sizeof(real));
        *dst_row = kc, *dst_col = 1;
        return;
    }
    if (a_row == 1 && mr == MR) {
        for (int p = 0; p < kc; p++)
            for (int i = 0; i < MR; i++) dst[(long)p * MR + i] = a[p * a_col + i];
    } else {
        for (int p = 0; p < kc; p++)
            for (int i = 0; i < MR; i++) dst[(long)p * MR + i] = i < mr ? a[p * a_col + i * a_row] : 0;
    }
    *dst_row = 1, *dst_col = MR;
}

// dst (kc depths of NR reals) = kc depths and nr columns (of a panel of NR) of
// B, from b, zero past nr.
__attribute__((always_inline)) static inline void
mm_pack_b(real* restrict dst, const real* restrict b, long b_row, long b_col, int nr, int NR, int kc) {
    if (b_col == 1 && nr == NR) {
        for (int p = 0; p < kc; p++)
            for (int j = 0; j < NR; j++) dst[(long)p * NR + j] = b[p * b_row + j];
    } else {
        // a transpose when b_row == 1: by 8 depths, a cache line of each column
        for (int p0 = 0; p0 < kc; p0 += 8)
            for (int j = 0; j < NR; j++)
                for (int p = p0; p < p0 + 8 && p < kc; p++) dst[(long)p * NR + j] = j < nr ? b[p * b_row + j * b_col] : 0;
    }
}

typedef void (*MMPackA)(real* dst, long* dst_row, long* dst_col, const real* a, long a_row, long a_col, int mr, int kc);
typedef void (*MMPackB)(real* dst, const real* b, long b_row, long b_col, int nr, int kc);

// Packing for one MR or NR, which the compiler then knows: a full step of A or
// B becomes a few vector moves.
#define MM_PACK_A_FOR(MR)                                                                                 \
    static void mm_pack_a_##MR(real* dst, long* dst_row, long* dst_col, const real* a, long a_row,         \
                               long a_col, int mr, int kc) {                                             \
        mm_pack_a(dst, dst_row, dst_col, a, a_row, a_col, mr, MR, kc);                                    \
    }
#define MM_PACK_B_FOR(NR)                                                                                 \
    static void mm_pack_b_##NR(real* dst, const real* b, long b_row, long b_col, int nr, int kc) {         \
        mm_pack_b(dst, b, b_row, b_col, nr, NR, kc);                                                      \
    }
MM_PACK_A_FOR(4)
MM_PACK_B_FOR(16)

#ifdef MM_X86_KERNELS
MM_PACK_A_FOR(6)
MM_PACK_A_FOR(8)

// B with columns contiguous in K (b_row == 1, as the forward pass's W^T): the
// transpose by blocks of 8 columns x 8 depths in AVX2 registers (every CPU with
// AVX-512 has AVX2), several times faster than element by element. Columns past
// nr are zero; a last partial block of depths goes element by element.
__attribute__((target("avx2"))) static void
mm_pack_b_transposed(float* restrict dst, const float* restrict b, long b_col, int nr, int NR, int kc) {
    int p0 = 0;
    for (; p0 + 8 <= kc; p0 += 8) {
        for (int j0 = 0; j0 < NR; j0 += 8) {
            __m256 r[8], t[8], u[8];
            for (int q = 0; q < 8; q++)
                r[q] = j0 + q < nr ? _mm256_loadu_ps(b + (j0 + q) * b_col + p0) : _mm256_setzero_ps();
            for (int q = 0; q < 8; q += 2) {
                t[q] = _mm256_unpacklo_ps(r[q], r[q + 1]);
                t[q + 1] = _mm256_unpackhi_ps(r[q], r[q + 1]);
            }
            for (int q = 0; q < 8; q += 4) {
                u[q] = _mm256_shuffle_ps(t[q], t[q + 2], _MM_SHUFFLE(1, 0, 1, 0));
                u[q + 1] = _mm256_shuffle_ps(t[q], t[q + 2], _MM_SHUFFLE(3, 2, 3, 2));
                u[q + 2] = _mm256_shuffle_ps(t[q + 1], t[q + 3], _MM_SHUFFLE(1, 0, 1, 0));
                u[q + 3] = _mm256_shuffle_ps(t[q + 1], t[q + 3], _MM_SHUFFLE(3, 2, 3, 2));
            }
            for (int q = 0; q < 4; q++) {
                _mm256_storeu_ps(dst + (long)(p0 + q) * NR + j0, _mm256_permute2f128_ps(u[q], u[q + 4], 0x20));
                _mm256_storeu_ps(dst + (long)(p0 + q + 4) * NR + j0, _mm256_permute2f128_ps(u[q], u[q + 4], 0x31));
            }
        }
    }
    for (; p0 < kc; p0++)
        for (int j = 0; j < NR; j++) dst[(long)p0 * NR + j] = j < nr ? b[j * b_col + p0] : 0;
}

#define MM_PACK_B_X86_FOR(NR)                                                                             \
    static void mm_pack_b_x86_##NR(real* dst, const real* b, long b_row, long b_col, int nr, int kc) {     \
        if (b_row == 1) mm_pack_b_transposed(dst, b, b_col, nr, NR, kc);                                  \
        else mm_pack_b(dst, b, b_row, b_col, nr, NR, kc);                                                 \
    }
MM_PACK_B_X86_FOR(16)
MM_PACK_B_X86_FOR(32)
#endif

// Asks for mr rows and kc depths of A, at a, to be brought into L2 while the
// kernel works on the previous micro-panel: each micro-panel of A is read once
// per block of columns, and would otherwise come from memory when packed.
static inline void mm_prefetch_a(const real* a, long a_row, long a_col, int mr, int kc) {
    const int line = 64 / sizeof(real);
    if (a_col == 1) {
        for (int i = 0; i < mr; i++)
            for (int p = 0; p < kc + line; p += line) __builtin_prefetch(a + i * a_row + p, 0, 2);
    } else {
        for (int p = 0; p < kc; p++) __builtin_prefetch(a + p * a_col, 0, 2);
    }
}

// ---- kernel families ------------------------------------------------------------

typedef struct {
    const char* name;
    int mr, nr;  // the micro-kernel's block of C
    int kc, nc;  // the largest depth and column blocks: B's block fills about half an L2
    MMKernel kernel;
    MMPackA pack_a;
    MMPackB pack_b;
} MMIsa;

enum { MM_GENERIC, MM_AVX2, MM_AVX512, MM_ISAS };

// CPUs with only AVX2 have an L2 of 256 KiB to 1 MiB; with AVX-512, 1 MiB or more.
static const MMIsa mm_isas[MM_ISAS] = {
    [MM_GENERIC] = {"generic", MM_GENERIC_MR, MM_GENERIC_NR, 256, 512, mm_kernel_generic, mm_pack_a_4, mm_pack_b_16},
#ifdef MM_X86_KERNELS
    [MM_AVX2] = {"avx2", MM_AVX2_MR, MM_AVX2_NR, 256, 256, mm_kernel_avx2, mm_pack_a_6, mm_pack_b_x86_16},
    [MM_AVX512] = {"avx512", MM_AVX512_MR, MM_AVX512_NR, 256, 512, mm_kernel_avx512, mm_pack_a_8, mm_pack_b_x86_32},
#else
    [MM_AVX2] = {"avx2"},
    [MM_AVX512] = {"avx512"},
#endif
};

static int mm_isa_index = -1; // into mm_isas; -1 until the first product

// Whether this CPU runs family k (a family that this build lacks counts as running).
static int mm_isa_on_cpu(int k) {
#ifdef MM_X86_KERNELS
    __builtin_cpu_init();
    if (k == MM_AVX512) return __builtin_cpu_supports("avx512f");
    if (k == MM_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return 1;
}

static int mm_isa_lookup(const char* name) {
    for (int k = 0; k < MM_ISAS; k++)
        if (strcmp(name, mm_isas[k].name) == 0) return k;
    return -1;
}

// The best family this build has and the CPU runs, unless FLOWFORMER_ISA names one.
static int mm_isa_choose(void) {
    const char* forced = getenv("FLOWFORMER_ISA");
    if (forced != NULL && forced[0] != '\0') {
        int k = mm_isa_lookup(forced);
        if (k < 0) fail("FLOWFORMER_ISA=%s: expected avx512, avx2 or generic", forced);
        if (!mm_isa_on_cpu(k)) fail("FLOWFORMER_ISA=%s: this CPU does not support it", forced);
        return mm_isas[k].kernel != NULL ? k : MM_GENERIC;
    }
    for (int k = MM_ISAS - 1; k > MM_GENERIC; k--)
        if (mm_isas[k].kernel != NULL && mm_isa_on_cpu(k)) return k;
    return MM_GENERIC;
}

static const MMIsa* mm_isa(void) {
    // Threads that race on the first product all choose the same.
    int k = __atomic_load_n(&mm_isa_index, __ATOMIC_RELAXED);
    if (k < 0) {
        k = mm_isa_choose();
        __atomic_store_n(&mm_isa_index, k, __ATOMIC_RELAXED);
    }
    return &mm_isas[k];
}

// The kernel family gemm uses: "avx512", "avx2" or "generic".
static const char* gemm_isa(void) { return mm_isa()->name; }

// Makes gemm use family `name` (the tests run each family this way); returns 0,
// changing nothing, where this build or this CPU lacks it. Not during a product.
static int gemm_use_isa(const char* name) {
    int k = mm_isa_lookup(name);
    if (k < 0 || mm_isas[k].kernel == NULL || !mm_isa_on_cpu(k)) return 0;
    __atomic_store_n(&mm_isa_index, k, __ATOMIC_RELAXED);
    return 1;
}

// ---- the product ----------------------------------------------------------------

// Each thread's packed micro-panel of A and block of B (which grows when needed).
static _Thread_local real mm_packed_a[MM_MR_MAX * MM_KC_MAX] __attribute__((aligned(64)));
static _Thread_local real* mm_packed_b = NULL;
static _Thread_local size_t mm_packed_b_size = 0;

static real* mm_packed_b_buffer(size_t size) {
    if (size > mm_packed_b_size) {
        free(mm_packed_b);
        mm_packed_b = (real*)aligned_alloc(64, (size * sizeof(real) + 63) / 64 * 64);
        if (mm_packed_b == NULL) fail("out of memory allocating gemm's packing buffer");
        mm_packed_b_size = size;
    }
    return mm_packed_b;
}

// How many threads a product of `fmas` multiply-adds gets: the team that a
// parallel region would start, or fewer where starting threads would cost more
// than they save; one inside a parallel region.
static int mm_threads(double fmas) {
    if (omp_in_parallel()) return 1;
    int threads = omp_get_max_threads(), useful = (int)(fmas / MM_THREAD_FMAS);
    if (useful < threads) threads = useful > 1 ? useful : 1;
    return threads;
}

// A product of fewer than MM_FEW_ROWS rows: each element a dot product when
// B's columns are contiguous in K like A's rows (generation's x W^T), else row
// updates over K. B is read once, in place.
static void mm_few_rows(int M, int N, int K, const real* a, long a_row, long a_col,
                        const real* b, long b_row, long b_col, real* c, long ldc, int accumulate) {
    enum { COLS = 64 }; // columns per task
    int tasks = (N + COLS - 1) / COLS;
#pragma omp parallel for schedule(static) num_threads(mm_threads((double)M * N * K)) if (tasks > 1)
    for (int task = 0; task < tasks; task++) {
        int j0 = task * COLS, n = N - j0 < COLS ? N - j0 : COLS;
        for (int i = 0; i < M; i++) {
            const real* ai = a + i * a_row;
            real acc[COLS] = {0};
            if (a_col == 1 && b_row == 1) {
                for (int j = 0; j < n; j++) {
                    const real* bj = b + (j0 + j) * b_col;
                    real sum = 0;
#pragma omp simd reduction(+ : sum)
                    for (int p = 0; p < K; p++) sum += ai[p] * bj[p];
                    acc[j] = sum;
                }
            } else {
                for (int p = 0; p < K; p++) {
                    real aip = ai[p * a_col];
                    const real* bp = b + p * b_row + j0 * b_col;
                    for (int j = 0; j < n; j++) acc[j] += aip * bp[j * b_col];
                }
            }
            real* ci = c + i * ldc + j0;
            for (int j = 0; j < n; j++) ci[j] = accumulate ? ci[j] + acc[j] : acc[j];
        }
    }
}

// A product by blocks, as gemm sets it up for its threads.
typedef struct {
    const MMIsa* isa;
    int M, N, K;
    const real* a;
    long a_row, a_col;
    const real* b;
    long b_row, b_col;
    real* c;
    long ldc;
    int accumulate;
    int kc, nc;         // depth and column blocks (the last of each may be shorter)
    int small;          // read A's rows and B's rows in place where contiguous
    int row_splits;     // the threads split the rows into row_splits ranges
    int col_splits;     // and the columns into col_splits
} MMBlocks;

// Rows [i0, i1) and columns [j0, j1) of the product (i0 and j0 on micro-panel
// boundaries), on the calling thread, with its own buffers.
static void mm_blocks(const MMBlocks* g, int i0, int i1, int j0, int j1) {
    const MMIsa* isa = g->isa;
    const int MR = isa->mr, NR = isa->nr;
    const long a_row = g->a_row, a_col = g->a_col, b_row = g->b_row, b_col = g->b_col, ldc = g->ldc;
    const int a_in_place = g->small && a_col == 1, b_in_place = g->small && b_col == 1;
    real* packed_a = mm_packed_a;
    real* packed_b = mm_packed_b_buffer((size_t)g->kc * g->nc);
    real edge[MM_MR_MAX * MM_NR_MAX] __attribute__((aligned(64)));
    for (int jb = j0; jb < j1; jb += g->nc) {
        int nc = j1 - jb < g->nc ? j1 - jb : g->nc;
        for (int k0 = 0; k0 < g->K; k0 += g->kc) {
            int kc = g->K - k0 < g->kc ? g->K - k0 : g->kc, load = g->accumulate || k0 > 0;
            const real* bk = g->b + k0 * b_row;
            for (int jp = 0; jp * NR < nc; jp++) {
                int nr = nc - jp * NR < NR ? nc - jp * NR : NR;
                if (!(b_in_place && nr == NR))
                    isa->pack_b(packed_b + (long)jp * kc * NR, bk + (jb + jp * NR) * b_col, b_row, b_col, nr, kc);
            }
            for (int i = i0; i < i1; i += MR) {
                int mr = i1 - i < MR ? i1 - i : MR;
                const real* pa = g->a + i * a_row + k0 * a_col;
                long pa_row = a_row, pa_col = a_col;
                if (!(a_in_place && mr == MR)) {
                    isa->pack_a(packed_a, &pa_row, &pa_col, pa, a_row, a_col, mr, kc);
                    pa = packed_a;
                }
                if (i + MR < i1) {
                    int next_mr = i1 - i - MR < MR ? i1 - i - MR : MR;
                    mm_prefetch_a(g->a + (i + MR) * a_row + k0 * a_col, a_row, a_col, next_mr, kc);
                }
                for (int jp = 0; jp * NR < nc; jp++) {
                    int j = jb + jp * NR, nr = nc - jp * NR < NR ? nc - jp * NR : NR;
                    const real* pb = packed_b + (long)jp * kc * NR;
                    long pb_row = NR;
                    if (b_in_place && nr == NR) pb = bk + j, pb_row = b_row;
                    real* cij = g->c + i * ldc + j;
                    if (mr == MR && nr == NR) {
                        isa->kernel(kc, pa, pa_row, pa_col, pb, pb_row, cij, ldc, load);
                    } else {
                        // an edge: the whole block into `edge`, then its valid part
                        isa->kernel(kc, pa, pa_row, pa_col, pb, pb_row, edge, NR, 0);
                        for (int r = 0; r < mr; r++)
                            for (int q = 0; q < nr; q++)
                                cij[r * ldc + q] = load ? cij[r * ldc + q] + edge[r * NR + q] : edge[r * NR + q];
                    }
                }
            }
        }
    }
}

// Splits the product among `threads` threads into row ranges by column ranges,
// choosing the split that leaves the busiest thread least work: its
// multiply-adds (16 a cycle) and the reals it packs (about one a cycle), which
// are all of B that its columns read, and all of A that its rows read once per
// block of columns. Tall products (the forward pass, the input gradient) split
// their rows; wide ones (weight gradients of few outputs) their columns.
static void mm_split(MMBlocks* g, int threads) {
    const int MR = g->isa->mr, NR = g->isa->nr;
    double row_panels = (g->M + MR - 1) / MR, col_panels = (g->N + NR - 1) / NR, K = g->K, least = INFINITY;
    for (int rows = 1; rows <= threads; rows++) {
        if (threads % rows != 0) continue;
        double m = ceil(row_panels / rows) * MR, n = ceil(col_panels / (threads / rows)) * NR;
        double work = m * n * K / 16 + n * K + m * K * ceil(n / g->nc);
        if (work < least) least = work, g->row_splits = rows, g->col_splits = threads / rows;
    }
}

// C (M,N) = (accumulate ? C : 0) + A (M,K) B (K,N), where element (i,p) of A is
// a[i*a_row + p*a_col] and element (p,j) of B is b[p*b_row + j*b_col]:
// the strides express transposes, so one routine serves all three products.
static void gemm(int M, int N, int K, const real* a, long a_row, long a_col,
                 const real* b, long b_row, long b_col, real* c, long ldc, int accumulate) {
    if (M <= 0 || N <= 0) return;
    if (M < MM_FEW_ROWS || K <= 0) {
        mm_few_rows(M, N, K, a, a_row, a_col, b, b_row, b_col, c, ldc, accumulate);
        return;
    }
    const MMIsa* isa = mm_isa();
    MMBlocks g = {.isa = isa, .M = M, .N = N, .K = K, .a = a, .a_row = a_row, .a_col = a_col,
                  .b = b, .b_row = b_row, .b_col = b_col, .c = c, .ldc = ldc, .accumulate = accumulate};
    // Blocks of equal sizes, so that none is a thin remainder. The depth blocks
    // depend on K alone, which fixes the order of every sum.
    int kblocks = (K + isa->kc - 1) / isa->kc, nblocks = (N + isa->nc - 1) / isa->nc;
    g.kc = (K + kblocks - 1) / kblocks;
    g.nc = ((N + nblocks - 1) / nblocks + isa->nr - 1) / isa->nr * isa->nr;
    // A few micro-panels of A reuse B's panels too little for packing to pay,
    // and fit in L1 unpacked.
    g.small = M <= MM_SMALL_PANELS * isa->mr;
    int threads = mm_threads((double)M * N * K);
    if (threads == 1) {
        mm_blocks(&g, 0, M, 0, N);
        return;
    }
    mm_split(&g, threads);
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), rows = g.row_splits, cols = g.col_splits;
        int row_panels = (M + isa->mr - 1) / isa->mr, col_panels = (N + isa->nr - 1) / isa->nr;
        int i0 = row_panels * (t / cols) / rows * isa->mr, i1 = row_panels * (t / cols + 1) / rows * isa->mr;
        int j0 = col_panels * (t % cols) / cols * isa->nr, j1 = col_panels * (t % cols + 1) / cols * isa->nr;
        if (i1 > M) i1 = M;
        if (j1 > N) j1 = N;
        if (i0 < i1 && j0 < j1) mm_blocks(&g, i0, i1, j0, j1);
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
