// Tests of the image data path: decoding and resize + centre crop (utils/image_decode.h)
// against a direct computation and against PIL (dev/ref, from dev/make_image_ref.py), the
// image shard format (utils/image_shard.h), and build/prepare_images on a small folder
// with good, grey, RGBA, truncated and non-image files and an empty class folder.
// Untrusted sizes: images claiming more pixels than allowed (a patched JPEG, 18 bytes
// read as a TGA header) refused before decoding, a strip whose resize overflows an int,
// shard headers whose dimensions overflow, a negative training position, and
// build/prepare_fashion_mnist on IDX headers its shards could not hold.
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include "utils/image_decode.h"
#include <stb/stb_image_write.h>
#include <fcntl.h>
#include <sys/stat.h>
#include "utils/utils.h"
#include "utils/image_shard.h"
#include "utils/image_loader.h"
#include "dev/test/testing.h"
#include "dev/test/capture.h"

static char tmp[256], prepare_images[512], prepare_fashion_mnist[512], out[65536];

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

// The bytes of a file (malloc'd); *n its size.
static unsigned char* file_contents(const char* path, long* n) {
    *n = file_bytes(path);
    unsigned char* buf = (unsigned char*)malloc_check((size_t)*n);
    FILE* f = fopen_check(path, "rb");
    fread_check(buf, 1, (size_t)*n, f, path);
    fclose_check(f, path);
    return buf;
}

// A JPEG of 48x32 pixels whose frame header claims 25000 x 25000 (1.9 GB decoded).
static void write_huge_jpeg(const char* path) {
    unsigned char* src = smooth(48, 32);
    stbi_write_jpg(path, 48, 32, 3, src, 90);
    long n;
    unsigned char* buf = file_contents(path, &n);
    long sof = 2;
    while (sof + 9 < n && !(buf[sof] == 0xFF && buf[sof + 1] == 0xC0)) sof++;
    buf[sof + 5] = buf[sof + 7] = 25000 >> 8; // height, width: big-endian after length and precision
    buf[sof + 6] = buf[sof + 8] = 25000 & 0xFF;
    write_bytes(path, buf, n);
    free(buf);
    free(src);
}

// 18 bytes that stb_image reads as the header of a 26000 x 26000 TGA (2 GB decoded).
static const unsigned char TGA_HEADER[18] = {0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 26000 & 0xFF, 26000 >> 8,
                                             26000 & 0xFF, 26000 >> 8, 24, 0};

static void test_untrusted_images(void) {
    int w, h;
    const char* why = NULL;
    char* big = tmp_path("huge.jpg");
    write_huge_jpeg(big);
    unsigned char* img = decode_rgb(big, &w, &h, &why);
    check(img == NULL && why && strstr(why, "too many pixels"), "JPEG claiming 25000 x 25000 refused before decoding: %s",
          why ? why : "decoded");
    char* tga = tmp_path("header.tga");
    write_bytes(tga, TGA_HEADER, sizeof(TGA_HEADER));
    why = NULL;
    img = decode_rgb(tga, &w, &h, &why);
    check(img == NULL && why && strstr(why, "neither JPEG nor PNG"), "18-byte TGA header claiming 26000 x 26000 refused: %s",
          why ? why : "decoded");
    why = NULL;
    img = decode_rgb(tmp, &w, &h, &why);
    check(img == NULL && why && !strcmp(why, "a folder, not a file"), "a folder refused: %s", why ? why : "decoded");
    // Found by make fuzz: a Huffman table of 410 symbols, which stb_image 2.27 writes past
    // its arrays of 256 (and 257) entries.
    const char* dht = "dev/fuzz/regressions/image_decode/stb_huffman_table_of_410_symbols.jpg";
    why = NULL;
    img = decode_rgb(dht, &w, &h, &why);
    check(img == NULL && why && strstr(why, "bad Huffman table"), "JPEG with a Huffman table of 410 symbols refused: %s",
          why ? why : "decoded");

    // A 1 x 10,000,000 strip, rows y of grey 200 y / n: resized to S = 256 its long side
    // would be 2.56e9, past an int. The centre crop shows the middle rows, grey 100.
    long n = 10000000;
    unsigned char* strip = (unsigned char*)malloc_check((size_t)n * 3);
    for (long y = 0; y < n; y++) memset(strip + 3 * y, (int)(200 * y / n), 3);
    unsigned char crop[256 * 256 * 3];
    resize_crop(strip, 1, (int)n, 256, crop);
    int centre = 1;
    for (int i = 0; i < 256 * 256 * 3; i++) centre &= abs(crop[i] - 100) <= 1;
    check(centre, "resize of a 1 x %ld strip to 256: long side capped, the crop is its middle (grey %d)", n, crop[0]);
    free(strip);
}

// Writes a shard header (16 int32) and makes the file size bytes (sparse).
static void write_shard_header(const char* path, int count, int channels, int height, int width, long size) {
    int32_t hdr[IMAGE_SHARD_HEADER_INTS] = {IMAGE_SHARD_MAGIC, IMAGE_SHARD_VERSION, count, channels, height, width, 10};
    write_bytes(path, hdr, sizeof(hdr));
    if (truncate(path, size) != 0) perror("truncate");
}

static const char* loader_path;
static void next_at_negative(void* arg) {
    ImageLoader d = image_loader_open(loader_path, 2);
    const int which[2] = {0, 1};
    image_loader_next(&d, 7, -5, which, 2);
}

static void test_untrusted_shards(void) {
    // 384 bytes whose header claims 6 images of 1696065956 x 1812699167: with the labels,
    // 4 * (16 + 6) + 6 * 1696065956 * 1812699167 wraps around 2^64 to exactly 384.
    char* p = tmp_path("wrapped.bin");
    write_shard_header(p, 6, 1, 1696065956, 1812699167, 384);
    open_path = p;
    int rc = run_captured(open_shard, NULL, out, sizeof(out));
    check(rc == 1 && strstr(out, p) && strstr(out, "corrupt image shard header"),
          "384-byte shard claiming 1696065956 x 1812699167 images refused: %s", error_line(out));
    // Within every bound, 2^30 images of 65536 x 65536 x 4 are 2^64 bytes: the sum wraps
    // to the size of this (sparse) file.
    write_shard_header(p, 1 << 30, 4, 65536, 65536, 64 + 4L * (1L << 30));
    rc = run_captured(open_shard, NULL, out, sizeof(out));
    check(rc == 1 && strstr(out, p) && strstr(out, "do not fit one file"),
          "shard of 2^30 images of 65536 x 65536 x 4 (2^64 bytes) refused: %s", error_line(out));
    if (truncate(p, 0) != 0) perror("truncate");
    char* folder = tmp_path("folder.bin");
    mkdir(folder, 0755);
    open_path = folder;
    rc = run_captured(open_shard, NULL, out, sizeof(out));
    check(rc == 1 && strstr(out, folder) && strstr(out, "a folder, not a file"), "folder as an image shard refused: %s",
          error_line(out));

    // A negative position in the shuffled training stream.
    uint8_t pixels[3 * 4 * 4] = {0};
    int32_t labels[3] = {0, 1, 2};
    char* good = tmp_path("three.bin");
    image_shard_write(good, pixels, labels, 3, 1, 4, 4, 3);
    loader_path = good;
    rc = run_captured(next_at_negative, NULL, out, sizeof(out));
    check(rc == 1 && strstr(out, "position -5 in the training images"), "negative training position refused: %s",
          error_line(out));
}

static void test_prepare_untrusted(void) {
    // root/n001: huge.jpg (claims 25000 x 25000), header.jpg (a TGA header),
    //            wide.png (300 x 10), ok.png (40 x 24); --max-pixels 2000 keeps ok.png only.
    char* root = tmp_path("untrusted");
    char p[700];
    mkdir(root, 0755);
    snprintf(p, sizeof(p), "%s/n001", root);
    mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/n001/huge.jpg", root);
    write_huge_jpeg(p);
    snprintf(p, sizeof(p), "%s/n001/header.jpg", root);
    write_bytes(p, TGA_HEADER, sizeof(TGA_HEADER));
    unsigned char* wide = pattern(300, 10);
    snprintf(p, sizeof(p), "%s/n001/wide.png", root);
    stbi_write_png(p, 300, 10, 3, wide, 300 * 3);
    unsigned char* ok = pattern(40, 24);
    snprintf(p, sizeof(p), "%s/n001/ok.png", root);
    stbi_write_png(p, 40, 24, 3, ok, 40 * 3);
    free(wide);
    free(ok);
    // The output goes to folders that do not exist yet.
    char prefix[600];
    snprintf(prefix, sizeof(prefix), "%s/new/folder/out", tmp);
    char* argv[] = { prepare_images, "--size", "8", "--max-pixels", "2000", root, prefix, NULL };
    int rc = run_program(argv, out, sizeof(out));
    char shard[700];
    snprintf(shard, sizeof(shard), "%s_000000.bin", prefix);
    check(rc == 0 && access(shard, F_OK) == 0, "prepare_images creates the output folder (exit %d)", rc);
    struct { const char* file; const char* reason; } reports[3] = {
        { "huge.jpg", "too many pixels" }, { "header.jpg", "not an image (neither JPEG nor PNG)" },
        { "wide.png", "too many pixels" } };
    for (int i = 0; i < 3; i++) {
        char line[800];
        snprintf(line, sizeof(line), "skip %s/n001/%s: %s", root, reports[i].file, reports[i].reason);
        check(strstr(out, line) != NULL, "prepare_images --max-pixels 2000 skips %s: %s", reports[i].file, reports[i].reason);
    }
    check(strstr(out, "1 images (8x8 RGB, 1 classes) in 1 shards") && strstr(out, "skipped: 3 bad files"),
          "prepare_images counts them as bad files");
    char* argv2[] = { prepare_images, "--max-pixels", "0", root, prefix, NULL };
    rc = run_program(argv2, out, sizeof(out));
    check(rc == 1 && strstr(out, "--max-pixels must be an integer in [1, "), "--max-pixels 0 refused: %s", error_line(out));
}

// Writes an IDX file: magic, then the big-endian dimensions, then n bytes of data.
static void write_idx(const char* dir, const char* name, uint32_t magic, const uint32_t* dims, int ndims, long n) {
    char path[700];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE* f = fopen_check(path, "wb");
    uint32_t words[4] = {magic, dims[0], ndims > 1 ? dims[1] : 0, ndims > 2 ? dims[2] : 0};
    for (int i = 0; i <= ndims; i++) {
        unsigned char be[4] = {(unsigned char)(words[i] >> 24), (unsigned char)(words[i] >> 16),
                               (unsigned char)(words[i] >> 8), (unsigned char)words[i]};
        fwrite_check(be, 1, 4, f, path);
    }
    for (long i = 0; i < n; i++) fputc((int)(i % 10), f);
    fclose_check(f, path);
}

static void test_prepare_fashion_mnist(void) {
    char* dir = tmp_path("idx");
    mkdir(dir, 0755);
    uint32_t images[3] = {3, 4, 5}, labels[1] = {3};
    write_idx(dir, "train-images-idx3-ubyte", 0x803, images, 3, 3 * 4 * 5);
    write_idx(dir, "train-labels-idx1-ubyte", 0x801, labels, 1, 3);
    write_idx(dir, "t10k-images-idx3-ubyte", 0x803, images, 3, 3 * 4 * 5);
    write_idx(dir, "t10k-labels-idx1-ubyte", 0x801, labels, 1, 3);
    char outdir[600], shard[700];
    snprintf(outdir, sizeof(outdir), "%s/fm", tmp);
    char* argv[] = { prepare_fashion_mnist, dir, outdir, NULL };
    int rc = run_program(argv, out, sizeof(out));
    snprintf(shard, sizeof(shard), "%s/test_000000.bin", outdir);
    ImageShard s = {0};
    if (rc == 0) image_shard_open(&s, shard);
    check(rc == 0 && s.count == 3 && s.height == 4 && s.width == 5 && s.channels == 1 && s.labels[2] == 2,
          "prepare_fashion_mnist on 3 images of 4x5 (exit %d)", rc);
    if (rc == 0) image_shard_close(&s);

    // Headers its shards could not hold: zero rows, more images than a shard counts.
    struct { uint32_t dims[3]; long bytes; const char* what; } bad[2] = {
        { {3, 0, 28}, 0, "0 rows" }, { {4294967295u, 1, 1}, 0, "2^32 - 1 images" } };
    for (int i = 0; i < 2; i++) {
        write_idx(dir, "train-images-idx3-ubyte", 0x803, bad[i].dims, 3, bad[i].bytes);
        rc = run_program(argv, out, sizeof(out));
        check(rc == 1 && strstr(out, "train-images-idx3-ubyte: header says") && strstr(out, "an image shard holds up to"),
              "prepare_fashion_mnist refuses an IDX header of %s: %s", bad[i].what, error_line(out));
    }
}

int main(int argc, char** argv) {
    sibling_path(argv[0], "prepare_images", prepare_images, sizeof(prepare_images));
    sibling_path(argv[0], "prepare_fashion_mnist", prepare_fashion_mnist, sizeof(prepare_fashion_mnist));
    make_temp_dir(tmp, sizeof(tmp), "test_data_images");
    test_resize();
    test_decode();
    test_prepare_folder();
    test_untrusted_images();
    test_untrusted_shards();
    test_prepare_untrusted();
    test_prepare_fashion_mnist();
    remove_temp_dir(tmp);
    return testing_exit_code();
}
