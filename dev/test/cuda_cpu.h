// The CPU trainer's layers, attention kernels and model (dev/test/cuda_cpu.c, built by
// gcc in float32) as plain functions over float arrays, for dev/test/test_cuda.cu to
// compare the GPU's against. Each does what the CPU function of the same name without
// the cpu_ prefix does (layers/*.h, train_gpt_flow.c).
#ifndef DEV_TEST_CUDA_CPU_H
#define DEV_TEST_CUDA_CPU_H

#include <stddef.h>
#include <stdint.h>
#include "models/gpt.h"

#ifdef __cplusplus
extern "C" {
#endif

void cpu_sinusoid_table(float* table, int T, int C);
void cpu_encoder_forward(float* out, const int* inp, const float* wte, const float* pos, float scale, int B, int T,
                         int C);
void cpu_encoder_backward(float* dwte, float* dpos, const float* dout, const int* inp, float scale, int B, int T,
                          int C);
void cpu_layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                           const float* bias, int N, int C);
void cpu_residual_layernorm_forward(float* res, float* out, float* mean, float* rstd, const float* inp1,
                                    const float* inp2, const float* weight, const float* bias, int N, int C);
void cpu_layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                            const float* weight, const float* mean, const float* rstd, int N, int C);
void cpu_matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C, int OC);
void cpu_matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                         const float* weight, int N, int C, int OC);
void cpu_gelu_forward(float* out, const float* inp, long N);
void cpu_bias_gelu_forward(float* out, const float* inp, const float* bias, int N, int C);
void cpu_bias_gelu_backward(float* dinp, float* dbias, const float* dout, const float* inp, const float* bias, int N,
                            int C);
void cpu_relu_forward(float* out, const float* inp, long N);
void cpu_relu_backward(float* dinp, const float* inp, const float* dout, long N);
void cpu_residual_forward(float* out, const float* inp1, const float* inp2, long N);
void cpu_dropout_forward(float* out, const float* inp, long N, float p, uint64_t key);
void cpu_dropout_backward(float* dinp, const float* dout, long N, float p, uint64_t key);
void cpu_crossentropy_forward(float* losses, const float* logits, const int* targets, int N, int V);
void cpu_crossentropy_forward_backward(float* losses, float* logits, const int* targets, float dloss, int N, int V);
// AdamW over one tensor (decay given), its gradients scaled by grad_scale
void cpu_adamw_update_scaled(float* params, const float* grads, float* m, float* v, long N, float lr, float beta1,
                             float beta2, float eps, float weight_decay, long t, float grad_scale);
double cpu_grad_norm(const float* grads, long N);

// One attention call: kind by name, sizes and row strides as layers/attention_types.h's Attention.
typedef struct {
    const char* kind;
    int causal, B, L, S, H, D, M, q_stride, k_stride, v_stride;
    float clamp;
} CpuAttention;

size_t cpu_attention_cache_size(const CpuAttention* a);
size_t cpu_attention_state_size(const CpuAttention* a, int max_T);
void cpu_attention_forward(const CpuAttention* a, float* out, float* cache, const float* q, const float* k,
                           const float* v);
void cpu_attention_backward(const CpuAttention* a, float* dq, float* dk, float* dv, const float* dout,
                            const float* out, const float* cache, const float* q, const float* k, const float* v);
// one head
void cpu_attention_step(const CpuAttention* a, float* state, int t, float* out, const float* q, const float* k,
                        const float* v);

// The CPU trainer's model, initialised from seed as the trainer does (params_init).
typedef struct CpuGPT CpuGPT;
CpuGPT* cpu_gpt_new(const GPTConfig* c, uint64_t seed);
void cpu_gpt_free(CpuGPT* m);
Parameters* cpu_gpt_params(CpuGPT* m);
// training: dropout on, masks from seed, the forward pass's first sample `first` of the update's batch
void cpu_gpt_set_training(CpuGPT* m, int training, uint64_t dropout_seed, long first);
double cpu_gpt_forward(CpuGPT* m, const int* inputs, const int* targets, int B, int T);
const float* cpu_gpt_losses(CpuGPT* m);
void cpu_gpt_backward(CpuGPT* m, float dloss);
double cpu_gpt_adamw_step(CpuGPT* m, double beta1, double beta2, double eps, double weight_decay, double grad_clip,
                          double lr, double loss, long step);
// the next-token logits (V) after feeding token at position t, a fresh generation state at t = 0
const float* cpu_gpt_step(CpuGPT* m, int token, int t);
// the mean loss of an evaluation over tokens[0, n) with context window W, batches of B
double cpu_gpt_evaluate(CpuGPT* m, const uint32_t* tokens, long n, int B, int T, int W);

#ifdef __cplusplus
}
#endif

#endif
