// The shape of a two-tower model as the trainer sees it, its parameters, and a batch.
//
// The structure mirrors TowerDefinition in lib/model/onnx/tower.ts (the TypeScript forward
// pass there is the reference the trainer's forward pass is tested against):
//   features = concat(inputs in order), each input [rows, width]:
//     ids   → the row of its table;
//     bag   → Σ_l mask[r,l]·table[ids[r,l]], divided by max(Σ_l mask[r,l], 1) for mean pooling;
//     dense → the input as is;
//   per layer: y = x Wᵀ + b → LayerNorm (optional; biased variance, ε as given) → ReLU
//              (optional) → x + y (optional residual, inDim == outDim);
//   mixture of experts (optional, MMoE): E experts, each its own stack of layers of the shapes
//              in `expertLayers` (same semantics as above) over x; head h has a gate
//              g = softmax(x Gₕᵀ + cₕ) over the experts and reads m = Σ_e g[e]·expert_e(x);
//   per head:  h = m Wᵀ + b (m = x without experts), then h / max(‖h‖₂, 1e-12) when normalised.
// Embedding tables are global and shared by both towers: an input names a table by index,
// and several inputs (in either tower) may read one table.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../error.h"

namespace ebrix::train {

enum class Role : int { Query = 0, Item = 1 };
constexpr float kNormalizeFloor = 1e-12f;

struct TableSpec {
  size_t rows = 0;
  size_t dim = 0;
};

enum class InputKind { Ids, Bag, Dense };
enum class Pooling { Mean, Sum };

struct InputSpec {
  InputKind kind = InputKind::Ids;
  size_t table = 0;                 // ids, bag: index into TrainerConfig::tables
  size_t length = 0;                // bag: ids per row
  Pooling pooling = Pooling::Mean;  // bag
  size_t width = 0;                 // dense
};

struct LayerSpec {
  size_t inDim = 0;
  size_t outDim = 0;
  bool relu = false;
  bool layerNorm = false;
  float epsilon = 1e-5f;  // LayerNorm's
  bool residual = false;
};

struct HeadSpec {
  size_t inDim = 0;
  size_t outDim = 0;
  bool normalize = false;
};

struct TowerSpec {
  std::vector<InputSpec> inputs;
  std::vector<LayerSpec> layers;
  size_t experts = 0;                   // 0: no mixture, the heads read the layers' output
  std::vector<LayerSpec> expertLayers;  // every expert's layers (at least one when experts > 0)
  std::vector<HeadSpec> heads;
};

enum class TaskKind { Retrieval, Bce, Mse };

struct TaskSpec {
  TaskKind kind = TaskKind::Retrieval;
  size_t queryHead = 0;
  size_t itemHead = 0;
  float weight = 1.0f;
  float temperature = 1.0f;
  bool logQ = false;                // retrieval: subtract itemLogQ[j] from every logit
  bool maskAccidentalHits = false;  // retrieval: drop columns j ≠ b holding the same item key
};

enum class SparseOptimizer : uint32_t { Adam = 0, Adagrad = 1 };

struct OptimizerSpec {
  float learningRate = 1e-3f;        // dense Adam (layers, heads, task log-variances)
  float sparseLearningRate = 1e-2f;  // embedding tables
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float epsilon = 1e-8f;
  SparseOptimizer sparse = SparseOptimizer::Adam;
  float clipNorm = 0.0f;     // global-norm clipping; 0 = off
  float weightDecay = 0.0f;  // decoupled (AdamW), on layer and head weights only
};

struct TrainerConfig {
  std::vector<TableSpec> tables;
  std::array<TowerSpec, 2> towers;  // [query, item]
  std::vector<TaskSpec> tasks;
  OptimizerSpec optimizer;
  bool uncertaintyWeighting = false;
  unsigned threads = 0;  // 0: every hardware thread
};

struct LayerParams {
  std::vector<float> weight;  // outDim × inDim, row-major
  std::vector<float> bias;
  std::vector<float> gamma;  // LayerNorm only, else empty
  std::vector<float> beta;
};

struct HeadParams {
  std::vector<float> weight;  // outDim × inDim, row-major
  std::vector<float> bias;
};

struct TowerParams {
  std::vector<LayerParams> layers;
  std::vector<std::vector<LayerParams>> experts;  // [expert][layer]
  std::vector<HeadParams> gates;                  // one per head with experts: experts × the layers' output width
  std::vector<HeadParams> heads;
};

// Every trained value. Gradients use the same shape.
struct Parameters {
  std::vector<std::vector<float>> tables;  // rows × dim each
  std::array<TowerParams, 2> towers;
  std::vector<float> taskLogVariance;  // s_t, one per task (trained with uncertaintyWeighting)
};

// One input's data for `rows` rows: ids → ids[rows]; bag → ids[rows × length] and
// values = mask[rows × length]; dense → values[rows × width].
struct InputData {
  const int32_t* ids = nullptr;
  const float* values = nullptr;
};
using TowerInputs = std::vector<InputData>;  // one per InputSpec of the tower

struct Batch {
  size_t size = 0;       // B examples
  TowerInputs query;     // B rows
  size_t itemRows = 0;   // N >= B: rows [0, B) are the examples' items, [B, N) extra negatives
  TowerInputs item;      // N rows
  const uint32_t* itemKey = nullptr;  // N; equal keys = the same item (needed by masking tasks)
  const float* itemLogQ = nullptr;    // N; log sampling probability (needed by logQ tasks)
  const int32_t* task = nullptr;      // B
  const float* label = nullptr;       // B
  const float* weight = nullptr;      // B
};

size_t featureWidth(const TowerSpec& tower, const std::vector<TableSpec>& tables);
// Width of the shared layers' output (the features without layers): what experts and gates read.
size_t bottomWidth(const TowerSpec& tower, const std::vector<TableSpec>& tables);
// Width the heads read: the experts' output width, or bottomWidth without experts.
size_t trunkWidth(const TowerSpec& tower, const std::vector<TableSpec>& tables);

// Throws Error(InvalidSpec) naming the first inconsistency: sizes, table indexes, layer and
// head widths, residual only where inDim == outDim, a task's heads of equal outDim, τ > 0,
// optimizer settings in range.
void validateConfig(const TrainerConfig& config);

// Throws Error(code) unless `params` has the config's shape; and unless every value is finite
// when `requireFinite`.
void validateParameters(const TrainerConfig& config, const Parameters& params, ErrorCode code, bool requireFinite);

// The config's shape, every value zero (gradients, optimizer moments).
Parameters zeroParameters(const TrainerConfig& config);
std::array<TowerParams, 2> zeroTowers(const TrainerConfig& config);

// Throws Error(InvalidArgument) unless the batch fits the config: sizes, ids inside their
// tables, task indexes, finite labels (bce: in [0, 1]), finite non-negative weights, finite
// dense values and masks, and the item keys / log-probabilities the tasks need.
void validateBatch(const TrainerConfig& config, const Batch& batch);
// The same checks for one tower's inputs (embed).
void validateTowerInputs(const TrainerConfig& config, Role role, const TowerInputs& inputs, size_t rows);

}  // namespace ebrix::train
