#pragma once

#include <napi.h>

namespace ebrix::binding {

void initGpuFlatIndex(Napi::Env env, Napi::Object exports);

// A CUDA device ordinal argument: a count small enough for an int, else EBRIX_INVALID_ARGUMENT.
int requireDevice(const Napi::Value& v);

}  // namespace ebrix::binding
