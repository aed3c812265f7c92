#include "args.h"

#include <cmath>
#include <string>

#include "errors.h"

namespace ebrix::binding {

Napi::Float32Array requireFloat32(const Napi::Value& v, const char* name) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    throwInvalid(v.Env(), std::string("Expected a Float32Array for ") + name);
  }
  return v.As<Napi::Float32Array>();
}

Napi::BigUint64Array requireBigUint64(const Napi::Value& v, const char* name) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array) {
    throwInvalid(v.Env(), std::string("Expected a BigUint64Array for ") + name);
  }
  return v.As<Napi::TypedArray>().As<Napi::BigUint64Array>();
}

Napi::Uint32Array requireUint32(const Napi::Value& v, const char* name) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) {
    throwInvalid(v.Env(), std::string("Expected a Uint32Array for ") + name);
  }
  return v.As<Napi::Uint32Array>();
}

size_t requireCount(const Napi::Value& v, const char* name) {
  if (!v.IsNumber()) throwInvalid(v.Env(), std::string("Expected a number for ") + name);
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 9007199254740991.0) || d != std::floor(d)) {
    throwInvalid(v.Env(), std::string("Expected a non-negative safe integer for ") + name);
  }
  return static_cast<size_t>(d);
}

void requireRows(const Napi::Float32Array& vectors, size_t count, size_t dim) {
  if (vectors.ElementLength() != count * dim) {
    throw makeError(vectors.Env(), {"EBRIX_DIM_MISMATCH", "Expected " + std::to_string(count * dim) +
                                                              " floats for vectors (" + std::to_string(count) +
                                                              " ids × dim " + std::to_string(dim) + ") but received " +
                                                              std::to_string(vectors.ElementLength())});
  }
}

size_t requireQueryRows(const Napi::Float32Array& queries, size_t dim) {
  const size_t floats = queries.ElementLength();
  if (floats == 0 || floats % dim != 0) {
    throw makeError(queries.Env(), {"EBRIX_DIM_MISMATCH", "Expected a multiple of dim " + std::to_string(dim) +
                                                              " floats for queries but received " +
                                                              std::to_string(floats)});
  }
  return floats / dim;
}

double numberOption(const Napi::Object& options, const char* name, double fallback) {
  const Napi::Value v = options.Get(name);
  if (v.IsUndefined()) return fallback;
  if (!v.IsNumber()) throwInvalid(options.Env(), std::string("Expected a number for ") + name);
  return v.As<Napi::Number>().DoubleValue();
}

size_t countOption(const Napi::Object& options, const char* name, size_t fallback) {
  const Napi::Value v = options.Get(name);
  return v.IsUndefined() ? fallback : requireCount(v, name);
}

}  // namespace ebrix::binding
