// The cuBLAS calls of cuda/, on the CPU (see cuda_runtime.h beside it): column-major
// single-precision products, with cuBLAS's checks of the leading dimensions, so that a
// call the library would refuse fails here too.
#ifndef EMULATOR_CUBLAS_V2_H
#define EMULATOR_CUBLAS_V2_H

#include "cuda_runtime.h"

typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_INVALID_VALUE = 7,
} cublasStatus_t;
typedef enum { CUBLAS_OP_N, CUBLAS_OP_T } cublasOperation_t;
typedef enum { CUBLAS_DEFAULT_MATH = 0, CUBLAS_PEDANTIC_MATH = 2, CUBLAS_TF32_TENSOR_OP_MATH = 3 } cublasMath_t;
typedef struct { int math; } * cublasHandle_t;

static const char* cublasGetStatusString(cublasStatus_t s) {
    return s == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS" : "CUBLAS_STATUS_INVALID_VALUE";
}
static cublasStatus_t cublasCreate(cublasHandle_t* h) {
    *h = (cublasHandle_t)calloc(1, sizeof **h);
    return CUBLAS_STATUS_SUCCESS;
}
static cublasStatus_t cublasDestroy(cublasHandle_t h) { free(h); return CUBLAS_STATUS_SUCCESS; }
static cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m) { h->math = m; return CUBLAS_STATUS_SUCCESS; }

// C = alpha op(A) op(B) + beta C, column-major, `batch` times at the given strides; with
// beta 0, C is not read.
static cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                                                int m, int n, int k, const float* alpha, const float* A, int lda,
                                                long long sa, const float* B, int ldb, long long sb,
                                                const float* beta, float* C, int ldc, long long sc, int batch) {
    int need_a = ta == CUBLAS_OP_N ? m : k, need_b = tb == CUBLAS_OP_N ? k : n;
    if (m < 0 || n < 0 || k < 0 || batch < 0 || lda < (need_a > 1 ? need_a : 1) ||
        ldb < (need_b > 1 ? need_b : 1) || ldc < (m > 1 ? m : 1)) {
        fprintf(stderr, "emulated cuBLAS: sgemm m=%d n=%d k=%d lda=%d ldb=%d ldc=%d: invalid\n", m, n, k, lda, ldb,
                ldc);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    for (int z = 0; z < batch; z++) {
        const float *a = A + z * sa, *b = B + z * sb;
        float* c = C + z * sc;
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                float sum = 0;
                for (int p = 0; p < k; p++)
                    sum += (ta == CUBLAS_OP_N ? a[i + (long)p * lda] : a[p + (long)i * lda]) *
                           (tb == CUBLAS_OP_N ? b[p + (long)j * ldb] : b[j + (long)p * ldb]);
                float* cij = &c[i + (long)j * ldc];
                *cij = *beta == 0 ? *alpha * sum : *alpha * sum + *beta * *cij;
            }
    }
    return CUBLAS_STATUS_SUCCESS;
}

static cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                  const float* alpha, const float* A, int lda, const float* B, int ldb,
                                  const float* beta, float* C, int ldc) {
    return cublasSgemmStridedBatched(h, ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}

#endif
