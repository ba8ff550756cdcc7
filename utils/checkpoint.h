// Checkpoints: everything needed to continue a run exactly, under checksums.
//   header: 16 int64 = magic, version, bytes per real, number of parameters N, step,
//           data position, rng state, configuration bytes, CRC-32 of the configuration,
//           zeros, and last the CRC-32 of the 15 words before it
//   then the configuration as JSON text (the run's settings: a checkpoint describes
//   itself), then the CRC-32 of every CHECKPOINT_BLOCK bytes of the parameters, of
//   AdamW's m and of its v (uint32, checkpoint_blocks(N) for each array), then the
//   parameters, m and v, N reals each.
// Readers bound every header field, require the exact file size and verify every
// checksum, naming the file and the damaged part (and its bytes). Written to
// "<path>.tmp", synced and renamed (utils/paths.h), so an interrupted write never
// replaces a good checkpoint.
#ifndef UTILS_CHECKPOINT_H
#define UTILS_CHECKPOINT_H

#include <stdint.h>
#include <unistd.h>
#include "utils/utils.h"
#include "utils/paths.h"
#include "utils/real.h"
#include "utils/crc32.h"

#define CHECKPOINT_MAGIC 20250101
#define CHECKPOINT_VERSION 2             // version 1 had no checksums
#define CHECKPOINT_HEADER 16
#define CHECKPOINT_BLOCK (1L << 20)      // bytes of an array under one checksum
#define CHECKPOINT_MAX_COUNT (1L << 40)  // bound on N, the step and the data position
#define CHECKPOINT_MAX_CONFIG (1L << 20) // bound on the configuration's bytes

typedef struct {
    long num_params;
    long step;          // optimizer updates done
    long data_pos;      // the trainer's position in its training data
    uint64_t rng_state; // the trainer's Rng
    char* config_json;  // NUL-terminated
} CheckpointInfo;

// Checksum blocks of an array of n reals (n within CHECKPOINT_MAX_COUNT).
static long checkpoint_blocks(long n) {
    return (n * (long)sizeof(real) + CHECKPOINT_BLOCK - 1) / CHECKPOINT_BLOCK;
}

// crcs[b] = the CRC-32 of block b of the n reals at x. One thread (about 450 MB/s): an
// OpenMP team would hang in a test's child process forked after the parent used one.
static void checkpoint_block_crcs(const real* x, long n, uint32_t* crcs) {
    long bytes = n * (long)sizeof(real), nb = checkpoint_blocks(n);
    for (long b = 0; b < nb; b++) {
        long start = b * CHECKPOINT_BLOCK;
        long len = bytes - start < CHECKPOINT_BLOCK ? bytes - start : CHECKPOINT_BLOCK;
        crcs[b] = crc32_update(0, (const char*)x + start, (size_t)len);
    }
}

static uint32_t checkpoint_header_crc(const int64_t* h) {
    return crc32_update(0, h, (CHECKPOINT_HEADER - 1) * sizeof(int64_t));
}

// Fails, naming path, when a count of header h is outside its bounds: a writer never
// writes what a reader would refuse, and a reader trusts no count before it is checked.
static void checkpoint_check_fields(const int64_t* h, const char* path) {
    static const struct { int index; const char* name; long max; } bounds[] = {
        {3, "the number of parameters", CHECKPOINT_MAX_COUNT}, {4, "the step", CHECKPOINT_MAX_COUNT},
        {5, "the data position", CHECKPOINT_MAX_COUNT}, {7, "the configuration's length", CHECKPOINT_MAX_CONFIG}};
    for (size_t i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++) {
        int64_t x = h[bounds[i].index];
        if (x < 0 || x > bounds[i].max)
            fail("%s: checkpoint header: %s is %lld, outside [0, %ld]", path, bounds[i].name, (long long)x,
                 bounds[i].max);
    }
}

// Bytes of the checkpoint that header h describes (its counts checked), or -1 if that
// does not fit a long.
static long checkpoint_file_bytes(const int64_t* h) {
    long arrays, crcs, total;
    if (__builtin_mul_overflow((long)h[3], 3 * (long)sizeof(real), &arrays) ||
        __builtin_mul_overflow(checkpoint_blocks(h[3]), 3 * (long)sizeof(uint32_t), &crcs) ||
        __builtin_add_overflow((long)(CHECKPOINT_HEADER * sizeof(int64_t)) + (long)h[7], arrays, &total) ||
        __builtin_add_overflow(total, crcs, &total))
        return -1;
    return total;
}

static void checkpoint_save(const char* path, const CheckpointInfo* info, const real* params,
                            const real* m, const real* v) {
    size_t config_bytes = strlen(info->config_json);
    int64_t header[CHECKPOINT_HEADER] = {0};
    header[0] = CHECKPOINT_MAGIC;
    header[1] = CHECKPOINT_VERSION;
    header[2] = sizeof(real);
    header[3] = info->num_params;
    header[4] = info->step;
    header[5] = info->data_pos;
    header[6] = (int64_t)info->rng_state;
    header[7] = (int64_t)config_bytes;
    header[8] = crc32_update(0, info->config_json, config_bytes);
    checkpoint_check_fields(header, path);
    header[CHECKPOINT_HEADER - 1] = checkpoint_header_crc(header);
    long nb = checkpoint_blocks(info->num_params);
    uint32_t* crcs = (uint32_t*)malloc_check(3 * (size_t)nb * sizeof(uint32_t));
    const real* arrays[3] = {params, m, v};
    for (int a = 0; a < 3; a++) checkpoint_block_crcs(arrays[a], info->num_params, crcs + a * nb);

    make_parent_dirs(path);
    const char* tmp = tmp_path_of(path);
    // A "<path>.tmp" already there is what a save that did not finish left (a crash, a
    // full disk): remove it first, so that its space is free again and a link left in
    // its place is not written through.
    if (unlink(tmp) == 0) fprintf(stderr, "removed %s, left by a save that did not finish\n", tmp);
    FILE* f = fopen_check(tmp, "wb");
    fwrite_check(header, sizeof(int64_t), CHECKPOINT_HEADER, f, tmp);
    fwrite_check(info->config_json, 1, config_bytes, f, tmp);
    fwrite_check(crcs, sizeof(uint32_t), 3 * (size_t)nb, f, tmp);
    for (int a = 0; a < 3; a++) fwrite_check(arrays[a], sizeof(real), (size_t)info->num_params, f, tmp);
    fclose_check(f, tmp);
    rename_check(tmp, path);
    free(crcs);
}

// Reads and validates the header and the configuration; the file size must match
// exactly. Returns the open file positioned at the checksums of the tensors.
static FILE* checkpoint_open(const char* path, CheckpointInfo* info) {
    long size;
    FILE* f = fopen_read_check(path, &size);
    int64_t h[CHECKPOINT_HEADER];
    if (size < (long)sizeof(h)) fail("%s: truncated checkpoint: %ld bytes, shorter than its header", path, size);
    fread_check(h, sizeof(int64_t), CHECKPOINT_HEADER, f, path);
    if (h[0] != CHECKPOINT_MAGIC)
        fail("%s: not a checkpoint (magic %lld, expected %d)", path, (long long)h[0], CHECKPOINT_MAGIC);
    if (h[1] == 1)
        fail("%s: checkpoint version 1, from before checkpoints carried checksums; this program reads "
             "version %d only (continue that run with the program that wrote it, or start afresh)",
             path, CHECKPOINT_VERSION);
    if (h[1] != CHECKPOINT_VERSION)
        fail("%s: checkpoint version %lld, this program reads version %d", path, (long long)h[1], CHECKPOINT_VERSION);
    if (h[2] != (int64_t)sizeof(real))
        fail("%s: checkpoint holds %lld-byte reals, this build uses %s", path, (long long)h[2], REAL_NAME);
    checkpoint_check_fields(h, path);
    long expected = checkpoint_file_bytes(h);
    if (size != expected)
        fail("%s: %s checkpoint: its header asks for %ld bytes, the file has %ld", path,
             size < expected ? "truncated" : "oversized", expected, size);
    if (checkpoint_header_crc(h) != (uint64_t)h[CHECKPOINT_HEADER - 1])
        fail("%s: the checkpoint header fails its checksum: the file is damaged", path);
    char* config = (char*)malloc_check((size_t)h[7] + 1);
    fread_check(config, 1, (size_t)h[7], f, path);
    config[h[7]] = '\0';
    if (crc32_update(0, config, (size_t)h[7]) != (uint64_t)h[8] || strlen(config) != (size_t)h[7])
        fail("%s: the configuration fails its checksum: the file is damaged", path);
    info->num_params = h[3];
    info->step = h[4];
    info->data_pos = h[5];
    info->rng_state = (uint64_t)h[6];
    info->config_json = config;
    return f;
}

// Reads the tensors after checkpoint_open and verifies their checksums; the caller has
// checked num_params.
static void checkpoint_read_tensors(FILE* f, const char* path, long num_params, real* params,
                                    real* m, real* v) {
    long nb = checkpoint_blocks(num_params);
    uint32_t* stored = (uint32_t*)malloc_check(3 * (size_t)nb * sizeof(uint32_t));
    uint32_t* got = (uint32_t*)malloc_check((size_t)nb * sizeof(uint32_t));
    fread_check(stored, sizeof(uint32_t), 3 * (size_t)nb, f, path);
    real* arrays[3] = {params, m, v};
    const char* names[3] = {"parameters", "AdamW moments (m)", "AdamW moments (v)"};
    for (int a = 0; a < 3; a++) {
        long at = ftell(f);
        fread_check(arrays[a], sizeof(real), (size_t)num_params, f, path);
        checkpoint_block_crcs(arrays[a], num_params, got);
        for (long b = 0; b < nb; b++) {
            if (got[b] == stored[a * nb + b]) continue;
            long first = b * CHECKPOINT_BLOCK / (long)sizeof(real);
            long last = (b + 1) * CHECKPOINT_BLOCK / (long)sizeof(real);
            if (last > num_params) last = num_params;
            fail("%s: the %s fail their checksum in bytes %ld to %ld of the file (reals %ld to %ld): "
                 "the file is damaged", path, names[a], at + first * (long)sizeof(real),
                 at + last * (long)sizeof(real) - 1, first, last - 1);
        }
    }
    free(stored);
    free(got);
    fclose_check(f, path);
}

#endif
