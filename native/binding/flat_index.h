#pragma once

#include <napi.h>

namespace ebrix::binding {

void initFlatIndex(Napi::Env env, Napi::Object exports);

}  // namespace ebrix::binding
