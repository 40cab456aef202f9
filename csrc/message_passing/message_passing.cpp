// Run-time choice of the instruction set for the fused EGNN edge kernels, and their scratch.
#include <omp.h>

#include <cstddef>
#include <vector>

#include "message_passing/mp_kernels.h"

namespace alk_mp {

namespace {
enum class Isa { kAvx512, kAvx2, kGeneric };

// The widest compiled variant this CPU runs. The AVX-512 kernels use 2 x 16-float register
// blocks, so they need widths that are multiples of 32.
template <typename T>
Isa pick_isa(const EdgeArgs<T>& a, int64_t F) {
#if defined(__x86_64__) || defined(__i386__)
  static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx512 && a.H % 32 == 0 && a.C % 32 == 0 && F % 32 == 0) return Isa::kAvx512;
  if (avx2) return Isa::kAvx2;
#endif
  (void)a;
  (void)F;
  return Isa::kGeneric;
}
// Threads for E edges: small batches run on one thread (a parallel region costs more than
// their edge work, and much more on an oversubscribed machine).
int threads_for(int64_t E) {
  const int64_t by_work = 1 + E / 1024;
  const int64_t max_threads = omp_get_max_threads();
  return static_cast<int>(by_work < max_threads ? by_work : max_threads);
}
}  // namespace

template <typename T>
void edge_forward(const EdgeArgs<T>& a, T* m, T* dx) {
  const int nt = threads_for(a.E);
  std::vector<T> scratch(static_cast<size_t>(nt) * forward_scratch(a.F, a.H, a.C));
  switch (pick_isa(a, 32)) {  // the forward pass does not touch F-wide data
    case Isa::kAvx512: avx512::forward(a, m, dx, scratch.data(), nt); break;
    case Isa::kAvx2: avx2::forward(a, m, dx, scratch.data(), nt); break;
    default: generic::forward(a, m, dx, scratch.data(), nt);
  }
}

template <typename T>
void edge_backward(const EdgeArgs<T>& a, const EdgeGrads<T>& g) {
  const int nt = threads_for(a.E);
  // Zero-initialised, so buffers of threads the runtime did not start add nothing.
  std::vector<T> scratch(static_cast<size_t>(nt) * backward_scratch(a.F, a.H, a.C));
  std::vector<T> edge_buf(static_cast<size_t>(a.E) * (a.F + 3));
  switch (pick_isa(a, a.F)) {
    case Isa::kAvx512: avx512::backward(a, g, edge_buf.data(), scratch.data(), nt); break;
    case Isa::kAvx2: avx2::backward(a, g, edge_buf.data(), scratch.data(), nt); break;
    default: generic::backward(a, g, edge_buf.data(), scratch.data(), nt);
  }
}

template void edge_forward<float>(const EdgeArgs<float>&, float*, float*);
template void edge_forward<double>(const EdgeArgs<double>&, double*, double*);
template void edge_backward<float>(const EdgeArgs<float>&, const EdgeGrads<float>&);
template void edge_backward<double>(const EdgeArgs<double>&, const EdgeGrads<double>&);

}  // namespace alk_mp
