// Scalar reference of the 4-bit fast-scan kernel: the same arithmetic as the SIMD kernels
// (8-bit table entries, saturating 16-bit sums), one byte at a time.
#include "fastscan.h"

namespace ebrix::simd {

void fastScanScalar(const uint8_t* entries, size_t pairs, const uint8_t* packed, size_t nBlocks, uint16_t* out) {
  for (size_t b = 0; b < nBlocks; ++b) {
    const uint8_t* block = packed + b * pairs * 32;
    uint32_t acc[32] = {0};
    for (size_t p = 0; p < pairs; ++p) {
      const uint8_t* group = block + p * 32;
      const uint8_t* t0 = entries + 2 * p * 16;
      const uint8_t* t1 = t0 + 16;
      for (size_t k = 0; k < 32; ++k) {
        // Byte 2i holds vector i of the block, byte 2i + 1 vector 16 + i.
        const size_t v = (k & 1) ? 16 + k / 2 : k / 2;
        acc[v] += uint32_t{t0[group[k] & 15]} + uint32_t{t1[group[k] >> 4]};
      }
    }
    for (size_t v = 0; v < 32; ++v) out[b * 32 + v] = static_cast<uint16_t>(acc[v] > 65535 ? 65535 : acc[v]);
  }
}

}  // namespace ebrix::simd
