// FlatIndex: vectors searched exactly, stored as float32 (default), f16 or bf16, or searched
// over 8-bit codes of a trained scalar quantizer (i8).
//
// 16-bit storage has the GPU index's semantics (native/cuda/gpu_index.h): rows are rounded
// to the type at add (cosine normalises first), queries are rounded the same way at search,
// products accumulate in float32; ip and cosine rank by the inner product of the rounded
// values, l2 by q·x - |x|^2/2 of them and reports -|q - x|^2. A value that rounds to
// infinity in f16 (magnitude 65520 or more, after normalisation for cosine) is rejected with
// InvalidVector: an infinite row would poison every score.
//
// i8 storage keeps one byte per value: the code of a ScalarQuantizer (sq.h) trained by
// train() on a sample (normalised for cosine) before the first add; add and search before
// train are NotTrained. Rows are normalised (cosine) and encoded at add; values outside the
// trained range clamp. A search scans the codes with integer dot products against the query
// quantized to signed bytes (ranking by q·x - |x|^2/2 of the decoded rows for l2), shortlists
// kI8Shortlist × k candidates per query, and re-scores those exactly against the decoded
// rows with the float query, so the reported scores are those of the decoded rows: q·x for
// ip and cosine, -|q - x|^2 for l2.
//
// Rows and slots: every vector an add or upsert stores takes the next row number (0, 1, 2,
// ... over the life of the index); allow bitsets and filters address rows, and a row number
// is never reused or changed, so a bitset built before a remove or a compaction still means
// the same vectors. The storage holds vectors by slot; slot == row until compact() drops the
// slots of removed rows, after which each slot also records its row (ascending, since
// compaction keeps order and adds append). A saved file holds the live vectors only, in row
// order, numbered 0 .. size-1 again (compaction on save: the format needs no tombstones).
//
// Removal is by tombstone: remove() and upsert() clear the slot's bit in a live bitset that
// every search ANDs into its allow bitset, inside the scan, so a search stays exact, never
// returns a removed id, and a filtered search tests both at once. compact() rewrites the
// storage without the removed slots.
//
// Concurrency: searches read an immutable snapshot {storage, slot count, live bits}; adds
// append slots past every published count and then publish a new snapshot. Appending in
// place is safe because no reader looks beyond the count it took. When capacity runs out the
// writer copies into a larger storage and publishes that; readers still holding the old one
// keep it alive through the shared_ptr. So a search never blocks on an add and never sees a
// torn row.
//
// Tombstones follow the same rule, copy-on-write: a remove or upsert copies the live bitset
// (one bit per slot: 125 KB for a million vectors), changes the copy and publishes it with
// the snapshot, rather than flipping bits in place under a reader-writer lock. That keeps
// searches lock-free against every writer (a remove never waits for a long batch search,
// and a search never waits for a remove), and lets an upsert publish its new rows and the
// tombstones of the rows they replace in one step, so no search sees both or neither; the
// price is a copy of the bits per remove call, small next to anything else a write does.
// compact() builds the new storage beside the published one (searches keep reading the
// old) and publishes it in one step too. Writers (add, upsert, remove, compact, train) are
// serialised by writeMutex_.
//
// The id map (id -> row) is guarded by idMutex_, a reader-writer lock that searches never
// take: get / has / rowsOf hold it shared while they look an id up and take the snapshot,
// and writers hold it exclusive while they change the map and publish the snapshot that goes
// with it, so a lookup never pairs a row with a snapshot that does not hold it yet (or any
// more). Compaction changes slots, not rows, so it leaves the map alone.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "aligned_buffer.h"
#include "attributes.h"
#include "exact_search.h"
#include "index_file.h"
#include "metric.h"
#include "row_bits.h"
#include "row_filter.h"
#include "simd/kernels.h"
#include "sq.h"
#include "topk.h"

namespace ebrix {

class FlatIndex {
 public:
  // The largest row count a flat index holds (rows are addressed with 32 bits).
  static constexpr size_t kMaxRows = 0xFFFFFFFFu;

  FlatIndex(size_t dim, Metric metric, simd::Level level, unsigned threads,
            simd::Element storage = simd::Element::F32);

  size_t dim() const { return dim_; }
  Metric metric() const { return metric_; }
  simd::Level level() const { return kernels_->level; }
  // The threads a search uses by default: the constructor's `threads` capped at the pool
  // size, or the pool size (ThreadPool::shared()) when it was 0, so it follows a resize.
  unsigned threads() const;
  simd::Element storage() const { return element_; }
  // Vectors held: added or upserted, and not removed.
  size_t size() const;

  // Trains the scalar quantizer of i8 storage on `count` (>= 1) sample rows. Once only, and
  // only for i8 storage: other storages, or an index already trained, are InvalidArgument.
  // Safe to call while searches run; serialised with add().
  void train(const float* sample, size_t count);
  // Whether the index can take vectors: always for f32 / f16 / bf16, after train() for i8.
  bool trained() const;

  // Adds `count` vectors (NotTrained for an untrained i8 index). Everything is validated first (finite values, ids unique within
  // the call and new to the index, not the reserved padding id); on any error the index is
  // unchanged. Safe to call while searches run; concurrent adds are serialised. `hook` runs
  // before the rows are published (row_filter.h).
  void add(const uint64_t* ids, const float* vectors, size_t count, const WriteHook& hook = {});

  // Exact top-k; `threads` 0 means the index default. With allowBits, only rows whose bit is
  // set (bit r of word r/32, rows numbered in add order) can be returned; rows past the
  // last word are not allowed. With `filter`, only the rows it allows too, evaluated on the
  // search's own snapshot (row_filter.h).
  SearchOutput search(const float* queries, size_t queryCount, size_t k, unsigned threads = 0,
                      const uint32_t* allowBits = nullptr, size_t allowWords = 0,
                      const RowFilter* filter = nullptr) const;

  // Replaces the vectors of ids the index holds and adds the others, all-or-nothing, in one
  // step for searches (none sees an id twice, or not at all). Every vector takes a new row,
  // as an add's do; the rows it replaces become tombstones. Validated as add(), except that
  // ids may already be in the index (they must still be distinct within the call).
  void upsert(const uint64_t* ids, const float* vectors, size_t count, const WriteHook& hook = {});

  // Removes the vectors of the ids the index holds (others are ignored, as are repeats):
  // their slots become tombstones, which no search started after this returns. Returns how
  // many were removed.
  size_t remove(const uint64_t* ids, size_t count);

  // Whether the index holds a vector under `id`.
  bool contains(uint64_t id);

  // The vector stored under `id` (dim floats into `out`): as stored, so normalised for
  // cosine, rounded for f16 / bf16, decoded from the codes for i8. Throws UnknownId.
  void get(uint64_t id, float* out);

  // Rewrites the storage without the slots of removed rows (adds wait meanwhile; searches do
  // not, and keep reading the storage they took). Rows keep their numbers. Returns the number
  // of slots dropped (0, and nothing copied, when none was removed).
  size_t compact();

  // The row of each id (-1 for an id the index does not hold): for filters that name ids.
  void rowsOf(const uint64_t* ids, size_t count, int64_t* rows);

  // Bytes held by vectors (or codes and quantizer), norms, ids (capacity included) and the
  // id → row map (estimated). Rows still in a mapped file count as 0 (mappedBytes()).
  size_t memoryBytes() const;
  // Bytes of rows read from a mapped file (0 once an add has copied them into memory).
  size_t mappedBytes() const;

  // Writes a snapshot of the index (searches and adds may run meanwhile; the file holds the
  // vectors published when it starts) to `path` atomically, with the version id of the model
  // whose vectors these are (may be empty). Only live vectors are written, in row order, and
  // the file numbers them 0 .. size-1 (with tombstones they are first gathered into memory).
  // The file layout is in flat.cpp. Throws Error(Io); the previous file at `path` is then
  // unchanged.
  // `attributes` (may be null): the index's attribute table, whose records of the saved rows
  // go into the file (attributes_file.h), aligned with the file's rows.
  void save(const std::string& path, const std::string& modelVersion, const AttributeTable* attributes = nullptr) const;

  struct Opened {
    std::unique_ptr<FlatIndex> index;
    std::string modelVersion;
    std::shared_ptr<AttributeTable> attributes;  // null when the file holds none
  };
  // Opens a file save() wrote. map: the rows stay in the file, mapped read-only (the first
  // add copies them into memory), so opening costs no copy and no checksum over the rows
  // unless `verify`; without map every section is read into memory and checked. Throws
  // Error(CorruptFile) for a file that is not a well-formed flat index (duplicate ids
  // included: found at open without map, at the first add with map), Error(Io).
  static Opened open(const std::string& path, bool map, bool verify, simd::Level level, unsigned threads);

 private:
  // The slots: buffers of `capacity` slots that adds append to, or (opened with map) the
  // sections of a mapped file, read-only, with capacity == the slot count so that the first
  // add copies them into buffers. Readers use the const pointers, which are one or the other.
  struct Storage {
    Storage(size_t capacity, size_t dim, simd::Element element, bool withRowNumbers);
    explicit Storage(std::shared_ptr<const IndexFile> mapped) : capacity(0), file(std::move(mapped)) {}
    size_t capacity;
    AlignedBuffer<float> vectors;     // f32 storage
    AlignedBuffer<uint16_t> halves;   // f16 / bf16 storage (bit patterns)
    AlignedBuffer<uint8_t> codes;     // i8 storage
    AlignedBuffer<float> l2Bias;  // -0.5 * |x|^2
    AlignedBuffer<uint64_t> ids;
    AlignedBuffer<uint32_t> rowNumbers;  // the row of each slot, once a compaction made them differ
    std::shared_ptr<const IndexFile> file;  // set for a mapped storage
    const void* rowData = nullptr;          // vectors, halves or codes, by storage type
    const float* biasData = nullptr;
    const uint64_t* idData = nullptr;
    const uint32_t* rowNumberData = nullptr;  // null: slot == row
  };
  struct Snapshot {
    std::shared_ptr<Storage> storage;
    size_t count = 0;  // slots, tombstones included
    size_t rows = 0;   // row numbers handed out (== count until a compaction drops slots)
    size_t live = 0;   // slots not removed
    // Bit s set when slot s is live, over [0, count); null when every slot is.
    std::shared_ptr<const std::vector<uint32_t>> liveBits;
    std::shared_ptr<const ScalarQuantizer> quantizer;  // i8 storage, once trained

    uint32_t rowOfSlot(size_t slot) const {
      return storage->rowNumberData ? storage->rowNumberData[slot] : static_cast<uint32_t>(slot);
    }
    // The slot holding `row`, or -1 when none does (a row dropped by a compaction).
    int64_t slotOfRow(uint32_t row) const;
    bool slotLive(size_t slot) const { return !liveBits || testBit(liveBits->data(), liveBits->size(), slot); }
  };

  Snapshot snapshot() const;
  size_t elementBytes() const {
    switch (element_) {
      case simd::Element::F32: return sizeof(float);
      case simd::Element::I8: return sizeof(uint8_t);
      default: return sizeof(uint16_t);
    }
  }
  // The 16-bit kernels of the storage type (f16 or bf16 storage only).
  const simd::Kernels16& halfKernels() const {
    return element_ == simd::Element::F16 ? kernels_->f16 : kernels_->bf16;
  }
  // Throws InvalidVector (naming row and column) for a value that would round to infinity in
  // the storage type; `vectors` are as given (before normalisation).
  void requireStorable(const float* vectors, size_t count, const char* what) const;

  // Validates and stores `count` vectors under new rows; `upsert` lets ids already in the
  // index through and tombstones the rows they had. writeMutex_ held.
  void write(const uint64_t* ids, const float* vectors, size_t count, bool upsert, const WriteHook& hook);
  // Publishes `next` (snapshotMutex_); callers that change the id map hold idMutex_.
  void publish(Snapshot next);
  // Builds the id map of a mapped open if no write has yet (writeMutex_ taken when needed).
  void ensureIdMap();
  // The scan's allow bitset over slots for an allow bitset over rows (or none), with the
  // tombstones ANDed in; null (and `scratch` untouched) when every slot is allowed.
  const uint32_t* slotAllow(const Snapshot& snap, const uint32_t* allowBits, size_t allowWords,
                            std::vector<uint32_t>& scratch, size_t* words) const;
  // Decodes the stored vector of a slot into dim floats.
  void decodeSlot(const Snapshot& snap, size_t slot, float* out) const;

  const size_t dim_;
  const Metric metric_;
  const simd::Kernels* kernels_;
  const unsigned threads_;  // as given: 0 follows the pool
  const simd::Element element_;

  std::mutex writeMutex_;               // serialises writers (add, upsert, remove, compact, train)
  mutable std::mutex snapshotMutex_;    // guards current_
  Snapshot current_;
  // id -> row of the live vectors. Changed by writers (writeMutex_ held) under idMutex_
  // exclusive; writers read it without idMutex_, other readers hold it shared.
  mutable std::shared_mutex idMutex_;
  std::unordered_map<uint64_t, uint32_t> rowOfId_;
  // False after a mapped open until the first write or lookup builds rowOfId_ from the file's ids.
  std::atomic<bool> idMapBuilt_{true};
  std::atomic<size_t> idMapBytes_{0};

  // Builds rowOfId_ from the ids of `snap` (writeMutex_ held); CorruptFile on a duplicate
  // or reserved id.
  void buildIdMap(const Snapshot& snap, const std::string& path);
  void updateIdMapBytes();
};

// Checks every value is finite; throws InvalidVector naming the first bad row and column.
void requireFinite(const float* vectors, size_t count, size_t dim, const char* what);

// Checks ids for an add: none is the reserved 2^64-1, none repeats within the call or is
// already a key of rowOfId. Throws InvalidArgument / DuplicateId naming the id.
void requireNewIds(const uint64_t* ids, size_t count, const std::unordered_map<uint64_t, uint32_t>& rowOfId);

// Checks ids for an upsert: none is the reserved 2^64-1, none repeats within the call (ids
// already in the index are fine). Throws InvalidArgument / DuplicateId naming the id.
void requireDistinctIds(const uint64_t* ids, size_t count);

// Checks every value rounds to a finite f16 (magnitude below 65520); throws InvalidVector
// naming the first bad row and column. For f16 storage with ip or l2 (cosine normalises).
void requireF16Range(const float* vectors, size_t count, size_t dim, const char* what);

}  // namespace ebrix
