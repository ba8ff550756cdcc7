// Benchmark of the elementwise layers of a training step, unfused against fused,
// and of fastmath.h's functions against libm's:
// milliseconds per call and the achieved bandwidth (bytes the layer must read
// and write, divided by the time), on 1 and 2 threads, at the training shapes:
// N = B*T rows of C channels (F = 4C hidden), vocabularies of 65 and 267,744.
// Run with `make bench-layers`.
//
// Each time is the fastest of several calls on the same buffers, so small
// shapes run from cache; the copy bandwidth printed first is the yardstick for
// the shapes that do not fit.
#include <omp.h>
#include "layers/layernorm.h"
#include "layers/residual.h"
#include "layers/gelu.h"
#include "layers/crossentropy.h"
#include "layers/adamw.h"

#define MIN_SECONDS 0.25 // time each variant for at least this long...
#define MIN_CALLS 5      // ...and at least this many calls

static real* filled(size_t n, float scale, float offset) {
    real* x = (real*)malloc_check(n * sizeof(real));
    unsigned s = 12345u;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = offset + scale * ((float)(s >> 8) / 16777216.0f * 2.0f - 1.0f);
    }
    return x;
}

// One benchmark's buffers and sizes; its variants are functions of it.
typedef struct {
    int N, C, V;
    long P;
    real *a, *b, *res, *out, *mean, *rstd, *w, *bias, *dout, *din, *dw, *db, *m, *v;
    int* targets;
} Bench;

typedef void (*Variant)(Bench*);

// Fastest milliseconds per call, after one untimed call.
static double time_ms(Variant f, Bench* b) {
    f(b);
    double best = 1e30, total = 0;
    for (int calls = 0; calls < MIN_CALLS || total < MIN_SECONDS; calls++) {
        double t0 = omp_get_wtime();
        f(b);
        double t = omp_get_wtime() - t0;
        total += t;
        if (t < best) best = t;
    }
    return best * 1e3;
}

static const int THREADS[] = {1, 2};

// Prints one row per thread count; a NULL unfused variant has no counterpart.
static void row(const char* op, const char* shape, Bench* b, Variant unfused, double unfused_bytes,
                Variant fused, double fused_bytes) {
    for (int t = 0; t < 2; t++) {
        omp_set_num_threads(THREADS[t]);
        double tf = time_ms(fused, b);
        if (unfused != NULL) {
            double tu = time_ms(unfused, b);
            printf("%-26s %-18s %d %10.3f %7.1f %10.3f %7.1f %7.2fx\n", op, shape, THREADS[t], tu,
                   unfused_bytes / tu * 1e-6, tf, fused_bytes / tf * 1e-6, tu / tf);
        } else {
            printf("%-26s %-18s %d %10s %7s %10.3f %7.1f\n", op, shape, THREADS[t], "-", "", tf,
                   fused_bytes / tf * 1e-6);
        }
    }
}

#define R ((double)sizeof(real))

// ---- residual + LayerNorm -----------------------------------------------------

static void resln_unfused(Bench* b) {
    long n = (long)b->N * b->C;
    residual_forward(b->res, b->a, b->b, n);
    layernorm_forward(b->out, b->mean, b->rstd, b->res, b->w, b->bias, b->N, b->C, LAYERNORM_EPS);
}
static void resln_fused(Bench* b) {
    residual_layernorm_forward(b->res, b->out, b->mean, b->rstd, b->a, b->b, b->w, b->bias, b->N, b->C, LAYERNORM_EPS);
}
static void ln_backward(Bench* b) {
    layernorm_backward(b->din, b->dw, b->db, b->dout, b->res, b->w, b->mean, b->rstd, b->N, b->C);
}

static void bench_layernorm(int N, int C) {
    long n = (long)N * C;
    Bench b = {.N = N, .C = C};
    b.a = filled(n, 1, 0); b.b = filled(n, 1, 0.5f); b.res = filled(n, 1, 0); b.out = filled(n, 1, 0);
    b.mean = filled(N, 1, 0); b.rstd = filled(N, 1, 1); b.w = filled(C, 1, 1); b.bias = filled(C, 1, 0);
    b.dout = filled(n, 1, 0); b.din = filled(n, 1, 0); b.dw = filled(C, 1, 0); b.db = filled(C, 1, 0);
    char shape[64];
    snprintf(shape, sizeof shape, "N=%d C=%d", N, C);
    // unfused: a, b -> res; res -> out. fused: a, b -> res, out
    row("residual+layernorm fwd", shape, &b, resln_unfused, 5 * n * R, resln_fused, 4 * n * R);
    // x, dout, dinp -> dinp (the parameter sums ride along)
    row("layernorm bwd (one pass)", shape, &b, NULL, 0, ln_backward, 4 * n * R);
    free(b.a); free(b.b); free(b.res); free(b.out); free(b.mean); free(b.rstd); free(b.w); free(b.bias);
    free(b.dout); free(b.din); free(b.dw); free(b.db);
}

// ---- bias + GELU ----------------------------------------------------------------

// The unfused forward pays for the bias with a pass over the matmul's output
// (matmul_forward writes the bias first, then accumulates onto it).
static void bias_gelu_fwd_unfused(Bench* b) {
    int N = b->N, C = b->C;
#pragma omp parallel for
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) b->a[(long)n * C + c] += b->bias[c];
    gelu_forward(b->out, b->a, (long)N * C);
}
static void bias_gelu_fwd_fused(Bench* b) { bias_gelu_forward(b->out, b->a, b->bias, b->N, b->C); }

// The unfused backward: zeroed gradient, gelu_backward, then the bias gradient
// summed over rows as matmul_backward does it (blocks of 64 columns per thread).
static void bias_gelu_bwd_unfused(Bench* b) {
    int N = b->N, C = b->C;
    memset(b->din, 0, (size_t)N * C * sizeof(real));
    gelu_backward(b->din, b->a, b->dout, (long)N * C);
    int blocks = (C + 63) / 64;
#pragma omp parallel for
    for (int blk = 0; blk < blocks; blk++) {
        int c0 = blk * 64, width = C - c0 < 64 ? C - c0 : 64;
        real sum[64] = {0};
        for (int n = 0; n < N; n++) {
            const real* r = b->din + (long)n * C + c0;
#pragma omp simd
            for (int c = 0; c < width; c++) sum[c] += r[c];
        }
        for (int c = 0; c < width; c++) b->db[c0 + c] += sum[c];
    }
}
static void bias_gelu_bwd_fused(Bench* b) { bias_gelu_backward(b->din, b->db, b->dout, b->a, b->bias, b->N, b->C); }

static void bench_bias_gelu(int N, int F) {
    long n = (long)N * F;
    Bench b = {.N = N, .C = F};
    b.a = filled(n, 3, 0); b.bias = filled(F, 0.1f, 0); b.out = filled(n, 1, 0);
    b.dout = filled(n, 1, 0); b.din = filled(n, 1, 0); b.db = filled(F, 1, 0);
    char shape[64];
    snprintf(shape, sizeof shape, "N=%d F=%d", N, F);
    // unfused: bias pass (read, write), gelu (read, write). fused: read, write
    row("bias+gelu fwd", shape, &b, bias_gelu_fwd_unfused, 4 * n * R, bias_gelu_fwd_fused, 2 * n * R);
    // unfused: memset (write), gelu_backward (3 reads, write), column sums (read).
    // fused: inp, dout -> dinp
    row("bias+gelu bwd", shape, &b, bias_gelu_bwd_unfused, 6 * n * R, bias_gelu_bwd_fused, 3 * n * R);
    free(b.a); free(b.bias); free(b.out); free(b.dout); free(b.din); free(b.db);
}

// ---- cross-entropy --------------------------------------------------------------

// Each call turns the logits into their gradient, which the next call takes as
// logits: the values change, the work does not.
static void ce_unfused(Bench* b) {
    crossentropy_forward(b->mean, b->rstd, b->a, b->targets, b->N, b->V);
    crossentropy_backward_inplace(b->a, b->rstd, b->targets, (real)1e-3, b->N, b->V);
}
static void ce_fused(Bench* b) {
    crossentropy_forward_backward(b->mean, b->a, b->targets, (real)1e-3, b->N, b->V);
}
static void ce_eval(Bench* b) { crossentropy_forward(b->mean, b->rstd, b->a, b->targets, b->N, b->V); }

static void bench_crossentropy(int N, int V) {
    long n = (long)N * V;
    Bench b = {.N = N, .V = V};
    b.a = filled(n, 4, 0); b.mean = filled(N, 1, 0); b.rstd = filled(N, 1, 0);
    b.targets = (int*)malloc_check(N * sizeof(int));
    for (int i = 0; i < N; i++) b.targets[i] = (int)((i * 7919L) % V);
    char shape[64];
    snprintf(shape, sizeof shape, "N=%d V=%d", N, V);
    // the logits are read twice and written once either way; fused, the second
    // read finds much of the row in cache
    row("crossentropy fwd+bwd", shape, &b, ce_unfused, 3 * n * R, ce_fused, 3 * n * R);
    row("crossentropy fwd (eval)", shape, &b, NULL, 0, ce_eval, n * R);
    free(b.a); free(b.mean); free(b.rstd); free(b.targets);
}

// ---- AdamW ------------------------------------------------------------------------

static void adamw_unfused(Bench* b) {
    clip_grads(b->dout, b->P, 2.0, 1.0);
    adamw_update(b->a, b->dout, b->m, b->v, b->P, (real)1e-4, (real)0.9, (real)0.99, (real)1e-8, (real)0.1, 10);
}
static void adamw_fused(Bench* b) {
    adamw_update_scaled(b->a, b->dout, b->m, b->v, b->P, (real)1e-4, (real)0.9, (real)0.99, (real)1e-8,
                        (real)0.1, 10, clip_scale(2.0, 1.0));
}
static void norm_only(Bench* b) { b->mean[0] = (real)grad_norm(b->dout, b->P); }

static void bench_adamw(long P) {
    Bench b = {.N = 1, .P = P};
    b.a = filled(P, 1, 0); b.dout = filled(P, 1, 0); b.m = filled(P, 0.1f, 0); b.v = filled(P, 0.01f, 0.01f);
    b.mean = filled(1, 1, 0);
    char shape[64];
    snprintf(shape, sizeof shape, "P=%.1fM", P / 1e6);
    // unfused: clip (read, write grads), update (4 reads, 3 writes). fused: 4 reads, 3 writes
    row("clip + adamw", shape, &b, adamw_unfused, 9 * P * R, adamw_fused, 7 * P * R);
    row("grad_norm", shape, &b, NULL, 0, norm_only, P * R);
    free(b.a); free(b.dout); free(b.m); free(b.v); free(b.mean);
}

// ---- fastmath.h against libm -------------------------------------------------

#define ELEMENTWISE(name, expr)                                    \
    static void name(Bench* b) {                                   \
        _Pragma("omp parallel for simd")                           \
        for (long i = 0; i < b->P; i++) b->out[i] = expr(b->a[i]); \
    }
ELEMENTWISE(exp_libm, exp)
ELEMENTWISE(exp_fastmath, exp_fast)
ELEMENTWISE(tanh_libm, tanh)
ELEMENTWISE(tanh_fastmath, tanh_fast)
ELEMENTWISE(sigmoid_libm, sigmoidr)
ELEMENTWISE(sigmoid_fastmath, sigmoid_fast)
ELEMENTWISE(sqrt_libm, sqrt)
ELEMENTWISE(sqrt_fastmath, sqrt_fast)

static void bench_fastmath(long n) {
    Bench b = {.P = n};
    b.out = filled(n, 1, 0);
    char shape[64];
    snprintf(shape, sizeof shape, "n=%ldM", n >> 20);
    // each reads and writes n floats
    b.a = filled(n, 10, -10);
    row("exp (softmax: x <= 0)", shape, &b, exp_libm, 2 * n * R, exp_fastmath, 2 * n * R);
    free(b.a);
    b.a = filled(n, 5, 0);
    row("tanh", shape, &b, tanh_libm, 2 * n * R, tanh_fastmath, 2 * n * R);
    free(b.a);
    b.a = filled(n, 8, 0);
    row("sigmoid", shape, &b, sigmoid_libm, 2 * n * R, sigmoid_fastmath, 2 * n * R);
    free(b.a);
    b.a = filled(n, 1, 1);
    row("sqrt", shape, &b, sqrt_libm, 2 * n * R, sqrt_fastmath, 2 * n * R);
    free(b.a); free(b.out);
}

// ---- the yardstick ------------------------------------------------------------

static void copy(Bench* b) { memcpy(b->out, b->a, b->P * sizeof(real)); }
static void copy_parallel(Bench* b) {
#pragma omp parallel for
    for (long i = 0; i < b->P; i++) b->out[i] = b->a[i];
}

int main(void) {
    long n = 64L << 20; // 256 MB a buffer, far beyond the caches
    Bench cb = {.P = n};
    cb.a = filled(n, 1, 0); cb.out = filled(n, 1, 0);
    omp_set_num_threads(1);
    double t1 = time_ms(copy, &cb);
    omp_set_num_threads(2);
    double t2 = time_ms(copy_parallel, &cb);
    printf("memory yardstick: copying 256 MB reads and writes %.1f GB/s on 1 thread, %.1f GB/s on 2\n\n",
           2 * n * R / t1 * 1e-6, 2 * n * R / t2 * 1e-6);
    free(cb.a); free(cb.out);

    printf("%-26s %-18s %s %10s %7s %10s %7s %8s\n", "layer", "shape", "T", "unfused ms", "GB/s",
           "fused ms", "GB/s", "speedup");
    int Ns[] = {768, 4096}, Cs[] = {128, 384};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) bench_layernorm(Ns[i], Cs[j]);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) bench_bias_gelu(Ns[i], 4 * Cs[j]);
    bench_crossentropy(768, 65);
    bench_crossentropy(4096, 65);
    bench_crossentropy(1024, 267744);
    // parameters of 4-layer models: C=128 and C=384 (V=65), C=128 with V=267,744
    long Ps[] = {12L * 4 * 128 * 128 + 65 * 128, 12L * 4 * 384 * 384 + 65 * 384, 12L * 4 * 128 * 128 + 267744L * 128};
    for (int i = 0; i < 3; i++) bench_adamw(Ps[i]);

    printf("\n%-26s %-18s %s %10s %7s %10s %7s %8s\n", "function", "elements", "T", "libm ms", "GB/s",
           "fast ms", "GB/s", "speedup");
    bench_fastmath(4L << 20);
    return 0;
}
