// FlatIndex: float32 vectors searched exactly.
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
#include <unordered_map>

#include "aligned_buffer.h"
#include "exact_search.h"
#include "metric.h"
#include "simd/kernels.h"
#include "topk.h"

namespace ebrix {

class FlatIndex {
 public:
  // The largest row count a flat index holds (rows are addressed with 32 bits).
  static constexpr size_t kMaxRows = 0xFFFFFFFFu;

  FlatIndex(size_t dim, Metric metric, simd::Level level, unsigned threads);

  size_t dim() const { return dim_; }
  Metric metric() const { return metric_; }
  simd::Level level() const { return kernels_->level; }
  unsigned threads() const { return threads_; }
  size_t size() const;

  // Adds `count` vectors. Everything is validated first (finite values, ids unique within
  // the call and new to the index, not the reserved padding id); on any error the index is
  // unchanged. Safe to call while searches run; concurrent adds are serialised.
  void add(const uint64_t* ids, const float* vectors, size_t count);

  // Exact top-k; `threads` 0 means the index default. With allowBits, only rows whose bit is
  // set (bit r of word r/32, rows numbered in add order) can be returned; rows past the
  // last word are not allowed.
  SearchOutput search(const float* queries, size_t queryCount, size_t k, unsigned threads = 0,
                      const uint32_t* allowBits = nullptr, size_t allowWords = 0) const;

  // Bytes held by vectors, norms, ids (capacity included) and the id → row map (estimated).
  size_t memoryBytes() const;

 private:
  struct Storage {
    explicit Storage(size_t capacity, size_t dim);
    size_t capacity;
    AlignedBuffer<float> vectors;
    AlignedBuffer<float> l2Bias;  // -0.5 * |x|^2
    AlignedBuffer<uint64_t> ids;
  };
  struct Snapshot {
    std::shared_ptr<Storage> storage;
    size_t count = 0;
  };

  Snapshot snapshot() const;

  const size_t dim_;
  const Metric metric_;
  const simd::Kernels* kernels_;
  const unsigned threads_;

  std::mutex writeMutex_;               // serialises add(); guards rowOfId_
  mutable std::mutex snapshotMutex_;    // guards current_
  Snapshot current_;
  std::unordered_map<uint64_t, uint32_t> rowOfId_;
  std::atomic<size_t> idMapBytes_{0};
};

// Checks every value is finite; throws InvalidVector naming the first bad row and column.
void requireFinite(const float* vectors, size_t count, size_t dim, const char* what);

}  // namespace ebrix
