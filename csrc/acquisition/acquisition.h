// Fused acquisition scoring over an AL pool and deterministic top-k selection.
#pragma once

#include <cstdint>

namespace alk {

// Storage type of the logits. Half types are widened to fp32; all accumulation is fp32.
enum class LogitType { F32, F16, BF16 };

// Instruction set of the scoring kernel: the best one the CPU supports (AVX2+FMA on x86-64 where
// present), or the portable baseline build (used by the tests to check both builds agree).
enum class KernelIsa { Best, Baseline };

// Number of scores written per sample, in this order (must match alkernels.acquisition.STRATEGIES):
// entropy, least_confidence, margin, predictive_entropy, expected_entropy, bald,
// expected_least_confidence, expected_margin.
constexpr int kNumScores = 8;

// Scores every pool sample with all eight strategies in one read of the logits.
//   logits: element (t, n, c) at logits[t * stride_t + n * stride_n + c] (strides in elements,
//           classes contiguous), T >= 1 passes, N samples, C >= 2 classes.
//   out:    float32 [8][N] (row s holds strategy s for every sample).
// A sample with any non-finite logit gets NaN in all eight rows. Returns the lowest index of such
// a sample, or -1 when every logit is finite. Parallel over samples with OpenMP.
int64_t score_all(const void* logits, LogitType type, int64_t T, int64_t N, int64_t C,
                  int64_t stride_t, int64_t stride_n, float* out,
                  KernelIsa isa = KernelIsa::Best);

// The min(k, selectable) largest entries of scores[0..N) in descending order, ties to the lower
// index, written to indices/values. NaN entries, and entries with exclude[i] != 0 (exclude may be
// null), are never selected. Returns the number of selectable entries.
int64_t topk_desc(const float* scores, int64_t N, int64_t k, const uint8_t* exclude,
                  int64_t* indices, float* values);

}  // namespace alk
