// The fused acquisition kernel built for the baseline instruction set of the build.
#include <float.h>
#include <math.h>
#include <omp.h>

#include "acquisition/acquisition.h"

#define ALK_BUILD_BASELINE
#include "common/simd.h"
namespace alk::acq::baseline {
#define ALK_ACQ_LANES 8
#include "acquisition/acq_impl.inc"
}  // namespace alk::acq::baseline
