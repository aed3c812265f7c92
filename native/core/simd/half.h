// Scalar float32 <-> f16 / bf16 conversions, round to nearest even: the reference every
// ISA's vector conversion is tested against, and the tail loops of those kernels.
//
// Usable by the ISA files (see the rule in kernels.h): everything here is `static inline`,
// so each translation unit keeps its own copy, compiled with its own flags, and the linker
// never merges an AVX-512 copy into the scalar path. No standard-library templates.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ebrix::simd {

static inline uint32_t halfFloatBits(float f) {
  uint32_t x;
  __builtin_memcpy(&x, &f, sizeof x);
  return x;
}

static inline float halfBitsFloat(uint32_t x) {
  float f;
  __builtin_memcpy(&f, &x, sizeof f);
  return f;
}

// Magnitudes from this one up round to infinity in f16 (65504 is the largest finite f16;
// 65520 is the midpoint to the next power of two, and ties go to even, i.e. up).
constexpr float kF16RoundsToInfinity = 65520.0f;

static inline uint16_t floatToF16(float f) {
  const uint32_t x = halfFloatBits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t a = x & 0x7FFFFFFFu;
  if (a >= 0x7F800000u) return static_cast<uint16_t>(sign | 0x7C00u | (a > 0x7F800000u ? 0x0200u : 0u));
  if (a >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // >= 65520: infinity
  if (a < 0x38800000u) {
    // Below 2^-14: a subnormal f16 (units of 2^-24). Adding 0.5, whose float ulp is 2^-24,
    // makes the FPU round the magnitude to a multiple of 2^-24, to nearest even.
    const float sum = halfBitsFloat(a) + 0.5f;
    return static_cast<uint16_t>(sign | (halfFloatBits(sum) - 0x3F000000u));
  }
  // Normal: rebias the exponent (127 -> 15) and round the 13 dropped bits to nearest even; a
  // carry out of the mantissa correctly bumps the exponent.
  const uint32_t rounded = a - (uint32_t{112} << 23) + 0x0FFFu + ((a >> 13) & 1u);
  return static_cast<uint16_t>(sign | (rounded >> 13));
}

static inline float f16ToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1Fu;
  const uint32_t mantissa = h & 0x3FFu;
  if (exponent == 0) {
    const float magnitude = static_cast<float>(mantissa) * (1.0f / 16777216.0f);  // exact
    return halfBitsFloat(sign | halfFloatBits(magnitude));
  }
  if (exponent == 31) return halfBitsFloat(sign | 0x7F800000u | (mantissa << 13));
  return halfBitsFloat(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

static inline uint16_t floatToBf16(float f) {
  const uint32_t x = halfFloatBits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x0040u);  // quiet NaN
  return static_cast<uint16_t>((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

static inline float bf16ToFloat(uint16_t h) { return halfBitsFloat(static_cast<uint32_t>(h) << 16); }

static inline void floatsToF16Scalar(const float* src, uint16_t* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = floatToF16(src[i]);
}
static inline void f16ToFloatsScalar(const uint16_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = f16ToFloat(src[i]);
}
static inline void floatsToBf16Scalar(const float* src, uint16_t* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = floatToBf16(src[i]);
}
static inline void bf16ToFloatsScalar(const uint16_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = bf16ToFloat(src[i]);
}

}  // namespace ebrix::simd
