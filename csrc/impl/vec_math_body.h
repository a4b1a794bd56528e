/* vec_math_body.h -- fl_tanhf and fl_sigmoidf (activations.h) on whole vectors of VL floats;
 * included once per ISA, for float32 only, after gemm_body.h (which defines FN(vec)).
 *
 * Why not leave it to `omp simd` over the scalar functions? GCC splits the clamp into a path
 * where tanh is a constant and one where it is computed, and under the default
 * -ftrapping-math must then mask every division and FMA by lane: the LSTM epilogue measured
 * ~18 us per step of 64 rows that way and ~12 us written on vectors, with min/max for the
 * clamp. Each lane performs the scalar function's operations in the same order (the same
 * FMAs under -ffp-contract=fast), so a unit computed in a vector lane or in a scalar tail gets
 * the same bits: results never depend on how units were split across threads. */

typedef int32_t FN(ivec) __attribute__((vector_size(FL_VBYTES)));

static inline FN(vec) FN(vsplat)(float v) { return (FN(vec)){0} + v; }

/* min(c, max(-c, x)) with the scalar's NaN rule: a NaN x passes through. On x86, minps(a, b)
 * returns b unless a < b, which is exactly `x > c ? c : x` with a = c, b = x. */
static inline FN(vec) FN(vclamp)(FN(vec) x, float c) {
#if defined(__x86_64__) && FL_VBYTES == 64
    return (FN(vec))_mm512_max_ps(_mm512_set1_ps(-c), _mm512_min_ps(_mm512_set1_ps(c), (__m512)x));
#elif defined(__x86_64__) && FL_VBYTES == 32
    return (FN(vec))_mm256_max_ps(_mm256_set1_ps(-c), _mm256_min_ps(_mm256_set1_ps(c), (__m256)x));
#elif defined(__x86_64__) && FL_VBYTES == 16
    return (FN(vec))_mm_max_ps(_mm_set1_ps(-c), _mm_min_ps(_mm_set1_ps(c), (__m128)x));
#else
    const FN(vec) hi = FN(vsplat)(c), lo = FN(vsplat)(-c);
    FN(ivec) m = x > hi;
    x = (FN(vec))(((FN(ivec))x & ~m) | ((FN(ivec))hi & m));
    m = x < lo;
    return (FN(vec))(((FN(ivec))x & ~m) | ((FN(ivec))lo & m));
#endif
}

static inline FN(vec) FN(vtanh)(FN(vec) x) {
    const FN(vec) xc = FN(vclamp)(x, FL_TANHF_CLAMP), x2 = xc * xc;
    FN(vec) p = FN(vsplat)(FL_TANHF_P6);
    p = p * x2 + FL_TANHF_P5;
    p = p * x2 + FL_TANHF_P4;
    p = p * x2 + FL_TANHF_P3;
    p = p * x2 + FL_TANHF_P2;
    p = p * x2 + FL_TANHF_P1;
    p = p * x2 + FL_TANHF_P0;
    p = p * xc;
    FN(vec) q = FN(vsplat)(FL_TANHF_Q3);
    q = q * x2 + FL_TANHF_Q2;
    q = q * x2 + FL_TANHF_Q1;
    q = q * x2 + FL_TANHF_Q0;
    return p / q;
}

static inline FN(vec) FN(vsigmoid)(FN(vec) x) { return 0.5f + 0.5f * FN(vtanh)(0.5f * x); }
