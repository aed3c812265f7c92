// AVX2 + FMA kernels. Compiled with -mavx2 -mfma; only ever called after dispatch.cpp has
// confirmed the CPU and the OS support them.
#include <immintrin.h>

#include <utility>

#include "half.h"
#include "kernels.h"
#include "../prefetch.h"

namespace ebrix::simd {
namespace {

constexpr int kRows = 6;  // 6 queries × 2 registers = 12 accumulators of 16
constexpr int kCols = 16;

// Lane masks for _mm256_maskload_ps: entry n enables the first n lanes.
alignas(32) const int32_t kTailMasks[9][8] = {
    {0, 0, 0, 0, 0, 0, 0, 0},         {-1, 0, 0, 0, 0, 0, 0, 0},
    {-1, -1, 0, 0, 0, 0, 0, 0},       {-1, -1, -1, 0, 0, 0, 0, 0},
    {-1, -1, -1, -1, 0, 0, 0, 0},     {-1, -1, -1, -1, -1, 0, 0, 0},
    {-1, -1, -1, -1, -1, -1, 0, 0},   {-1, -1, -1, -1, -1, -1, -1, 0},
    {-1, -1, -1, -1, -1, -1, -1, -1},
};

inline __m256i tailMask(size_t remaining) {
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(kTailMasks[remaining]));
}

inline float horizontalSum(__m256 v) {
  const __m128 lo = _mm256_castps256_ps128(v);
  const __m128 hi = _mm256_extractf128_ps(v, 1);
  __m128 s = _mm_add_ps(lo, hi);
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

float dot(const float* a, const float* b, size_t dim) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= dim; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i < dim; i += 8) {
    const __m256i m = tailMask(dim - i >= 8 ? 8 : dim - i);
    acc0 = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m), acc0);
  }
  return horizontalSum(_mm256_add_ps(acc0, acc1));
}

float l2sq(const float* a, const float* b, size_t dim) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= dim; i += 16) {
    const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
    const __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
    acc0 = _mm256_fmadd_ps(d0, d0, acc0);
    acc1 = _mm256_fmadd_ps(d1, d1, acc1);
  }
  for (; i < dim; i += 8) {
    const __m256i m = tailMask(dim - i >= 8 ? 8 : dim - i);
    const __m256 d0 = _mm256_sub_ps(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m));
    acc0 = _mm256_fmadd_ps(d0, d0, acc0);
  }
  return horizontalSum(_mm256_add_ps(acc0, acc1));
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
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= dim; i += 16) {
      const __m256 q0 = _mm256_loadu_ps(query + i), q1 = _mm256_loadu_ps(query + i + 8);
      a0 = _mm256_fmadd_ps(q0, _mm256_loadu_ps(x + i), a0);
      b0 = _mm256_fmadd_ps(q1, _mm256_loadu_ps(x + i + 8), b0);
      a1 = _mm256_fmadd_ps(q0, _mm256_loadu_ps(x + dim + i), a1);
      b1 = _mm256_fmadd_ps(q1, _mm256_loadu_ps(x + dim + i + 8), b1);
      a2 = _mm256_fmadd_ps(q0, _mm256_loadu_ps(x + 2 * dim + i), a2);
      b2 = _mm256_fmadd_ps(q1, _mm256_loadu_ps(x + 2 * dim + i + 8), b2);
      a3 = _mm256_fmadd_ps(q0, _mm256_loadu_ps(x + 3 * dim + i), a3);
      b3 = _mm256_fmadd_ps(q1, _mm256_loadu_ps(x + 3 * dim + i + 8), b3);
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
  __m256 c0[MR], c1[MR];
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) c0[i] = c1[i] = _mm256_setzero_ps();
  const float* q = packedQueries;
  const float* x = packedRows;
  for (size_t k = 0; k < dim; ++k, q += kRows, x += kCols) {
    const __m256 b0 = _mm256_loadu_ps(x);
    const __m256 b1 = _mm256_loadu_ps(x + 8);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      const __m256 a = _mm256_broadcast_ss(q + i);
      c0[i] = _mm256_fmadd_ps(a, b0, c0[i]);
      c1[i] = _mm256_fmadd_ps(a, b1, c1[i]);
    }
  }
  const float* bias = packedRows + dim * kCols;
  const __m256 bias0 = _mm256_loadu_ps(bias);
  const __m256 bias1 = _mm256_loadu_ps(bias + 8);
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) {
    const __m256 s0 = _mm256_add_ps(c0[i], bias0);
    const __m256 s1 = _mm256_add_ps(c1[i], bias1);
    _mm256_storeu_ps(out + i * kCols, s0);
    _mm256_storeu_ps(out + i * kCols + 8, s1);
    const __m256 t = _mm256_set1_ps(thresholds[i]);
    const uint32_t lo = static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(s0, t, _CMP_GE_OQ)));
    const uint32_t hi = static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(s1, t, _CMP_GE_OQ)));
    masks[i] = lo | (hi << 8);
  }
}

#include "tile_dispatch.h"
#include "transpose_avx2.h"

// 16-bit rows: Widen8 turns 8 stored elements into floats. A tail shorter than 8 is copied
// into a zeroed buffer first (no 16-bit masked load in AVX2), so nothing past the row is read.
template <__m256 (*Widen8)(const uint16_t*)>
inline __m256 widenTail(const uint16_t* x, size_t n) {
  alignas(16) uint16_t tail[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (size_t j = 0; j < n; ++j) tail[j] = x[j];
  return Widen8(tail);
}

template <__m256 (*Widen8)(const uint16_t*)>
float dot16(const float* q, const uint16_t* x, size_t dim) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= dim; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), Widen8(x + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), Widen8(x + i + 8), acc1);
  }
  if (i + 8 <= dim) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), Widen8(x + i), acc0);
    i += 8;
  }
  if (i < dim) {
    const size_t n = dim - i;
    acc1 = _mm256_fmadd_ps(_mm256_maskload_ps(q + i, tailMask(n)), widenTail<Widen8>(x + i, n), acc1);
  }
  return horizontalSum(_mm256_add_ps(acc0, acc1));
}

template <__m256 (*Widen8)(const uint16_t*)>
float l2sq16(const float* q, const uint16_t* x, size_t dim) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= dim; i += 16) {
    const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(q + i), Widen8(x + i));
    const __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(q + i + 8), Widen8(x + i + 8));
    acc0 = _mm256_fmadd_ps(d0, d0, acc0);
    acc1 = _mm256_fmadd_ps(d1, d1, acc1);
  }
  if (i + 8 <= dim) {
    const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(q + i), Widen8(x + i));
    acc0 = _mm256_fmadd_ps(d0, d0, acc0);
    i += 8;
  }
  if (i < dim) {
    const size_t n = dim - i;
    const __m256 d1 = _mm256_sub_ps(_mm256_maskload_ps(q + i, tailMask(n)), widenTail<Widen8>(x + i, n));
    acc1 = _mm256_fmadd_ps(d1, d1, acc1);
  }
  return horizontalSum(_mm256_add_ps(acc0, acc1));
}

template <__m256 (*Widen8)(const uint16_t*)>
void scanRows16(const float* query, const uint16_t* rows, size_t count, size_t dim,
                const float* bias, float* scores) {
  for (size_t r = 0; r < count; ++r) {
    scores[r] = dot16<Widen8>(query, rows + r * dim, dim) + (bias ? bias[r] : 0.0f);
  }
}

// i8 rows: unsigned codes × signed query bytes, multiplied as 16-bit lanes by vpmaddwd, whose
// pair sums (at most 2 × 255 × 127) fit int32 exactly. vpmaddubsw would take the bytes
// directly but adds its pair in a saturating 16-bit lane, which 2 × 255 × 127 overflows.
// Bytes become 16-bit lanes by masks and shifts (even bytes: x & 0xFF, odd bytes: x >> 8),
// not by vpmovzxbw / vpmovsxbw, which all compete for the one shuffle port; the query's
// even and odd bytes are sign-extended by shifting left and then arithmetically right.
struct QueryLanes {
  __m256i even, odd;
};

inline QueryLanes queryLanes(const int8_t* q) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q));
  return {_mm256_srai_epi16(_mm256_slli_epi16(v, 8), 8), _mm256_srai_epi16(v, 8)};
}

// 32 codes against 32 query bytes, added to acc as 8 int32 partial sums.
inline __m256i dotI8x32(const uint8_t* x, const QueryLanes& q, __m256i lowBytes, __m256i acc) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_and_si256(v, lowBytes), q.even));
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_srli_epi16(v, 8), q.odd));
}

// 16 codes against 16 query bytes (the step between 32-byte blocks and the scalar tail).
inline __m256i dotI8x16(const uint8_t* x, const int8_t* q, __m256i acc) {
  const __m256i xs = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x)));
  const __m256i qs = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q)));
  return _mm256_add_epi32(acc, _mm256_madd_epi16(xs, qs));
}

inline int32_t horizontalSumI32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

int32_t dotI8(const uint8_t* x, const int8_t* q, size_t dim) {
  const __m256i lowBytes = _mm256_set1_epi16(0x00FF);
  __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
  size_t i = 0;
  for (; i + 64 <= dim; i += 64) {
    acc0 = dotI8x32(x + i, queryLanes(q + i), lowBytes, acc0);
    acc1 = dotI8x32(x + i + 32, queryLanes(q + i + 32), lowBytes, acc1);
  }
  if (i + 32 <= dim) {
    acc0 = dotI8x32(x + i, queryLanes(q + i), lowBytes, acc0);
    i += 32;
  }
  if (i + 16 <= dim) {
    acc1 = dotI8x16(x + i, q + i, acc1);
    i += 16;
  }
  int32_t sum = horizontalSumI32(_mm256_add_epi32(acc0, acc1));
  for (; i < dim; ++i) sum += static_cast<int32_t>(x[i]) * q[i];
  return sum;
}

// 32 codes against 32 query bytes of magnitude at most kSmallQueryLimit: vpmaddubsw's pair
// sums (at most 2 × 255 × 63) fit its 16-bit lanes without saturating.
inline __m256i dotSmallI8x32(const uint8_t* x, __m256i q, __m256i ones16, __m256i acc) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(v, q), ones16));
}

// Four rows at a time: each query block is split into 16-bit lanes once for the four rows
// (or, for a small query, loaded as bytes), and the four sums are reduced together. The
// four rows are adjacent, but their loads interleave four streams, so the next four rows are
// prefetched in software (below).
template <bool SmallQuery>
void scanRowsI8T(const int8_t* query, const uint8_t* rows, size_t count, size_t dim, float scale, float offset,
                 const float* bias, float* scores) {
  const __m256i lowBytes = _mm256_set1_epi16(0x00FF);
  const __m256i ones16 = _mm256_set1_epi16(1);
  size_t r = 0;
  for (; r + 4 <= count; r += 4) {
    const uint8_t* x0 = rows + r * dim;
    const uint8_t* x1 = x0 + dim;
    const uint8_t* x2 = x1 + dim;
    const uint8_t* x3 = x2 + dim;
    __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256(), a2 = _mm256_setzero_si256(),
            a3 = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 32 <= dim; i += 32) {
      // The next four rows, a line each per line read here: the four interleaved streams
      // outrun the hardware prefetcher (200,000 x 768 IVF-PQ, whose 768 KiB coarse sketch
      // streams from L3: 7-10% more queries a second, alternating builds of the same index).
      if ((i & 63) == 0 && r + 8 <= count) {
        prefetchLine(x0 + 4 * dim + i);
        prefetchLine(x1 + 4 * dim + i);
        prefetchLine(x2 + 4 * dim + i);
        prefetchLine(x3 + 4 * dim + i);
      }
      if constexpr (SmallQuery) {
        const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(query + i));
        a0 = dotSmallI8x32(x0 + i, q, ones16, a0);
        a1 = dotSmallI8x32(x1 + i, q, ones16, a1);
        a2 = dotSmallI8x32(x2 + i, q, ones16, a2);
        a3 = dotSmallI8x32(x3 + i, q, ones16, a3);
      } else {
        const QueryLanes q = queryLanes(query + i);
        a0 = dotI8x32(x0 + i, q, lowBytes, a0);
        a1 = dotI8x32(x1 + i, q, lowBytes, a1);
        a2 = dotI8x32(x2 + i, q, lowBytes, a2);
        a3 = dotI8x32(x3 + i, q, lowBytes, a3);
      }
    }
    if (i + 16 <= dim) {
      a0 = dotI8x16(x0 + i, query + i, a0);
      a1 = dotI8x16(x1 + i, query + i, a1);
      a2 = dotI8x16(x2 + i, query + i, a2);
      a3 = dotI8x16(x3 + i, query + i, a3);
      i += 16;
    }
    // Lane j of each 128-bit half: a partial sum of row j.
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(a0, a1), _mm256_hadd_epi32(a2, a3));
    alignas(16) int32_t sums[4];
    _mm_store_si128(reinterpret_cast<__m128i*>(sums),
                    _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1)));
    for (; i < dim; ++i) {
      const int32_t qi = query[i];
      sums[0] += static_cast<int32_t>(x0[i]) * qi;
      sums[1] += static_cast<int32_t>(x1[i]) * qi;
      sums[2] += static_cast<int32_t>(x2[i]) * qi;
      sums[3] += static_cast<int32_t>(x3[i]) * qi;
    }
    for (int j = 0; j < 4; ++j) {
      scores[r + j] = static_cast<float>(sums[j]) * scale + offset + (bias ? bias[r + j] : 0.0f);
    }
  }
  for (; r < count; ++r) {
    scores[r] = static_cast<float>(dotI8(rows + r * dim, query, dim)) * scale + offset + (bias ? bias[r] : 0.0f);
  }
}

void scanRowsI8(const int8_t* query, const uint8_t* rows, size_t count, size_t dim, float scale, float offset,
                const float* bias, float* scores) {
  scanRowsI8T<false>(query, rows, count, dim, scale, offset, bias, scores);
}

void scanRowsI8SmallQuery(const int8_t* query, const uint8_t* rows, size_t count, size_t dim, float scale,
                          float offset, const float* bias, float* scores) {
  scanRowsI8T<true>(query, rows, count, dim, scale, offset, bias, scores);
}

constexpr int kFmaChains = 12;

float fmaLoop(size_t iterations) {
  __m256 acc[kFmaChains];
  for (int i = 0; i < kFmaChains; ++i) acc[i] = _mm256_set1_ps(0.001f * static_cast<float>(i + 1));
  const __m256 mul = _mm256_set1_ps(0.999f), add = _mm256_set1_ps(0.001f);
  for (size_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kFmaChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], mul, add);
  }
  __m256 sum = acc[0];
  for (int i = 1; i < kFmaChains; ++i) sum = _mm256_add_ps(sum, acc[i]);
  return horizontalSum(sum);
}

const Kernels kTable = {
    Level::Avx2, "avx2", kRows, kCols, dot, l2sq, scanRows, tile, packPanel, fmaLoop, kFmaChains * 8 * 2,
    {dot16<widenF16x8>, l2sq16<widenF16x8>, scanRows16<widenF16x8>, packPanel16<widenF16x8, f16ToFloat>,
     floatsToF16, f16ToFloats},
    {dot16<widenBf16x8>, l2sq16<widenBf16x8>, scanRows16<widenBf16x8>, packPanel16<widenBf16x8, bf16ToFloat>,
     floatsToBf16Scalar, bf16ToFloatsScalar},
    {"avx2", dotI8, scanRowsI8, scanRowsI8SmallQuery},
    scanRowsCached,
};

}  // namespace

const Kernels& avx2Kernels() { return kTable; }

}  // namespace ebrix::simd
