#include "model.h"

#include <cmath>
#include <limits>
#include <string>

namespace ebrix::train {
namespace {

// Sizes past these are refused before anything is allocated (2^40 floats is 4 TiB). The
// width and length caps keep rows × width and rows × length far from overflow for any batch
// the binding accepts (at most 2^31 rows).
constexpr size_t kMaxElements = size_t(1) << 40;
constexpr size_t kMaxWidth = size_t(1) << 24;
constexpr size_t kMaxBagLength = size_t(1) << 20;
constexpr size_t kMaxExperts = 1024;

const char* roleName(size_t role) { return role == 0 ? "query" : "item"; }

[[noreturn]] void spec(const std::string& message) { throw Error(ErrorCode::InvalidSpec, message); }

bool finitePositive(float v) { return std::isfinite(v) && v > 0.0f; }

size_t checkedProduct(size_t a, size_t b, const std::string& what) {
  if (a != 0 && b > kMaxElements / a) spec(what + " is too large (" + std::to_string(a) + " × " + std::to_string(b) + ")");
  return a * b;
}

void checkArray(const std::vector<float>& values, size_t expected, const std::string& what, ErrorCode code,
                bool requireFinite) {
  if (values.size() != expected) {
    throw Error(code, what + " holds " + std::to_string(values.size()) + " values but needs " + std::to_string(expected));
  }
  if (!requireFinite) return;
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) throw Error(code, what + "[" + std::to_string(i) + "] is not finite");
  }
}

[[noreturn]] void badBatch(const std::string& message) { throw Error(ErrorCode::InvalidArgument, message); }

void checkIds(const int32_t* ids, size_t count, size_t rows, const std::string& what) {
  if (ids == nullptr) badBatch(what + ": missing ids");
  for (size_t i = 0; i < count; ++i) {
    if (ids[i] < 0 || static_cast<size_t>(ids[i]) >= rows) {
      badBatch("Expected ids from 0 to " + std::to_string(rows - 1) + " for " + what + " but received " +
               std::to_string(ids[i]) + " at " + std::to_string(i));
    }
  }
}

void checkFinite(const float* values, size_t count, const std::string& what) {
  if (values == nullptr) badBatch(what + ": missing values");
  for (size_t i = 0; i < count; ++i) {
    if (!std::isfinite(values[i])) badBatch("Expected finite values for " + what + " but received " +
                                            std::to_string(values[i]) + " at " + std::to_string(i));
  }
}

// Checks a stack of layers that receives `width` values per row; returns its output width.
size_t checkLayers(const std::vector<LayerSpec>& layers, size_t width, const std::string& name, const char* first) {
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerSpec& layer = layers[l];
    const std::string what = name + "[" + std::to_string(l) + "]";
    if (layer.inDim != width) {
      spec(what + ".inDim is " + std::to_string(layer.inDim) + " but it receives " + std::to_string(width) +
           " values per row (" + (l == 0 ? std::string(first) : "the previous layer's outDim") + ")");
    }
    if (layer.outDim == 0 || layer.outDim > kMaxWidth) spec(what + " needs an outDim from 1 to 2^24");
    checkedProduct(layer.inDim, layer.outDim, what + ".weight");
    if (layer.residual && layer.inDim != layer.outDim) {
      spec(what + " is residual but its inDim (" + std::to_string(layer.inDim) + ") differs from its outDim (" +
           std::to_string(layer.outDim) + ")");
    }
    if (layer.layerNorm && !finitePositive(layer.epsilon)) spec(what + ".layerNorm.epsilon must be a positive number");
    width = layer.outDim;
  }
  return width;
}

}  // namespace

size_t featureWidth(const TowerSpec& tower, const std::vector<TableSpec>& tables) {
  size_t width = 0;
  for (const InputSpec& input : tower.inputs) width += input.kind == InputKind::Dense ? input.width : tables[input.table].dim;
  return width;
}

size_t bottomWidth(const TowerSpec& tower, const std::vector<TableSpec>& tables) {
  return tower.layers.empty() ? featureWidth(tower, tables) : tower.layers.back().outDim;
}

size_t trunkWidth(const TowerSpec& tower, const std::vector<TableSpec>& tables) {
  if (tower.experts > 0 && !tower.expertLayers.empty()) return tower.expertLayers.back().outDim;
  return bottomWidth(tower, tables);
}

void validateConfig(const TrainerConfig& config) {
  for (size_t t = 0; t < config.tables.size(); ++t) {
    const TableSpec& table = config.tables[t];
    const std::string what = "tables[" + std::to_string(t) + "]";
    if (table.rows == 0 || table.dim == 0) spec(what + " needs positive rows and dim");
    if (table.dim > kMaxWidth) spec(what + " has a dim above 2^24");
    if (table.rows > static_cast<size_t>(std::numeric_limits<int32_t>::max()) + 1) {
      spec(what + " has " + std::to_string(table.rows) + " rows; ids are int32, so at most 2^31");
    }
    checkedProduct(table.rows, table.dim, what);
  }
  for (size_t role = 0; role < 2; ++role) {
    const TowerSpec& tower = config.towers[role];
    const std::string name = std::string("towers[") + std::to_string(role) + "] (" + roleName(role) + ")";
    if (tower.inputs.empty()) spec(name + " has no inputs");
    size_t width = 0;
    for (size_t i = 0; i < tower.inputs.size(); ++i) {
      const InputSpec& input = tower.inputs[i];
      const std::string what = name + ".inputs[" + std::to_string(i) + "]";
      if (input.kind == InputKind::Dense) {
        if (input.width == 0 || input.width > kMaxWidth) spec(what + " needs a width from 1 to 2^24");
        width += input.width;
        continue;
      }
      if (input.table >= config.tables.size()) {
        spec(what + " reads table " + std::to_string(input.table) + " but there are " +
             std::to_string(config.tables.size()) + " tables");
      }
      if (input.kind == InputKind::Bag && (input.length == 0 || input.length > kMaxBagLength)) {
        spec(what + " needs a bag length from 1 to 2^20");
      }
      width += config.tables[input.table].dim;
    }
    if (width > kMaxWidth) spec(name + " concatenates " + std::to_string(width) + " features per row, above 2^24");
    width = checkLayers(tower.layers, width, name + ".layers", "the concatenated input features");
    if (tower.experts > kMaxExperts) spec(name + " has " + std::to_string(tower.experts) + " experts, above " + std::to_string(kMaxExperts));
    if (tower.experts > 0) {
      if (tower.expertLayers.empty()) spec(name + " has experts but no expert layers");
      width = checkLayers(tower.expertLayers, width, name + ".expertLayers", "the shared layers' output");
    } else if (!tower.expertLayers.empty()) {
      spec(name + " has expert layers but no experts");
    }
    if (tower.heads.empty()) spec(name + " has no heads");
    for (size_t h = 0; h < tower.heads.size(); ++h) {
      const HeadSpec& head = tower.heads[h];
      const std::string what = name + ".heads[" + std::to_string(h) + "]";
      if (head.inDim != width) {
        spec(what + ".inDim is " + std::to_string(head.inDim) + " but it receives " + std::to_string(width) +
             " values per row");
      }
      if (head.outDim == 0 || head.outDim > kMaxWidth) spec(what + " needs an outDim from 1 to 2^24");
      checkedProduct(head.inDim, head.outDim, what + ".weight");
    }
  }
  if (config.tasks.empty()) spec("There must be at least one task");
  for (size_t t = 0; t < config.tasks.size(); ++t) {
    const TaskSpec& task = config.tasks[t];
    const std::string what = "tasks[" + std::to_string(t) + "]";
    if (task.queryHead >= config.towers[0].heads.size()) {
      spec(what + ".queryHead is " + std::to_string(task.queryHead) + " but the query tower has " +
           std::to_string(config.towers[0].heads.size()) + " heads");
    }
    if (task.itemHead >= config.towers[1].heads.size()) {
      spec(what + ".itemHead is " + std::to_string(task.itemHead) + " but the item tower has " +
           std::to_string(config.towers[1].heads.size()) + " heads");
    }
    const size_t q = config.towers[0].heads[task.queryHead].outDim;
    const size_t v = config.towers[1].heads[task.itemHead].outDim;
    if (q != v) {
      spec(what + " pairs a query head of outDim " + std::to_string(q) + " with an item head of outDim " + std::to_string(v));
    }
    if (!finitePositive(task.temperature)) spec(what + ".temperature must be a positive number");
    if (!(std::isfinite(task.weight) && task.weight >= 0.0f)) spec(what + ".weight must be a finite number >= 0");
  }
  const OptimizerSpec& o = config.optimizer;
  if (!(std::isfinite(o.learningRate) && o.learningRate >= 0.0f)) spec("optimizer.learningRate must be a finite number >= 0");
  if (!(std::isfinite(o.sparseLearningRate) && o.sparseLearningRate >= 0.0f)) {
    spec("optimizer.sparseLearningRate must be a finite number >= 0");
  }
  if (!(o.beta1 >= 0.0f && o.beta1 < 1.0f)) spec("optimizer.beta1 must be in [0, 1)");
  if (!(o.beta2 >= 0.0f && o.beta2 < 1.0f)) spec("optimizer.beta2 must be in [0, 1)");
  if (!finitePositive(o.epsilon)) spec("optimizer.epsilon must be a positive number");
  if (!(std::isfinite(o.clipNorm) && o.clipNorm >= 0.0f)) spec("optimizer.clipNorm must be a finite number >= 0 (0: off)");
  if (!(std::isfinite(o.weightDecay) && o.weightDecay >= 0.0f)) spec("optimizer.weightDecay must be a finite number >= 0");
}

namespace {

void checkLayerParams(const std::vector<LayerSpec>& specs, const std::vector<LayerParams>& p, const std::string& name,
                      ErrorCode code, bool requireFinite) {
  if (p.size() != specs.size()) {
    throw Error(code, name + " needs " + std::to_string(specs.size()) + " layers but received " + std::to_string(p.size()));
  }
  for (size_t l = 0; l < specs.size(); ++l) {
    const LayerSpec& s = specs[l];
    const std::string what = name + "[" + std::to_string(l) + "]";
    checkArray(p[l].weight, s.outDim * s.inDim, what + ".weight", code, requireFinite);
    checkArray(p[l].bias, s.outDim, what + ".bias", code, requireFinite);
    checkArray(p[l].gamma, s.layerNorm ? s.outDim : 0, what + ".gamma", code, requireFinite);
    checkArray(p[l].beta, s.layerNorm ? s.outDim : 0, what + ".beta", code, requireFinite);
  }
}

std::vector<LayerParams> zeroLayers(const std::vector<LayerSpec>& specs) {
  std::vector<LayerParams> layers;
  for (const LayerSpec& l : specs) {
    LayerParams lp;
    lp.weight.assign(l.outDim * l.inDim, 0.0f);
    lp.bias.assign(l.outDim, 0.0f);
    if (l.layerNorm) {
      lp.gamma.assign(l.outDim, 0.0f);
      lp.beta.assign(l.outDim, 0.0f);
    }
    layers.push_back(std::move(lp));
  }
  return layers;
}

}  // namespace

void validateParameters(const TrainerConfig& config, const Parameters& params, ErrorCode code, bool requireFinite) {
  if (params.tables.size() != config.tables.size()) {
    throw Error(code, "Expected " + std::to_string(config.tables.size()) + " tables but received " +
                          std::to_string(params.tables.size()));
  }
  for (size_t t = 0; t < config.tables.size(); ++t) {
    checkArray(params.tables[t], config.tables[t].rows * config.tables[t].dim, "tables[" + std::to_string(t) + "]", code,
               requireFinite);
  }
  for (size_t role = 0; role < 2; ++role) {
    const TowerSpec& tower = config.towers[role];
    const TowerParams& p = params.towers[role];
    const std::string name = std::string("towers[") + std::to_string(role) + "]";
    if (p.layers.size() != tower.layers.size() || p.heads.size() != tower.heads.size()) {
      throw Error(code, name + " needs " + std::to_string(tower.layers.size()) + " layers and " +
                            std::to_string(tower.heads.size()) + " heads");
    }
    checkLayerParams(tower.layers, p.layers, name + ".layers", code, requireFinite);
    if (p.experts.size() != tower.experts) {
      throw Error(code, name + " needs " + std::to_string(tower.experts) + " experts but received " + std::to_string(p.experts.size()));
    }
    for (size_t e = 0; e < tower.experts; ++e) {
      checkLayerParams(tower.expertLayers, p.experts[e], name + ".experts[" + std::to_string(e) + "]", code, requireFinite);
    }
    const size_t gates = tower.experts > 0 ? tower.heads.size() : 0;
    if (p.gates.size() != gates) {
      throw Error(code, name + " needs " + std::to_string(gates) + " gates but received " + std::to_string(p.gates.size()));
    }
    const size_t bottom = bottomWidth(tower, config.tables);
    for (size_t h = 0; h < gates; ++h) {
      const std::string what = name + ".gates[" + std::to_string(h) + "]";
      checkArray(p.gates[h].weight, tower.experts * bottom, what + ".weight", code, requireFinite);
      checkArray(p.gates[h].bias, tower.experts, what + ".bias", code, requireFinite);
    }
    for (size_t h = 0; h < tower.heads.size(); ++h) {
      const HeadSpec& s = tower.heads[h];
      const std::string what = name + ".heads[" + std::to_string(h) + "]";
      checkArray(p.heads[h].weight, s.outDim * s.inDim, what + ".weight", code, requireFinite);
      checkArray(p.heads[h].bias, s.outDim, what + ".bias", code, requireFinite);
    }
  }
  checkArray(params.taskLogVariance, config.tasks.size(), "taskLogVariance", code, requireFinite);
}

std::array<TowerParams, 2> zeroTowers(const TrainerConfig& config) {
  std::array<TowerParams, 2> towers;
  for (size_t role = 0; role < 2; ++role) {
    const TowerSpec& tower = config.towers[role];
    towers[role].layers = zeroLayers(tower.layers);
    for (size_t e = 0; e < tower.experts; ++e) towers[role].experts.push_back(zeroLayers(tower.expertLayers));
    if (tower.experts > 0) {
      const size_t bottom = bottomWidth(tower, config.tables);
      for (size_t h = 0; h < tower.heads.size(); ++h) {
        towers[role].gates.push_back({std::vector<float>(tower.experts * bottom, 0.0f), std::vector<float>(tower.experts, 0.0f)});
      }
    }
    for (const HeadSpec& h : tower.heads) {
      towers[role].heads.push_back({std::vector<float>(h.outDim * h.inDim, 0.0f), std::vector<float>(h.outDim, 0.0f)});
    }
  }
  return towers;
}

Parameters zeroParameters(const TrainerConfig& config) {
  Parameters p;
  for (const TableSpec& t : config.tables) p.tables.emplace_back(t.rows * t.dim, 0.0f);
  p.towers = zeroTowers(config);
  p.taskLogVariance.assign(config.tasks.size(), 0.0f);
  return p;
}

void validateTowerInputs(const TrainerConfig& config, Role role, const TowerInputs& inputs, size_t rows) {
  const TowerSpec& tower = config.towers[static_cast<int>(role)];
  const std::string name = role == Role::Query ? "query" : "item";
  if (inputs.size() != tower.inputs.size()) {
    badBatch("Expected " + std::to_string(tower.inputs.size()) + " inputs for the " + name + " tower but received " +
             std::to_string(inputs.size()));
  }
  for (size_t i = 0; i < tower.inputs.size(); ++i) {
    const InputSpec& spec = tower.inputs[i];
    const std::string what = name + " input " + std::to_string(i);
    switch (spec.kind) {
      case InputKind::Ids:
        checkIds(inputs[i].ids, rows, config.tables[spec.table].rows, what);
        break;
      case InputKind::Bag:
        checkIds(inputs[i].ids, rows * spec.length, config.tables[spec.table].rows, what);
        checkFinite(inputs[i].values, rows * spec.length, what + " mask");
        break;
      case InputKind::Dense:
        checkFinite(inputs[i].values, rows * spec.width, what);
        break;
    }
  }
}

void validateBatch(const TrainerConfig& config, const Batch& batch) {
  if (batch.size == 0) badBatch("Expected a batch of at least one example");
  if (batch.itemRows < batch.size) {
    badBatch("Expected at least " + std::to_string(batch.size) + " item rows (one per example) but received " +
             std::to_string(batch.itemRows));
  }
  if (batch.task == nullptr || batch.label == nullptr || batch.weight == nullptr) badBatch("The batch lacks task, label or weight");
  validateTowerInputs(config, Role::Query, batch.query, batch.size);
  validateTowerInputs(config, Role::Item, batch.item, batch.itemRows);
  bool needKeys = false, needLogQ = false;
  for (size_t b = 0; b < batch.size; ++b) {
    const int32_t t = batch.task[b];
    if (t < 0 || static_cast<size_t>(t) >= config.tasks.size()) {
      badBatch("Expected task indexes from 0 to " + std::to_string(config.tasks.size() - 1) + " but received " +
               std::to_string(t) + " at " + std::to_string(b));
    }
    const TaskSpec& task = config.tasks[static_cast<size_t>(t)];
    const float label = batch.label[b];
    if (!std::isfinite(label)) badBatch("Expected a finite label at " + std::to_string(b));
    if (task.kind == TaskKind::Bce && !(label >= 0.0f && label <= 1.0f)) {
      badBatch("Expected a label in [0, 1] for a bce task but received " + std::to_string(label) + " at " + std::to_string(b));
    }
    const float weight = batch.weight[b];
    if (!(std::isfinite(weight) && weight >= 0.0f)) {
      badBatch("Expected a finite weight >= 0 but received " + std::to_string(weight) + " at " + std::to_string(b));
    }
    if (task.kind == TaskKind::Retrieval) {
      needKeys = needKeys || task.maskAccidentalHits;
      needLogQ = needLogQ || task.logQ;
    }
  }
  if (needKeys && batch.itemKey == nullptr) badBatch("A task masks accidental hits but the batch has no item keys");
  if (needLogQ) {
    if (batch.itemLogQ == nullptr) badBatch("A task uses logQ but the batch has no item log-probabilities");
    checkFinite(batch.itemLogQ, batch.itemRows, "itemLogQ");
  } else if (batch.itemLogQ != nullptr) {
    checkFinite(batch.itemLogQ, batch.itemRows, "itemLogQ");
  }
}

}  // namespace ebrix::train
