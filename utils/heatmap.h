// A picture of where attention flows: an image, and beside it the same image under
// a heat map of one value per patch (a side x side grid), blue (lowest) to red
// (highest, the "jet" colour map), written as a PNG with stb_image_write. Under
// the pictures, a caption (such as the predicted class) and the colour scale with
// the values at its ends, in a small built-in font.
// The program that includes this defines STB_IMAGE_WRITE_IMPLEMENTATION once.
#ifndef UTILS_HEATMAP_H
#define UTILS_HEATMAP_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stb/stb_image_write.h>
#include "utils/utils.h"
#include "utils/paths.h"

// 5x7 glyphs, one row a byte (bit 4 the leftmost pixel); letters are lower case.
static const char HEATMAP_CHARS[] = "0123456789.,-:=()%_abcdefghijklmnopqrstuvwxyz";
static const unsigned char HEATMAP_GLYPHS[][7] = {
    {14, 17, 19, 21, 25, 17, 14}, {4, 12, 4, 4, 4, 4, 14},   {14, 17, 1, 2, 4, 8, 31},   {31, 2, 4, 2, 1, 17, 14},
    {2, 6, 10, 18, 31, 2, 2},     {31, 16, 30, 1, 1, 17, 14}, {6, 8, 16, 30, 17, 17, 14}, {31, 1, 2, 4, 8, 8, 8},
    {14, 17, 17, 14, 17, 17, 14}, {14, 17, 17, 15, 1, 2, 12}, {0, 0, 0, 0, 0, 12, 12},    {0, 0, 0, 0, 12, 4, 8},
    {0, 0, 0, 31, 0, 0, 0},       {0, 12, 12, 0, 12, 12, 0},  {0, 0, 31, 0, 31, 0, 0},    {2, 4, 8, 8, 8, 4, 2},
    {8, 4, 2, 2, 2, 4, 8},        {24, 25, 2, 4, 8, 19, 3},   {0, 0, 0, 0, 0, 0, 31},
    {0, 0, 14, 1, 15, 17, 15},    {16, 16, 22, 25, 17, 17, 30}, {0, 0, 14, 16, 16, 17, 14}, {1, 1, 13, 19, 17, 17, 15},
    {0, 0, 14, 17, 31, 16, 14},   {6, 9, 8, 28, 8, 8, 8},     {0, 15, 17, 17, 15, 1, 14}, {16, 16, 22, 25, 17, 17, 17},
    {4, 0, 12, 4, 4, 4, 14},      {2, 0, 6, 2, 2, 18, 12},    {16, 16, 18, 20, 24, 20, 18}, {12, 4, 4, 4, 4, 4, 14},
    {0, 0, 26, 21, 21, 17, 17},   {0, 0, 22, 25, 17, 17, 17}, {0, 0, 14, 17, 17, 17, 14}, {0, 0, 30, 17, 30, 16, 16},
    {0, 0, 13, 19, 15, 1, 1},     {0, 0, 22, 25, 16, 16, 16}, {0, 0, 14, 16, 14, 1, 30},  {8, 8, 28, 8, 8, 9, 6},
    {0, 0, 17, 17, 17, 19, 13},   {0, 0, 17, 17, 17, 10, 4},  {0, 0, 17, 17, 21, 21, 10}, {0, 0, 17, 10, 4, 10, 17},
    {0, 0, 17, 17, 15, 1, 14},    {0, 0, 31, 2, 4, 8, 31},
};

// Draws text (upper case as lower, unknown characters as spaces) into rgb (width W)
// at (x, y), each font pixel a scale x scale square, in colour `ink`.
static void heatmap_text(unsigned char* rgb, int W, int H, int x, int y, int scale, const char* text,
                         const unsigned char* ink) {
    for (const char* c = text; *c; c++, x += 6 * scale) {
        char ch = *c >= 'A' && *c <= 'Z' ? (char)(*c - 'A' + 'a') : *c;
        const char* at = ch ? strchr(HEATMAP_CHARS, ch) : NULL;
        if (at == NULL) continue;
        const unsigned char* glyph = HEATMAP_GLYPHS[at - HEATMAP_CHARS];
        for (int row = 0; row < 7 * scale; row++)
            for (int col = 0; col < 5 * scale; col++) {
                int px = x + col, py = y + row;
                if (px < 0 || px >= W || py < 0 || py >= H || !(glyph[row / scale] & (16 >> (col / scale)))) continue;
                memcpy(rgb + ((long)py * W + px) * 3, ink, 3);
            }
    }
}

// The jet colour of v in [0, 1].
static void heatmap_jet(double v, unsigned char* out) {
    double jet[3] = {1.5 - fabs(4 * v - 3), 1.5 - fabs(4 * v - 2), 1.5 - fabs(4 * v - 1)};
    for (int k = 0; k < 3; k++) out[k] = (unsigned char)(255 * fmin(fmax(jet[k], 0), 1));
}

// rgb is (S, S, 3), heat is (side, side). Small images are enlarged to at least
// 224 pixels. caption goes under the image, the colour scale (labelled `what`,
// with its lowest and highest value) under the heat map. Written atomically.
static void heatmap_write_png(const char* out_path, const unsigned char* rgb, int S, const double* heat, int side,
                              const char* caption, const char* what) {
    double lo = INFINITY, hi = -INFINITY;
    for (int j = 0; j < side * side; j++) {
        lo = fmin(lo, heat[j]);
        hi = fmax(hi, heat[j]);
    }
    int f = S >= 224 ? 1 : (224 + S - 1) / S, W = 2 * S * f, band = 48, H = S * f + band;
    unsigned char* out = (unsigned char*)calloc_check((size_t)W * H * 3, 1);
    for (int y = 0; y < S * f; y++) {
        for (int x = 0; x < S * f; x++) {
            const unsigned char* p = rgb + ((long)(y / f) * S + x / f) * 3;
            double v = hi > lo ? (heat[(y / f * side / S) * side + x / f * side / S] - lo) / (hi - lo) : 0.5;
            unsigned char col[3];
            heatmap_jet(v, col);
            for (int k = 0; k < 3; k++) {
                out[((long)y * W + x) * 3 + k] = p[k];
                out[((long)y * W + S * f + x) * 3 + k] = (unsigned char)(0.45 * p[k] + 0.55 * col[k]);
            }
        }
    }
    // the legend: the colour scale from lo to hi under the heat map, the caption under the image
    const unsigned char white[3] = {255, 255, 255};
    int x0 = S * f + 8, x1 = W - 8, y0 = S * f + 28;
    for (int x = x0; x < x1; x++) {
        unsigned char col[3];
        heatmap_jet((double)(x - x0) / (x1 - 1 - x0 > 0 ? x1 - 1 - x0 : 1), col);
        for (int y = y0; y < y0 + 12; y++) memcpy(out + ((long)y * W + x) * 3, col, 3);
    }
    char label[64];
    snprintf(label, sizeof label, "%.3f", lo);
    heatmap_text(out, W, H, x0, S * f + 6, 2, label, white);
    snprintf(label, sizeof label, "%.3f", hi);
    heatmap_text(out, W, H, x1 - 12 * (int)strlen(label) + 2, S * f + 6, 2, label, white);
    heatmap_text(out, W, H, (x0 + x1) / 2 - 3 * (int)strlen(what), S * f + 8, 1, what, white);
    heatmap_text(out, W, H, 8, S * f + 16, 2, caption, white);

    make_parent_dirs(out_path);
    const char* tmp = tmp_path_of(out_path);
    if (!stbi_write_png(tmp, W, H, 3, out, W * 3)) fail("%s: cannot write the PNG", tmp);
    rename_check(tmp, out_path);
    free(out);
}

#endif
