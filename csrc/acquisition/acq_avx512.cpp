// The fused acquisition kernel built for AVX-512F (run when the CPU has it): 16 lanes per class
// loop, masked tail loads, and exp scaled by vscalefps.
#include <float.h>
#include <math.h>
#include <omp.h>

#include "acquisition/acquisition.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx2,fma")
#define ALK_BUILD_AVX512
#include "common/simd.h"
namespace alk::acq::avx512 {
#define ALK_ACQ_LANES 16
#include "acquisition/acq_impl.inc"
}  // namespace alk::acq::avx512
#pragma GCC pop_options
