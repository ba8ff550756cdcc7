// Batches of a language model from token shards (utils/token_shard.h): random or
// consecutive training windows, and the overlapping windows of a sliding-window
// evaluation that scores every token once. Each rank of a run on several
// (utils/dist.h) fills samples [lo, hi) of every batch, and every rank makes the
// same draws, so the batches do not depend on the number of ranks.
#ifndef UTILS_TOKEN_LOADER_H
#define UTILS_TOKEN_LOADER_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <glob.h>
#include "utils/utils.h"
#include "utils/rng.h"
#include "utils/token_shard.h"

typedef struct {
    uint32_t* tokens;
    long n;
} TokenData;

// Loads every shard matching pattern (in name order) into one token stream,
// checking each token against the vocabulary size.
static TokenData load_tokens(const char* pattern, long vocab_size, const char* what) {
    glob_t g;
    int rc = glob(pattern, 0, NULL, &g);
    if (rc == GLOB_NOMATCH) fail("%s: no file matches %s", what, pattern);
    if (rc != 0) fail("%s: cannot expand the pattern %s", what, pattern);
    TokenData d = {NULL, 0};
    for (size_t i = 0; i < g.gl_pathc; i++) {
        long n;
        uint32_t* t = token_shard_load(g.gl_pathv[i], vocab_size, &n);
        d.tokens = (uint32_t*)realloc(d.tokens, (size_t)(d.n + n) * sizeof(uint32_t));
        if (d.tokens == NULL) fail("out of memory loading %s", g.gl_pathv[i]);
        memcpy(d.tokens + d.n, t, (size_t)n * sizeof(uint32_t));
        d.n += n;
        free(t);
    }
    globfree(&g);
    return d;
}

// A batch of B samples of T+1 consecutive tokens: random starts drawn from rng,
// or consecutive blocks from *pos (wrapping to the start at the end, or when *pos
// lies beyond the data, as after resuming on a smaller data set). Samples lo..hi-1
// go to inputs, targets (hi-lo, T); the others are drawn and skipped.
static void next_batch(const TokenData* d, int B, int lo, int hi, int T, int random, Rng* rng, long* pos,
                       int* inputs, int* targets) {
    if (d->n < (long)T + 1) fail("%ld training tokens, fewer than a window of %d + 1", d->n, T);
    if (*pos < 0) fail("the position %ld in the training tokens is negative", *pos);
    for (int b = 0; b < B; b++) {
        long start;
        if (random) {
            start = rng_below(rng, d->n - T);
        } else {
            if (*pos > d->n - T - 1) *pos = 0;
            start = *pos;
            *pos += T;
        }
        if (b < lo || b >= hi) continue;
        for (int t = 0; t < T; t++) {
            inputs[(b - lo) * T + t] = (int)d->tokens[start + t];
            targets[(b - lo) * T + t] = (int)d->tokens[start + t + 1];
        }
    }
}

// The windows of a sliding-window evaluation: T tokens each, advancing by T - W,
// every token scored once, in the first window that contains it (so with at least
// W tokens of context where the stream allows): fairseq-eval-lm's --context-window W.
// W = 0 gives non-overlapping windows.
typedef struct {
    long next_start;  // where the next window would start
    long scored_upto; // targets 1..scored_upto are scored
} EvalWindows;

// The next batch of up to B windows, with target -1 where a token was scored
// before; windows lo..hi-1 of it go to inputs, targets (hi-lo, T). Returns how
// many windows the batch has (0: every token is scored).
static int eval_windows_next(EvalWindows* w, const TokenData* d, int B, int lo, int hi, int T, int W,
                             int* inputs, int* targets) {
    int b = 0;
    for (; b < B && w->scored_upto < d->n - 1; b++) {
        long s = w->next_start < d->n - 1 - T ? w->next_start : d->n - 1 - T;
        for (int t = 0; t < T && b >= lo && b < hi; t++) { // only this rank's windows are filled
            inputs[(b - lo) * T + t] = (int)d->tokens[s + t];
            long j = s + t + 1;
            targets[(b - lo) * T + t] = j > w->scored_upto ? (int)d->tokens[j] : -1;
        }
        w->scored_upto = s + T;
        w->next_start += T - W;
    }
    return b;
}

#endif
