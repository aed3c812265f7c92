// i8 kernels with AVX512-VNNI (EVEX vpdpbusd, 512-bit: Ice Lake / Cascade Lake and later
// Xeons, Zen 4 and later), for CPUs at the avx512 level. Compiled with the AVX-512 flags and
// -mavx512vnni; dispatch.cpp puts them in the avx512 table only after CPUID says AVX512-VNNI
// is there. See kernels.h for the rule of ISA files.
//
// vpdpbusd multiplies unsigned bytes (the codes) by signed bytes (the query) and adds each
// group of four products to a 32-bit lane without saturation, which is exactly the i8 dot.
// Tails use zeroing masked loads, so nothing past a row is read and padding adds nothing.
#include <immintrin.h>

#include "kernels.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace ebrix::simd {
namespace {

inline int32_t horizontalSum(__m512i v) {
  const __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

int32_t dot(const uint8_t* x, const int8_t* q, size_t dim) {
  __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
  size_t i = 0;
  for (; i + 128 <= dim; i += 128) {
    acc0 = _mm512_dpbusd_epi32(acc0, _mm512_loadu_si512(x + i), _mm512_loadu_si512(q + i));
    acc1 = _mm512_dpbusd_epi32(acc1, _mm512_loadu_si512(x + i + 64), _mm512_loadu_si512(q + i + 64));
  }
  for (; i < dim; i += 64) {
    const __mmask64 m = dim - i >= 64 ? ~__mmask64{0} : static_cast<__mmask64>((uint64_t{1} << (dim - i)) - 1u);
    acc0 = _mm512_dpbusd_epi32(acc0, _mm512_maskz_loadu_epi8(m, x + i), _mm512_maskz_loadu_epi8(m, q + i));
  }
  return horizontalSum(_mm512_add_epi32(acc0, acc1));
}

void scanRows(const int8_t* query, const uint8_t* rows, size_t count, size_t dim, float scale, float offset,
              const float* bias, float* scores) {
  for (size_t r = 0; r < count; ++r) {
    scores[r] = static_cast<float>(dot(rows + r * dim, query, dim)) * scale + offset + (bias ? bias[r] : 0.0f);
  }
}

const KernelsI8 kTable = {"avx512-vnni", dot, scanRows, scanRows};

}  // namespace

const KernelsI8& avx512VnniI8Kernels() { return kTable; }

}  // namespace ebrix::simd
