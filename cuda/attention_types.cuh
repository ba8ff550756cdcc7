// What every attention kind on the GPU shares, as layers/attention_types.h on the CPU:
// the description of one call (Attention), the operations a kind provides (AttentionKind,
// one row of the table in cuda/attention.h), and the kernels that move one head's
// columns between the trainers' row layout and a contiguous per-head layout.
//   q is (B, L, H*D), k is (B, S, H*D), v is (B, S, H*M), rows `*_stride` floats apart
//   (a fused (B,T,3C) qkv buffer is q=qkv, k=qkv+C, v=qkv+2C with stride 3C); out is
//   (B, L, H*M), contiguous. Inside a kind, heads are (B*H, T, D): head bh = b*H + h
//   has its T rows of D contiguous, which batched cuBLAS products take with one stride.
#ifndef CUDA_ATTENTION_TYPES_CUH
#define CUDA_ATTENTION_TYPES_CUH

#include <stddef.h>
#include "cuda/common.cuh"

typedef struct AttentionKind AttentionKind;

typedef struct {
    const AttentionKind* kind;
    int causal;       // 1: position i attends to j <= i (needs L == S)
    int B, L, S, H;   // batch, query positions, key/value positions, heads
    int D, M;         // head size of queries/keys, head size of values
    int q_stride, k_stride, v_stride; // floats between consecutive positions
    float clamp;      // Flow-Attention conservation bound c (doc/FLOW_ATTENTION.md)
} Attention;

// The operations of one kind, on device memory. Backward passes accumulate (+=) into
// dq, dk, dv (same strides as q, k, v). scratch is device memory of scratch_size floats.
// The recurrent step feeds position t (0-based, states zeroed before t = 0) of one
// sequence to every head at once: q, k are H*D floats, v is H*M, out gets H*M, and
// states holds H states of state_size floats.
struct AttentionKind {
    const char* name;  // as configurations spell it, the same as the CPU's
    size_t (*cache_size)(const Attention* a);          // floats the forward pass saves for the backward pass
    size_t (*scratch_size)(const Attention* a);        // floats of scratch a forward or backward call needs
    size_t (*state_size)(const Attention* a, int max_T);
    double (*flops)(const Attention* a);               // of one forward and backward pass, as the kernels do them
    void (*check)(const Attention* a);                 // stops on settings the kind cannot take (NULL: none)
    void (*forward)(const Attention* a, float* out, float* cache, const float* q, const float* k, const float* v,
                    float* scratch);
    void (*backward)(const Attention* a, float* dq, float* dk, float* dv, const float* dout, const float* out,
                     const float* cache, const float* q, const float* k, const float* v, float* scratch);
    void (*step)(const Attention* a, float* states, int t, float* out, const float* q, const float* k,
                 const float* v);
};

// The feature maps the kinds put queries and keys through.
enum { FEATURE_IDENTITY, FEATURE_SIGMOID, FEATURE_ELU1 };

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ __forceinline__ float feature(float x, int phi) {
    if (phi == FEATURE_SIGMOID) return sigmoidf(x);
    if (phi == FEATURE_ELU1) return x > 0 ? x + 1.0f : expf(x);
    return x;
}

// d feature(x) / dx
__device__ __forceinline__ float feature_grad(float x, int phi) {
    if (phi == FEATURE_SIGMOID) {
        float s = sigmoidf(x);
        return s * (1.0f - s);
    }
    if (phi == FEATURE_ELU1) return x > 0 ? 1.0f : expf(x);
    return 1.0f;
}

// dst (B*H, Tp, D) = phi of every head's columns of src (B, T, rows `stride` apart,
// head h at column h*D); rows T..Tp-1 zero. A thread per element of dst.
__global__ void gather_heads_kernel(float* dst, const float* src, int B, int T, int Tp, int H, int D, int stride,
                                    int phi) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)B * H * Tp * D) return;
    int d = (int)(i % D), t = (int)(i / D % Tp), bh = (int)(i / ((long)Tp * D));
    int b = bh / H, h = bh % H;
    dst[i] = t < T ? feature(src[((long)b * T + t) * stride + h * D + d], phi) : 0.0f;
}

// dst (B, T, rows `stride` apart) head columns += phi'(src) * grad, grad (B*H, Tp, D)
// the gradient with respect to the features gather_heads made from src. A thread per
// element of a head's columns.
__global__ void scatter_heads_kernel(float* dst, const float* grad, const float* src, int B, int T, int Tp, int H,
                                     int D, int stride, int phi) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)B * T * H * D) return;
    int d = (int)(i % D), h = (int)(i / D % H), t = (int)(i / ((long)H * D) % T), b = (int)(i / ((long)T * H * D));
    long at = ((long)b * T + t) * stride + h * D + d;
    dst[at] += feature_grad(src[at], phi) * grad[(((long)b * H + h) * Tp + t) * D + d];
}

static void gather_heads(float* dst, const float* src, int B, int T, int Tp, int H, int D, int stride, int phi) {
    gather_heads_kernel<<<blocks_for((long)B * H * Tp * D, THREADS), THREADS>>>(dst, src, B, T, Tp, H, D, stride, phi);
    CUDA_LAUNCHED();
}

static void scatter_heads(float* dst, const float* grad, const float* src, int B, int T, int Tp, int H, int D,
                          int stride, int phi) {
    scatter_heads_kernel<<<blocks_for((long)B * T * H * D, THREADS), THREADS>>>(dst, grad, src, B, T, Tp, H, D,
                                                                               stride, phi);
    CUDA_LAUNCHED();
}

#endif
