#pragma once

#include <napi.h>

namespace ebrix::binding {

void initMachine(Napi::Env env, Napi::Object exports);

}  // namespace ebrix::binding
