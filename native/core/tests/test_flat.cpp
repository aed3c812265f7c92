#include <algorithm>
#include <atomic>
#include <limits>
#include <map>
#include <thread>

#include "../error.h"
#include "../flat.h"
#include "../simd/dispatch.h"
#include "../simd/half.h"
#include "check.h"
#include "test_util.h"

using namespace ebrix;
using namespace ebrix::test;

namespace {

double exactScore(Metric metric, const float* q, const float* x, size_t dim) {
  if (metric == Metric::L2) {
    double s = 0.0;
    for (size_t i = 0; i < dim; ++i) s += (double(q[i]) - x[i]) * (double(q[i]) - x[i]);
    return -s;
  }
  if (metric == Metric::Cosine) {
    const double qq = dotRef(q, q, dim), xx = dotRef(x, x, dim);
    if (qq == 0 || xx == 0) return 0.0;
    return dotRef(q, x, dim) / std::sqrt(qq * xx);
  }
  return dotRef(q, x, dim);
}

// Checks one result row against brute force: scores sorted, each score right for its id,
// and the id set equal to the true top-k except among near-ties at the k-th score.
void checkRow(Metric metric, const std::vector<float>& data, const std::vector<uint64_t>& ids,
              const float* q, size_t dim, size_t k, const uint64_t* gotIds, const float* gotScores,
              const std::string& what) {
  const size_t n = ids.size();
  std::vector<std::pair<double, uint64_t>> truth;
  std::map<uint64_t, double> scoreOf;
  for (size_t r = 0; r < n; ++r) {
    const double s = exactScore(metric, q, data.data() + r * dim, dim);
    truth.push_back({s, ids[r]});
    scoreOf[ids[r]] = s;
  }
  std::sort(truth.begin(), truth.end(), [](auto& a, auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
  const size_t keep = std::min(k, n);
  double scale = 1.0;
  for (auto& t : truth) scale = std::max(scale, std::fabs(t.first));
  const double tol = 1e-4 * scale;
  for (size_t i = 0; i < k; ++i) {
    if (i >= keep) {
      CHECK_MSG(gotIds[i] == kNoId && gotScores[i] == -std::numeric_limits<float>::infinity(), what << " padding at " << i);
      continue;
    }
    CHECK_MSG(scoreOf.count(gotIds[i]) == 1, what << " unknown id at " << i);
    CHECK_MSG(std::fabs(gotScores[i] - scoreOf[gotIds[i]]) <= tol, what << " score of id at " << i);
    if (i > 0) CHECK_MSG(gotScores[i] <= gotScores[i - 1], what << " order at " << i);
    // Anything clearly better than the k-th true score must be present.
    CHECK_MSG(scoreOf[gotIds[i]] >= truth[keep - 1].first - tol, what << " too low at " << i);
  }
  for (size_t i = 0; i < keep; ++i) {
    if (truth[i].first <= truth[keep - 1].first + tol) break;
    CHECK_MSG(std::find(gotIds, gotIds + keep, truth[i].second) != gotIds + keep, what << " missing true rank " << i);
  }
}

}  // namespace

TEST_CASE("flat.exact_equals_brute_force_every_isa_metric_k") {
  for (simd::Level level : simd::supportedLevels()) {
    for (Metric metric : {Metric::InnerProduct, Metric::Cosine, Metric::L2}) {
      for (size_t dim : {size_t{3}, size_t{17}, size_t{64}, size_t{100}}) {
        const size_t n = 1500;
        auto data = randomVectors(n, dim, 21 + static_cast<uint32_t>(dim));
        std::vector<uint64_t> ids(n);
        for (size_t i = 0; i < n; ++i) ids[i] = (i * 2654435761u) % 1000003u;  // unique, unordered
        FlatIndex index(dim, metric, level, 3);
        index.add(ids.data(), data.data(), 700);
        index.add(ids.data() + 700, data.data() + 700 * dim, n - 700);
        CHECK(index.size() == n);
        // 3 queries take the streaming path, 40 the tiled path.
        for (size_t nq : {size_t{3}, size_t{40}}) {
          const auto queries = randomVectors(nq, dim, 99 + static_cast<uint32_t>(nq));
          for (size_t k : {size_t{1}, size_t{10}, size_t{100}, n + 5}) {
            const SearchOutput out = index.search(queries.data(), nq, k);
            CHECK(out.ids.size() == nq * k);
            for (size_t q = 0; q < nq; ++q) {
              checkRow(metric, data, ids, queries.data() + q * dim, dim, k, out.ids.data() + q * k,
                       out.scores.data() + q * k,
                       std::string(simd::levelName(level)) + " " + metricName(metric) + " dim " +
                           std::to_string(dim) + " nq " + std::to_string(nq) + " k " + std::to_string(k));
            }
          }
        }
      }
    }
  }
}

TEST_CASE("flat.allow_bitset_equals_search_of_the_allowed_subset_every_isa") {
  for (simd::Level level : simd::supportedLevels()) {
    const size_t n = 2000, dim = 19;
    auto data = randomVectors(n, dim, 51);
    std::vector<uint64_t> ids(n);
    for (size_t i = 0; i < n; ++i) ids[i] = (i * 2654435761u) % 1000003u;
    FlatIndex index(dim, Metric::L2, level, 3);
    index.add(ids.data(), data.data(), n);
    // Random 25% of rows, then a bitset shorter than the index (rows past it excluded).
    std::vector<uint32_t> dense((n + 31) / 32, 0);
    uint32_t state = 7;
    for (size_t r = 0; r < n; ++r) {
      state = state * 1103515245u + 12345u;
      if ((state >> 16) % 4 == 0) dense[r / 32] |= 1u << (r % 32);
    }
    const std::vector<uint32_t> shortBits = {0xF0F0F0F0u, 0x1u};
    const std::vector<uint32_t>* bitsets[] = {&dense, &shortBits};
    for (const std::vector<uint32_t>* bits : bitsets) {
      std::vector<float> subset;
      std::vector<uint64_t> subsetIds;
      for (size_t r = 0; r < n; ++r) {
        if (r / 32 < bits->size() && ((*bits)[r / 32] >> (r % 32) & 1u)) {
          subset.insert(subset.end(), data.begin() + r * dim, data.begin() + (r + 1) * dim);
          subsetIds.push_back(ids[r]);
        }
      }
      for (size_t nq : {size_t{2}, size_t{30}}) {
        const auto queries = randomVectors(nq, dim, 52 + static_cast<uint32_t>(nq));
        const size_t k = 40;
        const SearchOutput out = index.search(queries.data(), nq, k, 0, bits->data(), bits->size());
        for (size_t q = 0; q < nq; ++q) {
          checkRow(Metric::L2, subset, subsetIds, queries.data() + q * dim, dim, k, out.ids.data() + q * k,
                   out.scores.data() + q * k,
                   std::string(simd::levelName(level)) + " allow nq " + std::to_string(nq));
        }
      }
    }
  }
}

TEST_CASE("flat.identical_across_isas_and_thread_counts") {
  const size_t dim = 33, n = 5000, nq = 25, k = 10;
  const auto data = randomVectors(n, dim, 5);
  const auto queries = randomVectors(nq, dim, 6);
  std::vector<uint64_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = n - i;
  std::vector<uint64_t> reference;
  for (simd::Level level : simd::supportedLevels()) {
    for (unsigned threads : {1u, 2u, 5u}) {
      FlatIndex index(dim, Metric::InnerProduct, level, threads);
      index.add(ids.data(), data.data(), n);
      const SearchOutput out = index.search(queries.data(), nq, k);
      if (reference.empty()) reference = out.ids;
      CHECK_MSG(out.ids == reference, simd::levelName(level) << " threads " << threads);
    }
  }
}

TEST_CASE("flat.ties_go_to_smaller_id") {
  const size_t dim = 4, n = 300;
  std::vector<float> data(n * dim, 1.0f);  // every row identical: all scores tie
  std::vector<uint64_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = 1000 - i;
  FlatIndex index(dim, Metric::InnerProduct, simd::bestLevel(), 2);
  index.add(ids.data(), data.data(), n);
  std::vector<float> queries(20 * dim, 0.5f);
  for (size_t nq : {size_t{1}, size_t{20}}) {
    const SearchOutput out = index.search(queries.data(), nq, 5);
    for (size_t q = 0; q < nq; ++q)
      for (size_t i = 0; i < 5; ++i) CHECK(out.ids[q * 5 + i] == 701 + i);
  }
}

TEST_CASE("flat.bad_input_leaves_index_unchanged") {
  FlatIndex index(4, Metric::InnerProduct, simd::Level::Scalar, 1);
  const std::vector<float> v = {1, 2, 3, 4, 5, 6, 7, 8};
  const uint64_t ids[] = {1, 2};
  index.add(ids, v.data(), 2);
  const uint64_t dupInBatch[] = {3, 3};
  CHECK_THROWS_CODE(index.add(dupInBatch, v.data(), 2), ErrorCode::DuplicateId);
  const uint64_t dupInIndex[] = {5, 2};
  CHECK_THROWS_CODE(index.add(dupInIndex, v.data(), 2), ErrorCode::DuplicateId);
  std::vector<float> bad = v;
  bad[6] = std::numeric_limits<float>::quiet_NaN();
  const uint64_t fresh[] = {7, 8};
  CHECK_THROWS_CODE(index.add(fresh, bad.data(), 2), ErrorCode::InvalidVector);
  bad[6] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_CODE(index.add(fresh, bad.data(), 2), ErrorCode::InvalidVector);
  // Finite but huge: q·x could overflow to Inf/NaN in some summation order.
  std::vector<float> huge = {3e37f, 0, 0, 0, 0, 0, 0, 0};
  CHECK_THROWS_CODE(index.add(fresh, huge.data(), 2), ErrorCode::InvalidVector);
  CHECK_THROWS_CODE(index.search(huge.data(), 1, 1), ErrorCode::InvalidVector);
  const uint64_t reserved[] = {kNoId};
  CHECK_THROWS_CODE(index.add(reserved, v.data(), 1), ErrorCode::InvalidArgument);
  CHECK(index.size() == 2);
  CHECK_THROWS_CODE(index.search(v.data(), 1, 0), ErrorCode::InvalidArgument);
  CHECK_THROWS_CODE(index.search(bad.data() + 4, 1, 1), ErrorCode::InvalidVector);
  CHECK_THROWS_CODE(FlatIndex(0, Metric::L2, simd::Level::Scalar, 1), ErrorCode::InvalidArgument);
  index.add(fresh, v.data(), 2);  // the failed adds reserved nothing
  CHECK(index.size() == 4);
}

TEST_CASE("flat.search_while_adding_sees_consistent_snapshots") {
  const size_t dim = 16, batch = 500, batches = 40;
  FlatIndex index(dim, Metric::L2, simd::bestLevel(), 2);
  // Row i is the vector (i, 0, 0, ...), so the nearest row to (x, 0, ...) is known exactly.
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (size_t b = 0; b < batches; ++b) {
      std::vector<float> data(batch * dim, 0.0f);
      std::vector<uint64_t> ids(batch);
      for (size_t i = 0; i < batch; ++i) {
        ids[i] = b * batch + i;
        data[i * dim] = static_cast<float>(b * batch + i);
      }
      index.add(ids.data(), data.data(), batch);
    }
    done = true;
  });
  size_t searches = 0;
  while (!done || searches < 5) {
    const size_t seen = index.size();
    std::vector<float> q(dim, 0.0f);
    q[0] = 1e9f;  // the largest row present is the nearest
    const SearchOutput out = index.search(q.data(), 1, 1);
    if (seen > 0) CHECK(out.ids[0] >= seen - 1 && out.ids[0] < batch * batches);
    ++searches;
  }
  writer.join();
  CHECK(index.size() == batch * batches);
}

// ---- f16 / bf16 storage ----

namespace {

// What a 16-bit index scores: rows (and queries) normalised in float for cosine as
// FlatIndex does, then rounded to the storage type, as floats.
std::vector<float> storedAs(simd::Element element, Metric metric, const std::vector<float>& data, size_t dim) {
  std::vector<float> out(data.size());
  for (size_t r = 0; r < data.size() / dim; ++r) {
    const float* src = data.data() + r * dim;
    float scale = 1.0f;
    if (metric == Metric::Cosine) {
      double sum = 0.0;
      for (size_t i = 0; i < dim; ++i) sum += double(src[i]) * src[i];
      scale = sum > 0.0 ? float(1.0 / std::sqrt(sum)) : 0.0f;
    }
    for (size_t i = 0; i < dim; ++i) {
      const float x = metric == Metric::Cosine ? src[i] * scale : src[i];
      out[r * dim + i] = element == simd::Element::F16 ? simd::f16ToFloat(simd::floatToF16(x))
                                                        : simd::bf16ToFloat(simd::floatToBf16(x));
    }
  }
  return out;
}

}  // namespace

TEST_CASE("flat.half_storage_equals_brute_force_on_rounded_values_every_isa") {
  for (simd::Level level : simd::supportedLevels()) {
    for (simd::Element element : {simd::Element::F16, simd::Element::BF16}) {
      for (Metric metric : {Metric::InnerProduct, Metric::Cosine, Metric::L2}) {
        for (size_t dim : {size_t{3}, size_t{17}, size_t{64}}) {
          const size_t n = 1300;
          auto data = randomVectors(n, dim, 61 + static_cast<uint32_t>(dim));
          std::vector<uint64_t> ids(n);
          for (size_t i = 0; i < n; ++i) ids[i] = (i * 2654435761u) % 1000003u;
          FlatIndex index(dim, metric, level, 3, element);
          CHECK(index.storage() == element);
          index.add(ids.data(), data.data(), 600);
          index.add(ids.data() + 600, data.data() + 600 * dim, n - 600);  // grows the storage
          const auto rows = storedAs(element, metric, data, dim);
          // Cosine over normalised, rounded vectors is their inner product.
          const Metric scored = metric == Metric::Cosine ? Metric::InnerProduct : metric;
          // Every 3rd row allowed, the last one excluded by a short bitset.
          std::vector<uint32_t> bits((n - 1) / 32, 0);
          std::vector<float> subset;
          std::vector<uint64_t> subsetIds;
          for (size_t r = 0; r < bits.size() * 32; ++r) {
            if (r % 3 != 0) continue;
            bits[r / 32] |= 1u << (r % 32);
            subset.insert(subset.end(), rows.begin() + r * dim, rows.begin() + (r + 1) * dim);
            subsetIds.push_back(ids[r]);
          }
          // 3 queries take the streaming path, 30 the tiled path.
          for (size_t nq : {size_t{3}, size_t{30}}) {
            const auto raw = randomVectors(nq, dim, 199 + static_cast<uint32_t>(nq));
            const auto queries = storedAs(element, metric, raw, dim);
            const std::string what = std::string(simd::levelName(level)) + " " + simd::elementName(element) + " " +
                                     metricName(metric) + " dim " + std::to_string(dim) + " nq " + std::to_string(nq);
            for (size_t k : {size_t{1}, size_t{25}, n + 5}) {
              const SearchOutput out = index.search(raw.data(), nq, k);
              for (size_t q = 0; q < nq; ++q) {
                checkRow(scored, rows, ids, queries.data() + q * dim, dim, k, out.ids.data() + q * k,
                         out.scores.data() + q * k, what + " k " + std::to_string(k));
              }
            }
            const size_t k = 20;
            const SearchOutput out = index.search(raw.data(), nq, k, 0, bits.data(), bits.size());
            for (size_t q = 0; q < nq; ++q) {
              checkRow(scored, subset, subsetIds, queries.data() + q * dim, dim, k, out.ids.data() + q * k,
                       out.scores.data() + q * k, what + " allow");
            }
          }
        }
      }
    }
  }
}

TEST_CASE("flat.half_storage_rejects_values_f16_cannot_hold_and_halves_memory") {
  const uint64_t ids[] = {1, 2};
  std::vector<float> big = {1, 2, 3, 4, 5, 6, 70000.0f, 8};
  for (Metric metric : {Metric::InnerProduct, Metric::L2}) {
    FlatIndex f16(4, metric, simd::bestLevel(), 1, simd::Element::F16);
    try {
      f16.add(ids, big.data(), 2);
      CHECK_MSG(false, "f16 accepted 70000");
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::InvalidVector);
      CHECK_MSG(std::string(e.what()).find("row 1, column 2") != std::string::npos, e.what());
    }
    CHECK(f16.size() == 0);
    CHECK_THROWS_CODE(f16.search(big.data(), 2, 1), ErrorCode::InvalidVector);
    std::vector<float> edge = {65504.0f, -65519.0f, 0, 0, 1, 2, 3, 4};  // both round to ±65504
    f16.add(ids, edge.data(), 2);
    CHECK(f16.size() == 2);
  }
  // Cosine normalises first, and bf16 has float's range: both take 70000.
  FlatIndex cosine(4, Metric::Cosine, simd::bestLevel(), 1, simd::Element::F16);
  cosine.add(ids, big.data(), 2);
  FlatIndex bf16(4, Metric::L2, simd::bestLevel(), 1, simd::Element::BF16);
  bf16.add(ids, big.data(), 2);
  CHECK(bf16.search(big.data() + 4, 1, 1).ids[0] == 2);

  const size_t dim = 96, n = 3000;
  const auto data = randomVectors(n, dim, 3);
  std::vector<uint64_t> many(n);
  for (size_t i = 0; i < n; ++i) many[i] = i;
  size_t bytes[3] = {};
  for (simd::Element element : {simd::Element::F32, simd::Element::F16, simd::Element::BF16}) {
    FlatIndex index(dim, Metric::InnerProduct, simd::Level::Scalar, 1, element);
    index.add(many.data(), data.data(), n);
    bytes[static_cast<int>(element)] = index.memoryBytes();
  }
  CHECK(bytes[1] == bytes[2]);
  CHECK(bytes[1] < bytes[0]);
  // Only the vectors shrink: 2 bytes less per element of every row of capacity.
  CHECK(bytes[0] - bytes[1] >= n * dim * 2);
}
