// Module entry: process-level functions and the exported classes.
#include <napi.h>

#include "../core/simd/dispatch.h"
#include "../core/thread_pool.h"
#include "errors.h"
#include "flat_index.h"

namespace ebrix::binding {
namespace {

// The level a new index uses by default (EBRIX_SIMD if set, else the best supported).
Napi::Value simdLevel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EBRIX_BOUNDARY(env, { return Napi::String::New(env, simd::levelName(simd::defaultLevel())); })
}

Napi::Value supportedSimdLevels(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto levels = simd::supportedLevels();
  Napi::Array out = Napi::Array::New(env, levels.size());
  for (size_t i = 0; i < levels.size(); ++i) out.Set(static_cast<uint32_t>(i), simd::levelName(levels[i]));
  return out;
}

Napi::Value hardwareThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), ThreadPool::hardwareThreads());
}

Napi::Object init(Napi::Env env, Napi::Object exports) {
  exports.Set("simdLevel", Napi::Function::New(env, simdLevel, "simdLevel"));
  exports.Set("supportedSimdLevels", Napi::Function::New(env, supportedSimdLevels, "supportedSimdLevels"));
  exports.Set("hardwareThreads", Napi::Function::New(env, hardwareThreads, "hardwareThreads"));
  initFlatIndex(env, exports);
  return exports;
}

}  // namespace
}  // namespace ebrix::binding

static Napi::Object initEbrix(Napi::Env env, Napi::Object exports) {
  return ebrix::binding::init(env, exports);
}

NODE_API_MODULE(ebrix, initEbrix)
