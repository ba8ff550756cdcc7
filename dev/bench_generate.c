// Generation speed: tokens per second of sampling one token at a time from
// train_gpt_flow.c's model (6 layers, 512 channels, 8 heads, MLP 2048,
// sinusoidal positions, untrained weights) at contexts of 64 to 65,536
// tokens, Flow-Attention through its recurrent step against softmax
// attention through a key/value cache; and the memory each keeps per
// sequence. Run with `make bench-generate`.
//
// A step costs the same whatever the numbers in the state, so the state at a
// context of c tokens is made from a real prefix of 64: softmax's cache holds
// the prefix's keys and values repeated to c rows (each is read, as it would
// be), flow's state is the prefix's running sums; the step then runs at
// position c - 1. This reads GenState's `states` and `state_size` besides the
// functions train_gpt_flow.c offers (gpt_build, gpt_init, gen_state_make,
// gpt_step, gen_state_free, gpt_free).
#include <omp.h>
#include "train_gpt_flow.c"

#define PREFIX 64
static const int contexts[] = {64, 1024, 4096, 16384, 65536};
#define NUM_CONTEXTS ((int)(sizeof contexts / sizeof contexts[0]))

static GPTConfig model_config(const char* kind) {
    GPTConfig c = {.V = 65, .maxT = 65536, .L = 6, .H = 8, .C = 512, .F = 2048, .attention = kind,
                   .clamp = 1, .learned_pos = 0, .tied = 1, .relu = 0, .embed_scale = 1, .init_std = 0.02};
    return c;
}

// Seconds per token of gpt_step at position context - 1, best of a few runs,
// for a state that looks as if `context` tokens had been fed.
static double seconds_per_token(const GPT* m, GenState* g, const Attention* a, int context) {
    const GPTConfig* c = &m->config;
    if (a->kind->state_size(a, 2) != a->kind->state_size(a, 1)) { // the state grows: fill it
        size_t row = g->state_size / c->maxT;
        for (int lh = 0; lh < c->L * c->H; lh++) {
            real* s = g->states + (size_t)lh * g->state_size;
            for (int t = PREFIX; t < context; t++) memcpy(s + t * row, s + (t % PREFIX) * row, row * sizeof(real));
        }
    }
    int steps = context >= 16384 ? 3 : 20;
    double best = 1e30;
    for (int run = 0; run < 3; run++) {
        double t0 = omp_get_wtime();
        for (int s = 0; s < steps; s++) gpt_step(m, g, s % c->V, context - 1);
        double t = (omp_get_wtime() - t0) / steps;
        best = t < best ? t : best;
    }
    return best;
}

int main(void) {
    const char* kinds[2] = {"flow", "softmax"};
    double tokens_per_s[2][NUM_CONTEXTS], state_mib[2][NUM_CONTEXTS];
    printf("generation, one token at a time: L=6 C=512 H=8 F=2048, sinusoidal positions, vocabulary 65, float32, "
           "%d threads\n", omp_get_max_threads());
    printf("state = what the attention keeps per sequence at that context (all layers and heads)\n\n");
    for (int ki = 0; ki < 2; ki++) {
        GPTConfig c = model_config(kinds[ki]);
        GPT m;
        gpt_build(&m, &c);
        Rng rng = rng_make(1234);
        gpt_init(&m, &rng);
        GenState g = gen_state_make(&m);
        Attention a = gpt_attention(&m, 1, c.maxT);
        for (int t = 0; t < PREFIX; t++) gpt_step(&m, &g, (int)rng_below(&rng, c.V), t);
        for (int ci = 0; ci < NUM_CONTEXTS; ci++) {
            tokens_per_s[ki][ci] = 1 / seconds_per_token(&m, &g, &a, contexts[ci]);
            // reals per (layer, head) that hold this context: all of it for flow, c rows for softmax
            size_t held = a.kind->state_size(&a, contexts[ci]);
            state_mib[ki][ci] = (double)held * c.L * c.H * sizeof(real) / (1024.0 * 1024.0);
        }
        gen_state_free(&g);
        gpt_free(&m);
    }
    printf("%8s %14s %14s %16s %18s\n", "context", "flow tok/s", "softmax tok/s", "flow state MiB", "softmax cache MiB");
    for (int ci = 0; ci < NUM_CONTEXTS; ci++)
        printf("%8d %14.1f %14.1f %16.2f %18.2f\n", contexts[ci], tokens_per_s[0][ci], tokens_per_s[1][ci],
               state_mib[0][ci], state_mib[1][ci]);
    int last = NUM_CONTEXTS - 1;
    double flow_ratio = tokens_per_s[0][0] / tokens_per_s[0][last];
    printf("\nflow time per token at %d tokens of context: %.2fx that at %d (must be <= 1.2x): %s\n",
           contexts[last], flow_ratio, contexts[0], flow_ratio <= 1.2 ? "ok" : "MISSED");
    printf("flow state at every context: %.2f MiB, constant: %s\n", state_mib[0][0],
           state_mib[0][last] == state_mib[0][0] ? "ok" : "MISSED");
    printf("softmax time per token at %d tokens of context: %.1fx that at %d, its cache %.0fx larger\n",
           contexts[last], tokens_per_s[1][0] / tokens_per_s[1][last], contexts[0], state_mib[1][last] / state_mib[1][0]);
    return 0;
}
