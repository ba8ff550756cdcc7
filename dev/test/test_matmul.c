// Tests of layers/matmul.h: gemm, matmul_forward and matmul_backward, on every
// kernel family this CPU runs (generic, avx2, avx512).
//  - gemm against a float64 reference on odd sizes (1, primes, not multiples of
//    any block; a few rows; K = 0; several depth and column blocks), for A and B
//    each stored plain, transposed or with no unit stride, padded, accumulate
//    on and off; nothing outside C's block is written
//  - matmul_forward with and without bias, matmul_backward's three products
//  - products run from inside a parallel region, one per thread at the same
//    time, equal the same products run alone
//  - the three training products give bitwise the same results on 1 and 2 threads
// Built twice: float32, and float64 (REAL_DOUBLE: the portable kernel only).
#include <float.h>
#include <stdint.h>
#include "layers/matmul.h"
#include "dev/test/testing.h"

#ifdef REAL_DOUBLE
#define EPS DBL_EPSILON
#else
#define EPS FLT_EPSILON
#endif

static const char* const ISAS[] = {"generic", "avx2", "avx512"};

static uint64_t rng = 88172645463325252ull;
static double randsym(void) { // uniform in [-1, 1)
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (rng >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

static double* random_doubles(long n) {
    double* x = (double*)malloc_check(sizeof(double) * n);
    for (long i = 0; i < n; i++) x[i] = randsym();
    return x;
}

// A logical (rows, cols) matrix stored with element (r, c) at data[r*row + c*col].
typedef struct {
    real* data;
    long row, col;
} Strided;

// Layouts of a stored operand: plain (rows contiguous), transposed (columns
// contiguous), and neither stride 1. Each is padded past its rows or columns.
enum { PLAIN, TRANSPOSED, NO_UNIT_STRIDE, LAYOUTS };
static const char* const LAYOUT_NAMES[] = {"plain", "transposed", "no-unit-stride"};

// Stores the float64 matrix x (rows, cols) in `layout`.
static Strided store(const double* x, int rows, int cols, int layout) {
    Strided s;
    long size;
    if (layout == PLAIN) s.row = cols + 3, s.col = 1, size = rows * s.row;
    else if (layout == TRANSPOSED) s.row = 1, s.col = rows + 2, size = cols * s.col;
    else s.row = 2, s.col = 2L * rows + 1, size = cols * s.col;
    s.data = (real*)calloc_check(size, sizeof(real));
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) s.data[r * s.row + c * s.col] = (real)x[r * cols + c];
    return s;
}

// The exact product of the values as stored: ab (M,N) = A B, and abs_ab = |A| |B|,
// which bounds the rounding error of any order of summation.
static void reference(const double* A, const double* B, int M, int N, int K, double* ab, double* abs_ab) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0, sa = 0;
            for (int p = 0; p < K; p++) {
                double t = (double)(real)A[i * K + p] * (double)(real)B[p * N + j];
                s += t, sa += fabs(t);
            }
            ab[i * N + j] = s, abs_ab[i * N + j] = sa;
        }
}

// Largest error of c against c0 (if accumulate) + ab, in units of its bound
// (K + 2) eps (|c0| + |A||B|): at most 1 for a correct product.
static double error_in_bounds(const real* c, long ldc, const double* c0, const double* ab, const double* abs_ab,
                              int M, int N, int K, int accumulate) {
    double worst = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double start = accumulate ? (double)(real)c0[i * N + j] : 0;
            double bound = (K + 2) * EPS * (fabs(start) + abs_ab[i * N + j]) + DBL_MIN;
            double e = fabs((double)c[i * ldc + j] - (start + ab[i * N + j])) / bound;
            if (!(e <= worst)) worst = e; // also catches NaN
        }
    return worst;
}

#define SENTINEL ((real)12345.5)

// C (M, N) with row stride N + 4, holding c0; the padding holds SENTINEL.
static real* c_with_padding(const double* c0, int M, int N) {
    long ldc = N + 4;
    real* c = (real*)malloc_check(sizeof(real) * M * ldc);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < ldc; j++) c[i * ldc + j] = j < N ? (real)c0[i * N + j] : SENTINEL;
    return c;
}

static int padding_intact(const real* c, int M, int N) {
    for (int i = 0; i < M; i++)
        for (int j = N; j < N + 4; j++)
            if (c[i * (N + 4) + j] != SENTINEL) return 0;
    return 1;
}

// One shape on the current kernel family: every layout of A and B, accumulate
// on and off; one check naming the worst case.
static void test_gemm_shape(int M, int N, int K) {
    double *A = random_doubles((long)M * K), *B = random_doubles((long)K * N), *c0 = random_doubles((long)M * N);
    double* ab = (double*)malloc_check(sizeof(double) * M * N);
    double* abs_ab = (double*)malloc_check(sizeof(double) * M * N);
    reference(A, B, M, N, K, ab, abs_ab);
    double worst = -1;
    const char* worst_case = "";
    char cases[LAYOUTS * LAYOUTS * 2][64];
    int intact = 1;
    for (int la = 0; la < LAYOUTS; la++)
        for (int lb = 0; lb < LAYOUTS; lb++) {
            Strided sa = store(A, M, K, la), sb = store(B, K, N, lb);
            for (int accumulate = 0; accumulate <= 1; accumulate++) {
                real* c = c_with_padding(c0, M, N);
                gemm(M, N, K, sa.data, sa.row, sa.col, sb.data, sb.row, sb.col, c, N + 4, accumulate);
                double e = error_in_bounds(c, N + 4, c0, ab, abs_ab, M, N, K, accumulate);
                intact &= padding_intact(c, M, N);
                char* name = cases[(la * LAYOUTS + lb) * 2 + accumulate];
                snprintf(name, 64, "A %s, B %s, %s", LAYOUT_NAMES[la], LAYOUT_NAMES[lb], accumulate ? "accumulate" : "set");
                if (!(e <= worst)) worst = e, worst_case = name;
                free(c);
            }
            free(sa.data), free(sb.data);
        }
    check(worst <= 1 && intact, "gemm %s %dx%dx%d: worst error %.2f of its bound (%s)%s", gemm_isa(), M, N, K, worst,
          worst_case, intact ? "" : "; wrote outside C");
    free(A), free(B), free(c0), free(ab), free(abs_ab);
}

static void test_gemm_shapes(void) {
    static const int shapes[][3] = {
        {1, 1, 1},   {1, 37, 19},   {3, 70, 5},   {2, 5, 0},     {40, 9, 0},   // a few rows; K = 0
        {4, 3, 7},   {5, 33, 1},    {13, 17, 2},  {8, 32, 64},   {64, 64, 64}, // small: operands in place
        {9, 1031, 3}, {31, 33, 257},                                           // small, several blocks
        {67, 97, 131}, {97, 600, 300}, {200, 40, 520},                         // packed, several blocks
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        test_gemm_shape(shapes[s][0], shapes[s][1], shapes[s][2]);
}

static real* to_real(const double* x, long n) {
    real* r = (real*)malloc_check(sizeof(real) * n);
    for (long i = 0; i < n; i++) r[i] = (real)x[i];
    return r;
}

// Largest error of x against ref in units of the bound (K + 2) eps scale.
static double error_in_bound(const real* x, const double* ref, const double* scale, long n, int K) {
    double worst = 0;
    for (long i = 0; i < n; i++) {
        double e = fabs((double)x[i] - ref[i]) / ((K + 2) * EPS * scale[i] + DBL_MIN);
        if (!(e <= worst)) worst = e;
    }
    return worst;
}

// matmul_forward against out = inp W^T + bias, with and without bias.
static void test_matmul_forward(int N, int C, int OC) {
    double *inp = random_doubles((long)N * C), *w = random_doubles((long)OC * C), *bias = random_doubles(OC);
    real *inp_r = to_real(inp, (long)N * C), *w_r = to_real(w, (long)OC * C), *bias_r = to_real(bias, OC);
    real* out = (real*)malloc_check(sizeof(real) * N * OC);
    double* ref = (double*)malloc_check(sizeof(double) * N * OC);
    double* scale = (double*)malloc_check(sizeof(double) * N * OC);
    for (int with_bias = 0; with_bias <= 1; with_bias++) {
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) {
                double s = with_bias ? (double)bias_r[o] : 0, sa = fabs(s);
                for (int c = 0; c < C; c++) {
                    double t = (double)inp_r[n * C + c] * (double)w_r[o * C + c];
                    s += t, sa += fabs(t);
                }
                ref[n * OC + o] = s, scale[n * OC + o] = sa;
            }
        for (long i = 0; i < (long)N * OC; i++) out[i] = (real)1e30; // must all be overwritten
        matmul_forward(out, inp_r, w_r, with_bias ? bias_r : NULL, N, C, OC);
        double e = error_in_bound(out, ref, scale, (long)N * OC, C);
        check(e <= 1, "matmul_forward %s N=%d C=%d OC=%d %s: error %.2f of its bound", gemm_isa(), N, C, OC,
              with_bias ? "with bias" : "without bias", e);
    }
    free(inp), free(w), free(bias), free(inp_r), free(w_r), free(bias_r), free(out), free(ref), free(scale);
}

// matmul_backward's three products, each added to what the gradient held; also
// with dinp and dbias NULL.
static void test_matmul_backward(int N, int C, int OC) {
    double *inp = random_doubles((long)N * C), *w = random_doubles((long)OC * C), *dout = random_doubles((long)N * OC);
    double *dinp0 = random_doubles((long)N * C), *dw0 = random_doubles((long)OC * C), *db0 = random_doubles(OC);
    real *inp_r = to_real(inp, (long)N * C), *w_r = to_real(w, (long)OC * C), *dout_r = to_real(dout, (long)N * OC);
    double *ref_dinp = (double*)malloc_check(sizeof(double) * N * C), *scale_dinp = (double*)malloc_check(sizeof(double) * N * C);
    double *ref_dw = (double*)malloc_check(sizeof(double) * OC * C), *scale_dw = (double*)malloc_check(sizeof(double) * OC * C);
    double *ref_db = (double*)malloc_check(sizeof(double) * OC), *scale_db = (double*)malloc_check(sizeof(double) * OC);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            double s = (double)(real)dinp0[n * C + c], sa = fabs(s);
            for (int o = 0; o < OC; o++) {
                double t = (double)dout_r[n * OC + o] * (double)w_r[o * C + c];
                s += t, sa += fabs(t);
            }
            ref_dinp[n * C + c] = s, scale_dinp[n * C + c] = sa;
        }
    for (int o = 0; o < OC; o++) {
        for (int c = 0; c < C; c++) {
            double s = (double)(real)dw0[o * C + c], sa = fabs(s);
            for (int n = 0; n < N; n++) {
                double t = (double)dout_r[n * OC + o] * (double)inp_r[n * C + c];
                s += t, sa += fabs(t);
            }
            ref_dw[o * C + c] = s, scale_dw[o * C + c] = sa;
        }
        double s = (double)(real)db0[o], sa = fabs(s);
        for (int n = 0; n < N; n++) s += dout_r[n * OC + o], sa += fabs((double)dout_r[n * OC + o]);
        ref_db[o] = s, scale_db[o] = sa;
    }
    for (int all = 1; all >= 0; all--) {
        real *dinp = to_real(dinp0, (long)N * C), *dw = to_real(dw0, (long)OC * C), *db = to_real(db0, OC);
        matmul_backward(all ? dinp : NULL, dw, all ? db : NULL, dout_r, inp_r, w_r, N, C, OC);
        double e_dw = error_in_bound(dw, ref_dw, scale_dw, (long)OC * C, N);
        if (all) {
            double e_dinp = error_in_bound(dinp, ref_dinp, scale_dinp, (long)N * C, OC);
            double e_db = error_in_bound(db, ref_db, scale_db, OC, N);
            check(e_dinp <= 1 && e_dw <= 1 && e_db <= 1,
                  "matmul_backward %s N=%d C=%d OC=%d: errors of dinp %.2f, dweight %.2f, dbias %.2f of their bounds",
                  gemm_isa(), N, C, OC, e_dinp, e_dw, e_db);
        } else {
            check(e_dw <= 1, "matmul_backward %s N=%d C=%d OC=%d, no dinp or dbias: dweight error %.2f of its bound",
                  gemm_isa(), N, C, OC, e_dw);
        }
        free(dinp), free(dw), free(db);
    }
    free(inp), free(w), free(dout), free(dinp0), free(dw0), free(db0), free(inp_r), free(w_r), free(dout_r);
    free(ref_dinp), free(scale_dinp), free(ref_dw), free(scale_dw), free(ref_db), free(scale_db);
}

// c = (accumulate ? c : 0) + a b for shape {M, N, K, A stored transposed}, B and C plain.
static void shaped_product(const int shape[4], const real* a, const real* b, real* c, int accumulate) {
    int M = shape[0], N = shape[1], K = shape[2], transposed = shape[3];
    gemm(M, N, K, a, transposed ? 1 : K, transposed ? M : 1, b, N, 1, c, N, accumulate);
}

// The attention kernels call gemm from inside their parallel regions: there each
// thread runs its own products at the same time, which must equal, bitwise,
// the same products run alone.
static void test_inside_parallel_region(void) {
    enum { THREADS = 2, PRODUCTS = 5 };
    // M, N, K, and whether A is stored transposed: small products read A in
    // place, the others pack it, by rows or by steps
    static const int shapes[PRODUCTS][4] = {{64, 64, 64, 0}, {37, 64, 61, 1}, {200, 150, 300, 0},
                                            {130, 70, 6, 0}, {150, 96, 200, 1}};
    real *a[THREADS][PRODUCTS], *b[THREADS][PRODUCTS], *inside[THREADS][PRODUCTS], *alone[THREADS][PRODUCTS];
    for (int t = 0; t < THREADS; t++)
        for (int s = 0; s < PRODUCTS; s++) {
            int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
            double *x = random_doubles((long)M * K), *y = random_doubles((long)K * N);
            a[t][s] = to_real(x, (long)M * K), b[t][s] = to_real(y, (long)K * N);
            inside[t][s] = (real*)calloc_check((long)M * N, sizeof(real));
            alone[t][s] = (real*)calloc_check((long)M * N, sizeof(real));
            free(x), free(y);
        }
    for (int t = 0; t < THREADS; t++)
        for (int s = 0; s < PRODUCTS; s++) shaped_product(shapes[s], a[t][s], b[t][s], alone[t][s], 0);
    int team = 0;
#pragma omp parallel num_threads(THREADS)
    {
        int t = omp_get_thread_num();
#pragma omp atomic
        team++;
        // several rounds, so that the threads' products overlap in time
        for (int round = 0; round < 8; round++)
            for (int s = 0; s < PRODUCTS; s++) {
                shaped_product(shapes[s], a[t][s], b[t][s], inside[t][s], round > 0);
                shaped_product(shapes[s], a[t][s], b[t][s], inside[t][s], 0);
            }
    }
    int same = 1;
    for (int t = 0; t < THREADS; t++)
        for (int s = 0; s < PRODUCTS; s++) {
            same &= memcmp(inside[t][s], alone[t][s], sizeof(real) * shapes[s][0] * shapes[s][1]) == 0;
            free(a[t][s]), free(b[t][s]), free(inside[t][s]), free(alone[t][s]);
        }
    check(same && team == THREADS, "gemm %s inside a parallel region of %d threads: results equal those run alone",
          gemm_isa(), team);
}

// The three products of a training step (weight gradient over several depth
// blocks, forward over two column blocks) on 1 and on 2 threads.
static void test_thread_count_independence(void) {
    enum { N = 600, C = 160, OC = 640 };
    double *x = random_doubles((long)N * C), *y = random_doubles((long)OC * C), *z = random_doubles((long)N * OC);
    real *inp = to_real(x, (long)N * C), *w = to_real(y, (long)OC * C), *dout = to_real(z, (long)N * OC);
    real *out[2], *dinp[2], *dw[2];
    for (int threads = 1; threads <= 2; threads++) {
        int k = threads - 1;
        out[k] = (real*)malloc_check(sizeof(real) * N * OC);
        dinp[k] = (real*)calloc_check((long)N * C, sizeof(real));
        dw[k] = (real*)calloc_check((long)OC * C, sizeof(real));
        omp_set_num_threads(threads);
        matmul_forward(out[k], inp, w, NULL, N, C, OC);
        matmul_backward(dinp[k], dw[k], NULL, dout, inp, w, N, C, OC);
    }
    omp_set_num_threads(2);
    int same_out = memcmp(out[0], out[1], sizeof(real) * N * OC) == 0;
    int same_dinp = memcmp(dinp[0], dinp[1], sizeof(real) * N * C) == 0;
    int same_dw = memcmp(dw[0], dw[1], sizeof(real) * OC * C) == 0;
    check(same_out && same_dinp && same_dw,
          "matmul %s N=%d C=%d OC=%d on 1 and 2 threads: forward %s, input gradient %s, weight gradient %s", gemm_isa(),
          N, C, OC, same_out ? "equal" : "DIFFERENT", same_dinp ? "equal" : "DIFFERENT", same_dw ? "equal" : "DIFFERENT");
    for (int k = 0; k < 2; k++) free(out[k]), free(dinp[k]), free(dw[k]);
    free(x), free(y), free(z), free(inp), free(w), free(dout);
}

int main(void) {
    printf("kernel family chosen for this CPU: %s\n", gemm_isa());
    omp_set_num_threads(2);
    for (size_t k = 0; k < sizeof ISAS / sizeof ISAS[0]; k++) {
        if (!gemm_use_isa(ISAS[k])) {
            printf("(%s: not in this build or not on this CPU; skipped)\n", ISAS[k]);
            continue;
        }
        test_gemm_shapes();
        test_matmul_forward(45, 70, 33);
        test_matmul_forward(130, 96, 288);
        test_matmul_backward(45, 70, 33);
        test_matmul_backward(300, 96, 384);
        test_inside_parallel_region();
        test_thread_count_independence();
    }
    return testing_exit_code();
}
