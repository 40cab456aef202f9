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

constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2 = 0.693147180559945309f;

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

// ---- 16-wide float, the row width of the AVX-512 acquisition build ---------------------------
// Overloads of the 8-wide helpers above; reductions fold the two 8-lane halves first.
using vf16 = Vec<float, 64>::type;
typedef int32_t vi16 __attribute__((vector_size(64)));

inline vf16 select(vi16 mask, vf16 a, vf16 b) { return mask ? a : b; }
inline vf16 as_float(vi16 v) {
  vf16 f;
  __builtin_memcpy(&f, &v, sizeof f);
  return f;
}
inline vi16 as_int(vf16 v) {
  vi16 i;
  __builtin_memcpy(&i, &v, sizeof i);
  return i;
}
#if defined(ALK_BUILD_AVX512)
// The 512-bit intrinsics here are the masked forms with an all-ones mask (the same instruction):
// GCC 12's unmasked ones pass an uninitialised vector through and warn under -Wall.
constexpr __mmask16 kAll16 = 0xffff;
inline __m512 m512(vf16 v) { return reinterpret_cast<__m512>(v); }
inline vf16 vf16_of(__m512 v) { return reinterpret_cast<vf16>(v); }
inline vf16 vmax(vf16 a, vf16 b) {
  return vf16_of(_mm512_mask_max_ps(m512(a), kAll16, m512(a), m512(b)));
}
inline vf16 vmin(vf16 a, vf16 b) {
  return vf16_of(_mm512_mask_min_ps(m512(a), kAll16, m512(a), m512(b)));
}
#else
inline vf16 vmax(vf16 a, vf16 b) { return a > b ? a : b; }
inline vf16 vmin(vf16 a, vf16 b) { return a < b ? a : b; }
#endif

// The lower and upper 8 lanes of a 16-lane vector, and the two joined again.
template <class V>
inline auto low8(V v) { return __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7); }
template <class V>
inline auto high8(V v) { return __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15); }
inline vf16 join8(vf lo, vf hi) {
  return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}

inline float hsum(vf16 v) { return hsum(low8(v) + high8(v)); }
inline int32_t hsum(vi16 v) { return hsum(low8(v) + high8(v)); }
inline float hmax(vf16 v) { return hmax(vmax(low8(v), high8(v))); }
// log as above, lane by lane (the acquisition kernel takes it once per class and sample).
inline vf16 log(vf16 x) { return join8(log(low8(x)), log(high8(x))); }

// The first n lanes of V from p (0 <= n <= lanes), the other lanes `fill`; memory past p[n - 1]
// is not read (masked loads where the build has them).
template <class V>
inline V load_first(const float* p, int64_t n, float fill) {
  constexpr int kLanes = sizeof(V) / sizeof(float);
#if defined(ALK_BUILD_AVX512)
  const unsigned mask = (1u << n) - 1u;
  if constexpr (kLanes == 16)
    return vf16_of(_mm512_mask_loadu_ps(_mm512_set1_ps(fill), static_cast<__mmask16>(mask), p));
  else
    return reinterpret_cast<vf>(
        _mm256_mask_loadu_ps(_mm256_set1_ps(fill), static_cast<__mmask8>(mask), p));
#elif defined(ALK_BUILD_AVX2)
  static_assert(kLanes == 8, "the AVX2 build loads 8 lanes");
  const vi lane = {0, 1, 2, 3, 4, 5, 6, 7};
  const vi in = lane < (vi{} + static_cast<int32_t>(n));
  const vf v = reinterpret_cast<vf>(_mm256_maskload_ps(p, reinterpret_cast<__m256i>(in)));
  return select(in, v, splat(fill));
#else
  float buf[kLanes];
  for (int l = 0; l < kLanes; ++l) buf[l] = l < n ? p[l] : fill;
  V v;
  __builtin_memcpy(&v, buf, sizeof v);
  return v;
#endif
}

// a b + c with one rounding where the build has FMA (the baseline build rounds twice).
#if defined(ALK_BUILD_AVX512) || defined(ALK_BUILD_AVX2)
inline __m256 m256(vf v) { return reinterpret_cast<__m256>(v); }
inline vf fmadd(vf a, vf b, vf c) {
  return reinterpret_cast<vf>(_mm256_fmadd_ps(m256(a), m256(b), m256(c)));
}
#endif
#if defined(ALK_BUILD_AVX512)
inline vf16 fmadd(vf16 a, vf16 b, vf16 c) {
  return vf16_of(_mm512_fmadd_ps(m512(a), m512(b), m512(c)));
}
#elif defined(ALK_BUILD_BASELINE)
template <class V>
inline V fmadd(V a, V b, V c) { return a * b + c; }
#endif

// e^d for d <= 0, as one shared polynomial in every build; the argument is clamped to
// max(d, kExpFloor) (a NaN d stays NaN). Range reduction: d = n ln2 + r with n = round(d log2 e)
// and |r| <= ln2 / 2 (+ rounding). With FMA, r = d - n ln2 in one fused step (n times float(ln2)
// is exact inside it; float(ln2) is 1.9e-9 above ln2, which adds |n| 1.9e-9 to the relative
// error, 2.4e-7 at n = -125); the baseline build, without FMA, takes two steps (Cody-Waite) with
// ln2 = C1 + C2, C1 = 355/512 short enough that n C1 is exact for |n| < 2^15.
// e^r = 1 + r (1 + r (c2 + r (c3 + r (c4 + r c5)))), c_k fitted for minimal relative error on
// |r| <= 0.3486 (linear-programming minimax, then float32 rounding of the coefficients tuned on
// the float32 evaluation), so e^0 is exactly 1. Then 2^n: in the AVX-512 build by vscalefps,
// which rounds to float32's subnormals and to exactly 0 (kExpFloor = -110 gives n >= -159, and
// 2^-159 rounds to 0); elsewhere by adding n to the exponent field, valid for n >= -125
// (kExpFloor = -125 ln2 keeps the result normal, ~2.4e-38 for every d below it).
// Measured max relative error over every float32 d down to the build's smallest normal result
// (benchmarks/exp_accuracy.py): see docs/performance.md.
#if defined(ALK_BUILD_AVX512)
constexpr float kExpFloor = -110.0f;
constexpr bool kExpUnderflowsToZero = true;
#else
constexpr float kExpFloor = -86.6433945f;  // float(-125 ln 2), rounded toward 0
constexpr bool kExpUnderflowsToZero = false;
#endif

#if defined(ALK_BUILD_AVX512)
inline vf scale_pow2(vf p, vf n, vf) {
  return reinterpret_cast<vf>(_mm256_scalef_ps(m256(p), m256(n)));
}
inline vf16 scale_pow2(vf16 p, vf16 n, vf16) {
  return vf16_of(_mm512_mask_scalef_ps(m512(p), kAll16, m512(p), m512(n)));
}
#else
// p 2^n with n in the low bits of `shifted` (n + 1.5 2^23): those bits shifted into the exponent
// field; the high bits of `shifted` shift out.
template <class V>
inline V scale_pow2(V p, V, V shifted) { return as_float(as_int(p) + (as_int(shifted) << 23)); }
#endif

template <class V>
inline V exp_le0(V d) {
  const V x = vmax(kExpFloor - V{}, d);  // vmax returns its second operand on NaN
  // Adding 1.5 * 2^23 rounds x log2(e) to the nearest integer n, in the low mantissa bits.
  const V shifted = x * kLog2e + 12582912.0f;
  const V n = shifted - 12582912.0f;
#if defined(ALK_BUILD_BASELINE)
  V r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
#else
  const V r = fmadd(n, -kLn2 - V{}, x);
#endif
  V p = 8.33730306e-3f - V{};
  p = p * r + 4.19131890e-2f;
  p = p * r + 1.66667417e-1f;
  p = p * r + 4.99989897e-1f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return scale_pow2(p, n, shifted);
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

// Widens IEEE halves src[0, n) to float32, exactly, as far as the build converts in vector
// registers (16 at a time with vcvtph2ps in the AVX-512 build, none elsewhere); returns how many
// it converted, a multiple of 16 (the caller converts the rest with half_to_float).
inline int64_t widen_halves(const uint16_t* src, int64_t n, float* dst) {
#if defined(ALK_BUILD_AVX512)
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    _mm512_storeu_ps(dst + i, _mm512_maskz_cvtph_ps(kAll16, h));
  }
  return i;
#else
  (void)src, (void)n, (void)dst;
  return 0;
#endif
}

}  // namespace
}  // namespace alk::simd
