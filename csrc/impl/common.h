/* common.h -- internal helpers shared by every kernel translation unit (not public). */
#ifndef FL_IMPL_COMMON_H
#define FL_IMPL_COMMON_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <math.h>

#include "fastlstm.h"

/* The parallel kernels are built whenever the compiler's OpenMP is on (-fopenmp defines
 * _OPENMP), so compiling the sources with -fopenmp is all a build needs; FASTLSTM_NO_OPENMP
 * forces the serial kernels. */
#if defined(_OPENMP) && !defined(FASTLSTM_NO_OPENMP) && !defined(FASTLSTM_OPENMP)
#define FASTLSTM_OPENMP 1
#endif

#ifdef FASTLSTM_OPENMP
#include <omp.h>
#define FL_THREAD_ID() omp_get_thread_num()
#else
#define FL_THREAD_ID() 0
#endif

#define FL_PRAGMA(x) _Pragma(#x)
#ifdef FASTLSTM_OPENMP
#define FL_OMP(x) FL_PRAGMA(omp x)
#else
#define FL_OMP(x)
#endif
/* `omp simd` needs no runtime: with -fopenmp-simd it vectorises in the serial build too. */
#define FL_SIMD FL_PRAGMA(omp simd)

/* Flush denormals to zero for the duration of a kernel, per thread, and restore the caller's
 * mode after: denormal arithmetic deep in a long sequence can be ~20x slower, and changing the
 * mode process-wide (what -ffast-math does) would change every other library's floats too. */
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#include <immintrin.h> /* vec_math_body.h: min/max of whole vectors */
#define FL_FTZ_BEGIN unsigned int fl_saved_csr_ = _mm_getcsr(); _mm_setcsr(fl_saved_csr_ | 0x8040u);
#define FL_FTZ_END _mm_setcsr(fl_saved_csr_);
#else
#define FL_FTZ_BEGIN
#define FL_FTZ_END
#endif

#define FL_CAT2(a, b) a##_##b
#define FL_CAT(a, b) FL_CAT2(a, b)
#define FL_CAT3(a, b, c) FL_CAT(FL_CAT(a, b), c)

static inline int64_t fl_min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t fl_max64(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t fl_rup(int64_t a, int64_t m) { return (a + m - 1) / m * m; }
static inline int64_t fl_cdiv(int64_t a, int64_t m) { return (a + m - 1) / m; }

/* out[c*ldo + r] = in[r*ldi + c] for an 8x8 float block, in registers (GCC vector extensions:
 * the unpack / 2x2-block / 128-bit-lane steps of the classic AVX transpose). The two-vector
 * shuffle with constant lane indices is __builtin_shuffle on GCC (a mask vector) and
 * __builtin_shufflevector on clang (the indices as arguments); same lanes, same instructions. */
typedef float fl_v8sf __attribute__((vector_size(32), aligned(4)));
typedef int fl_v8si __attribute__((vector_size(32)));
#if defined(__clang__)
#define FL_SHUF8(a, b, i0, i1, i2, i3, i4, i5, i6, i7) \
    __builtin_shufflevector(a, b, i0, i1, i2, i3, i4, i5, i6, i7)
#else
#define FL_SHUF8(a, b, i0, i1, i2, i3, i4, i5, i6, i7) \
    __builtin_shuffle(a, b, (fl_v8si){i0, i1, i2, i3, i4, i5, i6, i7})
#endif
#define FL_UNPACKLO(a, b) FL_SHUF8(a, b, 0, 8, 1, 9, 4, 12, 5, 13)
#define FL_UNPACKHI(a, b) FL_SHUF8(a, b, 2, 10, 3, 11, 6, 14, 7, 15)
#define FL_PAIRLO(a, b) FL_SHUF8(a, b, 0, 1, 8, 9, 4, 5, 12, 13)
#define FL_PAIRHI(a, b) FL_SHUF8(a, b, 2, 3, 10, 11, 6, 7, 14, 15)
#define FL_LANELO(a, b) FL_SHUF8(a, b, 0, 1, 2, 3, 8, 9, 10, 11)
#define FL_LANEHI(a, b) FL_SHUF8(a, b, 4, 5, 6, 7, 12, 13, 14, 15)
static inline void fl_transpose8x8(const float *in, int64_t ldi, float *out, int64_t ldo) {
    fl_v8sf r0 = *(const fl_v8sf *)(in + 0 * ldi), r1 = *(const fl_v8sf *)(in + 1 * ldi);
    fl_v8sf r2 = *(const fl_v8sf *)(in + 2 * ldi), r3 = *(const fl_v8sf *)(in + 3 * ldi);
    fl_v8sf r4 = *(const fl_v8sf *)(in + 4 * ldi), r5 = *(const fl_v8sf *)(in + 5 * ldi);
    fl_v8sf r6 = *(const fl_v8sf *)(in + 6 * ldi), r7 = *(const fl_v8sf *)(in + 7 * ldi);
    fl_v8sf t0 = FL_UNPACKLO(r0, r1), t1 = FL_UNPACKHI(r0, r1);
    fl_v8sf t2 = FL_UNPACKLO(r2, r3), t3 = FL_UNPACKHI(r2, r3);
    fl_v8sf t4 = FL_UNPACKLO(r4, r5), t5 = FL_UNPACKHI(r4, r5);
    fl_v8sf t6 = FL_UNPACKLO(r6, r7), t7 = FL_UNPACKHI(r6, r7);
    fl_v8sf u0 = FL_PAIRLO(t0, t2), u1 = FL_PAIRHI(t0, t2);
    fl_v8sf u2 = FL_PAIRLO(t1, t3), u3 = FL_PAIRHI(t1, t3);
    fl_v8sf u4 = FL_PAIRLO(t4, t6), u5 = FL_PAIRHI(t4, t6);
    fl_v8sf u6 = FL_PAIRLO(t5, t7), u7 = FL_PAIRHI(t5, t7);
    *(fl_v8sf *)(out + 0 * ldo) = FL_LANELO(u0, u4);
    *(fl_v8sf *)(out + 1 * ldo) = FL_LANELO(u1, u5);
    *(fl_v8sf *)(out + 2 * ldo) = FL_LANELO(u2, u6);
    *(fl_v8sf *)(out + 3 * ldo) = FL_LANELO(u3, u7);
    *(fl_v8sf *)(out + 4 * ldo) = FL_LANEHI(u0, u4);
    *(fl_v8sf *)(out + 5 * ldo) = FL_LANEHI(u1, u5);
    *(fl_v8sf *)(out + 6 * ldo) = FL_LANEHI(u2, u6);
    *(fl_v8sf *)(out + 7 * ldo) = FL_LANEHI(u3, u7);
}

#endif
