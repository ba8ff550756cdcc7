// What the GPU layers share: calls checked with the failing call named, device memory,
// the cuBLAS handle and the matrix product every linear layer and attention kind is
// built on (gemm, the GPU twin of layers/matmul.h's), and the warp- and block-wide sums
// of the kernels. Every GPU header is the counterpart of a CPU layer and computes in
// float32; kernels run on the default stream, in the order they are launched.
#ifndef CUDA_COMMON_CUH
#define CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include <cublas_v2.h>
#include <float.h>
#include "utils/utils.h"

#define CUDA_CHECK(call) cuda_check((call), #call, __FILE__, __LINE__)
#define CUBLAS_CHECK(call) cublas_check((call), #call, __FILE__, __LINE__)
// After each launch: a bad launch is reported where it happened, not at the next synchronisation.
#define CUDA_LAUNCHED() cuda_check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

static void cuda_check(cudaError_t err, const char* call, const char* file, int line) {
    if (err != cudaSuccess) fail("%s:%d: %s: %s", file, line, call, cudaGetErrorString(err));
}

static void cublas_check(cublasStatus_t status, const char* call, const char* file, int line) {
    if (status != CUBLAS_STATUS_SUCCESS) fail("%s:%d: %s: %s", file, line, call, cublasGetStatusString(status));
}

// Threads per block of the kernels that take one element or row per thread, and the
// warps in such a block (kernels that take a row per warp).
#define THREADS 256
#define WARPS (THREADS / 32)

static inline unsigned blocks_for(long n, int threads) { return (unsigned)((n + threads - 1) / threads); }

// n floats of device memory, the allocation named when it fails.
static float* cuda_floats(size_t n, const char* what) {
    void* p = NULL;
    cudaError_t err = cudaMalloc(&p, (n > 0 ? n : 1) * sizeof(float));
    if (err != cudaSuccess)
        fail("cannot allocate %.3f GiB of GPU memory for %s: %s", n * 4.0 / 1073741824.0, what,
             cudaGetErrorString(err));
    return (float*)p;
}

static void to_device(void* dst, const void* src, size_t bytes) {
    CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}

static void to_host(void* dst, const void* src, size_t bytes) {
    CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

// Device memory that a layer needs on every call, kept from one call to the next and
// grown when a call needs more (utils/scratch.h's Scratch, on the GPU).
typedef struct {
    float* p;
    size_t n;
} DeviceScratch;

static float* device_scratch(DeviceScratch* s, size_t n, const char* what) {
    if (n > s->n) {
        CUDA_CHECK(cudaFree(s->p));  // waits for the kernels that may still use it
        s->p = cuda_floats(n, what);
        s->n = n;
    }
    return s->p;
}

// ----------------------------------------------------------------------------
// cuBLAS

static cublasHandle_t cublas;

// Selects the GPU and makes the cuBLAS handle. tf32: single-precision products on the
// tensor cores with 10-bit mantissas (CUBLAS_TF32_TENSOR_OP_MATH); otherwise plain float32.
static void cuda_setup(int device, int tf32) {
    CUDA_CHECK(cudaSetDevice(device));
    CUBLAS_CHECK(cublasCreate(&cublas));
    CUBLAS_CHECK(cublasSetMathMode(cublas, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
}

// C (M,N) = alpha A (M,K) B (K,N) + beta C for `batch` products at once, on row-major
// arrays, as layers/matmul.h's gemm: A's element (i, p) is a[i*a_row + p*a_col], with
// a_col == 1 (A stored by rows) or a_row == 1 (stored by columns: a transpose); B's
// likewise; rows of C are ldc apart; product z reads a + z*a_batch, b + z*b_batch and
// writes c + z*c_batch. With beta 0, C is not read.
// cuBLAS reads matrices by columns, and a row-major matrix read by columns is its
// transpose, so this asks cuBLAS for C^T = B^T A^T.
static void gemm_batched(int M, int N, int K, const float* a, long a_row, long a_col, long a_batch,
                         const float* b, long b_row, long b_col, long b_batch, float* c, long ldc, long c_batch,
                         int batch, float alpha, float beta) {
    cublasOperation_t op_a = a_col == 1 ? CUBLAS_OP_N : CUBLAS_OP_T, op_b = b_col == 1 ? CUBLAS_OP_N : CUBLAS_OP_T;
    int lda = (int)(a_col == 1 ? a_row : a_col), ldb = (int)(b_col == 1 ? b_row : b_col);
    CUBLAS_CHECK(cublasSgemmStridedBatched(cublas, op_b, op_a, N, M, K, &alpha, b, ldb, b_batch, a, lda, a_batch,
                                           &beta, c, (int)ldc, c_batch, batch));
}

static void gemm(int M, int N, int K, const float* a, long a_row, long a_col, const float* b, long b_row,
                 long b_col, float* c, long ldc, float alpha, float beta) {
    gemm_batched(M, N, K, a, a_row, a_col, 0, b, b_row, b_col, 0, c, ldc, 0, 1, alpha, beta);
}

// ----------------------------------------------------------------------------
// Sums across threads. Blocks are whole warps. Every sum is a fixed tree, so results
// do not change from run to run.

__device__ __forceinline__ float warp_sum(float x) {
    for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
    return x;
}

__device__ __forceinline__ float warp_max(float x) {
    for (int offset = 16; offset > 0; offset >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
    return x;
}

// The sum of x over the block, returned to every thread.
__device__ float block_sum(float x) {
    __shared__ float partial[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    x = warp_sum(x);
    __syncthreads();  // a previous call may still be reading partial
    if (lane == 0) partial[warp] = x;
    __syncthreads();
    return warp_sum(lane < nwarps ? partial[lane] : 0.0f);
}

// The largest x over the block, returned to every thread.
__device__ float block_max(float x) {
    __shared__ float partial[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    x = warp_max(x);
    __syncthreads();
    if (lane == 0) partial[warp] = x;
    __syncthreads();
    return warp_max(lane < nwarps ? partial[lane] : -FLT_MAX);
}

#endif
