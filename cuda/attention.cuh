// Multi-head attention cores on the GPU, one row per kind in ATTENTION_KINDS, the same
// kinds by the same names as layers/attention.h's: "flow" (Flow-Attention), "softmax"
// and "linear", each causal or bidirectional ("normal"), forward and backward, with a
// recurrent step for generation. Layouts in cuda/attention_types.cuh; a call's
// temporary memory is device scratch of attention_scratch_size floats that the caller
// owns (the trainer allocates it once, for its largest call).
#ifndef CUDA_ATTENTION_CUH
#define CUDA_ATTENTION_CUH

#include <string.h>
#include "utils/utils.h"
#include "cuda/attention_types.cuh"
#include "cuda/flow_attention.cuh"
#include "cuda/softmax_attention.cuh"
#include "cuda/linear_attention.cuh"

static const AttentionKind ATTENTION_KINDS[] = {
    {"flow", flow_attention_cache_size, flow_attention_scratch_size, flow_attention_state_size, flow_attention_flops,
     flow_attention_check, flow_attention_forward, flow_attention_backward, flow_attention_step},
    {"softmax", softmax_attention_cache_size, softmax_attention_scratch_size, softmax_attention_state_size,
     softmax_attention_flops, NULL, softmax_attention_forward, softmax_attention_backward, softmax_attention_step},
    {"linear", linear_attention_cache_size, linear_attention_scratch_size, linear_attention_state_size,
     linear_attention_flops, linear_attention_check, linear_attention_forward, linear_attention_backward,
     linear_attention_step},
};
#define NUM_ATTENTION_KINDS ((int)(sizeof(ATTENTION_KINDS) / sizeof(ATTENTION_KINDS[0])))

// The kind called name; otherwise stops, naming the kinds there are.
static const AttentionKind* attention_kind_or_fail(const char* name) {
    for (int i = 0; i < NUM_ATTENTION_KINDS; i++)
        if (strcmp(ATTENTION_KINDS[i].name, name) == 0) return &ATTENTION_KINDS[i];
    char names[256] = "";
    for (int i = 0; i < NUM_ATTENTION_KINDS; i++)
        snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s", i ? "|" : "", ATTENTION_KINDS[i].name);
    fail("configuration: attention must be one of %s, got \"%s\"", names, name);
}

// Self-attention over contiguous (B,T,H*D) q, k, v buffers, clamp 1.0.
static Attention attention_make(const AttentionKind* kind, int causal, int B, int T, int H, int D) {
    Attention a = {kind, causal, B, T, T, H, D, D, H * D, H * D, H * D, 1.0f};
    return a;
}

// Stops with a message naming the sizes when they cannot be right.
static void attention_check(const Attention* a) {
    if (a->B <= 0 || a->L <= 0 || a->S <= 0 || a->H <= 0 || a->D <= 0 || a->M <= 0)
        fail("attention: sizes must be positive, got B=%d L=%d S=%d H=%d D=%d M=%d", a->B, a->L, a->S, a->H, a->D,
             a->M);
    if (a->causal && a->L != a->S)
        fail("attention: causal %s attention needs as many queries as keys, got L=%d S=%d", a->kind->name, a->L,
             a->S);
    if (a->kind->check != NULL) a->kind->check(a);
}

static size_t attention_cache_size(const Attention* a) { return a->kind->cache_size(a); }
static size_t attention_scratch_size(const Attention* a) { return a->kind->scratch_size(a); }
static size_t attention_state_size(const Attention* a, int max_T) { return a->kind->state_size(a, max_T); }
static double attention_flops(const Attention* a) { return a->kind->flops(a); }

// out (B,L,H*M) = attention(q, k, v); cache gets attention_cache_size(a) floats.
static void attention_forward(const Attention* a, float* out, float* cache, const float* q, const float* k,
                              const float* v, float* scratch) {
    attention_check(a);
    a->kind->forward(a, out, cache, q, k, v, scratch);
}

// dq, dk, dv += gradients of sum(dout * out); out and cache are the forward's.
static void attention_backward(const Attention* a, float* dq, float* dk, float* dv, const float* dout,
                               const float* out, const float* cache, const float* q, const float* k, const float* v,
                               float* scratch) {
    attention_check(a);
    a->kind->backward(a, dq, dk, dv, dout, out, cache, q, k, v, scratch);
}

// Position t (0-based) of one causal sequence, every head at once (cuda/attention_types.cuh).
static void attention_step(const Attention* a, float* states, int t, float* out, const float* q, const float* k,
                           const float* v) {
    attention_check(a);
    if (!a->causal) fail("attention: the recurrent step needs causal %s attention", a->kind->name);
    if (t < 0 || t >= a->L) fail("attention: step at position %d outside [0, %d)", t, a->L);
    a->kind->step(a, states, t, out, q, k, v);
}

#endif
