// Run-time choice of the instruction set for the fused EGNN edge kernels, and their scratch.
#include <omp.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "message_passing/message_passing.h"

namespace alk::mp {

namespace {

// The build to run for the request. The AVX-512 kernels' weight-gradient GEMMs use 2 x 16-float
// register blocks, so they serve widths that are multiples of 32 only.
template <typename T>
Isa pick_isa(const EdgeArgs<T>& a, int64_t F, Isa requested) {
  if (a.H % 32 == 0 && a.C % 32 == 0 && F % 32 == 0)
    return select_isa(requested, {Isa::kAvx512, Isa::kAvx2, Isa::kBaseline}, "message_passing");
  return select_isa(requested, {Isa::kAvx2, Isa::kBaseline}, "message_passing");
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
}  // namespace

template <typename T>
void edge_forward(const EdgeArgs<T>& a, T* m, T* dx, Isa isa) {
  const int nt = threads_for(a.E);
  AlignedBuffer<T> scratch(static_cast<size_t>(nt) * ForwardScratch(a.H, a.C).size +
                           packed_weights_size(a.F, a.H, a.C));
  std::vector<int32_t> lists(static_cast<size_t>(nt) * list_scratch(a.H, a.C));
  T* s = scratch.data();
  int32_t* l = lists.data();
  switch (pick_isa(a, 32, isa)) {  // the forward pass does not touch F-wide data
    case Isa::kAvx512: avx512::forward(a, m, dx, s, l, nt); break;
    case Isa::kAvx2: avx2::forward(a, m, dx, s, l, nt); break;
    default: baseline::forward(a, m, dx, s, l, nt);
  }
}

template <typename T>
void edge_backward(const EdgeArgs<T>& a, const EdgeGrads<T>& g, Isa isa) {
  const int nt = threads_for(a.E);
  // Zero-initialised, so buffers of threads the runtime did not start add nothing.
  AlignedBuffer<T> scratch(static_cast<size_t>(nt) * BackwardScratch(a.F, a.H, a.C).size +
                           packed_weights_size(a.F, a.H, a.C));
  std::vector<T> edge_buf(static_cast<size_t>(a.E) * (a.F + 3));
  std::vector<int32_t> lists(static_cast<size_t>(nt) * list_scratch(a.H, a.C));
  T* s = scratch.data();
  T* eb = edge_buf.data();
  int32_t* l = lists.data();
  switch (pick_isa(a, a.F, isa)) {
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

template void edge_forward<float>(const EdgeArgs<float>&, float*, float*, Isa);
template void edge_forward<double>(const EdgeArgs<double>&, double*, double*, Isa);
template void edge_backward<float>(const EdgeArgs<float>&, const EdgeGrads<float>&, Isa);
template void edge_backward<double>(const EdgeArgs<double>&, const EdgeGrads<double>&, Isa);
template void edge_double_backward<float>(const EdgeArgs<float>&, const EdgeGrads<float>&,
                                          const EdgeTangents<float>&, const DoubleGrads<float>&,
                                          Isa);
template void edge_double_backward<double>(const EdgeArgs<double>&, const EdgeGrads<double>&,
                                           const EdgeTangents<double>&, const DoubleGrads<double>&,
                                           Isa);

}  // namespace alk::mp
