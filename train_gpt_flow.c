/*
Causal language model with Flow-Attention (Flowformer, Wu et al. ICML 2022):
a GPT-style decoder trained in pure C, every forward and backward pass written
by hand, in the spirit of karpathy's llm.c train_gpt2.c.

  make && ./train_gpt_flow            character-level tinyshakespeare, nanoGPT's CPU run
  ./train_gpt_flow --config configs/gpt_wikitext103_flow.json    the paper's WikiText-103 run
  ./train_gpt_flow --help             every setting

Model: token embedding (optionally scaled by sqrt(C)) plus learned or sinusoidal
positions, then pre-LayerNorm blocks x += Attn(LN(x)), x += MLP(LN(x)), a final
LayerNorm and an output layer tied to the token embedding (or untied).
Attention is any kind of layers/attention.h: "flow" (causal Flow-Attention),
"softmax" or "linear". The settings and the model's table of tensors are
models/gpt.h's, shared with the GPU trainer train_gpt_flow.cu, so that a
checkpoint of either resumes in the other. Resuming, checkpoints and the log are
utils/run.h's; batches come from utils/token_loader.h. Under mpirun, each rank
computes its part of every batch and the gradients are summed across the ranks
(utils/dist.h).
*/
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <stddef.h>
#include <omp.h>
#include "utils/real.h"
#include "layers/encoder.h"
#include "layers/layernorm.h"
#include "layers/matmul.h"
#include "layers/attention.h"
#include "layers/gelu.h"
#include "layers/relu.h"
#include "layers/dropout.h"
#include "layers/residual.h"
#include "layers/crossentropy.h"
#include "layers/adamw.h"
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

// ----------------------------------------------------------------------------
// The model: models/gpt.h describes it (GPTConfig, ParameterTensors, the table of tensors)

typedef struct {
    real* encoded;   // (B, T, C) embeddings (after dropout)
    real* ln1;       // (L, B, T, C)
    real* ln1_mean;  // (L, B, T)
    real* ln1_rstd;  // (L, B, T)
    real* qkv;       // (L, B, T, 3C)
    real* atty;      // (L, B, T, C) attention output, heads concatenated
    real* attcache;  // (L, attention_cache_size) what attention's backward needs
    real* res2;      // (L, B, T, C) stream after the attention block
    real* ln2;       // (L, B, T, C)
    real* ln2_mean;  // (L, B, T)
    real* ln2_rstd;  // (L, B, T)
    real* fch;       // (L, B, T, F) MLP hidden before the activation (before fc's bias with GELU)
    real* fch_act;   // (L, B, T, F) after the activation (and dropout)
    real* res3;      // (L, B, T, C) stream after the MLP block
    real* lnf;       // (B, T, C)
    real* lnf_mean;  // (B, T)
    real* lnf_rstd;  // (B, T)
    real* logits;    // (B, T, V); the backward pass turns it into its gradient
    real* lse;       // (B, T) log-sum-exp of each row of logits
    real* losses;    // (B, T)
    real* branch;    // (B, T, C) a block's output before the residual add
    // gradients of activations, reused layer after layer by the backward pass
    real* dres;      // (B, T, C) gradient of the residual stream
    real* dbranch;   // (B, T, C)
    real* dln;       // (B, T, C)
    real* datty;     // (B, T, C)
    real* dqkv;      // (B, T, 3C)
    real* dhidden;   // (2, B, T, F)
} ActivationTensors;

typedef struct {
    GPTConfig config;
    const AttentionKind* attention; // config.attention's row of layers/attention.h
    Parameters params;        // the tensors' table and memory: parameters, gradients, AdamW moments
    ParameterTensors p, g;    // the parameters and their gradients, by name
    ActivationTensors acts;
    real* acts_memory;
    size_t acts_size;         // reals of acts_memory
    int batch_size;           // B the activations were allocated for
    int seq_len;              // T likewise
    int B, T;                 // sizes of the last forward pass
    real* pos_table;          // (maxT, C) sinusoids when positions are not learned
    int* inputs;              // (B, T) of the last forward pass
    int* targets;             // (B, T)
    int training;             // 1: dropout active
    uint64_t dropout_seed;    // the masks of one update derive from it
    long first_sample;        // index of the forward pass's first sample in the update's global batch
    DistParams* dp;           // the backward pass starts summing finished buckets across ranks (NULL: not)
} GPT;

// Describes the tensors (models/gpt.h); gpt_build allocates them.
static void gpt_layout(GPT* m, const GPTConfig* c) {
    memset(m, 0, sizeof(*m));
    m->config = *c;
    m->attention = attention_kind_or_fail(c->attention);
    gpt_describe(&m->params, &m->p, &m->g, c);
}

static void gpt_build(GPT* m, const GPTConfig* c) {
    gpt_layout(m, c);
    params_allocate(&m->params);
    if (!c->learned_pos) {
        m->pos_table = (real*)malloc_check((size_t)c->maxT * c->C * sizeof(real));
        sinusoid_table(m->pos_table, c->maxT, c->C);
    }
}

static void gpt_init(GPT* m, Rng* rng) { params_init(&m->params, rng); }

static void gpt_free(GPT* m) {
    params_free(&m->params);
    free(m->acts_memory);
    free(m->pos_table);
    free(m->inputs);
    free(m->targets);
}

// The attention of every layer: causal, over the fused (B,T,3C) qkv buffer.
static Attention gpt_attention(const GPT* m, int B, int T) {
    const GPTConfig* c = &m->config;
    Attention a = attention_make(m->attention, 1, B, T, c->H, c->C / c->H);
    a.q_stride = a.k_stride = a.v_stride = 3 * c->C;
    a.clamp = c->clamp;
    return a;
}

// Lays out the activations for batches of up to B x T in base (NULL: only counts);
// returns the reals needed.
static size_t gpt_carve(GPT* m, real* base, int B, int T) {
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
    s->logits = carve(base, &n, BT * V);
    s->lse = carve(base, &n, BT);
    s->losses = carve(base, &n, BT);
    s->branch = carve(base, &n, BT * C);
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
    m->acts_memory = (real*)malloc_check(m->acts_size * sizeof(real));
    gpt_carve(m, m->acts_memory, B, T);
    m->inputs = (int*)malloc_check((size_t)B * T * sizeof(int));
    m->targets = (int*)malloc_check((size_t)B * T * sizeof(int));
    m->batch_size = B;
    m->seq_len = T;
}

// Bytes a rank computing batches of B x T needs: parameters, gradients, AdamW's
// moments (with ZeRO-1, its part), activations and their gradients.
static double gpt_memory(const GPTConfig* c, int B, int T, const Dist* dist, int zero) {
    GPT m;
    gpt_layout(&m, c);
    double reals = dist_params_reals(dist, m.params.count, zero) + (double)gpt_carve(&m, NULL, B, T) +
                   (double)c->maxT * c->C;
    params_free(&m.params);
    return reals * sizeof(real);
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

static real active(const GPT* m, real p) { return m->training ? p : 0; }

// inputs, targets are (B, T) token ids; targets may be NULL (logits only), and a
// target < 0 is not scored. Returns the mean loss over scored positions (-1 if none).
static double gpt_forward(GPT* m, const int* inputs, const int* targets, int B, int T) {
    const GPTConfig* c = &m->config;
    if (m->acts_memory == NULL) gpt_allocate(m, B, T);
    if (B > m->batch_size || T > m->seq_len || T > c->maxT)
        fail("forward pass of B=%d T=%d exceeds the allocated B=%d T=%d (context %d)", B, T,
             m->batch_size, m->seq_len, c->maxT);
    for (int i = 0; i < B * T; i++) {
        if (inputs[i] < 0 || inputs[i] >= c->V)
            fail("token id %d out of range [0, %d)", inputs[i], c->V);
    }
    m->B = B;
    m->T = T;
    memcpy(m->inputs, inputs, (size_t)B * T * sizeof(int));
    if (targets != NULL) memcpy(m->targets, targets, (size_t)B * T * sizeof(int));

    int L = c->L, C = c->C, F = c->F, V = c->V, BT = B * T;
    // layer slices use the allocated sizes, so smaller passes fit in the same buffers
    size_t sBTC = (size_t)m->batch_size * m->seq_len * C, sBT = (size_t)m->batch_size * m->seq_len;
    size_t sBTF = sBT * F;
    Attention a = gpt_attention(m, B, T);
    Attention a_full = gpt_attention(m, m->batch_size, m->seq_len);
    size_t cache_stride = attention_cache_size(&a_full);
    ParameterTensors p = m->p;
    ActivationTensors* s = &m->acts;
    const real* pos = c->learned_pos ? p.wpe : m->pos_table;

    encoder_forward(s->encoded, inputs, p.wte, pos, c->embed_scale, B, T, C);
    if (active(m, c->p_embd) > 0)
        dropout_forward(s->encoded, s->encoded, (long)BT * C, c->p_embd, dropout_key(m, 0, C));
    layernorm_forward(s->ln1, s->ln1_mean, s->ln1_rstd, s->encoded, p.ln1w, p.ln1b, BT, C, LAYERNORM_EPS);
    for (int l = 0; l < L; l++) {
        const real* residual = l == 0 ? s->encoded : s->res3 + (l - 1) * sBTC;
        real* ln1 = s->ln1 + l * sBTC;
        real* qkv = s->qkv + l * 3 * sBTC;
        real* atty = s->atty + l * sBTC;
        real* cache = s->attcache + l * cache_stride;
        real* res2 = s->res2 + l * sBTC;
        real* ln2 = s->ln2 + l * sBTC;
        real* fch = s->fch + l * sBTF;
        real* fch_act = s->fch_act + l * sBTF;
        real* res3 = s->res3 + l * sBTC;

        // attention block: res2 = residual + drop(proj(attn(qkv(ln1)))), with ln1 = LN(residual) done
        matmul_forward(qkv, ln1, p.qkvw + (size_t)l * 3 * C * C, p.qkvb + l * 3 * C, BT, C, 3 * C);
        attention_forward(&a, atty, cache, qkv, qkv + C, qkv + 2 * C);
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
                                   last ? p.lnfw : p.ln1w + (l + 1) * C, last ? p.lnfb : p.ln1b + (l + 1) * C,
                                   BT, C, LAYERNORM_EPS);
    }
    matmul_forward(s->logits, s->lnf, c->tied ? p.wte : p.lm_head, NULL, BT, C, V);
    if (targets == NULL) return -1;
    crossentropy_forward(s->losses, s->lse, s->logits, targets, BT, V);
    double sum = 0;
    long count = 0;
    for (int i = 0; i < BT; i++) {
        if (targets[i] < 0) continue;
        sum += s->losses[i];
        count++;
    }
    return count > 0 ? sum / count : -1;
}

// grads += gradient of dloss * (sum of the scored losses of the last forward
// pass, which must have had targets). Consumes the logits (turned into their gradient).
static void gpt_backward(GPT* m, real dloss) {
    const GPTConfig* c = &m->config;
    int B = m->B, T = m->T;
    int L = c->L, C = c->C, F = c->F, V = c->V, BT = B * T;
    size_t sBTC = (size_t)m->batch_size * m->seq_len * C, sBT = (size_t)m->batch_size * m->seq_len;
    size_t sBTF = sBT * F;
    size_t nBTC = (size_t)BT * C, nBTF = (size_t)BT * F;
    Attention a = gpt_attention(m, B, T);
    Attention a_full = gpt_attention(m, m->batch_size, m->seq_len);
    size_t cache_stride = attention_cache_size(&a_full);
    ParameterTensors p = m->p, g = m->g;
    ActivationTensors* s = &m->acts;
    real* dh1 = s->dhidden;
    real* dh2 = s->dhidden + nBTF;

    crossentropy_backward_inplace(s->logits, s->lse, m->targets, dloss, BT, V);
    memset(s->dln, 0, nBTC * sizeof(real));
    matmul_backward(s->dln, c->tied ? g.wte : g.lm_head, NULL, s->logits, s->lnf,
                    c->tied ? p.wte : p.lm_head, BT, C, V);
    memset(s->dres, 0, nBTC * sizeof(real));
    layernorm_backward(s->dres, g.lnfw, g.lnfb, s->dln, s->res3 + (L - 1) * sBTC, p.lnfw,
                       s->lnf_mean, s->lnf_rstd, BT, C);
    dist_params_ready(m->dp, L);
    for (int l = L - 1; l >= 0; l--) {
        const real* residual = l == 0 ? s->encoded : s->res3 + (l - 1) * sBTC;
        real* ln1 = s->ln1 + l * sBTC;
        real* qkv = s->qkv + l * 3 * sBTC;
        real* atty = s->atty + l * sBTC;
        real* cache = s->attcache + l * cache_stride;
        real* res2 = s->res2 + l * sBTC;
        real* ln2 = s->ln2 + l * sBTC;
        real* fch = s->fch + l * sBTF;
        real* fch_act = s->fch_act + l * sBTF;

        // MLP block: res3 = res2 + drop(fc2(drop(act(fc(ln2(res2))))))
        memset(s->dbranch, 0, nBTC * sizeof(real));
        dropout_backward(s->dbranch, s->dres, (long)nBTC, active(m, c->p_resid), dropout_key(m, 3 + 3 * l, C));
        memset(dh1, 0, nBTF * sizeof(real));
        matmul_backward(dh1, g.fc2w + (size_t)l * C * F, g.fc2b + l * C, s->dbranch, fch_act,
                        p.fc2w + (size_t)l * C * F, BT, F, C);
        real* dact = dh1;
        if (active(m, c->p_hidden) > 0) {
            memset(dh2, 0, nBTF * sizeof(real));
            dropout_backward(dh2, dh1, (long)nBTF, c->p_hidden, dropout_key(m, 2 + 3 * l, F));
            dact = dh2;
        }
        real* dpre = dact == dh1 ? dh2 : dh1;
        memset(s->dln, 0, nBTC * sizeof(real));
        if (c->relu) {
            memset(dpre, 0, nBTF * sizeof(real));
            relu_backward(dpre, fch, dact, (long)nBTF);
            matmul_backward(s->dln, g.fcw + (size_t)l * F * C, g.fcb + l * F, dpre, ln2,
                            p.fcw + (size_t)l * F * C, BT, C, F);
        } else {
            bias_gelu_backward(dpre, g.fcb + l * F, dact, fch, p.fcb + l * F, BT, F);
            matmul_backward(s->dln, g.fcw + (size_t)l * F * C, NULL, dpre, ln2, p.fcw + (size_t)l * F * C, BT, C, F);
        }
        layernorm_backward(s->dres, g.ln2w + l * C, g.ln2b + l * C, s->dln, res2, p.ln2w + l * C,
                           s->ln2_mean + l * sBT, s->ln2_rstd + l * sBT, BT, C);

        // attention block: res2 = residual + drop(proj(attn(qkv(ln1(residual)))))
        memset(s->dbranch, 0, nBTC * sizeof(real));
        dropout_backward(s->dbranch, s->dres, (long)nBTC, active(m, c->p_attn), dropout_key(m, 1 + 3 * l, C));
        memset(s->datty, 0, nBTC * sizeof(real));
        matmul_backward(s->datty, g.projw + (size_t)l * C * C, g.projb + l * C, s->dbranch, atty,
                        p.projw + (size_t)l * C * C, BT, C, C);
        memset(s->dqkv, 0, 3 * nBTC * sizeof(real));
        attention_backward(&a, s->dqkv, s->dqkv + C, s->dqkv + 2 * C, s->datty, atty, cache,
                           qkv, qkv + C, qkv + 2 * C);
        memset(s->dln, 0, nBTC * sizeof(real));
        matmul_backward(s->dln, g.qkvw + (size_t)l * 3 * C * C, g.qkvb + l * 3 * C, s->dqkv, ln1,
                        p.qkvw + (size_t)l * 3 * C * C, BT, C, 3 * C);
        layernorm_backward(s->dres, g.ln1w + l * C, g.ln1b + l * C, s->dln, residual, p.ln1w + l * C,
                           s->ln1_mean + l * sBT, s->ln1_rstd + l * sBT, BT, C);
        dist_params_ready(m->dp, l);
    }
    memset(s->dbranch, 0, nBTC * sizeof(real));
    dropout_backward(s->dbranch, s->dres, (long)nBTC, active(m, c->p_embd), dropout_key(m, 0, C));
    encoder_backward(g.wte, c->learned_pos ? g.wpe : NULL, s->dbranch, m->inputs, c->embed_scale, B, T, C);
    dist_params_ready(m->dp, L + 1);
}

// The gradient buckets (utils/dist.h), each summed across the ranks as soon as
// gpt_backward has finished it: the final LayerNorm and the untied output layer
// (bucket L), then layer l's slice of every stacked tensor (bucket l, from the
// last layer down), then the embeddings (L + 1), which the tied output layer also
// adds to. The tensors are stacked per kind across the layers, so a layer's bucket
// is twelve slices, one message each; reducing per kind instead would have to
// wait for layer 0, the last one the backward pass reaches.
static void gpt_buckets(GPT* m, DistParams* dp) {
    const GPTConfig* c = &m->config;
    long L = c->L, C = c->C, F = c->F;
    ParameterTensors* g = &m->g;
    dist_params_bucket(dp, L, g->lnfw, C);
    dist_params_bucket(dp, L, g->lnfb, C);
    dist_params_bucket(dp, L, g->lm_head, c->tied ? 0 : (long)c->V * C);
    for (long l = L - 1; l >= 0; l--) {
        dist_params_bucket(dp, l, g->fc2b + l * C, C);
        dist_params_bucket(dp, l, g->fc2w + l * C * F, C * F);
        dist_params_bucket(dp, l, g->fcb + l * F, F);
        dist_params_bucket(dp, l, g->fcw + l * F * C, F * C);
        dist_params_bucket(dp, l, g->ln2b + l * C, C);
        dist_params_bucket(dp, l, g->ln2w + l * C, C);
        dist_params_bucket(dp, l, g->projb + l * C, C);
        dist_params_bucket(dp, l, g->projw + l * C * C, C * C);
        dist_params_bucket(dp, l, g->qkvb + l * 3 * C, 3 * C);
        dist_params_bucket(dp, l, g->qkvw + l * 3 * C * C, 3 * C * C);
        dist_params_bucket(dp, l, g->ln1b + l * C, C);
        dist_params_bucket(dp, l, g->ln1w + l * C, C);
    }
    dist_params_bucket(dp, L + 1, g->wte, (long)c->V * C);
    dist_params_bucket(dp, L + 1, g->wpe, c->learned_pos ? (long)c->maxT * C : 0);
}

// ----------------------------------------------------------------------------
// Recurrent generation: one token at a time through attention_step, so each new
// token costs O(1) in the context length with flow and linear attention.

typedef struct {
    real* states; // (L, H, state) attention state per layer and head
    size_t state_size;
    real *x, *ln, *mean, *rstd, *qkv, *atty, *branch, *h, *h_act, *logits;
} GenState;

static GenState gen_state_make(const GPT* m) {
    const GPTConfig* c = &m->config;
    GenState g;
    Attention a = gpt_attention(m, 1, c->maxT);
    g.state_size = attention_state_size(&a, c->maxT);
    g.states = (real*)calloc_check((size_t)c->L * c->H * g.state_size, sizeof(real));
    size_t C = c->C;
    real* buf = (real*)malloc_check((7 * C + 2 * (size_t)c->F + 2 + (size_t)c->V) * sizeof(real));
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
    return g;
}

static void gen_state_reset(const GPT* m, GenState* g) {
    memset(g->states, 0, (size_t)m->config.L * m->config.H * g->state_size * sizeof(real));
}

static void gen_state_free(GenState* g) {
    free(g->states);
    free(g->x);
}

// Feeds token at position t (states hold positions 0..t-1); g->logits gets the
// next-token logits (V). Same arithmetic as gpt_forward in eval mode.
static void gpt_step(const GPT* m, GenState* g, int token, int t) {
    const GPTConfig* c = &m->config;
    int C = c->C, F = c->F, H = c->H, D = C / H;
    ParameterTensors p = m->p;
    const real* pos = c->learned_pos ? p.wpe : m->pos_table;
    Attention a = gpt_attention(m, 1, c->maxT);
    encoder_forward(g->x, &token, p.wte, pos + (size_t)t * C, c->embed_scale, 1, 1, C);
    for (int l = 0; l < c->L; l++) {
        layernorm_forward(g->ln, g->mean, g->rstd, g->x, p.ln1w + l * C, p.ln1b + l * C, 1, C, LAYERNORM_EPS);
        matmul_forward(g->qkv, g->ln, p.qkvw + (size_t)l * 3 * C * C, p.qkvb + l * 3 * C, 1, C, 3 * C);
        for (int h = 0; h < H; h++)
            attention_step(&a, g->states + ((size_t)l * H + h) * g->state_size, t, g->atty + h * D,
                           g->qkv + h * D, g->qkv + C + h * D, g->qkv + 2 * C + h * D);
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
    gpt_forward(x->m, inputs, targets, n, T);
    x->m->training = saved;
    return x->m->acts.losses;
}

static const real* runner_step(void* r, int token, int t) {
    Runner* x = (Runner*)r;
    gpt_step(x->m, &x->g, token, t);
    return x->g.logits;
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

static void usage(void) {
    printf("usage: train_gpt_flow [--config FILE.json] [--resume CHECKPOINT] [--FIELD VALUE]...\n"
           "Settings are applied in this order: built-in defaults (the tinyshakespeare run), the\n"
           "checkpoint's own settings (--resume), the JSON file (--config), the command line.\n"
           "--resume continues a run exactly (model, optimizer, step, data position, random state);\n"
           "with --mode eval or sample it loads the model to evaluate or sample from.\n");
    config_print_help(&CONFIG_SCHEMA);
    attention_print_kinds();
}

int main(int argc, char** argv) {
    Dist dist = dist_init(&argc, &argv);
    Config cfg;
    Run run;
    run_settings(&run, &dist, &CONFIG_SCHEMA, &cfg, sizeof cfg, argc, argv, usage, NULL);
    int train = strcmp(cfg.mode, "train") == 0, eval_only = strcmp(cfg.mode, "eval") == 0;
    if (cfg.context_window >= cfg.context)
        fail("configuration: context_window must be below context %d, got %d", cfg.context, cfg.context_window);

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
    if (train || eval_only) run_check_memory(gpt_memory(&mc, part, T, &dist, cfg.zero), cfg.memory_limit);

    GPT model;
    gpt_build(&model, &mc);
    Rng rng = rng_make((uint64_t)cfg.seed);
    long step = 0, data_pos = 0;
    if (!run_restore(&run, &model.params, &step, &data_pos, &rng)) gpt_init(&model, &rng);
    DistParams dp = dist_params_make(&dist, &model.params, cfg.zero);
    gpt_buckets(&model, &dp);
    dist_params_share(&dp);
    if (train || eval_only) gpt_allocate(&model, part, T);
    printf("model: %d layers, %d heads, %d channels, MLP %d, context %d, vocabulary %d, %s attention "
           "(clamp %g), %s positions | %ld parameters | %d threads\n",
           mc.L, mc.H, mc.C, mc.F, mc.maxT, mc.V, mc.attention, (double)mc.clamp, cfg.positions,
           model.params.count, omp_get_max_threads());
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
        Progress prog = progress_start(&dist, cfg.steps, (double)B * T * cfg.grad_accum, "tok", cfg.log_interval,
                                       cfg.eval_interval, val_data.n > 0, cfg.grad_accum * gpt_flops(&model, B, T));
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
            params_zero_grad(&model.params);
            // the update draws all its samples, then its dropout seed, whatever the ranks and
            // micro-batches: one process without accumulation draws as it always has
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
                // the last micro-batch's backward pass starts summing each finished bucket across the ranks
                model.dp = micro == cfg.grad_accum - 1 ? &dp : NULL;
                loss += gpt_forward(&model, inputs + at, targets + at, part, T) * share / cfg.grad_accum;
                gpt_backward(&model, (real)(1.0 / ((double)B * T * cfg.grad_accum)));
            }
            model.training = 0;
            loss = dist_sum(&dist, loss);
            dist_params_reduce(&dp);
            double norm = adamw_step_shard(model.params.params, &dp.shard, &opt, lr, loss, step + 1);
            dist_params_gather(&dp);
            progress_end(&prog, &run.log, step + 1, loss, lr, norm, -1);
            run_save_due(&run, &dp, step + 1, cfg.steps, data_pos, &rng);
        }
        progress_finish(&prog);
        if (val_data.n > 0)
            log_eval(&run.log, step, evaluate(&model, &dist, &val_data, B, T, cfg.context_window, cfg.eval_batches,
                                              inputs, targets), 0, T);
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
    dist_finalize();
    return 0;
}
#endif
