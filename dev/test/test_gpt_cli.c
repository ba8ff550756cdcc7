// Tests of the train_gpt_flow program itself, on small data made here:
//  - --resume continues exactly: 20 updates straight and 10 + resume + 10 give
//    bitwise identical losses (random and sequential batches, dropout on)
//  - bad input stops with a message naming the file, a non-zero exit status, and
//    nothing overwritten: a shard with the wrong magic, a truncated shard, a token
//    not below the vocabulary size, a config field of the wrong type or unknown
//    name, a checkpoint of another model, a truncated checkpoint
#include <stdint.h>
#include "utils/token_shard.h"
#include "utils/vocab.h"
#include "utils/checkpoint.h"
#include "dev/test/testing.h"
#include "dev/test/capture.h"

#define OUT_CAP 65536
static char out[OUT_CAP];
static char dir[256];

// The folder of the trainer under test: the Makefile's TRAINER_DIR (make sanitize has its own).
#ifndef TRAINER_DIR
#define TRAINER_DIR "."
#endif

// Runs TRAINER_DIR/train_gpt_flow with the space-separated arguments; returns the exit status.
static int run_trainer(const char* args) { return run_args(TRAINER_DIR "/train_gpt_flow", args, out, OUT_CAP); }

// The "loss" of update `step` in a JSON-lines log, as printed (17 digits), or "".
static void loss_at(const char* log, int step, char* value, size_t cap) {
    char key[64];
    snprintf(key, sizeof(key), "{\"step\":%d,\"loss\":", step);
    const char* p = log ? strstr(log, key) : NULL;
    value[0] = '\0';
    if (p == NULL) return;
    p += strlen(key);
    size_t n = strcspn(p, ",");
    if (n >= cap) n = cap - 1;
    memcpy(value, p, n);
    value[n] = '\0';
}

static char common[2048];

static void test_resume(const char* sampling) {
    char args[4096], a_log[300], b_log[300];
    snprintf(a_log, sizeof(a_log), "%s/a_%s.jsonl", dir, sampling);
    snprintf(b_log, sizeof(b_log), "%s/b_%s.jsonl", dir, sampling);
    snprintf(args, sizeof(args), "%s --sampling %s --steps 20 --checkpoint_interval 10 --checkpoint %s/a_%s_{step}.bin "
             "--log_file %s", common, sampling, dir, sampling, a_log);
    int rc_a = run_trainer(args);
    if (rc_a != 0) printf("%s\n", out);
    snprintf(args, sizeof(args), "--resume %s/a_%s_10.bin --checkpoint %s/b_%s_{step}.bin --log_file %s",
             dir, sampling, dir, sampling, b_log);
    int rc_b = run_trainer(args);
    if (rc_b != 0) printf("%s\n", out);
    char* la = slurp(a_log);
    char* lb = slurp(b_log);
    int same = rc_a == 0 && rc_b == 0, compared = 0;
    char va[64], vb[64];
    for (int step = 11; step <= 20; step++) {
        loss_at(la, step, va, sizeof(va));
        loss_at(lb, step, vb, sizeof(vb));
        if (va[0] == '\0' || strcmp(va, vb) != 0) same = 0;
        else compared++;
    }
    loss_at(la, 1, va, sizeof(va));
    loss_at(la, 20, vb, sizeof(vb));
    int learned = same && strtod(vb, NULL) < strtod(va, NULL);
    check(same && compared == 10, "resume (%s batches): updates 11-20 straight and resumed give bitwise equal losses "
          "(%d of 10 equal, last %s)", sampling, compared, vb);
    check(learned, "resume (%s batches): the loss falls over 20 updates (%s -> %s)", sampling, va, vb);
    free(la);
    free(lb);
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

// Whether every number in the checkpoint at path is finite.
static int checkpoint_finite(const char* path) {
    CheckpointInfo info;
    FILE* f = checkpoint_open(path, &info);
    real* p = (real*)malloc_check(3 * (size_t)info.num_params * sizeof(real));
    checkpoint_read_tensors(f, path, info.num_params, p, p + info.num_params, p + 2 * info.num_params);
    int finite = 1;
    for (long i = 0; i < 3 * info.num_params; i++) finite = finite && isfinite(p[i]);
    free(p);
    free(info.config_json);
    return finite;
}

// A run that diverges stops naming the step, and every checkpoint it left is finite.
static void test_divergence(void) {
    char args[4096], pattern[300], path[300];
    snprintf(pattern, sizeof pattern, "%s/div_{step}.bin", dir);
    snprintf(args, sizeof(args), "%s --lr 1e6 --warmup_steps 0 --grad_clip 0 --steps 40 --checkpoint_interval 1 "
             "--checkpoint %s --log_file %s/div.jsonl", common, pattern, dir);
    int rc = run_trainer(args);
    int saved = 0, finite = 1;
    for (int step = 1; step <= 40; step++) {
        snprintf(path, sizeof path, "%s/div_%d.bin", dir, step);
        if (access(path, F_OK) != 0) continue;
        saved++;
        finite = finite && checkpoint_finite(path);
    }
    check(rc != 0 && strstr(out, "step ") && strstr(out, "not finite") && finite,
          "a diverging run (lr 1e6) stops naming the step, %d checkpoints left, all finite: %s [%s]", saved,
          finite ? "yes" : "no", error_line(out));
}

// --mode eval scores the whole shard, whatever eval_batches the training used, and
// writes no log unless asked.
static void test_eval_mode(void) {
    char args[4096], log[300];
    snprintf(log, sizeof log, "%s/a_random.jsonl", dir);
    char* before = slurp(log);
    snprintf(args, sizeof(args), "--resume %s/a_random_10.bin --mode eval --eval_batches 1", dir);
    int rc = run_trainer(args);
    char* after = slurp(log);
    int untouched = before && after && strcmp(before, after) == 0;
    check(rc == 0 && strstr(out, "| 999 tokens |") && strstr(out, "val loss by position") && untouched,
          "--mode eval scores all 999 tokens of the shard by position, the training log untouched: %s",
          untouched ? "yes" : "no");
    free(before);
    free(after);
}

int main(void) {
    make_temp_dir(dir, sizeof(dir), "test_gpt_cli");
    char path[300], vocab_path[300], train_path[300], val_path[300];
    // a vocabulary of 20 letters and a stream with structure to learn
    char* letters[20];
    char store[40];
    for (int i = 0; i < 20; i++) { store[2 * i] = (char)('a' + i); store[2 * i + 1] = '\0'; letters[i] = store + 2 * i; }
    snprintf(vocab_path, sizeof(vocab_path), "%s/vocab.txt", dir);
    vocab_write(vocab_path, letters, 20);
    uint32_t tokens[6000];
    uint64_t s = 7;
    for (int i = 0; i < 6000; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        // three times in four the letter after the one before: structure 20 updates learn
        uint32_t r = (uint32_t)((s >> 33) % 20);
        tokens[i] = i > 0 && r < 15 ? (tokens[i - 1] + 1) % 20 : r;
    }
    snprintf(train_path, sizeof(train_path), "%s/train.bin", dir);
    snprintf(val_path, sizeof(val_path), "%s/val.bin", dir);
    token_shard_write(train_path, tokens, 5000, 20);
    token_shard_write(val_path, tokens + 5000, 1000, 20);
    snprintf(common, sizeof(common),
             "--vocab %s --train_data %s --val_data %s --n_layer 2 --n_head 2 --n_embd 16 --context 16 "
             "--batch_size 4 --grad_accum 2 --eval_interval 0 --sample_tokens 0 --warmup_steps 5 --lr 3e-3 "
             "--dropout_embd 0.1 --dropout_attn 0.1 --dropout_hidden 0.1 --dropout_resid 0.1",
             vocab_path, train_path, val_path);

    test_resume("random");
    test_resume("sequential");

    char args[4096];
    // wrong magic
    snprintf(path, sizeof(path), "%s/bad_magic.bin", dir);
    {
        int32_t header[256] = {123, 1, 4};
        uint16_t toks[4] = {1, 2, 3, 4};
        FILE* f = fopen_check(path, "wb");
        fwrite_check(header, sizeof(header), 1, f, path);
        fwrite_check(toks, sizeof(toks), 1, f, path);
        fclose_check(f, path);
    }
    snprintf(args, sizeof(args), "%s --train_data %s", common, path);
    expect_failure("shard with wrong magic", args, path, "magic");
    // truncated shard
    snprintf(path, sizeof(path), "%s/truncated.bin", dir);
    {
        char* full = slurp(train_path);
        FILE* f = fopen_check(path, "wb");
        fwrite_check(full, 1, 1024 + 2 * 5000 - 10, f, path);
        fclose_check(f, path);
        free(full);
    }
    snprintf(args, sizeof(args), "%s --val_data %s", common, path);
    expect_failure("truncated shard", args, path, "truncated");
    // token not below the vocabulary size
    snprintf(path, sizeof(path), "%s/big_token.bin", dir);
    tokens[100] = 25;
    token_shard_write(path, tokens, 1000, 30);
    snprintf(args, sizeof(args), "%s --train_data %s", common, path);
    expect_failure("token >= vocabulary size", args, path, "25");
    // config field of the wrong type, and an unknown one
    snprintf(path, sizeof(path), "%s/wrong_type.json", dir);
    write_text(path, "{\"n_layer\": \"two\", \"steps\": 5}");
    snprintf(args, sizeof(args), "%s --config %s", common, path);
    expect_failure("config field of the wrong type", args, path, "n_layer");
    snprintf(path, sizeof(path), "%s/unknown.json", dir);
    write_text(path, "{\"n_layers\": 2}");
    snprintf(args, sizeof(args), "%s --config %s", common, path);
    expect_failure("config field of unknown name", args, path, "n_layers");
    snprintf(args, sizeof(args), "%s --steps ten", common);
    expect_failure("command-line value of the wrong type", args, "--steps", "ten");
    // settings out of their range, named
    snprintf(args, sizeof(args), "%s --clamp 50", common);
    expect_failure("clamp bound above 40", args, "clamp", "(0, 40]");
    snprintf(args, sizeof(args), "%s --context 0", common);
    expect_failure("context 0", args, "context", "must be in [1,");
    snprintf(args, sizeof(args), "%s --attention quadratic", common);
    expect_failure("unknown attention kind", args, "quadratic", "flow|softmax|linear");
    // a checkpoint of another model, a truncated checkpoint
    snprintf(path, sizeof(path), "%s/a_random_10.bin", dir);
    snprintf(args, sizeof(args), "--resume %s --n_embd 32", path);
    expect_failure("checkpoint of another model", args, path, "n_embd");
    {
        char cut[300];
        snprintf(cut, sizeof(cut), "%s/cut.bin", dir);
        FILE* in = fopen_check(path, "rb");
        FILE* o = fopen_check(cut, "wb");
        char b[4096];
        size_t n, total = 0;
        while ((n = fread(b, 1, sizeof(b), in)) > 0 && total < 20000) { fwrite_check(b, 1, n, o, cut); total += n; }
        fclose(in);
        fclose_check(o, cut);
        snprintf(args, sizeof(args), "--resume %s", cut);
        expect_failure("truncated checkpoint", args, cut, "truncated");
    }
    // validation shards too short, checked before any output is touched
    snprintf(path, sizeof(path), "%s/short_val.bin", dir);
    token_shard_write(path, tokens, 10, 20);
    snprintf(args, sizeof(args), "%s --val_data %s", common, path);
    expect_failure("validation shard shorter than context + 1", args, path, "fewer than context + 1");
    snprintf(path, sizeof(path), "%s/empty_val.bin", dir);
    token_shard_write(path, tokens, 0, 20);
    snprintf(args, sizeof(args), "%s --val_data %s", common, path);
    expect_failure("validation shard of 0 tokens", args, path, "0 tokens");
    // more memory than allowed, refused before allocating
    snprintf(args, sizeof(args), "%s --memory_limit 0.0001", common);
    expect_failure("model over --memory_limit", args, "memory_limit", "GiB");
    snprintf(args, sizeof(args), "%s --n_layer 1000 --n_embd 16384 --n_head 16", common);
    expect_failure("model larger than the machine's memory", args, "this machine has", "GiB");
    test_divergence();
    test_eval_mode();
    // a vocabulary file shorter than vocab_size: sampled ids past it print as <id>
    snprintf(args, sizeof(args), "%s --vocab_size 40 --steps 2 --sample_tokens 300 --temperature 5 --prompt a "
             "--log_file %s/v40.jsonl --checkpoint %s/v40.bin", common, dir, dir);
    int rc = run_trainer(args);
    check(rc == 0 && strstr(out, "<3"), "sampling ids past a 20-token vocabulary file (vocab_size 40) prints them "
          "as <id>: exit %d", rc);
    remove_temp_dir(dir);
    return testing_exit_code();
}
