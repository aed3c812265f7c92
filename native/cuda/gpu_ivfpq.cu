// GpuIvfPqIndex: see gpu_ivfpq.h.
#include "gpu_ivfpq.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "cuda_util.h"
#include "error.h"
#include "flat.h"  // requireFinite
#include "gpu_index.h"
#include "ivfpq_kernels.cuh"
#include "kernels.cuh"
#include "plan.h"
#include "row_bits.h"
#include "row_slots.h"
#include "simd/dispatch.h"

namespace ebrix::gpu {
namespace {

// Bytes of a search's per-(query, list) candidates a query chunk may hold.
constexpr size_t kPartialBudget = size_t(256) << 20;

size_t roundUp(size_t x, size_t to) { return (x + to - 1) / to * to; }

// The select kernels' plan for merging lists down to k (the GEMM path's select settings).
SearchPlan mergePlan(size_t queries, size_t k) {
  PlanInput in;
  in.queries = std::max<size_t>(queries, 1);
  in.rows = 1;
  in.dim = 1;
  in.k = k;
  in.force = PlanInput::Path::Gemm;
  return planSearch(in);
}

}  // namespace

struct GpuIvfPqIndex::Impl {
  // One list's device arrays; replaced (not resized) when they grow, so that a snapshot
  // holding the old ones keeps reading them.
  struct List {
    std::shared_ptr<DeviceBuffer> codes, rows;
    size_t capacity = 0;
    size_t size = 0;
  };
  // Per-slot arrays: ids, slot numbers as ids (the shortlist merge returns slots), refine vectors.
  struct RowStore {
    RowStore(size_t capacity_, size_t refineRowBytes)
        : capacity(capacity_),
          ids(capacity_ * sizeof(uint64_t), "cudaMalloc(ids)"),
          rowIds(capacity_ * sizeof(uint64_t), "cudaMalloc(row ids)"),
          refine(capacity_ * refineRowBytes, "cudaMalloc(refine vectors)") {}
    size_t capacity;
    DeviceBuffer ids, rowIds, refine;
  };
  // What a search reads: the list table and everything it points to, the row store and the
  // row count, taken together under snapshotMutex.
  struct Snapshot {
    std::shared_ptr<DeviceBuffer> table;  // nlist IvfPqListView
    std::shared_ptr<const std::vector<List>> lists;
    std::shared_ptr<RowStore> rows;  // by slot
    RowSlots slots;
    std::shared_ptr<DeviceBuffer> liveDevice;  // slots.liveBits on the device; null when none
  };
  // The trained model on the device.
  struct Model {
    std::unique_ptr<GpuFlatIndex> coarse;
    std::unique_ptr<DeviceBuffer> codebooks, rotation, rotatedCentroids;
  };

  Impl(const IvfPqParams& p, unsigned threads, int device_)
      : params(p), host(p, simd::defaultLevel(), threads), device(device_) {}

  const IvfPqParams params;
  IvfPqIndex host;
  const int device;
  size_t codeStride = 0;      // bytes per code on the device (a multiple of 4)
  size_t refineStride = 0;    // elements per refine row (16-byte multiple)
  size_t refineRowBytes = 0;
  size_t sharedPerBlock = 0;
  size_t multiprocessors = 0;

  std::mutex writeMutex;  // serialises train and add; guards `lists` below
  std::vector<List> lists;
  mutable std::mutex snapshotMutex;
  Snapshot current;
  std::shared_ptr<const Model> model;  // set once by train, under snapshotMutex
  mutable ContextPool contexts;

  Snapshot snapshot(std::shared_ptr<const Model>* modelOut = nullptr) const {
    std::lock_guard<std::mutex> lock(snapshotMutex);
    if (modelOut != nullptr) *modelOut = model;
    return current;
  }

  bool refined() const { return params.refine != RefineStorage::None; }
  Storage refineStorage() const { return params.refine == RefineStorage::F16 ? Storage::F16 : Storage::F32; }

  // The list table of `ls` on the device (queued on `stream`).
  std::shared_ptr<DeviceBuffer> uploadTable(const std::vector<List>& ls, cudaStream_t stream) const {
    std::vector<IvfPqListView> views(ls.size());
    for (size_t l = 0; l < ls.size(); ++l) {
      if (!ls[l].codes) continue;
      views[l].codes = ls[l].codes->as<uint8_t>();
      views[l].rows = ls[l].rows->as<uint32_t>();
      views[l].size = uint32_t(ls[l].size);
    }
    auto table = std::make_shared<DeviceBuffer>(views.size() * sizeof(IvfPqListView), "cudaMalloc(list table)");
    EBRIX_CUDA(cudaMemcpyAsync(table->get(), views.data(), views.size() * sizeof(IvfPqListView), cudaMemcpyHostToDevice,
                               stream));
    return table;
  }

  // The live bitset of `slots` on the device, or null when every slot is live.
  static std::shared_ptr<DeviceBuffer> uploadLive(const RowSlots& slots, cudaStream_t stream) {
    if (!slots.liveBits) return nullptr;
    const std::vector<uint32_t>& bits = *slots.liveBits;
    auto buffer = std::make_shared<DeviceBuffer>(std::max<size_t>(bits.size(), 1) * 4, "cudaMalloc(live bitset)");
    if (!bits.empty()) {
      EBRIX_CUDA(cudaMemcpyAsync(buffer->get(), bits.data(), bits.size() * 4, cudaMemcpyHostToDevice, stream));
    }
    return buffer;
  }

  // Appends a prepared add or upsert on the device, then commits it on the twin and publishes
  // both (writeMutex held; `pending` holds the twin's writer lock).
  void append(IvfPqIndex::PendingAdd& pending);

  size_t listDeviceBytes(const std::vector<List>& ls) const {
    size_t bytes = 0;
    for (const List& l : ls) bytes += (l.codes ? l.codes->bytes() : 0) + (l.rows ? l.rows->bytes() : 0);
    return bytes;
  }
};

GpuIvfPqIndex::GpuIvfPqIndex(const IvfPqParams& params, unsigned threads, int device) {
  if (params.dim > 65536) {
    throw Error(ErrorCode::InvalidArgument, "Expected dim in [1, 65536] on the GPU but received " +
                                                std::to_string(params.dim));
  }
  const DeviceInfo info = probeDevice(device);
  if (!info.available) throw Error(ErrorCode::DeviceUnavailable, "No usable GPU: " + info.reason);
  impl_ = std::make_unique<Impl>(params, threads, device);  // the CPU twin validates the parameters
  Impl& s = *impl_;
  s.codeStride = roundUp(params.nbits == 8 ? params.m : (params.m + 1) / 2, 4);
  const size_t element = params.refine == RefineStorage::F16 ? 2 : 4;
  s.refineRowBytes = s.refined() ? roundUp(params.dim * element, 16) : 0;
  s.refineStride = s.refineRowBytes / element;
  EBRIX_CUDA(cudaSetDevice(device));
  cudaDeviceProp prop{};
  EBRIX_CUDA(cudaGetDeviceProperties(&prop, device));
  s.sharedPerBlock = prop.sharedMemPerBlockOptin;
  s.multiprocessors = size_t(prop.multiProcessorCount);
  // Fail at construction rather than at the first search when even k = 1 cannot fit.
  planIvfPqScan(params.dim, params.m, params.nbits, 1, s.sharedPerBlock);
  s.lists.resize(params.nlist);
  s.current.lists = std::make_shared<const std::vector<Impl::List>>(s.lists);
}

GpuIvfPqIndex::~GpuIvfPqIndex() {
  if (impl_) cudaSetDevice(impl_->device);
}

const IvfPqParams& GpuIvfPqIndex::params() const { return impl_->params; }
int GpuIvfPqIndex::device() const { return impl_->device; }
bool GpuIvfPqIndex::trained() const {
  std::shared_ptr<const Impl::Model> model;
  impl_->snapshot(&model);
  return model != nullptr;
}
size_t GpuIvfPqIndex::size() const { return impl_->snapshot().slots.live; }
const IvfPqIndex& GpuIvfPqIndex::host() const { return impl_->host; }
IvfPqMemory GpuIvfPqIndex::hostMemory() const { return impl_->host.memory(); }

void GpuIvfPqIndex::train(const float* vectors, size_t n, const IvfPqTrainParams& params) {
  Impl& s = *impl_;
  const IvfPqParams& p = s.params;
  std::lock_guard<std::mutex> writeLock(s.writeMutex);
  {
    std::lock_guard<std::mutex> lock(s.snapshotMutex);
    if (s.model) throw Error(ErrorCode::InvalidArgument, "The index is already trained");
  }
  // The host twin trains first (the model comes from it). If the upload below fails, the
  // twin stays trained but this index does not (trained() reads the device model), and the
  // next train() call uploads the model trained then instead of training again.
  if (!s.host.trained()) s.host.train(vectors, n, params);
  const IvfPqModel m = s.host.model();
  EBRIX_CUDA(cudaSetDevice(s.device));
  auto model = std::make_shared<Impl::Model>();
  const Metric coarseMetric = p.metric == Metric::L2 ? Metric::L2 : Metric::InnerProduct;
  model->coarse = std::make_unique<GpuFlatIndex>(p.dim, coarseMetric, Storage::F32, s.device);
  std::vector<uint64_t> listIds(p.nlist);
  for (size_t l = 0; l < p.nlist; ++l) listIds[l] = l;
  model->coarse->add(listIds.data(), m.centroids.data(), p.nlist);
  auto upload = [](const std::vector<float>& values, const char* what) {
    auto buffer = std::make_unique<DeviceBuffer>(values.size() * sizeof(float), what);
    if (!values.empty()) {
      EBRIX_CUDA(cudaMemcpy(buffer->get(), values.data(), values.size() * sizeof(float), cudaMemcpyHostToDevice));
    }
    return buffer;
  };
  model->codebooks = upload(m.codebooks, "cudaMalloc(codebooks)");
  model->rotation = upload(m.rotation, "cudaMalloc(rotation)");
  model->rotatedCentroids = upload(m.rotatedCentroids, "cudaMalloc(centroids)");
  std::lock_guard<std::mutex> lock(s.snapshotMutex);
  s.model = std::move(model);
}

void GpuIvfPqIndex::add(const uint64_t* ids, const float* vectors, size_t count) {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> writeLock(s.writeMutex);
  if (!trained()) throw Error(ErrorCode::NotTrained, "The index must be trained before vectors are added");
  std::unique_ptr<IvfPqIndex::PendingAdd> pending = s.host.prepareAdd(ids, vectors, count);
  if (count == 0) return;
  s.append(*pending);
}

void GpuIvfPqIndex::upsert(const uint64_t* ids, const float* vectors, size_t count) {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> writeLock(s.writeMutex);
  if (!trained()) throw Error(ErrorCode::NotTrained, "The index must be trained before vectors are added");
  std::unique_ptr<IvfPqIndex::PendingAdd> pending = s.host.prepareUpsert(ids, vectors, count);
  if (count == 0) return;
  s.append(*pending);
}

void GpuIvfPqIndex::Impl::append(IvfPqIndex::PendingAdd& pending) {
  Impl& s = *this;
  const IvfPqParams& p = s.params;
  const Snapshot snap = s.snapshot();
  const size_t count = pending.count();
  if (pending.firstRow() != snap.slots.rows) {
    throw Error(ErrorCode::Internal, "The GPU index and its host twin disagree on the row count");
  }
  std::vector<uint32_t> replaced;
  for (uint32_t row : pending.replacedRows()) {
    const int64_t slot = snap.slots.slotOfRow(row);
    if (slot < 0) throw Error(ErrorCode::Internal, "A held id has no device slot");
    replaced.push_back(uint32_t(slot));
  }
  const RowSlots next = appendSlots(snap.slots, count, replaced);
  const size_t oldCount = snap.slots.slots, newCount = next.slots;

  // Codes and slots grouped by list, contiguous per list, codes padded to codeStride.
  const size_t cb = p.nbits == 8 ? p.m : (p.m + 1) / 2;
  std::vector<size_t> start(p.nlist + 1, 0);
  for (size_t i = 0; i < count; ++i) ++start[pending.lists()[i] + 1];
  for (size_t l = 0; l < p.nlist; ++l) start[l + 1] += start[l];
  std::vector<uint8_t> codes(count * s.codeStride, 0);
  std::vector<uint32_t> rows(count);
  {
    std::vector<size_t> fill(start.begin(), start.end() - 1);
    for (size_t i = 0; i < count; ++i) {
      const size_t at = fill[pending.lists()[i]]++;
      std::memcpy(codes.data() + at * s.codeStride, pending.codes() + i * cb, cb);
      rows[at] = uint32_t(oldCount + i);
    }
  }

  EBRIX_CUDA(cudaSetDevice(s.device));
  ContextLease context(s.contexts);
  cudaStream_t stream = context->stream;
  DeviceBuffer stagedCodes(codes.size(), "cudaMalloc(staging)");
  DeviceBuffer stagedRows(rows.size() * sizeof(uint32_t), "cudaMalloc(staging)");
  EBRIX_CUDA(cudaMemcpyAsync(stagedCodes.get(), codes.data(), codes.size(), cudaMemcpyHostToDevice, stream));
  EBRIX_CUDA(cudaMemcpyAsync(stagedRows.get(), rows.data(), rows.size() * 4, cudaMemcpyHostToDevice, stream));

  // New list arrays where capacity runs out (copies of the old contents); appends in place
  // otherwise, past the size every published snapshot reads.
  std::vector<Impl::List> lists = s.lists;
  for (size_t l = 0; l < p.nlist; ++l) {
    const size_t added = start[l + 1] - start[l];
    if (added == 0) continue;
    Impl::List& list = lists[l];
    const size_t newSize = list.size + added;
    if (newSize > list.capacity) {
      const size_t capacity = std::max({newSize, list.capacity + list.capacity / 2, size_t(32)});
      auto newCodes = std::make_shared<DeviceBuffer>(capacity * s.codeStride, "cudaMalloc(list codes)");
      auto newRows = std::make_shared<DeviceBuffer>(capacity * sizeof(uint32_t), "cudaMalloc(list rows)");
      if (list.size > 0) {
        EBRIX_CUDA(cudaMemcpyAsync(newCodes->get(), list.codes->get(), list.size * s.codeStride,
                                   cudaMemcpyDeviceToDevice, stream));
        EBRIX_CUDA(cudaMemcpyAsync(newRows->get(), list.rows->get(), list.size * 4, cudaMemcpyDeviceToDevice, stream));
      }
      list.codes = std::move(newCodes);
      list.rows = std::move(newRows);
      list.capacity = capacity;
    }
    EBRIX_CUDA(cudaMemcpyAsync(list.codes->as<uint8_t>() + list.size * s.codeStride,
                               stagedCodes.as<uint8_t>() + start[l] * s.codeStride, added * s.codeStride,
                               cudaMemcpyDeviceToDevice, stream));
    EBRIX_CUDA(cudaMemcpyAsync(list.rows->as<uint32_t>() + list.size, stagedRows.as<uint32_t>() + start[l], added * 4,
                               cudaMemcpyDeviceToDevice, stream));
    list.size = newSize;
  }

  // Per-slot arrays: the same scheme, one store for all slots.
  std::shared_ptr<Impl::RowStore> store = snap.rows;
  if (!store || store->capacity < newCount) {
    const size_t old = store ? store->capacity : 0;
    const size_t capacity = std::max({newCount, old + old / 2, size_t(1024)});
    auto grown = std::make_shared<Impl::RowStore>(capacity, s.refineRowBytes);
    if (oldCount > 0) {
      EBRIX_CUDA(cudaMemcpyAsync(grown->ids.get(), store->ids.get(), oldCount * 8, cudaMemcpyDeviceToDevice, stream));
      EBRIX_CUDA(
          cudaMemcpyAsync(grown->rowIds.get(), store->rowIds.get(), oldCount * 8, cudaMemcpyDeviceToDevice, stream));
      if (s.refined()) {
        EBRIX_CUDA(cudaMemcpyAsync(grown->refine.get(), store->refine.get(), oldCount * s.refineRowBytes,
                                   cudaMemcpyDeviceToDevice, stream));
      }
    }
    store = std::move(grown);
  }
  EBRIX_CUDA(cudaMemcpyAsync(store->ids.as<uint64_t>() + oldCount, pending.ids(), count * 8, cudaMemcpyHostToDevice,
                             stream));
  launchIota(store->rowIds.as<uint64_t>(), oldCount, count, stream);
  EBRIX_LAUNCHED("iota");
  if (s.refined()) {
    // The prepared vectors (normalised for cosine) in slices, rounded to f16 on the device
    // as the CPU twin rounds its copy.
    const size_t slice = std::max<size_t>(1, (size_t(64) << 20) / (p.dim * sizeof(float)));
    StreamBuffer staging(std::min(slice, count) * p.dim * sizeof(float), stream, "cudaMallocAsync(staging)");
    for (size_t done = 0; done < count; done += slice) {
      const size_t n = std::min(slice, count - done);
      EBRIX_CUDA(cudaMemcpyAsync(staging.as<float>(), pending.prepared() + done * p.dim, n * p.dim * sizeof(float),
                                 cudaMemcpyHostToDevice, stream));
      launchStoreRows(s.refineStorage(), staging.as<float>(), n, uint32_t(p.dim), uint32_t(s.refineStride),
                      store->refine.as<char>() + (oldCount + done) * s.refineRowBytes, nullptr, stream);
      EBRIX_LAUNCHED("storeRows");
    }
  }
  std::shared_ptr<DeviceBuffer> table = s.uploadTable(lists, stream);
  std::shared_ptr<DeviceBuffer> live = uploadLive(next, stream);
  EBRIX_CUDA(cudaStreamSynchronize(stream));

  // The device holds everything; the host twin takes the write (it can still fail on host
  // memory, leaving the unpublished device arrays to be freed), then both are published.
  s.host.commitAdd(pending);
  auto published = std::make_shared<const std::vector<Impl::List>>(lists);
  s.lists = std::move(lists);
  std::lock_guard<std::mutex> lock(s.snapshotMutex);
  s.current = Impl::Snapshot{std::move(table), std::move(published), std::move(store), next, std::move(live)};
}

size_t GpuIvfPqIndex::remove(const uint64_t* ids, size_t count) {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> writeLock(s.writeMutex);
  const Impl::Snapshot snap = s.snapshot();
  // Only this index's writers change the twin, and they hold writeMutex: its rows are stable here.
  std::vector<int64_t> rows(count);
  s.host.rowsOf(ids, count, rows.data());
  std::vector<uint32_t> slots;
  std::unordered_set<uint64_t> seen;
  for (size_t i = 0; i < count; ++i) {
    if (rows[i] < 0 || !seen.insert(ids[i]).second) continue;
    const int64_t slot = snap.slots.slotOfRow(uint32_t(rows[i]));
    if (slot < 0) throw Error(ErrorCode::Internal, "A held id has no device slot");
    slots.push_back(uint32_t(slot));
  }
  if (slots.empty()) return 0;
  const RowSlots next = removeSlots(snap.slots, slots);
  EBRIX_CUDA(cudaSetDevice(s.device));
  std::shared_ptr<DeviceBuffer> live;
  {
    ContextLease context(s.contexts);
    live = Impl::uploadLive(next, context->stream);
    EBRIX_CUDA(cudaStreamSynchronize(context->stream));
  }
  const size_t removed = s.host.remove(ids, count);
  if (removed != slots.size()) {
    throw Error(ErrorCode::Internal, "The GPU index and its host twin disagree on the ids held");
  }
  std::lock_guard<std::mutex> lock(s.snapshotMutex);
  s.current.liveDevice = std::move(live);
  s.current.slots = next;
  return removed;
}

size_t GpuIvfPqIndex::compact() {
  Impl& s = *impl_;
  const IvfPqParams& p = s.params;
  std::lock_guard<std::mutex> writeLock(s.writeMutex);
  const Impl::Snapshot snap = s.snapshot();
  const size_t dropped = snap.slots.slots - snap.slots.live;
  if (dropped == 0) return 0;
  const Compaction plan = planCompaction(snap.slots);
  const size_t kept = plan.kept.size();
  EBRIX_CUDA(cudaSetDevice(s.device));
  ContextLease context(s.contexts);
  cudaStream_t stream = context->stream;

  // The lists' slots come back to the host, which picks the live entries and renumbers them;
  // the device gathers their codes into new arrays.
  std::vector<std::vector<uint32_t>> listSlots(p.nlist);
  for (size_t l = 0; l < p.nlist; ++l) {
    const Impl::List& list = s.lists[l];
    listSlots[l].resize(list.size);
    if (list.size > 0) {
      EBRIX_CUDA(cudaMemcpyAsync(listSlots[l].data(), list.rows->get(), list.size * 4, cudaMemcpyDeviceToHost, stream));
    }
  }
  EBRIX_CUDA(cudaStreamSynchronize(stream));
  std::vector<Impl::List> lists(p.nlist);
  std::vector<std::vector<uint32_t>> staged;
  for (size_t l = 0; l < p.nlist; ++l) {
    std::vector<uint32_t> positions, renumbered;
    for (size_t i = 0; i < listSlots[l].size(); ++i) {
      const uint32_t to = plan.newSlot[listSlots[l][i]];
      if (to == kNoSlot) continue;
      positions.push_back(uint32_t(i));
      renumbered.push_back(to);
    }
    if (positions.empty()) continue;
    Impl::List& list = lists[l];
    list.size = positions.size();
    list.capacity = std::max<size_t>(list.size, 32);
    list.codes = std::make_shared<DeviceBuffer>(list.capacity * s.codeStride, "cudaMalloc(list codes)");
    list.rows = std::make_shared<DeviceBuffer>(list.capacity * sizeof(uint32_t), "cudaMalloc(list rows)");
    StreamBuffer index(positions.size() * 4, stream, "cudaMallocAsync(compaction)");
    EBRIX_CUDA(cudaMemcpyAsync(index.as<uint32_t>(), positions.data(), positions.size() * 4, cudaMemcpyHostToDevice,
                               stream));
    launchGatherWords(s.lists[l].codes->as<uint32_t>(), list.codes->as<uint32_t>(), index.as<uint32_t>(),
                      positions.size(), s.codeStride / 4, stream);
    EBRIX_LAUNCHED("gatherWords");
    EBRIX_CUDA(cudaMemcpyAsync(list.rows->get(), renumbered.data(), renumbered.size() * 4, cudaMemcpyHostToDevice,
                               stream));
    // Host sources of the copies stay alive until the stream is drained below.
    staged.push_back(std::move(positions));
    staged.push_back(std::move(renumbered));
  }
  auto store = std::make_shared<Impl::RowStore>(std::max<size_t>(kept, 1024), s.refineRowBytes);
  if (kept > 0) {
    StreamBuffer index(kept * 4, stream, "cudaMallocAsync(compaction)");
    EBRIX_CUDA(cudaMemcpyAsync(index.as<uint32_t>(), plan.kept.data(), kept * 4, cudaMemcpyHostToDevice, stream));
    launchGatherWords(snap.rows->ids.as<uint32_t>(), store->ids.as<uint32_t>(), index.as<uint32_t>(), kept, 2, stream);
    if (s.refined()) {
      launchGatherWords(snap.rows->refine.as<uint32_t>(), store->refine.as<uint32_t>(), index.as<uint32_t>(), kept,
                        s.refineRowBytes / 4, stream);
    }
    EBRIX_LAUNCHED("gatherWords");
    launchIota(store->rowIds.as<uint64_t>(), 0, kept, stream);
    EBRIX_LAUNCHED("iota");
  }
  std::shared_ptr<DeviceBuffer> table = s.uploadTable(lists, stream);
  EBRIX_CUDA(cudaStreamSynchronize(stream));

  // Everything is on the device; the twin compacts (it can fail on host memory, and then
  // neither changes), then the new arrays are published.
  const size_t hostDropped = s.host.compact();
  if (hostDropped != dropped) {
    throw Error(ErrorCode::Internal, "The GPU index and its host twin disagree on the tombstones");
  }
  auto published = std::make_shared<const std::vector<Impl::List>>(lists);
  s.lists = std::move(lists);
  std::lock_guard<std::mutex> lock(s.snapshotMutex);
  s.current = Impl::Snapshot{std::move(table), std::move(published), std::move(store), plan.after, nullptr};
  return dropped;
}

SearchOutput GpuIvfPqIndex::search(const float* queries, size_t queryCount, const IvfPqSearchParams& sp) const {
  const Impl& s = *impl_;
  const IvfPqParams& p = s.params;
  if (sp.k == 0) throw Error(ErrorCode::InvalidArgument, "Expected a positive integer for k but received 0");
  if (sp.nprobe == 0) throw Error(ErrorCode::InvalidArgument, "Expected a positive integer for nprobe but received 0");
  if (sp.refineFactor == 0) {
    throw Error(ErrorCode::InvalidArgument, "Expected a positive integer for refineFactor but received 0");
  }
  const bool refined = s.refined();
  const size_t keep = refined ? sp.k * sp.refineFactor : sp.k;
  if (sp.k > kMaxK || keep > kMaxK || sp.k * sp.refineFactor / sp.refineFactor != sp.k) {
    throw Error(ErrorCode::InvalidArgument, std::string("Expected k") + (refined ? " × refineFactor" : "") +
                                                " at most " + std::to_string(kMaxK) + " on the GPU but received " +
                                                std::to_string(keep));
  }
  const size_t nprobe = std::min(sp.nprobe, p.nlist);
  if (nprobe > kMaxK) {
    throw Error(ErrorCode::InvalidArgument,
                "Expected nprobe at most " + std::to_string(kMaxK) + " on the GPU but received " + std::to_string(nprobe));
  }
  requireFinite(queries, queryCount, p.dim, "queries");
  std::shared_ptr<const Impl::Model> model;
  const Impl::Snapshot snap = s.snapshot(&model);
  if (!model) throw Error(ErrorCode::NotTrained, "The index must be trained before it is searched");
  const IvfPqScanPlan scanPlan = planIvfPqScan(p.dim, p.m, p.nbits, keep, s.sharedPerBlock);

  SearchOutput out;
  out.queries = queryCount;
  out.k = sp.k;
  out.ids.assign(queryCount * sp.k, kNoId);
  out.scores.assign(queryCount * sp.k, -std::numeric_limits<float>::infinity());
  const size_t slots = snap.slots.slots;
  if (queryCount == 0 || snap.slots.live == 0) return out;

  std::vector<float> normalised;
  if (p.metric == Metric::Cosine) {
    normalised.resize(queryCount * p.dim);
    normalizeRows(queries, normalised.data(), queryCount, p.dim);
    queries = normalised.data();
  }
  // 1. The probed lists (and, for ip, their constants q·c).
  const SearchOutput probes = model->coarse->search(queries, queryCount, nprobe);
  std::vector<uint32_t> probeLists(queryCount * nprobe);
  for (size_t i = 0; i < probeLists.size(); ++i) {
    probeLists[i] = probes.ids[i] == kNoId ? kNoList : uint32_t(probes.ids[i]);
  }

  EBRIX_CUDA(cudaSetDevice(s.device));
  ContextLease context(s.contexts);
  cudaStream_t stream = context->stream;
  const size_t chunk = std::clamp<size_t>(kPartialBudget / (nprobe * keep * 8), 1, std::min<size_t>(queryCount, 65535));
  // One grouping for every chunk (the last one may be smaller): the buffers below hold
  // `groups` partial lists per query.
  const size_t probesPerBlock = ivfpqProbesPerBlock(chunk, nprobe, s.multiprocessors);
  const size_t groups = (nprobe + probesPerBlock - 1) / probesPerBlock;
  StreamBuffer rawQueries(queryCount * p.dim * sizeof(float), stream, "cudaMallocAsync(queries)");
  StreamBuffer rotated(model->rotation->bytes() > 0 ? chunk * p.dim * sizeof(float) : 0, stream,
                       "cudaMallocAsync(queries)");
  StreamBuffer lists(queryCount * nprobe * 4, stream, "cudaMallocAsync(probes)");
  StreamBuffer listScores(queryCount * nprobe * 4, stream, "cudaMallocAsync(probes)");
  EBRIX_CUDA(cudaMemcpyAsync(rawQueries.as<float>(), queries, queryCount * p.dim * sizeof(float),
                             cudaMemcpyHostToDevice, stream));
  EBRIX_CUDA(cudaMemcpyAsync(lists.as<uint32_t>(), probeLists.data(), probeLists.size() * 4, cudaMemcpyHostToDevice,
                             stream));
  EBRIX_CUDA(cudaMemcpyAsync(listScores.as<float>(), probes.scores.data(), probes.scores.size() * 4,
                             cudaMemcpyHostToDevice, stream));
  // The scan's allow bitset is over slots: the caller's rows translated (row_slots.h) with
  // the tombstones ANDed in, or the live bitset already on the device, or none.
  Allow allow;
  std::vector<uint32_t> slotBits;
  if (sp.allowBits != nullptr) slotBits = slotAllow(snap.slots, sp.allowBits, sp.allowWords);
  StreamBuffer allowBits(sp.allowBits != nullptr ? std::max<size_t>(slotBits.size(), 1) * 4 : 0, stream,
                         "cudaMallocAsync(allow bitset)");
  if (sp.allowBits != nullptr) {
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
  StreamBuffer partKeys(chunk * groups * keep * 4, stream, "cudaMallocAsync(partial results)");
  StreamBuffer partRows(chunk * groups * keep * 4, stream, "cudaMallocAsync(partial results)");
  StreamBuffer shortScores(refined ? chunk * keep * 4 : 0, stream, "cudaMallocAsync(shortlist)");
  StreamBuffer shortRows(refined ? chunk * keep * 8 : 0, stream, "cudaMallocAsync(shortlist)");
  StreamBuffer refinedKeys(refined ? chunk * keep * 4 : 0, stream, "cudaMallocAsync(shortlist)");
  StreamBuffer refinedRows(refined ? chunk * keep * 4 : 0, stream, "cudaMallocAsync(shortlist)");
  StreamBuffer outScores(queryCount * sp.k * sizeof(float), stream, "cudaMallocAsync(results)");
  StreamBuffer outIds(queryCount * sp.k * sizeof(uint64_t), stream, "cudaMallocAsync(results)");

  // Merges read ids by row: the real ones, or the row numbers themselves for a shortlist.
  DeviceRows byId;
  byId.ids = snap.rows->ids.as<uint64_t>();
  byId.count = uint32_t(slots);
  byId.dim = uint32_t(p.dim);
  DeviceRows byRow = byId;
  byRow.ids = snap.rows->rowIds.as<uint64_t>();
  const SearchPlan keepPlan = mergePlan(chunk, keep);
  const SearchPlan finalPlan = refined ? mergePlan(chunk, sp.k) : keepPlan;

  IvfPqScanArgs args;
  args.lists = snap.table->as<IvfPqListView>();
  args.rotatedCentroids = model->rotatedCentroids->as<float>();
  args.codebooks = model->codebooks->as<float>();
  args.rowIds = refined ? byRow.ids : byId.ids;
  args.allow = allow;
  args.dim = uint32_t(p.dim);
  args.m = uint32_t(p.m);
  args.nbits = p.nbits;
  args.nprobe = uint32_t(nprobe);
  args.probesPerBlock = uint32_t(probesPerBlock);
  args.codeStride = uint32_t(s.codeStride);
  args.l2 = p.metric == Metric::L2;
  args.k = uint32_t(keep);
  args.plan = scanPlan;
  args.partKeys = partKeys.as<uint32_t>();
  args.partRows = partRows.as<uint32_t>();
  for (size_t q0 = 0; q0 < queryCount; q0 += chunk) {
    const size_t n = std::min(chunk, queryCount - q0);
    const float* chunkQueries = rawQueries.as<float>() + q0 * p.dim;
    args.queries = chunkQueries;
    if (model->rotation->bytes() > 0) {
      launchRotate(model->rotation->as<float>(), chunkQueries, rotated.as<float>(), n, uint32_t(p.dim), stream);
      EBRIX_LAUNCHED("rotate");
      args.queries = rotated.as<float>();
    }
    args.probeLists = lists.as<uint32_t>() + q0 * nprobe;
    args.probeScores = listScores.as<float>() + q0 * nprobe;
    launchIvfPqScan(args, n, stream);
    EBRIX_LAUNCHED("ivfpqScan");
    float* scores = outScores.as<float>() + q0 * sp.k;
    uint64_t* ids = outIds.as<uint64_t>() + q0 * sp.k;
    if (!refined) {
      mergeLists(byId, partKeys.as<uint32_t>(), partRows.as<uint32_t>(), groups * keep, n, keepPlan, keep, nullptr,
                 false, scores, ids, stream);
      continue;
    }
    mergeLists(byRow, partKeys.as<uint32_t>(), partRows.as<uint32_t>(), groups * keep, n, keepPlan, keep, nullptr,
               false, shortScores.as<float>(), shortRows.as<uint64_t>(), stream);
    launchRefine(shortRows.as<uint64_t>(), chunkQueries, n, uint32_t(keep), snap.rows->refine.get(),
                 p.refine == RefineStorage::F16, uint32_t(p.dim), uint32_t(s.refineStride), args.l2,
                 refinedKeys.as<uint32_t>(), refinedRows.as<uint32_t>(), stream);
    EBRIX_LAUNCHED("refine");
    mergeLists(byId, refinedKeys.as<uint32_t>(), refinedRows.as<uint32_t>(), keep, n, finalPlan, sp.k, nullptr, false,
               scores, ids, stream);
  }
  EBRIX_CUDA(cudaMemcpyAsync(out.scores.data(), outScores.as<float>(), queryCount * sp.k * sizeof(float),
                             cudaMemcpyDeviceToHost, stream));
  EBRIX_CUDA(cudaMemcpyAsync(out.ids.data(), outIds.as<uint64_t>(), queryCount * sp.k * sizeof(uint64_t),
                             cudaMemcpyDeviceToHost, stream));
  EBRIX_CUDA(cudaStreamSynchronize(stream));
  return out;
}

size_t GpuIvfPqIndex::deviceBytes() const {
  const Impl& s = *impl_;
  std::shared_ptr<const Impl::Model> model;
  const Impl::Snapshot snap = s.snapshot(&model);
  size_t bytes = s.listDeviceBytes(*snap.lists) + (snap.table ? snap.table->bytes() : 0);
  if (snap.rows) bytes += snap.rows->ids.bytes() + snap.rows->rowIds.bytes() + snap.rows->refine.bytes();
  if (snap.liveDevice) bytes += snap.liveDevice->bytes();
  if (model) {
    bytes += model->coarse->deviceBytes() + model->codebooks->bytes() + model->rotation->bytes() +
             model->rotatedCentroids->bytes();
  }
  return bytes;
}

}  // namespace ebrix::gpu
