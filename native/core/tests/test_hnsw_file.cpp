// HnswIndex files and the attributes section of every index file: round trips (read and
// mapped; tombstones, free nodes, attributes), mutation of a mapped index, compaction, and
// damaged or hostile files, which must give CorruptFile and never crash or read out of bounds.
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../attributes.h"
#include "../attributes_file.h"
#include "../error.h"
#include "../filter.h"
#include "../flat.h"
#include "../hnsw.h"
#include "../index_file.h"
#include "../ivfpq.h"
#include "../simd/dispatch.h"
#include "check.h"
#include "file_util.h"
#include "test_util.h"

using namespace ebrix;
using namespace ebrix::test;

namespace {

HnswParams params(size_t dim, Metric metric, simd::Element storage = simd::Element::F32) {
  HnswParams p;
  p.dim = dim;
  p.metric = metric;
  p.connectivity = 8;
  p.expansionAdd = 64;
  p.expansionSearch = 48;
  p.storage = storage;
  return p;
}

HnswSearchParams searchFor(size_t k) {
  HnswSearchParams sp;
  sp.k = k;
  sp.threads = 1;
  return sp;
}

std::vector<uint64_t> idsFor(size_t n, uint64_t salt) {
  std::vector<uint64_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = (i * 2654435761u + salt) % 1000000007u;
  return ids;
}

// One thread: the graph, hence every result, is reproducible.
std::unique_ptr<HnswIndex> buildHnsw(size_t dim, Metric metric, simd::Element storage, size_t n, uint32_t seed) {
  auto index = std::make_unique<HnswIndex>(params(dim, metric, storage), simd::defaultLevel(), 1);
  const std::vector<float> data = randomVectors(n, dim, seed);
  const std::vector<uint64_t> ids = idsFor(n, seed);
  index->add(ids.data(), data.data(), n, {}, 1);
  return index;
}

bool same(const SearchOutput& a, const SearchOutput& b) { return a.ids == b.ids && a.scores == b.scores; }

// Checks that two indexes hold the same ids, rows and vectors and answer the same.
void checkSame(const HnswIndex& a, const HnswIndex& b, const std::vector<uint64_t>& ids, const std::vector<float>& queries,
               size_t nq) {
  CHECK(a.size() == b.size());
  std::vector<int64_t> rowsA(ids.size()), rowsB(ids.size());
  a.rowsOf(ids.data(), ids.size(), rowsA.data());
  b.rowsOf(ids.data(), ids.size(), rowsB.data());
  CHECK(rowsA == rowsB);
  std::vector<float> va(a.dim()), vb(b.dim());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (rowsA[i] < 0) continue;
    a.get(ids[i], va.data());
    b.get(ids[i], vb.data());
    CHECK_MSG(va == vb, "vector of id " << ids[i]);
  }
  CHECK(same(a.search(queries.data(), nq, searchFor(7)), b.search(queries.data(), nq, searchFor(7))));
  HnswSearchParams scan = searchFor(5);
  std::vector<uint32_t> allow((ids.size() + 31) / 32, 0x55555555u);
  scan.allowBits = allow.data();
  scan.allowWords = allow.size();
  scan.filterStrategy = HnswFilter::Scan;
  CHECK(same(a.search(queries.data(), nq, scan), b.search(queries.data(), nq, scan)));
  scan.filterStrategy = HnswFilter::Graph;
  CHECK(same(a.search(queries.data(), nq, scan), b.search(queries.data(), nq, scan)));
}

// A table with every column type, `n` rows, some values missing.
std::shared_ptr<AttributeTable> buildTable(size_t n, uint32_t seed) {
  auto table = std::make_shared<AttributeTable>(std::vector<AttributeSpec>{{"level", AttributeType::Uint, false},
                                                                           {"price", AttributeType::Number, false},
                                                                           {"remote", AttributeType::Bool, false},
                                                                           {"city", AttributeType::Category, false},
                                                                           {"skills", AttributeType::Category, true}});
  std::mt19937 rng(seed);
  std::vector<uint8_t> present(n), bools(n), cityPresent(n);
  std::vector<uint64_t> levels(n);
  std::vector<double> prices(n);
  std::vector<uint32_t> cities(n), offsets(n + 1, 0), codes;
  const std::string cityNames[] = {"paris", "oslo", "lima"};
  const std::string skillNames[] = {"go", "rust", "c++", "ts"};
  for (size_t i = 0; i < n; ++i) {
    present[i] = rng() % 5 != 0;
    levels[i] = i % 7 == 0 ? (uint64_t{1} << 40) + i : rng() % 10;  // some need 64 bits
    prices[i] = (rng() % 1000) / 8.0;
    bools[i] = rng() % 2;
    cityPresent[i] = rng() % 4 != 0;
    cities[i] = rng() % 3;
    const uint32_t k = rng() % 3;
    for (uint32_t j = 0; j < k; ++j) codes.push_back((rng() % 4));
    offsets[i + 1] = static_cast<uint32_t>(codes.size());
  }
  std::vector<AttributeValues> columns(5);
  columns[0].name = "level";
  columns[0].present = present.data();
  columns[0].uint64s = levels.data();
  columns[1].name = "price";
  columns[1].numbers = prices.data();
  columns[1].present = present.data();
  columns[2].name = "remote";
  columns[2].bools = bools.data();
  columns[3].name = "city";
  columns[3].present = cityPresent.data();
  columns[3].dictionary = cityNames;
  columns[3].dictionarySize = 3;
  columns[3].codes = cities.data();
  columns[4].name = "skills";
  columns[4].dictionary = skillNames;
  columns[4].dictionarySize = 4;
  columns[4].codes = codes.data();
  columns[4].offsets = offsets.data();
  table->append(n, columns);
  return table;
}

std::vector<uint8_t> encodeAll(const AttributeTable& table, const uint32_t* rows, size_t count) {
  return encodeAttributes(table, *table.snapshot(), rows, count);
}

// Opens `path` read and mapped; whatever opens is searched, read and written to. Returns
// whether every attempt threw CorruptFile (anything else fails the test).
bool hnswOpensSafely(const std::string& path) {
  bool allCorrupt = true;
  for (bool map : {false, true}) {
    try {
      HnswIndex::Opened opened = HnswIndex::open(path, map, false, simd::defaultLevel(), 1);
      allCorrupt = false;
      HnswIndex& index = *opened.index;
      const std::vector<float> q = randomVectors(2, index.dim(), 99);
      index.search(q.data(), 2, searchFor(5));
      const uint64_t extra = 4000000000ull;
      std::vector<float> v(index.dim(), 0.5f);
      index.add(&extra, v.data(), 1, {}, 1);
      index.search(q.data(), 2, searchFor(5));
      index.remove(&extra, 1);
      index.compact(1);
      index.search(q.data(), 2, searchFor(5));
    } catch (const Error& e) {
      CHECK_MSG(e.code() == ErrorCode::CorruptFile, e.what());
    }
  }
  return allCorrupt;
}

template <class T>
void put(std::vector<uint8_t>& bytes, size_t at, T v) {
  std::memcpy(bytes.data() + at, &v, sizeof(T));
}
template <class T>
T get(const std::vector<uint8_t>& bytes, size_t at) {
  T v;
  std::memcpy(&v, bytes.data() + at, sizeof(T));
  return v;
}

}  // namespace

TEST_CASE("hnsw_file.round_trips_with_tombstones_free_nodes_and_every_storage") {
  TempDir dir;
  const size_t dim = 12, n = 1200, nq = 20;
  const std::vector<float> queries = randomVectors(nq, dim, 7);
  for (simd::Element storage : {simd::Element::F32, simd::Element::F16, simd::Element::BF16}) {
    for (Metric metric : {Metric::InnerProduct, Metric::Cosine, Metric::L2}) {
      auto index = buildHnsw(dim, metric, storage, n, 3);
      std::vector<uint64_t> ids = idsFor(n, 3);
      // Tombstones, free nodes, and a removed id added again under a new row.
      std::vector<uint64_t> gone;
      for (size_t i = 0; i < n; i += 5) gone.push_back(ids[i]);
      CHECK(index->remove(gone.data(), gone.size()) == gone.size());
      const std::vector<float> again = randomVectors(3, dim, 8);
      index->add(gone.data(), again.data(), 3, {}, 1);
      const std::string path = dir.file("h.ebrix");
      index->save(path, "model-7");
      for (bool map : {false, true}) {
        HnswIndex::Opened opened = HnswIndex::open(path, map, true, simd::defaultLevel(), 1);
        CHECK(opened.modelVersion == "model-7");
        CHECK(opened.attributes == nullptr);
        CHECK((opened.index->mappedBytes() > 0) == map);
        checkSame(*index, *opened.index, ids, queries, nq);
        // A write to a mapped index copies it into memory first; both indexes then take the
        // same nodes for the same adds and stay identical.
        const std::vector<float> more = randomVectors(40, dim, 9);
        const std::vector<uint64_t> moreIds = idsFor(40, 77777);
        HnswIndex& o = *opened.index;
        if (!map) {
          o.add(moreIds.data(), more.data(), 40, {}, 1);
          CHECK(o.remove(moreIds.data(), 40) == 40);
          CHECK(o.remove(moreIds.data(), 40) == 0);
          continue;
        }
        o.add(moreIds.data(), more.data(), 40, {}, 1);
        CHECK(o.mappedBytes() == 0);
        auto copy = HnswIndex::open(path, false, true, simd::defaultLevel(), 1).index;
        copy->add(moreIds.data(), more.data(), 40, {}, 1);
        std::vector<uint64_t> all = ids;
        all.insert(all.end(), moreIds.begin(), moreIds.end());
        checkSame(*copy, o, all, queries, nq);
      }
    }
  }
}

TEST_CASE("hnsw_file.mapped_remove_and_compact_keep_ids_rows_and_vectors") {
  TempDir dir;
  const size_t dim = 9, n = 2000, nq = 30;
  auto index = buildHnsw(dim, Metric::L2, simd::Element::F32, n, 11);
  const std::vector<uint64_t> ids = idsFor(n, 11);
  const std::vector<float> data = randomVectors(n, dim, 11), queries = randomVectors(nq, dim, 12);
  const std::string path = dir.file("c.ebrix");
  index->save(path, "");
  auto mapped = HnswIndex::open(path, true, false, simd::defaultLevel(), 1).index;
  std::vector<uint64_t> gone(ids.begin(), ids.begin() + 700);
  CHECK(mapped->remove(gone.data(), gone.size()) == 700);
  CHECK(index->remove(gone.data(), gone.size()) == 700);
  checkSame(*index, *mapped, ids, queries, nq);
  const size_t before = index->memoryBytes();
  CHECK(mapped->compact(1) == 700);
  CHECK(index->compact(1) == 700);
  CHECK(index->compact(1) == 0);
  CHECK(index->memoryBytes() < before);
  // Compaction rebuilds the graph from the same vectors in the same order: both agree, and
  // rows (and so allow bitsets), ids and vectors are what they were.
  checkSame(*index, *mapped, ids, queries, nq);
  std::vector<int64_t> rows(n);
  index->rowsOf(ids.data(), n, rows.data());
  for (size_t i = 0; i < n; ++i) CHECK(rows[i] == (i < 700 ? -1 : static_cast<int64_t>(i)));
  std::vector<float> v(dim);
  index->get(ids[1000], v.data());
  CHECK(std::memcmp(v.data(), data.data() + 1000 * dim, dim * sizeof(float)) == 0);
  // A compacted graph still finds each vector itself.
  const SearchOutput self = index->search(data.data() + 700 * dim, 50, searchFor(1));
  size_t found = 0;
  for (size_t i = 0; i < 50; ++i) found += self.ids[i] == ids[700 + i];
  CHECK_MSG(found >= 48, found << " of 50 vectors found themselves after compaction");
  // And a compacted index saves and opens like any other.
  index->save(path, "");
  checkSame(*index, *HnswIndex::open(path, true, true, simd::defaultLevel(), 1).index, ids, queries, nq);
}

TEST_CASE("hnsw_file.empty_and_failed_saves") {
  TempDir dir;
  const std::string path = dir.file("e.ebrix");
  HnswIndex empty(params(5, Metric::InnerProduct), simd::defaultLevel(), 1);
  empty.save(path, "");
  for (bool map : {false, true}) {
    auto opened = HnswIndex::open(path, map, true, simd::defaultLevel(), 1).index;
    CHECK(opened->size() == 0);
    const std::vector<float> q(5, 1.0f);
    CHECK(opened->search(q.data(), 1, searchFor(3)).ids[0] == kNoId);
    const uint64_t id = 5;
    opened->add(&id, q.data(), 1, {}, 1);
    CHECK(opened->search(q.data(), 1, searchFor(3)).ids[0] == 5);
  }
  // A save that fails part way leaves the previous file whole (and no temporary behind).
  auto index = buildHnsw(5, Metric::InnerProduct, simd::Element::F32, 300, 5);
  const std::vector<uint8_t> before = readBytes(path);
  for (int64_t at : {int64_t{0}, int64_t{100}, int64_t{5000}}) {
    failNextWriteAfterForTesting(at);
    CHECK_THROWS_CODE(index->save(path, ""), ErrorCode::Io);
    CHECK(readBytes(path) == before);
    CHECK(dir.files().size() == 1);
  }
}

TEST_CASE("hnsw_file.truncated_and_flipped_files_are_corrupt_never_a_crash") {
  TempDir dir;
  auto table = buildTable(60, 5);
  auto index = buildHnsw(4, Metric::L2, simd::Element::F16, 60, 21);
  const std::vector<uint64_t> ids = idsFor(60, 21);
  index->remove(ids.data(), 7);
  const std::string good = dir.file("good.ebrix"), bad = dir.file("bad.ebrix");
  index->save(good, "v", table.get());
  const std::vector<uint8_t> bytes = readBytes(good);
  // Every truncation through the header, table and first sections, then every 7th byte.
  for (size_t n = 0; n < bytes.size(); n += n < 2048 ? 1 : 7) {
    writeBytes(bad, std::vector<uint8_t>(bytes.begin(), bytes.begin() + static_cast<long>(n)));
    CHECK_MSG(hnswOpensSafely(bad), "truncated to " << n << " bytes opened");
  }
  // A flip in any section is caught by its checksum (the vectors' too, without map).
  for (const SectionEntry& s : sectionsOf(bytes)) {
    for (size_t at = 0; at < s.bytes; at += 1 + s.bytes / 23) {
      std::vector<uint8_t> mutated = bytes;
      mutated[s.offset + at] ^= 0x41;
      writeBytes(bad, mutated);
      CHECK_THROWS_CODE(HnswIndex::open(bad, false, false, simd::defaultLevel(), 1), ErrorCode::CorruptFile);
      hnswOpensSafely(bad);
    }
  }
  // Random flips anywhere, then sealed again so that they reach the structural checks.
  std::mt19937 rng(42);
  for (size_t t = 0; t < 600; ++t) {
    std::vector<uint8_t> mutated = bytes;
    const std::vector<SectionEntry> sections = sectionsOf(bytes);
    const SectionEntry& s = sections[rng() % sections.size()];
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int f = 0; f < flips; ++f) mutated[s.offset + rng() % s.bytes] ^= static_cast<uint8_t>(1 + rng() % 255);
    reseal(mutated);
    writeBytes(bad, mutated);
    hnswOpensSafely(bad);
  }
}

TEST_CASE("hnsw_file.hostile_graphs_with_valid_checksums_are_corrupt") {
  TempDir dir;
  const size_t n = 300, m = 8;
  auto index = buildHnsw(6, Metric::InnerProduct, simd::Element::F32, n, 31);
  const std::vector<uint64_t> ids = idsFor(n, 31);
  index->remove(ids.data() + 10, 5);
  const std::string good = dir.file("good.ebrix"), bad = dir.file("bad.ebrix");
  index->save(good, "");
  const std::vector<uint8_t> bytes = readBytes(good);
  const std::vector<SectionEntry> sections = sectionsOf(bytes);
  const size_t meta = sectionOf(sections, 1)->offset, slots = sectionOf(sections, 3)->offset;
  const size_t graph = sectionOf(sections, 5)->offset, freeList = sectionOf(sections, 6)->offset;
  const size_t levels = graph + 40, nodes = graph + 40 + 2 * n;
  const size_t baseBytes = 4 * (2 * m + 1), levelBytes = 4 * (m + 1);
  // The offset of each node, and a node above level 0 with a neighbour there.
  std::vector<size_t> nodeAt(n);
  size_t at = nodes, upper = n;
  for (size_t i = 0; i < n; ++i) {
    nodeAt[i] = at;
    const int16_t level = get<int16_t>(bytes, levels + 2 * i);
    if (level >= 1 && upper == n && get<uint32_t>(bytes, at + 10 + baseBytes) > 0) upper = i;
    at += 10 + baseBytes + size_t(level) * levelBytes;
  }
  CHECK(upper < n);
  size_t groundOnly = 0;
  while (get<int16_t>(bytes, levels + 2 * groundOnly) != 0) ++groundOnly;
  const size_t freeNode = get<uint32_t>(bytes, freeList);

  struct Case {
    const char* what;
    std::function<void(std::vector<uint8_t>&)> edit;
  };
  const Case cases[] = {
      {"neighbour past the last node", [&](auto& b) { put<uint32_t>(b, nodeAt[0] + 14, uint32_t(n)); }},
      {"neighbour slot 2^32-1", [&](auto& b) { put<uint32_t>(b, nodeAt[0] + 14, 0xFFFFFFFFu); }},
      {"too many neighbours", [&](auto& b) { put<uint32_t>(b, nodeAt[0] + 10, uint32_t(2 * m + 1)); }},
      {"neighbour lacking the level",
       [&](auto& b) { put<uint32_t>(b, nodeAt[upper] + 10 + baseBytes + 4, uint32_t(groundOnly)); }},
      {"node level differs from the level table", [&](auto& b) { put<int16_t>(b, nodeAt[groundOnly] + 8, int16_t(1)); }},
      {"negative level", [&](auto& b) { put<int16_t>(b, levels, int16_t(-1)); }},
      {"huge level", [&](auto& b) { put<int16_t>(b, levels, int16_t(30000)); }},
      {"entry past the end", [&](auto& b) { put<uint64_t>(b, graph + 32, uint64_t(n)); }},
      {"entry below the top level", [&](auto& b) { put<uint64_t>(b, graph + 32, uint64_t(groundOnly)); }},
      {"wrong top level", [&](auto& b) { put<uint64_t>(b, graph + 24, get<uint64_t>(b, graph + 24) + 1); }},
      {"node count", [&](auto& b) { put<uint64_t>(b, graph, uint64_t(n - 1)); }},
      {"connectivity", [&](auto& b) { put<uint64_t>(b, graph + 8, uint64_t(m + 1)); }},
      {"base connectivity", [&](auto& b) { put<uint64_t>(b, graph + 16, uint64_t(3 * m)); }},
      {"key of another row", [&](auto& b) { put<uint64_t>(b, nodeAt[0], get<uint64_t>(b, nodeAt[1])); }},
      {"key past the rows", [&](auto& b) { put<uint64_t>(b, nodeAt[0], uint64_t(1) << 40); }},
      {"live node keyed free", [&](auto& b) { put<uint64_t>(b, nodeAt[0], std::numeric_limits<uint64_t>::max()); }},
      {"row mapped past the nodes", [&](auto& b) { put<uint32_t>(b, slots, uint32_t(n + 5)); }},
      {"row mapped to a free node", [&](auto& b) { put<uint32_t>(b, slots, uint32_t(freeNode)); }},
      {"two rows on one node", [&](auto& b) { put<uint32_t>(b, slots + 4, get<uint32_t>(b, slots)); }},
      {"live count", [&](auto& b) { put<uint64_t>(b, meta + 40, get<uint64_t>(b, meta + 40) + 1); }},
      {"more nodes than rows", [&](auto& b) { put<uint64_t>(b, meta + 32, uint64_t(n + 1)); }},
      {"connectivity out of range", [&](auto& b) { put<uint32_t>(b, meta + 12, 1u); }},
      {"free list names a live node", [&](auto& b) { put<uint32_t>(b, freeList, get<uint32_t>(b, slots)); }},
      {"duplicate ids", [&](auto& b) {
         const size_t idsAt = sectionOf(sectionsOf(b), 2)->offset;
         put<uint64_t>(b, idsAt + 8, get<uint64_t>(b, idsAt));
       }},
  };
  for (const Case& c : cases) {
    std::vector<uint8_t> mutated = bytes;
    c.edit(mutated);
    reseal(mutated);
    writeBytes(bad, mutated);
    for (bool map : {false, true}) {
      bool corrupt = false;
      try {
        HnswIndex::open(bad, map, false, simd::defaultLevel(), 1);
      } catch (const Error& e) {
        corrupt = e.code() == ErrorCode::CorruptFile;
      }
      CHECK_MSG(corrupt, c.what << (map ? " (mapped)" : "") << " opened");
    }
  }
  // The untouched file, sealed the same way, opens: the cases fail for what they change.
  std::vector<uint8_t> resealed = bytes;
  reseal(resealed);
  CHECK(resealed == bytes);
}

TEST_CASE("attributes_file.round_trips_every_type_through_every_index") {
  TempDir dir;
  const size_t n = 900, dim = 8;
  auto table = buildTable(n, 17);
  const std::vector<uint8_t> all = encodeAll(*table, nullptr, n);
  // Decoding and encoding again gives the same bytes (every value, missing ones included).
  CHECK(encodeAll(*decodeAttributes(all.data(), all.size(), n, "x"), nullptr, n) == all);
  const std::vector<uint64_t> ids = idsFor(n, 17);
  const std::vector<float> data = randomVectors(n, dim, 17);
  std::vector<uint64_t> gone;
  std::vector<uint32_t> liveRows;
  for (size_t i = 0; i < n; ++i) (i % 3 == 1 ? gone.push_back(ids[i]) : liveRows.push_back(static_cast<uint32_t>(i)));
  const std::vector<uint8_t> live = encodeAll(*table, liveRows.data(), liveRows.size());
  const std::string path = dir.file("a.ebrix");

  // HNSW keeps every row (removed ones included): the table comes back whole.
  HnswIndex hnsw(params(dim, Metric::L2), simd::defaultLevel(), 1);
  hnsw.add(ids.data(), data.data(), n, {}, 1);
  hnsw.remove(gone.data(), gone.size());
  hnsw.save(path, "", table.get());
  for (bool map : {false, true}) {
    auto opened = HnswIndex::open(path, map, true, simd::defaultLevel(), 1);
    CHECK(opened.attributes != nullptr);
    CHECK(encodeAll(*opened.attributes, nullptr, n) == all);
  }
  // Flat and IVF-PQ save the live rows, renumbered: the table's rows follow them.
  FlatIndex flat(dim, Metric::L2, simd::defaultLevel(), 1);
  flat.add(ids.data(), data.data(), n);
  flat.remove(gone.data(), gone.size());
  flat.save(path, "", table.get());
  for (bool map : {false, true}) {
    auto opened = FlatIndex::open(path, map, true, simd::defaultLevel(), 1);
    CHECK(encodeAll(*opened.attributes, nullptr, opened.index->size()) == live);
  }
  flat.compact();  // rows keep their numbers across a compaction, slots do not
  flat.save(path, "", table.get());
  CHECK(encodeAll(*FlatIndex::open(path, true, true, simd::defaultLevel(), 1).attributes, nullptr, liveRows.size()) == live);
  IvfPqParams p;
  p.dim = dim;
  p.metric = Metric::L2;
  p.nlist = 4;
  p.m = 4;
  p.nbits = 8;
  IvfPqIndex ivf(p, simd::defaultLevel(), 1);
  ivf.train(data.data(), n, IvfPqTrainParams{});
  ivf.add(ids.data(), data.data(), n);
  ivf.remove(gone.data(), gone.size());
  ivf.save(path, "", table.get());
  CHECK(encodeAll(*IvfPqIndex::open(path, simd::defaultLevel(), 1).attributes, nullptr, liveRows.size()) == live);
  // A filter gives the same rows on the opened table as on the saved one.
  hnsw.save(path, "", table.get());
  auto reopened = HnswIndex::open(path, true, true, simd::defaultLevel(), 1);
  const FilterValue two = FilterValue::ofUint(2);
  const FilterNode filter = FilterNode::either({FilterNode::both({FilterNode::range("level", &two, true, nullptr, true),
                                                                  FilterNode::eq("city", FilterValue::ofString("oslo"))}),
                                                FilterNode::hasAny("skills", {"rust", "ts"})});
  const FilterResult want = compileFilter(*table, filter), got = compileFilter(*reopened.attributes, filter);
  CHECK(want.count > 0 && want.count < n);
  CHECK(want.bits == got.bits);
  // Without a table, no section: the file opens with no attributes.
  hnsw.save(path, "");
  CHECK(HnswIndex::open(path, true, true, simd::defaultLevel(), 1).attributes == nullptr);
}

TEST_CASE("attributes_file.hostile_sections_are_corrupt_never_a_crash") {
  const size_t n = 70;
  auto table = buildTable(n, 23);
  const std::vector<uint8_t> bytes = encodeAll(*table, nullptr, n);
  const auto decodes = [&](const std::vector<uint8_t>& b, size_t rows) {
    try {
      decodeAttributes(b.data(), b.size(), rows, "x");
      return true;
    } catch (const Error& e) {
      CHECK_MSG(e.code() == ErrorCode::CorruptFile, e.what());
      return false;
    }
  };
  CHECK(decodes(bytes, n));
  CHECK(!decodes(bytes, n + 1));
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    CHECK_MSG(!decodes(std::vector<uint8_t>(bytes.begin(), bytes.begin() + static_cast<long>(cut)), n), "cut at " << cut);
  }
  std::vector<uint8_t> longer = bytes;
  longer.push_back(0);
  CHECK(!decodes(longer, n));
  std::mt19937 rng(7);
  for (int t = 0; t < 3000; ++t) {
    std::vector<uint8_t> mutated = bytes;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) mutated[rng() % mutated.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
    decodes(mutated, n);  // may decode (a changed value is still a value), never crash
  }
  // Lies the checksum cannot see, each on its own.
  const auto withAt = [&](size_t at, auto value) {
    std::vector<uint8_t> b = bytes;
    std::memcpy(b.data() + at, &value, sizeof(value));
    return b;
  };
  CHECK(!decodes(withAt(0, uint32_t(2)), n));              // layout version
  CHECK(!decodes(withAt(4, uint32_t(1u << 30)), n));       // column count
  CHECK(!decodes(withAt(16, uint8_t(9)), n));              // type of column 0
  CHECK(!decodes(withAt(17, uint8_t(1)), n));              // multi on a uint column
  CHECK(!decodes(withAt(20, uint32_t(0xFFFFFFF0u)), n));   // name length
  // Column 0 is "level" (5 bytes): its dictionary count follows the name.
  CHECK(!decodes(withAt(29, uint32_t(3)), n));             // a dictionary on a uint column
  // A NaN price, a city code past the dictionary, a presence flag of 2: find them by layout.
  size_t at = 16;
  size_t dictionaryEnds = 0;
  for (int c = 0; c < 5; ++c) {
    uint32_t nameBytes, strings;
    std::memcpy(&nameBytes, bytes.data() + at + 4, 4);
    at += 8 + nameBytes;
    std::memcpy(&strings, bytes.data() + at, 4);
    at += 4;
    for (uint32_t s = 0; s < strings; ++s) {
      uint32_t len;
      std::memcpy(&len, bytes.data() + at, 4);
      at += 4 + len;
    }
  }
  dictionaryEnds = at;
  const size_t levelPresent = dictionaryEnds, pricePresent = levelPresent + n + 8 * n;
  const size_t priceValues = pricePresent + n, remote = priceValues + 8 * n + n;
  const size_t cityPresent = remote + n, cityCodes = cityPresent + n, skillOffsets = cityCodes + 4 * n;
  CHECK(!decodes(withAt(levelPresent, uint8_t(2)), n));
  size_t firstPrice = 0;
  while (bytes[pricePresent + firstPrice] == 0) ++firstPrice;
  CHECK(!decodes(withAt(priceValues + 8 * firstPrice, std::numeric_limits<double>::quiet_NaN()), n));
  size_t firstCity = 0;
  while (bytes[cityPresent + firstCity] == 0) ++firstCity;
  CHECK(!decodes(withAt(cityCodes + 4 * firstCity, uint32_t(3)), n));
  CHECK(!decodes(withAt(skillOffsets + 4, uint32_t(0xFFFFFFF0u)), n));  // offsets out of order
  CHECK(!decodes(withAt(skillOffsets, uint32_t(1)), n));                 // offsets[0] != 0
  // A missing value's bytes are ignored, whatever they hold.
  size_t missingPrice = 0;
  while (bytes[pricePresent + missingPrice] != 0) ++missingPrice;
  CHECK(decodes(withAt(priceValues + 8 * missingPrice, std::numeric_limits<double>::quiet_NaN()), n));
}
