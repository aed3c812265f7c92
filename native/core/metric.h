#pragma once

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

}  // namespace ebrix
