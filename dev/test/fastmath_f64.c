// layers/fastmath.h and layers/gelu.h in float64, for dev/test/test_fastmath.c.
#include "layers/gelu.h"
#include "dev/test/fastmath_f64.h"

double exp_fast_f64(double x) { return exp_fast(x); }
double tanh_fast_f64(double x) { return tanh_fast(x); }
double sigmoid_fast_f64(double x) { return sigmoid_fast(x); }
double sqrt_fast_f64(double x) { return sqrt_fast(x); }
double gelu_f64(double x) { return gelu(x); }
double gelu_grad_f64(double x) { return gelu_grad(x); }
