// GFLOP/s of layers/matmul.h's gemm and of OpenBLAS's cblas_sgemm, both on 2
// threads, side by side on the trainers' shapes: for C in {128, 384, 512} and
// B*T in {768, 2048, 4096}, the forward products (B*T, C) x (C, 3C) (qkv),
// (B*T, C) x (C, 4C) (fc) and (B*T, 4C) x (4C, C) (fc proj), each with the two
// products of its backward pass, strided exactly as matmul_backward calls gemm;
// then a square 2048 product. Run with `make bench-matmul`.
// The two implementations alternate (a machine shared with other work is noisy)
// and each reports the median of its runs. Idle threads keep spinning for a
// while after a call, taking a core from whatever runs next: OpenBLAS's for
// about 0.1 s (its THREAD_TIMEOUT), OpenMP's for a few ms (GOMP_SPINCOUNT). So
// each run waits for the other implementation's threads to go to sleep, then
// starts with one untimed call. The whole takes about a minute and a half.
#include <stdio.h>
#include <unistd.h>
#include "layers/matmul.h"

// From OpenBLAS's cblas.h, declared here so that another cblas.h on the include
// path (Debian's reference BLAS) cannot hide them.
enum { CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112 };
void cblas_sgemm(int order, int transa, int transb, int M, int N, int K, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc);
void openblas_set_num_threads(int threads);
char* openblas_get_corename(void);

#define THREADS 2
#define RUNS 5            // timed runs of each implementation per shape
#define RUN_SECONDS 0.02  // each run repeats the product for about this long
#define OPENBLAS_SPIN_US 120000 // how long OpenBLAS's idle threads spin, and OpenMP's
#define OPENMP_SPIN_US 10000
#define TARGET_MEAN 0.90  // geometric mean of ours / OpenBLAS over the training shapes
#define TARGET_MIN 0.75   // the lowest ratio allowed on any one of them

typedef struct {
    const char* name;
    int M, N, K;
    long a_row, a_col, b_row, b_col;
    int accumulate;
} Product;

static void run_ours(const Product* p, const float* a, const float* b, float* c) {
    gemm(p->M, p->N, p->K, a, p->a_row, p->a_col, b, p->b_row, p->b_col, c, p->N, p->accumulate);
}

// Our strides as BLAS's transposes: a unit column stride is a plain row-major
// matrix, a unit row stride a transposed one.
static void run_openblas(const Product* p, const float* a, const float* b, float* c) {
    int ta = p->a_col == 1 ? CblasNoTrans : CblasTrans, tb = p->b_col == 1 ? CblasNoTrans : CblasTrans;
    int lda = (int)(p->a_col == 1 ? p->a_row : p->a_col), ldb = (int)(p->b_col == 1 ? p->b_row : p->b_col);
    cblas_sgemm(CblasRowMajor, ta, tb, p->M, p->N, p->K, 1.0f, a, lda, b, ldb, p->accumulate ? 1.0f : 0.0f, c, p->N);
}

typedef void (*Runner)(const Product* p, const float* a, const float* b, float* c);

// Seconds per product over `reps` products, after one untimed.
static double time_run(Runner run, const Product* p, const float* a, const float* b, float* c, int reps) {
    run(p, a, b, c);
    double t0 = omp_get_wtime();
    for (int r = 0; r < reps; r++) run(p, a, b, c);
    return (omp_get_wtime() - t0) / reps;
}

static int compare_doubles(const void* x, const void* y) {
    double a = *(const double*)x, b = *(const double*)y;
    return (a > b) - (a < b);
}

static double median(double* x, int n) {
    qsort(x, n, sizeof(double), compare_doubles);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

static float* random_floats(long n) {
    float* x = (float*)malloc_check(sizeof(float) * n);
    unsigned s = 12345u;
    for (long i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(s >> 8) / 16777216.0f * 2.0f - 1.0f;
    }
    return x;
}

// Largest difference of ours from OpenBLAS relative to the largest entry:
// both must compute the same product.
static double difference(const Product* p, const float* a, const float* b, float* c, float* c_ref) {
    long n = (long)p->M * p->N;
    memset(c, 0, sizeof(float) * n), memset(c_ref, 0, sizeof(float) * n);
    run_ours(p, a, b, c);
    run_openblas(p, a, b, c_ref);
    double diff = 0, scale = 1e-30;
    for (long i = 0; i < n; i++) {
        if (fabs(c[i] - c_ref[i]) > diff || c[i] != c[i]) diff = c[i] != c[i] ? INFINITY : fabs(c[i] - c_ref[i]);
        if (fabs(c_ref[i]) > scale) scale = fabs(c_ref[i]);
    }
    return diff / scale;
}

// GFLOP/s of ours and of OpenBLAS on one product; prints its row, returns ours / OpenBLAS.
static double bench(const Product* p, const char* label) {
    long a_size = (long)p->M * p->K, b_size = (long)p->K * p->N, c_size = (long)p->M * p->N;
    float *a = random_floats(a_size), *b = random_floats(b_size);
    float *c = (float*)malloc_check(sizeof(float) * c_size), *c_ref = (float*)malloc_check(sizeof(float) * c_size);
    double diff = difference(p, a, b, c, c_ref);
    if (!(diff < 1e-4)) fail("%s %s: ours and OpenBLAS differ by %.1e of the largest entry", label, p->name, diff);
    double flops = 2.0 * p->M * p->N * p->K;
    int reps = (int)(RUN_SECONDS / time_run(run_ours, p, a, b, c, 1)) + 1;
    double ours[RUNS], theirs[RUNS];
    for (int r = 0; r < RUNS; r++) {
        usleep(OPENBLAS_SPIN_US);
        ours[r] = flops / time_run(run_ours, p, a, b, c, reps) * 1e-9;
        usleep(OPENMP_SPIN_US);
        theirs[r] = flops / time_run(run_openblas, p, a, b, c_ref, reps) * 1e-9;
    }
    double g_ours = median(ours, RUNS), g_theirs = median(theirs, RUNS);
    printf("%-14s %-20s %5d %5d %5d %8.1f %9.1f %6.2f\n", label, p->name, p->M, p->N, p->K, g_ours, g_theirs,
           g_ours / g_theirs);
    fflush(stdout);
    free(a), free(b), free(c), free(c_ref);
    return g_ours / g_theirs;
}

int main(void) {
    omp_set_num_threads(THREADS);
    openblas_set_num_threads(THREADS);
    printf("gemm (kernels: %s) against OpenBLAS (kernels: %s), %d threads; GFLOP/s, median of %d alternating runs\n\n",
           gemm_isa(), openblas_get_corename(), THREADS, RUNS);
    printf("%-14s %-20s %5s %5s %5s %8s %9s %6s\n", "shape", "product", "M", "N", "K", "ours", "OpenBLAS", "ratio");
    static const int Cs[] = {128, 384, 512}, BTs[] = {768, 2048, 4096};
    double log_sum = 0, worst = INFINITY;
    char worst_name[96] = "";
    int count = 0;
    for (int ci = 0; ci < 3; ci++)
        for (int ti = 0; ti < 3; ti++) {
            int C = Cs[ci], BT = BTs[ti];
            // the fully connected layers: (name, inputs, outputs)
            struct { const char* name; int in, out; } layers[] = {{"qkv", C, 3 * C}, {"fc", C, 4 * C}, {"fc proj", 4 * C, C}};
            char label[32];
            snprintf(label, sizeof label, "C=%d BT=%d", C, BT);
            for (int l = 0; l < 3; l++) {
                int in = layers[l].in, out = layers[l].out;
                Product products[3] = {
                    // as in matmul_forward and matmul_backward (inp (BT,in), weight (out,in), dout (BT,out))
                    {"forward", BT, out, in, in, 1, 1, in, 0},
                    {"input grad", BT, in, out, out, 1, in, 1, 1},
                    {"weight grad", out, in, BT, 1, out, in, 1, 1},
                };
                for (int k = 0; k < 3; k++) {
                    char name[32];
                    snprintf(name, sizeof name, "%s %s", layers[l].name, products[k].name);
                    products[k].name = name;
                    double ratio = bench(&products[k], l == 0 && k == 0 ? label : "");
                    log_sum += log(ratio), count++;
                    if (ratio < worst) worst = ratio, snprintf(worst_name, sizeof worst_name, "%s, %s", label, name);
                }
            }
        }
    Product square = {"square", 2048, 2048, 2048, 2048, 1, 2048, 1, 0};
    bench(&square, "2048");
    double mean = exp(log_sum / count);
    printf("\nover the %d training shapes, ours / OpenBLAS:\n", count);
    printf("  geometric mean %.2f (target >= %.2f)%s\n", mean, TARGET_MEAN, mean >= TARGET_MEAN ? "" : "  MISSED");
    printf("  minimum        %.2f (target >= %.2f), %s%s\n", worst, TARGET_MIN, worst_name,
           worst >= TARGET_MIN ? "" : "  MISSED");
    return 0;
}
