// Every kernel of every ISA this CPU supports, against the scalar reference and a double
// precision sum, over awkward dimensions.
#include <algorithm>
#include <limits>
#include <string>

#include "../simd/dispatch.h"
#include "check.h"
#include "test_util.h"

using namespace ebrix;
using namespace ebrix::test;

TEST_CASE("kernels.dot_and_l2sq_match_reference") {
  for (simd::Level level : simd::supportedLevels()) {
    const simd::Kernels& k = simd::kernelsFor(level);
    for (size_t dim : awkwardDims()) {
      const auto a = randomVectors(1, dim, 1 + static_cast<uint32_t>(dim));
      const auto b = randomVectors(1, dim, 1000 + static_cast<uint32_t>(dim));
      const double exactDot = dotRef(a.data(), b.data(), dim);
      const double tolDot = sumTolerance(absDotRef(a.data(), b.data(), dim), dim);
      CHECK_MSG(std::fabs(k.dot(a.data(), b.data(), dim) - exactDot) <= tolDot,
                k.name << " dot dim " << dim);
      double exactL2 = 0.0;
      for (size_t i = 0; i < dim; ++i) exactL2 += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
      CHECK_MSG(std::fabs(k.l2sq(a.data(), b.data(), dim) - exactL2) <= sumTolerance(exactL2, dim),
                k.name << " l2sq dim " << dim);
      const float scalarDot = simd::scalarKernels().dot(a.data(), b.data(), dim);
      CHECK_MSG(std::fabs(k.dot(a.data(), b.data(), dim) - scalarDot) <= 2 * tolDot,
                k.name << " vs scalar dim " << dim);
    }
  }
}

TEST_CASE("kernels.scan_rows_matches_dot") {
  for (simd::Level level : simd::supportedLevels()) {
    const simd::Kernels& k = simd::kernelsFor(level);
    for (size_t dim : awkwardDims()) {
      for (size_t count : {size_t{1}, size_t{3}, size_t{4}, size_t{5}, size_t{9}, size_t{37}}) {
        const auto q = randomVectors(1, dim, 7);
        const auto rows = randomVectors(count, dim, 8 + static_cast<uint32_t>(count));
        const auto bias = randomVectors(1, count, 9);
        std::vector<float> scores(count), biased(count);
        k.scanRows(q.data(), rows.data(), count, dim, nullptr, scores.data());
        k.scanRows(q.data(), rows.data(), count, dim, bias.data(), biased.data());
        for (size_t r = 0; r < count; ++r) {
          const float* x = rows.data() + r * dim;
          const double tol = sumTolerance(absDotRef(q.data(), x, dim), dim);
          CHECK_MSG(std::fabs(scores[r] - dotRef(q.data(), x, dim)) <= tol,
                    k.name << " dim " << dim << " row " << r);
          CHECK_MSG(std::fabs(biased[r] - (dotRef(q.data(), x, dim) + bias[r])) <= tol + 1e-6,
                    k.name << " biased dim " << dim << " row " << r);
        }
      }
    }
  }
}

TEST_CASE("kernels.tile_matches_dot_and_thresholds") {
  for (simd::Level level : simd::supportedLevels()) {
    const simd::Kernels& k = simd::kernelsFor(level);
    const int mr = k.tileRows, nr = k.tileCols;
    for (size_t dim : awkwardDims()) {
      const auto queries = randomVectors(mr, dim, 11 + static_cast<uint32_t>(dim));
      const auto rows = randomVectors(nr, dim, 12 + static_cast<uint32_t>(dim));
      const auto bias = randomVectors(1, nr, 13);
      std::vector<float> packedQ(dim * mr), packedX(dim * nr + nr);
      for (int i = 0; i < mr; ++i)
        for (size_t d = 0; d < dim; ++d) packedQ[d * mr + i] = queries[i * dim + d];
      for (int j = 0; j < nr; ++j)
        for (size_t d = 0; d < dim; ++d) packedX[d * nr + j] = rows[j * dim + d];
      for (int j = 0; j < nr; ++j) packedX[dim * nr + j] = bias[j];
      for (int count = 1; count <= mr; ++count) {
        std::vector<float> thresholds(count), out(simd::kMaxTileRows * simd::kMaxTileCols);
        std::vector<uint32_t> masks(count);
        for (int i = 0; i < count; ++i) thresholds[i] = (i % 3 == 0) ? -std::numeric_limits<float>::infinity() : 0.0f;
        k.tile(packedQ.data(), count, packedX.data(), dim, thresholds.data(), out.data(), masks.data());
        for (int i = 0; i < count; ++i) {
          for (int j = 0; j < nr; ++j) {
            const float* q = queries.data() + i * dim;
            const float* x = rows.data() + j * dim;
            const double expected = dotRef(q, x, dim) + bias[j];
            const float got = out[i * nr + j];
            CHECK_MSG(std::fabs(got - expected) <= sumTolerance(absDotRef(q, x, dim), dim) + 1e-6,
                      k.name << " dim " << dim << " tile " << i << "," << j);
            const bool bit = (masks[i] >> j) & 1u;
            CHECK_MSG(bit == (got >= thresholds[i]), k.name << " mask dim " << dim);
          }
        }
      }
    }
  }
}

TEST_CASE("dispatch.levels_and_names") {
  const auto levels = simd::supportedLevels();
  CHECK(!levels.empty());
  CHECK(levels.front() == simd::Level::Scalar);
  CHECK(simd::bestLevel() == levels.back());
  for (simd::Level level : levels) {
    simd::Level parsed;
    CHECK(simd::parseLevel(simd::levelName(level), &parsed));
    CHECK(parsed == level);
    CHECK(simd::kernelsFor(level).level == level);
  }
  simd::Level unused;
  CHECK(!simd::parseLevel("sse9", &unused));
}

TEST_CASE("kernels.pack_panel_equals_plain_transpose") {
  for (simd::Level level : simd::supportedLevels()) {
    const simd::Kernels& k = simd::kernelsFor(level);
    if (k.packPanel == nullptr) continue;  // this ISA uses the generic loop
    const size_t nr = static_cast<size_t>(k.tileCols);
    for (size_t dim : awkwardDims()) {
      const auto rows = randomVectors(nr, dim, 31 + static_cast<uint32_t>(dim));
      std::vector<float> packed(dim * nr, -1.0f);
      k.packPanel(rows.data(), dim, packed.data());
      for (size_t j = 0; j < nr; ++j)
        for (size_t d = 0; d < dim; ++d)
          CHECK_MSG(packed[d * nr + j] == rows[j * dim + d], k.name << " dim " << dim << " at " << j << "," << d);
    }
  }
}
