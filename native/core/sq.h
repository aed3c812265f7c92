// ScalarQuantizer: the codec of FlatIndex storage 'i8'. One range [min_d, max_d] per
// dimension, trained as the sample's minimum and maximum; a value x of dimension d is stored
// as the byte
//   c = round((x - min_d) / step_d), clamped to 0..255,   step_d = (max_d - min_d) / 255,
// and decodes to min_d + c * step_d. Inside the trained range that is within step_d / 2 of x
// (plus float rounding). A value outside it clamps to the nearer end of the range: its error
// is its distance to the range plus at most step_d / 2. No margin is added around the
// sample's range: a margin would cost every value resolution to spare only the rare value
// past the sample's extremes, whose clamping error starts at zero and grows only with how
// far it lies out. A dimension constant over the sample (step 0) decodes to that constant.
//
// Scoring without decoding: for a float query q,
//   q · decode(c) = sum_d q_d min_d + sum_d (q_d step_d) c_d.
// The first sum is a per-query constant (`offset`). The weights w_d = q_d step_d are rounded
// to signed bytes with one per-query scale (symmetric, round to nearest), so the second sum
// becomes `scale` times an exact integer dot product of unsigned codes and signed bytes
// (simd::KernelsI8): u8 × s8 products accumulated in int32, as VNNI's vpdpbusd computes them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ebrix {

// A query prepared for the integer scan: score ≈ scale * dot(codes, query) + offset.
struct I8Query {
  float scale = 0.0f;
  float offset = 0.0f;
};

class ScalarQuantizer {
 public:
  static constexpr int kLevels = 256;

  // Per-dimension minimum and maximum of `count` (>= 1) rows of `dim` finite floats.
  static ScalarQuantizer train(const float* sample, size_t count, size_t dim);

  // A quantizer with the given per-dimension minimums and steps (an index file's); the
  // caller has checked they are finite and the steps non-negative.
  static ScalarQuantizer fromRanges(const float* mins, const float* steps, size_t dim) {
    ScalarQuantizer sq;
    sq.min_.assign(mins, mins + dim);
    sq.step_.assign(steps, steps + dim);
    return sq;
  }

  size_t dim() const { return min_.size(); }
  const float* mins() const { return min_.data(); }
  const float* steps() const { return step_.data(); }

  void encode(const float* x, uint8_t* codes) const;
  void decode(const uint8_t* codes, float* x) const;

  // Rounds the weights q_d * step_d to signed bytes of magnitude at most queryLimit(dim) in
  // `out` (dim bytes) and returns the scale and offset that turn their integer dot with a
  // row's codes into an approximation of q · decode(row). The rounding error of a weight is
  // at most scale / 2, so the approximation is within scale / 2 * sum_d c_d of the decoded
  // product. A zero query (or zero range) gives zero bytes and scale 0. `maxMagnitude` caps
  // the bytes further (kSmallQueryLimit for KernelsI8::scanRowsSmallQuery).
  I8Query prepareQuery(const float* q, int8_t* out, int maxMagnitude = 127) const;

  // The largest query byte magnitude for which 255 × |q| × dim, the largest possible
  // |dot|, fits int32: 127 up to dim 66311, less beyond (8 at dim 2^20).
  static int queryLimit(size_t dim);

  size_t memoryBytes() const { return (min_.capacity() + step_.capacity()) * sizeof(float); }

 private:
  std::vector<float> min_;
  std::vector<float> step_;
};

}  // namespace ebrix
