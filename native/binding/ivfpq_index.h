#pragma once

#include <napi.h>

namespace ebrix::binding {

void initIvfPqIndex(Napi::Env env, Napi::Object exports);

}  // namespace ebrix::binding
