// Image decoding and resizing, for data/prepare_images.c and train_vit_flow --visualize.
// Decoding is stb_image's (grey, grey+alpha, RGBA and Adobe CMYK/YCCK JPEGs become RGB);
// resizing follows torchvision's Resize(S) + CenterCrop(S) on PIL images: the shorter side
// becomes S (the longer int(S * long / short)) with PIL's antialiased bilinear filter, then
// the centre S x S is kept. Only the kept pixels are computed.
#ifndef UTILS_IMAGE_DECODE_H
#define UTILS_IMAGE_DECODE_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <stb/stb_image.h>

// Reads a whole file into memory; returns NULL and sets *why on failure.
static unsigned char* read_file(const char* path, long* len, const char** why) {
    FILE* f = fopen(path, "rb");
    if (f == NULL) { *why = strerror(errno); return NULL; }
    unsigned char* buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n >= 0 && fseek(f, 0, SEEK_SET) == 0) {
            buf = (unsigned char*)malloc(n > 0 ? (size_t)n : 1);
            if (buf && fread(buf, 1, (size_t)n, f) == (size_t)n) *len = n;
            else { free(buf); buf = NULL; }
        }
    }
    if (buf == NULL) *why = "cannot read the file";
    fclose(f);
    return buf;
}

// stb_image decodes truncated JPEGs without complaint (the missing part comes out grey),
// so walk the marker segments and the entropy-coded data and require the end-of-image marker.
// Returns NULL if complete, else the reason.
static const char* jpeg_incomplete(const unsigned char* p, long n) {
    long i = 2; // after SOI
    while (i < n) {
        if (p[i] != 0xFF) return "corrupt JPEG (bytes outside a segment)";
        while (i < n && p[i] == 0xFF) i++; // fill bytes
        if (i >= n) break;
        unsigned char m = p[i++];
        if (m == 0xD9) return NULL; // EOI
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue; // markers without a length
        if (i + 2 > n) break;
        long seglen = ((long)p[i] << 8) | p[i + 1];
        if (seglen < 2) return "corrupt JPEG (bad segment length)";
        i += seglen;
        if (i > n) break;
        if (m == 0xDA) {
            // Entropy-coded data ends at the first 0xFF not followed by 0x00 (stuffing)
            // or a restart marker.
            for (;;) {
                const unsigned char* q = (const unsigned char*)memchr(p + i, 0xFF, (size_t)(n - i));
                if (q == NULL || q + 1 >= p + n) { i = n; break; }
                i = q - p;
                unsigned char next = p[i + 1];
                if (next == 0x00 || (next >= 0xD0 && next <= 0xD7)) { i += 2; continue; }
                break;
            }
        }
    }
    return "truncated JPEG (no end-of-image marker)";
}

// Decodes an image file to RGB (*w x *h x 3, free with stbi_image_free). Returns NULL and
// sets *why (a static string) when the file cannot be read, is not an image, or is truncated.
static unsigned char* decode_rgb(const char* path, int* w, int* h, const char** why) {
    long len = 0;
    unsigned char* buf = read_file(path, &len, why);
    if (buf == NULL) return NULL;
    unsigned char* img = NULL;
    if (len == 0) *why = "empty file";
    else if (len >= 3 && buf[0] == 0xFF && buf[1] == 0xD8 && buf[2] == 0xFF && (*why = jpeg_incomplete(buf, len)) != NULL) {
        // reason set
    } else {
        int n;
        img = stbi_load_from_memory(buf, (int)len, w, h, &n, 3);
        if (img == NULL) {
            const char* r = stbi_failure_reason();
            *why = r && !strcmp(r, "unknown image type") ? "not an image (unknown format)" : r ? r : "decode failed";
        }
    }
    free(buf);
    return img;
}

// PIL's bilinear (triangle) filter.
static inline double tri_filter(double x) {
    x = fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

// One axis of the resize: for outputs j = 0..n_out-1 of a resize of in_size to out_size
// (output coordinates offset by crop), PIL's taps: first[j], ntaps[j] and normalised
// weights (ntaps[j] used at weights + j * max_taps). Returns max_taps; the caller frees.
static int resize_taps(int in_size, int out_size, int crop, int n_out, int** first, int** ntaps, float** weights) {
    double scale = (double)in_size / out_size;
    double filterscale = scale > 1.0 ? scale : 1.0;
    double support = 1.0 * filterscale;
    int max_taps = (int)ceil(support) * 2 + 1;
    *first = (int*)malloc((size_t)n_out * sizeof(int));
    *ntaps = (int*)malloc((size_t)n_out * sizeof(int));
    *weights = (float*)calloc((size_t)n_out * max_taps, sizeof(float));
    if (!*first || !*ntaps || !*weights) { fprintf(stderr, "error: out of memory\n"); exit(1); }
    for (int j = 0; j < n_out; j++) {
        double center = (j + crop + 0.5) * scale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        int m = xmax - xmin; // at most 2 * support + 1 <= max_taps
        float* k = *weights + (long)j * max_taps;
        double ww = 0.0;
        for (int x = 0; x < m; x++) ww += tri_filter((x + xmin - center + 0.5) / filterscale);
        for (int x = 0; x < m; x++)
            k[x] = (float)(ww != 0.0 ? tri_filter((x + xmin - center + 0.5) / filterscale) / ww : 0.0);
        (*first)[j] = xmin;
        (*ntaps)[j] = m;
    }
    return max_taps;
}

// Size of the image after torchvision's Resize(S): shorter side S, longer int(S*long/short).
static void resized_size(int w, int h, int S, int* rw, int* rh) {
    if (w <= h) { *rw = S; *rh = (int)((double)S * h / w); }
    else { *rh = S; *rw = (int)((double)S * w / h); }
}

// out (S x S x 3) = centre S x S crop of src (w x h x 3) resized so its shorter side is S.
// The crop offset is torchvision's int(round((size - S) / 2)), with Python's round-half-even.
static void resize_crop(const unsigned char* src, int w, int h, int S, unsigned char* out) {
    int rw, rh;
    resized_size(w, h, S, &rw, &rh);
    int left = (int)rint((rw - S) / 2.0), top = (int)rint((rh - S) / 2.0);
    int *fx, *nx, *fy, *ny;
    float *wx, *wy;
    int mx = resize_taps(w, rw, left, S, &fx, &nx, &wx);
    int my = resize_taps(h, rh, top, S, &fy, &ny, &wy);
    // Horizontal pass over the source rows the vertical pass needs, in float.
    int y0 = fy[0], y1 = fy[S - 1] + ny[S - 1];
    float* tmp = (float*)malloc((size_t)(y1 - y0) * S * 3 * sizeof(float));
    if (!tmp) { fprintf(stderr, "error: out of memory\n"); exit(1); }
    for (int y = y0; y < y1; y++) {
        const unsigned char* row = src + (long)y * w * 3;
        float* t = tmp + (long)(y - y0) * S * 3;
        for (int j = 0; j < S; j++) {
            const unsigned char* p = row + (long)fx[j] * 3;
            const float* k = wx + (long)j * mx;
            float r = 0.f, g = 0.f, b = 0.f;
            for (int x = 0; x < nx[j]; x++) { r += k[x] * p[3 * x]; g += k[x] * p[3 * x + 1]; b += k[x] * p[3 * x + 2]; }
            t[3 * j] = r; t[3 * j + 1] = g; t[3 * j + 2] = b;
        }
    }
    // Vertical pass: each output row is a weighted sum of S*3-wide tmp rows.
    float* acc = (float*)malloc((size_t)S * 3 * sizeof(float));
    if (!acc) { fprintf(stderr, "error: out of memory\n"); exit(1); }
    for (int i = 0; i < S; i++) {
        const float* k = wy + (long)i * my;
        for (int c = 0; c < S * 3; c++) acc[c] = 0.f;
        for (int y = 0; y < ny[i]; y++) {
            const float* t = tmp + (long)(fy[i] + y - y0) * S * 3;
            float kw = k[y];
            for (int c = 0; c < S * 3; c++) acc[c] += kw * t[c];
        }
        unsigned char* o = out + (long)i * S * 3;
        for (int c = 0; c < S * 3; c++) {
            float v = acc[c] + 0.5f;
            o[c] = (unsigned char)(v < 0.f ? 0.f : v > 255.f ? 255.f : v);
        }
    }
    free(acc); free(tmp);
    free(fx); free(nx); free(wx); free(fy); free(ny); free(wy);
}

#endif
