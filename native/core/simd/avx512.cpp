// AVX-512 (F, BW, DQ, VL) kernels. Compiled with -mavx512f and friends; only ever called
// after dispatch.cpp has confirmed the CPU and the OS support the extension.
#include <immintrin.h>

#include <utility>

#include "half.h"
#include "kernels.h"

// GCC 12's own AVX-512 headers build "undefined" vectors from themselves, which its
// uninitialised-use analysis then reports inside every extract/cast; the code is correct.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace ebrix::simd {
namespace {

constexpr int kRows = 12;  // 12 queries × 2 registers = 24 accumulators of 32
constexpr int kCols = 32;

// Sum of the 16 lanes.
inline float horizontalSum(__m512 v) {
  const __m256 half = _mm256_add_ps(_mm512_castps512_ps256(v),
                                    _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(half), _mm256_extractf128_ps(half, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __mmask16 tailMask(size_t remaining) {
  return static_cast<__mmask16>((1u << remaining) - 1u);
}

float dot(const float* a, const float* b, size_t dim) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= dim; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
  }
  for (; i < dim; i += 16) {
    const __mmask16 m = dim - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tailMask(dim - i);
    acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc0);
  }
  return horizontalSum(_mm512_add_ps(acc0, acc1));
}

float l2sq(const float* a, const float* b, size_t dim) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= dim; i += 32) {
    const __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
    const __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16));
    acc0 = _mm512_fmadd_ps(d0, d0, acc0);
    acc1 = _mm512_fmadd_ps(d1, d1, acc1);
  }
  for (; i < dim; i += 16) {
    const __mmask16 m = dim - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tailMask(dim - i);
    const __m512 d0 = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i));
    acc0 = _mm512_fmadd_ps(d0, d0, acc0);
  }
  return horizontalSum(_mm512_add_ps(acc0, acc1));
}

// One row at a time, as one sequential stream: interleaving several rows' loads measured
// about a third slower here, as the hardware prefetchers follow a single stream best.
void scanRows(const float* query, const float* rows, size_t count, size_t dim,
              const float* bias, float* scores) {
  for (size_t r = 0; r < count; ++r) {
    scores[r] = dot(query, rows + r * dim, dim) + (bias ? bias[r] : 0.0f);
  }
}

// Four rows at a time with two accumulators each: eight independent FMA chains, for rows
// that come from cache (where the single-stream argument above does not apply).
void scanRowsCached(const float* query, const float* rows, size_t count, size_t dim,
                    const float* bias, float* scores) {
  size_t r = 0;
  for (; r + 4 <= count; r += 4) {
    const float* x = rows + r * dim;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps(), b2 = _mm512_setzero_ps(), b3 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= dim; i += 32) {
      const __m512 q0 = _mm512_loadu_ps(query + i), q1 = _mm512_loadu_ps(query + i + 16);
      a0 = _mm512_fmadd_ps(q0, _mm512_loadu_ps(x + i), a0);
      b0 = _mm512_fmadd_ps(q1, _mm512_loadu_ps(x + i + 16), b0);
      a1 = _mm512_fmadd_ps(q0, _mm512_loadu_ps(x + dim + i), a1);
      b1 = _mm512_fmadd_ps(q1, _mm512_loadu_ps(x + dim + i + 16), b1);
      a2 = _mm512_fmadd_ps(q0, _mm512_loadu_ps(x + 2 * dim + i), a2);
      b2 = _mm512_fmadd_ps(q1, _mm512_loadu_ps(x + 2 * dim + i + 16), b2);
      a3 = _mm512_fmadd_ps(q0, _mm512_loadu_ps(x + 3 * dim + i), a3);
      b3 = _mm512_fmadd_ps(q1, _mm512_loadu_ps(x + 3 * dim + i + 16), b3);
    }
    float s[4] = {horizontalSum(a0 + b0), horizontalSum(a1 + b1), horizontalSum(a2 + b2), horizontalSum(a3 + b3)};
    for (; i < dim; ++i) {
      for (int j = 0; j < 4; ++j) s[j] += query[i] * x[j * dim + i];
    }
    for (int j = 0; j < 4; ++j) scores[r + j] = s[j] + (bias ? bias[r + j] : 0.0f);
  }
  for (; r < count; ++r) scores[r] = dot(query, rows + r * dim, dim) + (bias ? bias[r] : 0.0f);
}

template <int MR>
void tileFixed(const float* packedQueries, const float* packedRows, size_t dim,
               const float* thresholds, float* out, uint32_t* masks) {
  __m512 c0[MR], c1[MR];
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i) c0[i] = c1[i] = _mm512_setzero_ps();
  const float* q = packedQueries;
  const float* x = packedRows;
  for (size_t k = 0; k < dim; ++k, q += kRows, x += kCols) {
    const __m512 b0 = _mm512_loadu_ps(x);
    const __m512 b1 = _mm512_loadu_ps(x + 16);
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
      const __m512 a = _mm512_set1_ps(q[i]);
      c0[i] = _mm512_fmadd_ps(a, b0, c0[i]);
      c1[i] = _mm512_fmadd_ps(a, b1, c1[i]);
    }
  }
  const float* bias = packedRows + dim * kCols;
  const __m512 bias0 = _mm512_loadu_ps(bias);
  const __m512 bias1 = _mm512_loadu_ps(bias + 16);
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i) {
    const __m512 s0 = _mm512_add_ps(c0[i], bias0);
    const __m512 s1 = _mm512_add_ps(c1[i], bias1);
    _mm512_storeu_ps(out + i * kCols, s0);
    _mm512_storeu_ps(out + i * kCols + 16, s1);
    const __m512 t = _mm512_set1_ps(thresholds[i]);
    const uint32_t lo = _mm512_cmp_ps_mask(s0, t, _CMP_GE_OQ);
    const uint32_t hi = _mm512_cmp_ps_mask(s1, t, _CMP_GE_OQ);
    masks[i] = lo | (hi << 16);
  }
}

#include "tile_dispatch.h"
#include "transpose_avx2.h"

// 16-bit rows: Lanes widens 16 stored elements (one 256-bit load) to floats. Tails use the
// masked 16-bit load of AVX512BW, so nothing past the row is read.
inline __m512 f16Lanes(__m256i h) { return _mm512_cvtph_ps(h); }
inline __m512 bf16Lanes(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }

inline __m256i load16x16(const uint16_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

template <__m512 (*Lanes)(__m256i)>
float dot16(const float* q, const uint16_t* x, size_t dim) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= dim; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), Lanes(load16x16(x + i)), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i + 16), Lanes(load16x16(x + i + 16)), acc1);
  }
  for (; i < dim; i += 16) {
    const __mmask16 m = dim - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tailMask(dim - i);
    acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + i), Lanes(_mm256_maskz_loadu_epi16(m, x + i)), acc0);
  }
  return horizontalSum(_mm512_add_ps(acc0, acc1));
}

template <__m512 (*Lanes)(__m256i)>
float l2sq16(const float* q, const uint16_t* x, size_t dim) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= dim; i += 32) {
    const __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(q + i), Lanes(load16x16(x + i)));
    const __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(q + i + 16), Lanes(load16x16(x + i + 16)));
    acc0 = _mm512_fmadd_ps(d0, d0, acc0);
    acc1 = _mm512_fmadd_ps(d1, d1, acc1);
  }
  for (; i < dim; i += 16) {
    const __mmask16 m = dim - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tailMask(dim - i);
    const __m512 d0 = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, q + i), Lanes(_mm256_maskz_loadu_epi16(m, x + i)));
    acc0 = _mm512_fmadd_ps(d0, d0, acc0);
  }
  return horizontalSum(_mm512_add_ps(acc0, acc1));
}

template <__m512 (*Lanes)(__m256i)>
void scanRows16(const float* query, const uint16_t* rows, size_t count, size_t dim,
                const float* bias, float* scores) {
  for (size_t r = 0; r < count; ++r) {
    scores[r] = dot16<Lanes>(query, rows + r * dim, dim) + (bias ? bias[r] : 0.0f);
  }
}

// i8 rows without VNNI (AVX512BW): codes and query bytes widened to 16 bits, multiplied and
// pair-summed exactly by vpmaddwd (not the saturating vpmaddubsw, see avx2.cpp). A CPU with
// AVX512-VNNI gets i8_avx512vnni.cpp's kernels instead (dispatch.cpp).
inline __m512i widenCodes16(__m256i bytes) { return _mm512_cvtepu8_epi16(bytes); }
inline __m512i widenQuery16(__m256i bytes) { return _mm512_cvtepi8_epi16(bytes); }
inline __m256i load8x32(const void* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

inline int32_t horizontalSumI32(__m512i v) {
  const __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

int32_t dotI8(const uint8_t* x, const int8_t* q, size_t dim) {
  __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
  size_t i = 0;
  for (; i + 64 <= dim; i += 64) {
    acc0 = _mm512_add_epi32(acc0, _mm512_madd_epi16(widenCodes16(load8x32(x + i)), widenQuery16(load8x32(q + i))));
    acc1 = _mm512_add_epi32(acc1,
                            _mm512_madd_epi16(widenCodes16(load8x32(x + i + 32)), widenQuery16(load8x32(q + i + 32))));
  }
  for (; i < dim; i += 32) {
    const __mmask32 m = dim - i >= 32 ? ~__mmask32{0} : static_cast<__mmask32>((1u << (dim - i)) - 1u);
    acc0 = _mm512_add_epi32(acc0, _mm512_madd_epi16(widenCodes16(_mm256_maskz_loadu_epi8(m, x + i)),
                                                    widenQuery16(_mm256_maskz_loadu_epi8(m, q + i))));
  }
  return horizontalSumI32(_mm512_add_epi32(acc0, acc1));
}

void scanRowsI8(const int8_t* query, const uint8_t* rows, size_t count, size_t dim, float scale, float offset,
                const float* bias, float* scores) {
  for (size_t r = 0; r < count; ++r) {
    scores[r] = static_cast<float>(dotI8(rows + r * dim, query, dim)) * scale + offset + (bias ? bias[r] : 0.0f);
  }
}

constexpr int kFmaChains = 16;

float fmaLoop(size_t iterations) {
  __m512 acc[kFmaChains];
  for (int i = 0; i < kFmaChains; ++i) acc[i] = _mm512_set1_ps(0.001f * static_cast<float>(i + 1));
  const __m512 mul = _mm512_set1_ps(0.999f), add = _mm512_set1_ps(0.001f);
  for (size_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < kFmaChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], mul, add);
  }
  __m512 sum = acc[0];
  for (int i = 1; i < kFmaChains; ++i) sum = _mm512_add_ps(sum, acc[i]);
  return horizontalSum(sum);
}

const Kernels kTable = {
    Level::Avx512, "avx512", kRows, kCols, dot, l2sq, scanRows, tile, packPanel, fmaLoop, kFmaChains * 16 * 2,
    {dot16<f16Lanes>, l2sq16<f16Lanes>, scanRows16<f16Lanes>, packPanel16<widenF16x8, f16ToFloat>, floatsToF16,
     f16ToFloats},
    {dot16<bf16Lanes>, l2sq16<bf16Lanes>, scanRows16<bf16Lanes>, packPanel16<widenBf16x8, bf16ToFloat>,
     floatsToBf16Scalar, bf16ToFloatsScalar},
    {"avx512", dotI8, scanRowsI8, scanRowsI8},
    scanRowsCached,
};

}  // namespace

const Kernels& avx512Kernels() { return kTable; }

}  // namespace ebrix::simd
