// Data augmentation for image classification, on uint8 channels-last images as
// the image shards hold them (utils/image_shard.h), producing normalised reals:
//  - crops with zero padding (torchvision RandomCrop(S, padding) then
//    RandomHorizontalFlip, ToTensor and Normalize(mean, std)); the centre crop
//    (CenterCrop(S)) for evaluation is the same call with fixed offsets;
//  - mixup and cutmix on a batch (timm's Mixup in batch mode: one lambda for the
//    batch, sample b mixed with sample B-1-b, soft targets mixed alike).
#ifndef UTILS_AUGMENT_H
#define UTILS_AUGMENT_H

#include <stdint.h>
#include <string.h>
#include "utils/rng.h"
#include "utils/real.h"

// out (S, S, C) = normalised pixels of the S x S window of src (H, W, C) whose top-left
// corner is (y0, x0), mirrored left-right if flip; pixels outside src are 0 (black),
// as torchvision pads before normalising. mean, std are (C), in units of 1/255 of the range.
static void augment_crop(real* out, const uint8_t* src, int H, int W, int C, int S, int y0, int x0,
                         int flip, const real* mean, const real* std) {
    for (int y = 0; y < S; y++) {
        for (int x = 0; x < S; x++) {
            int sy = y0 + y, sx = x0 + (flip ? S - 1 - x : x);
            int inside = sy >= 0 && sy < H && sx >= 0 && sx < W;
            real* o = out + ((long)y * S + x) * C;
            for (int c = 0; c < C; c++) {
                real v = inside ? (real)src[((long)sy * W + sx) * C + c] / (real)255 : (real)0;
                o[c] = (v - mean[c]) / std[c];
            }
        }
    }
}

// Offsets of a random S-crop of an H x W image padded by pad on each side:
// uniform over every window of the padded image.
static void augment_random_offsets(Rng* rng, int H, int W, int S, int pad, int* y0, int* x0) {
    *y0 = (int)rng_below(rng, H + 2 * pad - S + 1) - pad;
    *x0 = (int)rng_below(rng, W + 2 * pad - S + 1) - pad;
}

// Offsets of the centre crop, torchvision's int(round((H - S) / 2)).
static void augment_center_offsets(int H, int W, int S, int* y0, int* x0) {
    *y0 = (int)((H - S) / 2.0 + 0.5);
    *x0 = (int)((W - S) / 2.0 + 0.5);
}

// Gamma(a, 1) by Marsaglia and Tsang (for a < 1 through Gamma(a + 1) * U^(1/a)).
static double rng_gamma(Rng* rng, double a) {
    if (a < 1) return rng_gamma(rng, a + 1) * pow(1.0 - rng_uniform(rng), 1.0 / a);
    double d = a - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = rng_normal(rng), v = 1 + c * x;
        if (v <= 0) continue;
        v = v * v * v;
        double u = 1.0 - rng_uniform(rng);
        if (log(u) < 0.5 * x * x + d - d * v + d * log(v)) return d * v;
    }
}

// Beta(a, a), the mixing weight of mixup and cutmix.
static double rng_beta(Rng* rng, double a) {
    double x = rng_gamma(rng, a), y = rng_gamma(rng, a);
    return x + y > 0 ? x / (x + y) : 0.5;
}

// Mixes a batch with its reverse: images (B, S, S, C) and targets (B, K); copy holds
// B*S*S*C + B*K reals of scratch. Mixup: x[b] = lam x[b] + (1-lam) x[B-1-b]. Cutmix: a
// box of area (1-lam) S^2 centred at a random pixel (clipped at the borders, lam then
// corrected to the area kept) is pasted from x[B-1-b]. Targets mix with the final lam.
// Returns the lam used.
static double augment_mix(Rng* rng, real* images, real* targets, real* copy, int B, int S, int C, int K,
                          double lam, int cutmix) {
    long n = (long)S * S * C;
    memcpy(copy, images, sizeof(real) * B * n);
    memcpy(copy + B * n, targets, sizeof(real) * B * K);
    if (cutmix) {
        double cut = sqrt(1.0 - lam);
        int ch = (int)(S * cut), cw = (int)(S * cut);
        int cy = (int)rng_below(rng, S), cx = (int)rng_below(rng, S);
        int y0 = cy - ch / 2 < 0 ? 0 : cy - ch / 2, y1 = cy + ch / 2 > S ? S : cy + ch / 2;
        int x0 = cx - cw / 2 < 0 ? 0 : cx - cw / 2, x1 = cx + cw / 2 > S ? S : cx + cw / 2;
        for (int b = 0; b < B; b++)
            for (int y = y0; y < y1; y++)
                memcpy(images + b * n + ((long)y * S + x0) * C, copy + (B - 1 - b) * n + ((long)y * S + x0) * C,
                       sizeof(real) * (x1 - x0) * C);
        lam = 1.0 - (double)(y1 - y0) * (x1 - x0) / ((double)S * S);
    } else {
        for (int b = 0; b < B; b++)
            for (long i = 0; i < n; i++)
                images[b * n + i] = (real)lam * copy[b * n + i] + (real)(1 - lam) * copy[(B - 1 - b) * n + i];
    }
    const real* t = copy + B * n;
    for (int b = 0; b < B; b++)
        for (int k = 0; k < K; k++)
            targets[(long)b * K + k] = (real)lam * t[(long)b * K + k] + (real)(1 - lam) * t[(long)(B - 1 - b) * K + k];
    return lam;
}

#endif
