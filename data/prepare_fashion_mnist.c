// Fashion-MNIST (or MNIST) IDX files to image shards (utils/image_shard.h).
//
//   prepare_fashion_mnist IDX_DIR OUTDIR
//
// IDX_DIR holds train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
// t10k-labels-idx1-ubyte, each gzipped (.gz, as downloaded) or not (as Debian's
// dataset-fashion-mnist may install them under /usr/share/datasets/fashion-mnist/).
// Writes OUTDIR/train_000000.bin (60,000 images) and OUTDIR/test_000000.bin (10,000):
// 28 x 28, 1 channel, 10 classes. Other sizes are accepted (MNIST-like sets) within the
// bounds of an image shard.
#include <stdint.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include "utils/utils.h"
#include "utils/image_shard.h"

#define IDX_MAX_BYTES (1L << 30) // of an IDX file, decompressed (Fashion-MNIST's largest: 47 MB)

// Contents of a gzip file, through the system's gzip (stb's inflate rejects some of these
// files, and gzip is everywhere zlib's headers may not be), at most IDX_MAX_BYTES.
static unsigned char* gunzip(const char* path, long* out_len) {
    int fd[2];
    if (pipe(fd) != 0) fail("pipe failed: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) fail("fork failed: %s", strerror(errno));
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execlp("gzip", "gzip", "-dc", "--", path, (char*)NULL);
        fprintf(stderr, "error: cannot run gzip to read %s: %s\n", path, strerror(errno));
        _exit(127);
    }
    close(fd[1]);
    long cap = 1 << 20, n = 0;
    unsigned char* buf = (unsigned char*)malloc_check((size_t)cap);
    for (;;) {
        if (n == cap) { cap *= 2; buf = (unsigned char*)realloc(buf, (size_t)cap); if (!buf) fail("out of memory"); }
        ssize_t got = read(fd[0], buf + n, (size_t)(cap - n));
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) fail("%s: read error from gzip: %s", path, strerror(errno));
        if (got == 0) break;
        n += got;
        if (n > IDX_MAX_BYTES) fail("%s: decompresses to more than %ld bytes, too large for an IDX file", path, IDX_MAX_BYTES);
    }
    close(fd[0]);
    int status;
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail("%s: gzip could not decompress it (corrupt or truncated?)", path);
    *out_len = n;
    return buf;
}

// Loads name or name.gz from dir.
static unsigned char* load_idx(const char* dir, const char* name, long* len, char* path, size_t plen) {
    struct stat st;
    snprintf(path, plen, "%s/%s.gz", dir, name);
    if (stat(path, &st) != 0) snprintf(path, plen, "%s/%s", dir, name);
    long n;
    unsigned char* raw = (unsigned char*)read_whole_file(path, IDX_MAX_BYTES, &n);
    if (n >= 2 && raw[0] == 0x1f && raw[1] == 0x8b) {
        free(raw);
        return gunzip(path, len);
    }
    *len = n;
    return raw;
}

static uint32_t be32(const unsigned char* p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void convert(const char* dir, const char* images_name, const char* labels_name, const char* out_path) {
    char ipath[4096], lpath[4096];
    long ni, nl;
    unsigned char* img = load_idx(dir, images_name, &ni, ipath, sizeof(ipath));
    unsigned char* lab = load_idx(dir, labels_name, &nl, lpath, sizeof(lpath));
    if (ni < 16 || be32(img) != 0x803) fail("%s: not an IDX image file (magic %u, expected 2051)", ipath, ni >= 4 ? be32(img) : 0);
    if (nl < 8 || be32(lab) != 0x801) fail("%s: not an IDX label file (magic %u, expected 2049)", lpath, nl >= 4 ? be32(lab) : 0);
    long n = be32(img + 4), rows = be32(img + 8), cols = be32(img + 12);
    if (n > INT32_MAX || rows < 1 || rows > IMAGE_SHARD_MAX_SIDE || cols < 1 || cols > IMAGE_SHARD_MAX_SIDE)
        fail("%s: header says %ld images of %ldx%ld; an image shard holds up to %d images of 1 to %d pixels a side",
             ipath, n, rows, cols, INT32_MAX, IMAGE_SHARD_MAX_SIDE);
    long bytes;
    if (__builtin_mul_overflow(n, rows * cols, &bytes) || ni - 16 != bytes)
        fail("%s: header says %ld images of %ldx%ld but there are %ld bytes of pixels", ipath, n, rows, cols, ni - 16);
    if (nl != 8 + (long)be32(lab + 4)) fail("%s: header says %u labels but there are %ld bytes", lpath, be32(lab + 4), nl - 8);
    if ((long)be32(lab + 4) != n) fail("%s has %ld images but %s has %u labels", ipath, n, lpath, be32(lab + 4));
    int32_t* labels = (int32_t*)malloc_check((size_t)n * sizeof(int32_t));
    for (long i = 0; i < n; i++) {
        if (lab[8 + i] > 9) fail("%s: label %d of image %ld is outside [0, 10)", lpath, lab[8 + i], i);
        labels[i] = lab[8 + i];
    }
    image_shard_write(out_path, img + 16, labels, n, 1, (int)rows, (int)cols, 10);
    printf("%s + %s: %ld images %ldx%ld -> %s\n", ipath, lpath, n, rows, cols, out_path);
    free(labels);
    free(img);
    free(lab);
}

int main(int argc, char** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: prepare_fashion_mnist IDX_DIR OUTDIR\n"
                        "  writes OUTDIR/train_000000.bin and OUTDIR/test_000000.bin\n");
        return 2;
    }
    if (mkdir(argv[2], 0755) != 0 && errno != EEXIST) fail("cannot create %s: %s", argv[2], strerror(errno));
    char out[4096];
    snprintf(out, sizeof(out), "%s/train_000000.bin", argv[2]);
    convert(argv[1], "train-images-idx3-ubyte", "train-labels-idx1-ubyte", out);
    snprintf(out, sizeof(out), "%s/test_000000.bin", argv[2]);
    convert(argv[1], "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", out);
    return 0;
}
