// The GPT of both trainers, train_gpt_flow.c (CPU) and train_gpt_flow.cu (GPU): its
// settings (one schema, so that a checkpoint written by either resumes in the other), the
// model the settings describe, and its table of tensors (utils/params.h), which fixes the
// layout of the parameters in checkpoints. Also what the two do alike around the model:
// the dropout masks' keys, the FLOPs of the linear layers, sampling from the logits, and
// how windows are evaluated and text generated, and how an evaluation is printed and
// logged. The arithmetic itself is each trainer's own
// (layers/ on the CPU, cuda/ on the GPU), so this header compiles as C and as C++.
#ifndef MODELS_GPT_H
#define MODELS_GPT_H

#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <stddef.h>
#include <math.h>
#include "utils/real.h"
#include "utils/utils.h"
#include "utils/config.h"
#include "utils/params.h"
#include "utils/rng.h"
#include "utils/logger.h"
#include "utils/dist.h"
#include "utils/token_loader.h"
#include "utils/vocab.h"
#include <omp.h>

// ----------------------------------------------------------------------------
// Configuration: every setting of a run, with its default (the default run:
// nanoGPT's shakespeare_char with its documented CPU settings).

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
    int zero;
    // evaluation and output
    int eval_interval, eval_batches, context_window;
    char log_file[CONFIG_STR], checkpoint[CONFIG_STR];
    int checkpoint_interval, log_interval;
    int sample_tokens, top_k;
    double temperature;
    char prompt[CONFIG_STR];
    double memory_limit;
    int tf32;
} Config;

#define F(name, type, value, allowed, fixed, help) {#name, type, offsetof(Config, name), value, allowed, fixed, help}
static const ConfigField CONFIG_FIELDS[] = {
    F(mode, CFG_STRING, "train", "train|eval|sample", 0, "train, eval (validation loss and perplexity) or sample"),
    F(vocab_size, CFG_INT, "0", "[0, 16777216]", 1, "vocabulary size; 0 takes the vocabulary file's"),
    F(context, CFG_INT, "64", "[1, 1048576]", 1, "tokens per sample (T)"),
    F(n_layer, CFG_INT, "4", "[1, 1024]", 1, "transformer blocks"),
    F(n_head, CFG_INT, "4", "[1, 1024]", 1, "attention heads"),
    F(n_embd, CFG_INT, "128", "[1, 65536]", 1, "channels (C)"),
    F(n_ffn, CFG_INT, "0", "[0, 1048576]", 1, "MLP hidden size; 0 means 4C"),
    F(attention, CFG_STRING, "flow", NULL, 1, "attention kind (listed below)"),
    F(clamp, CFG_FLOAT, "1.0", "(0, 40]", 1, "Flow-Attention conservation clamp bound"),
    F(positions, CFG_STRING, "learned", "learned|sinusoidal", 1, "positions: learned (GPT-2) or sinusoidal (fairseq)"),
    F(embed_scale, CFG_BOOL, "false", NULL, 1, "multiply the token embedding by sqrt(C) (fairseq)"),
    F(tied, CFG_BOOL, "true", NULL, 1, "output layer shares the token embedding"),
    F(activation, CFG_STRING, "gelu", "gelu|relu", 1, "MLP activation: gelu (tanh form) or relu"),
    F(init_std, CFG_FLOAT, "0.02", "[0, 100]", 0, "std of the initial weights (residual projections get /sqrt(2 n_layer))"),
    F(dropout_embd, CFG_FLOAT, "0", "[0, 1)", 0, "dropout on the embeddings"),
    F(dropout_attn, CFG_FLOAT, "0", "[0, 1)", 0, "dropout on the attention block's output"),
    F(dropout_hidden, CFG_FLOAT, "0", "[0, 1)", 0, "dropout on the MLP hidden activations"),
    F(dropout_resid, CFG_FLOAT, "0", "[0, 1)", 0, "dropout on the MLP block's output"),
    F(train_data, CFG_STRING, "data/tinyshakespeare/train.bin", NULL, 0, "training token shards (a glob pattern)"),
    F(val_data, CFG_STRING, "data/tinyshakespeare/val.bin", NULL, 0, "validation token shard (empty: none)"),
    F(vocab, CFG_STRING, "data/tinyshakespeare/vocab.txt", NULL, 0,
      "vocabulary file, for the vocabulary size and decoding samples"),
    F(sampling, CFG_STRING, "random", "random|sequential", 0, "training batches: random (seeded) or sequential"),
    F(batch_size, CFG_INT, "12", "[1, 1048576]", 0, "samples per micro-batch (B), split among the ranks"),
    F(grad_accum, CFG_INT, "1", "[1, 1048576]", 0, "micro-batches per update"),
    F(steps, CFG_INT, "2000", "[0, inf)", 0, "optimizer updates"),
    F(schedule, CFG_STRING, "cosine", "cosine|inverse_sqrt|constant", 0, "learning rate schedule"),
    F(lr, CFG_FLOAT, "1e-3", "[0, 1e6]", 0, "peak learning rate"),
    F(min_lr, CFG_FLOAT, "1e-4", "[0, 1e6]", 0, "final learning rate of the cosine schedule"),
    F(warmup_init_lr, CFG_FLOAT, "0", "[0, 1e6]", 0, "learning rate at step 0 of inverse_sqrt's warmup"),
    F(warmup_steps, CFG_INT, "100", "[0, inf)", 0, "warmup updates"),
    F(beta1, CFG_FLOAT, "0.9", "[0, 1)", 0, "AdamW beta1"),
    F(beta2, CFG_FLOAT, "0.99", "[0, 1)", 0, "AdamW beta2"),
    F(adam_eps, CFG_FLOAT, "1e-8", "(0, 1]", 0, "AdamW epsilon"),
    F(weight_decay, CFG_FLOAT, "0.1", "[0, 1e6]", 0, "AdamW weight decay on weight matrices"),
    F(decay_embeddings, CFG_BOOL, "true", NULL, 0, "also decay the embeddings (nanoGPT does)"),
    F(grad_clip, CFG_FLOAT, "1.0", "[0, 1e30]", 0, "clip the global gradient norm to this (0: off)"),
    F(seed, CFG_INT, "1337", NULL, 0, "random seed: initialisation, batches, dropout, sampling"),
    F(zero, CFG_INT, "0", "[0, 1]", 0, "1: each rank keeps AdamW's moments for 1/ranks of the parameters (ZeRO-1)"),
    F(eval_interval, CFG_INT, "250", "[0, inf)", 0,
      "evaluate every this many updates and at the end (0: only at the end)"),
    F(eval_batches, CFG_INT, "0", "[0, inf)", 0,
      "validation batches per evaluation during training (0: the whole shard; mode eval scores it all)"),
    F(context_window, CFG_INT, "0", "[0, inf)", 0,
      "evaluation windows overlap by this many tokens of context (fairseq), below context"),
    F(log_file, CFG_STRING, "log/gpt_{data}_{attention}.jsonl", NULL, 0,
      "JSON-lines log ({data}: train_data's folder, {attention} are replaced; empty: none)"),
    F(checkpoint, CFG_STRING, "log/gpt_{data}_{attention}.bin", NULL, 0,
      "checkpoint path ({data}, {attention}, {step} are replaced; empty: none)"),
    F(checkpoint_interval, CFG_INT, "0", "[0, inf)", 0, "save every this many updates (0: only at the end)"),
    F(log_interval, CFG_INT, "1", "[1, inf)", 0, "print progress every this many updates"),
    F(sample_tokens, CFG_INT, "500", "[0, inf)", 0, "tokens to generate after training (0: none)"),
    F(top_k, CFG_INT, "200", "[0, inf)", 0, "sample among the k most likely tokens (0: all)"),
    F(temperature, CFG_FLOAT, "0.8", "(0, 1e6]", 0, "sampling temperature"),
    F(prompt, CFG_STRING, "", NULL, 0, "text that generation continues (empty: a line break)"),
    F(memory_limit, CFG_FLOAT, "0", "[0, 1e6]", 0, "GiB a run may take (0: the machine's memory)"),
    F(tf32, CFG_BOOL, "false", NULL, 0,
      "GPU trainer: matrix products on TF32 tensor cores (10-bit mantissas, several times faster); the CPU ignores it"),
};
#undef F
static const ConfigSchema CONFIG_SCHEMA = {CONFIG_FIELDS, sizeof(CONFIG_FIELDS) / sizeof(CONFIG_FIELDS[0])};

// ----------------------------------------------------------------------------
// The model

typedef struct {
    int V;            // vocabulary size
    int maxT;         // context length
    int L, H, C, F;   // layers, heads, channels, MLP hidden size
    const char* attention; // a kind of the trainer's attention table, by name ("flow", "softmax", "linear")
    real clamp;
    int learned_pos;  // 1: learned positions, 0: sinusoids
    int tied;         // 1: output layer = token embedding
    int relu;         // 1: ReLU, 0: GELU
    real embed_scale; // 1 or sqrt(C)
    real p_embd, p_attn, p_hidden, p_resid; // dropout probabilities
    double init_std;  // of the weights (gpt_init)
    int decay_embeddings; // AdamW decays the embeddings too
} GPTConfig;

// Each layer's tensors are stacked: qkvw is (L, 3C, C), layer l's at qkvw + l*3C*C.
// In the GPU trainer they point into the GPU's memory.
typedef struct {
    real* wte;      // (V, C)
    real* wpe;      // (maxT, C), learned positions only
    real* ln1w;     // (L, C)
    real* ln1b;     // (L, C)
    real* qkvw;     // (L, 3C, C)
    real* qkvb;     // (L, 3C)
    real* projw;    // (L, C, C)
    real* projb;    // (L, C)
    real* ln2w;     // (L, C)
    real* ln2b;     // (L, C)
    real* fcw;      // (L, F, C)
    real* fcb;      // (L, F)
    real* fc2w;     // (L, C, F)
    real* fc2b;     // (L, C)
    real* lnfw;     // (C)
    real* lnfb;     // (C)
    real* lm_head;  // (V, C), untied output layer only
} ParameterTensors;

// The model of the settings (its attention is cfg's string, so cfg outlives it).
static GPTConfig gpt_config(const Config* cfg) {
    GPTConfig c;
    c.V = cfg->vocab_size;
    c.maxT = cfg->context;
    c.L = cfg->n_layer;
    c.H = cfg->n_head;
    c.C = cfg->n_embd;
    c.F = cfg->n_ffn > 0 ? cfg->n_ffn : 4 * cfg->n_embd;
    c.attention = cfg->attention;
    c.clamp = (real)cfg->clamp;
    c.learned_pos = strcmp(cfg->positions, "learned") == 0;
    c.tied = cfg->tied;
    c.relu = strcmp(cfg->activation, "relu") == 0;
    c.embed_scale = cfg->embed_scale ? (real)sqrt((double)cfg->n_embd) : (real)1;
    c.p_embd = (real)cfg->dropout_embd;
    c.p_attn = (real)cfg->dropout_attn;
    c.p_hidden = (real)cfg->dropout_hidden;
    c.p_resid = (real)cfg->dropout_resid;
    c.init_std = cfg->init_std;
    c.decay_embeddings = cfg->decay_embeddings;
    return c;
}

// The tensors, in the order of the parameter memory (and so of checkpoints), with
// p and g the named pointers that params_allocate points at them.
// GPT-2's initialisation: weights N(0, std), residual projections N(0, std/sqrt(2L)),
// biases 0, LayerNorm gains 1. With embedding scaling the token embedding is
// N(0, C^-1/2), fairseq's choice, so that the scaled embedding has unit scale.
// AdamW decays the weight matrices, the embeddings only if asked.
static void gpt_describe(Parameters* P, ParameterTensors* p, ParameterTensors* g, const GPTConfig* c) {
    if (c->V < 2) fail("the vocabulary needs at least 2 tokens, got %d", c->V);
    if (c->H <= 0 || c->C <= 0 || c->C % c->H != 0) fail("attention: %d heads do not divide %d channels", c->H, c->C);
    long V = c->V, T = c->maxT, L = c->L, C = c->C, F = c->F;
    double std = c->init_std, resid_std = std / sqrt(2.0 * c->L);
    double wte_std = c->embed_scale != 1 ? 1.0 / sqrt((double)c->C) : std;
    int emb = c->decay_embeddings;
    PARAM(P, "wte", &p->wte, &g->wte, INIT_NORMAL, wte_std, emb, V, C);
    PARAM(P, "wpe", &p->wpe, &g->wpe, INIT_NORMAL, std, emb, c->learned_pos ? T : 0, C);
    PARAM(P, "ln1w", &p->ln1w, &g->ln1w, INIT_ONE, 0, 0, L, C);
    PARAM(P, "ln1b", &p->ln1b, &g->ln1b, INIT_ZERO, 0, 0, L, C);
    PARAM(P, "qkvw", &p->qkvw, &g->qkvw, INIT_NORMAL, std, 1, L, 3 * C, C);
    PARAM(P, "qkvb", &p->qkvb, &g->qkvb, INIT_ZERO, 0, 0, L, 3 * C);
    PARAM(P, "projw", &p->projw, &g->projw, INIT_NORMAL, resid_std, 1, L, C, C);
    PARAM(P, "projb", &p->projb, &g->projb, INIT_ZERO, 0, 0, L, C);
    PARAM(P, "ln2w", &p->ln2w, &g->ln2w, INIT_ONE, 0, 0, L, C);
    PARAM(P, "ln2b", &p->ln2b, &g->ln2b, INIT_ZERO, 0, 0, L, C);
    PARAM(P, "fcw", &p->fcw, &g->fcw, INIT_NORMAL, std, 1, L, F, C);
    PARAM(P, "fcb", &p->fcb, &g->fcb, INIT_ZERO, 0, 0, L, F);
    PARAM(P, "fc2w", &p->fc2w, &g->fc2w, INIT_NORMAL, resid_std, 1, L, C, F);
    PARAM(P, "fc2b", &p->fc2b, &g->fc2b, INIT_ZERO, 0, 0, L, C);
    PARAM(P, "lnfw", &p->lnfw, &g->lnfw, INIT_ONE, 0, 0, C);
    PARAM(P, "lnfb", &p->lnfb, &g->lnfb, INIT_ZERO, 0, 0, C);
    PARAM(P, "lm_head", &p->lm_head, &g->lm_head, INIT_NORMAL, std, 1, c->tied ? 0 : V, C);
}

// FLOPs of the linear layers (the output layer included) over B x T tokens: 2 for
// each multiply-add forward, 4 backward (input and weight gradients). The attention
// kernels count their own.
static double gpt_matmul_flops(const GPTConfig* c, int B, int T) {
    double macs = (double)c->L * (4.0 * c->C * c->C + 2.0 * c->C * c->F) + (double)c->C * c->V;
    return 6.0 * macs * B * T;
}

// The key of dropout site `site` (0: embeddings; 1 + 3l + {0,1,2}: layer l's attention
// output, MLP hidden, MLP output) in the update whose masks derive from seed. A
// forward pass whose first sample is sample s of the update's global batch takes its
// masks from element s * T * width on (the dropout layers' dropout_key_from), so each
// sample's mask is that of its index in the batch, whichever rank or micro-batch
// computes it, and on either trainer.
static uint64_t gpt_dropout_site(uint64_t seed, int site) {
    return rng_hash64(seed ^ rng_hash64((uint64_t)site + 1));
}

// ----------------------------------------------------------------------------
// Sampling and evaluation results

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

typedef struct {
    double loss;       // mean loss per scored token
    long tokens;       // tokens scored
    double* pos_loss;  // (T) mean loss of the tokens scored at each position of their window
    long* pos_tokens;  // (T) how many
    double seconds;
} EvalResult;

static void eval_result_free(EvalResult* r) {
    free(r->pos_loss);
    free(r->pos_tokens);
}

// A trainer's model as evaluation and generation see it, whatever device it runs on.
typedef struct {
    void* model;
    // losses (n, T) of a forward pass over inputs, targets (n, T), without dropout
    const real* (*score)(void* model, const int* inputs, const int* targets, int n, int T);
    // feeds `token` at position t (the state holds positions 0..t-1); returns the
    // next-token logits (V)
    const real* (*step)(void* model, int token, int t);
    // forgets every position fed
    void (*restart)(void* model);
} GptRunner;

// The mean loss over the stream in the windows of utils/token_loader.h's
// EvalWindows (T tokens advancing by T - W), each token scored once; stops after
// max_batches batches if > 0. Each rank scores its part of every batch of B
// windows, and the sums are added up across the ranks. inputs and targets hold
// a rank's part. Free the result with eval_result_free.
static EvalResult gpt_evaluate(const GptRunner* run, const Dist* dist, const TokenData* d, int B, int T, int W,
                               int max_batches, int* inputs, int* targets) {
    double t0 = omp_get_wtime();
    EvalResult r = {0, 0, (double*)calloc_check((size_t)T, sizeof(double)),
                    (long*)calloc_check((size_t)T, sizeof(long)), 0};
    if (d->n < T + 1) fail("validation data has %ld tokens, fewer than context + 1 = %d", d->n, T + 1);
    EvalWindows windows = {0, 0};
    long lo, hi;
    dist_part(dist, B, &lo, &hi);
    double sum = 0;
    int b;
    for (int batch = 0; (max_batches <= 0 || batch < max_batches) &&
                        (b = eval_windows_next(&windows, d, B, lo, hi, T, W, inputs, targets)) > 0; batch++) {
        int n = (int)((b < hi ? b : hi) - lo);
        if (n <= 0) continue;
        const real* losses = run->score(run->model, inputs, targets, n, T);
        for (int i = 0; i < n * T; i++) {
            if (targets[i] < 0) continue;
            sum += losses[i];
            r.pos_loss[i % T] += losses[i];
            r.pos_tokens[i % T]++;
            r.tokens++;
        }
    }
    sum = dist_sum(dist, sum);
    dist_sum_longs(dist, &r.tokens, 1);
    dist_sum_doubles(dist, r.pos_loss, T);
    dist_sum_longs(dist, r.pos_tokens, T);
    r.loss = r.tokens > 0 ? sum / r.tokens : 0;
    for (int t = 0; t < T; t++) r.pos_loss[t] = r.pos_tokens[t] > 0 ? r.pos_loss[t] / r.pos_tokens[t] : 0;
    r.seconds = omp_get_wtime() - t0;
    return r;
}

// Prints the prompt and n tokens sampled from a model of context T and vocabulary
// size V. When the context is full, the state is rebuilt from the last T/2 tokens,
// so positions stay within those trained on.
static void gpt_generate(const GptRunner* run, int T, int V, const Vocab* vocab, const char* vocab_path,
                         const char* prompt, int n, double temperature, int top_k, Rng* rng) {
    int words = vocab_is_words(vocab);
    int* seq = (int*)malloc_check(((size_t)n + T) * sizeof(int));
    int len = vocab_encode(vocab, prompt, seq, T, vocab_path);
    real* scratch = (real*)malloc_check((size_t)V * sizeof(real));
    const real* logits = NULL;
    int t = 0;
    for (int i = 0; i < len; i++) {
        vocab_print_token(vocab, seq[i], words);
        logits = run->step(run->model, seq[i], t++);
    }
    for (int i = 0; i < n; i++) {
        int next = sample_token(logits, V, temperature, top_k, scratch, rng);
        seq[len++] = next;
        vocab_print_token(vocab, next, words);
        if (t == T) {
            run->restart(run->model);
            t = 0;
            for (int j = len - T / 2; j < len; j++) logits = run->step(run->model, seq[j], t++);
        } else {
            logits = run->step(run->model, next, t++);
        }
    }
    printf("\n");
    fflush(stdout);
    free(scratch);
    free(seq);
}

// Prints and logs an evaluation after update `step` (and frees it); stops when the
// loss is not finite. by_position: also the loss by position in the window.
static void log_eval(Logger* log, long step, EvalResult r, int by_position, int T) {
    if (!isfinite(r.loss)) fail("step %ld: the validation loss is not finite (the run diverged)", step);
    printf("step %ld | val loss %.4f | ppl %.2f | %ld tokens | %.1f s\n", step, r.loss, exp(r.loss), r.tokens,
           r.seconds);
    char positions[64] = "";
    if (by_position) {
        // eight buckets of positions, each the mean over the tokens scored there
        printf("val loss by position in the window:");
        for (int k = 0; k < 8 && k < T; k++) {
            int t0 = k * T / 8, t1 = (k + 1) * T / 8 > t0 + 1 ? (k + 1) * T / 8 : t0 + 1;
            double sum = 0;
            long n = 0;
            for (int t = t0; t < t1 && t < T; t++) { sum += r.pos_loss[t] * r.pos_tokens[t]; n += r.pos_tokens[t]; }
            if (n > 0) printf(" %d-%d %.4f |", t0, t1 - 1, sum / n);
        }
        printf("\n");
        snprintf(positions, sizeof positions, ",\"val_loss_by_position\":[");
    }
    logger_printf_raw(log, "{\"step\":%ld,\"val_loss\":%.9g,\"val_ppl\":%.9g,\"val_tokens\":%ld,\"seconds\":%.3f%s",
                  step, r.loss, exp(r.loss), r.tokens, r.seconds, positions);
    if (by_position) {
        for (int t = 0; t < T; t++) logger_printf_raw(log, "%s%.6g", t ? "," : "", r.pos_loss[t]);
        logger_printf_raw(log, "]");
    }
    logger_printf_raw(log, "}\n");
    fflush(stdout);
    eval_result_free(&r);
}

#endif
