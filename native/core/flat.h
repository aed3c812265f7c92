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
// Concurrency: searches read an immutable snapshot {storage, row count}; adds append rows
// past every published count and then publish a new snapshot. Appending in place is safe
// because no reader looks beyond the count it took. When capacity runs out the writer copies
// into a larger storage and publishes that; readers still holding the old one keep it alive
// through the shared_ptr. So a search never blocks on an add and never sees a torn row.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "aligned_buffer.h"
#include "exact_search.h"
#include "index_file.h"
#include "metric.h"
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
  unsigned threads() const { return threads_; }
  simd::Element storage() const { return element_; }
  size_t size() const;

  // Trains the scalar quantizer of i8 storage on `count` (>= 1) sample rows. Once only, and
  // only for i8 storage: other storages, or an index already trained, are InvalidArgument.
  // Safe to call while searches run; serialised with add().
  void train(const float* sample, size_t count);
  // Whether the index can take vectors: always for f32 / f16 / bf16, after train() for i8.
  bool trained() const;

  // Adds `count` vectors (NotTrained for an untrained i8 index). Everything is validated first (finite values, ids unique within
  // the call and new to the index, not the reserved padding id); on any error the index is
  // unchanged. Safe to call while searches run; concurrent adds are serialised.
  void add(const uint64_t* ids, const float* vectors, size_t count);

  // Exact top-k; `threads` 0 means the index default. With allowBits, only rows whose bit is
  // set (bit r of word r/32, rows numbered in add order) can be returned; rows past the
  // last word are not allowed.
  SearchOutput search(const float* queries, size_t queryCount, size_t k, unsigned threads = 0,
                      const uint32_t* allowBits = nullptr, size_t allowWords = 0) const;

  // The row of each id (-1 for an id the index does not hold): for filters that name ids.
  // Waits for a running add.
  void rowsOf(const uint64_t* ids, size_t count, int64_t* rows);

  // Bytes held by vectors (or codes and quantizer), norms, ids (capacity included) and the
  // id → row map (estimated). Rows still in a mapped file count as 0 (mappedBytes()).
  size_t memoryBytes() const;
  // Bytes of rows read from a mapped file (0 once an add has copied them into memory).
  size_t mappedBytes() const;

  // Writes a snapshot of the index (searches and adds may run meanwhile; the file holds the
  // rows published when it starts) to `path` atomically, with the version id of the model
  // whose vectors these are (may be empty). The file layout is in flat.cpp. Throws
  // Error(Io); the previous file at `path` is then unchanged.
  void save(const std::string& path, const std::string& modelVersion) const;

  struct Opened {
    std::unique_ptr<FlatIndex> index;
    std::string modelVersion;
  };
  // Opens a file save() wrote. map: the rows stay in the file, mapped read-only (the first
  // add copies them into memory), so opening costs no copy and no checksum over the rows
  // unless `verify`; without map every section is read into memory and checked. Throws
  // Error(CorruptFile) for a file that is not a well-formed flat index (duplicate ids
  // included: found at open without map, at the first add with map), Error(Io).
  static Opened open(const std::string& path, bool map, bool verify, simd::Level level, unsigned threads);

 private:
  // The rows: buffers of `capacity` rows that adds append to, or (opened with map) the
  // sections of a mapped file, read-only, with capacity == the row count so that the first
  // add copies them into buffers. Readers use the const pointers, which are one or the other.
  struct Storage {
    Storage(size_t capacity, size_t dim, simd::Element element);
    explicit Storage(std::shared_ptr<const IndexFile> mapped) : capacity(0), file(std::move(mapped)) {}
    size_t capacity;
    AlignedBuffer<float> vectors;     // f32 storage
    AlignedBuffer<uint16_t> halves;   // f16 / bf16 storage (bit patterns)
    AlignedBuffer<uint8_t> codes;     // i8 storage
    AlignedBuffer<float> l2Bias;  // -0.5 * |x|^2
    AlignedBuffer<uint64_t> ids;
    std::shared_ptr<const IndexFile> file;  // set for a mapped storage
    const void* rowData = nullptr;          // vectors, halves or codes, by storage type
    const float* biasData = nullptr;
    const uint64_t* idData = nullptr;
  };
  struct Snapshot {
    std::shared_ptr<Storage> storage;
    size_t count = 0;
    std::shared_ptr<const ScalarQuantizer> quantizer;  // i8 storage, once trained
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

  const size_t dim_;
  const Metric metric_;
  const simd::Kernels* kernels_;
  const unsigned threads_;
  const simd::Element element_;

  std::mutex writeMutex_;               // serialises add() and train(); guards rowOfId_
  mutable std::mutex snapshotMutex_;    // guards current_
  Snapshot current_;
  std::unordered_map<uint64_t, uint32_t> rowOfId_;
  // False after a mapped open until the first add builds rowOfId_ from the file's ids.
  bool idMapBuilt_ = true;
  std::atomic<size_t> idMapBytes_{0};

  // Builds rowOfId_ from the ids of `snap` (writeMutex_ held); CorruptFile on a duplicate
  // or reserved id.
  void buildIdMap(const Snapshot& snap, const std::string& path);
};

// Checks every value is finite; throws InvalidVector naming the first bad row and column.
void requireFinite(const float* vectors, size_t count, size_t dim, const char* what);

// Checks ids for an add: none is the reserved 2^64-1, none repeats within the call or is
// already a key of rowOfId. Throws InvalidArgument / DuplicateId naming the id.
void requireNewIds(const uint64_t* ids, size_t count, const std::unordered_map<uint64_t, uint32_t>& rowOfId);

// Checks every value rounds to a finite f16 (magnitude below 65520); throws InvalidVector
// naming the first bad row and column. For f16 storage with ip or l2 (cosine normalises).
void requireF16Range(const float* vectors, size_t count, size_t dim, const char* what);

}  // namespace ebrix
