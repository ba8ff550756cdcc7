// Cross-entropy against target distributions (label smoothing, mixup, cutmix:
// timm's SoftTargetCrossEntropy): loss[n] = -sum_k targets[n,k] log softmax(logits[n])_k.
//   logits, targets are (N, K); each target row sums to 1; losses is (N).
#ifndef LAYERS_SOFT_CROSSENTROPY_H
#define LAYERS_SOFT_CROSSENTROPY_H

#include "utils/real.h"
#include "layers/fastmath.h"

// Smoothed one-hot rows: 1 - smoothing + smoothing/K at labels[n], smoothing/K elsewhere.
static void soft_targets_from_labels(real* targets, const int* labels, real smoothing, int N, int K) {
    real off = smoothing / K;
    for (int n = 0; n < N; n++) {
        for (int k = 0; k < K; k++) targets[(long)n * K + k] = off;
        targets[(long)n * K + labels[n]] += (real)1 - smoothing;
    }
}

// Also keeps lse[n] = log(sum(exp(logits[n]))) for the backward pass.
static void soft_crossentropy_forward(real* losses, real* lse, const real* logits, const real* targets,
                                      int N, int K) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const real* l = logits + (long)n * K;
        const real* t = targets + (long)n * K;
        real maxv = l[0];
#pragma omp simd reduction(max:maxv)
        for (int k = 1; k < K; k++) maxv = l[k] > maxv ? l[k] : maxv;
        real sum = 0;
#pragma omp simd reduction(+:sum)
        for (int k = 0; k < K; k++) sum += exp_fast(l[k] - maxv);
        real z = maxv + log(sum), loss = 0;
#pragma omp simd reduction(+:loss)
        for (int k = 0; k < K; k++) loss += t[k] * (z - l[k]);
        lse[n] = z;
        losses[n] = loss;
    }
}

// dlogits += dloss * (softmax(logits) - targets), the gradient of dloss * sum(losses).
static void soft_crossentropy_backward(real* dlogits, const real* logits, const real* lse,
                                       const real* targets, real dloss, int N, int K) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        real* d = dlogits + (long)n * K;
        const real* l = logits + (long)n * K;
        const real* t = targets + (long)n * K;
        real z = lse[n];
#pragma omp simd
        for (int k = 0; k < K; k++) d[k] += dloss * (exp_fast(l[k] - z) - t[k]);
    }
}

#endif
