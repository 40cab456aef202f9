// Portable 8-wide float SIMD on GCC/Clang vector extensions. The same source compiles to SSE2 by
// default and to AVX2/FMA inside functions built for that target, without -ffast-math: float
// reductions and exp/log stay explicit, so NaN/inf checks keep working.
//
// Kernels are templates over an instruction-set policy (`Generic` or, on x86-64, `Avx2`) that
// supplies max/min: GCC lowers `a > b ? a : b` on vectors to a compare and a blend when it merges
// the compares of a neighbouring min and max, so the AVX2 policy names vmaxps/vminps explicitly.
// Helpers are plain `inline`: the kernel entry points are `flatten`ed, which inlines the whole
// call tree into an entry built for the right target (always_inline would force the AVX2 max
// into generic helpers first, which GCC rejects).
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace alk::simd {

constexpr int kWidth = 8;
typedef float vf __attribute__((vector_size(32)));
typedef int32_t vi __attribute__((vector_size(32)));

inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
inline vf splat(float a) { return a - vf{}; }  // a - 0 folds to a broadcast; 0 + a does not (-0)
inline vf select(vi mask, vf a, vf b) { return mask ? a : b; }
inline vf as_float(vi v) {
  vf f;
  std::memcpy(&f, &v, sizeof f);
  return f;
}
inline vi as_int(vf v) {
  vi i;
  std::memcpy(&i, &v, sizeof i);
  return i;
}

// x86 max/min semantics on both policies: the second operand wherever the comparison is false
// (so where either is NaN).
struct Generic {
  static inline vf max(vf a, vf b) { return a > b ? a : b; }
  static inline vf min(vf a, vf b) { return a < b ? a : b; }
};

#if defined(__x86_64__)
#define ALK_TARGET_AVX2 __attribute__((target("avx2,fma")))
struct Avx2 {
  static ALK_TARGET_AVX2 inline vf max(vf a, vf b) {
    return reinterpret_cast<vf>(_mm256_max_ps(reinterpret_cast<__m256>(a), reinterpret_cast<__m256>(b)));
  }
  static ALK_TARGET_AVX2 inline vf min(vf a, vf b) {
    return reinterpret_cast<vf>(_mm256_min_ps(reinterpret_cast<__m256>(a), reinterpret_cast<__m256>(b)));
  }
};
#endif

// Horizontal reductions as a three-step butterfly (log2 of the width) instead of a serial chain,
// for float (vf) and int (vi) vectors alike.
template <class V>
inline V swap4(V v) { return __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3); }
template <class V>
inline V swap2(V v) { return __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5); }
template <class V>
inline V swap1(V v) { return __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6); }

template <class V>
inline auto hsum(V v) {
  v += swap4(v);
  v += swap2(v);
  v += swap1(v);
  return v[0];
}
template <class Isa>
inline float hmax(vf v) {
  v = Isa::max(v, swap4(v));
  v = Isa::max(v, swap2(v));
  v = Isa::max(v, swap1(v));
  return v[0];
}

// Lower clamp of exp2 arguments: 2^-125 ~ 2.4e-38 is still a normal float after the scaling
// below, and below the fp32 resolution of any probability that is summed with 2^0 = 1.
constexpr float kExp2Floor = -125.0f;
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2 = 0.693147180559945309f;

// 2^x for kExp2Floor <= x <= 0 (callers clamp). x = n + f with n = round(x), f in [-1/2, 1/2],
// 2^f by a degree-5 polynomial fitted for minimal relative error: at most 2.4e-7 relative error
// evaluated in float32.
inline vf exp2_clamped(vf x) {
  // Adding 1.5 * 2^23 rounds x to the nearest integer n and leaves n in the low mantissa bits,
  // so (bits << 23) is n << 23 without a float-to-int conversion.
  const vf shifted = x + 12582912.0f;
  const vf f = x - (shifted - 12582912.0f);
  vf p = splat(1.32764713e-3f);
  p = p * f + 9.67554096e-3f;
  p = p * f + 5.55071309e-2f;
  p = p * f + 2.40221202e-1f;
  p = p * f + 6.93146944e-1f;
  p = p * f + 1.00000012f;
  // Scale by 2^n by adding n to the exponent field: p >= 0.7 and n >= -125 keep it normal.
  return as_float(as_int(p) + (as_int(shifted) << 23));
}

// log(x) for normal positive x (callers clamp to FLT_MIN). x = 2^k m with m in [sqrt(1/2),
// sqrt(2)), found by integer arithmetic on the bits; log(m) = f P(f) with f = m - 1 and P a
// degree-7 polynomial fitted for minimal absolute error: at most 7e-8 absolute error in log(m)
// evaluated in float32, and k ln2 is added in one fused multiply-add.
inline vf log(vf x) {
  const vi u = as_int(x);
  const vi k = (u - 0x3f3504f3) >> 23;  // arithmetic shift: floor(log2(x / sqrt(1/2)))
  const vf f = as_float(u - (k << 23)) - 1.0f;
  vf p = splat(-1.0102244e-1f);
  p = p * f + 1.6419993e-1f;
  p = p * f - 1.7333464e-1f;
  p = p * f + 1.9873045e-1f;
  p = p * f - 2.4959344e-1f;
  p = p * f + 3.3336183e-1f;
  p = p * f - 5.0000668e-1f;
  p = p * f + 9.9999982e-1f;
  return __builtin_convertvector(k, vf) * 0.693147181f + f * p;
}

}  // namespace alk::simd
