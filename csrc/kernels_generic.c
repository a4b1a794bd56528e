/* The kernels for the compiler's baseline target (SSE2 on x86-64, NEON on aarch64): the
 * fallback that runs everywhere. */
#define FL_ISA generic
#define FL_VBYTES 16
#define FL_MR 4
#include "impl/kernels.inc.h"
