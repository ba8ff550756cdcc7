// Tests of the text data path: token shard and vocabulary files (utils/token_shard.h,
// utils/vocab.h), training batches (utils/token_loader.h) and build/prepare_text on small
// hand-made corpora whose vocabulary order and token ids are worked out by hand below;
// folders, NUL bytes, positions outside the data and absurd sizes are refused.
#include <stdint.h>
#include <sys/stat.h>
#include "utils/token_shard.h"
#include "utils/token_loader.h"
#include "utils/vocab.h"
#include "dev/test/testing.h"
#include "dev/test/capture.h"

static char tmp[256], prepare_text[512], out[16384];

static char* tmp_path(const char* name) {
    static char paths[8][512];
    static int k = 0;
    char* p = paths[k++ % 8];
    snprintf(p, 512, "%s/%s", tmp, name);
    return p;
}

static int same_tokens(const uint32_t* got, long n, const uint32_t* want, long m) {
    if (n != m) return 0;
    for (long i = 0; i < n; i++) if (got[i] != want[i]) return 0;
    return 1;
}

static void read_header(const char* path, int32_t* h) {
    FILE* f = fopen_check(path, "rb");
    fread_check(h, sizeof(int32_t), 3, f, path);
    fclose_check(f, path);
}

static long vocab_arg;
static const char* load_path;
static void load_shard(void* arg) {
    long n;
    token_shard_load(load_path, vocab_arg, &n);
}
static void count_shard(void* arg) { token_shard_count(load_path); }
static void load_vocab(void* arg) { vocab_load(load_path); }

static void test_token_shards(void) {
    uint32_t toks[5] = { 0, 7, 99, 65535, 3 };
    char* p16 = tmp_path("s16.bin");
    token_shard_write(p16, toks, 5, 65536);
    int32_t h[3];
    read_header(p16, h);
    struct stat st;
    stat(p16, &st);
    check(h[0] == 20240520 && h[1] == 1 && h[2] == 5 && st.st_size == 1024 + 5 * 2,
          "uint16 shard header %d %d %d, %ld bytes", h[0], h[1], h[2], (long)st.st_size);
    long n;
    uint32_t* got = token_shard_load(p16, 65536, &n);
    check(same_tokens(got, n, toks, 5) && token_shard_count(p16) == 5, "uint16 shard round trip");
    free(got);

    uint32_t big[4] = { 1, 267743, 70000, 2 };
    char* p32 = tmp_path("s32.bin");
    token_shard_write(p32, big, 4, 267744);
    read_header(p32, h);
    stat(p32, &st);
    check(h[0] == 20240801 && h[1] == 7 && h[2] == 4 && st.st_size == 1024 + 4 * 4,
          "uint32 shard header %d %d %d, %ld bytes", h[0], h[1], h[2], (long)st.st_size);
    got = token_shard_load(p32, 267744, &n);
    check(same_tokens(got, n, big, 4), "uint32 shard round trip");
    free(got);
    check(access(tmp_path("s32.bin.tmp"), F_OK) != 0, "no .tmp file left after writing");

    // A token outside the vocabulary is rejected, naming file, position, token and size.
    load_path = p32;
    vocab_arg = 70000;
    int rc = run_captured(load_shard, NULL, out, sizeof(out));
    char want[512];
    snprintf(want, sizeof(want), "%s: token 267743 at position 1 is >= the vocabulary size 70000", p32);
    check(rc == 1 && strstr(out, want) != NULL, "token >= vocab rejected (exit %d): %s", rc, error_line(out));

    // Truncated: drop the last token.
    char* pt = tmp_path("trunc.bin");
    token_shard_write(pt, big, 4, 267744);
    if (truncate(pt, 1024 + 3 * 4) != 0) perror("truncate");
    load_path = pt;
    rc = run_captured(count_shard, NULL, out, sizeof(out));
    check(rc == 1 && strstr(out, pt) && strstr(out, "truncated token shard") && strstr(out, "header says 4 tokens"),
          "truncated shard rejected (exit %d): %s", rc, error_line(out));
    if (truncate(pt, 100) != 0) perror("truncate");
    rc = run_captured(count_shard, NULL, out, sizeof(out));
    check(rc == 1 && strstr(out, "shorter than the 1024-byte header"), "shard shorter than its header rejected: %s", error_line(out));

    // A folder where a shard should be.
    char* folder = tmp_path("folder.bin");
    mkdir(folder, 0755);
    load_path = folder;
    rc = run_captured(count_shard, NULL, out, sizeof(out));
    snprintf(want, sizeof(want), "%s: a folder, not a file", folder);
    check(rc == 1 && strstr(out, want), "folder as a token shard rejected: %s", error_line(out));

    // Wrong magic.
    char* pm = tmp_path("magic.bin");
    write_text(pm, "this is not a token shard, just some text that is long enough.....");
    FILE* f = fopen_check(pm, "ab");
    for (int i = 0; i < 1024; i++) fputc('x', f);
    fclose_check(f, pm);
    load_path = pm;
    rc = run_captured(count_shard, NULL, out, sizeof(out));
    check(rc == 1 && strstr(out, pm) && strstr(out, "not a token shard"), "wrong magic rejected (exit %d): %s", rc, error_line(out));
}

static void test_vocab_file(void) {
    char* toks[7] = { "plain", "two words", "tab\there", "new\nline", "back\\slash", "cr\r", "\xc3\xa9t\xc3\xa9" };
    char* p = tmp_path("v.txt");
    vocab_write(p, toks, 7);
    FILE* f = fopen_check(p, "rb");
    char text[256] = { 0 };
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    const char* expect = "plain\ntwo\\swords\ntab\\there\nnew\\nline\nback\\\\slash\ncr\\r\n\xc3\xa9t\xc3\xa9\n";
    check(n == strlen(expect) && memcmp(text, expect, n) == 0, "vocab file escapes");
    Vocab v = vocab_load(p);
    int ok = v.size == 7;
    for (int i = 0; ok && i < 7; i++) ok = strcmp(v.tokens[i], toks[i]) == 0;
    check(ok, "vocab round trip (%ld tokens)", v.size);
    vocab_free(&v);

    char* bad = tmp_path("bad.txt");
    write_text(bad, "a\nb\\x\n");
    load_path = bad;
    int rc = run_captured(load_vocab, NULL, out, sizeof(out));
    check(rc == 1 && strstr(out, bad) && strstr(out, "line 2: bad escape"), "bad escape rejected: %s", error_line(out));

    // A folder (it used to ask for 2^63 bytes, naming nothing) and a NUL byte.
    load_path = tmp;
    rc = run_captured(load_vocab, NULL, out, sizeof(out));
    char want[600];
    snprintf(want, sizeof(want), "%s: a folder, not a file", tmp);
    check(rc == 1 && strstr(out, want), "folder as the vocabulary rejected: %s", error_line(out));
    FILE* g = fopen_check(bad, "wb");
    fwrite_check("a\nb\0c\n", 1, 6, g, bad);
    fclose_check(g, bad);
    load_path = bad;
    rc = run_captured(load_vocab, NULL, out, sizeof(out));
    check(rc == 1 && strstr(out, bad) && strstr(out, "NUL byte"), "vocabulary with a NUL byte rejected: %s", error_line(out));
}

static TokenData batch_data;
static long batch_pos;
static void take_batch(void* arg) {
    int inputs[2 * 4], targets[2 * 4];
    Rng rng = rng_make(1);
    next_batch(&batch_data, 2, 0, 2, 4, arg != NULL, &rng, &batch_pos, inputs, targets);
}

static void test_batches(void) {
    uint32_t tokens[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    batch_data = (TokenData){tokens, 10};
    int inputs[2 * 4], targets[2 * 4];
    long pos = 1000;
    next_batch(&batch_data, 2, 0, 2, 4, 0, NULL, &pos, inputs, targets);
    check(inputs[0] == 0 && targets[3] == 4 && inputs[4] == 4 && targets[7] == 8 && pos == 8,
          "sequential batches from a position beyond the data start again at 0 (position now %ld)", pos);
    batch_pos = -1000;
    int rc = run_captured(take_batch, NULL, out, sizeof(out));
    check(rc == 1 && strstr(out, "position -1000 in the training tokens is negative"),
          "a negative data position refused: %s", error_line(out));
    batch_data.n = 4;
    batch_pos = 0;
    rc = run_captured(take_batch, (void*)1, out, sizeof(out));
    check(rc == 1 && strstr(out, "4 training tokens, fewer than a window of 4 + 1"),
          "random windows longer than the data refused: %s", error_line(out));
}

// Runs prepare_text with the given arguments (NULL-terminated); returns the exit status.
static int prepare(const char* a0, const char* a1, const char* a2, const char* a3, const char* a4,
                   const char* a5, const char* a6, const char* a7) {
    char* argv[10] = { prepare_text, (char*)a0, (char*)a1, (char*)a2, (char*)a3, (char*)a4, (char*)a5, (char*)a6, (char*)a7, NULL };
    return run_program(argv, out, sizeof(out));
}

static int shard_is(const char* path, long vocab, const uint32_t* want, long m) {
    long n;
    uint32_t* got = token_shard_load(path, vocab, &n);
    int ok = same_tokens(got, n, want, m);
    if (!ok) {
        printf("  %s:", path);
        for (long i = 0; i < n; i++) printf(" %u", got[i]);
        printf("\n");
    }
    free(got);
    return ok;
}

static void test_words(void) {
    // Counts: the 3; b 2, sat 2; then once each. Ties go in byte order (Z < a < ... < zz < é);
    // "<unk>" in the text is the special; U+00A0 and tab separate words; \r\n, and a last
    // line without newline, end sentences like \n.
    char* train = tmp_path("train.txt");
    write_text(train, "the cat sat on the mat\n\nthe dog <unk> sat\r\nb a\xc2\xa0" "c\tb zz Z q \xc3\xa9");
    char* valid = tmp_path("valid.txt");
    write_text(valid, "the unknownword cat\nsat");
    char* dir = tmp_path("wt");
    int rc = prepare("words", "--train", train, "--valid", valid, dir, NULL, NULL);
    check(rc == 0, "prepare_text words exit %d", rc);
    char vocab_path[512], train_bin[512], val_bin[512];
    snprintf(vocab_path, 512, "%s/vocab.txt", dir);
    snprintf(train_bin, 512, "%s/train.bin", dir);
    snprintf(val_bin, 512, "%s/val.bin", dir);
    const char* order[24] = { "<s>", "<pad>", "</s>", "<unk>", "the", "b", "sat", "Z", "a", "c", "cat", "dog",
                              "mat", "on", "q", "zz", "\xc3\xa9", "madeupword0000", "madeupword0001", "madeupword0002",
                              "madeupword0003", "madeupword0004", "madeupword0005", "madeupword0006" };
    Vocab v = vocab_load(vocab_path);
    int ok = v.size == 24;
    for (int i = 0; ok && i < 24; i++) ok = strcmp(v.tokens[i], order[i]) == 0;
    check(ok, "fairseq vocabulary order (%ld entries, padded to a multiple of 8)", v.size);
    vocab_free(&v);
    uint32_t want_train[] = { 4, 10, 6, 13, 4, 12, 2, 2, 4, 11, 3, 6, 2, 5, 8, 9, 5, 15, 7, 14, 16, 2 };
    check(shard_is(train_bin, 24, want_train, sizeof(want_train) / 4), "train token ids");
    uint32_t want_val[] = { 4, 3, 10, 2, 6, 2 };
    check(shard_is(val_bin, 24, want_val, 6), "valid token ids (unknown word -> <unk>)");
    check(strstr(out, "6 tokens, 1 (16.67%) replaced by <unk>") != NULL, "valid <unk> count reported");
    int32_t h[3];
    read_header(train_bin, h);
    check(h[0] == 20240520 && h[2] == 22, "small vocabulary gives a uint16 shard (magic %d, %d tokens)", h[0], h[2]);

    // --vocab-size pads further, past 65536 switching to uint32 tokens.
    char* dir2 = tmp_path("wt_big");
    rc = prepare("words", "--train", train, "--vocab-size", "70000", dir2, NULL, NULL);
    snprintf(vocab_path, 512, "%s/vocab.txt", dir2);
    snprintf(train_bin, 512, "%s/train.bin", dir2);
    v = vocab_load(vocab_path);
    check(rc == 0 && v.size == 70000 && !strcmp(v.tokens[69999], "madeupword69982") && !strcmp(v.tokens[16], "\xc3\xa9"),
          "--vocab-size 70000 pads with madeupwords (%ld entries, last %s)", v.size, v.size ? v.tokens[v.size - 1] : "");
    vocab_free(&v);
    read_header(train_bin, h);
    check(h[0] == 20240801 && h[1] == 7 && shard_is(train_bin, 70000, want_train, sizeof(want_train) / 4),
          "uint32 shard with the same token ids (magic %d)", h[0]);

    rc = prepare("words", "--train", train, "--vocab-size", "10", tmp_path("wt_small"), NULL, NULL);
    check(rc == 1 && strstr(out, "--vocab-size 10 is smaller than the 17 words counted"), "too small --vocab-size rejected: %s", error_line(out));
    rc = prepare("words", "--train", train, "--vocab-size", "3000000000", tmp_path("wt_huge"), NULL, NULL);
    check(rc == 1 && strstr(out, "--vocab-size wants an integer in [1, 16777216], got '3000000000'") &&
          access(tmp_path("wt_huge"), F_OK) != 0, "--vocab-size 3000000000 refused up front: %s", error_line(out));

    // An existing vocabulary file gives the same ids.
    char* dir3 = tmp_path("wt_again");
    snprintf(vocab_path, 512, "%s/vocab.txt", dir);
    rc = prepare("words", "--vocab", vocab_path, "--test", valid, dir3, NULL, NULL);
    snprintf(train_bin, 512, "%s/test.bin", dir3);
    check(rc == 0 && shard_is(train_bin, 24, want_val, 6), "--vocab reuses a vocabulary (exit %d)", rc);

    rc = prepare("words", "--train", tmp_path("missing.txt"), dir3, NULL, NULL, NULL, NULL);
    check(rc == 1 && strstr(out, "missing.txt"), "missing input named: %s", error_line(out));
}

static void test_chars(void) {
    // Python reads "\r\n" and "\r" as "\n"; 8 characters, int(8 * 0.9) = 7 go to train.
    char* in = tmp_path("chars.txt");
    write_text(in, "ba\r\nab\rc\xc3\xa9");
    char* dir = tmp_path("ch");
    int rc = prepare("char", in, dir, NULL, NULL, NULL, NULL, NULL);
    char p[512];
    snprintf(p, 512, "%s/vocab.txt", dir);
    Vocab v = vocab_load(p);
    const char* order[5] = { "\n", "a", "b", "c", "\xc3\xa9" };
    int ok = rc == 0 && v.size == 5;
    for (int i = 0; ok && i < 5; i++) ok = strcmp(v.tokens[i], order[i]) == 0;
    check(ok, "char vocabulary = sorted distinct characters (%ld)", v.size);
    vocab_free(&v);
    uint32_t want_train[] = { 2, 1, 0, 1, 2, 0, 3 }, want_val[] = { 4 };
    snprintf(p, 512, "%s/train.bin", dir);
    check(shard_is(p, 5, want_train, 7), "char train ids (first 90%%)");
    snprintf(p, 512, "%s/val.bin", dir);
    check(shard_is(p, 5, want_val, 1), "char val ids (last 10%%)");

    write_text(in, "ok\xff bad");
    rc = prepare("char", in, dir, NULL, NULL, NULL, NULL, NULL);
    check(rc == 1 && strstr(out, "invalid UTF-8 at byte 2"), "invalid UTF-8 rejected: %s", error_line(out));
}

int main(int argc, char** argv) {
    sibling_path(argv[0], "prepare_text", prepare_text, sizeof(prepare_text));
    make_temp_dir(tmp, sizeof(tmp), "test_data_text");
    test_token_shards();
    test_vocab_file();
    test_batches();
    test_words();
    test_chars();
    remove_temp_dir(tmp);
    return testing_exit_code();
}
