// Image decoding and resizing, for data/prepare_images.c and train_vit_flow --visualize.
// Decoding is stb_image's (grey, grey+alpha, RGBA and Adobe CMYK/YCCK JPEGs become RGB),
// of JPEG and PNG files only, known by their first bytes, and only up to a number of
// pixels checked before anything is decoded. Resizing follows torchvision's Resize(S) +
// CenterCrop(S) on PIL images: the shorter side becomes S (the longer int(S * long /
// short)) with PIL's antialiased bilinear filter, then the centre S x S is kept. Only the
// kept pixels are computed.
#ifndef UTILS_IMAGE_DECODE_H
#define UTILS_IMAGE_DECODE_H

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "utils/utils.h"
// The formats decode_rgb accepts are the only ones compiled (where the includer defines
// STB_IMAGE_IMPLEMENTATION).
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#include <stb/stb_image.h>

#define IMAGE_MAX_PIXELS 50000000L // width x height, by default: 50 megapixels (150 MB decoded)
#define IMAGE_MAX_FILE (1L << 30)  // bytes of an image file

// stb_image 2.27 (Debian 12's) trusts a JPEG's Huffman tables: one of more than 256
// symbols makes it write past its arrays, and a scan that uses a table never defined
// makes it decode with whatever memory held. The two checks below refuse both.
// Tables are numbered 4 * class + id (class 0 for DC coefficients, 1 for AC; ids 0-3).

// Whether the n bytes of a DHT segment are Huffman tables of at most 256 symbols each (a
// byte of class and id, 16 counts, then the symbols); adds them to the bits of *defined.
static int jpeg_define_huffman(const unsigned char* p, long n, unsigned* defined) {
    long i = 0;
    while (i < n) {
        if (i + 17 > n || p[i] >> 4 > 1 || (p[i] & 15) > 3) return 0;
        long symbols = 0;
        for (int k = 1; k <= 16; k++) symbols += p[i + k];
        if (symbols > 256 || i + 17 + symbols > n) return 0;
        *defined |= 1u << (4 * (p[i] >> 4) + (p[i] & 15));
        i += 17 + symbols;
    }
    return 1;
}

// Whether the n bytes of an SOS segment (component count, then a component and its DC
// and AC table ids for each, then the spectral selection Ss, Se and the approximation
// bits) only name tables in defined. A sequential scan uses both of its tables; a
// progressive one its DC tables if it has the DC coefficient (Ss = 0), its AC tables if
// it has AC coefficients (Se > 0).
static int jpeg_scan_tables_defined(const unsigned char* p, long n, unsigned defined, int progressive) {
    if (n < 1 || n < 1 + 2 * (long)p[0] + 3) return 0;
    int uses_dc = !progressive || p[1 + 2 * p[0]] == 0, uses_ac = !progressive || p[2 + 2 * p[0]] > 0;
    for (int c = 0; c < p[0]; c++) {
        int dc = p[2 + 2 * c] >> 4, ac = p[2 + 2 * c] & 15;
        if (uses_dc && (dc > 3 || !(defined >> dc & 1))) return 0;
        if (uses_ac && (ac > 3 || !(defined >> (4 + ac) & 1))) return 0;
    }
    return 1;
}

// stb_image decodes truncated JPEGs without complaint (the missing part comes out grey),
// so walk the marker segments and the entropy-coded data and require the end-of-image
// marker; the Huffman tables are checked on the way. Returns NULL if the file is
// complete and sound, else what is wrong.
static const char* jpeg_unsound(const unsigned char* p, long n) {
    long i = 2; // after SOI
    unsigned huffman = 0; // the tables defined so far
    int progressive = 0;  // the frame header is SOF2
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
        if (i + seglen > n) break;
        if (m == 0xC4 && !jpeg_define_huffman(p + i + 2, seglen - 2, &huffman))
            return "corrupt JPEG (bad Huffman table)";
        if (m == 0xC2) progressive = 1;
        if (m == 0xDA && !jpeg_scan_tables_defined(p + i + 2, seglen - 2, huffman, progressive))
            return "corrupt JPEG (a scan uses an undefined Huffman table)";
        i += seglen;
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

// stb_image grows its buffer to the length a PNG chunk declares before it reads the
// chunk (2 GB for a 129-byte file), so walk the chunks and require each to fit in the
// file, up to the IEND chunk. Returns NULL if they do, else what is wrong.
static const char* png_unsound(const unsigned char* p, long n) {
    long i = 8; // after the signature
    while (i + 8 <= n) {
        long length = ((long)p[i] << 24) | ((long)p[i + 1] << 16) | ((long)p[i + 2] << 8) | p[i + 3];
        if (length > n - i - 12) return "truncated PNG (a chunk runs past the end of the file)";
        if (memcmp(p + i + 4, "IEND", 4) == 0) return NULL;
        i += 12 + length; // length, type, data, CRC
    }
    return "truncated PNG (no IEND chunk)";
}

// Whether the file starts as a JPEG or a PNG does. stb_image would also try TGA, BMP,
// PSD and more on any bytes: 18 bytes of anything can read as a TGA header claiming
// 26000 x 26000 pixels.
static int is_jpeg(const unsigned char* p, long n) { return n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF; }
static int is_png(const unsigned char* p, long n) { return n >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0; }

// Decodes the JPEG or PNG file held in buf (len bytes) to RGB (*w x *h x 3, free with
// stbi_image_free). Returns NULL and sets *why (a static string) when it is empty, not a
// JPEG or a PNG, truncated or unsound, has more than max_pixels pixels (checked from its
// header, before decoding: a 21 KB JPEG can claim 25000 x 25000) or does not decode.
static unsigned char* decode_rgb_memory(const unsigned char* buf, long len, long max_pixels, int* w, int* h,
                                        const char** why) {
    int x, y, channels;
    *why = NULL;
    if (len == 0) *why = "empty file";
    else if (!is_jpeg(buf, len) && !is_png(buf, len)) *why = "not an image (neither JPEG nor PNG)";
    else if (len > INT_MAX) *why = "file too large"; // stb takes an int length
    else *why = is_jpeg(buf, len) ? jpeg_unsound(buf, len) : png_unsound(buf, len);
    if (*why == NULL && !stbi_info_from_memory(buf, (int)len, &x, &y, &channels))
        *why = is_jpeg(buf, len) ? "corrupt JPEG (bad header)" : "corrupt PNG (bad header)";
    if (*why == NULL && (long)x * y > max_pixels) *why = "too many pixels (width x height above the limit)";
    if (*why != NULL) return NULL;
    unsigned char* img = stbi_load_from_memory(buf, (int)len, w, h, &channels, 3);
    if (img == NULL) *why = stbi_failure_reason() ? stbi_failure_reason() : "decode failed";
    return img;
}

// decode_rgb_memory of the file at path; *why also says why it cannot be read.
static unsigned char* decode_rgb_capped(const char* path, long max_pixels, int* w, int* h, const char** why) {
    long len = 0;
    unsigned char* buf = (unsigned char*)read_whole_file_or_why(path, IMAGE_MAX_FILE, &len, why);
    if (buf == NULL) return NULL;
    unsigned char* img = decode_rgb_memory(buf, len, max_pixels, w, h, why);
    free(buf);
    return img;
}

// decode_rgb_capped with the default limit of IMAGE_MAX_PIXELS.
static unsigned char* decode_rgb(const char* path, int* w, int* h, const char** why) {
    return decode_rgb_capped(path, IMAGE_MAX_PIXELS, w, h, why);
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

// Size of the image after torchvision's Resize(S): shorter side S, longer int(S*long/short),
// at most 2^30 (only a strip of an image reaches that; the centre crop barely changes).
static void resized_size(int w, int h, int S, int* rw, int* rh) {
    double longer = fmin((double)S * (w <= h ? h : w) / (w <= h ? w : h), (double)(1 << 30));
    if (w <= h) { *rw = S; *rh = (int)longer; }
    else { *rh = S; *rw = (int)longer; }
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
