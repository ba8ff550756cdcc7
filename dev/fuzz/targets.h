// The fuzz targets: each feeds one input, as a file, to one of the readers of untrusted
// data and then uses what it read, the way the programs do. Built two ways:
//  - dev/fuzz/fuzz.c, with -DFUZZING under libFuzzer (make fuzz): fail() returns to
//    fuzz_run() instead of exiting, so a refused input is an ordinary outcome and only a
//    crash or a sanitizer report is a finding;
//  - dev/test/test_fuzz_inputs.c, a plain build (make test): each committed input is run
//    in a child process, which must exit 0 (read) or 1 (refused with a message).
// A target that reads a file back after writing it calls abort() when the two differ.
#ifndef DEV_FUZZ_TARGETS_H
#define DEV_FUZZ_TARGETS_H

#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include "utils/utils.h"
#include "utils/checkpoint.h"
#include "utils/config.h"
#include "utils/token_shard.h"
#include "utils/token_loader.h"
#include "utils/image_shard.h"
#include "utils/image_loader.h"
#include "utils/vocab.h"
#include "utils/image_decode.h"

// A file of this process's own, in memory where /dev/shm exists; removed at exit.
static char fuzz_path_buf[64];
static void fuzz_remove_files(void) {
    unlink(fuzz_path_buf);
    unlink(tmp_path_of(fuzz_path_buf));
}
static const char* fuzz_path(void) {
    if (fuzz_path_buf[0] == '\0') {
        snprintf(fuzz_path_buf, sizeof(fuzz_path_buf), "%s/flowformer_fuzz_%d",
                 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", (int)getpid());
        atexit(fuzz_remove_files);
    }
    return fuzz_path_buf;
}

// Writes the input to fuzz_path() and returns that path.
static const char* fuzz_file(const uint8_t* data, size_t size) {
    const char* path = fuzz_path();
    FILE* f = fopen_check(path, "wb");
    fwrite_check(data, 1, size, f, path);
    fclose_check(f, path);
    return path;
}

static void fuzz_token_shard(const uint8_t* data, size_t size) {
    const char* path = fuzz_file(data, size);
    long n;
    TokenData d;
    d.tokens = token_shard_load(path, 0, &n);
    d.n = n;
    if (n >= 5) {
        int inputs[2 * 4], targets[2 * 4];
        long pos = n / 2;
        Rng rng = rng_make(1);
        next_batch(&d, 2, 0, 2, 4, 0, &rng, &pos, inputs, targets);
        next_batch(&d, 2, 0, 2, 4, 1, &rng, &pos, inputs, targets);
    }
    free(d.tokens);
}

static void fuzz_image_shard(const uint8_t* data, size_t size) {
    ImageLoader d = image_loader_open(fuzz_file(data, size), 2);
    const int which[2] = {0, 1};
    image_loader_next(&d, 7, d.set.count - 1, which, 2); // the last image, then the next epoch's first
    image_loader_range(&d, 0, 1);
    image_loader_close(&d);
}

static void fuzz_checkpoint(const uint8_t* data, size_t size) {
    const char* path = fuzz_file(data, size);
    CheckpointInfo info;
    FILE* f = checkpoint_open(path, &info);
    real* arrays = (real*)malloc_check(3 * (size_t)info.num_params * sizeof(real));
    checkpoint_read_tensors(f, path, info.num_params, arrays, arrays + info.num_params,
                            arrays + 2 * info.num_params);
    free(arrays);
    free(info.config_json);
}

// Settings of every type, with intervals and choices.
typedef struct {
    int steps, flip;
    double lr;
    char attention[CONFIG_STR], dims[CONFIG_STR];
} FuzzSettings;
#define FUZZ_FIELD(field, type, value, allowed) {#field, type, offsetof(FuzzSettings, field), value, allowed, 0, "-"}
static const ConfigField FUZZ_FIELDS[] = {
    FUZZ_FIELD(steps, CFG_INT, "10", "[0, inf)"),
    FUZZ_FIELD(flip, CFG_BOOL, "true", NULL),
    FUZZ_FIELD(lr, CFG_FLOAT, "0.001", "(0, 1]"),
    FUZZ_FIELD(attention, CFG_STRING, "flow", "flow|softmax|linear"),
    FUZZ_FIELD(dims, CFG_STRING, "8,16", NULL),
};
#undef FUZZ_FIELD
static const ConfigSchema FUZZ_SCHEMA = {FUZZ_FIELDS, sizeof(FUZZ_FIELDS) / sizeof(FUZZ_FIELDS[0])};

// A configuration file; what it sets must come back the same through JSON.
static void fuzz_config(const uint8_t* data, size_t size) {
    FuzzSettings a, b;
    config_set_defaults(&FUZZ_SCHEMA, &a, sizeof(a));
    config_load_file(&FUZZ_SCHEMA, &a, fuzz_file(data, size));
    config_check(&FUZZ_SCHEMA, &a);
    int dims[4];
    config_parse_int_list(a.dims, dims, 4, "dims");
    char* json = config_to_json(&FUZZ_SCHEMA, &a, 0);
    config_set_defaults(&FUZZ_SCHEMA, &b, sizeof(b));
    config_apply_json(&FUZZ_SCHEMA, &b, json, "round trip");
    char* again = config_to_json(&FUZZ_SCHEMA, &b, 0);
    if (strcmp(json, again) != 0) abort();
    free(json);
    free(again);
}

// A vocabulary file; written and read again, it must give the same tokens.
static void fuzz_vocab(const uint8_t* data, size_t size) {
    const char* path = fuzz_file(data, size);
    Vocab v = vocab_load(path);
    vocab_write(path, v.tokens, v.size);
    Vocab again = vocab_load(path);
    if (again.size != v.size) abort();
    for (long i = 0; i < v.size; i++)
        if (strcmp(v.tokens[i], again.tokens[i]) != 0) abort();
    int ids[16];
    vocab_encode(&again, "the cat sat", ids, 16, path);
    vocab_free(&v);
    vocab_free(&again);
}

// An image file, decoded (up to a megapixel, to keep each run short) and resized.
static void fuzz_image_decode(const uint8_t* data, size_t size) {
    int w, h;
    const char* why;
    unsigned char* img = decode_rgb_memory(data, (long)size, 1L << 20, &w, &h, &why);
    if (img == NULL) return;
    unsigned char out[16 * 16 * 3];
    resize_crop(img, w, h, 16, out);
    stbi_image_free(img);
}

typedef struct {
    const char* name; // the folder of its inputs under dev/fuzz/corpus/ and dev/fuzz/regressions/
    void (*run)(const uint8_t* data, size_t size);
} FuzzTarget;

static const FuzzTarget FUZZ_TARGETS[] = {
    {"token_shard", fuzz_token_shard}, {"image_shard", fuzz_image_shard}, {"checkpoint", fuzz_checkpoint},
    {"config", fuzz_config},           {"vocab", fuzz_vocab},             {"image_decode", fuzz_image_decode},
};

#endif
