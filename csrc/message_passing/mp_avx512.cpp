// The fused EGNN edge kernels compiled for AVX-512F (chosen at run time when the CPU has it).
#include <immintrin.h>
#include <math.h>
#include <omp.h>

#include "message_passing/mp_kernels.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx2,fma")
namespace alk_mp {
namespace avx512 {
#define ALK_VEC_BYTES 64
#define ALK_ROWS 8
#include "message_passing/mp_impl.inc"
}  // namespace avx512
}  // namespace alk_mp
#pragma GCC pop_options
