// IvfPqIndex: an inverted file over a coarse quantizer of `nlist` centroids, each list holding
// the product-quantized residuals (x - centroid) of its vectors; a search scores the `nprobe`
// nearest lists of each query with ADC tables (8-bit codes) or fast-scan (4-bit codes), and,
// when refine vectors are kept, re-ranks the k × refineFactor best candidates exactly.
//
// Scores follow FlatIndex: higher is better; ip and cosine (normalised at add and search) by
// inner product, l2 as -|q - x|^2. Ids, padding (kNoId, -inf) and errors as FlatIndex.
//
// Rows, removal and compaction as FlatIndex (flat.h): every stored vector takes the next row
// number for life; remove() and upsert() make rows tombstones, which a live bitset excludes
// inside the list scan (ANDed with the search's allow bitset); compact() rewrites the lists
// (and refine vectors) without them; a saved file holds the live vectors only, renumbered
// 0 .. size-1.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "attributes.h"
#include "exact_search.h"  // SearchOutput
#include "metric.h"
#include "pq.h"
#include "row_filter.h"
#include "simd/kernels.h"

namespace ebrix {

enum class RefineStorage { None, F16, F32 };

struct IvfPqParams {
  size_t dim = 0;
  Metric metric = Metric::InnerProduct;
  size_t nlist = 0;
  size_t m = 0;          // sub-quantizers; dim % m == 0
  unsigned nbits = 8;    // 4 (fast-scan) or 8 (ADC)
  bool opq = false;
  RefineStorage refine = RefineStorage::None;
};

struct IvfPqTrainParams {
  uint64_t seed = 1;
  size_t maxIterations = 25;
  unsigned threads = 0;                    // 0: the index default
  std::function<void(double)> progress;    // fraction in [0, 1], may be empty
};

// How a search with an allow bitset or a filter finds its rows (ivfpq.cpp, filteredPlan):
//   Probe  probe the query's nearest lists, nprobe scaled up by 1 / (fraction of rows allowed)
//          (at most nlist), so that about as many allowed candidates are scored as an
//          unfiltered search scores, and recall stays near the unfiltered one;
//   Scan   score the allowed rows directly, found through their list positions: their codes
//          with the query's ADC tables, or their refine vectors exactly when the index keeps
//          them (then the filtered top-k is exact);
//   Auto   whichever reads less: the scan when allowed × dim <= (lists probed) × (rows per
//          list) × code bytes, the probe otherwise.
enum class IvfPqFilter { Auto, Probe, Scan };

struct IvfPqSearchParams {
  size_t k = 10;
  size_t nprobe = 8;           // clamped to nlist
  size_t refineFactor = 4;     // with refine vectors: exact re-rank of k × refineFactor candidates
  unsigned threads = 0;        // 0: the index default
  const uint32_t* allowBits = nullptr;  // as SearchParams: over rows in add order
  size_t allowWords = 0;
  // Only the rows this filter allows too, evaluated on the state the search reads.
  const RowFilter* rowFilter = nullptr;
  // With allowBits or rowFilter (the CPU index; the GPU index probes nprobe lists as given).
  IvfPqFilter filterStrategy = IvfPqFilter::Auto;
};

// The trained quantizers, copied out for a mirror of the index on another device (the GPU
// index keeps its lists in device memory and scores them with these).
struct IvfPqModel {
  std::vector<float> centroids;         // nlist × dim (unit norm for ip / cosine)
  std::vector<float> rotatedCentroids;  // nlist × dim: R·c (c itself without opq)
  std::vector<float> codebooks;         // m × 2^nbits × dim / m
  std::vector<float> rotation;          // dim × dim, row-major; empty without opq
};

struct IvfPqMemory {
  size_t codes = 0;       // PQ codes (both layouts where kept), list capacity included, and
                          // the per-entry l2 score terms (a float each, l2 indexes only)
  size_t ids = 0;         // per-list ids and row numbers, and each row's list position
  size_t centroids = 0;   // coarse centroids, PQ codebooks (two layouts), OPQ rotation
  size_t refine = 0;      // refine vectors (and their slots after a compaction)
  size_t idMap = 0;       // id → row map (estimated), and the live bitset
  size_t total() const { return codes + ids + centroids + refine + idMap; }
};

class IvfPqIndex {
 public:
  IvfPqIndex(const IvfPqParams& params, simd::Level level, unsigned threads);
  ~IvfPqIndex();

  const IvfPqParams& params() const;
  bool trained() const;
  size_t size() const;
  // The threads a search or train uses by default (FlatIndex::threads: follows the pool
  // when constructed with 0).
  unsigned threads() const;

  // Trains the coarse quantizer and the PQ codebooks (and OPQ) on n vectors. Throws
  // Error(InvalidArgument) for n < max(nlist, 2^nbits) or a second train.
  void train(const float* vectors, size_t n, const IvfPqTrainParams& params);

  // As FlatIndex::add (validation, all-or-nothing, safe while searches run; `hook` runs before
  // the rows publish). Throws Error(NotTrained) before train.
  void add(const uint64_t* ids, const float* vectors, size_t count, const WriteHook& hook = {});

  // As FlatIndex::upsert: replaces the vectors of held ids and adds the others, all-or-nothing,
  // in one step for searches.
  void upsert(const uint64_t* ids, const float* vectors, size_t count, const WriteHook& hook = {});

  // As FlatIndex::remove: returns how many of the ids were held. Waits for the searches in
  // flight (it publishes under the same lock as an add).
  size_t remove(const uint64_t* ids, size_t count);

  bool contains(uint64_t id) const;

  // The vector stored under `id`: its refine vector (dim floats into `out`; normalised for
  // cosine, rounded for f16). Throws UnknownId, or InvalidArgument for an index without refine
  // vectors, which keeps only PQ codes and so cannot give a vector back.
  void get(uint64_t id, float* out) const;

  // Rewrites the lists (and refine vectors) without the entries of removed rows. Adds wait;
  // searches run on until the new lists are swapped in (they wait only for the swap). Returns
  // the number of entries dropped.
  size_t compact();

  // add() in two phases, for a mirror that must take the same vectors or none (the GPU
  // index): prepareAdd validates, assigns and encodes without changing the index and holds
  // the writer lock (other adds wait) until the PendingAdd is committed or destroyed;
  // commitAdd publishes it. `vectors` must outlive the PendingAdd. Dropping a PendingAdd
  // leaves the index as it was.
  class PendingAdd;
  std::unique_ptr<PendingAdd> prepareAdd(const uint64_t* ids, const float* vectors, size_t count);
  // The same for an upsert: held ids are let through, and commitAdd makes their rows
  // tombstones (PendingAdd::replacedRows).
  std::unique_ptr<PendingAdd> prepareUpsert(const uint64_t* ids, const float* vectors, size_t count);
  void commitAdd(PendingAdd& pending, const WriteHook& hook = {});

  // Throws Error(NotTrained) before train.
  IvfPqModel model() const;

  // Batched search: queries are grouped by list, so each probed list is scanned once per
  // batch. Throws Error(NotTrained) before train.
  SearchOutput search(const float* queries, size_t queryCount, const IvfPqSearchParams& params) const;

  IvfPqMemory memory() const;

  // The row of each id (-1 for an id the index does not hold): for filters that name ids.
  void rowsOf(const uint64_t* ids, size_t count, int64_t* rows) const;

  // Writes the index to `path` atomically (index_file.h; sections in ivfpq.cpp), with the
  // version id of the model whose vectors these are: the live vectors only, renumbered 0 ..
  // size-1 in row order. Adds wait for the write to finish before publishing (their encoding
  // does not); searches run on. Throws Error(Io).
  // `attributes` (may be null): the index's attribute table, whose records of the saved rows
  // go into the file (attributes_file.h), renumbered as the rows are.
  void save(const std::string& path, const std::string& modelVersion, const AttributeTable* attributes = nullptr) const;

  struct Opened {
    std::unique_ptr<IvfPqIndex> index;
    std::string modelVersion;
    std::shared_ptr<AttributeTable> attributes;  // null when the file holds none
  };
  // Reads a file save() wrote into memory, checking every section. Throws
  // Error(CorruptFile) for a file that is not a well-formed IVF-PQ index, Error(Io).
  static Opened open(const std::string& path, simd::Level level, unsigned threads);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// What a prepared add will append: row numbers firstRow() .. firstRow() + count() - 1, in
// the order given, each to list lists()[i] with the plain-layout code at codes() + i ×
// codeBytes (ProductQuantizer::codeBytes). prepared(): the vectors as stored (normalised
// for cosine).
class IvfPqIndex::PendingAdd {
 public:
  ~PendingAdd();
  size_t firstRow() const;
  size_t count() const;
  const uint64_t* ids() const;
  const uint32_t* lists() const;
  const uint8_t* codes() const;
  const float* prepared() const;
  // An upsert's: the rows its held ids had, which the commit makes tombstones.
  std::vector<uint32_t> replacedRows() const;

  struct State;
  explicit PendingAdd(std::unique_ptr<State> state);

 private:
  friend class IvfPqIndex;
  std::unique_ptr<State> state_;
};

}  // namespace ebrix
