// Parameter updates. Every update is element-wise, so splitting it over threads cannot change
// a value.
//
// Dense Adam (layers, heads, task log-variances), bias-corrected as in PyTorch:
//   m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;
//   p ← p − lr·wd·p (decoupled weight decay, weights only);
//   p ← p − (lr / (1−β1^t))·m / (sqrt(v) / sqrt(1−β2^t) + ε).
// Lazy sparse Adam (embedding tables): the same, on the rows the step touched only, with t the
// global step (a row's moments are not decayed on steps that skip it).
// Sparse Adagrad: a ← a + g²; p ← p − lr·g / (sqrt(a) + ε), accumulators starting at 0.
// g is the gradient times the step's clipping factor.
#pragma once

#include <cstddef>
#include <cstdint>

#include "compute.h"

namespace ebrix::train {

struct AdamStep {
  float learningRate;
  float beta1;
  float beta2;
  float epsilon;
  float stepSize;    // lr / (1 − β1^t)
  float rootBias2;   // sqrt(1 − β2^t)
  float decay;       // lr · weightDecay, or 0
  float gradScale;   // clipping factor
};

AdamStep adamStep(float learningRate, float beta1, float beta2, float epsilon, float weightDecay, uint64_t step,
                  float gradScale);

void adamUpdate(float* param, const float* grad, float* m, float* v, size_t n, const AdamStep& s, bool decay);

// rows[i]'s gradient is grads[i × dim, (i+1) × dim).
void sparseAdamUpdate(const Compute& compute, float* table, float* m, float* v, size_t dim, const uint32_t* rows,
                      size_t count, const float* grads, const AdamStep& s);
void sparseAdagradUpdate(const Compute& compute, float* table, float* accumulator, size_t dim, const uint32_t* rows,
                         size_t count, const float* grads, float learningRate, float epsilon, float gradScale);

}  // namespace ebrix::train
