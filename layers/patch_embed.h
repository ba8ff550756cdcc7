// Non-overlapping P x P patches of a channels-last grid, as rows of a matrix, so
// that a stride-P convolution with a P x P kernel is one matmul over them
// (layers/matmul.h). It serves both the patch embedding of an image (P = 4, 7,
// 16...) and the 2x2 stride-2 merges between the stages of a hierarchical model.
//   inp is (B, H, W, C); cols is (B, H/P, W/P, P*P*C), each row ordered (py, px, c).
// A PyTorch Conv2d weight (OC, C, P, P) is our (OC, P, P, C): weight.permute(0, 2, 3, 1).
// Also here: the token sequence of a plain ViT, an optional class token first,
// then the patches, plus a learned position embedding.
#ifndef LAYERS_PATCH_EMBED_H
#define LAYERS_PATCH_EMBED_H

#include <string.h>
#include "utils/real.h"

static void patch_im2col_forward(real* cols, const real* inp, int B, int H, int W, int C, int P) {
    int h = H / P, w = W / P;
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < h; i++) {
            for (int j = 0; j < w; j++) {
                real* row = cols + (((long)b * h + i) * w + j) * P * P * C;
                for (int py = 0; py < P; py++) {
                    const real* src = inp + (((long)b * H + i * P + py) * W + j * P) * C;
                    memcpy(row + (long)py * P * C, src, sizeof(real) * P * C);
                }
            }
        }
    }
}

// dinp += the patch rows' gradients put back at their pixels (patches do not overlap).
static void patch_im2col_backward(real* dinp, const real* dcols, int B, int H, int W, int C, int P) {
    int h = H / P, w = W / P;
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < h; i++) {
            for (int j = 0; j < w; j++) {
                const real* row = dcols + (((long)b * h + i) * w + j) * P * P * C;
                for (int py = 0; py < P; py++) {
                    real* dst = dinp + (((long)b * H + i * P + py) * W + j * P) * C;
                    const real* src = row + (long)py * P * C;
#pragma omp simd
                    for (int c = 0; c < P * C; c++) dst[c] += src[c];
                }
            }
        }
    }
}

// out (B, T, C) with T = N + (cls != NULL): out[b,0] = cls + pos[0] when there is a
// class token, then out[b, t] = patches[b, t - first] + pos[t]. patches is (B, N, C),
// cls is (C) or NULL, pos is (T, C).
static void tokens_forward(real* out, const real* patches, const real* cls, const real* pos,
                           int B, int N, int C) {
    int first = cls != NULL, T = N + first;
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const real* src = t < first ? cls : patches + ((long)b * N + t - first) * C;
            const real* p = pos + (long)t * C;
            real* o = out + ((long)b * T + t) * C;
#pragma omp simd
            for (int c = 0; c < C; c++) o[c] = src[c] + p[c];
        }
    }
}

// dpatches += dout's patch rows; dcls += dout's first rows summed over the batch;
// dpos += dout summed over the batch. dcls is NULL without a class token.
static void tokens_backward(real* dpatches, real* dcls, real* dpos, const real* dout, int B, int N, int C) {
    int first = dcls != NULL, T = N + first;
#pragma omp parallel for
    for (int t = 0; t < T; t++) {
        real* dp = dpos + (long)t * C;
        for (int b = 0; b < B; b++) {
            const real* d = dout + ((long)b * T + t) * C;
#pragma omp simd
            for (int c = 0; c < C; c++) dp[c] += d[c];
            if (t < first) {
                for (int c = 0; c < C; c++) dcls[c] += d[c];
            } else {
                real* dst = dpatches + ((long)b * N + t - first) * C;
#pragma omp simd
                for (int c = 0; c < C; c++) dst[c] += d[c];
            }
        }
    }
}

#endif
