// Softmax attention (the vanilla Transformer's), forward and backward, scores
// scaled by 1/sqrt(D). Included by attention.h.
// Memory stays linear in the sequence like the other kernels: the forward pass
// keeps only each query's log-sum-exp, and the backward pass recomputes the
// probabilities one query row at a time (as FlashAttention does). Time is O(L*S*D).
#ifndef LAYERS_SOFTMAX_ATTENTION_H
#define LAYERS_SOFTMAX_ATTENTION_H

// cache: log-sum-exp of the scaled scores, one per (batch, head, query)
static void softmax_attention_forward(const Attention* a, real* out, real* cache,
                                      const real* q, const real* k, const real* v) {
    int D = a->D, M = a->M, L = a->L, S = a->S;
    real scale = (real)1 / sqrt((real)D);
    #pragma omp parallel
    {
        real* p = (real*)malloc_check((size_t)S * sizeof(real));
        #pragma omp for schedule(static)
        for (int bh = 0; bh < a->B * a->H; bh++) {
            int b = bh / a->H, h = bh % a->H;
            const real *qh = HEAD_Q(a, q, b, h), *kh = HEAD_K(a, k, b, h), *vh = HEAD_V(a, v, b, h);
            real* oh = HEAD_OUT(a, out, b, h);
            real* lse = cache + (size_t)bh * L;
            for (int i = 0; i < L; i++) {
                int n = a->causal ? i + 1 : S;
                const real* qr = qh + (size_t)i * a->q_stride;
                real mx = -INFINITY;
                for (int j = 0; j < n; j++) {
                    p[j] = scale * vec_dot(qr, kh + (size_t)j * a->k_stride, D);
                    if (p[j] > mx) mx = p[j];
                }
                real sum = 0;
                for (int j = 0; j < n; j++) { p[j] = exp(p[j] - mx); sum += p[j]; }
                real* orow = oh + (size_t)i * a->H * M;
                for (int m = 0; m < M; m++) orow[m] = 0;
                for (int j = 0; j < n; j++) vec_axpy(orow, p[j] / sum, vh + (size_t)j * a->v_stride, M);
                lse[i] = mx + log(sum);
            }
        }
        free(p);
    }
}

static void softmax_attention_backward(const Attention* a, real* dq, real* dk, real* dv,
                                       const real* dout, const real* out, const real* cache,
                                       const real* q, const real* k, const real* v) {
    int D = a->D, M = a->M, L = a->L, S = a->S;
    real scale = (real)1 / sqrt((real)D);
    #pragma omp parallel
    {
        // this head's gradients, summed here and added to dq, dk, dv once
        real* dqr = (real*)malloc_check(((size_t)D + (size_t)S * (D + M)) * sizeof(real));
        real *dkh = dqr + D, *dvh = dkh + (size_t)S * D;
        #pragma omp for schedule(static)
        for (int bh = 0; bh < a->B * a->H; bh++) {
            int b = bh / a->H, h = bh % a->H;
            const real *qh = HEAD_Q(a, q, b, h), *kh = HEAD_K(a, k, b, h), *vh = HEAD_V(a, v, b, h);
            const real *oh = HEAD_OUT(a, out, b, h), *doh = HEAD_OUT(a, dout, b, h);
            const real* lse = cache + (size_t)bh * L;
            memset(dkh, 0, (size_t)S * (D + M) * sizeof(real));
            for (int i = 0; i < L; i++) {
                int n = a->causal ? i + 1 : S;
                const real *qr = qh + (size_t)i * a->q_stride, *dor = doh + (size_t)i * a->H * M;
                memset(dqr, 0, (size_t)D * sizeof(real));
                // softmax backward: dscore_j = p_j (dp_j - sum_j' p_j' dp_j'), and sum_j' p_j' dp_j' = dout_i . out_i
                real dout_out = vec_dot(dor, oh + (size_t)i * a->H * M, M);
                for (int j = 0; j < n; j++) {
                    const real *kr = kh + (size_t)j * a->k_stride, *vr = vh + (size_t)j * a->v_stride;
                    real pj = exp(scale * vec_dot(qr, kr, D) - lse[i]);
                    real ds = scale * pj * (vec_dot(dor, vr, M) - dout_out);
                    vec_axpy(dqr, ds, kr, D);
                    vec_axpy(dkh + (size_t)j * D, ds, qr, D);
                    vec_axpy(dvh + (size_t)j * M, pj, dor, M);
                }
                vec_axpy(HEAD_Q(a, dq, b, h) + (size_t)i * a->q_stride, 1, dqr, D);
            }
            for (int j = 0; j < S; j++) {
                vec_axpy(HEAD_K(a, dk, b, h) + (size_t)j * a->k_stride, 1, dkh + (size_t)j * D, D);
                vec_axpy(HEAD_V(a, dv, b, h) + (size_t)j * a->v_stride, 1, dvh + (size_t)j * M, M);
            }
        }
        free(dqr);
    }
}

// Recurrent form: the state holds every key and value seen, (D+M) reals per position.
static size_t softmax_causal_state_size(int D, int M, int max_T) { return (size_t)max_T * (D + M); }

static void softmax_causal_step(int D, int M, real* state, int t, real* out,
                                const real* q, const real* k, const real* v) {
    real* kv = state + (size_t)t * (D + M);
    memcpy(kv, k, (size_t)D * sizeof(real));
    memcpy(kv + D, v, (size_t)M * sizeof(real));
    real scale = (real)1 / sqrt((real)D);
    real mx = -INFINITY;
    for (int j = 0; j <= t; j++) {
        real s = scale * vec_dot(q, state + (size_t)j * (D + M), D);
        if (s > mx) mx = s;
    }
    real sum = 0;
    for (int m = 0; m < M; m++) out[m] = 0;
    for (int j = 0; j <= t; j++) {
        const real* row = state + (size_t)j * (D + M);
        real p = exp(scale * vec_dot(q, row, D) - mx);
        sum += p;
        vec_axpy(out, p, row + D, M);
    }
    for (int m = 0; m < M; m++) out[m] /= sum;
}

#endif
