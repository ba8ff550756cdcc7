// Vocabulary file: text, one token per line, line i = token id i. Inside a token the
// characters that would break the line structure or be invisible are escaped:
// backslash, newline, tab, CR and space as \\ \n \t \r \s.
#ifndef UTILS_VOCAB_H
#define UTILS_VOCAB_H

#include <stdio.h>
#include "utils/utils.h"

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
    size_t len = strlen(path);
    char* tmp = (char*)malloc_check(len + 5);
    snprintf(tmp, len + 5, "%s.tmp", path);
    FILE* f = fopen_check(tmp, "wb");
    for (long i = 0; i < n; i++) vocab_write_token(f, tokens[i], tmp);
    fclose_check(f, tmp);
    if (rename(tmp, path) != 0) fail("cannot rename %s to %s: %s", tmp, path, strerror(errno));
    free(tmp);
}

// Loads a vocabulary file; fails naming the file and line on a bad escape.
static Vocab vocab_load(const char* path) {
    FILE* f = fopen_check(path, "rb");
    if (fseek(f, 0, SEEK_END) != 0) fail("%s: seek failed: %s", path, strerror(errno));
    long bytes = ftell(f);
    if (bytes < 0) fail("%s: cannot tell size: %s", path, strerror(errno));
    rewind(f);
    char* text = (char*)malloc_check((size_t)bytes + 1);
    fread_check(text, 1, (size_t)bytes, f, path);
    fclose_check(f, path);
    if (bytes == 0) fail("%s: empty vocabulary file", path);
    if (text[bytes - 1] != '\n') text[bytes++] = '\n'; // accept a missing final newline

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

static void vocab_free(Vocab* v) {
    if (v->size > 0) free(v->tokens[0]); // all tokens live in the one text buffer
    free(v->tokens);
    v->tokens = NULL;
    v->size = 0;
}

#endif
