// Benchmark of the GPU attention kernels (cuda/attention.cuh): forward+backward time
// and the extra GPU memory a call takes, at B=1, H=8, D=64 and growing T, for
// flow-causal, flow-normal, softmax-causal and linear-causal, as dev/bench_attention.c
// does for the CPU's. Run with `make bench-cuda` on a machine with a GPU.
//
// "Extra memory" is what the call takes beyond q, k, v, the output and their gradients:
// the cache the forward pass saves and the kind's scratch (cuda/attention_types.cuh),
// as the trainer allocates them. Times are the median of several runs, measured with
// CUDA events after a warm-up run.
#include <stdio.h>
#include <stdlib.h>
#include "utils/utils.h"
#include "cuda/common.cuh"
#include "cuda/attention.cuh"

#define B 1
#define H 8
#define D 64
#define REPS 9

static int compare_floats(const void* a, const void* b) {
    float x = *(const float*)a, y = *(const float*)b;
    return (x > y) - (x < y);
}

// Device array of n floats in [-scale, scale).
static float* filled(size_t n, float scale) {
    float* host = (float*)malloc_check(n * sizeof(float));
    unsigned s = 12345u;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        host[i] = scale * ((float)(s >> 8) / 16777216.0f * 2.0f - 1.0f);
    }
    float* d = cuda_floats(n, "the benchmark's inputs");
    to_device(d, host, n * sizeof(float));
    free(host);
    return d;
}

typedef struct {
    double ms;          // forward+backward, median
    double extra_mib;   // cache and scratch
} Measure;

static Measure measure(const AttentionKind* kind, int causal, int T) {
    Attention a = attention_make(kind, causal, B, T, H, D);
    size_t n = (size_t)B * T * H * D, cache_n = attention_cache_size(&a), scratch_n = attention_scratch_size(&a);
    float *q = filled(n, 1), *k = filled(n, 1), *v = filled(n, 1), *dout = filled(n, 1);
    float *out = filled(n, 0), *dq = filled(n, 0), *dk = filled(n, 0), *dv = filled(n, 0);
    float *cache = cuda_floats(cache_n, "the cache"), *scratch = cuda_floats(scratch_n, "the scratch");
    cudaEvent_t start, stop;
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&stop));
    float times[REPS];
    for (int r = -1; r < REPS; r++) {  // r = -1: warm-up
        CUDA_CHECK(cudaEventRecord(start));
        attention_forward(&a, out, cache, q, k, v, scratch);
        attention_backward(&a, dq, dk, dv, dout, out, cache, q, k, v, scratch);
        CUDA_CHECK(cudaEventRecord(stop));
        CUDA_CHECK(cudaEventSynchronize(stop));
        if (r >= 0) CUDA_CHECK(cudaEventElapsedTime(&times[r], start, stop));
    }
    qsort(times, REPS, sizeof(float), compare_floats);
    Measure m = {times[REPS / 2], (cache_n + scratch_n) * 4.0 / 1048576.0};
    CUDA_CHECK(cudaEventDestroy(start));
    CUDA_CHECK(cudaEventDestroy(stop));
    float* buffers[] = {q, k, v, dout, out, dq, dk, dv, cache, scratch};
    for (int i = 0; i < 10; i++) CUDA_CHECK(cudaFree(buffers[i]));
    return m;
}

int main(void) {
    int ngpus = 0;
    if (cudaGetDeviceCount(&ngpus) != cudaSuccess || ngpus == 0) fail("no CUDA GPU found (cudaGetDeviceCount)");
    cuda_setup(0, 0);
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    printf("GPU attention forward+backward, B=%d H=%d D=%d, float32, %s\n", B, H, D, prop.name);
    printf("extra memory = the cache and the kind's scratch, beyond q, k, v, out and their gradients\n\n");
    printf("%-16s %7s %12s %12s %14s %16s\n", "kernel", "T", "fwd+bwd ms", "us/token", "extra MiB", "q,k,v MiB");
    const int Ts[] = {256, 1024, 4096, 16384, 65536};
    struct { const char* kind; int causal; } runs[] = {{"flow", 1}, {"flow", 0}, {"softmax", 1}, {"linear", 1}};
    double flow_ms[5] = {0}, softmax_ms[5] = {0};
    for (int r = 0; r < 4; r++) {
        for (int i = 0; i < 5; i++) {
            int T = Ts[i];
            Measure m = measure(attention_kind_or_fail(runs[r].kind), runs[r].causal, T);
            char name[32];
            snprintf(name, sizeof name, "%s-%s", runs[r].kind, runs[r].causal ? "causal" : "normal");
            printf("%-16s %7d %12.3f %12.4f %14.1f %16.1f\n", name, T, m.ms, m.ms * 1e3 / T, m.extra_mib,
                   3.0 * B * T * H * D * 4 / 1048576.0);
            fflush(stdout);
            if (r == 0) flow_ms[i] = m.ms;
            if (r == 2) softmax_ms[i] = m.ms;
        }
    }
    printf("\nflow-causal time per token, T=65536 vs T=1024: %.2fx; flow-causal vs softmax-causal at T=16384: "
           "%.1fx faster, at T=65536: %.1fx\n", (flow_ms[4] / 65536) / (flow_ms[1] / 1024), softmax_ms[3] / flow_ms[3],
           softmax_ms[4] / flow_ms[4]);
    return 0;
}
