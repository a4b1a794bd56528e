/* The kernels compiled for AVX2 + FMA (chosen at run time by api.c when the CPU has them). */
#if defined(__x86_64__) && defined(__GNUC__)
#if defined(__clang__)
/* clang ignores `#pragma GCC target`: it applies the target to every function defined in the
 * region instead. The system headers come first, outside it (their intrinsics carry their
 * own targets). */
#include "impl/sys_headers.h"
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#endif
#define FL_ISA avx2
#define FL_VBYTES 32
#define FL_MR 6
#include "impl/kernels.inc.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
