#include "optimizer.h"

#include <algorithm>
#include <cmath>

#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#define EBRIX_TRAIN_SQRT_SSE2 1
#elif defined(__aarch64__) || defined(_M_ARM64)
#include <arm_neon.h>
#define EBRIX_TRAIN_SQRT_NEON 1
#endif

namespace ebrix::train {
namespace {

// Values per chunk of the updates: the square roots of a chunk are taken in one pass.
constexpr size_t kChunk = 64;

// Square roots in place. std::sqrt may set errno, so compilers keep it scalar (a call per
// value under the default -fmath-errno); the baseline vector instruction gives the same
// correctly rounded result four values at a time, so the path taken never changes a value.
void sqrtInPlace(float* x, size_t n) {
  size_t i = 0;
#if defined(EBRIX_TRAIN_SQRT_SSE2)
  for (; i + 4 <= n; i += 4) _mm_storeu_ps(x + i, _mm_sqrt_ps(_mm_loadu_ps(x + i)));
#elif defined(EBRIX_TRAIN_SQRT_NEON)
  for (; i + 4 <= n; i += 4) vst1q_f32(x + i, vsqrtq_f32(vld1q_f32(x + i)));
#endif
  for (; i < n; ++i) x[i] = std::sqrt(x[i]);
}

// A table row is a few cache lines, usually missed: ask for all of them ahead of use.
void prefetchRow(const float* row, size_t dim) {
  const char* p = reinterpret_cast<const char*>(row);
  for (size_t offset = 0; offset < dim * sizeof(float); offset += 64) __builtin_prefetch(p + offset, 1);
}

// Rows ahead of the current one whose lines are requested.
constexpr size_t kPrefetchRows = 4;

}  // namespace

AdamStep adamStep(float learningRate, float beta1, float beta2, float epsilon, float weightDecay, uint64_t step,
                  float gradScale) {
  const double t = static_cast<double>(step);
  AdamStep s;
  s.learningRate = learningRate;
  s.beta1 = beta1;
  s.beta2 = beta2;
  s.epsilon = epsilon;
  s.stepSize = static_cast<float>(learningRate / (1.0 - std::pow(static_cast<double>(beta1), t)));
  s.rootBias2 = static_cast<float>(std::sqrt(1.0 - std::pow(static_cast<double>(beta2), t)));
  s.decay = learningRate * weightDecay;
  s.gradScale = gradScale;
  return s;
}

void adamUpdate(float* param, const float* grad, float* m, float* v, size_t n, const AdamStep& s, bool decay) {
  const float b1 = s.beta1, b2 = s.beta2, c1 = 1.0f - s.beta1, c2 = 1.0f - s.beta2;
  const float keep = decay ? 1.0f - s.decay : 1.0f;
  float root[kChunk];
  for (size_t base = 0; base < n; base += kChunk) {
    const size_t len = std::min(kChunk, n - base);
    float* p = param + base;
    float* mm = m + base;
    float* vv = v + base;
    const float* gr = grad + base;
    for (size_t i = 0; i < len; ++i) {
      const float g = gr[i] * s.gradScale;
      mm[i] = b1 * mm[i] + c1 * g;
      vv[i] = b2 * vv[i] + c2 * g * g;
      root[i] = vv[i];
    }
    sqrtInPlace(root, len);
    for (size_t i = 0; i < len; ++i) p[i] = p[i] * keep - s.stepSize * mm[i] / (root[i] / s.rootBias2 + s.epsilon);
  }
}

void sparseAdamUpdate(const Compute& compute, float* table, float* m, float* v, size_t dim, const uint32_t* rows,
                      size_t count, const float* grads, const AdamStep& s) {
  compute.blocks(count, 64, [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      if (i + kPrefetchRows < end) {
        const size_t ahead = static_cast<size_t>(rows[i + kPrefetchRows]) * dim;
        prefetchRow(table + ahead, dim);
        prefetchRow(m + ahead, dim);
        prefetchRow(v + ahead, dim);
      }
      const size_t at = static_cast<size_t>(rows[i]) * dim;
      adamUpdate(table + at, grads + i * dim, m + at, v + at, dim, s, false);
    }
  }, 256);
}

void sparseAdagradUpdate(const Compute& compute, float* table, float* accumulator, size_t dim, const uint32_t* rows,
                         size_t count, const float* grads, float learningRate, float epsilon, float gradScale) {
  compute.blocks(count, 64, [&](size_t begin, size_t end) {
    float root[kChunk];
    for (size_t i = begin; i < end; ++i) {
      if (i + kPrefetchRows < end) {
        const size_t ahead = static_cast<size_t>(rows[i + kPrefetchRows]) * dim;
        prefetchRow(table + ahead, dim);
        prefetchRow(accumulator + ahead, dim);
      }
      const size_t at = static_cast<size_t>(rows[i]) * dim;
      for (size_t base = 0; base < dim; base += kChunk) {
        const size_t len = std::min(kChunk, dim - base);
        float* p = table + at + base;
        float* a = accumulator + at + base;
        const float* gr = grads + i * dim + base;
        for (size_t d = 0; d < len; ++d) {
          const float g = gr[d] * gradScale;
          a[d] += g * g;
          root[d] = a[d];
        }
        sqrtInPlace(root, len);
        for (size_t d = 0; d < len; ++d) p[d] -= learningRate * (gr[d] * gradScale) / (root[d] + epsilon);
      }
    }
  }, 256);
}

}  // namespace ebrix::train
