/* vec_math_body.h -- fl_tanhf and fl_sigmoidf (activations.h) on whole vectors of VL floats;
 * included once per ISA, for float32 only, after gemm_body.h (which defines FN(vec)).
 *
 * Why not leave it to `omp simd` over the scalar functions? GCC splits the clamp into a path
 * where tanh is a constant and one where it is computed, and under the default
 * -ftrapping-math must then mask every division and FMA by lane: the LSTM epilogue measured
 * ~18 us per step of 64 rows that way and ~12 us written on vectors, with min/max for the
 * clamp. tanh itself is one expression for both forms (FL_TANHF_RATIONAL), but the code
 * around it may be contracted into FMAs differently in a scalar loop: where units are split
 * across threads (the LSTM forward) the tail runs through the vector code on padded copies,
 * so a unit's bits never depend on its lane; elsewhere a row is not split, or split at
 * multiples of NR (the LSTM backward), so the same units always take the scalar tail. */

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
    return FL_TANHF_RATIONAL(xc, x2);
}

static inline FN(vec) FN(vsigmoid)(FN(vec) x) { return 0.5f + 0.5f * FN(vtanh)(0.5f * x); }
