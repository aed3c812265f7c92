// NEON 4-bit fast-scan kernel (layout in pq.h). A 32-byte group is two 16-byte registers;
// vqtbl1q_u8 looks up 16 entries at a time. As 16-bit lanes, the low bytes of the first
// register are vectors 0..7 and its high bytes vectors 16..23; the second register holds
// 8..15 and 24..31. See kernels.h for the rule of ISA files.
#include <arm_neon.h>

#include "fastscan.h"

namespace ebrix::simd {

void fastScanNeon(const uint8_t* entries, size_t pairs, const uint8_t* packed, size_t nBlocks, uint16_t* out) {
  const uint8x16_t nibble = vdupq_n_u8(0x0F);
  const uint16x8_t lowByte = vdupq_n_u16(0x00FF);
  const size_t blockBytes = pairs * 32;
  for (size_t b = 0; b < nBlocks; ++b) {
    const uint8_t* block = packed + b * blockBytes;
    uint16x8_t even0 = vdupq_n_u16(0), even1 = vdupq_n_u16(0), odd0 = vdupq_n_u16(0), odd1 = vdupq_n_u16(0);
    for (size_t p = 0; p < pairs; ++p) {
      const uint8x16_t t0 = vld1q_u8(entries + 2 * p * 16);
      const uint8x16_t t1 = vld1q_u8(entries + (2 * p + 1) * 16);
      const uint8x16_t g0 = vld1q_u8(block + p * 32);
      const uint8x16_t g1 = vld1q_u8(block + p * 32 + 16);
      const uint16x8_t a0 = vreinterpretq_u16_u8(vqtbl1q_u8(t0, vandq_u8(g0, nibble)));
      const uint16x8_t b0 = vreinterpretq_u16_u8(vqtbl1q_u8(t1, vshrq_n_u8(g0, 4)));
      const uint16x8_t a1 = vreinterpretq_u16_u8(vqtbl1q_u8(t0, vandq_u8(g1, nibble)));
      const uint16x8_t b1 = vreinterpretq_u16_u8(vqtbl1q_u8(t1, vshrq_n_u8(g1, 4)));
      even0 = vqaddq_u16(even0, vaddq_u16(vandq_u16(a0, lowByte), vandq_u16(b0, lowByte)));
      odd0 = vqaddq_u16(odd0, vaddq_u16(vshrq_n_u16(a0, 8), vshrq_n_u16(b0, 8)));
      even1 = vqaddq_u16(even1, vaddq_u16(vandq_u16(a1, lowByte), vandq_u16(b1, lowByte)));
      odd1 = vqaddq_u16(odd1, vaddq_u16(vshrq_n_u16(a1, 8), vshrq_n_u16(b1, 8)));
    }
    uint16_t* o = out + b * 32;
    vst1q_u16(o, even0);
    vst1q_u16(o + 8, even1);
    vst1q_u16(o + 16, odd0);
    vst1q_u16(o + 24, odd1);
  }
}

}  // namespace ebrix::simd
