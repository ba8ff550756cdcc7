// Tests of the train_vit_flow program itself, on small image shards made here:
//  - --resume continues exactly: 20 updates straight and 10 + resume + 10 give
//    bitwise identical losses, with shuffling, crops, flips, mixup/cutmix,
//    dropout and drop-path all on and an epoch boundary inside the run
//  - a short run learns (validation top-1 well above chance), --mode eval
//    reproduces its final evaluation, --visualize writes a PNG
//  - bad input stops with a message naming the file, a non-zero exit status and
//    nothing overwritten: shards whose channels, size or class count do not match
//    the configuration, a label out of range, a checkpoint of another model, a
//    truncated checkpoint
#include <stdint.h>
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>
#include "utils/image_shard.h"
#include "utils/rng.h"
#include "utils/checkpoint.h"
#include "dev/test/testing.h"
#include "dev/test/capture.h"

#define OUT_CAP 65536
static char out[OUT_CAP];
static char dir[256];
static char common[2048];

// The folder of the trainer under test: the Makefile's TRAINER_DIR (make sanitize has its own).
#ifndef TRAINER_DIR
#define TRAINER_DIR "."
#endif

// Runs TRAINER_DIR/train_vit_flow with the space-separated arguments; returns the exit status.
static int run_trainer(const char* args) { return run_args(TRAINER_DIR "/train_vit_flow", args, out, OUT_CAP); }

// The text after `key` in the line of a JSON-lines log that starts with `prefix`, up to ',' or '}'.
static void field_at(const char* log, const char* prefix, const char* key, char* value, size_t cap) {
    value[0] = '\0';
    const char* p = log ? strstr(log, prefix) : NULL;
    if (p == NULL) return;
    const char* end = strchr(p, '\n');
    const char* k = strstr(p, key);
    if (k == NULL || (end != NULL && k > end)) return;
    k += strlen(key);
    size_t n = strcspn(k, ",}");
    if (n >= cap) n = cap - 1;
    memcpy(value, k, n);
    value[n] = '\0';
}

// n images of side S with `channels` channels in K classes with noise added:
// horizontal stripes, vertical stripes, a checkerboard, flat grey (each 2x2 patch
// holds its class's pattern; crops and flips would change its phase, so the
// learning test turns them off).
static void make_images(uint8_t* px, int32_t* labels, long n, int S, int channels, int K, uint64_t seed) {
    Rng r = rng_make(seed);
    for (long i = 0; i < n; i++) {
        int k = (int)(i % K);
        labels[i] = k;
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) {
                int sign = k == 0 ? (y % 2 ? 1 : -1) : k == 1 ? (x % 2 ? 1 : -1) : k == 2 ? ((x + y) % 2 ? 1 : -1) : 0;
                for (int c = 0; c < channels; c++)
                    px[((i * S + y) * S + x) * channels + c] = (uint8_t)(118 + 60 * sign + rng_below(&r, 20));
            }
    }
}

static void test_resume(void) {
    char args[4096], a_log[300], b_log[300];
    snprintf(a_log, sizeof(a_log), "%s/a.jsonl", dir);
    snprintf(b_log, sizeof(b_log), "%s/b.jsonl", dir);
    snprintf(args, sizeof(args), "%s --steps 20 --mixup 0.8 --cutmix 1.0 --dropout 0.1 --drop_path 0.2 "
             "--checkpoint_interval 10 --checkpoint %s/a_{step}.bin --log_file %s", common, dir, a_log);
    int rc_a = run_trainer(args);
    if (rc_a != 0) printf("%s\n", out);
    snprintf(args, sizeof(args), "--resume %s/a_10.bin --checkpoint %s/b_{step}.bin --log_file %s", dir, dir, b_log);
    int rc_b = run_trainer(args);
    if (rc_b != 0) printf("%s\n", out);
    char* la = slurp(a_log);
    char* lb = slurp(b_log);
    int compared = 0;
    char prefix[64], va[64], vb[64];
    for (int step = 11; step <= 20; step++) {
        snprintf(prefix, sizeof(prefix), "{\"step\":%d,\"epoch\"", step);
        field_at(la, prefix, "\"loss\":", va, sizeof(va));
        field_at(lb, prefix, "\"loss\":", vb, sizeof(vb));
        compared += va[0] != '\0' && strcmp(va, vb) == 0;
    }
    field_at(la, "{\"step\":20,\"epoch\":4.0000,\"val_loss\"", "\"top1\":", va, sizeof(va));
    field_at(lb, "{\"step\":20,\"epoch\":4.0000,\"val_loss\"", "\"top1\":", vb, sizeof(vb));
    check(rc_a == 0 && rc_b == 0 && compared == 10 && va[0] && strcmp(va, vb) == 0,
          "resume: updates 11-20 straight and resumed give bitwise equal losses (%d of 10) and top-1 (%s, %s)",
          compared, va, vb);
    free(la);
    free(lb);
}

static void test_learns(void) {
    char args[4096], log_path[300], ckpt[300], png[300], img[300];
    snprintf(log_path, sizeof(log_path), "%s/learn.jsonl", dir);
    snprintf(ckpt, sizeof(ckpt), "%s/learn.bin", dir);
    snprintf(args, sizeof(args), "%s --steps 40 --pad 0 --flip false --lr 3e-3 --checkpoint %s --log_file %s", common, ckpt, log_path);
    int rc = run_trainer(args);
    char* log = slurp(log_path);
    char top1[64];
    field_at(log, "{\"step\":40,\"epoch\":8.0000,\"val_loss\"", "\"top1\":", top1, sizeof(top1));
    check(rc == 0 && strtod(top1, NULL) >= 75, "learns: validation top-1 %s%% after 40 updates (chance 25%%)", top1);
    free(log);
    snprintf(args, sizeof(args), "--resume %s --mode eval --log_file %s/eval.jsonl", ckpt, dir);
    rc = run_trainer(args);
    char want[80];
    snprintf(want, sizeof(want), "top-1 %.2f%%", strtod(top1, NULL));
    check(rc == 0 && strstr(out, want) != NULL, "--mode eval reproduces the run's final %s", want);
    // evaluation scores every image whatever eval_images the training used, and logs only when asked
    char* before = slurp(log_path);
    snprintf(args, sizeof(args), "--resume %s --mode eval --eval_images 7", ckpt);
    rc = run_trainer(args);
    char* after = slurp(log_path);
    int untouched = before && after && strcmp(before, after) == 0;
    check(rc == 0 && strstr(out, "| 24 images |") && untouched,
          "--mode eval scores all 24 validation images, the training log untouched: %s", untouched ? "yes" : "no");
    free(before);
    free(after);
    // a model that is not a number (a diverged run's) does not evaluate to 100%
    char nan_ckpt[300];
    snprintf(nan_ckpt, sizeof(nan_ckpt), "%s/nan.bin", dir);
    CheckpointInfo info;
    FILE* cf = checkpoint_open(ckpt, &info);
    real* p = (real*)malloc_check(3 * (size_t)info.num_params * sizeof(real));
    checkpoint_read_tensors(cf, ckpt, info.num_params, p, p + info.num_params, p + 2 * info.num_params);
    for (long i = 0; i < info.num_params; i++) p[i] = NAN;
    checkpoint_save(nan_ckpt, &info, p, p + info.num_params, p + 2 * info.num_params);
    free(p);
    free(info.config_json);
    snprintf(args, sizeof(args), "--resume %s --mode eval", nan_ckpt);
    rc = run_trainer(args);
    check(rc != 0 && strstr(out, "not finite") && !strstr(out, "top-1 100"),
          "a model of NaNs: evaluation stops, \"not finite\" [%s]", error_line(out));

    // a 12x10 colour PNG to visualize
    snprintf(img, sizeof(img), "%s/picture.png", dir);
    unsigned char pixels[120 * 3];
    for (int i = 0; i < 120; i++) { pixels[3 * i] = (unsigned char)(i * 2); pixels[3 * i + 1] = 90; pixels[3 * i + 2] = (unsigned char)(255 - i); }
    stbi_write_png(img, 12, 10, 3, pixels, 12 * 3);
    snprintf(png, sizeof(png), "%s/flow.png", dir);
    snprintf(args, sizeof(args), "--resume %s --visualize %s --visualize_out %s", ckpt, img, png);
    rc = run_trainer(args);
    char* data = slurp(png);
    int is_png = data != NULL && memcmp(data, "\x89PNG", 4) == 0;
    check(rc == 0 && is_png, "--visualize writes a PNG [%s]", rc == 0 ? "ok" : error_line(out));
    free(data);
}

// Runs with a bad input; expects a non-zero exit, every expected word in the
// message, and the sentinel output files untouched.
static void expect_failure(const char* name, const char* args, const char* word1, const char* word2) {
    char ckpt[300], log[300], full[4096];
    snprintf(ckpt, sizeof(ckpt), "%s/out.bin", dir);
    snprintf(log, sizeof(log), "%s/out.jsonl", dir);
    write_text(ckpt, "sentinel checkpoint");
    write_text(log, "sentinel log");
    snprintf(full, sizeof(full), "%s --checkpoint %s --log_file %s", args, ckpt, log);
    int rc = run_trainer(full);
    char* c = slurp(ckpt);
    char* l = slurp(log);
    int untouched = c && l && strcmp(c, "sentinel checkpoint") == 0 && strcmp(l, "sentinel log") == 0;
    int named = strstr(out, word1) != NULL && (word2 == NULL || strstr(out, word2) != NULL);
    check(rc != 0 && named && untouched, "bad input, %s: exit %d, message names it: %s, outputs untouched: %s [%s]",
          name, rc, named ? "yes" : "no", untouched ? "yes" : "no", error_line(out));
    free(c);
    free(l);
}

int main(void) {
    make_temp_dir(dir, sizeof(dir), "test_vit_cli");
    enum { S = 8, K = 4, NTRAIN = 40, NVAL = 24 };
    uint8_t px[NTRAIN * S * S * 3];
    int32_t labels[NTRAIN];
    char train_path[300], val_path[300], path[300], args[4096];
    // two training shards, so the set spans files
    snprintf(train_path, sizeof(train_path), "%s/train_000000.bin", dir);
    make_images(px, labels, NTRAIN, S, 1, K, 1);
    image_shard_write(train_path, px, labels, NTRAIN / 2, 1, S, S, K);
    snprintf(train_path, sizeof(train_path), "%s/train_000001.bin", dir);
    image_shard_write(train_path, px + NTRAIN / 2 * S * S, labels + NTRAIN / 2, NTRAIN / 2, 1, S, S, K);
    snprintf(val_path, sizeof(val_path), "%s/val_000000.bin", dir);
    make_images(px, labels, NVAL, S, 1, K, 2);
    image_shard_write(val_path, px, labels, NVAL, 1, S, S, K);
    snprintf(common, sizeof(common),
             "--train_data %s/train_*.bin --val_data %s --image_size 8 --channels 1 --num_classes 0 --patch_size 2 "
             "--dims 16 --depths 2 --heads 2 --pooling cls --layerscale 0.1 --layerscale_attn true --pad 1 "
             "--mean 0.3 --std 0.3 --batch_size 4 --grad_accum 2 --warmup_epochs 0.5 --eval_interval 0 "
             "--log_interval 5",
             dir, val_path);

    test_resume();
    test_learns();

    snprintf(args, sizeof(args), "%s --channels 3", common);
    expect_failure("shards of 1 channel, configuration 3", args, "train_000000.bin", "channels");
    snprintf(args, sizeof(args), "%s --image_size 16", common);
    expect_failure("8x8 shards, image_size 16", args, "train_000000.bin", "smaller than image_size");
    snprintf(args, sizeof(args), "%s --num_classes 5", common);
    expect_failure("4-class shards, num_classes 5", args, "train_000000.bin", "classes");
    // a label out of range, written by hand (image_shard_write refuses to)
    snprintf(path, sizeof(path), "%s/bad_label.bin", dir);
    {
        int32_t h[IMAGE_SHARD_HEADER_INTS] = {IMAGE_SHARD_MAGIC, IMAGE_SHARD_VERSION, 2, 1, S, S, K};
        int32_t lab[2] = {1, 7};
        FILE* f = fopen_check(path, "wb");
        fwrite_check(h, sizeof(h), 1, f, path);
        fwrite_check(lab, sizeof(lab), 1, f, path);
        fwrite_check(px, 1, 2 * S * S, f, path);
        fclose_check(f, path);
    }
    snprintf(args, sizeof(args), "%s --val_data %s", common, path);
    expect_failure("label 7 of 4 classes", args, path, "label 7");
    // a checkpoint of another model
    snprintf(path, sizeof(path), "%s/a_10.bin", dir);
    snprintf(args, sizeof(args), "--resume %s --dims 8", path);
    expect_failure("checkpoint of another model (dims)", args, path, "dims");
    // a truncated checkpoint
    snprintf(path, sizeof(path), "%s/truncated.bin", dir);
    {
        char src[300];
        snprintf(src, sizeof(src), "%s/a_10.bin", dir);
        FILE* f = fopen_check(src, "rb");
        char buf[4096];
        size_t n = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        f = fopen_check(path, "wb");
        fwrite_check(buf, 1, n - 100, f, path);
        fclose_check(f, path);
    }
    snprintf(args, sizeof(args), "--resume %s", path);
    expect_failure("truncated checkpoint", args, path, "truncated");
    snprintf(path, sizeof(path), "%s/bad.json", dir);
    write_text(path, "{\"dims\": 64}");
    snprintf(args, sizeof(args), "%s --config %s", common, path);
    expect_failure("config field of the wrong type", args, path, "dims");

    remove_temp_dir(dir);
    return testing_exit_code();
}
