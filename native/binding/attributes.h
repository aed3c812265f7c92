#pragma once

#include <napi.h>

namespace ebrix::binding {

void initAttributeTable(Napi::Env env, Napi::Object exports);

}  // namespace ebrix::binding
