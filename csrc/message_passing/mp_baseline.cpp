// The fused EGNN edge kernels built for the baseline instruction set of the build.
#include <math.h>
#include <omp.h>

#include "message_passing/message_passing.h"

#define ALK_BUILD_BASELINE
#include "common/simd.h"
namespace alk::mp::baseline {
#define ALK_VEC_BYTES 32
#define ALK_ROWS 4
#include "message_passing/mp_impl.inc"
}  // namespace alk::mp::baseline
