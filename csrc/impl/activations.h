/* activations.h -- sigmoid and tanh that the compiler can vectorise inside `omp simd` loops.
 *
 * float32: no libm calls (they would stop vectorisation): a rational tanh, and sigmoid from it.
 * float64: libm's exp and tanh (accuracy first; the fast path is float32).
 * NaN inputs give NaN outputs: every clamp is written so that a NaN fails the comparison and
 * passes through. */
#ifndef FL_IMPL_ACTIVATIONS_H
#define FL_IMPL_ACTIVATIONS_H

#include <math.h>
#include <stdint.h>

/* tanh as a rational function: an odd degree-13 numerator over an even degree-6 denominator
 * on [-7.9053, 7.9053] (beyond it tanh rounds to +-1 in float32), the minimax fit used by
 * Eigen. Max error 2.9e-7 relative (about 3 ulp), measured against float64 tanh at every
 * float in [1e-30, 10] (the function is odd). One division and no exp: about half the
 * instructions of the exp form, which matters because the LSTM step evaluates five of these
 * per hidden unit. vec_math_body.h has the same function on vectors.
 * (There is no special case for tiny x: p/q is x to within 1 ulp there. Under the kernels'
 * flush-to-zero mode |x| below ~2e-36 comes out as 0.) */
#define FL_TANHF_CLAMP 7.90531110763549805f
#define FL_TANHF_P6 -2.76076847742355e-16f
#define FL_TANHF_P5 2.00018790482477e-13f
#define FL_TANHF_P4 -8.60467152213735e-11f
#define FL_TANHF_P3 5.12229709037114e-08f
#define FL_TANHF_P2 1.48572235717979e-05f
#define FL_TANHF_P1 6.37261928875436e-04f
#define FL_TANHF_P0 4.89352455891786e-03f
#define FL_TANHF_Q3 1.19825839466702e-06f
#define FL_TANHF_Q2 1.18534705686654e-04f
#define FL_TANHF_Q1 2.26843463243900e-03f
#define FL_TANHF_Q0 4.89352518554385e-03f

/* p(x)/q(x) from the clamped x and its square; an expression, so that the scalar function and
 * the vector one (vec_math_body.h) share it and perform the same operations */
#define FL_TANHF_RATIONAL(xc, x2)                                                             \
    (((((((((x2) * FL_TANHF_P6 + FL_TANHF_P5) * (x2) + FL_TANHF_P4) * (x2) + FL_TANHF_P3) *     \
           (x2) + FL_TANHF_P2) * (x2) + FL_TANHF_P1) * (x2) + FL_TANHF_P0) * (xc)) /           \
     ((((x2) * FL_TANHF_Q3 + FL_TANHF_Q2) * (x2) + FL_TANHF_Q1) * (x2) + FL_TANHF_Q0))

static inline float fl_tanhf(float x) {
    float xc = x > FL_TANHF_CLAMP ? FL_TANHF_CLAMP : x;
    xc = xc < -FL_TANHF_CLAMP ? -FL_TANHF_CLAMP : xc;
    const float x2 = xc * xc;
    return FL_TANHF_RATIONAL(xc, x2);
}

/* sigmoid(x) = (1 + tanh(x/2)) / 2: absolute error below 3e-7; tiny outputs (x < -17)
 * come out as 0 rather than as their (irrelevant) float32 value. */
static inline float fl_sigmoidf(float x) { return 0.5f + 0.5f * fl_tanhf(0.5f * x); }

static inline double fl_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
static inline double fl_tanh(double x) { return tanh(x); }

#endif
