// The two-tower trainer (native/core/train): gradients of every layer and loss against central
// finite differences of an independent double-precision reference model, the forward pass
// against the same reference, learning a small retrieval task, bit-identical results for any
// thread count, bit-identical resume from a checkpoint, corrupt checkpoints, validation, and
// a throughput print for a WordNet-sized model.
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../error.h"
#include "../simd/dispatch.h"
#include "../train/trainer.h"
#include "check.h"

using namespace ebrix;
using namespace ebrix::train;

namespace {

// ---------------------------------------------------------------------------------------------
// Owned inputs and batches

struct OwnedInputs {
  std::vector<std::vector<int32_t>> ids;
  std::vector<std::vector<float>> values;
  TowerInputs view() const {
    TowerInputs v(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      v[i].ids = ids[i].empty() ? nullptr : ids[i].data();
      v[i].values = values[i].empty() ? nullptr : values[i].data();
    }
    return v;
  }
};

struct OwnedBatch {
  size_t size = 0, itemRows = 0;
  OwnedInputs query, item;
  std::vector<uint32_t> itemKey;
  std::vector<float> itemLogQ;
  std::vector<int32_t> task;
  std::vector<float> label, weight;
  Batch view() const {
    Batch b;
    b.size = size;
    b.itemRows = itemRows;
    b.query = query.view();
    b.item = item.view();
    b.itemKey = itemKey.data();
    b.itemLogQ = itemLogQ.data();
    b.task = task.data();
    b.label = label.data();
    b.weight = weight.data();
    return b;
  }
};

// Random inputs for a tower: ids anywhere in their table, masks of 0, 1 and 0.5.
OwnedInputs randomInputs(const TrainerConfig& config, Role role, size_t rows, std::mt19937& rng) {
  const TowerSpec& tower = config.towers[static_cast<int>(role)];
  OwnedInputs in;
  in.ids.resize(tower.inputs.size());
  in.values.resize(tower.inputs.size());
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (size_t i = 0; i < tower.inputs.size(); ++i) {
    const InputSpec& s = tower.inputs[i];
    if (s.kind == InputKind::Dense) {
      in.values[i].resize(rows * s.width);
      for (float& v : in.values[i]) v = normal(rng);
      continue;
    }
    std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(config.tables[s.table].rows) - 1);
    const size_t n = s.kind == InputKind::Bag ? rows * s.length : rows;
    in.ids[i].resize(n);
    for (int32_t& v : in.ids[i]) v = id(rng);
    if (s.kind == InputKind::Bag) {
      in.values[i].resize(n);
      for (size_t k = 0; k < n; ++k) {
        const uint32_t r = rng() % 6;
        in.values[i][k] = r == 0 ? 0.0f : r == 1 ? 0.5f : 1.0f;
      }
    }
  }
  return in;
}

Parameters randomParameters(const TrainerConfig& config, uint32_t seed, float scale = 0.5f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  Parameters p = zeroParameters(config);
  for (auto& t : p.tables) for (float& v : t) v = normal(rng);
  auto randomLayers = [&](std::vector<LayerParams>& layers) {
    for (auto& l : layers) {
      for (float& v : l.weight) v = u(rng);
      for (float& v : l.bias) v = 0.2f * u(rng);
      for (float& v : l.gamma) v = 1.0f + 0.4f * u(rng);
      for (float& v : l.beta) v = 0.2f * u(rng);
    }
  };
  for (auto& tower : p.towers) {
    randomLayers(tower.layers);
    for (auto& expert : tower.experts) randomLayers(expert);
    // Gates far from uniform, so that the softmax's gradient is exercised.
    for (auto& g : tower.gates) {
      for (float& v : g.weight) v = 3.0f * u(rng);
      for (float& v : g.bias) v = u(rng);
    }
    for (auto& h : tower.heads) {
      for (float& v : h.weight) v = u(rng);
      for (float& v : h.bias) v = 0.2f * u(rng);
    }
  }
  return p;
}

// Every array of a Parameters, with a name.
void forEachArray(Parameters& p, const std::function<void(const std::string&, std::vector<float>&)>& fn) {
  for (size_t t = 0; t < p.tables.size(); ++t) fn("tables[" + std::to_string(t) + "]", p.tables[t]);
  for (size_t r = 0; r < 2; ++r) {
    const std::string tower = "towers[" + std::to_string(r) + "]";
    auto layers = [&](std::vector<LayerParams>& stack, const std::string& prefix) {
      for (size_t l = 0; l < stack.size(); ++l) {
        const std::string name = prefix + "[" + std::to_string(l) + "]";
        LayerParams& lp = stack[l];
        fn(name + ".weight", lp.weight);
        fn(name + ".bias", lp.bias);
        if (!lp.gamma.empty()) fn(name + ".gamma", lp.gamma);
        if (!lp.beta.empty()) fn(name + ".beta", lp.beta);
      }
    };
    layers(p.towers[r].layers, tower + ".layers");
    for (size_t e = 0; e < p.towers[r].experts.size(); ++e) layers(p.towers[r].experts[e], tower + ".experts[" + std::to_string(e) + "]");
    for (size_t h = 0; h < p.towers[r].gates.size(); ++h) {
      fn(tower + ".gates[" + std::to_string(h) + "].weight", p.towers[r].gates[h].weight);
      fn(tower + ".gates[" + std::to_string(h) + "].bias", p.towers[r].gates[h].bias);
    }
    for (size_t h = 0; h < p.towers[r].heads.size(); ++h) {
      const std::string name = tower + ".heads[" + std::to_string(h) + "]";
      fn(name + ".weight", p.towers[r].heads[h].weight);
      fn(name + ".bias", p.towers[r].heads[h].bias);
    }
  }
  fn("taskLogVariance", p.taskLogVariance);
}

// ---------------------------------------------------------------------------------------------
// The reference: the model and the objective written out plainly, in double.

using Matrix = std::vector<double>;  // row-major

Matrix referenceLayers(const std::vector<LayerSpec>& specs, const std::vector<LayerParams>& params, Matrix x, size_t rows) {
  for (size_t l = 0; l < specs.size(); ++l) {
    const LayerSpec& s = specs[l];
    const LayerParams& lp = params[l];
    Matrix y(rows * s.outDim);
    for (size_t row = 0; row < rows; ++row) {
      double* yr = &y[row * s.outDim];
      for (size_t o = 0; o < s.outDim; ++o) {
        double acc = lp.bias[o];
        for (size_t i = 0; i < s.inDim; ++i) acc += double(lp.weight[o * s.inDim + i]) * x[row * s.inDim + i];
        yr[o] = acc;
      }
      if (s.layerNorm) {
        double mean = 0, var = 0;
        for (size_t o = 0; o < s.outDim; ++o) mean += yr[o];
        mean /= double(s.outDim);
        for (size_t o = 0; o < s.outDim; ++o) var += (yr[o] - mean) * (yr[o] - mean);
        var /= double(s.outDim);
        for (size_t o = 0; o < s.outDim; ++o) yr[o] = (yr[o] - mean) / std::sqrt(var + double(s.epsilon)) * lp.gamma[o] + lp.beta[o];
      }
      if (s.relu) for (size_t o = 0; o < s.outDim; ++o) yr[o] = std::max(yr[o], 0.0);
      if (s.residual) for (size_t o = 0; o < s.outDim; ++o) yr[o] += x[row * s.inDim + o];
    }
    x = std::move(y);
  }
  return x;
}

std::vector<Matrix> referenceHeads(const TrainerConfig& config, const Parameters& p, Role role, const TowerInputs& in,
                                   size_t rows) {
  const int r = static_cast<int>(role);
  const TowerSpec& tower = config.towers[r];
  size_t width = 0;
  for (const InputSpec& s : tower.inputs) width += s.kind == InputKind::Dense ? s.width : config.tables[s.table].dim;
  Matrix x(rows * width, 0.0);
  for (size_t row = 0; row < rows; ++row) {
    size_t offset = 0;
    for (size_t i = 0; i < tower.inputs.size(); ++i) {
      const InputSpec& s = tower.inputs[i];
      if (s.kind == InputKind::Dense) {
        for (size_t d = 0; d < s.width; ++d) x[row * width + offset + d] = in[i].values[row * s.width + d];
        offset += s.width;
        continue;
      }
      const size_t dim = config.tables[s.table].dim;
      const std::vector<float>& table = p.tables[s.table];
      if (s.kind == InputKind::Ids) {
        for (size_t d = 0; d < dim; ++d) x[row * width + offset + d] = table[in[i].ids[row] * dim + d];
      } else {
        double count = 0.0;
        for (size_t l = 0; l < s.length; ++l) {
          const double m = in[i].values[row * s.length + l];
          count += m;
          const size_t id = static_cast<size_t>(in[i].ids[row * s.length + l]);
          for (size_t d = 0; d < dim; ++d) x[row * width + offset + d] += m * table[id * dim + d];
        }
        if (s.pooling == Pooling::Mean) {
          for (size_t d = 0; d < dim; ++d) x[row * width + offset + d] /= std::max(count, 1.0);
        }
      }
      offset += dim;
    }
  }
  x = referenceLayers(tower.layers, p.towers[r].layers, std::move(x), rows);
  if (!tower.layers.empty()) width = tower.layers.back().outDim;
  std::vector<Matrix> experts;
  size_t expertWidth = 0;
  for (size_t e = 0; e < tower.experts; ++e) {
    experts.push_back(referenceLayers(tower.expertLayers, p.towers[r].experts[e], x, rows));
    expertWidth = tower.expertLayers.back().outDim;
  }
  std::vector<Matrix> heads;
  for (size_t h = 0; h < tower.heads.size(); ++h) {
    const HeadSpec& s = tower.heads[h];
    const HeadParams& hp = p.towers[r].heads[h];
    // With experts the head reads its gate's mixture: softmax(x Gᵀ + c) weights over the experts.
    Matrix in = x;
    size_t inWidth = width;
    if (tower.experts > 0) {
      const HeadParams& gp = p.towers[r].gates[h];
      const size_t E = tower.experts;
      inWidth = expertWidth;
      in.assign(rows * inWidth, 0.0);
      for (size_t row = 0; row < rows; ++row) {
        std::vector<double> z(E);
        double top = -1e300, sum = 0.0;
        for (size_t e = 0; e < E; ++e) {
          double acc = gp.bias[e];
          for (size_t i = 0; i < width; ++i) acc += double(gp.weight[e * width + i]) * x[row * width + i];
          z[e] = acc;
          top = std::max(top, acc);
        }
        for (size_t e = 0; e < E; ++e) sum += std::exp(z[e] - top);
        for (size_t e = 0; e < E; ++e) {
          const double g = std::exp(z[e] - top) / sum;
          for (size_t d = 0; d < inWidth; ++d) in[row * inWidth + d] += g * experts[e][row * inWidth + d];
        }
      }
    }
    Matrix out(rows * s.outDim);
    for (size_t row = 0; row < rows; ++row) {
      double squares = 0;
      for (size_t o = 0; o < s.outDim; ++o) {
        double acc = hp.bias[o];
        for (size_t i = 0; i < inWidth; ++i) acc += double(hp.weight[o * inWidth + i]) * in[row * inWidth + i];
        out[row * s.outDim + o] = acc;
        squares += acc * acc;
      }
      if (s.normalize) {
        const double divisor = std::max(std::sqrt(squares), 1e-12);
        for (size_t o = 0; o < s.outDim; ++o) out[row * s.outDim + o] /= divisor;
      }
    }
    heads.push_back(std::move(out));
  }
  return heads;
}

double referenceObjective(const TrainerConfig& config, const Parameters& p, const Batch& batch,
                          std::vector<double>* taskLoss = nullptr) {
  const std::vector<Matrix> q = referenceHeads(config, p, Role::Query, batch.query, batch.size);
  const std::vector<Matrix> v = referenceHeads(config, p, Role::Item, batch.item, batch.itemRows);
  double total = 0.0;
  if (taskLoss) taskLoss->assign(config.tasks.size(), std::numeric_limits<double>::quiet_NaN());
  for (size_t t = 0; t < config.tasks.size(); ++t) {
    const TaskSpec& task = config.tasks[t];
    const size_t dim = config.towers[0].heads[task.queryHead].outDim;
    const Matrix& Q = q[task.queryHead];
    const Matrix& V = v[task.itemHead];
    auto dot = [&](size_t b, size_t j) {
      double s = 0;
      for (size_t k = 0; k < dim; ++k) s += Q[b * dim + k] * V[j * dim + k];
      return s;
    };
    double weighted = 0.0, weights = 0.0;
    for (size_t b = 0; b < batch.size; ++b) {
      if (static_cast<size_t>(batch.task[b]) != t) continue;
      const double w = batch.weight[b], y = batch.label[b];
      double loss;
      if (task.kind == TaskKind::Retrieval) {
        std::vector<double> s(batch.itemRows);
        double top = -1e300;
        for (size_t j = 0; j < batch.itemRows; ++j) {
          s[j] = dot(b, j) / task.temperature - (task.logQ ? double(batch.itemLogQ[j]) : 0.0);
          if (task.maskAccidentalHits && j != b && batch.itemKey[j] == batch.itemKey[b]) s[j] = -1e300;
          top = std::max(top, s[j]);
        }
        double sum = 0;
        for (size_t j = 0; j < batch.itemRows; ++j) sum += s[j] < -1e299 ? 0.0 : std::exp(s[j] - top);
        loss = top + std::log(sum) - s[b];
      } else if (task.kind == TaskKind::Bce) {
        const double z = dot(b, b) / task.temperature;
        const double pr = 1.0 / (1.0 + std::exp(-z));
        loss = -(y * std::log(pr) + (1 - y) * std::log(1 - pr));
      } else {
        loss = (dot(b, b) - y) * (dot(b, b) - y);
      }
      weighted += w * loss;
      weights += w;
    }
    if (weights <= 0) continue;
    const double L = weighted / weights;
    if (taskLoss) (*taskLoss)[t] = L;
    if (config.uncertaintyWeighting) {
      total += std::exp(-double(p.taskLogVariance[t])) * L + p.taskLogVariance[t];
    } else {
      total += task.weight * L;
    }
  }
  return total;
}

// ---------------------------------------------------------------------------------------------
// Configs

InputSpec ids(size_t table) { return {InputKind::Ids, table, 0, Pooling::Mean, 0}; }
InputSpec bag(size_t table, size_t length, Pooling pooling) { return {InputKind::Bag, table, length, pooling, 0}; }
InputSpec dense(size_t width) { return {InputKind::Dense, 0, 0, Pooling::Mean, width}; }
LayerSpec layer(size_t in, size_t out, bool relu, bool norm, bool residual) { return {in, out, relu, norm, 1e-5f, residual}; }
TaskSpec task(TaskKind kind, size_t qh, size_t ih, float weight, float temperature, bool logQ, bool mask) {
  return {kind, qh, ih, weight, temperature, logQ, mask};
}

// A tiny model with every part: shared tables, ids, mean and sum bags, dense inputs, LayerNorm,
// ReLU, a residual layer, normalised and plain heads, three task kinds.
TrainerConfig tinyConfig(bool uncertainty, bool logQ, bool mask) {
  TrainerConfig c;
  c.tables = {{20, 4}, {7, 3}};
  c.towers[0].inputs = {bag(0, 3, Pooling::Mean), ids(1), dense(2)};
  c.towers[0].layers = {layer(9, 6, true, true, false), layer(6, 6, true, false, true)};
  c.towers[0].heads = {{6, 5, true}, {6, 5, false}};
  c.towers[1].inputs = {ids(0), bag(1, 2, Pooling::Sum), dense(1)};
  c.towers[1].layers = {layer(8, 6, true, false, false)};
  c.towers[1].heads = {{6, 5, true}, {6, 5, false}};
  c.tasks = {task(TaskKind::Retrieval, 0, 0, 1.0f, 0.5f, logQ, mask), task(TaskKind::Bce, 1, 1, 0.7f, 2.0f, false, false),
             task(TaskKind::Mse, 1, 1, 0.3f, 1.0f, false, false)};
  c.uncertaintyWeighting = uncertainty;
  c.threads = 2;
  return c;
}

OwnedBatch tinyBatch(const TrainerConfig& c, size_t extra, uint32_t seed) {
  std::mt19937 rng(seed);
  OwnedBatch b;
  b.size = 8;
  b.itemRows = 8 + extra;
  b.query = randomInputs(c, Role::Query, b.size, rng);
  b.item = randomInputs(c, Role::Item, b.itemRows, rng);
  // Keys repeat so that masking has accidental hits to drop.
  const uint32_t keys[] = {1, 2, 3, 1, 4, 5, 2, 6, 1, 7, 3, 8, 9};
  for (size_t j = 0; j < b.itemRows; ++j) b.itemKey.push_back(keys[j % 13]);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (size_t j = 0; j < b.itemRows; ++j) b.itemLogQ.push_back(std::log(0.05f + 0.5f * u(rng)));
  b.task = {0, 0, 1, 0, 2, 1, 0, 2};
  for (size_t i = 0; i < b.size; ++i) {
    b.label.push_back(b.task[i] == 1 ? (i % 2 == 0 ? 1.0f : 0.25f) : b.task[i] == 2 ? 0.3f * float(i) - 0.8f : 0.0f);
    b.weight.push_back(i == 3 ? 0.0f : 0.5f + 0.25f * float(i % 3));
  }
  return b;
}

// ---------------------------------------------------------------------------------------------
// The finite-difference harness

struct GradReport {
  size_t checked = 0;
  size_t significant = 0;  // entries whose numerical gradient is above 1e-3
  size_t failed = 0;
  std::string firstFailure;
  std::vector<std::string> arraysWithoutSignal;
};

// Compares `analytic` (× scale) to central differences of the reference objective. Every
// entry of small arrays is checked, a sample of 40 of larger ones. An entry passes when
// |a − n| ≤ 1e-2·max(|a|, |n|) + 2e-5. `expectSignal`: arrays that must hold at least one
// significant entry (so that every layer's check means something).
GradReport checkGradients(const TrainerConfig& config, const Parameters& params, const Batch& batch, Parameters analytic,
                          double scale, const std::vector<std::string>& noSignalExpected = {}) {
  GradReport report;
  Parameters probe = params;
  std::mt19937 rng(99);
  std::vector<std::pair<std::string, std::vector<float>*>> probes, grads;
  forEachArray(probe, [&](const std::string& name, std::vector<float>& v) { probes.push_back({name, &v}); });
  forEachArray(analytic, [&](const std::string& name, std::vector<float>& v) { grads.push_back({name, &v}); });
  for (size_t a = 0; a < probes.size(); ++a) {
    const std::string& name = probes[a].first;
    std::vector<float>& values = *probes[a].second;
    const std::vector<float>& g = *grads[a].second;
    std::vector<size_t> entries;
    if (values.size() <= 40) {
      for (size_t i = 0; i < values.size(); ++i) entries.push_back(i);
    } else {
      for (size_t i = 0; i < 40; ++i) entries.push_back(rng() % values.size());
    }
    size_t significantHere = 0;
    for (size_t i : entries) {
      const float original = values[i];
      auto central = [&](float step) {
        const float up = original + step, down = original - step;
        values[i] = up;
        const double fUp = referenceObjective(config, probe, batch);
        values[i] = down;
        const double fDown = referenceObjective(config, probe, batch);
        values[i] = original;
        return (fUp - fDown) / (double(up) - double(down));
      };
      const double a2 = scale * g[i];
      auto differs = [&](double numeric) {
        return std::fabs(a2 - numeric) > 1e-2 * std::max(std::fabs(a2), std::fabs(numeric)) + 2e-5;
      };
      double numeric = central(1e-3f);
      // A ReLU kink within the step makes the difference quotient mix two slopes: retry with
      // smaller steps, which a kink is less likely to straddle (the reference is in double).
      if (differs(numeric)) numeric = central(1e-4f);
      if (differs(numeric)) numeric = central(1e-5f);
      ++report.checked;
      if (std::fabs(numeric) > 1e-3) ++significantHere;
      if (differs(numeric)) {
        if (report.failed++ == 0) {
          report.firstFailure = name + "[" + std::to_string(i) + "]: analytic " + std::to_string(a2) + " numeric " +
                                std::to_string(numeric);
        }
      }
    }
    report.significant += significantHere;
    bool expectNone = false;
    for (const auto& n : noSignalExpected) expectNone = expectNone || n == name;
    if (significantHere == 0 && !expectNone) report.arraysWithoutSignal.push_back(name);
  }
  return report;
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

void gradientCase(const TrainerConfig& config, size_t extra, uint32_t seed);

// The tiny model with a mixture of experts in both towers: the query tower's experts (two
// layers, the second with LayerNorm) read its shared layers, the item tower's (one linear
// layer each) read the features directly. One gate per head: two in each tower.
TrainerConfig tinyMixtureConfig(bool uncertainty, bool logQ, bool mask) {
  TrainerConfig c = tinyConfig(uncertainty, logQ, mask);
  c.towers[0].experts = 3;
  c.towers[0].expertLayers = {layer(6, 5, true, false, false), layer(5, 4, true, true, false)};
  c.towers[0].heads = {{4, 5, true}, {4, 5, false}};
  c.towers[1].layers.clear();
  c.towers[1].experts = 2;
  c.towers[1].expertLayers = {layer(8, 6, false, false, false)};
  return c;
}

// Experts over dense inputs only, with no shared layers: nothing below the gates and experts
// takes a gradient.
TrainerConfig denseMixtureConfig() {
  TrainerConfig c = tinyMixtureConfig(false, false, true);
  c.towers[1].inputs = {dense(3)};
  c.towers[1].experts = 4;
  c.towers[1].expertLayers = {layer(3, 6, true, false, false)};
  return c;
}

void gradientCase(bool uncertainty, bool logQ, bool mask, size_t extra, uint32_t seed) {
  gradientCase(tinyConfig(uncertainty, logQ, mask), extra, seed);
}

void gradientCase(const TrainerConfig& config, size_t extra, uint32_t seed) {
  const bool uncertainty = config.uncertaintyWeighting;
  Parameters params = randomParameters(config, seed);
  if (uncertainty) params.taskLogVariance = {0.3f, -0.4f, 0.1f};
  Trainer trainer(config, params);
  const OwnedBatch owned = tinyBatch(config, extra, seed + 1);
  const Batch batch = owned.view();
  Parameters analytic;
  const StepResult r = trainer.gradients(batch, analytic);
  std::vector<double> taskLoss;
  const double reference = referenceObjective(config, params, batch, &taskLoss);
  CHECK_MSG(std::fabs(r.loss - reference) < 1e-5 * (1 + std::fabs(reference)), "loss " << r.loss << " vs " << reference);
  for (size_t t = 0; t < taskLoss.size(); ++t) {
    CHECK_MSG(std::fabs(r.taskLoss[t] - taskLoss[t]) < 1e-5 * (1 + std::fabs(taskLoss[t])), "task " << t);
  }
  CHECK(r.taskExamples == (std::vector<double>{4, 2, 2}));
  // The log-variances have a gradient only with uncertainty weighting.
  const std::vector<std::string> quiet = uncertainty ? std::vector<std::string>{} : std::vector<std::string>{"taskLogVariance"};
  const GradReport ok = checkGradients(config, params, batch, analytic, 1.0, quiet);
  CHECK_MSG(ok.failed == 0, ok.failed << " of " << ok.checked << " entries differ; first " << ok.firstFailure);
  CHECK_MSG(ok.arraysWithoutSignal.empty(), "no significant gradient in " << joined(ok.arraysWithoutSignal));
  CHECK(ok.significant > 100);
  // The harness would notice a wrong gradient: 5% too large fails.
  const GradReport wrong = checkGradients(config, params, batch, analytic, 1.05, quiet);
  CHECK_MSG(wrong.failed > ok.significant / 2, "a 5% error went unnoticed (" << wrong.failed << " failures)");
  // The global norm is the norm of these gradients.
  double squares = 0;
  forEachArray(analytic, [&](const std::string&, std::vector<float>& v) {
    for (float x : v) squares += double(x) * x;
  });
  CHECK(std::fabs(std::sqrt(squares) - r.gradNorm) < 1e-6 * (1 + r.gradNorm));
  // A planted 5% error in only the gates, or in only one expert's first layer, is caught.
  for (size_t role = 0; role < 2; ++role) {
    if (config.towers[role].experts == 0) continue;
    Parameters planted = analytic;
    for (HeadParams& g : planted.towers[role].gates) for (float& v : g.weight) v *= 1.05f;
    const GradReport gates = checkGradients(config, params, batch, planted, 1.0, quiet);
    CHECK_MSG(gates.failed > 0 && gates.firstFailure.find(".gates[") != std::string::npos,
              "a 5% error in the gates went unnoticed: " << gates.firstFailure);
    planted = analytic;
    for (float& v : planted.towers[role].experts.back()[0].weight) v *= 1.05f;
    const GradReport expert = checkGradients(config, params, batch, planted, 1.0, quiet);
    CHECK_MSG(expert.failed > 0 && expert.firstFailure.find(".experts[") != std::string::npos,
              "a 5% error in an expert went unnoticed: " << expert.firstFailure);
  }
}

// ---------------------------------------------------------------------------------------------
// A bigger config for determinism, checkpoints and throughput

TrainerConfig wordnetConfig(size_t vocab, size_t dim, size_t hidden, size_t out, SparseOptimizer sparse, unsigned threads) {
  TrainerConfig c;
  c.tables = {{vocab, dim}, {8, dim}, {64, dim}};
  c.towers[0].inputs = {bag(0, 32, Pooling::Mean)};
  c.towers[0].layers = {layer(dim, hidden, true, false, false)};
  c.towers[0].heads = {{hidden, out, true}};
  c.towers[1].inputs = {bag(0, 32, Pooling::Mean), bag(0, 8, Pooling::Mean), ids(1), ids(2)};
  c.towers[1].layers = {layer(4 * dim, hidden, true, false, false)};
  c.towers[1].heads = {{hidden, out, true}};
  c.tasks = {task(TaskKind::Retrieval, 0, 0, 1.0f, 0.05f, true, true)};
  c.optimizer.sparse = sparse;
  c.optimizer.learningRate = 1e-3f;
  c.optimizer.sparseLearningRate = 1e-2f;
  c.threads = threads;
  return c;
}

// Token ids skewed toward small values (as word frequencies are), masks with random lengths.
OwnedBatch wordnetBatch(const TrainerConfig& c, size_t size, size_t extra, uint32_t seed) {
  std::mt19937 rng(seed);
  OwnedBatch b;
  b.size = size;
  b.itemRows = size + extra;
  auto fill = [&](Role role, size_t rows) {
    OwnedInputs in = randomInputs(c, role, rows, rng);
    const TowerSpec& tower = c.towers[static_cast<int>(role)];
    for (size_t i = 0; i < tower.inputs.size(); ++i) {
      if (tower.inputs[i].kind != InputKind::Bag) continue;
      const size_t length = tower.inputs[i].length;
      const size_t vocab = c.tables[tower.inputs[i].table].rows;
      for (size_t r = 0; r < rows; ++r) {
        const size_t used = 1 + rng() % length;
        for (size_t l = 0; l < length; ++l) {
          const double u = std::uniform_real_distribution<double>(0, 1)(rng);
          in.ids[i][r * length + l] = static_cast<int32_t>(std::min<double>(vocab - 1, std::pow(double(vocab), u) - 1));
          in.values[i][r * length + l] = l < used ? 1.0f : 0.0f;
        }
      }
    }
    return in;
  };
  b.query = fill(Role::Query, b.size);
  b.item = fill(Role::Item, b.itemRows);
  for (size_t j = 0; j < b.itemRows; ++j) b.itemKey.push_back(static_cast<uint32_t>(rng() % (b.itemRows * 4)));
  for (size_t j = 0; j < b.itemRows; ++j) b.itemLogQ.push_back(-std::log(float(b.itemRows)) + 0.1f * float(j % 7));
  b.task.assign(size, 0);
  b.label.assign(size, 1.0f);
  b.weight.assign(size, 1.0f);
  return b;
}

Parameters wordnetParameters(const TrainerConfig& c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Parameters p = zeroParameters(c);
  for (size_t t = 0; t < c.tables.size(); ++t) {
    const float scale = 1.0f / std::sqrt(float(c.tables[t].dim));
    for (float& v : p.tables[t]) v = normal(rng) * scale;
  }
  for (auto& tower : p.towers) {
    for (auto& l : tower.layers) for (float& v : l.weight) v = normal(rng) * 0.1f;
    for (auto& h : tower.heads) for (float& v : h.weight) v = normal(rng) * 0.1f;
  }
  return p;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

TEST_CASE("train.gradients_match_finite_differences") { gradientCase(false, true, true, 5, 11); }

TEST_CASE("train.gradients_plain_retrieval_no_extra_negatives_uncertainty") { gradientCase(true, false, false, 0, 21); }

TEST_CASE("train.gradients_logq_without_masking") { gradientCase(false, true, false, 3, 31); }

TEST_CASE("train.mixture_gradients_match_finite_differences") {
  gradientCase(tinyMixtureConfig(false, true, true), 5, 52);
  gradientCase(tinyMixtureConfig(true, false, false), 0, 61);
}

TEST_CASE("train.mixture_over_dense_inputs_only") { gradientCase(denseMixtureConfig(), 3, 72); }

TEST_CASE("train.mixture_forward_matches_reference") {
  const TrainerConfig config = tinyMixtureConfig(false, true, true);
  const Parameters params = randomParameters(config, 9);
  Trainer trainer(config, params);
  std::mt19937 rng(10);
  for (int role = 0; role < 2; ++role) {
    const size_t rows = 41;
    const OwnedInputs in = randomInputs(config, static_cast<Role>(role), rows, rng);
    const std::vector<Matrix> ref = referenceHeads(config, params, static_cast<Role>(role), in.view(), rows);
    for (size_t h = 0; h < config.towers[role].heads.size(); ++h) {
      const size_t out = config.towers[role].heads[h].outDim;
      std::vector<float> got(rows * out);
      trainer.embed(static_cast<Role>(role), in.view(), rows, h, got.data());
      for (size_t i = 0; i < got.size(); ++i) {
        CHECK_MSG(std::fabs(got[i] - ref[h][i]) < 1e-5 * (1 + std::fabs(ref[h][i])),
                  "role " << role << " head " << h << " [" << i << "] " << got[i] << " vs " << ref[h][i]);
      }
    }
  }
}

TEST_CASE("train.gradients_on_every_simd_level") {
  // The tile kernels differ by level (scalar, AVX2, AVX-512): the products must be right on each.
  for (const TrainerConfig& config : {tinyConfig(true, true, true), tinyMixtureConfig(true, true, true)}) {
  const Parameters params = randomParameters(config, 41);
  const OwnedBatch owned = tinyBatch(config, 4, 42);
  for (simd::Level level : simd::supportedLevels()) {
    Trainer trainer(config, params, &simd::kernelsFor(level));
    Parameters analytic;
    trainer.gradients(owned.view(), analytic);
    const GradReport r = checkGradients(config, params, owned.view(), analytic, 1.0);
    CHECK_MSG(r.failed == 0, simd::levelName(level) << ": " << r.firstFailure);
  }
  }
}

TEST_CASE("train.forward_matches_reference") {
  const TrainerConfig config = tinyConfig(false, true, true);
  const Parameters params = randomParameters(config, 5);
  Trainer trainer(config, params);
  std::mt19937 rng(6);
  for (int role = 0; role < 2; ++role) {
    const size_t rows = 37;
    const OwnedInputs in = randomInputs(config, static_cast<Role>(role), rows, rng);
    const std::vector<Matrix> ref = referenceHeads(config, params, static_cast<Role>(role), in.view(), rows);
    for (size_t h = 0; h < config.towers[role].heads.size(); ++h) {
      const size_t out = config.towers[role].heads[h].outDim;
      std::vector<float> got(rows * out);
      trainer.embed(static_cast<Role>(role), in.view(), rows, h, got.data());
      for (size_t i = 0; i < got.size(); ++i) {
        CHECK_MSG(std::fabs(got[i] - ref[h][i]) < 1e-5 * (1 + std::fabs(ref[h][i])),
                  "role " << role << " head " << h << " [" << i << "] " << got[i] << " vs " << ref[h][i]);
      }
    }
  }
}

TEST_CASE("train.learns_synthetic_retrieval") {
  // 64 items, each a bag of 4 random tokens; a query is its item's bag with one token replaced
  // by a random one. Both towers read one token table.
  const size_t items = 64, vocab = 256, tokens = 4;
  TrainerConfig c;
  c.tables = {{vocab, 16}};
  c.towers[0].inputs = {bag(0, tokens, Pooling::Mean)};
  c.towers[0].layers = {layer(16, 32, true, false, false)};
  c.towers[0].heads = {{32, 16, true}};
  c.towers[1].inputs = {bag(0, tokens, Pooling::Mean)};
  c.towers[1].layers = {layer(16, 32, true, false, false)};
  c.towers[1].heads = {{32, 16, true}};
  c.tasks = {task(TaskKind::Retrieval, 0, 0, 1.0f, 0.1f, false, true)};
  c.optimizer.learningRate = 3e-3f;
  c.optimizer.sparseLearningRate = 3e-2f;
  c.threads = 2;
  std::mt19937 rng(7);
  std::vector<int32_t> itemTokens(items * tokens);
  for (int32_t& t : itemTokens) t = static_cast<int32_t>(rng() % vocab);
  Trainer trainer(c, wordnetParameters(c, 8));

  auto query = [&](size_t item, std::vector<int32_t>& out) {
    out.assign(itemTokens.begin() + item * tokens, itemTokens.begin() + (item + 1) * tokens);
    out[rng() % tokens] = static_cast<int32_t>(rng() % vocab);
  };
  const size_t batchSize = 32;
  double firstLoss = 0, lastLoss = 0;
  for (int step = 0; step < 400; ++step) {
    OwnedBatch b;
    b.size = b.itemRows = batchSize;
    b.query.ids.resize(1);
    b.query.values.assign(1, std::vector<float>(batchSize * tokens, 1.0f));
    b.item.ids.resize(1);
    b.item.values.assign(1, std::vector<float>(batchSize * tokens, 1.0f));
    std::vector<int32_t> q;
    for (size_t i = 0; i < batchSize; ++i) {
      const size_t item = rng() % items;
      query(item, q);
      b.query.ids[0].insert(b.query.ids[0].end(), q.begin(), q.end());
      b.item.ids[0].insert(b.item.ids[0].end(), itemTokens.begin() + item * tokens, itemTokens.begin() + (item + 1) * tokens);
      b.itemKey.push_back(static_cast<uint32_t>(item));
    }
    b.itemLogQ.assign(batchSize, 0.0f);
    b.task.assign(batchSize, 0);
    b.label.assign(batchSize, 1.0f);
    b.weight.assign(batchSize, 1.0f);
    const StepResult r = trainer.step(b.view());
    if (step == 0) firstLoss = r.loss;
    lastLoss = r.loss;
  }
  CHECK_MSG(lastLoss < firstLoss * 0.5, "loss " << firstLoss << " -> " << lastLoss);

  // recall@1 over fresh noisy queries of every item (4 each).
  std::vector<float> itemVectors(items * 16);
  {
    std::vector<float> mask(items * tokens, 1.0f);
    TowerInputs in = {{itemTokens.data(), mask.data()}};
    trainer.embed(Role::Item, in, items, 0, itemVectors.data());
  }
  size_t hits = 0, total = 0;
  for (int round = 0; round < 4; ++round) {
    std::vector<int32_t> qTokens;
    std::vector<int32_t> q;
    for (size_t i = 0; i < items; ++i) {
      query(i, q);
      qTokens.insert(qTokens.end(), q.begin(), q.end());
    }
    std::vector<float> mask(items * tokens, 1.0f), qv(items * 16);
    TowerInputs in = {{qTokens.data(), mask.data()}};
    trainer.embed(Role::Query, in, items, 0, qv.data());
    for (size_t i = 0; i < items; ++i) {
      size_t best = 0;
      double bestScore = -1e30;
      for (size_t j = 0; j < items; ++j) {
        double s = 0;
        for (size_t d = 0; d < 16; ++d) s += qv[i * 16 + d] * itemVectors[j * 16 + d];
        if (s > bestScore) bestScore = s, best = j;
      }
      hits += best == i;
      ++total;
    }
  }
  const double recall = double(hits) / double(total);
  std::cout << "synthetic retrieval: loss " << firstLoss << " -> " << lastLoss << ", recall@1 " << recall << "\n";
  CHECK_MSG(recall >= 0.95, "recall@1 " << recall);
}

// The WordNet-sized config with a mixture of 3 experts in each tower (one gate per head).
void addMixture(TrainerConfig& c, size_t expertWidth) {
  for (TowerSpec& t : c.towers) {
    const size_t in = t.layers.back().outDim;
    t.experts = 3;
    t.expertLayers = {layer(in, expertWidth, true, false, false)};
    for (HeadSpec& h : t.heads) h.inDim = expertWidth;
  }
}

TEST_CASE("train.bit_identical_for_any_thread_count") {
  for (int variant = 0; variant < 3; ++variant) {
    const SparseOptimizer sparse = variant == 1 ? SparseOptimizer::Adagrad : SparseOptimizer::Adam;
    std::vector<std::vector<uint8_t>> states;
    for (unsigned threads : {1u, 2u, 4u}) {
      TrainerConfig c = wordnetConfig(4096, 32, 64, 32, sparse, threads);
      if (variant == 2) addMixture(c, 48);
      c.tasks.push_back(task(TaskKind::Bce, 0, 0, 0.5f, 1.0f, false, false));
      c.towers[0].layers[0].layerNorm = true;
      c.uncertaintyWeighting = true;
      c.optimizer.clipNorm = 0.5f;
      c.optimizer.weightDecay = 0.01f;
      Trainer trainer(c, wordnetParameters(c, 3));
      std::vector<double> losses;
      for (uint32_t s = 0; s < 4; ++s) {
        OwnedBatch b = wordnetBatch(c, 96, 64, 100 + s);
        for (size_t i = 0; i < b.size; i += 3) b.task[i] = 1;
        losses.push_back(trainer.step(b.view()).loss);
      }
      states.push_back(trainer.saveState());
    }
    CHECK(states[0] == states[1]);
    CHECK(states[0] == states[2]);
  }
}

TEST_CASE("train.checkpoint_resumes_bit_identically") {
  for (int variant = 0; variant < 3; ++variant) {
    const SparseOptimizer sparse = variant == 1 ? SparseOptimizer::Adagrad : SparseOptimizer::Adam;
    TrainerConfig c = wordnetConfig(2048, 16, 32, 16, sparse, 2);
    if (variant == 2) addMixture(c, 24);
    c.uncertaintyWeighting = true;
    const Parameters init = wordnetParameters(c, 4);
    std::vector<OwnedBatch> batches;
    for (uint32_t s = 0; s < 10; ++s) batches.push_back(wordnetBatch(c, 48, 16, 200 + s));

    Trainer straight(c, init);
    for (const auto& b : batches) straight.step(b.view());

    Trainer first(c, init);
    for (size_t s = 0; s < 5; ++s) first.step(batches[s].view());
    const std::vector<uint8_t> saved = first.saveState();
    Trainer resumed(c, wordnetParameters(c, 99));  // other parameters: all of them are restored
    resumed.loadState(saved.data(), saved.size());
    CHECK(resumed.steps() == 5);
    for (size_t s = 5; s < 10; ++s) resumed.step(batches[s].view());
    CHECK(resumed.steps() == 10);
    CHECK(resumed.saveState() == straight.saveState());
  }
}

TEST_CASE("train.corrupt_checkpoint_is_refused") {
  const TrainerConfig c = wordnetConfig(512, 8, 16, 8, SparseOptimizer::Adam, 1);
  Trainer trainer(c, wordnetParameters(c, 5));
  const OwnedBatch b = wordnetBatch(c, 16, 8, 1);
  trainer.step(b.view());
  const std::vector<uint8_t> good = trainer.saveState();
  Trainer other(c, wordnetParameters(c, 6));
  const std::vector<uint8_t> before = other.saveState();

  std::vector<uint8_t> bad = good;
  bad[bad.size() / 2] ^= 0x10;
  CHECK_THROWS_CODE(other.loadState(bad.data(), bad.size()), ErrorCode::CorruptFile);
  bad = good;
  bad[20] ^= 1;  // the step counter, under the header checksum
  CHECK_THROWS_CODE(other.loadState(bad.data(), bad.size()), ErrorCode::CorruptFile);
  for (size_t cut : {size_t(0), size_t(10), size_t(64), good.size() / 3, good.size() - 1}) {
    CHECK_THROWS_CODE(other.loadState(good.data(), cut), ErrorCode::CorruptFile);
  }
  // Any one damaged byte is caught: the header checksum covers bytes [0, 56), the data
  // checksum everything from byte 64 on, and bytes [56, 64) are the header checksum itself.
  std::mt19937 rng(17);
  for (int trial = 0; trial < 200; ++trial) {
    bad = good;
    bad[rng() % bad.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
    CHECK_THROWS_CODE(other.loadState(bad.data(), bad.size()), ErrorCode::CorruptFile);
    CHECK_THROWS_CODE(other.loadState(good.data(), rng() % good.size()), ErrorCode::CorruptFile);
  }
  bad = good;
  bad.push_back(0);
  CHECK_THROWS_CODE(other.loadState(bad.data(), bad.size()), ErrorCode::CorruptFile);
  CHECK_THROWS_CODE(other.loadState(nullptr, 0), ErrorCode::CorruptFile);
  // Another shape, another optimizer.
  Trainer wider(wordnetConfig(512, 8, 24, 8, SparseOptimizer::Adam, 1), wordnetParameters(wordnetConfig(512, 8, 24, 8, SparseOptimizer::Adam, 1), 1));
  CHECK_THROWS_CODE(wider.loadState(good.data(), good.size()), ErrorCode::CorruptFile);
  const TrainerConfig adagrad = wordnetConfig(512, 8, 16, 8, SparseOptimizer::Adagrad, 1);
  Trainer other2(adagrad, wordnetParameters(adagrad, 1));
  CHECK_THROWS_CODE(other2.loadState(good.data(), good.size()), ErrorCode::CorruptFile);
  // Nothing was changed by the failed loads.
  CHECK(other.saveState() == before);
  other.loadState(good.data(), good.size());
  CHECK(other.saveState() == good);
}

TEST_CASE("train.step_moves_only_touched_rows_and_clips") {
  TrainerConfig c = wordnetConfig(1000, 8, 16, 8, SparseOptimizer::Adam, 2);
  // Adam's first step is −lr·g/(|g| + ε): with ε near the clipped gradients' size the
  // clipping factor shows in every step taken.
  c.optimizer.clipNorm = 1e-2f;
  c.optimizer.epsilon = 1e-4f;
  const Parameters init = wordnetParameters(c, 9);
  Trainer trainer(c, init);
  OwnedBatch b = wordnetBatch(c, 8, 4, 3);
  std::vector<char> touched(1000, 0);
  for (int i = 0; i < 2; ++i) {
    const auto& in = i == 0 ? b.query : b.item;
    const TowerSpec& tower = c.towers[i];
    for (size_t k = 0; k < tower.inputs.size(); ++k) {
      if (tower.inputs[k].table != 0 || tower.inputs[k].kind == InputKind::Dense) continue;
      for (size_t n = 0; n < in.ids[k].size(); ++n) {
        if (tower.inputs[k].kind == InputKind::Ids || in.values[k][n] != 0.0f) touched[in.ids[k][n]] = 1;
      }
    }
  }
  Parameters g;
  Trainer(c, init).gradients(b.view(), g);
  const StepResult r = trainer.step(b.view());
  CHECK(r.step == 1 && trainer.steps() == 1);
  CHECK(r.gradNorm > 1e-2);
  const auto& after = trainer.parameters().tables[0];
  for (size_t row = 0; row < 1000; ++row) {
    bool moved = false;
    for (size_t d = 0; d < 8; ++d) moved = moved || after[row * 8 + d] != init.tables[0][row * 8 + d];
    CHECK_MSG(!moved || touched[row], "untouched row " << row << " moved");
  }
  const double scale = 1e-2 / r.gradNorm;
  size_t visible = 0;
  auto expectMove = [&](float before, float now, float grad, double lr) {
    const double gs = double(grad) * scale;
    const double expected = -lr * gs / (std::fabs(gs) + 1e-4);
    // Float rounding of the parameter: a few ulps of its value.
    CHECK_MSG(std::fabs((double(now) - before) - expected) < 1e-3 * std::fabs(expected) + 4e-7 * std::fabs(before) + 1e-9,
              now - before << " vs " << expected);
    // Without clipping the step would be about lr.
    if (std::fabs(expected) > 1e-5 && std::fabs(expected) < 0.8 * lr) ++visible;
  };
  const auto& w = trainer.parameters().towers[1].layers[0].weight;
  for (size_t i = 0; i < w.size(); i += 7) expectMove(init.towers[1].layers[0].weight[i], w[i], g.towers[1].layers[0].weight[i], 1e-3);
  for (size_t i = 0; i < after.size(); i += 3) expectMove(init.tables[0][i], after[i], g.tables[0][i], 1e-2);
  CHECK_MSG(visible > 100, visible);
}

TEST_CASE("train.evaluate_changes_nothing") {
  const TrainerConfig c = tinyConfig(true, true, true);
  const Parameters init = randomParameters(c, 12);
  Trainer trainer(c, init);
  const OwnedBatch b = tinyBatch(c, 2, 13);
  const std::vector<uint8_t> before = trainer.saveState();
  const StepResult r = trainer.evaluate(b.view());
  CHECK(std::isnan(r.gradNorm));
  CHECK(std::fabs(r.loss - referenceObjective(c, init, b.view())) < 1e-5 * (1 + std::fabs(r.loss)));
  CHECK(trainer.saveState() == before);
  // A task without examples reports NaN and adds nothing.
  OwnedBatch only = b;
  for (auto& t : only.task) t = 0;
  const StepResult r2 = trainer.evaluate(only.view());
  CHECK(std::isnan(r2.taskLoss[1]) && std::isnan(r2.taskLoss[2]));
  CHECK(r2.taskExamples[1] == 0);
}

TEST_CASE("train.invalid_config_is_refused") {
  auto refused = [](const std::function<void(TrainerConfig&)>& edit) {
    TrainerConfig c = tinyConfig(false, true, true);
    edit(c);
    bool threw = false;
    try {
      Trainer t(c, zeroParameters(tinyConfig(false, true, true)));
    } catch (const Error& e) {
      threw = true;
      CHECK_MSG(e.code() == ErrorCode::InvalidSpec, e.what());
    }
    CHECK(threw);
  };
  refused([](TrainerConfig& c) { c.towers[0].layers[0].residual = true; });       // 9 → 6
  refused([](TrainerConfig& c) { c.towers[0].inputs[0].table = 5; });              // no table 5
  refused([](TrainerConfig& c) { c.towers[1].heads[0].outDim = 4; c.towers[1].heads[1].outDim = 4; });  // 5 vs 4
  refused([](TrainerConfig& c) { c.tasks[0].temperature = 0; });
  refused([](TrainerConfig& c) { c.tasks[1].itemHead = 2; });
  refused([](TrainerConfig& c) { c.towers[0].heads.clear(); });
  refused([](TrainerConfig& c) { c.towers[0].layers[1].inDim = 5; });
  refused([](TrainerConfig& c) { c.tasks.clear(); });
  refused([](TrainerConfig& c) { c.optimizer.beta2 = 1.0f; });
  refused([](TrainerConfig& c) { c.tables[0].rows = 0; });
  // Mixtures: experts without layers, layers without experts, a first expert layer that does
  // not read the shared layers' width, heads that do not read the experts' width, too many.
  const auto mixture = [](TrainerConfig& c) {
    c.towers[0].experts = 2;
    c.towers[0].expertLayers = {layer(6, 4, true, false, false)};
    c.towers[0].heads = {{4, 5, true}, {4, 5, false}};
  };
  refused([&](TrainerConfig& c) { mixture(c); c.towers[0].expertLayers.clear(); });
  refused([&](TrainerConfig& c) { mixture(c); c.towers[0].experts = 0; });
  refused([&](TrainerConfig& c) { mixture(c); c.towers[0].expertLayers[0].inDim = 9; });
  refused([&](TrainerConfig& c) { mixture(c); c.towers[0].heads[1].inDim = 6; });
  refused([&](TrainerConfig& c) { mixture(c); c.towers[0].experts = 5000; });
  // Parameters of the wrong shape, or not finite.
  const TrainerConfig c = tinyConfig(false, true, true);
  Parameters p = randomParameters(c, 1);
  p.towers[1].heads[0].bias.pop_back();
  CHECK_THROWS_CODE(Trainer(c, p), ErrorCode::InvalidSpec);
  p = randomParameters(c, 1);
  p.tables[1][3] = std::nanf("");
  CHECK_THROWS_CODE(Trainer(c, p), ErrorCode::InvalidSpec);
  Trainer t(c, randomParameters(c, 1));
  CHECK_THROWS_CODE(t.setParameters(p), ErrorCode::InvalidVector);
  p.towers[0].layers[0].gamma.push_back(1);
  CHECK_THROWS_CODE(t.setParameters(p), ErrorCode::DimMismatch);
  // A mixture's gates and experts are checked too.
  const TrainerConfig m = tinyMixtureConfig(false, true, true);
  Trainer tm(m, randomParameters(m, 1));
  Parameters q = randomParameters(m, 2);
  q.towers[0].gates.pop_back();
  CHECK_THROWS_CODE(tm.setParameters(q), ErrorCode::DimMismatch);
  q = randomParameters(m, 2);
  q.towers[1].gates[0].weight.pop_back();
  CHECK_THROWS_CODE(tm.setParameters(q), ErrorCode::DimMismatch);
  q = randomParameters(m, 2);
  q.towers[0].experts[2][1].beta.clear();
  CHECK_THROWS_CODE(tm.setParameters(q), ErrorCode::DimMismatch);
  q = randomParameters(m, 2);
  q.towers[1].gates[1].bias[0] = std::nanf("");
  CHECK_THROWS_CODE(tm.setParameters(q), ErrorCode::InvalidVector);
  q = randomParameters(m, 2);
  tm.setParameters(q);
  CHECK(tm.parameters().towers[0].gates[1].weight == q.towers[0].gates[1].weight);
  CHECK(tm.parameters().towers[0].experts[1][1].gamma == q.towers[0].experts[1][1].gamma);
}

TEST_CASE("train.invalid_batch_is_refused") {
  const TrainerConfig c = tinyConfig(false, true, true);
  Trainer trainer(c, randomParameters(c, 1));
  const std::vector<uint8_t> before = trainer.saveState();
  auto refused = [&](const std::function<void(OwnedBatch&)>& edit) {
    OwnedBatch b = tinyBatch(c, 2, 3);
    edit(b);
    CHECK_THROWS_CODE(trainer.step(b.view()), ErrorCode::InvalidArgument);
  };
  refused([](OwnedBatch& b) { b.query.ids[0][5] = 20; });   // table 0 has 20 rows
  refused([](OwnedBatch& b) { b.item.ids[0][0] = -1; });
  refused([](OwnedBatch& b) { b.query.values[2][1] = std::nanf(""); });  // dense
  refused([](OwnedBatch& b) { b.query.values[0][0] = INFINITY; });     // mask
  refused([](OwnedBatch& b) { b.label[2] = 2.0f; });                    // bce label outside [0, 1]
  refused([](OwnedBatch& b) { b.label[0] = std::nanf(""); });
  refused([](OwnedBatch& b) { b.weight[1] = -1.0f; });
  refused([](OwnedBatch& b) { b.task[0] = 3; });
  refused([](OwnedBatch& b) { b.itemLogQ[1] = std::nanf(""); });
  refused([](OwnedBatch& b) { b.itemRows = 7; });                        // fewer items than examples
  CHECK(trainer.saveState() == before);
  std::vector<float> out(5);
  OwnedInputs in;
  CHECK_THROWS_CODE(trainer.embed(Role::Query, in.view(), 1, 0, out.data()), ErrorCode::InvalidArgument);
  std::mt19937 rng(1);
  const OwnedInputs ok = randomInputs(c, Role::Query, 1, rng);
  CHECK_THROWS_CODE(trainer.embed(Role::Query, ok.view(), 1, 2, out.data()), ErrorCode::InvalidArgument);
}

TEST_CASE("train.throughput_wordnet_sized") {
  // Query: a 32-token bag in a 2^18-row table; item: two bags and two categoricals;
  // embeddingDim 64, one hidden layer of 128, output 64, batch 512 + 512 extra negatives.
  // EBRIX_TRAIN_BENCH_STEPS sets the number of timed steps (default 6), EBRIX_TRAIN_BENCH_THREADS
  // the threads (default 0: all).
  const char* env = std::getenv("EBRIX_TRAIN_BENCH_STEPS");
  const int steps = env ? std::max(1, std::atoi(env)) : 6;
  const char* threads = std::getenv("EBRIX_TRAIN_BENCH_THREADS");
  const TrainerConfig c = wordnetConfig(size_t(1) << 18, 64, 128, 64, SparseOptimizer::Adam,
                                        threads ? static_cast<unsigned>(std::max(0, std::atoi(threads))) : 0);
  Trainer trainer(c, wordnetParameters(c, 1));
  std::vector<OwnedBatch> batches;
  for (uint32_t s = 0; s < 4; ++s) {
    batches.push_back(wordnetBatch(c, 512, 512, 300 + s));
    // Every query holds all 32 tokens (the item bags keep random lengths).
    std::fill(batches.back().query.values[0].begin(), batches.back().query.values[0].end(), 1.0f);
  }
  trainer.step(batches[0].view());  // warm the scratch buffers
  const auto start = std::chrono::steady_clock::now();
  double loss = 0;
  for (int s = 0; s < steps; ++s) loss = trainer.step(batches[s % batches.size()].view()).loss;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "wordnet-sized training: " << (512.0 * steps / seconds) << " examples/s (" << trainer.threads()
            << " threads, " << simd::levelName(simd::defaultLevel())
            << ", " << steps << " steps, loss " << loss << ")\n";
  CHECK(std::isfinite(loss));
}
