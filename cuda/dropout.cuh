// Inverted dropout on the GPU with the CPU's masks (layers/dropout.h): element i is
// kept when hash(key, i) >= p, and kept elements are scaled by 1/(1-p). The mask is a
// pure function of (key, i), so both trainers draw the same one, and the backward pass
// recomputes it. inp, out are (N); p in [0, 1).
#ifndef CUDA_DROPOUT_CUH
#define CUDA_DROPOUT_CUH

#include <stdint.h>
#include "cuda/common.cuh"

// utils/rng.h's rng_hash64 (splitmix64's finaliser), on the device.
__device__ __forceinline__ uint64_t hash64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

// 1 if element i is kept: compares 24 random bits with p.
__device__ __forceinline__ int dropout_keep(uint64_t key, long i, uint32_t threshold) {
    return (uint32_t)(hash64(key + (uint64_t)i * 0x9e3779b97f4a7c15ULL) >> 40) >= threshold;
}

static inline uint32_t dropout_threshold(float p) { return (uint32_t)(p * 16777216.0f); }

// The key whose mask is key's from element `first` on (a part of a larger tensor).
static inline uint64_t dropout_key_from(uint64_t key, long first) {
    return key + (uint64_t)first * 0x9e3779b97f4a7c15ULL;
}

__global__ void dropout_forward_kernel(float* out, const float* inp, long N, uint32_t threshold, float scale,
                                       uint64_t key) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < N) out[i] = dropout_keep(key, i, threshold) ? inp[i] * scale : 0.0f;
}

__global__ void dropout_backward_kernel(float* dinp, const float* dout, long N, uint32_t threshold, float scale,
                                        uint64_t key) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < N && dropout_keep(key, i, threshold)) dinp[i] += dout[i] * scale;
}

// out = mask * inp / (1 - p); out may be inp.
static void dropout_forward(float* out, const float* inp, long N, float p, uint64_t key) {
    if (p <= 0) {
        if (out != inp) CUDA_CHECK(cudaMemcpy(out, inp, (size_t)N * sizeof(float), cudaMemcpyDeviceToDevice));
        return;
    }
    dropout_forward_kernel<<<blocks_for(N, THREADS), THREADS>>>(out, inp, N, dropout_threshold(p), 1.0f / (1.0f - p),
                                                                key);
    CUDA_LAUNCHED();
}

// dinp += mask * dout / (1 - p)
static void dropout_backward(float* dinp, const float* dout, long N, float p, uint64_t key) {
    dropout_backward_kernel<<<blocks_for(N, THREADS), THREADS>>>(dinp, dout, N, dropout_threshold(p),
                                                                 p > 0 ? 1.0f / (1.0f - p) : 1.0f, key);
    CUDA_LAUNCHED();
}

#endif
