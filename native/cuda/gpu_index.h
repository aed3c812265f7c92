// GPU flat index: vectors resident in device memory, exact top-k on the GPU.
//
// This header is plain C++ (no CUDA headers) so that the Node binding and the device check
// can include it; everything that touches CUDA lives in the .cu files beside it.
//
// Scoring semantics, identical on both GPU paths (fused scan and GEMM tiles):
//   - f32 storage: products and sums in float32 (TF32 tensor cores only when asked for);
//   - f16 / bf16 storage: the stored rows AND the query are rounded to the storage type,
//     products are accumulated in float32 (what tensor cores compute, and what
//     `torch.topk(q.half() @ X.T)` ranks by);
//   - ip and cosine rank by the inner product (cosine normalises rows at add and queries at
//     search); l2 ranks by ip - |x|^2/2 and reports -|q - x|^2.
// Ties rank the smaller id first, as on the CPU. A NaN score ranks last.
//
// Mutations follow the CPU FlatIndex (native/core/flat.h): every stored vector takes the next
// row number for life (allow bitsets address rows), remove and upsert make rows tombstones
// through a copy-on-write live bitset that the scan ANDs into its allow bitset on the device,
// and compact() rewrites the device arrays without them (row_slots.h keeps the row of each
// device slot). Searches read an immutable snapshot {device arrays, slot state, live bitset}
// and never wait for a writer; writers are serialised. The id map (id -> row) sits behind a
// reader-writer lock that has / get / rowsOf hold shared and writers hold exclusive while
// they change it and publish the snapshot that goes with it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "exact_search.h"  // SearchOutput
#include "metric.h"

namespace ebrix::gpu {

enum class Storage { F32, F16, BF16 };

const char* storageName(Storage s);
bool parseStorage(const std::string& name, Storage* out);
size_t storageBytes(Storage s);  // bytes per element

// What the runtime sees. `available` is false with a reason when there is no usable device
// (no driver, no device, compute capability below 8.0, ...). Never throws.
struct DeviceInfo {
  bool available = false;
  int device = -1;
  std::string name;
  int computeMajor = 0;
  int computeMinor = 0;
  int multiprocessors = 0;
  size_t totalMemory = 0;
  size_t freeMemory = 0;
  int driverVersion = 0;
  int runtimeVersion = 0;
  std::string reason;  // empty when available
};
DeviceInfo probeDevice(int device = 0);

struct GpuSearchOptions {
  // Bit r of word r/32 allows row r (rows are numbered in add and upsert order, for life).
  // Null: every row. Removed rows are never returned, allowed or not.
  // The bitset may be shorter than the index: rows past its end are not allowed.
  const uint32_t* allowBits = nullptr;
  size_t allowWords = 0;
  // f32 storage only: let the GEMM path use TF32 tensor cores (about 10 mantissa bits).
  bool tf32 = false;
  // Force a path (tests and the device check); Auto picks from the plan.
  enum class Path { Auto, FusedScan, Gemm } path = Path::Auto;
  // When set, receives the device time of the search (query conversion to the merged
  // results, transfers excluded), measured with CUDA events.
  float* deviceMilliseconds = nullptr;
};

class GpuFlatIndex {
 public:
  // Rows are addressed with 32 bits; the margin keeps every block's row range (start plus a
  // block's share) inside 32 bits too.
  static constexpr size_t kMaxRows = 0xFFFFFFFFu - (size_t(1) << 26);
  static constexpr size_t kMaxK = 2048;

  // Throws Error(DeviceUnavailable) when the device cannot be used.
  GpuFlatIndex(size_t dim, Metric metric, Storage storage, int device = 0);
  ~GpuFlatIndex();
  GpuFlatIndex(const GpuFlatIndex&) = delete;
  GpuFlatIndex& operator=(const GpuFlatIndex&) = delete;

  size_t dim() const;
  Metric metric() const;
  Storage storage() const;
  int device() const;
  // Vectors held: added or upserted, and not removed.
  size_t size() const;

  // Same validation and atomicity as the CPU FlatIndex (finite values, ids unique and new,
  // not the reserved id); the rows are converted and appended on the device. Device memory
  // exhaustion throws Error(OutOfMemory) and leaves the index unchanged. Safe while
  // searches run (they keep the snapshot they started with).
  void add(const uint64_t* ids, const float* vectors, size_t count);

  // As FlatIndex::upsert: replaces the vectors of held ids and adds the others, all-or-nothing
  // (device memory exhaustion included), in one step for searches. Every vector takes a new
  // row; the replaced rows become tombstones.
  void upsert(const uint64_t* ids, const float* vectors, size_t count);

  // As FlatIndex::remove: the ids held become tombstones (others and repeats are ignored);
  // returns how many. Searches started afterwards never return them.
  size_t remove(const uint64_t* ids, size_t count);

  bool contains(uint64_t id) const;

  // The vector stored under `id` (dim floats): normalised for cosine, rounded for f16 / bf16,
  // read back from the device. Throws UnknownId.
  void get(uint64_t id, float* out) const;

  // Rewrites the device arrays without the tombstones (a gather on the device into new
  // buffers; searches in flight keep the old ones until they end). Rows keep their numbers.
  // Returns the number dropped (0, copying nothing, when there are none). Adds wait.
  size_t compact();

  // The row of each id (-1 for an id not held): for filters that name ids.
  void rowsOf(const uint64_t* ids, size_t count, int64_t* rows) const;

  // Exact top-k, k in [1, kMaxK]. Rows not allowed by the bitset are never returned; when
  // fewer than k rows qualify, the tail is padded with kNoId / -inf.
  SearchOutput search(const float* queries, size_t queryCount, size_t k,
                      const GpuSearchOptions& options = {}) const;

  // Device bytes held (vectors, ids, norms, live bitset; capacity included) and host bytes
  // (id map, live bitset, slot table).
  size_t deviceBytes() const;
  size_t hostBytes() const;

  // Benchmarks and the device check only: appends `count` rows drawn uniformly from [-1, 1)
  // on the device (ids firstId, firstId + 1, ...), without a host copy. Not for cosine.
  void addRandomForTesting(size_t count, uint64_t seed, uint64_t firstId);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace ebrix::gpu
