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
    x += droppath(ls2 * drop(fc2(drop(gelu(fc(LN(x)))))))
  with bidirectional attention of any kind of layers/attention.h ("flow",
  "softmax" or "linear") and optional LayerScale gains ls1, ls2; then a final
  LayerNorm, the class token or the mean over tokens, and a linear head.
Training: AdamW with warmup + cosine, label smoothing, mixup/cutmix, gradient
clipping and accumulation; random crops with padding and flips; images shuffled
each epoch with a seed (utils/image_loader.h). Settings, resuming, checkpoints
and the log are utils/run.h's. Under mpirun, each rank computes its part of
every batch and the gradients are summed across the ranks (utils/dist.h).
*/
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <stddef.h>
#include <omp.h>
#include "utils/real.h"
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
#include "utils/params.h"
#include "utils/schedule.h"
#include "utils/run.h"
#include "utils/progress.h"
#include "utils/image_loader.h"
#include "utils/augment.h"
#include "utils/dist.h"

#define MAX_STAGES 4
#define MAX_BLOCKS 64

// ----------------------------------------------------------------------------
// Configuration: every setting of a run, with its default (the Fashion-MNIST run,
// which configs/vit_fashion_mnist.json spells out: 28x28 grey images in 7x7 patches
// (16 tokens), 6 blocks of 128 channels).

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
    int zero;
    // evaluation and output
    int eval_interval, eval_images;
    char log_file[CONFIG_STR], checkpoint[CONFIG_STR];
    int checkpoint_interval, log_interval;
    double memory_limit;
} Config;

#define F(name, type, value, allowed, fixed, help) {#name, type, offsetof(Config, name), value, allowed, fixed, help}
static const ConfigField CONFIG_FIELDS[] = {
    F(mode, CFG_STRING, "train", "train|eval", 0, "train or eval (top-1/top-5 of val_data; with --resume)"),
    F(image_size, CFG_INT, "28", "[1, 8192]", 1, "side of the square images the model sees (crops of the shards' images)"),
    F(channels, CFG_INT, "1", "[1, 4]", 1, "image channels (1 grey, 3 RGB)"),
    F(num_classes, CFG_INT, "0", "[0, 1048576]", 1, "classes; 0 takes the training shards'"),
    F(patch_size, CFG_INT, "7", "[1, 1024]", 1, "side of the patches of the patch embedding"),
    F(dims, CFG_STRING, "128", NULL, 1, "channels of each stage, comma-separated (one stage: a plain ViT)"),
    F(depths, CFG_STRING, "6", NULL, 1, "blocks of each stage"),
    F(heads, CFG_STRING, "4", NULL, 1, "attention heads of each stage"),
    F(mlp_ratio, CFG_FLOAT, "3", "(0, 64]", 1, "MLP hidden size over channels"),
    F(attention, CFG_STRING, "flow", NULL, 1, "attention kind (listed below)"),
    F(clamp, CFG_FLOAT, "1.0", "(0, 40]", 1, "Flow-Attention conservation clamp bound"),
    F(pooling, CFG_STRING, "mean", "cls|mean", 1, "cls (class token, one stage only) or mean (average of the tokens)"),
    F(layerscale, CFG_FLOAT, "0", "[0, 1e6]", 1, "initial LayerScale gain on the MLP branch (0: no LayerScale)"),
    F(layerscale_attn, CFG_BOOL, "false", NULL, 1, "LayerScale on the attention branch too"),
    F(ln_eps, CFG_FLOAT, "1e-5", "(0, 1]", 1, "LayerNorm epsilon (1e-5 as PyTorch; the authors' hierarchical model 1e-6)"),
    F(init_std, CFG_FLOAT, "0.02", "[0, 100]", 0, "std of the initial weights, position embedding and class token"),
    F(dropout, CFG_FLOAT, "0", "[0, 1)", 0, "dropout on the MLP hidden activations and on both branches' outputs"),
    F(drop_path, CFG_FLOAT, "0", "[0, 1)", 0, "stochastic depth of the last block (rising linearly from 0 at the first)"),
    F(train_data, CFG_STRING, "data/fashion-mnist/train_*.bin", NULL, 0, "training image shards (a glob pattern)"),
    F(val_data, CFG_STRING, "data/fashion-mnist/test_*.bin", NULL, 0, "validation image shards (a glob pattern; empty: none)"),
    F(mean, CFG_STRING, "0.2860", NULL, 0, "per-channel mean in [0,1], comma-separated (empty: measured on train_data)"),
    F(std, CFG_STRING, "0.3530", NULL, 0, "per-channel std in [0,1], comma-separated (empty: measured on train_data)"),
    F(pad, CFG_INT, "0", "[0, 1024]", 0, "zero padding around the image before random crops"),
    F(flip, CFG_BOOL, "false", NULL, 0, "random horizontal flips"),
    F(label_smoothing, CFG_FLOAT, "0.1", "[0, 1)", 0, "label smoothing"),
    F(mixup, CFG_FLOAT, "0", "[0, 1e6]", 0, "mixup Beta(a,a) parameter (0: off)"),
    F(cutmix, CFG_FLOAT, "0", "[0, 1e6]", 0, "cutmix Beta(a,a) parameter (0: off; with mixup, one of the two per batch)"),
    F(batch_size, CFG_INT, "32", "[1, 1048576]", 0, "images per micro-batch (B), split among the ranks"),
    F(grad_accum, CFG_INT, "1", "[1, 1048576]", 0, "micro-batches per update"),
    F(epochs, CFG_INT, "12", "[0, 1000000]", 0, "passes over the training images"),
    F(steps, CFG_INT, "0", "[0, inf)", 0, "optimizer updates (0: epochs x updates per epoch)"),
    F(lr, CFG_FLOAT, "1e-3", "[0, 1e6]", 0, "peak learning rate"),
    F(min_lr, CFG_FLOAT, "1e-5", "[0, 1e6]", 0, "final learning rate of the cosine schedule"),
    F(warmup_epochs, CFG_FLOAT, "0.3", "[0, 1e6]", 0, "linear warmup, in epochs"),
    F(beta1, CFG_FLOAT, "0.9", "[0, 1)", 0, "AdamW beta1"),
    F(beta2, CFG_FLOAT, "0.999", "[0, 1)", 0, "AdamW beta2"),
    F(adam_eps, CFG_FLOAT, "1e-8", "(0, 1]", 0, "AdamW epsilon"),
    F(weight_decay, CFG_FLOAT, "0.05", "[0, 1e6]", 0, "AdamW weight decay on weight matrices"),
    F(grad_clip, CFG_FLOAT, "1.0", "[0, 1e30]", 0, "clip the global gradient norm to this (0: off)"),
    F(seed, CFG_INT, "1337", NULL, 0, "random seed: initialisation, shuffling, augmentation, dropout"),
    F(zero, CFG_INT, "0", "[0, 1]", 0, "1: each rank keeps AdamW's moments for 1/ranks of the parameters (ZeRO-1)"),
    F(eval_interval, CFG_INT, "0", "[0, inf)", 0, "evaluate every this many updates (0: after every epoch) and at the end"),
    F(eval_images, CFG_INT, "0", "[0, inf)", 0, "validation images per evaluation during training (0: all)"),
    F(log_file, CFG_STRING, "log/vit_{data}_{attention}.jsonl", NULL, 0,
      "JSON-lines log ({data}: train_data's folder, {attention} are replaced; empty: none)"),
    F(checkpoint, CFG_STRING, "log/vit_{data}_{attention}.bin", NULL, 0,
      "checkpoint path ({data}, {attention}, {step} are replaced; empty: none)"),
    F(checkpoint_interval, CFG_INT, "0", "[0, inf)", 0, "save every this many updates (0: only at the end)"),
    F(log_interval, CFG_INT, "200", "[1, inf)", 0, "print progress every this many updates"),
    F(memory_limit, CFG_FLOAT, "0", "[0, 1e6]", 0, "GiB a run may take (0: the machine's memory)"),
};
#undef F
static const ConfigSchema CONFIG_SCHEMA = {CONFIG_FIELDS, sizeof(CONFIG_FIELDS) / sizeof(CONFIG_FIELDS[0])};

// ----------------------------------------------------------------------------
// The model

typedef struct {
    int S, Cin, K, P;        // image side, image channels, classes, patch side
    int nstages;
    int dims[MAX_STAGES], depths[MAX_STAGES], heads[MAX_STAGES], ffn[MAX_STAGES];
    const AttentionKind* attention;
    real clamp;
    int cls;                 // 1: class token (and its pooling), else mean pooling
    real layerscale;         // initial gain; 0: no LayerScale
    int layerscale_attn;     // LayerScale on the attention branch too
    real ln_eps;             // LayerNorm epsilon
    real p_drop, p_path;     // dropout, drop-path of the last block
    double init_std;         // of the weights, position embedding and class token (vit_init)
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
    BlockParams blocks[MAX_BLOCKS];
    real *lnfw, *lnfb;                         // (Clast)
    real *headw, *headb;                       // (K, Clast), (K)
} ParameterTensors;

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
    real* fch;               // (B, T, F) before fc's bias and GELU
    real* fch_act;           // (B, T, F) after GELU (and dropout)
    real* mlpb;              // (B, T, C) MLP output (after dropout), before LayerScale
    real* res3;              // (B, T, C) block output
} BlockActs;

typedef struct {
    ViTConfig config;
    int L;                            // blocks in all
    int stage_of[MAX_BLOCKS];         // stage of each block
    int side[MAX_STAGES], T[MAX_STAGES]; // token grid side and tokens per stage
    Parameters params;                // the tensors' table and memory: parameters, gradients, AdamW moments
    ParameterTensors p, g;            // the parameters and their gradients, by name
    // activations
    int batch_size;                   // B the activations were allocated for
    int B;                            // of the last forward pass
    size_t acts_size;                 // reals of activations
    real* acts_memory;
    BlockActs acts[MAX_BLOCKS];
    real *patch_cols, *patches, *tokens;   // (B,N0,P*P*Cin), (B,N0,C0), (B,T0,C0)
    real *merge_cols[MAX_STAGES], *merged[MAX_STAGES]; // (B,Ts,4C(s-1)), (B,Ts,Cs)
    real *lnf, *lnf_mean, *lnf_rstd, *pooled, *logits, *lse, *losses, *targets;
    real* branch;                     // (B, T, C) largest: a branch after LayerScale
    // gradients of activations, reused block after block
    real *dres, *dres2, *dbranch, *dtmp, *dln, *datty, *dqkv, *dh1, *dh2, *dcols, *dpooled, *dlogits;
    int training;                     // 1: dropout and drop-path active
    uint64_t dropout_seed;            // the masks of one update derive from it
    long first_sample;                // index of the pass's first image in the update's global batch
    DistParams* dp;                   // the backward pass starts summing finished buckets across ranks (NULL: not)
} ViT;

// DeiT's initialisation (with normal instead of truncated normal draws): weights,
// position embedding and class token N(0, std), biases 0, LayerNorm gains 1,
// LayerScale gains at their configured value. AdamW decays the weight matrices;
// biases, norms, LayerScale, positions and the class token not (DeiT).
// Describes the tensors; vit_build allocates them.
static void vit_layout(ViT* m, const ViTConfig* c) {
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
            if (m->L == MAX_BLOCKS) fail("at most %d blocks", MAX_BLOCKS);
            m->stage_of[m->L++] = s;
        }
    }
    Parameters* P = &m->params;
    ParameterTensors *p = &m->p, *g = &m->g;
    double std = c->init_std;
    long C0 = c->dims[0], Cl = c->dims[c->nstages - 1], ls = c->layerscale > 0;
    PARAM(P, "patch_w", &p->patch_w, &g->patch_w, INIT_NORMAL, std, 1, C0, (long)c->P * c->P * c->Cin);
    PARAM(P, "patch_b", &p->patch_b, &g->patch_b, INIT_ZERO, 0, 0, C0);
    PARAM(P, "cls", &p->cls, &g->cls, INIT_NORMAL, std, 0, c->cls ? C0 : 0);
    PARAM(P, "pos", &p->pos, &g->pos, INIT_NORMAL, std, 0, m->T[0], C0);
    char name[48];
    for (int s = 1; s < c->nstages; s++) {
        snprintf(name, sizeof name, "merge%d_w", s);
        PARAM(P, name, &p->merge_w[s], &g->merge_w[s], INIT_NORMAL, std, 1, c->dims[s], 4L * c->dims[s - 1]);
        snprintf(name, sizeof name, "merge%d_b", s);
        PARAM(P, name, &p->merge_b[s], &g->merge_b[s], INIT_ZERO, 0, 0, c->dims[s]);
    }
    for (int l = 0; l < m->L; l++) {
        long C = c->dims[m->stage_of[l]], F = c->ffn[m->stage_of[l]];
        BlockParams *b = &p->blocks[l], *gb = &g->blocks[l];
#define BLOCK_PARAM(field, init, value, decay, ...) do { \
            snprintf(name, sizeof name, "block%d.%s", l, #field); \
            PARAM(P, name, &b->field, &gb->field, init, value, decay, __VA_ARGS__); } while (0)
        BLOCK_PARAM(ln1w, INIT_ONE, 0, 0, C);
        BLOCK_PARAM(ln1b, INIT_ZERO, 0, 0, C);
        BLOCK_PARAM(qkvw, INIT_NORMAL, std, 1, 3 * C, C);
        BLOCK_PARAM(qkvb, INIT_ZERO, 0, 0, 3 * C);
        BLOCK_PARAM(projw, INIT_NORMAL, std, 1, C, C);
        BLOCK_PARAM(projb, INIT_ZERO, 0, 0, C);
        BLOCK_PARAM(ls1, INIT_CONSTANT, c->layerscale, 0, ls && c->layerscale_attn ? C : 0);
        BLOCK_PARAM(ln2w, INIT_ONE, 0, 0, C);
        BLOCK_PARAM(ln2b, INIT_ZERO, 0, 0, C);
        BLOCK_PARAM(fcw, INIT_NORMAL, std, 1, F, C);
        BLOCK_PARAM(fcb, INIT_ZERO, 0, 0, F);
        BLOCK_PARAM(fc2w, INIT_NORMAL, std, 1, C, F);
        BLOCK_PARAM(fc2b, INIT_ZERO, 0, 0, C);
        BLOCK_PARAM(ls2, INIT_CONSTANT, c->layerscale, 0, ls ? C : 0);
#undef BLOCK_PARAM
    }
    PARAM(P, "lnfw", &p->lnfw, &g->lnfw, INIT_ONE, 0, 0, Cl);
    PARAM(P, "lnfb", &p->lnfb, &g->lnfb, INIT_ZERO, 0, 0, Cl);
    PARAM(P, "headw", &p->headw, &g->headw, INIT_NORMAL, std, 1, c->K, Cl);
    PARAM(P, "headb", &p->headb, &g->headb, INIT_ZERO, 0, 0, c->K);
}

static void vit_build(ViT* m, const ViTConfig* c) {
    vit_layout(m, c);
    params_allocate(&m->params);
}

static void vit_init(ViT* m, Rng* rng) { params_init(&m->params, rng); }

static void vit_free(ViT* m) {
    params_free(&m->params);
    free(m->acts_memory);
}

// The attention of the blocks of stage s: bidirectional, over a fused qkv buffer.
static Attention vit_attention(const ViT* m, int s, int B) {
    const ViTConfig* c = &m->config;
    Attention a = attention_make(c->attention, 0, B, m->T[s], c->heads[s], c->dims[s] / c->heads[s]);
    a.q_stride = a.k_stride = a.v_stride = 3 * c->dims[s];
    a.clamp = c->clamp;
    return a;
}

// Lays out the activations and the gradients of activations for batches of up to
// B images in base (NULL: only counts); returns the reals needed.
static size_t vit_carve(ViT* m, real* base, int B) {
    const ViTConfig* c = &m->config;
    size_t off = 0;
    size_t N0 = (size_t)m->side[0] * m->side[0];
    size_t maxC = 0, maxF = 0, maxCols = (size_t)B * N0 * c->P * c->P * c->Cin;
    m->patch_cols = carve(base, &off, maxCols);
    m->patches = carve(base, &off, (size_t)B * N0 * c->dims[0]);
    m->tokens = carve(base, &off, (size_t)B * m->T[0] * c->dims[0]);
    for (int s = 1; s < c->nstages; s++) {
        size_t cols = (size_t)B * m->T[s] * 4 * c->dims[s - 1];
        m->merge_cols[s] = carve(base, &off, cols);
        m->merged[s] = carve(base, &off, (size_t)B * m->T[s] * c->dims[s]);
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
        x->ln1 = carve(base, &off, BT * C);
        x->ln1_mean = carve(base, &off, BT);
        x->ln1_rstd = carve(base, &off, BT);
        x->qkv = carve(base, &off, BT * 3 * C);
        x->atty = carve(base, &off, BT * C);
        x->attcache = carve(base, &off, attention_cache_size(&a));
        x->attb = carve(base, &off, BT * C);
        x->res2 = carve(base, &off, BT * C);
        x->ln2 = carve(base, &off, BT * C);
        x->ln2_mean = carve(base, &off, BT);
        x->ln2_rstd = carve(base, &off, BT);
        x->fch = carve(base, &off, BT * F);
        x->fch_act = carve(base, &off, BT * F);
        x->mlpb = carve(base, &off, BT * C);
        x->res3 = carve(base, &off, BT * C);
    }
    int sl = c->nstages - 1;
    size_t BTl = (size_t)B * m->T[sl], Cl = c->dims[sl];
    m->lnf = carve(base, &off, BTl * Cl);
    m->lnf_mean = carve(base, &off, BTl);
    m->lnf_rstd = carve(base, &off, BTl);
    m->pooled = carve(base, &off, (size_t)B * Cl);
    m->logits = carve(base, &off, (size_t)B * c->K);
    m->lse = carve(base, &off, B);
    m->losses = carve(base, &off, B);
    m->targets = carve(base, &off, (size_t)B * c->K);
    m->branch = carve(base, &off, maxC);
    m->acts_size = off;
    // gradients
    m->dres = carve(base, &off, maxC);
    m->dres2 = carve(base, &off, maxC);
    m->dbranch = carve(base, &off, maxC);
    m->dtmp = carve(base, &off, maxC);
    m->dln = carve(base, &off, maxC);
    m->datty = carve(base, &off, maxC);
    m->dqkv = carve(base, &off, 3 * maxC);
    m->dh1 = carve(base, &off, maxF);
    m->dh2 = carve(base, &off, maxF);
    m->dcols = carve(base, &off, maxCols);
    m->dpooled = carve(base, &off, (size_t)B * Cl);
    m->dlogits = carve(base, &off, (size_t)B * c->K);
    return off;
}

static void vit_allocate(ViT* m, int B) {
    size_t total = vit_carve(m, NULL, B);
    m->acts_memory = (real*)malloc_check(total * sizeof(real));
    vit_carve(m, m->acts_memory, B);
    m->batch_size = B;
}

// Bytes a rank computing batches of B images needs: parameters, gradients,
// AdamW's moments (with ZeRO-1, its part), activations and their gradients.
static double vit_memory(const ViTConfig* c, int B, const Dist* dist, int zero) {
    ViT m;
    vit_layout(&m, c);
    double reals = dist_params_reals(dist, m.params.count, zero) + (double)vit_carve(&m, NULL, B);
    params_free(&m.params);
    return reals * sizeof(real);
}

// FLOPs of a forward and backward pass over B images: 2 for each multiply-add of
// the patch embedding, merges, blocks and head forward, 4 backward, and the
// attention kernels' own count.
static double vit_flops(const ViT* m, int B) {
    const ViTConfig* c = &m->config;
    double macs = (double)m->side[0] * m->side[0] * c->dims[0] * c->P * c->P * c->Cin;
    for (int s = 1; s < c->nstages; s++) macs += (double)m->T[s] * c->dims[s] * 4 * c->dims[s - 1];
    double attention = 0;
    for (int l = 0; l < m->L; l++) {
        int s = m->stage_of[l];
        macs += (double)m->T[s] * (4.0 * c->dims[s] * c->dims[s] + 2.0 * c->dims[s] * c->ffn[s]);
        Attention a = vit_attention(m, s, B);
        attention += attention_flops(&a);
    }
    macs += (double)c->dims[c->nstages - 1] * c->K;
    return 6.0 * macs * B + attention;
}

// Key of dropout site `site` (block l: 5l + {0: attention output, 1: MLP hidden,
// 2: MLP output, 3: attention drop-path, 4: MLP drop-path}) in the current pass,
// with `per_sample` mask elements per image there: each image's mask is that of
// its index in the update's global batch, whichever rank or micro-batch computes it.
static uint64_t dropout_key(const ViT* m, int site, long per_sample) {
    uint64_t key = rng_hash64(m->dropout_seed ^ rng_hash64((uint64_t)site + 1));
    return dropout_key_from(key, m->first_sample * per_sample);
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
    const ParameterTensors* p = &m->p;
    int N0 = m->side[0] * m->side[0], C0 = c->dims[0], PPC = c->P * c->P * c->Cin;

    patch_im2col_forward(m->patch_cols, images, B, c->S, c->S, c->Cin, c->P);
    matmul_forward(m->patches, m->patch_cols, p->patch_w, p->patch_b, B * N0, PPC, C0);
    tokens_forward(m->tokens, m->patches, c->cls ? p->cls : NULL, p->pos, B, N0, C0);
    for (int l = 0; l < m->L; l++) {
        int s = m->stage_of[l];
        int C = c->dims[s], F = c->ffn[s], T = m->T[s], BT = B * T;
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
        if (pd > 0) dropout_forward(x->attb, x->attb, (long)BT * C, pd, dropout_key(m, 5 * l, (long)T * C));
        const real* branch = x->attb;
        if (w->ls1 != NULL) { layerscale_forward(m->branch, x->attb, w->ls1, BT, C); branch = m->branch; }
        droppath_add_forward(x->res2, x->inp, branch, B, (long)T * C, pp, dropout_key(m, 5 * l + 3, 1));

        layernorm_forward(x->ln2, x->ln2_mean, x->ln2_rstd, x->res2, w->ln2w, w->ln2b, BT, C, c->ln_eps);
        matmul_forward(x->fch, x->ln2, w->fcw, NULL, BT, C, F); // GELU adds the bias in its pass
        bias_gelu_forward(x->fch_act, x->fch, w->fcb, BT, F);
        if (pd > 0) dropout_forward(x->fch_act, x->fch_act, (long)BT * F, pd, dropout_key(m, 5 * l + 1, (long)T * F));
        matmul_forward(x->mlpb, x->fch_act, w->fc2w, w->fc2b, BT, F, C);
        if (pd > 0) dropout_forward(x->mlpb, x->mlpb, (long)BT * C, pd, dropout_key(m, 5 * l + 2, (long)T * C));
        branch = x->mlpb;
        if (w->ls2 != NULL) { layerscale_forward(m->branch, x->mlpb, w->ls2, BT, C); branch = m->branch; }
        droppath_add_forward(x->res3, x->res2, branch, B, (long)T * C, pp, dropout_key(m, 5 * l + 4, 1));
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
    const ParameterTensors* p = &m->p;
    ParameterTensors* g = &m->g;
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
    dist_params_ready(m->dp, m->L);
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
        real* dmlp = branch_backward(m, gw->ls2, w->ls2, x->mlpb, B, T, C, pp, dropout_key(m, 5 * l + 4, 1),
                                     pd, dropout_key(m, 5 * l + 2, (long)T * C));
        memset(m->dh1, 0, nF * sizeof(real));
        matmul_backward(m->dh1, gw->fc2w, gw->fc2b, dmlp, x->fch_act, w->fc2w, BT, F, C);
        real* dact = through_dropout(m->dh1, m->dh2, (long)nF, pd, dropout_key(m, 5 * l + 1, (long)T * F));
        real* dpre = dact == m->dh1 ? m->dh2 : m->dh1;
        bias_gelu_backward(dpre, gw->fcb, dact, x->fch, w->fcb, BT, F);
        memset(m->dln, 0, nC * sizeof(real));
        matmul_backward(m->dln, gw->fcw, NULL, dpre, x->ln2, w->fcw, BT, C, F);
        layernorm_backward(m->dres, gw->ln2w, gw->ln2b, m->dln, x->res2, w->ln2w, x->ln2_mean, x->ln2_rstd, BT, C);

        // attention branch: res2 = inp + droppath(ls1 * drop(proj(attn(qkv(ln1(inp))))))
        real* datt = branch_backward(m, gw->ls1, w->ls1, x->attb, B, T, C, pp, dropout_key(m, 5 * l + 3, 1),
                                     pd, dropout_key(m, 5 * l, (long)T * C));
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
        dist_params_ready(m->dp, l);
    }
    int N0 = m->side[0] * m->side[0], C0 = c->dims[0], PPC = c->P * c->P * c->Cin;
    memset(m->dtmp, 0, sizeof(real) * B * N0 * C0);
    tokens_backward(m->dtmp, c->cls ? g->cls : NULL, g->pos, m->dres, B, N0, C0);
    matmul_backward(NULL, g->patch_w, g->patch_b, m->dtmp, m->patch_cols, p->patch_w, B * N0, PPC, C0);
    dist_params_ready(m->dp, m->L + 1);
}

// The gradient buckets (utils/dist.h), each summed across the ranks as soon as
// vit_backward has finished it: the final LayerNorm and the head (bucket L), block
// l with the merge that feeds its stage when it is the stage's first (bucket l,
// from the last block down), then the patch embedding, class token and positions
// (L + 1). Each block's tensors lie side by side, so a block is one message.
static void vit_buckets(ViT* m, DistParams* dp) {
    const ViTConfig* c = &m->config;
    ParameterTensors* g = &m->g;
    real* end = m->params.grads + m->params.count;
    dist_params_bucket(dp, m->L, g->lnfw, end - g->lnfw);
    for (int l = m->L - 1; l >= 0; l--) {
        real* next = l + 1 < m->L ? g->blocks[l + 1].ln1w : g->lnfw;
        dist_params_bucket(dp, l, g->blocks[l].ln1w, next - g->blocks[l].ln1w);
        int s = m->stage_of[l];
        if (s > 0 && m->stage_of[l - 1] != s) {
            dist_params_bucket(dp, l, g->merge_w[s], (long)c->dims[s] * 4 * c->dims[s - 1]);
            dist_params_bucket(dp, l, g->merge_b[s], c->dims[s]);
        }
    }
    real* stem_end = c->nstages > 1 ? g->merge_w[1] : g->blocks[0].ln1w;
    dist_params_bucket(dp, m->L + 1, g->patch_w, stem_end - g->patch_w);
}

// ----------------------------------------------------------------------------
// Evaluation

typedef struct {
    double loss, top1, top5, seconds;
    long images;
} EvalResult;

// Cross-entropy, top-1 and top-5 accuracy of the centre crops of the first
// max_images images of the loader's set (0: all), in batches of B. Each rank
// scores its part of every batch, and the sums are added up across the ranks;
// images and targets hold a rank's part.
static EvalResult evaluate(ViT* m, const Dist* dist, ImageLoader* d, int B, long max_images, real* images,
                           real* targets, const real* mean, const real* std) {
    const ViTConfig* c = &m->config;
    double t0 = omp_get_wtime();
    long n = max_images > 0 && max_images < d->set.count ? max_images : d->set.count;
    long lo, hi;
    dist_part(dist, B, &lo, &hi);
    EvalResult r = {0, 0, 0, 0, 0};
    for (long i = 0; i < n; i += B) {
        int b = (int)((n - i < hi ? n - i : hi) - lo); // this rank's images of the batch
        if (b <= 0) continue;
        image_loader_range(d, i + lo, b);
        image_loader_crops(images, d, b, NULL, b, c->S, 0, 0, NULL, mean, std);
        soft_targets_from_labels(targets, d->labels, 0, b, c->K);
        r.loss += vit_forward(m, images, targets, b) * b;
        for (int j = 0; j < b; j++) {
            const real* lg = m->logits + (long)j * c->K;
            int rank = 0;
            // a label whose logit is not a number ranks last (NaN compares false)
            for (int k = 0; k < c->K; k++) rank += lg[k] > lg[d->labels[j]];
            if (!isfinite(lg[d->labels[j]])) rank = c->K;
            r.top1 += rank == 0;
            r.top5 += rank < 5;
        }
    }
    double sums[3] = {r.loss, r.top1, r.top5};
    dist_sum_doubles(dist, sums, 3);
    r.loss = sums[0];
    r.top1 = sums[1];
    r.top5 = sums[2];
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

// --visualize decodes an image file with stb_image (utils/image_decode.h) and writes
// a PNG with stb_image_write (utils/heatmap.h); both compiled here once.
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include "utils/image_decode.h"
#include "utils/heatmap.h"

// The model of the settings, failing with the field's name on a bad value.
static ViTConfig model_config(const Config* cfg) {
    ViTConfig c;
    memset(&c, 0, sizeof(c));
    c.S = cfg->image_size;
    c.Cin = cfg->channels;
    c.K = cfg->num_classes;
    c.P = cfg->patch_size;
    c.nstages = config_parse_int_list(cfg->dims, c.dims, MAX_STAGES, "dims");
    if (config_parse_int_list(cfg->depths, c.depths, MAX_STAGES, "depths") != c.nstages ||
        config_parse_int_list(cfg->heads, c.heads, MAX_STAGES, "heads") != c.nstages)
        fail("configuration: dims, depths and heads must list the same number of stages");
    for (int s = 0; s < c.nstages; s++) c.ffn[s] = (int)(cfg->mlp_ratio * c.dims[s] + 0.5);
    c.attention = attention_kind_or_fail(cfg->attention);
    c.clamp = (real)cfg->clamp;
    c.cls = strcmp(cfg->pooling, "cls") == 0;
    c.layerscale = (real)cfg->layerscale;
    c.layerscale_attn = cfg->layerscale_attn;
    c.ln_eps = (real)cfg->ln_eps;
    c.p_drop = (real)cfg->dropout;
    c.p_path = (real)cfg->drop_path;
    c.init_std = cfg->init_std;
    return c;
}

static void usage(void) {
    printf("usage: train_vit_flow [--config FILE.json] [--resume CHECKPOINT] [--FIELD VALUE]...\n"
           "       train_vit_flow --resume CHECKPOINT --visualize IMAGE [--visualize_out OUT.png]\n"
           "Settings are applied in this order: built-in defaults (the Fashion-MNIST run), the\n"
           "checkpoint's own settings (--resume), the JSON file (--config), the command line.\n"
           "--resume continues a run exactly (model, optimizer, step, data position, random state);\n"
           "with --mode eval it evaluates the checkpoint on val_data. --visualize writes the image with\n"
           "a heat map of the flow each patch sends in the last block (Flow-Attention only).\n");
    config_print_help(&CONFIG_SCHEMA);
    attention_print_kinds();
}

// Prints and logs an evaluation after update `step`; stops when the loss is not finite.
static void log_eval(Logger* log, long step, double epoch, EvalResult r) {
    if (!isfinite(r.loss)) fail("step %ld: the validation loss is not finite (the run diverged)", step);
    printf("step %ld | epoch %.2f | val loss %.4f | top-1 %.2f%% | top-5 %.2f%% | %ld images | %.1f s\n",
           step, epoch, r.loss, r.top1, r.top5, r.images, r.seconds);
    logger_printf(log, "{\"step\":%ld,\"epoch\":%.4f,\"val_loss\":%.9g,\"top1\":%.4f,\"top5\":%.4f,"
                  "\"val_images\":%ld,\"seconds\":%.3f}", step, epoch, r.loss, r.top1, r.top5, r.images, r.seconds);
    fflush(stdout);
}

// Writes out_path: the image (centre crop at the model's size) and, beside it, the
// same with a heat map of C_j, the share of flow each patch sends after the
// sources' competition (doc/FLOW_ATTENTION.md), averaged over the heads of the last block.
static void visualize(ViT* m, const char* in_path, const char* out_path, const real* mean, const real* std) {
    const ViTConfig* c = &m->config;
    if (strcmp(c->attention->name, "flow") != 0)
        fail("--visualize shows Flow-Attention's flows; this model uses %s attention", c->attention->name);
    int w, h, S = c->S;
    const char* why = NULL;
    unsigned char* src = decode_rgb(in_path, &w, &h, &why);
    if (src == NULL) fail("%s: %s", in_path, why);
    unsigned char* rgb = (unsigned char*)malloc_check((size_t)S * S * 3);
    resize_crop(src, w, h, S, rgb);
    stbi_image_free(src);
    // the model's input: grey by luminance for one channel, else the RGB channels
    uint8_t* px = (uint8_t*)malloc_check((size_t)S * S * c->Cin);
    for (long i = 0; i < (long)S * S; i++) {
        if (c->Cin == 1) {
            px[i] = (uint8_t)((299 * rgb[3 * i] + 587 * rgb[3 * i + 1] + 114 * rgb[3 * i + 2]) / 1000);
            rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = px[i];
        } else {
            for (int k = 0; k < c->Cin; k++) px[i * c->Cin + k] = rgb[3 * i + (k < 3 ? k : 2)];
        }
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
    // the predicted class and its probability
    int best = 0;
    double z = 0;
    for (int k = 0; k < c->K; k++) if (m->logits[k] > m->logits[best]) best = k;
    for (int k = 0; k < c->K; k++) z += exp((double)m->logits[k] - m->logits[best]);
    char caption[64];
    snprintf(caption, sizeof caption, "class %d, p %.2f", best, 1 / z);
    heatmap_write_png(out_path, rgb, S, heat, side, caption, "flow sent");
    printf("wrote %s: predicted class %d (p %.2f); flow sent by each of the %dx%d patches in block %d (share C_j "
           "from %.3f to %.3f; the allocation A_i of the receiving patches ranges from %.3f to %.3f)\n", out_path,
           best, 1 / z, side, side, l + 1, lo, hi, alo, ahi);
    free(image);
    free(px);
    free(rgb);
}

int main(int argc, char** argv) {
    const char* vis_path = NULL;
    const char* vis_out = "log/vit_flow.png";
    const RunFlag flags[] = {{"visualize", &vis_path}, {"visualize_out", &vis_out}, {NULL, NULL}};
    Dist dist = dist_init(&argc, &argv);
    Config cfg;
    Run run;
    run_settings(&run, &dist, &CONFIG_SCHEMA, &cfg, sizeof cfg, argc, argv, usage, flags);
    int train = strcmp(cfg.mode, "train") == 0 && vis_path == NULL;
    int eval_only = strcmp(cfg.mode, "eval") == 0 && vis_path == NULL;
    if (vis_path != NULL && run.resume_path == NULL) fail("command line: --visualize needs --resume CHECKPOINT");
    int B = cfg.batch_size;
    // this rank's images [lo, hi) of every batch of B
    if (vis_path == NULL) dist_check_batch(&dist, B);
    long lo, hi;
    dist_part(&dist, B, &lo, &hi);
    int part = (int)(hi - lo);
    int mixing = cfg.mixup > 0 || cfg.cutmix > 0;

    // data first, so that bad input stops the run before anything is written
    ImageLoader train_data, val_data;
    int have_train = train || (!cfg.mean[0] && vis_path == NULL), have_val = cfg.val_data[0] && vis_path == NULL;
    if (eval_only && !have_val) fail("configuration: mode eval needs val_data");
    if (have_train) {
        train_data = image_loader_open(cfg.train_data, 2 * part); // with mixing, the part and its partners
        if (cfg.num_classes == 0) cfg.num_classes = train_data.set.num_classes;
    }
    if (have_val) {
        val_data = image_loader_open(cfg.val_data, part);
        if (cfg.num_classes == 0) cfg.num_classes = val_data.set.num_classes;
    }
    if (!cfg.mean[0] || !cfg.std[0]) {
        if (!have_train) fail("configuration: mean and std are needed (or train_data to measure them)");
        double mu[4], sd[4];
        image_set_mean_std(&train_data.set, mu, sd);
        char* pm = cfg.mean;
        char* ps = cfg.std;
        for (int k = 0; k < train_data.set.channels; k++) {
            pm += sprintf(pm, "%s%.4f", k ? "," : "", mu[k]);
            ps += sprintf(ps, "%s%.4f", k ? "," : "", sd[k]);
        }
        printf("measured on %s: mean %s, std %s\n", cfg.train_data, cfg.mean, cfg.std);
    }
    run_check_fixed(&run);
    ViTConfig mc = model_config(&cfg);
    if (have_train && train) image_loader_check(&train_data, "train_data", mc.Cin, mc.S, mc.K);
    if (have_val) image_loader_check(&val_data, "val_data", mc.Cin, mc.S, mc.K);
    double mean_d[4], std_d[4];
    config_parse_double_list(cfg.mean, mean_d, mc.Cin, "mean");
    config_parse_double_list(cfg.std, std_d, mc.Cin, "std");
    real mean[4], std[4];
    for (int k = 0; k < mc.Cin; k++) {
        mean[k] = (real)mean_d[k];
        std[k] = (real)std_d[k];
        if (!(std[k] > 0)) fail("configuration: std must be positive, got \"%s\"", cfg.std);
    }

    run_check_ranks(&run, have_train ? image_set_hash(&train_data.set) : 0,
                    have_val ? image_set_hash(&val_data.set) : 0);
    if (vis_path == NULL) run_check_memory(vit_memory(&mc, part, &dist, cfg.zero), cfg.memory_limit);
    ViT model;
    vit_build(&model, &mc);
    Rng rng = rng_make((uint64_t)cfg.seed);
    long step = 0, data_pos = 0;
    if (!run_restore(&run, &model.params, &step, &data_pos, &rng)) vit_init(&model, &rng);
    DistParams dp = dist_params_make(&dist, &model.params, cfg.zero);
    vit_buckets(&model, &dp);
    dist_params_share(&dp);
    if (vis_path != NULL) {
        if (dist.rank == 0) visualize(&model, vis_path, vis_out, mean, std);
        dist_params_free(&dp);
        vit_free(&model);
        run_free(&run);
        dist_finalize();
        return 0;
    }
    vit_allocate(&model, part);
    printf("model: %d stage(s), dims %s, depths %s, heads %s, MLP x%g, %s attention (clamp %g), %s pooling, "
           "LayerScale %g%s | %dx%dx%d images, %d classes, patches %d | %ld parameters | tokens",
           mc.nstages, cfg.dims, cfg.depths, cfg.heads, cfg.mlp_ratio, mc.attention->name, (double)mc.clamp,
           cfg.pooling, cfg.layerscale, mc.layerscale_attn ? " (both branches)" : "", mc.S, mc.S, mc.Cin, mc.K,
           mc.P, model.params.count);
    for (int s = 0; s < mc.nstages; s++) printf(" %d", model.T[s]);
    printf(" | activations %.1f MB per image | %d threads\n",
           (double)model.acts_size * sizeof(real) / part / 1e6, omp_get_max_threads());

    // training logs; evaluation writes one only when asked for
    run_outputs(&run, cfg.log_file, cfg.checkpoint, cfg.checkpoint_interval, cfg.attention, cfg.train_data);
    run_open_log(&run, train || run_given(&run, "log_file"), run.resume_path != NULL && train);
    // a rank's images of a micro-batch, and when mixing their partners (image_batch_part)
    size_t read = 2 * (size_t)part;
    int* which = (int*)malloc_check(read * sizeof(int));
    real* images = (real*)malloc_check(read * mc.S * mc.S * mc.Cin * sizeof(real));
    real* targets = (real*)malloc_check(read * mc.K * sizeof(real));
    real* mix_copy = (real*)malloc_check((read * mc.S * mc.S * mc.Cin + read * mc.K) * sizeof(real));

    // evaluation mode scores every image, whatever eval_images the training used
    if (eval_only) log_eval(&run.log, step, 0, evaluate(&model, &dist, &val_data, B, 0, images, targets, mean, std));
    if (train) {
        long n = train_data.set.count, per_update = (long)B * cfg.grad_accum;
        long per_epoch = n / per_update > 0 ? n / per_update : 1;
        long total = cfg.steps > 0 ? cfg.steps : (long)cfg.epochs * per_epoch;
        Schedule sched = {SCHEDULE_COSINE, cfg.lr, cfg.min_lr, 0, (long)(cfg.warmup_epochs * per_epoch + 0.5), total};
        AdamW opt = {cfg.beta1, cfg.beta2, cfg.adam_eps, cfg.weight_decay, cfg.grad_clip};
        printf("training: %ld images, %ld validation images | %d x %d micro-batches per update, %ld updates per "
               "epoch, %ld updates | warmup %ld | crop %d pad %d flip %d | smoothing %g mixup %g cutmix %g\n",
               n, have_val ? val_data.set.count : 0, B, cfg.grad_accum, per_epoch, total, sched.warmup, mc.S,
               cfg.pad, cfg.flip, cfg.label_smoothing, cfg.mixup, cfg.cutmix);
        Progress prog = progress_start(&dist, total, per_update, "img", cfg.log_interval,
                                       cfg.eval_interval > 0 ? cfg.eval_interval : (int)per_epoch, have_val,
                                       cfg.grad_accum * vit_flops(&model, B));
        double share = (double)part / B; // of each micro-batch's loss
        int evaluated = 0;
        for (; step < total; step++) {
            progress_begin(&prog);
            double lr = schedule_lr(&sched, step);
            params_zero_grad(&model.params);
            // the update's dropout seed comes first: a micro-batch's images are drawn and
            // used before the next one's, and the masks must not depend on how many there are
            model.dropout_seed = rng_next(&rng);
            double loss = 0;
            model.training = 1;
            for (int micro = 0; micro < cfg.grad_accum; micro++) {
                int reads = image_batch_part(which, B, (int)lo, (int)hi, mixing);
                image_loader_next(&train_data, (uint64_t)cfg.seed, data_pos, which, reads);
                data_pos += B;
                image_loader_crops(images, &train_data, reads, which, B, mc.S, cfg.pad, cfg.flip, &rng, mean, std);
                soft_targets_from_labels(targets, train_data.labels, (real)cfg.label_smoothing, reads, mc.K);
                if (mixing) {
                    int cut = cfg.cutmix > 0 && (cfg.mixup <= 0 || rng_uniform(&rng) < 0.5);
                    double lam = rng_beta(&rng, cut ? cfg.cutmix : cfg.mixup);
                    augment_mix(&rng, images, targets, mix_copy, reads, mc.S, mc.Cin, mc.K, lam, cut);
                }
                model.first_sample = (long)micro * B + lo;
                // the last micro-batch's backward pass starts summing each finished bucket across the ranks
                model.dp = micro == cfg.grad_accum - 1 ? &dp : NULL;
                loss += vit_forward(&model, images, targets, part) * share / cfg.grad_accum;
                vit_backward(&model, (real)(1.0 / per_update));
            }
            model.training = 0;
            loss = dist_sum(&dist, loss);
            dist_params_reduce(&dp);
            double norm = adamw_step_shard(model.params.params, &dp.shard, &opt, lr, loss, step + 1);
            dist_params_gather(&dp);
            double epoch = (double)data_pos / n;
            progress_end(&prog, &run.log, step + 1, loss, lr, norm, epoch);
            int epoch_end = (step + 1) % per_epoch == 0;
            evaluated = 0;
            if (have_val && (cfg.eval_interval > 0 ? (step + 1) % cfg.eval_interval == 0 : epoch_end)) {
                EvalResult r = evaluate(&model, &dist, &val_data, B, cfg.eval_images, images, targets, mean, std);
                log_eval(&run.log, step + 1, epoch, r);
                prog.eval_seconds = r.seconds;
                evaluated = 1;
            }
            run_save_due(&run, &dp, step + 1, total, data_pos, &rng);
        }
        progress_finish(&prog);
        if (have_val && !evaluated)
            log_eval(&run.log, step, (double)data_pos / n,
                     evaluate(&model, &dist, &val_data, B, cfg.eval_images, images, targets, mean, std));
        run_save(&run, &dp, step, data_pos, &rng);
    }
    run_free(&run);
    free(which);
    free(images);
    free(targets);
    free(mix_copy);
    if (have_train) image_loader_close(&train_data);
    if (have_val) image_loader_close(&val_data);
    dist_params_free(&dp);
    vit_free(&model);
    dist_finalize();
    return 0;
}
#endif
