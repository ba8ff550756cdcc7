// Whole-model gradient check of train_gpt_flow.c in float64: the hand-written
// backward pass against central finite differences of the loss, for every
// attention type, both position kinds, both activations, tied and untied output
// layers, with dropout on and with unscored positions (target -1).
// Built with -DREAL_DOUBLE -DTESTING, so the trainer's main() is left out.
#include "train_gpt_flow.c"
#include "dev/test/testing.h"

typedef struct {
    const char* name;
    const char* attention;
    int learned_pos, tied, relu, embed_scale;
    double clamp, dropout;
} GradCase;

static double loss_of(GPT* m, const int* inputs, const int* targets, int B, int T) {
    return gpt_forward(m, inputs, targets, B, T);
}

static void run_case(const GradCase* gc) {
    const int B = 2, T = 7;
    real pd = (real)gc->dropout;
    GPTConfig c = {.V = 13, .maxT = T, .L = 2, .H = 2, .C = 16, .F = 24, .attention = gc->attention,
                   .clamp = (real)gc->clamp, .learned_pos = gc->learned_pos, .tied = gc->tied, .relu = gc->relu,
                   .embed_scale = gc->embed_scale ? (real)4 : (real)1, .p_embd = pd, .p_attn = pd, .p_hidden = pd,
                   .p_resid = pd, .init_std = 0.3};
    GPT m;
    gpt_build(&m, &c);
    Rng rng = rng_make(42);
    gpt_init(&m, &rng);
    // LayerNorm gains and biases away from 1 and 0, so their gradients are generic too
    for (long i = 0; i < m.params.count; i++) m.params.params[i] += (real)(0.1 * rng_normal(&rng));
    int inputs[B * T], targets[B * T];
    for (int i = 0; i < B * T; i++) {
        inputs[i] = (int)rng_below(&rng, c.V);
        targets[i] = i % 5 == 3 ? -1 : (int)rng_below(&rng, c.V);
    }
    m.training = 1;
    m.dropout_seed = 12345;
    long scored = 0;
    for (int i = 0; i < B * T; i++) scored += targets[i] >= 0;

    params_zero_grad(&m.params);
    loss_of(&m, inputs, targets, B, T);
    gpt_backward(&m, (real)1 / scored);

    // every entry of the small tensors, a spread of entries of the large ones
    double worst = 0, gmax = 0;
    const char* worst_name = "";
    const double h = 1e-5;
    for (int t = 0; t < m.params.ntensors; t++) {
        size_t n = (size_t)m.params.tensors[t].size, off = (size_t)m.params.tensors[t].offset;
        size_t step = n > 40 ? n / 40 : 1;
        for (size_t j = (size_t)t % step; j < n; j += step) {
            real* p = m.params.params + off + j;
            real saved = *p;
            *p = saved + h;
            double lp = loss_of(&m, inputs, targets, B, T);
            *p = saved - h;
            double lm = loss_of(&m, inputs, targets, B, T);
            *p = saved;
            double fd = (lp - lm) / (2 * h);
            // floor 1e-4: entries whose exact gradient is 0 (softmax ignores a
            // shift of the key bias) carry only the 1e-10 rounding of the difference
            double an = m.params.grads[off + j];
            double err = fabs(fd - an) / fmax(fmax(fabs(fd), fabs(an)), 1e-4);
            if (!(err <= worst)) { worst = err; worst_name = m.params.tensors[t].name; }
            if (fabs(an) > gmax) gmax = fabs(an);
        }
    }
    check(worst < 1e-5 && gmax > 1e-3, "grad %s: max rel err %.2e (%s), max |grad| %.2e", gc->name, worst,
          worst_name, gmax);
    gpt_free(&m);
}

int main(void) {
    const GradCase cases[] = {
        {"flow learned gelu tied", "flow", 1, 1, 0, 0, 1.0, 0},
        {"flow sinusoidal relu untied scaled clamp5", "flow", 0, 0, 1, 1, 5.0, 0},
        {"softmax learned gelu tied", "softmax", 1, 1, 0, 0, 1.0, 0},
        {"softmax sinusoidal relu untied scaled", "softmax", 0, 0, 1, 1, 1.0, 0},
        {"linear learned gelu tied", "linear", 1, 1, 0, 0, 1.0, 0},
        {"linear sinusoidal relu untied scaled", "linear", 0, 0, 1, 1, 1.0, 0},
        {"flow learned gelu dropout 0.3", "flow", 1, 1, 0, 0, 1.0, 0.3},
        {"flow sinusoidal relu dropout 0.3", "flow", 0, 0, 1, 1, 5.0, 0.3},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) run_case(&cases[i]);
    return testing_exit_code();
}
