// Tests of train_vit_flow.c's model and its new layers in float32 (built with
// -DTESTING, so its main() is left out):
//  - against the PyTorch reference (dev/vit_reference.py -> dev/ref/vit_*.bin):
//    logits, loss, every gradient, and the losses of 6 AdamW steps with clipping,
//    to 1e-4 (plain ViT with class token, with mean pooling; hierarchical model)
//  - a checkpoint written and read back restores every number and the run state
//  - augmentation: crops with padding and flips move the right pixels, the
//    centre crop is torchvision's; cutmix's lambda is the pasted area; mixed
//    targets stay distributions
#include <unistd.h>
#include "train_vit_flow.c"
#include "dev/test/testing.h"

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

static void test_reference(const char* path) {
    FILE* f = fopen(path, "rb");
    if (f == NULL) { check(0, "reference %s: cannot open (run dev/vit_reference.py)", path); return; }
    int32_t h[32];
    float s[16];
    fread_check(h, sizeof(int32_t), 32, f, path);
    fread_check(s, sizeof(float), 16, f, path);
    if (h[0] != 20250303 || h[1] != 1) { check(0, "reference %s: bad magic", path); fclose(f); return; }
    ViTConfig c;
    memset(&c, 0, sizeof(c));
    c.S = h[2]; c.Cin = h[3]; c.K = h[4]; c.P = h[5]; c.nstages = h[6];
    for (int i = 0; i < MAX_STAGES; i++) {
        c.dims[i] = h[7 + i]; c.depths[i] = h[11 + i]; c.heads[i] = h[15 + i]; c.ffn[i] = h[19 + i];
    }
    const char* kinds[] = {"flow", "softmax", "linear"}; // the references' numbering
    c.attention = attention_kind(kinds[h[23]]);
    c.cls = h[24];
    c.layerscale_attn = h[25];
    int B = h[26], steps = h[28], K = c.K;
    c.clamp = s[0];
    c.layerscale = s[1];
    c.ln_eps = (real)1e-5; // as dev/vit_reference.py
    ViT m;
    vit_build(&m, &c);
    check(m.params.count == h[27], "reference %s: %ld parameters (PyTorch %d)", path, m.params.count, h[27]);
    if (m.params.count != h[27]) { fclose(f); vit_free(&m); return; }
    long n = m.params.count, npix = (long)B * c.S * c.S * c.Cin;
    float* buf = (float*)malloc_check(sizeof(float) * (size_t)(n > npix ? n : npix));
    fread_check(buf, sizeof(float), (size_t)n, f, path);
    for (long i = 0; i < n; i++) m.params.params[i] = buf[i];
    real* images = (real*)malloc_check(sizeof(real) * (size_t)npix);
    fread_check(buf, sizeof(float), (size_t)npix, f, path);
    for (long i = 0; i < npix; i++) images[i] = buf[i];
    real targets[64 * 64];
    fread_check(buf, sizeof(float), (size_t)B * K, f, path);
    for (long i = 0; i < (long)B * K; i++) targets[i] = buf[i];

    double loss = vit_forward(&m, images, targets, B);
    fread_check(buf, sizeof(float), (size_t)B * K, f, path);
    double e_logits = rel_to_max(m.logits, buf, (long)B * K, 1e-3);
    check(e_logits < 1e-4, "reference %s: logits rel err %.1e", path, e_logits);
    float ref_loss;
    fread_check(&ref_loss, sizeof(float), 1, f, path);
    double e_loss = fabs(loss - ref_loss) / fabs(ref_loss);
    check(e_loss < 1e-4, "reference %s: loss %.6f vs %.6f, rel err %.1e", path, loss, ref_loss, e_loss);

    params_zero_grad(&m.params);
    vit_backward(&m, (real)1 / B);
    fread_check(buf, sizeof(float), (size_t)n, f, path);
    double e_grad = 0;
    const char* worst = "";
    for (int t = 0; t < m.params.ntensors; t++) {
        const TensorInfo* ti = &m.params.tensors[t];
        if (ti->size == 0) continue;
        double e = rel_to_max(m.params.grads + ti->offset, buf + ti->offset, ti->size, 1e-3);
        if (e > e_grad) { e_grad = e; worst = ti->name; }
    }
    check(e_grad < 1e-4, "reference %s: gradients rel err %.1e (worst %s)", path, e_grad, worst);

    float ref_losses[64];
    fread_check(ref_losses, sizeof(float), (size_t)steps, f, path);
    fclose(f);
    double e_steps = 0;
    AdamW opt = {0.9, 0.999, 1e-8, s[3], s[4]};
    for (int step = 0; step < steps; step++) {
        params_zero_grad(&m.params);
        double l = vit_forward(&m, images, targets, B);
        vit_backward(&m, (real)1 / B);
        adamw_step(&m.params, &opt, s[2], l, step + 1);
        double e = fabs(l - ref_losses[step]) / fabs(ref_losses[step]);
        if (e > e_steps) e_steps = e;
    }
    check(e_steps < 1e-4, "reference %s: %d AdamW steps, losses rel err %.1e (last %.5f)", path, steps, e_steps,
          ref_losses[steps - 1]);
    free(buf);
    free(images);
    vit_free(&m);
}

// A model saved with its AdamW moments and run state comes back identical.
static void test_checkpoint(void) {
    ViTConfig c;
    memset(&c, 0, sizeof(c));
    c.S = 8; c.Cin = 1; c.K = 4; c.P = 2; c.nstages = 2;
    c.dims[0] = 8; c.dims[1] = 16; c.depths[0] = 1; c.depths[1] = 1;
    c.heads[0] = 2; c.heads[1] = 2; c.ffn[0] = 16; c.ffn[1] = 32;
    c.attention = attention_kind("flow"); c.clamp = 1; c.layerscale = (real)1e-5; c.ln_eps = (real)1e-6;
    c.init_std = 0.02;
    ViT a, b;
    vit_build(&a, &c);
    vit_build(&b, &c);
    Rng rng = rng_make(3);
    vit_init(&a, &rng);
    Parameters *A = &a.params, *Bp = &b.params;
    for (long i = 0; i < A->count; i++) {
        A->m[i] = (real)rng_normal(&rng);
        A->v[i] = (real)rng_uniform(&rng);
    }
    char path[] = "/tmp/test_vit_ckpt_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    CheckpointInfo info = {A->count, 17, 12345, 0xabcdef, (char*)"{\"dims\":\"8,16\"}"};
    checkpoint_save(path, &info, A->params, A->m, A->v);
    CheckpointInfo got;
    FILE* f = checkpoint_open(path, &got);
    checkpoint_read_tensors(f, path, Bp->count, Bp->params, Bp->m, Bp->v);
    size_t bytes = (size_t)A->count * sizeof(real);
    int same = memcmp(A->params, Bp->params, bytes) == 0 && memcmp(A->m, Bp->m, bytes) == 0 &&
               memcmp(A->v, Bp->v, bytes) == 0;
    check(same && got.step == 17 && got.data_pos == 12345 && got.rng_state == 0xabcdef &&
          strcmp(got.config_json, info.config_json) == 0 && got.num_params == A->count,
          "checkpoint round trip: %ld parameters, moments, step, data position, rng, config", A->count);
    free(got.config_json);
    unlink(path);
    vit_free(&a);
    vit_free(&b);
}

static void test_augment(void) {
    // a 4x5 two-channel image with pixel (y, x, c) = 10y + 2x + c
    enum { H = 4, W = 5, C = 2 };
    uint8_t img[H * W * C];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < C; c++) img[(y * W + x) * C + c] = (uint8_t)(10 * y + 2 * x + c);
    real mean[2] = {0, (real)0.5}, std[2] = {(real)(1.0 / 255), (real)(2.0 / 255)};
    real out[3 * 3 * C];
    // window at (-1, 2) of side 3, mirrored: row y reads source row y-1, column x reads 4-x
    augment_crop(out, img, H, W, C, 3, -1, 2, 1, mean, std);
    int ok = 1;
    for (int y = 0; y < 3; y++) {
        for (int x = 0; x < 3; x++) {
            int sy = y - 1, sx = 2 + (2 - x);
            for (int c = 0; c < C; c++) {
                double v = sy >= 0 && sx < W ? 10 * sy + 2 * sx + c : 0;
                double want = c == 0 ? v : (v / 255 - 0.5) / (2.0 / 255);
                if (fabs(out[(y * 3 + x) * C + c] - want) > 1e-3) ok = 0;
            }
        }
    }
    check(ok, "augment: padded, flipped crop reads the right pixels and normalises per channel");
    int y0, x0;
    augment_center_offsets(256, 300, 224, &y0, &x0);
    check(y0 == 16 && x0 == 38, "augment: centre crop of 224 in 256x300 at (%d, %d), torchvision's (16, 38)", y0, x0);
    Rng rng = rng_make(5);
    int lo = 99, hi = -99;
    for (int i = 0; i < 2000; i++) {
        augment_random_offsets(&rng, 28, 28, 28, 2, &y0, &x0);
        lo = y0 < lo ? y0 : lo;
        hi = y0 > hi ? y0 : hi;
    }
    check(lo == -2 && hi == 2, "augment: random crops with padding 2 start in [-2, 2] (saw [%d, %d])", lo, hi);

    // cutmix on 4 images of 8x8x1: image b is all b, so the pasted area is visible
    enum { B = 4, S = 8, K = 3 };
    real images[B * S * S], targets[B * K], copy[B * S * S + B * K];
    int labels[B] = {0, 1, 2, 1};
    for (int b = 0; b < B; b++) for (int i = 0; i < S * S; i++) images[b * S * S + i] = (real)b;
    soft_targets_from_labels(targets, labels, (real)0.1, B, K);
    double lam = augment_mix(&rng, images, targets, copy, B, S, 1, K, 0.6, 1);
    int kept = 0;
    for (int i = 0; i < S * S; i++) kept += images[i] == 0;
    double sum = 0;
    for (int k = 0; k < K; k++) sum += targets[k];
    check(fabs(lam - kept / 64.0) < 1e-12 && fabs(sum - 1) < 1e-6 &&
          fabs(targets[0] - (lam * (0.9 + 0.1 / 3) + (1 - lam) * 0.1 / 3)) < 1e-6,
          "cutmix: lambda %.4f is the kept area %d/64, targets mixed by it", lam, kept);
    for (int b = 0; b < B; b++) for (int i = 0; i < S * S; i++) images[b * S * S + i] = (real)b;
    augment_mix(&rng, images, targets, copy, B, S, 1, K, 0.25, 0);
    check(fabs(images[0] - 0.75 * 3) < 1e-6 && fabs(images[S * S] - (0.25 * 1 + 0.75 * 2)) < 1e-6,
          "mixup: image 0 = 0.25 x0 + 0.75 x3 (%.3f)", (double)images[0]);
    double bs = 0;
    for (int i = 0; i < 20000; i++) bs += rng_beta(&rng, 0.8);
    check(fabs(bs / 20000 - 0.5) < 0.01, "Beta(0.8, 0.8) draws have mean %.4f (0.5)", bs / 20000);
}

int main(void) {
    const char* refs[] = {"dev/ref/vit_plain_cls_flow.bin", "dev/ref/vit_plain_mean_softmax.bin",
                          "dev/ref/vit_hier_flow.bin"};
    for (size_t i = 0; i < sizeof(refs) / sizeof(refs[0]); i++) test_reference(refs[i]);
    test_checkpoint();
    test_augment();
    return testing_exit_code();
}
