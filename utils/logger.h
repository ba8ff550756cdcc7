// JSON-lines log (one object per line, flushed at once, for plotting while a
// run goes on) and the time formatting of progress lines.
#ifndef UTILS_LOGGER_H
#define UTILS_LOGGER_H

#include <stdarg.h>
#include "utils/utils.h"
#include "utils/paths.h"

typedef struct {
    FILE* f;        // NULL: logging off
    char path[4096];
} Logger;

// Opens path for appending (a resumed run) or anew; an empty path turns logging off.
static Logger logger_open(const char* path, int append) {
    Logger log;
    log.f = NULL;
    log.path[0] = '\0';
    if (path == NULL || path[0] == '\0') return log;
    if (strlen(path) >= sizeof(log.path)) fail("log path too long: %s", path);
    strcpy(log.path, path);
    make_parent_dirs(path);
    log.f = fopen_check(path, append ? "ab" : "wb");
    return log;
}

// Writes one line (the format gives the JSON object, without the newline).
static void logger_printf(Logger* log, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static void logger_printf(Logger* log, const char* fmt, ...) {
    if (log->f == NULL) return;
    va_list ap;
    va_start(ap, fmt);
    if (vfprintf(log->f, fmt, ap) < 0 || fputc('\n', log->f) == EOF || fflush(log->f) != 0)
        fail("%s: write failed: %s", log->path, strerror(errno));
    va_end(ap);
}

// Writes text as it is, for a line written in parts (the last part ends it with "\n").
static void logger_printf_raw(Logger* log, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static void logger_printf_raw(Logger* log, const char* fmt, ...) {
    if (log->f == NULL) return;
    va_list ap;
    va_start(ap, fmt);
    if (vfprintf(log->f, fmt, ap) < 0 || fflush(log->f) != 0) fail("%s: write failed: %s", log->path, strerror(errno));
    va_end(ap);
}

static void logger_close(Logger* log) {
    if (log->f != NULL) fclose_check(log->f, log->path);
    log->f = NULL;
}

// "1h02m", "3m05s" or "12s".
static void format_duration(double seconds, char* buf, size_t n) {
    long s = seconds > 0 ? (long)(seconds + 0.5) : 0;
    if (s >= 3600) snprintf(buf, n, "%ldh%02ldm", s / 3600, (s / 60) % 60);
    else if (s >= 60) snprintf(buf, n, "%ldm%02lds", s / 60, s % 60);
    else snprintf(buf, n, "%lds", s);
}

#endif
