#include "sq.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "error.h"

namespace ebrix {

ScalarQuantizer ScalarQuantizer::train(const float* sample, size_t count, size_t dim) {
  if (count == 0 || dim == 0) {
    throw Error(ErrorCode::InvalidArgument, "Expected at least one vector to train the scalar quantizer on");
  }
  std::vector<float> lo(sample, sample + dim), hi(sample, sample + dim);
  for (size_t r = 1; r < count; ++r) {
    const float* x = sample + r * dim;
    for (size_t d = 0; d < dim; ++d) {
      lo[d] = std::min(lo[d], x[d]);
      hi[d] = std::max(hi[d], x[d]);
    }
  }
  ScalarQuantizer sq;
  sq.min_ = std::move(lo);
  sq.step_.resize(dim);
  for (size_t d = 0; d < dim; ++d) {
    // In double, so the step is the rounded quotient of the exact range, not of a rounded one.
    sq.step_[d] = static_cast<float>((static_cast<double>(hi[d]) - sq.min_[d]) / (kLevels - 1));
  }
  return sq;
}

void ScalarQuantizer::encode(const float* x, uint8_t* codes) const {
  const size_t n = min_.size();
  for (size_t d = 0; d < n; ++d) {
    const float step = step_[d];
    if (step == 0.0f) {
      codes[d] = 0;
      continue;
    }
    const double t = (static_cast<double>(x[d]) - min_[d]) / step;
    codes[d] = t <= 0.0 ? 0 : t >= kLevels - 1 ? kLevels - 1 : static_cast<uint8_t>(std::lround(t));
  }
}

void ScalarQuantizer::decode(const uint8_t* codes, float* x) const {
  const size_t n = min_.size();
  for (size_t d = 0; d < n; ++d) x[d] = min_[d] + static_cast<float>(codes[d]) * step_[d];
}

int ScalarQuantizer::queryLimit(size_t dim) {
  const size_t limit = static_cast<size_t>(std::numeric_limits<int32_t>::max()) / (size_t{kLevels - 1} * std::max<size_t>(dim, 1));
  return static_cast<int>(std::clamp<size_t>(limit, 1, 127));
}

I8Query ScalarQuantizer::prepareQuery(const float* q, int8_t* out, int maxMagnitude) const {
  const size_t n = min_.size();
  double offset = 0.0;
  float maxAbs = 0.0f;
  for (size_t d = 0; d < n; ++d) {
    offset += static_cast<double>(q[d]) * min_[d];
    maxAbs = std::max(maxAbs, std::fabs(q[d] * step_[d]));
  }
  I8Query prepared;
  prepared.offset = static_cast<float>(offset);
  if (maxAbs == 0.0f) {
    std::fill(out, out + n, int8_t{0});
    return prepared;
  }
  const int limit = std::clamp(std::min(queryLimit(n), maxMagnitude), 1, 127);
  // The inverse in double: a tiny maxAbs would make a float inverse infinite.
  const double inverse = limit / static_cast<double>(maxAbs);
  for (size_t d = 0; d < n; ++d) {
    const long rounded = std::lround(static_cast<double>(q[d] * step_[d]) * inverse);
    out[d] = static_cast<int8_t>(std::clamp<long>(rounded, -limit, limit));
  }
  prepared.scale = static_cast<float>(static_cast<double>(maxAbs) / limit);
  return prepared;
}

}  // namespace ebrix
