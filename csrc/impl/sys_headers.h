/* sys_headers.h -- every system header the kernel bodies use, for the clang build of
 * kernels_avx2.c / kernels_avx512.c to include before `#pragma clang attribute push(target)`,
 * so that only fastlstm's own functions get the target attribute (common.h includes them
 * again, harmlessly). */
#ifndef FL_IMPL_SYS_HEADERS_H
#define FL_IMPL_SYS_HEADERS_H
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#if defined(_OPENMP) && !defined(FASTLSTM_NO_OPENMP) /* as common.h decides FASTLSTM_OPENMP */
#include <omp.h>
#endif
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#include <immintrin.h>
#endif
#endif
