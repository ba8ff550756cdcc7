// Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs"),
// feature map phi(x) = elu(x) + 1, forward and backward. One row of the table in
// layers/attention.h ("linear").
//   R_i = sum_j (phi(q_i) . phi(k_j)) v_j / (phi(q_i) . sum_j phi(k_j) + eps)
// with j <= i when causal. eps = 1e-6 as in the authors' code.
#ifndef LAYERS_LINEAR_ATTENTION_H
#define LAYERS_LINEAR_ATTENTION_H

#include <string.h>
#include "utils/real.h"
#include "utils/utils.h"
#include "layers/vec.h"
#include "layers/attention_types.h"
#include "layers/causal_dot_product.h"

#define LINEAR_EPS ((real)1e-6)

static inline real elu1(real x) { return x > 0 ? x + (real)1 : exp(x); }
static inline real elu1_grad(real x) { return x > 0 ? (real)1 : exp(x); }

// dst (T,D) = phi of one head's rows of src (rows `stride` apart)
static void gather_elu1(real* dst, const real* src, int T, int stride, int D) {
    for (int t = 0; t < T; t++) {
        for (int d = 0; d < D; d++) dst[t * D + d] = elu1(src[(size_t)t * stride + d]);
    }
}

// dst (T,M) = one head's rows of src
static void gather_rows(real* dst, const real* src, int T, int stride, int M) {
    for (int t = 0; t < T; t++) memcpy(dst + (size_t)t * M, src + (size_t)t * stride, (size_t)M * sizeof(real));
}

// cache: the denominator of each (batch, head, query)
static void linear_attention_forward(const Attention* a, real* out, real* cache,
                                     const real* q, const real* k, const real* v) {
    int D = a->D, M = a->M, L = a->L, S = a->S;
    #pragma omp parallel
    {
        real* qf = (real*)malloc_check(((size_t)(L + S) * D + (size_t)(L + S) * M + (size_t)D * M
                                        + CDP_CHUNK * CDP_CHUNK + D) * sizeof(real));
        real *kf = qf + (size_t)L * D, *vh = kf + (size_t)S * D, *p = vh + (size_t)S * M;
        real *state = p + (size_t)L * M, *scores = state + (size_t)D * M, *z = scores + CDP_CHUNK * CDP_CHUNK;
        #pragma omp for schedule(static)
        for (int bh = 0; bh < a->B * a->H; bh++) {
            int b = bh / a->H, h = bh % a->H;
            gather_elu1(qf, HEAD_Q(a, q, b, h), L, a->q_stride, D);
            gather_elu1(kf, HEAD_K(a, k, b, h), S, a->k_stride, D);
            gather_rows(vh, HEAD_V(a, v, b, h), S, a->v_stride, M);
            if (a->causal) causal_dot_product_forward(p, qf, kf, vh, L, D, M, state, scores);
            else full_dot_product_forward(p, qf, kf, vh, L, S, D, M, state);
            real* den = cache + (size_t)bh * L;
            memset(z, 0, (size_t)D * sizeof(real));
            if (!a->causal) for (int j = 0; j < S; j++) vec_axpy(z, 1, kf + (size_t)j * D, D);
            real* oh = HEAD_OUT(a, out, b, h);
            for (int i = 0; i < L; i++) {
                if (a->causal) vec_axpy(z, 1, kf + (size_t)i * D, D);
                den[i] = vec_dot(qf + (size_t)i * D, z, D) + LINEAR_EPS;
                for (int m = 0; m < M; m++) oh[(size_t)i * a->H * M + m] = p[(size_t)i * M + m] / den[i];
            }
        }
        free(qf);
    }
}

static void linear_attention_backward(const Attention* a, real* dq, real* dk, real* dv,
                                      const real* dout, const real* out, const real* cache,
                                      const real* q, const real* k, const real* v) {
    int D = a->D, M = a->M, L = a->L, S = a->S;
    #pragma omp parallel
    {
        size_t feats = (size_t)(L + S) * D;
        real* qf = (real*)malloc_check((2 * feats + (size_t)(L + 2 * S) * M + 2 * (size_t)D * M
                                        + CDP_CHUNK * CDP_CHUNK + 2 * (size_t)D + L) * sizeof(real));
        real *kf = qf + (size_t)L * D, *dqf = kf + (size_t)S * D, *dkf = dqf + (size_t)L * D;
        real *vh = dkf + (size_t)S * D, *dvh = vh + (size_t)S * M, *g = dvh + (size_t)S * M;
        real *state = g + (size_t)L * M, *scores = state + 2 * (size_t)D * M;
        real *z = scores + CDP_CHUNK * CDP_CHUNK, *rz = z + D, *dden = rz + D;
        #pragma omp for schedule(static)
        for (int bh = 0; bh < a->B * a->H; bh++) {
            int b = bh / a->H, h = bh % a->H;
            const real *qh = HEAD_Q(a, q, b, h), *kh = HEAD_K(a, k, b, h);
            gather_elu1(qf, qh, L, a->q_stride, D);
            gather_elu1(kf, kh, S, a->k_stride, D);
            gather_rows(vh, HEAD_V(a, v, b, h), S, a->v_stride, M);
            memset(dqf, 0, feats * sizeof(real)); // dqf and dkf, adjacent
            const real* den = cache + (size_t)bh * L;
            const real *oh = HEAD_OUT(a, out, b, h), *doh = HEAD_OUT(a, dout, b, h);
            // R_i = p_i / den_i: dp_i = dout_i / den_i, dden_i = -(dout_i . R_i) / den_i
            for (int i = 0; i < L; i++) {
                const real *dor = doh + (size_t)i * a->H * M, *orow = oh + (size_t)i * a->H * M;
                dden[i] = -vec_dot(dor, orow, M) / den[i];
                for (int m = 0; m < M; m++) g[(size_t)i * M + m] = dor[m] / den[i];
            }
            memset(dvh, 0, (size_t)S * M * sizeof(real));
            if (a->causal) causal_dot_product_backward(dqf, dkf, dvh, g, qf, kf, vh, L, D, M, state, scores);
            else full_dot_product_backward(dqf, dkf, dvh, g, qf, kf, vh, L, S, D, M, state, state + (size_t)D * M);
            // den_i = phi(q_i) . z_i + eps, z_i = sum_{j (<= i)} phi(k_j)
            memset(z, 0, 2 * (size_t)D * sizeof(real));
            if (a->causal) {
                for (int i = 0; i < L; i++) {
                    vec_axpy(z, 1, kf + (size_t)i * D, D);
                    vec_axpy(dqf + (size_t)i * D, dden[i], z, D);
                }
                for (int j = S - 1; j >= 0; j--) {
                    vec_axpy(rz, dden[j], qf + (size_t)j * D, D);
                    vec_axpy(dkf + (size_t)j * D, 1, rz, D);
                }
            } else {
                for (int j = 0; j < S; j++) vec_axpy(z, 1, kf + (size_t)j * D, D);
                for (int i = 0; i < L; i++) {
                    vec_axpy(dqf + (size_t)i * D, dden[i], z, D);
                    vec_axpy(rz, dden[i], qf + (size_t)i * D, D);
                }
                for (int j = 0; j < S; j++) vec_axpy(dkf + (size_t)j * D, 1, rz, D);
            }
            real *dqh = HEAD_Q(a, dq, b, h), *dkh = HEAD_K(a, dk, b, h), *dvhead = HEAD_V(a, dv, b, h);
            for (int i = 0; i < L; i++)
                for (int d = 0; d < D; d++)
                    dqh[(size_t)i * a->q_stride + d] += dqf[(size_t)i * D + d] * elu1_grad(qh[(size_t)i * a->q_stride + d]);
            for (int j = 0; j < S; j++) {
                for (int d = 0; d < D; d++)
                    dkh[(size_t)j * a->k_stride + d] += dkf[(size_t)j * D + d] * elu1_grad(kh[(size_t)j * a->k_stride + d]);
                vec_axpy(dvhead + (size_t)j * a->v_stride, 1, dvh + (size_t)j * M, M);
            }
        }
        free(qf);
    }
}

// The products, plus about 20 operations per position and feature for the features,
// the normaliser and their gradients.
static double linear_attention_flops(const Attention* a) {
    double product = a->causal ? causal_dot_product_flops(a->L, a->D, a->M)
                               : full_dot_product_flops(a->L, a->S, a->D, a->M);
    return (double)a->B * a->H * (product + 20.0 * (a->L + a->S) * a->D);
}

static size_t linear_attention_cache_size(const Attention* a) { return (size_t)a->B * a->H * a->L; }

// Recurrent form: state = kv (D*M) and z (D), the running sums over positions 0..t.
static size_t linear_attention_state_size(const Attention* a, int max_T) {
    return (size_t)a->D * a->M + a->D;
}

static void linear_attention_step(const Attention* a, real* state, int t, real* out,
                                  const real* Q, const real* K, const real* V) {
    int D = a->D, M = a->M;
    real *kv = state, *z = state + (size_t)D * M;
    real q[D], k[D];
    for (int d = 0; d < D; d++) { q[d] = elu1(Q[d]); k[d] = elu1(K[d]); }
    vec_axpy(z, 1, k, D);
    for (int d = 0; d < D; d++) vec_axpy(kv + (size_t)d * M, k[d], V, M);
    real den = vec_dot(q, z, D) + LINEAR_EPS;
    for (int m = 0; m < M; m++) out[m] = 0;
    for (int d = 0; d < D; d++) vec_axpy(out, q[d] / den, kv + (size_t)d * M, M);
}

#endif
