#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace ebrix::test {

// Dimensions chosen to hit every tail and block boundary of the kernels.
inline const std::vector<size_t>& awkwardDims() {
  static const std::vector<size_t> dims = {1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 100, 784, 1536};
  return dims;
}

inline std::vector<float> randomVectors(size_t count, size_t dim, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(count * dim);
  for (auto& x : v) x = normal(rng);
  return v;
}

inline double dotRef(const float* a, const float* b, size_t dim) {
  double s = 0.0;
  for (size_t i = 0; i < dim; ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

inline double absDotRef(const float* a, const float* b, size_t dim) {
  double s = 0.0;
  for (size_t i = 0; i < dim; ++i) s += std::fabs(static_cast<double>(a[i]) * b[i]);
  return s;
}

// Float32 sums in any order stay within this of the exact value.
inline double sumTolerance(double magnitude, size_t dim) {
  return 1e-6 * (static_cast<double>(dim) + 4.0) * (magnitude + 1e-30);
}

}  // namespace ebrix::test
