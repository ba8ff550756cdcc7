// The floating-point type every layer computes in.
// Trainers and kernels are built in float32; tests rebuild the same code with
// -DREAL_DOUBLE to check backward passes by finite differences in float64.
#ifndef UTILS_REAL_H
#define UTILS_REAL_H

// tgmath.h makes exp, log, sqrt, tanh, fabs, fmax... pick the float or double
// version from their argument, so one source serves both precisions.
// Write constants as (real)0.5 so that they do not promote float to double.
#include <tgmath.h>
// tgmath.h brings complex.h, whose macro I (the imaginary unit) would take the
// name of Flow-Attention's incoming flow I.
#undef I

#ifdef REAL_DOUBLE
typedef double real;
#define REAL_NAME "float64"
#else
typedef float real;
#define REAL_NAME "float32"
#endif

static inline real sigmoidr(real x) { return (real)1 / ((real)1 + exp(-x)); }

#endif
