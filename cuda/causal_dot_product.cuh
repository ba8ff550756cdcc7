// The product at the heart of the linear-time attention kinds, on the GPU, for every
// head at once (layers/causal_dot_product.h on the CPU):
//   causal:  out_i = sum_{j<=i} (q_i . k_j) w_j
//   full:    out_i = sum_{j}    (q_i . k_j) w_j  =  q_i^T (sum_j k_j w_j^T)
// q is (BH, L, D), k (BH, S, D), w (BH, S, M), out (BH, L, M): each head's rows
// contiguous (cuda/attention_types.cuh's gather_heads).
//
// The causal form is the CPU's chunked scan with every chunk of every head at once:
// the sequence is cut into chunks of CHUNK positions (T padded with zero rows to a
// multiple, Tp), and with state_c = sum_{j before chunk c} k_j w_j^T (D x M),
//   out_c = q_c state_c + mask(q_c k_c^T) w_c
// where mask keeps j <= i. So: each chunk's k_c^T w_c by one batched cuBLAS product,
// an exclusive scan of those across each head's chunks (scan_states), then the two
// products of out_c, batched likewise. The backward pass runs the same scan forwards
// (for dq) and backwards (for dk, dw). Extra memory: Tp/CHUNK states of D x M per head
// (Tp*D floats for heads of 64) and a CHUNK x CHUNK block of scores per chunk; never
// the T x D x M prefix sums of the authors' code. Time O(T*D*M).
#ifndef CUDA_CAUSAL_DOT_PRODUCT_CUH
#define CUDA_CAUSAL_DOT_PRODUCT_CUH

#include "cuda/common.cuh"

#define CHUNK 64

// T rounded up to whole chunks: the rows of a head's arrays for the causal product.
static inline int chunked(int T) { return (T + CHUNK - 1) / CHUNK * CHUNK; }

// Floats of scratch for the causal product of BH heads of T positions.
static size_t causal_dot_product_scratch(int BH, int T, int D, int M) {
    size_t chunks = (size_t)BH * chunked(T) / CHUNK;
    return chunks * ((size_t)D * M + CHUNK * CHUNK);
}

// Each head's chunk states (BH, nchunks, size) become the sum of the states before
// them (reverse: after them): an exclusive scan over the chunks, a thread per
// (head, element of a state).
__global__ void scan_states_kernel(float* states, int BH, int nchunks, int size, int reverse) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)BH * size) return;
    float* s = states + i / size * nchunks * size + i % size;
    float carry = 0;
    for (int c = 0; c < nchunks; c++) {
        long at = (long)(reverse ? nchunks - 1 - c : c) * size;
        float x = s[at];
        s[at] = carry;
        carry += x;
    }
}

// Zeroes scores[z][i][j] for j > i (the future) in every CHUNK x CHUNK block z.
__global__ void mask_future_kernel(float* scores, long chunks) {
    long e = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e < chunks * CHUNK * CHUNK && e % CHUNK > e / CHUNK % CHUNK) scores[e] = 0;
}

static void scan_states(float* states, int BH, int nchunks, int size, int reverse) {
    scan_states_kernel<<<blocks_for((long)BH * size, THREADS), THREADS>>>(states, BH, nchunks, size, reverse);
    CUDA_LAUNCHED();
}

static void mask_future(float* scores, long chunks) {
    mask_future_kernel<<<blocks_for(chunks * CHUNK * CHUNK, THREADS), THREADS>>>(scores, chunks);
    CUDA_LAUNCHED();
}

// out (BH, Tp, M) = causal product of q, k (BH, Tp, D) and w (BH, Tp, M), whose rows
// T..Tp-1 are zero.
static void causal_dot_product_forward(float* out, const float* q, const float* k, const float* w, int BH, int T,
                                       int D, int M, float* scratch) {
    int nchunks = chunked(T) / CHUNK, chunks = BH * nchunks;
    long qc = (long)CHUNK * D, wc = (long)CHUNK * M, sc = (long)D * M, cc = CHUNK * CHUNK;  // strides of chunks
    float *states = scratch, *scores = states + (size_t)chunks * sc;
    // states_c = k_c^T w_c, then the sum of those before each chunk
    gemm_batched(D, M, CHUNK, k, 1, D, qc, w, M, 1, wc, states, M, sc, chunks, 1, 0);
    scan_states(states, BH, nchunks, D * M, 0);
    // out_c = q_c states_c + mask(q_c k_c^T) w_c
    gemm_batched(CHUNK, M, D, q, D, 1, qc, states, M, 1, sc, out, M, wc, chunks, 1, 0);
    gemm_batched(CHUNK, CHUNK, D, q, D, 1, qc, k, 1, D, qc, scores, CHUNK, cc, chunks, 1, 0);
    mask_future(scores, chunks);
    gemm_batched(CHUNK, M, CHUNK, scores, CHUNK, 1, cc, w, M, 1, wc, out, M, wc, chunks, 1, 1);
}

// Given dout (BH, Tp, M) with rows T..Tp-1 zero: dq, dk (BH, Tp, D) and dw (BH, Tp, M)
// are WRITTEN with the causal product's gradients.
static void causal_dot_product_backward(float* dq, float* dk, float* dw, const float* dout, const float* q,
                                        const float* k, const float* w, int BH, int T, int D, int M,
                                        float* scratch) {
    int nchunks = chunked(T) / CHUNK, chunks = BH * nchunks;
    long qc = (long)CHUNK * D, wc = (long)CHUNK * M, sc = (long)D * M, cc = CHUNK * CHUNK;
    float *states = scratch, *scores = states + (size_t)chunks * sc;
    // dq_c = dout_c states_c^T + mask(dout_c w_c^T) k_c, the states as in the forward pass
    gemm_batched(D, M, CHUNK, k, 1, D, qc, w, M, 1, wc, states, M, sc, chunks, 1, 0);
    scan_states(states, BH, nchunks, D * M, 0);
    gemm_batched(CHUNK, D, M, dout, M, 1, wc, states, 1, M, sc, dq, D, qc, chunks, 1, 0);
    gemm_batched(CHUNK, CHUNK, M, dout, M, 1, wc, w, 1, M, wc, scores, CHUNK, cc, chunks, 1, 0);
    mask_future(scores, chunks);
    gemm_batched(CHUNK, D, CHUNK, scores, CHUNK, 1, cc, k, D, 1, qc, dq, D, qc, chunks, 1, 1);
    // dk_c = mask(dout_c w_c^T)^T q_c + w_c states_c^T, with the states now the sums of
    // q_i dout_i^T over the chunks after c
    gemm_batched(CHUNK, D, CHUNK, scores, 1, CHUNK, cc, q, D, 1, qc, dk, D, qc, chunks, 1, 0);
    gemm_batched(D, M, CHUNK, q, 1, D, qc, dout, M, 1, wc, states, M, sc, chunks, 1, 0);
    scan_states(states, BH, nchunks, D * M, 1);
    gemm_batched(CHUNK, D, M, w, M, 1, wc, states, 1, M, sc, dk, D, qc, chunks, 1, 1);
    // dw_c = k_c states_c + mask(q_c k_c^T)^T dout_c
    gemm_batched(CHUNK, M, D, k, D, 1, qc, states, M, 1, sc, dw, M, wc, chunks, 1, 0);
    gemm_batched(CHUNK, CHUNK, D, q, D, 1, qc, k, 1, D, qc, scores, CHUNK, cc, chunks, 1, 0);
    mask_future(scores, chunks);
    gemm_batched(CHUNK, M, CHUNK, scores, 1, CHUNK, cc, dout, M, 1, wc, dw, M, wc, chunks, 1, 1);
}

// Floats of scratch for the full product: kv, and dkv for the backward pass.
static size_t full_dot_product_scratch(int BH, int D, int M) { return 2 * (size_t)BH * D * M; }

// out (BH, L, M) = q (BH, L, D) kv, kv (D, M) = k (BH, S, D)^T w (BH, S, M), per head.
static void full_dot_product_forward(float* out, const float* q, const float* k, const float* w, int BH, int L,
                                     int S, int D, int M, float* scratch) {
    float* kv = scratch;
    gemm_batched(D, M, S, k, 1, D, (long)S * D, w, M, 1, (long)S * M, kv, M, (long)D * M, BH, 1, 0);
    gemm_batched(L, M, D, q, D, 1, (long)L * D, kv, M, 1, (long)D * M, out, M, (long)L * M, BH, 1, 0);
}

// dq = dout kv^T, dk = w dkv^T, dw = k dkv with dkv = q^T dout, all WRITTEN.
static void full_dot_product_backward(float* dq, float* dk, float* dw, const float* dout, const float* q,
                                      const float* k, const float* w, int BH, int L, int S, int D, int M,
                                      float* scratch) {
    float *kv = scratch, *dkv = kv + (size_t)BH * D * M;
    long qs = (long)L * D, ks = (long)S * D, os = (long)L * M, ws = (long)S * M, ss = (long)D * M;
    gemm_batched(D, M, S, k, 1, D, ks, w, M, 1, ws, kv, M, ss, BH, 1, 0);
    gemm_batched(L, D, M, dout, M, 1, os, kv, 1, M, ss, dq, D, qs, BH, 1, 0);
    gemm_batched(D, M, L, q, 1, D, qs, dout, M, 1, os, dkv, M, ss, BH, 1, 0);
    gemm_batched(S, D, M, w, M, 1, ws, dkv, 1, M, ss, dk, D, ks, BH, 1, 0);
    gemm_batched(S, M, D, k, D, 1, ks, dkv, M, 1, ss, dw, M, ws, BH, 1, 0);
}

#endif
