#include "loss.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace ebrix::train {
namespace {

constexpr float kMinusInfinity = -std::numeric_limits<float>::infinity();

double sigmoid(double z) {
  if (z >= 0.0) return 1.0 / (1.0 + std::exp(-z));
  const double e = std::exp(z);
  return e / (1.0 + e);
}

// Sampled softmax over the batch's item rows; the logits matrix is reused in place for its
// gradient.
void retrieval(const Compute& compute, size_t t, const TaskSpec& task, const Batch& batch, HeadTensors& heads,
               const double* coefficient, TaskLoss& out, LossScratch& s, Gemm& gemm, size_t dim) {
  const std::vector<uint32_t>& examples = s.examples[t];
  const size_t e = examples.size();
  const size_t n = batch.itemRows;
  const float* q = heads.query[task.queryHead];
  const float* v = heads.item[task.itemHead];
  // When every example belongs to this task the query rows are used where they are.
  const bool whole = e == batch.size;
  const float* qg = q;
  if (!whole) {
    s.gathered.resize(e * dim);
    for (size_t i = 0; i < e; ++i) std::copy(q + examples[i] * dim, q + (examples[i] + 1) * dim, s.gathered.data() + i * dim);
    qg = s.gathered.data();
  }
  s.logits.resize(e * n);
  gemm.run(compute, e, n, dim, rowMajor(qg, dim), rowMajor(v, dim), nullptr, s.logits.data(), n, false);

  const bool grads = coefficient != nullptr;
  const double scale = grads ? coefficient[t] / out.weightSum / static_cast<double>(task.temperature) : 0.0;
  const float invT = 1.0f / task.temperature;
  const float* logQ = task.logQ ? batch.itemLogQ : nullptr;
  const uint32_t* keys = task.maskAccidentalHits ? batch.itemKey : nullptr;
  s.rowLoss.resize(e);
  compute.blocks(e, 8, [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      const size_t b = examples[i];
      float* row = s.logits.data() + i * n;
      for (size_t j = 0; j < n; ++j) row[j] *= invT;
      if (logQ != nullptr) {
        for (size_t j = 0; j < n; ++j) row[j] -= logQ[j];
      }
      if (keys != nullptr) {
        const uint32_t key = keys[b];
        for (size_t j = 0; j < n; ++j) {
          if (keys[j] == key && j != b) row[j] = kMinusInfinity;
        }
      }
      float top = row[b];
      for (size_t j = 0; j < n; ++j) top = std::max(top, row[j]);
      const float positive = row[b];
      double sum = 0.0;
      for (size_t j = 0; j < n; ++j) {
        row[j] = std::exp(row[j] - top);
        sum += row[j];
      }
      s.rowLoss[i] = static_cast<double>(top) + std::log(sum) - positive;
      if (!grads) continue;
      // ∂loss_b/∂(q_b·v_j) = (softmax_j − [j = b]) / τ.
      const float c = static_cast<float>(scale * batch.weight[b]);
      const float cOverSum = static_cast<float>(scale * batch.weight[b] / sum);
      for (size_t j = 0; j < n; ++j) row[j] *= cOverSum;
      row[b] -= c;
    }
  }, 64);

  double total = 0.0;
  for (size_t i = 0; i < e; ++i) total += static_cast<double>(batch.weight[examples[i]]) * s.rowLoss[i];
  out.loss = total / out.weightSum;
  if (!grads) return;

  // dQ = dS V, dV += dSᵀ Q.
  float* dq = heads.queryGrad[task.queryHead];
  if (whole) {
    gemm.run(compute, e, dim, n, rowMajor(s.logits.data(), n), transposeOf(v, dim), nullptr, dq, dim, true);
  } else {
    s.dq.resize(e * dim);
    gemm.run(compute, e, dim, n, rowMajor(s.logits.data(), n), transposeOf(v, dim), nullptr, s.dq.data(), dim, false);
    for (size_t i = 0; i < e; ++i) {
      float* dst = dq + examples[i] * dim;
      const float* src = s.dq.data() + i * dim;
      for (size_t k = 0; k < dim; ++k) dst[k] += src[k];
    }
  }
  gemm.run(compute, n, dim, e, transposeOf(s.logits.data(), n), transposeOf(qg, dim), nullptr,
           heads.itemGrad[task.itemHead], dim, true);
}

// bce and mse: one score per example, from its query and its own item.
void pointwise(size_t t, const TaskSpec& task, const Batch& batch, HeadTensors& heads, const double* coefficient,
               TaskLoss& out, const LossScratch& s, size_t dim) {
  const float* q = heads.query[task.queryHead];
  const float* v = heads.item[task.itemHead];
  float* dq = coefficient ? heads.queryGrad[task.queryHead] : nullptr;
  float* dv = coefficient ? heads.itemGrad[task.itemHead] : nullptr;
  const double temperature = task.temperature;
  double total = 0.0;
  for (uint32_t b : s.examples[t]) {
    const float* qb = q + b * dim;
    const float* vb = v + b * dim;
    double x = 0.0;
    for (size_t k = 0; k < dim; ++k) x += static_cast<double>(qb[k]) * vb[k];
    const double label = batch.label[b];
    double loss, dx;
    if (task.kind == TaskKind::Bce) {
      const double z = x / temperature;
      loss = std::max(z, 0.0) - z * label + std::log1p(std::exp(-std::fabs(z)));
      dx = (sigmoid(z) - label) / temperature;
    } else {
      const double diff = x - label;
      loss = diff * diff;
      dx = 2.0 * diff;
    }
    total += batch.weight[b] * loss;
    if (dq == nullptr) continue;
    const float c = static_cast<float>(coefficient[t] * batch.weight[b] / out.weightSum * dx);
    float* dqb = dq + b * dim;
    float* dvb = dv + b * dim;
    for (size_t k = 0; k < dim; ++k) {
      dqb[k] += c * vb[k];
      dvb[k] += c * qb[k];
    }
  }
  out.loss = total / out.weightSum;
}

}  // namespace

void groupExamples(const TrainerConfig& config, const Batch& batch, LossScratch& scratch, std::vector<TaskLoss>& out) {
  const size_t tasks = config.tasks.size();
  scratch.examples.resize(tasks);
  for (auto& list : scratch.examples) list.clear();
  out.assign(tasks, TaskLoss{});
  for (size_t b = 0; b < batch.size; ++b) {
    const size_t t = static_cast<size_t>(batch.task[b]);
    scratch.examples[t].push_back(static_cast<uint32_t>(b));
    out[t].examples += 1.0;
    out[t].weightSum += batch.weight[b];
  }
  for (TaskLoss& task : out) task.loss = task.active() ? 0.0 : std::numeric_limits<double>::quiet_NaN();
}

void taskLosses(const Compute& compute, const TrainerConfig& config, const Batch& batch, HeadTensors& heads,
                const double* coefficient, std::vector<TaskLoss>& out, LossScratch& scratch, Gemm& gemm) {
  for (size_t t = 0; t < config.tasks.size(); ++t) {
    if (!out[t].active()) continue;
    const TaskSpec& task = config.tasks[t];
    const size_t dim = config.towers[0].heads[task.queryHead].outDim;
    if (task.kind == TaskKind::Retrieval) {
      retrieval(compute, t, task, batch, heads, coefficient, out[t], scratch, gemm, dim);
    } else {
      pointwise(t, task, batch, heads, coefficient, out[t], scratch, dim);
    }
  }
}

}  // namespace ebrix::train
