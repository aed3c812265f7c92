// GpuFlatIndex: device-resident rows, searched by the fused scan (few queries) or by cuBLAS
// GEMM tiles reduced at once to per-query top-k (many queries). See gpu_index.h.
#include "gpu_index.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "error.h"
#include "flat.h"  // requireFinite
#include "gpu_testing.h"
#include "cuda_util.h"
#include "kernels.cuh"
#include "plan.h"
#include "row_bits.h"
#include "row_slots.h"
#include "simd/dispatch.h"
#include "topk.h"

namespace ebrix::gpu {
namespace {

cudaDataType_t blasType(Storage storage) {
  switch (storage) {
    case Storage::F16: return CUDA_R_16F;
    case Storage::BF16: return CUDA_R_16BF;
    default: return CUDA_R_32F;
  }
}

size_t scoreTileBytes() {
  // The device check tries other sizes; users have no reason to.
  if (const char* mb = std::getenv("EBRIX_GPU_SCORE_TILE_MB")) {
    const long value = std::strtol(mb, nullptr, 10);
    if (value > 0 && value <= 4096) return size_t(value) << 20;
  }
  return size_t(256) << 20;
}

}  // namespace

const char* storageName(Storage s) {
  switch (s) {
    case Storage::F32: return "f32";
    case Storage::F16: return "f16";
    case Storage::BF16: return "bf16";
  }
  return "f32";
}

bool parseStorage(const std::string& name, Storage* out) {
  if (name == "f32") *out = Storage::F32;
  else if (name == "f16") *out = Storage::F16;
  else if (name == "bf16") *out = Storage::BF16;
  else return false;
  return true;
}

size_t storageBytes(Storage s) { return s == Storage::F32 ? 4 : 2; }

DeviceInfo probeDevice(int device) {
  DeviceInfo info;
  info.device = device;
  cudaDriverGetVersion(&info.driverVersion);
  cudaRuntimeGetVersion(&info.runtimeVersion);
  int count = 0;
  cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();
    info.reason = status == cudaErrorNoDevice ? "no CUDA device found"
                                              : std::string("the CUDA driver is not usable: ") + cudaGetErrorName(status) +
                                                    " (" + cudaGetErrorString(status) + ")";
    return info;
  }
  if (count == 0) {
    info.reason = "no CUDA device found";
    return info;
  }
  if (device < 0 || device >= count) {
    info.reason = "device " + std::to_string(device) + " does not exist (" + std::to_string(count) + " found)";
    return info;
  }
  cudaDeviceProp prop{};
  status = cudaGetDeviceProperties(&prop, device);
  if (status != cudaSuccess) {
    cudaGetLastError();
    info.reason = std::string("cannot read the device's properties: ") + cudaGetErrorString(status);
    return info;
  }
  info.name = prop.name;
  info.computeMajor = prop.major;
  info.computeMinor = prop.minor;
  info.multiprocessors = prop.multiProcessorCount;
  info.totalMemory = prop.totalGlobalMem;
  if (prop.major < 8) {
    info.reason = "compute capability " + std::to_string(prop.major) + "." + std::to_string(prop.minor) +
                  " is below 8.0, the oldest the kernels are built for";
    return info;
  }
  int previous = 0;
  cudaGetDevice(&previous);
  status = cudaSetDevice(device);
  size_t freeBytes = 0, totalBytes = 0;
  if (status == cudaSuccess) status = cudaMemGetInfo(&freeBytes, &totalBytes);
  cudaSetDevice(previous);
  if (status != cudaSuccess) {
    cudaGetLastError();
    info.reason = std::string("cannot open the device: ") + cudaGetErrorName(status) + " (" +
                  cudaGetErrorString(status) + ")";
    return info;
  }
  info.freeMemory = freeBytes;
  info.available = true;
  return info;
}

struct GpuFlatIndex::Impl {
  struct Store {
    Store(size_t capacity_, size_t rowBytes, bool l2)
        : capacity(capacity_),
          vectors(capacity_ * rowBytes, "cudaMalloc(vectors)"),
          ids(capacity_ * sizeof(uint64_t), "cudaMalloc(ids)"),
          bias(l2 ? capacity_ * sizeof(float) : 0, "cudaMalloc(norms)") {}
    size_t capacity;
    DeviceBuffer vectors;
    DeviceBuffer ids;
    DeviceBuffer bias;
  };
  struct Snapshot {
    std::shared_ptr<Store> store;
    RowSlots slots;
    std::shared_ptr<DeviceBuffer> liveDevice;  // slots.liveBits on the device; null when none
  };

  size_t dim;
  Metric metric;
  Storage storage;
  int device;
  size_t stride;    // elements per stored row
  size_t rowBytes;  // stride * element bytes, a multiple of 16
  int multiprocessors = 0;
  size_t sharedPerBlock = 0;
  size_t sharedPerMultiprocessor = 0;

  std::mutex writeMutex;
  mutable std::mutex snapshotMutex;
  Snapshot current;
  // id -> row of the live vectors; writers (writeMutex held) change it under idMutex
  // exclusive and read it without; has / get / rowsOf hold idMutex shared.
  mutable std::shared_mutex idMutex;
  std::unordered_map<uint64_t, uint32_t> rowOfId;
  std::atomic<size_t> idMapBytes{0};
  mutable ContextPool contexts;

  Snapshot snapshot() const {
    std::lock_guard<std::mutex> lock(snapshotMutex);
    return current;
  }

  DeviceRows rowsOf(const Snapshot& snap) const {
    DeviceRows rows;
    rows.vectors = snap.store->vectors.get();
    rows.ids = snap.store->ids.as<uint64_t>();
    rows.l2Bias = metric == Metric::L2 ? snap.store->bias.as<float>() : nullptr;
    rows.count = uint32_t(snap.slots.slots);
    rows.dim = uint32_t(dim);
    rows.stride = uint32_t(stride);
    rows.storage = storage;
    return rows;
  }

  // Returns the store that will hold newCount slots: the current one, or a larger copy.
  std::shared_ptr<Store> storeFor(const Snapshot& snap, size_t newCount, Context& context) {
    if (snap.store && snap.store->capacity >= newCount) return snap.store;
    const size_t count = snap.slots.slots;
    const size_t old = snap.store ? snap.store->capacity : 0;
    const size_t capacity = std::max({newCount, old + old / 2, size_t(1024)});
    auto grown = std::make_shared<Store>(capacity, rowBytes, metric == Metric::L2);
    if (count > 0) {
      EBRIX_CUDA(cudaMemcpyAsync(grown->vectors.get(), snap.store->vectors.get(), count * rowBytes,
                                 cudaMemcpyDeviceToDevice, context.stream));
      EBRIX_CUDA(cudaMemcpyAsync(grown->ids.get(), snap.store->ids.get(), count * sizeof(uint64_t),
                                 cudaMemcpyDeviceToDevice, context.stream));
      if (metric == Metric::L2) {
        EBRIX_CUDA(cudaMemcpyAsync(grown->bias.get(), snap.store->bias.get(), count * sizeof(float),
                                   cudaMemcpyDeviceToDevice, context.stream));
      }
    }
    return grown;
  }

  // The live bitset of `slots` on the device (queued on `stream`), or null when every slot is live.
  static std::shared_ptr<DeviceBuffer> uploadLive(const RowSlots& slots, cudaStream_t stream) {
    if (!slots.liveBits) return nullptr;
    const std::vector<uint32_t>& bits = *slots.liveBits;
    auto buffer = std::make_shared<DeviceBuffer>(std::max<size_t>(bits.size(), 1) * 4, "cudaMalloc(live bitset)");
    if (!bits.empty()) {
      EBRIX_CUDA(cudaMemcpyAsync(buffer->get(), bits.data(), bits.size() * 4, cudaMemcpyHostToDevice, stream));
    }
    return buffer;
  }

  void updateIdMapBytes() {
    idMapBytes.store(rowOfId.bucket_count() * sizeof(void*) + rowOfId.size() * (sizeof(uint64_t) * 2 + sizeof(void*)),
                     std::memory_order_relaxed);
  }

  // Appends `count` vectors under new rows: `fill(store, firstSlot, stream)` writes their
  // device rows (and norms); the ids, the live bitset and the id map follow here. With
  // `upsert`, ids already held are replaced (their rows become tombstones). All-or-nothing:
  // nothing is published until every device write has completed. writeMutex held.
  template <typename Fill>
  void append(const uint64_t* ids, size_t count, bool upsert, Fill&& fill) {
    const Snapshot snap = snapshot();
    std::vector<uint32_t> replaced;
    std::vector<std::pair<uint64_t, uint32_t>> replacedRows;
    if (upsert) {
      requireDistinctIds(ids, count);
      for (size_t i = 0; i < count; ++i) {
        const auto it = rowOfId.find(ids[i]);
        if (it == rowOfId.end()) continue;
        const int64_t slot = snap.slots.slotOfRow(it->second);
        if (slot < 0) throw Error(ErrorCode::Internal, "A held id has no device slot");
        replaced.push_back(uint32_t(slot));
        replacedRows.emplace_back(ids[i], it->second);
      }
    } else {
      requireNewIds(ids, count, rowOfId);
    }
    if (snap.slots.rows + count > kMaxRows) {
      throw Error(ErrorCode::InvalidArgument, "A flat index numbers at most " + std::to_string(kMaxRows) +
                                                  " rows over its life (adds and upserts)");
    }
    const RowSlots next = appendSlots(snap.slots, count, replaced);

    EBRIX_CUDA(cudaSetDevice(device));
    ContextLease context(contexts);
    std::shared_ptr<Store> store = storeFor(snap, next.slots, *context);
    fill(*store, snap.slots.slots, context->stream);
    EBRIX_CUDA(cudaMemcpyAsync(store->ids.as<uint64_t>() + snap.slots.slots, ids, count * sizeof(uint64_t),
                               cudaMemcpyHostToDevice, context->stream));
    std::shared_ptr<DeviceBuffer> live = uploadLive(next, context->stream);
    EBRIX_CUDA(cudaStreamSynchronize(context->stream));

    // Rows past the published slot count were invisible to every search until now.
    std::unique_lock<std::shared_mutex> idLock(idMutex);
    try {
      rowOfId.reserve(rowOfId.size() + count);
      for (size_t i = 0; i < count; ++i) rowOfId.insert_or_assign(ids[i], uint32_t(snap.slots.rows + i));
    } catch (const std::bad_alloc&) {
      for (size_t i = 0; i < count; ++i) rowOfId.erase(ids[i]);
      for (const auto& [id, row] : replacedRows) rowOfId.emplace(id, row);
      throw Error(ErrorCode::OutOfMemory, "Out of memory indexing the ids of " + std::to_string(count) + " vectors");
    }
    updateIdMapBytes();
    std::lock_guard<std::mutex> lock(snapshotMutex);
    current = Snapshot{std::move(store), next, std::move(live)};
  }
};

GpuFlatIndex::GpuFlatIndex(size_t dim, Metric metric, Storage storage, int device) : impl_(std::make_unique<Impl>()) {
  if (dim == 0 || dim > 65536) {
    throw Error(ErrorCode::InvalidArgument, "Expected dim in [1, 65536] but received " + std::to_string(dim));
  }
  const DeviceInfo info = probeDevice(device);
  if (!info.available) throw Error(ErrorCode::DeviceUnavailable, "No usable GPU: " + info.reason);
  Impl& m = *impl_;
  m.dim = dim;
  m.metric = metric;
  m.storage = storage;
  m.device = device;
  const size_t element = storageBytes(storage);
  m.rowBytes = (dim * element + 15) / 16 * 16;
  m.stride = m.rowBytes / element;
  EBRIX_CUDA(cudaSetDevice(device));
  cudaDeviceProp prop{};
  EBRIX_CUDA(cudaGetDeviceProperties(&prop, device));
  m.multiprocessors = prop.multiProcessorCount;
  m.sharedPerBlock = prop.sharedMemPerBlockOptin;
  m.sharedPerMultiprocessor = prop.sharedMemPerMultiprocessor;
}

GpuFlatIndex::~GpuFlatIndex() {
  if (impl_) cudaSetDevice(impl_->device);
}

size_t GpuFlatIndex::dim() const { return impl_->dim; }
Metric GpuFlatIndex::metric() const { return impl_->metric; }
Storage GpuFlatIndex::storage() const { return impl_->storage; }
int GpuFlatIndex::device() const { return impl_->device; }
size_t GpuFlatIndex::size() const { return impl_->snapshot().slots.live; }

namespace {

// Validates the vectors of an add or upsert and returns them as stored before rounding
// (normalised into `normalised` for cosine).
const float* prepareVectors(const GpuFlatIndex::Impl& m, const float* vectors, size_t count,
                            std::vector<float>& normalised) {
  requireFinite(vectors, count, m.dim, "vectors");
  // The CPU index's rule: an f16 row must not round to infinity (it would poison every score).
  if (m.storage == Storage::F16 && m.metric != Metric::Cosine) requireF16Range(vectors, count, m.dim, "vectors");
  if (m.metric != Metric::Cosine) return vectors;
  normalised.resize(count * m.dim);
  normalizeRows(vectors, normalised.data(), count, m.dim);
  return normalised.data();
}

// Uploads float rows in slices (so a large add needs little staging memory) and stores them
// at `firstSlot` in the storage type.
void uploadRows(const GpuFlatIndex::Impl& m, GpuFlatIndex::Impl::Store& store, size_t firstSlot, const float* vectors,
                size_t count, cudaStream_t stream) {
  const size_t slice = std::max<size_t>(1, (size_t(64) << 20) / (m.dim * sizeof(float)));
  StreamBuffer staging(std::min(slice, count) * m.dim * sizeof(float), stream, "cudaMallocAsync(staging)");
  for (size_t done = 0; done < count; done += slice) {
    const size_t n = std::min(slice, count - done);
    EBRIX_CUDA(cudaMemcpyAsync(staging.as<float>(), vectors + done * m.dim, n * m.dim * sizeof(float),
                               cudaMemcpyHostToDevice, stream));
    const size_t slot = firstSlot + done;
    launchStoreRows(m.storage, staging.as<float>(), n, uint32_t(m.dim), uint32_t(m.stride),
                    store.vectors.as<char>() + slot * m.rowBytes,
                    m.metric == Metric::L2 ? store.bias.as<float>() + slot : nullptr, stream);
    EBRIX_LAUNCHED("storeRows");
  }
}

}  // namespace

void GpuFlatIndex::add(const uint64_t* ids, const float* vectors, size_t count) {
  if (count == 0) return;
  Impl& m = *impl_;
  std::lock_guard<std::mutex> writeLock(m.writeMutex);
  std::vector<float> normalised;
  const float* prepared = prepareVectors(m, vectors, count, normalised);
  m.append(ids, count, false, [&](Impl::Store& store, size_t firstSlot, cudaStream_t stream) {
    uploadRows(m, store, firstSlot, prepared, count, stream);
  });
}

void GpuFlatIndex::upsert(const uint64_t* ids, const float* vectors, size_t count) {
  if (count == 0) return;
  Impl& m = *impl_;
  std::lock_guard<std::mutex> writeLock(m.writeMutex);
  std::vector<float> normalised;
  const float* prepared = prepareVectors(m, vectors, count, normalised);
  m.append(ids, count, true, [&](Impl::Store& store, size_t firstSlot, cudaStream_t stream) {
    uploadRows(m, store, firstSlot, prepared, count, stream);
  });
}

void GpuFlatIndex::addRandomForTesting(size_t count, uint64_t seed, uint64_t firstId) {
  if (count == 0) return;
  Impl& m = *impl_;
  if (m.metric == Metric::Cosine) throw Error(ErrorCode::InvalidArgument, "random rows are not normalised");
  std::lock_guard<std::mutex> writeLock(m.writeMutex);
  std::vector<uint64_t> ids(count);
  for (size_t i = 0; i < count; ++i) ids[i] = firstId + i;
  m.append(ids.data(), count, false, [&](Impl::Store& store, size_t firstSlot, cudaStream_t stream) {
    launchRandomRows(m.storage, count, uint32_t(m.dim), uint32_t(m.stride), seed, firstSlot,
                     store.vectors.as<char>() + firstSlot * m.rowBytes,
                     m.metric == Metric::L2 ? store.bias.as<float>() + firstSlot : nullptr, stream);
    EBRIX_LAUNCHED("randomRows");
  });
}

size_t GpuFlatIndex::remove(const uint64_t* ids, size_t count) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> writeLock(m.writeMutex);
  const Impl::Snapshot snap = m.snapshot();
  std::vector<uint64_t> found;
  std::vector<uint32_t> slots;
  std::unordered_set<uint64_t> seen;
  for (size_t i = 0; i < count; ++i) {
    const auto it = m.rowOfId.find(ids[i]);
    if (it == m.rowOfId.end() || !seen.insert(ids[i]).second) continue;
    const int64_t slot = snap.slots.slotOfRow(it->second);
    if (slot < 0) throw Error(ErrorCode::Internal, "A held id has no device slot");
    found.push_back(ids[i]);
    slots.push_back(uint32_t(slot));
  }
  if (found.empty()) return 0;
  const RowSlots next = removeSlots(snap.slots, slots);
  EBRIX_CUDA(cudaSetDevice(m.device));
  std::shared_ptr<DeviceBuffer> live;
  {
    ContextLease context(m.contexts);
    live = Impl::uploadLive(next, context->stream);
    EBRIX_CUDA(cudaStreamSynchronize(context->stream));
  }
  std::unique_lock<std::shared_mutex> idLock(m.idMutex);
  for (uint64_t id : found) m.rowOfId.erase(id);
  m.updateIdMapBytes();
  std::lock_guard<std::mutex> lock(m.snapshotMutex);
  m.current = Impl::Snapshot{snap.store, next, std::move(live)};
  return found.size();
}

bool GpuFlatIndex::contains(uint64_t id) const {
  std::shared_lock<std::shared_mutex> lock(impl_->idMutex);
  return impl_->rowOfId.count(id) != 0;
}

void GpuFlatIndex::rowsOf(const uint64_t* ids, size_t count, int64_t* rows) const {
  std::shared_lock<std::shared_mutex> lock(impl_->idMutex);
  for (size_t i = 0; i < count; ++i) {
    const auto it = impl_->rowOfId.find(ids[i]);
    rows[i] = it == impl_->rowOfId.end() ? -1 : int64_t(it->second);
  }
}

void GpuFlatIndex::get(uint64_t id, float* out) const {
  const Impl& m = *impl_;
  uint32_t row = 0;
  Impl::Snapshot snap;
  {
    // The row and the snapshot together: a writer publishes both under the exclusive lock.
    std::shared_lock<std::shared_mutex> lock(m.idMutex);
    const auto it = m.rowOfId.find(id);
    if (it == m.rowOfId.end()) {
      throw Error(ErrorCode::UnknownId, "Expected an id in the index but received unknown id " + std::to_string(id));
    }
    row = it->second;
    snap = m.snapshot();
  }
  const int64_t slot = snap.slots.slotOfRow(row);
  if (slot < 0) throw Error(ErrorCode::Internal, "A held id has no device slot");
  std::vector<unsigned char> bytes(m.rowBytes);
  EBRIX_CUDA(cudaSetDevice(m.device));
  {
    ContextLease context(m.contexts);
    EBRIX_CUDA(cudaMemcpyAsync(bytes.data(), snap.store->vectors.as<char>() + size_t(slot) * m.rowBytes, m.rowBytes,
                               cudaMemcpyDeviceToHost, context->stream));
    EBRIX_CUDA(cudaStreamSynchronize(context->stream));
  }
  if (m.storage == Storage::F32) {
    std::memcpy(out, bytes.data(), m.dim * sizeof(float));
    return;
  }
  // The device rounded with the same round-to-nearest-even as the CPU's 16-bit storage.
  std::vector<uint16_t> halves(m.dim);
  std::memcpy(halves.data(), bytes.data(), m.dim * sizeof(uint16_t));
  const simd::Kernels& scalar = simd::kernelsFor(simd::Level::Scalar);
  (m.storage == Storage::F16 ? scalar.f16 : scalar.bf16).toFloat(halves.data(), out, m.dim);
}

size_t GpuFlatIndex::compact() {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> writeLock(m.writeMutex);
  const Impl::Snapshot snap = m.snapshot();
  const size_t dropped = snap.slots.slots - snap.slots.live;
  if (dropped == 0) return 0;
  const Compaction plan = planCompaction(snap.slots);
  const size_t kept = plan.kept.size();
  EBRIX_CUDA(cudaSetDevice(m.device));
  ContextLease context(m.contexts);
  cudaStream_t stream = context->stream;
  // Built beside the published store: searches keep reading that one until the swap.
  auto store = std::make_shared<Impl::Store>(std::max<size_t>(kept, 1024), m.rowBytes, m.metric == Metric::L2);
  if (kept > 0) {
    StreamBuffer index(kept * sizeof(uint32_t), stream, "cudaMallocAsync(compaction)");
    EBRIX_CUDA(cudaMemcpyAsync(index.as<uint32_t>(), plan.kept.data(), kept * sizeof(uint32_t), cudaMemcpyHostToDevice,
                               stream));
    launchGatherWords(snap.store->vectors.as<uint32_t>(), store->vectors.as<uint32_t>(), index.as<uint32_t>(), kept,
                      m.rowBytes / 4, stream);
    launchGatherWords(snap.store->ids.as<uint32_t>(), store->ids.as<uint32_t>(), index.as<uint32_t>(), kept, 2, stream);
    if (m.metric == Metric::L2) {
      launchGatherWords(snap.store->bias.as<uint32_t>(), store->bias.as<uint32_t>(), index.as<uint32_t>(), kept, 1,
                        stream);
    }
    EBRIX_LAUNCHED("gatherWords");
    EBRIX_CUDA(cudaStreamSynchronize(stream));
  }
  // Rows keep their numbers, so the id map stays; get() pairs it with the snapshot it takes.
  std::lock_guard<std::mutex> lock(m.snapshotMutex);
  m.current = Impl::Snapshot{std::move(store), plan.after, nullptr};
  return dropped;
}

SearchOutput GpuFlatIndex::search(const float* queries, size_t queryCount, size_t k,
                                  const GpuSearchOptions& options) const {
  const Impl& m = *impl_;
  if (k == 0 || k > kMaxK) {
    throw Error(ErrorCode::InvalidArgument,
                "Expected k in [1, " + std::to_string(kMaxK) + "] on the GPU but received " + std::to_string(k));
  }
  requireFinite(queries, queryCount, m.dim, "queries");
  if (m.storage == Storage::F16 && m.metric != Metric::Cosine) requireF16Range(queries, queryCount, m.dim, "queries");
  SearchOutput out;
  out.queries = queryCount;
  out.k = k;
  out.ids.assign(queryCount * k, kNoId);
  out.scores.assign(queryCount * k, -std::numeric_limits<float>::infinity());
  if (options.deviceMilliseconds != nullptr) *options.deviceMilliseconds = 0.f;
  const Impl::Snapshot snap = m.snapshot();
  const size_t slots = snap.slots.slots;
  if (queryCount == 0 || snap.slots.live == 0) return out;

  std::vector<float> normalised;
  if (m.metric == Metric::Cosine) {
    normalised.resize(queryCount * m.dim);
    normalizeRows(queries, normalised.data(), queryCount, m.dim);
    queries = normalised.data();
  }

  PlanInput in;
  in.queries = queryCount;
  in.rows = slots;
  in.dim = m.dim;
  in.elementBytes = storageBytes(m.storage);
  in.k = k;
  in.multiprocessors = size_t(m.multiprocessors);
  in.sharedPerBlock = m.sharedPerBlock;
  in.sharedPerMultiprocessor = m.sharedPerMultiprocessor;
  in.scoreTileBytes = scoreTileBytes();
  if (options.path == GpuSearchOptions::Path::FusedScan) in.force = PlanInput::Path::FusedScan;
  if (options.path == GpuSearchOptions::Path::Gemm) in.force = PlanInput::Path::Gemm;
  const SearchPlan plan = planSearch(in);

  EBRIX_CUDA(cudaSetDevice(m.device));
  ContextLease context(m.contexts);
  cudaStream_t stream = context->stream;
  const DeviceRows rows = m.rowsOf(snap);
  StreamBuffer rawQueries(queryCount * m.dim * sizeof(float), stream, "cudaMallocAsync(queries)");
  StreamBuffer prepared(queryCount * m.rowBytes, stream, "cudaMallocAsync(queries)");
  StreamBuffer norms(queryCount * sizeof(float), stream, "cudaMallocAsync(query norms)");
  EBRIX_CUDA(cudaMemcpyAsync(rawQueries.as<float>(), queries, queryCount * m.dim * sizeof(float),
                             cudaMemcpyHostToDevice, stream));
  // The scan's allow bitset is over slots: the caller's rows translated (row_slots.h) with
  // the tombstones ANDed in, or the live bitset already on the device, or none.
  Allow allow;
  std::vector<uint32_t> slotBits;
  if (options.allowBits != nullptr) slotBits = slotAllow(snap.slots, options.allowBits, options.allowWords);
  StreamBuffer allowBits(options.allowBits != nullptr ? std::max<size_t>(slotBits.size(), 1) * 4 : 0, stream,
                         "cudaMallocAsync(allow bitset)");
  if (options.allowBits != nullptr) {
    if (!slotBits.empty()) {
      EBRIX_CUDA(cudaMemcpyAsync(allowBits.as<uint32_t>(), slotBits.data(), slotBits.size() * 4, cudaMemcpyHostToDevice,
                                 stream));
    }
    allow.bits = allowBits.as<uint32_t>();
    allow.words = uint32_t(slotBits.size());
  } else if (snap.liveDevice) {
    allow.bits = snap.liveDevice->as<uint32_t>();
    allow.words = uint32_t(bitWords(slots));
  }
  StreamBuffer outScores(queryCount * k * sizeof(float), stream, "cudaMallocAsync(results)");
  StreamBuffer outIds(queryCount * k * sizeof(uint64_t), stream, "cudaMallocAsync(results)");

  EBRIX_CUDA(cudaEventRecord(context->start, stream));
  launchPrepareQueries(m.storage, rawQueries.as<float>(), queryCount, uint32_t(m.dim), uint32_t(m.stride),
                       prepared.as<void>(), norms.as<float>(), stream);
  EBRIX_LAUNCHED("prepareQueries");
  const bool l2 = m.metric == Metric::L2;

  if (plan.path == SearchPlan::Path::FusedScan) {
    const size_t listLength = plan.scanBlocks * k;
    StreamBuffer partKeys(queryCount * listLength * 4, stream, "cudaMallocAsync(partial results)");
    StreamBuffer partRows(queryCount * listLength * 4, stream, "cudaMallocAsync(partial results)");
    launchFusedScan(rows, prepared.as<void>(), queryCount, allow, plan, k, partKeys.as<uint32_t>(),
                    partRows.as<uint32_t>(), stream);
    EBRIX_LAUNCHED("fusedScan");
    mergeLists(rows, partKeys.as<uint32_t>(), partRows.as<uint32_t>(), listLength, queryCount, plan, k,
               norms.as<float>(), l2, outScores.as<float>(), outIds.as<uint64_t>(), stream);
  } else {
    // Two score tiles: cuBLAS fills one on `stream` while the select kernel reads the other
    // on `selectStream` (the GEMM is bound by the tensor cores, the select by memory).
    const size_t tileQueries = plan.queryTile;
    StreamBuffer tiles(2 * tileQueries * plan.rowTile * sizeof(float), stream, "cudaMallocAsync(score tiles)");
    const size_t stateLength = plan.stateCapacity;
    StreamBuffer stateKeys(tileQueries * stateLength * 4, stream, "cudaMallocAsync(top-k state)");
    StreamBuffer stateRows(tileQueries * stateLength * 4, stream, "cudaMallocAsync(top-k state)");
    StreamBuffer stateCounters(tileQueries * 8, stream, "cudaMallocAsync(top-k state)");
    const cublasComputeType_t compute =
        m.storage == Storage::F32 && options.tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    const float one = 1.f, zero = 0.f;
    cudaStream_t selectStream = context->selectStream;
    // If anything below throws, the buffers above are freed (stream-ordered on `stream`) on
    // the way out: the select kernels still queued on the other stream must finish first.
    struct SelectStreamGuard {
      cudaStream_t selectStream;
      ~SelectStreamGuard() { cudaStreamSynchronize(selectStream); }
    } guard{selectStream};
    for (size_t q0 = 0; q0 < queryCount; q0 += tileQueries) {
      const size_t qn = std::min(tileQueries, queryCount - q0);
      SelectState state;
      state.keys = stateKeys.as<uint32_t>();
      state.rows = stateRows.as<uint32_t>();
      state.size = stateCounters.as<uint32_t>();
      state.threshold = state.size + tileQueries;
      EBRIX_CUDA(cudaMemsetAsync(state.keys, 0, tileQueries * stateLength * 4, stream));
      EBRIX_CUDA(cudaMemsetAsync(state.size, 0, tileQueries * 8, stream));
      EBRIX_CUDA(cudaEventRecord(context->ready, stream));
      EBRIX_CUDA(cudaStreamWaitEvent(selectStream, context->ready));
      const char* queryBase = prepared.as<char>() + q0 * m.rowBytes;
      size_t t = 0;
      for (size_t r0 = 0; r0 < slots; r0 += plan.rowTile, ++t) {
        const size_t rn = std::min(plan.rowTile, slots - r0);
        const size_t b = t % 2;
        float* tile = tiles.as<float>() + b * tileQueries * plan.rowTile;
        if (t >= 2) EBRIX_CUDA(cudaStreamWaitEvent(stream, context->selected[b]));  // tile t-2 was read
        checkBlas(cublasGemmEx(context->blas, CUBLAS_OP_T, CUBLAS_OP_N, int(rn), int(qn), int(m.dim), &one,
                               static_cast<const char*>(rows.vectors) + r0 * m.rowBytes, blasType(m.storage),
                               int(m.stride), queryBase, blasType(m.storage), int(m.stride), &zero, tile, CUDA_R_32F,
                               int(plan.rowTile), compute, CUBLAS_GEMM_DEFAULT),
                  "cublasGemmEx(scores)");
        EBRIX_CUDA(cudaEventRecord(context->scored[b], stream));
        EBRIX_CUDA(cudaStreamWaitEvent(selectStream, context->scored[b]));
        launchTileSelect(rows, tile, plan.rowTile, uint32_t(rn), uint32_t(r0), qn, allow, plan, k, state,
                         selectStream);
        EBRIX_LAUNCHED("tileSelect");
        EBRIX_CUDA(cudaEventRecord(context->selected[b], selectStream));
      }
      EBRIX_CUDA(cudaEventRecord(context->ready, selectStream));
      EBRIX_CUDA(cudaStreamWaitEvent(stream, context->ready));
      mergeLists(rows, state.keys, state.rows, stateLength, qn, plan, k, norms.as<float>() + q0, l2,
                 outScores.as<float>() + q0 * k, outIds.as<uint64_t>() + q0 * k, stream);
    }
  }
  EBRIX_CUDA(cudaEventRecord(context->stop, stream));
  EBRIX_CUDA(cudaMemcpyAsync(out.scores.data(), outScores.as<float>(), queryCount * k * sizeof(float),
                             cudaMemcpyDeviceToHost, stream));
  EBRIX_CUDA(cudaMemcpyAsync(out.ids.data(), outIds.as<uint64_t>(), queryCount * k * sizeof(uint64_t),
                             cudaMemcpyDeviceToHost, stream));
  EBRIX_CUDA(cudaStreamSynchronize(stream));
  if (options.deviceMilliseconds != nullptr) {
    EBRIX_CUDA(cudaEventElapsedTime(options.deviceMilliseconds, context->start, context->stop));
  }
  return out;
}

size_t GpuFlatIndex::deviceBytes() const {
  const Impl::Snapshot snap = impl_->snapshot();
  if (!snap.store) return 0;
  return snap.store->vectors.bytes() + snap.store->ids.bytes() + snap.store->bias.bytes() +
         (snap.liveDevice ? snap.liveDevice->bytes() : 0);
}

size_t GpuFlatIndex::hostBytes() const {
  const Impl::Snapshot snap = impl_->snapshot();
  return impl_->idMapBytes.load(std::memory_order_relaxed) +
         (snap.slots.liveBits ? snap.slots.liveBits->capacity() * 4 : 0) +
         (snap.slots.table ? snap.slots.table->capacity() * 4 : 0);
}

// --- measurements for the device check -------------------------------------------------------

double measureReadBandwidth(int device, size_t bytes) {
  EBRIX_CUDA(cudaSetDevice(device));
  DeviceBuffer data(bytes, "cudaMalloc(probe)");
  DeviceBuffer sink(16, "cudaMalloc(probe)");
  EBRIX_CUDA(cudaMemset(data.get(), 0x5A, bytes));
  cudaDeviceProp prop{};
  EBRIX_CUDA(cudaGetDeviceProperties(&prop, device));
  cudaEvent_t start, stop;
  EBRIX_CUDA(cudaEventCreate(&start));
  EBRIX_CUDA(cudaEventCreate(&stop));
  std::vector<float> times;
  for (int rep = 0; rep < 12; ++rep) {
    EBRIX_CUDA(cudaEventRecord(start));
    launchReadProbe(data.get(), bytes, sink.as<float>(), prop.multiProcessorCount * 8, nullptr);
    EBRIX_LAUNCHED("readProbe");
    EBRIX_CUDA(cudaEventRecord(stop));
    EBRIX_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    EBRIX_CUDA(cudaEventElapsedTime(&ms, start, stop));
    if (rep >= 2) times.push_back(ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return double(bytes) / (times[times.size() / 2] * 1e-3) / 1e9;
}

double measureGemmTflops(int device, Storage storage, int n) {
  EBRIX_CUDA(cudaSetDevice(device));
  const size_t element = storageBytes(storage);
  DeviceBuffer a(size_t(n) * n * element, "cudaMalloc(gemm)");
  DeviceBuffer b(size_t(n) * n * element, "cudaMalloc(gemm)");
  DeviceBuffer c(size_t(n) * n * sizeof(float), "cudaMalloc(gemm)");
  launchRandomRows(storage, size_t(n), uint32_t(n), uint32_t(n), 1, 0, a.get(), nullptr, nullptr);
  launchRandomRows(storage, size_t(n), uint32_t(n), uint32_t(n), 2, 0, b.get(), nullptr, nullptr);
  EBRIX_LAUNCHED("randomRows");
  cublasHandle_t blas;
  checkBlas(cublasCreate(&blas), "cublasCreate");
  cudaEvent_t start, stop;
  EBRIX_CUDA(cudaEventCreate(&start));
  EBRIX_CUDA(cudaEventCreate(&stop));
  const float one = 1.f, zero = 0.f;
  std::vector<float> times;
  for (int rep = 0; rep < 8; ++rep) {
    EBRIX_CUDA(cudaEventRecord(start));
    checkBlas(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, a.get(), blasType(storage), n, b.get(),
                           blasType(storage), n, &zero, c.get(), CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              "cublasGemmEx(probe)");
    EBRIX_CUDA(cudaEventRecord(stop));
    EBRIX_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    EBRIX_CUDA(cudaEventElapsedTime(&ms, start, stop));
    if (rep >= 2) times.push_back(ms);
  }
  cublasDestroy(blas);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return 2.0 * n * double(n) * n / (times[times.size() / 2] * 1e-3) / 1e12;
}

}  // namespace ebrix::gpu
