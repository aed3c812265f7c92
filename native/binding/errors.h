// The one boundary between core errors and JavaScript errors. No C++ exception crosses into
// N-API: every entry point runs its body inside EBRIX_BOUNDARY, and async workers record the
// error on the worker thread and reject their promise on the main thread.
#pragma once

#include <napi.h>

#include <new>
#include <string>

#include "../core/error.h"

namespace ebrix::binding {

struct ErrorInfo {
  std::string code;
  std::string message;
};

ErrorInfo describeCurrentException();
Napi::Error makeError(Napi::Env env, const ErrorInfo& info);
// Throws (as a JS exception) an EBRIX_INVALID_ARGUMENT error in the standard shape.
[[noreturn]] void throwInvalid(Napi::Env env, const std::string& message);

// Promise-returning worker: Run() executes off the event loop and may throw anything;
// Resolve() builds the result on the main thread.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  explicit PromiseWorker(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  // Queues the worker and returns its promise (the worker deletes itself when done).
  Napi::Value Start() {
    Napi::Promise promise = deferred_.Promise();
    Queue();
    return promise;
  }

 protected:
  virtual void Run() = 0;
  virtual Napi::Value Resolve(Napi::Env env) = 0;

 private:
  void Execute() final;
  void OnOK() final;
  void OnError(const Napi::Error& error) final;

  Napi::Promise::Deferred deferred_;
  ErrorInfo error_;
};

}  // namespace ebrix::binding

#define EBRIX_BOUNDARY(env, ...)                                                   \
  try {                                                                            \
    __VA_ARGS__                                                                    \
  } catch (const Napi::Error&) {                                                   \
    throw;                                                                         \
  } catch (...) {                                                                  \
    throw ::ebrix::binding::makeError(env, ::ebrix::binding::describeCurrentException()); \
  }
