// Checked wrappers for the C library calls that can fail on bad input or a full
// disk. Each failure names the file and what went wrong, then exits non-zero.
#ifndef UTILS_UTILS_H
#define UTILS_UTILS_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

// Print "error: <message>" to stderr and exit(1).
static void fail(const char* fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fail(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static inline void* malloc_check(size_t size) {
    void* p = malloc(size > 0 ? size : 1);
    if (p == NULL) fail("out of memory allocating %zu bytes", size);
    return p;
}

static inline void* calloc_check(size_t count, size_t size) {
    void* p = calloc(count > 0 ? count : 1, size > 0 ? size : 1);
    if (p == NULL) fail("out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

static inline FILE* fopen_check(const char* path, const char* mode) {
    FILE* f = fopen(path, mode);
    if (f == NULL) fail("cannot open %s (mode %s): %s", path, mode, strerror(errno));
    return f;
}

// Reads exactly count items or fails, naming the file (a truncated file is the usual cause).
static inline void fread_check(void* ptr, size_t size, size_t count, FILE* f, const char* path) {
    size_t got = fread(ptr, size, count, f);
    if (got != count) {
        if (ferror(f)) fail("%s: read error: %s", path, strerror(errno));
        fail("%s: truncated: expected %zu items of %zu bytes, got %zu", path, count, size, got);
    }
}

static inline void fwrite_check(const void* ptr, size_t size, size_t count, FILE* f, const char* path) {
    if (fwrite(ptr, size, count, f) != count) fail("%s: write failed: %s", path, strerror(errno));
}

static inline void fclose_check(FILE* f, const char* path) {
    if (fclose(f) != 0) fail("%s: close failed: %s", path, strerror(errno));
}

#endif
