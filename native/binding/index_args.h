// Argument handling shared by the index classes of both addons (FlatIndex, IvfPqIndex,
// HnswIndex and the CUDA addon's GpuFlatIndex): adds, and allow bitsets.
#pragma once

#include <napi.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/attributes.h"
#include "../core/error.h"
#include "../core/row_filter.h"

#include "args.h"
#include "errors.h"
#include "search_output.h"

namespace ebrix::binding {

struct AddArgs {
  Napi::BigUint64Array ids;
  Napi::Float32Array vectors;
  size_t count;
};

// add(ids, vectors): one id per row of dim floats.
inline AddArgs parseAdd(const Napi::CallbackInfo& info, size_t dim) {
  AddArgs args{requireBigUint64(info[0], "ids"), requireFloat32(info[1], "vectors"), 0};
  args.count = args.ids.ElementLength();
  requireRows(args.vectors, args.count, dim);
  return args;
}

// What one JS index object has told V8 about its native memory (napi external memory), so
// that the garbage collector weighs a wrapper by the index behind it. Main thread only.
// After close() (dispose, finalisation) updates are ignored: a worker finishing late must
// not report an index that is being freed.
class ExternalMemory {
 public:
  void update(Napi::Env env, size_t bytes) {
    if (closed_) return;
    const int64_t delta = static_cast<int64_t>(bytes) - reported_;
    if (delta != 0) Napi::MemoryManagement::AdjustExternalMemory(env, delta);
    reported_ = static_cast<int64_t>(bytes);
  }
  void close(Napi::Env env) {
    update(env, 0);
    closed_ = true;
  }
  // The bytes last reported (tests read it: Node's process.memoryUsage() does not show them).
  int64_t reported() const { return reported_; }

 private:
  int64_t reported_ = 0;
  bool closed_ = false;
};

// Whether Index::add takes a WriteHook after (ids, vectors, count) (the CPU indexes; a
// parameter with a default after it counts, which a member-pointer test would miss).
template <class Index, class = void>
struct TakesWriteHook : std::false_type {};
template <class Index>
struct TakesWriteHook<Index, std::void_t<decltype(std::declval<Index&>().add(
                                 std::declval<const uint64_t*>(), std::declval<const float*>(), size_t{},
                                 std::declval<const WriteHook&>()))>> : std::true_type {};

// An add (or, with kUpsert, an upsert) off the event loop. The inputs are copied on the main
// thread: a reference keeps the typed array object alive but not its memory (the caller may
// transfer or detach the buffer while the add runs), and validating and then reading a
// buffer the caller can still write would not be all-or-nothing. `hook` (an index that keeps
// attribute records, attributes.h's RowRecords) appends the records before the rows publish;
// indexes whose add takes no hook (the GPU's) get none; their upsert takes none either.
template <class Index, bool kUpsert = false>
class AddWorker : public PromiseWorker {
 public:
  // `done` runs on the main thread after a successful add (memory accounting).
  AddWorker(Napi::Env env, std::shared_ptr<Index> index, const AddArgs& args,
            std::function<void(Napi::Env)> done = nullptr, WriteHook hook = {})
      : PromiseWorker(env),
        done_(std::move(done)),
        hook_(std::move(hook)),
        index_(std::move(index)),
        ids_(args.ids.Data(), args.ids.Data() + args.ids.ElementLength()),
        vectors_(args.vectors.Data(), args.vectors.Data() + args.vectors.ElementLength()),
        count_(args.count) {}

 protected:
  void Run() override {
    if constexpr (TakesWriteHook<Index>::value) {
      if constexpr (kUpsert) {
        index_->upsert(ids_.data(), vectors_.data(), count_, hook_);
      } else {
        index_->add(ids_.data(), vectors_.data(), count_, hook_);
      }
    } else {
      // Records must never be dropped silently: that would shift every later row's.
      if (hook_) throw Error(ErrorCode::Internal, "This index cannot append attribute records with its rows");
      if constexpr (kUpsert) {
        index_->upsert(ids_.data(), vectors_.data(), count_);
      } else {
        index_->add(ids_.data(), vectors_.data(), count_);
      }
    }
  }
  Napi::Value Resolve(Napi::Env env) override {
    if (done_) done_(env);
    return env.Undefined();
  }

 private:
  std::function<void(Napi::Env)> done_;
  WriteHook hook_;
  std::shared_ptr<Index> index_;
  std::vector<uint64_t> ids_;
  std::vector<float> vectors_;
  size_t count_;
};

template <class Index>
using UpsertWorker = AddWorker<Index, true>;

// A remove off the event loop (an IVF-PQ or HNSW remove waits for the searches in flight);
// resolves to the number of vectors removed (Index::remove's result).
template <class Index>
class RemoveWorker : public PromiseWorker {
 public:
  RemoveWorker(Napi::Env env, std::shared_ptr<Index> index, const Napi::BigUint64Array& ids,
               std::function<void(Napi::Env)> done = nullptr)
      : PromiseWorker(env),
        done_(std::move(done)),
        index_(std::move(index)),
        ids_(ids.Data(), ids.Data() + ids.ElementLength()) {}

 protected:
  void Run() override { removed_ = index_->remove(ids_.data(), ids_.size()); }
  Napi::Value Resolve(Napi::Env env) override {
    if (done_) done_(env);
    return Napi::Number::New(env, static_cast<double>(removed_));
  }

 private:
  std::function<void(Napi::Env)> done_;
  std::shared_ptr<Index> index_;
  std::vector<uint64_t> ids_;
  size_t removed_ = 0;
};

// Index::compact() off the event loop (it copies every live vector); resolves to the number
// of tombstones it dropped.
template <class Index>
class CompactWorker : public PromiseWorker {
 public:
  CompactWorker(Napi::Env env, std::shared_ptr<Index> index, std::function<void(Napi::Env)> done = nullptr)
      : PromiseWorker(env), done_(std::move(done)), index_(std::move(index)) {}

 protected:
  void Run() override { dropped_ = index_->compact(); }
  Napi::Value Resolve(Napi::Env env) override {
    if (done_) done_(env);
    return Napi::Number::New(env, static_cast<double>(dropped_));
  }

 private:
  std::function<void(Napi::Env)> done_;
  std::shared_ptr<Index> index_;
  size_t dropped_ = 0;
};

// An id argument: a bigint below 2^64 (lib/index/ids.ts has checked the range).
inline uint64_t requireId(Napi::Env env, const Napi::Value& value) {
  if (!value.IsBigInt()) throwInvalid(env, "Expected a bigint for id");
  bool lossless = false;
  const uint64_t id = value.As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) throwInvalid(env, "Expected an id below 2^64");
  return id;
}

// get(id) -> Float32Array of the vector stored under id (Index::get; UnknownId otherwise).
template <typename Index>
Napi::Value storedVector(Napi::Env env, Index& index, const Napi::Value& idArg, size_t dim) {
  const uint64_t id = requireId(env, idArg);
  std::vector<float> vector(dim);
  index.get(id, vector.data());
  Napi::Float32Array out = Napi::Float32Array::New(env, dim);
  std::memcpy(out.Data(), vector.data(), dim * sizeof(float));
  return out;
}

// An allow bitset as the core takes it, copied (one bit per row: small next to an index, and
// safe to read off the main thread): none is a null pointer; a given but empty bitset (no
// row allowed) is a non-null pointer with no words.
class AllowArg {
 public:
  // undefined: no filter; otherwise a Uint32Array (EBRIX_INVALID_ARGUMENT if not).
  static AllowArg parse(const Napi::Value& value, const char* name) {
    AllowArg allow;
    if (value.IsUndefined()) return allow;
    const Napi::Uint32Array words = requireUint32(value, name);
    allow.given_ = true;
    allow.words_.assign(words.Data(), words.Data() + words.ElementLength());
    return allow;
  }
  const uint32_t* bits() const {
    static const uint32_t kNoWords = 0;
    return given_ ? (words_.empty() ? &kNoWords : words_.data()) : nullptr;
  }
  size_t words() const { return words_.size(); }

 private:
  bool given_ = false;
  std::vector<uint32_t> words_;
};

// Writes an index to a file off the event loop (Index::save(path, modelVersion)).
template <typename Index>
class SaveWorker : public PromiseWorker {
 public:
  // attributes: the index's table, whose records go into the file with the rows (or null).
  SaveWorker(Napi::Env env, std::shared_ptr<Index> index, std::string path, std::string modelVersion,
             std::shared_ptr<const AttributeTable> attributes = nullptr)
      : PromiseWorker(env),
        index_(std::move(index)),
        path_(std::move(path)),
        modelVersion_(std::move(modelVersion)),
        attributes_(std::move(attributes)) {}

 protected:
  void Run() override { index_->save(path_, modelVersion_, attributes_.get()); }
  Napi::Value Resolve(Napi::Env env) override { return env.Undefined(); }

 private:
  std::shared_ptr<Index> index_;
  std::string path_, modelVersion_;
  std::shared_ptr<const AttributeTable> attributes_;
};

// An index opened by a worker travels to its JS class's constructor in an External tagged
// with the class's own tag, so that no other external (another class's, another addon's) can
// be taken for one; the constructor takes the index out, once.
template <typename Index>
Napi::External<std::shared_ptr<Index>> openedHandle(Napi::Env env, std::shared_ptr<Index> index,
                                                    const napi_type_tag& tag) {
  auto external = Napi::External<std::shared_ptr<Index>>::New(
      env, new std::shared_ptr<Index>(std::move(index)), [](Napi::Env, std::shared_ptr<Index>* p) { delete p; });
  if (napi_type_tag_object(env, external, &tag) != napi_ok) throw Napi::Error::New(env, "Cannot tag the opened index");
  return external;
}

template <typename Index>
std::shared_ptr<Index> takeOpened(Napi::Env env, const Napi::Value& handle, const napi_type_tag& tag) {
  bool ours = false;
  if (!handle.IsExternal() || napi_check_object_type_tag(env, handle, &tag, &ours) != napi_ok || !ours) {
    throwInvalid(env, "Expected the handle of an opened index");
  }
  std::shared_ptr<Index>* opened = handle.As<Napi::External<std::shared_ptr<Index>>>().Data();
  if (!*opened) throwInvalid(env, "The opened index was taken already");
  return std::move(*opened);
}

// rowsOf(ids: BigUint64Array) -> Float64Array of rows, -1 for an id the index does not hold.
template <typename Index>
Napi::Value rowsOfValue(Napi::Env env, Index& index, const Napi::Value& idsArg) {
  const Napi::BigUint64Array ids = requireBigUint64(idsArg, "ids");
  const std::vector<uint64_t> copy(ids.Data(), ids.Data() + ids.ElementLength());
  std::vector<int64_t> rows(copy.size());
  index.rowsOf(copy.data(), copy.size(), rows.data());
  Napi::Float64Array out = Napi::Float64Array::New(env, rows.size());
  for (size_t i = 0; i < rows.size(); ++i) out[i] = static_cast<double>(rows[i]);
  return out;
}

// A search off the event loop for an index whose search takes (queries, count, params) with
// the allow bitset in params.allowBits / allowWords (IvfPqIndex, HnswIndex). The queries and
// the bitset are copied on the main thread, as an add's inputs are.
template <typename Index, typename Params, typename Filter = std::nullptr_t>
class ParamsSearchWorker : public PromiseWorker {
 public:
  // `filter` (attributes.h's SearchFilter) is evaluated by the search on its own state, for
  // indexes whose params take one (params.filter); std::nullptr_t for the others.
  ParamsSearchWorker(Napi::Env env, std::shared_ptr<Index> index, Napi::Float32Array queries, size_t count,
                     Params params, AllowArg allow, Filter filter = Filter{})
      : PromiseWorker(env),
        index_(std::move(index)),
        queries_(queries.Data(), queries.Data() + queries.ElementLength()),
        count_(count),
        params_(params),
        allow_(std::move(allow)),
        filter_(std::move(filter)) {}

 protected:
  void Run() override {
    params_.allowBits = allow_.bits();
    params_.allowWords = allow_.words();
    if constexpr (!std::is_same_v<Filter, std::nullptr_t>) params_.rowFilter = filter_.rowFilter();
    out_ = index_->search(queries_.data(), count_, params_);
  }
  Napi::Value Resolve(Napi::Env env) override { return searchResultObject(env, out_); }

 private:
  std::shared_ptr<Index> index_;
  std::vector<float> queries_;
  size_t count_;
  Params params_;
  AllowArg allow_;
  Filter filter_;
  SearchOutput out_;
};

}  // namespace ebrix::binding
