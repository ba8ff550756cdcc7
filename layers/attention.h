// Multi-head attention cores, selected by name: "flow" (Flow-Attention, the
// Flowformer operator of FLOW_ATTENTION.md), "softmax" (the vanilla Transformer)
// and "linear" (Katharopoulos et al. 2020, feature map elu(x)+1).
// Each has a causal and a bidirectional ("normal") form, forward and backward.
//
// These cores take the projected queries, keys and values and return the
// concatenated heads; the projections around them are ordinary matmuls.
//   q is (B, L, H*D), k is (B, S, H*D), v is (B, S, H*M), each row `*_stride`
//   reals apart (so a fused (B,T,3C) qkv buffer can be passed as q=qkv,
//   k=qkv+C, v=qkv+2C with stride 3C); out is (B, L, H*M), contiguous.
// Causal forms need L == S. Position i then sees positions j <= i.
// Backward passes accumulate (+=) into dq, dk, dv (same strides as q, k, v),
// as every backward pass of the trainers does.
#ifndef LAYERS_ATTENTION_H
#define LAYERS_ATTENTION_H

#include <string.h>
#include "real.h"
#include "../utils/utils.h"

typedef enum { ATTN_FLOW = 0, ATTN_SOFTMAX = 1, ATTN_LINEAR = 2 } AttentionKind;

typedef struct {
    AttentionKind kind;
    int causal;       // 1: position i attends to j <= i (needs L == S)
    int B, L, S, H;   // batch, query positions, key/value positions, heads
    int D, M;         // head size of queries/keys, head size of values
    int q_stride, k_stride, v_stride; // reals between consecutive positions
    real clamp;       // Flow-Attention conservation bound c (FLOW_ATTENTION.md; 1.0 by default)
} Attention;

static const char* attention_kind_name(AttentionKind kind) {
    return kind == ATTN_FLOW ? "flow" : kind == ATTN_SOFTMAX ? "softmax" : "linear";
}

// Returns the kind for "flow", "softmax" or "linear", or -1 for any other name.
static int attention_kind_from_name(const char* name) {
    if (strcmp(name, "flow") == 0) return ATTN_FLOW;
    if (strcmp(name, "softmax") == 0) return ATTN_SOFTMAX;
    if (strcmp(name, "linear") == 0) return ATTN_LINEAR;
    return -1;
}

// Self-attention over contiguous (B,T,H*D) q, k, v buffers, clamp 1.0.
static Attention attention_make(AttentionKind kind, int causal, int B, int T, int H, int D) {
    Attention a = {kind, causal, B, T, T, H, D, D, H * D, H * D, H * D, (real)1};
    return a;
}

// Stops with a message naming the sizes when they cannot be right.
static void attention_check(const Attention* a) {
    if (a->kind != ATTN_FLOW && a->kind != ATTN_SOFTMAX && a->kind != ATTN_LINEAR)
        fail("attention: unknown kind %d", (int)a->kind);
    if (a->B <= 0 || a->L <= 0 || a->S <= 0 || a->H <= 0 || a->D <= 0 || a->M <= 0)
        fail("attention: sizes must be positive, got B=%d L=%d S=%d H=%d D=%d M=%d",
             a->B, a->L, a->S, a->H, a->D, a->M);
    if (a->causal && a->L != a->S)
        fail("attention: causal %s attention needs as many queries as keys, got L=%d S=%d",
             attention_kind_name(a->kind), a->L, a->S);
    if (a->q_stride < a->H * a->D || a->k_stride < a->H * a->D || a->v_stride < a->H * a->M)
        fail("attention: row strides q=%d k=%d v=%d are shorter than the rows H*D=%d, H*M=%d",
             a->q_stride, a->k_stride, a->v_stride, a->H * a->D, a->H * a->M);
    if (a->kind == ATTN_FLOW && !(a->clamp > 0 && a->clamp <= 40))
        fail("attention: flow clamp bound must be in (0, 40], got %g", (double)a->clamp);
}

// Channels C split into heads of C/H; stops with a message when H does not divide C.
static int attention_head_size(int C, int H) {
    if (H <= 0 || C <= 0 || C % H != 0)
        fail("attention: %d heads do not divide %d channels", H, C);
    return C / H;
}

// Offsets of one (batch element b, head h) into q, k, v and out.
#define HEAD_Q(a, p, b, h) ((p) + (size_t)(b) * (a)->L * (a)->q_stride + (size_t)(h) * (a)->D)
#define HEAD_K(a, p, b, h) ((p) + (size_t)(b) * (a)->S * (a)->k_stride + (size_t)(h) * (a)->D)
#define HEAD_V(a, p, b, h) ((p) + (size_t)(b) * (a)->S * (a)->v_stride + (size_t)(h) * (a)->M)
#define HEAD_OUT(a, p, b, h) ((p) + (size_t)(b) * (a)->L * (a)->H * (a)->M + (size_t)(h) * (a)->M)

#include "causal_dot_product.h"
#include "flow_attention.h"
#include "softmax_attention.h"
#include "linear_attention.h"

// Reals the forward pass saves for the backward pass, per call: a few per
// (batch, head, position), never anything of size L*S or L*D*M.
static size_t attention_cache_size(const Attention* a) {
    size_t rows = (size_t)a->B * a->H;
    switch (a->kind) {
    case ATTN_FLOW: return rows * flow_cache_per_head(a->L, a->S);
    case ATTN_SOFTMAX: return rows * (size_t)a->L;
    case ATTN_LINEAR: return rows * (size_t)a->L;
    }
    return 0;
}

// out (B,L,H*M) = attention(q, k, v); cache gets attention_cache_size(a) reals.
static void attention_forward(const Attention* a, real* out, real* cache,
                              const real* q, const real* k, const real* v) {
    attention_check(a);
    switch (a->kind) {
    case ATTN_FLOW: flow_attention_forward(a, out, cache, q, k, v); break;
    case ATTN_SOFTMAX: softmax_attention_forward(a, out, cache, q, k, v); break;
    case ATTN_LINEAR: linear_attention_forward(a, out, cache, q, k, v); break;
    }
}

// dq, dk, dv += gradients of sum(dout * out); out and cache are the forward's.
static void attention_backward(const Attention* a, real* dq, real* dk, real* dv,
                               const real* dout, const real* out, const real* cache,
                               const real* q, const real* k, const real* v) {
    attention_check(a);
    switch (a->kind) {
    case ATTN_FLOW: flow_attention_backward(a, dq, dk, dv, dout, out, cache, q, k, v); break;
    case ATTN_SOFTMAX: softmax_attention_backward(a, dq, dk, dv, dout, out, cache, q, k, v); break;
    case ATTN_LINEAR: linear_attention_backward(a, dq, dk, dv, dout, out, cache, q, k, v); break;
    }
}

// ----------------------------------------------------------------------------
// Recurrent (one position at a time) form of the causal kernels, for generation.
// The state of one (batch element, head) summarises positions 0..t-1; feeding
// position t costs O(D*M) for flow and linear, O(t*(D+M)) for softmax.

// Reals of state per (batch element, head); softmax keeps its keys and values,
// so it needs the longest sequence to be generated.
static size_t attention_state_size(const Attention* a, int max_T) {
    switch (a->kind) {
    case ATTN_FLOW: return flow_causal_state_size(a->D, a->M);
    case ATTN_SOFTMAX: return softmax_causal_state_size(a->D, a->M, max_T);
    case ATTN_LINEAR: return linear_causal_state_size(a->D, a->M);
    }
    return 0;
}

// One head, one position t (0-based; state zeroed before t = 0).
// q, k are D reals, v is M reals; writes M reals to out and updates state.
static void attention_step(const Attention* a, real* state, int t, real* out,
                           const real* q, const real* k, const real* v) {
    switch (a->kind) {
    case ATTN_FLOW: flow_causal_step(a->D, a->M, a->clamp, state, t, out, q, k, v); break;
    case ATTN_SOFTMAX: softmax_causal_step(a->D, a->M, state, t, out, q, k, v); break;
    case ATTN_LINEAR: linear_causal_step(a->D, a->M, state, t, out, q, k, v); break;
    }
}

#endif
