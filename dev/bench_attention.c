// Benchmark of the attention kernels: forward+backward time, FLOP rate against
// the machine's measured FMA peak (utils/peak.h), and peak extra memory, at
// B=1, H=8, D=64 and T up to 65,536, for flow-causal, flow-normal,
// softmax-causal and linear-causal; then the figures issue 14 holds the
// kernels to, each marked ok or MISSED. Run with `make bench`.
//
// "Extra memory" is the peak resident memory during forward+backward beyond
// the inputs, outputs and their gradients (which are allocated and touched
// first): the saved cache plus every scratch buffer the kernels take. Each
// point runs in a child process, so that peaks and scratch do not carry over,
// and keeps the best of a few runs (the first one pays for first touches).
// FLOPs are those of the matrix products as executed (whole blocks, their
// masked parts included): causal_dot_product_flops, full_dot_product_flops,
// softmax_causal_flops. Scans, exponentials and sigmoids are not counted.
#include <sys/wait.h>
#include <unistd.h>
#include <omp.h>
#include "layers/attention.h"
#include "utils/peak.h"

#define B 1
#define H 8
#define D 64
#define SOFTMAX_LIMIT_S 30.0 // skip a softmax point whose quadratic estimate is longer

static const int Ts[] = {256, 1024, 4096, 16384, 65536};
#define NUM_T ((int)(sizeof Ts / sizeof Ts[0]))

typedef struct { const char* kind; int causal; const char* name; } Kernel;
static const Kernel kernels[] = {
    {"flow", 1, "flow-causal"}, {"flow", 0, "flow-normal"}, {"softmax", 1, "softmax-causal"}, {"linear", 1, "linear-causal"}};
enum { FLOW_CAUSAL, FLOW_NORMAL, SOFTMAX_CAUSAL, LINEAR_CAUSAL, NUM_KERNELS };

typedef struct { double seconds, extra_bytes; } Measure;

static double mib(double bytes) { return bytes / (1024.0 * 1024.0); }

// Resident memory in bytes from /proc/self/status ("VmRSS" or "VmHWM").
static double proc_status_bytes(const char* key) {
    FILE* f = fopen("/proc/self/status", "r");
    if (f == NULL) return -1;
    char line[256];
    double kb = -1;
    size_t len = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, len) == 0 && line[len] == ':') kb = atof(line + len + 1);
    }
    fclose(f);
    return kb * 1024.0;
}

// Resets the peak (VmHWM) to the current resident size.
static int reset_peak(void) {
    FILE* f = fopen("/proc/self/clear_refs", "w");
    if (f == NULL) return 0;
    int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok;
}

static float* filled(size_t n, float scale) {
    float* x = (float*)malloc_check(n * sizeof(float));
    unsigned s = 12345u;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = scale * ((float)(s >> 8) / 16777216.0f * 2.0f - 1.0f);
    }
    return x;
}

static float* zeros(size_t n) {
    float* x = (float*)malloc_check(n * sizeof(float));
    memset(x, 0, n * sizeof(float)); // touched, so it counts in the baseline
    return x;
}

// Forward+backward `reps` times; the fastest time and the peak extra memory.
static Measure measure(const Kernel* kernel, int T, int reps) {
    Attention a = attention_make(attention_kind(kernel->kind), kernel->causal, B, T, H, D);
    size_t n = (size_t)B * T * H * D;
    float *q = filled(n, 1.0f), *k = filled(n, 1.0f), *v = filled(n, 1.0f), *dout = filled(n, 1.0f);
    float *out = zeros(n), *dq = zeros(n), *dk = zeros(n), *dv = zeros(n);
    Measure m = {1e30, -1};
    int have_peak = reset_peak();
    double base = proc_status_bytes("VmRSS");
    float* cache = (float*)malloc_check(attention_cache_size(&a) * sizeof(float));
    for (int r = 0; r < reps; r++) {
        double t0 = omp_get_wtime();
        attention_forward(&a, out, cache, q, k, v);
        attention_backward(&a, dq, dk, dv, dout, out, cache, q, k, v);
        double t = omp_get_wtime() - t0;
        if (t < m.seconds) m.seconds = t;
    }
    if (have_peak) m.extra_bytes = proc_status_bytes("VmHWM") - base;
    return m;
}

// Runs job(data) in a child process and copies `size` bytes of data back
// through a pipe: peaks and scratch do not carry over from one point to the
// next, and the parent never starts OpenMP's threads (a child forked after
// that could not use them).
static void in_child(void (*job)(void* data), void* data, size_t size) {
    int fd[2];
    if (pipe(fd) != 0) fail("pipe: %s", strerror(errno));
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        job(data);
        if (write(fd[1], data, size) != (ssize_t)size) _exit(1);
        _exit(0);
    }
    close(fd[1]);
    if (read(fd[0], data, size) != (ssize_t)size) fail("benchmark child died");
    close(fd[0]);
    waitpid(pid, NULL, 0);
}

typedef struct { const Kernel* kernel; int T, reps; Measure m; } Point;
static void measure_point(void* data) { Point* p = data; p->m = measure(p->kernel, p->T, p->reps); }
static void measure_peak(void* data) { *(Peak*)data = peak_measure(omp_get_max_threads()); }

// FLOPs of one forward+backward of `kernel` over T positions, all heads.
static double kernel_flops(int kernel, int T) {
    switch (kernel) {
        case FLOW_CAUSAL:
        case LINEAR_CAUSAL: return (double)B * H * T * causal_dot_product_flops(D, D);
        case FLOW_NORMAL: return (double)B * H * T * full_dot_product_flops(D, D);
        default: return (double)B * H * softmax_causal_flops(T, D, D);
    }
}

static const char* verdict(int ok) { return ok ? "ok" : "MISSED"; }

int main(void) {
    int threads = omp_get_max_threads();
    Peak peak;
    in_child(measure_peak, &peak, sizeof peak);
    Measure results[NUM_KERNELS][NUM_T];
    double qkv_bytes = 3.0 * B * H * D * sizeof(float); // per token

    printf("attention forward+backward, B=%d H=%d D=%d, float32, %d threads, gemm kernels %s\n", B, H, D,
           threads, gemm_isa());
    printf("measured FMA peak: %.1f GFLOP/s (%s); FLOPs: the matrix products, as executed\n", peak.gflops, peak.isa);
    printf("extra memory = peak resident memory beyond q, k, v, out and their gradients\n\n");
    printf("%-15s %6s %11s %9s %8s %7s %10s %10s\n", "kernel", "T", "fwd+bwd ms", "us/token", "GFLOP/s",
           "% peak", "extra MiB", "q,k,v MiB");
    for (int ki = 0; ki < NUM_KERNELS; ki++) {
        for (int ti = 0; ti < NUM_T; ti++) {
            int T = Ts[ti];
            Measure* m = &results[ki][ti];
            m->seconds = -1;
            if (ki == SOFTMAX_CAUSAL && ti > 0) {
                // quadratic: four times the time per token at four times the length
                double prev = results[ki][ti - 1].seconds, ratio = (double)T / Ts[ti - 1];
                double estimate = prev * ratio * ratio;
                if (prev < 0 || estimate > SOFTMAX_LIMIT_S) {
                    printf("%-15s %6d   skipped: would take about %.0f s (quadratic from T=%d), over %.0f s\n",
                           kernels[ki].name, T, estimate, Ts[ti - 1], SOFTMAX_LIMIT_S);
                    continue;
                }
            }
            // the slowest points once after a first run, the rest a few times
            int reps = ki == SOFTMAX_CAUSAL && T >= 4096 ? (T >= 16384 ? 1 : 2) : (T <= 4096 ? 5 : 2);
            Point point = {&kernels[ki], T, reps, {0, 0}};
            in_child(measure_point, &point, sizeof point);
            *m = point.m;
            double gflops = kernel_flops(ki, T) / m->seconds * 1e-9;
            printf("%-15s %6d %11.1f %9.2f %8.1f %6.1f%% %10.1f %10.1f\n", kernels[ki].name, T, m->seconds * 1e3,
                   m->seconds * 1e6 / T, gflops, 100 * gflops / peak.gflops, mib(m->extra_bytes), mib(qkv_bytes * T));
            fflush(stdout);
        }
    }

    // The figures of issue 14, each from the table above.
    printf("\n");
    const Measure* flow = results[FLOW_CAUSAL];
    const Measure* softmax = results[SOFTMAX_CAUSAL];
    for (int ti = 0; ti < NUM_T; ti++) {
        if (Ts[ti] != 4096 && Ts[ti] != 16384) continue;
        double share = kernel_flops(FLOW_CAUSAL, Ts[ti]) / flow[ti].seconds * 1e-9 / peak.gflops;
        printf("flow-causal at T=%d: %.1f%% of the FMA peak (must be >= 35%%): %s\n", Ts[ti], 100 * share,
               verdict(share >= 0.35));
    }
    for (int ti = 0; ti < NUM_T; ti++) {
        double need = Ts[ti] == 4096 ? 25 : (Ts[ti] == 16384 ? 100 : 0);
        if (need == 0) continue;
        if (softmax[ti].seconds < 0) {
            printf("flow-causal vs softmax-causal at T=%d: softmax not run: MISSED\n", Ts[ti]);
            continue;
        }
        double speedup = softmax[ti].seconds / flow[ti].seconds;
        printf("flow-causal vs softmax-causal at T=%d: %.1fx faster (must be >= %.0fx): %s\n", Ts[ti], speedup,
               need, verdict(speedup >= need));
    }
    double fastest = 1e30, slowest = 0;
    int all_within = 1;
    for (int ti = 0; ti < NUM_T; ti++) {
        if (Ts[ti] < 1024) continue;
        all_within &= flow[ti].extra_bytes >= 0 && flow[ti].extra_bytes <= qkv_bytes * Ts[ti];
        double per_token = flow[ti].seconds / Ts[ti];
        fastest = per_token < fastest ? per_token : fastest;
        slowest = per_token > slowest ? per_token : slowest;
    }
    printf("flow-causal time per token from T=1024 to %d: slowest/fastest %.2fx (must be <= 1.3x): %s\n",
           Ts[NUM_T - 1], slowest / fastest, verdict(slowest / fastest <= 1.3));
    printf("flow-causal extra memory at every T from 1024 to %d at most q,k,v: %s\n", Ts[NUM_T - 1],
           verdict(all_within));
    return 0;
}
