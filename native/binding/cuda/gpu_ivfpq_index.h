#pragma once

#include <napi.h>

namespace ebrix::binding {

void initGpuIvfPqIndex(Napi::Env env, Napi::Object exports);

}  // namespace ebrix::binding
