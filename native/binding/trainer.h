#pragma once

#include <napi.h>

namespace ebrix::binding {

void initTrainer(Napi::Env env, Napi::Object exports);

}  // namespace ebrix::binding
