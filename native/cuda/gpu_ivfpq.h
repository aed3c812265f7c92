// GPU IVF-PQ index: the lists (codes and row numbers), the ids and the refine vectors
// resident in device memory, scanned list-parallel with lookup tables in shared memory.
//
// Training, assignment and encoding are the CPU IvfPqIndex's (native/core/ivfpq.h): this
// index keeps one as its host twin, trained on the same sample and fed the same adds
// (prepareAdd / commitAdd, so both take an add or neither does), and mirrors its model and
// lists on the device. A search on the GPU:
//   1. coarse: the nprobe nearest centroids of each query (a GpuFlatIndex of the centroids);
//   2. scan: one block per (query, probed list) builds the list's float lookup table in
//      shared memory (for 4-bit codes too: no 8-bit table quantization as on the CPU, so
//      every code is scored exactly) and keeps the list's best candidates;
//   3. merge: each query's candidates over its lists, down to k (or k × refineFactor);
//   4. refine (with refine vectors): exact scores of that shortlist, merged down to k.
// So the same parameters probe the same lists as the CPU index and score codes at least as
// exactly: recall is the CPU index's or better (4-bit), equal up to float rounding (8-bit).
//
// Removes, upserts and compactions follow the CPU index (ivfpq.h), and the twin takes each of
// them too, both or neither: the device work that can fail (allocations, copies) is done
// first, then the twin changes, then the device state is published. On the device the lists
// hold slots (row_slots.h maps them to rows), removed slots are masked by a live bitset that
// the list scan ANDs into its allow bitset, and compact() gathers the live list entries, ids
// and refine vectors into new buffers (searches in flight keep the old ones). has / get /
// rowsOf answer from the twin.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "exact_search.h"  // SearchOutput
#include "ivfpq.h"

namespace ebrix::gpu {

class GpuIvfPqIndex {
 public:
  // k (× refineFactor with refine vectors) and nprobe at most this.
  static constexpr size_t kMaxK = 2048;

  // Throws Error(DeviceUnavailable) when the device cannot be used, Error(InvalidArgument)
  // for parameters the CPU index rejects.
  GpuIvfPqIndex(const IvfPqParams& params, unsigned threads, int device = 0);
  ~GpuIvfPqIndex();
  GpuIvfPqIndex(const GpuIvfPqIndex&) = delete;
  GpuIvfPqIndex& operator=(const GpuIvfPqIndex&) = delete;

  const IvfPqParams& params() const;
  int device() const;
  bool trained() const;
  size_t size() const;
  // The host twin's threads (training, assignment and encoding run there).
  unsigned threads() const { return host().threads(); }

  // As IvfPqIndex::train (on the CPU), then uploads the model. Device memory exhaustion
  // throws Error(OutOfMemory) and leaves the index untrained; calling train again then
  // uploads the model already trained (the sample is not read again).
  void train(const float* vectors, size_t n, const IvfPqTrainParams& params);

  // As IvfPqIndex::add; the codes, rows, ids and refine vectors are appended on the device.
  // All or nothing: an error (device out of memory included) leaves both twins unchanged.
  // Safe while searches run (they keep the snapshot they started with).
  void add(const uint64_t* ids, const float* vectors, size_t count);

  // As IvfPqIndex::upsert, on both twins (all or nothing, device memory included).
  void upsert(const uint64_t* ids, const float* vectors, size_t count);

  // As IvfPqIndex::remove, on both twins; returns how many of the ids were held.
  size_t remove(const uint64_t* ids, size_t count);

  bool contains(uint64_t id) const { return host().contains(id); }
  // As IvfPqIndex::get (the twin's refine vector, which the device holds rounded the same way).
  void get(uint64_t id, float* out) const { host().get(id, out); }

  // As IvfPqIndex::compact, on both twins: the device lists, ids and refine vectors are
  // gathered without the tombstones into new buffers. Returns the number of entries dropped.
  size_t compact();

  // IvfPqIndex::search's parameters and result; `threads` is ignored. Throws
  // Error(InvalidArgument) for k or k × refineFactor (with refine vectors) or nprobe (after
  // clamping to nlist) above kMaxK, and Error(NotTrained) before train.
  SearchOutput search(const float* queries, size_t queryCount, const IvfPqSearchParams& params) const;

  // Writes the host twin (the same model and lists) to `path`: a file IvfPqIndex::open reads.
  void save(const std::string& path, const std::string& modelVersion, const AttributeTable* attributes = nullptr) const {
    host().save(path, modelVersion, attributes);
  }

  // As IvfPqIndex::rowsOf (the twin holds the same rows).
  void rowsOf(const uint64_t* ids, size_t count, int64_t* rows) const { host().rowsOf(ids, count, rows); }

  // The CPU twin (same model, same lists): the reference of the tests and the device check.
  const IvfPqIndex& host() const;

  IvfPqMemory hostMemory() const;
  size_t deviceBytes() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace ebrix::gpu
