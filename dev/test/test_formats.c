// Tests of the file formats' trust in their input and of the writers' durability:
//  - CRC-32 (utils/crc32.h): its table against the bitwise definition, known vectors;
//  - checkpoints (utils/checkpoint.h): a round trip over several checksum blocks; every
//    header field bounded (data position -1000, step -1 and 2^62, absurd counts, a count
//    that disagrees with the file size); a damaged byte in the parameters, either AdamW
//    moment, the configuration or the header named; a version-1 file and a folder
//    refused with a clear message; a save that would write what a load refuses;
//  - writes: the file synced before its rename and its folder after (fsync and rename
//    are interposed below to record the order), a partial "<path>.tmp" removed first;
//  - settings (utils/config.h): text after the JSON object, a field given twice,
//    \u0000 in a string, non-finite numbers from JSON and the command line, integers
//    out of range, a folder or a file with a NUL byte given as the configuration.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include "utils/crc32.h"
#include "utils/checkpoint.h"
#include "utils/config.h"
#include "utils/rng.h"
#include "dev/test/testing.h"
#include "dev/test/capture.h"

static char tmp[256], out[16384];

static char* tmp_path(const char* name) {
    static char paths[8][512];
    static int k = 0;
    char* p = paths[k++ % 8];
    snprintf(p, 512, "%s/%s", tmp, name);
    return p;
}

// ---- fsync and rename, recorded -------------------------------------------------
// These definitions take the place of the C library's for this program, so the
// headers' calls are logged ("sync PATH", "rename FROM TO") before they are made.

static char io_log[8192];

static void io_log_add(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
static void io_log_add(const char* fmt, ...) {
    size_t n = strlen(io_log);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(io_log + n, sizeof(io_log) - n, fmt, ap);
    va_end(ap);
}

int fsync(int fd) {
    char link[64], target[512];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof(target) - 1);
    target[n > 0 ? n : 0] = '\0';
    io_log_add("sync %s\n", target);
    return (int)syscall(SYS_fsync, fd);
}

int rename(const char* from, const char* to) {
    io_log_add("rename %s %s\n", from, to);
    return renameat(AT_FDCWD, from, AT_FDCWD, to);
}

// ---- CRC-32 -----------------------------------------------------------------------

static uint32_t crc32_bitwise(const unsigned char* p, size_t n) {
    uint32_t crc = 0xFFFFFFFF;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) crc = crc & 1 ? (crc >> 1) ^ 0xEDB88320 : crc >> 1;
    }
    return ~crc;
}

static void test_crc32(void) {
    int table_ok = 1;
    for (int i = 0; i < 256; i++) {
        uint32_t c = (uint32_t)i;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0xEDB88320 : c >> 1;
        table_ok &= CRC32_TABLE[i] == c;
    }
    check(table_ok, "crc32: the table is the bitwise definition");
    struct { const char* text; uint32_t crc; } vectors[] = {
        {"", 0x00000000}, {"a", 0xe8b7be43}, {"123456789", 0xcbf43926},
        {"The quick brown fox jumps over the lazy dog", 0x414fa339}};
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        uint32_t got = crc32_update(0, vectors[i].text, strlen(vectors[i].text));
        check(got == vectors[i].crc, "crc32(\"%s\") = %08x (known value %08x)", vectors[i].text, got, vectors[i].crc);
    }
    enum { N = 100003 };
    static unsigned char data[N];
    for (int i = 0; i < N; i++) data[i] = (unsigned char)(i * 131 + (i >> 7));
    uint32_t whole = crc32_update(0, data, N), parts = crc32_update(crc32_update(0, data, 4099), data + 4099, N - 4099);
    check(whole == crc32_bitwise(data, N) && parts == whole,
          "crc32 of %d bytes: %08x, as the bitwise definition, and the same in two parts", N, whole);
}

// ---- checkpoints ------------------------------------------------------------------

// Parameters over two checksum blocks (262,144 float reals each), so a damaged block is
// told from its neighbours.
enum { NP = 300000 };
static real params[NP], moment_m[NP], moment_v[NP];
static const char* CONFIG = "{\"n_layer\":2,\"attention\":\"flow\"}";

static void save_good(const char* path) {
    CheckpointInfo info = {NP, 1234, 56789, 0xdeadbeefcafef00dULL, (char*)CONFIG};
    checkpoint_save(path, &info, params, moment_m, moment_v);
}

static const char* load_path;
static void load_checkpoint(void* arg) {
    static real back[3][NP];
    CheckpointInfo info;
    FILE* f = checkpoint_open(load_path, &info);
    checkpoint_read_tensors(f, load_path, info.num_params, back[0], back[1], back[2]);
    free(info.config_json);
}

static void write_at(const char* path, long offset, const void* data, size_t n) {
    int fd = open(path, O_WRONLY);
    if (fd < 0 || pwrite(fd, data, n, offset) != (ssize_t)n) { perror(path); exit(1); }
    close(fd);
}

static void flip_byte(const char* path, long offset) {
    int fd = open(path, O_RDWR);
    unsigned char c;
    if (fd < 0 || pread(fd, &c, 1, offset) != 1) { perror(path); exit(1); }
    c ^= 0x10;
    if (pwrite(fd, &c, 1, offset) != 1) { perror(path); exit(1); }
    close(fd);
}

// Loads path in a child; checks that it fails naming the file and saying `want`.
static void expect_refused(const char* what, const char* path, const char* want) {
    load_path = path;
    int rc = run_captured(load_checkpoint, NULL, out, sizeof(out));
    check(rc == 1 && strstr(out, path) != NULL && strstr(out, want) != NULL, "checkpoint: %s refused: %s", what,
          error_line(out));
}

static void test_checkpoint_round_trip(void) {
    Rng rng = rng_make(5);
    for (long i = 0; i < NP; i++) {
        params[i] = (real)rng_normal(&rng);
        moment_m[i] = (real)rng_normal(&rng);
        moment_v[i] = (real)rng_uniform(&rng);
    }
    char* path = tmp_path("good.bin");
    save_good(path);
    static real back[3][NP];
    CheckpointInfo info;
    FILE* f = checkpoint_open(path, &info);
    checkpoint_read_tensors(f, path, info.num_params, back[0], back[1], back[2]);
    int same = !memcmp(back[0], params, sizeof(params)) && !memcmp(back[1], moment_m, sizeof(params)) &&
               !memcmp(back[2], moment_v, sizeof(params));
    check(same && info.num_params == NP && info.step == 1234 && info.data_pos == 56789 &&
          info.rng_state == 0xdeadbeefcafef00dULL && !strcmp(info.config_json, CONFIG),
          "checkpoint: %d parameters over %ld checksum blocks, moments, position and configuration round trip",
          NP, checkpoint_blocks(NP));
    free(info.config_json);
}

// Byte offsets in a checkpoint of NP reals with CONFIG: the checksums, then the arrays.
static long checksums_at(void) { return CHECKPOINT_HEADER * 8 + (long)strlen(CONFIG); }
static long array_at(int a) { return checksums_at() + 3 * 4 * checkpoint_blocks(NP) + (long)a * NP * (long)sizeof(real); }

static void test_checkpoint_header_bounds(void) {
    struct { const char* what; int index; int64_t value; const char* want; } cases[] = {
        {"data position -1000", 5, -1000, "the data position is -1000, outside [0, 1099511627776]"},
        {"step -1", 4, -1, "the step is -1, outside"},
        {"step 2^62", 4, (int64_t)1 << 62, "the step is 4611686018427387904, outside"},
        {"2^50 parameters", 3, (int64_t)1 << 50, "the number of parameters is 1125899906842624, outside"},
        {"a negative number of parameters", 3, -7, "the number of parameters is -7, outside"},
        {"a configuration of 2^40 bytes", 7, (int64_t)1 << 40, "the configuration's length is 1099511627776, outside"},
        {"one parameter more than the file holds", 3, NP + 1, "truncated checkpoint"},
        {"a configuration shorter than the file's", 7, 5, "oversized checkpoint"},
        {"another rng state", 6, 42, "the checkpoint header fails its checksum"},
    };
    char* path = tmp_path("bounds.bin");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        save_good(path);
        write_at(path, cases[i].index * 8, &cases[i].value, 8);
        expect_refused(cases[i].what, path, cases[i].want);
    }
}

static void test_checkpoint_damage(void) {
    char* path = tmp_path("damaged.bin");
    long block_reals = CHECKPOINT_BLOCK / (long)sizeof(real);
    char want[200];
    snprintf(want, sizeof(want), "the parameters fail their checksum in bytes %ld to %ld of the file (reals %ld to %d)",
             array_at(0) + CHECKPOINT_BLOCK, array_at(0) + NP * (long)sizeof(real) - 1, block_reals, NP - 1);
    save_good(path);
    flip_byte(path, array_at(0) + (block_reals + 10) * (long)sizeof(real));
    expect_refused("a damaged byte in the parameters' second block", path, want);
    save_good(path);
    flip_byte(path, array_at(1) + 3);
    expect_refused("a damaged byte in AdamW's m", path, "the AdamW moments (m) fail their checksum in bytes");
    save_good(path);
    flip_byte(path, array_at(2) + NP * (long)sizeof(real) - 1);
    expect_refused("a damaged last byte of AdamW's v", path, "the AdamW moments (v) fail their checksum");
    save_good(path);
    flip_byte(path, CHECKPOINT_HEADER * 8 + 3);
    expect_refused("a damaged byte in the configuration", path, "the configuration fails its checksum");
    save_good(path);
    flip_byte(path, checksums_at() + 1);
    expect_refused("a damaged stored checksum", path, "the parameters fail their checksum in bytes");
}

static void save_negative_position(void* arg) {
    CheckpointInfo info = {NP, 10, -5, 0, (char*)CONFIG};
    checkpoint_save(load_path, &info, params, moment_m, moment_v);
}

static void test_checkpoint_refusals(void) {
    // Version 1: the same header without checksums, then configuration and tensors.
    char* path = tmp_path("v1.bin");
    int64_t h[CHECKPOINT_HEADER] = {CHECKPOINT_MAGIC, 1, sizeof(real), 2, 7, 0, 0, 2};
    FILE* f = fopen_check(path, "wb");
    fwrite_check(h, 8, CHECKPOINT_HEADER, f, path);
    fwrite_check("{}", 1, 2, f, path);
    fwrite_check(params, sizeof(real), 6, f, path);
    fclose_check(f, path);
    expect_refused("version 1", path, "checkpoint version 1, from before checkpoints carried checksums");

    char* folder = tmp_path("folder.bin");
    mkdir(folder, 0755);
    expect_refused("a folder", folder, "a folder, not a file");

    // A save refuses what a load would: nothing is written.
    char* bad = tmp_path("negative.bin");
    load_path = bad;
    int rc = run_captured(save_negative_position, NULL, out, sizeof(out));
    check(rc == 1 && strstr(out, "the data position is -5") && access(bad, F_OK) != 0 &&
          access(tmp_path("negative.bin.tmp"), F_OK) != 0,
          "checkpoint: a save with data position -5 refused, nothing written: %s", error_line(out));
}

static void test_durable_writes(void) {
    // A partial "<path>.tmp" of an earlier save, here a link to a file it must not touch.
    char* path = tmp_path("durable.bin");
    char* victim = tmp_path("victim.txt");
    char tmp_file[600];
    snprintf(tmp_file, sizeof(tmp_file), "%s.tmp", path);
    write_text(victim, "not a checkpoint");
    if (symlink(victim, tmp_file) != 0) perror("symlink");
    io_log[0] = '\0';
    save_good(path);
    char want[2048];
    snprintf(want, sizeof(want), "sync %s\nrename %s %s\nsync %s\n", tmp_file, tmp_file, path, tmp);
    check(strcmp(io_log, want) == 0, "checkpoint: the file synced, renamed, then its folder synced [%s]", io_log);
    char* text = slurp(victim);
    check(text && !strcmp(text, "not a checkpoint") && access(tmp_file, F_OK) != 0,
          "checkpoint: a partial .tmp of an earlier save removed, not written through");
    free(text);
}

// ---- settings ---------------------------------------------------------------------

typedef struct {
    int steps;
    double lr;
    int flip;
    char name[CONFIG_STR];
    int context_window;
} Settings;

#define F(field, type, value, allowed, help) {#field, type, offsetof(Settings, field), value, allowed, 0, help}
static const ConfigField FIELDS[] = {
    F(steps, CFG_INT, "10", "[0, inf)", "updates"),
    F(lr, CFG_FLOAT, "0.001", "(0, inf)", "learning rate"),
    F(flip, CFG_BOOL, "true", NULL, "flips"),
    F(name, CFG_STRING, "run", NULL, "a name"),
    F(context_window, CFG_INT, "0", "[0, inf)", "context"),
};
#undef F
static const ConfigSchema SCHEMA = {FIELDS, sizeof(FIELDS) / sizeof(FIELDS[0])};

static Settings settings;
static const char* json_text;
static void apply_json(void* arg) { config_apply_json(&SCHEMA, &settings, json_text, "test.json"); }
static const char* arg_name;
static void apply_arg(void* arg) { config_set_arg(&SCHEMA, &settings, arg_name, json_text); }
static void load_file(void* arg) { config_load_file(&SCHEMA, &settings, json_text); }
static void parse_mean(void* arg) {
    double mean[3];
    config_parse_double_list(json_text, mean, 3, "mean");
}

static void expect_json(const char* what, const char* json, const char* want) {
    json_text = json;
    config_set_defaults(&SCHEMA, &settings, sizeof(settings));
    int rc = run_captured(apply_json, NULL, out, sizeof(out));
    if (want == NULL) check(rc == 0, "settings: %s accepted%s%s", what, rc == 0 ? "" : ": ", rc == 0 ? "" : error_line(out));
    else check(rc == 1 && strstr(out, "test.json: ") && strstr(out, want), "settings: %s refused: %s", what, error_line(out));
}

static void test_settings(void) {
    expect_json("an object and white space", "{\"steps\": 5, \"name\": \"a\\\\u0000b\"} \n\t", NULL);
    expect_json("text after the object", "{\"steps\": 5} x", "text after the JSON object: \"x\"");
    expect_json("a second object", "{\"steps\": 5} {\"steps\": 6}", "text after the JSON object");
    expect_json("a field given twice", "{\"steps\": 5, \"lr\": 0.1, \"steps\": 6}", "field \"steps\" is given twice");
    expect_json("a field given twice in two spellings", "{\"context_window\": 5, \"context-window\": 6}",
                "field \"context_window\" is given twice");
    expect_json("\\u0000 in a string", "{\"name\": \"ab\\u0000cd\"}", "a string holds \\u0000");
    expect_json("\\u0000 in a field's name", "{\"steps\\u0000x\": 5}", "a string holds \\u0000");
    expect_json("1e309 for a number", "{\"lr\": 1e309}", "field \"lr\" must be a finite number");
    expect_json("-1e309 for a number", "{\"lr\": -1e309}", "field \"lr\" must be a finite number");
    expect_json("1e30 for an integer", "{\"steps\": 1e30}", "field \"steps\" must be an integer, got 1e+30");
    expect_json("2^31 for an integer", "{\"steps\": 2147483648}", "field \"steps\" must be an integer");
    expect_json("-2^31 - 1 for an integer", "{\"steps\": -2147483649}", "field \"steps\" must be an integer");
    expect_json("2.5 for an integer", "{\"steps\": 2.5}", "field \"steps\" must be an integer");
    expect_json("-2^31 for an integer", "{\"steps\": -2147483648}", NULL);

    const char* numbers[] = {"nan", "inf", "-inf", "infinity", "1e309"};
    for (size_t i = 0; i < sizeof(numbers) / sizeof(numbers[0]); i++) {
        arg_name = "lr";
        json_text = numbers[i];
        int rc = run_captured(apply_arg, NULL, out, sizeof(out));
        check(rc == 1 && strstr(out, "--lr must be a finite number"), "settings: --lr %s refused: %s", numbers[i],
              error_line(out));
    }

    json_text = tmp;
    int rc = run_captured(load_file, NULL, out, sizeof(out));
    char want[600];
    snprintf(want, sizeof(want), "%s: a folder, not a file", tmp);
    check(rc == 1 && strstr(out, want), "settings: a folder as the configuration refused: %s", error_line(out));
    char* nul = tmp_path("nul.json");
    FILE* f = fopen_check(nul, "wb");
    fwrite_check("{}\0{\"steps\": 1}", 1, 16, f, nul);
    fclose_check(f, nul);
    json_text = nul;
    rc = run_captured(load_file, NULL, out, sizeof(out));
    check(rc == 1 && strstr(out, nul) && strstr(out, "NUL byte"), "settings: a NUL byte in the file refused: %s",
          error_line(out));
    json_text = "nan,0.5,0.5";
    rc = run_captured(parse_mean, NULL, out, sizeof(out));
    check(rc == 1 && strstr(out, "mean must be 3 finite numbers"), "settings: a NaN in a list of numbers refused: %s",
          error_line(out));
}

int main(void) {
    make_temp_dir(tmp, sizeof(tmp), "test_formats");
    test_crc32();
    test_checkpoint_round_trip();
    test_checkpoint_header_bounds();
    test_checkpoint_damage();
    test_checkpoint_refusals();
    test_durable_writes();
    test_settings();
    remove_temp_dir(tmp);
    return testing_exit_code();
}
