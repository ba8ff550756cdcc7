// Error bounds of layers/fastmath.h's float32 approximations, measured in
// float64 against libm over the ranges a training step uses them on:
//  - each range by every k-th float in it (all binades, k odd so that the low
//    mantissa bits vary) and by points evenly spaced across it, plus its edges
//    (clamp points and their neighbours, -0, denormals, the largest floats, inf);
//  - the bounds asserted are the ones documented in fastmath.h;
//  - saturation and clamps give the documented values, NaN stays NaN;
//  - GELU (layers/gelu.h) forward and backward against a float64 reference;
//  - the float64 build of each function is libm's, bit for bit, and that of GELU
//    the formula (fastmath_f64.c).
#include <float.h>
#include <stdint.h>
#include "layers/gelu.h"
#include "dev/test/testing.h"
#include "dev/test/fastmath_f64.h"

// The bounds documented in layers/fastmath.h (relative unless named _ABS).
#define EXP_REL 8.6e-8
#define TANH_REL 3.0e-7
#define SIGMOID_REL 2.1e-7
#define SIGMOID_TAIL_ABS 1.65e-38 // x < -87: e^-87
#define SQRT_REL 8.9e-8
#define SQRT_DENORMAL_ABS 6.1e-21
// GELU (float32, tanh_fast) against the same formula in float64: error relative
// to max(|exact|, 1), since gelu(x) and gelu'(x) pass through 0 at finite x.
#define GELU_ERR 8.0e-7
#define GELU_GRAD_ERR 5.0e-6

#define TANH_CLAMP 7.90531110763549805f

static float exp_f(float x) { return exp_fast(x); }
static float tanh_f(float x) { return tanh_fast(x); }
static float sigmoid_f(float x) { return sigmoid_fast(x); }
static float sqrt_f(float x) { return sqrt_fast(x); }
static double sigmoid_exact(double x) { return 1.0 / (1.0 + exp(-x)); }

typedef struct {
    double worst; // largest error seen (NaN if any error was NaN)
    float at;     // where
    long points;
} Worst;

// Relative error if rel, else absolute. A NaN result counts as NaN error.
static void note(Worst* w, float x, float approx, double exact, int rel) {
    double e = fabs((double)approx - exact);
    if (rel) e = exact == 0 ? (approx == 0 ? 0 : INFINITY) : e / fabs(exact);
    if (!(e <= w->worst)) { w->worst = e; w->at = x; }
    w->points++;
}

static float from_bits(uint32_t u) { float x; memcpy(&x, &u, sizeof(x)); return x; }

// Floats numbered in order: -1e-45 is -1, +-0 is 0, 1e-45 is 1, ...
static int64_t float_index(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof(u));
    return u >> 31 ? -(int64_t)(u & 0x7fffffffu) : (int64_t)u;
}
static float index_float(int64_t k) { return k < 0 ? from_bits(0x80000000u | (uint32_t)-k) : from_bits((uint32_t)k); }

#define SCAN_POINTS (1 << 22)

// Largest error of f against exact over [lo, hi]: about SCAN_POINTS floats of
// the range taken every k-th in order (k odd), as many evenly spaced points
// (over +-FLT_MAX for an infinite end), and the edges in the range.
static Worst scan(float (*f)(float), double (*exact)(double), float lo, float hi, int rel,
                  const float* edges, int nedges) {
    Worst w = {0, 0, 0};
    int64_t k0 = float_index(lo), k1 = float_index(hi);
    int64_t stride = (k1 - k0) / SCAN_POINTS | 1;
    for (int64_t k = k0; k <= k1; k += stride) {
        float x = index_float(k);
        note(&w, x, f(x), exact(x), rel);
    }
    double a = isinf(lo) ? -FLT_MAX : lo, b = isinf(hi) ? FLT_MAX : hi;
    for (long i = 0; i <= SCAN_POINTS; i++) {
        float x = (float)(a + (b - a) * i / SCAN_POINTS);
        if (x >= lo && x <= hi) note(&w, x, f(x), exact(x), rel);
    }
    for (int i = 0; i < nedges; i++)
        if (edges[i] >= lo && edges[i] <= hi) note(&w, edges[i], f(edges[i]), exact(edges[i]), rel);
    return w;
}

static void check_bound(const char* name, Worst w, double bound, int rel) {
    check(w.worst <= bound, "%s: max %s error %.3e (%.2f ulp) at %.9g over %ld points, bound %.2g",
          name, rel ? "relative" : "absolute", w.worst, w.worst / ldexp(1, -23), w.at, w.points, bound);
}

// the float and its two neighbours
#define AROUND(x) nextafterf((x), -INFINITY), (x), nextafterf((x), INFINITY)

static void test_exp(void) {
    float edges[] = {AROUND(-87.0f), AROUND(88.0f), 0.0f, -0.0f, FLT_MIN, -FLT_MIN,
                     1e-45f, -1e-45f, AROUND(-0.34657359f), AROUND(0.34657359f)};
    int ne = sizeof(edges) / sizeof(edges[0]);
    // the softmax's arguments: logit minus the row's max
    check_bound("exp_fast on [-87, 0]", scan(exp_f, exp, -87.0f, 0.0f, 1, edges, ne), EXP_REL, 1);
    check_bound("exp_fast on [-87, 88]", scan(exp_f, exp, -87.0f, 88.0f, 1, edges, ne), EXP_REL, 1);
    check(exp_fast(-1000.0f) == exp_fast(-87.0f) && exp_fast(-INFINITY) == exp_fast(-87.0f),
          "exp_fast below -87 is e^-87 (%g at -inf)", exp_fast(-INFINITY));
    check(exp_fast(1000.0f) == exp_fast(88.0f) && exp_fast(INFINITY) == exp_fast(88.0f) && isfinite(exp_fast(INFINITY)),
          "exp_fast above 88 is e^88 (%g at +inf)", exp_fast(INFINITY));
    check(exp_fast(0.0f) == 1.0f && exp_fast(-0.0f) == 1.0f, "exp_fast(+-0) = 1");
    check(isnan(exp_fast(NAN)), "exp_fast(NaN) is NaN");
}

static void test_tanh(void) {
    float c = TANH_CLAMP;
    float edges[] = {0.0f, -0.0f, 1e-45f, -1e-45f, FLT_MIN, -FLT_MIN, 1e-4f, -1e-4f,
                     AROUND(c), AROUND(-c), 9.01f, -9.01f, FLT_MAX, -FLT_MAX, INFINITY, -INFINITY};
    int ne = sizeof(edges) / sizeof(edges[0]);
    check_bound("tanh_fast on all floats", scan(tanh_f, tanh, -INFINITY, INFINITY, 1, edges, ne), TANH_REL, 1);
    check_bound("tanh_fast on [-10, 10]", scan(tanh_f, tanh, -10.0f, 10.0f, 1, edges, ne), TANH_REL, 1);
    float beyond = nextafterf(c, INFINITY);
    check(tanh_fast(beyond) == 1.0f && tanh_fast(-beyond) == -1.0f && tanh_fast(1e30f) == 1.0f &&
          tanh_fast(INFINITY) == 1.0f && tanh_fast(-INFINITY) == -1.0f,
          "tanh_fast is exactly +-1 beyond +-%.9g", c);
    check(tanh_fast(-0.0f) == 0.0f && signbit(tanh_fast(-0.0f)) && tanh_fast(1e-45f) == 1e-45f,
          "tanh_fast keeps -0 and the smallest denormal");
    check(isnan(tanh_fast(NAN)), "tanh_fast(NaN) is NaN");
}

static void test_sigmoid(void) {
    float edges[] = {0.0f, -0.0f, 1e-45f, -1e-45f, AROUND(-87.0f), AROUND(87.0f), AROUND(-88.0f),
                     AROUND(88.0f), -104.0f, 17.0f, FLT_MAX, -FLT_MAX, INFINITY, -INFINITY};
    int ne = sizeof(edges) / sizeof(edges[0]);
    check_bound("sigmoid_fast on [-87, inf]", scan(sigmoid_f, sigmoid_exact, -87.0f, INFINITY, 1, edges, ne), SIGMOID_REL, 1);
    check_bound("sigmoid_fast on [-30, 30]", scan(sigmoid_f, sigmoid_exact, -30.0f, 30.0f, 1, edges, ne), SIGMOID_REL, 1);
    check_bound("sigmoid_fast on [-inf, -87]", scan(sigmoid_f, sigmoid_exact, -INFINITY, -87.0f, 0, edges, ne), SIGMOID_TAIL_ABS, 0);
    check(sigmoid_fast(0.0f) == 0.5f && sigmoid_fast(-0.0f) == 0.5f && sigmoid_fast(INFINITY) == 1.0f &&
          sigmoid_fast(-INFINITY) >= 0 && sigmoid_fast(-INFINITY) <= SIGMOID_TAIL_ABS,
          "sigmoid_fast(+-0) = 0.5, (+inf) = 1, (-inf) = %g", sigmoid_fast(-INFINITY));
    check(isnan(sigmoid_fast(NAN)), "sigmoid_fast(NaN) is NaN");
}

static void test_sqrt(void) {
    float edges[] = {0.0f, 1e-45f, AROUND(FLT_MIN), 1.0f, 2.0f, 4.0f, nextafterf(1.0f, 0), FLT_MAX};
    int ne = sizeof(edges) / sizeof(edges[0]);
    check_bound("sqrt_fast on normal floats", scan(sqrt_f, sqrt, FLT_MIN, FLT_MAX, 1, edges, ne), SQRT_REL, 1);
    check_bound("sqrt_fast on [FLT_MIN, 1]", scan(sqrt_f, sqrt, FLT_MIN, 1.0f, 1, edges, ne), SQRT_REL, 1);
    check_bound("sqrt_fast on denormals", scan(sqrt_f, sqrt, 0.0f, FLT_MIN, 0, edges, ne), SQRT_DENORMAL_ABS, 0);
    check(sqrt_fast(0.0f) == 0.0f && sqrt_fast(-0.0f) == 0.0f && sqrt_fast(4.0f) == 2.0f,
          "sqrt_fast(0) = 0, sqrt_fast(4) = 2");
    check(isnan(sqrt_fast(NAN)), "sqrt_fast(NaN) is NaN");
}

// The float64 build must be libm itself: bit for bit on float and double arguments.
static void test_float64_exact(void) {
    long bad = 0, n = 0;
    uint64_t s = 88172645463325252ull;
    for (int i = 0; i < 200000; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        double x = i % 2 ? (double)from_bits((uint32_t)s) : ldexp((double)(s >> 11) / 9007199254740992.0 - 0.5, (int)(s % 20));
        if (isnan(x)) continue;
        n++;
        double y = fabs(x);
        if (memcmp(&(double){exp_fast_f64(x)}, &(double){exp(x)}, sizeof(double)) != 0 ||
            memcmp(&(double){tanh_fast_f64(x)}, &(double){tanh(x)}, sizeof(double)) != 0 ||
            memcmp(&(double){sigmoid_fast_f64(x)}, &(double){1.0 / (1.0 + exp(-x))}, sizeof(double)) != 0 ||
            memcmp(&(double){sqrt_fast_f64(y)}, &(double){sqrt(y)}, sizeof(double)) != 0)
            bad++;
    }
    check(bad == 0, "float64 build: exp_fast, tanh_fast, sigmoid_fast, sqrt_fast are libm's on %ld arguments (%ld differ)", n, bad);
}

static double gelu_exact(double x) {
    return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}
static double gelu_grad_exact(double x) {
    double th = tanh(0.7978845608028654 * (x + 0.044715 * x * x * x));
    double du = 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * x * x);
    return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du;
}

// gelu_forward and gelu_backward (the vectorised loops) against float64, on
// [-12, 12] (a few million floats taken in order, as many evenly spaced points)
// and large magnitudes.
static void test_gelu(void) {
    long n = 0, cap = 2 * SCAN_POINTS + 64;
    float* x = (float*)malloc_check(cap * sizeof(float));
    int64_t k0 = float_index(-12.0f), k1 = float_index(12.0f), stride = (k1 - k0) / SCAN_POINTS | 1;
    for (int64_t k = k0; k <= k1; k += stride) x[n++] = index_float(k);
    for (long i = 0; i <= SCAN_POINTS; i++) x[n++] = -12.0f + 24.0f * (float)i / SCAN_POINTS;
    float big[] = {-1e18f, -1000.0f, -100.0f, -13.0f, 13.0f, 100.0f, 1000.0f, 1e18f, -0.0f, 1e-45f};
    for (int i = 0; i < 10; i++) x[n++] = big[i];
    float* out = (float*)malloc_check(n * sizeof(float));
    float* ones = (float*)malloc_check(n * sizeof(float));
    float* grad = (float*)calloc_check(n, sizeof(float));
    for (long i = 0; i < n; i++) ones[i] = 1.0f;
    gelu_forward(out, x, n);
    gelu_backward(grad, x, ones, n);
    Worst wf = {0, 0, n}, wb = {0, 0, n};
    for (long i = 0; i < n; i++) {
        double ef = gelu_exact(x[i]), eb = gelu_grad_exact(x[i]);
        double df = fabs(out[i] - ef) / fmax(fabs(ef), 1.0), db = fabs(grad[i] - eb) / fmax(fabs(eb), 1.0);
        if (!(df <= wf.worst)) { wf.worst = df; wf.at = x[i]; }
        if (!(db <= wb.worst)) { wb.worst = db; wb.at = x[i]; }
    }
    check(wf.worst <= GELU_ERR, "gelu_forward: max error %.3e (relative to max(|gelu|, 1)) at %.9g over %ld points, bound %.2g",
          wf.worst, wf.at, n, GELU_ERR);
    check(wb.worst <= GELU_GRAD_ERR, "gelu_backward: max error %.3e (relative to max(|gelu'|, 1)) at %.9g over %ld points, bound %.2g",
          wb.worst, wb.at, n, GELU_GRAD_ERR);
    // the float64 build is the formula itself, to rounding
    double e64 = 0;
    for (long i = 0; i < n; i++) {
        e64 = fmax(e64, fabs(gelu_f64(x[i]) - gelu_exact(x[i])) / fmax(fabs(gelu_exact(x[i])), 1.0));
        e64 = fmax(e64, fabs(gelu_grad_f64(x[i]) - gelu_grad_exact(x[i])) / fmax(fabs(gelu_grad_exact(x[i])), 1.0));
    }
    check(e64 <= 1e-15, "float64 build: gelu and gelu_grad against the formula: max error %.2e (bound 1e-15)", e64);
    free(x); free(out); free(ones); free(grad);
}

int main(void) {
    test_exp();
    test_tanh();
    test_sigmoid();
    test_sqrt();
    test_float64_exact();
    test_gelu();
    return testing_exit_code();
}
