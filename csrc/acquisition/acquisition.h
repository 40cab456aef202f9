// Fused acquisition scoring over an AL pool and deterministic top-k selection.
#pragma once

#include <cstdint>

#include "common/isa.h"

namespace alk::acq {

// Storage type of the logits. Half types are widened to fp32; all accumulation is fp32.
enum class LogitType { kF32, kF16, kBF16 };

// Number of scores written per sample, in this order (must match alkernels.acquisition.STRATEGIES):
// entropy, least_confidence, margin, predictive_entropy, expected_entropy, bald,
// expected_least_confidence, expected_margin.
constexpr int kNumScores = 8;

// Scores every pool sample with all eight strategies in one read of the logits.
//   logits: element (t, n, c) at logits[t * stride_t + n * stride_n + c * stride_c] (strides in
//           elements), T >= 1 passes, N samples, C >= 2 classes. Contiguous classes
//           (stride_c = 1) are fastest for float32; other class strides are gathered row by row,
//           so baal's [N, C, T] layout is read in place with stride_c = T, stride_t = 1.
//   out:    float32 [8][N] (row s holds strategy s for every sample).
//   isa:    the build to run (builds: avx2, baseline; see common/isa.h).
// A sample with any non-finite logit gets NaN in all eight rows. Returns the lowest index of such
// a sample, or -1 when every logit is finite. Parallel over samples with OpenMP.
int64_t score_all(const void* logits, LogitType type, int64_t T, int64_t N, int64_t C,
                  int64_t stride_t, int64_t stride_n, int64_t stride_c, float* out,
                  Isa isa = Isa::kBest);

// The min(k, selectable) largest entries of scores[0..N) in descending order, ties to the lower
// index, written to indices/values. NaN entries, and entries with exclude[i] != 0 (exclude may be
// null), are never selected. Returns the number of selectable entries.
int64_t topk_desc(const float* scores, int64_t N, int64_t k, const uint8_t* exclude,
                  int64_t* indices, float* values);

// ---- per-build entry points (acq_<isa>.cpp), called by score_all -----------------------------
// Floats of per-thread scratch that score_range needs for C classes: three rows per sample of
// a block of 8, plus 8 transposed passes per sample for the [N, C, T] layout.
inline int64_t scratch_floats(int64_t C) {
  const int64_t padded = (C + 7) / 8 * 8;
  return (3 + 8) * 8 * padded;
}

#define ALK_ACQ_DECLARE(NS)                                                                  \
  namespace NS {                                                                             \
  int64_t score_all(const void* logits, LogitType type, int64_t T, int64_t N, int64_t C,   \
                    int64_t st, int64_t sn, int64_t sc, float* out, float* scratch,        \
                    int nthreads);                                                           \
  }
ALK_ACQ_DECLARE(avx2)
ALK_ACQ_DECLARE(baseline)
#undef ALK_ACQ_DECLARE

}  // namespace alk::acq
