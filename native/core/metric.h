#pragma once

#include <cmath>
#include <cstddef>
#include <string>

namespace ebrix {

// Higher score is better for every metric: `ip` and `cosine` score the inner product (of
// normalised vectors for cosine), `l2` scores the negative squared Euclidean distance.
enum class Metric { InnerProduct, Cosine, L2 };

inline const char* metricName(Metric m) {
  switch (m) {
    case Metric::InnerProduct: return "ip";
    case Metric::Cosine: return "cosine";
    case Metric::L2: return "l2";
  }
  return "ip";
}

inline bool parseMetric(const std::string& name, Metric* out) {
  if (name == "ip") *out = Metric::InnerProduct;
  else if (name == "cosine") *out = Metric::Cosine;
  else if (name == "l2") *out = Metric::L2;
  else return false;
  return true;
}

// Scales each of `count` rows of `dim` floats to unit length (cosine's preparation; the
// norm is summed in double). A zero row stays zero: its cosine with anything is scored 0.
// dst may be src.
inline void normalizeRows(const float* src, float* dst, size_t count, size_t dim) {
  for (size_t r = 0; r < count; ++r) {
    const float* x = src + r * dim;
    double sum = 0.0;
    for (size_t i = 0; i < dim; ++i) sum += static_cast<double>(x[i]) * x[i];
    const float scale = sum > 0.0 ? static_cast<float>(1.0 / std::sqrt(sum)) : 0.0f;
    float* y = dst + r * dim;
    for (size_t i = 0; i < dim; ++i) y[i] = x[i] * scale;
  }
}

}  // namespace ebrix
