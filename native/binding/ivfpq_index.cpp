// JavaScript class IvfPqIndex over ebrix::IvfPqIndex (the CPU index); the class itself is
// ivfpq_wrap.h's, shared with the CUDA addon's GpuIvfPqIndex.
#include "ivfpq_index.h"

#include "../core/simd/dispatch.h"
#include "ivfpq_wrap.h"

namespace ebrix::binding {
namespace {

struct CpuIvfPq {
  using Index = IvfPqIndex;
  static constexpr const char* kName = "IvfPqIndex";
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
  // { bytes, codes, ids, centroids, refine, idMap }
  static Napi::Value memory(Napi::Env env, const IvfPqIndex& index) {
    Napi::Object out = Napi::Object::New(env);
    setIvfPqMemory(env, index.memory(), out);
    return out;
  }
};

}  // namespace

void initIvfPqIndex(Napi::Env env, Napi::Object exports) {
  exports.Set(CpuIvfPq::kName, IvfPqWrap<CpuIvfPq>::define(env));
}

}  // namespace ebrix::binding
