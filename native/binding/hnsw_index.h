#pragma once

#include <napi.h>

namespace ebrix::binding {

void initHnswIndex(Napi::Env env, Napi::Object exports);

}  // namespace ebrix::binding
