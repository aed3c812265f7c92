// The tasks' losses and their gradients w.r.t. the head outputs.
//
//   retrieval: s_bj = (q_b·v_j)/τ − (logQ ? itemLogQ[j] : 0) over every item row j of the
//              batch (its own items, then the extra negatives); with maskAccidentalHits,
//              columns j ≠ b holding b's item key are left out; loss_b = −log softmax(s_b)[b].
//   bce:       z = (q_b·v_b)/τ; loss_b = max(z, 0) − z·label + log(1 + e^−|z|).
//   mse:       loss_b = (q_b·v_b − label)².
//   L_t = Σ_b weight_b·loss_b / Σ_b weight_b over the task's examples.
// A task whose examples weigh nothing in total (or that has none) is inactive: no loss, no
// gradient.
//
// Work is split by example (one softmax row per example); every sum over examples runs in
// example order, so nothing depends on the thread count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "compute.h"
#include "gemm.h"
#include "model.h"

namespace ebrix::train {

struct TaskLoss {
  double loss = 0.0;  // L_t; NaN for an inactive task
  double examples = 0.0;
  double weightSum = 0.0;
  bool active() const { return weightSum > 0.0; }
};

struct LossScratch {
  std::vector<std::vector<uint32_t>> examples;  // per task, in batch order
  std::vector<float> gathered;
  std::vector<float> logits;
  std::vector<float> dq;
  std::vector<double> rowLoss;
};

// Groups the batch's examples by task and fills count and weight sum of each.
void groupExamples(const TrainerConfig& config, const Batch& batch, LossScratch& scratch, std::vector<TaskLoss>& out);

// Per head: its output (rows × outDim) and, when gradients are wanted, the buffer its
// gradient is added to (zeroed by the caller). Null for heads no active task reads.
struct HeadTensors {
  std::vector<const float*> query;
  std::vector<const float*> item;
  std::vector<float*> queryGrad;
  std::vector<float*> itemGrad;
};

// Computes L_t of every active task into out[t].loss (after groupExamples). With
// `coefficient` (per task), adds coefficient[t] × ∂L_t/∂(head outputs) to the gradient buffers.
void taskLosses(const Compute& compute, const TrainerConfig& config, const Batch& batch, HeadTensors& heads,
                const double* coefficient, std::vector<TaskLoss>& out, LossScratch& scratch, Gemm& gemm);

}  // namespace ebrix::train
