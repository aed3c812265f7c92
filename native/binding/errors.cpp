#include "errors.h"

namespace ebrix::binding {

ErrorInfo describeCurrentException() {
  try {
    throw;
  } catch (const ebrix::Error& e) {
    return {e.codeName(), e.what()};
  } catch (const std::bad_alloc&) {
    return {"EBRIX_OUT_OF_MEMORY", "Out of memory"};
  } catch (const std::exception& e) {
    return {"EBRIX_INTERNAL", e.what()};
  } catch (...) {
    return {"EBRIX_INTERNAL", "Unknown native error"};
  }
}

Napi::Error makeError(Napi::Env env, const ErrorInfo& info) {
  Napi::Error error = Napi::Error::New(env, info.message);
  error.Set("code", Napi::String::New(env, info.code));
  return error;
}

void throwInvalid(Napi::Env env, const std::string& message) {
  throw makeError(env, {"EBRIX_INVALID_ARGUMENT", message});
}

void PromiseWorker::Execute() {
  try {
    Run();
  } catch (...) {
    error_ = describeCurrentException();
    // node-addon-api treats an empty error message as success.
    if (error_.message.empty()) error_.message = "Native error (" + error_.code + ")";
    SetError(error_.message);
  }
}

void PromiseWorker::OnOK() {
  Napi::Env env = Env();
  try {
    deferred_.Resolve(Resolve(env));
  } catch (const Napi::Error& e) {
    deferred_.Reject(e.Value());
  } catch (...) {
    deferred_.Reject(makeError(env, describeCurrentException()).Value());
  }
}

void PromiseWorker::OnError(const Napi::Error&) {
  deferred_.Reject(makeError(Env(), error_).Value());
}

}  // namespace ebrix::binding
