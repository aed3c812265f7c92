// JavaScript class HnswIndex over ebrix::HnswIndex. lib/index/hnsw.ts validates and
// normalises arguments; this layer re-checks what memory safety depends on (types, lengths)
// and copies inputs on the main thread before any work leaves it, as flat_index.cpp does.
#include "hnsw_index.h"

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../core/hnsw.h"
#include "../core/simd/dispatch.h"
#include "args.h"
#include "attributes.h"
#include "errors.h"
#include "index_args.h"
#include "search_output.h"

namespace ebrix::binding {
namespace {

using SearchWorker = ParamsSearchWorker<HnswIndex, HnswSearchParams, SearchFilter>;

// The tag of opened HnswIndex handles (index_args.h, openedHandle).
const napi_type_tag kOpenedTag = {0x6562726978686e73ull, 0x772d6f70656e6564ull};

class OpenWorker : public PromiseWorker {
 public:
  OpenWorker(Napi::Env env, std::string path, bool map, bool verify, simd::Level level, unsigned threads)
      : PromiseWorker(env), path_(std::move(path)), map_(map), verify_(verify), level_(level), threads_(threads) {}

 protected:
  void Run() override { opened_ = HnswIndex::open(path_, map_, verify_, level_, threads_); }
  Napi::Value Resolve(Napi::Env env) override {
    const HnswParams p = opened_.index->params();
    Napi::Object out = Napi::Object::New(env);
    out.Set("modelVersion", Napi::String::New(env, opened_.modelVersion));
    out.Set("dim", Napi::Number::New(env, static_cast<double>(p.dim)));
    out.Set("metric", Napi::String::New(env, metricName(p.metric)));
    out.Set("connectivity", Napi::Number::New(env, static_cast<double>(p.connectivity)));
    out.Set("expansionAdd", Napi::Number::New(env, static_cast<double>(p.expansionAdd)));
    out.Set("expansionSearch", Napi::Number::New(env, static_cast<double>(p.expansionSearch)));
    out.Set("storage", Napi::String::New(env, simd::elementName(p.storage)));
    out.Set("handle", openedHandle(env, std::shared_ptr<HnswIndex>(std::move(opened_.index)), kOpenedTag));
    setOpenedAttributes(env, out, std::move(opened_.attributes));
    return out;
  }

 private:
  std::string path_;
  bool map_, verify_;
  simd::Level level_;
  unsigned threads_;
  HnswIndex::Opened opened_;
};

simd::Level parseSimdArg(Napi::Env env, const Napi::Value& v) {
  simd::Level level = simd::defaultLevel();
  if (v.IsString()) {
    const std::string name = v.As<Napi::String>().Utf8Value();
    if (!simd::parseLevel(name, &level)) {
      throwInvalid(env, "Expected 'scalar', 'avx2', 'avx512' or 'neon' for simd but received " + name);
    }
  }
  return level;
}

class HnswIndexWrap : public Napi::ObjectWrap<HnswIndexWrap> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "HnswIndex",
                       {
                           InstanceMethod<&HnswIndexWrap::add>("add"),
                           InstanceMethod<&HnswIndexWrap::rowsOf>("rowsOf"),
                           InstanceMethod<&HnswIndexWrap::addAsync>("addAsync"),
                           InstanceMethod<&HnswIndexWrap::remove>("remove"),
                           InstanceMethod<&HnswIndexWrap::removeAsync>("removeAsync"),
                           InstanceMethod<&HnswIndexWrap::search>("search"),
                           InstanceMethod<&HnswIndexWrap::searchAsync>("searchAsync"),
                           InstanceMethod<&HnswIndexWrap::has>("has"),
                           InstanceMethod<&HnswIndexWrap::get>("get"),
                           InstanceMethod<&HnswIndexWrap::upsert>("upsert"),
                           InstanceMethod<&HnswIndexWrap::upsertAsync>("upsertAsync"),
                           InstanceMethod<&HnswIndexWrap::size>("size"),
                           InstanceMethod<&HnswIndexWrap::memoryBytes>("memoryBytes"),
                           InstanceMethod<&HnswIndexWrap::externalBytes>("externalBytes"),
                           InstanceMethod<&HnswIndexWrap::simdLevel>("simdLevel"),
                           InstanceMethod<&HnswIndexWrap::threads>("threads"),
                           InstanceMethod<&HnswIndexWrap::saveAsync>("saveAsync"),
                           InstanceMethod<&HnswIndexWrap::compactAsync>("compactAsync"),
                           InstanceMethod<&HnswIndexWrap::mappedBytes>("mappedBytes"),
                           InstanceMethod<&HnswIndexWrap::dispose>("dispose"),
                       });
  }

  // new HnswIndex(dim, metric, connectivity, expansionAdd, expansionSearch, storage,
  //               simd | undefined, threads), or new HnswIndex(handle) with the handle of
  // openHnswIndexAsync.
  explicit HnswIndexWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<HnswIndexWrap>(info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      if (info[0].IsExternal()) {
        index_ = takeOpened<HnswIndex>(env, info[0], kOpenedTag);
        return;
      }
      HnswParams params;
      params.dim = requireCount(info[0], "dim");
      if (!info[1].IsString()) throwInvalid(env, "Expected a string for metric");
      const std::string metricName = info[1].As<Napi::String>().Utf8Value();
      if (!parseMetric(metricName, &params.metric)) {
        throwInvalid(env, "Expected 'ip', 'cosine' or 'l2' for metric but received " + metricName);
      }
      params.connectivity = requireCount(info[2], "connectivity");
      params.expansionAdd = requireCount(info[3], "expansionAdd");
      params.expansionSearch = requireCount(info[4], "expansionSearch");
      const std::string storage = info[5].IsString() ? info[5].As<Napi::String>().Utf8Value() : std::string("(not a string)");
      if (!simd::parseElement(storage, &params.storage)) {
        throwInvalid(env, "Expected 'f32', 'f16' or 'bf16' for storage but received " + storage);
      }
      simd::Level level;
      if (info[6].IsString()) {
        const std::string name = info[6].As<Napi::String>().Utf8Value();
        if (!simd::parseLevel(name, &level)) {
          throwInvalid(env, "Expected 'scalar', 'avx2', 'avx512' or 'neon' for simd but received " + name);
        }
      } else {
        level = simd::defaultLevel();
      }
      const unsigned threads = static_cast<unsigned>(std::min<size_t>(requireCount(info[7], "threads"), 4096));
      index_ = std::make_shared<HnswIndex>(params, level, threads);
      account(env);
    })
  }

  ~HnswIndexWrap() override { external_->close(Env()); }

 private:
  std::shared_ptr<HnswIndex> live(Napi::Env env) {
    if (!index_) throw makeError(env, {"EBRIX_DISPOSED", "The index has been disposed"});
    return index_;
  }

  struct SearchArgs {
    Napi::Float32Array queries;
    size_t count;
    HnswSearchParams params;
    AllowArg allow;
    SearchFilter filter;
  };

  // search(queries, k, expansion, threads, allow | undefined, filterStrategy,
  //        filter | undefined, attributes | undefined): the filter is evaluated by the search.
  SearchArgs parseSearch(const Napi::CallbackInfo& info, const HnswIndex& index) {
    Napi::Env env = info.Env();
    SearchArgs args{requireFloat32(info[0], "queries"), 0, HnswSearchParams{}, AllowArg::parse(info[4], "allow"),
                    SearchFilter{}};
    args.params.k = requireCount(info[1], "k");
    args.params.expansion = requireCount(info[2], "expansion");
    args.params.threads = static_cast<unsigned>(std::min<size_t>(requireCount(info[3], "threads"), 4096));
    const std::string strategy = info[5].IsString() ? info[5].As<Napi::String>().Utf8Value() : std::string("(not a string)");
    if (strategy == "auto") args.params.filterStrategy = HnswFilter::Auto;
    else if (strategy == "graph") args.params.filterStrategy = HnswFilter::Graph;
    else if (strategy == "scan") args.params.filterStrategy = HnswFilter::Scan;
    else throwInvalid(env, "Expected 'auto', 'graph' or 'scan' for filterStrategy but received " + strategy);
    args.filter = SearchFilter::parse(info[6], info[7], args.params.threads);
    args.count = requireQueryRows(args.queries, index.dim());
    if (args.params.k == 0 || args.params.k > kMaxResultEntries / args.count) {
      throwInvalid(env, "Expected k from 1 to " + std::to_string(kMaxResultEntries / args.count) + " for " +
                            std::to_string(args.count) + " queries but received " + std::to_string(args.params.k));
    }
    // usearch keeps max(k, expansion) candidates per search thread: keep that bounded.
    if (args.params.expansion > kMaxResultEntries) {
      throwInvalid(env, "Expected expansion up to " + std::to_string(kMaxResultEntries) + " but received " +
                            std::to_string(args.params.expansion));
    }
    return args;
  }

  // add(ids, vectors, attributes | undefined, columns | undefined): the records are appended
  // before the rows publish.
  Napi::Value add(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      const AddArgs args = parseAdd(info, index->dim());
      index->add(args.ids.Data(), args.vectors.Data(), args.count, RowRecords::parse(info[2], info[3], args.count).hook());
      account(env);
      return env.Undefined();
    })
  }

  Napi::Value addAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      const AddArgs args = parseAdd(info, index->dim());
      const WriteHook hook = RowRecords::parse(info[2], info[3], args.count).hook();
      return (new AddWorker<HnswIndex>(env, index, args, accountLater(), hook))->Start();
    })
  }

  // upsert(ids, vectors, attributes | undefined, columns | undefined)
  Napi::Value upsert(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      const AddArgs args = parseAdd(info, index->dim());
      index->upsert(args.ids.Data(), args.vectors.Data(), args.count,
                    RowRecords::parse(info[2], info[3], args.count).hook());
      account(env);
      return env.Undefined();
    })
  }

  Napi::Value upsertAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      const AddArgs args = parseAdd(info, index->dim());
      const WriteHook hook = RowRecords::parse(info[2], info[3], args.count).hook();
      return (new UpsertWorker<HnswIndex>(env, index, args, accountLater(), hook))->Start();
    })
  }

  // get(id: bigint) -> Float32Array of dim
  Napi::Value get(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      return storedVector(env, *index, info[0], index->dim());
    })
  }

  // remove(ids): ids a BigUint64Array.
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
      return (new RemoveWorker<HnswIndex>(env, index, requireBigUint64(info[0], "ids"), accountLater()))->Start();
    })
  }

  Napi::Value search(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      SearchArgs args = parseSearch(info, *index);
      args.params.allowBits = args.allow.bits();
      args.params.allowWords = args.allow.words();
      args.params.rowFilter = args.filter.rowFilter();
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

  // has(id): id a bigint.
  // rowsOf(ids: BigUint64Array) -> Float64Array of rows, -1 for an unknown id.
  Napi::Value rowsOf(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, { return rowsOfValue(env, *live(env), info[0]); })
  }

  Napi::Value has(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      return Napi::Boolean::New(env, index->contains(requireId(env, info[0])));
    })
  }

  Napi::Value size(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(live(info.Env())->size()));
  }
  Napi::Value memoryBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(live(info.Env())->memoryBytes()));
  }
  Napi::Value mappedBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(live(info.Env())->mappedBytes()));
  }
  // saveAsync(path, modelVersion, attributes | undefined)
  Napi::Value saveAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      if (!info[0].IsString() || !info[1].IsString()) throwInvalid(env, "Expected strings for path and modelVersion");
      return (new SaveWorker<HnswIndex>(env, index, info[0].As<Napi::String>().Utf8Value(),
                                        info[1].As<Napi::String>().Utf8Value(), optionalAttributeTable(info[2])))
          ->Start();
    })
  }
  // compactAsync() -> the number of graph nodes dropped.
  Napi::Value compactAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, { return (new CompactWorker<HnswIndex>(env, live(env)))->Start(); })
  }
  // The native bytes last reported to V8 (tests).
  Napi::Value externalBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(external_->reported()));
  }
  Napi::Value simdLevel(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), simd::levelName(live(info.Env())->level()));
  }
  Napi::Value threads(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), live(info.Env())->threads());
  }
  // Drops this handle's reference; work in flight keeps the index until it ends.
  Napi::Value dispose(const Napi::CallbackInfo& info) {
    external_->close(info.Env());
    index_.reset();
    return info.Env().Undefined();
  }

  // Tells V8 the index's native bytes (graph, vectors, id maps), as FlatIndexWrap does.
  void account(Napi::Env env) {
    if (index_) external_->update(env, index_->memoryBytes());
  }
  std::function<void(Napi::Env)> accountLater() {
    return [external = external_, index = std::weak_ptr<HnswIndex>(index_)](Napi::Env env) {
      if (auto alive = index.lock()) external->update(env, alive->memoryBytes());
    };
  }

  std::shared_ptr<HnswIndex> index_;
  std::shared_ptr<ExternalMemory> external_ = std::make_shared<ExternalMemory>();
};

// openHnswIndexAsync(path, map, verify, simd | undefined, threads) -> { handle, modelVersion,
//   dim, metric, connectivity, expansionAdd, expansionSearch, storage, attributes?,
//   attributeSchema? }; `new HnswIndex(handle)` takes the index.
Napi::Value openHnswIndexAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EBRIX_BOUNDARY(env, {
    if (!info[0].IsString()) throwInvalid(env, "Expected a string for path");
    if (!info[1].IsBoolean() || !info[2].IsBoolean()) throwInvalid(env, "Expected booleans for map and verify");
    const simd::Level level = parseSimdArg(env, info[3]);
    const unsigned threads = static_cast<unsigned>(std::min<size_t>(requireCount(info[4], "threads"), 4096));
    return (new OpenWorker(env, info[0].As<Napi::String>().Utf8Value(), info[1].As<Napi::Boolean>().Value(),
                           info[2].As<Napi::Boolean>().Value(), level, threads))
        ->Start();
  })
}

}  // namespace

void initHnswIndex(Napi::Env env, Napi::Object exports) {
  exports.Set("HnswIndex", HnswIndexWrap::define(env));
  exports.Set("openHnswIndexAsync", Napi::Function::New(env, openHnswIndexAsync, "openHnswIndexAsync"));
}

}  // namespace ebrix::binding
