// AdamW (Loshchilov & Hutter): Adam with weight decay decoupled from the
// gradient, as PyTorch's torch.optim.AdamW and fairseq's adam, plus global
// gradient-norm clipping. params, grads, m, v are (N); adamw_step takes one
// step over a model's Parameters (utils/params.h), adamw_step_shard over the part
// of them that one rank updates (utils/dist.h).
#ifndef LAYERS_ADAMW_H
#define LAYERS_ADAMW_H

#include <omp.h>
#include "utils/real.h"
#include "utils/utils.h"
#include "utils/scratch.h"
#include "layers/fastmath.h"
#include "utils/params.h"
#include "utils/dist.h"

typedef struct {
    double beta1, beta2, eps, weight_decay;
    double grad_clip; // clip the global gradient norm to this (0: off)
} AdamW;

// One update at step t (1-based, for the bias corrections), with the gradient
// g = grad_scale * grads (the clipping factor of clip_scale, applied on the fly
// instead of in a pass of its own):
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   param -= lr * (mhat / (sqrt(vhat) + eps) + weight_decay * param)
// One pass, vectorised (sqrt_fast: libm's sqrtf keeps the loop scalar).
static void adamw_update_scaled(real* params, const real* grads, real* m, real* v, long N, real lr,
                                real beta1, real beta2, real eps, real weight_decay, long t,
                                real grad_scale) {
    real c1 = (real)1 - pow(beta1, (real)t), c2 = (real)1 - pow(beta2, (real)t);
#pragma omp parallel for simd
    for (long i = 0; i < N; i++) {
        real g = grads[i] * grad_scale;
        real mi = beta1 * m[i] + ((real)1 - beta1) * g;
        real vi = beta2 * v[i] + ((real)1 - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        params[i] -= lr * ((mi / c1) / (sqrt_fast(vi / c2) + eps) + weight_decay * params[i]);
    }
}

// adamw_update_scaled with the gradients as they are.
static void adamw_update(real* params, const real* grads, real* m, real* v, long N, real lr,
                         real beta1, real beta2, real eps, real weight_decay, long t) {
    adamw_update_scaled(params, grads, m, v, N, lr, beta1, beta2, eps, weight_decay, t, 1);
}

// Sum of the squares of the N gradients. Fixed-size chunks summed in a fixed
// order, so the result is bitwise the same for any thread count.
static double grad_sum_squares(const real* grads, long N) {
    const long chunk = 1 << 16;
    long nchunks = (N + chunk - 1) / chunk;
    static Scratch scratch;
    double* partial = (double*)scratch_get(&scratch, sizeof(double) * (nchunks > 0 ? nchunks : 1));
#pragma omp parallel for
    for (long c = 0; c < nchunks; c++) {
        long end = (c + 1) * chunk < N ? (c + 1) * chunk : N;
        real acc = 0;
#pragma omp simd reduction(+:acc)
        for (long i = c * chunk; i < end; i++) acc += grads[i] * grads[i];
        partial[c] = acc;
    }
    double total = 0;
    for (long c = 0; c < nchunks; c++) total += partial[c];
    return total;
}

// L2 norm of the N gradients.
static double grad_norm(const real* grads, long N) { return sqrt(grad_sum_squares(grads, N)); }

// The factor that brings the gradients' norm to at most max_norm (as PyTorch's
// clip_grad_norm_: max_norm / (norm + 1e-6)), 1 if max_norm <= 0 or the norm is
// within it; norm is grad_norm's result.
static real clip_scale(double norm, double max_norm) {
    if (max_norm <= 0 || norm <= max_norm) return 1;
    return (real)(max_norm / (norm + 1e-6));
}

// Scales the gradients by clip_scale in place (adamw_update_scaled does it on the fly).
static void clip_grads(real* grads, long N, double norm, double max_norm) {
    real f = clip_scale(norm, max_norm);
    if (f == 1) return;
#pragma omp parallel for simd
    for (long i = 0; i < N; i++) grads[i] *= f;
}

// One training update of the shard's pieces of params, after the gradients of
// update `step` (1-based) are in: the global norm of the gradients (summed over
// the ranks when they hold different pieces), a stop naming the step when it or
// the loss is not finite, clipping, then AdamW with learning rate lr (weight
// decay only where the table says so). Returns the norm before clipping.
static double adamw_step_shard(real* params, const ParamShard* s, const AdamW* opt, double lr, double loss,
                               long step) {
    double squares = grad_sum_squares(s->grads, s->count);
    if (s->split != NULL) squares = dist_sum(s->split, squares);
    double norm = sqrt(squares);
    if (!isfinite(loss) || !isfinite(norm))
        fail("step %ld: the loss (%g) or gradient norm (%g) is not finite", step, loss, norm);
    real scale = clip_scale(norm, opt->grad_clip);
    for (int i = 0; i < s->npieces; i++) {
        const ShardPiece* p = &s->pieces[i];
        adamw_update_scaled(params + p->offset, s->grads + p->at, s->m + p->at, s->v + p->at, p->count, (real)lr,
                            (real)opt->beta1, (real)opt->beta2, (real)opt->eps,
                            p->decay ? (real)opt->weight_decay : 0, step, scale);
    }
    return norm;
}

// adamw_step_shard over every tensor of P.
static double adamw_step(Parameters* P, const AdamW* opt, double lr, double loss, long step) {
    ParamShard whole = param_shard_whole(P);
    double norm = adamw_step_shard(P->params, &whole, opt, lr, loss, step);
    free(whole.pieces);
    return norm;
}

#endif
