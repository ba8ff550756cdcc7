// Random numbers: a small, fast generator whose whole state is one uint64 (so
// checkpoints can store it and resume exactly), and a stateless hash for
// counter-based streams (dropout masks recomputed in the backward pass).
#ifndef UTILS_RNG_H
#define UTILS_RNG_H

#include <stdint.h>
#include <math.h>

// splitmix64's finaliser: a bijective mix of 64 bits.
static inline uint64_t rng_hash64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

typedef struct { uint64_t state; } Rng;

static inline Rng rng_make(uint64_t seed) {
    Rng r = {rng_hash64(seed ^ 0x9e3779b97f4a7c15ULL)};
    return r;
}

// splitmix64: next 64 random bits.
static inline uint64_t rng_next(Rng* r) {
    r->state += 0x9e3779b97f4a7c15ULL;
    return rng_hash64(r->state);
}

// Uniform in [0, 1) with 53 random bits.
static inline double rng_uniform(Rng* r) {
    return (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

// Uniform integer in [0, n), n > 0 (the modulo bias is below 2^-40 for n < 2^24).
static inline long rng_below(Rng* r, long n) {
    return (long)(rng_next(r) % (uint64_t)n);
}

// Standard normal (Box-Muller).
static inline double rng_normal(Rng* r) {
    double u1 = rng_uniform(r), u2 = rng_uniform(r);
    return sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2);
}

#endif
