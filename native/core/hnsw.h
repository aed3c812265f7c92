// HnswIndex: an approximate index over a hierarchical navigable small-world graph, built
// and searched by usearch's index_dense_gt (header-only, included by hnsw.cpp alone so that
// nothing else needs usearch's headers).
//
// Scores, ids, padding and errors follow FlatIndex: higher is better (ip and cosine by inner
// product, cosine normalised at add and search; l2 reported as -|q - x|^2), ids are u64
// with 2^64-1 reserved, rows short of k are padded with (kNoId, -inf). Storage f32, f16 or
// bf16 with FlatIndex's semantics (rounded after normalisation, products in float32, f16
// values from 65520 up rejected).
//
// Rows: every added vector gets a row number in add order (across adds, starting at 0),
// which allow bitsets address as FlatIndex's do. A removed vector's row is never reused, so
// a bitset built before a remove still means the same vectors; re-adding a removed id gives
// it a new row. At most 2^32-1 rows over the life of an index.
//
// Concurrency: searches run beside the inserts of an add, as usearch's graph is built for
// (an insert locks the nodes it links; a search reads without locks). What usearch does not
// make safe beside a search runs alone, behind a writer-preferring gate: growing the graph
// (it reallocates nodes, vectors and per-thread contexts), removing (it rewrites keys that
// searches read), writing the new vector of a reused node, and publishing an upsert (its new
// rows and the tombstones of the rows they replace, in one step). Adds, upserts and removes
// are serialised among themselves. A search returns only rows published when it started (the
// rows of a write in flight route its walk but are never returned), so it reads one state.
// save() and compact() are writers too: adds, upserts and removes wait for them, searches
// do not (compact swaps its rebuilt graph in under the exclusive gate).
//
// Files: save() / open() in the index file format (layout in hnsw.cpp). Opened with map,
// the graph and vectors are used in place from the mapping (usearch's view of a serialised
// graph, read-only); the first write copies them into memory (materialize in hnsw.cpp).
// See hnsw.cpp for the details and the TSan suppressions (native/core/tests/tsan-usearch.supp)
// for usearch's lock-free reads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "attributes.h"
#include "exact_search.h"  // SearchOutput
#include "metric.h"
#include "row_filter.h"
#include "simd/kernels.h"

namespace ebrix {

struct HnswParams {
  size_t dim = 0;
  Metric metric = Metric::InnerProduct;
  size_t connectivity = 16;      // graph degree (M); the base layer keeps twice as many
  size_t expansionAdd = 128;     // candidate list while inserting (efConstruction)
  size_t expansionSearch = 64;   // candidate list of a search (ef) when a search names none
  simd::Element storage = simd::Element::F32;
};

// How a search with an allow bitset finds its rows: usearch's filtered graph walk, a scan
// that scores every allowed row exactly, or (Auto) whichever computes fewer distances.
enum class HnswFilter { Auto, Graph, Scan };

struct HnswSearchParams {
  size_t k = 10;
  size_t expansion = 0;   // 0: the index's expansionSearch; the list is never shorter than k
  unsigned threads = 0;   // 0: the index default
  // As SearchParams: bit r of word r/32 allows row r; rows past the last word are not
  // allowed; null allows every row.
  const uint32_t* allowBits = nullptr;
  size_t allowWords = 0;
  // Only the rows this filter allows too, evaluated on the state the search reads.
  const RowFilter* rowFilter = nullptr;
  HnswFilter filterStrategy = HnswFilter::Auto;
};

class HnswIndex {
 public:
  // The most rows an index numbers over its life (rows are 32-bit, as in FlatIndex).
  static constexpr size_t kMaxRows = 0xFFFFFFFFu;

  HnswIndex(const HnswParams& params, simd::Level level, unsigned threads);
  ~HnswIndex();
  HnswIndex(const HnswIndex&) = delete;
  HnswIndex& operator=(const HnswIndex&) = delete;

  const HnswParams& params() const;
  size_t dim() const;
  simd::Level level() const;
  unsigned threads() const;
  // Vectors held (added and not removed).
  size_t size() const;
  bool contains(uint64_t id) const;
  // The row of each id (-1 for an id the index does not hold, removed ones included).
  void rowsOf(const uint64_t* ids, size_t count, int64_t* rows) const;

  // Inserts `count` vectors on up to `threads` threads (0: the index default). Validated first
  // as FlatIndex::add (finite values, f16 range, ids new and unique, not 2^64-1); on any error
  // the index is unchanged. Safe while searches run; adds and removes are serialised. `hook`
  // runs before the rows publish (row_filter.h).
  void add(const uint64_t* ids, const float* vectors, size_t count, const WriteHook& hook = {},
           unsigned threads = 0);

  // As FlatIndex::upsert: replaces the vectors of held ids (their rows are removed as remove()
  // removes them) and adds the others under new rows, all-or-nothing; searches see the new
  // rows and the removal of the old ones in one step.
  void upsert(const uint64_t* ids, const float* vectors, size_t count, const WriteHook& hook = {},
              unsigned threads = 0);

  // The vector stored under `id` (dim floats into `out`): normalised for cosine, rounded for
  // f16 / bf16. Throws UnknownId.
  void get(uint64_t id, float* out) const;

  // Removes the vectors of `ids`, as FlatIndex::remove: ids the index does not hold are
  // ignored, a repeated id counts once, and the number actually removed is returned. Waits for
  // searches in flight; none after it returns the removed ids.
  size_t remove(const uint64_t* ids, size_t count);

  // Rebuilds the graph from the live vectors alone, dropping the nodes of removed rows (which
  // otherwise stay in the graph until an add reuses them). Rows, ids and stored vectors are
  // unchanged. Costs what building an index of size() vectors costs (every live vector is
  // inserted again, on up to `threads` threads) and, meanwhile, the memory of a second graph
  // and vector array; adds, upserts and removes wait, searches run on against the old graph
  // and move to the new one in one step. Returns the number of nodes dropped (0, with nothing
  // rebuilt, when none was removed).
  size_t compact(unsigned threads = 0);

  // Writes the index to `path` atomically (index_file.h; the layout is in hnsw.cpp): params,
  // the row → id and row → slot tables (removed rows included, so rows keep their numbers),
  // the vectors and usearch's graph as they are, and the records of every row when
  // `attributes` is given. Adds, upserts and removes wait for it; searches run on. Throws
  // Error(Io); the previous file at `path` is then unchanged.
  void save(const std::string& path, const std::string& modelVersion, const AttributeTable* attributes = nullptr) const;

  struct Opened {
    std::unique_ptr<HnswIndex> index;
    std::string modelVersion;
    std::shared_ptr<AttributeTable> attributes;  // null when the file holds none
  };
  // Opens a file save() wrote. Every section but the vectors has its checksum checked, and the
  // graph is validated node by node (levels, neighbour counts and slots, keys against the row
  // tables) before usearch sees it. map: the graph and the vectors stay in the file, mapped
  // read-only and used in place (usearch's view of a serialised graph); their checksum is
  // checked only when `verify`. The first add, upsert, remove or compact of a mapped index
  // copies them into memory first (once: as a full load would have), so mutation works as on
  // any index. Without map everything is read into memory and checked. Throws
  // Error(CorruptFile) for a file that is not a well-formed HNSW index, Error(Io).
  static Opened open(const std::string& path, bool map, bool verify, simd::Level level, unsigned threads);

  // Bytes of the graph and vectors read from a mapped file (0 once copied into memory).
  size_t mappedBytes() const;

  // Approximate top-k of each query, queries in parallel. With an allow bitset, only allowed
  // rows are returned: through usearch's filtered graph search, or (HnswFilter::Scan, or
  // Auto when so few rows are allowed that the graph walk would compute more distances than
  // there are allowed rows) by scoring exactly the allowed rows.
  SearchOutput search(const float* queries, size_t queryCount, const HnswSearchParams& params) const;

  // Bytes held: usearch's graph, vectors and key lookup, the row → id table and the id → row
  // map (estimated). Updated when an add or a remove completes.
  size_t memoryBytes() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace ebrix
