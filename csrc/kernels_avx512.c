/* The kernels compiled for AVX-512 (chosen at run time by api.c when the CPU has it). */
#if defined(__x86_64__) && defined(__GNUC__)
#if defined(__clang__)
/* as in kernels_avx2.c: clang's form of `#pragma GCC target`, system headers outside it */
#include "impl/sys_headers.h"
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")
#endif
#define FL_ISA avx512
#define FL_VBYTES 64
#define FL_MR 8
#include "impl/kernels.inc.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
