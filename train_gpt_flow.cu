/*
Causal language model with Flow-Attention (Flowformer, Wu et al. ICML 2022) on
NVIDIA GPUs: train_gpt_flow.c's model, settings, checkpoints, data, evaluation,
sampling and logs, with every forward and backward pass on the GPU (cuda/), as
karpathy's llm.c keeps train_gpt2.cu beside train_gpt2.c.

  make cuda && ./train_gpt_flow_cuda      the tinyshakespeare run, on a GPU
  ./train_gpt_flow_cuda --config configs/gpt_wikitext103_flow.json    the paper's WikiText-103 run
  ./train_gpt_flow_cuda --help            every setting (the CPU trainer's)

The settings and the model's table of tensors are models/gpt.h's, shared with the
CPU trainer, so a checkpoint written by either resumes in the other. Everything
around the model runs on the host with the CPU trainer's headers (utils/): settings,
data, checkpoints, the log. The parameters, their gradients and AdamW's moments live
on the GPU; the host keeps a copy of the parameters and moments for initialisation
and checkpoints. Matrix products are cuBLAS's, in float32, or on TF32 tensor cores
with --tf32 true. Under mpirun (make USE_MPI=1 USE_CUDA=1) each rank drives one GPU
and the gradients are summed with NCCL (cuda/dist.cuh).
*/
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <stddef.h>
#include <omp.h>
#include "utils/real.h"
#include "utils/utils.h"
#include "utils/rng.h"
#include "utils/config.h"
#include "utils/params.h"
#include "utils/schedule.h"
#include "utils/run.h"
#include "utils/progress.h"
#include "utils/token_loader.h"
#include "utils/vocab.h"
#include "utils/dist.h"
#include "models/gpt.h"
#include "cuda/common.cuh"
#include "cuda/encoder.cuh"
#include "cuda/layernorm.cuh"
#include "cuda/matmul.cuh"
#include "cuda/attention.cuh"
#include "cuda/gelu.cuh"
#include "cuda/relu.cuh"
#include "cuda/dropout.cuh"
#include "cuda/residual.cuh"
#include "cuda/crossentropy.cuh"
#include "cuda/adamw.cuh"
#include "cuda/dist.cuh"

// ----------------------------------------------------------------------------
// The model: models/gpt.h describes it (GPTConfig, ParameterTensors, the table of tensors)

// Floats of logits held at once (256 MiB): the output layer goes a chunk of rows at a time.
#define LOGITS_MAX (1L << 26)

// Device memory, laid out as train_gpt_flow.c's activations but for the logits, of
// which only one chunk of rows is ever held.
typedef struct {
    float* encoded;   // (B, T, C) embeddings (after dropout)
    float* ln1;       // (L, B, T, C)
    float* ln1_mean;  // (L, B, T)
    float* ln1_rstd;  // (L, B, T)
    float* qkv;       // (L, B, T, 3C)
    float* atty;      // (L, B, T, C) attention output, heads concatenated
    float* attcache;  // (L, attention_cache_size) what attention's backward needs
    float* res2;      // (L, B, T, C) stream after the attention block
    float* ln2;       // (L, B, T, C)
    float* ln2_mean;  // (L, B, T)
    float* ln2_rstd;  // (L, B, T)
    float* fch;       // (L, B, T, F) MLP hidden before the activation (before fc's bias with GELU)
    float* fch_act;   // (L, B, T, F) after the activation (and dropout)
    float* res3;      // (L, B, T, C) stream after the MLP block
    float* lnf;       // (B, T, C)
    float* lnf_mean;  // (B, T)
    float* lnf_rstd;  // (B, T)
    float* logits;    // (logit_rows, V) a chunk of rows of logits, then of their gradient
    float* losses;    // (B, T)
    float* branch;    // (B, T, C) a block's output before the residual add
    float* attscratch; // the attention kind's scratch, for its largest call
    // gradients of activations, reused layer after layer by the backward pass
    float* dres;      // (B, T, C) gradient of the residual stream
    float* dbranch;   // (B, T, C)
    float* dln;       // (B, T, C); the forward pass leaves the gradient of lnf here
    float* datty;     // (B, T, C)
    float* dqkv;      // (B, T, 3C)
    float* dhidden;   // (2, B, T, F)
} ActivationTensors;

typedef struct {
    GPTConfig config;
    const AttentionKind* attention; // config.attention's row of cuda/attention.cuh
    Parameters params;        // the table, and the host's copy of the parameters and AdamW moments
    ParameterTensors p, g;    // the parameters and their gradients on the GPU, by name
    float *d_params, *d_grads, *d_m, *d_v; // on the GPU, laid out as params
    ActivationTensors acts;
    float* acts_memory;
    size_t acts_size;         // floats of acts_memory
    int batch_size;           // B the activations were allocated for
    int seq_len;              // T likewise
    int logit_rows;           // rows of logits held at once
    int B, T;                 // sizes of the last forward pass
    float* pos_table;         // (maxT, C) sinusoids on the GPU when positions are not learned
    int *inputs, *targets;    // (B, T) on the GPU, of the last forward pass
    float* losses;            // (B, T) on the host, of the last forward pass
    EncoderIndex index;       // the last training forward pass's positions by token
    int training;             // 1: dropout active
    uint64_t dropout_seed;    // the masks of one update derive from it
    long first_sample;        // index of the forward pass's first sample in the update's global batch
} GPT;

// Describes the tensors (models/gpt.h); gpt_build allocates them.
static void gpt_layout(GPT* m, const GPTConfig* c) {
    memset(m, 0, sizeof(*m));
    m->config = *c;
    m->attention = attention_kind_or_fail(c->attention);
    gpt_describe(&m->params, &m->p, &m->g, c);
}

// The host's copy (params_allocate) and the device's arrays, with the named pointers
// pointed at the device's.
static void gpt_build(GPT* m, const GPTConfig* c) {
    gpt_layout(m, c);
    Parameters* P = &m->params;
    params_allocate(P);
    m->d_params = cuda_floats((size_t)P->count, "the parameters");
    m->d_grads = cuda_floats((size_t)P->count, "the gradients");
    m->d_m = cuda_floats((size_t)P->count, "AdamW's first moments");
    m->d_v = cuda_floats((size_t)P->count, "AdamW's second moments");
    for (int i = 0; i < P->ntensors; i++) {
        const TensorInfo* t = &P->tensors[i];
        *t->param = t->size > 0 ? m->d_params + t->offset : NULL;
        *t->grad = t->size > 0 ? m->d_grads + t->offset : NULL;
    }
    if (!c->learned_pos) {
        float* table = (float*)malloc_check((size_t)c->maxT * c->C * sizeof(float));
        sinusoid_table(table, c->maxT, c->C);
        m->pos_table = cuda_floats((size_t)c->maxT * c->C, "the positions");
        to_device(m->pos_table, table, (size_t)c->maxT * c->C * sizeof(float));
        free(table);
    }
}

// The host's copy, as the CPU trainer initialises it (the same parameters from the same seed).
static void gpt_init(GPT* m, Rng* rng) { params_init(&m->params, rng); }

// The host's parameters and moments (initialised or read from a checkpoint) to the GPU.
static void gpt_to_device(GPT* m) {
    size_t bytes = (size_t)m->params.count * sizeof(float);
    to_device(m->d_params, m->params.params, bytes);
    to_device(m->d_m, m->params.m, bytes);
    to_device(m->d_v, m->params.v, bytes);
}

// The GPU's parameters and moments to the host's copy, for a checkpoint.
static void gpt_to_host(GPT* m) {
    size_t bytes = (size_t)m->params.count * sizeof(float);
    to_host(m->params.params, m->d_params, bytes);
    to_host(m->params.m, m->d_m, bytes);
    to_host(m->params.v, m->d_v, bytes);
}

static void gpt_zero_grad(GPT* m) {
    CUDA_CHECK(cudaMemset(m->d_grads, 0, (size_t)m->params.count * sizeof(float)));
}

static void gpt_free(GPT* m) {
    params_free(&m->params);
    CUDA_CHECK(cudaFree(m->d_params));
    CUDA_CHECK(cudaFree(m->d_grads));
    CUDA_CHECK(cudaFree(m->d_m));
    CUDA_CHECK(cudaFree(m->d_v));
    CUDA_CHECK(cudaFree(m->acts_memory));
    CUDA_CHECK(cudaFree(m->pos_table));
    CUDA_CHECK(cudaFree(m->inputs));
    CUDA_CHECK(cudaFree(m->targets));
    free(m->losses);
    encoder_index_free(&m->index);
}

// The attention of every layer: causal, over the fused (B,T,3C) qkv buffer.
static Attention gpt_attention(const GPT* m, int B, int T) {
    const GPTConfig* c = &m->config;
    Attention a = attention_make(m->attention, 1, B, T, c->H, c->C / c->H);
    a.q_stride = a.k_stride = a.v_stride = 3 * c->C;
    a.clamp = c->clamp;
    return a;
}

// Rows of logits held at once for batches of B x T tokens.
static int gpt_logit_rows(const GPTConfig* c, int B, int T) {
    long rows = LOGITS_MAX / c->V;
    return rows < 1 ? 1 : (rows < (long)B * T ? (int)rows : B * T);
}

// Lays out the activations for batches of up to B x T in base (NULL: only counts);
// returns the floats needed.
static size_t gpt_carve(GPT* m, float* base, int B, int T) {
    const GPTConfig* c = &m->config;
    size_t L = c->L, C = c->C, F = c->F, V = c->V, BT = (size_t)B * T, n = 0;
    Attention a = gpt_attention(m, B, T);
    ActivationTensors* s = &m->acts;
    s->encoded = carve(base, &n, BT * C);
    s->ln1 = carve(base, &n, L * BT * C);
    s->ln1_mean = carve(base, &n, L * BT);
    s->ln1_rstd = carve(base, &n, L * BT);
    s->qkv = carve(base, &n, L * BT * 3 * C);
    s->atty = carve(base, &n, L * BT * C);
    s->attcache = carve(base, &n, L * attention_cache_size(&a));
    s->res2 = carve(base, &n, L * BT * C);
    s->ln2 = carve(base, &n, L * BT * C);
    s->ln2_mean = carve(base, &n, L * BT);
    s->ln2_rstd = carve(base, &n, L * BT);
    s->fch = carve(base, &n, L * BT * F);
    s->fch_act = carve(base, &n, L * BT * F);
    s->res3 = carve(base, &n, L * BT * C);
    s->lnf = carve(base, &n, BT * C);
    s->lnf_mean = carve(base, &n, BT);
    s->lnf_rstd = carve(base, &n, BT);
    s->logits = carve(base, &n, (size_t)gpt_logit_rows(c, B, T) * V);
    s->losses = carve(base, &n, BT);
    s->branch = carve(base, &n, BT * C);
    s->attscratch = carve(base, &n, attention_scratch_size(&a));
    s->dres = carve(base, &n, BT * C);
    s->dbranch = carve(base, &n, BT * C);
    s->dln = carve(base, &n, BT * C);
    s->datty = carve(base, &n, BT * C);
    s->dqkv = carve(base, &n, BT * 3 * C);
    s->dhidden = carve(base, &n, 2 * BT * F);
    return n;
}

// Allocates the activations for forward passes of up to B x T tokens.
static void gpt_allocate(GPT* m, int B, int T) {
    m->acts_size = gpt_carve(m, NULL, B, T);
    m->acts_memory = cuda_floats(m->acts_size, "the activations");
    gpt_carve(m, m->acts_memory, B, T);
    CUDA_CHECK(cudaMalloc(&m->inputs, (size_t)B * T * sizeof(int)));
    CUDA_CHECK(cudaMalloc(&m->targets, (size_t)B * T * sizeof(int)));
    m->losses = (float*)malloc_check((size_t)B * T * sizeof(float));
    m->batch_size = B;
    m->seq_len = T;
    m->logit_rows = gpt_logit_rows(&m->config, B, T);
}

// Bytes a rank computing batches of B x T needs on its GPU (parameters, gradients,
// AdamW's moments, activations and their gradients, positions) and on the host
// (params_allocate's four arrays, of which the gradients' goes unused).
static void gpt_memory(const GPTConfig* c, int B, int T, double* gpu, double* host) {
    GPT m;
    gpt_layout(&m, c);
    *gpu = (4.0 * m.params.count + (double)gpt_carve(&m, NULL, B, T) + (double)c->maxT * c->C) * sizeof(float);
    *host = 4.0 * m.params.count * sizeof(float);
    params_free(&m.params);
}

// FLOPs of a forward and backward pass over B x T tokens: the linear layers' and
// the attention kernels' own count.
static double gpt_flops(const GPT* m, int B, int T) {
    Attention a = gpt_attention(m, B, T);
    return gpt_matmul_flops(&m->config, B, T) + m->config.L * attention_flops(&a);
}

// Key of dropout site `site` (models/gpt.h's gpt_dropout_site) in the current
// forward pass, with `width` values per position there.
static uint64_t dropout_key(const GPT* m, int site, int width) {
    return dropout_key_from(gpt_dropout_site(m->dropout_seed, site), m->first_sample * m->T * width);
}

static float active(const GPT* m, float p) { return m->training ? p : 0; }

// The gradient through dropout site `site` of the n values whose output gradient is
// grad: buffer (written) when the site is active, grad itself when it is not.
static const float* dropout_grad(const GPT* m, float* buffer, const float* grad, long n, float p, int site,
                                 int width) {
    if (active(m, p) <= 0) return grad;
    CUDA_CHECK(cudaMemset(buffer, 0, (size_t)n * sizeof(float)));
    dropout_backward(buffer, grad, n, p, dropout_key(m, site, width));
    return buffer;
}

// inputs, targets are (B, T) token ids in host memory, a target < 0 not scored.
// Returns the mean loss over scored positions (-1 if none); m->losses gets the loss of
// every position. The logits are computed logit_rows rows at a time and never held
// whole, so with dloss > 0 (training) the output layer's backward pass is done here
// too, on each chunk while it is at hand: the output layer's weights get dloss times
// the gradient of the sum of the scored losses, and acts.dln the gradient with respect
// to lnf, for gpt_backward to go on from.
static double gpt_forward(GPT* m, const int* inputs, const int* targets, int B, int T, float dloss) {
    const GPTConfig* c = &m->config;
    if (m->acts_memory == NULL) gpt_allocate(m, B, T);
    if (B > m->batch_size || T > m->seq_len || T > c->maxT)
        fail("forward pass of B=%d T=%d exceeds the allocated B=%d T=%d (context %d)", B, T, m->batch_size,
             m->seq_len, c->maxT);
    for (int i = 0; i < B * T; i++) {
        if (inputs[i] < 0 || inputs[i] >= c->V) fail("token id %d out of range [0, %d)", inputs[i], c->V);
    }
    m->B = B;
    m->T = T;
    to_device(m->inputs, inputs, (size_t)B * T * sizeof(int));
    to_device(m->targets, targets, (size_t)B * T * sizeof(int));
    if (dloss > 0) encoder_index_build(&m->index, inputs, B * T);

    int L = c->L, C = c->C, F = c->F, V = c->V, BT = B * T;
    // layer slices use the allocated sizes, so smaller passes fit in the same buffers
    size_t sBTC = (size_t)m->batch_size * m->seq_len * C, sBT = (size_t)m->batch_size * m->seq_len;
    size_t sBTF = sBT * F;
    Attention a = gpt_attention(m, B, T);
    Attention a_full = gpt_attention(m, m->batch_size, m->seq_len);
    size_t cache_stride = attention_cache_size(&a_full);
    ParameterTensors p = m->p;
    ActivationTensors* s = &m->acts;
    const float* pos = c->learned_pos ? p.wpe : m->pos_table;

    encoder_forward(s->encoded, m->inputs, p.wte, pos, c->embed_scale, B, T, C);
    if (active(m, c->p_embd) > 0)
        dropout_forward(s->encoded, s->encoded, (long)BT * C, c->p_embd, dropout_key(m, 0, C));
    layernorm_forward(s->ln1, s->ln1_mean, s->ln1_rstd, s->encoded, p.ln1w, p.ln1b, BT, C, LAYERNORM_EPS);
    for (int l = 0; l < L; l++) {
        const float* residual = l == 0 ? s->encoded : s->res3 + (l - 1) * sBTC;
        float* ln1 = s->ln1 + l * sBTC;
        float* qkv = s->qkv + l * 3 * sBTC;
        float* atty = s->atty + l * sBTC;
        float* cache = s->attcache + l * cache_stride;
        float* res2 = s->res2 + l * sBTC;
        float* ln2 = s->ln2 + l * sBTC;
        float* fch = s->fch + l * sBTF;
        float* fch_act = s->fch_act + l * sBTF;
        float* res3 = s->res3 + l * sBTC;

        // attention block: res2 = residual + drop(proj(attn(qkv(ln1)))), with ln1 = LN(residual) done
        matmul_forward(qkv, ln1, p.qkvw + (size_t)l * 3 * C * C, p.qkvb + l * 3 * C, BT, C, 3 * C);
        attention_forward(&a, atty, cache, qkv, qkv + C, qkv + 2 * C, s->attscratch);
        matmul_forward(s->branch, atty, p.projw + (size_t)l * C * C, p.projb + l * C, BT, C, C);
        if (active(m, c->p_attn) > 0)
            dropout_forward(s->branch, s->branch, (long)BT * C, c->p_attn, dropout_key(m, 1 + 3 * l, C));
        residual_layernorm_forward(res2, ln2, s->ln2_mean + l * sBT, s->ln2_rstd + l * sBT, residual, s->branch,
                                   p.ln2w + l * C, p.ln2b + l * C, BT, C, LAYERNORM_EPS);

        // MLP block: res3 = res2 + drop(fc2(drop(act(fc(ln2))))); GELU takes fc's bias in its pass
        if (c->relu) {
            matmul_forward(fch, ln2, p.fcw + (size_t)l * F * C, p.fcb + l * F, BT, C, F);
            relu_forward(fch_act, fch, (long)BT * F);
        } else {
            matmul_forward(fch, ln2, p.fcw + (size_t)l * F * C, NULL, BT, C, F);
            bias_gelu_forward(fch_act, fch, p.fcb + l * F, BT, F);
        }
        if (active(m, c->p_hidden) > 0)
            dropout_forward(fch_act, fch_act, (long)BT * F, c->p_hidden, dropout_key(m, 2 + 3 * l, F));
        matmul_forward(s->branch, fch_act, p.fc2w + (size_t)l * C * F, p.fc2b + l * C, BT, F, C);
        if (active(m, c->p_resid) > 0)
            dropout_forward(s->branch, s->branch, (long)BT * C, c->p_resid, dropout_key(m, 3 + 3 * l, C));
        // the next LayerNorm (the next layer's first, or the final one) in the same pass
        int last = l == L - 1;
        residual_layernorm_forward(res3, last ? s->lnf : s->ln1 + (l + 1) * sBTC,
                                   last ? s->lnf_mean : s->ln1_mean + (l + 1) * sBT,
                                   last ? s->lnf_rstd : s->ln1_rstd + (l + 1) * sBT, res2, s->branch,
                                   last ? p.lnfw : p.ln1w + (l + 1) * C, last ? p.lnfb : p.ln1b + (l + 1) * C, BT, C,
                                   LAYERNORM_EPS);
    }
    // the output layer and the loss, a chunk of rows at a time
    const float* wout = c->tied ? p.wte : p.lm_head;
    float* dwout = c->tied ? m->g.wte : m->g.lm_head;
    if (dloss > 0) CUDA_CHECK(cudaMemset(s->dln, 0, (size_t)BT * C * sizeof(float)));
    for (int r0 = 0; r0 < BT; r0 += m->logit_rows) {
        int n = BT - r0 < m->logit_rows ? BT - r0 : m->logit_rows;
        const float* lnf = s->lnf + (size_t)r0 * C;
        matmul_forward(s->logits, lnf, wout, NULL, n, C, V);
        if (dloss > 0) {
            crossentropy_forward_backward(s->losses + r0, s->logits, m->targets + r0, dloss, n, V);
            matmul_backward(s->dln + (size_t)r0 * C, dwout, NULL, s->logits, lnf, wout, n, C, V);
        } else {
            crossentropy_forward(s->losses + r0, s->logits, m->targets + r0, n, V);
        }
    }
    to_host(m->losses, s->losses, (size_t)BT * sizeof(float));
    double sum = 0;
    long count = 0;
    for (int i = 0; i < BT; i++) {
        if (targets[i] < 0) continue;
        sum += m->losses[i];
        count++;
    }
    return count > 0 ? sum / count : -1;
}

// grads += the gradient of the last forward pass's dloss * (sum of the scored losses),
// continuing from its output layer (a training forward pass, dloss > 0).
static void gpt_backward(GPT* m) {
    const GPTConfig* c = &m->config;
    int B = m->B, T = m->T;
    int L = c->L, C = c->C, F = c->F, BT = B * T;
    size_t sBTC = (size_t)m->batch_size * m->seq_len * C, sBT = (size_t)m->batch_size * m->seq_len;
    size_t sBTF = sBT * F;
    size_t nBTC = (size_t)BT * C, nBTF = (size_t)BT * F;
    Attention a = gpt_attention(m, B, T);
    Attention a_full = gpt_attention(m, m->batch_size, m->seq_len);
    size_t cache_stride = attention_cache_size(&a_full);
    ParameterTensors p = m->p, g = m->g;
    ActivationTensors* s = &m->acts;
    float* dh1 = s->dhidden;
    float* dh2 = s->dhidden + nBTF;

    CUDA_CHECK(cudaMemset(s->dres, 0, nBTC * sizeof(float)));
    layernorm_backward(s->dres, g.lnfw, g.lnfb, s->dln, s->res3 + (L - 1) * sBTC, p.lnfw, s->lnf_mean, s->lnf_rstd,
                       BT, C);
    for (int l = L - 1; l >= 0; l--) {
        const float* residual = l == 0 ? s->encoded : s->res3 + (l - 1) * sBTC;
        float* ln1 = s->ln1 + l * sBTC;
        float* qkv = s->qkv + l * 3 * sBTC;
        float* atty = s->atty + l * sBTC;
        float* cache = s->attcache + l * cache_stride;
        float* res2 = s->res2 + l * sBTC;
        float* ln2 = s->ln2 + l * sBTC;
        float* fch = s->fch + l * sBTF;
        float* fch_act = s->fch_act + l * sBTF;

        // MLP block: res3 = res2 + drop(fc2(drop(act(fc(ln2(res2))))))
        const float* dbranch = dropout_grad(m, s->dbranch, s->dres, (long)nBTC, c->p_resid, 3 + 3 * l, C);
        CUDA_CHECK(cudaMemset(dh1, 0, nBTF * sizeof(float)));
        matmul_backward(dh1, g.fc2w + (size_t)l * C * F, g.fc2b + l * C, dbranch, fch_act, p.fc2w + (size_t)l * C * F,
                        BT, F, C);
        const float* dact = dropout_grad(m, dh2, dh1, (long)nBTF, c->p_hidden, 2 + 3 * l, F);
        float* dpre = dact == dh1 ? dh2 : dh1;
        CUDA_CHECK(cudaMemset(s->dln, 0, nBTC * sizeof(float)));
        if (c->relu) {
            CUDA_CHECK(cudaMemset(dpre, 0, nBTF * sizeof(float)));
            relu_backward(dpre, fch, dact, (long)nBTF);
            matmul_backward(s->dln, g.fcw + (size_t)l * F * C, g.fcb + l * F, dpre, ln2, p.fcw + (size_t)l * F * C, BT,
                            C, F);
        } else {
            bias_gelu_backward(dpre, g.fcb + l * F, dact, fch, p.fcb + l * F, BT, F);
            matmul_backward(s->dln, g.fcw + (size_t)l * F * C, NULL, dpre, ln2, p.fcw + (size_t)l * F * C, BT, C, F);
        }
        layernorm_backward(s->dres, g.ln2w + l * C, g.ln2b + l * C, s->dln, res2, p.ln2w + l * C,
                           s->ln2_mean + l * sBT, s->ln2_rstd + l * sBT, BT, C);

        // attention block: res2 = residual + drop(proj(attn(qkv(ln1(residual)))))
        dbranch = dropout_grad(m, s->dbranch, s->dres, (long)nBTC, c->p_attn, 1 + 3 * l, C);
        CUDA_CHECK(cudaMemset(s->datty, 0, nBTC * sizeof(float)));
        matmul_backward(s->datty, g.projw + (size_t)l * C * C, g.projb + l * C, dbranch, atty,
                        p.projw + (size_t)l * C * C, BT, C, C);
        CUDA_CHECK(cudaMemset(s->dqkv, 0, 3 * nBTC * sizeof(float)));
        attention_backward(&a, s->dqkv, s->dqkv + C, s->dqkv + 2 * C, s->datty, atty, cache, qkv, qkv + C,
                           qkv + 2 * C, s->attscratch);
        CUDA_CHECK(cudaMemset(s->dln, 0, nBTC * sizeof(float)));
        matmul_backward(s->dln, g.qkvw + (size_t)l * 3 * C * C, g.qkvb + l * 3 * C, s->dqkv, ln1,
                        p.qkvw + (size_t)l * 3 * C * C, BT, C, 3 * C);
        layernorm_backward(s->dres, g.ln1w + l * C, g.ln1b + l * C, s->dln, residual, p.ln1w + l * C,
                           s->ln1_mean + l * sBT, s->ln1_rstd + l * sBT, BT, C);
    }
    const float* dembed = dropout_grad(m, s->dbranch, s->dres, (long)nBTC, c->p_embd, 0, C);
    encoder_backward(g.wte, c->learned_pos ? g.wpe : NULL, dembed, &m->index, c->embed_scale, B, T, C);
}

// ----------------------------------------------------------------------------
// Recurrent generation: one token at a time through attention_step, every layer's
// heads at once, so each new token costs O(1) in the context length with flow and
// linear attention. The logits come back to the host for sampling.

typedef struct {
    float* states;  // (L, H, state) attention state per layer and head, on the GPU
    size_t state_size;
    float *x, *ln, *mean, *rstd, *qkv, *atty, *branch, *h, *h_act, *logits; // on the GPU
    int* token;     // on the GPU
    float* logits_host; // (V)
} GenState;

static GenState gen_state_make(const GPT* m) {
    const GPTConfig* c = &m->config;
    GenState g;
    Attention a = gpt_attention(m, 1, c->maxT);
    g.state_size = attention_state_size(&a, c->maxT);
    g.states = cuda_floats((size_t)c->L * c->H * g.state_size, "the generation state");
    CUDA_CHECK(cudaMemset(g.states, 0, (size_t)c->L * c->H * g.state_size * sizeof(float)));
    size_t C = c->C;
    float* buf = cuda_floats(7 * C + 2 * (size_t)c->F + 2 + (size_t)c->V, "generation");
    g.x = buf; buf += C;
    g.ln = buf; buf += C;
    g.mean = buf++;
    g.rstd = buf++;
    g.qkv = buf; buf += 3 * C;
    g.atty = buf; buf += C;
    g.branch = buf; buf += C;
    g.h = buf; buf += c->F;
    g.h_act = buf; buf += c->F;
    g.logits = buf;
    CUDA_CHECK(cudaMalloc(&g.token, sizeof(int)));
    g.logits_host = (float*)malloc_check((size_t)c->V * sizeof(float));
    return g;
}

static void gen_state_reset(const GPT* m, GenState* g) {
    CUDA_CHECK(cudaMemset(g->states, 0, (size_t)m->config.L * m->config.H * g->state_size * sizeof(float)));
}

static void gen_state_free(GenState* g) {
    CUDA_CHECK(cudaFree(g->states));
    CUDA_CHECK(cudaFree(g->x));
    CUDA_CHECK(cudaFree(g->token));
    free(g->logits_host);
}

// Feeds token at position t (states hold positions 0..t-1); g->logits_host gets the
// next-token logits (V). Same arithmetic as gpt_forward in eval mode.
static void gpt_step(const GPT* m, GenState* g, int token, int t) {
    const GPTConfig* c = &m->config;
    int C = c->C, F = c->F, H = c->H;
    ParameterTensors p = m->p;
    const float* pos = c->learned_pos ? p.wpe : m->pos_table;
    Attention a = gpt_attention(m, 1, c->maxT);
    to_device(g->token, &token, sizeof(int));
    encoder_forward(g->x, g->token, p.wte, pos + (size_t)t * C, c->embed_scale, 1, 1, C);
    for (int l = 0; l < c->L; l++) {
        layernorm_forward(g->ln, g->mean, g->rstd, g->x, p.ln1w + l * C, p.ln1b + l * C, 1, C, LAYERNORM_EPS);
        matmul_forward(g->qkv, g->ln, p.qkvw + (size_t)l * 3 * C * C, p.qkvb + l * 3 * C, 1, C, 3 * C);
        attention_step(&a, g->states + (size_t)l * H * g->state_size, t, g->atty, g->qkv, g->qkv + C,
                       g->qkv + 2 * C);
        matmul_forward(g->branch, g->atty, p.projw + (size_t)l * C * C, p.projb + l * C, 1, C, C);
        residual_forward(g->x, g->x, g->branch, C);
        layernorm_forward(g->ln, g->mean, g->rstd, g->x, p.ln2w + l * C, p.ln2b + l * C, 1, C, LAYERNORM_EPS);
        matmul_forward(g->h, g->ln, p.fcw + (size_t)l * F * C, p.fcb + l * F, 1, C, F);
        if (c->relu) relu_forward(g->h_act, g->h, F);
        else gelu_forward(g->h_act, g->h, F);
        matmul_forward(g->branch, g->h_act, p.fc2w + (size_t)l * C * F, p.fc2b + l * C, 1, F, C);
        residual_forward(g->x, g->x, g->branch, C);
    }
    layernorm_forward(g->ln, g->mean, g->rstd, g->x, p.lnfw, p.lnfb, 1, C, LAYERNORM_EPS);
    matmul_forward(g->logits, g->ln, c->tied ? p.wte : p.lm_head, NULL, 1, C, c->V);
    to_host(g->logits_host, g->logits, (size_t)c->V * sizeof(float));
}

// The model as evaluation and generation see it (models/gpt.h's GptRunner).
typedef struct {
    GPT* m;
    GenState g;
} Runner;

static const real* runner_score(void* r, const int* inputs, const int* targets, int n, int T) {
    Runner* x = (Runner*)r;
    int saved = x->m->training;
    x->m->training = 0;
    gpt_forward(x->m, inputs, targets, n, T, 0);
    x->m->training = saved;
    return x->m->losses;
}

static const real* runner_step(void* r, int token, int t) {
    Runner* x = (Runner*)r;
    gpt_step(x->m, &x->g, token, t);
    return x->g.logits_host;
}

static void runner_restart(void* r) {
    Runner* x = (Runner*)r;
    gen_state_reset(x->m, &x->g);
}

// Prints the prompt and n sampled tokens (gpt_generate).
static void generate(GPT* m, const Vocab* vocab, const char* vocab_path, const char* prompt, int n,
                     double temperature, int top_k, Rng* rng) {
    Runner x = {m, gen_state_make(m)};
    GptRunner run = {&x, runner_score, runner_step, runner_restart};
    gpt_generate(&run, m->config.maxT, m->config.V, vocab, vocab_path, prompt, n, temperature, top_k, rng);
    gen_state_free(&x.g);
}

// The validation loss over the windows of the stream (gpt_evaluate).
static EvalResult evaluate(GPT* m, const Dist* dist, const TokenData* d, int B, int T, int W, int max_batches,
                           int* inputs, int* targets) {
    Runner x;
    memset(&x, 0, sizeof x); // no generation state: scoring needs none
    x.m = m;
    GptRunner run = {&x, runner_score, NULL, NULL};
    return gpt_evaluate(&run, dist, d, B, T, W, max_batches, inputs, targets);
}

// ----------------------------------------------------------------------------
// The program

#ifndef TESTING

// This GPU's float32 peak: 2 FLOPs per fused multiply-add on every CUDA core at the
// peak clock. Ampere's A100 (8.0) and the GPUs before it have 64 float32 lanes per
// multiprocessor, the later ones 128. (TF32 products on the tensor cores go beyond it.)
static double gpu_peak(const cudaDeviceProp* prop, int device) {
    int khz;
    CUDA_CHECK(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, device));
    int lanes = prop->major < 8 || (prop->major == 8 && prop->minor == 0) ? 64 : 128;
    return 2.0 * lanes * prop->multiProcessorCount * khz * 1e3;
}

// Stops before allocating when the GPU has less free memory than a run needs (or
// memory_limit GiB, when set).
static void gpu_check_memory(double bytes, double limit_gb, const char* name) {
    size_t free_bytes, total;
    CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
    double limit = limit_gb > 0 ? limit_gb * 1073741824.0 : (double)free_bytes;
    printf("GPU memory: %.2f GiB needed, limit %.2f GiB%s\n", bytes / 1073741824.0, limit / 1073741824.0,
           limit_gb > 0 ? " (memory_limit)" : " (free on this GPU)");
    if (bytes > limit && limit_gb > 0)
        fail("the run needs %.2f GiB of GPU memory, more than the %.2f GiB of memory_limit; make the model or the "
             "batch smaller, or raise --memory_limit (GiB)", bytes / 1073741824.0, limit / 1073741824.0);
    if (bytes > limit)
        fail("the run needs %.2f GiB of GPU memory, more than the %.2f GiB free on the %s; make the model or the "
             "batch smaller", bytes / 1073741824.0, limit / 1073741824.0, name);
}

static void usage(void) {
    printf("usage: train_gpt_flow_cuda [--config FILE.json] [--resume CHECKPOINT] [--FIELD VALUE]...\n"
           "The GPU trainer: train_gpt_flow's settings, checkpoints and logs, on an NVIDIA GPU (or one GPU\n"
           "per rank under mpirun). Settings are applied in this order: built-in defaults (the tinyshakespeare\n"
           "run), the checkpoint's own settings (--resume), the JSON file (--config), the command line.\n"
           "--resume continues a run exactly (model, optimizer, step, data position, random state), from\n"
           "either trainer's checkpoint; with --mode eval or sample it loads the model to evaluate or sample from.\n");
    config_print_help(&CONFIG_SCHEMA);
    printf("attention kinds (--attention):");
    for (int i = 0; i < NUM_ATTENTION_KINDS; i++) printf(" %s", ATTENTION_KINDS[i].name);
    printf(" (train_gpt_flow --help says what they are)\n");
}

int main(int argc, char** argv) {
    Dist dist = dist_init(&argc, &argv);
    Config cfg;
    Run run;
    run_settings(&run, &dist, &CONFIG_SCHEMA, &cfg, sizeof cfg, argc, argv, usage, NULL);
    int train = strcmp(cfg.mode, "train") == 0, eval_only = strcmp(cfg.mode, "eval") == 0;
    if (cfg.context_window >= cfg.context)
        fail("configuration: context_window must be below context %d, got %d", cfg.context, cfg.context_window);
    if (cfg.zero) fail("configuration: the GPU trainer has no ZeRO-1 (zero 1); each GPU keeps AdamW's moments whole");

    int ngpus = 0;
    if (cudaGetDeviceCount(&ngpus) != cudaSuccess || ngpus == 0) fail("no CUDA GPU found (cudaGetDeviceCount)");
    int device = gpu_dist_device(&dist);
    if (device >= ngpus) fail("rank %d would drive GPU %d, but this host has %d", dist.rank, device, ngpus);
    cuda_setup(device, cfg.tf32);
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    GpuDist gdist = gpu_dist_init(&dist);

    Vocab vocab = {0, NULL};
    if (cfg.vocab[0]) vocab = vocab_load(cfg.vocab);
    if (cfg.vocab_size == 0) {
        if (vocab.size == 0) fail("configuration: vocab_size is 0 and no vocabulary file is given");
        cfg.vocab_size = (int)vocab.size;
    }
    if (vocab.size > cfg.vocab_size)
        fail("%s: the vocabulary has %ld tokens, more than vocab_size %d", cfg.vocab, vocab.size, cfg.vocab_size);
    run_check_fixed(&run);
    GPTConfig mc = gpt_config(&cfg);
    int B = cfg.batch_size, T = cfg.context;

    // every input is checked before anything is written
    TokenData train_data = {NULL, 0}, val_data = {NULL, 0};
    if (train) {
        train_data = load_tokens(cfg.train_data, cfg.vocab_size, "train_data");
        if (train_data.n < T + 1)
            fail("%s: %ld tokens, fewer than context + 1 = %d", cfg.train_data, train_data.n, T + 1);
    }
    if (cfg.val_data[0] && strcmp(cfg.mode, "sample") != 0) {
        val_data = load_tokens(cfg.val_data, cfg.vocab_size, "val_data");
        if (val_data.n < T + 1)
            fail("%s: %ld tokens, fewer than context + 1 = %d", cfg.val_data, val_data.n, T + 1);
    }
    if (eval_only && val_data.n == 0) fail("configuration: mode eval needs val_data");
    run_check_ranks(&run, dist_hash(0, train_data.tokens, (size_t)train_data.n * sizeof(uint32_t)),
                    dist_hash(0, val_data.tokens, (size_t)val_data.n * sizeof(uint32_t)));
    // this rank's samples [lo, hi) of every batch of B
    if (train || eval_only) dist_check_batch(&dist, B);
    long lo, hi;
    dist_part(&dist, B, &lo, &hi);
    int part = (int)(hi - lo);
    if (train || eval_only) {
        double gpu_bytes, host_bytes;
        gpt_memory(&mc, part, T, &gpu_bytes, &host_bytes);
        run_check_memory(host_bytes, cfg.memory_limit);
        gpu_check_memory(gpu_bytes, cfg.memory_limit, prop.name);
    }

    GPT model;
    gpt_build(&model, &mc);
    Rng rng = rng_make((uint64_t)cfg.seed);
    long step = 0, data_pos = 0;
    if (!run_restore(&run, &model.params, &step, &data_pos, &rng)) gpt_init(&model, &rng);
    // one bucket of every gradient: dist_params_share hands rank 0's parameters and
    // moments to the others; the GPUs sum the gradients themselves (gpu_dist_sum)
    DistParams dp = dist_params_make(&dist, &model.params, 0);
    dist_params_bucket(&dp, 0, model.params.grads, model.params.count);
    dist_params_share(&dp);
    gpt_to_device(&model);
    if (train || eval_only) gpt_allocate(&model, part, T);
    printf("model: %d layers, %d heads, %d channels, MLP %d, context %d, vocabulary %d, %s attention "
           "(clamp %g), %s positions | %ld parameters | %s, %s products\n",
           mc.L, mc.H, mc.C, mc.F, mc.maxT, mc.V, mc.attention, (double)mc.clamp, cfg.positions, model.params.count,
           prop.name, cfg.tf32 ? "TF32" : "float32");
    // this rank's part of every micro-batch of an update
    size_t update_tokens = (size_t)cfg.grad_accum * part * T;
    int* inputs = (int*)malloc_check(update_tokens * sizeof(int));
    int* targets = (int*)malloc_check(update_tokens * sizeof(int));

    // training logs; evaluation writes one only when asked for; sampling only prints
    run_outputs(&run, cfg.log_file, cfg.checkpoint, cfg.checkpoint_interval, cfg.attention, cfg.train_data);
    run_open_log(&run, train || (eval_only && run_given(&run, "log_file")), run.resume_path != NULL && train);

    // evaluation mode scores the whole shard, whatever eval_batches the training used
    if (eval_only)
        log_eval(&run.log, step, evaluate(&model, &dist, &val_data, B, T, cfg.context_window, 0, inputs, targets),
                 1, T);
    if (train) {
        printf("training: %ld tokens, %ld validation tokens | %d x %d tokens x %d micro-batches per update | "
               "%s batches | %s schedule\n", train_data.n, val_data.n, B, T, cfg.grad_accum, cfg.sampling,
               cfg.schedule);
        Schedule sched = {(ScheduleKind)schedule_kind_from_name(cfg.schedule), cfg.lr, cfg.min_lr,
                          cfg.warmup_init_lr, cfg.warmup_steps, cfg.steps};
        AdamW opt = {cfg.beta1, cfg.beta2, cfg.adam_eps, cfg.weight_decay, cfg.grad_clip};
        int random = strcmp(cfg.sampling, "random") == 0;
        double flops = cfg.grad_accum * gpt_flops(&model, B, T), peak = dist_sum(&dist, gpu_peak(&prop, device));
        printf("%.2f GFLOP per update; the GPUs' float32 peak %.1f TFLOP/s (%d x %s)\n", flops * 1e-9, peak * 1e-12,
               dist.size, prop.name);
        Progress prog = progress_start_at(cfg.steps, (double)B * T * cfg.grad_accum, "tok", cfg.log_interval,
                                          cfg.eval_interval, val_data.n > 0, flops, peak);
        float dloss = (float)(1.0 / ((double)B * T * cfg.grad_accum));
        double share = (double)part / B; // of each micro-batch's loss
        for (; step < cfg.steps; step++) {
            if (cfg.eval_interval > 0 && step % cfg.eval_interval == 0 && val_data.n > 0) {
                EvalResult r = evaluate(&model, &dist, &val_data, B, T, cfg.context_window, cfg.eval_batches,
                                        inputs, targets);
                prog.eval_seconds = r.seconds;
                log_eval(&run.log, step, r, 0, T);
            }
            progress_begin(&prog);
            double lr = schedule_lr(&sched, step);
            gpt_zero_grad(&model);
            // the update draws all its samples, then its dropout seed, as the CPU trainer does
            for (int micro = 0; micro < cfg.grad_accum; micro++) {
                size_t at = (size_t)micro * part * T;
                next_batch(&train_data, B, lo, hi, T, random, &rng, &data_pos, inputs + at, targets + at);
            }
            model.dropout_seed = rng_next(&rng);
            double loss = 0;
            model.training = 1;
            for (int micro = 0; micro < cfg.grad_accum; micro++) {
                size_t at = (size_t)micro * part * T;
                model.first_sample = (long)micro * B + lo;
                loss += gpt_forward(&model, inputs + at, targets + at, part, T, dloss) * share / cfg.grad_accum;
                gpt_backward(&model);
            }
            model.training = 0;
            loss = dist_sum(&dist, loss);
            gpu_dist_sum(&gdist, model.d_grads, (size_t)model.params.count);
            double norm = adamw_step(&model.params, model.d_params, model.d_grads, model.d_m, model.d_v, &opt, lr,
                                     loss, step + 1);
            CUDA_CHECK(cudaDeviceSynchronize());
            progress_end(&prog, &run.log, step + 1, loss, lr, norm, -1);
            // as run_save_due: every checkpoint_interval updates, but not the last (saved below)
            if (cfg.checkpoint_interval > 0 && (step + 1) % cfg.checkpoint_interval == 0 && step + 1 < cfg.steps) {
                gpt_to_host(&model);
                run_save(&run, &dp, step + 1, data_pos, &rng);
            }
        }
        progress_finish(&prog);
        if (val_data.n > 0)
            log_eval(&run.log, step, evaluate(&model, &dist, &val_data, B, T, cfg.context_window, cfg.eval_batches,
                                              inputs, targets), 0, T);
        gpt_to_host(&model);
        run_save(&run, &dp, step, data_pos, &rng);
    }
    // only rank 0 prints, so only rank 0 samples
    if (cfg.sample_tokens > 0 && !eval_only && dist.rank == 0) {
        if (vocab.size == 0) fail("configuration: sampling needs a vocabulary file (vocab)");
        Rng sample_rng = rng_make((uint64_t)cfg.seed ^ 0x5eed5eedULL);
        printf("---- sample (temperature %g, top-k %d)\n", cfg.temperature, cfg.top_k);
        generate(&model, &vocab, cfg.vocab, cfg.prompt, cfg.sample_tokens, cfg.temperature, cfg.top_k, &sample_rng);
        printf("----\n");
    }
    run_free(&run);
    free(inputs);
    free(targets);
    free(train_data.tokens);
    free(val_data.tokens);
    vocab_free(&vocab);
    dist_params_free(&dp);
    gpt_free(&model);
    gpu_dist_free(&gdist);
    CUBLAS_CHECK(cublasDestroy(cublas));
    dist_finalize();
    return 0;
}
#endif
