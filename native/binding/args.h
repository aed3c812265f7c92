// Argument checks shared by the binding's entry points. lib/ validates first with friendlier
// messages; these re-check what memory safety depends on, and throw EBRIX_INVALID_ARGUMENT.
#pragma once

#include <napi.h>

#include <cstddef>

namespace ebrix::binding {

Napi::Float32Array requireFloat32(const Napi::Value& v, const char* name);
Napi::BigUint64Array requireBigUint64(const Napi::Value& v, const char* name);

// A non-negative safe integer (below 2^53, so the conversion is exact and defined).
size_t requireCount(const Napi::Value& v, const char* name);

// An optional number / count property of an options object, `fallback` when absent.
double numberOption(const Napi::Object& options, const char* name, double fallback);
size_t countOption(const Napi::Object& options, const char* name, size_t fallback);

}  // namespace ebrix::binding
