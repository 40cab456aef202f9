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
//   isa:    the build to run (builds: avx512, avx2, baseline; see common/isa.h).
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

// out[i] = the kernel's e^x[i] (simd::exp_le0 of the chosen build), for accuracy tests: x <= 0,
// clamped at the build's kExpFloor (see common/simd.h).
void exp_le0(const float* x, float* out, int64_t n, Isa isa = Isa::kBest);

// ---- per-build entry points (acq_<isa>.cpp), called by score_all -----------------------------
// Samples whose passes are read pass by pass (all of the chunk's rows of pass t, then of pass
// t + 1, ...), so each pass streams one long stretch of memory: as many as keep their running
// p_bar (C floats each) within 128 KB, a multiple of 8 from 8 to 256.
constexpr int64_t kMaxChunk = 256;
inline int64_t chunk_samples(int64_t C) {
  const int64_t fit = (128 * 1024 / 4) / ((C + 15) / 16 * 16) / 8 * 8;
  return fit < 8 ? 8 : fit > kMaxChunk ? kMaxChunk : fit;
}

// Floats of per-thread scratch that score_range needs for C classes: three rows per row of a
// block of 8 (widened logits, exp, transposed passes of the [N, C, T] layout) and p_bar for a
// chunk of samples, each row padded to a multiple of 16 (the widest build's lanes).
inline int64_t scratch_floats(int64_t C) {
  const int64_t padded = (C + 15) / 16 * 16;
  return (3 * 8 + chunk_samples(C)) * padded;
}

#define ALK_ACQ_DECLARE(NS)                                                                  \
  namespace NS {                                                                             \
  int64_t score_all(const void* logits, LogitType type, int64_t T, int64_t N, int64_t C,   \
                    int64_t st, int64_t sn, int64_t sc, float* out, float* scratch,        \
                    int nthreads);                                                           \
  void exp_le0(const float* x, float* out, int64_t n);                                       \
  }
ALK_ACQ_DECLARE(avx512)
ALK_ACQ_DECLARE(avx2)
ALK_ACQ_DECLARE(baseline)
#undef ALK_ACQ_DECLARE

}  // namespace alk::acq
