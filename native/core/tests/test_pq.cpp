#include <cmath>
#include <algorithm>
#include <random>

#include "../error.h"
#include "../pq.h"
#include "../simd/dispatch.h"
#include "check.h"

using namespace ebrix;

namespace {

std::vector<float> gaussian(size_t n, size_t dim, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n * dim);
  for (auto& x : v) x = normal(rng);
  return v;
}

const simd::Kernels& best() { return simd::kernelsFor(simd::bestLevel()); }

ProductQuantizer trained(size_t dim, size_t m, unsigned nbits, const std::vector<float>& data, uint64_t seed = 7,
                         bool opq = false, unsigned threads = 2) {
  ProductQuantizer pq(dim, m, nbits);
  PqTrainParams params;
  params.seed = seed;
  params.threads = threads;
  params.opq = opq;
  pq.train(data.data(), data.size() / dim, params, best(), ThreadPool::shared());
  return pq;
}

double sq(const float* a, const float* b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
  return s;
}

double meanSquaredError(const ProductQuantizer& pq, const std::vector<float>& data) {
  const size_t dim = pq.dim(), n = data.size() / dim;
  std::vector<float> rotated(data.size()), decoded(data.size());
  std::vector<uint8_t> codes(n * pq.codeBytes());
  pq.rotate(data.data(), n, rotated.data());
  pq.encode(rotated.data(), n, codes.data(), ThreadPool::shared());
  pq.decode(codes.data(), n, decoded.data());
  return sq(rotated.data(), decoded.data(), data.size()) / n;
}

}  // namespace

TEST_CASE("pq.rejects_bad_dim_m_nbits") {
  CHECK_THROWS_CODE(ProductQuantizer(0, 1, 8), ErrorCode::InvalidArgument);
  CHECK_THROWS_CODE(ProductQuantizer(10, 3, 8), ErrorCode::InvalidArgument);
  CHECK_THROWS_CODE(ProductQuantizer(8, 0, 8), ErrorCode::InvalidArgument);
  CHECK_THROWS_CODE(ProductQuantizer(8, 2, 5), ErrorCode::InvalidArgument);
  CHECK_THROWS_CODE(ProductQuantizer(8, 2, 0), ErrorCode::InvalidArgument);
  ProductQuantizer pq(8, 2, 4);
  CHECK(!pq.trained());
  CHECK(pq.codeBytes() == 1);
  CHECK(ProductQuantizer(9, 3, 4).codeBytes() == 2);
  CHECK(ProductQuantizer(9, 3, 8).codeBytes() == 3);
  std::vector<float> few = gaussian(15, 8, 1);
  PqTrainParams params;
  CHECK_THROWS_CODE(pq.train(few.data(), 15, params, best(), ThreadPool::shared()), ErrorCode::InvalidArgument);
  std::vector<float> q(8, 0.f), table(2 * 16);
  std::vector<uint8_t> code(1);
  CHECK_THROWS_CODE(pq.encode(q.data(), 1, code.data(), ThreadPool::shared()), ErrorCode::NotTrained);
  CHECK_THROWS_CODE(pq.computeTable(q.data(), Metric::L2, table.data()), ErrorCode::NotTrained);
  CHECK_THROWS_CODE(pq.load(std::vector<float>(10), {}), ErrorCode::InvalidArgument);
  CHECK_THROWS_CODE(pq.load(std::vector<float>(16 * 8), std::vector<float>(7)), ErrorCode::InvalidArgument);
  few[3] = std::nanf("");
  std::vector<float> bad = gaussian(64, 8, 2);
  bad[5] = INFINITY;
  CHECK_THROWS_CODE(pq.train(bad.data(), 64, params, best(), ThreadPool::shared()), ErrorCode::InvalidVector);
  pq.load(std::vector<float>(16 * 8, 0.5f), {});
  CHECK(pq.trained() && !pq.rotated());
}

TEST_CASE("pq.fast_scan_unpack_inverts_pack") {
  std::mt19937 rng(17);
  for (size_t m : {size_t{1}, size_t{7}, size_t{8}, size_t{64}}) {
    const size_t bytes = (m + 1) / 2;
    for (size_t n : {size_t{1}, size_t{31}, size_t{32}, size_t{33}, size_t{100}}) {
      std::vector<uint8_t> codes(n * bytes);
      for (auto& c : codes) c = static_cast<uint8_t>(rng());
      if (m & 1) {
        for (size_t i = 0; i < n; ++i) codes[i * bytes + bytes - 1] &= 0x0F;  // unused high nibble
      }
      std::vector<uint8_t> packed(fastScanBytes(n, m));
      packFastScan(codes.data(), n, m, packed.data());
      std::vector<uint8_t> back(n * bytes);
      unpackFastScan(packed.data(), 0, n, m, back.data());
      CHECK(back == codes);
      if (n > 5) {  // a range in the middle
        std::vector<uint8_t> part(3 * bytes);
        unpackFastScan(packed.data(), n - 4, 3, m, part.data());
        CHECK(std::equal(part.begin(), part.end(), codes.begin() + (n - 4) * bytes));
      }
    }
  }
}

TEST_CASE("pq.codes_decode_to_nearest_centroid") {
  struct Shape { size_t dim, m; unsigned nbits; };
  for (Shape s : {Shape{16, 4, 8}, Shape{12, 3, 4}, Shape{24, 8, 4}, Shape{20, 1, 8}}) {
    const size_t n = 1500;
    const std::vector<float> data = gaussian(n, s.dim, 3);
    const ProductQuantizer pq = trained(s.dim, s.m, s.nbits, data);
    CHECK(pq.trained());
    CHECK(pq.centroids().size() == pq.ksub() * s.dim);
    std::vector<uint8_t> codes(n * pq.codeBytes());
    std::vector<float> decoded(n * s.dim);
    pq.encode(data.data(), n, codes.data(), ThreadPool::shared());
    pq.decode(codes.data(), n, decoded.data());
    const size_t ds = pq.dsub(), ks = pq.ksub();
    for (size_t i = 0; i < n; ++i) {
      if (s.nbits == 4 && (s.m & 1)) CHECK((codes[i * pq.codeBytes() + pq.codeBytes() - 1] >> 4) == 0);
      for (size_t j = 0; j < s.m; ++j) {
        const float* x = data.data() + i * s.dim + j * ds;
        double bestD = 1e300;
        for (size_t c = 0; c < ks; ++c) bestD = std::min(bestD, sq(x, pq.centroids().data() + (j * ks + c) * ds, ds));
        const double got = sq(x, decoded.data() + i * s.dim + j * ds, ds);
        CHECK_MSG(got <= bestD + 1e-4 * (1 + bestD), "vector " << i << " sub " << j << ": " << got << " vs " << bestD);
      }
    }
  }
}

TEST_CASE("pq.adc_scores_equal_decoded_scores") {
  for (unsigned nbits : {8u, 4u}) {
    const size_t dim = 32, m = nbits == 8 ? 8 : 16, n = 700;
    const std::vector<float> data = gaussian(n, dim, 4);
    const ProductQuantizer pq = trained(dim, m, nbits, data);
    std::vector<uint8_t> codes(n * pq.codeBytes());
    std::vector<float> decoded(n * dim);
    pq.encode(data.data(), n, codes.data(), ThreadPool::shared());
    pq.decode(codes.data(), n, decoded.data());
    const std::vector<float> queries = gaussian(5, dim, 9);
    for (Metric metric : {Metric::InnerProduct, Metric::L2}) {
      for (size_t qi = 0; qi < 5; ++qi) {
        const float* q = queries.data() + qi * dim;
        std::vector<float> table(m * pq.ksub()), scores(n);
        pq.computeTable(q, metric, table.data());
        pq.scan(table.data(), codes.data(), n, 0.25f, scores.data());
        for (size_t i = 0; i < n; ++i) {
          const float* x = decoded.data() + i * dim;
          double expected = 0.25;
          if (metric == Metric::L2) {
            expected -= sq(q, x, dim);
          } else {
            for (size_t d = 0; d < dim; ++d) expected += double(q[d]) * x[d];
          }
          CHECK_MSG(std::fabs(scores[i] - expected) <= 1e-4 * (1 + std::fabs(expected)),
                    metricName(metric) << " nbits " << nbits << " row " << i << ": " << scores[i] << " vs " << expected);
        }
      }
    }
  }
}

TEST_CASE("pq.fast_scan_maps_back_to_adc_scores") {
  for (size_t m : {8u, 7u, 1u}) {
    const size_t dim = m * 3, n = 100;  // not a multiple of the block
    const std::vector<float> data = gaussian(400, dim, 5);
    const ProductQuantizer pq = trained(dim, m, 4, data);
    std::vector<uint8_t> codes(n * pq.codeBytes());
    pq.encode(data.data(), n, codes.data(), ThreadPool::shared());
    std::vector<uint8_t> packed(fastScanBytes(n, m), 0xAB);
    CHECK(packed.size() == 4 * ((m + 1) / 2) * 32);
    packFastScan(codes.data(), n, m, packed.data());
    const size_t blocks = (n + kFastScanBlock - 1) / kFastScanBlock;
    const std::vector<float> queries = gaussian(3, dim, 11);
    for (Metric metric : {Metric::InnerProduct, Metric::L2}) {
      for (size_t qi = 0; qi < 3; ++qi) {
        std::vector<float> table(m * 16), exact(n);
        pq.computeTable(queries.data() + qi * dim, metric, table.data());
        pq.scan(table.data(), codes.data(), n, 0.f, exact.data());
        const QuantizedTable qt = quantizeTable(table.data(), m);
        CHECK(qt.entries.size() == (m + (m & 1)) * 16);
        CHECK(qt.scale > 0);
        for (simd::Level level : simd::supportedLevels()) {
          std::vector<uint16_t> sums(blocks * kFastScanBlock, 0xFFFF);
          fastScan(qt, m, packed.data(), blocks, sums.data(), level);
          for (size_t i = 0; i < n; ++i) {
            const double approx = qt.offset + double(qt.scale) * sums[i];
            const double tol = m * qt.scale / 2 + 1e-4 * (1 + std::fabs(exact[i]));
            CHECK_MSG(std::fabs(approx - exact[i]) <= tol, simd::levelName(level) << " m " << m << " row " << i << ": "
                                                                                   << approx << " vs " << exact[i]);
          }
          // Padding vectors are zero codes.
          for (size_t i = n; i < blocks * kFastScanBlock; ++i) {
            uint32_t zero = 0;
            for (size_t j = 0; j < m; ++j) zero += qt.entries[j * 16];
            CHECK(sums[i] == zero);
          }
        }
      }
    }
  }
}

TEST_CASE("pq.fast_scan_every_isa_equals_scalar") {
  std::mt19937 rng(17);
  // Includes a saturating case (m large with entries near 255) and odd pair counts.
  for (size_t m : {1u, 2u, 3u, 6u, 16u, 33u, 64u, 300u}) {
    for (size_t n : {1u, 31u, 32u, 33u, 200u, 321u}) {
      const size_t cb = (m + 1) / 2;
      std::vector<uint8_t> codes(n * cb);
      for (auto& c : codes) c = static_cast<uint8_t>(rng());
      std::vector<uint8_t> packed(fastScanBytes(n, m));
      packFastScan(codes.data(), n, m, packed.data());
      QuantizedTable qt;
      qt.entries.resize((m + (m & 1)) * 16);
      for (auto& e : qt.entries) e = static_cast<uint8_t>(m == 300 ? 200 + rng() % 56 : rng());
      if (m & 1) std::fill(qt.entries.begin() + m * 16, qt.entries.end(), uint8_t{0});  // as quantizeTable pads
      const size_t blocks = (n + 31) / 32;
      std::vector<uint16_t> ref(blocks * 32);
      fastScan(qt, m, packed.data(), blocks, ref.data(), simd::Level::Scalar);
      // The scalar reference itself against a direct sum over the plain codes.
      for (size_t i = 0; i < n; ++i) {
        uint32_t s = 0;
        for (size_t j = 0; j < m; ++j) {
          const uint8_t byte = codes[i * cb + j / 2];
          s += qt.entries[j * 16 + ((j & 1) ? byte >> 4 : byte & 15)];
        }
        CHECK_MSG(ref[i] == std::min<uint32_t>(s, 65535), "m " << m << " row " << i);
      }
      for (simd::Level level : simd::supportedLevels()) {
        std::vector<uint16_t> got(blocks * 32, 1);
        fastScan(qt, m, packed.data(), blocks, got.data(), level);
        CHECK_MSG(got == ref, simd::levelName(level) << " m " << m << " n " << n);
      }
    }
  }
  QuantizedTable small;
  small.entries.resize(16);
  std::vector<uint8_t> packed(fastScanBytes(1, 4));
  std::vector<uint16_t> out(32);
  CHECK_THROWS_CODE(fastScan(small, 4, packed.data(), 1, out.data(), simd::Level::Scalar), ErrorCode::InvalidArgument);
  for (simd::Level level : {simd::Level::Avx2, simd::Level::Avx512, simd::Level::Neon}) {
    if (!simd::isSupported(level)) {
      QuantizedTable t;
      t.entries.resize(64);
      CHECK_THROWS_CODE(fastScan(t, 4, packed.data(), 1, out.data(), level), ErrorCode::UnsupportedSimd);
    }
  }
}

TEST_CASE("pq.training_is_deterministic_for_a_seed") {
  const size_t dim = 16, m = 4;
  // More points than 2^nbits × maxPointsPerCentroid for 4 bits: the seeded sample is used.
  const std::vector<float> data = gaussian(5000, dim, 6);
  for (unsigned nbits : {4u, 8u}) {
    const ProductQuantizer a = trained(dim, m, nbits, data, 3, false, 1);
    const ProductQuantizer b = trained(dim, m, nbits, data, 3, false, 2);
    const ProductQuantizer c = trained(dim, m, nbits, data, 4, false, 2);
    CHECK(a.centroids() == b.centroids());
    CHECK(a.centroids() != c.centroids());
  }
  const ProductQuantizer a = trained(dim, m, 4, data, 3, true, 1);
  const ProductQuantizer b = trained(dim, m, 4, data, 3, true, 2);
  CHECK(a.centroids() == b.centroids());
  CHECK(a.rotation() == b.rotation());
}

TEST_CASE("pq.progress_reaches_one") {
  const std::vector<float> data = gaussian(300, 8, 8);
  for (bool opq : {false, true}) {
    ProductQuantizer pq(8, 2, 4);
    PqTrainParams params;
    params.opq = opq;
    params.opqIterations = 2;
    std::vector<double> seen;
    params.progress = [&](double f) { seen.push_back(f); };
    pq.train(data.data(), 300, params, best(), ThreadPool::shared());
    CHECK(!seen.empty());
    for (size_t i = 1; i < seen.size(); ++i) CHECK(seen[i] >= seen[i - 1]);
    CHECK(seen.back() == 1.0);
    CHECK(pq.rotated() == opq);
  }
}

TEST_CASE("pq.opq_rotation_is_orthogonal_and_lowers_error") {
  // Anisotropic data: a few directions of large variance, mixed across every coordinate by
  // a random orthogonal matrix, plus small isotropic noise.
  const size_t dim = 32, m = 8, n = 4000;
  std::mt19937 rng(21);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> basis(dim * dim);
  for (auto& x : basis) x = normal(rng);
  for (size_t i = 0; i < dim; ++i) {  // Gram-Schmidt
    for (size_t k = 0; k < i; ++k) {
      double d = 0;
      for (size_t c = 0; c < dim; ++c) d += basis[i * dim + c] * basis[k * dim + c];
      for (size_t c = 0; c < dim; ++c) basis[i * dim + c] -= float(d) * basis[k * dim + c];
    }
    double s = 0;
    for (size_t c = 0; c < dim; ++c) s += basis[i * dim + c] * basis[i * dim + c];
    for (size_t c = 0; c < dim; ++c) basis[i * dim + c] /= float(std::sqrt(s));
  }
  std::vector<float> data(n * dim, 0.f);
  for (size_t i = 0; i < n; ++i) {
    for (size_t k = 0; k < dim; ++k) {
      const float z = normal(rng) * (k < 6 ? 10.0f / float(k + 1) : 0.1f);
      for (size_t c = 0; c < dim; ++c) data[i * dim + c] += z * basis[k * dim + c];
    }
  }
  for (unsigned nbits : {4u, 8u}) {
    const ProductQuantizer plain = trained(dim, m, nbits, data, 5, false);
    const ProductQuantizer opq = trained(dim, m, nbits, data, 5, true);
    CHECK(opq.rotated() && !plain.rotated());
    const std::vector<float>& r = opq.rotation();
    CHECK(r.size() == dim * dim);
    for (size_t a = 0; a < dim; ++a) {
      for (size_t b = 0; b < dim; ++b) {
        double d = 0;
        for (size_t c = 0; c < dim; ++c) d += double(r[a * dim + c]) * r[b * dim + c];
        CHECK_MSG(std::fabs(d - (a == b ? 1.0 : 0.0)) < 1e-4, "R·Rt[" << a << "][" << b << "] = " << d);
      }
    }
    const double plainError = meanSquaredError(plain, data);
    const double opqError = meanSquaredError(opq, data);
    CHECK_MSG(opqError <= plainError, "nbits " << nbits << ": opq " << opqError << " plain " << plainError);
    // rotate() is R·x.
    std::vector<float> out(dim);
    opq.rotate(data.data(), 1, out.data());
    for (size_t a = 0; a < dim; ++a) {
      double d = 0;
      for (size_t c = 0; c < dim; ++c) d += double(r[a * dim + c]) * data[c];
      CHECK(std::fabs(out[a] - d) < 1e-3 * (1 + std::fabs(d)));
    }
    // A quantizer restored from its parts encodes the same.
    ProductQuantizer restored(dim, m, nbits);
    restored.load(opq.centroids(), opq.rotation());
    CHECK(meanSquaredError(restored, data) == opqError);
  }
}
