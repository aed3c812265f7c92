// The JS shape of a search result, shared by the CPU and the GPU addons: { ids, scores },
// queries × k each, copied out of the core's SearchOutput.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "../core/exact_search.h"

namespace ebrix::binding {

// The largest nq × k a search may return (12 bytes each); lib/index/flat.ts has the same cap.
constexpr size_t kMaxResultEntries = size_t{1} << 27;

inline Napi::Object searchResultObject(Napi::Env env, const SearchOutput& out) {
  const size_t n = out.ids.size();
  auto ids = Napi::BigUint64Array::New(env, n);
  auto scores = Napi::Float32Array::New(env, n);
  if (n > 0) {
    std::memcpy(ids.Data(), out.ids.data(), n * sizeof(uint64_t));
    std::memcpy(scores.Data(), out.scores.data(), n * sizeof(float));
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("ids", ids);
  result.Set("scores", scores);
  return result;
}

}  // namespace ebrix::binding
