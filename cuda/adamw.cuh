// AdamW and global gradient-norm clipping on the GPU, as layers/adamw.h's: the norm is
// summed in a fixed order (block partials, then the host in float64), the clipping
// factor applied on the fly, and each tensor of the parameter table (utils/params.h)
// updated with its own weight decay.
#ifndef CUDA_ADAMW_CUH
#define CUDA_ADAMW_CUH

#include <math.h>
#include "utils/params.h"
#include "cuda/common.cuh"

typedef struct {
    double beta1, beta2, eps, weight_decay;
    double grad_clip; // clip the global gradient norm to this (0: off)
} AdamW;

#define NORM_BLOCKS 1024  // the partial sums of the squares: a fixed grid, so a fixed order

// partial[block] = sum of x[i]^2 over the block's strided elements.
__global__ void sum_squares_kernel(float* partial, const float* x, long n) {
    float acc = 0;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        acc += x[i] * x[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// Sum of the squares of the n gradients.
static double grad_sum_squares(const float* grads, long n) {
    static DeviceScratch scratch;
    float* partial = device_scratch(&scratch, NORM_BLOCKS, "the gradient norm");
    sum_squares_kernel<<<NORM_BLOCKS, THREADS>>>(partial, grads, n);
    CUDA_LAUNCHED();
    float host[NORM_BLOCKS];
    to_host(host, partial, sizeof host);
    double total = 0;
    for (int b = 0; b < NORM_BLOCKS; b++) total += host[b];
    return total;
}

// The factor that brings the gradients' norm to at most max_norm (PyTorch's
// clip_grad_norm_: max_norm / (norm + 1e-6)); 1 if max_norm <= 0 or the norm is within it.
static float clip_scale(double norm, double max_norm) {
    if (max_norm <= 0 || norm <= max_norm) return 1;
    return (float)(max_norm / (norm + 1e-6));
}

// One update at step t with the gradient g = grad_scale * grads:
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   param -= lr * (mhat / (sqrt(vhat) + eps) + weight_decay * param)
// c1, c2 are the bias corrections 1 - b1^t, 1 - b2^t.
__global__ void adamw_kernel(float* params, const float* grads, float* m, float* v, long n, float lr, float beta1,
                             float beta2, float c1, float c2, float eps, float weight_decay, float grad_scale) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float g = grads[i] * grad_scale;
    float mi = beta1 * m[i] + (1.0f - beta1) * g;
    float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    params[i] -= lr * ((mi / c1) / (sqrtf(vi / c2) + eps) + weight_decay * params[i]);
}

// One training update of every tensor of P's table in the device arrays params, grads,
// m, v (laid out as P's), after the gradients of update `step` (1-based) are in: the
// global norm, a stop naming the step when it or the loss is not finite, clipping,
// then AdamW with learning rate lr (weight decay where the table says so). Returns
// the norm before clipping.
static double adamw_step(const Parameters* P, float* params, const float* grads, float* m, float* v,
                         const AdamW* opt, double lr, double loss, long step) {
    double norm = sqrt(grad_sum_squares(grads, P->count));
    if (!isfinite(loss) || !isfinite(norm))
        fail("step %ld: the loss (%g) or gradient norm (%g) is not finite", step, loss, norm);
    float scale = clip_scale(norm, opt->grad_clip);
    float beta1 = (float)opt->beta1, beta2 = (float)opt->beta2;
    float c1 = 1.0f - powf(beta1, (float)step), c2 = 1.0f - powf(beta2, (float)step);
    for (int i = 0; i < P->ntensors; i++) {
        const TensorInfo* t = &P->tensors[i];
        if (t->size == 0) continue;
        adamw_kernel<<<blocks_for(t->size, THREADS), THREADS>>>(
            params + t->offset, grads + t->offset, m + t->offset, v + t->offset, t->size, (float)lr, beta1, beta2,
            c1, c2, (float)opt->eps, t->decay ? (float)opt->weight_decay : 0.0f, scale);
        CUDA_LAUNCHED();
    }
    return norm;
}

#endif
