#include "optimizer.h"

#include <cmath>

namespace ebrix::train {

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
  for (size_t i = 0; i < n; ++i) {
    const float g = grad[i] * s.gradScale;
    m[i] = b1 * m[i] + c1 * g;
    v[i] = b2 * v[i] + c2 * g * g;
    param[i] = param[i] * keep - s.stepSize * m[i] / (std::sqrt(v[i]) / s.rootBias2 + s.epsilon);
  }
}

void sparseAdamUpdate(const Compute& compute, float* table, float* m, float* v, size_t dim, const uint32_t* rows,
                      size_t count, const float* grads, const AdamStep& s) {
  compute.blocks(count, 64, [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      const size_t at = static_cast<size_t>(rows[i]) * dim;
      adamUpdate(table + at, grads + i * dim, m + at, v + at, dim, s, false);
    }
  }, 256);
}

void sparseAdagradUpdate(const Compute& compute, float* table, float* accumulator, size_t dim, const uint32_t* rows,
                         size_t count, const float* grads, float learningRate, float epsilon, float gradScale) {
  compute.blocks(count, 64, [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      const size_t at = static_cast<size_t>(rows[i]) * dim;
      float* p = table + at;
      float* a = accumulator + at;
      const float* gr = grads + i * dim;
      for (size_t d = 0; d < dim; ++d) {
        const float g = gr[d] * gradScale;
        a[d] += g * g;
        p[d] -= learningRate * g / (std::sqrt(a[d]) + epsilon);
      }
    }
  }, 256);
}

}  // namespace ebrix::train
