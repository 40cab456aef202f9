// SIMD helpers on GCC/Clang vector extensions, shared by every kernel family.
//
// Include this header only from a per-ISA translation unit (see common/isa.h), after its
// `#pragma GCC target(...)` and after defining exactly one of ALK_BUILD_AVX512, ALK_BUILD_AVX2
// or ALK_BUILD_BASELINE: every helper then compiles for that target. All of it sits in an
// unnamed namespace, so each build keeps its own copies and the linker can never hand one
// build's helper to another (an AVX2 copy reaching a CPU without AVX2).
//
// No -ffast-math anywhere: float reductions, exp and log stay explicit, so NaN/inf checks work.
#pragma once

#include <stdint.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#if defined(ALK_BUILD_AVX512) + defined(ALK_BUILD_AVX2) + defined(ALK_BUILD_BASELINE) != 1
#error "define exactly one of ALK_BUILD_AVX512, ALK_BUILD_AVX2, ALK_BUILD_BASELINE before common/simd.h"
#endif

namespace alk::simd {
namespace {

// Vectors of kBytes bytes of T. Where the target lacks the width, the compiler splits them.
template <typename T, int kBytes>
struct Vec {
  typedef T type __attribute__((vector_size(kBytes)));
  static constexpr int64_t kLanes = kBytes / static_cast<int64_t>(sizeof(T));
  static inline type load(const T* p) {
    type v;
    __builtin_memcpy(&v, p, sizeof(type));
    return v;
  }
  static inline void store(T* p, type v) { __builtin_memcpy(p, &v, sizeof(type)); }
  // s - 0 (not 0 + s, which is not s for s = -0): folds to a bare broadcast that GEMMs fuse into
  // their FMAs, where 0 + s costs a scalar add per element.
  static inline type splat(T s) { return s - type{}; }
};

// ---- 8-wide float, the width of the acquisition kernels ------------------------------------
constexpr int kWidth = 8;
using vf = Vec<float, 32>::type;
typedef int32_t vi __attribute__((vector_size(32)));

inline vf load(const float* p) { return Vec<float, 32>::load(p); }
inline void store(float* p, vf v) { Vec<float, 32>::store(p, v); }
inline vf splat(float a) { return Vec<float, 32>::splat(a); }
inline vf select(vi mask, vf a, vf b) { return mask ? a : b; }
inline vf as_float(vi v) {
  vf f;
  __builtin_memcpy(&f, &v, sizeof f);
  return f;
}
inline vi as_int(vf v) {
  vi i;
  __builtin_memcpy(&i, &v, sizeof i);
  return i;
}

// x86 max/min semantics in every build: the second operand wherever the comparison is false (so
// where either is NaN). The AVX builds name vmaxps/vminps: GCC lowers the ternary of a
// neighbouring max and min pair to compares and blends.
#if defined(ALK_BUILD_BASELINE)
inline vf vmax(vf a, vf b) { return a > b ? a : b; }
inline vf vmin(vf a, vf b) { return a < b ? a : b; }
#else
inline vf vmax(vf a, vf b) {
  return reinterpret_cast<vf>(_mm256_max_ps(reinterpret_cast<__m256>(a), reinterpret_cast<__m256>(b)));
}
inline vf vmin(vf a, vf b) {
  return reinterpret_cast<vf>(_mm256_min_ps(reinterpret_cast<__m256>(a), reinterpret_cast<__m256>(b)));
}
#endif

// Horizontal reductions as a three-step butterfly instead of a serial chain, for float (vf) and
// int (vi) vectors alike.
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
inline float hmax(vf v) {
  v = vmax(v, swap4(v));
  v = vmax(v, swap2(v));
  v = vmax(v, swap1(v));
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

// ---- exact scalar conversions from the 16-bit float formats to float32 ----------------------
inline float bits_to_float(uint32_t u) {
  float f;
  __builtin_memcpy(&f, &u, sizeof f);
  return f;
}

// IEEE half -> float, exact (subnormals, inf and NaN included).
inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0x1fu) return bits_to_float(sign | 0x7f800000u | (man << 13));
  if (exp != 0) return bits_to_float(sign | ((exp + 112u) << 23) | (man << 13));
  // subnormal or zero: value = man * 2^-24
  const float v = static_cast<float>(man) * 5.9604644775390625e-8f;
  return sign ? -v : v;
}

// bfloat16 -> float is the upper half of the float's bits.
inline float bf16_to_float(uint16_t b) { return bits_to_float(static_cast<uint32_t>(b) << 16); }

}  // namespace
}  // namespace alk::simd
