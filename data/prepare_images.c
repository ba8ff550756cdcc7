// ImageNet-style folders to image shards (utils/image_shard.h).
//
//   prepare_images [--size S] [--shard-size N] [--synsets FILE] [--max-pixels P] SPLIT_DIR OUT_PREFIX
//
// SPLIT_DIR holds one folder per class (train/<wnid>/*.JPEG or val/<wnid>/*.JPEG). The class
// index of a wnid is its position in the sorted list of classes: the first word of each line
// of --synsets FILE (ImageNet's 1000), or else the folder names. Each image is decoded (grey
// and CMYK become RGB), its shorter side resized to S with an antialiased filter and its
// centre S x S kept (utils/image_decode.h); shards OUT_PREFIX_000000.bin, ... hold up to N
// images each, in class then file name order. Files that are not images or are truncated,
// empty class folders and folders outside the class list are reported, skipped and counted,
// as are files that are not JPEG or PNG and images of more than P pixels (width x height;
// 50 megapixels by default), which are refused before they are decoded.
// Decoding runs on all cores (OMP_NUM_THREADS to change).
#include <dirent.h>
#include <glob.h>
#include <omp.h>
#include <time.h>
#include <sys/stat.h>
#include "utils/utils.h"
#include "utils/paths.h"
#include "utils/image_shard.h"
#define STB_IMAGE_IMPLEMENTATION // the one place stb_image is compiled
#include "utils/image_decode.h"

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_str(const void* a, const void* b) { return strcmp(*(char* const*)a, *(char* const*)b); }

static char* str_dup(const char* s) {
    char* d = (char*)malloc_check(strlen(s) + 1);
    strcpy(d, s);
    return d;
}

static char* join_path(const char* dir, const char* name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char* p = (char*)malloc_check(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int is_dir(const char* path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

// Sorted names in dir (hidden entries left out); fails naming dir if it cannot be read.
static char** list_dir(const char* dir, long* n) {
    DIR* d = opendir(dir);
    if (d == NULL) fail("cannot open folder %s: %s", dir, strerror(errno));
    long cap = 64, m = 0;
    char** names = (char**)malloc_check((size_t)cap * sizeof(char*));
    struct dirent* e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        if (m == cap) { cap *= 2; names = (char**)realloc(names, (size_t)cap * sizeof(char*)); if (!names) fail("out of memory"); }
        names[m++] = str_dup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)m, sizeof(char*), cmp_str);
    *n = m;
    return names;
}

static void free_list(char** names, long n) {
    for (long i = 0; i < n; i++) free(names[i]);
    free(names);
}

// Class list from a synsets file: first word of each non-empty line, sorted.
static char** read_synsets(const char* path, long* n) {
    FILE* f = fopen_check(path, "r");
    long cap = 1024, m = 0;
    char** names = (char**)malloc_check((size_t)cap * sizeof(char*));
    char line[4096];
    while (fgets(line, sizeof(line), f)) {
        char* word = strtok(line, " \t\r\n");
        if (word == NULL) continue;
        if (m == cap) { cap *= 2; names = (char**)realloc(names, (size_t)cap * sizeof(char*)); if (!names) fail("out of memory"); }
        names[m++] = str_dup(word);
    }
    fclose_check(f, path);
    if (m == 0) fail("%s: no classes in the synsets file", path);
    qsort(names, (size_t)m, sizeof(char*), cmp_str);
    for (long i = 1; i < m; i++) if (!strcmp(names[i], names[i - 1])) fail("%s: class %s listed twice", path, names[i]);
    *n = m;
    return names;
}

static long find_class(char** classes, long n, const char* name) {
    char** hit = (char**)bsearch(&name, classes, (size_t)n, sizeof(char*), cmp_str);
    return hit ? hit - classes : -1;
}

typedef struct { char* path; int label; } Item;

static void usage(void) {
    fprintf(stderr, "usage: prepare_images [--size S] [--shard-size N] [--synsets FILE] [--max-pixels P] SPLIT_DIR OUT_PREFIX\n"
                    "  writes OUT_PREFIX_000000.bin, ...: S x S RGB images (default S=256), N per shard (default 1024),\n"
                    "  from JPEG and PNG files of at most P pixels (default %ld)\n", IMAGE_MAX_PIXELS);
    exit(2);
}

// The integer value of a flag, which must lie in [lo, hi].
static long flag_value(const char* flag, const char* text, long lo, long hi) {
    char* end;
    errno = 0;
    long x = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || errno != 0 || x < lo || x > hi)
        fail("%s must be an integer in [%ld, %ld], got \"%s\"", flag, lo, hi, text);
    return x;
}

int main(int argc, char** argv) {
    int S = 256;
    long shard_size = 1024, max_pixels = IMAGE_MAX_PIXELS;
    const char* synsets = NULL;
    const char* split_dir = NULL;
    const char* prefix = NULL;
    for (int i = 1; i < argc; i++) {
        int has = i + 1 < argc;
        if (!strcmp(argv[i], "--size") && has) S = (int)flag_value("--size", argv[++i], 1, 4096);
        else if (!strcmp(argv[i], "--shard-size") && has) shard_size = flag_value("--shard-size", argv[++i], 1, INT32_MAX);
        else if (!strcmp(argv[i], "--max-pixels") && has) max_pixels = flag_value("--max-pixels", argv[++i], 1, 1L << 40);
        else if (!strcmp(argv[i], "--synsets") && has) synsets = argv[++i];
        else if (argv[i][0] == '-') usage();
        else if (!split_dir) split_dir = argv[i];
        else if (!prefix) prefix = argv[i];
        else usage();
    }
    if (!split_dir || !prefix) usage();

    long nclasses;
    char** classes;
    long nentries;
    char** entries = list_dir(split_dir, &nentries);
    if (synsets) {
        classes = read_synsets(synsets, &nclasses);
    } else {
        classes = (char**)malloc_check((size_t)(nentries > 0 ? nentries : 1) * sizeof(char*));
        nclasses = 0;
        for (long i = 0; i < nentries; i++) {
            char* p = join_path(split_dir, entries[i]);
            if (is_dir(p)) classes[nclasses++] = str_dup(entries[i]);
            free(p);
        }
        if (nclasses == 0) fail("%s: no class folders", split_dir);
    }

    // Gather the files, class by class; report what cannot be used.
    long nitems = 0, cap = 1024;
    Item* items = (Item*)malloc_check((size_t)cap * sizeof(Item));
    long empty_folders = 0, foreign = 0, folders = 0;
    for (long i = 0; i < nentries; i++) {
        char* dir = join_path(split_dir, entries[i]);
        if (!is_dir(dir)) {
            fprintf(stderr, "skip %s: not a class folder\n", dir);
            foreign++;
            free(dir);
            continue;
        }
        long label = find_class(classes, nclasses, entries[i]);
        if (label < 0) {
            fprintf(stderr, "skip %s: folder not in the class list%s\n", dir, synsets ? " (synsets file)" : "");
            foreign++;
            free(dir);
            continue;
        }
        folders++;
        long nfiles;
        char** files = list_dir(dir, &nfiles);
        long added = 0;
        for (long j = 0; j < nfiles; j++) {
            char* p = join_path(dir, files[j]);
            if (is_dir(p)) { fprintf(stderr, "skip %s: a folder inside a class folder\n", p); foreign++; free(p); continue; }
            if (nitems == cap) { cap *= 2; items = (Item*)realloc(items, (size_t)cap * sizeof(Item)); if (!items) fail("out of memory"); }
            items[nitems].path = p;
            items[nitems].label = (int)label;
            nitems++;
            added++;
        }
        if (added == 0) { fprintf(stderr, "skip %s: empty class folder\n", dir); empty_folders++; }
        free_list(files, nfiles);
        free(dir);
    }
    fprintf(stderr, "%s: %ld files in %ld class folders (%ld classes)\n", split_dir, nitems, folders, nclasses);
    if (nitems == 0) fail("%s: no image files found", split_dir);

    // Decode shard by shard: all cores decode into the shard's buffer, then it is written.
    // The output folder exists before the first image is decoded.
    make_parent_dirs(prefix);
    long chunk = shard_size < nitems ? shard_size : nitems;
    long image_bytes = (long)S * S * 3;
    if (chunk > (1L << 34) / image_bytes)
        fail("a shard of %ld images of %dx%d holds more than 16 GiB, all in memory at once: lower --shard-size",
             chunk, S, S);
    uint8_t* pixels = (uint8_t*)malloc_check((size_t)chunk * image_bytes);
    int32_t* labels = (int32_t*)malloc_check((size_t)chunk * sizeof(int32_t));
    const char** why = (const char**)malloc_check((size_t)chunk * sizeof(char*));
    long written = 0, bad = 0;
    int nshards = 0;
    double t0 = now_seconds();
    size_t plen = strlen(prefix) + 16;
    char* shard_path = (char*)malloc_check(plen);
    for (long start = 0; start < nitems; start += chunk) {
        long n = nitems - start < chunk ? nitems - start : chunk;
        #pragma omp parallel for schedule(dynamic, 1)
        for (long j = 0; j < n; j++) {
            int w, h;
            why[j] = NULL;
            unsigned char* img = decode_rgb_capped(items[start + j].path, max_pixels, &w, &h, &why[j]);
            if (img == NULL) continue;
            resize_crop(img, w, h, S, pixels + j * image_bytes);
            stbi_image_free(img);
        }
        long kept = 0;
        for (long j = 0; j < n; j++) {
            if (why[j] != NULL) {
                fprintf(stderr, "skip %s: %s\n", items[start + j].path, why[j]);
                bad++;
                continue;
            }
            if (kept != j) memcpy(pixels + kept * image_bytes, pixels + j * image_bytes, (size_t)image_bytes);
            labels[kept++] = items[start + j].label;
        }
        if (kept > 0) {
            snprintf(shard_path, plen, "%s_%06d.bin", prefix, nshards++);
            image_shard_write(shard_path, pixels, labels, kept, 3, S, S, (int)nclasses);
            written += kept;
        }
        double dt = now_seconds() - t0;
        long done = start + n;
        fprintf(stderr, "%ld/%ld images, %.1f images/s (%d threads), %.0f s left\n", done, nitems, done / dt,
                omp_get_max_threads(), (nitems - done) / (done / dt));
    }
    double dt = now_seconds() - t0;

    // Shards numbered beyond this run's last are left over from an earlier, larger run.
    char* pattern = (char*)malloc_check(plen);
    snprintf(pattern, plen, "%s_*.bin", prefix);
    glob_t g;
    if (glob(pattern, 0, NULL, &g) == 0) {
        for (size_t k = 0; k < g.gl_pathc; k++) {
            const char* p = g.gl_pathv[k] + strlen(prefix) + 1;
            char* end;
            long idx = strtol(p, &end, 10);
            if (end - p == 6 && !strcmp(end, ".bin") && idx >= nshards) {
                fprintf(stderr, "removing %s, left over from an earlier run\n", g.gl_pathv[k]);
                if (remove(g.gl_pathv[k]) != 0) fail("cannot remove %s: %s", g.gl_pathv[k], strerror(errno));
            }
        }
        globfree(&g);
    }
    free(pattern);

    printf("%s: %ld images (%dx%d RGB, %ld classes) in %d shards %s_*.bin, %.1f images/s on %d threads; "
           "skipped: %ld bad files, %ld empty class folders, %ld other entries\n", split_dir, written, S, S,
           nclasses, nshards, prefix, nitems / dt, omp_get_max_threads(), bad, empty_folders, foreign);
    if (written == 0) fail("%s: no image could be decoded", split_dir);

    for (long i = 0; i < nitems; i++) free(items[i].path);
    free(items); free(pixels); free(labels); free(why); free(shard_path);
    free_list(classes, nclasses);
    free_list(entries, nentries);
    return 0;
}
