// JavaScript class FlatIndex over ebrix::FlatIndex. lib/index/flat.ts validates and
// normalises arguments; this layer re-checks what memory safety depends on (types, lengths)
// and copies inputs on the main thread before any work leaves it.
#include "flat_index.h"

#include <memory>
#include <string>
#include <vector>

#include "../core/flat.h"
#include "../core/simd/dispatch.h"
#include "args.h"
#include "attributes.h"
#include "errors.h"
#include "index_args.h"
#include "search_output.h"

namespace ebrix::binding {
namespace {

class SearchWorker : public PromiseWorker {
 public:
  SearchWorker(Napi::Env env, std::shared_ptr<FlatIndex> index, Napi::Float32Array queries,
               size_t count, size_t k, unsigned threads, AllowArg allow, SearchFilter filter)
      : PromiseWorker(env),
        index_(std::move(index)),
        queries_(queries.Data(), queries.Data() + queries.ElementLength()),
        count_(count),
        k_(k),
        threads_(threads),
        allow_(std::move(allow)),
        filter_(std::move(filter)) {}

 protected:
  void Run() override {
    out_ = index_->search(queries_.data(), count_, k_, threads_, allow_.bits(), allow_.words(), filter_.rowFilter());
  }
  Napi::Value Resolve(Napi::Env env) override { return searchResultObject(env, out_); }

 private:
  std::shared_ptr<FlatIndex> index_;
  std::vector<float> queries_;  // copied: queries are small next to the index
  size_t count_, k_;
  unsigned threads_;
  AllowArg allow_;
  SearchFilter filter_;
  SearchOutput out_;
};

// Trains the quantizer of storage 'i8' off the event loop: one pass over the sample (and a
// normalised copy for cosine), which for a large sample is more than a millisecond.
class TrainWorker : public PromiseWorker {
 public:
  TrainWorker(Napi::Env env, std::shared_ptr<FlatIndex> index, Napi::Float32Array sample, size_t count)
      : PromiseWorker(env),
        index_(std::move(index)),
        sample_(sample.Data(), sample.Data() + sample.ElementLength()),
        count_(count) {}

 protected:
  void Run() override { index_->train(sample_.data(), count_); }
  Napi::Value Resolve(Napi::Env env) override { return env.Undefined(); }

 private:
  std::shared_ptr<FlatIndex> index_;
  std::vector<float> sample_;  // copied, as add's vectors are (index_args.h)
  size_t count_;
};

// The tag of opened FlatIndex handles (index_args.h, openedHandle).
const napi_type_tag kOpenedTag = {0x6562726978666c61ull, 0x742d6f70656e6564ull};

class OpenWorker : public PromiseWorker {
 public:
  OpenWorker(Napi::Env env, std::string path, bool map, bool verify, simd::Level level, unsigned threads)
      : PromiseWorker(env), path_(std::move(path)), map_(map), verify_(verify), level_(level), threads_(threads) {}

 protected:
  void Run() override { opened_ = FlatIndex::open(path_, map_, verify_, level_, threads_); }
  Napi::Value Resolve(Napi::Env env) override {
    const FlatIndex& index = *opened_.index;
    Napi::Object out = Napi::Object::New(env);
    out.Set("modelVersion", Napi::String::New(env, opened_.modelVersion));
    out.Set("dim", Napi::Number::New(env, static_cast<double>(index.dim())));
    out.Set("metric", Napi::String::New(env, metricName(index.metric())));
    out.Set("storage", Napi::String::New(env, simd::elementName(index.storage())));
    out.Set("handle", openedHandle(env, std::shared_ptr<FlatIndex>(std::move(opened_.index)), kOpenedTag));
    setOpenedAttributes(env, out, std::move(opened_.attributes));
    return out;
  }

 private:
  std::string path_;
  bool map_, verify_;
  simd::Level level_;
  unsigned threads_;
  FlatIndex::Opened opened_;
};

// A SIMD level argument: a level name, or undefined for the default.
simd::Level parseSimdArg(Napi::Env env, const Napi::Value& v) {
  if (!v.IsString()) return simd::defaultLevel();
  const std::string name = v.As<Napi::String>().Utf8Value();
  simd::Level level;
  if (!simd::parseLevel(name, &level)) {
    throwInvalid(env, "Expected 'scalar', 'avx2', 'avx512' or 'neon' for simd but received " + name);
  }
  return level;
}

std::string requirePath(Napi::Env env, const Napi::Value& v) {
  if (!v.IsString()) throwInvalid(env, "Expected a string for path");
  return v.As<Napi::String>().Utf8Value();
}

class FlatIndexWrap : public Napi::ObjectWrap<FlatIndexWrap> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "FlatIndex",
                       {
                           InstanceMethod<&FlatIndexWrap::trainAsync>("trainAsync"),
                           InstanceMethod<&FlatIndexWrap::trained>("trained"),
                           InstanceMethod<&FlatIndexWrap::add>("add"),
                           InstanceMethod<&FlatIndexWrap::addAsync>("addAsync"),
                           InstanceMethod<&FlatIndexWrap::search>("search"),
                           InstanceMethod<&FlatIndexWrap::searchAsync>("searchAsync"),
                           InstanceMethod<&FlatIndexWrap::size>("size"),
                           InstanceMethod<&FlatIndexWrap::memoryBytes>("memoryBytes"),
                           InstanceMethod<&FlatIndexWrap::mappedBytes>("mappedBytes"),
                           InstanceMethod<&FlatIndexWrap::externalBytes>("externalBytes"),
                           InstanceMethod<&FlatIndexWrap::rowsOf>("rowsOf"),
                           InstanceMethod<&FlatIndexWrap::upsert>("upsert"),
                           InstanceMethod<&FlatIndexWrap::upsertAsync>("upsertAsync"),
                           InstanceMethod<&FlatIndexWrap::remove>("remove"),
                           InstanceMethod<&FlatIndexWrap::removeAsync>("removeAsync"),
                           InstanceMethod<&FlatIndexWrap::has>("has"),
                           InstanceMethod<&FlatIndexWrap::get>("get"),
                           InstanceMethod<&FlatIndexWrap::compactAsync>("compactAsync"),
                           InstanceMethod<&FlatIndexWrap::saveAsync>("saveAsync"),
                           InstanceMethod<&FlatIndexWrap::simdLevel>("simdLevel"),
                           InstanceMethod<&FlatIndexWrap::threads>("threads"),
                           InstanceMethod<&FlatIndexWrap::storage>("storage"),
                           InstanceMethod<&FlatIndexWrap::dispose>("dispose"),
                       });
  }

  // new FlatIndex(dim, metric, simd | undefined, threads, storage | undefined), or
  // new FlatIndex(handle) with the handle of openFlatIndexAsync.
  explicit FlatIndexWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FlatIndexWrap>(info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      if (info[0].IsExternal()) {
        index_ = takeOpened<FlatIndex>(env, info[0], kOpenedTag);
        account(env);
        return;
      }
      const size_t dim = requireCount(info[0], "dim");
      if (!info[1].IsString()) throwInvalid(env, "Expected a string for metric");
      Metric metric;
      const std::string metricName = info[1].As<Napi::String>().Utf8Value();
      if (!parseMetric(metricName, &metric)) {
        throwInvalid(env, "Expected 'ip', 'cosine' or 'l2' for metric but received " + metricName);
      }
      const simd::Level level = parseSimdArg(env, info[2]);  // the default only when none is asked for
      const unsigned threads = static_cast<unsigned>(requireCount(info[3], "threads"));
      simd::Element storage = simd::Element::F32;
      if (info.Length() > 4 && !info[4].IsUndefined()) {
        const std::string name = info[4].IsString() ? info[4].As<Napi::String>().Utf8Value() : std::string("(not a string)");
        if (!simd::parseElement(name, &storage)) {
          throwInvalid(env, "Expected 'f32', 'f16', 'bf16' or 'i8' for storage but received " + name);
        }
      }
      index_ = std::make_shared<FlatIndex>(dim, metric, level, threads, storage);
    })
  }

  ~FlatIndexWrap() override { external_->close(Env()); }

 private:
  // Tells V8 the index's native bytes (mapped rows excluded: they are the file's pages).
  void account(Napi::Env env) {
    if (index_) external_->update(env, index_->memoryBytes());
  }
  std::function<void(Napi::Env)> accountLater() {
    return [external = external_, index = std::weak_ptr<FlatIndex>(index_)](Napi::Env env) {
      if (auto alive = index.lock()) external->update(env, alive->memoryBytes());
    };
  }

  std::shared_ptr<FlatIndex> live(Napi::Env env) {
    if (!index_) throw makeError(env, {"EBRIX_DISPOSED", "The index has been disposed"});
    return index_;
  }

  struct SearchArgs {
    Napi::Float32Array queries;
    size_t count;
    size_t k;
    unsigned threads;
    AllowArg allow;
    SearchFilter filter;
  };

  // search(queries, k, threads, allow | undefined, filter | undefined, attributes | undefined):
  // queries is a whole number of rows of dim floats; allow a bitset over rows; filter a
  // filter node that the search evaluates against the attribute table on its own snapshot.
  SearchArgs parseSearch(const Napi::CallbackInfo& info, const FlatIndex& index) {
    Napi::Env env = info.Env();
    const unsigned threads = static_cast<unsigned>(requireCount(info[2], "threads"));
    SearchArgs args{requireFloat32(info[0], "queries"), 0, requireCount(info[1], "k"), threads,
                    AllowArg::parse(info[3], "allow"), SearchFilter::parse(info[4], info[5], threads)};
    args.count = requireQueryRows(args.queries, index.dim());
    if (args.k == 0 || args.k > kMaxResultEntries / args.count) {
      throwInvalid(env, "Expected k from 1 to " + std::to_string(kMaxResultEntries / args.count) + " for " +
                            std::to_string(args.count) + " queries but received " + std::to_string(args.k));
    }
    return args;
  }

  // trainAsync(sample): a whole number of rows of dim floats.
  Napi::Value trainAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      auto sample = requireFloat32(info[0], "sample");
      const size_t dim = index->dim();
      if (sample.ElementLength() % dim != 0) {
        throw makeError(env, {"EBRIX_DIM_MISMATCH", "Expected a multiple of dim " + std::to_string(dim) +
                                                        " floats for sample but received " +
                                                        std::to_string(sample.ElementLength())});
      }
      return (new TrainWorker(env, index, sample, sample.ElementLength() / dim))->Start();
    })
  }

  Napi::Value trained(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), live(info.Env())->trained());
  }

  // add(ids, vectors, attributes | undefined, columns | undefined): with an attribute table,
  // the batch's columns (one record per vector) are appended before the rows publish.
  Napi::Value add(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      const AddArgs args = parseAdd(info, index->dim());
      const RowRecords records = RowRecords::parse(info[2], info[3], args.count);
      index->add(args.ids.Data(), args.vectors.Data(), args.count, records.hook());
      account(env);
      return env.Undefined();
    })
  }

  Napi::Value addAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      const AddArgs args = parseAdd(info, index->dim());
      const RowRecords records = RowRecords::parse(info[2], info[3], args.count);
      return (new AddWorker<FlatIndex>(env, index, args, accountLater(), records.hook()))->Start();
    })
  }

  // upsert(ids, vectors, attributes | undefined, columns | undefined): as add; ids may
  // already be held.
  Napi::Value upsert(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      const AddArgs args = parseAdd(info, index->dim());
      const RowRecords records = RowRecords::parse(info[2], info[3], args.count);
      index->upsert(args.ids.Data(), args.vectors.Data(), args.count, records.hook());
      account(env);
      return env.Undefined();
    })
  }

  Napi::Value upsertAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      const AddArgs args = parseAdd(info, index->dim());
      const RowRecords records = RowRecords::parse(info[2], info[3], args.count);
      return (new UpsertWorker<FlatIndex>(env, index, args, accountLater(), records.hook()))->Start();
    })
  }

  // remove(ids: BigUint64Array) -> the number removed.
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
      return (new RemoveWorker<FlatIndex>(env, index, requireBigUint64(info[0], "ids"), accountLater()))->Start();
    })
  }

  // has(id: bigint) -> boolean
  Napi::Value has(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      return Napi::Boolean::New(env, index->contains(requireId(env, info[0])));
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

  // compactAsync() -> the number of tombstones dropped.
  Napi::Value compactAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, { return (new CompactWorker<FlatIndex>(env, live(env), accountLater()))->Start(); })
  }

  Napi::Value search(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      SearchArgs args = parseSearch(info, *index);
      return searchResultObject(env, index->search(args.queries.Data(), args.count, args.k, args.threads,
                                                   args.allow.bits(), args.allow.words(), args.filter.rowFilter()));
    })
  }

  Napi::Value searchAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      SearchArgs args = parseSearch(info, *index);
      return (new SearchWorker(env, index, args.queries, args.count, args.k, args.threads, std::move(args.allow),
                               std::move(args.filter)))
          ->Start();
    })
  }

  Napi::Value size(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(live(info.Env())->size()));
  }
  Napi::Value memoryBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(live(info.Env())->memoryBytes()));
  }
  // rowsOf(ids: BigUint64Array) -> Float64Array of rows, -1 for an unknown id.
  Napi::Value rowsOf(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, { return rowsOfValue(env, *live(env), info[0]); })
  }
  Napi::Value externalBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(external_->reported()));
  }
  Napi::Value mappedBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(live(info.Env())->mappedBytes()));
  }
  // saveAsync(path, modelVersion, attributes | undefined)
  Napi::Value saveAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto index = live(env);
      std::string path = requirePath(env, info[0]);
      if (!info[1].IsString()) throwInvalid(env, "Expected a string for modelVersion");
      return (new SaveWorker<FlatIndex>(env, index, std::move(path), info[1].As<Napi::String>().Utf8Value(),
                                        optionalAttributeTable(info[2])))
          ->Start();
    })
  }
  Napi::Value simdLevel(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), simd::levelName(live(info.Env())->level()));
  }
  Napi::Value threads(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), live(info.Env())->threads());
  }
  Napi::Value storage(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), simd::elementName(live(info.Env())->storage()));
  }
  // Drops this handle's reference; searches or adds in flight keep the data until they end.
  Napi::Value dispose(const Napi::CallbackInfo& info) {
    external_->close(info.Env());
    index_.reset();
    return info.Env().Undefined();
  }

  std::shared_ptr<FlatIndex> index_;
  std::shared_ptr<ExternalMemory> external_ = std::make_shared<ExternalMemory>();
};

// openFlatIndexAsync(path, map, verify, simd | undefined, threads) ->
//   { handle, modelVersion, dim, metric, storage }; `new FlatIndex(handle)` takes the index.
Napi::Value openFlatIndexAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EBRIX_BOUNDARY(env, {
    std::string path = requirePath(env, info[0]);
    if (!info[1].IsBoolean() || !info[2].IsBoolean()) throwInvalid(env, "Expected booleans for map and verify");
    const simd::Level level = parseSimdArg(env, info[3]);
    const unsigned threads = static_cast<unsigned>(std::min<size_t>(requireCount(info[4], "threads"), 4096));
    return (new OpenWorker(env, std::move(path), info[1].As<Napi::Boolean>().Value(), info[2].As<Napi::Boolean>().Value(),
                           level, threads))
        ->Start();
  })
}

}  // namespace

void initFlatIndex(Napi::Env env, Napi::Object exports) {
  exports.Set("FlatIndex", FlatIndexWrap::define(env));
  exports.Set("openFlatIndexAsync", Napi::Function::New(env, openFlatIndexAsync, "openFlatIndexAsync"));
}

}  // namespace ebrix::binding
