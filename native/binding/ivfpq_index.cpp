// JavaScript class IvfPqIndex over ebrix::IvfPqIndex (the CPU index); the class itself is
// ivfpq_wrap.h's, shared with the CUDA addon's GpuIvfPqIndex.
#include "ivfpq_index.h"

#include "../core/simd/dispatch.h"
#include "ivfpq_wrap.h"

namespace ebrix::binding {
namespace {

// The tag of opened IvfPqIndex handles (index_args.h, openedHandle).
const napi_type_tag kOpenedTag = {0x6562726978697666ull, 0x70712d6f70656e64ull};

struct CpuIvfPq {
  using Index = IvfPqIndex;
  static constexpr const char* kName = "IvfPqIndex";
  static constexpr bool kNativeAttributes = true;
  // Argument 7: a SIMD level name, or undefined for the default.
  static std::shared_ptr<IvfPqIndex> create(Napi::Env env, const IvfPqParams& params, const Napi::Value& simdArg,
                                            unsigned threads) {
    simd::Level level = simd::defaultLevel();
    if (simdArg.IsString()) {
      const std::string name = simdArg.As<Napi::String>().Utf8Value();
      if (!simd::parseLevel(name, &level)) {
        throwInvalid(env, "Expected 'scalar', 'avx2', 'avx512' or 'neon' for simd but received " + name);
      }
    }
    return std::make_shared<IvfPqIndex>(params, level, threads);
  }
  static std::shared_ptr<IvfPqIndex> adopt(Napi::Env env, const Napi::Value& handle) {
    return takeOpened<IvfPqIndex>(env, handle, kOpenedTag);
  }
  static size_t hostBytes(const IvfPqIndex& index) { return index.memory().total(); }
  // { bytes, codes, ids, centroids, refine, idMap }
  static Napi::Value memory(Napi::Env env, const IvfPqIndex& index) {
    Napi::Object out = Napi::Object::New(env);
    setIvfPqMemory(env, index.memory(), out);
    return out;
  }
};

class OpenWorker : public PromiseWorker {
 public:
  OpenWorker(Napi::Env env, std::string path, simd::Level level, unsigned threads)
      : PromiseWorker(env), path_(std::move(path)), level_(level), threads_(threads) {}

 protected:
  void Run() override { opened_ = IvfPqIndex::open(path_, level_, threads_); }
  Napi::Value Resolve(Napi::Env env) override {
    const IvfPqParams p = opened_.index->params();
    Napi::Object out = Napi::Object::New(env);
    out.Set("handle", openedHandle(env, std::shared_ptr<IvfPqIndex>(std::move(opened_.index)), kOpenedTag));
    out.Set("modelVersion", Napi::String::New(env, opened_.modelVersion));
    out.Set("dim", Napi::Number::New(env, static_cast<double>(p.dim)));
    out.Set("metric", Napi::String::New(env, metricName(p.metric)));
    out.Set("nlist", Napi::Number::New(env, static_cast<double>(p.nlist)));
    out.Set("m", Napi::Number::New(env, static_cast<double>(p.m)));
    out.Set("nbits", Napi::Number::New(env, p.nbits));
    out.Set("opq", Napi::Boolean::New(env, p.opq));
    out.Set("refine", Napi::String::New(env, p.refine == RefineStorage::None  ? "none"
                                             : p.refine == RefineStorage::F16 ? "f16"
                                                                              : "f32"));
    setOpenedAttributes(env, out, std::move(opened_.attributes));
    return out;
  }

 private:
  std::string path_;
  simd::Level level_;
  unsigned threads_;
  IvfPqIndex::Opened opened_;
};

// openIvfPqIndexAsync(path, simd | undefined, threads) -> { handle, modelVersion, dim, metric,
// nlist, m, nbits, opq, refine }; `new IvfPqIndex(handle)` takes the index.
Napi::Value openIvfPqIndexAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EBRIX_BOUNDARY(env, {
    if (!info[0].IsString()) throwInvalid(env, "Expected a string for path");
    simd::Level level = simd::defaultLevel();
    if (info[1].IsString()) {
      const std::string name = info[1].As<Napi::String>().Utf8Value();
      if (!simd::parseLevel(name, &level)) {
        throwInvalid(env, "Expected 'scalar', 'avx2', 'avx512' or 'neon' for simd but received " + name);
      }
    }
    const unsigned threads = static_cast<unsigned>(std::min<size_t>(requireCount(info[2], "threads"), 4096));
    return (new OpenWorker(env, info[0].As<Napi::String>().Utf8Value(), level, threads))->Start();
  })
}

}  // namespace

void initIvfPqIndex(Napi::Env env, Napi::Object exports) {
  exports.Set(CpuIvfPq::kName, IvfPqWrap<CpuIvfPq>::define(env));
  exports.Set("openIvfPqIndexAsync", Napi::Function::New(env, openIvfPqIndexAsync, "openIvfPqIndexAsync"));
}

}  // namespace ebrix::binding
