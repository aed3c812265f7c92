// Removal, upsert, get and compaction of the indexes, checked against a plain reference: a
// fresh index built from the live vectors alone must return exactly what the mutated one
// does, and a search running beside the writers must return the result of some state that
// existed.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>
#include <limits>

#include "../error.h"
#include "../flat.h"
#include "../hnsw.h"
#include "../ivfpq.h"
#include "../simd/dispatch.h"
#include "check.h"
#include "test_util.h"

using namespace ebrix;
using namespace ebrix::test;

namespace {

// What the index should hold: every row it numbered (adds and upserts, in order), and which
// are live.
struct Reference {
  size_t dim = 0;
  std::vector<uint64_t> idOfRow;
  std::vector<std::vector<float>> vectorOfRow;
  std::vector<bool> live;
  std::unordered_map<uint64_t, size_t> rowOfId;

  void write(const std::vector<uint64_t>& ids, const std::vector<float>& vectors) {
    for (size_t i = 0; i < ids.size(); ++i) {
      const auto it = rowOfId.find(ids[i]);
      if (it != rowOfId.end()) live[it->second] = false;
      rowOfId[ids[i]] = idOfRow.size();
      idOfRow.push_back(ids[i]);
      vectorOfRow.emplace_back(vectors.begin() + i * dim, vectors.begin() + (i + 1) * dim);
      live.push_back(true);
    }
  }
  size_t remove(const std::vector<uint64_t>& ids) {
    size_t n = 0;
    for (const uint64_t id : ids) {
      const auto it = rowOfId.find(id);
      if (it == rowOfId.end()) continue;
      live[it->second] = false;
      rowOfId.erase(it);
      ++n;
    }
    return n;
  }
  size_t size() const { return rowOfId.size(); }
  std::vector<size_t> liveRows() const {
    std::vector<size_t> rows;
    for (size_t r = 0; r < live.size(); ++r) {
      if (live[r]) rows.push_back(r);
    }
    return rows;
  }
};

struct FlatConfig {
  Metric metric;
  simd::Element storage;
};

std::unique_ptr<FlatIndex> makeFlat(const FlatConfig& c, size_t dim, const std::vector<float>& sample) {
  auto index = std::make_unique<FlatIndex>(dim, c.metric, simd::bestLevel(), 2, c.storage);
  if (c.storage == simd::Element::I8) index->train(sample.data(), sample.size() / dim);
  return index;
}

// The same searches on `index` and on a fresh index of the reference's live rows (in row
// order) give the same ids and scores, with and without an allow bitset over rows.
void checkFlatAgainstFresh(FlatIndex& index, const Reference& ref, const FlatConfig& c,
                           const std::vector<float>& sample, uint32_t seed) {
  const size_t dim = ref.dim;
  const std::vector<size_t> rows = ref.liveRows();
  CHECK(index.size() == rows.size());
  auto fresh = makeFlat(c, dim, sample);
  std::vector<uint64_t> ids;
  std::vector<float> data;
  for (const size_t r : rows) {
    ids.push_back(ref.idOfRow[r]);
    data.insert(data.end(), ref.vectorOfRow[r].begin(), ref.vectorOfRow[r].end());
  }
  fresh->add(ids.data(), data.data(), ids.size());

  std::mt19937 rng(seed);
  const size_t k = 7;
  const std::vector<float> queries = randomVectors(3, dim, seed + 1);
  // An allow bitset over the index's rows (removed ones included), and the same rows of the
  // fresh index.
  std::vector<uint32_t> allow((ref.idOfRow.size() + 31) / 32, 0), freshAllow((rows.size() + 31) / 32, 0);
  for (size_t r = 0; r < ref.idOfRow.size(); ++r) {
    if (rng() % 3 != 0) allow[r / 32] |= 1u << (r % 32);
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    if (allow[rows[i] / 32] >> (rows[i] % 32) & 1u) freshAllow[i / 32] |= 1u << (i % 32);
  }
  for (int filtered = 0; filtered < 2; ++filtered) {
    const SearchOutput got = filtered ? index.search(queries.data(), 3, k, 0, allow.data(), allow.size())
                                      : index.search(queries.data(), 3, k);
    const SearchOutput want = filtered ? fresh->search(queries.data(), 3, k, 0, freshAllow.data(), freshAllow.size())
                                       : fresh->search(queries.data(), 3, k);
    CHECK_MSG(got.ids == want.ids, "filtered " << filtered);
    CHECK(got.scores == want.scores);
  }
  // get: the stored vector, as the fresh index stores it; has and rowsOf.
  std::vector<float> a(dim), b(dim);
  for (size_t i = 0; i < rows.size(); i += std::max<size_t>(1, rows.size() / 20)) {
    CHECK(index.contains(ids[i]));
    index.get(ids[i], a.data());
    fresh->get(ids[i], b.data());
    CHECK(a == b);
    int64_t row = -2;
    index.rowsOf(&ids[i], 1, &row);
    CHECK(row == static_cast<int64_t>(rows[i]));
  }
}

std::vector<uint64_t> randomIds(std::mt19937& rng, size_t n, uint64_t range) {
  std::vector<uint64_t> ids;
  std::set<uint64_t> seen;
  while (ids.size() < n) {
    const uint64_t id = rng() % range;
    if (seen.insert(id).second) ids.push_back(id);
  }
  return ids;
}

}  // namespace

TEST_CASE("flat.remove_upsert_compact_equal_a_fresh_index_of_the_live_rows") {
  const size_t dim = 19;
  const std::vector<FlatConfig> configs = {{Metric::InnerProduct, simd::Element::F32},
                                           {Metric::L2, simd::Element::F32},
                                           {Metric::Cosine, simd::Element::F16},
                                           {Metric::L2, simd::Element::BF16},
                                           {Metric::InnerProduct, simd::Element::I8},
                                           {Metric::Cosine, simd::Element::I8}};
  const std::vector<float> sample = randomVectors(300, dim, 77);
  for (const FlatConfig& c : configs) {
    std::mt19937 rng(5 + static_cast<uint32_t>(c.storage));
    auto index = makeFlat(c, dim, sample);
    Reference ref;
    ref.dim = dim;
    uint32_t seed = 100;
    for (int step = 0; step < 24; ++step) {
      const int op = step < 2 ? 0 : static_cast<int>(rng() % 4);
      if (op == 0 || op == 1) {
        // add new ids, or upsert a mix of held and new ones
        const size_t n = 1 + rng() % 400;
        std::vector<uint64_t> ids = randomIds(rng, n, op == 0 ? 1u << 30 : 3000);
        if (op == 0) {
          ids.erase(std::remove_if(ids.begin(), ids.end(), [&](uint64_t id) { return ref.rowOfId.count(id) != 0; }),
                    ids.end());
        }
        const std::vector<float> data = randomVectors(ids.size(), dim, seed++);
        if (op == 0) {
          index->add(ids.data(), data.data(), ids.size());
        } else {
          // Some held ids, so that the upsert replaces as well as adds.
          for (size_t i = 0; i < ids.size() && !ref.idOfRow.empty(); i += 3) {
            const uint64_t held = ref.idOfRow[rng() % ref.idOfRow.size()];
            if (ref.rowOfId.count(held) && std::find(ids.begin(), ids.end(), held) == ids.end()) ids[i] = held;
          }
          index->upsert(ids.data(), data.data(), ids.size());
        }
        ref.write(ids, data);
      } else if (op == 2) {
        // remove held ids, unknown ones and a repeat
        std::vector<uint64_t> ids;
        for (size_t i = 0; i < 1 + rng() % 200 && !ref.idOfRow.empty(); ++i) ids.push_back(ref.idOfRow[rng() % ref.idOfRow.size()]);
        ids.push_back(987654321987ull);
        if (!ids.empty()) ids.push_back(ids.front());
        const size_t want = ref.remove(ids);
        CHECK(index->remove(ids.data(), ids.size()) == want);
      } else {
        const size_t before = index->size();
        index->compact();
        CHECK(index->size() == before);
      }
      checkFlatAgainstFresh(*index, ref, c, sample, seed++);
    }
    // After a final compaction, a save and both opens hold the live rows, renumbered from 0.
    index->compact();
    checkFlatAgainstFresh(*index, ref, c, sample, seed++);
  }
}

TEST_CASE("flat.typed_errors_and_edges_of_mutation") {
  const size_t dim = 8;
  FlatIndex index(dim, Metric::L2, simd::bestLevel(), 1);  // l2: each vector is its own nearest
  const std::vector<float> data = randomVectors(4, dim, 1);
  const std::vector<uint64_t> ids = {10, 11, 12, 13};
  index.add(ids.data(), data.data(), 4);
  std::vector<float> out(dim);
  CHECK_THROWS_CODE(index.get(99, out.data()), ErrorCode::UnknownId);
  const std::vector<uint64_t> twice = {20, 20};
  CHECK_THROWS_CODE(index.upsert(twice.data(), data.data(), 2), ErrorCode::DuplicateId);
  const uint64_t reserved = kNoId;
  CHECK_THROWS_CODE(index.upsert(&reserved, data.data(), 1), ErrorCode::InvalidArgument);
  std::vector<float> bad(data);
  bad[3] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_CODE(index.upsert(ids.data(), bad.data(), 1), ErrorCode::InvalidVector);
  CHECK(index.size() == 4);
  // An add of a removed id is fine; an add of a held one is not.
  CHECK(index.remove(ids.data(), 1) == 1);
  CHECK(index.remove(ids.data(), 1) == 0);
  CHECK(!index.contains(10));
  CHECK_THROWS_CODE(index.get(10, out.data()), ErrorCode::UnknownId);
  index.add(ids.data(), data.data(), 1);
  CHECK(index.contains(10));
  CHECK_THROWS_CODE(index.add(ids.data() + 1, data.data(), 1), ErrorCode::DuplicateId);
  // Removing everything, compacting to nothing, and adding again.
  CHECK(index.remove(ids.data(), 4) == 4);
  CHECK(index.size() == 0);
  CHECK(index.compact() == 5);
  CHECK(index.compact() == 0);
  SearchOutput empty = index.search(data.data(), 1, 3);
  CHECK(empty.ids[0] == kNoId);
  index.add(ids.data(), data.data(), 4);
  int64_t rows[4];
  index.rowsOf(ids.data(), 4, rows);
  CHECK(rows[0] == 5 && rows[3] == 8);  // rows keep counting: 0..4 were handed out before
  SearchOutput full = index.search(data.data(), 1, 1);
  CHECK(full.ids[0] == 10);
  // An allow bitset over rows, after the compaction renumbered nothing.
  const uint32_t allowRow7 = 1u << 7;
  SearchOutput one = index.search(data.data(), 1, 4, 0, &allowRow7, 1);
  CHECK(one.ids[0] == 12 && one.ids[1] == kNoId);
  index.get(12, out.data());
  CHECK(std::equal(out.begin(), out.end(), data.begin() + 2 * dim));
}

TEST_CASE("flat.save_after_removes_holds_the_live_rows") {
  const size_t dim = 12;
  for (const simd::Element storage : {simd::Element::F32, simd::Element::I8}) {
    const std::vector<float> sample = randomVectors(200, dim, 3);
    FlatConfig c{Metric::L2, storage};
    auto index = makeFlat(c, dim, sample);
    Reference ref;
    ref.dim = dim;
    std::vector<uint64_t> ids(500);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = 1000 + i * 3;
    const std::vector<float> data = randomVectors(ids.size(), dim, 4);
    index->add(ids.data(), data.data(), ids.size());
    ref.write(ids, data);
    std::vector<uint64_t> gone;
    for (size_t i = 0; i < ids.size(); i += 4) gone.push_back(ids[i]);
    CHECK(index->remove(gone.data(), gone.size()) == ref.remove(gone));
    const std::vector<uint64_t> replaced = {ids[1], ids[2], 5};
    const std::vector<float> fresh = randomVectors(3, dim, 5);
    index->upsert(replaced.data(), fresh.data(), 3);
    ref.write(replaced, fresh);

    const std::string path = "/tmp/ebrix-test-mutation-" + std::to_string(static_cast<int>(storage)) + ".ebrix";
    index->save(path, "v1");
    // The reopened index numbers the live rows 0 .. size-1, in the saved index's row order.
    Reference renumbered;
    renumbered.dim = dim;
    for (const size_t r : ref.liveRows()) {
      renumbered.write({ref.idOfRow[r]}, ref.vectorOfRow[r]);
    }
    for (const bool map : {true, false}) {
      FlatIndex::Opened opened = FlatIndex::open(path, map, true, simd::bestLevel(), 2);
      CHECK(opened.modelVersion == "v1");
      checkFlatAgainstFresh(*opened.index, renumbered, c, sample, 9);
      // Mutations of a mapped index work as on one in memory.
      Reference more = renumbered;
      const std::vector<uint64_t> drop = {ids[5], ids[6], 5};
      CHECK(opened.index->remove(drop.data(), drop.size()) == more.remove(drop));
      checkFlatAgainstFresh(*opened.index, more, c, sample, 10);
      CHECK(opened.index->compact() == 3);
      checkFlatAgainstFresh(*opened.index, more, c, sample, 11);
    }
    std::remove(path.c_str());
  }
}

TEST_CASE("flat.write_hook_failure_and_filter_on_the_search_state") {
  const size_t dim = 8;
  FlatIndex index(dim, Metric::L2, simd::bestLevel(), 1);
  const std::vector<float> data = randomVectors(6, dim, 2);
  const std::vector<uint64_t> ids = {1, 2, 3, 4, 5, 6};
  uint64_t hookRow = 99;
  index.add(ids.data(), data.data(), 3, [&](uint64_t first) { hookRow = first; });
  CHECK(hookRow == 0);
  // A hook that throws abandons the write: nothing is published and the map is as before.
  const WriteHook failing = [](uint64_t) { throw Error(ErrorCode::OutOfMemory, "records"); };
  CHECK_THROWS_CODE(index.add(ids.data() + 3, data.data() + 3 * dim, 3, failing), ErrorCode::OutOfMemory);
  const std::vector<uint64_t> mixed = {2, 4};
  CHECK_THROWS_CODE(index.upsert(mixed.data(), data.data() + 4 * dim, 2, failing), ErrorCode::OutOfMemory);
  CHECK(index.size() == 3 && !index.contains(4) && index.contains(2));
  std::vector<float> out(dim);
  index.get(2, out.data());
  CHECK(std::equal(out.begin(), out.end(), data.begin() + dim));
  index.upsert(mixed.data(), data.data() + 4 * dim, 2, [&](uint64_t first) { hookRow = first; });
  CHECK(hookRow == 3);  // the failed writes numbered no rows
  // A filter sees the rows of ids on the search's state, and is ANDed with allow.
  size_t calls = 0;
  const RowFilter byId = [&](const RowOfId& rowOfId) {
    ++calls;
    uint32_t row = 0;
    std::vector<uint32_t> bits(1, 0);
    for (const uint64_t id : {uint64_t{2}, uint64_t{3}, uint64_t{77}}) {
      if (rowOfId(id, &row)) bits[0] |= 1u << row;
    }
    return bits;
  };
  SearchOutput hits = index.search(data.data() + dim, 1, 5, 0, nullptr, 0, &byId);
  CHECK(calls == 1);
  std::vector<uint64_t> got(hits.ids.begin(), hits.ids.begin() + 3);
  std::sort(got.begin(), got.end());
  CHECK(got[0] == 2 && got[1] == 3 && got[2] == kNoId);
  const uint32_t onlyRow2 = 1u << 2;  // id 3
  hits = index.search(data.data() + dim, 1, 5, 0, &onlyRow2, 1, &byId);
  CHECK(hits.ids[0] == 3 && hits.ids[1] == kNoId);
}

// A writer adds, upserts, removes and compacts while searches run; every search result must
// be exactly the result of one of the states the writer published (computed afterwards on a
// fresh index of that state's live rows), and so never holds a removed id or a torn row. A
// filtered search (on a tag the write hook records per row, as attribute records are) must
// equal the filtered search of one state too.
TEST_CASE("flat.searches_beside_writers_see_states_that_existed") {
  const size_t dim = 16, k = 10;
  const FlatConfig c{Metric::InnerProduct, simd::Element::F32};
  FlatIndex index(dim, c.metric, simd::bestLevel(), 2);
  const std::vector<float> query = randomVectors(1, dim, 42);
  std::vector<Reference> states;
  Reference ref;
  ref.dim = dim;
  states.push_back(ref);
  // The tag of each row (odd tags pass the filter), written by the hook before a write
  // publishes; rows are numbered once, so a tag never changes after it is written.
  std::vector<std::atomic<uint8_t>> tags(1 << 16);
  std::vector<uint8_t> tagOf;  // the writer's copy, by row
  std::atomic<bool> done{false};
  std::vector<std::vector<uint64_t>> seen, seenFiltered;
  std::mutex seenMutex;
  std::thread writer([&] {
    std::mt19937 rng(7);
    uint32_t seed = 1;
    for (int step = 0; step < 120; ++step) {
      const int op = step < 3 ? 0 : static_cast<int>(rng() % 4);
      if (op <= 1) {
        std::vector<uint64_t> ids = randomIds(rng, 50 + rng() % 100, 4000);
        if (op == 0) {
          ids.erase(std::remove_if(ids.begin(), ids.end(), [&](uint64_t id) { return ref.rowOfId.count(id) != 0; }),
                    ids.end());
        }
        const std::vector<float> data = randomVectors(ids.size(), dim, seed++);
        std::vector<uint8_t> batchTags(ids.size());
        for (auto& t : batchTags) t = static_cast<uint8_t>(rng() % 4);
        const WriteHook hook = [&](uint64_t first) {
          for (size_t i = 0; i < batchTags.size(); ++i) tags[first + i].store(batchTags[i], std::memory_order_release);
        };
        if (op == 0) index.add(ids.data(), data.data(), ids.size(), hook);
        else index.upsert(ids.data(), data.data(), ids.size(), hook);
        ref.write(ids, data);
        tagOf.insert(tagOf.end(), batchTags.begin(), batchTags.end());
      } else if (op == 2) {
        const std::vector<uint64_t> ids = randomIds(rng, 80, 4000);
        ref.remove(ids);
        index.remove(ids.data(), ids.size());
      } else {
        index.compact();  // the live rows, and so the results, do not change
      }
      states.push_back(ref);
    }
    done = true;
  });
  const RowFilter oddTags = [&](const RowOfId&) {
    // Rows whose record is written; the search ignores rows past its own state.
    std::vector<uint32_t> bits(tags.size() / 32, 0);
    for (size_t r = 0; r < tags.size(); ++r) {
      if (tags[r].load(std::memory_order_acquire) % 2 == 1) bits[r / 32] |= 1u << (r % 32);
    }
    return bits;
  };
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&, t] {
      while (!done) {
        const SearchOutput out = index.search(query.data(), 1, k, 1, nullptr, 0, t == 2 ? &oddTags : nullptr);
        std::lock_guard<std::mutex> lock(seenMutex);
        (t == 2 ? seenFiltered : seen).push_back(out.ids);
      }
    });
  }
  writer.join();
  for (auto& r : readers) r.join();

  std::set<std::vector<uint64_t>> valid, validFiltered;
  for (const Reference& state : states) {
    for (const bool filtered : {false, true}) {
      FlatIndex fresh(dim, c.metric, simd::bestLevel(), 1);
      std::vector<uint64_t> ids;
      std::vector<float> data;
      for (const size_t r : state.liveRows()) {
        if (filtered && tagOf[r] % 2 == 0) continue;
        ids.push_back(state.idOfRow[r]);
        data.insert(data.end(), state.vectorOfRow[r].begin(), state.vectorOfRow[r].end());
      }
      fresh.add(ids.data(), data.data(), ids.size());
      (filtered ? validFiltered : valid).insert(fresh.search(query.data(), 1, k).ids);
    }
  }
  CHECK(seen.size() > 10 && seenFiltered.size() > 5);
  for (const auto& ids : seen) CHECK(valid.count(ids) == 1);
  for (const auto& ids : seenFiltered) CHECK(validFiltered.count(ids) == 1);
}

// ---- IvfPqIndex ----

namespace {

struct IvfPqConfig {
  Metric metric;
  unsigned nbits;
  RefineStorage refine;
  bool opq;
};

// A trained, empty index saved to a file, so that every reference index opened from it has
// the very same quantizers as the index under test.
std::string trainedBase(const IvfPqConfig& c, size_t dim, const std::string& name) {
  IvfPqParams params;
  params.dim = dim;
  params.metric = c.metric;
  params.nlist = 8;
  params.m = 4;
  params.nbits = c.nbits;
  params.opq = c.opq;
  params.refine = c.refine;
  IvfPqIndex index(params, simd::bestLevel(), 2);
  const std::vector<float> sample = randomVectors(600, dim, 91);
  IvfPqTrainParams tp;
  tp.maxIterations = 6;
  index.train(sample.data(), 600, tp);
  const std::string path = "/tmp/ebrix-test-mutation-base-" + name + ".ebrix";
  index.save(path, "");
  return path;
}

std::unique_ptr<IvfPqIndex> openBase(const std::string& path) {
  return std::move(IvfPqIndex::open(path, simd::bestLevel(), 2).index);
}

// As checkFlatAgainstFresh, for IVF-PQ: a fresh index opened from the same base, given the
// live vectors in row order, returns the same ids and scores (its lists hold the same entries
// in the same order). `exact` false (4-bit lists with tombstones, whose fast-scan candidates
// tie-break on list positions) only checks that every id returned is live and most agree.
void checkIvfPqAgainstFresh(IvfPqIndex& index, const Reference& ref, const std::string& base, uint32_t seed,
                            bool exact) {
  const size_t dim = ref.dim;
  const std::vector<size_t> rows = ref.liveRows();
  CHECK(index.size() == rows.size());
  auto fresh = openBase(base);
  std::vector<uint64_t> ids;
  std::vector<float> data;
  for (const size_t r : rows) {
    ids.push_back(ref.idOfRow[r]);
    data.insert(data.end(), ref.vectorOfRow[r].begin(), ref.vectorOfRow[r].end());
  }
  fresh->add(ids.data(), data.data(), ids.size());
  std::mt19937 rng(seed);
  const std::vector<float> queries = randomVectors(4, dim, seed + 1);
  std::vector<uint32_t> allow((ref.idOfRow.size() + 31) / 32, 0), freshAllow((rows.size() + 31) / 32, 0);
  for (size_t r = 0; r < ref.idOfRow.size(); ++r) {
    if (rng() % 3 != 0) allow[r / 32] |= 1u << (r % 32);
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    if (allow[rows[i] / 32] >> (rows[i] % 32) & 1u) freshAllow[i / 32] |= 1u << (i % 32);
  }
  for (int filtered = 0; filtered < 2; ++filtered) {
    IvfPqSearchParams sp;
    sp.k = 7;
    sp.nprobe = 3;
    // Auto weighs the entries it would scan, tombstones included, so the two indexes could
    // choose differently; Probe scales nprobe by the allowed fraction alone.
    sp.filterStrategy = IvfPqFilter::Probe;
    IvfPqSearchParams fp = sp;
    if (filtered) {
      sp.allowBits = allow.data();
      sp.allowWords = allow.size();
      fp.allowBits = freshAllow.data();
      fp.allowWords = freshAllow.size();
    }
    const SearchOutput got = index.search(queries.data(), 4, sp);
    const SearchOutput want = fresh->search(queries.data(), 4, fp);
    if (exact) {
      CHECK_MSG(got.ids == want.ids, "filtered " << filtered);
      CHECK(got.scores == want.scores);
    } else {
      size_t agree = 0, total = 0;
      for (size_t i = 0; i < got.ids.size(); ++i) {
        if (got.ids[i] == kNoId) continue;
        CHECK(ref.rowOfId.count(got.ids[i]) == 1);
        ++total;
        agree += std::find(want.ids.begin(), want.ids.end(), got.ids[i]) != want.ids.end();
      }
      CHECK_MSG(agree * 10 >= total * 9, agree << " of " << total);
    }
  }
  std::vector<float> a(dim), b(dim);
  for (size_t i = 0; i < rows.size(); i += std::max<size_t>(1, rows.size() / 10)) {
    CHECK(index.contains(ids[i]));
    int64_t row = -2;
    index.rowsOf(&ids[i], 1, &row);
    CHECK(row == static_cast<int64_t>(rows[i]));
    if (index.params().refine == RefineStorage::None) continue;
    index.get(ids[i], a.data());
    fresh->get(ids[i], b.data());
    CHECK(a == b);
  }
}

}  // namespace

TEST_CASE("ivfpq.remove_upsert_compact_equal_a_fresh_index_of_the_live_rows") {
  const size_t dim = 16;
  const std::vector<IvfPqConfig> configs = {{Metric::InnerProduct, 8, RefineStorage::None, false},
                                            {Metric::L2, 8, RefineStorage::F32, false},
                                            {Metric::Cosine, 8, RefineStorage::F16, true},
                                            {Metric::InnerProduct, 4, RefineStorage::None, false},
                                            {Metric::L2, 4, RefineStorage::F32, false}};
  int configIndex = 0;
  for (const IvfPqConfig& c : configs) {
    const std::string base = trainedBase(c, dim, std::to_string(configIndex++));
    auto index = openBase(base);
    std::mt19937 rng(17 + configIndex);
    Reference ref;
    ref.dim = dim;
    uint32_t seed = 300;
    bool compacted = true;  // no tombstone yet
    for (int step = 0; step < 18; ++step) {
      const int op = step < 2 ? 0 : static_cast<int>(rng() % 4);
      if (op <= 1) {
        std::vector<uint64_t> ids = randomIds(rng, 1 + rng() % 300, op == 0 ? 1u << 30 : 2000);
        if (op == 0) {
          ids.erase(std::remove_if(ids.begin(), ids.end(), [&](uint64_t id) { return ref.rowOfId.count(id) != 0; }),
                    ids.end());
        }
        const std::vector<float> data = randomVectors(ids.size(), dim, seed++);
        if (op == 0) {
          index->add(ids.data(), data.data(), ids.size());
        } else {
          for (size_t i = 0; i < ids.size() && !ref.idOfRow.empty(); i += 3) {
            const uint64_t held = ref.idOfRow[rng() % ref.idOfRow.size()];
            if (ref.rowOfId.count(held) && std::find(ids.begin(), ids.end(), held) == ids.end()) ids[i] = held;
          }
          const size_t held = static_cast<size_t>(
              std::count_if(ids.begin(), ids.end(), [&](uint64_t id) { return ref.rowOfId.count(id) != 0; }));
          index->upsert(ids.data(), data.data(), ids.size());
          ref.write(ids, data);
          compacted = compacted && held == 0;
          continue;
        }
        ref.write(ids, data);
      } else if (op == 2) {
        std::vector<uint64_t> ids;
        for (size_t i = 0; i < 1 + rng() % 150 && !ref.idOfRow.empty(); ++i) ids.push_back(ref.idOfRow[rng() % ref.idOfRow.size()]);
        ids.push_back(987654321987ull);
        const size_t want = ref.remove(ids);
        CHECK(index->remove(ids.data(), ids.size()) == want);
        compacted = compacted && want == 0;
      } else {
        index->compact();
        compacted = true;
      }
      checkIvfPqAgainstFresh(*index, ref, base, seed++, c.nbits == 8 || compacted);
    }
    index->compact();
    checkIvfPqAgainstFresh(*index, ref, base, seed++, true);

    // Saved and reopened: the live rows, numbered 0 .. size-1 in row order.
    const std::string path = base + ".saved";
    // A few more tombstones first, so that the save leaves them out itself.
    std::vector<uint64_t> drop = {ref.idOfRow[ref.liveRows()[0]], ref.idOfRow[ref.liveRows()[1]]};
    CHECK(index->remove(drop.data(), 2) == ref.remove(drop));
    index->save(path, "v");
    Reference renumbered;
    renumbered.dim = dim;
    for (const size_t r : ref.liveRows()) renumbered.write({ref.idOfRow[r]}, ref.vectorOfRow[r]);
    auto opened = IvfPqIndex::open(path, simd::bestLevel(), 2);
    checkIvfPqAgainstFresh(*opened.index, renumbered, base, seed++, c.nbits == 8);
    std::remove(path.c_str());
    std::remove(base.c_str());
  }
}

TEST_CASE("ivfpq.get_and_typed_errors") {
  const size_t dim = 16;
  for (const RefineStorage refine : {RefineStorage::None, RefineStorage::F32, RefineStorage::F16}) {
    const std::string base = trainedBase({Metric::L2, 8, refine, false}, dim, "errors");
    auto index = openBase(base);
    const std::vector<float> data = randomVectors(3, dim, 5);
    const std::vector<uint64_t> ids = {4, 5, 6};
    index->add(ids.data(), data.data(), 3);
    std::vector<float> out(dim);
    CHECK_THROWS_CODE(index->get(7, out.data()), ErrorCode::UnknownId);
    if (refine == RefineStorage::None) {
      CHECK_THROWS_CODE(index->get(4, out.data()), ErrorCode::InvalidArgument);
    } else {
      index->get(5, out.data());
      for (size_t d = 0; d < dim; ++d) {
        const float tolerance = refine == RefineStorage::F16 ? 2e-3f * (1.0f + std::fabs(data[dim + d])) : 0.0f;
        CHECK(std::fabs(out[d] - data[dim + d]) <= tolerance);
      }
    }
    const std::vector<uint64_t> twice = {8, 8};
    CHECK_THROWS_CODE(index->upsert(twice.data(), data.data(), 2), ErrorCode::DuplicateId);
    CHECK_THROWS_CODE(index->add(ids.data(), data.data(), 1), ErrorCode::DuplicateId);
    CHECK(index->remove(ids.data(), 3) == 3);
    CHECK(index->size() == 0);
    IvfPqSearchParams sp;
    sp.k = 2;
    CHECK(index->search(data.data(), 1, sp).ids[0] == kNoId);
    CHECK(index->compact() == 3);
    index->upsert(ids.data(), data.data(), 3);
    CHECK(index->size() == 3);
    int64_t rows[3];
    index->rowsOf(ids.data(), 3, rows);
    CHECK(rows[0] == 3 && rows[2] == 5);
    std::remove(base.c_str());
  }
}

TEST_CASE("ivfpq.searches_beside_writers_see_states_that_existed") {
  const size_t dim = 16, k = 10;
  const std::string base = trainedBase({Metric::InnerProduct, 8, RefineStorage::F32, false}, dim, "concurrent");
  auto index = openBase(base);
  const std::vector<float> query = randomVectors(1, dim, 42);
  std::vector<Reference> states;
  Reference ref;
  ref.dim = dim;
  states.push_back(ref);
  std::atomic<bool> done{false};
  std::vector<std::vector<uint64_t>> seen;
  std::mutex seenMutex;
  IvfPqSearchParams sp;
  sp.k = k;
  sp.nprobe = 4;
  sp.threads = 1;
  std::thread writer([&] {
    std::mt19937 rng(8);
    uint32_t seed = 1;
    for (int step = 0; step < 80; ++step) {
      const int op = step < 3 ? 0 : static_cast<int>(rng() % 4);
      if (op <= 1) {
        std::vector<uint64_t> ids = randomIds(rng, 50 + rng() % 100, 4000);
        if (op == 0) {
          ids.erase(std::remove_if(ids.begin(), ids.end(), [&](uint64_t id) { return ref.rowOfId.count(id) != 0; }),
                    ids.end());
        }
        const std::vector<float> data = randomVectors(ids.size(), dim, seed++);
        if (op == 0) index->add(ids.data(), data.data(), ids.size());
        else index->upsert(ids.data(), data.data(), ids.size());
        ref.write(ids, data);
      } else if (op == 2) {
        const std::vector<uint64_t> ids = randomIds(rng, 80, 4000);
        ref.remove(ids);
        index->remove(ids.data(), ids.size());
      } else {
        index->compact();
      }
      states.push_back(ref);
    }
    done = true;
  });
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&] {
      while (!done) {
        const SearchOutput out = index->search(query.data(), 1, sp);
        std::lock_guard<std::mutex> lock(seenMutex);
        seen.push_back(out.ids);
      }
    });
  }
  writer.join();
  for (auto& r : readers) r.join();
  std::set<std::vector<uint64_t>> valid;
  for (const Reference& state : states) {
    auto fresh = openBase(base);
    std::vector<uint64_t> ids;
    std::vector<float> data;
    for (const size_t r : state.liveRows()) {
      ids.push_back(state.idOfRow[r]);
      data.insert(data.end(), state.vectorOfRow[r].begin(), state.vectorOfRow[r].end());
    }
    fresh->add(ids.data(), data.data(), ids.size());
    valid.insert(fresh->search(query.data(), 1, sp).ids);
  }
  CHECK(seen.size() > 10);
  for (const auto& ids : seen) CHECK(valid.count(ids) == 1);
  std::remove(base.c_str());
}

// ---- HnswIndex ----

TEST_CASE("hnsw.upsert_and_get") {
  const size_t dim = 12;
  for (const simd::Element storage : {simd::Element::F32, simd::Element::BF16}) {
    HnswParams params;
    params.dim = dim;
    params.metric = Metric::L2;
    params.storage = storage;
    HnswIndex index(params, simd::bestLevel(), 1);  // one build thread: the same graph every run
    const std::vector<float> data = randomVectors(400, dim, 3);
    std::vector<uint64_t> ids(400);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = 10 + i;
    index.add(ids.data(), data.data(), 200);
    std::vector<float> out(dim);
    index.get(15, out.data());
    for (size_t d = 0; d < dim; ++d) {
      const float x = data[5 * dim + d];
      CHECK(std::fabs(out[d] - x) <= (storage == simd::Element::F32 ? 0.0f : 1e-2f * (1.0f + std::fabs(x))));
    }
    CHECK_THROWS_CODE(index.get(5, out.data()), ErrorCode::UnknownId);
    // Upsert ids 100..299: 100..209 are held (replaced), 210..299 new.
    uint64_t hookRow = 0;
    index.upsert(ids.data() + 90, data.data() + 200 * dim, 200, [&](uint64_t first) { hookRow = first; });
    CHECK(hookRow == 200);
    CHECK(index.size() == 290);
    int64_t row = -1;
    const uint64_t replacedId = 100;
    index.rowsOf(&replacedId, 1, &row);
    CHECK(row == 200);
    index.get(100, out.data());
    CHECK(std::fabs(out[0] - data[200 * dim]) <= 1e-2f * (1.0f + std::fabs(data[200 * dim])));
    // Each upserted vector is found under its id, and the replaced vectors are gone.
    HnswSearchParams sp;
    sp.k = 1;
    sp.expansion = 200;
    const SearchOutput hits = index.search(data.data() + 200 * dim, 200, sp);
    size_t found = 0;
    for (size_t q = 0; q < 200; ++q) found += hits.ids[q] == ids[90 + q];
    CHECK_MSG(found >= 195, found);
    const SearchOutput old = index.search(data.data() + 90 * dim, 20, sp);
    for (size_t q = 0; q < 20; ++q) CHECK(old.ids[q] != ids[90 + q]);
    const std::vector<uint64_t> twice = {7, 7};
    CHECK_THROWS_CODE(index.upsert(twice.data(), data.data(), 2), ErrorCode::DuplicateId);
    // A hook that throws leaves the index as it was.
    const size_t before = index.size();
    CHECK_THROWS_CODE(index.upsert(ids.data(), data.data(), 3, [](uint64_t) { throw Error(ErrorCode::OutOfMemory, "x"); }),
                      ErrorCode::OutOfMemory);
    CHECK(index.size() == before && index.contains(10));
    index.rowsOf(ids.data(), 1, &row);
    CHECK(row == 0);
  }
}

// Upserts, adds and removes beside searches: a search by scan (exact over the allowed rows)
// returns exactly the top-k of a published state, and a graph walk never returns an id twice
// or an id of a write in flight.
TEST_CASE("hnsw.searches_beside_writers_see_states_that_existed") {
  const size_t dim = 16, k = 10;
  HnswParams params;
  params.dim = dim;
  HnswIndex index(params, simd::bestLevel(), 2);
  const std::vector<float> query = randomVectors(1, dim, 42);
  std::vector<Reference> states;
  Reference ref;
  ref.dim = dim;
  states.push_back(ref);
  std::vector<uint32_t> everyRow((1u << 16) / 32, ~0u);
  std::atomic<bool> done{false};
  std::vector<std::vector<uint64_t>> scanned, walked;
  std::mutex seenMutex;
  std::thread writer([&] {
    std::mt19937 rng(9);
    uint32_t seed = 1;
    for (int step = 0; step < 60; ++step) {
      const int op = step < 3 ? 0 : static_cast<int>(rng() % 3);
      if (op <= 1) {
        std::vector<uint64_t> ids = randomIds(rng, 30 + rng() % 60, 1500);
        if (op == 0) {
          ids.erase(std::remove_if(ids.begin(), ids.end(), [&](uint64_t id) { return ref.rowOfId.count(id) != 0; }),
                    ids.end());
        }
        const std::vector<float> data = randomVectors(ids.size(), dim, seed++);
        if (op == 0) index.add(ids.data(), data.data(), ids.size(), {}, 1);
        else index.upsert(ids.data(), data.data(), ids.size(), {}, 1);
        ref.write(ids, data);
      } else {
        std::vector<uint64_t> ids;
        for (const auto& [id, row] : ref.rowOfId) {
          if (rng() % 8 == 0) ids.push_back(id);
        }
        index.remove(ids.data(), ids.size());
        ref.remove(ids);
      }
      states.push_back(ref);
    }
    done = true;
  });
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&, t] {
      while (!done) {
        HnswSearchParams sp;
        sp.k = k;
        sp.threads = 1;
        if (t == 0) {
          sp.allowBits = everyRow.data();
          sp.allowWords = everyRow.size();
          sp.filterStrategy = HnswFilter::Scan;
        }
        const SearchOutput out = index.search(query.data(), 1, sp);
        std::lock_guard<std::mutex> lock(seenMutex);
        (t == 0 ? scanned : walked).push_back(out.ids);
      }
    });
  }
  writer.join();
  for (auto& r : readers) r.join();

  std::set<std::vector<uint64_t>> valid;
  for (const Reference& state : states) {
    FlatIndex fresh(dim, Metric::InnerProduct, simd::bestLevel(), 1);
    std::vector<uint64_t> ids;
    std::vector<float> data;
    for (const size_t r : state.liveRows()) {
      ids.push_back(state.idOfRow[r]);
      data.insert(data.end(), state.vectorOfRow[r].begin(), state.vectorOfRow[r].end());
    }
    fresh.add(ids.data(), data.data(), ids.size());
    valid.insert(fresh.search(query.data(), 1, k).ids);
  }
  CHECK(scanned.size() > 5 && walked.size() > 5);
  for (const auto& ids : scanned) CHECK(valid.count(ids) == 1);
  for (const auto& ids : walked) {
    std::set<uint64_t> unique;
    bool someState = false;
    for (const uint64_t id : ids) {
      if (id != kNoId) CHECK_MSG(unique.insert(id).second, "id " << id << " twice");
    }
    for (const Reference& state : states) {
      bool all = true;
      for (const uint64_t id : ids) all = all && (id == kNoId || state.rowOfId.count(id) != 0);
      someState = someState || all;
    }
    CHECK(someState);
  }
}
