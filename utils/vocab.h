// Vocabulary file: text, one token per line, line i = token id i. Inside a token the
// characters that would break the line structure or be invisible are escaped:
// backslash, newline, tab, CR and space as \\ \n \t \r \s.
// A vocabulary with a "</s>" token is word-level (fairseq): text is split into
// words on spaces, and decoded words are joined by spaces with </s> ending a line.
// Otherwise tokens are characters, concatenated.
#ifndef UTILS_VOCAB_H
#define UTILS_VOCAB_H

#include <stdio.h>
#include <string.h>
#include "utils/utils.h"
#include "utils/paths.h"

#define VOCAB_MAX_FILE (1L << 30) // bytes of a vocabulary file

typedef struct {
    long size;
    char** tokens; // size NUL-terminated strings, unescaped
} Vocab;

// Writes one token with its escapes and the terminating newline.
static void vocab_write_token(FILE* f, const char* tok, const char* path) {
    for (const char* p = tok; *p; p++) {
        const char* esc = NULL;
        switch (*p) {
            case '\\': esc = "\\\\"; break;
            case '\n': esc = "\\n"; break;
            case '\t': esc = "\\t"; break;
            case '\r': esc = "\\r"; break;
            case ' ': esc = "\\s"; break;
        }
        if (esc) fwrite_check(esc, 1, 2, f, path);
        else fwrite_check(p, 1, 1, f, path);
    }
    fwrite_check("\n", 1, 1, f, path);
}

// Writes n tokens to path atomically ("<path>.tmp", then rename).
static void vocab_write(const char* path, char** tokens, long n) {
    const char* tmp = tmp_path_of(path);
    FILE* f = fopen_check(tmp, "wb");
    for (long i = 0; i < n; i++) vocab_write_token(f, tokens[i], tmp);
    fclose_check(f, tmp);
    rename_check(tmp, path);
}

// Loads a vocabulary file; fails naming the file and line on a bad escape.
static Vocab vocab_load(const char* path) {
    long bytes;
    char* text = read_whole_file(path, VOCAB_MAX_FILE, &bytes);
    if (bytes == 0) fail("%s: empty vocabulary file", path);
    if ((long)strlen(text) != bytes) fail("%s: holds a NUL byte, not a vocabulary", path);
    if (text[bytes - 1] != '\n') text[bytes++] = '\n'; // accept a missing final newline (in the NUL's place)

    long lines = 0;
    for (long i = 0; i < bytes; i++) lines += text[i] == '\n';
    Vocab v;
    v.size = lines;
    v.tokens = (char**)malloc_check((size_t)lines * sizeof(char*));
    // Unescape in place: the output never runs ahead of the input.
    long r = 0, w = 0;
    for (long line = 0; line < lines; line++) {
        v.tokens[line] = text + w;
        while (text[r] != '\n') {
            char c = text[r++];
            if (c == '\\') {
                char e = text[r++];
                switch (e) {
                    case '\\': c = '\\'; break;
                    case 'n': c = '\n'; break;
                    case 't': c = '\t'; break;
                    case 'r': c = '\r'; break;
                    case 's': c = ' '; break;
                    default:
                        fail("%s: line %ld: bad escape '\\%c' (allowed: \\\\ \\n \\t \\r \\s)",
                             path, line + 1, e == '\n' ? ' ' : e);
                }
            }
            text[w++] = c;
        }
        r++;
        text[w++] = '\0';
    }
    return v;
}

static int vocab_is_words(const Vocab* v) {
    for (long i = 0; i < v->size; i++) if (strcmp(v->tokens[i], "</s>") == 0) return 1;
    return 0;
}

// Id of the token made of the len bytes at tok, or -1.
static long vocab_find(const Vocab* v, const char* tok, size_t len) {
    for (long i = 0; i < v->size; i++)
        if (strlen(v->tokens[i]) == len && strncmp(v->tokens[i], tok, len) == 0) return i;
    return -1;
}

// Token ids of text, at most max (at least one: an empty text is a line break).
// Unknown words become <unk>, with a warning; an unknown character stops with a
// message naming path.
static int vocab_encode(const Vocab* v, const char* text, int* out, int max, const char* path) {
    int words = vocab_is_words(v), n = 0;
    const char* p = text[0] ? text : words ? "</s>" : "\n";
    while (*p && n < max) {
        size_t len = 1;
        if (words) {
            while (*p == ' ') p++;
            if (!*p) break;
            len = strcspn(p, " ");
        }
        long id = vocab_find(v, p, len);
        if (id < 0 && words) {
            fprintf(stderr, "warning: the prompt's word \"%.*s\" is not in %s; it becomes <unk>\n", (int)len, p, path);
            id = vocab_find(v, "<unk>", 5);
        }
        if (id < 0) fail("%s: the prompt's token \"%.*s\" is not in the vocabulary", path, (int)len, p);
        out[n++] = (int)id;
        p += len;
    }
    if (n == 0) fail("the prompt \"%s\" has no tokens", text);
    return n;
}

// Prints token id as text: a word and a space, </s> as a line break, or a
// character; an id past the vocabulary file (a model whose vocab_size is larger) as <id>.
static void vocab_print_token(const Vocab* v, int id, int words) {
    if (id < 0 || id >= v->size) {
        printf(words ? "<%d> " : "<%d>", id);
        return;
    }
    const char* tok = v->tokens[id];
    if (words) {
        if (strcmp(tok, "</s>") == 0) printf("\n");
        else printf("%s ", tok);
    } else {
        printf("%s", tok);
    }
}

static void vocab_free(Vocab* v) {
    if (v->size > 0) free(v->tokens[0]); // all tokens live in the one text buffer
    free(v->tokens);
    v->tokens = NULL;
    v->size = 0;
}

#endif
