// The fused EGNN edge kernels compiled for AVX2 + FMA (chosen at run time when the CPU has them).
#include <math.h>
#include <omp.h>

#include "message_passing/mp_kernels.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace alk_mp {
namespace avx2 {
#define ALK_VEC_BYTES 32
#define ALK_ROWS 4
#include "message_passing/mp_impl.inc"
}  // namespace avx2
}  // namespace alk_mp
#pragma GCC pop_options
