// This machine's float32 peak: fused multiply-adds per second on `threads`
// threads, measured in about 0.15 s with the widest vector ISA the CPU has.
// The trainers divide their model FLOPs by it (model-FLOPs utilisation).
//
// Each thread runs 12 independent chains acc = acc * m + d. A chain waits for
// its previous FMA (latency about 4 cycles) and a core issues one or two vector
// FMAs per cycle, so 12 chains keep every FMA unit busy on current Intel and
// AMD cores. The chains start from distinct values, and an empty asm statement
// that claims to modify them every iteration keeps the compiler from merging
// chains, hoisting them out of the loop or folding iterations together.
// With m just below 1 the values settle near d / (1 - m): no overflow, no denormals.
#ifndef UTILS_PEAK_H
#define UTILS_PEAK_H

#include <omp.h>

typedef struct {
    double gflops;   // float32 GFLOP/s (an FMA counts as two FLOPs)
    const char* isa; // "avx512", "avx2" or "generic"
} Peak;

static volatile float peak_sink; // where the chains end, so that they are not dead code

#if defined(__x86_64__)
#include <immintrin.h>
#define PEAK_OPAQUE(c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11)                              \
    __asm__ volatile("" : "+v"(c0), "+v"(c1), "+v"(c2), "+v"(c3), "+v"(c4), "+v"(c5), "+v"(c6),  \
                     "+v"(c7), "+v"(c8), "+v"(c9), "+v"(c10), "+v"(c11))
#else
#define PEAK_OPAQUE(c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11) ((void)0)
#endif

// The chains over vectors V of LANES floats, with the operations SET1, FMA, ADD
// and FIRST (lane 0); a macro so that every ISA runs the same loop. The chains
// are named variables, not an array, so that they stay in registers. Returns
// the FLOPs done.
#define PEAK_LOOP(V, LANES, SET1, FMA, ADD, FIRST)                                                 \
    V c0 = SET1(1), c1 = SET1(2), c2 = SET1(3), c3 = SET1(4), c4 = SET1(5), c5 = SET1(6);          \
    V c6 = SET1(7), c7 = SET1(8), c8 = SET1(9), c9 = SET1(10), c10 = SET1(11), c11 = SET1(12);     \
    V m = SET1(0.9999999f), d = SET1(1e-7f);                                                       \
    for (long it = 0; it < iters; it++) {                                                          \
        c0 = FMA(c0, m, d), c1 = FMA(c1, m, d), c2 = FMA(c2, m, d), c3 = FMA(c3, m, d);            \
        c4 = FMA(c4, m, d), c5 = FMA(c5, m, d), c6 = FMA(c6, m, d), c7 = FMA(c7, m, d);            \
        c8 = FMA(c8, m, d), c9 = FMA(c9, m, d), c10 = FMA(c10, m, d), c11 = FMA(c11, m, d);        \
        PEAK_OPAQUE(c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11);                             \
    }                                                                                              \
    V sum = ADD(ADD(ADD(c0, c1), ADD(c2, c3)), ADD(ADD(c4, c5), ADD(c6, c7)));                     \
    peak_sink = FIRST(ADD(sum, ADD(ADD(c8, c9), ADD(c10, c11))));                                  \
    return 2.0 * LANES * 12 * (double)iters;

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static double peak_chains_avx512(long iters) {
    PEAK_LOOP(__m512, 16, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_cvtss_f32)
}

__attribute__((target("avx2,fma"))) static double peak_chains_avx2(long iters) {
    PEAK_LOOP(__m256, 8, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, _mm256_cvtss_f32)
}
#endif

// For a CPU with neither: vectors of 4 floats in GCC's vector extension (SSE,
// NEON), whose multiply-adds the compiler fuses where the target has FMA.
typedef float PeakV4 __attribute__((vector_size(16)));
static inline PeakV4 peak_set4(float x) { return (PeakV4){x, x, x, x}; }
static inline PeakV4 peak_fma4(PeakV4 a, PeakV4 m, PeakV4 d) { return a * m + d; }
static inline PeakV4 peak_add4(PeakV4 a, PeakV4 b) { return a + b; }
static inline float peak_first4(PeakV4 a) { return a[0]; }

static double peak_chains_generic(long iters) {
    PEAK_LOOP(PeakV4, 4, peak_set4, peak_fma4, peak_add4, peak_first4)
}
#undef PEAK_LOOP

typedef double (*PeakChains)(long iters);

// Seconds for `threads` threads each running `iters` iterations; *flops gets the total.
static double peak_time(PeakChains chains, int threads, long iters, double* flops) {
    double total = 0, t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads) reduction(+ : total)
    total += chains(iters);
    *flops = total;
    return omp_get_wtime() - t0;
}

static Peak peak_measure(int threads) {
    Peak p = {0, "generic"};
    PeakChains chains = peak_chains_generic;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) chains = peak_chains_avx512, p.isa = "avx512";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) chains = peak_chains_avx2, p.isa = "avx2";
#endif
    // Grow the run until it takes 10 ms (this also wakes the threads and the
    // clocks), then keep the best of four runs of about 30 ms: on a shared
    // machine, other work only ever makes a run slower.
    long iters = 1 << 12;
    double flops, seconds;
    while ((seconds = peak_time(chains, threads, iters, &flops)) < 0.01) iters *= 2;
    iters = (long)(iters * 0.03 / seconds) + 1;
    for (int run = 0; run < 4; run++) {
        seconds = peak_time(chains, threads, iters, &flops);
        if (flops / seconds * 1e-9 > p.gflops) p.gflops = flops / seconds * 1e-9;
    }
    return p;
}

#endif
