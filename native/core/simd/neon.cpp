// NEON kernels for arm64, where Advanced SIMD is part of the base architecture.
#include <arm_neon.h>

#include <utility>

#include "half.h"
#include "kernels.h"

namespace ebrix::simd {
namespace {

constexpr int kRows = 8;  // 8 queries × 2 registers = 16 accumulators of 32
constexpr int kCols = 8;

float dot(const float* a, const float* b, size_t dim) {
  float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
  size_t i = 0;
  for (; i + 8 <= dim; i += 8) {
    acc0 = vfmaq_f32(acc0, vld1q_f32(a + i), vld1q_f32(b + i));
    acc1 = vfmaq_f32(acc1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
  }
  if (i + 4 <= dim) {
    acc0 = vfmaq_f32(acc0, vld1q_f32(a + i), vld1q_f32(b + i));
    i += 4;
  }
  float sum = vaddvq_f32(vaddq_f32(acc0, acc1));
  for (; i < dim; ++i) sum += a[i] * b[i];
  return sum;
}

float l2sq(const float* a, const float* b, size_t dim) {
  float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
  size_t i = 0;
  for (; i + 8 <= dim; i += 8) {
    const float32x4_t d0 = vsubq_f32(vld1q_f32(a + i), vld1q_f32(b + i));
    const float32x4_t d1 = vsubq_f32(vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
    acc0 = vfmaq_f32(acc0, d0, d0);
    acc1 = vfmaq_f32(acc1, d1, d1);
  }
  if (i + 4 <= dim) {
    const float32x4_t d0 = vsubq_f32(vld1q_f32(a + i), vld1q_f32(b + i));
    acc0 = vfmaq_f32(acc0, d0, d0);
    i += 4;
  }
  float sum = vaddvq_f32(vaddq_f32(acc0, acc1));
  for (; i < dim; ++i) {
    const float diff = a[i] - b[i];
    sum += diff * diff;
  }
  return sum;
}

// One row at a time, as one sequential stream: interleaving several rows' loads measured
// about a third slower here, as the hardware prefetchers follow a single stream best.
void scanRows(const float* query, const float* rows, size_t count, size_t dim,
              const float* bias, float* scores) {
  for (size_t r = 0; r < count; ++r) {
    scores[r] = dot(query, rows + r * dim, dim) + (bias ? bias[r] : 0.0f);
  }
}

template <int MR>
void tileFixed(const float* packedQueries, const float* packedRows, size_t dim,
               const float* thresholds, float* out, uint32_t* masks) {
  float32x4_t c0[MR], c1[MR];
  for (int i = 0; i < MR; ++i) c0[i] = c1[i] = vdupq_n_f32(0.0f);
  const float* q = packedQueries;
  const float* x = packedRows;
  for (size_t k = 0; k < dim; ++k, q += kRows, x += kCols) {
    const float32x4_t b0 = vld1q_f32(x);
    const float32x4_t b1 = vld1q_f32(x + 4);
    for (int i = 0; i < MR; ++i) {
      c0[i] = vfmaq_n_f32(c0[i], b0, q[i]);
      c1[i] = vfmaq_n_f32(c1[i], b1, q[i]);
    }
  }
  const float* bias = packedRows + dim * kCols;
  const float32x4_t bias0 = vld1q_f32(bias);
  const float32x4_t bias1 = vld1q_f32(bias + 4);
  for (int i = 0; i < MR; ++i) {
    const float32x4_t s0 = vaddq_f32(c0[i], bias0);
    const float32x4_t s1 = vaddq_f32(c1[i], bias1);
    vst1q_f32(out + i * kCols, s0);
    vst1q_f32(out + i * kCols + 4, s1);
    uint32_t mask = 0;
    for (int j = 0; j < kCols; ++j) {
      if (out[i * kCols + j] >= thresholds[i]) mask |= 1u << j;
    }
    masks[i] = mask;
  }
}

#include "tile_dispatch.h"

// 16-bit rows: four stored elements widened to floats (f16 by FCVTL, bf16 by a shift).
inline float32x4_t widenF16x4(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
inline float32x4_t widenBf16x4(const uint16_t* p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }

template <float32x4_t (*Widen4)(const uint16_t*), float (*Widen1)(uint16_t)>
float dot16(const float* q, const uint16_t* x, size_t dim) {
  float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
  size_t i = 0;
  for (; i + 8 <= dim; i += 8) {
    acc0 = vfmaq_f32(acc0, vld1q_f32(q + i), Widen4(x + i));
    acc1 = vfmaq_f32(acc1, vld1q_f32(q + i + 4), Widen4(x + i + 4));
  }
  if (i + 4 <= dim) {
    acc0 = vfmaq_f32(acc0, vld1q_f32(q + i), Widen4(x + i));
    i += 4;
  }
  float sum = vaddvq_f32(vaddq_f32(acc0, acc1));
  for (; i < dim; ++i) sum += q[i] * Widen1(x[i]);
  return sum;
}

template <float32x4_t (*Widen4)(const uint16_t*), float (*Widen1)(uint16_t)>
float l2sq16(const float* q, const uint16_t* x, size_t dim) {
  float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
  size_t i = 0;
  for (; i + 8 <= dim; i += 8) {
    const float32x4_t d0 = vsubq_f32(vld1q_f32(q + i), Widen4(x + i));
    const float32x4_t d1 = vsubq_f32(vld1q_f32(q + i + 4), Widen4(x + i + 4));
    acc0 = vfmaq_f32(acc0, d0, d0);
    acc1 = vfmaq_f32(acc1, d1, d1);
  }
  if (i + 4 <= dim) {
    const float32x4_t d0 = vsubq_f32(vld1q_f32(q + i), Widen4(x + i));
    acc0 = vfmaq_f32(acc0, d0, d0);
    i += 4;
  }
  float sum = vaddvq_f32(vaddq_f32(acc0, acc1));
  for (; i < dim; ++i) {
    const float diff = q[i] - Widen1(x[i]);
    sum += diff * diff;
  }
  return sum;
}

template <float32x4_t (*Widen4)(const uint16_t*), float (*Widen1)(uint16_t)>
void scanRows16(const float* query, const uint16_t* rows, size_t count, size_t dim,
                const float* bias, float* scores) {
  for (size_t r = 0; r < count; ++r) {
    scores[r] = dot16<Widen4, Widen1>(query, rows + r * dim, dim) + (bias ? bias[r] : 0.0f);
  }
}

// FCVTN rounds by FPCR, whose default mode is round to nearest even.
void floatsToF16(const float* src, uint16_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) vst1_u16(dst + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(src + i))));
  for (; i < n; ++i) dst[i] = floatToF16(src[i]);
}

void f16ToFloats(const uint16_t* src, float* dst, size_t n) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, widenF16x4(src + i));
  for (; i < n; ++i) dst[i] = f16ToFloat(src[i]);
}

// i8 rows: codes and query bytes widened to 16 bits and multiply-accumulated into 32-bit
// lanes (vmlal_s16), exact. SDOT would need both sides signed (and a runtime check for the
// dot-product extension); this runs on every arm64 CPU.
int32_t dotI8(const uint8_t* x, const int8_t* q, size_t dim) {
  int32x4_t acc0 = vdupq_n_s32(0), acc1 = vdupq_n_s32(0);
  size_t i = 0;
  for (; i + 16 <= dim; i += 16) {
    const uint8x16_t xb = vld1q_u8(x + i);
    const int8x16_t qb = vld1q_s8(q + i);
    const int16x8_t xl = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(xb)));
    const int16x8_t xh = vreinterpretq_s16_u16(vmovl_u8(vget_high_u8(xb)));
    const int16x8_t ql = vmovl_s8(vget_low_s8(qb));
    const int16x8_t qh = vmovl_s8(vget_high_s8(qb));
    acc0 = vmlal_s16(acc0, vget_low_s16(xl), vget_low_s16(ql));
    acc1 = vmlal_s16(acc1, vget_high_s16(xl), vget_high_s16(ql));
    acc0 = vmlal_s16(acc0, vget_low_s16(xh), vget_low_s16(qh));
    acc1 = vmlal_s16(acc1, vget_high_s16(xh), vget_high_s16(qh));
  }
  int32_t sum = vaddvq_s32(vaddq_s32(acc0, acc1));
  for (; i < dim; ++i) sum += static_cast<int32_t>(x[i]) * q[i];
  return sum;
}

void scanRowsI8(const int8_t* query, const uint8_t* rows, size_t count, size_t dim, float scale, float offset,
                const float* bias, float* scores) {
  for (size_t r = 0; r < count; ++r) {
    scores[r] = static_cast<float>(dotI8(rows + r * dim, query, dim)) * scale + offset + (bias ? bias[r] : 0.0f);
  }
}

constexpr int kFmaChains = 16;

float fmaLoop(size_t iterations) {
  float32x4_t acc[kFmaChains];
  for (int i = 0; i < kFmaChains; ++i) acc[i] = vdupq_n_f32(0.001f * static_cast<float>(i + 1));
  const float32x4_t mul = vdupq_n_f32(0.999f), add = vdupq_n_f32(0.001f);
  for (size_t it = 0; it < iterations; ++it) {
    for (int i = 0; i < kFmaChains; ++i) acc[i] = vfmaq_f32(add, acc[i], mul);
  }
  float32x4_t sum = acc[0];
  for (int i = 1; i < kFmaChains; ++i) sum = vaddq_f32(sum, acc[i]);
  return vaddvq_f32(sum);
}

const Kernels kTable = {
    Level::Neon, "neon", kRows, kCols, dot, l2sq, scanRows, tile, nullptr, fmaLoop, kFmaChains * 4 * 2,
    {dot16<widenF16x4, f16ToFloat>, l2sq16<widenF16x4, f16ToFloat>, scanRows16<widenF16x4, f16ToFloat>, nullptr,
     floatsToF16, f16ToFloats},
    {dot16<widenBf16x4, bf16ToFloat>, l2sq16<widenBf16x4, bf16ToFloat>, scanRows16<widenBf16x4, bf16ToFloat>,
     nullptr, floatsToBf16Scalar, bf16ToFloatsScalar},
    {"neon", dotI8, scanRowsI8, scanRowsI8},
};

}  // namespace

const Kernels& neonKernels() { return kTable; }

}  // namespace ebrix::simd
