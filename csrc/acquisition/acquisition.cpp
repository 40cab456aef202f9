#include "acquisition/acquisition.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <vector>

#include "common/half.h"
#include "common/simd.h"

namespace alk {
namespace {

using simd::kWidth;
using simd::vf;
using simd::vi;

// Samples scored together, one per SIMD lane in the per-pass statistics: the T passes run as the
// outer loop over a block, so each pass streams one contiguous stretch of memory instead of T
// scattered rows per sample.
constexpr int64_t kBlock = kWidth;

// A row of C logits as float32: `body` holds the first C - C % kWidth classes (read in place for
// float32 input), `tail` one vector with the remaining classes followed by -FLT_MAX padding (finite,
// and below every real logit that matters for the top-2 since C >= 2), or null when C % kWidth == 0.
struct RowView {
  const float* body;
  int64_t nbody;
  const float* tail;
};

// Per-thread scratch for one block of samples, each row padded to a multiple of the SIMD width:
// widened rows (or the padded tails of float32 rows), exp(x - max) of the current pass, and the
// running sum of p_t over passes (padding lanes of e and pbar stay 0).
struct Scratch {
  int64_t padded;
  std::vector<float> row, e, pbar;
  explicit Scratch(int64_t C)
      : padded((C + kWidth - 1) / kWidth * kWidth),
        row(kBlock * padded),
        e(kBlock * padded),
        pbar(kBlock * padded) {}
};

// State of one pass over a block, filled phase by phase, one entry per row. Sums run in base 2:
// d2 = (x - m) log2(e), so exp(x - m) = 2^d2.
struct BlockPass {
  RowView x[kBlock];
  float m[kBlock], x2[kBlock];  // largest and second-largest logit (x2 == m on a tie)
  float s[kBlock];              // sum_c 2^d2_c
  float sx2[kBlock];            // sum_c 2^d2_c d2_c
  float sd[kBlock];             // sum_c d2_c: finite exactly when every logit is (see row_exp)
};

// Result of one softmax pass over a row of C logits.
struct PassStats {
  float entropy;  // H(p_t) in nats
  float pmax;     // max_c p_t = 1 / sum_c exp(x_c - max)
  float margin;   // p_t(1) - p_t(2)
  bool finite;
};

// One step of a per-lane running top-2 (a1 >= a2).
template <class Isa>
inline void top2_step(vf v, vf& a1, vf& a2) {
  a2 = Isa::max(a2, Isa::min(a1, v));
  a1 = Isa::max(a1, v);
}

// The two largest values (with multiplicity) over two sets of per-lane running top-2.
struct Top2 {
  float first, second;
};

template <class Isa>
inline Top2 lanes_top2(vf a1, vf a2, vf b1, vf b2) {
  const vf m1 = Isa::max(a1, b1);
  const vf m2 = Isa::max(Isa::min(a1, b1), Isa::max(a2, b2));
  // Second largest: the runner-up of a lane holding the maximum, else that lane's best; two
  // lanes holding the maximum are a tie.
  const float m = simd::hmax<Isa>(m1);
  const vi at_max = m1 == simd::splat(m);
  return {m, simd::hsum(at_max) < -1 ? m : simd::hmax<Isa>(simd::select(at_max, m2, m1))};
}

// Phase 1 of a pass: the top-2 logits of row k, with two independent accumulator sets so the
// max/min chains overlap. NaN may be dropped here; phase 2 detects it.
template <class Isa>
inline void row_top2(BlockPass& bp, int64_t k) {
  const RowView& x = bp.x[k];
  const vf ninf = simd::splat(-std::numeric_limits<float>::infinity());
  vf a1 = ninf, a2 = ninf, b1 = ninf, b2 = ninf;
  int64_t c = 0;
  for (; c + 2 * kWidth <= x.nbody; c += 2 * kWidth) {
    top2_step<Isa>(simd::load(x.body + c), a1, a2);
    top2_step<Isa>(simd::load(x.body + c + kWidth), b1, b2);
  }
  if (c < x.nbody) top2_step<Isa>(simd::load(x.body + c), a1, a2);
  if (x.tail != nullptr) top2_step<Isa>(simd::load(x.tail), a1, a2);
  const Top2 top = lanes_top2<Isa>(a1, a2, b1, b2);
  bp.m[k] = top.first;
  bp.x2[k] = top.second;
}

// Phase 2 of a pass: e = 2^d2 = exp(x - m) (0 on padding lanes) and the sums of BlockPass, with
// d2 = (x - m) log2(e). The difference comes first: it is exact for x near m, so accuracy does not
// depend on the logits' common offset (x log2(e) - m log2(e) in one FMA would carry the rounding
// of m log2(e), ~1e-4 at |m| ~ 1e4). d2 is clamped at kExp2Floor in both e and sx2
// (a class that far below the maximum adds under 2.4e-38 * 125 to sx2 instead of 2^d2 d2, which
// is ~0 as well). Non-finite logits need no per-element branch: sd is NaN or -inf when any logit
// is NaN or +-inf (or, for finite logits, when their span overflows float32, which the exact path
// handles).
template <class Isa>
inline void row_exp(BlockPass& bp, int64_t k, vi valid_tail, float* __restrict e) {
  const RowView& x = bp.x[k];
  const vf vm = simd::splat(bp.m[k]), zero = simd::splat(0.0f);
  const vf floor = simd::splat(simd::kExp2Floor);
  vf s0 = zero, s1 = zero, sx0 = zero, sx1 = zero, sd0 = zero, sd1 = zero;
  auto step = [&](vf d, float* dst, vf& s, vf& sx, vf& sd) {
    const vf dc = Isa::max(d, floor);
    const vf v = simd::exp2_clamped(dc);
    simd::store(dst, v);
    s += v;
    sx += v * dc;
    sd += d;
  };
  int64_t c = 0;
  for (; c + 2 * kWidth <= x.nbody; c += 2 * kWidth) {
    step((simd::load(x.body + c) - vm) * simd::kLog2e, e + c, s0, sx0, sd0);
    step((simd::load(x.body + c + kWidth) - vm) * simd::kLog2e, e + c + kWidth, s1, sx1, sd1);
  }
  if (c < x.nbody) step((simd::load(x.body + c) - vm) * simd::kLog2e, e + c, s0, sx0, sd0);
  if (x.tail != nullptr) {
    const vf d = simd::select(valid_tail, (simd::load(x.tail) - vm) * simd::kLog2e, zero);
    const vf dc = Isa::max(d, floor);
    const vf v = simd::select(valid_tail, simd::exp2_clamped(dc), zero);
    simd::store(e + x.nbody, v);
    s1 += v;
    sx1 += v * dc;
    sd1 += d;
  }
  bp.s[k] = simd::hsum(s0 + s1);
  bp.sx2[k] = simd::hsum(sx0 + sx1);
  bp.sd[k] = simd::hsum(sd0 + sd1);
}

// The rare path, in float64: a row with a non-finite logit (finite = false), or an all-finite row
// whose differences x - max overflow float32 when summed. Rewrites e.
PassStats row_stats_exact(const RowView& x, int64_t C, float* __restrict e) {
  auto at = [&](int64_t c) { return c < x.nbody ? x.body[c] : x.tail[c - x.nbody]; };
  double m = -HUGE_VAL, x2 = -HUGE_VAL;
  for (int64_t c = 0; c < C; ++c) {
    const double v = at(c);
    if (!std::isfinite(v)) return {0.0f, 0.0f, 0.0f, false};
    x2 = v > m ? m : std::max(x2, v);
    m = std::max(m, v);
  }
  double s = 0.0, sx = 0.0;
  for (int64_t c = 0; c < C; ++c) {
    const double d = at(c) - m, v = std::exp(d);
    e[c] = static_cast<float>(v);
    s += v;
    sx += v * d;
  }
  return {static_cast<float>(std::log(s) - sx / s), static_cast<float>(1.0 / s),
          static_cast<float>((1.0 - std::exp(x2 - m)) / s), true};
}

// Phase 3 of a pass, for all rows of the block at once (one per lane): H = log s - ln2 sx2 / s
// (because log p_c = d_c - log s), max p = 1 / s and the margin (1 - exp(x2 - m)) / s. Rows whose
// sd or m is not finite take the exact path instead. Rows that are already known non-finite
// (live[k] false) or past the block end are skipped.
template <class Isa>
inline void block_stats(BlockPass& bp, const bool* live, int64_t C, Scratch& w,
                        PassStats* out) {
  float m[kBlock], x2[kBlock], s[kBlock], sx2[kBlock];
  int32_t fast[kBlock];
  for (int64_t k = 0; k < kBlock; ++k) {
    fast[k] = live[k] && std::isfinite(bp.sd[k]) && std::isfinite(bp.m[k]) ? -1 : 0;
    m[k] = fast[k] ? bp.m[k] : 0.0f;  // neutral values keep the unused lanes finite
    x2[k] = fast[k] ? bp.x2[k] : 0.0f;
    s[k] = fast[k] ? bp.s[k] : 1.0f;
    sx2[k] = fast[k] ? bp.sx2[k] : 0.0f;
  }
  const vf vm = simd::load(m), vx2 = simd::load(x2), vs = simd::load(s);
  const vf inv = 1.0f / vs;
  const vf d2 = Isa::max((vx2 - vm) * simd::kLog2e, simd::splat(simd::kExp2Floor));
  const vf e2 = simd::select(vx2 == vm, simd::splat(1.0f), simd::exp2_clamped(d2));  // tie: 0
  const vf h = simd::log(vs) - simd::load(sx2) * simd::kLn2 * inv;
  const vf margin = (1.0f - e2) * inv;
  for (int64_t k = 0; k < kBlock; ++k) {
    if (fast[k])
      out[k] = {h[k], inv[k], margin[k], true};
    else if (live[k])
      out[k] = row_stats_exact(bp.x[k], C, w.e.data() + k * w.padded);
    else
      out[k] = {0.0f, 0.0f, 0.0f, false};
  }
}

// Entropy (when with_entropy; else 0), top-1 and top-2 of p = acc * scale over the padded
// classes (padding lanes are 0; p2 == p1 on a tie), in one pass with per-lane top-2.
struct MeanStats {
  float entropy, p1, p2;
};

// p log p, with 0 log 0 = 0.
template <class Isa>
inline vf plogp(vf p) {
  return p * simd::log(Isa::max(p, simd::splat(FLT_MIN)));
}

template <class Isa>
inline MeanStats mean_stats(const float* __restrict acc, int64_t Cp, float scale,
                            bool with_entropy) {
  const vf zero = simd::splat(0.0f);
  vf h0 = zero, h1 = zero, a1 = zero, a2 = zero, b1 = zero, b2 = zero;
  int64_t c = 0;
  for (; c + 2 * kWidth <= Cp; c += 2 * kWidth) {
    const vf p0 = simd::load(acc + c) * scale, p1 = simd::load(acc + c + kWidth) * scale;
    if (with_entropy) {
      h0 -= plogp<Isa>(p0);
      h1 -= plogp<Isa>(p1);
    }
    top2_step<Isa>(p0, a1, a2);
    top2_step<Isa>(p1, b1, b2);
  }
  if (c < Cp) {
    const vf p = simd::load(acc + c) * scale;
    if (with_entropy) h0 -= plogp<Isa>(p);
    top2_step<Isa>(p, a1, a2);
  }
  const Top2 top = lanes_top2<Isa>(a1, a2, b1, b2);
  return {simd::hsum(h0 + h1), top.first, top.second};
}

// Row `k` of the block at `offset` as float32: float32 input is read in place (only the tail is
// copied), half types are widened into the block's scratch row.
template <LogitType kType>
inline RowView widen(const void* base, int64_t offset, int64_t C, float* row, int64_t padded) {
  const int64_t nbody = C - C % kWidth;
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
  for (int64_t c = C; c < padded; ++c) row[c] = -FLT_MAX;
  return {body, nbody, row + nbody};
}

// Scores samples [n0, n1). Returns the lowest non-finite sample index in the range, or -1.
// Each pass over a block runs in phases (top-2, exps, statistics + p_bar update), each over all
// rows of the block: the rows are independent, so the horizontal reductions and scalar tails of
// one row overlap with the vector work of the next instead of stalling the pipeline.
template <LogitType kType, class Isa>
inline int64_t score_range_impl(const void* logits, int64_t T, int64_t N, int64_t C, int64_t st,
                                int64_t sn, float* out, int64_t n0, int64_t n1, Scratch& w) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float invT = 1.0f / static_cast<float>(T);
  const int64_t Cp = w.padded;
  vi valid_tail;
  for (int l = 0; l < kWidth; ++l) valid_tail[l] = Cp - kWidth + l < C ? -1 : 0;
  // Rows are 4 KB-page-sized stretches far apart (one per pass), which hardware prefetchers do
  // not follow: fetch each row one block-pass ahead.
  constexpr int64_t kElemBytes = kType == LogitType::F32 ? 4 : 2;
  const char* bytes = static_cast<const char*>(logits);
  auto prefetch_row = [&](int64_t t, int64_t n) {
    const char* p = bytes + (t * st + n * sn) * kElemBytes;
    for (int64_t b = 0; b < C * kElemBytes; b += 64) __builtin_prefetch(p + b);
  };
  int64_t first_bad = -1;
  BlockPass bp;
  PassStats stats[kBlock];
  for (int64_t nb = n0; nb < n1; nb += kBlock) {
    const int64_t nk = std::min(kBlock, n1 - nb);
    float h_sum[kBlock] = {}, pmax_sum[kBlock] = {}, margin_sum[kBlock] = {};
    bool live[kBlock];  // in range and every logit so far finite
    for (int64_t k = 0; k < kBlock; ++k) live[k] = k < nk;
    std::fill(w.pbar.begin(), w.pbar.begin() + nk * Cp, 0.0f);
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t k = 0; k < nk; ++k) {
        if (t + 1 < T)
          prefetch_row(t + 1, nb + k);
        else if (nb + kBlock + k < n1)
          prefetch_row(0, nb + kBlock + k);
        if (!live[k]) continue;
        bp.x[k] = widen<kType>(logits, t * st + (nb + k) * sn, C, w.row.data() + k * Cp, Cp);
        row_top2<Isa>(bp, k);
      }
      for (int64_t k = 0; k < nk; ++k)
        if (live[k]) row_exp<Isa>(bp, k, valid_tail, w.e.data() + k * Cp);
      block_stats<Isa>(bp, live, C, w, stats);
      for (int64_t k = 0; k < nk; ++k) {
        if (!live[k]) continue;
        live[k] = stats[k].finite;
        if (!live[k]) continue;
        h_sum[k] += stats[k].entropy;
        pmax_sum[k] += stats[k].pmax;
        margin_sum[k] += stats[k].margin;
        const float* e = w.e.data() + k * Cp;
        float* pbar = w.pbar.data() + k * Cp;
        const vf inv = simd::splat(stats[k].pmax);
        for (int64_t c = 0; c < Cp; c += kWidth)
          simd::store(pbar + c, simd::load(pbar + c) + simd::load(e + c) * inv);
      }
    }
    for (int64_t k = 0; k < nk; ++k) {
      const int64_t n = nb + k;
      if (!live[k]) {
        for (int s = 0; s < kNumScores; ++s) out[s * N + n] = nan;
        if (first_bad < 0) first_bad = n;
        continue;
      }
      // With one pass, H(p_bar) is the single-pass entropy: exact to fp32 and needs no logs.
      const MeanStats ms = mean_stats<Isa>(w.pbar.data() + k * Cp, Cp, invT, T > 1);
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

// Each entry point is compiled twice: for AVX2+FMA (x86-64) and for the baseline target.
// score_all picks one at run time, so the build stays portable (no -march flags) and still uses
// AVX2 where present.
using RangeFn = int64_t (*)(const void*, int64_t, int64_t, int64_t, int64_t, int64_t, float*,
                            int64_t, int64_t, Scratch&);

#define ALK_SCORE_RANGE(NAME, TYPE, ISA, ATTR)                                               \
  __attribute__((flatten)) ATTR int64_t NAME(const void* logits, int64_t T, int64_t N, int64_t C, int64_t st,          \
                    int64_t sn, float* out, int64_t n0, int64_t n1, Scratch& w) {              \
    return score_range_impl<TYPE, ISA>(logits, T, N, C, st, sn, out, n0, n1, w);              \
  }
ALK_SCORE_RANGE(score_range_f32_base, LogitType::F32, simd::Generic, )
ALK_SCORE_RANGE(score_range_f16_base, LogitType::F16, simd::Generic, )
ALK_SCORE_RANGE(score_range_bf16_base, LogitType::BF16, simd::Generic, )
#if defined(__x86_64__)
ALK_SCORE_RANGE(score_range_f32_avx2, LogitType::F32, simd::Avx2, ALK_TARGET_AVX2)
ALK_SCORE_RANGE(score_range_f16_avx2, LogitType::F16, simd::Avx2, ALK_TARGET_AVX2)
ALK_SCORE_RANGE(score_range_bf16_avx2, LogitType::BF16, simd::Avx2, ALK_TARGET_AVX2)
#endif
#undef ALK_SCORE_RANGE

RangeFn pick_kernel(LogitType type, KernelIsa isa) {
#if defined(__x86_64__)
  if (isa == KernelIsa::Best && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    switch (type) {
      case LogitType::F16: return score_range_f16_avx2;
      case LogitType::BF16: return score_range_bf16_avx2;
      default: return score_range_f32_avx2;
    }
  }
#endif
  switch (type) {
    case LogitType::F16: return score_range_f16_base;
    case LogitType::BF16: return score_range_bf16_base;
    default: return score_range_f32_base;
  }
}

}  // namespace

int64_t score_all(const void* logits, LogitType type, int64_t T, int64_t N, int64_t C,
                  int64_t stride_t, int64_t stride_n, float* out, KernelIsa isa) {
  const RangeFn kernel = pick_kernel(type, isa);
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
