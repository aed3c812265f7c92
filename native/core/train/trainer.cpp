#include "trainer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "../simd/dispatch.h"
#include "checkpoint.h"
#include "optimizer.h"

namespace ebrix::train {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Dense updates are element-wise: split large arrays into blocks of this many values.
constexpr size_t kDenseBlock = 16384;

void copyInPlace(std::vector<float>& dst, const std::vector<float>& src) { std::copy(src.begin(), src.end(), dst.begin()); }

}  // namespace

Trainer::Trainer(TrainerConfig config, Parameters initial, const simd::Kernels* kernels) : config_(std::move(config)) {
  validateConfig(config_);
  validateParameters(config_, initial, ErrorCode::InvalidSpec, true);
  params_ = std::move(initial);
  grads_ = zeroTowers(config_);
  denseM_ = zeroTowers(config_);
  denseV_ = zeroTowers(config_);
  const size_t tasks = config_.tasks.size();
  taskGrad_.assign(tasks, 0.0f);
  taskM_.assign(tasks, 0.0f);
  taskV_.assign(tasks, 0.0f);
  for (const TableSpec& t : config_.tables) {
    sparseM_.emplace_back(t.rows * t.dim, 0.0f);
    if (config_.optimizer.sparse == SparseOptimizer::Adam) sparseV_.emplace_back(t.rows * t.dim, 0.0f);
  }
  compute_.kernels = kernels != nullptr ? kernels : &simd::kernelsFor(simd::defaultLevel());
  compute_.pool = &ThreadPool::shared();
  compute_.threads = ThreadPool::shared().resolve(config_.threads);
  sparse_.reset(config_.tables);

  // The dense arrays in a fixed order: the updates, the norm and the checkpoint all walk it.
  for (size_t role = 0; role < 2; ++role) {
    const std::string tower = std::string("towers[") + std::to_string(role) + "]";
    const TowerSpec& spec = config_.towers[role];
    auto addLayers = [&](const std::vector<LayerSpec>& specs, const std::string& prefix, std::vector<LayerParams>& p,
                         std::vector<LayerParams>& g, std::vector<LayerParams>& m, std::vector<LayerParams>& v) {
      for (size_t l = 0; l < specs.size(); ++l) {
        const LayerSpec& ls = specs[l];
        const std::string name = prefix + "[" + std::to_string(l) + "]";
        dense_.push_back({name + ".weight", p[l].weight.data(), g[l].weight.data(), m[l].weight.data(), v[l].weight.data(), ls.outDim, ls.inDim, true});
        dense_.push_back({name + ".bias", p[l].bias.data(), g[l].bias.data(), m[l].bias.data(), v[l].bias.data(), 1, ls.outDim, false});
        if (ls.layerNorm) {
          dense_.push_back({name + ".gamma", p[l].gamma.data(), g[l].gamma.data(), m[l].gamma.data(), v[l].gamma.data(), 1, ls.outDim, false});
          dense_.push_back({name + ".beta", p[l].beta.data(), g[l].beta.data(), m[l].beta.data(), v[l].beta.data(), 1, ls.outDim, false});
        }
      }
    };
    addLayers(spec.layers, tower + ".layers", params_.towers[role].layers, grads_[role].layers, denseM_[role].layers,
              denseV_[role].layers);
    for (size_t e = 0; e < spec.experts; ++e) {
      addLayers(spec.expertLayers, tower + ".experts[" + std::to_string(e) + "]", params_.towers[role].experts[e],
                grads_[role].experts[e], denseM_[role].experts[e], denseV_[role].experts[e]);
    }
    const size_t bottom = bottomWidth(spec, config_.tables);
    for (size_t h = 0; h < params_.towers[role].gates.size(); ++h) {
      const std::string name = tower + ".gates[" + std::to_string(h) + "]";
      HeadParams& p = params_.towers[role].gates[h];
      HeadParams& g = grads_[role].gates[h];
      HeadParams& m = denseM_[role].gates[h];
      HeadParams& v = denseV_[role].gates[h];
      dense_.push_back({name + ".weight", p.weight.data(), g.weight.data(), m.weight.data(), v.weight.data(), spec.experts, bottom, true});
      dense_.push_back({name + ".bias", p.bias.data(), g.bias.data(), m.bias.data(), v.bias.data(), 1, spec.experts, false});
    }
    for (size_t h = 0; h < spec.heads.size(); ++h) {
      const HeadSpec& hs = spec.heads[h];
      const std::string name = tower + ".heads[" + std::to_string(h) + "]";
      HeadParams& p = params_.towers[role].heads[h];
      HeadParams& g = grads_[role].heads[h];
      HeadParams& m = denseM_[role].heads[h];
      HeadParams& v = denseV_[role].heads[h];
      dense_.push_back({name + ".weight", p.weight.data(), g.weight.data(), m.weight.data(), v.weight.data(), hs.outDim, hs.inDim, true});
      dense_.push_back({name + ".bias", p.bias.data(), g.bias.data(), m.bias.data(), v.bias.data(), 1, hs.outDim, false});
    }
  }
  dense_.push_back({"taskLogVariance", params_.taskLogVariance.data(), taskGrad_.data(), taskM_.data(), taskV_.data(), 1, tasks, false});
}

TowerView Trainer::view(Role role) const {
  const size_t r = static_cast<size_t>(role);
  return TowerView{config_.towers[r], params_.towers[r], config_.tables, params_.tables};
}

StepResult Trainer::run(const Batch& batch, bool wantGradients) {
  validateBatch(config_, batch);
  groupExamples(config_, batch, lossScratch_, taskLoss_);
  const size_t tasks = config_.tasks.size();

  std::array<std::vector<char>, 2> want;
  for (size_t role = 0; role < 2; ++role) want[role].assign(config_.towers[role].heads.size(), 0);
  for (size_t t = 0; t < tasks; ++t) {
    if (!taskLoss_[t].active()) continue;
    want[0][config_.tasks[t].queryHead] = 1;
    want[1][config_.tasks[t].itemHead] = 1;
  }
  const std::array<const TowerInputs*, 2> inputs = {&batch.query, &batch.item};
  const std::array<size_t, 2> rows = {batch.size, batch.itemRows};
  for (size_t role = 0; role < 2; ++role) {
    forwardTower(compute_, view(static_cast<Role>(role)), *inputs[role], rows[role], want[role], states_[role], gemm_);
  }

  HeadTensors heads;
  for (size_t role = 0; role < 2; ++role) {
    const TowerView tower = view(static_cast<Role>(role));
    const size_t count = config_.towers[role].heads.size();
    auto& outputs = role == 0 ? heads.query : heads.item;
    auto& gradients = role == 0 ? heads.queryGrad : heads.itemGrad;
    outputs.assign(count, nullptr);
    gradients.assign(count, nullptr);
    headGrad_[role].resize(count);
    for (size_t h = 0; h < count; ++h) {
      if (!want[role][h]) continue;
      outputs[h] = headOutput(tower, states_[role], h);
      if (!wantGradients) continue;
      headGrad_[role][h].assign(rows[role] * config_.towers[role].heads[h].outDim, 0.0f);
      gradients[h] = headGrad_[role][h].data();
    }
  }

  coefficient_.resize(tasks);
  for (size_t t = 0; t < tasks; ++t) {
    coefficient_[t] = config_.uncertaintyWeighting ? std::exp(-static_cast<double>(params_.taskLogVariance[t]))
                                                   : static_cast<double>(config_.tasks[t].weight);
  }
  taskLosses(compute_, config_, batch, heads, wantGradients ? coefficient_.data() : nullptr, taskLoss_, lossScratch_, gemm_);

  StepResult result;
  result.step = step_;
  result.gradNorm = kNaN;
  result.taskLoss.resize(tasks);
  result.taskExamples.resize(tasks);
  for (size_t t = 0; t < tasks; ++t) {
    const TaskLoss& tl = taskLoss_[t];
    result.taskLoss[t] = tl.loss;
    result.taskExamples[t] = tl.examples;
    taskGrad_[t] = 0.0f;
    if (!tl.active()) continue;
    result.loss += coefficient_[t] * tl.loss;
    if (config_.uncertaintyWeighting) {
      result.loss += params_.taskLogVariance[t];
      taskGrad_[t] = static_cast<float>(1.0 - coefficient_[t] * tl.loss);
    }
  }
  if (!wantGradients) return result;

  sparse_.clear();
  for (size_t role = 0; role < 2; ++role) {
    const TowerView tower = view(static_cast<Role>(role));
    const auto& gradients = role == 0 ? heads.queryGrad : heads.itemGrad;
    const std::vector<const float*> headGrads(gradients.begin(), gradients.end());
    backwardTower(compute_, tower, states_[role], headGrads, grads_[role], dFeatures_[role], backward_, gemm_);
    if (!dFeatures_[role].empty()) collectSparse(tower, *inputs[role], rows[role], dFeatures_[role].data(), sparse_);
  }
  sparse_.reduce(compute_);

  double squares = 0.0;
  for (const DenseSlot& slot : dense_) {
    const size_t n = slot.rows * slot.cols;
    for (size_t i = 0; i < n; ++i) squares += static_cast<double>(slot.grad[i]) * slot.grad[i];
  }
  squares += sparse_.sumSquares();
  result.gradNorm = std::sqrt(squares);
  return result;
}

StepResult Trainer::step(const Batch& batch) {
  StepResult result = run(batch, true);
  if (!std::isfinite(result.gradNorm)) return result;
  const OptimizerSpec& o = config_.optimizer;
  const float scale = o.clipNorm > 0.0f && result.gradNorm > o.clipNorm ? static_cast<float>(o.clipNorm / result.gradNorm) : 1.0f;
  ++step_;
  const AdamStep dense = adamStep(o.learningRate, o.beta1, o.beta2, o.epsilon, o.weightDecay, step_, scale);
  for (const DenseSlot& slot : dense_) {
    // Without uncertainty weighting the log-variances are not trained.
    if (slot.param == params_.taskLogVariance.data() && !config_.uncertaintyWeighting) continue;
    compute_.blocks(slot.rows * slot.cols, kDenseBlock, [&](size_t begin, size_t end) {
      adamUpdate(slot.param + begin, slot.grad + begin, slot.m + begin, slot.v + begin, end - begin, dense, slot.decay);
    }, 4 * kDenseBlock);
  }
  const AdamStep sparse = adamStep(o.sparseLearningRate, o.beta1, o.beta2, o.epsilon, 0.0f, step_, scale);
  for (size_t t = 0; t < config_.tables.size(); ++t) {
    const std::vector<uint32_t>& rows = sparse_.rows(t);
    if (o.sparse == SparseOptimizer::Adam) {
      sparseAdamUpdate(compute_, params_.tables[t].data(), sparseM_[t].data(), sparseV_[t].data(), config_.tables[t].dim,
                       rows.data(), rows.size(), sparse_.gradients(t), sparse);
    } else {
      sparseAdagradUpdate(compute_, params_.tables[t].data(), sparseM_[t].data(), config_.tables[t].dim, rows.data(),
                          rows.size(), sparse_.gradients(t), o.sparseLearningRate, o.epsilon, scale);
    }
  }
  result.step = step_;
  return result;
}

StepResult Trainer::evaluate(const Batch& batch) { return run(batch, false); }

StepResult Trainer::gradients(const Batch& batch, Parameters& out) {
  StepResult result = run(batch, true);
  out = zeroParameters(config_);
  out.towers = grads_;
  out.taskLogVariance = taskGrad_;
  for (size_t t = 0; t < config_.tables.size(); ++t) {
    const size_t dim = config_.tables[t].dim;
    const std::vector<uint32_t>& rows = sparse_.rows(t);
    for (size_t i = 0; i < rows.size(); ++i) {
      std::copy(sparse_.gradients(t) + i * dim, sparse_.gradients(t) + (i + 1) * dim, out.tables[t].data() + rows[i] * dim);
    }
  }
  return result;
}

void Trainer::embed(Role role, const TowerInputs& inputs, size_t rows, size_t head, float* out) const {
  const size_t r = static_cast<size_t>(role);
  if (r > 1) throw Error(ErrorCode::InvalidArgument, "Expected role 0 (query) or 1 (item)");
  const TowerSpec& spec = config_.towers[r];
  if (head >= spec.heads.size()) {
    throw Error(ErrorCode::InvalidArgument, "Expected a head from 0 to " + std::to_string(spec.heads.size() - 1) +
                                                " but received " + std::to_string(head));
  }
  if (rows == 0) return;
  validateTowerInputs(config_, role, inputs, rows);
  std::vector<char> want(spec.heads.size(), 0);
  want[head] = 1;
  // Its own scratch: embed may run beside other const calls.
  TowerState state;
  Gemm gemm;
  const TowerView tower = view(role);
  forwardTower(compute_, tower, inputs, rows, want, state, gemm);
  const float* h = headOutput(tower, state, head);
  std::memcpy(out, h, rows * spec.heads[head].outDim * sizeof(float));
}

void Trainer::setParameters(const Parameters& params) {
  validateParameters(config_, params, ErrorCode::DimMismatch, false);
  validateParameters(config_, params, ErrorCode::InvalidVector, true);
  // In place: the dense slots point into these arrays.
  for (size_t t = 0; t < params.tables.size(); ++t) copyInPlace(params_.tables[t], params.tables[t]);
  for (size_t role = 0; role < 2; ++role) {
    auto copyLayers = [](std::vector<LayerParams>& dst, const std::vector<LayerParams>& src) {
      for (size_t l = 0; l < src.size(); ++l) {
        copyInPlace(dst[l].weight, src[l].weight);
        copyInPlace(dst[l].bias, src[l].bias);
        copyInPlace(dst[l].gamma, src[l].gamma);
        copyInPlace(dst[l].beta, src[l].beta);
      }
    };
    copyLayers(params_.towers[role].layers, params.towers[role].layers);
    for (size_t e = 0; e < params.towers[role].experts.size(); ++e) {
      copyLayers(params_.towers[role].experts[e], params.towers[role].experts[e]);
    }
    for (size_t h = 0; h < params.towers[role].gates.size(); ++h) {
      copyInPlace(params_.towers[role].gates[h].weight, params.towers[role].gates[h].weight);
      copyInPlace(params_.towers[role].gates[h].bias, params.towers[role].gates[h].bias);
    }
    for (size_t h = 0; h < params.towers[role].heads.size(); ++h) {
      copyInPlace(params_.towers[role].heads[h].weight, params.towers[role].heads[h].weight);
      copyInPlace(params_.towers[role].heads[h].bias, params.towers[role].heads[h].bias);
    }
  }
  copyInPlace(params_.taskLogVariance, params.taskLogVariance);
}

size_t Trainer::memoryBytes() const {
  size_t floats = 0;
  for (const TableSpec& t : config_.tables) {
    // The table, its moments or accumulator, and its row → slot map.
    floats += t.rows * t.dim * (config_.optimizer.sparse == SparseOptimizer::Adam ? 3 : 2) + t.rows;
  }
  for (const DenseSlot& slot : dense_) floats += 4 * slot.rows * slot.cols;  // value, gradient, m, v
  return floats * sizeof(float);
}

std::vector<StateArray> Trainer::stateArrays() const {
  // The checkpoint reads through these pointers on save and writes through them on load.
  auto* self = const_cast<Trainer*>(this);
  std::vector<StateArray> arrays;
  for (size_t t = 0; t < config_.tables.size(); ++t) {
    const std::string name = "tables[" + std::to_string(t) + "]";
    const size_t rows = config_.tables[t].rows, dim = config_.tables[t].dim;
    arrays.push_back({name, self->params_.tables[t].data(), rows, dim});
    if (config_.optimizer.sparse == SparseOptimizer::Adam) {
      arrays.push_back({name + ".m", self->sparseM_[t].data(), rows, dim});
      arrays.push_back({name + ".v", self->sparseV_[t].data(), rows, dim});
    } else {
      arrays.push_back({name + ".accumulator", self->sparseM_[t].data(), rows, dim});
    }
  }
  for (const DenseSlot& slot : dense_) {
    arrays.push_back({slot.name, slot.param, slot.rows, slot.cols});
    arrays.push_back({slot.name + ".m", slot.m, slot.rows, slot.cols});
    arrays.push_back({slot.name + ".v", slot.v, slot.rows, slot.cols});
  }
  return arrays;
}

std::vector<uint8_t> Trainer::saveState() const {
  return writeCheckpoint(step_, static_cast<uint32_t>(config_.optimizer.sparse), stateArrays());
}

void Trainer::loadState(const uint8_t* bytes, size_t size) {
  step_ = readCheckpoint(bytes, size, static_cast<uint32_t>(config_.optimizer.sparse), stateArrays());
}

}  // namespace ebrix::train
