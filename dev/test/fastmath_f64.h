// layers/fastmath.h and GELU built in float64 (dev/test/fastmath_f64.c), where
// each function must be libm's own, or the formula with libm's tanh.
#ifndef DEV_TEST_FASTMATH_F64_H
#define DEV_TEST_FASTMATH_F64_H

double exp_fast_f64(double x);
double tanh_fast_f64(double x);
double sigmoid_fast_f64(double x);
double sqrt_fast_f64(double x);
double gelu_f64(double x);
double gelu_grad_f64(double x);

#endif
