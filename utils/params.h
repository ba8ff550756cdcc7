// A model's parameters: one table of tensors (name, shape, initialisation, weight
// decay or not) over four allocations of the same layout: the parameters, their
// gradients and AdamW's two moments. Models describe their tensors in order with
// params_add, which also points the model's named pointers into the memory;
// checkpoints, the optimizer and the gradient tests walk the table.
// carve() lays out a model's activations the same way, in one allocation.
#ifndef UTILS_PARAMS_H
#define UTILS_PARAMS_H

#include <string.h>
#include "utils/real.h"
#include "utils/utils.h"
#include "utils/rng.h"

#define TENSOR_MAX_DIMS 4

typedef enum {
    INIT_ZERO,     // biases
    INIT_ONE,      // LayerNorm gains
    INIT_NORMAL,   // N(0, value^2): weights, embeddings
    INIT_CONSTANT, // value: LayerScale gains
} TensorInit;

typedef struct {
    char name[48];
    int ndim;
    long shape[TENSOR_MAX_DIMS];
    long offset, size;  // reals, in the parameter memory; size 0: the tensor is absent
    TensorInit init;
    double value;       // std of INIT_NORMAL, the value of INIT_CONSTANT
    int decay;          // AdamW applies weight decay to it
    real** param;       // the model's pointers to point at the tensor, in the parameters
    real** grad;        // and in the gradients
} TensorInfo;

typedef struct {
    TensorInfo* tensors;
    int ntensors;
    long count;         // reals in all
    real *params, *grads, *m, *v;
} Parameters;

// Appends a tensor of shape dims[0] x ... (ndim of them; a zero dimension makes it
// absent, its pointers NULL). param and grad are where the model keeps its pointers.
static void params_add(Parameters* P, const char* name, real** param, real** grad, TensorInit init,
                       double value, int decay, int ndim, const long* dims) {
    if (ndim < 1 || ndim > TENSOR_MAX_DIMS) fail("tensor %s: %d dimensions", name, ndim);
    P->tensors = (TensorInfo*)realloc(P->tensors, (size_t)(P->ntensors + 1) * sizeof(TensorInfo));
    if (P->tensors == NULL) fail("out of memory describing tensor %s", name);
    TensorInfo* t = &P->tensors[P->ntensors++];
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->ndim = ndim;
    t->size = 1;
    for (int d = 0; d < ndim; d++) {
        t->shape[d] = dims[d];
        t->size *= dims[d];
    }
    t->offset = P->count;
    t->init = init;
    t->value = value;
    t->decay = decay;
    t->param = param;
    t->grad = grad;
    P->count += t->size;
}

// params_add with the shape written out: PARAM(P, "qkvw", &p.qkvw, &g.qkvw, INIT_NORMAL, std, 1, L, 3 * C, C)
#define PARAM(P, name, param, grad, init, value, decay, ...) do { \
        const long dims_[] = {__VA_ARGS__}; \
        params_add((P), (name), (param), (grad), (init), (value), (decay), \
                   (int)(sizeof dims_ / sizeof dims_[0]), dims_); \
    } while (0)

// Allocates the four arrays for the tensors added so far (gradients and moments
// zeroed) and points the model's pointers into them.
static void params_allocate(Parameters* P) {
    size_t n = (size_t)P->count;
    P->params = (real*)malloc_check(n * sizeof(real));
    P->grads = (real*)calloc_check(n, sizeof(real));
    P->m = (real*)calloc_check(n, sizeof(real));
    P->v = (real*)calloc_check(n, sizeof(real));
    for (int i = 0; i < P->ntensors; i++) {
        TensorInfo* t = &P->tensors[i];
        *t->param = t->size > 0 ? P->params + t->offset : NULL;
        *t->grad = t->size > 0 ? P->grads + t->offset : NULL;
    }
}

// Initialises every tensor, drawing the normal ones from rng in table order.
static void params_init(Parameters* P, Rng* rng) {
    for (int i = 0; i < P->ntensors; i++) {
        const TensorInfo* t = &P->tensors[i];
        real* p = P->params + t->offset;
        for (long j = 0; j < t->size; j++) {
            switch (t->init) {
            case INIT_ZERO: p[j] = 0; break;
            case INIT_ONE: p[j] = 1; break;
            case INIT_NORMAL: p[j] = (real)(t->value * rng_normal(rng)); break;
            case INIT_CONSTANT: p[j] = (real)t->value; break;
            }
        }
    }
}

// Whether every parameter is a finite number (a diverged run's are not).
static int params_finite(const Parameters* P) {
    int finite = 1;
#pragma omp parallel for reduction(&&:finite)
    for (long i = 0; i < P->count; i++) finite = finite && isfinite(P->params[i]);
    return finite;
}

static void params_zero_grad(Parameters* P) {
    memset(P->grads, 0, (size_t)P->count * sizeof(real));
}

// The next n reals of one allocation: with base NULL it only counts (*used
// grows), so a first pass sizes the allocation and a second one hands out pointers.
static inline real* carve(real* base, size_t* used, size_t n) {
    real* p = base != NULL ? base + *used : NULL;
    *used += n;
    return p;
}

static void params_free(Parameters* P) {
    free(P->params);
    free(P->grads);
    free(P->m);
    free(P->v);
    free(P->tensors);
    memset(P, 0, sizeof(*P));
}

#endif
