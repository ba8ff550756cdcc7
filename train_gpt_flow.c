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
Attention is "flow" (causal Flow-Attention), "softmax" or "linear", from
layers/attention.h. Settings come from a JSON file and the command line
(utils/config.h); checkpoints store them (utils/checkpoint.h).
*/
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <stddef.h>
#include <time.h>
#include <glob.h>
#include <omp.h>
#include "layers/real.h"
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
#include "utils/schedule.h"
#include "utils/checkpoint.h"
#include "utils/paths.h"
#include "utils/logger.h"
#include "utils/token_shard.h"
#include "utils/vocab.h"

// ----------------------------------------------------------------------------
// Configuration: every setting of a run. The defaults are the default run.

typedef struct {
    char mode[CONFIG_STR];
    // model
    int vocab_size, context, n_layer, n_head, n_embd, n_ffn;
    char attention[CONFIG_STR];
    double clamp;
    char positions[CONFIG_STR];
    int embed_scale, tied;
    char activation[CONFIG_STR];
    double init_std, dropout_embd, dropout_attn, dropout_hidden, dropout_resid;
    // data
    char train_data[CONFIG_STR], val_data[CONFIG_STR], vocab[CONFIG_STR], sampling[CONFIG_STR];
    // optimisation
    int batch_size, grad_accum, steps;
    char schedule[CONFIG_STR];
    double lr, min_lr, warmup_init_lr;
    int warmup_steps;
    double beta1, beta2, adam_eps, weight_decay;
    int decay_embeddings;
    double grad_clip;
    int seed;
    // evaluation and output
    int eval_interval, eval_batches, context_window;
    char log_file[CONFIG_STR], checkpoint[CONFIG_STR];
    int checkpoint_interval, log_interval;
    int sample_tokens, top_k;
    double temperature;
    char prompt[CONFIG_STR];
} Config;

#define F(name, type, fixed, help) {#name, type, offsetof(Config, name), fixed, help}
static const ConfigField CONFIG_FIELDS[] = {
    F(mode, CFG_STRING, 0, "train, eval (validation loss and perplexity) or sample"),
    F(vocab_size, CFG_INT, 1, "vocabulary size; 0 takes the vocabulary file's"),
    F(context, CFG_INT, 1, "tokens per sample (T)"),
    F(n_layer, CFG_INT, 1, "transformer blocks"),
    F(n_head, CFG_INT, 1, "attention heads"),
    F(n_embd, CFG_INT, 1, "channels (C)"),
    F(n_ffn, CFG_INT, 1, "MLP hidden size; 0 means 4C"),
    F(attention, CFG_STRING, 1, "flow, softmax or linear"),
    F(clamp, CFG_FLOAT, 1, "Flow-Attention conservation clamp bound"),
    F(positions, CFG_STRING, 1, "learned (GPT-2) or sinusoidal (fairseq)"),
    F(embed_scale, CFG_BOOL, 1, "multiply the token embedding by sqrt(C) (fairseq)"),
    F(tied, CFG_BOOL, 1, "output layer shares the token embedding"),
    F(activation, CFG_STRING, 1, "MLP activation: gelu (tanh form) or relu"),
    F(init_std, CFG_FLOAT, 0, "std of the initial weights (residual projections get /sqrt(2 n_layer))"),
    F(dropout_embd, CFG_FLOAT, 0, "dropout on the embeddings"),
    F(dropout_attn, CFG_FLOAT, 0, "dropout on the attention block's output"),
    F(dropout_hidden, CFG_FLOAT, 0, "dropout on the MLP hidden activations"),
    F(dropout_resid, CFG_FLOAT, 0, "dropout on the MLP block's output"),
    F(train_data, CFG_STRING, 0, "training token shards (a glob pattern)"),
    F(val_data, CFG_STRING, 0, "validation token shard (empty: none)"),
    F(vocab, CFG_STRING, 0, "vocabulary file, for the vocabulary size and decoding samples"),
    F(sampling, CFG_STRING, 0, "training batches: random (seeded) or sequential"),
    F(batch_size, CFG_INT, 0, "samples per micro-batch (B)"),
    F(grad_accum, CFG_INT, 0, "micro-batches per update"),
    F(steps, CFG_INT, 0, "optimizer updates"),
    F(schedule, CFG_STRING, 0, "learning rate schedule: cosine, inverse_sqrt or constant"),
    F(lr, CFG_FLOAT, 0, "peak learning rate"),
    F(min_lr, CFG_FLOAT, 0, "final learning rate of the cosine schedule"),
    F(warmup_init_lr, CFG_FLOAT, 0, "learning rate at step 0 of inverse_sqrt's warmup"),
    F(warmup_steps, CFG_INT, 0, "warmup updates"),
    F(beta1, CFG_FLOAT, 0, "AdamW beta1"),
    F(beta2, CFG_FLOAT, 0, "AdamW beta2"),
    F(adam_eps, CFG_FLOAT, 0, "AdamW epsilon"),
    F(weight_decay, CFG_FLOAT, 0, "AdamW weight decay on weight matrices"),
    F(decay_embeddings, CFG_BOOL, 0, "also decay the embeddings (nanoGPT does)"),
    F(grad_clip, CFG_FLOAT, 0, "clip the global gradient norm to this (0: off)"),
    F(seed, CFG_INT, 0, "random seed: initialisation, batches, dropout, sampling"),
    F(eval_interval, CFG_INT, 0, "evaluate every this many updates and at the end (0: only at the end)"),
    F(eval_batches, CFG_INT, 0, "validation batches per evaluation (0: the whole shard)"),
    F(context_window, CFG_INT, 0, "evaluation windows overlap by this many tokens of context (fairseq)"),
    F(log_file, CFG_STRING, 0, "JSON-lines log ({attention} is replaced; empty: none)"),
    F(checkpoint, CFG_STRING, 0, "checkpoint path ({attention}, {step} are replaced; empty: none)"),
    F(checkpoint_interval, CFG_INT, 0, "save every this many updates (0: only at the end)"),
    F(log_interval, CFG_INT, 0, "print progress every this many updates"),
    F(sample_tokens, CFG_INT, 0, "tokens to generate after training (0: none)"),
    F(top_k, CFG_INT, 0, "sample among the k most likely tokens (0: all)"),
    F(temperature, CFG_FLOAT, 0, "sampling temperature"),
    F(prompt, CFG_STRING, 0, "text that generation continues (empty: a line break)"),
};
#undef F
static const ConfigSchema CONFIG_SCHEMA = {CONFIG_FIELDS, sizeof(CONFIG_FIELDS) / sizeof(CONFIG_FIELDS[0])};

// nanoGPT's shakespeare_char run with its documented CPU settings.
static Config config_default(void) {
    Config c;
    memset(&c, 0, sizeof(c));
    strcpy(c.mode, "train");
    c.vocab_size = 0;
    c.context = 64;
    c.n_layer = 4;
    c.n_head = 4;
    c.n_embd = 128;
    c.n_ffn = 0;
    strcpy(c.attention, "flow");
    c.clamp = 1.0;
    strcpy(c.positions, "learned");
    c.embed_scale = 0;
    c.tied = 1;
    strcpy(c.activation, "gelu");
    c.init_std = 0.02;
    strcpy(c.train_data, "data/tinyshakespeare/train.bin");
    strcpy(c.val_data, "data/tinyshakespeare/val.bin");
    strcpy(c.vocab, "data/tinyshakespeare/vocab.txt");
    strcpy(c.sampling, "random");
    c.batch_size = 12;
    c.grad_accum = 1;
    c.steps = 2000;
    strcpy(c.schedule, "cosine");
    c.lr = 1e-3;
    c.min_lr = 1e-4;
    c.warmup_init_lr = 0;
    c.warmup_steps = 100;
    c.beta1 = 0.9;
    c.beta2 = 0.99;
    c.adam_eps = 1e-8;
    c.weight_decay = 0.1;
    c.decay_embeddings = 1;
    c.grad_clip = 1.0;
    c.seed = 1337;
    c.eval_interval = 250;
    c.eval_batches = 0;
    c.context_window = 0;
    strcpy(c.log_file, "log/gpt_shakespeare_{attention}.jsonl");
    strcpy(c.checkpoint, "log/gpt_shakespeare_{attention}.bin");
    c.checkpoint_interval = 0;
    c.log_interval = 1;
    c.sample_tokens = 500;
    c.top_k = 200;
    c.temperature = 0.8;
    c.prompt[0] = '\0';
    return c;
}

// ----------------------------------------------------------------------------
// The model

typedef struct {
    int V;            // vocabulary size
    int maxT;         // context length
    int L, H, C, F;   // layers, heads, channels, MLP hidden size
    AttentionKind attention;
    real clamp;
    int learned_pos;  // 1: learned positions, 0: sinusoids
    int tied;         // 1: output layer = token embedding
    int relu;         // 1: ReLU, 0: GELU
    real embed_scale; // 1 or sqrt(C)
    real p_embd, p_attn, p_hidden, p_resid; // dropout probabilities
} GPTConfig;

#define NUM_PARAMETER_TENSORS 17
typedef struct {
    real* wte;      // (V, C)
    real* wpe;      // (maxT, C), learned positions only
    real* ln1w;     // (L, C)
    real* ln1b;     // (L, C)
    real* qkvw;     // (L, 3C, C)
    real* qkvb;     // (L, 3C)
    real* attprojw; // (L, C, C)
    real* attprojb; // (L, C)
    real* ln2w;     // (L, C)
    real* ln2b;     // (L, C)
    real* fcw;      // (L, F, C)
    real* fcb;      // (L, F)
    real* fcprojw;  // (L, C, F)
    real* fcprojb;  // (L, C)
    real* lnfw;     // (C)
    real* lnfb;     // (C)
    real* lm_head;  // (V, C), untied output layer only
} ParameterTensors;

static void fill_in_parameter_sizes(size_t* sizes, const GPTConfig* c) {
    size_t V = c->V, T = c->maxT, L = c->L, C = c->C, F = c->F;
    sizes[0] = V * C;
    sizes[1] = c->learned_pos ? T * C : 0;
    sizes[2] = L * C;
    sizes[3] = L * C;
    sizes[4] = L * 3 * C * C;
    sizes[5] = L * 3 * C;
    sizes[6] = L * C * C;
    sizes[7] = L * C;
    sizes[8] = L * C;
    sizes[9] = L * C;
    sizes[10] = L * F * C;
    sizes[11] = L * F;
    sizes[12] = L * C * F;
    sizes[13] = L * C;
    sizes[14] = C;
    sizes[15] = C;
    sizes[16] = c->tied ? 0 : V * C;
}

// Points the tensors into one block of memory; absent tensors get NULL.
static void point_parameters(ParameterTensors* p, const size_t* sizes, real* memory) {
    real** ptrs[NUM_PARAMETER_TENSORS] = {
        &p->wte, &p->wpe, &p->ln1w, &p->ln1b, &p->qkvw, &p->qkvb, &p->attprojw, &p->attprojb,
        &p->ln2w, &p->ln2b, &p->fcw, &p->fcb, &p->fcprojw, &p->fcprojb, &p->lnfw, &p->lnfb, &p->lm_head};
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        *ptrs[i] = sizes[i] > 0 ? memory : NULL;
        memory += sizes[i];
    }
}

#define NUM_ACTIVATION_TENSORS 21
typedef struct {
    real* encoded;   // (B, T, C) embeddings (after dropout)
    real* ln1;       // (L, B, T, C)
    real* ln1_mean;  // (L, B, T)
    real* ln1_rstd;  // (L, B, T)
    real* qkv;       // (L, B, T, 3C)
    real* atty;      // (L, B, T, C) attention output, heads concatenated
    real* attcache;  // (L, attention_cache_size) what attention's backward needs
    real* residual2; // (L, B, T, C) stream after the attention block
    real* ln2;       // (L, B, T, C)
    real* ln2_mean;  // (L, B, T)
    real* ln2_rstd;  // (L, B, T)
    real* fch;       // (L, B, T, F) MLP hidden before the activation
    real* fch_act;   // (L, B, T, F) after the activation (and dropout)
    real* residual3; // (L, B, T, C) stream after the MLP block
    real* lnf;       // (B, T, C)
    real* lnf_mean;  // (B, T)
    real* lnf_rstd;  // (B, T)
    real* logits;    // (B, T, V); the backward pass turns it into its gradient
    real* lse;       // (B, T) log-sum-exp of each row of logits
    real* losses;    // (B, T)
    real* branch;    // (B, T, C) a block's output before the residual add
} ActivationTensors;

// Gradients of activations, reused layer after layer by the backward pass.
#define NUM_BACKWARD_TENSORS 6
typedef struct {
    real* dres;    // (B, T, C) gradient of the residual stream
    real* dbranch; // (B, T, C)
    real* dln;     // (B, T, C)
    real* datty;   // (B, T, C)
    real* dqkv;    // (B, T, 3C)
    real* dhidden; // (2, B, T, F)
} BackwardTensors;

typedef struct {
    GPTConfig config;
    ParameterTensors params;
    size_t param_sizes[NUM_PARAMETER_TENSORS];
    real* params_memory;
    long num_parameters;
    ParameterTensors grads;
    real* grads_memory;
    real* m_memory; // AdamW moments
    real* v_memory;
    ActivationTensors acts;
    real* acts_memory;
    BackwardTensors bw;
    real* bw_memory;
    int batch_size;  // B the activations were allocated for
    int seq_len;     // T likewise
    int B, T;        // sizes of the last forward pass
    real* pos_table; // (maxT, C) sinusoids when positions are not learned
    int* inputs;     // (B, T) of the last forward pass
    int* targets;    // (B, T)
    int training;    // 1: dropout active
    uint64_t dropout_seed; // the masks of one forward pass derive from it
} GPT;

static void gpt_build(GPT* m, const GPTConfig* c) {
    memset(m, 0, sizeof(*m));
    m->config = *c;
    if (c->V < 2) fail("the vocabulary needs at least 2 tokens, got %d", c->V);
    attention_head_size(c->C, c->H);
    fill_in_parameter_sizes(m->param_sizes, c);
    size_t n = 0;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) n += m->param_sizes[i];
    m->num_parameters = (long)n;
    m->params_memory = (real*)malloc_check(n * sizeof(real));
    m->grads_memory = (real*)calloc_check(n, sizeof(real));
    m->m_memory = (real*)calloc_check(n, sizeof(real));
    m->v_memory = (real*)calloc_check(n, sizeof(real));
    point_parameters(&m->params, m->param_sizes, m->params_memory);
    point_parameters(&m->grads, m->param_sizes, m->grads_memory);
    if (!c->learned_pos) {
        m->pos_table = (real*)malloc_check((size_t)c->maxT * c->C * sizeof(real));
        sinusoid_table(m->pos_table, c->maxT, c->C);
    }
}

// GPT-2's initialisation: weights N(0, std), residual projections N(0, std/sqrt(2L)),
// biases 0, LayerNorm gains 1. With embedding scaling the token embedding is
// N(0, C^-1/2), fairseq's choice, so that the scaled embedding has unit scale.
static void gpt_init(GPT* m, double std, Rng* rng) {
    const GPTConfig* c = &m->config;
    double resid_std = std / sqrt(2.0 * c->L);
    double wte_std = c->embed_scale != 1 ? 1.0 / sqrt((double)c->C) : std;
    double stds[NUM_PARAMETER_TENSORS] = {wte_std, std, -1, 0, std, 0, resid_std, 0, -1, 0,
                                          std, 0, resid_std, 0, -1, 0, std};
    real* p = m->params_memory;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        for (size_t j = 0; j < m->param_sizes[i]; j++)
            p[j] = stds[i] < 0 ? (real)1 : stds[i] == 0 ? (real)0 : (real)(stds[i] * rng_normal(rng));
        p += m->param_sizes[i];
    }
}

static void gpt_free(GPT* m) {
    free(m->params_memory);
    free(m->grads_memory);
    free(m->m_memory);
    free(m->v_memory);
    free(m->acts_memory);
    free(m->bw_memory);
    free(m->pos_table);
    free(m->inputs);
    free(m->targets);
}

// The attention of every layer: causal, over the fused (B,T,3C) qkv buffer.
static Attention gpt_attention(const GPT* m, int B, int T) {
    const GPTConfig* c = &m->config;
    Attention a = attention_make(c->attention, 1, B, T, c->H, c->C / c->H);
    a.q_stride = a.k_stride = a.v_stride = 3 * c->C;
    a.clamp = c->clamp;
    return a;
}

static void gpt_allocate(GPT* m, int B, int T) {
    const GPTConfig* c = &m->config;
    size_t L = c->L, C = c->C, F = c->F, V = c->V, BT = (size_t)B * T;
    Attention a = gpt_attention(m, B, T);
    size_t sizes[NUM_ACTIVATION_TENSORS] = {
        BT * C, L * BT * C, L * BT, L * BT, L * BT * 3 * C, L * BT * C, L * attention_cache_size(&a),
        L * BT * C, L * BT * C, L * BT, L * BT, L * BT * F, L * BT * F, L * BT * C,
        BT * C, BT, BT, BT * V, BT, BT, BT * C};
    real** ptrs[NUM_ACTIVATION_TENSORS] = {
        &m->acts.encoded, &m->acts.ln1, &m->acts.ln1_mean, &m->acts.ln1_rstd, &m->acts.qkv,
        &m->acts.atty, &m->acts.attcache, &m->acts.residual2, &m->acts.ln2, &m->acts.ln2_mean,
        &m->acts.ln2_rstd, &m->acts.fch, &m->acts.fch_act, &m->acts.residual3, &m->acts.lnf,
        &m->acts.lnf_mean, &m->acts.lnf_rstd, &m->acts.logits, &m->acts.lse, &m->acts.losses,
        &m->acts.branch};
    size_t total = 0;
    for (int i = 0; i < NUM_ACTIVATION_TENSORS; i++) total += sizes[i];
    m->acts_memory = (real*)malloc_check(total * sizeof(real));
    real* p = m->acts_memory;
    for (int i = 0; i < NUM_ACTIVATION_TENSORS; i++) { *ptrs[i] = p; p += sizes[i]; }

    size_t bsizes[NUM_BACKWARD_TENSORS] = {BT * C, BT * C, BT * C, BT * C, BT * 3 * C, 2 * BT * F};
    real** bptrs[NUM_BACKWARD_TENSORS] = {&m->bw.dres, &m->bw.dbranch, &m->bw.dln, &m->bw.datty,
                                          &m->bw.dqkv, &m->bw.dhidden};
    total = 0;
    for (int i = 0; i < NUM_BACKWARD_TENSORS; i++) total += bsizes[i];
    m->bw_memory = (real*)malloc_check(total * sizeof(real));
    p = m->bw_memory;
    for (int i = 0; i < NUM_BACKWARD_TENSORS; i++) { *bptrs[i] = p; p += bsizes[i]; }

    m->inputs = (int*)malloc_check(BT * sizeof(int));
    m->targets = (int*)malloc_check(BT * sizeof(int));
    m->batch_size = B;
    m->seq_len = T;
}

// Key of dropout site `site` (0: embeddings; 1 + 3l + {0,1,2}: layer l's
// attention output, MLP hidden, MLP output) in the current forward pass.
static uint64_t dropout_key(const GPT* m, int site) {
    return rng_hash64(m->dropout_seed ^ rng_hash64((uint64_t)site + 1));
}

static real active_p(const GPT* m, real p) { return m->training ? p : 0; }

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
    ParameterTensors p = m->params;
    ActivationTensors* s = &m->acts;
    const real* pos = c->learned_pos ? p.wpe : m->pos_table;

    encoder_forward(s->encoded, inputs, p.wte, pos, c->embed_scale, B, T, C);
    if (active_p(m, c->p_embd) > 0)
        dropout_forward(s->encoded, s->encoded, (long)BT * C, c->p_embd, dropout_key(m, 0));
    for (int l = 0; l < L; l++) {
        const real* residual = l == 0 ? s->encoded : s->residual3 + (l - 1) * sBTC;
        real* ln1 = s->ln1 + l * sBTC;
        real* ln1_mean = s->ln1_mean + l * sBT;
        real* ln1_rstd = s->ln1_rstd + l * sBT;
        real* qkv = s->qkv + l * 3 * sBTC;
        real* atty = s->atty + l * sBTC;
        real* cache = s->attcache + l * cache_stride;
        real* residual2 = s->residual2 + l * sBTC;
        real* ln2 = s->ln2 + l * sBTC;
        real* ln2_mean = s->ln2_mean + l * sBT;
        real* ln2_rstd = s->ln2_rstd + l * sBT;
        real* fch = s->fch + l * sBTF;
        real* fch_act = s->fch_act + l * sBTF;
        real* residual3 = s->residual3 + l * sBTC;

        layernorm_forward(ln1, ln1_mean, ln1_rstd, residual, p.ln1w + l * C, p.ln1b + l * C, BT, C, LAYERNORM_EPS);
        matmul_forward(qkv, ln1, p.qkvw + (size_t)l * 3 * C * C, p.qkvb + l * 3 * C, BT, C, 3 * C);
        attention_forward(&a, atty, cache, qkv, qkv + C, qkv + 2 * C);
        matmul_forward(s->branch, atty, p.attprojw + (size_t)l * C * C, p.attprojb + l * C, BT, C, C);
        if (active_p(m, c->p_attn) > 0)
            dropout_forward(s->branch, s->branch, (long)BT * C, c->p_attn, dropout_key(m, 1 + 3 * l));
        residual_forward(residual2, residual, s->branch, (long)BT * C);

        layernorm_forward(ln2, ln2_mean, ln2_rstd, residual2, p.ln2w + l * C, p.ln2b + l * C, BT, C, LAYERNORM_EPS);
        matmul_forward(fch, ln2, p.fcw + (size_t)l * F * C, p.fcb + l * F, BT, C, F);
        if (c->relu) relu_forward(fch_act, fch, (long)BT * F);
        else gelu_forward(fch_act, fch, (long)BT * F);
        if (active_p(m, c->p_hidden) > 0)
            dropout_forward(fch_act, fch_act, (long)BT * F, c->p_hidden, dropout_key(m, 2 + 3 * l));
        matmul_forward(s->branch, fch_act, p.fcprojw + (size_t)l * C * F, p.fcprojb + l * C, BT, F, C);
        if (active_p(m, c->p_resid) > 0)
            dropout_forward(s->branch, s->branch, (long)BT * C, c->p_resid, dropout_key(m, 3 + 3 * l));
        residual_forward(residual3, residual2, s->branch, (long)BT * C);
    }
    layernorm_forward(s->lnf, s->lnf_mean, s->lnf_rstd, s->residual3 + (L - 1) * sBTC, p.lnfw, p.lnfb, BT, C, LAYERNORM_EPS);
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

static void gpt_zero_grad(GPT* m) {
    memset(m->grads_memory, 0, (size_t)m->num_parameters * sizeof(real));
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
    ParameterTensors p = m->params, g = m->grads;
    ActivationTensors* s = &m->acts;
    BackwardTensors* d = &m->bw;
    real* dh1 = d->dhidden;
    real* dh2 = d->dhidden + nBTF;

    crossentropy_backward_inplace(s->logits, s->lse, m->targets, dloss, BT, V);
    memset(d->dln, 0, nBTC * sizeof(real));
    matmul_backward(d->dln, c->tied ? g.wte : g.lm_head, NULL, s->logits, s->lnf,
                    c->tied ? p.wte : p.lm_head, BT, C, V);
    memset(d->dres, 0, nBTC * sizeof(real));
    layernorm_backward(d->dres, g.lnfw, g.lnfb, d->dln, s->residual3 + (L - 1) * sBTC, p.lnfw,
                       s->lnf_mean, s->lnf_rstd, BT, C);
    for (int l = L - 1; l >= 0; l--) {
        const real* residual = l == 0 ? s->encoded : s->residual3 + (l - 1) * sBTC;
        real* ln1 = s->ln1 + l * sBTC;
        real* qkv = s->qkv + l * 3 * sBTC;
        real* atty = s->atty + l * sBTC;
        real* cache = s->attcache + l * cache_stride;
        real* residual2 = s->residual2 + l * sBTC;
        real* ln2 = s->ln2 + l * sBTC;
        real* fch = s->fch + l * sBTF;
        real* fch_act = s->fch_act + l * sBTF;

        // MLP block: residual3 = residual2 + drop(fcproj(drop(act(fc(ln2(residual2))))))
        memset(d->dbranch, 0, nBTC * sizeof(real));
        dropout_backward(d->dbranch, d->dres, (long)nBTC, active_p(m, c->p_resid), dropout_key(m, 3 + 3 * l));
        memset(dh1, 0, nBTF * sizeof(real));
        matmul_backward(dh1, g.fcprojw + (size_t)l * C * F, g.fcprojb + l * C, d->dbranch, fch_act,
                        p.fcprojw + (size_t)l * C * F, BT, F, C);
        real* dact = dh1;
        if (active_p(m, c->p_hidden) > 0) {
            memset(dh2, 0, nBTF * sizeof(real));
            dropout_backward(dh2, dh1, (long)nBTF, c->p_hidden, dropout_key(m, 2 + 3 * l));
            dact = dh2;
        }
        real* dpre = dact == dh1 ? dh2 : dh1;
        memset(dpre, 0, nBTF * sizeof(real));
        if (c->relu) relu_backward(dpre, fch, dact, (long)nBTF);
        else gelu_backward(dpre, fch, dact, (long)nBTF);
        memset(d->dln, 0, nBTC * sizeof(real));
        matmul_backward(d->dln, g.fcw + (size_t)l * F * C, g.fcb + l * F, dpre, ln2,
                        p.fcw + (size_t)l * F * C, BT, C, F);
        layernorm_backward(d->dres, g.ln2w + l * C, g.ln2b + l * C, d->dln, residual2, p.ln2w + l * C,
                           s->ln2_mean + l * sBT, s->ln2_rstd + l * sBT, BT, C);

        // attention block: residual2 = residual + drop(attproj(attn(qkv(ln1(residual)))))
        memset(d->dbranch, 0, nBTC * sizeof(real));
        dropout_backward(d->dbranch, d->dres, (long)nBTC, active_p(m, c->p_attn), dropout_key(m, 1 + 3 * l));
        memset(d->datty, 0, nBTC * sizeof(real));
        matmul_backward(d->datty, g.attprojw + (size_t)l * C * C, g.attprojb + l * C, d->dbranch, atty,
                        p.attprojw + (size_t)l * C * C, BT, C, C);
        memset(d->dqkv, 0, 3 * nBTC * sizeof(real));
        attention_backward(&a, d->dqkv, d->dqkv + C, d->dqkv + 2 * C, d->datty, atty, cache,
                           qkv, qkv + C, qkv + 2 * C);
        memset(d->dln, 0, nBTC * sizeof(real));
        matmul_backward(d->dln, g.qkvw + (size_t)l * 3 * C * C, g.qkvb + l * 3 * C, d->dqkv, ln1,
                        p.qkvw + (size_t)l * 3 * C * C, BT, C, 3 * C);
        layernorm_backward(d->dres, g.ln1w + l * C, g.ln1b + l * C, d->dln, residual, p.ln1w + l * C,
                           s->ln1_mean + l * sBT, s->ln1_rstd + l * sBT, BT, C);
    }
    memset(d->dbranch, 0, nBTC * sizeof(real));
    dropout_backward(d->dbranch, d->dres, (long)nBTC, active_p(m, c->p_embd), dropout_key(m, 0));
    encoder_backward(g.wte, c->learned_pos ? g.wpe : NULL, d->dbranch, m->inputs, c->embed_scale, B, T, C);
}

// Whether AdamW decays tensor i: weight matrices always, embeddings if asked,
// biases and LayerNorm parameters never.
static int decays(int i, int decay_embeddings) {
    switch (i) {
    case 0: case 1: return decay_embeddings;
    case 4: case 6: case 10: case 12: case 16: return 1;
    default: return 0;
    }
}

static void gpt_update(GPT* m, real lr, real beta1, real beta2, real eps, real weight_decay,
                       int decay_embeddings, long t) {
    size_t off = 0;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        size_t n = m->param_sizes[i];
        if (n > 0)
            adamw_update(m->params_memory + off, m->grads_memory + off, m->m_memory + off,
                         m->v_memory + off, (long)n, lr, beta1, beta2, eps,
                         decays(i, decay_embeddings) ? weight_decay : 0, t);
        off += n;
    }
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
    ParameterTensors p = m->params;
    const real* pos = c->learned_pos ? p.wpe : m->pos_table;
    Attention a = gpt_attention(m, 1, c->maxT);
    encoder_forward(g->x, &token, p.wte, pos + (size_t)t * C, c->embed_scale, 1, 1, C);
    for (int l = 0; l < c->L; l++) {
        layernorm_forward(g->ln, g->mean, g->rstd, g->x, p.ln1w + l * C, p.ln1b + l * C, 1, C, LAYERNORM_EPS);
        matmul_forward(g->qkv, g->ln, p.qkvw + (size_t)l * 3 * C * C, p.qkvb + l * 3 * C, 1, C, 3 * C);
        for (int h = 0; h < H; h++)
            attention_step(&a, g->states + ((size_t)l * H + h) * g->state_size, t, g->atty + h * D,
                           g->qkv + h * D, g->qkv + C + h * D, g->qkv + 2 * C + h * D);
        matmul_forward(g->branch, g->atty, p.attprojw + (size_t)l * C * C, p.attprojb + l * C, 1, C, C);
        residual_forward(g->x, g->x, g->branch, C);
        layernorm_forward(g->ln, g->mean, g->rstd, g->x, p.ln2w + l * C, p.ln2b + l * C, 1, C, LAYERNORM_EPS);
        matmul_forward(g->h, g->ln, p.fcw + (size_t)l * F * C, p.fcb + l * F, 1, C, F);
        if (c->relu) relu_forward(g->h_act, g->h, F);
        else gelu_forward(g->h_act, g->h, F);
        matmul_forward(g->branch, g->h_act, p.fcprojw + (size_t)l * C * F, p.fcprojb + l * C, 1, F, C);
        residual_forward(g->x, g->x, g->branch, C);
    }
    layernorm_forward(g->ln, g->mean, g->rstd, g->x, p.lnfw, p.lnfb, 1, C, LAYERNORM_EPS);
    matmul_forward(g->logits, g->ln, c->tied ? p.wte : p.lm_head, NULL, 1, C, c->V);
}

static int compare_desc(const void* a, const void* b) {
    real x = *(const real*)a, y = *(const real*)b;
    return (x < y) - (x > y);
}

// Samples from softmax(logits / temperature) restricted to the top_k largest
// logits (top_k <= 0: all). scratch holds V reals.
static int sample_token(const real* logits, int V, double temperature, int top_k, real* scratch, Rng* rng) {
    real cutoff = -INFINITY;
    if (top_k > 0 && top_k < V) {
        memcpy(scratch, logits, (size_t)V * sizeof(real));
        qsort(scratch, (size_t)V, sizeof(real), compare_desc);
        cutoff = scratch[top_k - 1];
    }
    real maxv = -INFINITY;
    for (int v = 0; v < V; v++) maxv = logits[v] > maxv ? logits[v] : maxv;
    double t = temperature > 0 ? temperature : 1e-6, sum = 0;
    for (int v = 0; v < V; v++) {
        scratch[v] = logits[v] >= cutoff ? (real)exp((logits[v] - maxv) / t) : 0;
        sum += scratch[v];
    }
    double u = rng_uniform(rng) * sum, acc = 0;
    for (int v = 0; v < V; v++) {
        acc += scratch[v];
        if (u < acc) return v;
    }
    for (int v = V - 1; v >= 0; v--) if (scratch[v] > 0) return v;
    return 0;
}

// ----------------------------------------------------------------------------
// Data

typedef struct {
    uint32_t* tokens;
    long n;
} TokenData;

// Loads every shard matching pattern (in name order) into one token stream,
// checking each token against the vocabulary size.
static TokenData load_tokens(const char* pattern, long vocab_size, const char* what) {
    glob_t g;
    int rc = glob(pattern, 0, NULL, &g);
    if (rc == GLOB_NOMATCH) fail("%s: no file matches %s", what, pattern);
    if (rc != 0) fail("%s: cannot expand the pattern %s", what, pattern);
    TokenData d = {NULL, 0};
    for (size_t i = 0; i < g.gl_pathc; i++) {
        long n;
        uint32_t* t = token_shard_load(g.gl_pathv[i], vocab_size, &n);
        d.tokens = (uint32_t*)realloc(d.tokens, (size_t)(d.n + n) * sizeof(uint32_t));
        if (d.tokens == NULL) fail("out of memory loading %s", g.gl_pathv[i]);
        memcpy(d.tokens + d.n, t, (size_t)n * sizeof(uint32_t));
        d.n += n;
        free(t);
    }
    globfree(&g);
    return d;
}

// B samples of T+1 consecutive tokens: random starts drawn from rng, or
// consecutive blocks from *pos (wrapping to the start at the end).
static void next_batch(const TokenData* d, int B, int T, int random, Rng* rng, long* pos,
                       int* inputs, int* targets) {
    for (int b = 0; b < B; b++) {
        long start;
        if (random) {
            start = rng_below(rng, d->n - T);
        } else {
            if (*pos + T + 1 > d->n) *pos = 0;
            start = *pos;
            *pos += T;
        }
        for (int t = 0; t < T; t++) {
            inputs[b * T + t] = (int)d->tokens[start + t];
            targets[b * T + t] = (int)d->tokens[start + t + 1];
        }
    }
}

typedef struct {
    double loss;  // mean loss per scored token
    long tokens;  // tokens scored
    double seconds;
} EvalResult;

// Scores the stream with windows of T tokens that advance by T - W, each token
// scored once, in the first window that contains it (so with at least W tokens of
// context where the stream allows): fairseq-eval-lm's --context-window W.
// W = 0 gives non-overlapping windows. Stops after max_batches batches if > 0.
static EvalResult evaluate(GPT* m, const TokenData* d, int B, int T, int W, int max_batches,
                           int* inputs, int* targets) {
    double t0 = omp_get_wtime();
    EvalResult r = {0, 0, 0};
    if (d->n < T + 1) fail("validation data has %ld tokens, fewer than context + 1 = %d", d->n, T + 1);
    int stride = T - W;
    long scored_upto = 0; // targets 1..scored_upto are scored
    long next_start = 0;
    double sum = 0;
    int saved = m->training;
    m->training = 0;
    for (int batch = 0; scored_upto < d->n - 1 && (max_batches <= 0 || batch < max_batches); batch++) {
        int b = 0;
        for (; b < B && scored_upto < d->n - 1; b++) {
            long s = next_start < d->n - 1 - T ? next_start : d->n - 1 - T;
            for (int t = 0; t < T; t++) {
                inputs[b * T + t] = (int)d->tokens[s + t];
                long j = s + t + 1;
                targets[b * T + t] = j > scored_upto ? (int)d->tokens[j] : -1;
            }
            scored_upto = s + T;
            next_start += stride;
        }
        gpt_forward(m, inputs, targets, b, T);
        for (int i = 0; i < b * T; i++) {
            if (targets[i] < 0) continue;
            sum += m->acts.losses[i];
            r.tokens++;
        }
    }
    m->training = saved;
    r.loss = r.tokens > 0 ? sum / r.tokens : 0;
    r.seconds = omp_get_wtime() - t0;
    return r;
}

// ----------------------------------------------------------------------------
// Text: encode a prompt and decode samples through the vocabulary file.
// A vocabulary with a "</s>" token is word-level (fairseq): words are joined by
// spaces and </s> ends a line. Otherwise tokens are concatenated (characters).

static int vocab_is_words(const Vocab* v) {
    for (long i = 0; i < v->size; i++) if (strcmp(v->tokens[i], "</s>") == 0) return 1;
    return 0;
}

static long vocab_find(const Vocab* v, const char* tok, size_t len) {
    for (long i = 0; i < v->size; i++)
        if (strlen(v->tokens[i]) == len && strncmp(v->tokens[i], tok, len) == 0) return i;
    return -1;
}

// Token ids of the prompt (at least one: an empty prompt is a line break).
static int encode_prompt(const Vocab* v, const char* prompt, int* out, int max, const char* vocab_path) {
    int words = vocab_is_words(v), n = 0;
    const char* text = prompt[0] ? prompt : words ? "</s>" : "\n";
    const char* p = text;
    while (*p && n < max) {
        size_t len = 1;
        if (words) {
            while (*p == ' ') p++;
            if (!*p) break;
            len = strcspn(p, " ");
        }
        long id = vocab_find(v, p, len);
        if (id < 0 && words) id = vocab_find(v, "<unk>", 5);
        if (id < 0) fail("%s: the prompt's token \"%.*s\" is not in the vocabulary", vocab_path, (int)len, p);
        out[n++] = (int)id;
        p += len;
    }
    if (n == 0) fail("the prompt \"%s\" has no tokens", prompt);
    return n;
}

static void print_token(const Vocab* v, int id, int words) {
    const char* tok = v->tokens[id];
    if (words) {
        if (strcmp(tok, "</s>") == 0) printf("\n");
        else printf("%s ", tok);
    } else {
        printf("%s", tok);
    }
}

// Prints the prompt and n sampled tokens. When the context is full, the state is
// rebuilt from the last T/2 tokens, so positions stay within those trained on.
static void generate(const GPT* m, const Vocab* vocab, const char* vocab_path, const char* prompt, int n,
                     double temperature, int top_k, Rng* rng) {
    const GPTConfig* c = &m->config;
    int T = c->maxT, words = vocab_is_words(vocab);
    int* seq = (int*)malloc_check(((size_t)n + T) * sizeof(int));
    int len = encode_prompt(vocab, prompt, seq, T, vocab_path);
    GenState g = gen_state_make(m);
    real* scratch = (real*)malloc_check((size_t)c->V * sizeof(real));
    int t = 0;
    for (int i = 0; i < len; i++) {
        print_token(vocab, seq[i], words);
        gpt_step(m, &g, seq[i], t++);
    }
    for (int i = 0; i < n; i++) {
        int next = sample_token(g.logits, c->V, temperature, top_k, scratch, rng);
        seq[len++] = next;
        print_token(vocab, next, words);
        if (t == T) {
            gen_state_reset(m, &g);
            t = 0;
            for (int j = len - T / 2; j < len; j++) gpt_step(m, &g, seq[j], t++);
        } else {
            gpt_step(m, &g, next, t++);
        }
    }
    printf("\n");
    fflush(stdout);
    free(scratch);
    gen_state_free(&g);
    free(seq);
}

// ----------------------------------------------------------------------------
// The program

#ifndef TESTING

// Resolves the model settings, failing with the field's name on a bad value.
static GPTConfig model_config(const Config* cfg) {
    GPTConfig c;
    int kind = attention_kind_from_name(cfg->attention);
    if (kind < 0) fail("configuration: attention must be flow, softmax or linear, got \"%s\"", cfg->attention);
    if (strcmp(cfg->positions, "learned") != 0 && strcmp(cfg->positions, "sinusoidal") != 0)
        fail("configuration: positions must be learned or sinusoidal, got \"%s\"", cfg->positions);
    if (strcmp(cfg->activation, "gelu") != 0 && strcmp(cfg->activation, "relu") != 0)
        fail("configuration: activation must be gelu or relu, got \"%s\"", cfg->activation);
    if (cfg->context < 1 || cfg->n_layer < 1 || cfg->n_head < 1 || cfg->n_embd < 1 || cfg->n_ffn < 0)
        fail("configuration: context, n_layer, n_head, n_embd must be positive and n_ffn >= 0");
    double ps[4] = {cfg->dropout_embd, cfg->dropout_attn, cfg->dropout_hidden, cfg->dropout_resid};
    for (int i = 0; i < 4; i++)
        if (!(ps[i] >= 0 && ps[i] < 1)) fail("configuration: dropout probabilities must be in [0, 1)");
    c.V = cfg->vocab_size;
    c.maxT = cfg->context;
    c.L = cfg->n_layer;
    c.H = cfg->n_head;
    c.C = cfg->n_embd;
    c.F = cfg->n_ffn > 0 ? cfg->n_ffn : 4 * cfg->n_embd;
    c.attention = (AttentionKind)kind;
    c.clamp = (real)cfg->clamp;
    c.learned_pos = strcmp(cfg->positions, "learned") == 0;
    c.tied = cfg->tied;
    c.relu = strcmp(cfg->activation, "relu") == 0;
    c.embed_scale = cfg->embed_scale ? (real)sqrt((double)cfg->n_embd) : (real)1;
    c.p_embd = (real)cfg->dropout_embd;
    c.p_attn = (real)cfg->dropout_attn;
    c.p_hidden = (real)cfg->dropout_hidden;
    c.p_resid = (real)cfg->dropout_resid;
    return c;
}

static void check_training_config(const Config* cfg) {
    if (cfg->batch_size < 1 || cfg->grad_accum < 1 || cfg->steps < 0)
        fail("configuration: batch_size and grad_accum must be positive and steps >= 0");
    if (schedule_kind_from_name(cfg->schedule) < 0)
        fail("configuration: schedule must be cosine, inverse_sqrt or constant, got \"%s\"", cfg->schedule);
    if (strcmp(cfg->sampling, "random") != 0 && strcmp(cfg->sampling, "sequential") != 0)
        fail("configuration: sampling must be random or sequential, got \"%s\"", cfg->sampling);
    if (cfg->context_window < 0 || cfg->context_window >= cfg->context)
        fail("configuration: context_window must be in [0, context), got %d", cfg->context_window);
    if (cfg->log_interval < 1) fail("configuration: log_interval must be positive");
}

static void usage(void) {
    Config d = config_default();
    printf("usage: train_gpt_flow [--config FILE.json] [--resume CHECKPOINT] [--FIELD VALUE]...\n"
           "Settings are applied in this order: built-in defaults (the tinyshakespeare run), the\n"
           "checkpoint's own settings (--resume), the JSON file (--config), the command line.\n"
           "--resume continues a run exactly (model, optimizer, step, data position, random state);\n"
           "with --mode eval or sample it loads the model to evaluate or sample from.\n");
    config_print_help(&CONFIG_SCHEMA, &d);
}

static void log_eval(Logger* log, const char* split, long step, EvalResult r) {
    printf("step %ld | %s loss %.4f | ppl %.2f | %ld tokens | %.1f s\n", step, split, r.loss,
           exp(r.loss), r.tokens, r.seconds);
    logger_printf(log, "{\"step\":%ld,\"%s_loss\":%.9g,\"%s_ppl\":%.9g,\"%s_tokens\":%ld,\"seconds\":%.3f}",
                  step, split, r.loss, split, exp(r.loss), split, r.tokens, r.seconds);
    fflush(stdout);
}

static void save_checkpoint(const GPT* m, const Config* cfg, long step, long data_pos, const Rng* rng) {
    char path[CONFIG_STR];
    expand_path(path, sizeof path, cfg->checkpoint, cfg->attention, step);
    CheckpointInfo info = {m->num_parameters, step, data_pos, rng->state, config_to_json(&CONFIG_SCHEMA, cfg, 0)};
    checkpoint_save(path, &info, m->params_memory, m->m_memory, m->v_memory);
    free(info.config_json);
    printf("saved checkpoint %s (step %ld)\n", path, step);
}

int main(int argc, char** argv) {
    const char* config_path = NULL;
    const char* resume_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) { usage(); return 0; }
        if (strncmp(argv[i], "--", 2) != 0 || i + 1 >= argc)
            fail("command line: expected --FIELD VALUE pairs, got \"%s\" (--help lists them)", argv[i]);
        if (strcmp(argv[i], "--config") == 0) config_path = argv[i + 1];
        else if (strcmp(argv[i], "--resume") == 0) resume_path = argv[i + 1];
        i++;
    }

    // settings: defaults, then the checkpoint's, the JSON file's, the command line's
    Config cfg = config_default();
    Config saved;
    CheckpointInfo ckpt = {0, 0, 0, 0, NULL};
    FILE* ckpt_file = NULL;
    if (resume_path != NULL) {
        ckpt_file = checkpoint_open(resume_path, &ckpt);
        config_apply_json(&CONFIG_SCHEMA, &cfg, ckpt.config_json, resume_path);
        saved = cfg;
    }
    if (config_path != NULL) config_load_file(&CONFIG_SCHEMA, &cfg, config_path);
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "--resume") == 0) continue;
        config_set_arg(&CONFIG_SCHEMA, &cfg, argv[i] + 2, argv[i + 1]);
    }
    int train = strcmp(cfg.mode, "train") == 0, eval_only = strcmp(cfg.mode, "eval") == 0;
    if (!train && !eval_only && strcmp(cfg.mode, "sample") != 0)
        fail("configuration: mode must be train, eval or sample, got \"%s\"", cfg.mode);
    check_training_config(&cfg);

    Vocab vocab = {0, NULL};
    if (cfg.vocab[0]) vocab = vocab_load(cfg.vocab);
    if (cfg.vocab_size == 0) {
        if (vocab.size == 0) fail("configuration: vocab_size is 0 and no vocabulary file is given");
        cfg.vocab_size = (int)vocab.size;
    }
    if (vocab.size > cfg.vocab_size)
        fail("%s: the vocabulary has %ld tokens, more than vocab_size %d", cfg.vocab, vocab.size, cfg.vocab_size);
    if (resume_path != NULL) config_check_fixed(&CONFIG_SCHEMA, &saved, &cfg, resume_path);
    GPTConfig mc = model_config(&cfg);

    // data first, so that bad input stops the run before anything is written
    TokenData train_data = {NULL, 0}, val_data = {NULL, 0};
    if (train) {
        train_data = load_tokens(cfg.train_data, cfg.vocab_size, "train_data");
        if (train_data.n < cfg.context + 1)
            fail("%s: %ld tokens, fewer than context + 1 = %d", cfg.train_data, train_data.n, cfg.context + 1);
    }
    if (cfg.val_data[0] && strcmp(cfg.mode, "sample") != 0)
        val_data = load_tokens(cfg.val_data, cfg.vocab_size, "val_data");
    if (eval_only && val_data.n == 0) fail("configuration: mode eval needs val_data");

    GPT model;
    gpt_build(&model, &mc);
    Rng rng = rng_make((uint64_t)cfg.seed);
    long step = 0, data_pos = 0;
    if (resume_path != NULL) {
        if (ckpt.num_params != model.num_parameters)
            fail("%s: the checkpoint has %ld parameters, the configured model %ld", resume_path,
                 ckpt.num_params, model.num_parameters);
        checkpoint_read_tensors(ckpt_file, resume_path, model.num_parameters, model.params_memory,
                                model.m_memory, model.v_memory);
        step = ckpt.step;
        data_pos = ckpt.data_pos;
        rng.state = ckpt.rng_state;
    } else {
        gpt_init(&model, cfg.init_std, &rng);
    }
    int B = cfg.batch_size, T = cfg.context;
    printf("model: %d layers, %d heads, %d channels, MLP %d, context %d, vocabulary %d, %s attention "
           "(clamp %g), %s positions | %ld parameters | %d threads\n",
           mc.L, mc.H, mc.C, mc.F, mc.maxT, mc.V, attention_kind_name(mc.attention), (double)mc.clamp,
           cfg.positions, model.num_parameters, omp_get_max_threads());
    int* inputs = (int*)malloc_check((size_t)B * T * sizeof(int));
    int* targets = (int*)malloc_check((size_t)B * T * sizeof(int));

    char log_path[CONFIG_STR];
    expand_path(log_path, sizeof log_path, cfg.log_file, cfg.attention, step);
    // sampling only prints; a resumed run appends to its log
    Logger log = logger_open(train || eval_only ? log_path : "", resume_path != NULL);
    if (resume_path == NULL || !train) {
        char* json = config_to_json(&CONFIG_SCHEMA, &cfg, 0);
        logger_printf(&log, "{\"config\":%s}", json);
        free(json);
    }

    if (eval_only) {
        EvalResult r = evaluate(&model, &val_data, B, T, cfg.context_window, cfg.eval_batches, inputs, targets);
        log_eval(&log, "val", step, r);
    }
    if (train) {
        printf("training: %ld tokens, %ld validation tokens | %d x %d tokens x %d micro-batches per update | "
               "%s batches | %s schedule\n", train_data.n, val_data.n, B, T, cfg.grad_accum, cfg.sampling,
               cfg.schedule);
        Schedule sched = {(ScheduleKind)schedule_kind_from_name(cfg.schedule), cfg.lr, cfg.min_lr,
                          cfg.warmup_init_lr, cfg.warmup_steps, cfg.steps};
        int random = strcmp(cfg.sampling, "random") == 0;
        long tokens_per_step = (long)B * T * cfg.grad_accum;
        double ms_avg = 0, eval_seconds = 0;
        long timed = 0;
        for (; step < cfg.steps; step++) {
            if (cfg.eval_interval > 0 && step % cfg.eval_interval == 0 && val_data.n > 0) {
                EvalResult r = evaluate(&model, &val_data, B, T, cfg.context_window, cfg.eval_batches, inputs, targets);
                log_eval(&log, "val", step, r);
                eval_seconds = r.seconds;
            }
            double t0 = omp_get_wtime();
            double lr = schedule_lr(&sched, step);
            gpt_zero_grad(&model);
            double loss = 0;
            model.training = 1;
            for (int micro = 0; micro < cfg.grad_accum; micro++) {
                next_batch(&train_data, B, T, random, &rng, &data_pos, inputs, targets);
                model.dropout_seed = rng_next(&rng);
                loss += gpt_forward(&model, inputs, targets, B, T) / cfg.grad_accum;
                gpt_backward(&model, (real)(1.0 / ((double)B * T * cfg.grad_accum)));
            }
            model.training = 0;
            double norm = grad_norm(model.grads_memory, model.num_parameters);
            if (!isfinite(loss) || !isfinite(norm))
                fail("step %ld: the loss (%g) or gradient norm (%g) is not finite", step + 1, loss, norm);
            clip_grads(model.grads_memory, model.num_parameters, norm, cfg.grad_clip);
            gpt_update(&model, (real)lr, (real)cfg.beta1, (real)cfg.beta2, (real)cfg.adam_eps,
                       (real)cfg.weight_decay, cfg.decay_embeddings, step + 1);
            double ms = (omp_get_wtime() - t0) * 1e3;
            // average per-step time, skipping the first step (allocation, page faults)
            if (step > 0 || timed > 0) { timed++; ms_avg += (ms - ms_avg) / timed; }
            double per_step = timed > 0 ? ms_avg : ms;
            // time left: the updates, and the evaluations still to come (the last one too)
            long evals_left = val_data.n == 0 ? 0 : 1 + (cfg.eval_interval > 0 ?
                              (cfg.steps - 1) / cfg.eval_interval - step / cfg.eval_interval : 0);
            double eta_s = (cfg.steps - step - 1) * per_step / 1e3 + evals_left * eval_seconds;
            char eta[32];
            format_duration(eta_s, eta, sizeof(eta));
            double tok_s = tokens_per_step / (ms / 1e3);
            if ((step + 1) % cfg.log_interval == 0 || step + 1 == cfg.steps) {
                printf("step %5ld/%d | loss %.4f | lr %.2e | norm %.4f | %.1f ms | %.0f tok/s | eta %s\n",
                       step + 1, cfg.steps, loss, lr, norm, ms, tok_s, eta);
                fflush(stdout);
            }
            logger_printf(&log, "{\"step\":%ld,\"loss\":%.17g,\"lr\":%.9g,\"norm\":%.9g,\"ms\":%.3f,"
                          "\"tok_s\":%.1f,\"eta_s\":%.1f}", step + 1, loss, lr, norm, ms, tok_s, eta_s);
            if (cfg.checkpoint[0] && cfg.checkpoint_interval > 0 && (step + 1) % cfg.checkpoint_interval == 0 &&
                step + 1 < cfg.steps)
                save_checkpoint(&model, &cfg, step + 1, data_pos, &rng);
        }
        if (timed > 0) printf("average %.1f ms per update (%.0f tok/s)\n", ms_avg, tokens_per_step / (ms_avg / 1e3));
        if (val_data.n > 0)
            log_eval(&log, "val", step,
                     evaluate(&model, &val_data, B, T, cfg.context_window, cfg.eval_batches, inputs, targets));
        if (cfg.checkpoint[0]) save_checkpoint(&model, &cfg, step, data_pos, &rng);
    }
    if (cfg.sample_tokens > 0 && !eval_only) {
        if (vocab.size == 0) fail("configuration: sampling needs a vocabulary file (vocab)");
        Rng sample_rng = rng_make((uint64_t)cfg.seed ^ 0x5eed5eedULL);
        printf("---- sample (temperature %g, top-k %d)\n", cfg.temperature, cfg.top_k);
        generate(&model, &vocab, cfg.vocab, cfg.prompt, cfg.sample_tokens, cfg.temperature, cfg.top_k, &sample_rng);
        printf("----\n");
    }
    logger_close(&log);
    free(inputs);
    free(targets);
    free(train_data.tokens);
    free(val_data.tokens);
    vocab_free(&vocab);
    free(ckpt.config_json);
    gpt_free(&model);
    return 0;
}
#endif
