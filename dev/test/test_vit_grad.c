// Whole-model gradient check of train_vit_flow.c in float64: the hand-written
// backward pass against central finite differences of the loss, on tiny plain
// models (class token, mean pooling) and hierarchical ones (stages joined by 2x2
// merges), for every attention type, with LayerScale, dropout and drop-path on
// and soft (smoothed, mixed) targets.
// Built with -DREAL_DOUBLE -DTESTING, so the trainer's main() is left out.
#include "train_vit_flow.c"
#include "dev/test/testing.h"

typedef struct {
    const char* name;
    int S, Cin, P, nstages;
    int dims[MAX_STAGES], depths[MAX_STAGES], heads[MAX_STAGES];
    const char* attention;
    int cls;
    double layerscale;
    int layerscale_attn;
    double dropout, drop_path;
} GradCase;

static void run_case(const GradCase* gc) {
    const int B = 3, K = 5;
    ViTConfig c;
    memset(&c, 0, sizeof(c));
    c.S = gc->S; c.Cin = gc->Cin; c.K = K; c.P = gc->P; c.nstages = gc->nstages;
    for (int s = 0; s < gc->nstages; s++) {
        c.dims[s] = gc->dims[s]; c.depths[s] = gc->depths[s]; c.heads[s] = gc->heads[s];
        c.ffn[s] = 2 * gc->dims[s] + 1;
    }
    c.attention = attention_kind(gc->attention);
    c.clamp = (real)5;
    c.ln_eps = (real)1e-5;
    c.init_std = 0.3;
    c.cls = gc->cls;
    c.layerscale = (real)gc->layerscale;
    c.layerscale_attn = gc->layerscale_attn;
    c.p_drop = (real)gc->dropout;
    c.p_path = (real)gc->drop_path;
    ViT m;
    vit_build(&m, &c);
    Rng rng = rng_make(7);
    vit_init(&m, &rng);
    // gains and biases away from 1 and 0, so their gradients are generic too
    for (long i = 0; i < m.params.count; i++) m.params.params[i] += (real)(0.1 * rng_normal(&rng));
    long npix = (long)B * c.S * c.S * c.Cin;
    real* images = (real*)malloc_check(npix * sizeof(real));
    for (long i = 0; i < npix; i++) images[i] = (real)rng_normal(&rng);
    real targets[B * K];
    int labels[B];
    for (int b = 0; b < B; b++) labels[b] = (int)rng_below(&rng, K);
    soft_targets_from_labels(targets, labels, (real)0.1, B, K);
    for (int k = 0; k < K; k++) targets[k] = (real)0.7 * targets[k] + (real)0.3 * targets[K + k]; // mixed
    m.training = 1;
    m.dropout_seed = 12345;

    params_zero_grad(&m.params);
    vit_forward(&m, images, targets, B);
    vit_backward(&m, (real)1 / B);

    double worst = 0, gmax = 0;
    const char* worst_name = "";
    const double h = 1e-5;
    for (int t = 0; t < m.params.ntensors; t++) {
        long n = m.params.tensors[t].size, off = m.params.tensors[t].offset;
        long step = n > 30 ? n / 30 : 1;
        for (long j = t % step; j < n; j += step) {
            real* p = m.params.params + off + j;
            real saved = *p;
            *p = saved + h;
            double lp = vit_forward(&m, images, targets, B);
            *p = saved - h;
            double lm = vit_forward(&m, images, targets, B);
            *p = saved;
            double fd = (lp - lm) / (2 * h);
            double an = m.params.grads[off + j];
            // floor 1e-4: exactly-zero gradients (a shift of the softmax key bias)
            // carry only the rounding of the difference
            double err = fabs(fd - an) / fmax(fmax(fabs(fd), fabs(an)), 1e-4);
            if (!(err <= worst)) { worst = err; worst_name = m.params.tensors[t].name; }
            if (fabs(an) > gmax) gmax = fabs(an);
        }
    }
    check(worst < 1e-5 && gmax > 1e-3, "grad %s: %ld parameters, max rel err %.2e (%s), max |grad| %.2e",
          gc->name, m.params.count, worst, worst_name, gmax);
    free(images);
    vit_free(&m);
}

int main(void) {
    const GradCase cases[] = {
        {"plain cls flow layerscale-both dropout drop-path", 8, 2, 2, 1, {8}, {2}, {2}, "flow", 1, 0.5, 1, 0.2, 0.4},
        {"plain mean flow", 8, 3, 2, 1, {8}, {2}, {2}, "flow", 0, 0, 0, 0, 0},
        {"plain cls softmax", 8, 1, 4, 1, {6}, {2}, {3}, "softmax", 1, 0, 0, 0, 0},
        {"plain mean linear layerscale-mlp", 8, 2, 2, 1, {8}, {2}, {2}, "linear", 0, 0.5, 0, 0, 0},
        {"hierarchical flow 3 stages layerscale-mlp drop-path", 16, 3, 2, 3, {4, 8, 12}, {1, 2, 1}, {1, 2, 3},
         "flow", 0, 0.5, 0, 0, 0.4},
        {"hierarchical softmax 2 stages dropout", 8, 1, 2, 2, {6, 8}, {1, 1}, {2, 2}, "softmax", 0, 0, 0, 0.2, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) run_case(&cases[i]);
    return testing_exit_code();
}
