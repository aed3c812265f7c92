// Process-level functions: SIMD levels, thread count, and the machine ceiling probes.
#include "machine.h"

#include <string>

#include "../core/machine_probe.h"
#include "../core/simd/dispatch.h"
#include "../core/thread_pool.h"
#include "errors.h"

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

// threadCount() -> the shared pool's size: the most native threads one job runs on.
Napi::Value threadCount(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), ThreadPool::shared().threadCount());
}

// setThreadCount(n): resizes the shared pool (lib/machine.ts has validated n; the core checks
// the range again). Safe while searches run: see thread_pool.h.
Napi::Value setThreadCount(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EBRIX_BOUNDARY(env, {
    if (!info[0].IsNumber()) throwInvalid(env, "Expected a number for threads");
    const double n = info[0].As<Napi::Number>().DoubleValue();
    if (!(n >= 1 && n <= ThreadPool::kMaxThreads) || n != static_cast<double>(static_cast<unsigned>(n))) {
      throwInvalid(env, "Expected an integer from 1 to " + std::to_string(ThreadPool::kMaxThreads) +
                            " for threads but received " + std::to_string(n));
    }
    ThreadPool::shared().resize(static_cast<unsigned>(n));
    return env.Undefined();
  })
}

// threadsEnvironmentError() -> why EBRIX_THREADS was not used ('' when it is unset or valid).
Napi::Value threadsEnvironmentError(const Napi::CallbackInfo& info) {
  unsigned threads = 0;
  std::string error;
  ThreadPool::threadsFromEnvironment(&threads, &error);
  return Napi::String::New(info.Env(), error);
}

class ProbeWorker : public PromiseWorker {
 public:
  enum class Kind { Fma, Read };
  ProbeWorker(Napi::Env env, Kind kind, unsigned threads, double amount)
      : PromiseWorker(env), kind_(kind), threads_(threads), amount_(amount) {}

 protected:
  void Run() override {
    const simd::Kernels& kernels = simd::kernelsFor(simd::bestLevel());
    result_ = kind_ == Kind::Fma ? measureFmaGflops(kernels, threads_, amount_)
                                 : measureReadGBps(kernels, threads_, static_cast<size_t>(amount_));
  }
  Napi::Value Resolve(Napi::Env env) override { return Napi::Number::New(env, result_); }

 private:
  Kind kind_;
  unsigned threads_;
  double amount_;
  double result_ = 0.0;
};

// measureFmaPeak(threads, seconds) -> Promise<GFLOP/s>
// measureReadBandwidth(threads, bytes) -> Promise<GB/s>
template <ProbeWorker::Kind kind>
Napi::Value probe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EBRIX_BOUNDARY(env, {
    if (!info[0].IsNumber() || !info[1].IsNumber()) throwInvalid(env, "Expected (threads, amount) numbers");
    const double threads = info[0].As<Napi::Number>().DoubleValue();
    const double amount = info[1].As<Napi::Number>().DoubleValue();
    if (!(threads >= 1 && threads <= 4096) || !(amount > 0)) throwInvalid(env, "Expected positive threads and amount");
    return (new ProbeWorker(env, kind, static_cast<unsigned>(threads), amount))->Start();
  })
}

}  // namespace

void initMachine(Napi::Env env, Napi::Object exports) {
  exports.Set("simdLevel", Napi::Function::New(env, simdLevel, "simdLevel"));
  exports.Set("supportedSimdLevels", Napi::Function::New(env, supportedSimdLevels, "supportedSimdLevels"));
  exports.Set("hardwareThreads", Napi::Function::New(env, hardwareThreads, "hardwareThreads"));
  exports.Set("threadCount", Napi::Function::New(env, threadCount, "threadCount"));
  exports.Set("setThreadCount", Napi::Function::New(env, setThreadCount, "setThreadCount"));
  exports.Set("threadsEnvironmentError", Napi::Function::New(env, threadsEnvironmentError, "threadsEnvironmentError"));
  exports.Set("measureFmaPeak", Napi::Function::New(env, probe<ProbeWorker::Kind::Fma>, "measureFmaPeak"));
  exports.Set("measureReadBandwidth", Napi::Function::New(env, probe<ProbeWorker::Kind::Read>, "measureReadBandwidth"));
}

}  // namespace ebrix::binding
