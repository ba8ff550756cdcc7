/*
Vision Transformer with Flow-Attention (Flowformer, Wu et al. ICML 2022): image
classification trained in pure C, every forward and backward pass written by
hand, in the spirit of karpathy's llm.c train_gpt2.c.

  make && scripts/run_vit_fashion_mnist.sh       Fashion-MNIST on a laptop
  ./train_vit_flow --config configs/vit_deit_small.json     DeiT-Small with Flow-Attention
  ./train_vit_flow --config configs/vit_flowformer_imagenet.json   the paper's hierarchical model
  ./train_vit_flow --help                        every setting

Model, as a list of stages (a plain ViT is one stage):
  stage 0: P x P patch embedding (a stride-P convolution, done as a matmul over
    patches), an optional class token, a learned position embedding;
  stage s > 0: a 2x2 stride-2 convolution merging the previous stage's token grid;
  in every stage, pre-LayerNorm blocks
    x += droppath(ls1 * drop(proj(attn(qkv(LN(x))))))
    x += droppath(ls2 * drop(fc2(drop(gelu(fc1(LN(x)))))))
  with bidirectional attention ("flow", "softmax" or "linear", layers/attention.h)
  and optional LayerScale gains ls1, ls2; then a final LayerNorm, the class
  token or the mean over tokens, and a linear head.
Training: AdamW with warmup + cosine, label smoothing, mixup/cutmix, gradient
clipping and accumulation; random crops with padding and flips; images shuffled
each epoch with a seed. Settings come from a JSON file and the command line
(utils/config.h); checkpoints store them (utils/checkpoint.h).
*/
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <stddef.h>
#include <omp.h>
#include "layers/real.h"
#include "layers/layernorm.h"
#include "layers/matmul.h"
#include "layers/attention.h"
#include "layers/gelu.h"
#include "layers/dropout.h"
#include "layers/droppath.h"
#include "layers/layerscale.h"
#include "layers/patch_embed.h"
#include "layers/pool.h"
#include "layers/soft_crossentropy.h"
#include "layers/adamw.h"
#include "utils/utils.h"
#include "utils/rng.h"
#include "utils/config.h"
#include "utils/schedule.h"
#include "utils/checkpoint.h"
#include "utils/paths.h"
#include "utils/logger.h"
#include "utils/image_shard.h"
#include "utils/augment.h"

#define MAX_STAGES 4

// ----------------------------------------------------------------------------
// Configuration: every setting of a run. The defaults are the Fashion-MNIST run.

typedef struct {
    char mode[CONFIG_STR];
    // model
    int image_size, channels, num_classes, patch_size;
    char dims[CONFIG_STR], depths[CONFIG_STR], heads[CONFIG_STR];
    double mlp_ratio;
    char attention[CONFIG_STR];
    double clamp;
    char pooling[CONFIG_STR];
    double layerscale;
    int layerscale_attn;
    double ln_eps;
    double init_std, dropout, drop_path;
    // data
    char train_data[CONFIG_STR], val_data[CONFIG_STR], mean[CONFIG_STR], std[CONFIG_STR];
    int pad, flip;
    double label_smoothing, mixup, cutmix;
    // optimisation
    int batch_size, grad_accum, epochs, steps;
    double lr, min_lr, warmup_epochs;
    double beta1, beta2, adam_eps, weight_decay, grad_clip;
    int seed;
    // evaluation and output
    int eval_interval, eval_images;
    char log_file[CONFIG_STR], checkpoint[CONFIG_STR];
    int checkpoint_interval, log_interval;
} Config;

#define F(name, type, fixed, help) {#name, type, offsetof(Config, name), fixed, help}
static const ConfigField CONFIG_FIELDS[] = {
    F(mode, CFG_STRING, 0, "train or eval (top-1/top-5 of val_data; with --resume)"),
    F(image_size, CFG_INT, 1, "side of the square images the model sees (crops of the shards' images)"),
    F(channels, CFG_INT, 1, "image channels (1 grey, 3 RGB)"),
    F(num_classes, CFG_INT, 1, "classes; 0 takes the training shards'"),
    F(patch_size, CFG_INT, 1, "side of the patches of the patch embedding"),
    F(dims, CFG_STRING, 1, "channels of each stage, comma-separated (one stage: a plain ViT)"),
    F(depths, CFG_STRING, 1, "blocks of each stage"),
    F(heads, CFG_STRING, 1, "attention heads of each stage"),
    F(mlp_ratio, CFG_FLOAT, 1, "MLP hidden size over channels"),
    F(attention, CFG_STRING, 1, "flow, softmax or linear"),
    F(clamp, CFG_FLOAT, 1, "Flow-Attention conservation clamp bound"),
    F(pooling, CFG_STRING, 1, "cls (class token, one stage only) or mean (average of the tokens)"),
    F(layerscale, CFG_FLOAT, 1, "initial LayerScale gain on the MLP branch (0: no LayerScale)"),
    F(layerscale_attn, CFG_BOOL, 1, "LayerScale on the attention branch too"),
    F(ln_eps, CFG_FLOAT, 1, "LayerNorm epsilon (1e-5 as PyTorch; the authors' hierarchical model 1e-6)"),
    F(init_std, CFG_FLOAT, 0, "std of the initial weights, position embedding and class token"),
    F(dropout, CFG_FLOAT, 0, "dropout on the MLP hidden activations and on both branches' outputs"),
    F(drop_path, CFG_FLOAT, 0, "stochastic depth of the last block (rising linearly from 0 at the first)"),
    F(train_data, CFG_STRING, 0, "training image shards (a glob pattern)"),
    F(val_data, CFG_STRING, 0, "validation image shards (a glob pattern; empty: none)"),
    F(mean, CFG_STRING, 0, "per-channel mean in [0,1], comma-separated (empty: measured on train_data)"),
    F(std, CFG_STRING, 0, "per-channel std in [0,1], comma-separated (empty: measured on train_data)"),
    F(pad, CFG_INT, 0, "zero padding around the image before random crops"),
    F(flip, CFG_BOOL, 0, "random horizontal flips"),
    F(label_smoothing, CFG_FLOAT, 0, "label smoothing"),
    F(mixup, CFG_FLOAT, 0, "mixup Beta(a,a) parameter (0: off)"),
    F(cutmix, CFG_FLOAT, 0, "cutmix Beta(a,a) parameter (0: off; with mixup, one of the two per batch)"),
    F(batch_size, CFG_INT, 0, "images per micro-batch (B)"),
    F(grad_accum, CFG_INT, 0, "micro-batches per update"),
    F(epochs, CFG_INT, 0, "passes over the training images"),
    F(steps, CFG_INT, 0, "optimizer updates (0: epochs x updates per epoch)"),
    F(lr, CFG_FLOAT, 0, "peak learning rate"),
    F(min_lr, CFG_FLOAT, 0, "final learning rate of the cosine schedule"),
    F(warmup_epochs, CFG_FLOAT, 0, "linear warmup, in epochs"),
    F(beta1, CFG_FLOAT, 0, "AdamW beta1"),
    F(beta2, CFG_FLOAT, 0, "AdamW beta2"),
    F(adam_eps, CFG_FLOAT, 0, "AdamW epsilon"),
    F(weight_decay, CFG_FLOAT, 0, "AdamW weight decay on weight matrices"),
    F(grad_clip, CFG_FLOAT, 0, "clip the global gradient norm to this (0: off)"),
    F(seed, CFG_INT, 0, "random seed: initialisation, shuffling, augmentation, dropout"),
    F(eval_interval, CFG_INT, 0, "evaluate every this many updates (0: after every epoch) and at the end"),
    F(eval_images, CFG_INT, 0, "validation images per evaluation (0: all)"),
    F(log_file, CFG_STRING, 0, "JSON-lines log ({attention} is replaced; empty: none)"),
    F(checkpoint, CFG_STRING, 0, "checkpoint path ({attention}, {step} are replaced; empty: none)"),
    F(checkpoint_interval, CFG_INT, 0, "save every this many updates (0: only at the end)"),
    F(log_interval, CFG_INT, 0, "print progress every this many updates"),
};
#undef F
static const ConfigSchema CONFIG_SCHEMA = {CONFIG_FIELDS, sizeof(CONFIG_FIELDS) / sizeof(CONFIG_FIELDS[0])};

// The Fashion-MNIST run (configs/vit_fashion_mnist.json spells it out): 28x28 grey
// images in 7x7 patches (16 tokens), 6 blocks of 128 channels, 12 epochs.
static Config config_default(void) {
    Config c;
    memset(&c, 0, sizeof(c));
    strcpy(c.mode, "train");
    c.image_size = 28;
    c.channels = 1;
    c.num_classes = 0;
    c.patch_size = 7;
    strcpy(c.dims, "128");
    strcpy(c.depths, "6");
    strcpy(c.heads, "4");
    c.mlp_ratio = 3;
    strcpy(c.attention, "flow");
    c.clamp = 1.0;
    strcpy(c.pooling, "mean");
    c.layerscale = 0;
    c.layerscale_attn = 0;
    c.ln_eps = 1e-5;
    c.init_std = 0.02;
    c.dropout = 0;
    c.drop_path = 0;
    strcpy(c.train_data, "data/fashion-mnist/train_*.bin");
    strcpy(c.val_data, "data/fashion-mnist/test_*.bin");
    strcpy(c.mean, "0.2860");
    strcpy(c.std, "0.3530");
    c.pad = 0;
    c.flip = 0;
    c.label_smoothing = 0.1;
    c.mixup = 0;
    c.cutmix = 0;
    c.batch_size = 32;
    c.grad_accum = 1;
    c.epochs = 12;
    c.steps = 0;
    c.lr = 1e-3;
    c.min_lr = 1e-5;
    c.warmup_epochs = 0.3;
    c.beta1 = 0.9;
    c.beta2 = 0.999;
    c.adam_eps = 1e-8;
    c.weight_decay = 0.05;
    c.grad_clip = 1.0;
    c.seed = 1337;
    c.eval_interval = 0;
    c.eval_images = 0;
    strcpy(c.log_file, "log/vit_fashion_mnist_{attention}.jsonl");
    strcpy(c.checkpoint, "log/vit_fashion_mnist_{attention}.bin");
    c.checkpoint_interval = 0;
    c.log_interval = 200;
    return c;
}

// ----------------------------------------------------------------------------
// The model

typedef struct {
    int S, Cin, K, P;        // image side, image channels, classes, patch side
    int nstages;
    int dims[MAX_STAGES], depths[MAX_STAGES], heads[MAX_STAGES], ffn[MAX_STAGES];
    AttentionKind attention;
    real clamp;
    int cls;                 // 1: class token (and its pooling), else mean pooling
    real layerscale;         // initial gain; 0: no LayerScale
    int layerscale_attn;     // LayerScale on the attention branch too
    real ln_eps;             // LayerNorm epsilon
    real p_drop, p_path;     // dropout, drop-path of the last block
} ViTConfig;

// The parameters of one block.
typedef struct {
    real *ln1w, *ln1b;   // (C)
    real *qkvw, *qkvb;   // (3C, C), (3C)
    real *projw, *projb; // (C, C), (C)
    real *ls1;           // (C), LayerScale on attention only
    real *ln2w, *ln2b;   // (C)
    real *fcw, *fcb;     // (F, C), (F)
    real *fc2w, *fc2b;   // (C, F), (C)
    real *ls2;           // (C), with LayerScale only
} BlockParams;

typedef struct {
    real *patch_w, *patch_b;                   // (C0, P*P*Cin), (C0)
    real *cls;                                 // (C0), class token only
    real *pos;                                 // (T0, C0)
    real *merge_w[MAX_STAGES], *merge_b[MAX_STAGES]; // stage s > 0: (Cs, 4 C(s-1)), (Cs)
    BlockParams* blocks;                       // (L)
    real *lnfw, *lnfb;                         // (Clast)
    real *headw, *headb;                       // (K, Clast), (K)
} Params;

// How a tensor is initialised, which also says whether AdamW decays it.
typedef enum { INIT_ZERO, INIT_ONE, INIT_WEIGHT, INIT_EMBED, INIT_LAYERSCALE } InitKind;

typedef struct {
    const char* name;
    long offset, size;
    InitKind init;
} TensorInfo;

// Activations of one block, for the allocated batch.
typedef struct {
    real* inp;               // (B, T, C) block input (points into the previous output)
    real *ln1, *ln1_mean, *ln1_rstd;
    real* qkv;               // (B, T, 3C)
    real* atty;              // (B, T, C) attention output, heads concatenated
    real* attcache;          // attention_cache_size
    real* attb;              // (B, T, C) projection (after dropout), before LayerScale
    real* res2;              // (B, T, C) stream after the attention branch
    real *ln2, *ln2_mean, *ln2_rstd;
    real* fch;               // (B, T, F) before GELU
    real* fch_act;           // (B, T, F) after GELU (and dropout)
    real* mlpb;              // (B, T, C) MLP output (after dropout), before LayerScale
    real* res3;              // (B, T, C) block output
} BlockActs;

typedef struct {
    ViTConfig config;
    int L;                            // blocks in all
    int stage_of[64];                 // stage of each block (L <= 64)
    int side[MAX_STAGES], T[MAX_STAGES]; // token grid side and tokens per stage
    Params params, grads;
    TensorInfo* tensors;
    int ntensors;
    long num_parameters;
    real *params_memory, *grads_memory, *m_memory, *v_memory;
    // activations
    int batch_size;                   // B the activations were allocated for
    int B;                            // of the last forward pass
    size_t acts_size;                 // reals of activations
    real* acts_memory;
    BlockActs* acts;
    real *patch_cols, *patches, *tokens;   // (B,N0,P*P*Cin), (B,N0,C0), (B,T0,C0)
    real *merge_cols[MAX_STAGES], *merged[MAX_STAGES]; // (B,Ts,4C(s-1)), (B,Ts,Cs)
    real *lnf, *lnf_mean, *lnf_rstd, *pooled, *logits, *lse, *losses, *targets;
    real* branch;                     // (B, T, C) largest: a branch after LayerScale
    // gradients of activations, reused block after block
    real *dres, *dres2, *dbranch, *dtmp, *dln, *datty, *dqkv, *dh1, *dh2, *dcols, *dpooled, *dlogits;
    int training;                     // 1: dropout and drop-path active
    uint64_t dropout_seed;
} ViT;

// Walks the parameter tensors in their order in memory: points p's tensors into
// base (NULL: only counts) and, when info is given, records each tensor.
// Returns the number of reals.
static long vit_layout(const ViT* m, real* base, Params* p, TensorInfo* info, int* ntensors) {
    const ViTConfig* c = &m->config;
    long off = 0;
    int n = 0;
#define TENSOR(field, count, kind) do { \
        long size_ = (long)(count); \
        (field) = base != NULL && size_ > 0 ? base + off : NULL; \
        if (info != NULL) { info[n].name = strstr(#field, "->") + 2; info[n].offset = off; info[n].size = size_; info[n].init = (kind); } \
        n++; off += size_; } while (0)
    int C0 = c->dims[0];
    TENSOR(p->patch_w, (long)C0 * c->P * c->P * c->Cin, INIT_WEIGHT);
    TENSOR(p->patch_b, C0, INIT_ZERO);
    TENSOR(p->cls, c->cls ? C0 : 0, INIT_EMBED);
    TENSOR(p->pos, (long)m->T[0] * C0, INIT_EMBED);
    for (int s = 1; s < c->nstages; s++) {
        TENSOR(p->merge_w[s], (long)c->dims[s] * 4 * c->dims[s - 1], INIT_WEIGHT);
        TENSOR(p->merge_b[s], c->dims[s], INIT_ZERO);
    }
    for (int l = 0; l < m->L; l++) {
        int s = m->stage_of[l];
        long C = c->dims[s], F = c->ffn[s];
        BlockParams* b = &p->blocks[l];
        TENSOR(b->ln1w, C, INIT_ONE);
        TENSOR(b->ln1b, C, INIT_ZERO);
        TENSOR(b->qkvw, 3 * C * C, INIT_WEIGHT);
        TENSOR(b->qkvb, 3 * C, INIT_ZERO);
        TENSOR(b->projw, C * C, INIT_WEIGHT);
        TENSOR(b->projb, C, INIT_ZERO);
        TENSOR(b->ls1, c->layerscale > 0 && c->layerscale_attn ? C : 0, INIT_LAYERSCALE);
        TENSOR(b->ln2w, C, INIT_ONE);
        TENSOR(b->ln2b, C, INIT_ZERO);
        TENSOR(b->fcw, F * C, INIT_WEIGHT);
        TENSOR(b->fcb, F, INIT_ZERO);
        TENSOR(b->fc2w, C * F, INIT_WEIGHT);
        TENSOR(b->fc2b, C, INIT_ZERO);
        TENSOR(b->ls2, c->layerscale > 0 ? C : 0, INIT_LAYERSCALE);
    }
    int Cl = c->dims[c->nstages - 1];
    TENSOR(p->lnfw, Cl, INIT_ONE);
    TENSOR(p->lnfb, Cl, INIT_ZERO);
    TENSOR(p->headw, (long)c->K * Cl, INIT_WEIGHT);
    TENSOR(p->headb, c->K, INIT_ZERO);
#undef TENSOR
    if (ntensors != NULL) *ntensors = n;
    return off;
}

static void vit_build(ViT* m, const ViTConfig* c) {
    memset(m, 0, sizeof(*m));
    m->config = *c;
    if (c->nstages < 1 || c->nstages > MAX_STAGES) fail("the model needs 1 to %d stages, got %d", MAX_STAGES, c->nstages);
    if (c->cls && c->nstages > 1) fail("a class token needs a single stage (pooling \"mean\" for hierarchical models)");
    if (c->K < 2) fail("the model needs at least 2 classes, got %d", c->K);
    int shrink = c->P << (c->nstages - 1);
    if (c->P < 1 || c->S % shrink != 0)
        fail("image_size %d is not a multiple of patch_size %d x 2^(stages-1) = %d", c->S, c->P, shrink);
    for (int s = 0; s < c->nstages; s++) {
        attention_head_size(c->dims[s], c->heads[s]);
        if (c->depths[s] < 1 || c->ffn[s] < 1) fail("stage %d needs at least one block and an MLP", s);
        m->side[s] = c->S / (c->P << s);
        m->T[s] = m->side[s] * m->side[s] + (s == 0 && c->cls);
        for (int d = 0; d < c->depths[s]; d++) {
            if (m->L == 64) fail("at most 64 blocks");
            m->stage_of[m->L++] = s;
        }
    }
    m->params.blocks = (BlockParams*)calloc_check((size_t)m->L, sizeof(BlockParams));
    m->grads.blocks = (BlockParams*)calloc_check((size_t)m->L, sizeof(BlockParams));
    vit_layout(m, NULL, &m->params, NULL, &m->ntensors);
    m->tensors = (TensorInfo*)malloc_check((size_t)m->ntensors * sizeof(TensorInfo));
    m->num_parameters = vit_layout(m, NULL, &m->params, m->tensors, NULL);
    size_t n = (size_t)m->num_parameters;
    m->params_memory = (real*)malloc_check(n * sizeof(real));
    m->grads_memory = (real*)calloc_check(n, sizeof(real));
    m->m_memory = (real*)calloc_check(n, sizeof(real));
    m->v_memory = (real*)calloc_check(n, sizeof(real));
    vit_layout(m, m->params_memory, &m->params, NULL, NULL);
    vit_layout(m, m->grads_memory, &m->grads, NULL, NULL);
}

// DeiT's initialisation (with normal instead of truncated normal draws): weights,
// position embedding and class token N(0, std), biases 0, LayerNorm gains 1,
// LayerScale gains at their configured value.
static void vit_init(ViT* m, double std, Rng* rng) {
    for (int i = 0; i < m->ntensors; i++) {
        real* p = m->params_memory + m->tensors[i].offset;
        for (long j = 0; j < m->tensors[i].size; j++) {
            switch (m->tensors[i].init) {
            case INIT_ZERO: p[j] = 0; break;
            case INIT_ONE: p[j] = 1; break;
            case INIT_WEIGHT: case INIT_EMBED: p[j] = (real)(std * rng_normal(rng)); break;
            case INIT_LAYERSCALE: p[j] = m->config.layerscale; break;
            }
        }
    }
}

static void vit_free(ViT* m) {
    free(m->params_memory);
    free(m->grads_memory);
    free(m->m_memory);
    free(m->v_memory);
    free(m->acts_memory);
    free(m->acts);
    free(m->tensors);
    free(m->params.blocks);
    free(m->grads.blocks);
}

// The attention of the blocks of stage s: bidirectional, over a fused qkv buffer.
static Attention vit_attention(const ViT* m, int s, int B) {
    const ViTConfig* c = &m->config;
    Attention a = attention_make(c->attention, 0, B, m->T[s], c->heads[s], c->dims[s] / c->heads[s]);
    a.q_stride = a.k_stride = a.v_stride = 3 * c->dims[s];
    a.clamp = c->clamp;
    return a;
}

// Carves activations from one block of memory (base NULL: only counts). Returns reals.
static size_t vit_carve(ViT* m, real* base, int B) {
    const ViTConfig* c = &m->config;
    size_t off = 0;
#define CARVE(ptr, count) do { size_t n_ = (size_t)(count); (ptr) = base ? base + off : NULL; off += n_; } while (0)
    size_t N0 = (size_t)m->side[0] * m->side[0];
    size_t maxC = 0, maxF = 0, maxCols = (size_t)B * N0 * c->P * c->P * c->Cin;
    CARVE(m->patch_cols, maxCols);
    CARVE(m->patches, (size_t)B * N0 * c->dims[0]);
    CARVE(m->tokens, (size_t)B * m->T[0] * c->dims[0]);
    for (int s = 1; s < c->nstages; s++) {
        size_t cols = (size_t)B * m->T[s] * 4 * c->dims[s - 1];
        CARVE(m->merge_cols[s], cols);
        CARVE(m->merged[s], (size_t)B * m->T[s] * c->dims[s]);
        if (cols > maxCols) maxCols = cols;
    }
    for (int s = 0; s < c->nstages; s++) {
        size_t BT = (size_t)B * m->T[s];
        if (BT * c->dims[s] > maxC) maxC = BT * c->dims[s];
        if (BT * c->ffn[s] > maxF) maxF = BT * c->ffn[s];
    }
    for (int l = 0; l < m->L; l++) {
        int s = m->stage_of[l];
        size_t BT = (size_t)B * m->T[s], C = c->dims[s], F = c->ffn[s];
        Attention a = vit_attention(m, s, B);
        BlockActs* x = &m->acts[l];
        if (base) {
            if (l == 0) x->inp = m->tokens;
            else if (s != m->stage_of[l - 1]) x->inp = m->merged[s];
            else x->inp = m->acts[l - 1].res3;
        }
        CARVE(x->ln1, BT * C);
        CARVE(x->ln1_mean, BT);
        CARVE(x->ln1_rstd, BT);
        CARVE(x->qkv, BT * 3 * C);
        CARVE(x->atty, BT * C);
        CARVE(x->attcache, attention_cache_size(&a));
        CARVE(x->attb, BT * C);
        CARVE(x->res2, BT * C);
        CARVE(x->ln2, BT * C);
        CARVE(x->ln2_mean, BT);
        CARVE(x->ln2_rstd, BT);
        CARVE(x->fch, BT * F);
        CARVE(x->fch_act, BT * F);
        CARVE(x->mlpb, BT * C);
        CARVE(x->res3, BT * C);
    }
    int sl = c->nstages - 1;
    size_t BTl = (size_t)B * m->T[sl], Cl = c->dims[sl];
    CARVE(m->lnf, BTl * Cl);
    CARVE(m->lnf_mean, BTl);
    CARVE(m->lnf_rstd, BTl);
    CARVE(m->pooled, (size_t)B * Cl);
    CARVE(m->logits, (size_t)B * c->K);
    CARVE(m->lse, B);
    CARVE(m->losses, B);
    CARVE(m->targets, (size_t)B * c->K);
    CARVE(m->branch, maxC);
    m->acts_size = off;
    // gradients
    CARVE(m->dres, maxC);
    CARVE(m->dres2, maxC);
    CARVE(m->dbranch, maxC);
    CARVE(m->dtmp, maxC);
    CARVE(m->dln, maxC);
    CARVE(m->datty, maxC);
    CARVE(m->dqkv, 3 * maxC);
    CARVE(m->dh1, maxF);
    CARVE(m->dh2, maxF);
    CARVE(m->dcols, maxCols);
    CARVE(m->dpooled, (size_t)B * Cl);
    CARVE(m->dlogits, (size_t)B * c->K);
#undef CARVE
    return off;
}

static void vit_allocate(ViT* m, int B) {
    m->acts = (BlockActs*)calloc_check((size_t)m->L, sizeof(BlockActs));
    size_t total = vit_carve(m, NULL, B);
    m->acts_memory = (real*)malloc_check(total * sizeof(real));
    vit_carve(m, m->acts_memory, B);
    m->batch_size = B;
}

// Key of dropout site `site` (block l: 5l + {0: attention output, 1: MLP hidden,
// 2: MLP output, 3: attention drop-path, 4: MLP drop-path}) in the current pass.
static uint64_t dropout_key(const ViT* m, int site) {
    return rng_hash64(m->dropout_seed ^ rng_hash64((uint64_t)site + 1));
}

static real active(const ViT* m, real p) { return m->training ? p : 0; }

// Drop-path probability of block l: linear from 0 at the first block to p_path at the last.
static real drop_path_of(const ViT* m, int l) {
    return m->L > 1 ? m->config.p_path * (real)l / (real)(m->L - 1) : 0;
}

// The output of stage s (its last block), (B, T, C).
static real* vit_output_of_stage(const ViT* m, int s) {
    int l = m->L - 1;
    while (m->stage_of[l] > s) l--;
    return m->acts[l].res3;
}

static real* vit_output(const ViT* m) { return m->acts[m->L - 1].res3; }

// images are (B, S, S, Cin) normalised; targets (B, K) are distributions or NULL
// (logits only). Returns the mean loss (-1 without targets).
static double vit_forward(ViT* m, const real* images, const real* targets, int B) {
    const ViTConfig* c = &m->config;
    if (m->acts_memory == NULL) vit_allocate(m, B);
    if (B > m->batch_size) fail("forward pass of B=%d exceeds the allocated B=%d", B, m->batch_size);
    m->B = B;
    const Params* p = &m->params;
    int N0 = m->side[0] * m->side[0], C0 = c->dims[0], PPC = c->P * c->P * c->Cin;

    patch_im2col_forward(m->patch_cols, images, B, c->S, c->S, c->Cin, c->P);
    matmul_forward(m->patches, m->patch_cols, p->patch_w, p->patch_b, B * N0, PPC, C0);
    tokens_forward(m->tokens, m->patches, c->cls ? p->cls : NULL, p->pos, B, N0, C0);
    for (int l = 0; l < m->L; l++) {
        int s = m->stage_of[l];
        int C = c->dims[s], F = c->ffn[s], BT = B * m->T[s];
        if (s > 0 && m->stage_of[l - 1] != s) {
            int Cp = c->dims[s - 1];
            patch_im2col_forward(m->merge_cols[s], vit_output_of_stage(m, s - 1), B, m->side[s - 1],
                                 m->side[s - 1], Cp, 2);
            matmul_forward(m->merged[s], m->merge_cols[s], p->merge_w[s], p->merge_b[s], BT, 4 * Cp, C);
        }
        const BlockParams* w = &p->blocks[l];
        BlockActs* x = &m->acts[l];
        Attention a = vit_attention(m, s, B);
        real pp = active(m, drop_path_of(m, l)), pd = active(m, c->p_drop);

        layernorm_forward(x->ln1, x->ln1_mean, x->ln1_rstd, x->inp, w->ln1w, w->ln1b, BT, C, c->ln_eps);
        matmul_forward(x->qkv, x->ln1, w->qkvw, w->qkvb, BT, C, 3 * C);
        attention_forward(&a, x->atty, x->attcache, x->qkv, x->qkv + C, x->qkv + 2 * C);
        matmul_forward(x->attb, x->atty, w->projw, w->projb, BT, C, C);
        if (pd > 0) dropout_forward(x->attb, x->attb, (long)BT * C, pd, dropout_key(m, 5 * l));
        const real* branch = x->attb;
        if (w->ls1 != NULL) { layerscale_forward(m->branch, x->attb, w->ls1, BT, C); branch = m->branch; }
        droppath_add_forward(x->res2, x->inp, branch, B, (long)m->T[s] * C, pp, dropout_key(m, 5 * l + 3));

        layernorm_forward(x->ln2, x->ln2_mean, x->ln2_rstd, x->res2, w->ln2w, w->ln2b, BT, C, c->ln_eps);
        matmul_forward(x->fch, x->ln2, w->fcw, w->fcb, BT, C, F);
        gelu_forward(x->fch_act, x->fch, (long)BT * F);
        if (pd > 0) dropout_forward(x->fch_act, x->fch_act, (long)BT * F, pd, dropout_key(m, 5 * l + 1));
        matmul_forward(x->mlpb, x->fch_act, w->fc2w, w->fc2b, BT, F, C);
        if (pd > 0) dropout_forward(x->mlpb, x->mlpb, (long)BT * C, pd, dropout_key(m, 5 * l + 2));
        branch = x->mlpb;
        if (w->ls2 != NULL) { layerscale_forward(m->branch, x->mlpb, w->ls2, BT, C); branch = m->branch; }
        droppath_add_forward(x->res3, x->res2, branch, B, (long)m->T[s] * C, pp, dropout_key(m, 5 * l + 4));
    }
    int sl = c->nstages - 1, Cl = c->dims[sl], Tl = m->T[sl];
    layernorm_forward(m->lnf, m->lnf_mean, m->lnf_rstd, vit_output(m), p->lnfw, p->lnfb, B * Tl, Cl, c->ln_eps);
    pool_forward(m->pooled, m->lnf, c->cls ? POOL_CLS : POOL_MEAN, B, Tl, Cl);
    matmul_forward(m->logits, m->pooled, p->headw, p->headb, B, Cl, c->K);
    if (targets == NULL) return -1;
    memcpy(m->targets, targets, sizeof(real) * B * c->K);
    soft_crossentropy_forward(m->losses, m->lse, m->logits, targets, B, c->K);
    double sum = 0;
    for (int b = 0; b < B; b++) sum += m->losses[b];
    return sum / B;
}

static void vit_zero_grad(ViT* m) {
    memset(m->grads_memory, 0, (size_t)m->num_parameters * sizeof(real));
}

// Gradient of a dropout site: d itself when off, else spare = mask * d / (1-p).
static real* through_dropout(real* d, real* spare, long n, real p, uint64_t key) {
    if (p <= 0) return d;
    memset(spare, 0, (size_t)n * sizeof(real));
    dropout_backward(spare, d, n, p, key);
    return spare;
}

// The gradient of a branch's output (before LayerScale and dropout) from the
// gradient dres of the residual stream after it: drop-path, LayerScale, dropout.
// Uses dbranch and dtmp; returns the one holding the result.
static real* branch_backward(ViT* m, real* dgamma, const real* gamma, const real* out, int B, int T,
                             int C, real pp, uint64_t path_key, real pd, uint64_t drop_key) {
    long n = (long)B * T * C;
    memset(m->dbranch, 0, (size_t)n * sizeof(real));
    droppath_add_backward(m->dbranch, m->dres, B, (long)T * C, pp, path_key);
    real *cur = m->dbranch, *spare = m->dtmp;
    if (gamma != NULL) {
        memset(spare, 0, (size_t)n * sizeof(real));
        layerscale_backward(spare, dgamma, cur, out, gamma, n / C, C);
        cur = m->dtmp;
        spare = m->dbranch;
    }
    return through_dropout(cur, spare, n, pd, drop_key);
}

// grads += gradient of dloss * (sum of the losses of the last forward pass, which had targets).
static void vit_backward(ViT* m, real dloss) {
    const ViTConfig* c = &m->config;
    int B = m->B;
    const Params* p = &m->params;
    Params* g = &m->grads;
    int sl = c->nstages - 1, Cl = c->dims[sl], Tl = m->T[sl];

    memset(m->dlogits, 0, sizeof(real) * B * c->K);
    soft_crossentropy_backward(m->dlogits, m->logits, m->lse, m->targets, dloss, B, c->K);
    memset(m->dpooled, 0, sizeof(real) * B * Cl);
    matmul_backward(m->dpooled, g->headw, g->headb, m->dlogits, m->pooled, p->headw, B, Cl, c->K);
    memset(m->dln, 0, sizeof(real) * B * Tl * Cl);
    pool_backward(m->dln, m->dpooled, c->cls ? POOL_CLS : POOL_MEAN, B, Tl, Cl);
    memset(m->dres, 0, sizeof(real) * B * Tl * Cl);
    layernorm_backward(m->dres, g->lnfw, g->lnfb, m->dln, vit_output(m), p->lnfw, m->lnf_mean, m->lnf_rstd,
                       B * Tl, Cl);
    for (int l = m->L - 1; l >= 0; l--) {
        int s = m->stage_of[l];
        int C = c->dims[s], F = c->ffn[s], T = m->T[s], BT = B * T;
        size_t nC = (size_t)BT * C, nF = (size_t)BT * F;
        const BlockParams* w = &p->blocks[l];
        BlockParams* gw = &g->blocks[l];
        BlockActs* x = &m->acts[l];
        Attention a = vit_attention(m, s, B);
        real pp = active(m, drop_path_of(m, l)), pd = active(m, c->p_drop);

        // MLP branch: res3 = res2 + droppath(ls2 * drop(fc2(drop(gelu(fc(ln2(res2)))))))
        real* dmlp = branch_backward(m, gw->ls2, w->ls2, x->mlpb, B, T, C, pp, dropout_key(m, 5 * l + 4),
                                     pd, dropout_key(m, 5 * l + 2));
        memset(m->dh1, 0, nF * sizeof(real));
        matmul_backward(m->dh1, gw->fc2w, gw->fc2b, dmlp, x->fch_act, w->fc2w, BT, F, C);
        real* dact = through_dropout(m->dh1, m->dh2, (long)nF, pd, dropout_key(m, 5 * l + 1));
        real* dpre = dact == m->dh1 ? m->dh2 : m->dh1;
        memset(dpre, 0, nF * sizeof(real));
        gelu_backward(dpre, x->fch, dact, (long)nF);
        memset(m->dln, 0, nC * sizeof(real));
        matmul_backward(m->dln, gw->fcw, gw->fcb, dpre, x->ln2, w->fcw, BT, C, F);
        layernorm_backward(m->dres, gw->ln2w, gw->ln2b, m->dln, x->res2, w->ln2w, x->ln2_mean, x->ln2_rstd, BT, C);

        // attention branch: res2 = inp + droppath(ls1 * drop(proj(attn(qkv(ln1(inp))))))
        real* datt = branch_backward(m, gw->ls1, w->ls1, x->attb, B, T, C, pp, dropout_key(m, 5 * l + 3),
                                     pd, dropout_key(m, 5 * l));
        memset(m->datty, 0, nC * sizeof(real));
        matmul_backward(m->datty, gw->projw, gw->projb, datt, x->atty, w->projw, BT, C, C);
        memset(m->dqkv, 0, 3 * nC * sizeof(real));
        attention_backward(&a, m->dqkv, m->dqkv + C, m->dqkv + 2 * C, m->datty, x->atty, x->attcache,
                           x->qkv, x->qkv + C, x->qkv + 2 * C);
        memset(m->dln, 0, nC * sizeof(real));
        matmul_backward(m->dln, gw->qkvw, gw->qkvb, m->dqkv, x->ln1, w->qkvw, BT, C, 3 * C);
        layernorm_backward(m->dres, gw->ln1w, gw->ln1b, m->dln, x->inp, w->ln1w, x->ln1_mean, x->ln1_rstd, BT, C);

        if (s > 0 && m->stage_of[l - 1] != s) {
            // merge: inp = merge(previous stage's token grid); dres becomes that grid's gradient
            int Cp = c->dims[s - 1], side = m->side[s - 1];
            size_t ncols = nC / C * 4 * Cp;
            memset(m->dcols, 0, ncols * sizeof(real));
            matmul_backward(m->dcols, g->merge_w[s], g->merge_b[s], m->dres, m->merge_cols[s], p->merge_w[s],
                            BT, 4 * Cp, C);
            memset(m->dres2, 0, (size_t)B * side * side * Cp * sizeof(real));
            patch_im2col_backward(m->dres2, m->dcols, B, side, side, Cp, 2);
            real* t = m->dres;
            m->dres = m->dres2;
            m->dres2 = t;
        }
    }
    int N0 = m->side[0] * m->side[0], C0 = c->dims[0], PPC = c->P * c->P * c->Cin;
    memset(m->dtmp, 0, sizeof(real) * B * N0 * C0);
    tokens_backward(m->dtmp, c->cls ? g->cls : NULL, g->pos, m->dres, B, N0, C0);
    matmul_backward(NULL, g->patch_w, g->patch_b, m->dtmp, m->patch_cols, p->patch_w, B * N0, PPC, C0);
}

static void vit_update(ViT* m, real lr, real beta1, real beta2, real eps, real weight_decay, long t) {
    for (int i = 0; i < m->ntensors; i++) {
        const TensorInfo* ti = &m->tensors[i];
        if (ti->size == 0) continue;
        // weight matrices decay; biases, norms, LayerScale, positions and the class token do not (DeiT)
        real wd = ti->init == INIT_WEIGHT ? weight_decay : 0;
        adamw_update(m->params_memory + ti->offset, m->grads_memory + ti->offset, m->m_memory + ti->offset,
                     m->v_memory + ti->offset, ti->size, lr, beta1, beta2, eps, wd, t);
    }
}

// ----------------------------------------------------------------------------
// Data: image shards, shuffled each epoch, cropped, flipped and normalised.

typedef struct {
    ImageSet set;
    long* perm;        // order of the images in epoch perm_epoch
    long perm_epoch;
    uint8_t* raw;      // (B, H, W, Cin) pixels of a batch
    int* labels;       // (B)
    long* indices;     // (B)
} Loader;

static Loader loader_open(const char* pattern, int B) {
    Loader d;
    d.set = image_set_open(pattern);
    d.perm = (long*)malloc_check((size_t)d.set.count * sizeof(long));
    d.perm_epoch = -1;
    d.raw = (uint8_t*)malloc_check((size_t)B * d.set.image_bytes);
    d.labels = (int*)malloc_check((size_t)B * sizeof(int));
    d.indices = (long*)malloc_check((size_t)B * sizeof(long));
    return d;
}

static void loader_close(Loader* d) {
    image_set_close(&d->set);
    free(d->perm);
    free(d->raw);
    free(d->labels);
    free(d->indices);
}

// Fails, naming the first shard, when the images do not fit the model.
static void loader_check(const Loader* d, const char* what, const ViTConfig* c) {
    const ImageSet* s = &d->set;
    const char* path = s->shards[0].path;
    if (s->channels != c->Cin)
        fail("%s: images have %d channels, the configuration has channels %d (%s)", path, s->channels, c->Cin, what);
    if (s->height < c->S || s->width < c->S)
        fail("%s: images are %dx%d, smaller than image_size %d (%s)", path, s->height, s->width, c->S, what);
    if (s->num_classes != c->K)
        fail("%s: shards have %d classes, the configuration has num_classes %d (%s)", path, s->num_classes, c->K, what);
    if (s->count < 1) fail("%s: no images (%s)", path, what);
}

// The images of epoch e in a fixed random order (its own seed, so that a resumed
// run only needs the position).
static void loader_shuffle(Loader* d, uint64_t seed, long epoch) {
    long n = d->set.count;
    for (long i = 0; i < n; i++) d->perm[i] = i;
    Rng r = rng_make(seed ^ rng_hash64((uint64_t)epoch + 1));
    for (long i = n - 1; i > 0; i--) {
        long j = rng_below(&r, i + 1);
        long t = d->perm[i];
        d->perm[i] = d->perm[j];
        d->perm[j] = t;
    }
    d->perm_epoch = epoch;
}

// Reads the B training images at positions pos.. of the shuffled stream.
static void loader_next(Loader* d, uint64_t seed, long pos, int B) {
    long n = d->set.count;
    for (int j = 0; j < B; j++) {
        long e = (pos + j) / n;
        if (e != d->perm_epoch) loader_shuffle(d, seed, e);
        d->indices[j] = d->perm[(pos + j) % n];
    }
    image_set_read(&d->set, d->indices, B, d->raw, d->labels);
}

// images (B, S, S, Cin) from the loader's raw batch: random crops and flips when
// rng is given, centre crops otherwise.
static void make_images(real* images, const Loader* d, int B, int S, int pad, int flip, Rng* rng,
                        const real* mean, const real* std) {
    const ImageSet* s = &d->set;
    int y0[B], x0[B], fl[B];
    for (int b = 0; b < B; b++) {
        if (rng != NULL) {
            augment_random_offsets(rng, s->height, s->width, S, pad, &y0[b], &x0[b]);
            fl[b] = flip && rng_uniform(rng) < 0.5;
        } else {
            augment_center_offsets(s->height, s->width, S, &y0[b], &x0[b]);
            fl[b] = 0;
        }
    }
#pragma omp parallel for
    for (int b = 0; b < B; b++)
        augment_crop(images + (long)b * S * S * s->channels, d->raw + (long)b * s->image_bytes, s->height,
                     s->width, s->channels, S, y0[b], x0[b], fl[b], mean, std);
}

// Per-channel mean and std in [0, 1] over up to 10,000 images spread over the set.
static void measure_mean_std(const ImageSet* set, double* mean, double* std) {
    long n = set->count < 10000 ? set->count : 10000;
    int C = set->channels;
    double sum[4] = {0}, sq[4] = {0};
    uint8_t* px = (uint8_t*)malloc_check((size_t)set->image_bytes);
    for (long i = 0; i < n; i++) {
        long idx = i * (set->count / n);
        image_set_read(set, &idx, 1, px, NULL);
        for (long j = 0; j < set->image_bytes; j++) {
            double v = px[j] / 255.0;
            sum[j % C] += v;
            sq[j % C] += v * v;
        }
    }
    double per = (double)n * set->image_bytes / C;
    for (int c = 0; c < C; c++) {
        mean[c] = sum[c] / per;
        std[c] = sqrt(fmax(sq[c] / per - mean[c] * mean[c], 1e-12));
    }
    free(px);
}

// ----------------------------------------------------------------------------
// Evaluation

typedef struct {
    double loss, top1, top5, seconds;
    long images;
} EvalResult;

// Cross-entropy, top-1 and top-5 accuracy of the centre crops of the first
// max_images images of the loader's set (0: all), in batches of B.
static EvalResult evaluate(ViT* m, Loader* d, int B, long max_images, real* images, real* targets,
                           const real* mean, const real* std) {
    const ViTConfig* c = &m->config;
    double t0 = omp_get_wtime();
    long n = max_images > 0 && max_images < d->set.count ? max_images : d->set.count;
    EvalResult r = {0, 0, 0, 0, 0};
    for (long i = 0; i < n; i += B) {
        int b = n - i < B ? (int)(n - i) : B;
        for (int j = 0; j < b; j++) d->indices[j] = i + j;
        image_set_read(&d->set, d->indices, b, d->raw, d->labels);
        make_images(images, d, b, c->S, 0, 0, NULL, mean, std);
        soft_targets_from_labels(targets, d->labels, 0, b, c->K);
        r.loss += vit_forward(m, images, targets, b) * b;
        for (int j = 0; j < b; j++) {
            const real* lg = m->logits + (long)j * c->K;
            int rank = 0;
            for (int k = 0; k < c->K; k++) rank += lg[k] > lg[d->labels[j]];
            r.top1 += rank == 0;
            r.top5 += rank < 5;
        }
    }
    r.images = n;
    r.loss /= n;
    r.top1 = 100.0 * r.top1 / n;
    r.top5 = 100.0 * r.top5 / n;
    r.seconds = omp_get_wtime() - t0;
    return r;
}

// ----------------------------------------------------------------------------
// The program

#ifndef TESTING

// --visualize decodes an image file (stb_image, through data/image_prep.h's decoder
// and torchvision-style resize) and writes a PNG (stb_image_write); compiled here once.
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include "data/image_prep.h"
#include <stb/stb_image_write.h>

// Comma-separated list of positive integers (at most max); returns the count.
static int parse_int_list(const char* text, int* out, int max, const char* field) {
    int n = 0;
    const char* p = text;
    while (*p) {
        char* end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 1000000 || n == max || (*end != ',' && *end != '\0'))
            fail("configuration: %s must be up to %d positive integers separated by commas, got \"%s\"",
                 field, max, text);
        out[n++] = (int)v;
        p = *end == ',' ? end + 1 : end;
    }
    if (n == 0) fail("configuration: %s is empty", field);
    return n;
}

// Comma-separated list of exactly n numbers.
static void parse_real_list(const char* text, real* out, int n, const char* field) {
    const char* p = text;
    for (int i = 0; i < n; i++) {
        char* end;
        double v = strtod(p, &end);
        if (end == p || (*end != ',' && *end != '\0') || (i + 1 < n && *end != ',') || (i + 1 == n && *end))
            fail("configuration: %s must be %d numbers separated by commas (one per channel), got \"%s\"",
                 field, n, text);
        out[i] = (real)v;
        p = end + 1;
    }
}

// Resolves the model settings, failing with the field's name on a bad value.
static ViTConfig model_config(const Config* cfg) {
    ViTConfig c;
    memset(&c, 0, sizeof(c));
    int kind = attention_kind_from_name(cfg->attention);
    if (kind < 0) fail("configuration: attention must be flow, softmax or linear, got \"%s\"", cfg->attention);
    if (strcmp(cfg->pooling, "cls") != 0 && strcmp(cfg->pooling, "mean") != 0)
        fail("configuration: pooling must be cls or mean, got \"%s\"", cfg->pooling);
    if (cfg->image_size < 1 || cfg->channels < 1 || cfg->channels > 4 || cfg->patch_size < 1 || cfg->mlp_ratio <= 0)
        fail("configuration: image_size, patch_size, mlp_ratio must be positive and channels in [1, 4]");
    if (!(cfg->dropout >= 0 && cfg->dropout < 1) || !(cfg->drop_path >= 0 && cfg->drop_path < 1))
        fail("configuration: dropout and drop_path must be in [0, 1)");
    if (cfg->layerscale < 0) fail("configuration: layerscale must be >= 0");
    c.S = cfg->image_size;
    c.Cin = cfg->channels;
    c.K = cfg->num_classes;
    c.P = cfg->patch_size;
    c.nstages = parse_int_list(cfg->dims, c.dims, MAX_STAGES, "dims");
    if (parse_int_list(cfg->depths, c.depths, MAX_STAGES, "depths") != c.nstages ||
        parse_int_list(cfg->heads, c.heads, MAX_STAGES, "heads") != c.nstages)
        fail("configuration: dims, depths and heads must list the same number of stages");
    for (int s = 0; s < c.nstages; s++) c.ffn[s] = (int)(cfg->mlp_ratio * c.dims[s] + 0.5);
    c.attention = (AttentionKind)kind;
    c.clamp = (real)cfg->clamp;
    c.cls = strcmp(cfg->pooling, "cls") == 0;
    c.layerscale = (real)cfg->layerscale;
    c.layerscale_attn = cfg->layerscale_attn;
    c.ln_eps = (real)cfg->ln_eps;
    c.p_drop = (real)cfg->dropout;
    c.p_path = (real)cfg->drop_path;
    return c;
}

static void check_training_config(const Config* cfg) {
    if (cfg->batch_size < 1 || cfg->grad_accum < 1 || cfg->steps < 0 || cfg->epochs < 0)
        fail("configuration: batch_size and grad_accum must be positive, steps and epochs >= 0");
    if (cfg->pad < 0 || cfg->label_smoothing < 0 || cfg->label_smoothing >= 1 || cfg->mixup < 0 || cfg->cutmix < 0)
        fail("configuration: pad, mixup, cutmix must be >= 0 and label_smoothing in [0, 1)");
    if (cfg->log_interval < 1) fail("configuration: log_interval must be positive");
}

static void usage(void) {
    Config d = config_default();
    printf("usage: train_vit_flow [--config FILE.json] [--resume CHECKPOINT] [--FIELD VALUE]...\n"
           "       train_vit_flow --resume CHECKPOINT --visualize IMAGE [--visualize_out OUT.png]\n"
           "Settings are applied in this order: built-in defaults (the Fashion-MNIST run), the\n"
           "checkpoint's own settings (--resume), the JSON file (--config), the command line.\n"
           "--resume continues a run exactly (model, optimizer, step, data position, random state);\n"
           "with --mode eval it evaluates the checkpoint on val_data. --visualize writes the image with\n"
           "a heat map of the flow each patch sends in the last block (Flow-Attention only).\n");
    config_print_help(&CONFIG_SCHEMA, &d);
}

static void log_eval(Logger* log, long step, double epoch, EvalResult r) {
    printf("step %ld | epoch %.2f | val loss %.4f | top-1 %.2f%% | top-5 %.2f%% | %ld images | %.1f s\n",
           step, epoch, r.loss, r.top1, r.top5, r.images, r.seconds);
    logger_printf(log, "{\"step\":%ld,\"epoch\":%.4f,\"val_loss\":%.9g,\"top1\":%.4f,\"top5\":%.4f,"
                  "\"val_images\":%ld,\"seconds\":%.3f}", step, epoch, r.loss, r.top1, r.top5, r.images, r.seconds);
    fflush(stdout);
}

static void save_checkpoint(const ViT* m, const Config* cfg, long step, long data_pos, const Rng* rng) {
    char path[CONFIG_STR];
    expand_path(path, sizeof path, cfg->checkpoint, cfg->attention, step);
    CheckpointInfo info = {m->num_parameters, step, data_pos, rng->state, config_to_json(&CONFIG_SCHEMA, cfg, 0)};
    checkpoint_save(path, &info, m->params_memory, m->m_memory, m->v_memory);
    free(info.config_json);
    printf("saved checkpoint %s (step %ld)\n", path, step);
}

// Writes out_path: the image (centre crop at the model's size) and, beside it, the
// same with a heat map of C_j, the share of flow each patch sends after the
// sources' competition (FLOW_ATTENTION.md), averaged over the heads of the last block.
static void visualize(ViT* m, const char* in_path, const char* out_path, const real* mean, const real* std) {
    const ViTConfig* c = &m->config;
    if (c->attention != ATTN_FLOW) fail("--visualize shows Flow-Attention's flows; this model uses %s attention",
                                        attention_kind_name(c->attention));
    int w, h, S = c->S;
    const char* why = NULL;
    unsigned char* src = decode_rgb(in_path, &w, &h, &why);
    if (src == NULL) fail("%s: %s", in_path, why);
    unsigned char* rgb = (unsigned char*)malloc_check((size_t)S * S * 3);
    resize_crop(src, w, h, S, rgb);
    stbi_image_free(src);
    uint8_t* px = (uint8_t*)malloc_check((size_t)S * S * c->Cin);
    for (long i = 0; i < (long)S * S; i++) {
        if (c->Cin == 1) px[i] = (uint8_t)((299 * rgb[3 * i] + 587 * rgb[3 * i + 1] + 114 * rgb[3 * i + 2]) / 1000);
        else for (int k = 0; k < c->Cin; k++) px[i * c->Cin + k] = rgb[3 * i + (k < 3 ? k : 2)];
    }
    real* image = (real*)malloc_check((size_t)S * S * c->Cin * sizeof(real));
    augment_crop(image, px, S, S, c->Cin, S, 0, 0, 0, mean, std);
    m->training = 0;
    vit_forward(m, image, NULL, 1);

    int l = m->L - 1, s = m->stage_of[l], T = m->T[s], side = m->side[s], first = c->cls;
    size_t per_head = flow_cache_per_head(T, T);
    // the sinks' allocation A_i too, printed for comparison
    double heat[side * side], lo = INFINITY, hi = -INFINITY, alo = INFINITY, ahi = -INFINITY;
    for (int j = 0; j < side * side; j++) {
        double alloc = 0;
        heat[j] = 0;
        for (int hh = 0; hh < c->heads[s]; hh++) {
            heat[j] += flow_normal_cache(m->acts[l].attcache + hh * per_head, T, T, FN_C)[first + j] / c->heads[s];
            alloc += flow_normal_cache(m->acts[l].attcache + hh * per_head, T, T, FN_A)[first + j] / c->heads[s];
        }
        lo = fmin(lo, heat[j]);
        hi = fmax(hi, heat[j]);
        alo = fmin(alo, alloc);
        ahi = fmax(ahi, alloc);
    }
    int f = S >= 224 ? 1 : (224 + S - 1) / S, W = 2 * S * f;
    unsigned char* out = (unsigned char*)malloc_check((size_t)W * S * f * 3);
    for (int y = 0; y < S * f; y++) {
        for (int x = 0; x < S * f; x++) {
            const unsigned char* p = rgb + ((long)(y / f) * S + x / f) * 3;
            double v = hi > lo ? (heat[(y / f * side / S) * side + x / f * side / S] - lo) / (hi - lo) : 0.5;
            double jet[3] = {1.5 - fabs(4 * v - 3), 1.5 - fabs(4 * v - 2), 1.5 - fabs(4 * v - 1)};
            for (int k = 0; k < 3; k++) {
                double grey = c->Cin == 1 ? px[(long)(y / f) * S + x / f] : p[k];
                double col = 255 * fmin(fmax(jet[k], 0), 1);
                out[((long)y * W + x) * 3 + k] = (unsigned char)grey;
                out[((long)y * W + S * f + x) * 3 + k] = (unsigned char)(0.45 * grey + 0.55 * col);
            }
        }
    }
    make_parent_dirs(out_path);
    const char* tmp = tmp_path_of(out_path);
    if (!stbi_write_png(tmp, W, S * f, 3, out, W * 3)) fail("%s: cannot write the PNG", tmp);
    rename_check(tmp, out_path);
    printf("wrote %s: flow sent by each of the %dx%d patches in block %d (share C_j from %.3f to %.3f; "
           "the allocation A_i of the receiving patches ranges from %.3f to %.3f)\n", out_path, side, side, l + 1,
           lo, hi, alo, ahi);
    free(out);
    free(image);
    free(px);
    free(rgb);
}

int main(int argc, char** argv) {
    const char* config_path = NULL;
    const char* resume_path = NULL;
    const char* vis_path = NULL;
    const char* vis_out = "log/vit_flow.png";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) { usage(); return 0; }
        if (strncmp(argv[i], "--", 2) != 0 || i + 1 >= argc)
            fail("command line: expected --FIELD VALUE pairs, got \"%s\" (--help lists them)", argv[i]);
        if (strcmp(argv[i], "--config") == 0) config_path = argv[i + 1];
        else if (strcmp(argv[i], "--resume") == 0) resume_path = argv[i + 1];
        else if (strcmp(argv[i], "--visualize") == 0) vis_path = argv[i + 1];
        else if (strcmp(argv[i], "--visualize_out") == 0) vis_out = argv[i + 1];
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
        if (strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "--resume") == 0 ||
            strcmp(argv[i], "--visualize") == 0 || strcmp(argv[i], "--visualize_out") == 0) continue;
        config_set_arg(&CONFIG_SCHEMA, &cfg, argv[i] + 2, argv[i + 1]);
    }
    int train = strcmp(cfg.mode, "train") == 0 && vis_path == NULL;
    int eval_only = strcmp(cfg.mode, "eval") == 0 && vis_path == NULL;
    if (strcmp(cfg.mode, "train") != 0 && strcmp(cfg.mode, "eval") != 0)
        fail("configuration: mode must be train or eval, got \"%s\"", cfg.mode);
    if (vis_path != NULL && resume_path == NULL) fail("command line: --visualize needs --resume CHECKPOINT");
    check_training_config(&cfg);
    int B = cfg.batch_size;

    // data first, so that bad input stops the run before anything is written
    Loader train_data, val_data;
    int have_train = train || (!cfg.mean[0] && vis_path == NULL), have_val = cfg.val_data[0] && vis_path == NULL;
    if (eval_only && !have_val) fail("configuration: mode eval needs val_data");
    if (have_train) {
        train_data = loader_open(cfg.train_data, B);
        if (cfg.num_classes == 0) cfg.num_classes = train_data.set.num_classes;
    }
    if (have_val) {
        val_data = loader_open(cfg.val_data, B);
        if (cfg.num_classes == 0) cfg.num_classes = val_data.set.num_classes;
    }
    if (!cfg.mean[0] || !cfg.std[0]) {
        if (!have_train) fail("configuration: mean and std are needed (or train_data to measure them)");
        double mu[4], sd[4];
        measure_mean_std(&train_data.set, mu, sd);
        char* pm = cfg.mean;
        char* ps = cfg.std;
        for (int k = 0; k < train_data.set.channels; k++) {
            pm += sprintf(pm, "%s%.4f", k ? "," : "", mu[k]);
            ps += sprintf(ps, "%s%.4f", k ? "," : "", sd[k]);
        }
        printf("measured on %s: mean %s, std %s\n", cfg.train_data, cfg.mean, cfg.std);
    }
    if (resume_path != NULL) config_check_fixed(&CONFIG_SCHEMA, &saved, &cfg, resume_path);
    ViTConfig mc = model_config(&cfg);
    if (have_train && train) loader_check(&train_data, "train_data", &mc);
    if (have_val) loader_check(&val_data, "val_data", &mc);
    real mean[4], std[4];
    parse_real_list(cfg.mean, mean, mc.Cin, "mean");
    parse_real_list(cfg.std, std, mc.Cin, "std");
    for (int k = 0; k < mc.Cin; k++)
        if (!(std[k] > 0)) fail("configuration: std must be positive, got \"%s\"", cfg.std);

    ViT model;
    vit_build(&model, &mc);
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
        vit_init(&model, cfg.init_std, &rng);
    }
    if (vis_path != NULL) {
        visualize(&model, vis_path, vis_out, mean, std);
        vit_free(&model);
        free(ckpt.config_json);
        return 0;
    }
    vit_allocate(&model, B);
    printf("model: %d stage(s), dims %s, depths %s, heads %s, MLP x%g, %s attention (clamp %g), %s pooling, "
           "LayerScale %g%s | %dx%dx%d images, %d classes, patches %d | %ld parameters | tokens",
           mc.nstages, cfg.dims, cfg.depths, cfg.heads, cfg.mlp_ratio, attention_kind_name(mc.attention),
           (double)mc.clamp, cfg.pooling, cfg.layerscale, mc.layerscale_attn ? " (both branches)" : "", mc.S, mc.S,
           mc.Cin, mc.K, mc.P, model.num_parameters);
    for (int s = 0; s < mc.nstages; s++) printf(" %d", model.T[s]);
    printf(" | activations %.1f MB per image | %d threads\n",
           (double)model.acts_size * sizeof(real) / B / 1e6, omp_get_max_threads());

    char log_path[CONFIG_STR];
    expand_path(log_path, sizeof log_path, cfg.log_file, cfg.attention, step);
    Logger log = logger_open(log_path, resume_path != NULL);
    if (resume_path == NULL || !train) {
        char* json = config_to_json(&CONFIG_SCHEMA, &cfg, 0);
        logger_printf(&log, "{\"config\":%s}", json);
        free(json);
    }
    real* images = (real*)malloc_check((size_t)B * mc.S * mc.S * mc.Cin * sizeof(real));
    real* targets = (real*)malloc_check((size_t)B * mc.K * sizeof(real));
    real* mix_copy = (real*)malloc_check(((size_t)B * mc.S * mc.S * mc.Cin + (size_t)B * mc.K) * sizeof(real));

    if (eval_only) log_eval(&log, step, 0, evaluate(&model, &val_data, B, cfg.eval_images, images, targets, mean, std));
    if (train) {
        long n = train_data.set.count, per_update = (long)B * cfg.grad_accum;
        long per_epoch = n / per_update > 0 ? n / per_update : 1;
        long total = cfg.steps > 0 ? cfg.steps : (long)cfg.epochs * per_epoch;
        Schedule sched = {SCHEDULE_COSINE, cfg.lr, cfg.min_lr, 0, (long)(cfg.warmup_epochs * per_epoch + 0.5), total};
        printf("training: %ld images, %ld validation images | %d x %d micro-batches per update, %ld updates per "
               "epoch, %ld updates | warmup %ld | crop %d pad %d flip %d | smoothing %g mixup %g cutmix %g\n",
               n, have_val ? val_data.set.count : 0, B, cfg.grad_accum, per_epoch, total, sched.warmup, mc.S,
               cfg.pad, cfg.flip, cfg.label_smoothing, cfg.mixup, cfg.cutmix);
        double ms_avg = 0, t_start = omp_get_wtime();
        long timed = 0;
        int evaluated = 0;
        for (; step < total; step++) {
            double t0 = omp_get_wtime();
            double lr = schedule_lr(&sched, step);
            vit_zero_grad(&model);
            double loss = 0;
            model.training = 1;
            for (int micro = 0; micro < cfg.grad_accum; micro++) {
                loader_next(&train_data, (uint64_t)cfg.seed, data_pos, B);
                data_pos += B;
                make_images(images, &train_data, B, mc.S, cfg.pad, cfg.flip, &rng, mean, std);
                soft_targets_from_labels(targets, train_data.labels, (real)cfg.label_smoothing, B, mc.K);
                if (cfg.mixup > 0 || cfg.cutmix > 0) {
                    int cut = cfg.cutmix > 0 && (cfg.mixup <= 0 || rng_uniform(&rng) < 0.5);
                    double lam = rng_beta(&rng, cut ? cfg.cutmix : cfg.mixup);
                    augment_mix(&rng, images, targets, mix_copy, B, mc.S, mc.Cin, mc.K, lam, cut);
                }
                model.dropout_seed = rng_next(&rng);
                loss += vit_forward(&model, images, targets, B) / cfg.grad_accum;
                vit_backward(&model, (real)(1.0 / per_update));
            }
            model.training = 0;
            double norm = grad_norm(model.grads_memory, model.num_parameters);
            if (!isfinite(loss) || !isfinite(norm))
                fail("step %ld: the loss (%g) or gradient norm (%g) is not finite", step + 1, loss, norm);
            clip_grads(model.grads_memory, model.num_parameters, norm, cfg.grad_clip);
            vit_update(&model, (real)lr, (real)cfg.beta1, (real)cfg.beta2, (real)cfg.adam_eps,
                       (real)cfg.weight_decay, step + 1);
            double ms = (omp_get_wtime() - t0) * 1e3;
            // average per-update time, skipping the first (page faults)
            if (step > 0 || timed > 0) { timed++; ms_avg += (ms - ms_avg) / timed; }
            double per_step = timed > 0 ? ms_avg : ms, eta_s = (total - step - 1) * per_step / 1e3;
            double img_s = per_update / (ms / 1e3), epoch = (double)data_pos / n;
            if ((step + 1) % cfg.log_interval == 0 || step + 1 == total) {
                char eta[32];
                format_duration(eta_s, eta, sizeof(eta));
                printf("step %5ld/%ld | epoch %.2f | loss %.4f | lr %.2e | norm %.4f | %.1f ms | %.0f img/s | eta %s\n",
                       step + 1, total, epoch, loss, lr, norm, ms, img_s, eta);
                fflush(stdout);
            }
            logger_printf(&log, "{\"step\":%ld,\"epoch\":%.4f,\"loss\":%.17g,\"lr\":%.9g,\"norm\":%.9g,\"ms\":%.3f,"
                          "\"img_s\":%.1f,\"eta_s\":%.1f}", step + 1, epoch, loss, lr, norm, ms, img_s, eta_s);
            int epoch_end = (step + 1) % per_epoch == 0;
            evaluated = 0;
            if (have_val && (cfg.eval_interval > 0 ? (step + 1) % cfg.eval_interval == 0 : epoch_end)) {
                log_eval(&log, step + 1, epoch, evaluate(&model, &val_data, B, cfg.eval_images, images, targets, mean, std));
                evaluated = 1;
            }
            if (cfg.checkpoint[0] && cfg.checkpoint_interval > 0 && (step + 1) % cfg.checkpoint_interval == 0 &&
                step + 1 < total)
                save_checkpoint(&model, &cfg, step + 1, data_pos, &rng);
        }
        double minutes = (omp_get_wtime() - t_start) / 60;
        if (timed > 0)
            printf("average %.1f ms per update (%.0f img/s); %.1f minutes in all\n", ms_avg,
                   per_update / (ms_avg / 1e3), minutes);
        if (have_val && !evaluated)
            log_eval(&log, step, (double)data_pos / n,
                     evaluate(&model, &val_data, B, cfg.eval_images, images, targets, mean, std));
        if (cfg.checkpoint[0]) save_checkpoint(&model, &cfg, step, data_pos, &rng);
    }
    logger_close(&log);
    free(images);
    free(targets);
    free(mix_copy);
    if (have_train) loader_close(&train_data);
    if (have_val) loader_close(&val_data);
    free(ckpt.config_json);
    vit_free(&model);
    return 0;
}
#endif
