// The fused EGNN edge kernels built for AVX2 + FMA (run when the CPU has them).
#include <math.h>
#include <omp.h>

#include "message_passing/message_passing.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define ALK_BUILD_AVX2
#include "common/simd.h"
namespace alk::mp::avx2 {
#define ALK_VEC_BYTES 32
#define ALK_ROWS 4
#include "message_passing/mp_impl.inc"
}  // namespace alk::mp::avx2
#pragma GCC pop_options
