// The progress of a training run: one line per update on stdout (every
// log_interval updates) and one JSON object per update in the log, with the time
// per update, throughput, model-FLOPs utilisation and the time left.
// MFU = (the FLOPs an update does, as the trainer counts them) / (its time) /
// (this machine's measured fp32 FMA peak on the run's threads, utils/peak.h).
// With several ranks the items and FLOPs are the global batch's and the peak the
// sum of every rank's.
#ifndef UTILS_PROGRESS_H
#define UTILS_PROGRESS_H

#include <stdio.h>
#include <omp.h>
#include "utils/logger.h"
#include "utils/peak.h"
#include "utils/dist.h"

typedef struct {
    long total;           // updates of the run
    double items;         // tokens or images per update
    const char* unit;     // "tok" or "img"
    int log_interval;     // print every this many updates
    int eval_every;       // updates between evaluations (0: only at the end)
    int evaluates;        // whether there are evaluations at all
    double eval_seconds;  // time of the last evaluation, for the time left
    double flops;         // FLOPs of an update
    double peak;          // FLOP/s the machines can do
    double t_start, t0;   // the run's start, the update's start
    double ms_avg;        // mean time per update, the first one left out (page faults)
    long timed;
} Progress;

// A run of `total` updates whose machines do `peak` FLOP/s together (the GPU trainer's
// peak is its GPUs'); prints nothing.
static Progress progress_start_at(long total, double items, const char* unit, int log_interval, int eval_every,
                                  int evaluates, double flops, double peak) {
    Progress p = {total, items, unit, log_interval, eval_every, evaluates, 0, flops, peak, omp_get_wtime(), 0, 0, 0};
    return p;
}

// A run on this machine's CPUs (and the other ranks'), whose peak it measures and prints.
static Progress progress_start(const Dist* dist, long total, double items, const char* unit, int log_interval,
                               int eval_every, int evaluates, double flops) {
    // one core's peak times the threads: measuring all threads at once on a busy
    // machine measures the other programs more than the cores
    int threads = omp_get_max_threads();
    Peak peak = peak_measure(1);
    double gflops = dist_sum(dist, peak.gflops * threads);
    if (dist->size == 1)
        printf("%.2f GFLOP per update; this machine's fp32 peak %.1f GFLOP/s (%s, %d threads x %.1f)\n",
               flops * 1e-9, gflops, peak.isa, threads, peak.gflops);
    else
        printf("%.2f GFLOP per update; the %d ranks' fp32 peak %.1f GFLOP/s (%s, %d threads x %.1f on rank 0)\n",
               flops * 1e-9, dist->size, gflops, peak.isa, threads, peak.gflops);
    return progress_start_at(total, items, unit, log_interval, eval_every, evaluates, flops, gflops * 1e9);
}

// Call when an update starts.
static void progress_begin(Progress* p) { p->t0 = omp_get_wtime(); }

// Call when update `step` (1-based) is done: prints the line and logs it. epoch < 0: none.
static void progress_end(Progress* p, Logger* log, long step, double loss, double lr, double norm, double epoch) {
    double ms = (omp_get_wtime() - p->t0) * 1e3;
    if (step > 1 || p->timed > 0) { p->timed++; p->ms_avg += (ms - p->ms_avg) / p->timed; }
    double per_update = p->timed > 0 ? p->ms_avg : ms;
    // time left: the updates, and the evaluations still to come (the last one too)
    long evals_left = !p->evaluates ? 0 : 1 + (p->eval_every > 0 ? (p->total - step) / p->eval_every : 0);
    double eta_s = (p->total - step) * per_update / 1e3 + evals_left * p->eval_seconds;
    double rate = p->items / (ms / 1e3), mfu = p->flops / (ms / 1e3) / p->peak;
    char epoch_text[32] = "";
    if (epoch >= 0) snprintf(epoch_text, sizeof(epoch_text), "epoch %.2f | ", epoch);
    if (step % p->log_interval == 0 || step == p->total) {
        char eta[32];
        format_duration(eta_s, eta, sizeof(eta));
        printf("step %5ld/%ld | %sloss %.4f | lr %.2e | norm %.4f | %.1f ms | %.0f %s/s | MFU %.0f%% | eta %s\n",
               step, p->total, epoch_text, loss, lr, norm, ms, rate, p->unit, 100 * mfu, eta);
        fflush(stdout);
    }
    if (epoch >= 0) snprintf(epoch_text, sizeof(epoch_text), "\"epoch\":%.4f,", epoch);
    logger_printf(log, "{\"step\":%ld,%s\"loss\":%.17g,\"lr\":%.9g,\"norm\":%.9g,\"ms\":%.3f,\"%s_s\":%.1f,"
                  "\"mfu\":%.4f,\"eta_s\":%.1f}", step, epoch_text, loss, lr, norm, ms, p->unit, rate, mfu, eta_s);
}

// The closing line: mean time per update and throughput.
static void progress_finish(const Progress* p) {
    if (p->timed == 0) return;
    printf("average %.1f ms per update (%.0f %s/s, MFU %.0f%%); %.1f minutes in all\n", p->ms_avg,
           p->items / (p->ms_avg / 1e3), p->unit, 100 * p->flops / (p->ms_avg / 1e3) / p->peak,
           (omp_get_wtime() - p->t_start) / 60);
}

#endif
