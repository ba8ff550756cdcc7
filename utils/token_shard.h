// Token shards in llm.c's layout: a header of 256 int32, then the tokens.
//   header[0] = magic, header[1] = version, header[2] = number of tokens
//   magic 20240520, version 1: uint16 tokens (vocabularies of at most 65,536 entries)
//   magic 20240801, version 7: uint32 tokens (larger vocabularies, e.g. WikiText-103's 267,744)
// Readers validate the header and the file size and fail naming the file; writers
// write "<path>.tmp" and rename it, so a shard only appears when it is complete.
#ifndef UTILS_TOKEN_SHARD_H
#define UTILS_TOKEN_SHARD_H

#include <stdint.h>
#include <stdio.h>
#include "utils/utils.h"
#include "utils/paths.h"

#define TOKEN_SHARD_HEADER_INTS 256
#define TOKEN_SHARD_MAGIC16 20240520
#define TOKEN_SHARD_VERSION16 1
#define TOKEN_SHARD_MAGIC32 20240801
#define TOKEN_SHARD_VERSION32 7

// Opens a shard and reads and checks its header; returns the file, positioned at the
// tokens, and sets *bytes per token (2 or 4) and *ntokens. The file size must be
// exactly header + ntokens * bytes.
static FILE* token_shard_open(const char* path, int* bytes, long* ntokens) {
    int32_t header[TOKEN_SHARD_HEADER_INTS];
    long size;
    FILE* f = fopen_read_check(path, &size);
    if (size < (long)sizeof(header))
        fail("%s: truncated token shard: %ld bytes, shorter than the %zu-byte header", path, size, sizeof(header));
    fread_check(header, sizeof(int32_t), TOKEN_SHARD_HEADER_INTS, f, path);
    if (header[0] == TOKEN_SHARD_MAGIC16 && header[1] == TOKEN_SHARD_VERSION16) *bytes = 2;
    else if (header[0] == TOKEN_SHARD_MAGIC32 && header[1] == TOKEN_SHARD_VERSION32) *bytes = 4;
    else fail("%s: not a token shard: magic %d version %d (expected %d/%d or %d/%d)", path,
              header[0], header[1], TOKEN_SHARD_MAGIC16, TOKEN_SHARD_VERSION16,
              TOKEN_SHARD_MAGIC32, TOKEN_SHARD_VERSION32);
    if (header[2] < 0) fail("%s: corrupt token shard header: %d tokens", path, header[2]);
    long expected = (long)sizeof(header) + (long)header[2] * *bytes; // at most 2^33 + 1024
    if (size != expected)
        fail("%s: %s token shard: header says %d tokens (%ld bytes) but the file has %ld bytes",
             path, size < expected ? "truncated" : "oversized", header[2], expected, size);
    *ntokens = header[2];
    return f;
}

// Number of tokens in the shard at path, after validating header and file size.
static long token_shard_count(const char* path) {
    int bytes;
    long n;
    FILE* f = token_shard_open(path, &bytes, &n);
    fclose_check(f, path);
    return n;
}

// Loads all tokens as uint32 (uint16 shards are widened). Fails naming file, position,
// token and vocabulary size when a token is >= vocab_size; vocab_size <= 0 skips that check.
// The caller frees the result.
static uint32_t* token_shard_load(const char* path, long vocab_size, long* ntokens) {
    int bytes;
    long n;
    FILE* f = token_shard_open(path, &bytes, &n);
    uint32_t* tokens = (uint32_t*)malloc_check((size_t)n * sizeof(uint32_t));
    if (bytes == 4) {
        fread_check(tokens, sizeof(uint32_t), (size_t)n, f, path);
    } else {
        // Read into the top half of the buffer, then widen front to back: the write
        // index i*4 never passes the read index (n*2 + i*2).
        uint16_t* narrow = (uint16_t*)tokens + n;
        fread_check(narrow, sizeof(uint16_t), (size_t)n, f, path);
        for (long i = 0; i < n; i++) tokens[i] = narrow[i];
    }
    fclose_check(f, path);
    if (vocab_size > 0) {
        for (long i = 0; i < n; i++) {
            if ((long)tokens[i] >= vocab_size)
                fail("%s: token %u at position %ld is >= the vocabulary size %ld "
                     "(shard and vocabulary do not match)", path, tokens[i], i, vocab_size);
        }
    }
    *ntokens = n;
    return tokens;
}

// Streaming writer, so a corpus never has to sit in memory: open, append any number
// of times, close (which fills in the count and renames the file into place).
typedef struct {
    FILE* f;
    char* path;     // final path
    char* tmp_path; // "<path>.tmp" while writing
    long n;         // tokens written so far
    long vocab_size;
    int bytes;      // 2 or 4 per token
    uint16_t buf16[4096];
} TokenShardWriter;

static TokenShardWriter* token_shard_writer_open(const char* path, long vocab_size) {
    if (vocab_size <= 0) fail("%s: vocabulary size must be positive, got %ld", path, vocab_size);
    TokenShardWriter* w = (TokenShardWriter*)calloc_check(1, sizeof(TokenShardWriter));
    size_t len = strlen(path);
    w->path = (char*)malloc_check(len + 1);
    memcpy(w->path, path, len + 1);
    w->tmp_path = (char*)malloc_check(len + 5);
    snprintf(w->tmp_path, len + 5, "%s.tmp", path);
    w->vocab_size = vocab_size;
    w->bytes = vocab_size <= 65536 ? 2 : 4;
    w->f = fopen_check(w->tmp_path, "wb");
    int32_t header[TOKEN_SHARD_HEADER_INTS] = {0}; // placeholder until close knows the count
    fwrite_check(header, sizeof(int32_t), TOKEN_SHARD_HEADER_INTS, w->f, w->tmp_path);
    return w;
}

static void token_shard_writer_append(TokenShardWriter* w, const uint32_t* tokens, long n) {
    for (long i = 0; i < n; i++) {
        if ((long)tokens[i] >= w->vocab_size)
            fail("%s: token %u at position %ld is >= the vocabulary size %ld",
                 w->path, tokens[i], w->n + i, w->vocab_size);
    }
    if (w->n + n > INT32_MAX)
        fail("%s: more than %d tokens do not fit one shard", w->path, INT32_MAX);
    if (w->bytes == 4) {
        fwrite_check(tokens, sizeof(uint32_t), (size_t)n, w->f, w->tmp_path);
    } else {
        for (long i = 0; i < n; i += 4096) {
            long m = n - i < 4096 ? n - i : 4096;
            for (long j = 0; j < m; j++) w->buf16[j] = (uint16_t)tokens[i + j];
            fwrite_check(w->buf16, sizeof(uint16_t), (size_t)m, w->f, w->tmp_path);
        }
    }
    w->n += n;
}

static void token_shard_writer_close(TokenShardWriter* w) {
    int32_t header[TOKEN_SHARD_HEADER_INTS] = {0};
    header[0] = w->bytes == 2 ? TOKEN_SHARD_MAGIC16 : TOKEN_SHARD_MAGIC32;
    header[1] = w->bytes == 2 ? TOKEN_SHARD_VERSION16 : TOKEN_SHARD_VERSION32;
    header[2] = (int32_t)w->n;
    if (fseek(w->f, 0, SEEK_SET) != 0) fail("%s: seek failed: %s", w->tmp_path, strerror(errno));
    fwrite_check(header, sizeof(int32_t), TOKEN_SHARD_HEADER_INTS, w->f, w->tmp_path);
    fclose_check(w->f, w->tmp_path);
    rename_check(w->tmp_path, w->path);
    free(w->path);
    free(w->tmp_path);
    free(w);
}

// Writes n tokens in one go: uint16 layout if vocab_size <= 65536, else uint32; atomic.
static void token_shard_write(const char* path, const uint32_t* tokens, long n, long vocab_size) {
    TokenShardWriter* w = token_shard_writer_open(path, vocab_size);
    token_shard_writer_append(w, tokens, n);
    token_shard_writer_close(w);
}

#endif
