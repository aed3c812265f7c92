#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "../error.h"
#include "../flat.h"
#include "../hnsw.h"
#include "../simd/dispatch.h"
#include "check.h"
#include "test_util.h"

using namespace ebrix;
using namespace ebrix::test;

namespace {

// Gaussian blobs: `clusters` centres (spread 1), points around them (spread 0.35), the same
// centres for every seed so that queries fall among the data.
std::vector<float> blobs(size_t n, size_t dim, size_t clusters, uint32_t seed) {
  std::mt19937 shared(99);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> centres(clusters * dim);
  for (auto& c : centres) c = normal(shared);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, clusters - 1);
  std::vector<float> out(n * dim);
  for (size_t i = 0; i < n; ++i) {
    const size_t c = pick(rng);
    for (size_t d = 0; d < dim; ++d) out[i * dim + d] = centres[c * dim + d] + 0.35f * normal(rng);
  }
  return out;
}

std::vector<uint64_t> idsFor(size_t n, uint64_t offset = 0) {
  std::vector<uint64_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = offset + i * 7919 + 13;  // not the row numbers
  return ids;
}

double recall(const SearchOutput& truth, const SearchOutput& got) {
  size_t hits = 0, total = 0;
  for (size_t q = 0; q < truth.queries; ++q) {
    std::set<uint64_t> want;
    for (size_t i = 0; i < truth.k; ++i) {
      if (truth.ids[q * truth.k + i] != kNoId) want.insert(truth.ids[q * truth.k + i]);
    }
    for (size_t i = 0; i < got.k; ++i) hits += want.count(got.ids[q * got.k + i]);
    total += want.size();
  }
  return total == 0 ? 1.0 : static_cast<double>(hits) / static_cast<double>(total);
}

HnswParams paramsFor(size_t dim, Metric metric, simd::Element storage = simd::Element::F32) {
  HnswParams p;
  p.dim = dim;
  p.metric = metric;
  p.storage = storage;
  return p;
}

HnswSearchParams searchFor(size_t k, size_t ef, const uint32_t* bits = nullptr, size_t words = 0) {
  HnswSearchParams sp;
  sp.k = k;
  sp.expansion = ef;
  sp.allowBits = bits;
  sp.allowWords = words;
  return sp;
}

struct Data {
  size_t dim = 32, n = 4000, nq = 60, k = 10;
  std::vector<float> base = blobs(4000, 32, 40, 5);
  std::vector<float> queries = blobs(60, 32, 40, 6);
  std::vector<uint64_t> ids = idsFor(4000);
};

SearchOutput exact(Metric metric, const Data& d, size_t k, const uint32_t* bits = nullptr, size_t words = 0) {
  FlatIndex flat(d.dim, metric, simd::Level::Scalar, 2);
  flat.add(d.ids.data(), d.base.data(), d.n);
  return flat.search(d.queries.data(), d.nq, k, 0, bits, words);
}

void checkRecall(Metric metric) {
  Data d;
  HnswIndex index(paramsFor(d.dim, metric), simd::defaultLevel(), 2);
  // Two adds (rows numbered across them), on one thread: a graph built on several threads
  // differs run to run, and the recall floor below is checked on one graph.
  index.add(d.ids.data(), d.base.data(), 1500, {}, 1);
  index.add(d.ids.data() + 1500, d.base.data() + 1500 * d.dim, d.n - 1500, {}, 1);
  CHECK(index.size() == d.n);
  const SearchOutput truth = exact(metric, d, d.k);
  std::string trace;
  double low = 0, high = 0;
  for (size_t ef : {10, 64, 200}) {
    const double r = recall(truth, index.search(d.queries.data(), d.nq, searchFor(d.k, ef)));
    trace += " ef " + std::to_string(ef) + ": " + std::to_string(r);
    if (ef == 10) low = r;
    high = r;
  }
  std::printf("recall@10 %s:%s\n", metricName(metric), trace.c_str());
  CHECK_MSG(high >= 0.98, trace);
  CHECK_MSG(high >= low, trace);
  // Scores are the exact scores of the returned ids (same kernels), best first.
  const SearchOutput got = index.search(d.queries.data(), d.nq, searchFor(d.k, 200));
  for (size_t q = 0; q < d.nq; ++q) {
    for (size_t i = 0; i < d.k; ++i) {
      if (i > 0) CHECK(got.scores[q * d.k + i] <= got.scores[q * d.k + i - 1]);
      if (got.ids[q * d.k + i] == truth.ids[q * d.k]) {
        CHECK_MSG(std::fabs(got.scores[q * d.k + i] - truth.scores[q * d.k]) <=
                      1e-4f * std::max(1.0f, std::fabs(truth.scores[q * d.k])),
                  "query " << q << ": " << got.scores[q * d.k + i] << " vs " << truth.scores[q * d.k]);
      }
    }
  }
}

}  // namespace

TEST_CASE("hnsw.recall_ip") { checkRecall(Metric::InnerProduct); }
TEST_CASE("hnsw.recall_cosine") { checkRecall(Metric::Cosine); }
TEST_CASE("hnsw.recall_l2") { checkRecall(Metric::L2); }

TEST_CASE("hnsw.every_simd_level_and_storage") {
  // The distance is ebrix's kernel table: every level this CPU runs gives the same recall
  // (within graph-build noise) and scores agreeing with scalar; f16 / bf16 rows stay close.
  Data d;
  d.n = 2000;
  d.base.resize(d.n * d.dim);
  d.ids.resize(d.n);
  const SearchOutput truth = exact(Metric::L2, d, d.k);
  for (simd::Level level : simd::supportedLevels()) {
    for (simd::Element storage : {simd::Element::F32, simd::Element::F16, simd::Element::BF16}) {
      HnswIndex index(paramsFor(d.dim, Metric::L2, storage), level, 2);
      index.add(d.ids.data(), d.base.data(), d.n, {}, 1);  // one thread: a reproducible graph
      const SearchOutput got = index.search(d.queries.data(), d.nq, searchFor(d.k, 128));
      const double r = recall(truth, got);
      const double floor = storage == simd::Element::BF16 ? 0.9 : 0.97;
      CHECK_MSG(r >= floor, simd::levelName(level) << " " << simd::elementName(storage) << " recall " << r);
      for (size_t q = 0; q < d.nq; ++q) {
        if (got.ids[q * d.k] != truth.ids[q * d.k]) continue;
        const float tolerance = storage == simd::Element::F32 ? 1e-4f : 0.02f;
        CHECK_MSG(std::fabs(got.scores[q * d.k] - truth.scores[q * d.k]) <= tolerance * std::fabs(truth.scores[q * d.k]) + 1e-4f,
                  simd::levelName(level) << " " << simd::elementName(storage) << " score " << got.scores[q * d.k]
                                         << " vs " << truth.scores[q * d.k]);
      }
    }
  }
}

TEST_CASE("hnsw.filtered_search") {
  Data d;
  HnswIndex index(paramsFor(d.dim, Metric::InnerProduct), simd::defaultLevel(), 2);
  index.add(d.ids.data(), d.base.data(), d.n);
  std::mt19937 rng(17);
  for (double fraction : {0.5, 0.1, 0.01}) {
    std::vector<uint32_t> bits((d.n + 31) / 32, 0);
    std::unordered_set<uint64_t> allowed;
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (size_t r = 0; r < d.n; ++r) {
      if (u(rng) < fraction) {
        bits[r / 32] |= 1u << (r % 32);
        allowed.insert(d.ids[r]);
      }
    }
    const SearchOutput truth = exact(Metric::InnerProduct, d, d.k, bits.data(), bits.size());
    for (HnswFilter filter : {HnswFilter::Auto, HnswFilter::Graph, HnswFilter::Scan}) {
      HnswSearchParams sp = searchFor(d.k, 64, bits.data(), bits.size());
      sp.filterStrategy = filter;
      const SearchOutput got = index.search(d.queries.data(), d.nq, sp);
      for (uint64_t id : got.ids) CHECK_MSG(id == kNoId || allowed.count(id), "id " << id << " is not allowed");
      const double r = recall(truth, got);
      const char* name = filter == HnswFilter::Auto ? "auto" : filter == HnswFilter::Graph ? "graph" : "scan";
      std::printf("filtered recall@10 at %.0f%% allowed (%zu rows), %s: %.4f\n", fraction * 100, allowed.size(), name, r);
      CHECK_MSG(r >= (filter == HnswFilter::Scan ? 0.9999 : 0.9), "filtered recall " << r << " at " << fraction << " " << name);
    }
  }
  // Nothing allowed, and a bitset shorter than the rows (rows past it are not allowed).
  const uint32_t none = 0;
  const SearchOutput empty = index.search(d.queries.data(), 1, searchFor(5, 64, &none, 1));
  for (uint64_t id : empty.ids) CHECK(id == kNoId);
  const uint32_t firstWord = 0xFFFFFFFFu;
  const SearchOutput short1 = index.search(d.queries.data(), 2, searchFor(40, 64, &firstWord, 1));
  for (size_t i = 0; i < short1.ids.size(); ++i) {
    const bool inFirst = std::find(d.ids.begin(), d.ids.begin() + 32, short1.ids[i]) != d.ids.begin() + 32;
    CHECK(i % 40 < 32 ? inFirst : short1.ids[i] == kNoId);
  }
}

TEST_CASE("hnsw.remove_and_reuse") {
  Data d;
  HnswIndex index(paramsFor(d.dim, Metric::L2), simd::defaultLevel(), 2);
  index.add(d.ids.data(), d.base.data(), d.n);
  const size_t bytesBefore = index.memoryBytes();
  // Remove every other vector; none of them comes back, and the rest are still found.
  std::vector<uint64_t> gone;
  for (size_t i = 0; i < d.n; i += 2) gone.push_back(d.ids[i]);
  index.remove(gone.data(), gone.size());
  CHECK(index.size() == d.n - gone.size());
  CHECK(!index.contains(d.ids[0]));
  CHECK(index.contains(d.ids[1]));
  const std::unordered_set<uint64_t> removed(gone.begin(), gone.end());
  const SearchOutput got = index.search(d.queries.data(), d.nq, searchFor(d.k, 64));
  for (uint64_t id : got.ids) CHECK_MSG(id != kNoId && !removed.count(id), "removed id " << id << " returned");
  // Exact truth over the kept half.
  Data kept = d;
  kept.base.clear();
  kept.ids.clear();
  for (size_t i = 1; i < d.n; i += 2) {
    kept.ids.push_back(d.ids[i]);
    kept.base.insert(kept.base.end(), d.base.begin() + i * d.dim, d.base.begin() + (i + 1) * d.dim);
  }
  kept.n = kept.ids.size();
  const double r = recall(exact(Metric::L2, kept, d.k), got);
  CHECK_MSG(r >= 0.95, "recall after removing half: " << r);

  // As FlatIndex and IvfPqIndex: unknown ids (or ones removed already) are skipped, a repeat
  // counts once, and the count is of the ids actually removed.
  const uint64_t unknown[] = {123456789, gone[0]};
  CHECK(index.remove(unknown, 2) == 0);
  CHECK(index.size() == d.n - gone.size());
  const uint64_t twice[] = {d.ids[1], 123456789, d.ids[1]};
  CHECK(index.remove(twice, 3) == 1);
  CHECK(!index.contains(d.ids[1]));
  CHECK(index.size() == d.n - gone.size() - 1);
  const std::vector<float> back(d.base.begin() + d.dim, d.base.begin() + 2 * d.dim);
  index.add(&d.ids[1], back.data(), 1);
  CHECK(index.size() == d.n - gone.size());

  // Removed ids can come back (as new rows); their nodes are reused, so churn does not grow
  // the graph.
  for (int round = 0; round < 3; ++round) {
    std::vector<float> again;
    for (size_t i = 0; i < d.n; i += 2) again.insert(again.end(), d.base.begin() + i * d.dim, d.base.begin() + (i + 1) * d.dim);
    index.add(gone.data(), again.data(), gone.size());
    CHECK(index.size() == d.n);
    index.remove(gone.data(), gone.size());
  }
  index.add(gone.data(), d.base.data(), gone.size());  // other vectors under the same ids
  CHECK(index.size() == d.n);
  const size_t bytesAfter = index.memoryBytes();
  // Only the row → id table grows with churn (8 bytes a row).
  CHECK_MSG(bytesAfter <= bytesBefore + 8 * 4 * d.n + (size_t{1} << 16), bytesBefore << " -> " << bytesAfter);
  // gone[j] now holds base row j: row 0's vector is found under gone[0] at distance 0.
  const SearchOutput self = index.search(d.base.data(), 1, searchFor(1, 64));
  CHECK(self.ids[0] == gone[0] && self.scores[0] == 0.0f);
}

TEST_CASE("hnsw.errors_leave_the_index_unchanged") {
  const size_t dim = 8;
  CHECK_THROWS_CODE(HnswIndex(paramsFor(0, Metric::L2), simd::Level::Scalar, 1), ErrorCode::InvalidArgument);
  HnswParams bad = paramsFor(dim, Metric::L2);
  bad.connectivity = 1;
  CHECK_THROWS_CODE(HnswIndex(bad, simd::Level::Scalar, 1), ErrorCode::InvalidArgument);

  HnswIndex index(paramsFor(dim, Metric::InnerProduct, simd::Element::F16), simd::defaultLevel(), 2);
  const std::vector<float> v = randomVectors(4, dim, 3);
  const uint64_t ids[] = {1, 2, 3, 4};
  index.add(ids, v.data(), 2);
  const uint64_t dupInBatch[] = {7, 7};
  CHECK_THROWS_CODE(index.add(dupInBatch, v.data(), 2), ErrorCode::DuplicateId);
  const uint64_t dupInIndex[] = {8, 1};
  CHECK_THROWS_CODE(index.add(dupInIndex, v.data(), 2), ErrorCode::DuplicateId);
  std::vector<float> nan = v;
  nan[dim + 3] = std::nanf("");
  CHECK_THROWS_CODE(index.add(ids + 2, nan.data(), 2), ErrorCode::InvalidVector);
  std::vector<float> big = v;
  big[5] = 70000.0f;  // past f16's range
  CHECK_THROWS_CODE(index.add(ids + 2, big.data(), 2), ErrorCode::InvalidVector);
  CHECK_THROWS_CODE(index.search(big.data(), 1, searchFor(1, 16)), ErrorCode::InvalidVector);
  const uint64_t reserved[] = {kNoId};
  CHECK_THROWS_CODE(index.add(reserved, v.data(), 1), ErrorCode::InvalidArgument);
  CHECK_THROWS_CODE(index.search(v.data(), 1, searchFor(0, 16)), ErrorCode::InvalidArgument);
  CHECK(index.size() == 2);
  CHECK(!index.contains(7) && !index.contains(8) && !index.contains(3));
  // k past the size pads, as FlatIndex.
  const SearchOutput padded = index.search(v.data(), 1, searchFor(5, 16));
  CHECK(padded.ids[1] != kNoId && padded.ids[2] == kNoId && std::isinf(padded.scores[4]));
  // Searching an empty index gives padding only.
  HnswIndex empty(paramsFor(dim, Metric::L2), simd::defaultLevel(), 2);
  const SearchOutput none = empty.search(v.data(), 2, searchFor(3, 16));
  for (uint64_t id : none.ids) CHECK(id == kNoId);
}

TEST_CASE("hnsw.concurrent_adds_searches_and_removes") {
  // Adds (growing the graph many times), searches with and without filters, and removes of
  // earlier batches, all at once, from more threads than the index has usearch contexts (2 ×
  // cores + 8), so some wait for one: results hold only ids that were added, nothing
  // crashes, and the index ends whole.
  const size_t dim = 16, batches = 40, perBatch = 150;
  const std::vector<float> data = blobs(batches * perBatch, dim, 20, 41);
  const std::vector<uint64_t> ids = idsFor(batches * perBatch, 1000);
  const std::unordered_set<uint64_t> known(ids.begin(), ids.end());
  HnswIndex index(paramsFor(dim, Metric::Cosine), simd::defaultLevel(), 4);
  index.add(ids.data(), data.data(), perBatch);
  std::atomic<bool> done{false};
  std::atomic<size_t> bad{0}, searches{0};
  std::vector<std::thread> searchers;
  const int searcherCount = static_cast<int>(2 * std::thread::hardware_concurrency() + 12);
  for (int t = 0; t < searcherCount; ++t) {
    searchers.emplace_back([&, t] {
      const std::vector<float> queries = blobs(8, dim, 20, 100 + t);
      std::vector<uint32_t> bits(batches * perBatch / 32 + 1, 0x55555555u);
      while (!done.load()) {
        const bool filtered = (searches.load() + t) % 2 == 0;
        const SearchOutput out = index.search(queries.data(), 8, searchFor(10, 32, filtered ? bits.data() : nullptr, bits.size()));
        for (uint64_t id : out.ids) {
          if (id != kNoId && !known.count(id)) bad.fetch_add(1);
        }
        searches.fetch_add(1);
      }
    });
  }
  for (size_t b = 1; b < batches; ++b) {
    index.add(ids.data() + b * perBatch, data.data() + b * perBatch * dim, perBatch, {}, 2);
    if (b % 5 == 0) index.remove(ids.data() + (b - 5) * perBatch, perBatch / 2);
  }
  done.store(true);
  for (auto& t : searchers) t.join();
  CHECK(bad.load() == 0);
  CHECK(searches.load() > 0);
  const size_t removed = (batches - 1) / 5 * (perBatch / 2);
  CHECK(index.size() == batches * perBatch - removed);
  std::printf("%zu searches ran during %zu adds\n", searches.load(), batches - 1);
  // Every vector still in the index finds itself.
  size_t found = 0;
  const SearchOutput self = index.search(data.data() + perBatch * dim, perBatch, searchFor(1, 64));
  for (size_t i = 0; i < perBatch; ++i) found += self.ids[i] == ids[perBatch + i];
  CHECK_MSG(found >= perBatch * 95 / 100, found << " of " << perBatch);
}
