/* common.h -- internal helpers shared by every kernel translation unit (not public). */
#ifndef FL_IMPL_COMMON_H
#define FL_IMPL_COMMON_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <math.h>

#include "fastlstm.h"

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

#endif
