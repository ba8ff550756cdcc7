// Tests of the image data path: decoding and resize + centre crop (utils/image_decode.h)
// against a direct computation and against PIL (dev/ref, from dev/make_image_ref.py), the
// image shard format (utils/image_shard.h), and build/prepare_images on a small folder
// with good, grey, RGBA, truncated and non-image files and an empty class folder.
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include "utils/image_decode.h"
#include <stb/stb_image_write.h>
#include <sys/stat.h>
#include "utils/utils.h"
#include "utils/image_shard.h"
#include "dev/test/testing.h"
#include "dev/test/capture.h"

static char tmp[256], prepare_images[512], out[65536];

static char* tmp_path(const char* name) {
    static char paths[8][512];
    static int k = 0;
    char* p = paths[k++ % 8];
    snprintf(p, 512, "%s/%s", tmp, name);
    return p;
}

// The synthetic test image, also computed by dev/make_image_ref.py.
static unsigned char* pattern(int w, int h) {
    unsigned char* img = (unsigned char*)malloc_check((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) img[((long)y * w + x) * 3 + c] = (unsigned char)((x * 7 + y * 13 + c * 50 + (x * y) % 17) % 256);
    return img;
}

// A smooth image, for JPEG (whose loss on the pattern's sharp edges would dominate).
static unsigned char* smooth(int w, int h) {
    unsigned char* img = (unsigned char*)malloc_check((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) img[((long)y * w + x) * 3 + c] = (unsigned char)(x * 2 + y * 2 + c * 30);
    return img;
}

// Resize + crop straight from the definition, in double: every output pixel is the
// triangle-filter-weighted mean of all source pixels, the filter widened by the downscale
// factor; torchvision's output size and crop offset.
static void direct_resize_crop(const unsigned char* src, int w, int h, int S, double* outp) {
    int rw = w <= h ? S : (int)((double)S * w / h);
    int rh = w <= h ? (int)((double)S * h / w) : S;
    int left = (int)rint((rw - S) / 2.0), top = (int)rint((rh - S) / 2.0);
    double sx = (double)w / rw, sy = (double)h / rh;
    double fx = sx > 1 ? sx : 1, fy = sy > 1 ? sy : 1;
    double* kx = (double*)malloc_check((size_t)w * sizeof(double));
    double* ky = (double*)malloc_check((size_t)h * sizeof(double));
    for (int i = 0; i < S; i++) {
        double cy = (i + top + 0.5) * sy, sumy = 0;
        for (int y = 0; y < h; y++) { ky[y] = fmax(0.0, 1.0 - fabs((y + 0.5 - cy) / fy)); sumy += ky[y]; }
        for (int j = 0; j < S; j++) {
            double cx = (j + left + 0.5) * sx, sumx = 0;
            for (int x = 0; x < w; x++) { kx[x] = fmax(0.0, 1.0 - fabs((x + 0.5 - cx) / fx)); sumx += kx[x]; }
            for (int c = 0; c < 3; c++) {
                double acc = 0;
                for (int y = 0; y < h; y++)
                    for (int x = 0; x < w; x++) acc += ky[y] * kx[x] * src[((long)y * w + x) * 3 + c];
                outp[((long)i * S + j) * 3 + c] = acc / (sumx * sumy);
            }
        }
    }
    free(kx);
    free(ky);
}

// Largest and mean |a - round(b)| over n bytes.
static void compare(const unsigned char* a, const double* b, long n, int* max_err, double* mean_err) {
    *max_err = 0;
    *mean_err = 0;
    for (long i = 0; i < n; i++) {
        int r = abs((int)a[i] - (int)lround(b[i]));
        if (r > *max_err) *max_err = r;
        *mean_err += (double)r / n;
    }
}

static void test_resize(void) {
    int cases[4][3] = { { 40, 24, 16 }, { 17, 40, 16 }, { 10, 13, 16 }, { 301, 199, 32 } };
    for (int k = 0; k < 4; k++) {
        int w = cases[k][0], h = cases[k][1], S = cases[k][2];
        unsigned char* src = pattern(w, h);
        unsigned char* got = (unsigned char*)malloc_check((size_t)S * S * 3);
        double* want = (double*)malloc_check((size_t)S * S * 3 * sizeof(double));
        resize_crop(src, w, h, S, got);
        direct_resize_crop(src, w, h, S, want);
        int max_err;
        double mean_err;
        compare(got, want, (long)S * S * 3, &max_err, &mean_err);
        check(max_err <= 1 && mean_err < 0.01, "resize+crop %dx%d -> %d vs direct computation: max err %d, mean %.4f",
              w, h, S, max_err, mean_err);
        free(src); free(got); free(want);
    }

    // Against PIL (torchvision's Resize + CenterCrop), which rounds to uint8 between its two
    // passes: allow one level.
    FILE* f = fopen_check("dev/ref/resize_pil.bin", "rb");
    int32_t ncases;
    fread_check(&ncases, sizeof(int32_t), 1, f, "dev/ref/resize_pil.bin");
    for (int k = 0; k < ncases; k++) {
        int32_t whs[3];
        fread_check(whs, sizeof(int32_t), 3, f, "dev/ref/resize_pil.bin");
        int w = whs[0], h = whs[1], S = whs[2];
        long n = (long)S * S * 3;
        unsigned char* pil = (unsigned char*)malloc_check((size_t)n);
        fread_check(pil, 1, (size_t)n, f, "dev/ref/resize_pil.bin");
        unsigned char* src = pattern(w, h);
        unsigned char* got = (unsigned char*)malloc_check((size_t)n);
        resize_crop(src, w, h, S, got);
        int max_err = 0;
        double mean_err = 0;
        for (long i = 0; i < n; i++) {
            int e = abs((int)got[i] - (int)pil[i]);
            if (e > max_err) max_err = e;
            mean_err += (double)e / n;
        }
        check(max_err <= 1, "resize+crop %dx%d -> %d vs PIL: max err %d, mean %.4f", w, h, S, max_err, mean_err);
        free(pil); free(src); free(got);
    }
    fclose_check(f, "dev/ref/resize_pil.bin");
}

static void write_bytes(const char* path, const void* data, long n) {
    FILE* f = fopen_check(path, "wb");
    fwrite_check(data, 1, (size_t)n, f, path);
    fclose_check(f, path);
}

static long file_bytes(const char* path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static void test_decode(void) {
    // CMYK (Adobe) JPEG written by PIL; PIL's own RGB decode is the reference.
    int w, h;
    const char* why = NULL;
    unsigned char* img = decode_rgb("dev/ref/cmyk.jpg", &w, &h, &why);
    FILE* f = fopen_check("dev/ref/cmyk_rgb.bin", "rb");
    unsigned char ref[32 * 32 * 3];
    fread_check(ref, 1, sizeof(ref), f, "dev/ref/cmyk_rgb.bin");
    fclose_check(f, "dev/ref/cmyk_rgb.bin");
    int max_err = 999;
    if (img && w == 32 && h == 32) {
        max_err = 0;
        for (int i = 0; i < 32 * 32 * 3; i++) { int e = abs((int)img[i] - (int)ref[i]); if (e > max_err) max_err = e; }
    }
    check(img != NULL && max_err <= 8, "CMYK JPEG decoded to RGB like PIL: max err %d", max_err);
    if (img) stbi_image_free(img);

    // Grey PNG becomes R = G = B = grey.
    unsigned char grey[12 * 9];
    for (int i = 0; i < 12 * 9; i++) grey[i] = (unsigned char)(i * 2);
    char* gp = tmp_path("grey.png");
    stbi_write_png(gp, 12, 9, 1, grey, 12);
    img = decode_rgb(gp, &w, &h, &why);
    int ok = img && w == 12 && h == 9;
    for (int i = 0; ok && i < 12 * 9; i++) ok = img[3 * i] == grey[i] && img[3 * i + 1] == grey[i] && img[3 * i + 2] == grey[i];
    check(ok, "grey PNG decoded to RGB");
    if (img) stbi_image_free(img);

    // Truncated files, an empty one, garbage behind a JPEG signature, text.
    unsigned char* src = smooth(48, 32);
    char* jp = tmp_path("full.jpg");
    stbi_write_jpg(jp, 48, 32, 3, src, 95);
    long n = file_bytes(jp);
    unsigned char* buf = (unsigned char*)malloc_check((size_t)n);
    f = fopen_check(jp, "rb");
    fread_check(buf, 1, (size_t)n, f, jp);
    fclose_check(f, jp);
    img = decode_rgb(jp, &w, &h, &why);
    check(img != NULL, "complete JPEG accepted");
    if (img) stbi_image_free(img);
    char* tp = tmp_path("cut.jpg");
    write_bytes(tp, buf, n - 10);
    why = NULL;
    img = decode_rgb(tp, &w, &h, &why);
    check(img == NULL && why && strstr(why, "truncated JPEG"), "JPEG missing its last 10 bytes rejected: %s", why ? why : "accepted");
    write_bytes(tp, buf, n / 2);
    why = NULL;
    img = decode_rgb(tp, &w, &h, &why);
    check(img == NULL && why && strstr(why, "truncated JPEG"), "JPEG cut in half rejected: %s", why ? why : "accepted");
    // Complete structure but an impossible frame header (16-bit samples in a baseline JPEG).
    long sof = 2;
    while (sof + 4 < n && !(buf[sof] == 0xFF && buf[sof + 1] == 0xC0)) sof++;
    buf[sof + 4] = 16;
    write_bytes(tp, buf, n);
    why = NULL;
    img = decode_rgb(tp, &w, &h, &why);
    check(img == NULL && why != NULL && !strstr(why, "truncated"), "corrupt JPEG rejected: %s", why ? why : "accepted");
    free(buf);

    char* pp = tmp_path("full.png");
    stbi_write_png(pp, 48, 32, 3, src, 48 * 3);
    n = file_bytes(pp);
    buf = (unsigned char*)malloc_check((size_t)n);
    f = fopen_check(pp, "rb");
    fread_check(buf, 1, (size_t)n, f, pp);
    fclose_check(f, pp);
    write_bytes(tp, buf, n / 2);
    why = NULL;
    img = decode_rgb(tp, &w, &h, &why);
    check(img == NULL && why != NULL, "truncated PNG rejected: %s", why ? why : "accepted");
    free(buf);
    free(src);

    write_bytes(tp, "", 0);
    why = NULL;
    img = decode_rgb(tp, &w, &h, &why);
    check(img == NULL && why && !strcmp(why, "empty file"), "empty file rejected: %s", why ? why : "accepted");
    write_bytes(tp, "hello, not an image\n", 20);
    why = NULL;
    img = decode_rgb(tp, &w, &h, &why);
    check(img == NULL && why && strstr(why, "not an image"), "text file rejected: %s", why ? why : "accepted");
}

static const char* open_path;
static void open_shard(void* arg) { ImageShard s; image_shard_open(&s, open_path); }

static void test_prepare_folder(void) {
    // root/n001: a.jpg (smooth 48x32), b.png (pattern 40x24), c.jpg (truncated), d.JPEG (text),
    //            grey.png (20x20 grey)
    // root/n002: e.png (pattern 10x13, upscaled), f.png (pattern 17x40 with alpha)
    // root/n003: empty; root/zzz: not a class; root/README: a stray file.
    // Classes n001..n004 (n004 has no folder): labels 0 and 1, 4 classes.
    char* root = tmp_path("root");
    char p[700];
    mkdir(root, 0755);
    const char* dirs[4] = { "n001", "n002", "n003", "zzz" };
    for (int i = 0; i < 4; i++) { snprintf(p, sizeof(p), "%s/%s", root, dirs[i]); mkdir(p, 0755); }
    unsigned char* sm = smooth(48, 32);
    snprintf(p, sizeof(p), "%s/n001/a.jpg", root); stbi_write_jpg(p, 48, 32, 3, sm, 95);
    long jn = file_bytes(p);
    unsigned char* jbuf = (unsigned char*)malloc_check((size_t)jn);
    FILE* f = fopen_check(p, "rb"); fread_check(jbuf, 1, (size_t)jn, f, p); fclose_check(f, p);
    snprintf(p, sizeof(p), "%s/n001/c.jpg", root); write_bytes(p, jbuf, jn / 2);
    free(jbuf);
    unsigned char* b = pattern(40, 24);
    snprintf(p, sizeof(p), "%s/n001/b.png", root); stbi_write_png(p, 40, 24, 3, b, 40 * 3);
    snprintf(p, sizeof(p), "%s/n001/d.JPEG", root); write_bytes(p, "<html>not found</html>\n", 23);
    unsigned char* gsrc = pattern(20, 20);
    unsigned char grey[400], grey3[1200];
    for (int i = 0; i < 400; i++) { grey[i] = gsrc[3 * i]; grey3[3 * i] = grey3[3 * i + 1] = grey3[3 * i + 2] = grey[i]; }
    snprintf(p, sizeof(p), "%s/n001/grey.png", root); stbi_write_png(p, 20, 20, 1, grey, 20);
    unsigned char* e = pattern(10, 13);
    snprintf(p, sizeof(p), "%s/n002/e.png", root); stbi_write_png(p, 10, 13, 3, e, 10 * 3);
    unsigned char* fimg = pattern(17, 40);
    unsigned char rgba[17 * 40 * 4];
    for (int i = 0; i < 17 * 40; i++) { memcpy(rgba + 4 * i, fimg + 3 * i, 3); rgba[4 * i + 3] = (unsigned char)(i % 256); }
    snprintf(p, sizeof(p), "%s/n002/f.png", root); stbi_write_png(p, 17, 40, 4, rgba, 17 * 4);
    snprintf(p, sizeof(p), "%s/zzz/x.png", root); stbi_write_png(p, 10, 13, 3, e, 10 * 3);
    snprintf(p, sizeof(p), "%s/README", root); write_bytes(p, "hello\n", 6);
    char* syn = tmp_path("synsets.txt");
    write_bytes(syn, "n004 four\nn002 two\nn001 one\nn003 three\n", 40);

    char prefix[600];
    snprintf(prefix, sizeof(prefix), "%s/out_val", tmp);
    char* argv[] = { prepare_images, "--size", "16", "--shard-size", "2", "--synsets", syn, root, prefix, NULL };
    int rc = run_program(argv, out, sizeof(out));
    check(rc == 0, "prepare_images exit %d", rc);
    struct { const char* file; const char* reason; } reports[5] = {
        { "n001/c.jpg", "truncated JPEG" }, { "n001/d.JPEG", "not an image" }, { "n003", "empty class folder" },
        { "zzz", "folder not in the class list" }, { "README", "not a class folder" } };
    for (int i = 0; i < 5; i++) {
        char line[700];
        snprintf(line, sizeof(line), "skip %s/%s: %s", root, reports[i].file, reports[i].reason);
        check(strstr(out, line) != NULL, "reported: %s: %s", reports[i].file, reports[i].reason);
    }
    check(strstr(out, "5 images (16x16 RGB, 4 classes) in 3 shards") &&
          strstr(out, "skipped: 2 bad files, 1 empty class folders, 2 other entries"), "summary counts");
    snprintf(p, sizeof(p), "%s_000000.bin.tmp", prefix);
    check(access(p, F_OK) != 0, "no .tmp shard left");

    snprintf(p, sizeof(p), "%s_*.bin", prefix);
    ImageSet set = image_set_open(p);
    int labels[5];
    long idx[5] = { 0, 1, 2, 3, 4 };
    unsigned char* px = (unsigned char*)malloc_check(5 * 16 * 16 * 3);
    image_set_read(&set, idx, 5, px, labels);
    check(set.nshards == 3 && set.count == 5 && set.channels == 3 && set.height == 16 && set.width == 16 &&
          set.num_classes == 4, "shard headers: %d shards, %ld images %dx%dx%d, %d classes", set.nshards, set.count,
          set.height, set.width, set.channels, set.num_classes);
    check(labels[0] == 0 && labels[1] == 0 && labels[2] == 0 && labels[3] == 1 && labels[4] == 1,
          "labels in class order: %d %d %d %d %d", labels[0], labels[1], labels[2], labels[3], labels[4]);

    // Pixels: PNGs exactly as the direct computation (+-1), the JPEG close to its source.
    struct { int k, w, h; const unsigned char* src; const char* name; int lossy; } img[5] = {
        { 0, 48, 32, sm, "a.jpg", 1 }, { 1, 40, 24, b, "b.png", 0 }, { 2, 20, 20, grey3, "grey.png", 0 },
        { 3, 10, 13, e, "e.png", 0 }, { 4, 17, 40, fimg, "f.png (RGBA)", 0 } };
    double want[16 * 16 * 3];
    for (int i = 0; i < 5; i++) {
        direct_resize_crop(img[i].src, img[i].w, img[i].h, 16, want);
        int max_err;
        double mean_err;
        compare(px + (long)img[i].k * 768, want, 768, &max_err, &mean_err);
        if (img[i].lossy) check(mean_err < 2.0, "%s pixels vs direct computation on its source: mean err %.3f", img[i].name, mean_err);
        else check(max_err <= 1, "%s pixels vs direct computation: max err %d, mean %.4f", img[i].name, max_err, mean_err);
    }
    // Random access in another order gives the same images.
    long idx2[2] = { 4, 1 };
    unsigned char px2[2 * 768];
    int labels2[2];
    image_set_read(&set, idx2, 2, px2, labels2);
    check(!memcmp(px2, px + 4 * 768, 768) && !memcmp(px2 + 768, px + 768, 768) && labels2[0] == 1 && labels2[1] == 0,
          "random access by index");
    image_set_close(&set);

    // Rerun with bigger shards: the extra shards of the first run are removed.
    char* argv2[] = { prepare_images, "--size", "16", "--synsets", syn, root, prefix, NULL };
    rc = run_program(argv2, out, sizeof(out));
    snprintf(p, sizeof(p), "%s_*.bin", prefix);
    set = image_set_open(p);
    check(rc == 0 && set.nshards == 1 && set.count == 5, "rerun: %d shard, stale shards removed", set.nshards);
    image_set_close(&set);

    // Damaged shards are refused with the file named.
    snprintf(p, sizeof(p), "%s_000000.bin", prefix);
    long n = file_bytes(p);
    if (truncate(p, n - 1) != 0) perror("truncate");
    open_path = p;
    rc = run_captured(open_shard, NULL, out, sizeof(out));
    check(rc == 1 && strstr(out, p) && strstr(out, "truncated image shard: header says 5 images"),
          "truncated image shard rejected: %s", error_line(out));
    FILE* g = fopen_check(p, "r+b");
    fputc('X', g);
    fclose_check(g, p);
    rc = run_captured(open_shard, NULL, out, sizeof(out));
    check(rc == 1 && strstr(out, p) && strstr(out, "not an image shard"), "wrong magic rejected: %s", error_line(out));

    // A folder with nothing usable fails.
    snprintf(p, sizeof(p), "%s/n003", root);
    char* argv3[] = { prepare_images, "--size", "16", p, prefix, NULL };
    rc = run_program(argv3, out, sizeof(out));
    check(rc == 1 && strstr(out, "error:"), "no images at all is an error: %s", error_line(out));
    free(px); free(sm); free(b); free(gsrc); free(e); free(fimg);
}

int main(int argc, char** argv) {
    sibling_path(argv[0], "prepare_images", prepare_images, sizeof(prepare_images));
    make_temp_dir(tmp, sizeof(tmp), "test_data_images");
    test_resize();
    test_decode();
    test_prepare_folder();
    remove_temp_dir(tmp);
    return testing_exit_code();
}
