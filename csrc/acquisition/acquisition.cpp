// Dispatcher of the acquisition kernels (baseline target): picks the build, owns the scratch,
// and the deterministic top-k.
#include "acquisition/acquisition.h"

#include <omp.h>

#include <algorithm>
#include <memory>
#include <vector>

namespace alk::acq {

int64_t score_all(const void* logits, LogitType type, int64_t T, int64_t N, int64_t C,
                  int64_t stride_t, int64_t stride_n, int64_t stride_c, float* out, Isa isa) {
  const Isa build = select_isa(isa, {Isa::kAvx512, Isa::kAvx2, Isa::kBaseline}, "acquisition");
  const int nthreads = omp_get_max_threads();
  // Uninitialised: the kernels write every scratch float before reading it.
  const size_t floats = static_cast<size_t>(nthreads) * scratch_floats(C);
  const std::unique_ptr<float[]> scratch(new float[floats]);
  if (build == Isa::kAvx512)
    return avx512::score_all(logits, type, T, N, C, stride_t, stride_n, stride_c, out,
                             scratch.get(), nthreads);
  if (build == Isa::kAvx2)
    return avx2::score_all(logits, type, T, N, C, stride_t, stride_n, stride_c, out,
                           scratch.get(), nthreads);
  return baseline::score_all(logits, type, T, N, C, stride_t, stride_n, stride_c, out,
                             scratch.get(), nthreads);
}

void exp_le0(const float* x, float* out, int64_t n, Isa isa) {
  const Isa build = select_isa(isa, {Isa::kAvx512, Isa::kAvx2, Isa::kBaseline}, "acquisition");
  if (build == Isa::kAvx512) return avx512::exp_le0(x, out, n);
  if (build == Isa::kAvx2) return avx2::exp_le0(x, out, n);
  baseline::exp_le0(x, out, n);
}

int64_t topk_desc(const float* scores, int64_t N, int64_t k, const uint8_t* exclude,
                  int64_t* indices, float* values) {
  std::vector<int64_t> cand;
  cand.reserve(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) {
    if (scores[i] != scores[i]) continue;  // NaN
    if (exclude != nullptr && exclude[i] != 0) continue;
    cand.push_back(i);
  }
  const int64_t valid = static_cast<int64_t>(cand.size());
  const int64_t kk = std::min(k, valid);
  auto before = [scores](int64_t a, int64_t b) {
    return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
  };
  if (kk < valid) std::nth_element(cand.begin(), cand.begin() + kk, cand.end(), before);
  std::sort(cand.begin(), cand.begin() + kk, before);
  for (int64_t j = 0; j < kk; ++j) {
    indices[j] = cand[j];
    values[j] = scores[cand[j]];
  }
  return valid;
}

}  // namespace alk::acq
