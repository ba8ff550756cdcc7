// Tests of the attention kernels (layers/attention.h): flow, softmax and linear,
// causal and normal, forward and backward.
//  - float64 kernels against the dense O(L*S) definitions (dev/test/attention_f64.c)
//  - float64 backward passes against central finite differences
//  - float32 kernels against the float64 ones
//  - both against PyTorch autograd (dev/ref/attention_*.bin, from dev/attention_reference.py)
//  - fused, strided qkv input; accumulation into gradients; the recurrent form
//  - bad shapes stop with a message naming the sizes
#include <stdint.h>
#include "layers/attention.h"
#include "dev/test/testing.h"
#include "dev/test/capture.h"
#include "dev/test/attention_f64.h"

static uint64_t rng = 88172645463325252ull;
static double randu(void) { // uniform in [0, 1)
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (rng >> 11) * (1.0 / 9007199254740992.0);
}
static double randsym(void) { return 2.0 * randu() - 1.0; }

static double* dalloc(size_t n) { return (double*)calloc_check(n, sizeof(double)); }

// max |a - b| / max(max |b|, GRAD_FLOOR): the error relative to the size of
// the reference. The floor matters only where every entry is tiny, as dq and
// dk are at T = 1 (there I * (q . k) = 1 up to eps, so the output barely
// depends on q and k), and makes the check absolute there.
#define GRAD_FLOOR 1e-3
static double norm_rel_err(const double* a, const double* b, size_t n) {
    double diff = 0, ref = GRAD_FLOOR;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(a[i] - b[i]);
        if (!(e <= diff)) diff = e;
        if (fabs(b[i]) > ref) ref = fabs(b[i]);
    }
    return diff / ref;
}

typedef struct {
    AttnSpec s;
    size_t nq, nk, nv, no;
    double *q, *k, *v, *dout;
} Case;

static const char* case_name(const AttnSpec* s, char* buf, size_t size) {
    snprintf(buf, size, "%s-%s B=%d L=%d S=%d H=%d D=%d M=%d c=%g",
             KIND_NAMES[s->kind], s->causal ? "causal" : "normal",
             s->B, s->L, s->S, s->H, s->D, s->M, s->clamp);
    return buf;
}

// Random inputs of size `scale`; dout is the weight of the loss sum(out * dout).
static Case make_case(AttnSpec s, double scale) {
    Case c = {s, (size_t)s.B * s.L * s.H * s.D, (size_t)s.B * s.S * s.H * s.D,
              (size_t)s.B * s.S * s.H * s.M, (size_t)s.B * s.L * s.H * s.M, 0, 0, 0, 0};
    c.q = dalloc(c.nq); c.k = dalloc(c.nk); c.v = dalloc(c.nv); c.dout = dalloc(c.no);
    // values representable in float32, so both precisions see the same inputs
    for (size_t i = 0; i < c.nq; i++) c.q[i] = (float)(scale * randsym());
    for (size_t i = 0; i < c.nk; i++) c.k[i] = (float)(scale * randsym());
    for (size_t i = 0; i < c.nv; i++) c.v[i] = (float)randsym();
    for (size_t i = 0; i < c.no; i++) c.dout[i] = (float)randsym();
    return c;
}

static void free_case(Case* c) { free(c->q); free(c->k); free(c->v); free(c->dout); }

static double loss64(const Case* c, double* out, double* cache) {
    attn64_forward(&c->s, out, cache, c->q, c->k, c->v);
    double l = 0;
    for (size_t i = 0; i < c->no; i++) l += out[i] * c->dout[i];
    return l;
}

// The float64 kernel against the dense definition, and its gradients against
// central differences at `probes` entries of each input (all when probes == 0).
static void check_f64(Case* c, int probes) {
    char name[160];
    case_name(&c->s, name, sizeof name);
    double *out = dalloc(c->no), *ref = dalloc(c->no), *cache = dalloc(attn64_cache_size(&c->s));
    attn64_forward(&c->s, out, cache, c->q, c->k, c->v);
    dense64_forward(&c->s, ref, c->q, c->k, c->v);
    double e = norm_rel_err(out, ref, c->no);
    check(e < 1e-10, "%s: float64 forward vs dense definition, rel err %.1e", name, e);

    double *dq = dalloc(c->nq), *dk = dalloc(c->nk), *dv = dalloc(c->nv);
    attn64_backward(&c->s, dq, dk, dv, c->dout, out, cache, c->q, c->k, c->v);
    double* inputs[3] = {c->q, c->k, c->v};
    double* grads[3] = {dq, dk, dv};
    size_t sizes[3] = {c->nq, c->nk, c->nv};
    const char* names[3] = {"dq", "dk", "dv"};
    for (int which = 0; which < 3; which++) {
        size_t n = sizes[which], count = probes > 0 && (size_t)probes < n ? (size_t)probes : n;
        double *num = dalloc(count), *ana = dalloc(count);
        for (size_t p = 0; p < count; p++) {
            size_t idx = count == n ? p : (size_t)(randu() * n);
            double x = inputs[which][idx], h = 1e-5;
            inputs[which][idx] = x + h;
            double lp = loss64(c, ref, cache);
            inputs[which][idx] = x - h;
            double lm = loss64(c, ref, cache);
            inputs[which][idx] = x;
            num[p] = (lp - lm) / (2 * h);
            ana[p] = grads[which][idx];
        }
        e = norm_rel_err(ana, num, count);
        check(e < 1e-6, "%s: float64 %s vs finite differences (%zu entries), rel err %.1e", name, names[which], count, e);
        free(num); free(ana);
    }
    free(out); free(ref); free(cache); free(dq); free(dk); free(dv);
}

static float* to_f32(const double* x, size_t n) {
    float* y = (float*)malloc_check(n * sizeof(float));
    for (size_t i = 0; i < n; i++) y[i] = (float)x[i];
    return y;
}

static double* to_f64(const float* x, size_t n) {
    double* y = dalloc(n);
    for (size_t i = 0; i < n; i++) y[i] = x[i];
    return y;
}

static Attention spec_attention(const AttnSpec* s) {
    Attention a = {attention_kind(KIND_NAMES[s->kind]), s->causal, s->B, s->L, s->S, s->H, s->D, s->M,
                   s->H * s->D, s->H * s->D, s->H * s->M, (real)s->clamp};
    return a;
}

// Outputs and gradients of the float32 kernels, widened to double.
typedef struct { double *out, *dq, *dk, *dv; } Result;

static Result run_f32(const Case* c) {
    Attention a = spec_attention(&c->s);
    float *q = to_f32(c->q, c->nq), *k = to_f32(c->k, c->nk), *v = to_f32(c->v, c->nv), *dout = to_f32(c->dout, c->no);
    float *out = (float*)calloc_check(c->no, sizeof(float)), *cache = (float*)calloc_check(attention_cache_size(&a), sizeof(float));
    float *dq = (float*)calloc_check(c->nq, sizeof(float)), *dk = (float*)calloc_check(c->nk, sizeof(float));
    float* dv = (float*)calloc_check(c->nv, sizeof(float));
    attention_forward(&a, out, cache, q, k, v);
    attention_backward(&a, dq, dk, dv, dout, out, cache, q, k, v);
    Result r = {to_f64(out, c->no), to_f64(dq, c->nq), to_f64(dk, c->nk), to_f64(dv, c->nv)};
    free(q); free(k); free(v); free(dout); free(out); free(cache); free(dq); free(dk); free(dv);
    return r;
}

static Result run_f64(const Case* c) {
    double *cache = dalloc(attn64_cache_size(&c->s));
    Result r = {dalloc(c->no), dalloc(c->nq), dalloc(c->nk), dalloc(c->nv)};
    attn64_forward(&c->s, r.out, cache, c->q, c->k, c->v);
    attn64_backward(&c->s, r.dq, r.dk, r.dv, c->dout, r.out, cache, c->q, c->k, c->v);
    free(cache);
    return r;
}

static void free_result(Result* r) { free(r->out); free(r->dq); free(r->dk); free(r->dv); }

// Compares out, dq, dk, dv of `got` with `want` to `tol`, relative to each array's size.
static void compare(const Case* c, const Result* got, const Result* want, double tol, const char* what) {
    char name[160];
    case_name(&c->s, name, sizeof name);
    double e = fmax(fmax(norm_rel_err(got->out, want->out, c->no), norm_rel_err(got->dq, want->dq, c->nq)),
                    fmax(norm_rel_err(got->dk, want->dk, c->nk), norm_rel_err(got->dv, want->dv, c->nv)));
    check(e < tol, "%s: %s, out/dq/dk/dv rel err %.1e", name, what, e);
}

static void check_f32(const Case* c) {
    Result r32 = run_f32(c), r64 = run_f64(c);
    compare(c, &r32, &r64, 1e-4, "float32 vs float64");
    free_result(&r32); free_result(&r64);
}

// Share of the conserved sources Oc that the clamp bound cut, from a float64 run.
static double clamped_share(const Case* c) {
    Attention a = spec_attention(&c->s);
    float *q = to_f32(c->q, c->nq), *k = to_f32(c->k, c->nk), *v = to_f32(c->v, c->nv);
    float *out = (float*)calloc_check(c->no, sizeof(float)), *cache = (float*)calloc_check(attention_cache_size(&a), sizeof(float));
    attention_forward(&a, out, cache, q, k, v);
    size_t per_head = flow_cache_per_head(a.L, a.S), clamped = 0, total = 0;
    for (int bh = 0; bh < a.B * a.H; bh++) {
        const float* raw = a.causal ? cache + bh * per_head + FC_RAW * a.L
                                    : flow_normal_cache(cache + bh * per_head, a.L, a.S, FN_RAW);
        for (int j = 0; j < a.S; j++, total++) clamped += fabsf(raw[j]) > a.clamp;
    }
    free(q); free(k); free(v); free(out); free(cache);
    return (double)clamped / total;
}

// ---- PyTorch autograd reference ---------------------------------------------

// dev/ref/attention_<name>.bin: int32 kind, causal, B, L, S, H, D, M; float64 clamp;
// then float64 q, k, v, dout, out, dq, dk, dv.
static void check_reference(const char* path) {
    FILE* f = fopen(path, "rb");
    if (f == NULL) { check(0, "reference %s: cannot open (run dev/attention_reference.py)", path); return; }
    int hdr[8];
    double clamp;
    fread_check(hdr, sizeof(int), 8, f, path);
    fread_check(&clamp, sizeof(double), 1, f, path);
    AttnSpec s = {hdr[0], hdr[1], hdr[2], hdr[3], hdr[4], hdr[5], hdr[6], hdr[7], clamp};
    Case c = make_case(s, 1.0);
    Result want = {dalloc(c.no), dalloc(c.nq), dalloc(c.nk), dalloc(c.nv)};
    fread_check(c.q, sizeof(double), c.nq, f, path);
    fread_check(c.k, sizeof(double), c.nk, f, path);
    fread_check(c.v, sizeof(double), c.nv, f, path);
    fread_check(c.dout, sizeof(double), c.no, f, path);
    fread_check(want.out, sizeof(double), c.no, f, path);
    fread_check(want.dq, sizeof(double), c.nq, f, path);
    fread_check(want.dk, sizeof(double), c.nk, f, path);
    fread_check(want.dv, sizeof(double), c.nv, f, path);
    fclose(f);
    Result r64 = run_f64(&c), r32 = run_f32(&c);
    compare(&c, &r64, &want, 1e-9, "float64 kernel vs PyTorch autograd");
    compare(&c, &r32, &want, 1e-4, "float32 kernel vs PyTorch autograd");
    free_result(&r64); free_result(&r32); free_result(&want); free_case(&c);
}

// ---- fused qkv, accumulation, recurrent form --------------------------------

// Passing q, k, v inside one (B,T,3C) buffer gives the same numbers as three
// contiguous buffers, and a second backward call adds the same gradients again.
static void check_fused_and_accumulate(int kind, int causal) {
    int B = 2, T = 70, H = 2, D = 8, C = H * D;
    Attention a = attention_make(attention_kind(KIND_NAMES[kind]), causal, B, T, H, D);
    size_t n = (size_t)B * T * C;
    float *qkv = (float*)calloc_check(3 * n, sizeof(float)), *dqkv = (float*)calloc_check(3 * n, sizeof(float));
    float *q = (float*)malloc_check(n * sizeof(float)), *k = (float*)malloc_check(n * sizeof(float));
    float *v = (float*)malloc_check(n * sizeof(float)), *dout = (float*)malloc_check(n * sizeof(float));
    for (size_t r = 0; r < (size_t)B * T; r++) {
        for (int i = 0; i < C; i++) {
            q[r * C + i] = qkv[r * 3 * C + i] = (float)randsym();
            k[r * C + i] = qkv[r * 3 * C + C + i] = (float)randsym();
            v[r * C + i] = qkv[r * 3 * C + 2 * C + i] = (float)randsym();
        }
    }
    for (size_t i = 0; i < n; i++) dout[i] = (float)randsym();
    float *out = (float*)calloc_check(n, sizeof(float)), *cache = (float*)calloc_check(attention_cache_size(&a), sizeof(float));
    float *dq = (float*)calloc_check(n, sizeof(float)), *dk = (float*)calloc_check(n, sizeof(float));
    float* dv = (float*)calloc_check(n, sizeof(float));
    attention_forward(&a, out, cache, q, k, v);
    attention_backward(&a, dq, dk, dv, dout, out, cache, q, k, v);

    Attention fused = a;
    fused.q_stride = fused.k_stride = fused.v_stride = 3 * C;
    float *out2 = (float*)calloc_check(n, sizeof(float)), *cache2 = (float*)calloc_check(attention_cache_size(&a), sizeof(float));
    attention_forward(&fused, out2, cache2, qkv, qkv + C, qkv + 2 * C);
    attention_backward(&fused, dqkv, dqkv + C, dqkv + 2 * C, dout, out2, cache2, qkv, qkv + C, qkv + 2 * C);
    attention_backward(&fused, dqkv, dqkv + C, dqkv + 2 * C, dout, out2, cache2, qkv, qkv + C, qkv + 2 * C);
    int same = memcmp(out, out2, n * sizeof(float)) == 0;
    double worst = 0;
    for (size_t r = 0; r < (size_t)B * T; r++) {
        for (int i = 0; i < C; i++) {
            worst = fmax(worst, fabs(dqkv[r * 3 * C + i] - 2 * dq[r * C + i]));
            worst = fmax(worst, fabs(dqkv[r * 3 * C + C + i] - 2 * dk[r * C + i]));
            worst = fmax(worst, fabs(dqkv[r * 3 * C + 2 * C + i] - 2 * dv[r * C + i]));
        }
    }
    check(same && worst == 0, "%s-%s: fused strided qkv gives the same output, two backward calls add up (max diff %g)",
          KIND_NAMES[kind], causal ? "causal" : "normal", worst);
    free(qkv); free(dqkv); free(q); free(k); free(v); free(dout); free(out); free(cache);
    free(dq); free(dk); free(dv); free(out2); free(cache2);
}

// The recurrent form, one position at a time, gives the parallel forward's output.
static void check_recurrent(int kind, double clamp, int B, int T, int H) {
    AttnSpec s = {kind, 1, B, T, T, H, 8, 6, clamp};
    Case c = make_case(s, 2.0);
    double *out = dalloc(c.no), *cache = dalloc(attn64_cache_size(&s)), *step = dalloc(c.no);
    attn64_forward(&s, out, cache, c.q, c.k, c.v);
    size_t state_size = attn64_state_size(&s, s.L);
    double* state = dalloc(state_size);
    for (int b = 0; b < s.B; b++) {
        for (int h = 0; h < s.H; h++) {
            memset(state, 0, state_size * sizeof(double));
            for (int t = 0; t < s.L; t++) {
                size_t row = (size_t)b * s.L + t;
                attn64_step(&s, state, t, step + row * s.H * s.M + h * s.M, c.q + row * s.H * s.D + h * s.D,
                            c.k + row * s.H * s.D + h * s.D, c.v + row * s.H * s.M + h * s.M);
            }
        }
    }
    double e = norm_rel_err(step, out, c.no);
    check(e < 1e-10, "%s-causal c=%g: recurrent form vs parallel forward over T=%d, rel err %.1e",
          KIND_NAMES[kind], clamp, s.L, e);
    free(out); free(cache); free(step); free(state); free_case(&c);
}

// ---- bad shapes --------------------------------------------------------------

// Runs fn in a child process; passes when it exits non-zero with `expect` in its message.
static void check_fails(void (*fn)(void*), const char* expect, const char* what) {
    char out[2048];
    int status = run_captured(fn, NULL, out, sizeof out);
    check(status > 0 && strstr(out, expect) != NULL, "bad input, %s: \"%s\"", what, error_line(out));
}

static void heads_not_dividing(void* unused) { attention_head_size(10, 3); }
static void zero_length(void* unused) {
    Attention a = attention_make(attention_kind("flow"), 1, 1, 0, 2, 4);
    attention_forward(&a, NULL, NULL, NULL, NULL, NULL);
}
static void causal_l_ne_s(void* unused) {
    Attention a = attention_make(attention_kind("flow"), 1, 1, 5, 2, 4);
    a.S = 7;
    attention_forward(&a, NULL, NULL, NULL, NULL, NULL);
}

static void step_past_the_end(void* unused) {
    Attention a = attention_make(attention_kind("flow"), 1, 1, 5, 2, 4);
    real state[64] = {0}, out[4], x[4] = {0};
    attention_step(&a, state, 5, out, x, x, x);
}
static void step_not_causal(void* unused) {
    Attention a = attention_make(attention_kind("linear"), 0, 1, 5, 2, 4);
    real state[64] = {0}, out[4], x[4] = {0};
    attention_step(&a, state, 0, out, x, x, x);
}
static void step_bad_clamp(void* unused) {
    Attention a = attention_make(attention_kind("flow"), 1, 1, 5, 2, 4);
    a.clamp = 0;
    real state[64] = {0}, out[4], x[4] = {0};
    attention_step(&a, state, 0, out, x, x, x);
}

int main(void) {
    // Exactness: dense definitions and finite differences, float64.
    for (int kind = 0; kind < NUM_KINDS; kind++) {
        for (int causal = 1; causal >= 0; causal--) {
            AttnSpec small = {kind, causal, 2, 13, 13, 2, 4, 4, 1.0};
            AttnSpec one = {kind, causal, 2, 1, 1, 2, 4, 3, 1.0};
            AttnSpec chunks = {kind, causal, 1, 300, 300, 2, 5, 3, 1.0}; // a partial chunk of 32, 2 segments
            Case c1 = make_case(small, 1.0), c2 = make_case(one, 1.0), c3 = make_case(chunks, 1.0);
            check_f64(&c1, 0); check_f32(&c1);
            check_f64(&c2, 0); check_f32(&c2);
            check_f64(&c3, 40); check_f32(&c3);
            free_case(&c1); free_case(&c2); free_case(&c3);
            if (!causal) {
                AttnSpec cross = {kind, 0, 2, 7, 11, 2, 4, 6, 1.0};
                Case c4 = make_case(cross, 1.0);
                check_f64(&c4, 0); check_f32(&c4);
                free_case(&c4);
            }
        }
    }
    // Causal kernels over several segments, the last chunk and segment partial.
    for (int kind = 0; kind < NUM_KINDS; kind++) {
        AttnSpec segments = {kind, 1, 1, 3 * CDP_SEGMENT + CDP_CHUNK + 9, 3 * CDP_SEGMENT + CDP_CHUNK + 9, 2, 16, 8, 1.0};
        Case c = make_case(segments, 1.0);
        check_f64(&c, 20); check_f32(&c);
        free_case(&c);
    }
    // Flow-Attention inside and outside the conservation clamp.
    for (int causal = 1; causal >= 0; causal--) {
        AttnSpec inside = {KIND_FLOW, causal, 2, 40, causal ? 40 : 29, 2, 6, 5, 5.0};
        AttnSpec outside = {KIND_FLOW, causal, 2, 40, causal ? 40 : 29, 2, 6, 5, 0.3};
        Case ci = make_case(inside, 1.0), co = make_case(outside, 4.0);
        double share_in = clamped_share(&ci), share_out = clamped_share(&co);
        check(share_in == 0, "flow-%s c=5: no conserved source clamped (share %.2f)", causal ? "causal" : "normal", share_in);
        check(share_out > 0.5, "flow-%s c=0.3, inputs x4: most conserved sources clamped (share %.2f)",
              causal ? "causal" : "normal", share_out);
        check_f64(&ci, 0); check_f32(&ci);
        check_f64(&co, 0); check_f32(&co);
        free_case(&ci); free_case(&co);
    }
    // PyTorch autograd, float64.
    const char* refs[] = {"flow_causal", "flow_causal_clamped", "flow_normal", "softmax_causal",
                          "softmax_normal", "linear_causal", "linear_normal"};
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++) {
        char path[256];
        snprintf(path, sizeof path, "dev/ref/attention_%s.bin", refs[i]);
        check_reference(path);
    }
    for (int kind = 0; kind < NUM_KINDS; kind++) {
        check_fused_and_accumulate(kind, 1);
        check_fused_and_accumulate(kind, 0);
    }
    check_recurrent(KIND_FLOW, 1.0, 2, 150, 3);
    check_recurrent(KIND_FLOW, 5.0, 2, 150, 3);
    check_recurrent(KIND_SOFTMAX, 1.0, 2, 150, 3);
    check_recurrent(KIND_LINEAR, 1.0, 2, 150, 3);
    // a cache long enough for the softmax step to split it among the threads
    check_recurrent(KIND_SOFTMAX, 1.0, 1, SM_STEP_SPLIT + 70, 1);
    check_fails(heads_not_dividing, "3 heads do not divide 10 channels", "heads not dividing channels");
    check_fails(zero_length, "L=0", "zero-length sequence");
    check_fails(causal_l_ne_s, "L=5 S=7", "causal with L != S");
    check_fails(step_past_the_end, "position 5 outside [0, 5)", "recurrent step past the sequence");
    check_fails(step_not_causal, "needs causal linear attention", "recurrent step of a bidirectional attention");
    check_fails(step_bad_clamp, "clamp bound must be in (0, 40]", "recurrent step with clamp 0");
    return testing_exit_code();
}
