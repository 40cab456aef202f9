// The fused acquisition kernel built for AVX2 + FMA (run when the CPU has them).
#include <float.h>
#include <math.h>
#include <omp.h>

#include "acquisition/acquisition.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define ALK_BUILD_AVX2
#include "common/simd.h"
namespace alk::acq::avx2 {
#define ALK_ACQ_LANES 8
#include "acquisition/acq_impl.inc"
}  // namespace alk::acq::avx2
#pragma GCC pop_options
