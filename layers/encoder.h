// Token embedding plus positions: learned (GPT-2) or fixed sinusoids (fairseq),
// with an optional scale on the token embedding (fairseq multiplies by sqrt(C)).
//   inp is (B,T) token ids, wte is (V,C), pos is (T,C), out is (B,T,C):
//   out[b,t] = scale * wte[inp[b,t]] + pos[t]
#ifndef LAYERS_ENCODER_H
#define LAYERS_ENCODER_H

#include <stddef.h>
#include "utils/real.h"

// Fixed positions as fairseq's SinusoidalPositionalEmbedding: for position t
// (fairseq numbers positions from padding_idx + 1 = 2, kept so the numbers agree)
// and i < C/2: table[t,i] = sin(p w_i), table[t,C/2+i] = cos(p w_i), with p = t + 2 and
// w_i = 10000^(-i/(C/2-1)). An odd C leaves the last channel zero, as fairseq does.
static void sinusoid_table(real* table, int T, int C) {
    int half = C / 2;
    double step = half > 1 ? log(10000.0) / (half - 1) : 0.0;
    for (int t = 0; t < T; t++) {
        real* row = table + (long)t * C;
        for (int i = 0; i < half; i++) {
            double angle = (t + 2) * exp(-step * i);
            row[i] = (real)sin(angle);
            row[half + i] = (real)cos(angle);
        }
        if (C % 2) row[C - 1] = 0;
    }
}

static void encoder_forward(real* out, const int* inp, const real* wte, const real* pos,
                            real scale, int B, int T, int C) {
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            real* o = out + ((long)b * T + t) * C;
            const real* e = wte + (long)inp[b * T + t] * C;
            const real* p = pos + (long)t * C;
#pragma omp simd
            for (int c = 0; c < C; c++) o[c] = scale * e[c] + p[c];
        }
    }
}

// dwte += scale * dout rows at the token ids; dpos += dout summed over the batch
// (dpos is NULL for fixed positions). Serial over tokens: ids repeat.
static void encoder_backward(real* dwte, real* dpos, const real* dout, const int* inp,
                             real scale, int B, int T, int C) {
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const real* d = dout + ((long)b * T + t) * C;
            real* dw = dwte + (long)inp[b * T + t] * C;
#pragma omp simd
            for (int c = 0; c < C; c++) dw[c] += scale * d[c];
            if (dpos != NULL) {
                real* dp = dpos + (long)t * C;
#pragma omp simd
                for (int c = 0; c < C; c++) dp[c] += d[c];
            }
        }
    }
}

#endif
