// Run-time choice of the instruction set for the fused EGNN edge kernels, and their scratch.
#include <omp.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "message_passing/message_passing.h"

namespace alk::mp {

namespace {

// The build to run for the request. The AVX-512 kernels' weight-gradient GEMMs use 2 x 16-float
// register blocks, so they serve widths that are multiples of 32 only.
// With Precision::kBf16 the native avx512bf16 build (same width rule, and only where it was
// compiled) comes first; the others then emulate bf16.
template <typename T>
Isa pick_isa(const EdgeArgs<T>& a, int64_t F, Isa requested, Precision precision = Precision::kFp32) {
  if (a.H % 32 == 0 && a.C % 32 == 0 && F % 32 == 0) {
    if (precision == Precision::kBf16 && avx512bf16::compiled())
      return select_isa(requested, {Isa::kAvx512Bf16, Isa::kAvx512, Isa::kAvx2, Isa::kBaseline},
                        "message_passing (bf16)");
    return select_isa(requested, {Isa::kAvx512, Isa::kAvx2, Isa::kBaseline}, "message_passing");
  }
  return select_isa(requested, {Isa::kAvx2, Isa::kBaseline}, "message_passing");
}

// Precision::kBf16 takes float32 inputs only.
template <typename T>
void check_precision(Precision precision) {
  if (precision == Precision::kBf16 && !std::is_same<T, float>::value)
    throw std::invalid_argument("precision='bf16' needs float32 inputs; float64 runs with precision='fp32'");
}

// Threads for E edges: small batches run on one thread (a parallel region costs more than
// their edge work, and much more on an oversubscribed machine).
int threads_for(int64_t E) {
  const int64_t by_work = 1 + E / 1024;
  const int64_t max_threads = omp_get_max_threads();
  return static_cast<int>(by_work < max_threads ? by_work : max_threads);
}

// A zeroed buffer of n elements that starts on a 64-byte boundary, so that the whole-vector loads
// and stores of the tile buffers never straddle two cache lines.
template <typename T>
class AlignedBuffer {
 public:
  explicit AlignedBuffer(size_t n) : storage_(n + 64 / sizeof(T)) {
    const auto address = reinterpret_cast<uintptr_t>(storage_.data());
    data_ = storage_.data() + (64 - address % 64) % 64 / sizeof(T);
  }
  T* data() { return data_; }

 private:
  std::vector<T> storage_;
  T* data_;
};

// The bf16 entry points exist for float only; the double instantiations never reach them.
void forward_bf16(Isa isa, const EdgeArgs<float>& a, float* m, float* dx, float* s, int32_t* l, int nt) {
  switch (isa) {
    case Isa::kAvx512Bf16: avx512bf16::forward_bf16(a, m, dx, s, l, nt); break;
    case Isa::kAvx512: avx512::forward_bf16(a, m, dx, s, l, nt); break;
    case Isa::kAvx2: avx2::forward_bf16(a, m, dx, s, l, nt); break;
    default: baseline::forward_bf16(a, m, dx, s, l, nt);
  }
}
void forward_bf16(Isa, const EdgeArgs<double>&, double*, double*, double*, int32_t*, int) {}
void backward_bf16(Isa isa, const EdgeArgs<float>& a, const EdgeGrads<float>& g, float* eb, float* s,
                   int32_t* l, int nt) {
  switch (isa) {
    case Isa::kAvx512Bf16: avx512bf16::backward_bf16(a, g, eb, s, l, nt); break;
    case Isa::kAvx512: avx512::backward_bf16(a, g, eb, s, l, nt); break;
    case Isa::kAvx2: avx2::backward_bf16(a, g, eb, s, l, nt); break;
    default: baseline::backward_bf16(a, g, eb, s, l, nt);
  }
}
void backward_bf16(Isa, const EdgeArgs<double>&, const EdgeGrads<double>&, double*, double*, int32_t*, int) {}
}  // namespace

bool native_bf16() { return avx512bf16::compiled() && cpu_supports(Isa::kAvx512Bf16); }

template <typename T>
void edge_forward(const EdgeArgs<T>& a, T* m, T* dx, Isa isa, Precision precision) {
  check_precision<T>(precision);
  const bool bf16 = precision == Precision::kBf16;
  const int nt = threads_for(a.E);
  const int64_t per_thread = ForwardScratch(a.H, a.C).size + (bf16 ? bf16_scratch(a.F, a.H, a.C) : 0);
  AlignedBuffer<T> scratch(static_cast<size_t>(nt) * per_thread + packed_weights_size(a.F, a.H, a.C));
  std::vector<int32_t> lists(static_cast<size_t>(nt) * list_scratch(a.H, a.C));
  T* s = scratch.data();
  int32_t* l = lists.data();
  const Isa chosen = pick_isa(a, 32, isa, precision);  // the forward pass does not touch F-wide data
  if (bf16) return forward_bf16(chosen, a, m, dx, s, l, nt);
  switch (chosen) {
    case Isa::kAvx512: avx512::forward(a, m, dx, s, l, nt); break;
    case Isa::kAvx2: avx2::forward(a, m, dx, s, l, nt); break;
    default: baseline::forward(a, m, dx, s, l, nt);
  }
}

template <typename T>
void edge_backward(const EdgeArgs<T>& a, const EdgeGrads<T>& g, Isa isa, Precision precision) {
  check_precision<T>(precision);
  const bool bf16 = precision == Precision::kBf16;
  const int nt = threads_for(a.E);
  const int64_t per_thread = BackwardScratch(a.F, a.H, a.C).size + (bf16 ? bf16_scratch(a.F, a.H, a.C) : 0);
  // Zero-initialised, so buffers of threads the runtime did not start add nothing.
  AlignedBuffer<T> scratch(static_cast<size_t>(nt) * per_thread + packed_weights_size(a.F, a.H, a.C));
  std::vector<T> edge_buf(static_cast<size_t>(a.E) * (a.F + 3));
  std::vector<int32_t> lists(static_cast<size_t>(nt) * list_scratch(a.H, a.C));
  T* s = scratch.data();
  T* eb = edge_buf.data();
  int32_t* l = lists.data();
  const Isa chosen = pick_isa(a, a.F, isa, precision);
  if (bf16) return backward_bf16(chosen, a, g, eb, s, l, nt);
  switch (chosen) {
    case Isa::kAvx512: avx512::backward(a, g, eb, s, l, nt); break;
    case Isa::kAvx2: avx2::backward(a, g, eb, s, l, nt); break;
    default: baseline::backward(a, g, eb, s, l, nt);
  }
}

template <typename T>
void edge_double_backward(const EdgeArgs<T>& a, const EdgeGrads<T>& g, const EdgeTangents<T>& v,
                          const DoubleGrads<T>& o, Isa isa) {
  const int nt = threads_for(a.E);
  AlignedBuffer<T> scratch(static_cast<size_t>(nt) * DoubleBackwardScratch(a.F, a.H, a.C).size +
                           packed_weights_size(a.F, a.H, a.C));
  std::vector<T> edge_buf(static_cast<size_t>(a.E) * (a.F + 3));
  std::vector<int32_t> lists(static_cast<size_t>(nt) * list_scratch(a.H, a.C));
  T* s = scratch.data();
  T* eb = edge_buf.data();
  int32_t* l = lists.data();
  switch (pick_isa(a, a.F, isa)) {
    case Isa::kAvx512: avx512::double_backward(a, g, v, o, eb, s, l, nt); break;
    case Isa::kAvx2: avx2::double_backward(a, g, v, o, eb, s, l, nt); break;
    default: baseline::double_backward(a, g, v, o, eb, s, l, nt);
  }
}

template void edge_forward<float>(const EdgeArgs<float>&, float*, float*, Isa, Precision);
template void edge_forward<double>(const EdgeArgs<double>&, double*, double*, Isa, Precision);
template void edge_backward<float>(const EdgeArgs<float>&, const EdgeGrads<float>&, Isa, Precision);
template void edge_backward<double>(const EdgeArgs<double>&, const EdgeGrads<double>&, Isa, Precision);
template void edge_double_backward<float>(const EdgeArgs<float>&, const EdgeGrads<float>&,
                                          const EdgeTangents<float>&, const DoubleGrads<float>&,
                                          Isa);
template void edge_double_backward<double>(const EdgeArgs<double>&, const EdgeGrads<double>&,
                                           const EdgeTangents<double>&, const DoubleGrads<double>&,
                                           Isa);

}  // namespace alk::mp
