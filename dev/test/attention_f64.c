// The attention kernels in float64, plus a dense, obviously-correct version of
// each operator written straight from doc/FLOW_ATTENTION.md, for the tests.
#include "layers/attention.h"
#include "dev/test/attention_f64.h"

static Attention to_attention(const AttnSpec* s) {
    Attention a = {attention_kind(KIND_NAMES[s->kind]), s->causal, s->B, s->L, s->S, s->H, s->D, s->M,
                   s->H * s->D, s->H * s->D, s->H * s->M, s->clamp};
    return a;
}

size_t attn64_cache_size(const AttnSpec* s) { Attention a = to_attention(s); return attention_cache_size(&a); }

void attn64_forward(const AttnSpec* s, double* out, double* cache,
                    const double* q, const double* k, const double* v) {
    Attention a = to_attention(s);
    attention_forward(&a, out, cache, q, k, v);
}

void attn64_backward(const AttnSpec* s, double* dq, double* dk, double* dv, const double* dout,
                     const double* out, const double* cache,
                     const double* q, const double* k, const double* v) {
    Attention a = to_attention(s);
    attention_backward(&a, dq, dk, dv, dout, out, cache, q, k, v);
}

size_t attn64_state_size(const AttnSpec* s, int max_T) { Attention a = to_attention(s); return attention_state_size(&a, max_T); }

void attn64_step(const AttnSpec* s, double* state, int t, double* out,
                 const double* q, const double* k, const double* v) {
    Attention a = to_attention(s);
    attention_step(&a, state, t, out, q, k, v);
}

// ---- dense definitions ------------------------------------------------------

static double sig(double x) { return 1.0 / (1.0 + exp(-x)); }
static double phi(double x) { return x > 0 ? x + 1.0 : exp(x); }
#define EPS 1e-6

// Flow-Attention for one head, every sum written out over the positions it covers.
// qf (L,D), kf (S,D) are the sigmoid features, v (S,M); last(i) is the last key sink i sees.
static void dense_flow_head(const AttnSpec* s, double* out, const double* qf, const double* kf,
                            const double* v) {
    int L = s->L, S = s->S, D = s->D, M = s->M, causal = s->causal;
    double *I = calloc(L, sizeof(double)), *O = calloc(S, sizeof(double));
    double *A = calloc(L, sizeof(double)), *ec = calloc(S, sizeof(double));
    // (1) incoming and outgoing flow
    for (int i = 0; i < L; i++) {
        int last = causal ? i : S - 1;
        double den = 0;
        for (int d = 0; d < D; d++) {
            double ks = 0;
            for (int j = 0; j <= last; j++) ks += kf[j * D + d];
            den += (qf[i * D + d] + EPS) * (ks + EPS);
        }
        I[i] = 1.0 / den;
    }
    for (int j = 0; j < S; j++) {
        int last = causal ? j : L - 1;
        double den = 0;
        for (int d = 0; d < D; d++) {
            double qs = 0;
            for (int i = 0; i <= last; i++) qs += qf[i * D + d];
            den += (kf[j * D + d] + EPS) * (qs + EPS);
        }
        O[j] = 1.0 / den;
    }
    // (2) conservation refine, (3) competition and allocation
    for (int i = 0; i < L; i++) {
        int last = causal ? i : S - 1;
        double ic = 0;
        for (int d = 0; d < D; d++) {
            double ko = 0;
            for (int j = 0; j <= last; j++) ko += (causal ? j + 1 : 1) * O[j] * kf[j * D + d];
            ic += (qf[i * D + d] + EPS) * (ko + EPS);
        }
        A[i] = causal ? sig(ic / (i + 1)) : sig(ic * L / S);
    }
    for (int j = 0; j < S; j++) {
        int last = causal ? j : L - 1;
        double oc = 0;
        for (int d = 0; d < D; d++) {
            double qi = 0;
            for (int i = 0; i <= last; i++) qi += (causal ? i + 1 : 1) * I[i] * qf[i * D + d];
            oc += (kf[j * D + d] + EPS) * (qi + EPS);
        }
        if (causal) oc /= (j + 1);
        if (oc > s->clamp) oc = s->clamp;
        if (oc < -s->clamp) oc = -s->clamp;
        ec[j] = exp(oc);
    }
    // (4) aggregation, with C_j = n_j exp(Oc_j) / sum_{j' <= j} exp(Oc_j') (causal)
    //     or S exp(Oc_j) / sum_j' exp(Oc_j') (normal)
    for (int i = 0; i < L; i++) {
        int last = causal ? i : S - 1;
        for (int m = 0; m < M; m++) {
            double r = 0;
            for (int j = 0; j <= last; j++) {
                double z = 0;
                for (int jj = 0; jj <= (causal ? j : S - 1); jj++) z += ec[jj];
                double C = (causal ? j + 1 : S) * ec[j] / z;
                double qk = 0;
                for (int d = 0; d < D; d++) qk += qf[i * D + d] * kf[j * D + d];
                r += qk * C * v[j * M + m];
            }
            out[i * M + m] = A[i] * I[i] * r;
        }
    }
    free(I); free(O); free(A); free(ec);
}

static void dense_softmax_head(const AttnSpec* s, double* out, const double* q, const double* k, const double* v) {
    int L = s->L, S = s->S, D = s->D, M = s->M;
    double* p = calloc(S, sizeof(double));
    for (int i = 0; i < L; i++) {
        int n = s->causal ? i + 1 : S;
        double z = 0;
        for (int j = 0; j < n; j++) {
            double dotp = 0;
            for (int d = 0; d < D; d++) dotp += q[i * D + d] * k[j * D + d];
            p[j] = exp(dotp / sqrt((double)D));
            z += p[j];
        }
        for (int m = 0; m < M; m++) {
            double r = 0;
            for (int j = 0; j < n; j++) r += p[j] / z * v[j * M + m];
            out[i * M + m] = r;
        }
    }
    free(p);
}

static void dense_linear_head(const AttnSpec* s, double* out, const double* qf, const double* kf, const double* v) {
    int L = s->L, S = s->S, D = s->D, M = s->M;
    for (int i = 0; i < L; i++) {
        int n = s->causal ? i + 1 : S;
        double den = EPS;
        for (int j = 0; j < n; j++)
            for (int d = 0; d < D; d++) den += qf[i * D + d] * kf[j * D + d];
        for (int m = 0; m < M; m++) {
            double r = 0;
            for (int j = 0; j < n; j++) {
                double qk = 0;
                for (int d = 0; d < D; d++) qk += qf[i * D + d] * kf[j * D + d];
                r += qk * v[j * M + m];
            }
            out[i * M + m] = r / den;
        }
    }
}

void dense64_forward(const AttnSpec* s, double* out, const double* q, const double* k, const double* v) {
    int L = s->L, S = s->S, H = s->H, D = s->D, M = s->M;
    double *qh = calloc((size_t)L * D, sizeof(double)), *kh = calloc((size_t)S * D, sizeof(double));
    double *vh = calloc((size_t)S * M, sizeof(double)), *oh = calloc((size_t)L * M, sizeof(double));
    for (int b = 0; b < s->B; b++) {
        for (int h = 0; h < H; h++) {
            for (int i = 0; i < L; i++)
                for (int d = 0; d < D; d++) {
                    double x = q[((size_t)b * L + i) * H * D + h * D + d];
                    qh[i * D + d] = s->kind == KIND_FLOW ? sig(x) : s->kind == KIND_LINEAR ? phi(x) : x;
                }
            for (int j = 0; j < S; j++) {
                for (int d = 0; d < D; d++) {
                    double x = k[((size_t)b * S + j) * H * D + h * D + d];
                    kh[j * D + d] = s->kind == KIND_FLOW ? sig(x) : s->kind == KIND_LINEAR ? phi(x) : x;
                }
                for (int m = 0; m < M; m++) vh[j * M + m] = v[((size_t)b * S + j) * H * M + h * M + m];
            }
            if (s->kind == KIND_FLOW) dense_flow_head(s, oh, qh, kh, vh);
            else if (s->kind == KIND_SOFTMAX) dense_softmax_head(s, oh, qh, kh, vh);
            else dense_linear_head(s, oh, qh, kh, vh);
            for (int i = 0; i < L; i++)
                for (int m = 0; m < M; m++) out[((size_t)b * L + i) * H * M + h * M + m] = oh[i * M + m];
        }
    }
    free(qh); free(kh); free(vh); free(oh);
}
