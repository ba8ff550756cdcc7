// Tests of the fused layers against the unfused ones they replace, built once in
// float32 and once in float64 (-DREAL_DOUBLE; the Makefile's test_fused_f64):
//  - residual_layernorm_forward against residual_forward + layernorm_forward;
//  - layernorm_backward (one pass, blocked parameter sums) against the definition;
//  - bias_gelu_forward/backward against a bias add, gelu_forward/backward and
//    the bias gradient's column sums (matmul_backward's job when unfused);
//  - crossentropy_forward_backward against crossentropy_forward +
//    crossentropy_backward_inplace, and against the definition in float64, with
//    vocabularies around and across the chunk size; NaN logits give NaN losses;
//  - adamw_update_scaled against clip_grads + adamw_update; grad_norm;
//  - the parameter gradients and grad_norm are bitwise the same for 1, 2 and 3 threads.
#include <float.h>
#include <omp.h>
#include "layers/layernorm.h"
#include "layers/residual.h"
#include "layers/gelu.h"
#include "layers/crossentropy.h"
#include "layers/adamw.h"
#include "dev/test/testing.h"

#ifdef REAL_DOUBLE
#define TOL 1e-13 // fused against unfused: sums in another order, exps composed differently
#define REF_TOL 1e-13 // against the float64 definitions
#define REAL_EPSILON DBL_EPSILON
#else
#define TOL 1e-6
#define REF_TOL 3e-6
#define REAL_EPSILON FLT_EPSILON
#endif

static uint64_t rng = 88172645463325252ull;
static double randu(void) { // uniform in [0, 1)
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (rng >> 11) * (1.0 / 9007199254740992.0);
}

static real* random_array(long n, double scale, double offset) {
    real* x = (real*)malloc_check((size_t)n * sizeof(real));
    for (long i = 0; i < n; i++) x[i] = (real)(offset + scale * (2 * randu() - 1));
    return x;
}

static real* copy_array(const real* x, long n) {
    real* y = (real*)malloc_check((size_t)n * sizeof(real));
    memcpy(y, x, (size_t)n * sizeof(real));
    return y;
}

// max |a - b| / max(max |b|, 1e-30): the error relative to the size of the reference
static double err_real(const real* a, const real* b, long n) {
    double diff = 0, ref = 1e-30;
    for (long i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (!(e <= diff)) diff = e;
        if (fabs((double)b[i]) > ref) ref = fabs((double)b[i]);
    }
    return diff / ref;
}

static double err_ref(const real* a, const double* b, long n) {
    double diff = 0, ref = 1e-30;
    for (long i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (!(e <= diff)) diff = e;
        if (fabs(b[i]) > ref) ref = fabs(b[i]);
    }
    return diff / ref;
}

static int same(const real* a, const real* b, long n) { return memcmp(a, b, (size_t)n * sizeof(real)) == 0; }

static const int THREADS[] = {1, 2, 3};

// ---- residual + LayerNorm ----------------------------------------------------

static void test_residual_layernorm(int N, int C) {
    long n = (long)N * C;
    real *a = random_array(n, 1, 0.3), *b = random_array(n, 2, 0), *w = random_array(C, 1, 1),
         *bias = random_array(C, 0.5, 0);
    real *res = random_array(n, 1, 0), *out = random_array(n, 1, 0), *mean = random_array(N, 1, 0), *rstd = random_array(N, 1, 0);
    real *res_u = random_array(n, 1, 0), *out_u = random_array(n, 1, 0), *mean_u = random_array(N, 1, 0), *rstd_u = random_array(N, 1, 0);
    residual_forward(res_u, a, b, n);
    layernorm_forward(out_u, mean_u, rstd_u, res_u, w, bias, N, C, LAYERNORM_EPS);
    residual_layernorm_forward(res, out, mean, rstd, a, b, w, bias, N, C, LAYERNORM_EPS);
    check(same(res, res_u, n) && same(out, out_u, n) && same(mean, mean_u, N) && same(rstd, rstd_u, N),
          "%s residual_layernorm_forward N=%d C=%d: res, out, mean, rstd equal to residual + layernorm",
          REAL_NAME, N, C);
    // in place: the stream a becomes a + b
    real* stream = copy_array(a, n);
    residual_layernorm_forward(stream, out, mean, rstd, stream, b, w, bias, N, C, LAYERNORM_EPS);
    check(same(stream, res_u, n) && same(out, out_u, n),
          "%s residual_layernorm_forward N=%d C=%d in place (res = inp1)", REAL_NAME, N, C);
    free(a); free(b); free(w); free(bias); free(res); free(out); free(mean); free(rstd);
    free(res_u); free(out_u); free(mean_u); free(rstd_u); free(stream);
}

// LayerNorm's backward pass from its definition, in float64.
static void layernorm_backward_ref(double* dinp, double* dweight, double* dbias, const real* dout,
                                   const real* inp, const real* weight, int N, int C, double eps) {
    for (int n = 0; n < N; n++) {
        const real* x = inp + (long)n * C;
        const real* d = dout + (long)n * C;
        double m = 0, v = 0;
        for (int c = 0; c < C; c++) m += x[c];
        m /= C;
        for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
        double s = 1 / sqrt(v / C + eps), dmean = 0, dnorm = 0;
        for (int c = 0; c < C; c++) {
            dmean += weight[c] * d[c];
            dnorm += weight[c] * d[c] * (x[c] - m) * s;
        }
        dmean /= C;
        dnorm /= C;
        for (int c = 0; c < C; c++) {
            double xhat = (x[c] - m) * s;
            dinp[(long)n * C + c] += (weight[c] * d[c] - dmean - xhat * dnorm) * s;
            dweight[c] += xhat * d[c];
            dbias[c] += d[c];
        }
    }
}

static void test_layernorm_backward(int N, int C) {
    long n = (long)N * C;
    real *x = random_array(n, 1, 0.5), *w = random_array(C, 1, 1), *bias = random_array(C, 0.5, 0);
    real *dout = random_array(n, 1, 0), *out = random_array(n, 1, 0), *mean = random_array(N, 1, 0),
         *rstd = random_array(N, 1, 0);
    // accumulates: start from nonzero gradients
    real *dinp0 = random_array(n, 1, 0), *dw0 = random_array(C, 1, 0), *db0 = random_array(C, 1, 0);
    double *rdinp = (double*)malloc_check(n * sizeof(double)), *rdw = (double*)malloc_check(C * sizeof(double)),
           *rdb = (double*)malloc_check(C * sizeof(double));
    for (long i = 0; i < n; i++) rdinp[i] = dinp0[i];
    for (int c = 0; c < C; c++) { rdw[c] = dw0[c]; rdb[c] = db0[c]; }
    layernorm_forward(out, mean, rstd, x, w, bias, N, C, LAYERNORM_EPS);
    layernorm_backward_ref(rdinp, rdw, rdb, dout, x, w, N, C, LAYERNORM_EPS);
    real *dinp[3], *dw[3], *db[3];
    for (int t = 0; t < 3; t++) {
        dinp[t] = copy_array(dinp0, n); dw[t] = copy_array(dw0, C); db[t] = copy_array(db0, C);
        omp_set_num_threads(THREADS[t]);
        layernorm_backward(dinp[t], dw[t], db[t], dout, x, w, mean, rstd, N, C);
    }
    omp_set_num_threads(2);
    double e = fmax(err_ref(dinp[0], rdinp, n), fmax(err_ref(dw[0], rdw, C), err_ref(db[0], rdb, C)));
    check(e <= REF_TOL, "%s layernorm_backward N=%d C=%d against the definition: error %.2e (bound %.0e)",
          REAL_NAME, N, C, e, REF_TOL);
    int bitwise = 1;
    for (int t = 1; t < 3; t++) bitwise &= same(dinp[t], dinp[0], n) && same(dw[t], dw[0], C) && same(db[t], db[0], C);
    check(bitwise, "%s layernorm_backward N=%d C=%d: the same bits with 1, 2 and 3 threads", REAL_NAME, N, C);
    for (int t = 0; t < 3; t++) { free(dinp[t]); free(dw[t]); free(db[t]); }
    free(x); free(w); free(bias); free(dout); free(out); free(mean); free(rstd);
    free(dinp0); free(dw0); free(db0); free(rdinp); free(rdw); free(rdb);
}

// ---- bias + GELU ---------------------------------------------------------------

static void test_bias_gelu(int N, int C) {
    long n = (long)N * C;
    real *x = random_array(n, 4, 0), *bias = random_array(C, 1, 0), *dout = random_array(n, 1, 0);
    // unfused: the matmul adds the bias, GELU, then matmul_backward sums dpre's columns
    real* pre = (real*)malloc_check(n * sizeof(real));
    for (long i = 0; i < n; i++) pre[i] = x[i] + bias[i % C];
    real *out_u = random_array(n, 1, 0), *out = random_array(n, 1, 0);
    gelu_forward(out_u, pre, n);
    bias_gelu_forward(out, x, bias, N, C);
    double ef = err_real(out, out_u, n);
    check(ef <= TOL, "%s bias_gelu_forward N=%d C=%d against bias + gelu_forward: error %.2e (bound %.0e)",
          REAL_NAME, N, C, ef, TOL);

    real* dpre_u = (real*)calloc_check(n, sizeof(real));
    real* dbias0 = random_array(C, 1, 0);
    real* dbias_u = copy_array(dbias0, C);
    gelu_backward(dpre_u, pre, dout, n);
    for (int r = 0; r < N; r++)
        for (int c = 0; c < C; c++) dbias_u[c] += dpre_u[(long)r * C + c];
    real *dpre[3], *dbias[3];
    for (int t = 0; t < 3; t++) {
        dpre[t] = random_array(n, 1, 0); // overwritten, not accumulated
        dbias[t] = copy_array(dbias0, C);
        omp_set_num_threads(THREADS[t]);
        bias_gelu_backward(dpre[t], dbias[t], dout, x, bias, N, C);
    }
    omp_set_num_threads(2);
    double eb = fmax(err_real(dpre[0], dpre_u, n), err_real(dbias[0], dbias_u, C));
    check(eb <= TOL, "%s bias_gelu_backward N=%d C=%d against gelu_backward + column sums: error %.2e (bound %.0e)",
          REAL_NAME, N, C, eb, TOL);
    int bitwise = 1;
    for (int t = 1; t < 3; t++) bitwise &= same(dpre[t], dpre[0], n) && same(dbias[t], dbias[0], C);
    check(bitwise, "%s bias_gelu_backward N=%d C=%d: the same bits with 1, 2 and 3 threads", REAL_NAME, N, C);
    // in place: dinp = dout
    real* inplace = copy_array(dout, n);
    real* dbias_in = copy_array(dbias0, C);
    bias_gelu_backward(inplace, dbias_in, inplace, x, bias, N, C);
    check(same(inplace, dpre[0], n) && same(dbias_in, dbias[0], C),
          "%s bias_gelu_backward N=%d C=%d in place (dinp = dout)", REAL_NAME, N, C);
    for (int t = 0; t < 3; t++) { free(dpre[t]); free(dbias[t]); }
    free(x); free(bias); free(dout); free(pre); free(out_u); free(out); free(dpre_u); free(dbias0);
    free(dbias_u); free(inplace); free(dbias_in);
}

// ---- cross-entropy -------------------------------------------------------------

// Logits whose row maxima rise and fall across chunks (both branches of the
// running max), scaled so that most exps are far below the max.
static real* ce_logits(int N, int V, double scale) {
    real* l = (real*)malloc_check((size_t)N * V * sizeof(real));
    for (int n = 0; n < N; n++)
        for (int v = 0; v < V; v++)
            l[(long)n * V + v] = (real)(scale * (2 * randu() - 1) + 3 * sin(v * 0.0007 + n));
    return l;
}

// losses and gradient from the definition, in float64
static void ce_ref(double* losses, double* grad, const real* logits, const int* targets, double dloss, int N, int V) {
    for (int n = 0; n < N; n++) {
        const real* l = logits + (long)n * V;
        double m = l[0], sum = 0;
        for (int v = 1; v < V; v++) m = fmax(m, l[v]);
        for (int v = 0; v < V; v++) sum += exp(l[v] - m);
        double lse = m + log(sum);
        losses[n] = targets[n] >= 0 ? lse - l[targets[n]] : 0;
        for (int v = 0; v < V; v++)
            grad[(long)n * V + v] = targets[n] < 0 ? 0 : dloss * (exp(l[v] - lse) - (v == targets[n]));
    }
}

static void test_crossentropy(int N, int V, double scale) {
    long n = (long)N * V;
    real* logits = ce_logits(N, V, scale);
    int* targets = (int*)malloc_check(N * sizeof(int));
    for (int i = 0; i < N; i++) targets[i] = i % 4 == 1 ? -1 : i % 4 == 2 ? V - 1 : (int)(randu() * V);
    real dloss = (real)0.37;
    double* rloss = (double*)malloc_check(N * sizeof(double));
    double* rgrad = (double*)malloc_check(n * sizeof(double));
    ce_ref(rloss, rgrad, logits, targets, dloss, N, V);

    real *loss_u = (real*)malloc_check(N * sizeof(real)), *lse = (real*)malloc_check(N * sizeof(real));
    real* grad_u = copy_array(logits, n);
    crossentropy_forward(loss_u, lse, grad_u, targets, N, V);
    crossentropy_backward_inplace(grad_u, lse, targets, dloss, N, V);
    real* loss = (real*)malloc_check(N * sizeof(real));
    real* grad = copy_array(logits, n);
    crossentropy_forward_backward(loss, grad, targets, dloss, N, V);

    // the loss to TOL of its size (at least 1); the gradient to TOL of dloss
    double dl = 0, dg = 0;
    for (int i = 0; i < N; i++) dl = fmax(dl, fabs(loss[i] - loss_u[i]) / fmax(fabs(loss_u[i]), 1));
    for (long i = 0; i < n; i++) dg = fmax(dg, fabs(grad[i] - grad_u[i]) / dloss);
    check(dl <= TOL && dg <= TOL,
          "%s crossentropy_forward_backward N=%d V=%d against forward + backward_inplace: loss error %.2e, gradient error %.2e (bound %.0e)",
          REAL_NAME, N, V, dl, dg, TOL);
    // the loss to REF_TOL of its size (at least 1); the gradient to REF_TOL of dloss
    double el = 0, eg = 0;
    for (int i = 0; i < N; i++) el = fmax(el, fabs(loss[i] - rloss[i]) / fmax(fabs(rloss[i]), 1));
    for (long i = 0; i < n; i++) eg = fmax(eg, fabs(grad[i] - rgrad[i]) / dloss);
    int unscored_zero = 1;
    for (int i = 0; i < N; i++)
        if (targets[i] < 0) for (int v = 0; v < V; v++) unscored_zero &= grad[(long)i * V + v] == 0 && loss[i] == 0;
    check(el <= REF_TOL && eg <= REF_TOL && unscored_zero,
          "%s crossentropy N=%d V=%d scale %g against the definition: loss error %.2e, gradient error %.2e (bound %.0e), unscored rows zero",
          REAL_NAME, N, V, scale, el, eg, REF_TOL);
    free(logits); free(targets); free(rloss); free(rgrad); free(loss_u); free(lse); free(grad_u); free(loss); free(grad);
}

// A NaN logit makes its row's loss NaN (the trainers stop on a non-finite loss).
static void test_crossentropy_nan(void) {
    int V = 5000, targets[2] = {3, 3};
    real* l = ce_logits(2, V, 1);
    l[4000] = NAN;         // row 0, not the target, not the first of a chunk
    l[V + 2048] = NAN;     // row 1, the first of its second chunk
    real losses[2], lse[2], fused[2];
    crossentropy_forward(losses, lse, l, targets, 2, V);
    crossentropy_forward_backward(fused, l, targets, (real)0.1, 2, V);
    check(isnan(losses[0]) && isnan(losses[1]) && isnan(fused[0]) && isnan(fused[1]),
          "%s crossentropy: a NaN logit gives a NaN loss (forward %g, %g; forward_backward %g, %g)",
          REAL_NAME, losses[0], losses[1], fused[0], fused[1]);
    free(l);
}

// ---- AdamW and the gradient norm ---------------------------------------------

static void test_adamw(long N) {
    real *p0 = random_array(N, 1, 0), *g = random_array(N, 3, 0), *m0 = random_array(N, 0.1, 0),
         *v0 = random_array(N, 0.05, 0.05);
    double norm[3];
    for (int t = 0; t < 3; t++) {
        omp_set_num_threads(THREADS[t]);
        norm[t] = grad_norm(g, N);
    }
    omp_set_num_threads(2);
    double ref = 0;
    for (long i = 0; i < N; i++) ref += (double)g[i] * g[i];
    ref = sqrt(ref);
    check(norm[1] == norm[0] && norm[2] == norm[0] && fabs(norm[0] - ref) <= REF_TOL * ref,
          "%s grad_norm N=%ld: %.9g, the same bits with 1, 2 and 3 threads, error %.2e", REAL_NAME, N, norm[0],
          fabs(norm[0] - ref) / ref);
    double max_norm = norm[0] / 3; // clipping active
    real *p_u = copy_array(p0, N), *m_u = copy_array(m0, N), *v_u = copy_array(v0, N), *g_u = copy_array(g, N);
    clip_grads(g_u, N, norm[0], max_norm);
    adamw_update(p_u, g_u, m_u, v_u, N, (real)1e-3, (real)0.9, (real)0.99, (real)1e-8, (real)0.1, 7);
    real *p = copy_array(p0, N), *m = copy_array(m0, N), *v = copy_array(v0, N);
    adamw_update_scaled(p, g, m, v, N, (real)1e-3, (real)0.9, (real)0.99, (real)1e-8, (real)0.1, 7,
                        clip_scale(norm[0], max_norm));
    check(same(p, p_u, N) && same(m, m_u, N) && same(v, v_u, N),
          "%s adamw_update_scaled N=%ld: params, m, v equal to clip_grads + adamw_update", REAL_NAME, N);
    // against the formula in float64, each error relative to the sizes of the terms
    // it is computed from (m = b1 m + (1-b1) g can cancel to 0), the parameter's
    // plus its own rounding (REAL_EPSILON of it)
    double c1 = 1 - pow(0.9, 7), c2 = 1 - pow(0.99, 7), f = clip_scale(norm[0], max_norm), worst = 0;
    for (long i = 0; i < N; i++) {
        double gi = (double)g[i] * f, mi = 0.9 * m0[i] + 0.1 * gi, vi = 0.99 * v0[i] + 0.01 * gi * gi;
        double m_size = 0.9 * fabs(m0[i]) + 0.1 * fabs(gi), denom = sqrt(vi / c2) + 1e-8;
        double pi = p0[i] - 1e-3 * ((mi / c1) / denom + 0.1 * p0[i]);
        double step_size = 1e-3 * (m_size / c1 / denom + 0.1 * fabs(p0[i]));
        worst = fmax(worst, fabs(m[i] - mi) / m_size);
        worst = fmax(worst, fabs(v[i] - vi) / vi);
        worst = fmax(worst, (fabs(p[i] - pi) - REAL_EPSILON * fabs(pi)) / step_size);
    }
    check(worst <= REF_TOL, "%s adamw_update_scaled N=%ld against the formula in float64: error %.2e (bound %.0e)",
          REAL_NAME, N, worst, REF_TOL);
    check(clip_scale(1.0, 0) == 1 && clip_scale(1.0, 2.0) == 1 && clip_scale(4.0, 2.0) == (real)(2.0 / (4.0 + 1e-6)),
          "%s clip_scale: 1 without clipping or within the norm, max_norm / (norm + 1e-6) above", REAL_NAME);
    free(p0); free(g); free(m0); free(v0); free(p_u); free(m_u); free(v_u); free(g_u); free(p); free(m); free(v);
}

int main(void) {
    int shapes[][2] = {{1, 1}, {3, 5}, {33, 128}, {70, 384}, {100, 130}};
    for (int i = 0; i < 5; i++) {
        test_residual_layernorm(shapes[i][0], shapes[i][1]);
        test_layernorm_backward(shapes[i][0], shapes[i][1]);
        test_bias_gelu(shapes[i][0], shapes[i][1] * 4);
    }
    int vocabs[] = {1, 65, 2047, 2048, 2049, 5000};
    for (int i = 0; i < 6; i++) test_crossentropy(9, vocabs[i], 2.0);
    test_crossentropy(4, 5000, 60.0); // exps far below e^-87 are clamped
    test_crossentropy(3, 267744, 4.0);
    test_crossentropy_nan();
    test_adamw(1);
    test_adamw(100003);
    return testing_exit_code();
}
