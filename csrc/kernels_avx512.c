/* The kernels compiled for AVX-512 (chosen at run time by api.c when the CPU has it). */
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")
#define FL_ISA avx512
#define FL_VBYTES 64
#define FL_MR 8
#include "impl/kernels.inc.h"
#endif
