// A picture of where attention flows: an image, and beside it the same image under
// a heat map of one value per patch (a side x side grid), blue (lowest) to red
// (highest, the "jet" colour map), written as a PNG with stb_image_write.
// The program that includes this defines STB_IMAGE_WRITE_IMPLEMENTATION once.
#ifndef UTILS_HEATMAP_H
#define UTILS_HEATMAP_H

#include <math.h>
#include <stdlib.h>
#include <stb/stb_image_write.h>
#include "utils/utils.h"
#include "utils/paths.h"

// rgb is (S, S, 3), heat is (side, side). Small images are enlarged to at least
// 224 pixels. Written atomically to out_path.
static void heatmap_write_png(const char* out_path, const unsigned char* rgb, int S, const double* heat, int side) {
    double lo = INFINITY, hi = -INFINITY;
    for (int j = 0; j < side * side; j++) {
        lo = fmin(lo, heat[j]);
        hi = fmax(hi, heat[j]);
    }
    int f = S >= 224 ? 1 : (224 + S - 1) / S, W = 2 * S * f;
    unsigned char* out = (unsigned char*)malloc_check((size_t)W * S * f * 3);
    for (int y = 0; y < S * f; y++) {
        for (int x = 0; x < S * f; x++) {
            const unsigned char* p = rgb + ((long)(y / f) * S + x / f) * 3;
            double v = hi > lo ? (heat[(y / f * side / S) * side + x / f * side / S] - lo) / (hi - lo) : 0.5;
            double jet[3] = {1.5 - fabs(4 * v - 3), 1.5 - fabs(4 * v - 2), 1.5 - fabs(4 * v - 1)};
            for (int k = 0; k < 3; k++) {
                double shade = p[k];
                double col = 255 * fmin(fmax(jet[k], 0), 1);
                out[((long)y * W + x) * 3 + k] = (unsigned char)shade;
                out[((long)y * W + S * f + x) * 3 + k] = (unsigned char)(0.45 * shade + 0.55 * col);
            }
        }
    }
    make_parent_dirs(out_path);
    const char* tmp = tmp_path_of(out_path);
    if (!stbi_write_png(tmp, W, S * f, 3, out, W * 3)) fail("%s: cannot write the PNG", tmp);
    rename_check(tmp, out_path);
    free(out);
}

#endif
