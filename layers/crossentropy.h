// Softmax + cross-entropy over a vocabulary, fused so that one (N,V) buffer
// serves for the logits and then, in place, for their gradient: the
// probabilities are never stored. For WikiText-103 (V = 267,744) and 2,048
// tokens a batch, one float32 copy is 2.2 GB; a second would double it.
//   logits is (N,V); targets is (N), a target < 0 marks a position that is not
//   scored (loss 0, no gradient); lse (N) keeps log(sum(exp(logits))) per row.
#ifndef LAYERS_CROSSENTROPY_H
#define LAYERS_CROSSENTROPY_H

#include <stdint.h>
#include <string.h>
#include "utils/real.h"

// exp that vectorises: libm's expf is a scalar call, and with a 267,744-word
// vocabulary the softmax spends a quarter of a step in it. In float32, Cephes'
// expf: x = n ln2 + r with |r| <= ln2/2, e^r by a degree-6 polynomial (relative
// error about 1e-7), 2^n built in the exponent bits; inputs below -87 give
// e^-87 instead of a denormal, harmless in a sum of probabilities. float64
// builds (the gradient tests) use libm's exp.
static inline real exp_fast(real x) {
#ifdef REAL_DOUBLE
    return exp(x);
#else
    x = x > -87.0f ? x : -87.0f;
    x = x < 88.0f ? x : 88.0f;
    // n = round(x / ln2): adding 1.5 * 2^23 leaves n in the low bits of t's mantissa
    // (no float-to-int conversion, which would keep the loop from vectorising)
    float t = x * 1.44269504088896341f + 12582912.0f;
    int32_t tbits;
    memcpy(&tbits, &t, sizeof(tbits));
    int32_t ni = tbits - 0x4B400000;
    float n = t - 12582912.0f;
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = (ni + 127) << 23;
    float two_n;
    memcpy(&two_n, &bits, sizeof(two_n));
    return p * two_n;
#endif
}

// losses[n] = lse[n] - logits[n, targets[n]] (0 where targets[n] < 0).
static void crossentropy_forward(real* losses, real* lse, const real* logits, const int* targets,
                                 int N, int V) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const real* l = logits + (long)n * V;
        real maxv = l[0];
#pragma omp simd reduction(max:maxv)
        for (int v = 1; v < V; v++) maxv = l[v] > maxv ? l[v] : maxv;
        real sum = 0;
#pragma omp simd reduction(+:sum)
        for (int v = 0; v < V; v++) sum += exp_fast(l[v] - maxv);
        lse[n] = maxv + log(sum);
        losses[n] = targets[n] >= 0 ? lse[n] - l[targets[n]] : 0;
    }
}

// Replaces logits by the gradient of dloss * sum(losses) with respect to them:
// dloss * (softmax(logits) - onehot(target)), zero on rows not scored.
static void crossentropy_backward_inplace(real* logits, const real* lse, const int* targets,
                                          real dloss, int N, int V) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        real* restrict l = logits + (long)n * V;
        if (targets[n] < 0) {
            for (int v = 0; v < V; v++) l[v] = 0;
            continue;
        }
        real m = lse[n], d = dloss; // locals: the stores through l could alias the shared copies
#pragma omp simd
        for (int v = 0; v < V; v++) l[v] = exp_fast(l[v] - m) * d;
        l[targets[n]] -= d;
    }
}

#endif
