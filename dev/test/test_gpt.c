// Tests of train_gpt_flow.c's model in float32 (built with -DTESTING, so its
// main() is left out):
//  - against the PyTorch reference (dev/gpt_reference.py -> dev/ref/gpt_*.bin):
//    logits, loss, every gradient, and the losses of 10 AdamW steps, to 1e-4
//  - recurrent generation (attention_step) gives the parallel forward's logits
//  - a checkpoint written and read back restores every number and the run state
//  - evaluation with --context-window W scores every token once, with at least W
//    tokens of context where the stream allows, and gives the loss that scoring
//    each token in its own window one at a time gives
#include <unistd.h>
#include "train_gpt_flow.c"
#include "dev/test/testing.h"
#include "dev/test/capture.h"

// Error of a relative to the reference b: max |a - b| / max(max |b|, floor).
static double rel_to_max(const real* a, const float* b, long n, double floor) {
    double diff = 0, ref = floor;
    for (long i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (!(e <= diff)) diff = e;
        if (fabs(b[i]) > ref) ref = fabs(b[i]);
    }
    return diff / ref;
}

static void read_exact(FILE* f, void* p, size_t size, size_t n, const char* path) {
    fread_check(p, size, n, f, path);
}

static void test_reference(const char* path) {
    FILE* f = fopen(path, "rb");
    if (f == NULL) { check(0, "reference %s: cannot open (run dev/gpt_reference.py)", path); return; }
    int32_t h[32];
    float s[16];
    read_exact(f, h, sizeof(int32_t), 32, path);
    read_exact(f, s, sizeof(float), 16, path);
    if (h[0] != 20250202 || h[1] != 1) { check(0, "reference %s: bad magic", path); fclose(f); return; }
    // the references number the attention kinds 0 flow, 1 softmax, 2 linear
    const char* kinds[] = {"flow", "softmax", "linear"};
    GPTConfig c = {.V = h[2], .maxT = h[3], .L = h[4], .H = h[5], .C = h[6], .F = h[7],
                   .attention = kinds[h[9]], .clamp = s[0], .learned_pos = h[10], .tied = h[11],
                   .relu = h[12], .embed_scale = h[13] ? (real)sqrt((double)h[6]) : (real)1,
                   .decay_embeddings = h[16]};
    int B = h[8], T = h[3], V = h[2], steps = h[15];
    GPT m;
    gpt_build(&m, &c);
    check(m.params.count == h[14], "reference %s: %ld parameters (PyTorch %d)", path, m.params.count, h[14]);
    if (m.params.count != h[14]) { fclose(f); gpt_free(&m); return; }
    long n = m.params.count;
    float* buf = (float*)malloc_check(sizeof(float) * (size_t)(n > (long)B * T * V ? n : (long)B * T * V));
    read_exact(f, buf, sizeof(float), (size_t)n, path);
    for (long i = 0; i < n; i++) m.params.params[i] = buf[i];
    int* inputs = (int*)malloc_check(sizeof(int) * (size_t)B * T);
    int* targets = (int*)malloc_check(sizeof(int) * (size_t)B * T);
    read_exact(f, inputs, sizeof(int), (size_t)B * T, path);
    read_exact(f, targets, sizeof(int), (size_t)B * T, path);

    double loss = gpt_forward(&m, inputs, targets, B, T);
    read_exact(f, buf, sizeof(float), (size_t)B * T * V, path);
    double e_logits = rel_to_max(m.acts.logits, buf, (long)B * T * V, 1e-3);
    check(e_logits < 1e-4, "reference %s: logits rel err %.1e", path, e_logits);
    float ref_loss;
    read_exact(f, &ref_loss, sizeof(float), 1, path);
    double e_loss = fabs(loss - ref_loss) / fabs(ref_loss);
    check(e_loss < 1e-4, "reference %s: loss %.6f vs %.6f, rel err %.1e", path, loss, ref_loss, e_loss);

    long scored = 0;
    for (int i = 0; i < B * T; i++) scored += targets[i] >= 0;
    params_zero_grad(&m.params);
    gpt_backward(&m, (real)1 / scored);
    read_exact(f, buf, sizeof(float), (size_t)n, path);
    // each tensor against its own largest gradient
    double e_grad = 0;
    const char* worst = "";
    for (int t = 0; t < m.params.ntensors; t++) {
        const TensorInfo* ti = &m.params.tensors[t];
        if (ti->size == 0) continue;
        double e = rel_to_max(m.params.grads + ti->offset, buf + ti->offset, ti->size, 1e-6);
        if (e > e_grad) { e_grad = e; worst = ti->name; }
    }
    check(e_grad < 1e-4, "reference %s: gradients rel err %.1e (worst %s)", path, e_grad, worst);

    float ref_losses[64];
    read_exact(f, ref_losses, sizeof(float), (size_t)steps, path);
    double e_steps = 0;
    AdamW opt = {s[2], s[3], s[4], s[5], s[6]};
    for (int step = 0; step < steps; step++) {
        params_zero_grad(&m.params);
        double l = gpt_forward(&m, inputs, targets, B, T);
        gpt_backward(&m, (real)1 / scored);
        adamw_step(&m.params, &opt, s[1], l, step + 1);
        double e = fabs(l - ref_losses[step]) / fabs(ref_losses[step]);
        if (e > e_steps) e_steps = e;
    }
    check(e_steps < 1e-4, "reference %s: %d AdamW steps, losses rel err %.1e (last %.5f)", path, steps,
          e_steps, ref_losses[steps - 1]);
    free(buf);
    free(inputs);
    free(targets);
    fclose(f);
    gpt_free(&m);
}

static GPT random_model(const char* kind, int learned, int T, uint64_t seed) {
    GPTConfig c = {.V = 23, .maxT = T, .L = 2, .H = 2, .C = 16, .F = 40, .attention = kind,
                   .clamp = (real)(strcmp(kind, "flow") == 0 ? 5 : 1), .learned_pos = learned, .tied = !learned,
                   .relu = !learned, .embed_scale = learned ? (real)1 : (real)4, .init_std = 0.2};
    GPT m;
    gpt_build(&m, &c);
    Rng rng = rng_make(seed);
    gpt_init(&m, &rng);
    return m;
}

// Logits of position t from attention_step must equal the parallel forward's.
static void test_generation(int kind_index, int learned) {
    const int T = 24;
    const char* kind = ATTENTION_KINDS[kind_index].name;
    GPT m = random_model(kind, learned, T, 7 + kind_index);
    Rng rng = rng_make(99);
    int tokens[T];
    for (int t = 0; t < T; t++) tokens[t] = (int)rng_below(&rng, m.config.V);
    gpt_forward(&m, tokens, NULL, 1, T);
    GenState g = gen_state_make(&m);
    float* ref = (float*)malloc_check(sizeof(float) * (size_t)m.config.V);
    double worst = 0;
    for (int t = 0; t < T; t++) {
        gpt_step(&m, &g, tokens[t], t);
        for (int v = 0; v < m.config.V; v++) ref[v] = m.acts.logits[(size_t)t * m.config.V + v];
        double e = rel_to_max(g.logits, ref, m.config.V, 1e-3);
        if (e > worst) worst = e;
    }
    check(worst < 1e-4, "generation %s %s: recurrent vs parallel logits over %d positions, rel err %.1e",
          kind, learned ? "learned" : "sinusoidal", T, worst);
    free(ref);
    gen_state_free(&g);
    gpt_free(&m);
}

static void test_checkpoint(void) {
    GPT m = random_model("flow", 1, 8, 3);
    Parameters* P = &m.params;
    for (long i = 0; i < P->count; i++) {
        P->m[i] = (real)(i % 7) * (real)0.25;
        P->v[i] = (real)(i % 5) * (real)0.5;
    }
    char dir[] = "/tmp/test_gpt_XXXXXX";
    if (mkdtemp(dir) == NULL) { check(0, "checkpoint: cannot make a temporary folder"); return; }
    char path[128];
    snprintf(path, sizeof(path), "%s/sub/ckpt.bin", dir);
    const char* json = "{\"n_layer\":2,\"attention\":\"flow\"}";
    CheckpointInfo info = {P->count, 1234, 56789, 0xdeadbeefcafef00dULL, (char*)json};
    checkpoint_save(path, &info, P->params, P->m, P->v);
    CheckpointInfo back;
    FILE* f = checkpoint_open(path, &back);
    real* p = (real*)malloc_check(sizeof(real) * (size_t)P->count * 3);
    checkpoint_read_tensors(f, path, back.num_params, p, p + P->count, p + 2 * P->count);
    int same = memcmp(p, P->params, sizeof(real) * (size_t)P->count) == 0 &&
               memcmp(p + P->count, P->m, sizeof(real) * (size_t)P->count) == 0 &&
               memcmp(p + 2 * P->count, P->v, sizeof(real) * (size_t)P->count) == 0;
    check(same && back.num_params == P->count, "checkpoint: parameters and AdamW state round trip");
    check(back.step == 1234 && back.data_pos == 56789 && back.rng_state == 0xdeadbeefcafef00dULL &&
          strcmp(back.config_json, json) == 0, "checkpoint: step, data position, rng state and configuration round trip");
    check(access(tmp_path_of(path), F_OK) != 0, "checkpoint: no temporary file left behind");
    free(back.config_json);
    free(p);
    unlink(path);
    snprintf(path, sizeof(path), "%s/sub", dir);
    rmdir(path);
    rmdir(dir);
    gpt_free(&m);
}

// evaluate() batches windows; here every target j is scored alone, in the window that
// the definition gives it: the first of the starts min(k (T-W), n-1-T) whose window
// reaches j.
static void test_context_window(int W) {
    const int T = 8, n = 61, B = 3;
    GPT m = random_model("flow", 1, T, 11);
    Rng rng = rng_make(5);
    TokenData d = {(uint32_t*)malloc_check(sizeof(uint32_t) * n), n};
    for (int i = 0; i < n; i++) d.tokens[i] = (uint32_t)rng_below(&rng, m.config.V);
    int inputs[B * T], targets[B * T];
    Dist one = dist_single();
    EvalResult r = evaluate(&m, &one, &d, B, T, W, 0, inputs, targets);
    double sum = 0;
    int context_ok = 1;
    for (long j = 1; j < n; j++) {
        long s = 0;
        for (long k = 0;; k++) {
            s = k * (T - W) < n - 1 - T ? k * (T - W) : n - 1 - T;
            if (s + T >= j) break;
        }
        int pos = (int)(j - 1 - s);
        if (pos < (W < j - 1 ? W : j - 1)) context_ok = 0;
        int in[T], tg[T];
        for (int t = 0; t < T; t++) { in[t] = (int)d.tokens[s + t]; tg[t] = t == pos ? (int)d.tokens[s + t + 1] : -1; }
        sum += gpt_forward(&m, in, tg, 1, T);
    }
    double brute = sum / (n - 1);
    double err = fabs(r.loss - brute) / brute;
    check(r.tokens == n - 1 && context_ok && err < 1e-5,
          "context window %d: %ld of %d tokens scored once, loss %.6f vs one at a time %.6f (rel err %.1e)",
          W, r.tokens, n - 1, r.loss, brute, err);
    // by position: the first window scores every position, later ones only from W on
    double weighted = 0;
    int first_window_only = 1;
    for (int t = 0; t < T; t++) {
        weighted += r.pos_loss[t] * r.pos_tokens[t];
        if (t < W && r.pos_tokens[t] != 1) first_window_only = 0;
    }
    double e_pos = fabs(weighted / r.tokens - r.loss) / r.loss;
    check(first_window_only && e_pos < 1e-12 && r.pos_tokens[T - 1] > 1,
          "context window %d: loss by position adds up to the loss (rel err %.1e); positions below W scored "
          "only in the first window", W, e_pos);
    eval_result_free(&r);
    free(d.tokens);
    gpt_free(&m);
}

// Default outputs are named after the training data's folder, so that a run on new
// data does not overwrite another's checkpoint.
static void test_output_names(void) {
    const char* data[] = {"data/tinyshakespeare/train.bin", "/tmp/x/wt103/train_*.bin", "train.bin", "a b/t.bin"};
    const char* want[] = {"log/gpt_tinyshakespeare_flow.bin", "log/gpt_wt103_flow.bin", "log/gpt_train_flow.bin",
                          "log/gpt_a_b_flow.bin"};
    for (int i = 0; i < 4; i++) {
        Run run;
        memset(&run, 0, sizeof run);
        run_outputs(&run, "", "log/gpt_{data}_{attention}.bin", 0, "flow", data[i]);
        char path[256];
        run_path(&run, path, sizeof path, run.ckpt_pattern, 7);
        check(strcmp(path, want[i]) == 0, "output names: train_data %s gives %s (want %s)", data[i], path, want[i]);
    }
}

// A prompt word outside a word vocabulary becomes <unk> with a warning; an id
// past the vocabulary file prints as <id>.
static void encode_unknown_word(void* unused) {
    char* words[] = {"<s>", "<pad>", "</s>", "<unk>", "the", "cat"};
    Vocab v = {6, words};
    int ids[8];
    int n = vocab_encode(&v, "the dog", ids, 8, "vocab.txt");
    printf("ids %d %d %d\n", n, ids[0], ids[1]);
    vocab_print_token(&v, 9, 1);
}
static void test_vocabulary_edges(void) {
    char out[1024];
    int status = run_captured(encode_unknown_word, NULL, out, sizeof out);
    check(status == 0 && strstr(out, "warning") && strstr(out, "\"dog\"") && strstr(out, "ids 2 4 3") &&
          strstr(out, "<9>"), "vocabulary: unknown prompt word warned about and mapped to <unk>, id 9 printed as <9>");
}

int main(void) {
    const char* refs[] = {"dev/ref/gpt_flow_learned.bin", "dev/ref/gpt_flow_sinusoidal.bin",
                          "dev/ref/gpt_softmax_learned.bin", "dev/ref/gpt_linear_sinusoidal.bin"};
    for (size_t i = 0; i < sizeof(refs) / sizeof(refs[0]); i++) test_reference(refs[i]);
    for (int kind = 0; kind < NUM_ATTENTION_KINDS; kind++) {
        test_generation(kind, 1);
        test_generation(kind, 0);
    }
    test_checkpoint();
    test_context_window(0);
    test_context_window(3);
    test_context_window(7);
    test_output_names();
    test_vocabulary_edges();
    return testing_exit_code();
}
