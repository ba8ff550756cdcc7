// Batches of an image classifier from image shards (utils/image_shard.h): the
// images shuffled each epoch (the order of epoch e is a function of the seed and
// e, so a resumed run needs only its position), cropped, flipped and normalised
// (utils/augment.h); and the per-channel mean and std of a set. Each rank of a
// run on several (utils/dist.h) reads its own images of every batch, and every
// rank makes the same draws, so the batches do not depend on the number of ranks.
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
#include "utils/dist.h"

typedef struct {
    ImageSet set;
    long* perm;        // order of the images in epoch perm_epoch
    long perm_epoch;
    uint8_t* raw;      // (B, H, W, C) pixels of the images read
    int* labels;       // (B)
    long* indices;     // (B)
} ImageLoader;

// Opens every shard matching pattern, for reads of up to B images; fails, naming the
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

// The images of a micro-batch of B that one rank reads: its part [lo, hi), then,
// when mixing, their partners. augment_mix pairs image j of n with image n-1-j, so
// after the part come images B-hi .. B-1-lo in order: image lo+j of the batch meets
// B-1-lo-j, its partner in the whole batch. Returns how many.
static int image_batch_part(int* which, int B, int lo, int hi, int mixing) {
    int n = 0;
    for (int b = lo; b < hi; b++) which[n++] = b;
    for (int b = B - hi; mixing && b < B - lo; b++) which[n++] = b;
    return n;
}

// Reads the training images which[0..n) of the micro-batch at positions pos.. of
// the shuffled stream.
static void image_loader_next(ImageLoader* d, uint64_t seed, long pos, const int* which, int n) {
    long count = d->set.count;
    if (pos < 0) fail("the position %ld in the training images (%s) is negative", pos, d->set.shards[0].path);
    for (int j = 0; j < n; j++) {
        long at = pos + which[j], e = at / count;
        if (e != d->perm_epoch) image_loader_shuffle(d, seed, e);
        d->indices[j] = d->perm[at % count];
    }
    image_set_read(&d->set, d->indices, n, d->raw, d->labels);
}

// Reads images first..first+B-1 in the set's order (evaluation).
static void image_loader_range(ImageLoader* d, long first, int B) {
    for (int j = 0; j < B; j++) d->indices[j] = first + j;
    image_set_read(&d->set, d->indices, B, d->raw, d->labels);
}

// images (n, S, S, C) from the loader's n images read, images which[0..n) of a
// batch of B: random crops (padded by pad) and flips when rng is given, drawn for
// all B images so that the draws are the same whichever are read; centre crops
// otherwise (which may be NULL); normalised by mean, std (C).
static void image_loader_crops(real* images, const ImageLoader* d, int n, const int* which, int B, int S, int pad,
                               int flip, Rng* rng, const real* mean, const real* std) {
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
    for (int j = 0; j < n; j++) {
        int b = which != NULL ? which[j] : j;
        augment_crop(images + (long)j * S * S * s->channels, d->raw + (long)j * s->image_bytes, s->height,
                     s->width, s->channels, S, y0[b], x0[b], fl[b], mean, std);
    }
}

// A hash of a set, to check that every rank reads the same: its size, every label,
// and the pixels of up to 64 images spread over it (all of them would be
// ImageNet's 190 GB).
static uint64_t image_set_hash(const ImageSet* set) {
    long head[5] = {set->count, set->channels, set->height, set->width, set->num_classes};
    uint64_t h = dist_hash(0, head, sizeof head);
    for (int k = 0; k < set->nshards; k++)
        h = dist_hash(h, set->shards[k].labels, (size_t)set->shards[k].count * sizeof(int32_t));
    uint8_t* px = (uint8_t*)malloc_check((size_t)set->image_bytes);
    long step = set->count / 64 > 0 ? set->count / 64 : 1;
    for (long i = 0; i < set->count; i += step) {
        image_set_read(set, &i, 1, px, NULL);
        h = dist_hash(h, px, (size_t)set->image_bytes);
    }
    free(px);
    return h;
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
