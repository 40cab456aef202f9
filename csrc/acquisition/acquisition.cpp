#include "acquisition/acquisition.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>


#include "common/half.h"
#include "common/simd.h"

namespace alk {
namespace {

using simd::kWidth;
using simd::vf;
using simd::vi;

// Samples scored together: the T passes run as the outer loop over a block of this many samples,
// so each pass streams one contiguous stretch of memory instead of T scattered rows per sample.
constexpr int64_t kBlock = 16;

// Per-thread scratch, padded to a multiple of the SIMD width: a widened row (or the padded tail of
// a float32 row), its exps, and for each sample of a block the running sum of p_t over passes
// (padding lanes of pbar stay 0).
struct Scratch {
  int64_t padded;
  std::vector<float> row, e, pbar;
  explicit Scratch(int64_t C)
      : padded((C + kWidth - 1) / kWidth * kWidth), row(padded), e(padded), pbar(kBlock * padded) {}
};

// Result of one softmax pass over a row of C logits.
struct PassStats {
  float entropy;  // H(p_t) in nats
  float pmax;     // max_c p_t = 1 / sum_c exp(x_c - max)
  float margin;   // p_t(1) - p_t(2)
  bool finite;
};

// A row of C logits as float32: `body` holds the first C - C % kWidth classes (read in place for
// float32 input), `tail` one vector with the remaining classes followed by -FLT_MAX padding (finite,
// and below every real logit that matters for the top-2 since C >= 2), or null when C % kWidth == 0.
struct RowView {
  const float* body;
  int64_t nbody;
  const float* tail;
};

// One softmax pass over a row. e receives exp(x - max) for the body and the tail vector (0 on
// padding lanes). valid_tail: the lanes of the tail vector that hold real classes.
__attribute__((always_inline)) inline PassStats softmax_pass(RowView x, vi valid_tail,
                                                             float* __restrict e) {
  // Pass 1: per-lane top-2 of the logits and a NaN/inf detector.
  vf m1 = simd::splat(-std::numeric_limits<float>::infinity()), m2 = m1;
  vf bad = simd::splat(0.0f);
  auto scan = [&](vf v) __attribute__((always_inline)) {
    m2 = simd::max(m2, simd::min(m1, v));
    m1 = simd::max(m1, v);
    bad += v - v;  // NaN in a lane once it saw inf or NaN
  };
  for (int64_t c = 0; c < x.nbody; c += kWidth) scan(simd::load(x.body + c));
  if (x.tail != nullptr) scan(simd::load(x.tail));
  if (simd::hsum(bad) != 0.0f) return {0.0f, 0.0f, 0.0f, false};  // NaN != 0 is true
  // Top-2 over the lanes: the best lane's runner-up or another lane's best.
  int best = 0;
  for (int l = 1; l < kWidth; ++l) best = m1[l] > m1[best] ? l : best;
  const float m = m1[best];
  float x2 = m2[best];
  for (int l = 0; l < kWidth; ++l) x2 = (l != best && m1[l] > x2) ? m1[l] : x2;
  // Pass 2: exps, their sum and the entropy numerator; only the tail needs masking.
  const vf vm = simd::splat(m), zero = simd::splat(0.0f);
  vf s = zero, sx = zero;
  for (int64_t c = 0; c < x.nbody; c += kWidth) {
    const vf d = simd::load(x.body + c) - vm;
    const vf v = simd::exp_nonpos(d);
    simd::store(e + c, v);
    s += v;
    sx += v * d;
  }
  if (x.tail != nullptr) {
    const vf d = simd::select(valid_tail, simd::load(x.tail) - vm, zero);
    const vf v = simd::select(valid_tail, simd::exp_nonpos(d), zero);
    simd::store(e + x.nbody, v);
    s += v;
    sx += v * d;
  }
  const float s_all = simd::hsum(s);
  const float inv = 1.0f / s_all;
  const float e2 = x2 == m ? 1.0f : std::exp(x2 - m);  // equal maxima: margin 0
  // H = log s - sum(e * d) / s, because log p_c = d_c - log s.
  return {std::log(s_all) - simd::hsum(sx) * inv, inv, (1.0f - e2) * inv, true};
}

// Entropy (when with_entropy; else 0), top-1 and top-2 of p = acc * scale over the padded
// classes (padding lanes are 0).
struct MeanStats {
  float entropy, p1, p2;
};

__attribute__((always_inline)) inline MeanStats mean_stats(const float* __restrict acc, int64_t Cp,
                                                           float scale, bool with_entropy) {
  const vf zero = simd::splat(0.0f), tiny = simd::splat(FLT_MIN);
  vf h = zero, top = zero;
  for (int64_t c = 0; c < Cp; c += kWidth) {
    const vf p = simd::load(acc + c) * scale;
    if (with_entropy) h -= p * simd::log(simd::max(p, tiny));  // 0 log 0 = 0
    top = simd::max(top, p);
  }
  const float p1 = simd::hmax(top);
  vf sec = zero;
  vi ties = vi{};
  for (int64_t c = 0; c < Cp; c += kWidth) {
    const vf p = simd::load(acc + c) * scale;
    ties -= p == p1;
    sec = simd::select((p < p1) & (p > sec), p, sec);
  }
  return {simd::hsum(h), p1, simd::hsum(ties) > 1 ? p1 : simd::hmax(sec)};
}

// The row at `offset` as float32: float32 input is read in place (only the tail is copied),
// half types are widened into the scratch row.
template <LogitType kType>
__attribute__((always_inline)) inline RowView widen(const void* base, int64_t offset, int64_t C,
                                                    Scratch& w) {
  const int64_t nbody = C - C % kWidth;
  float* row = w.row.data();
  const float* body = row;
  if constexpr (kType == LogitType::F32) {
    body = static_cast<const float*>(base) + offset;
    if (nbody == C) return {body, nbody, nullptr};
    float* tail = row + nbody;
    for (int64_t c = nbody; c < C; ++c) tail[c - nbody] = body[c];
  } else {
    const uint16_t* src = static_cast<const uint16_t*>(base) + offset;
    for (int64_t c = 0; c < C; ++c)
      row[c] = kType == LogitType::F16 ? half_to_float(src[c]) : bf16_to_float(src[c]);
    if (nbody == C) return {body, nbody, nullptr};
  }
  for (int64_t c = C; c < w.padded; ++c) row[c] = -FLT_MAX;
  return {body, nbody, row + nbody};
}

// Scores samples [n0, n1). Returns the lowest non-finite sample index in the range, or -1.
template <LogitType kType>
__attribute__((always_inline)) inline int64_t score_range_impl(const void* logits, int64_t T,
                                                               int64_t N, int64_t C, int64_t st,
                                                               int64_t sn, float* out, int64_t n0,
                                                               int64_t n1, Scratch& w) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float invT = 1.0f / static_cast<float>(T);
  const int64_t Cp = w.padded;
  vi valid_tail;
  for (int l = 0; l < kWidth; ++l) valid_tail[l] = Cp - kWidth + l < C ? -1 : 0;
  const float* e = w.e.data();
  // Rows are 4 KB-page-sized stretches far apart (one per pass), which hardware prefetchers do
  // not follow: fetch each row one block-pass ahead.
  constexpr int64_t kElemBytes = kType == LogitType::F32 ? 4 : 2;
  const char* bytes = static_cast<const char*>(logits);
  auto prefetch_row = [&](int64_t t, int64_t n) __attribute__((always_inline)) {
    const char* p = bytes + (t * st + n * sn) * kElemBytes;
    for (int64_t b = 0; b < C * kElemBytes; b += 64) __builtin_prefetch(p + b);
  };
  int64_t first_bad = -1;
  for (int64_t nb = n0; nb < n1; nb += kBlock) {
    const int64_t nk = std::min(kBlock, n1 - nb);
    float h_sum[kBlock] = {}, pmax_sum[kBlock] = {}, margin_sum[kBlock] = {};
    bool finite[kBlock];
    std::fill(finite, finite + kBlock, true);
    std::fill(w.pbar.begin(), w.pbar.begin() + nk * Cp, 0.0f);
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t k = 0; k < nk; ++k) {
        if (t + 1 < T)
          prefetch_row(t + 1, nb + k);
        else if (nb + kBlock + k < n1)
          prefetch_row(0, nb + kBlock + k);
        if (!finite[k]) continue;
        const RowView x = widen<kType>(logits, t * st + (nb + k) * sn, C, w);
        const PassStats ps = softmax_pass(x, valid_tail, w.e.data());
        finite[k] = ps.finite;
        h_sum[k] += ps.entropy;
        pmax_sum[k] += ps.pmax;
        margin_sum[k] += ps.margin;
        float* pbar = w.pbar.data() + k * Cp;
        const vf inv = simd::splat(ps.pmax);
        for (int64_t c = 0; c < Cp; c += kWidth)
          simd::store(pbar + c, simd::load(pbar + c) + simd::load(e + c) * inv);
      }
    }
    for (int64_t k = 0; k < nk; ++k) {
      const int64_t n = nb + k;
      if (!finite[k]) {
        for (int s = 0; s < kNumScores; ++s) out[s * N + n] = nan;
        if (first_bad < 0) first_bad = n;
        continue;
      }
      // With one pass, H(p_bar) is the single-pass entropy: exact to fp32 and needs no logs.
      const MeanStats ms = mean_stats(w.pbar.data() + k * Cp, Cp, invT, T > 1);
      const float h_exp = h_sum[k] * invT;
      const float h_bar = T == 1 ? h_exp : ms.entropy;
      out[0 * N + n] = h_bar;                              // entropy
      out[1 * N + n] = 1.0f - ms.p1;                       // least_confidence
      out[2 * N + n] = -(ms.p1 - ms.p2);                   // margin
      out[3 * N + n] = h_bar;                              // predictive_entropy
      out[4 * N + n] = h_exp;                              // expected_entropy
      out[5 * N + n] = T == 1 ? 0.0f : h_bar - h_exp;      // bald
      out[6 * N + n] = 1.0f - pmax_sum[k] * invT;          // expected_least_confidence
      out[7 * N + n] = -margin_sum[k] * invT;              // expected_margin
    }
  }
  return first_bad;
}

// Each entry point is compiled twice: for AVX2+FMA and for the x86-64 baseline. score_all picks
// one at run time, so the build stays portable (no -march flags) and still uses AVX2 where present.
using RangeFn = int64_t (*)(const void*, int64_t, int64_t, int64_t, int64_t, int64_t, float*,
                            int64_t, int64_t, Scratch&);

#define ALK_SCORE_RANGE(NAME, TYPE, ATTR)                                                     \
  ATTR int64_t NAME(const void* logits, int64_t T, int64_t N, int64_t C, int64_t st,          \
                    int64_t sn, float* out, int64_t n0, int64_t n1, Scratch& w) {              \
    return score_range_impl<TYPE>(logits, T, N, C, st, sn, out, n0, n1, w);                   \
  }
#define ALK_AVX2 __attribute__((target("avx2,fma")))
ALK_SCORE_RANGE(score_range_f32_avx2, LogitType::F32, ALK_AVX2)
ALK_SCORE_RANGE(score_range_f16_avx2, LogitType::F16, ALK_AVX2)
ALK_SCORE_RANGE(score_range_bf16_avx2, LogitType::BF16, ALK_AVX2)
ALK_SCORE_RANGE(score_range_f32_base, LogitType::F32, )
ALK_SCORE_RANGE(score_range_f16_base, LogitType::F16, )
ALK_SCORE_RANGE(score_range_bf16_base, LogitType::BF16, )
#undef ALK_AVX2
#undef ALK_SCORE_RANGE

RangeFn pick_kernel(LogitType type) {
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  switch (type) {
    case LogitType::F16: return avx2 ? score_range_f16_avx2 : score_range_f16_base;
    case LogitType::BF16: return avx2 ? score_range_bf16_avx2 : score_range_bf16_base;
    default: return avx2 ? score_range_f32_avx2 : score_range_f32_base;
  }
}

}  // namespace

int64_t score_all(const void* logits, LogitType type, int64_t T, int64_t N, int64_t C,
                  int64_t stride_t, int64_t stride_n, float* out) {
  const RangeFn kernel = pick_kernel(type);
  int64_t first_bad = -1;
  // Dynamic scheduling over blocks of samples: on a shared machine a descheduled thread does not
  // hold up the others, as a static split would.
  const int64_t block = 256;
  const int64_t nblocks = (N + block - 1) / block;
#pragma omp parallel
  {
    Scratch w(C);
    int64_t bad = -1;
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < nblocks; ++b) {
      const int64_t n0 = b * block, n1 = std::min(N, n0 + block);
      const int64_t r = kernel(logits, T, N, C, stride_t, stride_n, out, n0, n1, w);
      if (r >= 0 && (bad < 0 || r < bad)) bad = r;
    }
#pragma omp critical
    if (bad >= 0 && (first_bad < 0 || bad < first_bad)) first_bad = bad;
  }
  return first_bad;
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

}  // namespace alk
