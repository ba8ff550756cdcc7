// The product at the heart of every linear-time attention, for one head:
//   causal:  out_i = sum_{j<=i} (q_i . k_j) w_j
//   full:    out_i = sum_{j}    (q_i . k_j) w_j  =  q_i^T (sum_j k_j w_j^T)
// q is (L,D), k is (S,D), w is (S,M), out is (L,M), all contiguous.
//
// The causal form never builds the L x D x M tensor of prefix sums. Its caller
// walks the sequence in chunks of at most CDP_CHUNK positions, carrying the D x M
// state S = sum_{j before the chunk} k_j w_j^T, and per chunk
//   out_i = q_i^T S + sum_{chunk start <= j <= i} (q_i . k_j) w_j
// so extra memory is D*M + CDP_CHUNK^2 reals and time is O(L*D*M). The caller
// also computes the chunk's q, k, w just before (Flow-Attention's competition,
// linear attention's feature map), so that every array stays in L1 or L2.
//
// Each step is a small matrix product, done by layers/matmul.h's gemm: a chunk's
// products, forward and backward, run at about 80% of the FMA peak on one core
// when their arrays are in cache.
//
// FLOPs per position, with c = CDP_CHUNK (every block product counted whole,
// though the masks zero a little under half of each c x c block):
//   forward   4DM + 2c(D + M)         (read S, update S; the block and its product)
//   backward 10DM + 2c(3D + 2M)       (S again, read it; the reverse state G: update,
//                                      read twice; five block products)
// At D = M = 64 that is 14DM + 2c(4D + 3M) = 57344 + 896c (86016 at c = 32); the
// block terms favour small chunks, the matrix kernel large ones. Measured
// (forward+backward, B=1 H=8 D=64, 2 threads, us per token): flow at T = 4096
// c = 16: 6.04, 32: 5.96, 64: 6.74; at 16384 6.19, 6.01, 6.73; linear at 4096
// 5.35, 5.15, 5.96. Hence 32.
#ifndef LAYERS_CAUSAL_DOT_PRODUCT_H
#define LAYERS_CAUSAL_DOT_PRODUCT_H

#include <string.h>
#include <omp.h>
#include "utils/real.h"
#include "layers/matmul.h"

#define CDP_CHUNK 32

// The walk's two other parameters, shared by flow and linear attention:
// - the forward pass saves its running state every CDP_SEGMENT positions (a
//   checkpoint); the backward pass goes one segment at a time, last first,
//   replaying the segment forwards from its checkpoint (features and each
//   chunk's state) and then going back over its chunks. A segment's arrays stay
//   in cache, and q, k, v are read once by each pass.
// - heads go to the threads in groups of consecutive (batch element, head)
//   pairs, at most CDP_GROUP, whose chunks are processed in lockstep (chunk c
//   of every head of the group, then chunk c + 1): a chunk then reads each row
//   of q, k, v in one stretch, the group's heads side by side, rather than in
//   scattered pieces of 256 bytes, which memory serves much more slowly (the
//   flow forward pass took 1.35x as long per token that way at T = 16384). Each
//   chunk also asks for the next one's rows ahead of time (vec_prefetch).
#define CDP_SEGMENT (8 * CDP_CHUNK)
#define CDP_GROUP 8

// Heads per group for `pairs` (batch element, head) pairs: a group for every thread, at most CDP_GROUP.
static int cdp_group_size(int pairs) {
    int threads = omp_get_max_threads(), size = (pairs + threads - 1) / threads;
    return size < CDP_GROUP ? size : CDP_GROUP;
}

// Multiply-adds times two of one position of the causal product, forward and
// backward, as counted above (the benchmark's GFLOP/s).
static double causal_dot_product_flops(int D, int M) {
    return 14.0 * D * M + 2.0 * CDP_CHUNK * (4 * D + 3 * M);
}

// gemm(M, N, K, a, a_row, a_col, b, b_row, b_col, c, ldc, accumulate) sets or
// adds C (M,N) = A (M,K) B (K,N), the strides of A and B expressing transposes.
// Called from inside the per-head parallel loop, it runs on its caller's thread.

// Zeroes scores[i][j] for j > i (the future) in an n x n block of row stride CDP_CHUNK.
static void mask_future(real* scores, int n) {
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) scores[i * CDP_CHUNK + j] = 0;
}

// S (D,M) += k^T w over a chunk of n positions.
static void cdp_state_add(real* S, const real* k, const real* w, int n, int D, int M) {
    gemm(D, M, n, k, 1, D, w, M, 1, S, M, 1);
}

// One chunk of n positions: out (n,M) = its causal product given the state S
// of the positions before it; then S takes in the chunk. scores: CDP_CHUNK^2 scratch.
static void cdp_chunk_forward(real* out, const real* q, const real* k, const real* w,
                              int n, int D, int M, real* S, real* scores) {
    gemm(n, M, D, q, D, 1, S, M, 1, out, M, 0);              // out  = q S
    gemm(n, n, D, q, D, 1, k, 1, D, scores, CDP_CHUNK, 0);   // P    = q k^T
    mask_future(scores, n);
    gemm(n, M, n, scores, CDP_CHUNK, 1, w, M, 1, out, M, 1); // out += P w
    cdp_state_add(S, k, w, n, D, M);
}

// The chunk's gradients given dout (n,M): sets dq (n,D), dk (n,D), dw (n,M).
// S is the forward state before the chunk; G (D,M) = sum_{i after the chunk} q_i dout_i^T,
// which then takes in the chunk (chunks go last to first). scores: CDP_CHUNK^2 scratch.
//   dq_i = S dout_i + sum_{chunk start <= j <= i} (dout_i . w_j) k_j
//   dk_j = G w_j    + sum_{j <= i < chunk end}   (dout_i . w_j) q_i
//   dw_j = G^T k_j  + sum_{j <= i < chunk end}   (q_i . k_j) dout_i
static void cdp_chunk_backward(real* dq, real* dk, real* dw, const real* dout,
                               const real* q, const real* k, const real* w,
                               int n, int D, int M, const real* S, real* G, real* scores) {
    gemm(n, D, M, dout, M, 1, S, 1, M, dq, D, 0);                 // dq  = dout S^T
    gemm(n, D, M, w, M, 1, G, 1, M, dk, D, 0);                    // dk  = w G^T
    gemm(n, M, D, k, D, 1, G, M, 1, dw, M, 0);                    // dw  = k G
    gemm(n, n, M, dout, M, 1, w, 1, M, scores, CDP_CHUNK, 0);     // dP  = dout w^T
    mask_future(scores, n);
    gemm(n, D, n, scores, CDP_CHUNK, 1, k, D, 1, dq, D, 1);       // dq += dP k
    gemm(n, D, n, scores, 1, CDP_CHUNK, q, D, 1, dk, D, 1);       // dk += dP^T q
    gemm(n, n, D, q, D, 1, k, 1, D, scores, CDP_CHUNK, 0);        // P   = q k^T
    mask_future(scores, n);
    gemm(n, M, n, scores, 1, CDP_CHUNK, dout, M, 1, dw, M, 1);    // dw += P^T dout
    gemm(D, M, n, q, 1, D, dout, M, 1, G, M, 1);                  // G  += q^T dout
}

// Multiply-adds times two of one position (L = S) of the full product, forward
// (kv, out) and backward (kv again, dq, dkv, dk, dw).
static double full_dot_product_flops(int D, int M) { return 14.0 * D * M; }

// out (L,M) = q (L,D) kv, kv (D,M) = k (S,D)^T w (S,M)
static void full_dot_product_forward(real* out, const real* q, const real* k, const real* w,
                                     int L, int S, int D, int M, real* kv) {
    gemm(D, M, S, k, 1, D, w, M, 1, kv, M, 0);
    gemm(L, M, D, q, D, 1, kv, M, 1, out, M, 0);
}

// dq (L,D) += dout kv^T, dk (S,D) += w dkv^T, dw (S,M) += k dkv, with dkv = q^T dout.
// kv is recomputed into `kv`; dkv is D*M scratch.
static void full_dot_product_backward(real* dq, real* dk, real* dw, const real* dout,
                                      const real* q, const real* k, const real* w,
                                      int L, int S, int D, int M, real* kv, real* dkv) {
    gemm(D, M, S, k, 1, D, w, M, 1, kv, M, 0);
    gemm(L, D, M, dout, M, 1, kv, 1, M, dq, D, 1);
    gemm(D, M, L, q, 1, D, dout, M, 1, dkv, M, 0);
    gemm(S, D, M, w, M, 1, dkv, 1, M, dk, D, 1);
    gemm(S, M, D, k, D, 1, dkv, M, 1, dw, M, 1);
}

#endif
