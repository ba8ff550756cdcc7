// Inverted dropout with counter-based masks: element i is kept when
// hash(key, i) >= p, and kept elements are scaled by 1/(1-p). The mask is a pure
// function of (key, i), so the backward pass recomputes it instead of storing it,
// and a run that saves its key source (the trainer's Rng) resumes exactly.
//   inp, out are (N); p in [0, 1); p = 0 is the identity.
#ifndef LAYERS_DROPOUT_H
#define LAYERS_DROPOUT_H

#include <stdint.h>
#include "utils/real.h"
#include "utils/rng.h"

// 1 if element i is kept: compares 24 random bits with p.
static inline int dropout_keep(uint64_t key, long i, uint32_t threshold) {
    return (uint32_t)(rng_hash64(key + (uint64_t)i * 0x9e3779b97f4a7c15ULL) >> 40) >= threshold;
}

static inline uint32_t dropout_threshold(real p) { return (uint32_t)(p * (real)16777216); }

// The key whose mask is key's from element `first` on: a part of a larger tensor
// (one rank's samples of a batch) gets the mask it has within the whole.
static inline uint64_t dropout_key_from(uint64_t key, long first) {
    return key + (uint64_t)first * 0x9e3779b97f4a7c15ULL;
}

// out = mask * inp / (1 - p); out may be inp.
static void dropout_forward(real* out, const real* inp, long N, real p, uint64_t key) {
    if (p <= 0) {
        if (out != inp) for (long i = 0; i < N; i++) out[i] = inp[i];
        return;
    }
    uint32_t th = dropout_threshold(p);
    real scale = (real)1 / ((real)1 - p);
#pragma omp parallel for
    for (long i = 0; i < N; i++) out[i] = dropout_keep(key, i, th) ? inp[i] * scale : 0;
}

// dinp += mask * dout / (1 - p)
static void dropout_backward(real* dinp, const real* dout, long N, real p, uint64_t key) {
    uint32_t th = dropout_threshold(p);
    real scale = p > 0 ? (real)1 / ((real)1 - p) : (real)1;
#pragma omp parallel for
    for (long i = 0; i < N; i++)
        if (p <= 0 || dropout_keep(key, i, th)) dinp[i] += dout[i] * scale;
}

#endif
