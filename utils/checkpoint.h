// Checkpoints: everything needed to continue a run exactly.
//   header: 16 int64 = magic, version, bytes per real, number of parameters,
//           step, data position, rng state, configuration bytes, 0...
//   then the configuration as JSON text (the run's settings: a checkpoint
//   describes itself), then parameters, AdamW m and v, each num_params reals.
// Written to "<path>.tmp" and renamed, so an interrupted write never replaces
// a good checkpoint.
#ifndef UTILS_CHECKPOINT_H
#define UTILS_CHECKPOINT_H

#include <stdint.h>
#include <sys/stat.h>
#include "utils/utils.h"
#include "utils/paths.h"
#include "utils/real.h"

#define CHECKPOINT_MAGIC 20250101
#define CHECKPOINT_VERSION 1
#define CHECKPOINT_HEADER 16

typedef struct {
    long num_params;
    long step;          // optimizer updates done
    long data_pos;      // the trainer's position in its training data
    uint64_t rng_state; // the trainer's Rng
    char* config_json;  // NUL-terminated
} CheckpointInfo;

static void checkpoint_save(const char* path, const CheckpointInfo* info, const real* params,
                            const real* m, const real* v) {
    make_parent_dirs(path);
    const char* tmp = tmp_path_of(path);
    FILE* f = fopen_check(tmp, "wb");
    int64_t header[CHECKPOINT_HEADER] = {0};
    header[0] = CHECKPOINT_MAGIC;
    header[1] = CHECKPOINT_VERSION;
    header[2] = sizeof(real);
    header[3] = info->num_params;
    header[4] = info->step;
    header[5] = info->data_pos;
    header[6] = (int64_t)info->rng_state;
    header[7] = (int64_t)strlen(info->config_json);
    fwrite_check(header, sizeof(int64_t), CHECKPOINT_HEADER, f, tmp);
    fwrite_check(info->config_json, 1, (size_t)header[7], f, tmp);
    fwrite_check(params, sizeof(real), (size_t)info->num_params, f, tmp);
    fwrite_check(m, sizeof(real), (size_t)info->num_params, f, tmp);
    fwrite_check(v, sizeof(real), (size_t)info->num_params, f, tmp);
    fclose_check(f, tmp);
    rename_check(tmp, path);
}

// Reads and validates the header and configuration; the file size must match
// exactly. Returns the open file positioned at the parameters.
static FILE* checkpoint_open(const char* path, CheckpointInfo* info) {
    FILE* f = fopen_check(path, "rb");
    struct stat st;
    if (fstat(fileno(f), &st) != 0) fail("%s: cannot stat: %s", path, strerror(errno));
    int64_t header[CHECKPOINT_HEADER];
    if ((long)st.st_size < (long)sizeof(header))
        fail("%s: truncated checkpoint: %ld bytes, shorter than its header", path, (long)st.st_size);
    fread_check(header, sizeof(int64_t), CHECKPOINT_HEADER, f, path);
    if (header[0] != CHECKPOINT_MAGIC)
        fail("%s: not a checkpoint (magic %lld, expected %d)", path, (long long)header[0], CHECKPOINT_MAGIC);
    if (header[1] != CHECKPOINT_VERSION)
        fail("%s: checkpoint version %lld, this program reads version %d", path, (long long)header[1],
             CHECKPOINT_VERSION);
    if (header[2] != (int64_t)sizeof(real))
        fail("%s: checkpoint holds %lld-byte reals, this build uses %s", path, (long long)header[2], REAL_NAME);
    if (header[3] < 0 || header[7] < 0) fail("%s: corrupt checkpoint header", path);
    long expected = (long)sizeof(header) + (long)header[7] + 3 * (long)header[3] * (long)sizeof(real);
    if ((long)st.st_size != expected)
        fail("%s: %s checkpoint: expected %ld bytes, the file has %ld", path,
             (long)st.st_size < expected ? "truncated" : "oversized", expected, (long)st.st_size);
    info->num_params = header[3];
    info->step = header[4];
    info->data_pos = header[5];
    info->rng_state = (uint64_t)header[6];
    info->config_json = (char*)malloc_check((size_t)header[7] + 1);
    fread_check(info->config_json, 1, (size_t)header[7], f, path);
    info->config_json[header[7]] = '\0';
    return f;
}

// Reads the tensors after checkpoint_open; the caller has checked num_params.
static void checkpoint_read_tensors(FILE* f, const char* path, long num_params, real* params,
                                    real* m, real* v) {
    fread_check(params, sizeof(real), (size_t)num_params, f, path);
    fread_check(m, sizeof(real), (size_t)num_params, f, path);
    fread_check(v, sizeof(real), (size_t)num_params, f, path);
    fclose_check(f, path);
}

#endif
