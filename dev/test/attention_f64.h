// The attention kernels built in float64 (dev/test/attention_f64.c), called
// from float32 test code through plain double arrays. Shapes as in
// layers/attention.h with contiguous rows: q (B,L,H*D), k (B,S,H*D),
// v (B,S,H*M), out (B,L,H*M).
#ifndef DEV_TEST_ATTENTION_F64_H
#define DEV_TEST_ATTENTION_F64_H

#include <stddef.h>

// The tests number the attention kinds as dev/ref/attention_*.bin do.
enum { KIND_FLOW, KIND_SOFTMAX, KIND_LINEAR, NUM_KINDS };
static const char* const KIND_NAMES[NUM_KINDS] = {"flow", "softmax", "linear"};

typedef struct {
    int kind, causal, B, L, S, H, D, M;  // kind: KIND_*
    double clamp;
} AttnSpec;

size_t attn64_cache_size(const AttnSpec* s);
void attn64_forward(const AttnSpec* s, double* out, double* cache,
                    const double* q, const double* k, const double* v);
void attn64_backward(const AttnSpec* s, double* dq, double* dk, double* dv, const double* dout,
                     const double* out, const double* cache,
                     const double* q, const double* k, const double* v);
size_t attn64_state_size(const AttnSpec* s, int max_T);
void attn64_step(const AttnSpec* s, double* state, int t, double* out,
                 const double* q, const double* k, const double* v);
// The definition, summed term by term in O(L*S*D): no chunks, no running sums.
void dense64_forward(const AttnSpec* s, double* out, const double* q, const double* k, const double* v);

#endif
