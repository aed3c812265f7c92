// Every kernel of every ISA this CPU supports, against the scalar reference and a double
// precision sum, over awkward dimensions.
#include <algorithm>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "../simd/dispatch.h"
#include "../simd/half.h"
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
        // Both the streaming scan and the cached-rows variant (four rows at a time).
        for (const simd::ScanRowsFn scan : {k.scanRows, simd::scanRowsCachedOr(k)}) {
          std::vector<float> scores(count), biased(count);
          scan(q.data(), rows.data(), count, dim, nullptr, scores.data());
          scan(q.data(), rows.data(), count, dim, bias.data(), biased.data());
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

// ---- 16-bit rows (f16 / bf16) ----

namespace {

struct HalfType {
  simd::Element element;
  const char* name;
  uint16_t (*narrow)(float);
  float (*widen)(uint16_t);
};

const HalfType kHalfTypes[] = {
    {simd::Element::F16, "f16", simd::floatToF16, simd::f16ToFloat},
    {simd::Element::BF16, "bf16", simd::floatToBf16, simd::bf16ToFloat},
};

const simd::Kernels16& halfKernelsOf(const simd::Kernels& k, simd::Element e) {
  return e == simd::Element::F16 ? k.f16 : k.bf16;
}

std::vector<uint16_t> narrowAll(const HalfType& t, const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = t.narrow(v[i]);
  return out;
}

std::vector<float> widenAll(const HalfType& t, const std::vector<uint16_t>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = t.widen(v[i]);
  return out;
}

// Values that exercise every rounding case: random magnitudes over the whole f16 range and
// beyond, subnormals, exact ties between neighbours, and the edge of f16's range.
std::vector<float> conversionProbes() {
  std::vector<float> v;
  std::mt19937 rng(77);
  std::uniform_real_distribution<float> mantissa(1.0f, 2.0f);
  std::uniform_int_distribution<int> exponent(-30, 20);
  for (int i = 0; i < 20000; ++i) {
    const float x = std::ldexp(mantissa(rng), exponent(rng));
    v.push_back(i % 2 ? x : -x);
  }
  for (uint32_t h = 0; h < 0x7C00u; h += 7) {  // f16 midpoints (ties) and neighbours
    const float a = simd::f16ToFloat(static_cast<uint16_t>(h)), b = simd::f16ToFloat(static_cast<uint16_t>(h + 1));
    v.push_back(a);
    v.push_back(0.5f * (a + b));
    v.push_back(std::nextafter(0.5f * (a + b), 0.0f));
    v.push_back(-std::nextafter(0.5f * (a + b), 1e30f));
  }
  for (uint32_t b = 0; b < 0x7F80u; b += 13) {  // bf16 ties
    const float lo = simd::bf16ToFloat(static_cast<uint16_t>(b)), hi = simd::bf16ToFloat(static_cast<uint16_t>(b + 1));
    v.push_back(0.5f * lo + 0.5f * hi);
  }
  for (float x : {0.0f, -0.0f, 1.0f, 65504.0f, 65519.0f, 65520.0f, 70000.0f, 1e-45f, 5.9604645e-8f, 2.9802322e-8f,
                  6.1035156e-5f, 6.1031e-5f, 1e18f, -1e18f}) {
    v.push_back(x);
  }
  return v;
}

}  // namespace

TEST_CASE("half.scalar_conversions_round_to_nearest_even") {
  // Known bit patterns.
  CHECK(simd::floatToF16(1.0f) == 0x3C00u);
  CHECK(simd::floatToF16(-2.0f) == 0xC000u);
  CHECK(simd::floatToF16(-0.0f) == 0x8000u);
  CHECK(simd::floatToF16(65504.0f) == 0x7BFFu);
  CHECK(simd::floatToF16(65519.996f) == 0x7BFFu);
  CHECK(simd::floatToF16(65520.0f) == 0x7C00u);  // the tie goes to even: infinity
  CHECK(simd::floatToF16(-1e9f) == 0xFC00u);
  CHECK(simd::floatToF16(std::ldexp(1.0f, -24)) == 0x0001u);  // smallest subnormal
  CHECK(simd::floatToF16(std::ldexp(1.0f, -25)) == 0x0000u);  // tie with 0: even
  CHECK(simd::floatToF16(std::ldexp(3.0f, -25)) == 0x0002u);  // 1.5 units: tie to even 2
  CHECK(simd::floatToF16(std::ldexp(5.0f, -25)) == 0x0002u);  // 2.5 units: tie to even 2
  CHECK(simd::floatToF16(std::ldexp(1.0f, -14)) == 0x0400u);  // smallest normal
  CHECK(simd::floatToF16(std::ldexp(2047.0f, -25)) == 0x0400u);  // subnormal rounding up to it
  CHECK(simd::floatToF16(1.0f + std::ldexp(1.0f, -11)) == 0x3C00u);  // tie: even
  CHECK(simd::floatToF16(1.0f + std::ldexp(3.0f, -11)) == 0x3C02u);  // tie: even
  CHECK(simd::f16ToFloat(0x0001u) == std::ldexp(1.0f, -24));
  CHECK(simd::f16ToFloat(0x7BFFu) == 65504.0f);
  CHECK(std::isinf(simd::f16ToFloat(0x7C00u)));
  CHECK(simd::floatToBf16(1.0f) == 0x3F80u);
  CHECK(simd::floatToBf16(1.0f + std::ldexp(1.0f, -8)) == 0x3F80u);  // tie: even
  CHECK(simd::floatToBf16(1.0f + std::ldexp(3.0f, -8)) == 0x3F82u);  // tie: even
  CHECK(simd::floatToBf16(std::ldexp(1.0f, -133)) == 0x0001u);     // subnormal, exact
  CHECK(simd::bf16ToFloat(simd::floatToBf16(65536.0f)) == 65536.0f);
  // Every finite value survives a round trip.
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    if ((h & 0x7C00u) != 0x7C00u) CHECK_MSG(simd::floatToF16(simd::f16ToFloat(bits)) == bits, "f16 " << h);
    if ((h & 0x7F80u) != 0x7F80u) CHECK_MSG(simd::floatToBf16(simd::bf16ToFloat(bits)) == bits, "bf16 " << h);
  }
  // Nearest, ties to even: no neighbour of the result is closer.
  for (const HalfType& t : kHalfTypes) {
    for (float x : conversionProbes()) {
      const uint16_t h = t.narrow(x);
      const double v = t.widen(h);
      if (std::isinf(v)) {
        CHECK_MSG(t.element == simd::Element::F16 && std::fabs(x) >= 65520.0f, t.name << " inf for " << x);
        continue;
      }
      CHECK_MSG(std::fabs(x) < 65520.0f || t.element == simd::Element::BF16, t.name << " finite for " << x);
      const double error = std::fabs(v - x);
      for (int step : {-1, 1}) {
        const uint16_t magnitude = h & 0x7FFFu;
        if (magnitude == 0 && step < 0) continue;
        const uint16_t neighbour = static_cast<uint16_t>((h & 0x8000u) | (magnitude + step));
        const double other = t.widen(neighbour);
        if (std::isinf(other)) continue;
        const double otherError = std::fabs(other - x);
        CHECK_MSG(error <= otherError, t.name << " not nearest for " << x);
        if (error == otherError) CHECK_MSG((h & 1u) == 0, t.name << " tie not even for " << x);
      }
    }
  }
}

TEST_CASE("half.isa_conversions_equal_scalar") {
  const std::vector<float> probes = conversionProbes();
  for (simd::Level level : simd::supportedLevels()) {
    const simd::Kernels& k = simd::kernelsFor(level);
    for (const HalfType& t : kHalfTypes) {
      const simd::Kernels16& h = halfKernelsOf(k, t.element);
      // Odd offsets and lengths hit every tail of the vector loops.
      for (size_t offset : {size_t{0}, size_t{3}}) {
        for (size_t n : {size_t{1}, size_t{7}, size_t{8}, size_t{9}, size_t{17}, probes.size() - 3}) {
          std::vector<uint16_t> bits(n, 0xABCDu);
          h.fromFloat(probes.data() + offset, bits.data(), n);
          std::vector<float> back(n, -1.0f);
          h.toFloat(bits.data(), back.data(), n);
          for (size_t i = 0; i < n; ++i) {
            const uint16_t expected = t.narrow(probes[offset + i]);
            CHECK_MSG(bits[i] == expected, k.name << " " << t.name << " fromFloat " << probes[offset + i]);
            const float widened = t.widen(bits[i]);
            CHECK_MSG(std::memcmp(&back[i], &widened, sizeof(float)) == 0, k.name << " " << t.name << " toFloat");
          }
        }
      }
    }
  }
}

TEST_CASE("half.kernels_match_reference_every_isa") {
  for (simd::Level level : simd::supportedLevels()) {
    const simd::Kernels& k = simd::kernelsFor(level);
    for (const HalfType& t : kHalfTypes) {
      const simd::Kernels16& h = halfKernelsOf(k, t.element);
      const simd::Kernels16& scalar = halfKernelsOf(simd::scalarKernels(), t.element);
      const std::string what = std::string(k.name) + " " + t.name;
      for (size_t dim : awkwardDims()) {
        // The query is rounded too, as FlatIndex does; the reference works on widened values.
        const auto q = widenAll(t, narrowAll(t, randomVectors(1, dim, 3 + static_cast<uint32_t>(dim))));
        for (size_t count : {size_t{1}, size_t{5}, size_t{37}}) {
          const auto bits = narrowAll(t, randomVectors(count, dim, 4 + static_cast<uint32_t>(dim + count)));
          const auto rows = widenAll(t, bits);
          const auto bias = randomVectors(1, count, 9);
          std::vector<float> scores(count), biased(count);
          h.scanRows(q.data(), bits.data(), count, dim, nullptr, scores.data());
          h.scanRows(q.data(), bits.data(), count, dim, bias.data(), biased.data());
          for (size_t r = 0; r < count; ++r) {
            const float* x = rows.data() + r * dim;
            const uint16_t* xb = bits.data() + r * dim;
            const double tol = sumTolerance(absDotRef(q.data(), x, dim), dim);
            const double exactDot = dotRef(q.data(), x, dim);
            CHECK_MSG(std::fabs(h.dot(q.data(), xb, dim) - exactDot) <= tol, what << " dot dim " << dim);
            CHECK_MSG(std::fabs(h.dot(q.data(), xb, dim) - scalar.dot(q.data(), xb, dim)) <= 2 * tol,
                      what << " dot vs scalar dim " << dim);
            CHECK_MSG(std::fabs(scores[r] - exactDot) <= tol, what << " scan dim " << dim << " row " << r);
            CHECK_MSG(std::fabs(biased[r] - (exactDot + bias[r])) <= tol + 1e-6, what << " biased scan dim " << dim);
            double exactL2 = 0.0;
            for (size_t i = 0; i < dim; ++i) exactL2 += (double(q[i]) - x[i]) * (double(q[i]) - x[i]);
            CHECK_MSG(std::fabs(h.l2sq(q.data(), xb, dim) - exactL2) <= sumTolerance(exactL2, dim),
                      what << " l2sq dim " << dim);
            CHECK_MSG(std::fabs(h.l2sq(q.data(), xb, dim) - scalar.l2sq(q.data(), xb, dim)) <= 2 * sumTolerance(exactL2, dim),
                      what << " l2sq vs scalar dim " << dim);
          }
        }
        if (h.packPanel != nullptr) {
          const size_t nr = static_cast<size_t>(k.tileCols);
          const auto bits = narrowAll(t, randomVectors(nr, dim, 31 + static_cast<uint32_t>(dim)));
          std::vector<float> packed(dim * nr, -1.0f);
          h.packPanel(bits.data(), dim, packed.data());
          for (size_t j = 0; j < nr; ++j)
            for (size_t d = 0; d < dim; ++d)
              CHECK_MSG(packed[d * nr + j] == t.widen(bits[j * dim + d]), what << " pack dim " << dim << " at " << j << "," << d);
        }
      }
    }
  }
}
