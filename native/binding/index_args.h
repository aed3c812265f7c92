// Argument handling shared by the index classes of both addons (FlatIndex, IvfPqIndex,
// HnswIndex and the CUDA addon's GpuFlatIndex): adds, and allow bitsets.
#pragma once

#include <napi.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "args.h"
#include "errors.h"

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

// An add off the event loop. The inputs are copied on the main thread: a reference keeps the
// typed array object alive but not its memory (the caller may transfer or detach the buffer
// while the add runs), and validating and then reading a buffer the caller can still write
// would not be all-or-nothing.
template <class Index>
class AddWorker : public PromiseWorker {
 public:
  AddWorker(Napi::Env env, std::shared_ptr<Index> index, const AddArgs& args)
      : PromiseWorker(env),
        index_(std::move(index)),
        ids_(args.ids.Data(), args.ids.Data() + args.ids.ElementLength()),
        vectors_(args.vectors.Data(), args.vectors.Data() + args.vectors.ElementLength()),
        count_(args.count) {}

 protected:
  void Run() override { index_->add(ids_.data(), vectors_.data(), count_); }
  Napi::Value Resolve(Napi::Env env) override { return env.Undefined(); }

 private:
  std::shared_ptr<Index> index_;
  std::vector<uint64_t> ids_;
  std::vector<float> vectors_;
  size_t count_;
};

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

}  // namespace ebrix::binding
