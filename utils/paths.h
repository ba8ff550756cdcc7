// Output paths: the folders of an output file are created on demand, and files
// are written to "<path>.tmp" and renamed once on disk, so a file is either complete
// or absent, even after a crash.
#ifndef UTILS_PATHS_H
#define UTILS_PATHS_H

#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include "utils/utils.h"

// mkdir -p of the folder that holds path.
static void make_parent_dirs(const char* path) {
    char buf[4096];
    size_t n = strlen(path);
    if (n >= sizeof(buf)) fail("path too long: %s", path);
    memcpy(buf, path, n + 1);
    for (char* p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) fail("cannot create folder %s: %s", buf, strerror(errno));
        *p = '/';
    }
}

// "<path>.tmp" in a static buffer.
static const char* tmp_path_of(const char* path) {
    static char buf[4096 + 8];
    if (strlen(path) >= 4096) fail("path too long: %s", path);
    snprintf(buf, sizeof(buf), "%s.tmp", path);
    return buf;
}

// Forces what was written to the file or folder at path onto the disk (EINVAL: the
// file system has nothing to sync there).
static void sync_path(const char* path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) fail("cannot open %s to sync it: %s", path, strerror(errno));
    if (fsync(fd) != 0 && errno != EINVAL) fail("cannot sync %s to disk: %s", path, strerror(errno));
    close(fd);
}

// Renames a finished "<path>.tmp" into place, durably: its data reach the disk before
// the rename, and the folder's new entry after it, so that after a crash the path holds
// the old file or the new one, whole, never one whose data were still in memory.
static void rename_check(const char* from, const char* to) {
    sync_path(from);
    if (rename(from, to) != 0) fail("cannot rename %s to %s: %s", from, to, strerror(errno));
    char folder[4096] = ".";
    const char* slash = strrchr(to, '/');
    if (slash != NULL) {
        size_t n = slash == to ? 1 : (size_t)(slash - to); // "/name" lives in "/"
        if (n >= sizeof(folder)) fail("path too long: %s", to);
        memcpy(folder, to, n);
        folder[n] = '\0';
    }
    sync_path(folder);
}

// out (cap bytes) = pattern with "{attention}", "{data}" and "{step}" replaced, as
// the trainers name their logs and checkpoints.
static void expand_path(char* out, size_t cap, const char* pattern, const char* attention, const char* data,
                        long step) {
    char stepbuf[32];
    snprintf(stepbuf, sizeof(stepbuf), "%ld", step);
    const char* keys[3] = {"{attention}", "{data}", "{step}"};
    const char* values[3] = {attention, data, stepbuf};
    size_t n = 0;
    for (const char* p = pattern; *p;) {
        const char* rep = NULL;
        size_t skip = 1;
        for (int k = 0; k < 3; k++)
            if (strncmp(p, keys[k], strlen(keys[k])) == 0) { rep = values[k]; skip = strlen(keys[k]); }
        size_t len = rep ? strlen(rep) : 1;
        if (n + len >= cap) fail("path too long: %s", pattern);
        memcpy(out + n, rep ? rep : p, len);
        n += len;
        p += skip;
    }
    out[n] = '\0';
}

#endif
