// The fused EGNN edge kernels compiled for the baseline instruction set of the build.
#include <math.h>
#include <omp.h>

#include "message_passing/mp_kernels.h"

namespace alk_mp {
namespace generic {
#include "message_passing/mp_impl.inc"
}  // namespace generic
}  // namespace alk_mp
