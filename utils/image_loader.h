// Batches of an image classifier from image shards (utils/image_shard.h): the
// images shuffled each epoch (the order of epoch e is a function of the seed and
// e, so a resumed run needs only its position), cropped, flipped and normalised
// (utils/augment.h); and the per-channel mean and std of a set.
#ifndef UTILS_IMAGE_LOADER_H
#define UTILS_IMAGE_LOADER_H

#include <stdint.h>
#include <stdlib.h>
#include <math.h>
#include "utils/real.h"
#include "utils/utils.h"
#include "utils/rng.h"
#include "utils/image_shard.h"
#include "utils/augment.h"

typedef struct {
    ImageSet set;
    long* perm;        // order of the images in epoch perm_epoch
    long perm_epoch;
    uint8_t* raw;      // (B, H, W, C) pixels of a batch
    int* labels;       // (B)
    long* indices;     // (B)
} ImageLoader;

// Opens every shard matching pattern, for batches of up to B images; fails, naming the
// first shard, when they hold no images (before the batch is allocated, whatever its size).
static ImageLoader image_loader_open(const char* pattern, int B) {
    ImageLoader d;
    d.set = image_set_open(pattern);
    if (d.set.count < 1) fail("%s: no images", d.set.shards[0].path);
    d.perm = (long*)malloc_check((size_t)d.set.count * sizeof(long));
    d.perm_epoch = -1;
    d.raw = (uint8_t*)malloc_check((size_t)B * d.set.image_bytes);
    d.labels = (int*)malloc_check((size_t)B * sizeof(int));
    d.indices = (long*)malloc_check((size_t)B * sizeof(long));
    return d;
}

static void image_loader_close(ImageLoader* d) {
    image_set_close(&d->set);
    free(d->perm);
    free(d->raw);
    free(d->labels);
    free(d->indices);
}

// Fails, naming the first shard and `what` (the setting), when the images do not
// fit a model of `channels` channels, side S and K classes.
static void image_loader_check(const ImageLoader* d, const char* what, int channels, int S, int K) {
    const ImageSet* s = &d->set;
    const char* path = s->shards[0].path;
    if (s->channels != channels)
        fail("%s: images have %d channels, the configuration has channels %d (%s)", path, s->channels, channels, what);
    if (s->height < S || s->width < S)
        fail("%s: images are %dx%d, smaller than image_size %d (%s)", path, s->height, s->width, S, what);
    if (s->num_classes != K)
        fail("%s: shards have %d classes, the configuration has num_classes %d (%s)", path, s->num_classes, K, what);
}

// The images of epoch e in a fixed random order (its own seed, so that a resumed
// run only needs the position).
static void image_loader_shuffle(ImageLoader* d, uint64_t seed, long epoch) {
    long n = d->set.count;
    for (long i = 0; i < n; i++) d->perm[i] = i;
    Rng r = rng_make(seed ^ rng_hash64((uint64_t)epoch + 1));
    for (long i = n - 1; i > 0; i--) {
        long j = rng_below(&r, i + 1);
        long t = d->perm[i];
        d->perm[i] = d->perm[j];
        d->perm[j] = t;
    }
    d->perm_epoch = epoch;
}

// Reads the B training images at positions pos.. of the shuffled stream (epoch
// pos / count, and so on).
static void image_loader_next(ImageLoader* d, uint64_t seed, long pos, int B) {
    long n = d->set.count;
    if (pos < 0) fail("the position %ld in the training images (%s) is negative", pos, d->set.shards[0].path);
    for (int j = 0; j < B; j++) {
        long e = (pos + j) / n;
        if (e != d->perm_epoch) image_loader_shuffle(d, seed, e);
        d->indices[j] = d->perm[(pos + j) % n];
    }
    image_set_read(&d->set, d->indices, B, d->raw, d->labels);
}

// Reads images first..first+B-1 in the set's order (evaluation).
static void image_loader_range(ImageLoader* d, long first, int B) {
    for (int j = 0; j < B; j++) d->indices[j] = first + j;
    image_set_read(&d->set, d->indices, B, d->raw, d->labels);
}

// images (B, S, S, C) from the loader's raw batch: random crops (padded by pad)
// and flips when rng is given, centre crops otherwise; normalised by mean, std (C).
static void image_loader_crops(real* images, const ImageLoader* d, int B, int S, int pad, int flip, Rng* rng,
                               const real* mean, const real* std) {
    const ImageSet* s = &d->set;
    int y0[B], x0[B], fl[B];
    for (int b = 0; b < B; b++) {
        if (rng != NULL) {
            augment_random_offsets(rng, s->height, s->width, S, pad, &y0[b], &x0[b]);
            fl[b] = flip && rng_uniform(rng) < 0.5;
        } else {
            augment_center_offsets(s->height, s->width, S, &y0[b], &x0[b]);
            fl[b] = 0;
        }
    }
#pragma omp parallel for
    for (int b = 0; b < B; b++)
        augment_crop(images + (long)b * S * S * s->channels, d->raw + (long)b * s->image_bytes, s->height,
                     s->width, s->channels, S, y0[b], x0[b], fl[b], mean, std);
}

// Per-channel mean and std in [0, 1] over up to 10,000 images spread over the set.
static void image_set_mean_std(const ImageSet* set, double* mean, double* std) {
    long n = set->count < 10000 ? set->count : 10000;
    int C = set->channels;
    double sum[4] = {0}, sq[4] = {0};
    uint8_t* px = (uint8_t*)malloc_check((size_t)set->image_bytes);
    for (long i = 0; i < n; i++) {
        long idx = i * (set->count / n);
        image_set_read(set, &idx, 1, px, NULL);
        for (long j = 0; j < set->image_bytes; j++) {
            double v = px[j] / 255.0;
            sum[j % C] += v;
            sq[j % C] += v * v;
        }
    }
    double per = (double)n * set->image_bytes / C;
    for (int c = 0; c < C; c++) {
        mean[c] = sum[c] / per;
        std[c] = sqrt(fmax(sq[c] / per - mean[c] * mean[c], 1e-12));
    }
    free(px);
}

#endif
