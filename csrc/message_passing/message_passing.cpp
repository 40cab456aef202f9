// Run-time choice of the instruction set for the fused EGNN edge kernels, and their scratch.
#include <omp.h>

#include <cstddef>
#include <vector>

#include "message_passing/mp_kernels.h"

namespace alk_mp {

namespace {
bool cpu_has_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}
// Threads for E edges: small batches run on one thread (a parallel region costs more than
// their edge work, and much more on an oversubscribed machine).
int threads_for(int64_t E) {
  const int64_t by_work = 1 + E / 4096;
  const int64_t max_threads = omp_get_max_threads();
  return static_cast<int>(by_work < max_threads ? by_work : max_threads);
}
}  // namespace

template <typename T>
void edge_forward(const EdgeArgs<T>& a, T* m, T* dx) {
  const int nt = threads_for(a.E);
  std::vector<T> scratch(static_cast<size_t>(nt) * forward_scratch(a.F, a.H, a.C));
  if (cpu_has_avx2())
    avx2::forward(a, m, dx, scratch.data(), nt);
  else
    generic::forward(a, m, dx, scratch.data(), nt);
}

template <typename T>
void edge_backward(const EdgeArgs<T>& a, const EdgeGrads<T>& g) {
  const int nt = threads_for(a.E);
  // Zero-initialised, so buffers of threads the runtime did not start add nothing.
  std::vector<T> scratch(static_cast<size_t>(nt) * backward_scratch(a.F, a.H, a.C));
  std::vector<T> edge_buf(static_cast<size_t>(a.E) * (a.F + 3));
  if (cpu_has_avx2())
    avx2::backward(a, g, edge_buf.data(), scratch.data(), nt);
  else
    generic::backward(a, g, edge_buf.data(), scratch.data(), nt);
}

template void edge_forward<float>(const EdgeArgs<float>&, float*, float*);
template void edge_forward<double>(const EdgeArgs<double>&, double*, double*);
template void edge_backward<float>(const EdgeArgs<float>&, const EdgeGrads<float>&);
template void edge_backward<double>(const EdgeArgs<double>&, const EdgeGrads<double>&);

}  // namespace alk_mp
