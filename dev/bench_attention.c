// Benchmark of the attention kernels: forward+backward time and peak extra
// memory, at B=1, H=8, D=64 and growing T, for flow-causal, flow-normal,
// softmax-causal and linear-causal. Run with `make bench`.
//
// "Extra memory" is the peak resident memory during forward+backward beyond
// the inputs, outputs and their gradients (which are allocated and touched
// first): the saved cache plus every scratch buffer the kernels take.
// Each measurement runs in a child process so that peaks do not mix.
#include <sys/wait.h>
#include <sys/time.h>
#include <unistd.h>
#include <omp.h>
#include "layers/attention.h"

#define B 1
#define H 8
#define D 64
#define SOFTMAX_LIMIT_S 60.0 // skip a point that would take longer than this

static double now(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return tv.tv_sec + tv.tv_usec * 1e-6;
}

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

typedef struct { double seconds, extra_bytes; } Measure;

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
static Measure measure(const AttentionKind* kind, int causal, int T, int reps) {
    Attention a = attention_make(kind, causal, B, T, H, D);
    size_t n = (size_t)B * T * H * D;
    float *q = filled(n, 1.0f), *k = filled(n, 1.0f), *v = filled(n, 1.0f), *dout = filled(n, 1.0f);
    float *out = zeros(n), *dq = zeros(n), *dk = zeros(n), *dv = zeros(n);
    Measure m = {1e30, -1};
    int have_peak = reset_peak();
    double base = proc_status_bytes("VmRSS");
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        float* cache = (float*)malloc_check(attention_cache_size(&a) * sizeof(float));
        attention_forward(&a, out, cache, q, k, v);
        attention_backward(&a, dq, dk, dv, dout, out, cache, q, k, v);
        free(cache);
        double t = now() - t0;
        if (t < m.seconds) m.seconds = t;
    }
    if (have_peak) m.extra_bytes = proc_status_bytes("VmHWM") - base;
    return m;
}

// measure() in a child process; its result comes back through a pipe.
static Measure measure_isolated(const AttentionKind* kind, int causal, int T, int reps) {
    int fd[2];
    if (pipe(fd) != 0) fail("pipe: %s", strerror(errno));
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        Measure m = measure(kind, causal, T, reps);
        if (write(fd[1], &m, sizeof m) != (ssize_t)sizeof m) _exit(1);
        _exit(0);
    }
    close(fd[1]);
    Measure m = {-1, -1};
    if (read(fd[0], &m, sizeof m) != (ssize_t)sizeof m) fail("benchmark child for T=%d died", T);
    close(fd[0]);
    waitpid(pid, NULL, 0);
    return m;
}

int main(void) {
    int Ts[] = {256, 1024, 4096, 16384};
    int nT = sizeof Ts / sizeof Ts[0];
    struct { const char* kind; int causal; const char* name; } kernels[] = {
        {"flow", 1, "flow-causal"}, {"flow", 0, "flow-normal"},
        {"softmax", 1, "softmax-causal"}, {"linear", 1, "linear-causal"}};
    int nk = sizeof kernels / sizeof kernels[0];
    Measure results[4][4];
    double qkv_mib = 3.0 * B * H * D * sizeof(float) / (1024.0 * 1024.0); // per token

    printf("attention forward+backward, B=%d H=%d D=%d, float32, %d threads\n", B, H, D, omp_get_max_threads());
    printf("extra memory = peak resident memory beyond q, k, v, out and their gradients\n\n");
    printf("%-15s %7s %12s %12s %14s %16s\n", "kernel", "T", "fwd+bwd ms", "us/token", "extra MiB", "q,k,v MiB");
    for (int ki = 0; ki < nk; ki++) {
        for (int ti = 0; ti < nT; ti++) {
            int T = Ts[ti];
            Measure* m = &results[ki][ti];
            if (strcmp(kernels[ki].kind, "softmax") == 0 && ti > 0) {
                double prev = results[ki][ti - 1].seconds, ratio = (double)T / Ts[ti - 1];
                double estimate = prev * ratio * ratio;
                if (prev < 0 || estimate > SOFTMAX_LIMIT_S) {
                    m->seconds = -1;
                    printf("%-15s %7d %12s   (skipped: quadratic estimate %.0f s > %.0f s)\n",
                           kernels[ki].name, T, "-", prev < 0 ? 0.0 : estimate, SOFTMAX_LIMIT_S);
                    continue;
                }
            }
            int reps = T <= 1024 ? 5 : (T <= 4096 ? 3 : 2);
            if (strcmp(kernels[ki].kind, "softmax") == 0 && T >= 4096) reps = 1;
            *m = measure_isolated(attention_kind(kernels[ki].kind), kernels[ki].causal, T, reps);
            printf("%-15s %7d %12.1f %12.2f %14.1f %16.1f\n", kernels[ki].name, T, m->seconds * 1e3,
                   m->seconds * 1e6 / T, m->extra_bytes / (1024.0 * 1024.0), qkv_mib * T);
            fflush(stdout);
        }
    }

    // The figures the kernels are held to (issue 2).
    printf("\n");
    double per_tok_1k = results[0][1].seconds / 1024, per_tok_16k = results[0][3].seconds / 16384;
    printf("flow-causal time per token, T=16384 vs T=1024: %.2fx (must be <= 1.5x): %s\n",
           per_tok_16k / per_tok_1k, per_tok_16k / per_tok_1k <= 1.5 ? "ok" : "NOT MET");
    double extra = results[0][3].extra_bytes, budget = qkv_mib * 16384 * 1024.0 * 1024.0;
    printf("flow-causal extra memory at T=16384: %.1f MiB (must be <= q,k,v = %.0f MiB): %s\n",
           extra / (1024.0 * 1024.0), budget / (1024.0 * 1024.0), extra >= 0 && extra <= budget ? "ok" : "NOT MET");
    if (results[2][2].seconds > 0) {
        double speedup = results[2][2].seconds / results[0][2].seconds;
        printf("flow-causal vs softmax-causal at T=4096: %.1fx faster (must be >= 10x): %s\n",
               speedup, speedup >= 10 ? "ok" : "NOT MET");
    }
    return 0;
}
