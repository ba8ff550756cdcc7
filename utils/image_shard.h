// Image shards: labelled uint8 images of one size, written by data/prepare_images.c and
// data/prepare_fashion_mnist.c, read by the vision trainer.
//   header: 16 int32 = magic, version, count N, channels C, height H, width W,
//           number of classes K, then zeros
//   labels: N int32, each in [0, K)
//   pixels: N x H x W x C uint8 (row-major, channels last)
// Readers bound every dimension and check the file size (with checked arithmetic) and
// the labels, and fail naming the file; writers refuse what readers would, and write
// "<path>.tmp" and rename it, so a shard only appears when complete.
// A data set is one or more shards (e.g. train_000000.bin, train_000001.bin, ...):
// ImageSet indexes them as one.
#ifndef UTILS_IMAGE_SHARD_H
#define UTILS_IMAGE_SHARD_H

#include <stdint.h>
#include <stdio.h>
#include <glob.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
#include "utils/utils.h"
#include "utils/paths.h"

#define IMAGE_SHARD_MAGIC 20241010
#define IMAGE_SHARD_VERSION 1
#define IMAGE_SHARD_HEADER_INTS 16
#define IMAGE_SHARD_MAX_SIDE 65536         // pixels of a height or a width
#define IMAGE_SHARD_MAX_CLASSES (1 << 24)

typedef struct {
    char* path;
    int fd;
    long count;
    int channels, height, width, num_classes;
    long image_bytes;   // H * W * C
    int32_t* labels;    // count labels
} ImageShard;

// Byte offset of image i's pixels.
static inline long image_shard_offset(const ImageShard* s, long i) {
    return (long)sizeof(int32_t) * (IMAGE_SHARD_HEADER_INTS + s->count) + i * s->image_bytes;
}

// Bytes of a shard of count images of height x width x channels with num_classes
// classes; fails, naming path, when a reader would refuse those dimensions or their
// product does not fit a long (6 images of 1696065956 x 1812699167, with their labels and
// the header, come to 384 bytes modulo 2^64).
static long image_shard_file_bytes(const char* path, long count, int channels, int height, int width,
                                   int num_classes) {
    if (count < 0 || count > INT32_MAX || channels < 1 || channels > 4 || height < 1 ||
        height > IMAGE_SHARD_MAX_SIDE || width < 1 || width > IMAGE_SHARD_MAX_SIDE || num_classes < 1 ||
        num_classes > IMAGE_SHARD_MAX_CLASSES)
        fail("%s: corrupt image shard header: count %ld, channels %d, size %dx%d, classes %d (allowed: "
             "channels 1 to 4, sides 1 to %d, classes 1 to %d)", path, count, channels, height, width,
             num_classes, IMAGE_SHARD_MAX_SIDE, IMAGE_SHARD_MAX_CLASSES);
    long image = (long)height * width * channels; // at most 2^34
    long pixels, total;
    if (__builtin_mul_overflow(count, image, &pixels) ||
        __builtin_add_overflow(pixels, (long)sizeof(int32_t) * (IMAGE_SHARD_HEADER_INTS + count), &total))
        fail("%s: %ld images of %dx%dx%d do not fit one file", path, count, height, width, channels);
    return total;
}

// Reads exactly n bytes at offset (thread-safe) or fails naming the file.
static void image_shard_pread(const ImageShard* s, void* buf, size_t n, long offset) {
    size_t done = 0;
    while (done < n) {
        ssize_t got = pread(s->fd, (char*)buf + done, n - done, (off_t)(offset + (long)done));
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) fail("%s: read error: %s", s->path, strerror(errno));
        if (got == 0) fail("%s: truncated: no data at byte %ld", s->path, offset + (long)done);
        done += (size_t)got;
    }
}

// Opens a shard, validates header, file size and labels, and loads the labels.
static void image_shard_open(ImageShard* s, const char* path) {
    s->path = (char*)malloc_check(strlen(path) + 1);
    strcpy(s->path, path);
    s->fd = open(path, O_RDONLY);
    if (s->fd < 0) fail("cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(s->fd, &st) != 0) fail("%s: cannot stat: %s", path, strerror(errno));
    const char* not_file = not_regular_file(&st);
    if (not_file != NULL) fail("%s: %s", path, not_file);
    int32_t h[IMAGE_SHARD_HEADER_INTS];
    if ((long)st.st_size < (long)sizeof(h))
        fail("%s: truncated image shard: %ld bytes, shorter than the %zu-byte header", path, (long)st.st_size, sizeof(h));
    s->count = 0;
    s->image_bytes = 0;
    image_shard_pread(s, h, sizeof(h), 0);
    if (h[0] != IMAGE_SHARD_MAGIC || h[1] != IMAGE_SHARD_VERSION)
        fail("%s: not an image shard: magic %d version %d (expected %d version %d)", path, h[0], h[1],
             IMAGE_SHARD_MAGIC, IMAGE_SHARD_VERSION);
    long expected = image_shard_file_bytes(path, h[2], h[3], h[4], h[5], h[6]);
    s->count = h[2];
    s->channels = h[3];
    s->height = h[4];
    s->width = h[5];
    s->num_classes = h[6];
    s->image_bytes = (long)s->height * s->width * s->channels;
    if ((long)st.st_size != expected)
        fail("%s: %s image shard: header says %ld images of %dx%dx%d (%ld bytes) but the file has %ld bytes",
             path, (long)st.st_size < expected ? "truncated" : "oversized", s->count, s->height, s->width,
             s->channels, expected, (long)st.st_size);
    s->labels = (int32_t*)malloc_check((size_t)s->count * sizeof(int32_t));
    image_shard_pread(s, s->labels, (size_t)s->count * sizeof(int32_t), (long)sizeof(h));
    for (long i = 0; i < s->count; i++)
        if (s->labels[i] < 0 || s->labels[i] >= s->num_classes)
            fail("%s: image %ld has label %d, outside [0, %d)", path, i, s->labels[i], s->num_classes);
}

// Copies images indices[0..n) into pixels (n x H x W x C) and their labels into labels
// (either may be NULL). Safe to call from several threads at once.
static void image_shard_read(const ImageShard* s, const long* indices, long n, uint8_t* pixels, int* labels) {
    for (long j = 0; j < n; j++) {
        long i = indices[j];
        if (i < 0 || i >= s->count) fail("%s: image index %ld outside [0, %ld)", s->path, i, s->count);
        if (pixels) image_shard_pread(s, pixels + j * s->image_bytes, (size_t)s->image_bytes, image_shard_offset(s, i));
        if (labels) labels[j] = s->labels[i];
    }
}

static void image_shard_close(ImageShard* s) {
    close(s->fd);
    free(s->labels);
    free(s->path);
}

// Writes n images (n x H x W x C) with their labels as one shard, atomically.
static void image_shard_write(const char* path, const uint8_t* pixels, const int32_t* labels, long n,
                              int channels, int height, int width, int num_classes) {
    image_shard_file_bytes(path, n, channels, height, width, num_classes);
    for (long i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= num_classes)
            fail("%s: image %ld has label %d, outside [0, %d)", path, i, labels[i], num_classes);
    int32_t h[IMAGE_SHARD_HEADER_INTS] = { IMAGE_SHARD_MAGIC, IMAGE_SHARD_VERSION, (int32_t)n, channels,
                                           height, width, num_classes };
    const char* tmp = tmp_path_of(path);
    FILE* f = fopen_check(tmp, "wb");
    fwrite_check(h, sizeof(int32_t), IMAGE_SHARD_HEADER_INTS, f, tmp);
    fwrite_check(labels, sizeof(int32_t), (size_t)n, f, tmp);
    fwrite_check(pixels, (size_t)height * width * channels, (size_t)n, f, tmp);
    fclose_check(f, tmp);
    rename_check(tmp, path);
}

// A data set of one or more shards of the same image size, indexed 0..count-1 in the
// order of the sorted shard paths.
typedef struct {
    int nshards;
    ImageShard* shards;
    long* first;        // global index of each shard's first image, plus count at the end
    long count;
    int channels, height, width, num_classes;
    long image_bytes;
} ImageSet;

// Opens every shard matching pattern (a glob such as "data/imagenet/train_*.bin", or one path).
static ImageSet image_set_open(const char* pattern) {
    glob_t g;
    int rc = glob(pattern, 0, NULL, &g);
    if (rc == GLOB_NOMATCH) fail("no image shards match %s", pattern);
    if (rc != 0) fail("cannot list %s", pattern);
    ImageSet set;
    set.nshards = (int)g.gl_pathc;
    set.shards = (ImageShard*)malloc_check((size_t)set.nshards * sizeof(ImageShard));
    set.first = (long*)malloc_check((size_t)(set.nshards + 1) * sizeof(long));
    set.count = 0;
    for (int k = 0; k < set.nshards; k++) {
        ImageShard* s = &set.shards[k];
        image_shard_open(s, g.gl_pathv[k]); // glob sorts the paths
        if (k == 0) {
            set.channels = s->channels; set.height = s->height; set.width = s->width;
            set.num_classes = s->num_classes; set.image_bytes = s->image_bytes;
        } else if (s->channels != set.channels || s->height != set.height || s->width != set.width ||
                   s->num_classes != set.num_classes) {
            fail("%s: images %dx%dx%d with %d classes, but %s has %dx%dx%d with %d classes", s->path,
                 s->height, s->width, s->channels, s->num_classes, set.shards[0].path, set.height, set.width,
                 set.channels, set.num_classes);
        }
        set.first[k] = set.count;
        set.count += s->count;
    }
    set.first[set.nshards] = set.count;
    globfree(&g);
    return set;
}

// Label of image i of the set.
static int image_set_label(const ImageSet* set, long i, int* shard_out, long* local_out) {
    if (i < 0 || i >= set->count) fail("image index %ld outside [0, %ld)", i, set->count);
    int lo = 0, hi = set->nshards - 1; // last shard whose first index is <= i
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (set->first[mid] <= i) lo = mid; else hi = mid - 1;
    }
    if (shard_out) *shard_out = lo;
    if (local_out) *local_out = i - set->first[lo];
    return set->shards[lo].labels[i - set->first[lo]];
}

// Copies images indices[0..n) of the set into pixels (n x H x W x C) and labels (either may
// be NULL). Safe to call from several threads at once.
static void image_set_read(const ImageSet* set, const long* indices, long n, uint8_t* pixels, int* labels) {
    for (long j = 0; j < n; j++) {
        int k;
        long local;
        int label = image_set_label(set, indices[j], &k, &local);
        if (pixels) image_shard_read(&set->shards[k], &local, 1, pixels + j * set->image_bytes, NULL);
        if (labels) labels[j] = label;
    }
}

static void image_set_close(ImageSet* set) {
    for (int k = 0; k < set->nshards; k++) image_shard_close(&set->shards[k]);
    free(set->shards);
    free(set->first);
}

#endif
