// Softmax + cross-entropy over a vocabulary, fused so that one (N,V) buffer
// serves for the logits and then, in place, for their gradient: the
// probabilities are never stored. For WikiText-103 (V = 267,744) and 2,048
// tokens a batch, one float32 copy is 2.2 GB; a second would double it.
//   logits is (N,V); targets is (N), a target < 0 marks a position that is not
//   scored (loss 0, no gradient); lse (N) keeps log(sum(exp(logits))) per row.
// For a training step, crossentropy_forward_backward reads each row of logits
// from memory once (and mostly from cache the second time) and writes it once;
// for evaluation, crossentropy_forward reads it once.
#ifndef LAYERS_CROSSENTROPY_H
#define LAYERS_CROSSENTROPY_H

#include <string.h>
#include "utils/real.h"
#include "layers/fastmath.h"

// Logits walked at a time: 8 KB in float32, which stay in L1 from one pass over
// a chunk to the next.
#define CE_CHUNK 2048

static inline real chunk_max(const real* l, int v0, int v1) {
    real m = l[v0];
#pragma omp simd reduction(max:m)
    for (int v = v0 + 1; v < v1; v++) m = l[v] > m ? l[v] : m;
    return m;
}

// Adds a chunk, given by its max m and the sum of its exps shifted by m, to a
// row's running max and sum (the online softmax of Milakov & Gimelshein).
static inline void lse_merge(real* run_max, real* run_sum, real m, real sum) {
    if (m > *run_max) {
        *run_sum = *run_sum * exp_fast(*run_max - m) + sum;
        *run_max = m;
    } else {
        *run_sum += sum * exp_fast(m - *run_max);
    }
}

// log(sum(exp(l))) of one row of V logits, reading the row from memory once: for
// each chunk its max, then (from L1) the sum of its exps shifted by that max.
static real logsumexp_row(const real* l, int V) {
    real run_max = 0, run_sum = 0;
    for (int v0 = 0; v0 < V; v0 += CE_CHUNK) {
        int v1 = v0 + CE_CHUNK < V ? v0 + CE_CHUNK : V;
        real m = chunk_max(l, v0, v1), sum = 0;
#pragma omp simd reduction(+:sum)
        for (int v = v0; v < v1; v++) sum += exp_fast(l[v] - m);
        if (v0 == 0) { run_max = m; run_sum = sum; }
        else lse_merge(&run_max, &run_sum, m, sum);
    }
    return run_max + log(run_sum);
}

// losses[n] = lse[n] - logits[n, targets[n]] (0 where targets[n] < 0).
static void crossentropy_forward(real* losses, real* lse, const real* logits, const int* targets,
                                 int N, int V) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const real* l = logits + (long)n * V;
        lse[n] = logsumexp_row(l, V);
        losses[n] = targets[n] >= 0 ? lse[n] - l[targets[n]] : 0;
    }
}

// Replaces logits by the gradient of dloss * sum(losses) with respect to them:
// dloss * (softmax(logits) - onehot(target)), zero on rows not scored.
static void crossentropy_backward_inplace(real* logits, const real* lse, const int* targets,
                                          real dloss, int N, int V) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        real* l = logits + (long)n * V;
        if (targets[n] < 0) {
            memset(l, 0, (size_t)V * sizeof(real));
            continue;
        }
        real m = lse[n], d = dloss; // locals: the stores through l could alias the shared copies
#pragma omp simd
        for (int v = 0; v < V; v++) l[v] = exp_fast(l[v] - m) * d;
        l[targets[n]] -= d;
    }
}

// crossentropy_forward and crossentropy_backward_inplace in one, a row at a
// time, with one exp per logit instead of two: the first pass over a row leaves
// each chunk's shifted exps in place of its logits, and once the row's lse is
// known the second pass scales each chunk by exp(its max - lse) * dloss. The
// second pass walks the chunks last to first, so that it starts on what the
// first left in cache (most of a 267,744-word row fits in a 1 MB L2).
//   losses (N) as crossentropy_forward's; logits (N,V) become the gradient.
static void crossentropy_forward_backward(real* losses, real* logits, const int* targets,
                                          real dloss, int N, int V) {
    int nchunks = (V + CE_CHUNK - 1) / CE_CHUNK;
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        real* l = logits + (long)n * V;
        int target = targets[n];
        if (target < 0) {
            memset(l, 0, (size_t)V * sizeof(real));
            losses[n] = 0;
            continue;
        }
        real target_logit = l[target];
        real maxes[nchunks];
        real run_max = 0, run_sum = 0;
        for (int k = 0; k < nchunks; k++) {
            int v0 = k * CE_CHUNK, v1 = v0 + CE_CHUNK < V ? v0 + CE_CHUNK : V;
            real m = chunk_max(l, v0, v1), sum = 0;
#pragma omp simd reduction(+:sum)
            for (int v = v0; v < v1; v++) {
                real e = exp_fast(l[v] - m);
                l[v] = e;
                sum += e;
            }
            maxes[k] = m;
            if (k == 0) { run_max = m; run_sum = sum; }
            else lse_merge(&run_max, &run_sum, m, sum);
        }
        real lse = run_max + log(run_sum);
        losses[n] = lse - target_logit;
        for (int k = nchunks - 1; k >= 0; k--) {
            int v0 = k * CE_CHUNK, v1 = v0 + CE_CHUNK < V ? v0 + CE_CHUNK : V;
            real scale = exp_fast(maxes[k] - lse) * dloss;
#pragma omp simd
            for (int v = v0; v < v1; v++) l[v] *= scale;
        }
        l[target] -= dloss;
    }
}

#endif
