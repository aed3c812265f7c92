// The JavaScript IvfPqIndex classes over an IVF-PQ index type: ebrix::IvfPqIndex (CPU, in
// the main addon) and ebrix::gpu::GpuIvfPqIndex (in the CUDA addon) share every method; a
// Traits type gives the index type, the class name, construction (argument 7) and memory().
// lib/index/ivfpq.ts validates and normalises arguments; this layer re-checks what memory
// safety depends on (types, lengths) and copies inputs on the main thread before any work
// leaves it, as flat_index.cpp does.
#pragma once

#include <napi.h>

#include <algorithm>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/ivfpq.h"
#include "args.h"
#include "attributes.h"
#include "errors.h"
#include "index_args.h"
#include "search_output.h"

namespace ebrix::binding {

// The memory parts of an IvfPqMemory as properties of `out` (bytes: their total).
inline void setIvfPqMemory(Napi::Env env, const IvfPqMemory& mem, Napi::Object& out) {
  out.Set("bytes", Napi::Number::New(env, static_cast<double>(mem.total())));
  out.Set("codes", Napi::Number::New(env, static_cast<double>(mem.codes)));
  out.Set("ids", Napi::Number::New(env, static_cast<double>(mem.ids)));
  out.Set("centroids", Napi::Number::New(env, static_cast<double>(mem.centroids)));
  out.Set("refine", Napi::Number::New(env, static_cast<double>(mem.refine)));
  out.Set("idMap", Napi::Number::New(env, static_cast<double>(mem.idMap)));
}

// Parses the refine storage name of the constructor.
inline RefineStorage parseRefine(Napi::Env env, const Napi::Value& v) {
  const std::string refine = v.IsString() ? v.As<Napi::String>().Utf8Value() : std::string("(not a string)");
  if (refine == "none") return RefineStorage::None;
  if (refine == "f16") return RefineStorage::F16;
  if (refine == "f32") return RefineStorage::F32;
  throwInvalid(env, "Expected 'none', 'f16' or 'f32' for refine but received " + refine);
}

template <typename Index>
class IvfPqTrainWorker : public PromiseWorker {
 public:
  // Progress reaches JS through a thread-safe function (non-blocking calls, throttled to
  // steps of 1%); the promise may settle before the last of them is delivered, so
  // lib/index/ivfpq.ts reports completion itself.
  IvfPqTrainWorker(Napi::Env env, std::shared_ptr<Index> index, Napi::Float32Array vectors, size_t count,
              IvfPqTrainParams params, const Napi::Value& progress)
      : PromiseWorker(env),
        index_(std::move(index)),
        vectors_(vectors.Data(), vectors.Data() + vectors.ElementLength()),
        count_(count),
        params_(std::move(params)) {
    if (progress.IsFunction()) {
      progress_ = Napi::ThreadSafeFunction::New(env, progress.As<Napi::Function>(), "ebrix.IvfPqIndex.train", 0, 1);
      hasProgress_ = true;
    }
  }
  ~IvfPqTrainWorker() override {
    if (hasProgress_) progress_.Release();
  }

 protected:
  void Run() override {
    if (hasProgress_) {
      params_.progress = [this](double fraction) {
        if (fraction < lastSent_ + 0.01 && fraction < 1.0) return;
        lastSent_ = fraction;
        progress_.NonBlockingCall(new double(fraction), [](Napi::Env env, Napi::Function callback, double* value) {
          const double f = *value;
          delete value;
          if (env == nullptr || callback.IsEmpty()) return;  // the environment is shutting down
          try {
            callback.Call({Napi::Number::New(env, f)});
          } catch (const Napi::Error&) {
            // A throwing progress callback does not stop training; its error is dropped.
          }
        });
      };
    }
    index_->train(vectors_.data(), count_, params_);
  }
  Napi::Value Resolve(Napi::Env env) override { return env.Undefined(); }

 private:
  std::shared_ptr<Index> index_;
  std::vector<float> vectors_;
  size_t count_;
  IvfPqTrainParams params_;
  Napi::ThreadSafeFunction progress_;
  bool hasProgress_ = false;
  double lastSent_ = -1.0;
};

// The CPU index evaluates filters itself (on the state its search reads) and appends attribute
// records with its rows (Traits::kNativeAttributes); the GPU index takes the bitset
// lib/index/ivfpq.ts compiled, and lib/ keeps its records.
template <typename Traits>
using IvfPqSearchWorker =
    ParamsSearchWorker<typename Traits::Index, IvfPqSearchParams,
                       std::conditional_t<Traits::kNativeAttributes, SearchFilter, std::nullptr_t>>;


template <typename Traits>
class IvfPqWrap : public Napi::ObjectWrap<IvfPqWrap<Traits>> {
  using Index = typename Traits::Index;
  using Wrap = IvfPqWrap<Traits>;
  using TrainWorker = IvfPqTrainWorker<Index>;
  using SearchWorker = IvfPqSearchWorker<Traits>;

 public:
  static Napi::Function define(Napi::Env env) {
    std::vector<typename Wrap::PropertyDescriptor> methods = {
        Wrap::template InstanceMethod<&Wrap::trainAsync>("trainAsync"),
        Wrap::template InstanceMethod<&Wrap::add>("add"),
        Wrap::template InstanceMethod<&Wrap::addAsync>("addAsync"),
        Wrap::template InstanceMethod<&Wrap::search>("search"),
        Wrap::template InstanceMethod<&Wrap::searchAsync>("searchAsync"),
        Wrap::template InstanceMethod<&Wrap::trained>("trained"),
        Wrap::template InstanceMethod<&Wrap::threads>("threads"),
        Wrap::template InstanceMethod<&Wrap::size>("size"),
        Wrap::template InstanceMethod<&Wrap::memory>("memory"),
        Wrap::template InstanceMethod<&Wrap::saveAsync>("saveAsync"),
        Wrap::template InstanceMethod<&Wrap::externalBytes>("externalBytes"),
        Wrap::template InstanceMethod<&Wrap::rowsOf>("rowsOf"),
        Wrap::template InstanceMethod<&Wrap::dispose>("dispose"),
    };
    methods.push_back(Wrap::template InstanceMethod<&Wrap::upsert>("upsert"));
    methods.push_back(Wrap::template InstanceMethod<&Wrap::upsertAsync>("upsertAsync"));
    methods.push_back(Wrap::template InstanceMethod<&Wrap::remove>("remove"));
    methods.push_back(Wrap::template InstanceMethod<&Wrap::removeAsync>("removeAsync"));
    methods.push_back(Wrap::template InstanceMethod<&Wrap::has>("has"));
    methods.push_back(Wrap::template InstanceMethod<&Wrap::get>("get"));
    methods.push_back(Wrap::template InstanceMethod<&Wrap::compactAsync>("compactAsync"));
    return Wrap::DefineClass(env, Traits::kName, methods);
  }

  // new <kName>(dim, metric, nlist, m, nbits, opq, refine, simd | device, threads): argument 7
  // is the Traits' (a SIMD level name or undefined for the CPU, a device ordinal for the GPU).
  // Or new <kName>(handle): an opened index (Traits::adopt).
  explicit IvfPqWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Wrap>(info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      if (info[0].IsExternal()) {
        index_ = Traits::adopt(env, info[0]);
        account(env);
        return;
      }
      IvfPqParams params;
      params.dim = requireCount(info[0], "dim");
      if (!info[1].IsString()) throwInvalid(env, "Expected a string for metric");
      const std::string metricName = info[1].As<Napi::String>().Utf8Value();
      if (!parseMetric(metricName, &params.metric)) {
        throwInvalid(env, "Expected 'ip', 'cosine' or 'l2' for metric but received " + metricName);
      }
      params.nlist = requireCount(info[2], "nlist");
      params.m = requireCount(info[3], "m");
      params.nbits = static_cast<unsigned>(std::min<size_t>(requireCount(info[4], "nbits"), 64));
      if (!info[5].IsBoolean()) throwInvalid(env, "Expected a boolean for opq");
      params.opq = info[5].As<Napi::Boolean>().Value();
      params.refine = parseRefine(env, info[6]);
      const unsigned threads = static_cast<unsigned>(std::min<size_t>(requireCount(info[8], "threads"), 4096));
      index_ = Traits::create(env, params, info[7], threads);
    })
  }

  ~IvfPqWrap() override { external_->close(this->Env()); }

 private:
  // Tells V8 the index's host bytes (Traits::hostBytes).
  void account(Napi::Env env) {
    if (index_) external_->update(env, Traits::hostBytes(*index_));
  }
  std::function<void(Napi::Env)> accountLater() {
    return [external = external_, index = std::weak_ptr<Index>(index_)](Napi::Env env) {
      if (auto alive = index.lock()) external->update(env, Traits::hostBytes(*alive));
    };
  }

  std::shared_ptr<Index> live(Napi::Env env) {
    if (!index_) throw makeError(env, {"EBRIX_DISPOSED", "The index has been disposed"});
    return index_;
  }

  // trainAsync(vectors, seed, maxIterations, progress | undefined)
  Napi::Value trainAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      auto vectors = requireFloat32(info[0], "vectors");
      const size_t dim = index->params().dim;
      if (vectors.ElementLength() % dim != 0) {
        throw makeError(env, {"EBRIX_DIM_MISMATCH", "Expected a multiple of dim " + std::to_string(dim) +
                                                        " floats for vectors but received " +
                                                        std::to_string(vectors.ElementLength())});
      }
      IvfPqTrainParams params;
      params.seed = static_cast<uint64_t>(requireCount(info[1], "seed"));
      params.maxIterations = requireCount(info[2], "maxIterations");
      const Napi::Value progress = info.Length() > 3 ? info[3] : env.Undefined();
      if (!progress.IsUndefined() && !progress.IsFunction()) throwInvalid(env, "Expected a function for onProgress");
      return (new TrainWorker(env, index, vectors, vectors.ElementLength() / dim, std::move(params), progress))->Start();
    })
  }

  using Filter = std::conditional_t<Traits::kNativeAttributes, SearchFilter, std::nullptr_t>;

  struct SearchArgs {
    Napi::Float32Array queries;
    size_t count;
    IvfPqSearchParams params;
    AllowArg allow;
    Filter filter;
  };

  // search(queries, k, nprobe, refineFactor, threads, allow | undefined, filter | undefined,
  //        attributes | undefined, filterStrategy | undefined): the filter (CPU index) is
  //        evaluated by the search; filterStrategy 'auto' (default), 'probe' or 'scan'.
  SearchArgs parseSearch(const Napi::CallbackInfo& info, const Index& index) {
    Napi::Env env = info.Env();
    SearchArgs args{requireFloat32(info[0], "queries"), 0, IvfPqSearchParams{}, AllowArg::parse(info[5], "allow"),
                    Filter{}};
    args.params.k = requireCount(info[1], "k");
    args.params.nprobe = requireCount(info[2], "nprobe");
    args.params.refineFactor = requireCount(info[3], "refineFactor");
    args.params.threads = static_cast<unsigned>(std::min<size_t>(requireCount(info[4], "threads"), 4096));
    if constexpr (Traits::kNativeAttributes) args.filter = SearchFilter::parse(info[6], info[7], args.params.threads);
    if (!info[8].IsUndefined()) {
      const std::string strategy = info[8].IsString() ? info[8].As<Napi::String>().Utf8Value() : std::string("(not a string)");
      if (strategy == "auto") args.params.filterStrategy = IvfPqFilter::Auto;
      else if (strategy == "probe") args.params.filterStrategy = IvfPqFilter::Probe;
      else if (strategy == "scan") args.params.filterStrategy = IvfPqFilter::Scan;
      else throwInvalid(env, "Expected 'auto', 'probe' or 'scan' for filterStrategy but received " + strategy);
    }
    args.count = requireQueryRows(args.queries, index.params().dim);
    if (args.params.k == 0 || args.params.k > kMaxResultEntries / args.count) {
      throwInvalid(env, "Expected k from 1 to " + std::to_string(kMaxResultEntries / args.count) + " for " +
                            std::to_string(args.count) + " queries but received " + std::to_string(args.params.k));
    }
    // k × refineFactor candidates are held per query (and per thread): keep that bounded.
    if (args.params.refineFactor == 0 || args.params.refineFactor > kMaxResultEntries / args.params.k) {
      throwInvalid(env, "Expected refineFactor from 1 to " + std::to_string(kMaxResultEntries / args.params.k) +
                            " but received " + std::to_string(args.params.refineFactor));
    }
    return args;
  }

  // The records of a write (CPU index): add(ids, vectors, attributes | undefined, columns | undefined).
  static WriteHook recordsHook(const Napi::CallbackInfo& info, size_t count) {
    if constexpr (Traits::kNativeAttributes) return RowRecords::parse(info[2], info[3], count).hook();
    return {};
  }

  Napi::Value add(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      const AddArgs args = parseAdd(info, index->params().dim);
      if constexpr (Traits::kNativeAttributes) {
        index->add(args.ids.Data(), args.vectors.Data(), args.count, recordsHook(info, args.count));
      } else {
        index->add(args.ids.Data(), args.vectors.Data(), args.count);
      }
      account(env);
      return env.Undefined();
    })
  }

  Napi::Value addAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      const AddArgs args = parseAdd(info, index->params().dim);
      return (new AddWorker<Index>(env, index, args, accountLater(), recordsHook(info, args.count)))->Start();
    })
  }

  // upsert(ids, vectors, attributes | undefined, columns | undefined)
  Napi::Value upsert(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      const AddArgs args = parseAdd(info, index->params().dim);
      if constexpr (Traits::kNativeAttributes) {
        index->upsert(args.ids.Data(), args.vectors.Data(), args.count, recordsHook(info, args.count));
      } else {
        index->upsert(args.ids.Data(), args.vectors.Data(), args.count);
      }
      account(env);
      return env.Undefined();
    })
  }

  Napi::Value upsertAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      const AddArgs args = parseAdd(info, index->params().dim);
      return (new UpsertWorker<Index>(env, index, args, accountLater(), recordsHook(info, args.count)))->Start();
    })
  }

  // remove(ids) -> the number removed (it waits for the searches in flight).
  Napi::Value remove(const Napi::CallbackInfo& info) {
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
      return (new RemoveWorker<Index>(env, index, requireBigUint64(info[0], "ids"), accountLater()))->Start();
    })
  }

  Napi::Value has(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, { return Napi::Boolean::New(env, live(env)->contains(requireId(env, info[0]))); })
  }

  Napi::Value get(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      return storedVector(env, *index, info[0], index->params().dim);
    })
  }

  Napi::Value compactAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, { return (new CompactWorker<Index>(env, live(env), accountLater()))->Start(); })
  }

  Napi::Value search(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      SearchArgs args = parseSearch(info, *index);
      args.params.allowBits = args.allow.bits();
      args.params.allowWords = args.allow.words();
      if constexpr (Traits::kNativeAttributes) args.params.rowFilter = args.filter.rowFilter();
      return searchResultObject(env, index->search(args.queries.Data(), args.count, args.params));
    })
  }

  Napi::Value searchAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      SearchArgs args = parseSearch(info, *index);
      return (new SearchWorker(env, index, args.queries, args.count, args.params, std::move(args.allow),
                               std::move(args.filter)))
          ->Start();
    })
  }

  Napi::Value trained(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), live(info.Env())->trained());
  }
  Napi::Value threads(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), live(info.Env())->threads());
  }
  Napi::Value size(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(live(info.Env())->size()));
  }
  // rowsOf(ids: BigUint64Array) -> Float64Array of rows, -1 for an unknown id.
  Napi::Value rowsOf(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, { return rowsOfValue(env, *live(env), info[0]); })
  }

  // The native bytes last reported to V8 (tests).
  Napi::Value externalBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(external_->reported()));
  }

  // saveAsync(path, modelVersion, attributes | undefined)
  Napi::Value saveAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      if (!info[0].IsString() || !info[1].IsString()) throwInvalid(env, "Expected strings for path and modelVersion");
      return (new SaveWorker<Index>(env, index, info[0].As<Napi::String>().Utf8Value(),
                                         info[1].As<Napi::String>().Utf8Value(), optionalAttributeTable(info[2])))
          ->Start();
    })
  }

  // Traits::memory's object: { bytes, codes, ids, centroids, refine, idMap, ... }
  Napi::Value memory(const Napi::CallbackInfo& info) { return Traits::memory(info.Env(), *live(info.Env())); }
  // Drops this handle's reference; work in flight keeps the index until it ends.
  Napi::Value dispose(const Napi::CallbackInfo& info) {
    external_->close(info.Env());
    index_.reset();
    return info.Env().Undefined();
  }

  std::shared_ptr<Index> index_;
  std::shared_ptr<ExternalMemory> external_ = std::make_shared<ExternalMemory>();
};


}  // namespace ebrix::binding
