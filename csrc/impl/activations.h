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
 * Eigen. Max error 4e-7 relative (about 3 ulp), measured against float64 tanh on a dense
 * grid; |x| < 4e-4 returns x, which is tanh(x) to float32 precision. One division and no
 * exp: about half the instructions of the exp form, which matters because the LSTM step
 * evaluates five of these per hidden unit. */
static inline float fl_tanhf(float x) {
    float xc = x > 7.90531110763549805f ? 7.90531110763549805f : x;
    xc = xc < -7.90531110763549805f ? -7.90531110763549805f : xc;
    float x2 = xc * xc;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 + -8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    p = p * xc;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    float ax = x < 0.0f ? -x : x;
    return ax < 0.0004f ? x : p / q;
}

/* sigmoid(x) = (1 + tanh(x/2)) / 2: absolute error below 3e-7; tiny outputs (x < -17)
 * come out as 0 rather than as their (irrelevant) float32 value. */
static inline float fl_sigmoidf(float x) { return 0.5f + 0.5f * fl_tanhf(0.5f * x); }

static inline double fl_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
static inline double fl_tanh(double x) { return tanh(x); }

#endif
