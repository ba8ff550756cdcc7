// Speed of the data preparation on the real data in ../shared/data (or the folder given):
//  - tokenising: build/prepare_text words on WikiText-2 (valid + test) repeated to 10 MB and
//    to 100 MB: MB/s of the counting and the encoding pass, and peak memory, which must not
//    grow with the corpus;
//  - images: decode and resize + crop of the ImageNet sample at S=256, timed apart on one
//    core, then build/prepare_images end to end on 1 core and on all cores.
//   build/bench_data [DATA_DIR]     (make bench-data)
#define STB_IMAGE_IMPLEMENTATION
#include "utils/image_decode.h"
#include <dirent.h>
#include <time.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <omp.h>
#include "utils/utils.h"
#include "dev/test/capture.h"

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static char out[1 << 16];

// Runs argv, returns wall seconds; *maxrss_mb gets the child's peak memory.
static double run_timed(char* const argv[], double* maxrss_mb) {
    double t0 = now_seconds();
    int rc = run_program(argv, out, sizeof(out));
    double dt = now_seconds() - t0;
    if (rc != 0) fail("%s failed (exit %d):\n%s", argv[0], rc, out);
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru); // the largest child so far; runs go from small to large
    *maxrss_mb = ru.ru_maxrss / 1024.0;
    return dt;
}

// The number before " MB/s" in the line of out that contains key.
static double rate_after(const char* key) {
    const char* p = strstr(out, key);
    if (!p) return -1;
    const char* m = strstr(p, " MB/s");
    if (!m) return -1;
    while (m > p && (m[-1] == '.' || (m[-1] >= '0' && m[-1] <= '9'))) m--;
    return atof(m);
}

static void bench_text(const char* data, const char* tmp, const char* bin) {
    char valid[1024], test[1024];
    snprintf(valid, sizeof(valid), "%s/wikitext-2/valid.txt", data);
    snprintf(test, sizeof(test), "%s/wikitext-2/test.txt", data);
    if (access(valid, R_OK) != 0 || access(test, R_OK) != 0) { printf("skip text: %s absent\n", valid); return; }
    long sizes[2] = { 10000000, 100000000 };
    printf("tokenising (prepare_text words, WikiText-2 valid+test repeated):\n");
    for (int k = 0; k < 2; k++) {
        char big[1100], outdir[1100], prog[1100];
        snprintf(big, sizeof(big), "%s/wiki_%ldMB.txt", tmp, sizes[k] / 1000000);
        snprintf(outdir, sizeof(outdir), "%s/out_%ld", tmp, sizes[k] / 1000000);
        snprintf(prog, sizeof(prog), "%s/prepare_text", bin);
        FILE* f = fopen_check(big, "wb");
        long written = 0;
        char buf[1 << 16];
        while (written < sizes[k]) {
            for (int s = 0; s < 2; s++) {
                FILE* g = fopen_check(s ? test : valid, "rb");
                size_t n;
                while ((n = fread(buf, 1, sizeof(buf), g)) > 0) { fwrite_check(buf, 1, n, f, big); written += (long)n; }
                fclose_check(g, s ? test : valid);
            }
        }
        fclose_check(f, big);
        char* argv[] = { prog, "words", "--train", big, outdir, NULL };
        double rss;
        double dt = run_timed(argv, &rss);
        printf("  %5.1f MB: count pass %6.1f MB/s, encode pass %6.1f MB/s, both %6.1f MB/s, peak memory %.1f MB\n",
               written / 1e6, rate_after("counted"), rate_after("replaced by <unk>"), written / 1e6 / dt, rss);
        remove(big);
    }
}

static int cmp_str(const void* a, const void* b) { return strcmp(*(char* const*)a, *(char* const*)b); }

static void bench_images(const char* data, const char* tmp, const char* bin) {
    char root[1024], syn[1024];
    snprintf(root, sizeof(root), "%s/imagenet-sample/val", data);
    snprintf(syn, sizeof(syn), "%s/imagenet-sample/synsets.txt", data);
    DIR* d = opendir(root);
    if (!d) { printf("skip images: %s absent\n", root); return; }
    char* files[4096];
    int n = 0;
    struct dirent* e;
    while ((e = readdir(d)) && n < 4096) {
        if (e->d_name[0] == '.') continue;
        char sub[2048];
        snprintf(sub, sizeof(sub), "%s/%s", root, e->d_name);
        DIR* d2 = opendir(sub);
        if (!d2) continue;
        struct dirent* e2;
        while ((e2 = readdir(d2)) && n < 4096) {
            if (e2->d_name[0] == '.') continue;
            files[n] = (char*)malloc_check(strlen(sub) + strlen(e2->d_name) + 2);
            sprintf(files[n++], "%s/%s", sub, e2->d_name);
        }
        closedir(d2);
    }
    closedir(d);
    qsort(files, (size_t)n, sizeof(char*), cmp_str);

    // One core, decode and resize timed apart; best of two rounds (the first warms the file cache).
    const int S = 256;
    unsigned char* crop = (unsigned char*)malloc_check((size_t)S * S * 3);
    double best_dec = 1e30, best_res = 1e30;
    long pixels = 0;
    for (int round = 0; round < 2; round++) {
        double dec = 0, res = 0;
        pixels = 0;
        for (int i = 0; i < n; i++) {
            int w, h;
            const char* why;
            double t0 = now_seconds();
            unsigned char* img = decode_rgb(files[i], &w, &h, &why);
            double t1 = now_seconds();
            if (!img) fail("%s: %s", files[i], why);
            resize_crop(img, w, h, S, crop);
            res += now_seconds() - t1;
            dec += t1 - t0;
            pixels += (long)w * h;
            stbi_image_free(img);
        }
        if (dec < best_dec) best_dec = dec;
        if (res < best_res) best_res = res;
    }
    printf("images (%d ImageNet JPEGs, mean %.0f kpixels, S=%d), one core:\n", n, pixels / 1e3 / n, S);
    printf("  read+decode %.2f ms/image, resize+crop %.2f ms/image: %.0f images/s per core "
           "(decode is %.0f%% of the time)\n", 1e3 * best_dec / n, 1e3 * best_res / n, n / (best_dec + best_res),
           100 * best_dec / (best_dec + best_res));

    char prog[1100], prefix[1100];
    snprintf(prog, sizeof(prog), "%s/prepare_images", bin);
    snprintf(prefix, sizeof(prefix), "%s/imagenet_val", tmp);
    int cores = omp_get_num_procs();
    int threads[2] = { 1, cores };
    for (int k = 0; k < (cores > 1 ? 2 : 1); k++) {
        char nt[16];
        snprintf(nt, sizeof(nt), "%d", threads[k]);
        setenv("OMP_NUM_THREADS", nt, 1);
        char* argv[] = { prog, "--size", "256", "--synsets", syn, root, prefix, NULL };
        double rss;
        double dt = run_timed(argv, &rss);
        printf("  prepare_images end to end, %d thread%s: %.0f images/s (%.0f per core), %.2f s incl. writing\n",
               threads[k], threads[k] > 1 ? "s" : "", n / dt, n / dt / threads[k], dt);
    }
    for (int i = 0; i < n; i++) free(files[i]);
    free(crop);
}

int main(int argc, char** argv) {
    const char* data = argc > 1 ? argv[1] : "../shared/data";
    char bin[1024];
    sibling_path(argv[0], "", bin, sizeof(bin));
    bin[strlen(bin) - 1] = '\0'; // drop the trailing slash
    char tmp[256];
    make_temp_dir(tmp, sizeof(tmp), "bench_data");
    bench_text(data, tmp, bin);
    bench_images(data, tmp, bin);
    remove_temp_dir(tmp);
    return 0;
}
