/* activations.h -- sigmoid and tanh that the compiler can vectorise inside `omp simd` loops.
 *
 * float32: no libm calls (they would stop vectorisation). exp is Cephes' expf: range
 * reduction x = n*ln2 + r with |r| <= ln2/2, a degree-6 polynomial, and 2^n built in the
 * exponent bits; relative error ~1e-7. tanh uses Cephes' odd polynomial for |x| < 0.625
 * (where 1 - 2/(e^2x + 1) would cancel) and the exp form above it.
 * float64: libm's exp and tanh (accuracy first; the fast path is float32).
 * NaN inputs give NaN outputs: every clamp is written so that a NaN fails the comparison and
 * passes through. */
#ifndef FL_IMPL_ACTIVATIONS_H
#define FL_IMPL_ACTIVATIONS_H

#include <math.h>
#include <stdint.h>

static inline float fl_expf(float x) {
    x = x > 88.0f ? 88.0f : x;
    x = x < -87.0f ? -87.0f : x;
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    float nn = (n == n) ? n : 0.0f; /* NaN stays in p; keep the int conversion defined */
    union { int32_t i; float f; } scale;
    scale.i = ((int32_t)nn + 127) << 23;
    return p * scale.f;
}

static inline float fl_sigmoidf(float x) { return 1.0f / (1.0f + fl_expf(-x)); }

static inline float fl_tanhf(float x) {
    float ax = x < 0.0f ? -x : x;
    float z = x * x;
    float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z
                    + 1.33314422036e-1f) * z - 3.33332819422e-1f) * z * ax + ax;
    float big = 1.0f - 2.0f / (fl_expf(2.0f * ax) + 1.0f);
    float t = ax < 0.625f ? small : big;
    return x < 0.0f ? -t : t;
}

static inline double fl_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
static inline double fl_tanh(double x) { return tanh(x); }

#endif
