// The fused EGNN edge kernels compiled for the baseline instruction set of the build.
#include <math.h>
#include <omp.h>

#include "message_passing/mp_kernels.h"

namespace alk_mp {
namespace generic {
#define ALK_VEC_BYTES 32
#define ALK_ROWS 4
#include "message_passing/mp_impl.inc"
}  // namespace generic
}  // namespace alk_mp
