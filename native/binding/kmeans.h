#pragma once

#include <napi.h>

namespace ebrix::binding {

void initKMeans(Napi::Env env, Napi::Object exports);

}  // namespace ebrix::binding
