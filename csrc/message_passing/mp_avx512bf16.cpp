// The fused EGNN edge kernels' precision='bf16' path on AVX512_BF16 (VDPBF16PS): mp_impl.inc's
// forward and backward with the native bf16 tile GEMMs of mp_bf16.inc. Run when the CPU has
// AVX512_BF16 and the widths are multiples of 32 (message_passing.cpp decides).
//
// setup.py compiles this file alone with -mavx512bf16 where the compiler takes the flag; the
// kernels below exist only then (__AVX512BF16__), else compiled() is false and precision='bf16'
// runs the other builds' emulation. Everything this file defines has internal linkage except the
// three entry points (mp_impl.inc instantiates no standard-library template), so none of its
// AVX-512 code can stand in for another build's.
#include <math.h>
#include <omp.h>

#include "message_passing/message_passing.h"

#if defined(__AVX512BF16__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512bf16,avx2,fma")
#define ALK_BUILD_AVX512
#include "common/simd.h"
namespace alk::mp::avx512bf16 {
#define ALK_VEC_BYTES 64
#define ALK_ROWS 8
#define ALK_MP_NATIVE_BF16
#include "message_passing/mp_impl.inc"
#include "message_passing/mp_bf16.inc"
}  // namespace alk::mp::avx512bf16
#pragma GCC pop_options
#else
#include <stdexcept>
namespace alk::mp::avx512bf16 {
bool compiled() { return false; }
void forward_bf16(const EdgeArgs<float>&, float*, float*, float*, int32_t*, int) {
  throw std::logic_error("the avx512bf16 build of the EGNN edge kernels was not compiled");
}
void backward_bf16(const EdgeArgs<float>&, const EdgeGrads<float>&, float*, float*, int32_t*, int) {
  throw std::logic_error("the avx512bf16 build of the EGNN edge kernels was not compiled");
}
}  // namespace alk::mp::avx512bf16
#endif
