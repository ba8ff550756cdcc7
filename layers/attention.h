// Multi-head attention cores, one row per kind in ATTENTION_KINDS:
// "flow" (Flow-Attention, the Flowformer operator of doc/FLOW_ATTENTION.md),
// "softmax" (the vanilla Transformer) and "linear" (Katharopoulos et al. 2020).
// Each has a causal and a bidirectional ("normal") form, forward and backward,
// and a recurrent step for generation. A new kind is one header that defines
// the operations of layers/attention_types.h, and one row below.
//
// These cores take the projected queries, keys and values and return the
// concatenated heads (layouts in layers/attention_types.h); the projections
// around them are ordinary matmuls. Causal forms need L == S: position i then
// sees positions j <= i. Backward passes accumulate (+=) into dq, dk, dv, as
// every backward pass of the trainers does.
#ifndef LAYERS_ATTENTION_H
#define LAYERS_ATTENTION_H

#include <stdio.h>
#include <string.h>
#include "utils/real.h"
#include "utils/utils.h"
#include "layers/attention_types.h"
#include "layers/flow_attention.h"
#include "layers/softmax_attention.h"
#include "layers/linear_attention.h"

static const AttentionKind ATTENTION_KINDS[] = {
    {"flow", "Flow-Attention (Flowformer), linear in the sequence", flow_attention_cache_size,
     flow_attention_state_size, flow_attention_flops, flow_attention_check, flow_attention_forward, flow_attention_backward,
     flow_attention_step},
    {"softmax", "softmax attention, scores scaled by 1/sqrt(D) (the vanilla Transformer)",
     softmax_attention_cache_size, softmax_attention_state_size, softmax_attention_flops, NULL, softmax_attention_forward,
     softmax_attention_backward, softmax_attention_step},
    {"linear", "linear attention with feature map elu(x)+1 (Katharopoulos et al. 2020)",
     linear_attention_cache_size, linear_attention_state_size, linear_attention_flops, NULL, linear_attention_forward,
     linear_attention_backward, linear_attention_step},
};
#define NUM_ATTENTION_KINDS ((int)(sizeof(ATTENTION_KINDS) / sizeof(ATTENTION_KINDS[0])))

// The kind called name, or NULL.
static const AttentionKind* attention_kind(const char* name) {
    for (int i = 0; i < NUM_ATTENTION_KINDS; i++)
        if (strcmp(ATTENTION_KINDS[i].name, name) == 0) return &ATTENTION_KINDS[i];
    return NULL;
}

// The kind called name; otherwise stops, naming the kinds there are.
static const AttentionKind* attention_kind_or_fail(const char* name) {
    const AttentionKind* kind = attention_kind(name);
    if (kind != NULL) return kind;
    char names[256] = "";
    for (int i = 0; i < NUM_ATTENTION_KINDS; i++)
        snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s", i ? "|" : "", ATTENTION_KINDS[i].name);
    fail("configuration: attention must be one of %s, got \"%s\"", names, name);
}

// The kinds and what they are, for --help.
static void attention_print_kinds(void) {
    printf("attention kinds (--attention):\n");
    for (int i = 0; i < NUM_ATTENTION_KINDS; i++)
        printf("  %-10s %s\n", ATTENTION_KINDS[i].name, ATTENTION_KINDS[i].help);
}

// Self-attention over contiguous (B,T,H*D) q, k, v buffers, clamp 1.0.
static Attention attention_make(const AttentionKind* kind, int causal, int B, int T, int H, int D) {
    Attention a = {kind, causal, B, T, T, H, D, D, H * D, H * D, H * D, (real)1};
    return a;
}

// Stops with a message naming the sizes when they cannot be right.
static void attention_check(const Attention* a) {
    if (a->kind == NULL) fail("attention: no kind given");
    if (a->B <= 0 || a->L <= 0 || a->S <= 0 || a->H <= 0 || a->D <= 0 || a->M <= 0)
        fail("attention: sizes must be positive, got B=%d L=%d S=%d H=%d D=%d M=%d",
             a->B, a->L, a->S, a->H, a->D, a->M);
    if (a->causal && a->L != a->S)
        fail("attention: causal %s attention needs as many queries as keys, got L=%d S=%d",
             a->kind->name, a->L, a->S);
    if (a->q_stride < a->H * a->D || a->k_stride < a->H * a->D || a->v_stride < a->H * a->M)
        fail("attention: row strides q=%d k=%d v=%d are shorter than the rows H*D=%d, H*M=%d",
             a->q_stride, a->k_stride, a->v_stride, a->H * a->D, a->H * a->M);
    if (a->kind->check != NULL) a->kind->check(a);
}

// Channels C split into heads of C/H; stops with a message when H does not divide C.
static int attention_head_size(int C, int H) {
    if (H <= 0 || C <= 0 || C % H != 0)
        fail("attention: %d heads do not divide %d channels", H, C);
    return C / H;
}

// Reals the forward pass saves for the backward pass, per call: a few per
// (batch, head, position), never anything of size L*S or L*D*M.
static size_t attention_cache_size(const Attention* a) { return a->kind->cache_size(a); }

// FLOPs of one forward and backward pass.
static double attention_flops(const Attention* a) { return a->kind->flops(a); }

// out (B,L,H*M) = attention(q, k, v); cache gets attention_cache_size(a) reals.
static void attention_forward(const Attention* a, real* out, real* cache,
                              const real* q, const real* k, const real* v) {
    attention_check(a);
    a->kind->forward(a, out, cache, q, k, v);
}

// dq, dk, dv += gradients of sum(dout * out); out and cache are the forward's.
static void attention_backward(const Attention* a, real* dq, real* dk, real* dv,
                               const real* dout, const real* out, const real* cache,
                               const real* q, const real* k, const real* v) {
    attention_check(a);
    a->kind->backward(a, dq, dk, dv, dout, out, cache, q, k, v);
}

// ----------------------------------------------------------------------------
// Recurrent (one position at a time) form of the causal kernels, for generation.
// The state of one (batch element, head) summarises positions 0..t-1; feeding
// position t costs O(D*M) for flow and linear, O(t*(D+M)) for softmax.

// Reals of state per (batch element, head); softmax keeps its keys and values,
// so it needs the longest sequence to be generated.
static size_t attention_state_size(const Attention* a, int max_T) { return a->kind->state_size(a, max_T); }

// One head, one position t of a causal attention of a->L positions (state zeroed
// before t = 0). q, k are D reals, v is M reals; writes M reals to out and updates state.
static void attention_step(const Attention* a, real* state, int t, real* out,
                           const real* q, const real* k, const real* v) {
    attention_check(a);
    if (!a->causal) fail("attention: the recurrent step needs causal %s attention", a->kind->name);
    if (t < 0 || t >= a->L) fail("attention: step at position %d outside [0, %d)", t, a->L);
    a->kind->step(a, state, t, out, q, k, v);
}

#endif
