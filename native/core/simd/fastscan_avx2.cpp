// AVX2 4-bit fast-scan kernel (layout in pq.h). One 32-byte group of a block holds the codes
// of two sub-quantizers for the block's 32 vectors; vpshufb looks up 32 entries per table
// register (the 16-entry table broadcast to both lanes). Viewed as 16-bit lanes, the low
// bytes are vectors 0..15 and the high bytes vectors 16..31, so masks and shifts widen the
// entries without any cross-lane shuffle. Compiled with -mavx2; see kernels.h for the rule.
#include <immintrin.h>

#include "fastscan.h"

namespace ebrix::simd {
namespace {

constexpr size_t kBlocksAtOnce = 4;  // blocks sharing one load of each table pair

struct Acc {
  __m256i even, odd;
};

static inline void step(const uint8_t* group, __m256i t0, __m256i t1, __m256i nibble, __m256i lowByte, Acc& acc) {
  const __m256i g = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(group));
  const __m256i lo = _mm256_and_si256(g, nibble);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(g, 4), nibble);
  const __m256i s0 = _mm256_shuffle_epi8(t0, lo);
  const __m256i s1 = _mm256_shuffle_epi8(t1, hi);
  const __m256i e = _mm256_add_epi16(_mm256_and_si256(s0, lowByte), _mm256_and_si256(s1, lowByte));
  const __m256i o = _mm256_add_epi16(_mm256_srli_epi16(s0, 8), _mm256_srli_epi16(s1, 8));
  acc.even = _mm256_adds_epu16(acc.even, e);
  acc.odd = _mm256_adds_epu16(acc.odd, o);
}

static inline __m256i broadcastTable(const uint8_t* t) {
  return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t)));
}

}  // namespace

void fastScanAvx2(const uint8_t* entries, size_t pairs, const uint8_t* packed, size_t nBlocks, uint16_t* out) {
  const __m256i nibble = _mm256_set1_epi8(0x0F);
  const __m256i lowByte = _mm256_set1_epi16(0x00FF);
  const size_t blockBytes = pairs * 32;
  size_t b = 0;
  for (; b + kBlocksAtOnce <= nBlocks; b += kBlocksAtOnce) {
    Acc acc[kBlocksAtOnce];
    for (size_t k = 0; k < kBlocksAtOnce; ++k) acc[k].even = acc[k].odd = _mm256_setzero_si256();
    const uint8_t* base = packed + b * blockBytes;
    for (size_t p = 0; p < pairs; ++p) {
      const __m256i t0 = broadcastTable(entries + 2 * p * 16);
      const __m256i t1 = broadcastTable(entries + (2 * p + 1) * 16);
      for (size_t k = 0; k < kBlocksAtOnce; ++k) step(base + k * blockBytes + p * 32, t0, t1, nibble, lowByte, acc[k]);
    }
    for (size_t k = 0; k < kBlocksAtOnce; ++k) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + (b + k) * 32), acc[k].even);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + (b + k) * 32 + 16), acc[k].odd);
    }
  }
  for (; b < nBlocks; ++b) {
    Acc acc{_mm256_setzero_si256(), _mm256_setzero_si256()};
    const uint8_t* block = packed + b * blockBytes;
    for (size_t p = 0; p < pairs; ++p) {
      step(block + p * 32, broadcastTable(entries + 2 * p * 16), broadcastTable(entries + (2 * p + 1) * 16), nibble,
           lowByte, acc);
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + b * 32), acc.even);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + b * 32 + 16), acc.odd);
  }
}

}  // namespace ebrix::simd
