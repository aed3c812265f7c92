// Scalar reference kernels. Every SIMD variant is tested against these; they are also the
// kernels of a CPU with no supported vector extension.
#include "half.h"
#include "kernels.h"

namespace ebrix::simd {
namespace {

constexpr int kRows = 4;
constexpr int kCols = 8;

float dot(const float* a, const float* b, size_t dim) {
  float sum = 0.0f;
  for (size_t i = 0; i < dim; ++i) sum += a[i] * b[i];
  return sum;
}

float l2sq(const float* a, const float* b, size_t dim) {
  float sum = 0.0f;
  for (size_t i = 0; i < dim; ++i) {
    const float diff = a[i] - b[i];
    sum += diff * diff;
  }
  return sum;
}

void scanRows(const float* query, const float* rows, size_t count, size_t dim,
              const float* bias, float* scores) {
  for (size_t r = 0; r < count; ++r) {
    scores[r] = dot(query, rows + r * dim, dim) + (bias ? bias[r] : 0.0f);
  }
}

void tile(const float* packedQueries, int queryCount, const float* packedRows, size_t dim,
          const float* thresholds, float* out, uint32_t* masks) {
  float acc[kRows][kCols] = {};
  for (size_t k = 0; k < dim; ++k) {
    const float* q = packedQueries + k * kRows;
    const float* x = packedRows + k * kCols;
    for (int i = 0; i < queryCount; ++i) {
      for (int j = 0; j < kCols; ++j) acc[i][j] += q[i] * x[j];
    }
  }
  const float* bias = packedRows + dim * kCols;
  for (int i = 0; i < queryCount; ++i) {
    uint32_t mask = 0;
    for (int j = 0; j < kCols; ++j) {
      const float s = acc[i][j] + bias[j];
      out[i * kCols + j] = s;
      if (s >= thresholds[i]) mask |= 1u << j;
    }
    masks[i] = mask;
  }
}

// 16-bit rows: each element widened to float, then as above.
template <float (*Widen)(uint16_t)>
float dot16(const float* q, const uint16_t* x, size_t dim) {
  float sum = 0.0f;
  for (size_t i = 0; i < dim; ++i) sum += q[i] * Widen(x[i]);
  return sum;
}

template <float (*Widen)(uint16_t)>
float l2sq16(const float* q, const uint16_t* x, size_t dim) {
  float sum = 0.0f;
  for (size_t i = 0; i < dim; ++i) {
    const float diff = q[i] - Widen(x[i]);
    sum += diff * diff;
  }
  return sum;
}

template <float (*Widen)(uint16_t)>
void scanRows16(const float* query, const uint16_t* rows, size_t count, size_t dim,
                const float* bias, float* scores) {
  for (size_t r = 0; r < count; ++r) {
    scores[r] = dot16<Widen>(query, rows + r * dim, dim) + (bias ? bias[r] : 0.0f);
  }
}

int32_t dotI8(const uint8_t* codes, const int8_t* query, size_t dim) {
  int32_t sum = 0;
  for (size_t i = 0; i < dim; ++i) sum += static_cast<int32_t>(codes[i]) * query[i];
  return sum;
}

void scanRowsI8(const int8_t* query, const uint8_t* rows, size_t count, size_t dim, float scale, float offset,
                const float* bias, float* scores) {
  for (size_t r = 0; r < count; ++r) {
    scores[r] = static_cast<float>(dotI8(rows + r * dim, query, dim)) * scale + offset + (bias ? bias[r] : 0.0f);
  }
}

constexpr int kFmaChains = 8;

float fmaLoop(size_t iterations) {
  float acc[kFmaChains];
  for (int i = 0; i < kFmaChains; ++i) acc[i] = 0.001f * static_cast<float>(i + 1);
  for (size_t it = 0; it < iterations; ++it) {
    for (int i = 0; i < kFmaChains; ++i) acc[i] = acc[i] * 0.999f + 0.001f;
  }
  float sum = 0.0f;
  for (int i = 0; i < kFmaChains; ++i) sum += acc[i];
  return sum;
}

const Kernels kTable = {
    Level::Scalar, "scalar", kRows, kCols, dot, l2sq, scanRows, tile, nullptr, fmaLoop, kFmaChains * 2,
    {dot16<f16ToFloat>, l2sq16<f16ToFloat>, scanRows16<f16ToFloat>, nullptr, floatsToF16Scalar, f16ToFloatsScalar},
    {dot16<bf16ToFloat>, l2sq16<bf16ToFloat>, scanRows16<bf16ToFloat>, nullptr, floatsToBf16Scalar,
     bf16ToFloatsScalar},
    {"scalar", dotI8, scanRowsI8, scanRowsI8},
};

}  // namespace

const Kernels& scalarKernels() { return kTable; }

}  // namespace ebrix::simd
