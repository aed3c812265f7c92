// i8 kernels with AVX-VNNI (VEX-encoded vpdpbusd, 256-bit: Alder Lake and later client cores,
// Zen 5, ...), for CPUs at the avx2 level. Compiled with -mavx2 -mavxvnni; dispatch.cpp puts
// them in the avx2 table only after CPUID says AVX-VNNI is there. See kernels.h for the rule.
//
// vpdpbusd multiplies unsigned bytes (the codes) by signed bytes (the query) and adds each
// group of four products to a 32-bit lane without saturation, which is exactly the i8 dot.
#include <immintrin.h>

#include "kernels.h"

namespace ebrix::simd {
namespace {

inline __m256i load32(const void* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline __m128i load16(const void* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }

int32_t dot(const uint8_t* x, const int8_t* q, size_t dim) {
  __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
  size_t i = 0;
  for (; i + 64 <= dim; i += 64) {
    acc0 = _mm256_dpbusd_avx_epi32(acc0, load32(x + i), load32(q + i));
    acc1 = _mm256_dpbusd_avx_epi32(acc1, load32(x + i + 32), load32(q + i + 32));
  }
  if (i + 32 <= dim) {
    acc0 = _mm256_dpbusd_avx_epi32(acc0, load32(x + i), load32(q + i));
    i += 32;
  }
  const __m256i acc = _mm256_add_epi32(acc0, acc1);
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
  if (i + 16 <= dim) {
    s = _mm_dpbusd_avx_epi32(s, load16(x + i), load16(q + i));
    i += 16;
  }
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  int32_t sum = _mm_cvtsi128_si32(s);
  for (; i < dim; ++i) sum += static_cast<int32_t>(x[i]) * q[i];
  return sum;
}

void scanRows(const int8_t* query, const uint8_t* rows, size_t count, size_t dim, float scale, float offset,
              const float* bias, float* scores) {
  for (size_t r = 0; r < count; ++r) {
    scores[r] = static_cast<float>(dot(rows + r * dim, query, dim)) * scale + offset + (bias ? bias[r] : 0.0f);
  }
}

const KernelsI8 kTable = {"avx2-vnni", dot, scanRows, scanRows};

}  // namespace

const KernelsI8& avxVnniI8Kernels() { return kTable; }

}  // namespace ebrix::simd
