// Storage 'i8': the integer kernels of every variant this CPU runs against the scalar
// reference, the scalar quantizer's error bounds, and FlatIndex i8 search against exact
// float32 search.
#include <algorithm>
#include <cstdio>
#include <limits>
#include <random>
#include <set>
#include <string>

#include "../error.h"
#include "../flat.h"
#include "../simd/dispatch.h"
#include "../sq.h"
#include "check.h"
#include "test_util.h"

using namespace ebrix;
using namespace ebrix::test;

namespace {

std::vector<uint8_t> randomCodes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  std::vector<uint8_t> out(n);
  for (auto& c : out) c = static_cast<uint8_t>(byte(rng));
  return out;
}

std::vector<int8_t> randomQuery(size_t n, int limit, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> value(-limit, limit);
  std::vector<int8_t> out(n);
  for (auto& c : out) c = static_cast<int8_t>(value(rng));
  return out;
}

int64_t dotRef(const uint8_t* x, const int8_t* q, size_t dim) {
  int64_t s = 0;
  for (size_t i = 0; i < dim; ++i) s += int64_t{x[i]} * q[i];
  return s;
}

// Gaussian clusters with a low-rank spread per cluster (as embeddings tend to be), seeded.
std::vector<float> clustered(size_t n, size_t dim, size_t clusters, uint32_t seed) {
  const size_t rank = 6;
  std::mt19937 shared(1234);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> centres(clusters * dim), bases(clusters * rank * dim);
  for (auto& c : centres) c = 0.3f * normal(shared);
  for (auto& b : bases) b = 0.4f * normal(shared) / std::sqrt(float(rank));
  std::mt19937 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, clusters - 1);
  std::vector<float> out(n * dim);
  for (size_t i = 0; i < n; ++i) {
    const size_t c = pick(rng);
    float z[rank];
    for (auto& v : z) v = normal(rng);
    for (size_t d = 0; d < dim; ++d) {
      float x = centres[c * dim + d] + 0.05f * normal(rng);
      for (size_t j = 0; j < rank; ++j) x += z[j] * bases[(c * rank + j) * dim + d];
      out[i * dim + d] = x;
    }
  }
  return out;
}

double recallAt(const SearchOutput& truth, const SearchOutput& got) {
  size_t hits = 0;
  for (size_t q = 0; q < truth.queries; ++q) {
    const std::set<uint64_t> want(truth.ids.begin() + q * truth.k, truth.ids.begin() + (q + 1) * truth.k);
    for (size_t i = 0; i < got.k; ++i) hits += want.count(got.ids[q * got.k + i]);
  }
  return double(hits) / double(truth.queries * truth.k);
}

const char* kMetricNames[] = {"ip", "cosine", "l2"};

}  // namespace

TEST_CASE("i8.kernels_match_scalar_every_variant") {
  const simd::KernelsI8& scalar = simd::scalarKernels().i8;
  const auto variants = simd::supportedI8Kernels();
  CHECK(variants.front() == &scalar);
  for (const simd::KernelsI8* k : variants) {
    for (size_t dim : awkwardDims()) {
      const auto q = randomQuery(dim, 127, 3 + static_cast<uint32_t>(dim));
      for (size_t count : {size_t{1}, size_t{3}, size_t{5}, size_t{37}}) {
        const auto rows = randomCodes(count * dim, 4 + static_cast<uint32_t>(dim + count));
        const auto bias = randomVectors(1, count, 9);
        const float scale = 0.0123f, offset = -1.5f;
        std::vector<float> scores(count), biased(count);
        k->scanRows(q.data(), rows.data(), count, dim, scale, offset, nullptr, scores.data());
        k->scanRows(q.data(), rows.data(), count, dim, scale, offset, bias.data(), biased.data());
        for (size_t r = 0; r < count; ++r) {
          const uint8_t* x = rows.data() + r * dim;
          const int64_t exact = dotRef(x, q.data(), dim);
          const std::string what = std::string(k->name) + " dim " + std::to_string(dim) + " row " + std::to_string(r);
          CHECK_MSG(k->dot(x, q.data(), dim) == exact, what << ": " << k->dot(x, q.data(), dim) << " != " << exact);
          CHECK_MSG(scalar.dot(x, q.data(), dim) == exact, what << " (scalar)");
          const double want = double(exact) * scale + offset;
          const double tol = 1e-6 * (std::fabs(double(exact) * scale) + std::fabs(offset) + 1.0);
          CHECK_MSG(std::fabs(scores[r] - want) <= tol, what << " scan " << scores[r] << " vs " << want);
          CHECK_MSG(std::fabs(biased[r] - (want + bias[r])) <= tol + 1e-6 * std::fabs(bias[r]), what << " biased scan");
        }
      }
    }
  }
}

TEST_CASE("i8.small_query_scan_matches_scalar_every_variant") {
  // scanRowsSmallQuery on queries within ±kSmallQueryLimit: the scores of the exact integer
  // dot, on random bytes and on the extremes (every code 255, every query byte ±63), where a
  // 16-bit pair sum is largest.
  const simd::KernelsI8& scalar = simd::scalarKernels().i8;
  for (const simd::KernelsI8* k : simd::supportedI8Kernels()) {
    for (size_t dim : awkwardDims()) {
      for (size_t count : {size_t{1}, size_t{4}, size_t{7}, size_t{37}}) {
        for (int pattern = 0; pattern < 3; ++pattern) {
          auto q = randomQuery(dim, simd::kSmallQueryLimit, 5 + static_cast<uint32_t>(dim + pattern));
          auto rows = randomCodes(count * dim, 6 + static_cast<uint32_t>(dim + count));
          if (pattern > 0) {
            for (auto& x : rows) x = 255;
            for (size_t i = 0; i < dim; ++i) {
              const int sign = pattern == 1 ? 1 : (i % 2 == 0 ? 1 : -1);
              q[i] = static_cast<int8_t>(sign * simd::kSmallQueryLimit);
            }
          }
          const auto bias = randomVectors(1, count, 10);
          const float scale = 0.0071f, offset = 0.25f;
          std::vector<float> scores(count), reference(count);
          k->scanRowsSmallQuery(q.data(), rows.data(), count, dim, scale, offset, bias.data(), scores.data());
          scalar.scanRows(q.data(), rows.data(), count, dim, scale, offset, bias.data(), reference.data());
          for (size_t r = 0; r < count; ++r) {
            const int64_t exact = dotRef(rows.data() + r * dim, q.data(), dim);
            const double want = double(exact) * scale + offset + bias[r];
            const double tol = 1e-6 * (std::fabs(double(exact) * scale) + std::fabs(offset) + std::fabs(bias[r]) + 1.0);
            CHECK_MSG(std::fabs(scores[r] - want) <= tol, k->name << " dim " << dim << " count " << count << " pattern "
                                                                 << pattern << " row " << r << ": " << scores[r]
                                                                 << " vs " << want);
            CHECK(std::fabs(reference[r] - want) <= tol);
          }
        }
      }
    }
  }
}

TEST_CASE("i8.prepare_query_caps_the_bytes") {
  const size_t dim = 96;
  const auto data = randomVectors(200, dim, 12);
  const ScalarQuantizer sq = ScalarQuantizer::train(data.data(), 200, dim);
  const auto q = randomVectors(1, dim, 13);
  std::vector<int8_t> full(dim), small(dim);
  const I8Query a = sq.prepareQuery(q.data(), full.data());
  const I8Query b = sq.prepareQuery(q.data(), small.data(), simd::kSmallQueryLimit);
  int maxFull = 0, maxSmall = 0;
  for (size_t d = 0; d < dim; ++d) {
    maxFull = std::max(maxFull, std::abs(int{full[d]}));
    maxSmall = std::max(maxSmall, std::abs(int{small[d]}));
  }
  CHECK(maxFull == 127);
  CHECK(maxSmall == simd::kSmallQueryLimit);
  CHECK(std::fabs(b.scale * simd::kSmallQueryLimit - a.scale * 127) <= 1e-6f * a.scale * 127);
  CHECK(a.offset == b.offset);
  // Both approximate q · decode(row) within their rounding bound.
  std::vector<float> decoded(dim);
  std::vector<uint8_t> codes(dim);
  sq.encode(data.data(), codes.data());
  sq.decode(codes.data(), decoded.data());
  double exact = 0.0, codeSum = 0.0;
  for (size_t d = 0; d < dim; ++d) {
    exact += double(q[d]) * decoded[d];
    codeSum += codes[d];
  }
  const double approx = double(dotRef(codes.data(), small.data(), dim)) * b.scale + b.offset;
  CHECK(std::fabs(approx - exact) <= b.scale / 2 * codeSum + 1e-4);
}

TEST_CASE("i8.kernels_never_saturate_at_the_extremes") {
  // Every product at its largest magnitude, at the largest dim queryLimit allows 127 for
  // and past it: a saturating 16-bit step (vpmaddubsw) or a lost carry would show here.
  const size_t limit127 = 66311;
  CHECK(ScalarQuantizer::queryLimit(limit127) == 127);
  CHECK(ScalarQuantizer::queryLimit(limit127 + 1) == 126);
  CHECK(ScalarQuantizer::queryLimit(size_t{1} << 20) == 8);
  for (const simd::KernelsI8* k : simd::supportedI8Kernels()) {
    for (size_t dim : {size_t{1}, size_t{2}, size_t{33}, size_t{1536}, limit127, size_t{100003}}) {
      const int limit = ScalarQuantizer::queryLimit(dim);
      const std::vector<uint8_t> codes(dim, 255);
      for (int sign : {1, -1}) {
        const std::vector<int8_t> q(dim, static_cast<int8_t>(sign * limit));
        const int64_t exact = int64_t{255} * sign * limit * static_cast<int64_t>(dim);
        CHECK(std::llabs(exact) <= std::numeric_limits<int32_t>::max());
        CHECK_MSG(k->dot(codes.data(), q.data(), dim) == exact, k->name << " dim " << dim << " sign " << sign);
      }
      // Alternating extremes: pairs of products of opposite signs, then of equal signs.
      std::vector<int8_t> q(dim);
      std::vector<uint8_t> x(dim);
      for (size_t i = 0; i < dim; ++i) {
        q[i] = static_cast<int8_t>(i % 3 == 0 ? -limit : limit);
        x[i] = i % 5 == 0 ? 0 : 255;
      }
      CHECK_MSG(k->dot(x.data(), q.data(), dim) == dotRef(x.data(), q.data(), dim), k->name << " mixed dim " << dim);
    }
  }
}

TEST_CASE("sq.round_trip_within_half_step_inside_the_range_and_clamps_outside") {
  for (size_t dim : awkwardDims()) {
    // Ranges differing per dimension in scale and offset, one constant dimension.
    const size_t n = 200;
    auto sample = randomVectors(n, dim, 17 + static_cast<uint32_t>(dim));
    for (size_t r = 0; r < n; ++r) {
      for (size_t d = 0; d < dim; ++d) {
        float& x = sample[r * dim + d];
        x = d == dim / 2 ? 0.25f : x * std::pow(10.0f, float(d % 7) - 3.0f) + float(d % 5) - 2.0f;
      }
    }
    const ScalarQuantizer sq = ScalarQuantizer::train(sample.data(), n, dim);
    CHECK(sq.dim() == dim);
    std::vector<float> lo(dim, std::numeric_limits<float>::infinity()), hi(dim, -std::numeric_limits<float>::infinity());
    for (size_t r = 0; r < n; ++r) {
      for (size_t d = 0; d < dim; ++d) {
        lo[d] = std::min(lo[d], sample[r * dim + d]);
        hi[d] = std::max(hi[d], sample[r * dim + d]);
      }
    }
    for (size_t d = 0; d < dim; ++d) {
      CHECK(sq.mins()[d] == lo[d]);
      CHECK(std::fabs(sq.steps()[d] * 255.0 - (double(hi[d]) - lo[d])) <= 1e-6 * (double(hi[d]) - lo[d]));
    }
    CHECK(sq.steps()[dim / 2] == 0.0f);
    // Inside: the sample itself, and points in between; outside: up to half a range beyond.
    std::mt19937 rng(5 + static_cast<uint32_t>(dim));
    std::uniform_real_distribution<double> inside(0.0, 1.0), outside(-0.5, 1.5);
    std::vector<float> x(dim), back(dim);
    std::vector<uint8_t> codes(dim);
    for (int trial = 0; trial < 400; ++trial) {
      const bool within = trial < 300;
      for (size_t d = 0; d < dim; ++d) {
        const double t = trial < 200 ? -1.0 : within ? inside(rng) : outside(rng);
        x[d] = trial < 200 ? sample[(trial % n) * dim + d] : static_cast<float>(lo[d] + t * (double(hi[d]) - lo[d]));
      }
      sq.encode(x.data(), codes.data());
      sq.decode(codes.data(), back.data());
      for (size_t d = 0; d < dim; ++d) {
        const double step = sq.steps()[d];
        const double clamped = std::clamp<double>(x[d], lo[d], hi[d]);
        // Float rounding of the decode (min + c * step) adds a few ulps of the magnitudes.
        const double eps = 4e-7 * (std::fabs(lo[d]) + std::fabs(hi[d]) + std::fabs(x[d]));
        CHECK_MSG(std::fabs(back[d] - clamped) <= step / 2 + eps,
                  "dim " << dim << " d " << d << " x " << x[d] << " back " << back[d] << " step " << step);
        if (x[d] < lo[d]) CHECK(codes[d] == 0);
        if (x[d] > hi[d] && step > 0) CHECK(codes[d] == 255);
        if (step == 0) CHECK(back[d] == 0.25f);
      }
    }
  }
  CHECK_THROWS_CODE(ScalarQuantizer::train(nullptr, 0, 4), ErrorCode::InvalidArgument);
}

TEST_CASE("sq.query_bytes_within_half_a_scale_and_scan_within_the_stated_bound") {
  for (size_t dim : awkwardDims()) {
    const size_t n = 50;
    const auto sample = randomVectors(n, dim, 23 + static_cast<uint32_t>(dim));
    const ScalarQuantizer sq = ScalarQuantizer::train(sample.data(), n, dim);
    const int limit = ScalarQuantizer::queryLimit(dim);
    const auto queries = randomVectors(5, dim, 29 + static_cast<uint32_t>(dim));
    std::vector<uint8_t> codes(dim);
    std::vector<float> decoded(dim);
    std::vector<int8_t> bytes(dim);
    for (size_t qi = 0; qi < 5; ++qi) {
      const float* q = queries.data() + qi * dim;
      const I8Query p = sq.prepareQuery(q, bytes.data());
      int largest = 0;
      double offset = 0.0;
      for (size_t d = 0; d < dim; ++d) {
        const double w = double(q[d]) * sq.steps()[d];
        CHECK(std::abs(int{bytes[d]}) <= limit);
        largest = std::max(largest, std::abs(int{bytes[d]}));
        CHECK_MSG(std::fabs(double(p.scale) * bytes[d] - w) <= p.scale * 0.5000001 + 1e-12, "dim " << dim << " d " << d);
        offset += double(q[d]) * sq.mins()[d];
      }
      CHECK(largest == limit);  // the scale spends the whole byte range
      CHECK(std::fabs(p.offset - offset) <= 1e-5 * (std::fabs(offset) + 1.0));
      // The scan's score of a row against the decoded product: within scale/2 × sum of codes.
      for (size_t r = 0; r < n; ++r) {
        sq.encode(sample.data() + r * dim, codes.data());
        sq.decode(codes.data(), decoded.data());
        double sumCodes = 0.0;
        for (uint8_t c : codes) sumCodes += c;
        const double approx = double(simd::scalarKernels().i8.dot(codes.data(), bytes.data(), dim)) * p.scale + p.offset;
        const double exact = ::ebrix::test::dotRef(q, decoded.data(), dim);
        CHECK_MSG(std::fabs(approx - exact) <= p.scale * 0.5 * sumCodes + 1e-5 * (absDotRef(q, decoded.data(), dim) + 1.0),
                  "dim " << dim << " row " << r);
      }
    }
  }
  // A zero query: zero bytes, zero scale.
  const float sample[] = {0, 1, 2, 3};
  const ScalarQuantizer sq = ScalarQuantizer::train(sample, 2, 2);
  const float zero[] = {0, 0};
  int8_t bytes[2] = {5, 5};
  const I8Query p = sq.prepareQuery(zero, bytes);
  CHECK(p.scale == 0.0f && p.offset == 0.0f && bytes[0] == 0 && bytes[1] == 0);
}

TEST_CASE("flat_i8.recall_vs_exact_f32_every_isa_metric") {
  // Clustered data, 40 queries searched one batch at a time and two at a time, k = 10; the
  // index trained on a third of the rows. Recall@10 against exact float32 search is printed.
  const size_t n = 6000, nq = 40, k = 10;
  for (size_t dim : {size_t{37}, size_t{128}}) {
    const auto data = clustered(n, dim, 20, 7 + static_cast<uint32_t>(dim));
    const auto queries = clustered(nq, dim, 20, 8 + static_cast<uint32_t>(dim));
    std::vector<uint64_t> ids(n);
    for (size_t i = 0; i < n; ++i) ids[i] = (i * 2654435761u) % 1000003u;
    for (Metric metric : {Metric::InnerProduct, Metric::Cosine, Metric::L2}) {
      FlatIndex exact(dim, metric, simd::bestLevel(), 2);
      exact.add(ids.data(), data.data(), n);
      for (simd::Level level : simd::supportedLevels()) {
        FlatIndex index(dim, metric, level, 3, simd::Element::I8);
        index.train(data.data(), 2000);  // a sample: later rows may fall outside its ranges
        index.add(ids.data(), data.data(), 2500);
        index.add(ids.data() + 2500, data.data() + 2500 * dim, n - 2500);
        const SearchOutput truth = exact.search(queries.data(), nq, k);
        // The 40 queries as one batch, and as 20 batches of 2.
        for (size_t batch : {size_t{2}, nq}) {
          SearchOutput got;
          got.queries = nq;
          got.k = k;
          for (size_t q0 = 0; q0 < nq; q0 += batch) {
            const SearchOutput part = index.search(queries.data() + q0 * dim, batch, k);
            got.ids.insert(got.ids.end(), part.ids.begin(), part.ids.end());
          }
          const double recall = recallAt(truth, got);
          std::printf("  i8 %s %s dim %zu batch %zu: recall@10 %.3f\n", simd::kernelsFor(level).i8.name,
                      kMetricNames[static_cast<int>(metric)], dim, batch, recall);
          CHECK_MSG(recall >= 0.95, simd::levelName(level) << " " << kMetricNames[static_cast<int>(metric)] << " dim "
                                                           << dim << " batch " << batch << " recall " << recall);
        }
      }
    }
  }
}

TEST_CASE("flat_i8.scores_are_exact_on_decoded_rows_and_ranking_matches_them") {
  // Against brute force over the decoded rows: every reported score is that row's exact
  // score, and the integer scan (with its shortlist) finds the decoded rows' top-k.
  const size_t dim = 48, n = 3000, nq = 12, k = 10;
  const auto data = clustered(n, dim, 10, 31);
  const auto queries = clustered(nq, dim, 10, 32);
  std::vector<uint64_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = 5 * i + 1;
  for (Metric metric : {Metric::InnerProduct, Metric::Cosine, Metric::L2}) {
    FlatIndex index(dim, metric, simd::bestLevel(), 2, simd::Element::I8);
    index.train(data.data(), n);
    index.add(ids.data(), data.data(), n);
    // The index's own quantizer, rebuilt from the same (normalised) sample.
    std::vector<float> prepared = data, preparedQueries = queries;
    auto normalize = [&](std::vector<float>& v) {
      for (size_t r = 0; r < v.size() / dim; ++r) {
        double s = 0.0;
        for (size_t d = 0; d < dim; ++d) s += double(v[r * dim + d]) * v[r * dim + d];
        for (size_t d = 0; d < dim; ++d) v[r * dim + d] = float(v[r * dim + d] / std::sqrt(s));
      }
    };
    if (metric == Metric::Cosine) {
      normalize(prepared);
      normalize(preparedQueries);
    }
    const ScalarQuantizer sq = ScalarQuantizer::train(prepared.data(), n, dim);
    std::vector<float> decoded(n * dim);
    std::vector<uint8_t> codes(dim);
    for (size_t r = 0; r < n; ++r) {
      sq.encode(prepared.data() + r * dim, codes.data());
      sq.decode(codes.data(), decoded.data() + r * dim);
    }
    const SearchOutput out = index.search(queries.data(), nq, k);
    size_t hits = 0;
    for (size_t q = 0; q < nq; ++q) {
      const float* query = preparedQueries.data() + q * dim;
      std::vector<std::pair<double, uint64_t>> truth;
      for (size_t r = 0; r < n; ++r) {
        const float* x = decoded.data() + r * dim;
        double s = 0.0;
        if (metric == Metric::L2) {
          for (size_t d = 0; d < dim; ++d) s -= (double(query[d]) - x[d]) * (double(query[d]) - x[d]);
        } else {
          s = ::ebrix::test::dotRef(query, x, dim);
        }
        truth.push_back({s, ids[r]});
      }
      std::sort(truth.begin(), truth.end(), [](auto& a, auto& b) { return a.first > b.first; });
      const std::set<uint64_t> want = [&] {
        std::set<uint64_t> s;
        for (size_t i = 0; i < k; ++i) s.insert(truth[i].second);
        return s;
      }();
      for (size_t i = 0; i < k; ++i) {
        const uint64_t id = out.ids[q * k + i];
        hits += want.count(id);
        const size_t row = (id - 1) / 5;
        const auto it = std::find_if(truth.begin(), truth.end(), [&](auto& t) { return t.second == id; });
        CHECK(it != truth.end() && row < n);
        CHECK_MSG(std::fabs(out.scores[q * k + i] - it->first) <= 1e-4 * (std::fabs(it->first) + 1.0),
                  kMetricNames[static_cast<int>(metric)] << " score " << out.scores[q * k + i] << " vs " << it->first);
        if (i > 0) CHECK(out.scores[q * k + i] <= out.scores[q * k + i - 1]);
      }
    }
    const double recall = double(hits) / double(nq * k);
    std::printf("  i8 %s: recall@10 vs exact search of the decoded rows %.3f\n", kMetricNames[static_cast<int>(metric)],
                recall);
    CHECK_MSG(recall >= 0.99, kMetricNames[static_cast<int>(metric)] << " recall vs decoded " << recall);
  }
}

TEST_CASE("flat_i8.allow_bitset_equals_an_index_of_the_allowed_rows") {
  // Trained on the same sample, two indexes share a quantizer, so the filtered search of
  // one must equal the plain search of another holding only the allowed rows.
  const size_t dim = 19, n = 2100, k = 15;
  const auto data = clustered(n, dim, 8, 41);
  const auto queries = clustered(30, dim, 8, 42);
  std::vector<uint64_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = n * 3 - i;
  for (Metric metric : {Metric::InnerProduct, Metric::Cosine, Metric::L2}) {
    for (simd::Level level : simd::supportedLevels()) {
      FlatIndex all(dim, metric, level, 3, simd::Element::I8), subset(dim, metric, level, 3, simd::Element::I8);
      all.train(data.data(), 500);
      subset.train(data.data(), 500);
      all.add(ids.data(), data.data(), n);
      std::vector<uint32_t> bits((n - 1) / 32, 0);  // the last rows fall past the bitset
      for (size_t r = 0; r < bits.size() * 32; ++r) {
        if (r % 3 == 0 || r % 7 == 0) continue;
        bits[r / 32] |= 1u << (r % 32);
        subset.add(&ids[r], data.data() + r * dim, 1);
      }
      for (size_t nq : {size_t{3}, size_t{30}}) {
        const SearchOutput a = all.search(queries.data(), nq, k, 0, bits.data(), bits.size());
        const SearchOutput b = subset.search(queries.data(), nq, k);
        CHECK_MSG(a.ids == b.ids, simd::levelName(level) << " " << kMetricNames[static_cast<int>(metric)] << " nq " << nq);
        CHECK(a.scores == b.scores);
      }
      const uint32_t none = 0;
      const SearchOutput empty = all.search(queries.data(), 1, 3, 0, &none, 0);
      CHECK(empty.ids[0] == kNoId && empty.ids[2] == kNoId);
    }
  }
}

TEST_CASE("flat_i8.train_once_before_add_and_search") {
  const float rows[] = {0, 1, 2, 3, 4, 5, 6, 7};
  const uint64_t ids[] = {10, 11};
  FlatIndex index(4, Metric::L2, simd::bestLevel(), 1, simd::Element::I8);
  CHECK(!index.trained());
  CHECK_THROWS_CODE(index.add(ids, rows, 2), ErrorCode::NotTrained);
  CHECK_THROWS_CODE(index.search(rows, 1, 1), ErrorCode::NotTrained);
  CHECK_THROWS_CODE(index.train(rows, 0), ErrorCode::InvalidArgument);
  const float nan[] = {0, std::numeric_limits<float>::quiet_NaN(), 0, 0};
  CHECK_THROWS_CODE(index.train(nan, 1), ErrorCode::InvalidVector);
  CHECK(!index.trained());
  index.train(rows, 2);
  CHECK(index.trained());
  CHECK_THROWS_CODE(index.train(rows, 2), ErrorCode::InvalidArgument);
  // Trained and empty: a search returns padding.
  CHECK(index.search(rows, 1, 2).ids[0] == kNoId);
  index.add(ids, rows, 2);
  const SearchOutput out = index.search(rows + 4, 1, 2);
  CHECK(out.ids[0] == 11 && out.ids[1] == 10);
  CHECK(std::fabs(out.scores[0]) < 1e-4f);  // the sample's extremes decode exactly
  // A row far outside the trained range clamps to it.
  const float far[] = {-100, 100, 2, 3};
  const uint64_t farId = 12;
  index.add(&farId, far, 1);
  const SearchOutput clamped = index.search(far, 1, 1);
  CHECK(clamped.ids[0] == farId);
  // Stored as {0, 5, 2, 3}, the nearest ends of the ranges [0, 4], [1, 5], [2, 6], [3, 7].
  CHECK_MSG(std::fabs(clamped.scores[0] + (100.0f * 100.0f + 95.0f * 95.0f)) < 1e-2f, clamped.scores[0]);
  for (simd::Element other : {simd::Element::F32, simd::Element::F16, simd::Element::BF16}) {
    FlatIndex plain(4, Metric::InnerProduct, simd::bestLevel(), 1, other);
    CHECK(plain.trained());
    CHECK_THROWS_CODE(plain.train(rows, 2), ErrorCode::InvalidArgument);
  }
  CHECK_THROWS_CODE(FlatIndex(size_t{1} << 24, Metric::L2, simd::bestLevel(), 1, simd::Element::I8),
                    ErrorCode::InvalidArgument);
}

TEST_CASE("flat_i8.memory_is_one_byte_per_value_plus_norms_and_ids") {
  const size_t dim = 96, n = 3000;
  const auto data = randomVectors(n, dim, 3);
  std::vector<uint64_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = i;
  FlatIndex f32(dim, Metric::InnerProduct, simd::Level::Scalar, 1, simd::Element::F32);
  FlatIndex i8(dim, Metric::InnerProduct, simd::Level::Scalar, 1, simd::Element::I8);
  CHECK(i8.memoryBytes() == 0);
  i8.train(data.data(), n);
  CHECK(i8.memoryBytes() == 2 * dim * sizeof(float));  // the quantizer's ranges
  f32.add(ids.data(), data.data(), n);
  i8.add(ids.data(), data.data(), n);
  // Same capacity, same ids and norms: only the vectors differ, 3 bytes per value.
  CHECK(f32.memoryBytes() - (i8.memoryBytes() - 2 * dim * sizeof(float)) >= n * dim * 3);
  CHECK(i8.memoryBytes() * 2 < f32.memoryBytes());
}
