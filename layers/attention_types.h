// What every attention kind shares: the description of one call (Attention),
// the operations a kind provides (AttentionKind, one row of the table in
// layers/attention.h), and the offsets of one head in the buffers.
//   q is (B, L, H*D), k is (B, S, H*D), v is (B, S, H*M), each row `*_stride`
//   reals apart (so a fused (B,T,3C) qkv buffer can be passed as q=qkv,
//   k=qkv+C, v=qkv+2C with stride 3C); out is (B, L, H*M), contiguous.
#ifndef LAYERS_ATTENTION_TYPES_H
#define LAYERS_ATTENTION_TYPES_H

#include <stddef.h>
#include "utils/real.h"

typedef struct AttentionKind AttentionKind;

typedef struct {
    const AttentionKind* kind;
    int causal;       // 1: position i attends to j <= i (needs L == S)
    int B, L, S, H;   // batch, query positions, key/value positions, heads
    int D, M;         // head size of queries/keys, head size of values
    int q_stride, k_stride, v_stride; // reals between consecutive positions
    real clamp;       // Flow-Attention conservation bound c (doc/FLOW_ATTENTION.md; 1.0 by default)
} Attention;

// The operations of one kind. Backward passes accumulate (+=) into dq, dk, dv
// (same strides as q, k, v). The recurrent step feeds one head one position t
// (0-based; state zeroed before t = 0): q, k are D reals, v is M reals, out gets M.
struct AttentionKind {
    const char* name;  // as configurations spell it
    const char* help;  // one line for --help
    // reals the forward pass saves for the backward pass, per call
    size_t (*cache_size)(const Attention* a);
    // reals of recurrent state per (batch element, head), for sequences up to max_T
    size_t (*state_size)(const Attention* a, int max_T);
    // floating-point operations of one forward and backward pass of the call, as the
    // kernels do them (for the trainers' model-FLOPs utilisation)
    double (*flops)(const Attention* a);
    // stops with a message when a setting of this kind is out of range (NULL: none)
    void (*check)(const Attention* a);
    void (*forward)(const Attention* a, real* out, real* cache, const real* q, const real* k, const real* v);
    void (*backward)(const Attention* a, real* dq, real* dk, real* dv, const real* dout, const real* out,
                     const real* cache, const real* q, const real* k, const real* v);
    void (*step)(const Attention* a, real* state, int t, real* out, const real* q, const real* k, const real* v);
};

// Offsets of one (batch element b, head h) into q, k, v and out.
#define HEAD_Q(a, p, b, h) ((p) + (size_t)(b) * (a)->L * (a)->q_stride + (size_t)(h) * (a)->D)
#define HEAD_K(a, p, b, h) ((p) + (size_t)(b) * (a)->S * (a)->k_stride + (size_t)(h) * (a)->D)
#define HEAD_V(a, p, b, h) ((p) + (size_t)(b) * (a)->S * (a)->v_stride + (size_t)(h) * (a)->M)
#define HEAD_OUT(a, p, b, h) ((p) + (size_t)(b) * (a)->L * (a)->H * (a)->M + (size_t)(h) * (a)->M)

#endif
