// Test helpers for code that is meant to fail: run a function, or a program, in a child
// process and capture its output and exit status, so a test can check both.
#ifndef DEV_TEST_CAPTURE_H
#define DEV_TEST_CAPTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
#include "utils/utils.h"

// Reads the child's output from fd into out (NUL-terminated, truncated to cap-1) and
// returns its exit status (-1 if it did not exit normally).
static int capture_finish(pid_t pid, int fd, char* out, size_t cap) {
    size_t n = 0;
    char sink[4096];
    for (;;) {
        ssize_t got = n + 1 < cap ? read(fd, out + n, cap - 1 - n) : read(fd, sink, sizeof(sink));
        if (got <= 0) break;
        if (n + 1 < cap) n += (size_t)got;
    }
    out[n] = '\0';
    close(fd);
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Runs fn(arg) in a child with stdout and stderr captured into out; the child exits 0 if
// fn returns.
static int run_captured(void (*fn)(void*), void* arg, char* out, size_t cap) {
    int fd[2];
    if (pipe(fd) != 0) { perror("pipe"); exit(1); }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); exit(1); }
    if (pid == 0) {
        dup2(fd[1], 1);
        dup2(fd[1], 2);
        close(fd[0]);
        close(fd[1]);
        fn(arg);
        fflush(stdout);
        _exit(0);
    }
    close(fd[1]);
    return capture_finish(pid, fd[0], out, cap);
}

// Runs the program argv[0] with arguments argv (NULL-terminated), stdout and stderr captured.
static int run_program(char* const argv[], char* out, size_t cap) {
    int fd[2];
    if (pipe(fd) != 0) { perror("pipe"); exit(1); }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); exit(1); }
    if (pid == 0) {
        dup2(fd[1], 1);
        dup2(fd[1], 2);
        close(fd[0]);
        close(fd[1]);
        execv(argv[0], argv);
        fprintf(stderr, "cannot run %s\n", argv[0]);
        _exit(127);
    }
    close(fd[1]);
    return capture_finish(pid, fd[0], out, cap);
}

// Runs program with space-separated arguments (no quoting), output captured.
static int run_args(const char* program, const char* args, char* out, size_t cap) {
    static char buf[8192];
    char* argv[128];
    int n = 0;
    argv[n++] = (char*)program;
    snprintf(buf, sizeof(buf), "%s", args);
    for (char* tok = strtok(buf, " "); tok != NULL && n < 127; tok = strtok(NULL, " ")) argv[n++] = tok;
    argv[n] = NULL;
    return run_program(argv, out, cap);
}

// The whole file as a NUL-terminated string (malloc'd), or NULL if it cannot be opened.
static char* slurp(const char* path) {
    FILE* f = fopen(path, "rb");
    if (f == NULL) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char* s = (char*)malloc_check((size_t)n + 1);
    if (fread(s, 1, (size_t)n, f) != (size_t)n) n = 0;
    s[n] = '\0';
    fclose(f);
    return s;
}

static void write_text(const char* path, const char* text) {
    FILE* f = fopen_check(path, "wb");
    fwrite_check(text, 1, strlen(text), f, path);
    fclose_check(f, path);
}

// Path of a sibling program: the folder of argv0 + "/" + name (tests live beside the tools).
static void sibling_path(const char* argv0, const char* name, char* out, size_t cap) {
    const char* slash = strrchr(argv0, '/');
    int dir_len = slash ? (int)(slash - argv0) : 1;
    snprintf(out, cap, "%.*s/%s", dir_len, slash ? argv0 : ".", name);
}

// The "error: ..." line of a captured output (else its first line), without the newline,
// for a one-line test name.
static const char* error_line(const char* out) {
    static char line[200];
    const char* p = strstr(out, "error:");
    if (p == NULL) p = out;
    size_t n = strcspn(p, "\n");
    if (n >= sizeof(line)) n = sizeof(line) - 1;
    memcpy(line, p, n);
    line[n] = '\0';
    return line;
}

// Makes a fresh temporary folder (mkdtemp) and writes its path into dir.
static void make_temp_dir(char* dir, size_t cap, const char* tag) {
    snprintf(dir, cap, "/tmp/%s_XXXXXX", tag);
    if (mkdtemp(dir) == NULL) { perror("mkdtemp"); exit(1); }
}

// Removes a temporary folder made by make_temp_dir.
static void remove_temp_dir(const char* dir) {
    char cmd[4200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
}

#endif
