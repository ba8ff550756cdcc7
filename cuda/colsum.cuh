// Column sums over the rows of an (N, width) array on the GPU, the same on every run,
// as layers/colsum.h's on the CPU: the rows are cut into fixed blocks of COLSUM_ROWS,
// each block's sums go to its own row of partials, and the partials are added up in
// block order. Bias and LayerNorm gradients are such sums.
#ifndef CUDA_COLSUM_CUH
#define CUDA_COLSUM_CUH

#include "cuda/common.cuh"

#define COLSUM_ROWS 32

static inline int colsum_blocks(int N) { return (N + COLSUM_ROWS - 1) / COLSUM_ROWS; }

// partial (colsum_blocks(N), width): row b sums rows [b*COLSUM_ROWS, (b+1)*COLSUM_ROWS) of x.
// Grid (colsum_blocks(N), blocks of columns), a thread per column.
__global__ void colsum_partial_kernel(float* partial, const float* x, int N, int width) {
    int b = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= width) return;
    int n1 = (b + 1) * COLSUM_ROWS < N ? (b + 1) * COLSUM_ROWS : N;
    float sum = 0;
    for (int n = b * COLSUM_ROWS; n < n1; n++) sum += x[(size_t)n * width + c];
    partial[(size_t)b * width + c] = sum;
}

// sums (width) += the partials of all blocks, in block order.
__global__ void colsum_reduce_kernel(float* sums, const float* partial, int nblocks, int width) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= width) return;
    float sum = 0;
    for (int b = 0; b < nblocks; b++) sum += partial[(size_t)b * width + c];
    sums[c] += sum;
}

static void colsum_reduce(float* sums, const float* partial, int nblocks, int width) {
    colsum_reduce_kernel<<<blocks_for(width, THREADS), THREADS>>>(sums, partial, nblocks, width);
    CUDA_LAUNCHED();
}

// sums (width) += column sums of x (N, width).
static void colsum_add(float* sums, const float* x, int N, int width) {
    static DeviceScratch scratch;
    float* partial = device_scratch(&scratch, (size_t)colsum_blocks(N) * width, "column sums");
    dim3 grid(colsum_blocks(N), blocks_for(width, THREADS));
    colsum_partial_kernel<<<grid, THREADS>>>(partial, x, N, width);
    CUDA_LAUNCHED();
    colsum_reduce(sums, partial, colsum_blocks(N), width);
}

#endif
