/* The kernels compiled for AVX2 + FMA (chosen at run time by api.c when the CPU has them). */
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx2,fma")
#define FL_ISA avx2
#define FL_VBYTES 32
#define FL_MR 6
#include "impl/kernels.inc.h"
#endif
