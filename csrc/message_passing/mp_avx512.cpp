// The fused EGNN edge kernels built for AVX-512F (run when the CPU has it and the widths are multiples of 32).
#include <math.h>
#include <omp.h>

#include "message_passing/message_passing.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx2,fma")
#define ALK_BUILD_AVX512
#include "common/simd.h"
namespace alk::mp::avx512 {
#define ALK_VEC_BYTES 64
#define ALK_ROWS 8
#include "message_passing/mp_impl.inc"
}  // namespace alk::mp::avx512
#pragma GCC pop_options
