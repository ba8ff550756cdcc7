// dev/test/cuda_cpu.h's functions: the CPU trainer's own code (train_gpt_flow.c built
// with -DTESTING, which includes every layer), each behind a plain function.
#include "train_gpt_flow.c"
#include "dev/test/cuda_cpu.h"

void cpu_sinusoid_table(float* table, int T, int C) { sinusoid_table(table, T, C); }
void cpu_encoder_forward(float* out, const int* inp, const float* wte, const float* pos, float scale, int B, int T,
                         int C) {
    encoder_forward(out, inp, wte, pos, scale, B, T, C);
}
void cpu_encoder_backward(float* dwte, float* dpos, const float* dout, const int* inp, float scale, int B, int T,
                          int C) {
    encoder_backward(dwte, dpos, dout, inp, scale, B, T, C);
}
void cpu_layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                           const float* bias, int N, int C) {
    layernorm_forward(out, mean, rstd, inp, weight, bias, N, C, LAYERNORM_EPS);
}
void cpu_residual_layernorm_forward(float* res, float* out, float* mean, float* rstd, const float* inp1,
                                    const float* inp2, const float* weight, const float* bias, int N, int C) {
    residual_layernorm_forward(res, out, mean, rstd, inp1, inp2, weight, bias, N, C, LAYERNORM_EPS);
}
void cpu_layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                            const float* weight, const float* mean, const float* rstd, int N, int C) {
    layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
}
void cpu_matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C, int OC) {
    matmul_forward(out, inp, weight, bias, N, C, OC);
}
void cpu_matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                         const float* weight, int N, int C, int OC) {
    matmul_backward(dinp, dweight, dbias, dout, inp, weight, N, C, OC);
}
void cpu_gelu_forward(float* out, const float* inp, long N) { gelu_forward(out, inp, N); }
void cpu_bias_gelu_forward(float* out, const float* inp, const float* bias, int N, int C) {
    bias_gelu_forward(out, inp, bias, N, C);
}
void cpu_bias_gelu_backward(float* dinp, float* dbias, const float* dout, const float* inp, const float* bias, int N,
                            int C) {
    bias_gelu_backward(dinp, dbias, dout, inp, bias, N, C);
}
void cpu_relu_forward(float* out, const float* inp, long N) { relu_forward(out, inp, N); }
void cpu_relu_backward(float* dinp, const float* inp, const float* dout, long N) { relu_backward(dinp, inp, dout, N); }
void cpu_residual_forward(float* out, const float* inp1, const float* inp2, long N) {
    residual_forward(out, inp1, inp2, N);
}
void cpu_dropout_forward(float* out, const float* inp, long N, float p, uint64_t key) {
    dropout_forward(out, inp, N, p, key);
}
void cpu_dropout_backward(float* dinp, const float* dout, long N, float p, uint64_t key) {
    dropout_backward(dinp, dout, N, p, key);
}
void cpu_crossentropy_forward(float* losses, const float* logits, const int* targets, int N, int V) {
    float* lse = (float*)malloc_check((size_t)N * sizeof(float));
    crossentropy_forward(losses, lse, logits, targets, N, V);
    free(lse);
}
void cpu_crossentropy_forward_backward(float* losses, float* logits, const int* targets, float dloss, int N, int V) {
    crossentropy_forward_backward(losses, logits, targets, dloss, N, V);
}
void cpu_adamw_update_scaled(float* params, const float* grads, float* m, float* v, long N, float lr, float beta1,
                             float beta2, float eps, float weight_decay, long t, float grad_scale) {
    adamw_update_scaled(params, grads, m, v, N, lr, beta1, beta2, eps, weight_decay, t, grad_scale);
}
double cpu_grad_norm(const float* grads, long N) { return grad_norm(grads, N); }

static Attention to_attention(const CpuAttention* s) {
    Attention a = {attention_kind_or_fail(s->kind), s->causal, s->B, s->L, s->S, s->H, s->D, s->M,
                   s->q_stride, s->k_stride, s->v_stride, s->clamp};
    return a;
}
size_t cpu_attention_cache_size(const CpuAttention* s) {
    Attention a = to_attention(s);
    return attention_cache_size(&a);
}
size_t cpu_attention_state_size(const CpuAttention* s, int max_T) {
    Attention a = to_attention(s);
    return attention_state_size(&a, max_T);
}
void cpu_attention_forward(const CpuAttention* s, float* out, float* cache, const float* q, const float* k,
                           const float* v) {
    Attention a = to_attention(s);
    attention_forward(&a, out, cache, q, k, v);
}
void cpu_attention_backward(const CpuAttention* s, float* dq, float* dk, float* dv, const float* dout,
                            const float* out, const float* cache, const float* q, const float* k, const float* v) {
    Attention a = to_attention(s);
    attention_backward(&a, dq, dk, dv, dout, out, cache, q, k, v);
}
void cpu_attention_step(const CpuAttention* s, float* state, int t, float* out, const float* q, const float* k,
                        const float* v) {
    Attention a = to_attention(s);
    attention_step(&a, state, t, out, q, k, v);
}

struct CpuGPT {
    GPT model;
    GenState gen;
    int gen_made;
};

CpuGPT* cpu_gpt_new(const GPTConfig* c, uint64_t seed) {
    CpuGPT* m = (CpuGPT*)calloc_check(1, sizeof(CpuGPT));
    gpt_build(&m->model, c);
    Rng rng = rng_make(seed);
    gpt_init(&m->model, &rng);
    return m;
}
void cpu_gpt_free(CpuGPT* m) {
    if (m->gen_made) gen_state_free(&m->gen);
    gpt_free(&m->model);
    free(m);
}
Parameters* cpu_gpt_params(CpuGPT* m) { return &m->model.params; }
void cpu_gpt_set_training(CpuGPT* m, int training, uint64_t dropout_seed, long first) {
    m->model.training = training;
    m->model.dropout_seed = dropout_seed;
    m->model.first_sample = first;
}
double cpu_gpt_forward(CpuGPT* m, const int* inputs, const int* targets, int B, int T) {
    return gpt_forward(&m->model, inputs, targets, B, T);
}
const float* cpu_gpt_losses(CpuGPT* m) { return m->model.acts.losses; }
void cpu_gpt_backward(CpuGPT* m, float dloss) { gpt_backward(&m->model, dloss); }
double cpu_gpt_adamw_step(CpuGPT* m, double beta1, double beta2, double eps, double weight_decay, double grad_clip,
                          double lr, double loss, long step) {
    AdamW opt = {beta1, beta2, eps, weight_decay, grad_clip};
    return adamw_step(&m->model.params, &opt, lr, loss, step);
}
const float* cpu_gpt_step(CpuGPT* m, int token, int t) {
    if (!m->gen_made) {
        m->gen = gen_state_make(&m->model);
        m->gen_made = 1;
    }
    if (t == 0) gen_state_reset(&m->model, &m->gen);
    gpt_step(&m->model, &m->gen, token, t);
    return m->gen.logits;
}
double cpu_gpt_evaluate(CpuGPT* m, const uint32_t* tokens, long n, int B, int T, int W) {
    TokenData d = {(uint32_t*)tokens, n};
    Dist one = dist_single();
    int* inputs = (int*)malloc_check((size_t)B * T * sizeof(int));
    int* targets = (int*)malloc_check((size_t)B * T * sizeof(int));
    EvalResult r = evaluate(&m->model, &one, &d, B, T, W, 0, inputs, targets);
    double loss = r.loss;
    eval_result_free(&r);
    free(inputs);
    free(targets);
    return loss;
}
