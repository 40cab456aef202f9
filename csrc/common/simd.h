// Portable 8-wide float SIMD on GCC/Clang vector extensions. The same source compiles to SSE2 by
// default and to AVX2/FMA inside functions built for a wider target (target_clones), without
// -ffast-math: float reductions and exp/log stay explicit, so NaN/inf checks keep working.
#pragma once

#include <cstdint>
#include <cstring>

namespace alk::simd {

constexpr int kWidth = 8;
typedef float vf __attribute__((vector_size(32)));
typedef int32_t vi __attribute__((vector_size(32)));

__attribute__((always_inline)) inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
__attribute__((always_inline)) inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
__attribute__((always_inline)) inline vf splat(float a) { return vf{} + a; }
__attribute__((always_inline)) inline vf max(vf a, vf b) { return a > b ? a : b; }
__attribute__((always_inline)) inline vf min(vf a, vf b) { return a < b ? a : b; }
__attribute__((always_inline)) inline vf select(vi mask, vf a, vf b) { return mask ? a : b; }
__attribute__((always_inline)) inline vf as_float(vi v) {
  vf f;
  std::memcpy(&f, &v, sizeof f);
  return f;
}
__attribute__((always_inline)) inline vi as_int(vf v) {
  vi i;
  std::memcpy(&i, &v, sizeof i);
  return i;
}

__attribute__((always_inline)) inline float hsum(vf v) {
  float s = 0.0f;
  for (int l = 0; l < kWidth; ++l) s += v[l];
  return s;
}
__attribute__((always_inline)) inline float hmax(vf v) {
  float m = v[0];
  for (int l = 1; l < kWidth; ++l) m = v[l] > m ? v[l] : m;
  return m;
}
__attribute__((always_inline)) inline int32_t hsum(vi v) {
  int32_t s = 0;
  for (int l = 0; l < kWidth; ++l) s += v[l];
  return s;
}

// exp(x) for x <= 0 (not NaN); x below -87.3 is clamped there (exp ~ 1e-38, below fp32
// resolution of any probability that is summed with exp(0) = 1). Cephes expf polynomial, ~2 ulp.
__attribute__((always_inline)) inline vf exp_nonpos(vf x) {
  x = max(x, splat(-87.3f));
  const vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  vf r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  vf p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = (p * r + 1.0f) * r + 1.0f;  // = p r^2 + r + 1, as two FMAs
  // Scale by 2^n by adding n to the exponent field: with x >= -87.3 the result stays normal.
  return as_float(as_int(p) + (__builtin_convertvector(n, vi) << 23));
}

// log(x) for normal positive x (callers clamp to FLT_MIN). Cephes logf polynomial, ~2 ulp.
__attribute__((always_inline)) inline vf log(vf x) {
  const vi u = as_int(x);
  vi e = ((u >> 23) & 0xff) - 127;
  vf m = as_float((u & 0x007fffff) | 0x3f800000);  // mantissa in [1, 2)
  const vi big = m > 1.41421356f;                   // move m into [sqrt(1/2), sqrt(2))
  m = select(big, m * 0.5f, m);
  e = e - big;  // big is -1 where true
  const vf f = m - 1.0f;
  const vf z = f * f;
  vf p = splat(7.0376836292e-2f);
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  const vf fe = __builtin_convertvector(e, vf);
  vf y = p * f * z + fe * -2.12194440e-4f - 0.5f * z;
  return f + y + fe * 0.693359375f;
}

}  // namespace alk::simd
