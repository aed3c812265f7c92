// JavaScript class GpuFlatIndex over ebrix::gpu::GpuFlatIndex (CUDA addon only). The same
// rules as ../flat_index.cpp: lib/index/flat.ts validates and normalises arguments, this
// layer re-checks what memory safety depends on and copies inputs on the main thread before
// any work leaves it. The index sits in a shared_ptr so that dispose() while an add or search
// is in flight only drops this handle's reference; the device memory goes with the last one.
#include "gpu_flat_index.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "../../cuda/gpu_index.h"
#include "../args.h"
#include "../errors.h"
#include "../index_args.h"
#include "../search_output.h"

namespace ebrix::binding {
namespace {

using gpu::GpuFlatIndex;

gpu::GpuSearchOptions searchOptions(const AllowArg& allow, bool tf32) {
  gpu::GpuSearchOptions options;
  options.allowBits = allow.bits();
  options.allowWords = allow.words();
  options.tf32 = tf32;
  return options;
}

struct SearchArgs {
  Napi::Float32Array queries;
  size_t count;
  size_t k;
  AllowArg allow;
  bool tf32;
};

class SearchWorker : public PromiseWorker {
 public:
  SearchWorker(Napi::Env env, std::shared_ptr<GpuFlatIndex> index, const SearchArgs& args)
      : PromiseWorker(env),
        index_(std::move(index)),
        queries_(args.queries.Data(), args.queries.Data() + args.queries.ElementLength()),
        count_(args.count),
        k_(args.k),
        allow_(args.allow),
        tf32_(args.tf32) {}

 protected:
  void Run() override { out_ = index_->search(queries_.data(), count_, k_, searchOptions(allow_, tf32_)); }
  Napi::Value Resolve(Napi::Env env) override { return searchResultObject(env, out_); }

 private:
  std::shared_ptr<GpuFlatIndex> index_;
  std::vector<float> queries_;
  size_t count_, k_;
  AllowArg allow_;
  bool tf32_;
  SearchOutput out_;
};

class GpuFlatIndexWrap : public Napi::ObjectWrap<GpuFlatIndexWrap> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "GpuFlatIndex",
                       {
                           InstanceMethod<&GpuFlatIndexWrap::addSync>("addSync"),
                           InstanceMethod<&GpuFlatIndexWrap::addAsync>("addAsync"),
                           InstanceMethod<&GpuFlatIndexWrap::searchSync>("searchSync"),
                           InstanceMethod<&GpuFlatIndexWrap::searchAsync>("searchAsync"),
                           InstanceMethod<&GpuFlatIndexWrap::upsertSync>("upsertSync"),
                           InstanceMethod<&GpuFlatIndexWrap::upsertAsync>("upsertAsync"),
                           InstanceMethod<&GpuFlatIndexWrap::removeSync>("removeSync"),
                           InstanceMethod<&GpuFlatIndexWrap::removeAsync>("removeAsync"),
                           InstanceMethod<&GpuFlatIndexWrap::has>("has"),
                           InstanceMethod<&GpuFlatIndexWrap::get>("get"),
                           InstanceMethod<&GpuFlatIndexWrap::compactAsync>("compactAsync"),
                           InstanceMethod<&GpuFlatIndexWrap::rowsOf>("rowsOf"),
                           InstanceMethod<&GpuFlatIndexWrap::externalBytes>("externalBytes"),
                           InstanceMethod<&GpuFlatIndexWrap::size>("size"),
                           InstanceMethod<&GpuFlatIndexWrap::deviceBytes>("deviceBytes"),
                           InstanceMethod<&GpuFlatIndexWrap::hostBytes>("hostBytes"),
                           InstanceMethod<&GpuFlatIndexWrap::dispose>("dispose"),
                       });
  }

  // new GpuFlatIndex(dim, metric, storage, device)
  explicit GpuFlatIndexWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<GpuFlatIndexWrap>(info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      const size_t dim = requireCount(info[0], "dim");
      if (!info[1].IsString()) throwInvalid(env, "Expected a string for metric");
      Metric metric;
      const std::string metricName = info[1].As<Napi::String>().Utf8Value();
      if (!parseMetric(metricName, &metric)) {
        throwInvalid(env, "Expected 'ip', 'cosine' or 'l2' for metric but received " + metricName);
      }
      if (!info[2].IsString()) throwInvalid(env, "Expected a string for storage");
      gpu::Storage storage;
      const std::string storageName = info[2].As<Napi::String>().Utf8Value();
      if (!gpu::parseStorage(storageName, &storage)) {
        throwInvalid(env, "Expected 'f32', 'f16' or 'bf16' for storage but received " + storageName);
      }
      index_ = std::make_shared<GpuFlatIndex>(dim, metric, storage, requireDevice(info[3]));
      account(env);
    })
  }

  ~GpuFlatIndexWrap() override { external_->close(Env()); }

 private:
  // Tells V8 the index's host bytes (id map, live bitset, slot table). Device memory is left
  // out: V8 weighs external memory against host memory pressure, and dispose() frees the
  // device arrays.
  void account(Napi::Env env) {
    if (index_) external_->update(env, index_->hostBytes());
  }
  std::function<void(Napi::Env)> accountLater() {
    return [external = external_, index = std::weak_ptr<GpuFlatIndex>(index_)](Napi::Env env) {
      if (auto alive = index.lock()) external->update(env, alive->hostBytes());
    };
  }

  std::shared_ptr<GpuFlatIndex> live(Napi::Env env) {
    if (!index_) throw makeError(env, {"EBRIX_DISPOSED", "The index has been disposed"});
    return index_;
  }

  // search(queries, k, allow | undefined, tf32): queries is a whole number of rows of dim floats.
  SearchArgs parseSearch(const Napi::CallbackInfo& info, const GpuFlatIndex& index) {
    Napi::Env env = info.Env();
    SearchArgs args{requireFloat32(info[0], "queries"), 0, requireCount(info[1], "k"), AllowArg(), false};
    args.count = requireQueryRows(args.queries, index.dim());
    const size_t maxK = std::min(GpuFlatIndex::kMaxK, kMaxResultEntries / args.count);
    if (args.k == 0 || args.k > maxK) {
      throwInvalid(env, "Expected k from 1 to " + std::to_string(maxK) + " for " + std::to_string(args.count) +
                            " queries on the GPU but received " + std::to_string(args.k));
    }
    args.allow = AllowArg::parse(info[2], "allow");
    if (!info[3].IsBoolean()) throwInvalid(env, "Expected a boolean for tf32");
    args.tf32 = info[3].As<Napi::Boolean>().Value();
    return args;
  }

  Napi::Value addSync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      const AddArgs args = parseAdd(info, index->dim());
      index->add(args.ids.Data(), args.vectors.Data(), args.count);
      account(env);
      return env.Undefined();
    })
  }

  Napi::Value addAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      return (new AddWorker<GpuFlatIndex>(env, index, parseAdd(info, index->dim()), accountLater()))->Start();
    })
  }

  // upsertSync(ids, vectors): as addSync; ids may already be held.
  Napi::Value upsertSync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      const AddArgs args = parseAdd(info, index->dim());
      index->upsert(args.ids.Data(), args.vectors.Data(), args.count);
      account(env);
      return env.Undefined();
    })
  }

  Napi::Value upsertAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      return (new UpsertWorker<GpuFlatIndex>(env, index, parseAdd(info, index->dim()), accountLater()))->Start();
    })
  }

  // removeSync(ids: BigUint64Array) -> the number removed (it uploads one bit per slot).
  Napi::Value removeSync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      const Napi::BigUint64Array ids = requireBigUint64(info[0], "ids");
      const size_t removed = index->remove(ids.Data(), ids.ElementLength());
      account(env);
      return Napi::Number::New(env, static_cast<double>(removed));
    })
  }

  Napi::Value removeAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      return (new RemoveWorker<GpuFlatIndex>(env, index, requireBigUint64(info[0], "ids"), accountLater()))->Start();
    })
  }

  Napi::Value has(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, { return Napi::Boolean::New(env, live(env)->contains(requireId(env, info[0]))); })
  }

  // get(id) -> Float32Array of dim (one row read back from the device).
  Napi::Value get(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      return storedVector(env, *index, info[0], index->dim());
    })
  }

  Napi::Value compactAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, { return (new CompactWorker<GpuFlatIndex>(env, live(env), accountLater()))->Start(); })
  }

  Napi::Value rowsOf(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, { return rowsOfValue(env, *live(env), info[0]); })
  }

  Napi::Value externalBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(external_->reported()));
  }

  Napi::Value searchSync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      const SearchArgs args = parseSearch(info, *index);
      return searchResultObject(env,
                                index->search(args.queries.Data(), args.count, args.k, searchOptions(args.allow, args.tf32)));
    })
  }

  Napi::Value searchAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      const SearchArgs args = parseSearch(info, *index);
      return (new SearchWorker(env, index, args))->Start();
    })
  }

  Napi::Value size(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(live(info.Env())->size()));
  }
  Napi::Value deviceBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(live(info.Env())->deviceBytes()));
  }
  Napi::Value hostBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(live(info.Env())->hostBytes()));
  }
  // Drops this handle's reference; searches or adds in flight keep the data until they end.
  Napi::Value dispose(const Napi::CallbackInfo& info) {
    external_->close(info.Env());
    index_.reset();
    return info.Env().Undefined();
  }

  std::shared_ptr<GpuFlatIndex> index_;
  std::shared_ptr<ExternalMemory> external_ = std::make_shared<ExternalMemory>();
};

}  // namespace

int requireDevice(const Napi::Value& v) {
  const size_t device = requireCount(v, "device");
  if (device > static_cast<size_t>(std::numeric_limits<int>::max())) {
    throwInvalid(v.Env(), "Expected a CUDA device ordinal for device but received " + std::to_string(device));
  }
  return static_cast<int>(device);
}

void initGpuFlatIndex(Napi::Env env, Napi::Object exports) {
  exports.Set("GpuFlatIndex", GpuFlatIndexWrap::define(env));
}

}  // namespace ebrix::binding
