// Tests of the GPU trainer (train_gpt_flow.cu, built with -DTESTING so that its main()
// is left out) and of its kernels (cuda/) against the CPU trainer's own code
// (dev/test/cuda_cpu.c):
//  - every layer on random inputs, to 1e-5 relative (dropout masks bit for bit)
//  - every attention kind, causal and normal, forward, backward and the recurrent step,
//    at T = 1, 63, 64, 65, 1000 and 4096, to 1e-5 relative to the CPU kernel, or, where
//    float32 cannot promise that, no further than twice the CPU kernel's own distance
//    from the float64 kernels (dev/test/attention_f64.c)
//  - one training update of the default configuration (and of smaller ones with
//    dropout, sinusoidal positions, ReLU, an untied output layer, the other kinds):
//    losses and every gradient to 1e-4; generation's logits; evaluation with a context window
//  - the programs: 50 updates of the default run on the GPU track the CPU's losses,
//    and a checkpoint goes CPU -> GPU -> CPU, each run continuing the others' training.
// It needs a GPU: without one it prints "skipped: no GPU" and checks nothing.
// Under the CPU emulation of CUDA (make test-cuda-emulated) the cases are smaller.
#include <unistd.h>
#include "train_gpt_flow.cu"
#include "dev/test/testing.h"
#include "dev/test/capture.h"
#include "dev/test/cuda_cpu.h"
#include "utils/token_shard.h"
extern "C" {
#include "dev/test/attention_f64.h"
}

#ifdef CUDA_EMULATED
// The emulator runs a kernel thousands of times slower than a GPU: smaller cases, the same checks.
static const int ATTENTION_T[] = {1, 63, 64, 65, 200};
static const int DEFAULT_B = 2, UPDATES = 8;
#define GPU_TRAINER "build/emulated/train_gpt_flow_cuda"
#define GPU_TRAINER_MPI "build/emulated/mpi/train_gpt_flow_cuda"
#define PROGRAM_SIZES "--n_layer 2 --n_embd 32 --context 32 --batch_size 4 "
#else
static const int ATTENTION_T[] = {1, 63, 64, 65, 1000, 4096};
static const int DEFAULT_B = 12, UPDATES = 50;  // the default run's batch
#define GPU_TRAINER "./train_gpt_flow_cuda"
#define GPU_TRAINER_MPI "build/mpi/train_gpt_flow_cuda"
#define PROGRAM_SIZES ""
#endif
#define CPU_TRAINER "./train_gpt_flow"

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rand64(void) {  // xorshift64
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static float randsym(void) { return (float)((rand64() >> 11) * (2.0 / 9007199254740992.0) - 1.0); }  // in [-1, 1)

static float* random_floats(size_t n, float scale) {
    float* x = (float*)malloc_check(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = scale * randsym();
    return x;
}

static float* copy_floats(const float* x, size_t n) {
    float* y = (float*)malloc_check(n * sizeof(float));
    memcpy(y, x, n * sizeof(float));
    return y;
}

// A device copy of n host floats.
static float* on_device(const float* x, size_t n) {
    float* d = cuda_floats(n, "a test array");
    to_device(d, x, n * sizeof(float));
    return d;
}

static int* ints_on_device(const int* x, size_t n) {
    int* d;
    CUDA_CHECK(cudaMalloc(&d, n * sizeof(int)));
    to_device(d, x, n * sizeof(int));
    return d;
}

// The n floats of device array d, in a host array (malloc'd).
static float* from_device(const float* d, size_t n) {
    float* x = (float*)malloc_check(n * sizeof(float));
    to_host(x, d, n * sizeof(float));
    return x;
}

// max |a - b| / max(max |b|, floor): the error relative to the size of the reference b.
static double rel_err(const float* a, const float* b, size_t n, double floor) {
    double diff = 0, ref = floor;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (!(e <= diff)) diff = e;  // also catches NaN
        if (fabs((double)b[i]) > ref) ref = fabs((double)b[i]);
    }
    return diff / ref;
}

// Compares device array d with the CPU's result ref (n floats) to tol; returns the error.
static double compare(const char* what, const float* d, const float* ref, size_t n, double tol) {
    float* x = from_device(d, n);
    double e = rel_err(x, ref, n, 1e-6);
    check(e <= tol, "%s: rel err %.1e (tolerance %.0e)", what, e, tol);
    free(x);
    return e;
}

// ----------------------------------------------------------------------------
// Layers

static void test_encoder(void) {
    const int B = 3, T = 17, C = 48, V = 11;
    int inp[B * T];
    for (int i = 0; i < B * T; i++) inp[i] = (int)((i * 7 + i / 5) % V);  // repeated ids
    float *wte = random_floats((size_t)V * C, 1), *pos = random_floats((size_t)T * C, 1);
    float *out = random_floats((size_t)B * T * C, 1), *dout = random_floats((size_t)B * T * C, 1);
    float *dwte = random_floats((size_t)V * C, 1), *dpos = random_floats((size_t)T * C, 1);
    float *d_wte = on_device(wte, (size_t)V * C), *d_pos = on_device(pos, (size_t)T * C);
    float *d_out = on_device(out, (size_t)B * T * C), *d_dout = on_device(dout, (size_t)B * T * C);
    float *d_dwte = on_device(dwte, (size_t)V * C), *d_dpos = on_device(dpos, (size_t)T * C);
    int* d_inp = ints_on_device(inp, B * T);
    cpu_encoder_forward(out, inp, wte, pos, 2.5f, B, T, C);
    encoder_forward(d_out, d_inp, d_wte, d_pos, 2.5f, B, T, C);
    compare("encoder forward", d_out, out, (size_t)B * T * C, 1e-5);
    cpu_encoder_backward(dwte, dpos, dout, inp, 2.5f, B, T, C);
    EncoderIndex index;
    memset(&index, 0, sizeof index);
    encoder_index_build(&index, inp, B * T);
    encoder_backward(d_dwte, d_dpos, d_dout, &index, 2.5f, B, T, C);
    compare("encoder backward, token embedding", d_dwte, dwte, (size_t)V * C, 1e-5);
    compare("encoder backward, positions", d_dpos, dpos, (size_t)T * C, 1e-5);
    float *table = (float*)malloc_check((size_t)T * 50 * sizeof(float));
    float* ref = (float*)malloc_check((size_t)T * 50 * sizeof(float));
    sinusoid_table(table, T, 50);
    cpu_sinusoid_table(ref, T, 50);
    check(memcmp(table, ref, (size_t)T * 50 * sizeof(float)) == 0, "sinusoids: the same table bit for bit");
    encoder_index_free(&index);
    free(table); free(ref); free(wte); free(pos); free(out); free(dout); free(dwte); free(dpos);
    cudaFree(d_wte); cudaFree(d_pos); cudaFree(d_out); cudaFree(d_dout); cudaFree(d_dwte); cudaFree(d_dpos);
    cudaFree(d_inp);
}

static void test_layernorm(void) {
    const int N = 37, C = 100;
    size_t n = (size_t)N * C;
    float *x1 = random_floats(n, 2), *x2 = random_floats(n, 1), *w = random_floats(C, 1), *b = random_floats(C, 1);
    float *out = random_floats(n, 1), *res = random_floats(n, 1), *mean = random_floats(N, 1);
    float *rstd = random_floats(N, 1), *dout = random_floats(n, 1), *dinp = random_floats(n, 1);
    float *dw = random_floats(C, 1), *db = random_floats(C, 1);
    float *d_x1 = on_device(x1, n), *d_x2 = on_device(x2, n), *d_w = on_device(w, C), *d_b = on_device(b, C);
    float *d_out = on_device(out, n), *d_res = on_device(res, n), *d_mean = on_device(mean, N);
    float *d_rstd = on_device(rstd, N), *d_dout = on_device(dout, n), *d_dinp = on_device(dinp, n);
    float *d_dw = on_device(dw, C), *d_db = on_device(db, C);
    cpu_layernorm_forward(out, mean, rstd, x1, w, b, N, C);
    layernorm_forward(d_out, d_mean, d_rstd, d_x1, d_w, d_b, N, C, LAYERNORM_EPS);
    compare("layernorm forward", d_out, out, n, 1e-5);
    compare("layernorm forward, means", d_mean, mean, N, 1e-5);
    compare("layernorm forward, 1/std", d_rstd, rstd, N, 1e-5);
    cpu_layernorm_backward(dinp, dw, db, dout, x1, w, mean, rstd, N, C);
    layernorm_backward(d_dinp, d_dw, d_db, d_dout, d_x1, d_w, d_mean, d_rstd, N, C);
    compare("layernorm backward, input (accumulated)", d_dinp, dinp, n, 1e-5);
    compare("layernorm backward, weight", d_dw, dw, C, 1e-5);
    compare("layernorm backward, bias", d_db, db, C, 1e-5);
    cpu_residual_layernorm_forward(res, out, mean, rstd, x1, x2, w, b, N, C);
    residual_layernorm_forward(d_res, d_out, d_mean, d_rstd, d_x1, d_x2, d_w, d_b, N, C, LAYERNORM_EPS);
    compare("residual + layernorm forward, sum", d_res, res, n, 1e-5);
    compare("residual + layernorm forward, normalised", d_out, out, n, 1e-5);
    // in place, the stream updated as the trainer's residual stream is
    cpu_residual_layernorm_forward(x1, out, mean, rstd, x1, x2, w, b, N, C);
    residual_layernorm_forward(d_x1, d_out, d_mean, d_rstd, d_x1, d_x2, d_w, d_b, N, C, LAYERNORM_EPS);
    compare("residual + layernorm forward in place", d_out, out, n, 1e-5);
    free(x1); free(x2); free(w); free(b); free(out); free(res); free(mean); free(rstd); free(dout); free(dinp);
    free(dw); free(db);
    cudaFree(d_x1); cudaFree(d_x2); cudaFree(d_w); cudaFree(d_b); cudaFree(d_out); cudaFree(d_res);
    cudaFree(d_mean); cudaFree(d_rstd); cudaFree(d_dout); cudaFree(d_dinp); cudaFree(d_dw); cudaFree(d_db);
}

static void test_matmul(void) {
    const int N = 45, C = 70, OC = 33;
    float *inp = random_floats((size_t)N * C, 1), *w = random_floats((size_t)OC * C, 1), *b = random_floats(OC, 1);
    float *out = random_floats((size_t)N * OC, 1), *dout = random_floats((size_t)N * OC, 1);
    float *dinp = random_floats((size_t)N * C, 1), *dw = random_floats((size_t)OC * C, 1), *db = random_floats(OC, 1);
    float *d_inp = on_device(inp, (size_t)N * C), *d_w = on_device(w, (size_t)OC * C), *d_b = on_device(b, OC);
    float *d_out = on_device(out, (size_t)N * OC), *d_dout = on_device(dout, (size_t)N * OC);
    float *d_dinp = on_device(dinp, (size_t)N * C), *d_dw = on_device(dw, (size_t)OC * C), *d_db = on_device(db, OC);
    cpu_matmul_forward(out, inp, w, b, N, C, OC);
    matmul_forward(d_out, d_inp, d_w, d_b, N, C, OC);
    compare("matmul forward with bias", d_out, out, (size_t)N * OC, 1e-5);
    cpu_matmul_forward(out, inp, w, NULL, N, C, OC);
    matmul_forward(d_out, d_inp, d_w, NULL, N, C, OC);
    compare("matmul forward without bias", d_out, out, (size_t)N * OC, 1e-5);
    cpu_matmul_backward(dinp, dw, db, dout, inp, w, N, C, OC);
    matmul_backward(d_dinp, d_dw, d_db, d_dout, d_inp, d_w, N, C, OC);
    compare("matmul backward, input (accumulated)", d_dinp, dinp, (size_t)N * C, 1e-5);
    compare("matmul backward, weight (accumulated)", d_dw, dw, (size_t)OC * C, 1e-5);
    compare("matmul backward, bias (accumulated)", d_db, db, OC, 1e-5);
    free(inp); free(w); free(b); free(out); free(dout); free(dinp); free(dw); free(db);
    cudaFree(d_inp); cudaFree(d_w); cudaFree(d_b); cudaFree(d_out); cudaFree(d_dout); cudaFree(d_dinp);
    cudaFree(d_dw); cudaFree(d_db);
}

static void test_elementwise(void) {
    const int N = 29, C = 111;
    size_t n = (size_t)N * C;
    float *x = random_floats(n, 4), *y = random_floats(n, 1), *bias = random_floats(C, 1), *dout = random_floats(n, 1);
    float *out = random_floats(n, 1), *dinp = random_floats(n, 1), *dbias = random_floats(C, 1);
    float *d_x = on_device(x, n), *d_y = on_device(y, n), *d_bias = on_device(bias, C), *d_dout = on_device(dout, n);
    float *d_out = on_device(out, n), *d_dinp = on_device(dinp, n), *d_dbias = on_device(dbias, C);
    cpu_gelu_forward(out, x, (long)n);
    gelu_forward(d_out, d_x, (long)n);
    compare("gelu forward", d_out, out, n, 1e-5);
    cpu_bias_gelu_forward(out, x, bias, N, C);
    bias_gelu_forward(d_out, d_x, d_bias, N, C);
    compare("bias + gelu forward", d_out, out, n, 1e-5);
    cpu_bias_gelu_backward(dinp, dbias, dout, x, bias, N, C);
    bias_gelu_backward(d_dinp, d_dbias, d_dout, d_x, d_bias, N, C);
    compare("bias + gelu backward, input", d_dinp, dinp, n, 1e-5);
    compare("bias + gelu backward, bias (accumulated)", d_dbias, dbias, C, 1e-5);
    cpu_relu_forward(out, x, (long)n);
    relu_forward(d_out, d_x, (long)n);
    compare("relu forward", d_out, out, n, 1e-5);
    cpu_relu_backward(dinp, x, dout, (long)n);
    relu_backward(d_dinp, d_x, d_dout, (long)n);
    compare("relu backward (accumulated)", d_dinp, dinp, n, 1e-5);
    cpu_residual_forward(out, x, y, (long)n);
    residual_forward(d_out, d_x, d_y, (long)n);
    compare("residual forward", d_out, out, n, 1e-5);
    // dropout: the same masks, so the same numbers
    cpu_dropout_forward(out, x, (long)n, 0.3f, 12345);
    dropout_forward(d_out, d_x, (long)n, 0.3f, 12345);
    float* got = from_device(d_out, n);
    check(memcmp(got, out, n * sizeof(float)) == 0, "dropout forward: the CPU's mask and scaling, bit for bit");
    cpu_dropout_backward(dinp, dout, (long)n, 0.3f, dropout_key_from(777, 5));
    dropout_backward(d_dinp, d_dout, (long)n, 0.3f, dropout_key_from(777, 5));
    compare("dropout backward (accumulated)", d_dinp, dinp, n, 1e-6);
    free(got); free(x); free(y); free(bias); free(dout); free(out); free(dinp); free(dbias);
    cudaFree(d_x); cudaFree(d_y); cudaFree(d_bias); cudaFree(d_dout); cudaFree(d_out); cudaFree(d_dinp);
    cudaFree(d_dbias);
}

static void test_crossentropy(int V) {
    const int N = 13;
    size_t n = (size_t)N * V;
    int targets[N];
    for (int i = 0; i < N; i++) targets[i] = i % 4 == 2 ? -1 : (int)((i * 7919) % V);  // some rows not scored
    float *logits = random_floats(n, 8), *losses = random_floats(N, 1);
    float *d_logits = on_device(logits, n), *d_losses = on_device(losses, N);
    int* d_targets = ints_on_device(targets, N);
    cpu_crossentropy_forward(losses, logits, targets, N, V);
    crossentropy_forward(d_losses, d_logits, d_targets, N, V);
    char name[96];
    snprintf(name, sizeof name, "cross-entropy forward, V=%d", V);
    compare(name, d_losses, losses, N, 1e-5);
    cpu_crossentropy_forward_backward(losses, logits, targets, 0.25f, N, V);
    crossentropy_forward_backward(d_losses, d_logits, d_targets, 0.25f, N, V);
    snprintf(name, sizeof name, "cross-entropy forward+backward, V=%d: losses", V);
    compare(name, d_losses, losses, N, 1e-5);
    snprintf(name, sizeof name, "cross-entropy forward+backward, V=%d: logits' gradient", V);
    compare(name, d_logits, logits, n, 1e-5);
    free(logits); free(losses);
    cudaFree(d_logits); cudaFree(d_losses); cudaFree(d_targets);
}

// AdamW and the clipped norm over a two-tensor table, one decayed, one not.
static void test_adamw(void) {
    Parameters P;
    memset(&P, 0, sizeof P);
    float *a = NULL, *ga = NULL, *b = NULL, *gb = NULL;
    PARAM(&P, "a", &a, &ga, INIT_NORMAL, 1.0, 1, 300, 7);
    PARAM(&P, "b", &b, &gb, INIT_ZERO, 0, 0, 55);
    size_t n = (size_t)P.count;
    float *params = random_floats(n, 1), *grads = random_floats(n, 3), *m = random_floats(n, 0.1f);
    float* v = random_floats(n, 0.1f);
    for (size_t i = 0; i < n; i++) v[i] = v[i] * v[i];
    float *d_params = on_device(params, n), *d_grads = on_device(grads, n), *d_m = on_device(m, n);
    float* d_v = on_device(v, n);
    AdamW opt = {0.9, 0.98, 1e-8, 0.1, 1.0};
    double norm = adamw_step(&P, d_params, d_grads, d_m, d_v, &opt, 1e-2, 1.0, 7);
    double cpu_norm = cpu_grad_norm(grads, (long)n);
    float scale = norm > 1.0 ? (float)(1.0 / (cpu_norm + 1e-6)) : 1.0f;
    for (int i = 0; i < P.ntensors; i++) {
        const TensorInfo* t = &P.tensors[i];
        cpu_adamw_update_scaled(params + t->offset, grads + t->offset, m + t->offset, v + t->offset, t->size, 1e-2f,
                                0.9f, 0.98f, 1e-8f, t->decay ? 0.1f : 0.0f, 7, scale);
    }
    check(fabs(norm - cpu_norm) <= 1e-6 * cpu_norm, "gradient norm %.6f vs the CPU's %.6f", norm, cpu_norm);
    compare("adamw with clipping: parameters", d_params, params, n, 1e-5);
    compare("adamw with clipping: first moments", d_m, m, n, 1e-5);
    compare("adamw with clipping: second moments", d_v, v, n, 1e-5);
    params_free(&P);
    free(params); free(grads); free(m); free(v);
    cudaFree(d_params); cudaFree(d_grads); cudaFree(d_m); cudaFree(d_v);
}

// ----------------------------------------------------------------------------
// Attention

typedef struct {
    const char* kind;
    int causal, B, L, S, H, D, M;
    float clamp, scale;  // the clamp bound, the size of q and k (large: the clamp cuts in)
} AttnCase;

static double* to_f64(const float* x, size_t n) {
    double* y = (double*)malloc_check(n * sizeof(double));
    for (size_t i = 0; i < n; i++) y[i] = x[i];
    return y;
}

// The attention checks measure errors relative to the largest |value|, or to ATTN_FLOOR
// where every value is smaller: at T = 1 some gradients vanish (softmax over one key
// gives v whatever q and k), and what is left of them is float32 rounding.
#define ATTN_FLOOR 1e-2

// max |a - ref| / max(max |ref|, ATTN_FLOOR), a in float, ref in float64
static double err64(const float* a, const double* ref, size_t n) {
    double diff = 0, scale = ATTN_FLOOR;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - ref[i]);
        if (!(e <= diff)) diff = e;
        if (fabs(ref[i]) > scale) scale = fabs(ref[i]);
    }
    return diff / scale;
}

// Passes when the GPU's result is within 1e-5 of the CPU's, or no further from the
// float64 kernel's than twice the CPU's own distance (long sums in float32 may leave
// both 1e-5 apart while each is as good as float32 allows).
static void attention_verdict(const char* name, const char* what, const float* gpu, const float* cpu,
                              const double* f64, size_t n) {
    double e = rel_err(gpu, cpu, n, ATTN_FLOOR), e_gpu = err64(gpu, f64, n), e_cpu = err64(cpu, f64, n);
    check(e <= 1e-5 || e_gpu <= 2 * e_cpu, "%s: %s rel err %.1e to the CPU kernel; to float64: GPU %.1e, CPU %.1e",
          name, what, e, e_gpu, e_cpu);
}

static void test_attention(AttnCase c) {
    int B = c.B, L = c.L, S = c.S, H = c.H, D = c.D, M = c.M;
    size_t nq = (size_t)B * L * H * D, nk = (size_t)B * S * H * D;
    size_t nv = (size_t)B * S * H * M, no = (size_t)B * L * H * M;
    // a fused (B, T, 3HD) qkv buffer as the trainer's, when the sizes allow; else three
    int fused = L == S && D == M, stride = fused ? 3 * H * D : 0;
    float *q = random_floats(nq, c.scale), *k = random_floats(nk, c.scale), *v = random_floats(nv, 1);
    float* dout = random_floats(no, 1);
    float* qkv = NULL;
    if (fused) {  // row t of qkv is q_t, k_t, v_t
        qkv = (float*)malloc_check((size_t)B * L * stride * sizeof(float));
        for (long r = 0; r < (long)B * L; r++) {
            memcpy(qkv + r * stride, q + r * H * D, (size_t)H * D * sizeof(float));
            memcpy(qkv + r * stride + H * D, k + r * H * D, (size_t)H * D * sizeof(float));
            memcpy(qkv + r * stride + 2 * H * D, v + r * H * M, (size_t)H * M * sizeof(float));
        }
    }
    size_t n_in = fused ? (size_t)B * L * stride : nq + nk + nv;
    float* in = fused ? qkv : (float*)malloc_check(n_in * sizeof(float));
    if (!fused) {
        memcpy(in, q, nq * sizeof(float));
        memcpy(in + nq, k, nk * sizeof(float));
        memcpy(in + nq + nk, v, nv * sizeof(float));
    }
    const float *qi = in, *ki = fused ? in + H * D : in + nq, *vi = fused ? in + 2 * H * D : in + nq + nk;
    CpuAttention ca = {c.kind, c.causal, B, L, S, H, D, M, fused ? stride : H * D, fused ? stride : H * D,
                       fused ? stride : H * M, c.clamp};
    float* grads0 = random_floats(n_in, 1);  // the gradients accumulate onto these
    float *out = (float*)malloc_check(no * 4), *cache = (float*)malloc_check(cpu_attention_cache_size(&ca) * 4);
    float* grads = copy_floats(grads0, n_in);
    cpu_attention_forward(&ca, out, cache, qi, ki, vi);
    cpu_attention_backward(&ca, grads, grads + (ki - in), grads + (vi - in), dout, out, cache, qi, ki, vi);

    Attention a = {attention_kind_or_fail(c.kind), c.causal, B, L, S, H, D, M, ca.q_stride, ca.k_stride,
                   ca.v_stride, c.clamp};
    float *d_in = on_device(in, n_in), *d_grads = on_device(grads0, n_in), *d_dout = on_device(dout, no);
    float *d_out = cuda_floats(no, "out"), *d_cache = cuda_floats(attention_cache_size(&a), "cache");
    float* d_scratch = cuda_floats(attention_scratch_size(&a), "scratch");
    attention_forward(&a, d_out, d_cache, d_in, d_in + (ki - in), d_in + (vi - in), d_scratch);
    attention_backward(&a, d_grads, d_grads + (ki - in), d_grads + (vi - in), d_dout, d_out, d_cache, d_in,
                       d_in + (ki - in), d_in + (vi - in), d_scratch);
    float *g_out = from_device(d_out, no), *g_grads = from_device(d_grads, n_in);

    // the float64 kernels on contiguous copies, and every result in contiguous layout
    AttnSpec spec = {!strcmp(c.kind, "flow") ? KIND_FLOW : !strcmp(c.kind, "softmax") ? KIND_SOFTMAX : KIND_LINEAR,
                     c.causal, B, L, S, H, D, M, c.clamp};
    double *q64 = to_f64(q, nq), *k64 = to_f64(k, nk), *v64 = to_f64(v, nv), *dout64 = to_f64(dout, no);
    double *out64 = (double*)calloc_check(no, 8), *cache64 = (double*)calloc_check(attn64_cache_size(&spec), 8);
    double* d64 = (double*)calloc_check(nq + nk + nv, 8);
    attn64_forward(&spec, out64, cache64, q64, k64, v64);
    attn64_backward(&spec, d64, d64 + nq, d64 + nq + nk, dout64, out64, cache64, q64, k64, v64);
    // the gradients, less what they started from, in the layout of d64
    float *g_cpu = (float*)malloc_check((nq + nk + nv) * 4), *g_gpu = (float*)malloc_check((nq + nk + nv) * 4);
    for (size_t i = 0; i < nq + nk + nv; i++) {
        size_t at = i;
        if (fused) {
            int part = i < nq ? 0 : (i < nq + nk ? 1 : 2);
            size_t j = i - (part == 0 ? 0 : part == 1 ? nq : nq + nk);
            size_t width = part == 2 ? (size_t)H * M : (size_t)H * D;
            at = j / width * stride + (size_t)part * H * D + j % width;
        }
        g_cpu[i] = grads[at] - grads0[at];
        g_gpu[i] = g_grads[at] - grads0[at];
    }
    char name[160];
    snprintf(name, sizeof name, "%s-%s B=%d L=%d S=%d H=%d D=%d M=%d c=%g", c.kind, c.causal ? "causal" : "normal",
             B, L, S, H, D, M, c.clamp);
    attention_verdict(name, "out", g_out, out, out64, no);
    attention_verdict(name, "dq", g_gpu, g_cpu, d64, nq);
    attention_verdict(name, "dk", g_gpu + nq, g_cpu + nq, d64 + nq, nk);
    attention_verdict(name, "dv", g_gpu + nq + nk, g_cpu + nq + nk, d64 + nq + nk, nv);
    free(q); free(k); free(v); free(dout); free(in); free(grads0); free(out); free(cache); free(grads);
    free(g_out); free(g_grads); free(q64); free(k64); free(v64); free(dout64); free(out64); free(cache64); free(d64);
    free(g_cpu); free(g_gpu);
    cudaFree(d_in); cudaFree(d_grads); cudaFree(d_dout); cudaFree(d_out); cudaFree(d_cache); cudaFree(d_scratch);
}

// The recurrent step of every head, position by position, against the CPU's step per head.
static void test_attention_step(const char* kind) {
    const int T = 70, H = 3, D = 32;
    float *q = random_floats((size_t)T * H * D, 2), *k = random_floats((size_t)T * H * D, 2);
    float* v = random_floats((size_t)T * H * D, 1);
    CpuAttention ca = {kind, 1, 1, T, T, H, D, D, H * D, H * D, H * D, 1.0f};
    Attention a = attention_make(attention_kind_or_fail(kind), 1, 1, T, H, D);
    size_t state = cpu_attention_state_size(&ca, T);
    float *states = (float*)calloc_check((size_t)H * state, 4), *out = (float*)malloc_check((size_t)T * H * D * 4);
    float* d_states = cuda_floats((size_t)H * attention_state_size(&a, T), "states");
    CUDA_CHECK(cudaMemset(d_states, 0, (size_t)H * attention_state_size(&a, T) * 4));
    float *d_q = on_device(q, (size_t)T * H * D), *d_k = on_device(k, (size_t)T * H * D);
    float *d_v = on_device(v, (size_t)T * H * D), *d_out = cuda_floats((size_t)T * H * D, "out");
    for (int t = 0; t < T; t++) {
        size_t at = (size_t)t * H * D;
        for (int h = 0; h < H; h++)
            cpu_attention_step(&ca, states + h * state, t, out + at + h * D, q + at + h * D, k + at + h * D,
                               v + at + h * D);
        attention_step(&a, d_states, t, d_out + at, d_q + at, d_k + at, d_v + at);
    }
    char name[96];
    snprintf(name, sizeof name, "%s recurrent step, %d positions of %d heads", kind, T, H);
    compare(name, d_out, out, (size_t)T * H * D, 1e-5);
    free(q); free(k); free(v); free(states); free(out);
    cudaFree(d_states); cudaFree(d_q); cudaFree(d_k); cudaFree(d_v); cudaFree(d_out);
}

static void test_attention_kernels(void) {
    const char* kinds[] = {"flow", "softmax", "linear"};
    int nT = (int)(sizeof ATTENTION_T / sizeof ATTENTION_T[0]);
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < nT; j++) {
            int T = ATTENTION_T[j], B = T >= 1000 ? 1 : 2;
            test_attention(AttnCase{kinds[i], 1, B, T, T, 2, 64, 64, 1.0f, 1.0f});
            test_attention(AttnCase{kinds[i], 0, B, T, T, 2, 64, 64, 1.0f, 1.0f});
        }
        // queries and keys of different lengths, heads of other sizes
        test_attention(AttnCase{kinds[i], 0, 2, 50, 77, 3, 16, 24, 1.0f, 1.0f});
        test_attention(AttnCase{kinds[i], 0, 1, 130, 9, 2, 8, 8, 1.0f, 1.0f});
        test_attention(AttnCase{kinds[i], 1, 3, 100, 100, 4, 32, 32, 1.0f, 1.0f});
        test_attention_step(kinds[i]);
    }
    // inside and outside the clamp region
    test_attention(AttnCase{"flow", 1, 2, 150, 150, 2, 64, 64, 5.0f, 1.0f});
    test_attention(AttnCase{"flow", 1, 2, 150, 150, 2, 16, 16, 0.05f, 3.0f});
    test_attention(AttnCase{"flow", 0, 2, 90, 90, 2, 16, 16, 0.05f, 3.0f});
}

// ----------------------------------------------------------------------------
// The model

// The default run's model (configs/gpt_shakespeare.json), and variations.
static GPTConfig default_model(void) {
    GPTConfig c = {65, 64, 4, 4, 128, 512, "flow", 1.0f, 1, 1, 0, 1.0f, 0, 0, 0, 0, 0.02, 1};
    return c;
}

// One update: the CPU's and the GPU's model from the same seed, the same batch; the
// loss, every gradient, and the loss after an AdamW step compared. logit_rows > 0: the
// output layer takes that many rows at a time (else as many as fit in LOGITS_MAX).
static void test_update(const char* name, GPTConfig c, int B, int T, float dropout, int logit_rows) {
    c.p_embd = c.p_attn = c.p_hidden = c.p_resid = dropout;
    CpuGPT* cpu = cpu_gpt_new(&c, 1337);
    GPT gpu;
    gpt_build(&gpu, &c);
    Rng rng = rng_make(1337);
    params_init(&gpu.params, &rng);
    gpt_to_device(&gpu);
    gpt_allocate(&gpu, B, T);
    if (logit_rows > 0) gpu.logit_rows = logit_rows;
    Parameters* P = cpu_gpt_params(cpu);
    check(P->count == gpu.params.count &&
          memcmp(P->params, gpu.params.params, (size_t)P->count * sizeof(float)) == 0,
          "%s: the same %ld initial parameters from the same seed", name, P->count);
    int *inputs = (int*)malloc_check((size_t)B * T * sizeof(int)), *targets = (int*)malloc_check((size_t)B * T * 4);
    for (int i = 0; i < B * T; i++) {
        inputs[i] = (int)(rand64() % (uint64_t)c.V);
        targets[i] = i % 11 == 5 ? -1 : (int)(rand64() % (uint64_t)c.V);
    }
    long scored = 0;
    for (int i = 0; i < B * T; i++) scored += targets[i] >= 0;
    float dloss = 1.0f / (float)scored;
    for (int step = 1; step <= 2; step++) {
        cpu_gpt_set_training(cpu, 1, 4242 + step, 3);
        gpu.training = 1;
        gpu.dropout_seed = 4242 + step;
        gpu.first_sample = 3;
        memset(P->grads, 0, (size_t)P->count * sizeof(float));
        gpt_zero_grad(&gpu);
        double l_cpu = cpu_gpt_forward(cpu, inputs, targets, B, T);
        double l_gpu = gpt_forward(&gpu, inputs, targets, B, T, dloss);
        check(fabs(l_gpu - l_cpu) <= 1e-4 * fabs(l_cpu), "%s: %s loss %.6f vs the CPU's %.6f", name,
              step == 1 ? "first" : "after an AdamW step,", l_gpu, l_cpu);
        if (step == 2) break;
        double e_losses = rel_err(gpu.losses, cpu_gpt_losses(cpu), (size_t)B * T, 1e-6);
        check(e_losses <= 1e-4, "%s: the loss of every position, rel err %.1e", name, e_losses);
        cpu_gpt_backward(cpu, dloss);
        gpt_backward(&gpu);
        float* g = from_device(gpu.d_grads, (size_t)P->count);
        double worst = 0;
        const char* worst_name = "";
        for (int t = 0; t < P->ntensors; t++) {  // each tensor against its own largest gradient
            const TensorInfo* ti = &P->tensors[t];
            if (ti->size == 0) continue;
            double e = rel_err(g + ti->offset, P->grads + ti->offset, (size_t)ti->size, 1e-6);
            if (e > worst) {
                worst = e;
                worst_name = ti->name;
            }
        }
        check(worst <= 1e-4, "%s: every gradient, rel err %.1e (worst %s)", name, worst, worst_name);
        free(g);
        double n_cpu = cpu_gpt_adamw_step(cpu, 0.9, 0.99, 1e-8, 0.1, 1.0, 1e-3, l_cpu, 1);
        AdamW opt = {0.9, 0.99, 1e-8, 0.1, 1.0};
        double n_gpu = adamw_step(&gpu.params, gpu.d_params, gpu.d_grads, gpu.d_m, gpu.d_v, &opt, 1e-3, l_gpu, 1);
        check(fabs(n_gpu - n_cpu) <= 1e-4 * n_cpu, "%s: gradient norm %.6f vs the CPU's %.6f", name, n_gpu, n_cpu);
    }
    free(inputs); free(targets);
    cpu_gpt_free(cpu);
    gpt_free(&gpu);
}

// Generation's logits, position by position, and evaluation with a context window.
static void test_generation_and_evaluation(GPTConfig c) {
    CpuGPT* cpu = cpu_gpt_new(&c, 7);
    GPT gpu;
    gpt_build(&gpu, &c);
    memcpy(gpu.params.params, cpu_gpt_params(cpu)->params, (size_t)gpu.params.count * sizeof(float));
    gpt_to_device(&gpu);
    GenState g = gen_state_make(&gpu);
    double worst = 0;
    for (int t = 0; t < c.maxT; t++) {
        int token = (t * 31 + 7) % c.V;
        const float* ref = cpu_gpt_step(cpu, token, t);
        gpt_step(&gpu, &g, token, t);
        double e = rel_err(g.logits_host, ref, (size_t)c.V, 1e-3);
        if (e > worst) worst = e;
    }
    check(worst <= 1e-4, "%s generation: the next-token logits of %d positions, rel err %.1e", c.attention, c.maxT,
          worst);
    gen_state_free(&g);
    const long n = 620;  // the last batch of windows not full
    uint32_t tokens[n];
    for (long i = 0; i < n; i++) tokens[i] = (uint32_t)((i * i + 3 * i) % c.V);
    TokenData d = {tokens, n};
    Dist one = dist_single();
    int B = 3, T = c.maxT;
    int *inputs = (int*)malloc_check((size_t)B * T * 4), *targets = (int*)malloc_check((size_t)B * T * 4);
    gpt_allocate(&gpu, B, T);
    for (int W = 0; W < T; W += T / 2 + 1) {
        EvalResult r = evaluate(&gpu, &one, &d, B, T, W, 0, inputs, targets);
        double ref = cpu_gpt_evaluate(cpu, tokens, n, B, T, W);
        check(fabs(r.loss - ref) <= 1e-5 * ref && r.tokens == n - 1,
              "%s evaluation, context window %d: %ld tokens, loss %.6f vs the CPU's %.6f", c.attention, W, r.tokens,
              r.loss, ref);
        eval_result_free(&r);
    }
    free(inputs); free(targets);
    cpu_gpt_free(cpu);
    gpt_free(&gpu);
}

static void test_model(void) {
    GPTConfig c = default_model();
    test_update("default model, one update", c, DEFAULT_B, c.maxT, 0, 0);
    // WikiText-103's kind of model, small: sinusoids, scaled embedding, ReLU, untied, clamp 5,
    // dropout, a context that is not whole chunks, the logits 37 rows at a time
    GPTConfig w = {997, 100, 2, 4, 64, 192, "flow", 5.0f, 0, 0, 1, 8.0f, 0, 0, 0, 0, 0.02, 0};
    test_update("sinusoidal ReLU untied model with dropout 0.1, logits in chunks", w, 3, 100, 0.1f, 37);
    GPTConfig s = w;
    s.attention = "softmax";
    test_update("softmax model", s, 2, 100, 0, 0);
    GPTConfig l = c;
    l.attention = "linear";
    l.L = 2;
    test_update("linear model", l, 2, 64, 0, 0);
    c.L = 2;
    c.maxT = 40;
    for (int i = 0; i < 3; i++) {
        c.attention = i == 0 ? "flow" : i == 1 ? "softmax" : "linear";
        test_generation_and_evaluation(c);
    }
}

// ----------------------------------------------------------------------------
// The programs

#define OUT_CAP 65536
static char out[OUT_CAP];
static char dir[256];

// The "loss" of update `step` in a JSON-lines log, or NaN.
static double loss_at(const char* log, long step) {
    char key[64];
    snprintf(key, sizeof(key), "{\"step\":%ld,\"loss\":", step);
    const char* p = log ? strstr(log, key) : NULL;
    return p ? strtod(p + strlen(key), NULL) : NAN;
}

// The validation loss of the last evaluation in a program's output, or NaN.
static double val_loss(const char* output) {
    const char *p = output, *last = NULL;
    while ((p = strstr(p, "| val loss ")) != NULL) last = p++;
    return last ? strtod(last + strlen("| val loss "), NULL) : NAN;
}

// Runs a trainer; on failure its output is shown.
static int run_trainer(const char* program, const char* args) {
    int rc = run_args(program, args, out, OUT_CAP);
    if (rc != 0) printf("%s %s:\n%s\n", program, args, out);
    return rc;
}

// The largest relative difference between the losses of updates [from, to] of two logs.
static double track(const char* a, const char* b, long from, long to) {
    double worst = 0;
    for (long s = from; s <= to; s++) {
        double x = loss_at(a, s), y = loss_at(b, s), e = fabs(x - y) / fabs(y);
        if (!(e <= worst)) worst = e;
    }
    return worst;
}

static void test_programs(void) {
    make_temp_dir(dir, sizeof dir, "test_cuda");
    char args[4096], log_cpu[300], log_gpu[300];
    // the default run, UPDATES updates, on both
    const char* common = PROGRAM_SIZES "--eval_interval 0 --eval_batches 4 --sample_tokens 0";
    snprintf(log_cpu, sizeof log_cpu, "%s/cpu.jsonl", dir);
    snprintf(log_gpu, sizeof log_gpu, "%s/gpu.jsonl", dir);
    snprintf(args, sizeof args, "%s --steps %d --log_file %s --checkpoint %s/cpu.bin", common, UPDATES, log_cpu, dir);
    int rc_cpu = run_trainer(CPU_TRAINER, args);
    double val_cpu = val_loss(out);
    snprintf(args, sizeof args, "%s --steps %d --log_file %s --checkpoint %s/gpu.bin", common, UPDATES, log_gpu, dir);
    int rc_gpu = run_trainer(GPU_TRAINER, args);
    double val_gpu = val_loss(out);
    char *a = slurp(log_cpu), *b = slurp(log_gpu);
    double e = track(b, a, 1, UPDATES);
    check(rc_cpu == 0 && rc_gpu == 0 && e <= 1e-2,
          "the default run, %d updates: the GPU's losses track the CPU's, largest difference %.1e (last %.4f vs %.4f)",
          UPDATES, e, loss_at(b, UPDATES), loss_at(a, UPDATES));
    check(fabs(val_gpu - val_cpu) <= 1e-2 * val_cpu, "the default run: validation loss %.4f vs the CPU's %.4f",
          val_gpu, val_cpu);
    free(a); free(b);

    // a checkpoint CPU -> GPU -> CPU: the CPU's 10 updates, the GPU's 5 more from its
    // checkpoint, the CPU's 5 more from the GPU's, against the CPU's 20 straight
    char straight[300], mid[300], back[300];
    snprintf(straight, sizeof straight, "%s/straight.jsonl", dir);
    snprintf(mid, sizeof mid, "%s/mid.jsonl", dir);
    snprintf(back, sizeof back, "%s/back.jsonl", dir);
    snprintf(args, sizeof args, "%s --steps 20 --checkpoint_interval 10 --checkpoint %s/c_{step}.bin --log_file %s",
             common, dir, straight);
    int rc1 = run_trainer(CPU_TRAINER, args);
    snprintf(args, sizeof args, "--resume %s/c_10.bin --checkpoint_interval 5 --checkpoint %s/g_{step}.bin "
             "--log_file %s", dir, dir, mid);
    int rc2 = run_trainer(GPU_TRAINER, args);
    snprintf(args, sizeof args, "--resume %s/g_15.bin --checkpoint %s/b_{step}.bin --log_file %s", dir, dir, back);
    int rc3 = run_trainer(CPU_TRAINER, args);
    char *s = slurp(straight), *m = slurp(mid), *k = slurp(back);
    double e_gpu = track(m, s, 11, 20), e_back = track(k, s, 16, 20);
    check(rc1 == 0 && rc2 == 0 && rc3 == 0 && e_gpu <= 1e-3 && e_back <= 1e-3,
          "checkpoint CPU -> GPU -> CPU: the GPU resumes the CPU's update 10 (losses 11-20 within %.1e of the CPU's "
          "straight run), the CPU the GPU's update 15 (16-20 within %.1e)", e_gpu, e_back);
    free(s); free(m); free(k);
    // both trainers evaluate the GPU's checkpoint alike, on the first 5,000 validation tokens
    long n;
    uint32_t* val = token_shard_load("data/tinyshakespeare/val.bin", 65, &n);
    char small[300];
    snprintf(small, sizeof small, "%s/val_5000.bin", dir);
    token_shard_write(small, val, 5000, 65);
    free(val);
    snprintf(args, sizeof args, "--resume %s/g_20.bin --mode eval --val_data %s", dir, small);
    run_trainer(CPU_TRAINER, args);
    double v_cpu = val_loss(out);
    run_trainer(GPU_TRAINER, args);
    double v_gpu = val_loss(out);
    check(fabs(v_gpu - v_cpu) <= 1e-4 * v_cpu, "--mode eval of the GPU's checkpoint: validation loss %.5f on the "
          "GPU, %.5f on the CPU", v_gpu, v_cpu);
    remove_temp_dir(dir);
}

// Two ranks with a GPU each against one rank whose gradient accumulation stands in for
// the second: the same global batch (utils/dist.h), so the same losses to 1e-5.
static void test_ranks(int ngpus) {
    if (access(GPU_TRAINER_MPI, X_OK) != 0 || ngpus < 2) {
        printf("skipped: two ranks (%s)\n", ngpus < 2 ? "one GPU" : GPU_TRAINER_MPI " not built");
        return;
    }
    make_temp_dir(dir, sizeof dir, "test_cuda_ranks");
    char cmd[4096], one[300], two[300];
    snprintf(one, sizeof one, "%s/one.jsonl", dir);
    snprintf(two, sizeof two, "%s/two.jsonl", dir);
    const char* common = PROGRAM_SIZES "--steps 6 --eval_interval 0 --val_data data/tinyshakespeare/val.bin "
                         "--eval_batches 2 --sample_tokens 0 --dropout_attn 0.1 --checkpoint";
    snprintf(cmd, sizeof cmd, "%s %s %s/one.bin --batch_size 4 --grad_accum 2 --log_file %s > %s/one.out 2>&1",
             GPU_TRAINER, common, dir, one, dir);
    int rc1 = system(cmd);
    snprintf(cmd, sizeof cmd, "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 "
             "timeout 600 mpirun --oversubscribe --bind-to none -np 2 %s %s %s/two.bin --batch_size 8 "
             "--log_file %s > %s/two.out 2>&1", GPU_TRAINER_MPI, common, dir, two, dir);
    int rc2 = system(cmd);
    char *a = slurp(one), *b = slurp(two);
    double e = track(b, a, 1, 6);
    check(rc1 == 0 && rc2 == 0 && e <= 1e-5, "2 ranks (NCCL) and 1 rank with accumulation: the same losses at 6 "
          "updates, largest relative difference %.1e", e);
    free(a); free(b);
    remove_temp_dir(dir);
}

int main(void) {
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess || n == 0) {
        printf("skipped: no GPU (%s)\n", err != cudaSuccess ? cudaGetErrorString(err) : "no device");
        return 0;
    }
    cuda_setup(0, 0);
    test_encoder();
    test_layernorm();
    test_matmul();
    test_elementwise();
    test_crossentropy(65);
    test_crossentropy(5003);
    test_adamw();
    test_attention_kernels();
    test_model();
    test_programs();
    test_ranks(n);
    return testing_exit_code();
}
