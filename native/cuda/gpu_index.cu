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
#include <string>
#include <unordered_map>
#include <vector>

#include "error.h"
#include "flat.h"  // requireFinite
#include "gpu_testing.h"
#include "cuda_util.h"
#include "kernels.cuh"
#include "plan.h"
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
    size_t count = 0;
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
    rows.count = uint32_t(snap.count);
    rows.dim = uint32_t(dim);
    rows.stride = uint32_t(stride);
    rows.storage = storage;
    return rows;
  }

  // Checks the ids (all-or-nothing) and returns the new row count.
  size_t validateIds(const uint64_t* ids, size_t count, size_t existing) const {
    requireNewIds(ids, count, rowOfId);
    if (existing + count > kMaxRows) {
      throw Error(ErrorCode::InvalidArgument, "A flat index holds at most " + std::to_string(kMaxRows) + " vectors");
    }
    return existing + count;
  }

  // Returns the store that will hold newCount rows: the current one, or a larger copy.
  std::shared_ptr<Store> storeFor(const Snapshot& snap, size_t newCount, Context& context) {
    if (snap.store && snap.store->capacity >= newCount) return snap.store;
    const size_t old = snap.store ? snap.store->capacity : 0;
    const size_t capacity = std::max({newCount, old + old / 2, size_t(1024)});
    auto grown = std::make_shared<Store>(capacity, rowBytes, metric == Metric::L2);
    if (snap.count > 0) {
      EBRIX_CUDA(cudaMemcpyAsync(grown->vectors.get(), snap.store->vectors.get(), snap.count * rowBytes,
                                 cudaMemcpyDeviceToDevice, context.stream));
      EBRIX_CUDA(cudaMemcpyAsync(grown->ids.get(), snap.store->ids.get(), snap.count * sizeof(uint64_t),
                                 cudaMemcpyDeviceToDevice, context.stream));
      if (metric == Metric::L2) {
        EBRIX_CUDA(cudaMemcpyAsync(grown->bias.get(), snap.store->bias.get(), snap.count * sizeof(float),
                                   cudaMemcpyDeviceToDevice, context.stream));
      }
    }
    return grown;
  }

  void publish(const uint64_t* ids, size_t count, const Snapshot& snap, std::shared_ptr<Store> store) {
    // Rows past snap.count were invisible to every search until now.
    try {
      rowOfId.reserve(snap.count + count);
      for (size_t i = 0; i < count; ++i) rowOfId.emplace(ids[i], uint32_t(snap.count + i));
    } catch (const std::bad_alloc&) {
      for (size_t i = 0; i < count; ++i) rowOfId.erase(ids[i]);
      throw Error(ErrorCode::OutOfMemory, "Out of memory indexing the ids of " + std::to_string(count) + " vectors");
    }
    idMapBytes.store(rowOfId.bucket_count() * sizeof(void*) + rowOfId.size() * (sizeof(uint64_t) * 2 + sizeof(void*)),
                     std::memory_order_relaxed);
    std::lock_guard<std::mutex> lock(snapshotMutex);
    current = Snapshot{std::move(store), snap.count + count};
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
size_t GpuFlatIndex::size() const { return impl_->snapshot().count; }

void GpuFlatIndex::add(const uint64_t* ids, const float* vectors, size_t count) {
  if (count == 0) return;
  Impl& m = *impl_;
  std::lock_guard<std::mutex> writeLock(m.writeMutex);
  const Impl::Snapshot snap = m.snapshot();
  requireFinite(vectors, count, m.dim, "vectors");
  // The CPU index's rule: an f16 row must not round to infinity (it would poison every score).
  if (m.storage == Storage::F16 && m.metric != Metric::Cosine) requireF16Range(vectors, count, m.dim, "vectors");
  const size_t newCount = m.validateIds(ids, count, snap.count);
  std::vector<float> normalised;
  if (m.metric == Metric::Cosine) {
    normalised.resize(count * m.dim);
    normalizeRows(vectors, normalised.data(), count, m.dim);
    vectors = normalised.data();
  }

  EBRIX_CUDA(cudaSetDevice(m.device));
  ContextLease context(m.contexts);
  std::shared_ptr<Impl::Store> store = m.storeFor(snap, newCount, *context);
  // Upload in slices so a large add needs little staging memory.
  const size_t slice = std::max<size_t>(1, (size_t(64) << 20) / (m.dim * sizeof(float)));
  StreamBuffer staging(std::min(slice, count) * m.dim * sizeof(float), context->stream, "cudaMallocAsync(staging)");
  for (size_t done = 0; done < count; done += slice) {
    const size_t n = std::min(slice, count - done);
    EBRIX_CUDA(cudaMemcpyAsync(staging.as<float>(), vectors + done * m.dim, n * m.dim * sizeof(float),
                               cudaMemcpyHostToDevice, context->stream));
    const size_t row = snap.count + done;
    launchStoreRows(m.storage, staging.as<float>(), n, uint32_t(m.dim), uint32_t(m.stride),
                    store->vectors.as<char>() + row * m.rowBytes,
                    m.metric == Metric::L2 ? store->bias.as<float>() + row : nullptr, context->stream);
    EBRIX_LAUNCHED("storeRows");
  }
  EBRIX_CUDA(cudaMemcpyAsync(store->ids.as<uint64_t>() + snap.count, ids, count * sizeof(uint64_t),
                             cudaMemcpyHostToDevice, context->stream));
  EBRIX_CUDA(cudaStreamSynchronize(context->stream));
  m.publish(ids, count, snap, std::move(store));
}

void GpuFlatIndex::addRandomForTesting(size_t count, uint64_t seed, uint64_t firstId) {
  if (count == 0) return;
  Impl& m = *impl_;
  if (m.metric == Metric::Cosine) throw Error(ErrorCode::InvalidArgument, "random rows are not normalised");
  std::lock_guard<std::mutex> writeLock(m.writeMutex);
  const Impl::Snapshot snap = m.snapshot();
  std::vector<uint64_t> ids(count);
  for (size_t i = 0; i < count; ++i) ids[i] = firstId + i;
  const size_t newCount = m.validateIds(ids.data(), count, snap.count);
  EBRIX_CUDA(cudaSetDevice(m.device));
  ContextLease context(m.contexts);
  std::shared_ptr<Impl::Store> store = m.storeFor(snap, newCount, *context);
  launchRandomRows(m.storage, count, uint32_t(m.dim), uint32_t(m.stride), seed, snap.count,
                   store->vectors.as<char>() + snap.count * m.rowBytes,
                   m.metric == Metric::L2 ? store->bias.as<float>() + snap.count : nullptr, context->stream);
  EBRIX_LAUNCHED("randomRows");
  EBRIX_CUDA(cudaMemcpyAsync(store->ids.as<uint64_t>() + snap.count, ids.data(), count * sizeof(uint64_t),
                             cudaMemcpyHostToDevice, context->stream));
  EBRIX_CUDA(cudaStreamSynchronize(context->stream));
  m.publish(ids.data(), count, snap, std::move(store));
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
  if (queryCount == 0 || snap.count == 0) return out;

  std::vector<float> normalised;
  if (m.metric == Metric::Cosine) {
    normalised.resize(queryCount * m.dim);
    normalizeRows(queries, normalised.data(), queryCount, m.dim);
    queries = normalised.data();
  }

  PlanInput in;
  in.queries = queryCount;
  in.rows = snap.count;
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
  Allow allow;
  const size_t allowWords = std::min(options.allowWords, (snap.count + 31) / 32);
  StreamBuffer allowBits(options.allowBits != nullptr ? std::max<size_t>(allowWords, 1) * 4 : 0, stream,
                         "cudaMallocAsync(allow bitset)");
  if (options.allowBits != nullptr) {
    if (allowWords > 0) {
      EBRIX_CUDA(cudaMemcpyAsync(allowBits.as<uint32_t>(), options.allowBits, allowWords * 4, cudaMemcpyHostToDevice,
                                 stream));
    }
    allow.bits = allowBits.as<uint32_t>();
    allow.words = uint32_t(allowWords);
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
      for (size_t r0 = 0; r0 < snap.count; r0 += plan.rowTile, ++t) {
        const size_t rn = std::min(plan.rowTile, snap.count - r0);
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
  return snap.store->vectors.bytes() + snap.store->ids.bytes() + snap.store->bias.bytes();
}

size_t GpuFlatIndex::hostBytes() const { return impl_->idMapBytes.load(std::memory_order_relaxed); }

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
