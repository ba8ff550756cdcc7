// Text preparation: token shards (utils/token_shard.h) and a vocabulary file (utils/vocab.h).
//
//   prepare_text char INPUT OUTDIR
//     Character level, as nanoGPT's shakespeare_char: the vocabulary is the sorted distinct
//     characters (Unicode code points), the first 90% of the characters go to train.bin and
//     the rest to val.bin. Newlines are read as Python does (\r\n and \r become \n).
//
//   prepare_text words [options] OUTDIR
//     Word level, as fairseq-preprocess does for WikiText: lines split on (Unicode) whitespace,
//     an end-of-sentence </s> after every line, the vocabulary ordered as fairseq's Dictionary
//     (<s> <pad> </s> <unk>, then by count descending, ties by code point order, padded to a
//     multiple of 8 with madeupword0000...), words outside it mapped to <unk>.
//       --dir D          take D/wiki.train.tokens, D/wiki.valid.tokens, D/wiki.test.tokens
//       --train F, --valid F, --test F   the split files (any subset); shards train.bin,
//                        val.bin, test.bin
//       --vocab-from F   count the vocabulary over F (repeatable; default: the train file)
//       --vocab F        use an existing vocabulary file instead of counting
//       --vocab-size N   pad with madeupwords to exactly N entries instead of a multiple of 8
//                        (N up to VOCAB_MAX_ENTRIES)
//
// Inputs are streamed: memory grows with the vocabulary, never with the corpus.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include "utils/utils.h"
#include "utils/token_shard.h"
#include "utils/vocab.h"

// The largest vocabulary, 2^24 entries (WikiText-103 has 267,744): beyond it the table of
// words and an embedding of the vocabulary stop fitting in memory.
#define VOCAB_MAX_ENTRIES (1L << 24)

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static long file_size(const char* path) {
    struct stat st;
    if (stat(path, &st) != 0) fail("cannot open %s: %s", path, strerror(errno));
    return (long)st.st_size;
}

static void make_dir(const char* path) {
    if (mkdir(path, 0755) != 0 && errno != EEXIST) fail("cannot create %s: %s", path, strerror(errno));
}

static char* join_path(const char* dir, const char* name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char* p = (char*)malloc_check(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

// ----------------------------------------------------------------------------
// Buffered byte reader with progress reports

#define READ_BLOCK (1 << 20)

typedef struct {
    FILE* f;
    const char* path;
    unsigned char* buf;
    long len, pos;    // bytes in buf, next byte to hand out
    long done;        // bytes handed out before this block
    long total;       // file size, for progress
    double t0, last_report;
    const char* what;
} Reader;

static void reader_open(Reader* r, const char* path, const char* what) {
    r->f = fopen_check(path, "rb");
    r->path = path;
    r->buf = (unsigned char*)malloc_check(READ_BLOCK);
    r->len = r->pos = r->done = 0;
    r->total = file_size(path);
    r->t0 = r->last_report = now_seconds();
    r->what = what;
}

// Refills the buffer; returns the number of bytes now available (0 at end of file).
static long reader_fill(Reader* r) {
    r->done += r->len;
    r->len = (long)fread(r->buf, 1, READ_BLOCK, r->f);
    r->pos = 0;
    if (r->len == 0 && ferror(r->f)) fail("%s: read error: %s", r->path, strerror(errno));
    double t = now_seconds();
    if (t - r->last_report > 2.0) {
        double rate = r->done / (t - r->t0);
        fprintf(stderr, "%s %s: %.0f/%.0f MB, %.1f MB/s, %.0f s left\n", r->what, r->path,
                r->done / 1e6, r->total / 1e6, rate / 1e6, (r->total - r->done) / rate);
        r->last_report = t;
    }
    return r->len;
}

static void reader_close(Reader* r) {
    fclose_check(r->f, r->path);
    free(r->buf);
}

// ----------------------------------------------------------------------------
// Character level (nanoGPT shakespeare_char)

#define N_CODEPOINTS 0x110000

// Calls emit(ctx, codepoint) for every character of the file after Python's newline
// translation; fails naming the file and byte offset on invalid UTF-8 (Python would too).
typedef void (*CharFn)(void* ctx, int32_t cp);

static void for_each_char(const char* path, CharFn emit, void* ctx) {
    Reader r;
    reader_open(&r, path, "reading");
    int32_t cp = 0;
    int need = 0;       // continuation bytes still expected
    int prev_cr = 0;
    long start = 0;     // offset of the character being decoded
    for (;;) {
        if (r.pos == r.len && reader_fill(&r) == 0) break;
        unsigned char b = r.buf[r.pos++];
        long off = r.done + r.pos - 1;
        if (need > 0) {
            if ((b & 0xC0) != 0x80) fail("%s: invalid UTF-8 at byte %ld", path, start);
            cp = (cp << 6) | (b & 0x3F);
            if (--need > 0) continue;
            if (cp >= N_CODEPOINTS || (cp >= 0xD800 && cp < 0xE000))
                fail("%s: invalid UTF-8 at byte %ld", path, start);
        } else {
            start = off;
            if (b < 0x80) cp = b;
            else if (b >= 0xC2 && b < 0xE0) { cp = b & 0x1F; need = 1; continue; }
            else if (b >= 0xE0 && b < 0xF0) { cp = b & 0x0F; need = 2; continue; }
            else if (b >= 0xF0 && b < 0xF5) { cp = b & 0x07; need = 3; continue; }
            else fail("%s: invalid UTF-8 at byte %ld", path, off);
        }
        if (cp == '\n' && prev_cr) { prev_cr = 0; continue; } // \r\n already gave its \n
        prev_cr = cp == '\r';
        emit(ctx, prev_cr ? '\n' : cp);
    }
    if (need > 0) fail("%s: invalid UTF-8 at byte %ld (file ends inside a character)", path, start);
    reader_close(&r);
}

typedef struct {
    uint8_t* seen;       // per code point
    long count;
} CharCount;

static void char_count(void* ctx, int32_t cp) {
    CharCount* c = (CharCount*)ctx;
    c->seen[cp] = 1;
    c->count++;
}

typedef struct {
    int32_t* id;         // per code point
    long split, n;       // first split characters go to train
    TokenShardWriter *train, *val;
    uint32_t buf[65536];
    long nbuf;
} CharEncode;

static void char_flush(CharEncode* c) {
    // The buffer never straddles the split: char_encode flushes at it.
    token_shard_writer_append(c->n <= c->split ? c->train : c->val, c->buf, c->nbuf);
    c->nbuf = 0;
}

static void char_encode(void* ctx, int32_t cp) {
    CharEncode* c = (CharEncode*)ctx;
    c->buf[c->nbuf++] = (uint32_t)c->id[cp];
    c->n++;
    if (c->nbuf == 65536 || c->n == c->split) char_flush(c);
}

static void prepare_chars(const char* input, const char* outdir) {
    CharCount cc = { (uint8_t*)calloc_check(N_CODEPOINTS, 1), 0 };
    for_each_char(input, char_count, &cc);
    if (cc.count == 0) fail("%s: empty input", input);

    CharEncode* ce = (CharEncode*)calloc_check(1, sizeof(CharEncode));
    ce->id = (int32_t*)malloc_check(N_CODEPOINTS * sizeof(int32_t));
    char** tokens = (char**)malloc_check(N_CODEPOINTS * sizeof(char*));
    long V = 0;
    for (int32_t cp = 0; cp < N_CODEPOINTS; cp++) {
        ce->id[cp] = -1;
        if (!cc.seen[cp]) continue;
        ce->id[cp] = (int32_t)V;
        char* s = (char*)malloc_check(5);
        // UTF-8 encoding of cp
        if (cp < 0x80) { s[0] = (char)cp; s[1] = 0; }
        else if (cp < 0x800) { s[0] = (char)(0xC0 | (cp >> 6)); s[1] = (char)(0x80 | (cp & 0x3F)); s[2] = 0; }
        else if (cp < 0x10000) { s[0] = (char)(0xE0 | (cp >> 12)); s[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
                                 s[2] = (char)(0x80 | (cp & 0x3F)); s[3] = 0; }
        else { s[0] = (char)(0xF0 | (cp >> 18)); s[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
               s[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); s[3] = (char)(0x80 | (cp & 0x3F)); s[4] = 0; }
        tokens[V++] = s;
    }
    // nanoGPT: train = data[:int(n*0.9)], in double precision as Python computes it.
    ce->split = (long)(cc.count * 0.9);
    make_dir(outdir);
    char* train_path = join_path(outdir, "train.bin");
    char* val_path = join_path(outdir, "val.bin");
    char* vocab_path = join_path(outdir, "vocab.txt");
    ce->train = token_shard_writer_open(train_path, V);
    ce->val = token_shard_writer_open(val_path, V);
    for_each_char(input, char_encode, ce);
    char_flush(ce);
    if (ce->n != cc.count) fail("%s: changed while being read (%ld then %ld characters)", input, cc.count, ce->n);
    token_shard_writer_close(ce->train);
    token_shard_writer_close(ce->val);
    vocab_write(vocab_path, tokens, V);
    printf("%s: %ld characters, vocabulary %ld; %s: %ld tokens, %s: %ld tokens, %s\n", input, cc.count, V,
           train_path, ce->split, val_path, cc.count - ce->split, vocab_path);
    for (long i = 0; i < V; i++) free(tokens[i]);
    free(tokens); free(ce->id); free(ce); free(cc.seen);
    free(train_path); free(val_path); free(vocab_path);
}

// ----------------------------------------------------------------------------
// Word level (fairseq)

// Hash table from word to count and id; keys live in one growing pool.
typedef struct {
    uint64_t hash;
    size_t off;   // into the pool; SIZE_MAX marks an empty slot
    uint32_t len;
    long count;
    long id;
} Entry;

typedef struct {
    Entry* slots;
    long cap, n;
    char* pool;
    size_t pool_len, pool_cap;
} WordTable;

static uint64_t hash_bytes(const unsigned char* s, long n) {
    uint64_t h = 1469598103934665603ULL; // FNV-1a
    for (long i = 0; i < n; i++) { h ^= s[i]; h *= 1099511628211ULL; }
    return h;
}

static void table_init(WordTable* t, long cap) {
    t->cap = cap;
    t->n = 0;
    t->slots = (Entry*)malloc_check((size_t)cap * sizeof(Entry));
    for (long i = 0; i < cap; i++) t->slots[i].off = SIZE_MAX;
    t->pool_cap = 1 << 20;
    t->pool_len = 0;
    t->pool = (char*)malloc_check(t->pool_cap);
}

static void table_free(WordTable* t) { free(t->slots); free(t->pool); }

static const char* table_key(const WordTable* t, const Entry* e) { return t->pool + e->off; }

static void table_grow(WordTable* t) {
    Entry* old = t->slots;
    long old_cap = t->cap;
    t->cap *= 2;
    t->slots = (Entry*)malloc_check((size_t)t->cap * sizeof(Entry));
    for (long i = 0; i < t->cap; i++) t->slots[i].off = SIZE_MAX;
    for (long i = 0; i < old_cap; i++) {
        if (old[i].off == SIZE_MAX) continue;
        long j = (long)(old[i].hash & (uint64_t)(t->cap - 1));
        while (t->slots[j].off != SIZE_MAX) j = (j + 1) & (t->cap - 1);
        t->slots[j] = old[i];
    }
    free(old);
}

// Finds the entry of word w (n bytes); inserts it with count 0 and id -1 when insert is set,
// else returns NULL when absent.
static Entry* table_find(WordTable* t, const unsigned char* w, long n, int insert) {
    uint64_t h = hash_bytes(w, n);
    long j = (long)(h & (uint64_t)(t->cap - 1));
    for (;;) {
        Entry* e = &t->slots[j];
        if (e->off == SIZE_MAX) break;
        if (e->hash == h && e->len == (uint32_t)n && memcmp(t->pool + e->off, w, (size_t)n) == 0) return e;
        j = (j + 1) & (t->cap - 1);
    }
    if (!insert) return NULL;
    if (t->pool_len + (size_t)n + 1 > t->pool_cap) {
        while (t->pool_len + (size_t)n + 1 > t->pool_cap) t->pool_cap *= 2;
        t->pool = (char*)realloc(t->pool, t->pool_cap);
        if (t->pool == NULL) fail("out of memory growing the word pool to %zu bytes", t->pool_cap);
    }
    Entry* e = &t->slots[j];
    e->hash = h;
    e->off = t->pool_len;
    e->len = (uint32_t)n;
    e->count = 0;
    e->id = -1;
    memcpy(t->pool + t->pool_len, w, (size_t)n);
    t->pool[t->pool_len + (size_t)n] = '\0';
    t->pool_len += (size_t)n + 1;
    t->n++;
    if (t->n * 2 > t->cap) {
        size_t off = e->off;
        table_grow(t);
        return table_find(t, (const unsigned char*)t->pool + off, n, 0);
    }
    return e;
}

// Byte classes for the tokenizer. Whitespace is Python's str.isspace() (what fairseq's
// tokenize_line splits on); line ends are those of Python's universal newlines.
enum { B_WORD = 0, B_SPACE, B_LF, B_CR, B_CONT };
static unsigned char byte_class[256];

static void init_byte_class(void) {
    for (int b = 0; b < 256; b++) byte_class[b] = B_WORD;
    const char* spaces = "\t\v\f \x1c\x1d\x1e\x1f";
    for (const char* p = spaces; *p; p++) byte_class[(unsigned char)*p] = B_SPACE;
    byte_class['\n'] = B_LF;
    byte_class['\r'] = B_CR;
    // Continuation bytes that can end a multi-byte Unicode space (checked in is_unicode_space_tail).
    const unsigned char conts[] = { 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A,
                                    0x9F, 0xA0, 0xA8, 0xA9, 0xAF };
    for (size_t i = 0; i < sizeof(conts); i++) byte_class[conts[i]] = B_CONT;
}

// Length of the multi-byte Unicode space ending w[n-1], or 0: U+0085, U+00A0, U+1680,
// U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000.
static int unicode_space_tail(const unsigned char* w, long n) {
    unsigned char c = w[n - 1];
    if (n >= 2 && w[n - 2] == 0xC2 && (c == 0x85 || c == 0xA0)) return 2;
    if (n < 3) return 0;
    unsigned char a = w[n - 3], b = w[n - 2];
    if (a == 0xE1 && b == 0x9A && c == 0x80) return 3;
    if (a == 0xE2 && b == 0x80 && ((c >= 0x80 && c <= 0x8A) || c == 0xA8 || c == 0xA9 || c == 0xAF)) return 3;
    if (a == 0xE2 && b == 0x81 && c == 0x9F) return 3;
    if (a == 0xE3 && b == 0x80 && c == 0x80) return 3;
    return 0;
}

// Streams a file and calls word(ctx, w, n) for every word and line_end(ctx) after every line.
typedef void (*WordFn)(void* ctx, const unsigned char* w, long n);
typedef void (*LineFn)(void* ctx);

static void for_each_word(const char* path, const char* what, WordFn word, LineFn line_end, void* ctx) {
    Reader r;
    reader_open(&r, path, what);
    long cap = 1024, n = 0;
    unsigned char* w = (unsigned char*)malloc_check((size_t)cap);
    int prev_cr = 0, in_line = 0;
    for (;;) {
        if (r.pos == r.len && reader_fill(&r) == 0) break;
        const unsigned char* buf = r.buf;
        long len = r.len;
        for (long i = r.pos; i < len; i++) {
            unsigned char b = buf[i];
            int cls = byte_class[b];
            if (cls == B_WORD || cls == B_CONT) {
                if (n == cap) { cap *= 2; w = (unsigned char*)realloc(w, (size_t)cap); if (!w) fail("out of memory"); }
                w[n++] = b;
                in_line = 1;
                prev_cr = 0;
                int k;
                if (cls == B_CONT && (k = unicode_space_tail(w, n)) > 0) {
                    n -= k;
                    if (n > 0) word(ctx, w, n);
                    n = 0;
                }
                continue;
            }
            if (n > 0) { word(ctx, w, n); n = 0; }
            if (cls == B_SPACE) { in_line = 1; prev_cr = 0; continue; }
            if (cls == B_LF && prev_cr) { prev_cr = 0; continue; } // the \n of \r\n
            prev_cr = cls == B_CR;
            line_end(ctx);
            in_line = 0;
        }
        r.pos = len;
    }
    if (n > 0) word(ctx, w, n);
    if (in_line) line_end(ctx); // a last line without a newline still ends a sentence
    free(w);
    reader_close(&r);
}

static const char* SPECIALS[4] = { "<s>", "<pad>", "</s>", "<unk>" };
enum { BOS_ID = 0, PAD_ID = 1, EOS_ID = 2, UNK_ID = 3 };

typedef struct { WordTable* t; long eos; } CountCtx;

static void count_word(void* ctx, const unsigned char* w, long n) {
    table_find(((CountCtx*)ctx)->t, w, n, 1)->count++;
}
static void count_line(void* ctx) { ((CountCtx*)ctx)->eos++; }

static WordTable* sort_table; // for the qsort comparator

// fairseq's Dictionary.finalize: count descending; equal counts in code point order, which
// is the byte order of UTF-8 strings (Counter(sorted(...)).most_common is a stable sort).
static int by_count_then_word(const void* a, const void* b) {
    const Entry* x = *(const Entry* const*)a;
    const Entry* y = *(const Entry* const*)b;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    return strcmp(table_key(sort_table, x), table_key(sort_table, y));
}

// Appends a word that is not yet in the table with the next id.
static void add_padding_word(WordTable* t, char*** tokens, long* V, long* cap, const char* word) {
    Entry* e = table_find(t, (const unsigned char*)word, (long)strlen(word), 1);
    if (e->id >= 0) return; // fairseq's add_symbol only bumps the count of an existing word
    e->id = *V;
    if (*V == *cap) { *cap *= 2; *tokens = (char**)realloc(*tokens, (size_t)*cap * sizeof(char*)); if (!*tokens) fail("out of memory"); }
    (*tokens)[(*V)++] = (char*)(uintptr_t)e->off; // pool offsets until the pool stops moving
}

// Builds the vocabulary: ids assigned in the table, tokens returned in id order.
static char** build_vocab(WordTable* t, long eos_count, long vocab_size, long* V_out) {
    long cap = t->n + 16;
    char** tokens = (char**)malloc_check((size_t)cap * sizeof(char*));
    long V = 0;
    // fairseq's Dictionary starts with the four specials at count 1; occurrences in the
    // text add to them and they keep their ids.
    for (int s = 0; s < 4; s++) {
        Entry* e = table_find(t, (const unsigned char*)SPECIALS[s], (long)strlen(SPECIALS[s]), 1);
        e->count += 1 + (s == EOS_ID ? eos_count : 0);
        e->id = V;
        tokens[V++] = (char*)(uintptr_t)e->off;
    }
    Entry** rest = (Entry**)malloc_check((size_t)t->n * sizeof(Entry*));
    long m = 0;
    for (long i = 0; i < t->cap; i++)
        if (t->slots[i].off != SIZE_MAX && t->slots[i].id < 0) rest[m++] = &t->slots[i];
    sort_table = t;
    qsort(rest, (size_t)m, sizeof(Entry*), by_count_then_word);
    for (long i = 0; i < m; i++) {
        rest[i]->id = V;
        tokens[V++] = (char*)(uintptr_t)rest[i]->off;
    }
    free(rest);
    long natural = V;
    long target = vocab_size > 0 ? vocab_size : (V + 7) / 8 * 8;
    if (target < V) fail("--vocab-size %ld is smaller than the %ld words counted", vocab_size, V);
    char name[32];
    for (long i = 0; V < target; i++) {
        snprintf(name, sizeof(name), "madeupword%04ld", i);
        add_padding_word(t, &tokens, &V, &cap, name);
    }
    for (long i = 0; i < V; i++) tokens[i] = t->pool + (size_t)(uintptr_t)tokens[i];
    fprintf(stderr, "vocabulary: %ld words counted (with the 4 specials), %ld with padding\n", natural, V);
    *V_out = V;
    return tokens;
}

typedef struct {
    WordTable* t;
    TokenShardWriter* out;
    uint32_t buf[65536];
    long nbuf, ntokens, nunk, nlines;
} EncodeCtx;

static void encode_push(EncodeCtx* c, uint32_t id) {
    c->buf[c->nbuf++] = id;
    c->ntokens++;
    if (c->nbuf == 65536) { token_shard_writer_append(c->out, c->buf, c->nbuf); c->nbuf = 0; }
}

static void encode_word(void* ctx, const unsigned char* w, long n) {
    EncodeCtx* c = (EncodeCtx*)ctx;
    Entry* e = table_find(c->t, w, n, 0);
    if (e == NULL || e->id < 0) { c->nunk++; encode_push(c, UNK_ID); }
    else encode_push(c, (uint32_t)e->id);
}

static void encode_line(void* ctx) {
    EncodeCtx* c = (EncodeCtx*)ctx;
    c->nlines++;
    encode_push(c, EOS_ID);
}

static void usage(void) {
    fprintf(stderr,
        "usage: prepare_text char INPUT OUTDIR\n"
        "       prepare_text words [--dir D] [--train F] [--valid F] [--test F]\n"
        "                          [--vocab-from F]... [--vocab F] [--vocab-size N] OUTDIR\n"
        "  char:  nanoGPT shakespeare_char: OUTDIR/{vocab.txt,train.bin,val.bin}\n"
        "  words: fairseq WikiText: OUTDIR/vocab.txt and train.bin/val.bin/test.bin for the\n"
        "         splits given; --dir D means D/wiki.{train,valid,test}.tokens; the vocabulary\n"
        "         is counted over --vocab-from files (default: the train file) or read from\n"
        "         --vocab; --vocab-size N pads it with madeupwords to N entries\n");
    exit(2);
}

static void prepare_words(int argc, char** argv) {
    const char* split_files[3] = { NULL, NULL, NULL };
    const char* split_names[3] = { "train.bin", "val.bin", "test.bin" };
    const char* vocab_from[64];
    int nfrom = 0;
    const char* vocab_file = NULL;
    const char* outdir = NULL;
    long vocab_size = 0;
    char* dir_files[3] = { NULL, NULL, NULL };
    for (int i = 0; i < argc; i++) {
        const char* a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--dir") && has) {
            const char* names[3] = { "wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens" };
            for (int s = 0; s < 3; s++) { free(dir_files[s]); dir_files[s] = join_path(argv[i + 1], names[s]); split_files[s] = dir_files[s]; }
            i++;
        } else if (!strcmp(a, "--train") && has) split_files[0] = argv[++i];
        else if (!strcmp(a, "--valid") && has) split_files[1] = argv[++i];
        else if (!strcmp(a, "--test") && has) split_files[2] = argv[++i];
        else if (!strcmp(a, "--vocab-from") && has) {
            if (nfrom == 64) fail("at most 64 --vocab-from files");
            vocab_from[nfrom++] = argv[++i];
        } else if (!strcmp(a, "--vocab") && has) vocab_file = argv[++i];
        else if (!strcmp(a, "--vocab-size") && has) {
            char* end;
            errno = 0;
            vocab_size = strtol(argv[++i], &end, 10);
            if (*argv[i] == '\0' || *end || errno != 0 || vocab_size <= 0 || vocab_size > VOCAB_MAX_ENTRIES)
                fail("--vocab-size wants an integer in [1, %ld], got '%s'", VOCAB_MAX_ENTRIES, argv[i]);
        } else if (a[0] == '-') usage();
        else if (outdir == NULL) outdir = a;
        else usage();
    }
    if (outdir == NULL) usage();
    if (vocab_file && (nfrom > 0 || vocab_size > 0)) fail("--vocab cannot be combined with --vocab-from or --vocab-size");
    if (!vocab_file && nfrom == 0) {
        if (split_files[0] == NULL) fail("no vocabulary source: give --train, --dir, --vocab-from or --vocab");
        vocab_from[nfrom++] = split_files[0];
    }
    for (int s = 0; s < 3; s++) if (split_files[s]) file_size(split_files[s]); // fail early if missing
    for (int i = 0; i < nfrom; i++) file_size(vocab_from[i]);

    init_byte_class();
    WordTable t;
    table_init(&t, 1 << 16);
    char** tokens;
    long V;
    Vocab loaded = { 0, NULL };
    if (vocab_file) {
        loaded = vocab_load(vocab_file);
        V = loaded.size;
        if (V < 4) fail("%s: %ld entries, fewer than the 4 special symbols", vocab_file, V);
        for (int s = 0; s < 4; s++)
            if (strcmp(loaded.tokens[s], SPECIALS[s]) != 0)
                fail("%s: line %d is '%s', expected the special symbol '%s'", vocab_file, s + 1, loaded.tokens[s], SPECIALS[s]);
        for (long i = 0; i < V; i++) {
            Entry* e = table_find(&t, (const unsigned char*)loaded.tokens[i], (long)strlen(loaded.tokens[i]), 1);
            if (e->id >= 0) fail("%s: line %ld repeats the token on line %ld", vocab_file, i + 1, e->id + 1);
            e->id = i;
        }
        tokens = loaded.tokens;
    } else {
        CountCtx cc = { &t, 0 };
        double t0 = now_seconds();
        long bytes = 0;
        for (int i = 0; i < nfrom; i++) {
            for_each_word(vocab_from[i], "counting", count_word, count_line, &cc);
            bytes += file_size(vocab_from[i]);
        }
        fprintf(stderr, "counted %ld distinct words in %.1f MB, %.1f MB/s\n", t.n, bytes / 1e6,
                bytes / 1e6 / (now_seconds() - t0));
        tokens = build_vocab(&t, cc.eos, vocab_size, &V);
    }

    make_dir(outdir);
    char* vocab_path = join_path(outdir, "vocab.txt");
    vocab_write(vocab_path, tokens, V);
    printf("%s: %ld entries\n", vocab_path, V);
    EncodeCtx* c = (EncodeCtx*)malloc_check(sizeof(EncodeCtx));
    for (int s = 0; s < 3; s++) {
        if (split_files[s] == NULL) continue;
        char* out_path = join_path(outdir, split_names[s]);
        c->t = &t;
        c->out = token_shard_writer_open(out_path, V);
        c->nbuf = c->ntokens = c->nunk = c->nlines = 0;
        double t0 = now_seconds();
        for_each_word(split_files[s], "tokenising", encode_word, encode_line, c);
        token_shard_writer_append(c->out, c->buf, c->nbuf);
        token_shard_writer_close(c->out);
        double dt = now_seconds() - t0;
        long bytes = file_size(split_files[s]);
        printf("%s: %ld lines, %ld tokens, %ld (%.2f%%) replaced by <unk> -> %s (%.1f MB/s)\n",
               split_files[s], c->nlines, c->ntokens, c->nunk, 100.0 * c->nunk / (c->ntokens ? c->ntokens : 1),
               out_path, bytes / 1e6 / (dt > 0 ? dt : 1e-9));
        free(out_path);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    fprintf(stderr, "peak memory %.1f MB\n", ru.ru_maxrss / 1024.0);
    free(c);
    free(vocab_path);
    if (vocab_file) vocab_free(&loaded);
    else free(tokens);
    table_free(&t);
    for (int s = 0; s < 3; s++) free(dir_files[s]);
}

int main(int argc, char** argv) {
    if (argc >= 2 && !strcmp(argv[1], "char")) {
        if (argc != 4) usage();
        prepare_chars(argv[2], argv[3]);
    } else if (argc >= 2 && !strcmp(argv[1], "words")) {
        prepare_words(argc - 2, argv + 2);
    } else {
        usage();
    }
    return 0;
}
