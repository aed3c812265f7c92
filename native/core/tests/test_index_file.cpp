// The index file format and FlatIndex persistence: round trips for every storage and metric,
// with and without mapping; atomic saves; and damaged files (every truncation, random byte
// flips, hostile sections with valid checksums), which must give CorruptFile and never crash.
#include <dirent.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "../error.h"
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

std::vector<uint64_t> idsFor(size_t n, uint64_t salt) {
  std::vector<uint64_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = (i * 2654435761u + salt) % 1000000007u;
  return ids;
}

std::unique_ptr<FlatIndex> buildFlat(size_t dim, Metric metric, simd::Element element, size_t n, uint32_t seed) {
  auto index = std::make_unique<FlatIndex>(dim, metric, simd::defaultLevel(), 2, element);
  const std::vector<float> data = randomVectors(n, dim, seed);
  if (element == simd::Element::I8) index->train(data.data(), n);
  const std::vector<uint64_t> ids = idsFor(n, seed);
  index->add(ids.data(), data.data(), n);
  return index;
}

bool sameResults(const SearchOutput& a, const SearchOutput& b) { return a.ids == b.ids && a.scores == b.scores; }

// Opens `path` both ways and, when that succeeds, searches it: a damaged file may open (a
// flip in padding, or in mapped rows not verified) but must never crash. Returns whether
// every open attempt threw CorruptFile.
bool opensSafely(const std::string& path, size_t dim) {
  bool allCorrupt = true;
  for (bool map : {false, true}) {
    try {
      FlatIndex::Opened opened = FlatIndex::open(path, map, false, simd::defaultLevel(), 1);
      allCorrupt = false;
      const std::vector<float> q = randomVectors(2, opened.index->dim(), 99);
      opened.index->search(q.data(), 2, 5);
      const std::vector<uint64_t> extra = {4000000000ull};
      std::vector<float> v(opened.index->dim(), 0.5f);
      try {
        opened.index->add(extra.data(), v.data(), 1);  // a mapped open builds its id map here
      } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::CorruptFile || e.code() == ErrorCode::DuplicateId ||
              e.code() == ErrorCode::NotTrained);
      }
    } catch (const Error& e) {
      CHECK_MSG(e.code() == ErrorCode::CorruptFile, e.what());
    }
  }
  (void)dim;
  return allCorrupt;
}

}  // namespace

TEST_CASE("file.checksum_sees_every_byte") {
  std::vector<uint8_t> data(1000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 31 + 7);
  const uint64_t base = checksum64(data.data(), data.size());
  CHECK(base == checksum64(data.data(), data.size()));
  for (size_t i = 0; i < data.size(); i += 37) {
    for (int bit = 0; bit < 8; ++bit) {
      data[i] ^= static_cast<uint8_t>(1u << bit);
      CHECK(checksum64(data.data(), data.size()) != base);
      data[i] ^= static_cast<uint8_t>(1u << bit);
    }
  }
  // Every length gives its own value (tails of 1..31 bytes included).
  std::vector<uint64_t> seen;
  for (size_t n = 0; n < 100; ++n) seen.push_back(checksum64(data.data(), n));
  std::sort(seen.begin(), seen.end());
  CHECK(std::unique(seen.begin(), seen.end()) == seen.end());
}

TEST_CASE("file.flat_round_trips_every_storage_and_metric") {
  TempDir dir;
  for (simd::Element element : {simd::Element::F32, simd::Element::F16, simd::Element::BF16, simd::Element::I8}) {
    for (Metric metric : {Metric::InnerProduct, Metric::Cosine, Metric::L2}) {
      const size_t dim = 33, n = 1500;
      auto index = buildFlat(dim, metric, element, n, 11);
      const std::string path = dir.file("flat.ebrix");
      index->save(path, "model-v7");
      const std::vector<float> q = randomVectors(20, dim, 12);
      const SearchOutput expected = index->search(q.data(), 20, 10);
      for (bool map : {false, true}) {
        for (bool verify : {false, true}) {
          FlatIndex::Opened opened = FlatIndex::open(path, map, verify, simd::defaultLevel(), 2);
          CHECK(opened.modelVersion == "model-v7");
          CHECK(opened.index->dim() == dim);
          CHECK(opened.index->metric() == metric);
          CHECK(opened.index->storage() == element);
          CHECK(opened.index->size() == n);
          CHECK(opened.index->trained());
          CHECK(sameResults(opened.index->search(q.data(), 20, 10), expected));
          CHECK((opened.index->mappedBytes() > 0) == map);
        }
      }
    }
  }
  // An empty index round-trips too (an untrained i8 one has no quantizer section).
  FlatIndex empty(8, Metric::L2, simd::defaultLevel(), 1, simd::Element::I8);
  empty.save(dir.file("empty.ebrix"), "");
  FlatIndex::Opened opened = FlatIndex::open(dir.file("empty.ebrix"), true, false, simd::defaultLevel(), 1);
  CHECK(opened.index->size() == 0);
  CHECK(!opened.index->trained());
  CHECK(opened.modelVersion.empty());
}

TEST_CASE("file.mapped_index_copies_on_first_add") {
  TempDir dir;
  const size_t dim = 16, n = 3000;
  auto index = buildFlat(dim, Metric::L2, simd::Element::F32, n, 21);
  const std::string path = dir.file("m.ebrix");
  index->save(path, "v1");
  FlatIndex::Opened opened = FlatIndex::open(path, true, false, simd::defaultLevel(), 2);
  FlatIndex& mapped = *opened.index;
  CHECK(mapped.mappedBytes() == n * (dim * 4 + 4 + 8));
  CHECK(mapped.memoryBytes() < 1024);  // the rows are the file's pages
  // Ids of the file are known to the first add: a duplicate is refused, the index unchanged.
  const std::vector<uint64_t> old = idsFor(n, 21);
  std::vector<float> v = randomVectors(2, dim, 22);
  const std::vector<uint64_t> dup = {old[5], 99999999999ull};
  CHECK_THROWS_CODE(mapped.add(dup.data(), v.data(), 2), ErrorCode::DuplicateId);
  CHECK(mapped.size() == n);
  const std::vector<uint64_t> fresh = {99999999998ull, 99999999999ull};
  mapped.add(fresh.data(), v.data(), 2);
  CHECK(mapped.size() == n + 2);
  CHECK(mapped.mappedBytes() == 0);
  CHECK(mapped.memoryBytes() >= (n + 2) * dim * 4);
  const SearchOutput hit = mapped.search(v.data(), 1, 1);
  CHECK(hit.ids[0] == fresh[0]);
  // The old rows came along.
  const std::vector<float> data = randomVectors(n, dim, 21);
  CHECK(mapped.search(data.data() + 17 * dim, 1, 1).ids[0] == old[17]);
  // Saving over the mapped file while it is open: the open index keeps its pages.
  mapped.save(path, "v2");
  CHECK(FlatIndex::open(path, true, true, simd::defaultLevel(), 1).modelVersion == "v2");
  CHECK(mapped.search(data.data() + 17 * dim, 1, 1).ids[0] == old[17]);
}

TEST_CASE("file.failed_save_leaves_the_previous_file") {
  TempDir dir;
  const std::string path = dir.file("a.ebrix");
  auto first = buildFlat(12, Metric::InnerProduct, simd::Element::F32, 500, 31);
  first->save(path, "first");
  const std::vector<uint8_t> before = readBytes(path);
  auto second = buildFlat(12, Metric::InnerProduct, simd::Element::F32, 900, 32);
  for (int64_t failAt : {int64_t(0), int64_t(100), int64_t(5000), int64_t(30000)}) {
    failNextWriteAfterForTesting(failAt);
    CHECK_THROWS_CODE(second->save(path, "second"), ErrorCode::Io);
    CHECK(readBytes(path) == before);
    CHECK(dir.files().size() == 1);  // the temporary is gone
  }
  CHECK(FlatIndex::open(path, false, true, simd::defaultLevel(), 1).modelVersion == "first");
  second->save(path, "second");
  CHECK(FlatIndex::open(path, false, true, simd::defaultLevel(), 1).index->size() == 900);
  // A directory that does not exist, or a directory as the target: Io, nothing written.
  CHECK_THROWS_CODE(second->save(dir.file("missing/x.ebrix"), ""), ErrorCode::Io);
  CHECK_THROWS_CODE(FlatIndex::open(dir.file("nothing.ebrix"), false, false, simd::defaultLevel(), 1), ErrorCode::Io);
  CHECK_THROWS_CODE(FlatIndex::open(dir.path, false, false, simd::defaultLevel(), 1), ErrorCode::CorruptFile);
}

TEST_CASE("file.truncated_and_flipped_files_are_corrupt_never_a_crash") {
  TempDir dir;
  const size_t dim = 8;
  auto index = buildFlat(dim, Metric::L2, simd::Element::F16, 40, 41);
  const std::string good = dir.file("good.ebrix");
  index->save(good, "v");
  const std::vector<uint8_t> bytes = readBytes(good);
  const std::string bad = dir.file("bad.ebrix");
  // Every truncation.
  for (size_t n = 0; n < bytes.size(); ++n) {
    writeBytes(bad, std::vector<uint8_t>(bytes.begin(), bytes.begin() + static_cast<long>(n)));
    CHECK_MSG(opensSafely(bad, dim), "truncated to " + std::to_string(n) + " bytes opened");
  }
  // Random flips of one to four bytes: a flip anywhere but in padding is detected without map.
  std::mt19937 rng(42);
  size_t detected = 0, trials = 1500;
  for (size_t t = 0; t < trials; ++t) {
    std::vector<uint8_t> mutated = bytes;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) mutated[rng() % mutated.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
    writeBytes(bad, mutated);
    detected += opensSafely(bad, dim);
  }
  CHECK(detected > trials / 2);
}

TEST_CASE("file.hostile_sections_with_valid_checksums_are_corrupt") {
  // Files whose checksums are right but whose contents lie: the loader's own checks.
  TempDir dir;
  const std::string path = dir.file("h.ebrix");
  auto meta = [](uint32_t dim, uint32_t metric, uint32_t storage, uint64_t count, const std::string& version,
                 uint32_t claimedVersionBytes) {
    std::vector<uint8_t> m(28 + version.size());
    const uint32_t fixed[4] = {dim, metric, storage, 0};
    std::memcpy(m.data(), fixed, 16);
    std::memcpy(m.data() + 16, &count, 8);
    std::memcpy(m.data() + 24, &claimedVersionBytes, 4);
    std::memcpy(m.data() + 28, version.data(), version.size());
    return m;
  };
  const std::vector<float> rows(4 * 8, 0.25f), bias(4, -0.25f);
  const std::vector<uint64_t> ids = {1, 2, 3, 4}, dupIds = {1, 2, 2, 4};
  struct Case {
    const char* what;
    std::vector<uint8_t> meta;
    size_t rowBytes, biasBytes, idBytes;
    const std::vector<uint64_t>* ids;
    bool withQuantizer;
  };
  const Case cases[] = {
      {"dim 0", meta(0, 0, 0, 4, "", 0), 128, 16, 32, &ids, false},
      {"huge dim", meta(1u << 30, 0, 0, 4, "", 0), 128, 16, 32, &ids, false},
      {"unknown metric", meta(8, 9, 0, 4, "", 0), 128, 16, 32, &ids, false},
      {"unknown storage", meta(8, 0, 7, 4, "", 0), 128, 16, 32, &ids, false},
      {"count beyond the rows", meta(8, 0, 0, 1ull << 40, "", 0), 128, 16, 32, &ids, false},
      {"rows too short", meta(8, 0, 0, 4, "", 0), 124, 16, 32, &ids, false},
      {"ids too short", meta(8, 0, 0, 4, "", 0), 128, 16, 24, &ids, false},
      {"version length lies", meta(8, 0, 0, 4, "abc", 300), 128, 16, 32, &ids, false},
      {"duplicate ids", meta(8, 0, 0, 4, "", 0), 128, 16, 32, &dupIds, false},
      {"i8 without a quantizer", meta(8, 0, 3, 4, "", 0), 32, 16, 32, &ids, false},
  };
  for (const Case& c : cases) {
    FileWriter writer(path, IndexType::Flat);
    writer.add(1, c.meta.data(), c.meta.size());
    writer.add(2, rows.data(), c.rowBytes);
    writer.add(3, bias.data(), c.biasBytes);
    writer.add(4, c.ids->data(), c.idBytes);
    writer.commit();
    // Without map every check runs at open (ids included).
    CHECK_THROWS_CODE(FlatIndex::open(path, false, false, simd::defaultLevel(), 1), ErrorCode::CorruptFile);
    CHECK(opensSafely(path, 8) || std::string(c.what) == "duplicate ids");
  }
  // A file of another index type, and one of a newer format version.
  {
    FileWriter writer(path, IndexType::IvfPq);
    writer.commit();
    CHECK_THROWS_CODE(FlatIndex::open(path, false, false, simd::defaultLevel(), 1), ErrorCode::CorruptFile);
    std::vector<uint8_t> bytes = readBytes(path);
    const uint32_t newer = kIndexFormatVersion + 1;
    std::memcpy(bytes.data() + 8, &newer, 4);
    const uint64_t sum = checksum64(bytes.data(), 120);
    std::memcpy(bytes.data() + 120, &sum, 8);
    writeBytes(path, bytes);
    try {
      IndexFile::open(path, false);
      CHECK(false);
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::CorruptFile);
      CHECK(std::string(e.what()).find("format version 2") != std::string::npos);
    }
  }
}

TEST_CASE("file.ivfpq_round_trips_and_rejects_damage") {
  TempDir dir;
  const size_t dim = 16, n = 2000, nq = 15;
  const std::vector<float> data = randomVectors(n, dim, 51), queries = randomVectors(nq, dim, 52);
  const std::vector<uint64_t> ids = idsFor(n, 53);
  struct Spec {
    Metric metric;
    unsigned nbits;
    RefineStorage refine;
    bool opq;
  };
  const Spec specs[] = {{Metric::InnerProduct, 8, RefineStorage::None, false},
                        {Metric::L2, 4, RefineStorage::F16, true},
                        {Metric::Cosine, 8, RefineStorage::F32, true},
                        {Metric::L2, 4, RefineStorage::None, false}};
  const std::string path = dir.file("ivf.ebrix");
  for (const Spec& spec : specs) {
    IvfPqParams p;
    p.dim = dim;
    p.metric = spec.metric;
    p.nlist = 8;
    p.m = 4;
    p.nbits = spec.nbits;
    p.opq = spec.opq;
    p.refine = spec.refine;
    IvfPqIndex index(p, simd::defaultLevel(), 2);
    index.save(path, "");  // untrained
    IvfPqIndex::Opened empty = IvfPqIndex::open(path, simd::defaultLevel(), 1);
    CHECK(!empty.index->trained());
    IvfPqTrainParams tp;
    tp.maxIterations = 5;
    index.train(data.data(), n, tp);
    index.add(ids.data(), data.data(), 1234);
    index.add(ids.data() + 1234, data.data() + 1234 * dim, n - 1234);
    index.save(path, "ivf-v3");
    IvfPqIndex::Opened opened = IvfPqIndex::open(path, simd::defaultLevel(), 2);
    CHECK(opened.modelVersion == "ivf-v3");
    CHECK(opened.index->size() == n);
    IvfPqSearchParams sp;
    sp.k = 10;
    sp.nprobe = 3;
    CHECK(sameResults(opened.index->search(queries.data(), nq, sp), index.search(queries.data(), nq, sp)));
    CHECK(opened.index->memory().codes <= index.memory().codes);
    // The opened index takes adds like the original (ids known, rows continue).
    CHECK_THROWS_CODE(opened.index->add(ids.data() + 7, data.data(), 1), ErrorCode::DuplicateId);
    const std::vector<uint64_t> fresh = {77777777777ull};
    opened.index->add(fresh.data(), data.data() + 5 * dim, 1);
    index.add(fresh.data(), data.data() + 5 * dim, 1);
    CHECK(sameResults(opened.index->search(queries.data(), nq, sp), index.search(queries.data(), nq, sp)));
  }
  // Damage: every truncation of a small file, and rows that are not a permutation.
  const std::vector<uint8_t> bytes = readBytes(path);
  const std::string bad = dir.file("bad.ebrix");
  for (size_t cut = 0; cut < bytes.size(); cut += 7) {
    writeBytes(bad, std::vector<uint8_t>(bytes.begin(), bytes.begin() + static_cast<long>(cut)));
    CHECK_THROWS_CODE(IvfPqIndex::open(bad, simd::defaultLevel(), 1), ErrorCode::CorruptFile);
  }
  CHECK_THROWS_CODE(FlatIndex::open(path, false, false, simd::defaultLevel(), 1), ErrorCode::CorruptFile);
  {
    IndexFile::open(path, false);  // well-formed; now rewrite it with a duplicated row number
    IvfPqIndex::Opened opened = IvfPqIndex::open(path, simd::defaultLevel(), 1);
    const std::shared_ptr<IndexFile> f = IndexFile::open(path, false);
    std::vector<std::vector<uint8_t>> sections;
    FileWriter writer(bad, IndexType::IvfPq);
    for (uint32_t kind = 1; kind <= 9; ++kind) {
      const SectionEntry* e = f->find(kind);
      if (e == nullptr) continue;
      sections.emplace_back(e->bytes);
      f->read(*e, sections.back().data());
      if (kind == 7) std::memcpy(sections.back().data(), sections.back().data() + 4, 4);  // rows[0] = rows[1]
    }
    size_t i = 0;
    for (uint32_t kind = 1; kind <= 9; ++kind) {
      if (f->find(kind) != nullptr) writer.add(kind, sections[i].data(), sections[i].size()), ++i;
    }
    writer.commit();
    CHECK_THROWS_CODE(IvfPqIndex::open(bad, simd::defaultLevel(), 1), ErrorCode::CorruptFile);
  }
}

TEST_CASE("file.fuzz_corpus_and_crash_regressions") {
  // corpus/: small files of every kind written by this version's save; they must keep
  // opening (the format stays readable) and, fuzzed, seed the libFuzzer target.
  // crashes/: inputs a fuzzer once found to crash or read out of bounds; they must now open
  // or fail with CorruptFile, and nothing else.
  const std::string base = std::string(EBRIX_SOURCE_DIR) + "/native/core/tests/fuzz/";
  size_t seeds = 0;
  for (const char* sub : {"corpus", "crashes"}) {
    DIR* d = opendir((base + sub).c_str());
    if (d == nullptr) continue;
    while (dirent* e = readdir(d)) {
      const std::string name = e->d_name;
      if (name == "." || name == ".." || name == "README.md") continue;
      const std::string path = base + sub + "/" + name;
      if (std::string(sub) == "corpus") {
        ++seeds;
        const bool flat = name.rfind("flat-", 0) == 0, hnsw = name.rfind("hnsw-", 0) == 0;
        // Files named *-attrs hold an attributes section; the others were written before
        // attributes were stored and must still open.
        const bool attrs = name.find("-attrs") != std::string::npos;
        try {
          if (flat) {
            auto opened = FlatIndex::open(path, false, true, simd::defaultLevel(), 1);
            CHECK(opened.index->size() > 0);
            CHECK((opened.attributes != nullptr) == attrs);
          } else if (hnsw) {
            for (bool map : {false, true}) {
              auto opened = HnswIndex::open(path, map, true, simd::defaultLevel(), 1);
              CHECK(opened.index->size() > 0);
              CHECK((opened.attributes != nullptr) == attrs);
            }
          } else {
            auto opened = IvfPqIndex::open(path, simd::defaultLevel(), 1);
            CHECK(opened.index->size() > 0);
            CHECK((opened.attributes != nullptr) == attrs);
          }
        } catch (const Error& err) {
          CHECK_MSG(false, path + ": " + err.what());
        }
      }
      opensSafely(path, 0);
      for (bool map : {false, true}) {
        try {
          HnswIndex::open(path, map, false, simd::defaultLevel(), 1);
        } catch (const Error& err) {
          CHECK(err.code() == ErrorCode::CorruptFile);
        }
      }
      try {
        IvfPqIndex::open(path, simd::defaultLevel(), 1);
      } catch (const Error& err) {
        CHECK(err.code() == ErrorCode::CorruptFile);
      }
    }
    closedir(d);
  }
  CHECK(seeds >= 9);
}
