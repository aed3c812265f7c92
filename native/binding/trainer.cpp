// JavaScript class Trainer over ebrix::train::Trainer (native/core/train/trainer.h); its
// TypeScript view is NativeTrainer in lib/native.ts, driven by lib/train/trainer.ts.
//
// Config errors are EBRIX_INVALID_SPEC; a batch or tensor of the wrong type is
// EBRIX_INVALID_ARGUMENT, of the wrong length EBRIX_DIM_MISMATCH; the core re-checks ids,
// labels and values. Inputs are copied on the main thread before work leaves it.
//
// One trainer serves one call that changes it (step, evaluate, gradients, setParameters,
// loadState, loadStateAsync) at a time, or any number that only read it (embed, parameters, saveState).
// A call that would overlap otherwise is refused at once with EBRIX_OVERLOADED (await the
// step before the next): queueing steps would hide a caller's bug and pile up batches.
// The claim is taken when the call starts and given back on the main thread when its worker
// is destroyed, which is before the promise's continuation runs. lib/native.ts documents the
// JavaScript view (NativeTrainer).
#include "trainer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../core/simd/dispatch.h"
#include "../core/train/trainer.h"
#include "args.h"
#include "errors.h"
#include "index_args.h"

namespace ebrix::binding {
namespace {

using train::InputKind;

// Rows of a batch or an embed call: far beyond any batch, and small enough that rows × a bag
// length never overflows.
constexpr size_t kMaxRows = size_t(1) << 31;

std::string describeValue(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? "true" : "false";
  if (v.IsNumber()) {
    const double d = v.As<Napi::Number>().DoubleValue();
    std::string s = std::to_string(d);
    if (d == std::floor(d) && std::fabs(d) < 1e15) s = std::to_string(static_cast<long long>(d));
    return s;
  }
  if (v.IsString()) return "a string";
  if (v.IsArray()) return "an array of length " + std::to_string(v.As<Napi::Array>().Length());
  if (v.IsTypedArray()) {
    static const char* const names[] = {"Int8Array", "Uint8Array", "Uint8ClampedArray", "Int16Array", "Uint16Array",
                                        "Int32Array", "Uint32Array", "Float32Array", "Float64Array", "BigInt64Array",
                                        "BigUint64Array"};
    const auto t = v.As<Napi::TypedArray>();
    const size_t type = static_cast<size_t>(t.TypedArrayType());
    return std::string("a ") + (type < 11 ? names[type] : "typed array") + " of length " + std::to_string(t.ElementLength());
  }
  if (v.IsFunction()) return "a function";
  return "an object";
}

bool isTyped(const Napi::Value& v, napi_typedarray_type type) {
  return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == type;
}

// ---------------------------------------------------------------------------------------------
// The config (EBRIX_INVALID_SPEC)

class SpecReader {
 public:
  explicit SpecReader(Napi::Env env) : env_(env) {}

  [[noreturn]] void fail(const std::string& what, const std::string& path, const Napi::Value& got) const {
    throw makeError(env_, {"EBRIX_INVALID_SPEC", "Expected " + what + " for " + path + " but received " + describeValue(got)});
  }
  Napi::Object object(const Napi::Value& v, const std::string& path) const {
    if (!v.IsObject() || v.IsArray()) fail("an object", path, v);
    return v.As<Napi::Object>();
  }
  Napi::Array array(const Napi::Value& v, const std::string& path) const {
    if (!v.IsArray()) fail("an array", path, v);
    return v.As<Napi::Array>();
  }
  double number(const Napi::Object& o, const char* key, const std::string& path) const {
    const Napi::Value v = o.Get(key);
    if (!v.IsNumber() || !std::isfinite(v.As<Napi::Number>().DoubleValue())) fail("a finite number", path + "." + key, v);
    return v.As<Napi::Number>().DoubleValue();
  }
  size_t count(const Napi::Object& o, const char* key, const std::string& path) const {
    const Napi::Value v = o.Get(key);
    const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1.0;
    if (!(d >= 0 && d <= 9007199254740991.0) || d != std::floor(d)) fail("a non-negative integer", path + "." + key, v);
    return static_cast<size_t>(d);
  }
  bool boolean(const Napi::Object& o, const char* key, const std::string& path) const {
    const Napi::Value v = o.Get(key);
    if (!v.IsBoolean()) fail("a boolean", path + "." + key, v);
    return v.As<Napi::Boolean>().Value();
  }
  std::string string(const Napi::Object& o, const char* key, const std::string& path) const {
    const Napi::Value v = o.Get(key);
    if (!v.IsString()) fail("a string", path + "." + key, v);
    return v.As<Napi::String>().Utf8Value();
  }
  std::vector<float> floats(const Napi::Value& v, const std::string& path) const {
    if (!isTyped(v, napi_float32_array)) fail("a Float32Array", path, v);
    const auto a = v.As<Napi::Float32Array>();
    return std::vector<float>(a.Data(), a.Data() + a.ElementLength());
  }

 private:
  Napi::Env env_;
};

void parseLayers(const SpecReader& r, const Napi::Value& value, const std::string& path, std::vector<train::LayerSpec>& specs,
                 std::vector<train::LayerParams>& params) {
  const Napi::Array layers = r.array(value, path);
  for (uint32_t l = 0; l < layers.Length(); ++l) {
    const std::string at = path + "[" + std::to_string(l) + "]";
    const Napi::Object o = r.object(layers.Get(l), at);
    train::LayerSpec layer;
    train::LayerParams p;
    layer.inDim = r.count(o, "inDim", at);
    layer.outDim = r.count(o, "outDim", at);
    layer.relu = r.boolean(o, "relu", at);
    layer.residual = r.boolean(o, "residual", at);
    p.weight = r.floats(o.Get("weight"), at + ".weight");
    p.bias = r.floats(o.Get("bias"), at + ".bias");
    const Napi::Value norm = o.Get("layerNorm");
    if (!norm.IsNull() && !norm.IsUndefined()) {
      const Napi::Object n = r.object(norm, at + ".layerNorm");
      layer.layerNorm = true;
      p.gamma = r.floats(n.Get("gamma"), at + ".layerNorm.gamma");
      p.beta = r.floats(n.Get("beta"), at + ".layerNorm.beta");
      layer.epsilon = n.Get("epsilon").IsUndefined() ? 1e-5f : static_cast<float>(r.number(n, "epsilon", at + ".layerNorm"));
    }
    specs.push_back(layer);
    params.push_back(std::move(p));
  }
}

bool sameShape(const std::vector<train::LayerSpec>& a, const std::vector<train::LayerSpec>& b) {
  if (a.size() != b.size()) return false;
  for (size_t l = 0; l < a.size(); ++l) {
    if (a[l].inDim != b[l].inDim || a[l].outDim != b[l].outDim || a[l].relu != b[l].relu ||
        a[l].layerNorm != b[l].layerNorm || a[l].residual != b[l].residual || a[l].epsilon != b[l].epsilon) {
      return false;
    }
  }
  return true;
}

void parseTower(const SpecReader& r, const Napi::Value& value, const std::string& path, train::TowerSpec& spec,
                train::TowerParams& params) {
  const Napi::Object tower = r.object(value, path);
  const Napi::Array inputs = r.array(tower.Get("inputs"), path + ".inputs");
  for (uint32_t i = 0; i < inputs.Length(); ++i) {
    const std::string at = path + ".inputs[" + std::to_string(i) + "]";
    const Napi::Object o = r.object(inputs.Get(i), at);
    const std::string kind = r.string(o, "kind", at);
    train::InputSpec input;
    if (kind == "ids") {
      input.kind = InputKind::Ids;
      input.table = r.count(o, "table", at);
    } else if (kind == "bag") {
      input.kind = InputKind::Bag;
      input.table = r.count(o, "table", at);
      input.length = r.count(o, "length", at);
      const std::string pooling = r.string(o, "pooling", at);
      if (pooling == "mean") input.pooling = train::Pooling::Mean;
      else if (pooling == "sum") input.pooling = train::Pooling::Sum;
      else r.fail("'mean' or 'sum'", at + ".pooling", o.Get("pooling"));
    } else if (kind == "dense") {
      input.kind = InputKind::Dense;
      input.width = r.count(o, "width", at);
    } else {
      r.fail("'ids', 'bag' or 'dense'", at + ".kind", o.Get("kind"));
    }
    spec.inputs.push_back(input);
  }
  parseLayers(r, tower.Get("layers"), path + ".layers", spec.layers, params.layers);
  // Optional mixture: experts (arrays of layers of one shape each) and one gate per head.
  const Napi::Value experts = tower.Get("experts");
  if (!experts.IsUndefined()) {
    const Napi::Array list = r.array(experts, path + ".experts");
    for (uint32_t e = 0; e < list.Length(); ++e) {
      const std::string at = path + ".experts[" + std::to_string(e) + "]";
      std::vector<train::LayerSpec> layers;
      params.experts.emplace_back();
      parseLayers(r, list.Get(e), at, layers, params.experts.back());
      if (e == 0) {
        spec.expertLayers = layers;
      } else if (!sameShape(layers, spec.expertLayers)) {
        r.fail("the layer shapes of experts[0]", at, list.Get(e));
      }
    }
    spec.experts = list.Length();
  }
  const Napi::Value gates = tower.Get("gates");
  if (!gates.IsUndefined()) {
    const Napi::Array list = r.array(gates, path + ".gates");
    for (uint32_t g = 0; g < list.Length(); ++g) {
      const std::string at = path + ".gates[" + std::to_string(g) + "]";
      const Napi::Object o = r.object(list.Get(g), at);
      params.gates.push_back({r.floats(o.Get("weight"), at + ".weight"), r.floats(o.Get("bias"), at + ".bias")});
    }
  }
  const Napi::Array heads = r.array(tower.Get("heads"), path + ".heads");
  for (uint32_t h = 0; h < heads.Length(); ++h) {
    const std::string at = path + ".heads[" + std::to_string(h) + "]";
    const Napi::Object o = r.object(heads.Get(h), at);
    train::HeadSpec head;
    head.inDim = r.count(o, "inDim", at);
    head.outDim = r.count(o, "outDim", at);
    head.normalize = r.boolean(o, "normalize", at);
    spec.heads.push_back(head);
    params.heads.push_back({r.floats(o.Get("weight"), at + ".weight"), r.floats(o.Get("bias"), at + ".bias")});
  }
}

struct ParsedConfig {
  train::TrainerConfig config;
  train::Parameters params;
  const simd::Kernels* kernels = nullptr;
};

ParsedConfig parseConfig(Napi::Env env, const Napi::Value& value) {
  const SpecReader r(env);
  ParsedConfig out;
  const Napi::Object c = r.object(value, "config");
  const Napi::Array tables = r.array(c.Get("tables"), "config.tables");
  for (uint32_t t = 0; t < tables.Length(); ++t) {
    const std::string at = "config.tables[" + std::to_string(t) + "]";
    const Napi::Object o = r.object(tables.Get(t), at);
    out.config.tables.push_back({r.count(o, "rows", at), r.count(o, "dim", at)});
    out.params.tables.push_back(r.floats(o.Get("data"), at + ".data"));
  }
  const Napi::Array towers = r.array(c.Get("towers"), "config.towers");
  if (towers.Length() != 2) r.fail("two towers [query, item]", "config.towers", towers);
  for (uint32_t role = 0; role < 2; ++role) {
    parseTower(r, towers.Get(role), "config.towers[" + std::to_string(role) + "]", out.config.towers[role],
               out.params.towers[role]);
  }
  const Napi::Array tasks = r.array(c.Get("tasks"), "config.tasks");
  for (uint32_t t = 0; t < tasks.Length(); ++t) {
    const std::string at = "config.tasks[" + std::to_string(t) + "]";
    const Napi::Object o = r.object(tasks.Get(t), at);
    train::TaskSpec task;
    const std::string kind = r.string(o, "kind", at);
    if (kind == "retrieval") task.kind = train::TaskKind::Retrieval;
    else if (kind == "bce") task.kind = train::TaskKind::Bce;
    else if (kind == "mse") task.kind = train::TaskKind::Mse;
    else r.fail("'retrieval', 'bce' or 'mse'", at + ".kind", o.Get("kind"));
    task.queryHead = r.count(o, "queryHead", at);
    task.itemHead = r.count(o, "itemHead", at);
    task.weight = static_cast<float>(r.number(o, "weight", at));
    task.temperature = static_cast<float>(r.number(o, "temperature", at));
    task.logQ = r.boolean(o, "logQ", at);
    task.maskAccidentalHits = r.boolean(o, "maskAccidentalHits", at);
    out.config.tasks.push_back(task);
  }
  const Napi::Object o = r.object(c.Get("optimizer"), "config.optimizer");
  const std::string at = "config.optimizer";
  train::OptimizerSpec& opt = out.config.optimizer;
  opt.learningRate = static_cast<float>(r.number(o, "learningRate", at));
  opt.sparseLearningRate = static_cast<float>(r.number(o, "sparseLearningRate", at));
  opt.beta1 = static_cast<float>(r.number(o, "beta1", at));
  opt.beta2 = static_cast<float>(r.number(o, "beta2", at));
  opt.epsilon = static_cast<float>(r.number(o, "epsilon", at));
  opt.clipNorm = static_cast<float>(r.number(o, "clipNorm", at));
  opt.weightDecay = static_cast<float>(r.number(o, "weightDecay", at));
  const std::string sparse = r.string(o, "sparse", at);
  if (sparse == "adam") opt.sparse = train::SparseOptimizer::Adam;
  else if (sparse == "adagrad") opt.sparse = train::SparseOptimizer::Adagrad;
  else r.fail("'adam' or 'adagrad'", at + ".sparse", o.Get("sparse"));
  out.config.uncertaintyWeighting = r.boolean(c, "uncertaintyWeighting", "config");
  out.config.threads = static_cast<unsigned>(std::min<size_t>(r.count(c, "threads", "config"), 4096));
  // Optional: initial task log-variances (default 0) and a SIMD level (default EBRIX_SIMD or the best).
  const Napi::Value logVariance = c.Get("taskLogVariance");
  out.params.taskLogVariance = logVariance.IsUndefined() ? std::vector<float>(out.config.tasks.size(), 0.0f)
                                                         : r.floats(logVariance, "config.taskLogVariance");
  const Napi::Value simdName = c.Get("simd");
  if (!simdName.IsUndefined()) {
    simd::Level level;
    if (!simdName.IsString() || !simd::parseLevel(simdName.As<Napi::String>().Utf8Value(), &level)) {
      r.fail("'scalar', 'avx2', 'avx512' or 'neon'", "config.simd", simdName);
    }
    out.kernels = &simd::kernelsFor(level);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Tensors and batches, copied (EBRIX_INVALID_ARGUMENT, EBRIX_DIM_MISMATCH)

[[noreturn]] void badArgument(Napi::Env env, const std::string& what, const std::string& name, const Napi::Value& got) {
  throwInvalid(env, "Expected " + what + " for " + name + " but received " + describeValue(got));
}

size_t rowCount(Napi::Env env, const Napi::Value& v, const std::string& name) {
  const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1.0;
  if (!(d >= 0 && d <= static_cast<double>(kMaxRows)) || d != std::floor(d)) {
    badArgument(env, "an integer from 0 to 2^31", name, v);
  }
  return static_cast<size_t>(d);
}

template <typename T, napi_typedarray_type Type>
void copyTyped(Napi::Env env, const Napi::Value& v, size_t expected, const std::string& name, const char* typeName,
               std::vector<T>& out) {
  if (!isTyped(v, Type)) badArgument(env, std::string("a ") + typeName, name, v);
  const auto a = v.As<Napi::TypedArrayOf<T>>();
  if (a.ElementLength() != expected) {
    throw makeError(env, {"EBRIX_DIM_MISMATCH", "Expected " + std::to_string(expected) + " values for " + name +
                                                    " but received " + std::to_string(a.ElementLength())});
  }
  out.assign(a.Data(), a.Data() + expected);
}

void copyInt32(Napi::Env env, const Napi::Value& v, size_t n, const std::string& name, std::vector<int32_t>& out) {
  copyTyped<int32_t, napi_int32_array>(env, v, n, name, "Int32Array", out);
}
void copyFloat32(Napi::Env env, const Napi::Value& v, size_t n, const std::string& name, std::vector<float>& out) {
  copyTyped<float, napi_float32_array>(env, v, n, name, "Float32Array", out);
}
void copyUint32(Napi::Env env, const Napi::Value& v, size_t n, const std::string& name, std::vector<uint32_t>& out) {
  copyTyped<uint32_t, napi_uint32_array>(env, v, n, name, "Uint32Array", out);
}

// One tower's tensors, owned (vectors keep their capacity from call to call).
struct StagedTower {
  std::vector<std::vector<int32_t>> ids;
  std::vector<std::vector<float>> values;
  train::TowerInputs view() const {
    train::TowerInputs v(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      v[i].ids = ids[i].empty() ? nullptr : ids[i].data();
      v[i].values = values[i].empty() ? nullptr : values[i].data();
    }
    return v;
  }
};

// NativeTensors: per input, ids → Int32Array[rows]; bag → Int32Array[rows × length] then
// Float32Array[rows × length] (the mask); dense → Float32Array[rows × width].
void stageTower(Napi::Env env, const train::TowerSpec& spec, const Napi::Value& value, size_t rows, const std::string& name,
                StagedTower& out) {
  size_t tensors = 0;
  for (const auto& input : spec.inputs) tensors += input.kind == InputKind::Bag ? 2 : 1;
  if (!value.IsArray()) badArgument(env, "an array of tensors", name, value);
  const Napi::Array array = value.As<Napi::Array>();
  if (array.Length() != tensors) {
    badArgument(env, "an array of " + std::to_string(tensors) + " tensors (one per ids or dense input, two per bag)", name, value);
  }
  out.ids.resize(spec.inputs.size());
  out.values.resize(spec.inputs.size());
  uint32_t at = 0;
  for (size_t i = 0; i < spec.inputs.size(); ++i) {
    const train::InputSpec& input = spec.inputs[i];
    const std::string tensor = name + "[" + std::to_string(at) + "]";
    switch (input.kind) {
      case InputKind::Ids:
        copyInt32(env, array.Get(at++), rows, tensor, out.ids[i]);
        out.values[i].clear();
        break;
      case InputKind::Bag:
        copyInt32(env, array.Get(at++), rows * input.length, tensor, out.ids[i]);
        copyFloat32(env, array.Get(at), rows * input.length, name + "[" + std::to_string(at) + "]", out.values[i]);
        ++at;
        break;
      case InputKind::Dense:
        out.ids[i].clear();
        copyFloat32(env, array.Get(at++), rows * input.width, tensor, out.values[i]);
        break;
    }
  }
}

struct StagedBatch {
  size_t size = 0, itemRows = 0;
  StagedTower query, item;
  std::vector<uint32_t> itemKey;
  std::vector<float> itemLogQ;
  std::vector<int32_t> task;
  std::vector<float> label, weight;

  train::Batch view() const {
    train::Batch b;
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

void stageBatch(Napi::Env env, const train::TrainerConfig& config, const Napi::Value& value, StagedBatch& out) {
  if (!value.IsObject() || value.IsArray()) badArgument(env, "a batch object", "batch", value);
  const Napi::Object b = value.As<Napi::Object>();
  out.size = rowCount(env, b.Get("size"), "batch.size");
  out.itemRows = rowCount(env, b.Get("itemRows"), "batch.itemRows");
  if (out.size == 0) badArgument(env, "at least one example", "batch.size", b.Get("size"));
  if (out.itemRows < out.size) badArgument(env, "at least batch.size item rows", "batch.itemRows", b.Get("itemRows"));
  stageTower(env, config.towers[0], b.Get("query"), out.size, "batch.query", out.query);
  stageTower(env, config.towers[1], b.Get("item"), out.itemRows, "batch.item", out.item);
  copyUint32(env, b.Get("itemKey"), out.itemRows, "batch.itemKey", out.itemKey);
  copyFloat32(env, b.Get("itemLogQ"), out.itemRows, "batch.itemLogQ", out.itemLogQ);
  copyInt32(env, b.Get("task"), out.size, "batch.task", out.task);
  copyFloat32(env, b.Get("label"), out.size, "batch.label", out.label);
  copyFloat32(env, b.Get("weight"), out.size, "batch.weight", out.weight);
}

// ---------------------------------------------------------------------------------------------
// Results

Napi::Float32Array floatArray(Napi::Env env, const float* data, size_t n) {
  Napi::Float32Array a = Napi::Float32Array::New(env, n);
  if (n != 0) std::memcpy(a.Data(), data, n * sizeof(float));
  return a;
}
Napi::Float32Array floatArray(Napi::Env env, const std::vector<float>& v) { return floatArray(env, v.data(), v.size()); }

Napi::Float64Array doubleArray(Napi::Env env, const std::vector<double>& v) {
  Napi::Float64Array a = Napi::Float64Array::New(env, v.size());
  if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * sizeof(double));
  return a;
}

Napi::Object stepResultObject(Napi::Env env, const train::StepResult& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("loss", Napi::Number::New(env, r.loss));
  o.Set("taskLoss", doubleArray(env, r.taskLoss));
  o.Set("taskExamples", doubleArray(env, r.taskExamples));
  o.Set("gradNorm", Napi::Number::New(env, r.gradNorm));
  o.Set("step", Napi::Number::New(env, static_cast<double>(r.step)));
  return o;
}

Napi::Array layersArray(Napi::Env env, const std::vector<train::LayerParams>& layers) {
  Napi::Array out = Napi::Array::New(env, layers.size());
  for (uint32_t l = 0; l < layers.size(); ++l) {
    const train::LayerParams& lp = layers[l];
    Napi::Object layer = Napi::Object::New(env);
    layer.Set("weight", floatArray(env, lp.weight));
    layer.Set("bias", floatArray(env, lp.bias));
    if (!lp.gamma.empty()) {
      layer.Set("gamma", floatArray(env, lp.gamma));
      layer.Set("beta", floatArray(env, lp.beta));
    }
    out.Set(l, layer);
  }
  return out;
}

// { tables, towers: [{ layers: [{ weight, bias, gamma?, beta? }], experts: [[layer]], gates: [{ weight, bias }],
//   heads: [{ weight, bias }] }] × 2, taskLogVariance }
Napi::Object parametersObject(Napi::Env env, const train::Parameters& p) {
  Napi::Object o = Napi::Object::New(env);
  Napi::Array tables = Napi::Array::New(env, p.tables.size());
  for (uint32_t t = 0; t < p.tables.size(); ++t) tables.Set(t, floatArray(env, p.tables[t]));
  o.Set("tables", tables);
  Napi::Array towers = Napi::Array::New(env, 2);
  for (uint32_t role = 0; role < 2; ++role) {
    const train::TowerParams& tp = p.towers[role];
    Napi::Object tower = Napi::Object::New(env);
    tower.Set("layers", layersArray(env, tp.layers));
    Napi::Array experts = Napi::Array::New(env, tp.experts.size());
    for (uint32_t e = 0; e < tp.experts.size(); ++e) experts.Set(e, layersArray(env, tp.experts[e]));
    tower.Set("experts", experts);
    Napi::Array gates = Napi::Array::New(env, tp.gates.size());
    for (uint32_t g = 0; g < tp.gates.size(); ++g) {
      Napi::Object gate = Napi::Object::New(env);
      gate.Set("weight", floatArray(env, tp.gates[g].weight));
      gate.Set("bias", floatArray(env, tp.gates[g].bias));
      gates.Set(g, gate);
    }
    tower.Set("gates", gates);
    Napi::Array heads = Napi::Array::New(env, tp.heads.size());
    for (uint32_t h = 0; h < tp.heads.size(); ++h) {
      Napi::Object head = Napi::Object::New(env);
      head.Set("weight", floatArray(env, tp.heads[h].weight));
      head.Set("bias", floatArray(env, tp.heads[h].bias));
      heads.Set(h, head);
    }
    tower.Set("heads", heads);
    towers.Set(role, tower);
  }
  o.Set("towers", towers);
  o.Set("taskLogVariance", floatArray(env, p.taskLogVariance));
  return o;
}

// The same shape back (setParameters); sizes are the core's to check.
train::Parameters parseParameters(Napi::Env env, const Napi::Value& value) {
  auto floats = [&](const Napi::Value& v, const std::string& name) {
    if (!isTyped(v, napi_float32_array)) badArgument(env, "a Float32Array", name, v);
    const auto a = v.As<Napi::Float32Array>();
    return std::vector<float>(a.Data(), a.Data() + a.ElementLength());
  };
  auto object = [&](const Napi::Value& v, const std::string& name) {
    if (!v.IsObject() || v.IsArray()) badArgument(env, "an object", name, v);
    return v.As<Napi::Object>();
  };
  auto array = [&](const Napi::Value& v, const std::string& name) {
    if (!v.IsArray()) badArgument(env, "an array", name, v);
    return v.As<Napi::Array>();
  };
  train::Parameters p;
  const Napi::Object o = object(value, "parameters");
  const Napi::Array tables = array(o.Get("tables"), "parameters.tables");
  for (uint32_t t = 0; t < tables.Length(); ++t) p.tables.push_back(floats(tables.Get(t), "parameters.tables[" + std::to_string(t) + "]"));
  const Napi::Array towers = array(o.Get("towers"), "parameters.towers");
  if (towers.Length() != 2) badArgument(env, "two towers", "parameters.towers", towers);
  for (uint32_t role = 0; role < 2; ++role) {
    const std::string path = "parameters.towers[" + std::to_string(role) + "]";
    const Napi::Object tower = object(towers.Get(role), path);
    auto layers = [&](const Napi::Value& v, const std::string& where) {
      const Napi::Array list = array(v, where);
      std::vector<train::LayerParams> out;
      for (uint32_t l = 0; l < list.Length(); ++l) {
        const std::string at = where + "[" + std::to_string(l) + "]";
        const Napi::Object layer = object(list.Get(l), at);
        train::LayerParams lp;
        lp.weight = floats(layer.Get("weight"), at + ".weight");
        lp.bias = floats(layer.Get("bias"), at + ".bias");
        if (!layer.Get("gamma").IsUndefined()) lp.gamma = floats(layer.Get("gamma"), at + ".gamma");
        if (!layer.Get("beta").IsUndefined()) lp.beta = floats(layer.Get("beta"), at + ".beta");
        out.push_back(std::move(lp));
      }
      return out;
    };
    p.towers[role].layers = layers(tower.Get("layers"), path + ".layers");
    // A model without experts may leave out experts and gates.
    if (!tower.Get("experts").IsUndefined()) {
      const Napi::Array experts = array(tower.Get("experts"), path + ".experts");
      for (uint32_t e = 0; e < experts.Length(); ++e) {
        p.towers[role].experts.push_back(layers(experts.Get(e), path + ".experts[" + std::to_string(e) + "]"));
      }
    }
    if (!tower.Get("gates").IsUndefined()) {
      const Napi::Array gates = array(tower.Get("gates"), path + ".gates");
      for (uint32_t g = 0; g < gates.Length(); ++g) {
        const std::string at = path + ".gates[" + std::to_string(g) + "]";
        const Napi::Object gate = object(gates.Get(g), at);
        p.towers[role].gates.push_back({floats(gate.Get("weight"), at + ".weight"), floats(gate.Get("bias"), at + ".bias")});
      }
    }
    const Napi::Array heads = array(tower.Get("heads"), path + ".heads");
    for (uint32_t h = 0; h < heads.Length(); ++h) {
      const std::string at = path + ".heads[" + std::to_string(h) + "]";
      const Napi::Object head = object(heads.Get(h), at);
      p.towers[role].heads.push_back({floats(head.Get("weight"), at + ".weight"), floats(head.Get("bias"), at + ".bias")});
    }
  }
  p.taskLogVariance = floats(o.Get("taskLogVariance"), "parameters.taskLogVariance");
  return p;
}

// A checkpoint's bytes handed to JavaScript without a copy on the main thread (they can be
// hundreds of megabytes); copied where external buffers are not allowed.
Napi::Uint8Array bytesArray(Napi::Env env, std::vector<uint8_t> bytes) {
  const size_t n = bytes.size();
  if (n == 0) return Napi::Uint8Array::New(env, 0);
  auto* holder = new std::vector<uint8_t>(std::move(bytes));
  Napi::ArrayBuffer buffer;
  try {
    buffer = Napi::ArrayBuffer::New(env, holder->data(), n, [](Napi::Env, void*, std::vector<uint8_t>* h) { delete h; }, holder);
  } catch (const Napi::Error&) {
    buffer = Napi::ArrayBuffer::New(env, n);
    std::memcpy(buffer.Data(), holder->data(), n);
    delete holder;
  }
  return Napi::Uint8Array::New(env, n, buffer, 0);
}

// ---------------------------------------------------------------------------------------------
// The trainer and who is using it

struct Session {
  std::unique_ptr<train::Trainer> trainer;
  // Main thread only.
  int readers = 0;
  bool writer = false;
  uint64_t steps = 0;
  // The batch of the step or evaluation in flight (one at a time: the writer's claim).
  StagedBatch staged;
};

// A claim on the trainer, taken on the main thread and given back where it is destroyed (the
// main thread: a sync call's scope, or an async worker's deletion after its promise settles).
class Claim {
 public:
  enum class Mode { Read, Write };
  Claim(Napi::Env env, std::shared_ptr<Session> session, Mode mode) : session_(std::move(session)), mode_(mode) {
    if (session_->writer || (mode == Mode::Write && session_->readers > 0)) {
      throw makeError(env, {"EBRIX_OVERLOADED",
                            "The trainer is busy: another call is still running (await each step, evaluate, saveState "
                            "or loadState before a call that overlaps it)"});
    }
    if (mode == Mode::Read) ++session_->readers;
    else session_->writer = true;
  }
  Claim(Claim&& other) noexcept : session_(std::move(other.session_)), mode_(other.mode_) {}
  Claim(const Claim&) = delete;
  Claim& operator=(const Claim&) = delete;
  Claim& operator=(Claim&&) = delete;
  ~Claim() {
    if (!session_) return;
    if (mode_ == Mode::Read) --session_->readers;
    else session_->writer = false;
  }
  Session& session() { return *session_; }
  train::Trainer& trainer() { return *session_->trainer; }

 private:
  std::shared_ptr<Session> session_;
  Mode mode_;
};

class StepWorker : public PromiseWorker {
 public:
  StepWorker(Napi::Env env, Claim claim, bool update) : PromiseWorker(env), claim_(std::move(claim)), update_(update) {}

 protected:
  void Run() override {
    const train::Batch batch = claim_.session().staged.view();
    result_ = update_ ? claim_.trainer().step(batch) : claim_.trainer().evaluate(batch);
  }
  Napi::Value Resolve(Napi::Env env) override {
    claim_.session().steps = result_.step;
    return stepResultObject(env, result_);
  }

 private:
  Claim claim_;
  bool update_;
  train::StepResult result_;
};

class EmbedWorker : public PromiseWorker {
 public:
  EmbedWorker(Napi::Env env, Claim claim, StagedTower inputs, train::Role role, size_t rows, size_t head, size_t outDim)
      : PromiseWorker(env), claim_(std::move(claim)), inputs_(std::move(inputs)), role_(role), rows_(rows), head_(head), outDim_(outDim) {}

 protected:
  void Run() override {
    out_.resize(rows_ * outDim_);
    claim_.trainer().embed(role_, inputs_.view(), rows_, head_, out_.data());
  }
  Napi::Value Resolve(Napi::Env env) override { return floatArray(env, out_); }

 private:
  Claim claim_;
  StagedTower inputs_;
  train::Role role_;
  size_t rows_, head_, outDim_;
  std::vector<float> out_;
};

class SaveStateWorker : public PromiseWorker {
 public:
  SaveStateWorker(Napi::Env env, Claim claim) : PromiseWorker(env), claim_(std::move(claim)) {}

 protected:
  void Run() override { bytes_ = claim_.trainer().saveState(); }
  Napi::Value Resolve(Napi::Env env) override { return bytesArray(env, std::move(bytes_)); }

 private:
  Claim claim_;
  std::vector<uint8_t> bytes_;
};

class LoadStateWorker : public PromiseWorker {
 public:
  LoadStateWorker(Napi::Env env, Claim claim, std::vector<uint8_t> bytes)
      : PromiseWorker(env), claim_(std::move(claim)), bytes_(std::move(bytes)) {}

 protected:
  void Run() override { claim_.trainer().loadState(bytes_.data(), bytes_.size()); }
  Napi::Value Resolve(Napi::Env env) override {
    claim_.session().steps = claim_.trainer().steps();
    return env.Undefined();
  }

 private:
  Claim claim_;
  std::vector<uint8_t> bytes_;
};

class TrainerWrap : public Napi::ObjectWrap<TrainerWrap> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "Trainer",
                       {
                           InstanceMethod<&TrainerWrap::step>("step"),
                           InstanceMethod<&TrainerWrap::evaluate>("evaluate"),
                           InstanceMethod<&TrainerWrap::gradients>("gradients"),
                           InstanceMethod<&TrainerWrap::embed>("embed"),
                           InstanceMethod<&TrainerWrap::embedAsync>("embedAsync"),
                           InstanceMethod<&TrainerWrap::parameters>("parameters"),
                           InstanceMethod<&TrainerWrap::setParameters>("setParameters"),
                           InstanceMethod<&TrainerWrap::saveState>("saveState"),
                           InstanceMethod<&TrainerWrap::loadState>("loadState"),
                           InstanceMethod<&TrainerWrap::loadStateAsync>("loadStateAsync"),
                           InstanceMethod<&TrainerWrap::steps>("steps"),
                           InstanceMethod<&TrainerWrap::threads>("threads"),
                           InstanceMethod<&TrainerWrap::memoryBytes>("memoryBytes"),
                           InstanceMethod<&TrainerWrap::dispose>("dispose"),
                       });
  }

  // new Trainer(config): copies every array of the config.
  explicit TrainerWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TrainerWrap>(info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      ParsedConfig parsed = parseConfig(env, info[0]);
      auto session = std::make_shared<Session>();
      session->trainer = std::make_unique<train::Trainer>(std::move(parsed.config), std::move(parsed.params), parsed.kernels);
      session_ = std::move(session);
      external_.update(env, session_->trainer->memoryBytes());
    })
  }

  ~TrainerWrap() override { external_.close(Env()); }

 private:
  std::shared_ptr<Session> live(Napi::Env env) {
    if (!session_) throw makeError(env, {"EBRIX_DISPOSED", "The trainer has been disposed"});
    return session_;
  }

  // step(batch) -> Promise<NativeStepResult>
  Napi::Value step(const Napi::CallbackInfo& info) { return runBatch(info, true); }
  // evaluate(batch) -> Promise<NativeStepResult>: the loss, no update.
  Napi::Value evaluate(const Napi::CallbackInfo& info) { return runBatch(info, false); }

  Napi::Value runBatch(const Napi::CallbackInfo& info, bool update) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      Claim claim(env, live(env), Claim::Mode::Write);
      stageBatch(env, claim.trainer().config(), info[0], claim.session().staged);
      return (new StepWorker(env, std::move(claim), update))->Start();
    })
  }

  // gradients(batch) -> { loss, gradNorm, taskLoss, taskExamples, step, tables, towers, taskLogVariance }
  // (sync): the objective's gradients as full-size arrays, no update.
  Napi::Value gradients(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      Claim claim(env, live(env), Claim::Mode::Write);
      stageBatch(env, claim.trainer().config(), info[0], claim.session().staged);
      train::Parameters grads;
      const train::StepResult r = claim.trainer().gradients(claim.session().staged.view(), grads);
      Napi::Object out = parametersObject(env, grads);
      const Napi::Object summary = stepResultObject(env, r);
      for (const char* key : {"loss", "gradNorm", "taskLoss", "taskExamples", "step"}) out.Set(key, summary.Get(key));
      return out;
    })
  }

  struct EmbedArgs {
    train::Role role;
    size_t rows, head, outDim;
    StagedTower inputs;
  };

  // (role, tensors, rows, head)
  EmbedArgs parseEmbed(const Napi::CallbackInfo& info, const train::Trainer& trainer) {
    Napi::Env env = info.Env();
    EmbedArgs args;
    if (!info[0].IsNumber() || (info[0].As<Napi::Number>().DoubleValue() != 0 && info[0].As<Napi::Number>().DoubleValue() != 1)) {
      badArgument(env, "0 (query) or 1 (item)", "role", info[0]);
    }
    const int role = static_cast<int>(info[0].As<Napi::Number>().DoubleValue());
    args.role = static_cast<train::Role>(role);
    args.rows = rowCount(env, info[2], "rows");
    const train::TowerSpec& spec = trainer.config().towers[role];
    args.head = requireCount(info[3], "head");
    if (args.head >= spec.heads.size()) {
      badArgument(env, "a head from 0 to " + std::to_string(spec.heads.size() - 1), "head", info[3]);
    }
    args.outDim = spec.heads[args.head].outDim;
    stageTower(env, spec, info[1], args.rows, "tensors", args.inputs);
    return args;
  }

  // embed(role, tensors, rows, head) -> Float32Array(rows × outDim), on the calling thread.
  Napi::Value embed(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      Claim claim(env, live(env), Claim::Mode::Read);
      const EmbedArgs args = parseEmbed(info, claim.trainer());
      Napi::Float32Array out = Napi::Float32Array::New(env, args.rows * args.outDim);
      claim.trainer().embed(args.role, args.inputs.view(), args.rows, args.head, out.Data());
      return out;
    })
  }

  Napi::Value embedAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      Claim claim(env, live(env), Claim::Mode::Read);
      EmbedArgs args = parseEmbed(info, claim.trainer());
      return (new EmbedWorker(env, std::move(claim), std::move(args.inputs), args.role, args.rows, args.head, args.outDim))
          ->Start();
    })
  }

  Napi::Value parameters(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      Claim claim(env, live(env), Claim::Mode::Read);
      return parametersObject(env, claim.trainer().parameters());
    })
  }

  Napi::Value setParameters(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      Claim claim(env, live(env), Claim::Mode::Write);
      claim.trainer().setParameters(parseParameters(env, info[0]));
      return env.Undefined();
    })
  }

  // saveState() -> Promise<Uint8Array>
  Napi::Value saveState(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      Claim claim(env, live(env), Claim::Mode::Read);
      return (new SaveStateWorker(env, std::move(claim)))->Start();
    })
  }

  // loadState(bytes: Uint8Array), on the calling thread: the TypeScript trainer restores its
  // best checkpoint and reads steps() right after. The bytes are read in place (no JavaScript
  // runs meanwhile).
  Napi::Value loadState(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      Claim claim(env, live(env), Claim::Mode::Write);
      if (!isTyped(info[0], napi_uint8_array)) badArgument(env, "a Uint8Array", "bytes", info[0]);
      const auto bytes = info[0].As<Napi::Uint8Array>();
      claim.trainer().loadState(bytes.Data(), bytes.ElementLength());
      claim.session().steps = claim.trainer().steps();
      return env.Undefined();
    })
  }

  // loadStateAsync(bytes: Uint8Array) -> Promise<void>: off the event loop, for checkpoints of
  // hundreds of megabytes; the bytes are copied first.
  Napi::Value loadStateAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      Claim claim(env, live(env), Claim::Mode::Write);
      if (!isTyped(info[0], napi_uint8_array)) badArgument(env, "a Uint8Array", "bytes", info[0]);
      const auto bytes = info[0].As<Napi::Uint8Array>();
      std::vector<uint8_t> copy(bytes.Data(), bytes.Data() + bytes.ElementLength());
      return (new LoadStateWorker(env, std::move(claim), std::move(copy)))->Start();
    })
  }

  // Optimizer steps taken; answers while a step runs (the count before it).
  Napi::Value steps(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, { return Napi::Number::New(env, static_cast<double>(live(env)->steps)); })
  }
  Napi::Value threads(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, { return Napi::Number::New(env, live(env)->trainer->threads()); })
  }
  Napi::Value memoryBytes(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, { return Napi::Number::New(env, static_cast<double>(live(env)->trainer->memoryBytes())); })
  }

  // Drops this handle's reference; a call in flight keeps the trainer until it ends.
  Napi::Value dispose(const Napi::CallbackInfo& info) {
    external_.close(info.Env());
    session_.reset();
    return info.Env().Undefined();
  }

  std::shared_ptr<Session> session_;
  ExternalMemory external_;
};

}  // namespace

void initTrainer(Napi::Env env, Napi::Object exports) { exports.Set("Trainer", TrainerWrap::define(env)); }

}  // namespace ebrix::binding
