// AVX-512 (BW) 4-bit fast-scan kernel (layout in pq.h). One 64-byte load covers two groups of
// a block (four sub-quantizers): lanes 0-1 look up the tables of the first pair, lanes 2-3
// those of the second. The two halves of the accumulators are summed (saturating) at the end
// of the block; an odd last pair takes the 256-bit path. Compiled with -mavx512f -mavx512bw;
// see kernels.h for the rule.
#include <immintrin.h>

#include "fastscan.h"

namespace ebrix::simd {
namespace {

static inline __m256i broadcastTable(const uint8_t* t) {
  return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t)));
}

// Lanes 0-1: table a; lanes 2-3: table b.
static inline __m512i twoTables(const uint8_t* a, const uint8_t* b) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(broadcastTable(a)), broadcastTable(b), 1);
}

}  // namespace

void fastScanAvx512(const uint8_t* entries, size_t pairs, const uint8_t* packed, size_t nBlocks, uint16_t* out) {
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  const __m512i lowByte = _mm512_set1_epi16(0x00FF);
  const __m256i nibble256 = _mm256_set1_epi8(0x0F);
  const __m256i lowByte256 = _mm256_set1_epi16(0x00FF);
  const size_t blockBytes = pairs * 32;
  for (size_t b = 0; b < nBlocks; ++b) {
    const uint8_t* block = packed + b * blockBytes;
    __m512i even = _mm512_setzero_si512(), odd = _mm512_setzero_si512();
    size_t p = 0;
    for (; p + 2 <= pairs; p += 2) {
      const __m512i t0 = twoTables(entries + 2 * p * 16, entries + (2 * p + 2) * 16);
      const __m512i t1 = twoTables(entries + (2 * p + 1) * 16, entries + (2 * p + 3) * 16);
      const __m512i g = _mm512_loadu_si512(block + p * 32);
      const __m512i lo = _mm512_and_si512(g, nibble);
      const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(g, 4), nibble);
      const __m512i s0 = _mm512_shuffle_epi8(t0, lo);
      const __m512i s1 = _mm512_shuffle_epi8(t1, hi);
      even = _mm512_adds_epu16(even, _mm512_add_epi16(_mm512_and_si512(s0, lowByte), _mm512_and_si512(s1, lowByte)));
      odd = _mm512_adds_epu16(odd, _mm512_add_epi16(_mm512_srli_epi16(s0, 8), _mm512_srli_epi16(s1, 8)));
    }
    __m256i e = _mm256_adds_epu16(_mm512_castsi512_si256(even), _mm512_extracti64x4_epi64(even, 1));
    __m256i o = _mm256_adds_epu16(_mm512_castsi512_si256(odd), _mm512_extracti64x4_epi64(odd, 1));
    if (p < pairs) {
      const __m256i t0 = broadcastTable(entries + 2 * p * 16);
      const __m256i t1 = broadcastTable(entries + (2 * p + 1) * 16);
      const __m256i g = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + p * 32));
      const __m256i s0 = _mm256_shuffle_epi8(t0, _mm256_and_si256(g, nibble256));
      const __m256i s1 = _mm256_shuffle_epi8(t1, _mm256_and_si256(_mm256_srli_epi16(g, 4), nibble256));
      e = _mm256_adds_epu16(e, _mm256_add_epi16(_mm256_and_si256(s0, lowByte256), _mm256_and_si256(s1, lowByte256)));
      o = _mm256_adds_epu16(o, _mm256_add_epi16(_mm256_srli_epi16(s0, 8), _mm256_srli_epi16(s1, 8)));
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + b * 32), e);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + b * 32 + 16), o);
  }
}

}  // namespace ebrix::simd
