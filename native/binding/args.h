// Argument checks shared by the binding's entry points. lib/ validates first with friendlier
// messages; these re-check what memory safety depends on, and throw EBRIX_INVALID_ARGUMENT
// (EBRIX_DIM_MISMATCH for a length that is not a whole number of rows).
#pragma once

#include <napi.h>

#include <cstddef>

namespace ebrix::binding {

Napi::Float32Array requireFloat32(const Napi::Value& v, const char* name);
Napi::BigUint64Array requireBigUint64(const Napi::Value& v, const char* name);
Napi::Uint32Array requireUint32(const Napi::Value& v, const char* name);

// A non-negative safe integer (below 2^53, so the conversion is exact and defined).
size_t requireCount(const Napi::Value& v, const char* name);

// `vectors` holds `count` rows of `dim` floats, else EBRIX_DIM_MISMATCH.
void requireRows(const Napi::Float32Array& vectors, size_t count, size_t dim);
// `queries` holds a whole, non-zero number of rows of `dim` floats (else EBRIX_DIM_MISMATCH);
// returns that number.
size_t requireQueryRows(const Napi::Float32Array& queries, size_t dim);

// An optional number / count property of an options object, `fallback` when absent.
double numberOption(const Napi::Object& options, const char* name, double fallback);
size_t countOption(const Napi::Object& options, const char* name, size_t fallback);

}  // namespace ebrix::binding
