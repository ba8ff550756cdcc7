// Checked wrappers for the C library calls that can fail on bad input or a full
// disk. Each failure names the file and what went wrong, then exits non-zero.
#ifndef UTILS_UTILS_H
#define UTILS_UTILS_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/stat.h>

#ifdef FUZZING
#include <setjmp.h>
// Fuzz builds (dev/fuzz/): a target sets fail_jump with setjmp before it calls a
// reader, and fail() returns there instead of ending the process. Whatever the reader
// had allocated leaks (fuzz runs turn leak detection off), except the files it had open
// with fopen_check, which stay listed here until fclose_check for the target to close:
// a FILE's buffer is most of what a refused read would leak.
static jmp_buf fail_jump;
static FILE* fuzz_open_files[8];
#endif

// Print "error: <message>" to stderr and exit(1).
static void fail(const char* fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fail(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
#ifdef FUZZING
    // Format the message (its arguments must be valid) but keep the fuzzer's log quiet.
    char message[1024];
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    longjmp(fail_jump, 1);
#else
    // one write, so that the line stays whole among other processes' output (MPI ranks)
    char message[4096];
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    fflush(stdout);
    fprintf(stderr, "error: %s\n", message);
    exit(1);
#endif
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
#ifdef FUZZING
    for (size_t i = 0; i < sizeof(fuzz_open_files) / sizeof(fuzz_open_files[0]); i++)
        if (fuzz_open_files[i] == NULL) { fuzz_open_files[i] = f; break; }
#endif
    return f;
}

// NULL when st describes a regular file, else what it is instead. Readers refuse the
// rest: a folder "opens" and then reads as an error or a size of 2^63, a pipe or a
// device has no size to check a header against.
static const char* not_regular_file(const struct stat* st) {
    if (S_ISREG(st->st_mode)) return NULL;
    return S_ISDIR(st->st_mode) ? "a folder, not a file" : "not a regular file";
}

// Opens the regular file at path for reading and gives its size in bytes; fails
// naming path when it cannot be opened or is a folder, a pipe or a device.
static FILE* fopen_read_check(const char* path, long* size) {
    FILE* f = fopen_check(path, "rb");
    struct stat st;
    if (fstat(fileno(f), &st) != 0) fail("%s: cannot stat: %s", path, strerror(errno));
    const char* what = not_regular_file(&st);
    if (what != NULL) fail("%s: %s", path, what);
    *size = (long)st.st_size;
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
#ifdef FUZZING
    for (size_t i = 0; i < sizeof(fuzz_open_files) / sizeof(fuzz_open_files[0]); i++)
        if (fuzz_open_files[i] == f) fuzz_open_files[i] = NULL;
#endif
    if (fclose(f) != 0) fail("%s: close failed: %s", path, strerror(errno));
}

// The whole regular file at path, NUL-terminated (*len bytes before the NUL; the caller
// frees it), or NULL with *why set when it cannot be opened, is not a regular file, is
// larger than max_bytes or cannot be read. For callers that skip bad files and go on.
static char* read_whole_file_or_why(const char* path, long max_bytes, long* len, const char** why) {
    FILE* f = fopen(path, "rb");
    if (f == NULL) { *why = strerror(errno); return NULL; }
    struct stat st;
    char* buf = NULL;
    *why = fstat(fileno(f), &st) != 0 ? strerror(errno) : not_regular_file(&st);
    if (*why == NULL && (long)st.st_size > max_bytes) *why = "too large for what is read here";
    if (*why == NULL && (buf = (char*)malloc((size_t)st.st_size + 1)) == NULL) *why = "out of memory";
    if (*why == NULL && fread(buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
        *why = "cannot read the file";
        free(buf);
        buf = NULL;
    }
    if (*why == NULL) {
        buf[st.st_size] = '\0';
        *len = (long)st.st_size;
    }
    fclose(f);
    return buf;
}

// read_whole_file_or_why, failing with a message that names path.
static char* read_whole_file(const char* path, long max_bytes, long* len) {
    const char* why = NULL;
    char* buf = read_whole_file_or_why(path, max_bytes, len, &why);
    if (buf == NULL) fail("%s: %s", path, why);
    return buf;
}

#endif
