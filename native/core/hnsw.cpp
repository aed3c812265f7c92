#include "hnsw.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

// SIMD inside usearch: off. usearch computes distances either with NumKong (its SIMD
// library, which would have to be compiled per ISA and dispatched at run time to be safe in
// a prebuilt binary) or with portable loops. Neither is used here: usearch's graph gets
// ebrix's own kernels as its metric (GraphMetric below), picked once per index by
// simd::kernelsFor, so the graph code is compiled for the baseline ISA only, distances run
// at the CPU's best level, EBRIX_SIMD forces a level for HNSW as for every other index, and
// nothing here can SIGILL on a plain x86-64. OpenMP stays off: inserts and searches run on
// ebrix's thread pool.
//
// usearch's graph (index_gt), not its index_dense_gt wrapper: the wrapper's key → slot hash
// set in usearch 2.25 keeps removed keys as tombstones it never reclaims at a fixed capacity,
// so after enough add / remove cycles every slot is a tombstone and lookups walk the whole
// table or spin forever (USearch issues #753 and #769, fixed after 2.25; 2.26 needs Node 22).
// Here the graph's keys are ebrix row numbers, the vectors live in one contiguous array by
// graph slot, a removed node is marked with kFreeKey and its slot reused by the next add
// (usearch's update()), and rows, slots and ids are mapped with plain arrays.
#define USEARCH_USE_NUMKONG 0
#define USEARCH_USE_OPENMP 0
#include <usearch/index_plugins.hpp>  // index_gt and its allocators

#include "aligned_buffer.h"
#include "attributes_file.h"
#include "error.h"
#include "index_file.h"
#include "flat.h"  // requireFinite, requireNewIds, requireDistinctIds, requireF16Range
#include "row_bits.h"
#include "simd/dispatch.h"
#include "thread_pool.h"
#include "topk.h"

namespace ebrix {
namespace {

namespace us = unum::usearch;
using Graph = us::index_gt<float, uint64_t, uint32_t, us::aligned_allocator_gt<us::byte_t, 64>,
                           us::memory_mapping_allocator_gt<64>>;
using MemberRef = Graph::member_ref_t;
using MemberCref = Graph::member_cref_t;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr size_t kMinCapacity = 1024;
// The key of a removed node (rows are below 2^32, so no row has it).
constexpr uint64_t kFreeKey = std::numeric_limits<uint64_t>::max();
constexpr uint32_t kNoSlot = std::numeric_limits<uint32_t>::max();
// 16-bit rows are widened this many elements at a time, on the stack.
constexpr size_t kWidenChunk = 256;

std::string str(size_t v) { return std::to_string(v); }

void normalizeInto(const float* src, float* dst, size_t dim) {
  double sum = 0.0;
  for (size_t i = 0; i < dim; ++i) sum += static_cast<double>(src[i]) * src[i];
  // A zero vector stays zero: its cosine with anything is scored 0 (as FlatIndex).
  const float scale = sum > 0.0 ? static_cast<float>(1.0 / std::sqrt(sum)) : 0.0f;
  for (size_t i = 0; i < dim; ++i) dst[i] = src[i] * scale;
}

// A distance is lower-is-better: ip and cosine give -dot (not 1 - dot, so that the score is
// read back exactly as -distance) and l2 gives |a - b|^2. usearch's HNSW only compares
// distances, so negative ones are fine.
struct DistanceState {
  size_t dim = 0;
  float (*dot)(const float*, const float*, size_t) = nullptr;
  float (*l2sq)(const float*, const float*, size_t) = nullptr;
  const simd::Kernels16* half = nullptr;  // 16-bit storage
};

struct NegDotF32 {
  static float distance(const void* a, const void* b, const DistanceState& s) {
    return -s.dot(static_cast<const float*>(a), static_cast<const float*>(b), s.dim);
  }
};

struct L2F32 {
  static float distance(const void* a, const void* b, const DistanceState& s) {
    return s.l2sq(static_cast<const float*>(a), static_cast<const float*>(b), s.dim);
  }
};

// Both sides of a 16-bit distance are stored rows (or a query rounded the same way); ebrix's
// 16-bit kernels take one float side, so one side is widened a chunk at a time on the stack
// (no allocation, no thread-local lookup per distance).
template <bool kL2>
struct Half16 {
  static float distance(const void* a, const void* b, const DistanceState& s) {
    const auto* x = static_cast<const uint16_t*>(a);
    const auto* y = static_cast<const uint16_t*>(b);
    float wide[kWidenChunk];
    float sum = 0.0f;
    for (size_t off = 0; off < s.dim; off += kWidenChunk) {
      const size_t n = std::min(kWidenChunk, s.dim - off);
      s.half->toFloat(x + off, wide, n);
      sum += kL2 ? s.half->l2sq(wide, y + off, n) : s.half->dot(wide, y + off, n);
    }
    return kL2 ? sum : -sum;
  }
};

// The metric usearch's templates call: a value (a query or a vector being inserted, as stored)
// against a graph member, or two members; members are looked up by slot in the vector array.
// Built per operation under the gate, so `vectors` is the array of the moment.
template <class Kernel>
struct GraphMetric {
  const uint8_t* vectors;
  size_t stride;
  const DistanceState* state;

  const void* at(const uint8_t* value) const { return value; }
  template <class Member>
  const void* at(const Member& member) const {
    return vectors + get_slot(member) * stride;
  }
  template <class A, class B>
  float operator()(const A& a, const B& b) const {
    return Kernel::distance(at(a), at(b), *state);
  }
};

// A reader-writer gate that admits no new reader while a writer waits. Searches and the
// insert phase of an add are readers; growing the graph and removing are writers.
// std::shared_mutex is glibc's reader-preferring rwlock, under which a steady stream of
// overlapping searches could keep a growing add waiting forever. No thread takes the gate
// twice, so admitting the writer first cannot deadlock.
class Gate {
 public:
  void lock_shared() {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [&] { return !writer_ && writersWaiting_ == 0; });
    ++readers_;
  }
  void unlock_shared() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (--readers_ == 0 && writersWaiting_ > 0) cv_.notify_all();
  }
  void lock() {
    std::unique_lock<std::mutex> lock(mutex_);
    ++writersWaiting_;
    cv_.wait(lock, [&] { return !writer_ && readers_ == 0; });
    --writersWaiting_;
    writer_ = true;
  }
  void unlock() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      writer_ = false;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  size_t readers_ = 0;
  size_t writersWaiting_ = 0;
  bool writer_ = false;
};

struct SharedGate {
  explicit SharedGate(Gate& g) : gate(g) { gate.lock_shared(); }
  ~SharedGate() { gate.unlock_shared(); }
  Gate& gate;
};

// usearch keeps per-thread state (visited set, candidate heaps, level generator) in
// "contexts" named by a thread id below the reserved thread count; two threads must never
// share one. The threads calling in here are not bounded (pool workers, libuv threads, the
// main thread), so contexts are leased: a task takes one for one insert or one query and
// waits when none is free. A task never holds two, so waiting cannot deadlock.
class ContextPool {
 public:
  explicit ContextPool(size_t count) {
    free_.reserve(count);
    for (size_t i = count; i > 0; --i) free_.push_back(i - 1);
  }
  size_t acquire() {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [&] { return !free_.empty(); });
    const size_t id = free_.back();
    free_.pop_back();
    return id;
  }
  void release(size_t id) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      free_.push_back(id);
    }
    cv_.notify_one();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<size_t> free_;
};

struct ContextLease {
  explicit ContextLease(ContextPool& p) : pool(p), id(p.acquire()) {}
  ~ContextLease() { pool.release(id); }
  ContextPool& pool;
  const size_t id;
};

// usearch reports failures as error_t, whose destructor throws unless the message is taken.
template <class Result>
[[noreturn]] void throwUsearch(Result& result, const char* what) {
  const char* message = result.error.release();
  const std::string text = message ? message : "unknown error";
  const ErrorCode code = text.find("emory") != std::string::npos ? ErrorCode::OutOfMemory : ErrorCode::Internal;
  throw Error(code, std::string("usearch ") + what + " failed: " + text);
}

}  // namespace

struct HnswIndex::Impl {
  HnswParams params;
  const simd::Kernels* kernels;
  unsigned threadsOption;  // as given: 0 follows the pool
  DistanceState distance;
  size_t stride;         // bytes per stored vector
  size_t contextCount;   // usearch thread contexts
  mutable ContextPool contexts;
  mutable Gate gate;
  Graph graph;

  // Resized only under the exclusive gate; searches read them under the shared one.
  AlignedBuffer<uint8_t> vectors;  // by graph slot, stride bytes each
  // The vectors searches read: vectors.data(), or a mapped file's vectors section.
  const uint8_t* vectorBase = nullptr;
  // Set while the graph and the vectors are viewed in a mapped file (open with map): usearch's
  // viewed graph is read-only, so the first write copies both into memory (materialize()).
  std::shared_ptr<const IndexFile> mappedFile;
  const uint8_t* graphView = nullptr;  // the mapped graph section, for materialize()
  size_t graphViewBytes = 0;
  std::atomic<size_t> mappedBytes{0};  // read without writeMutex: memoryUsage() must not wait for a save
  std::vector<uint64_t> idOfRow;   // row → id
  std::vector<uint32_t> slotOfRow; // row → graph slot, kNoSlot once removed

  mutable std::mutex writeMutex;  // serialises writers (add, upsert, remove, compact, save); guards freeSlots
  std::vector<uint32_t> freeSlots;  // removed nodes (key kFreeKey), reused by later adds
  std::atomic<size_t> freeCount{0};  // freeSlots.size(), for searches
  std::atomic<size_t> rowCount{0};   // rows numbered so far (published when an add completes)

  mutable std::mutex idsMutex;  // guards rowOfId for readers; writers also hold writeMutex
  std::unordered_map<uint64_t, uint32_t> rowOfId;
  std::atomic<size_t> live{0};
  std::atomic<size_t> memoryBytes{0};

  Impl(const HnswParams& p, simd::Level level, unsigned t)
      : params(p),
        kernels(&simd::kernelsFor(level)),
        threadsOption(t),
        stride(p.dim * (p.storage == simd::Element::F32 ? sizeof(float) : sizeof(uint16_t))),
        // Room for every pool thread, the libuv threads and the main thread to run at once;
        // beyond that a task waits for a context (ContextPool).
        contextCount(2 * ThreadPool::hardwareThreads() + 8),
        contexts(contextCount),
        graph(us::index_config_t(p.connectivity < 2 ? 2 : p.connectivity)) {
    if (p.dim == 0) throw Error(ErrorCode::InvalidArgument, "Expected a positive integer for dim but received 0");
    if (p.connectivity < 2 || p.connectivity > 1024) {
      throw Error(ErrorCode::InvalidArgument,
                  "Expected connectivity from 2 to 1024 but received " + str(p.connectivity));
    }
    if (p.expansionAdd == 0 || p.expansionSearch == 0) {
      throw Error(ErrorCode::InvalidArgument, "Expected positive expansionAdd and expansionSearch");
    }
    distance.dim = p.dim;
    distance.dot = kernels->dot;
    distance.l2sq = kernels->l2sq;
    if (p.storage == simd::Element::F16) distance.half = &kernels->f16;
    if (p.storage == simd::Element::BF16) distance.half = &kernels->bf16;
    refreshMemory();
  }

  // Runs fn(metric) with the metric of this index's storage and scoring: the choice is made
  // once per operation, and usearch's templates are compiled for each.
  template <class Fn>
  void withMetric(Fn&& fn) const {
    withMetricAt(vectorBase, fn);
  }
  // The same over another vector array (a graph being rebuilt).
  template <class Fn>
  void withMetricAt(const uint8_t* base, Fn&& fn) const {
    const bool l2 = params.metric == Metric::L2;
    if (params.storage == simd::Element::F32) {
      if (l2) fn(GraphMetric<L2F32>{base, stride, &distance});
      else fn(GraphMetric<NegDotF32>{base, stride, &distance});
    } else {
      if (l2) fn(GraphMetric<Half16<true>>{base, stride, &distance});
      else fn(GraphMetric<Half16<false>>{base, stride, &distance});
    }
  }

  void requireStorable(const float* vectors, size_t count, const char* what) const {
    // As FlatIndex: cosine rows are normalised first and bf16 has float's range.
    if (params.storage == simd::Element::F16 && params.metric != Metric::Cosine) {
      requireF16Range(vectors, count, params.dim, what);
    }
  }

  // The vectors as the index stores them: normalised for cosine, rounded to 16 bits for f16 /
  // bf16 storage. Returns `vectors` itself when nothing changes.
  const uint8_t* prepare(const float* input, size_t count, std::vector<float>& floats,
                         std::vector<uint16_t>& halves) const {
    const size_t dim = params.dim;
    const float* src = input;
    if (params.metric == Metric::Cosine) {
      floats.resize(count * dim);
      for (size_t i = 0; i < count; ++i) normalizeInto(input + i * dim, floats.data() + i * dim, dim);
      src = floats.data();
    }
    if (params.storage == simd::Element::F32) return reinterpret_cast<const uint8_t*>(src);
    halves.resize(count * dim);
    distance.half->fromFloat(src, halves.data(), count * dim);
    return reinterpret_cast<const uint8_t*>(halves.data());
  }

  // Grows the graph's node capacity, the vector array and the row tables under the exclusive
  // gate (usearch's reserve reallocates the node array and the thread contexts that searches
  // use). Geometric, so an index built by many small adds reallocates O(log n) times.
  void ensureCapacity(size_t nodesNeeded, size_t rowsNeeded) {
    if (nodesNeeded <= graph.capacity() && rowsNeeded <= idOfRow.size()) return;
    std::lock_guard<Gate> exclusive(gate);
    try {
      if (nodesNeeded > graph.capacity()) {
        const size_t capacity = std::max({nodesNeeded, 2 * graph.capacity(), kMinCapacity});
        AlignedBuffer<uint8_t> grown(capacity * stride);
        if (graph.size() > 0) std::memcpy(grown.data(), vectorBase, graph.size() * stride);
        if (!graph.reserve(us::index_limits_t(capacity, contextCount))) throw std::bad_alloc();
        vectors = std::move(grown);
        vectorBase = vectors.data();
      }
      if (rowsNeeded > idOfRow.size()) {
        const size_t rows = std::max({rowsNeeded, 2 * idOfRow.size(), kMinCapacity});
        idOfRow.resize(rows, 0);
        slotOfRow.resize(rows, kNoSlot);
      }
    } catch (const std::bad_alloc&) {
      throw Error(ErrorCode::OutOfMemory, "Out of memory growing the index to " + str(nodesNeeded) + " vectors");
    }
  }

  // Called with writeMutex held and no add in its insert phase, so no usearch allocation runs
  // concurrently. usearch's memory_usage() walks every node; its tape allocator's counters
  // give the nodes (levels and neighbour lists) in O(1): the arenas it mapped, less the tail
  // of the last one that no node has reached (the first arena alone is 8 MiB of address
  // space, most of it never touched in a small index). The node pointer array is added.
  void write(const uint64_t* ids, const float* vectors, size_t count, const WriteHook& hook, unsigned threads,
             bool upsert);

  // A mapped index's graph and vectors copied into memory, before a write (writeMutex held).
  // The copy is made while searches run on the mapping; they move to it in one step.
  void materialize();

  void refreshMemory() {
    const auto& tape = graph.tape_allocator();
    size_t bytes = tape.total_allocated() - tape.total_reserved() + graph.capacity() * sizeof(void*);
    bytes += mappedFile ? 0 : vectors.size();
    bytes += idOfRow.capacity() * sizeof(uint64_t) + slotOfRow.capacity() * sizeof(uint32_t);
    bytes += freeSlots.capacity() * sizeof(uint32_t);
    bytes += rowOfId.size() * (sizeof(uint64_t) + sizeof(uint32_t) + 2 * sizeof(void*)) +
             rowOfId.bucket_count() * sizeof(void*);
    memoryBytes.store(bytes, std::memory_order_relaxed);
  }
};

HnswIndex::HnswIndex(const HnswParams& params, simd::Level level, unsigned threads)
    : impl_(std::make_unique<Impl>(params, level, threads)) {}

HnswIndex::~HnswIndex() = default;

const HnswParams& HnswIndex::params() const { return impl_->params; }
size_t HnswIndex::dim() const { return impl_->params.dim; }
simd::Level HnswIndex::level() const { return impl_->kernels->level; }
unsigned HnswIndex::threads() const { return ThreadPool::shared().resolve(impl_->threadsOption); }
size_t HnswIndex::size() const { return impl_->live.load(std::memory_order_relaxed); }
size_t HnswIndex::memoryBytes() const { return impl_->memoryBytes.load(std::memory_order_relaxed); }

bool HnswIndex::contains(uint64_t id) const {
  std::lock_guard<std::mutex> lock(impl_->idsMutex);
  return impl_->rowOfId.count(id) != 0;
}

void HnswIndex::rowsOf(const uint64_t* ids, size_t count, int64_t* rows) const {
  std::lock_guard<std::mutex> lock(impl_->idsMutex);
  for (size_t i = 0; i < count; ++i) {
    const auto it = impl_->rowOfId.find(ids[i]);
    rows[i] = it == impl_->rowOfId.end() ? -1 : static_cast<int64_t>(it->second);
  }
}

void HnswIndex::add(const uint64_t* ids, const float* vectors, size_t count, const WriteHook& hook,
                    unsigned threads) {
  impl_->write(ids, vectors, count, hook, threads, false);
}

void HnswIndex::upsert(const uint64_t* ids, const float* vectors, size_t count, const WriteHook& hook,
                       unsigned threads) {
  impl_->write(ids, vectors, count, hook, threads, true);
}

void HnswIndex::Impl::write(const uint64_t* ids, const float* vectors, size_t count, const WriteHook& hook,
                            unsigned threads, bool upsert) {
  if (count == 0) return;
  Impl& m = *this;
  std::lock_guard<std::mutex> write(m.writeMutex);
  m.materialize();

  // Validate everything before touching the index.
  requireFinite(vectors, count, m.params.dim, "vectors");
  m.requireStorable(vectors, count, "vectors");
  // An upsert's held ids and the rows they had: removed when the new rows publish.
  std::vector<std::pair<uint64_t, uint32_t>> replaced;
  if (upsert) {
    requireDistinctIds(ids, count);
    for (size_t i = 0; i < count; ++i) {
      const auto it = m.rowOfId.find(ids[i]);
      if (it != m.rowOfId.end()) replaced.emplace_back(ids[i], it->second);
    }
  } else {
    requireNewIds(ids, count, m.rowOfId);
  }
  const size_t base = m.rowCount.load(std::memory_order_relaxed);
  if (base + count > kMaxRows) {
    throw Error(ErrorCode::InvalidArgument, "An HNSW index numbers at most " + str(kMaxRows) + " rows over its life");
  }

  std::vector<float> floats;
  std::vector<uint16_t> halves;
  const uint8_t* prepared;
  try {
    prepared = m.prepare(vectors, count, floats, halves);
    m.rowOfId.reserve(m.rowOfId.size() + count);
    m.freeSlots.reserve(m.freeSlots.size() + replaced.size());
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::OutOfMemory, "Out of memory preparing " + str(count) + " vectors");
  }
  // The first `reused` vectors take the nodes of removed ones; the rest become new nodes.
  const size_t reused = std::min(count, m.freeSlots.size());
  const uint32_t* reusedSlots = m.freeSlots.data() + m.freeSlots.size() - reused;
  m.ensureCapacity(m.graph.size() + count - reused, base + count);
  // Atomic: a search may reach a row of this add through the graph while the add runs, and
  // usearch publishes nodes without a fence the reader takes (see the TSan suppressions).
  for (size_t i = 0; i < count; ++i) __atomic_store_n(&m.idOfRow[base + i], ids[i], __ATOMIC_RELEASE);
  if (reused > 0) {
    // A removed node still routes searches and inserts, which read its vector; the new one
    // replaces it while none runs. The node keeps kFreeKey (no search returns it) until
    // update() has relinked it around the new vector and given it its row.
    std::lock_guard<Gate> exclusive(m.gate);
    for (size_t i = 0; i < reused; ++i) {
      std::memcpy(m.vectors.data() + size_t{reusedSlots[i]} * m.stride, prepared + i * m.stride, m.stride);
      m.slotOfRow[base + i] = reusedSlots[i];
    }
  }

  // Insert on the pool, as a reader: searches keep running (usearch's graph takes per-node
  // locks so that inserts and searches can run at once). They do not return these rows, which
  // are past the row count they read, until the rows publish below.
  std::vector<uint8_t> inserted(count, 0);
  bool mapped = false;
  const auto restoreMap = [&] {
    std::lock_guard<std::mutex> lock(m.idsMutex);
    for (size_t i = 0; i < count; ++i) m.rowOfId.erase(ids[i]);
    for (const auto& [id, row] : replaced) m.rowOfId.emplace(id, row);
  };
  try {
    {
      SharedGate shared(m.gate);
      const unsigned parallelism = ThreadPool::shared().resolve(threads == 0 ? m.threadsOption : threads);
      m.withMetric([&](const auto& metric) {
        ThreadPool::shared().parallelFor(count, parallelism, [&](size_t i, unsigned) {
          ContextLease context(m.contexts);
          const uint64_t row = base + i;
          const uint8_t* vector = prepared + i * m.stride;
          us::index_update_config_t config;
          config.expansion = m.params.expansionAdd;
          config.thread = context.id;
          if (i < reused) {
            auto result = m.graph.update(m.graph.iterator_at(reusedSlots[i]), row, vector, metric, config);
            if (result.error) throwUsearch(result, "insert");
          } else {
            // The callback runs once the node exists and before any link reaches it.
            auto result = m.graph.add(row, vector, metric, config, [&](MemberRef member) {
              std::memcpy(m.vectors.data() + member.slot * m.stride, vector, m.stride);
              m.slotOfRow[row] = static_cast<uint32_t>(member.slot);
            });
            if (result.error) throwUsearch(result, "insert");
          }
          inserted[i] = 1;
        });
      });
    }
    // Publish. An upsert's new rows and the removal of the rows they replace go together, and
    // with the id map, under the exclusive gate: a search sees both or neither. An add needs no
    // gate: a search that read the old row count returns none of its rows, and its ids are new.
    std::unique_lock<Gate> exclusive(m.gate, std::defer_lock);
    if (!replaced.empty()) exclusive.lock();
    {
      std::lock_guard<std::mutex> lock(m.idsMutex);
      mapped = true;
      for (size_t i = 0; i < count; ++i) m.rowOfId.insert_or_assign(ids[i], static_cast<uint32_t>(base + i));
    }
    if (hook) hook(base);
    for (const auto& [id, row] : replaced) {
      const uint32_t slot = m.slotOfRow[row];
      m.graph.at(slot).key = kFreeKey;
      m.slotOfRow[row] = kNoSlot;
      m.freeSlots.push_back(slot);  // reserved above
    }
    // The reused nodes leave the free list; the replaced ones joined it at its end.
    m.freeSlots.erase(m.freeSlots.end() - static_cast<std::ptrdiff_t>(replaced.size() + reused),
                      m.freeSlots.end() - static_cast<std::ptrdiff_t>(replaced.size()));
    m.freeCount.store(m.freeSlots.size(), std::memory_order_relaxed);
    m.rowCount.store(base + count, std::memory_order_release);
  } catch (...) {
    // All or nothing: the ids of the map were put back; the nodes that went in are marked
    // removed and kept for reuse, with the reused ones (whose update may have stopped half
    // way, still keyed kFreeKey). Nothing after the hook throws, so no replaced row was
    // removed yet.
    if (mapped) restoreMap();
    std::lock_guard<Gate> exclusive(m.gate);
    // (reusedSlots points into freeSlots: read before the pushes below may move it.)
    for (size_t i = 0; i < reused; ++i) m.graph.at(reusedSlots[i]).key = kFreeKey;
    for (size_t i = reused; i < count; ++i) {
      if (!inserted[i]) continue;
      const uint32_t slot = m.slotOfRow[base + i];
      m.graph.at(slot).key = kFreeKey;
      m.freeSlots.push_back(slot);
    }
    for (size_t i = 0; i < count; ++i) m.slotOfRow[base + i] = kNoSlot;
    m.freeCount.store(m.freeSlots.size(), std::memory_order_relaxed);
    throw;
  }

  m.live.fetch_add(count - replaced.size(), std::memory_order_relaxed);
  m.refreshMemory();
}

void HnswIndex::get(uint64_t id, float* out) const {
  const Impl& m = *impl_;
  uint32_t row;
  {
    std::lock_guard<std::mutex> lock(m.idsMutex);
    const auto it = m.rowOfId.find(id);
    if (it == m.rowOfId.end()) {
      throw Error(ErrorCode::UnknownId, "Expected an id in the index but received unknown id " + std::to_string(id));
    }
    row = it->second;
  }
  // Under the shared gate: the vector array and the row's slot stay put.
  SharedGate shared(m.gate);
  const uint32_t slot = m.slotOfRow[row];
  if (slot == kNoSlot) {
    throw Error(ErrorCode::UnknownId, "Expected an id in the index but received unknown id " + std::to_string(id));
  }
  const uint8_t* stored = m.vectorBase + size_t{slot} * m.stride;
  if (m.params.storage == simd::Element::F32) {
    std::memcpy(out, stored, m.params.dim * sizeof(float));
  } else {
    m.distance.half->toFloat(reinterpret_cast<const uint16_t*>(stored), out, m.params.dim);
  }
}

size_t HnswIndex::remove(const uint64_t* ids, size_t count) {
  if (count == 0) return 0;
  Impl& m = *impl_;
  std::lock_guard<std::mutex> write(m.writeMutex);

  // As FlatIndex and IvfPqIndex: ids not held are skipped, a repeated id counts once.
  std::vector<uint64_t> found;
  std::vector<uint32_t> rows;
  {
    std::unordered_set<uint64_t> seen;
    for (size_t i = 0; i < count; ++i) {
      const auto it = m.rowOfId.find(ids[i]);
      if (it == m.rowOfId.end() || !seen.insert(ids[i]).second) continue;
      found.push_back(ids[i]);
      rows.push_back(it->second);
    }
  }
  if (found.empty()) return 0;
  m.materialize();
  count = found.size();
  try {
    m.freeSlots.reserve(m.freeSlots.size() + count);
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::OutOfMemory, "Out of memory removing " + str(count) + " vectors");
  }
  {
    // Exclusive: searches read node keys without locks, and none that starts after this
    // returns may see a removed id. The node stays in the graph (its links still route
    // searches) until an add reuses it.
    std::lock_guard<Gate> exclusive(m.gate);
    for (const uint32_t row : rows) {
      const uint32_t slot = m.slotOfRow[row];
      m.graph.at(slot).key = kFreeKey;
      m.slotOfRow[row] = kNoSlot;
      m.freeSlots.push_back(slot);
    }
  }
  {
    std::lock_guard<std::mutex> lock(m.idsMutex);
    for (const uint64_t id : found) m.rowOfId.erase(id);
  }
  m.freeCount.store(m.freeSlots.size(), std::memory_order_relaxed);
  m.live.fetch_sub(count, std::memory_order_relaxed);
  m.refreshMemory();
  return count;
}

SearchOutput HnswIndex::search(const float* queries, size_t queryCount, const HnswSearchParams& sp) const {
  const Impl& m = *impl_;
  const size_t k = sp.k;
  if (k == 0) throw Error(ErrorCode::InvalidArgument, "Expected a positive integer for k but received 0");
  requireFinite(queries, queryCount, m.params.dim, "queries");
  m.requireStorable(queries, queryCount, "queries");

  SearchOutput out;
  out.queries = queryCount;
  out.k = k;
  out.ids.assign(queryCount * k, kNoId);
  out.scores.assign(queryCount * k, kNegInf);
  if (queryCount == 0) return out;

  std::vector<float> floats;
  std::vector<uint16_t> halves;
  const uint8_t* prepared = m.prepare(queries, queryCount, floats, halves);
  const size_t ef = std::max(k, sp.expansion == 0 ? m.params.expansionSearch : sp.expansion);
  const uint32_t* bits = sp.allowBits;
  size_t words = sp.allowWords;

  SharedGate shared(m.gate);
  const size_t rows = m.rowCount.load(std::memory_order_acquire);
  // The filter runs on this state: under the shared gate no upsert or remove publishes, and
  // rows past `rows` (an add in flight) are not returned whatever the filter says.
  std::vector<uint32_t> filtered;
  if (sp.rowFilter != nullptr) {
    filtered = (*sp.rowFilter)([&m](uint64_t id, uint32_t* row) {
      std::lock_guard<std::mutex> lock(m.idsMutex);
      const auto it = m.rowOfId.find(id);
      if (it == m.rowOfId.end()) return false;
      *row = it->second;
      return true;
    });
    if (bits != nullptr) filtered = andBits(filtered.data(), filtered.size(), bits, words);
    static const uint32_t kNone = 0;
    bits = filtered.empty() ? &kNone : filtered.data();
    words = filtered.size();
  }

  // A filtered graph walk keeps expanding until its list holds ef allowed rows: with a
  // fraction s of rows allowed it computes about ef / s distances, against allowedCount for
  // scoring the allowed rows directly. The direct scan wins when allowedCount^2 <= ef × live,
  // and it is exact.
  std::vector<uint32_t> allowedRows;
  bool direct = false;
  if (bits != nullptr) {
    size_t allowedCount = 0;
    const size_t usedWords = std::min(words, (rows + 31) / 32);
    const auto word = [&](size_t w) {
      // Bits past the last numbered row are not rows yet.
      return w == rows / 32 ? bits[w] & ((1u << (rows % 32)) - 1u) : bits[w];
    };
    for (size_t w = 0; w < usedWords; ++w) allowedCount += static_cast<size_t>(__builtin_popcount(word(w)));
    if (allowedCount == 0) return out;
    const double live = static_cast<double>(m.live.load(std::memory_order_relaxed));
    direct = sp.filterStrategy == HnswFilter::Scan ||
             (sp.filterStrategy == HnswFilter::Auto &&
              static_cast<double>(allowedCount) * static_cast<double>(allowedCount) <= static_cast<double>(ef) * live);
    if (direct) {
      allowedRows.reserve(allowedCount);
      for (size_t w = 0; w < usedWords; ++w) {
        for (uint32_t b = word(w); b != 0; b &= b - 1) {
          allowedRows.push_back(static_cast<uint32_t>(w * 32 + static_cast<size_t>(__builtin_ctz(b))));
        }
      }
    }
  }
  // Removed nodes stay in the graph under kFreeKey (above every row) until reused, and the
  // rows of a write in flight are at or past `rows`: neither is returned. The walk always
  // takes this predicate, so that a search reads the state published when it began.
  const auto admit = [bits, words, rows](const MemberCref& member) noexcept {
    const uint64_t row = member.key;
    return row < rows && (bits == nullptr || ((row >> 5) < words && ((bits[row >> 5] >> (row & 31)) & 1u) != 0));
  };

  const size_t rowTable = m.idOfRow.size();
  const unsigned parallelism = ThreadPool::shared().resolve(sp.threads == 0 ? m.threadsOption : sp.threads);
  m.withMetric([&](const auto& metric) {
    ThreadPool::shared().parallelFor(queryCount, parallelism, [&](size_t q, unsigned) {
      const uint8_t* query = prepared + q * m.stride;
      uint64_t* ids = out.ids.data() + q * k;
      float* scores = out.scores.data() + q * k;
      if (direct) {
        TopKCollector top;
        top.reset(k);
        for (const uint32_t row : allowedRows) {
          const uint32_t slot = m.slotOfRow[row];
          if (slot == kNoSlot) continue;  // removed
          top.offer(0.0f - metric(query, MemberCref{nullptr, slot}), row, m.idOfRow[row]);
        }
        std::vector<Candidate> best;
        top.drainInto(best);
        selectBest(best, k);
        for (size_t i = 0; i < best.size(); ++i) {
          ids[i] = best[i].id;
          scores[i] = best[i].score;
        }
        return;
      }
      ContextLease context(m.contexts);
      us::index_search_config_t config;
      config.thread = context.id;
      config.expansion = ef;
      auto result = m.graph.search(query, k, metric, config, admit);
      if (result.error) throwUsearch(result, "search");
      size_t n = 0;
      for (size_t i = 0; i < result.count; ++i) {
        const auto match = result[i];
        const uint64_t row = match.member.key;
        // A node reused by an add running now may change key between the walk and here.
        if (row >= rowTable) continue;
        ids[n] = __atomic_load_n(&m.idOfRow[row], __ATOMIC_ACQUIRE);
        scores[n] = 0.0f - match.distance;  // +0, not -0, for an exact match
        ++n;
      }
    });
  });
  return out;
}

// --- compaction and materialising a mapped index ------------------------------------------

void HnswIndex::Impl::materialize() {
  if (!mappedFile) return;
  const uint8_t* at = graphView;
  size_t left = graphViewBytes;
  const size_t nodes = graph.size();
  Graph copy(us::index_config_t(params.connectivity));
  AlignedBuffer<uint8_t> own;
  try {
    // Contexts for every lessee (load_from_stream keeps the thread count reserved before it).
    if (!copy.reserve(us::index_limits_t(0, contextCount))) throw std::bad_alloc();
    auto result = copy.load_from_stream([&](void* buffer, size_t length) {
      if (length > left) return false;
      std::memcpy(buffer, at, length);
      at += length;
      left -= length;
      return true;
    });
    if (!result) throwUsearch(result, "load");
    own = AlignedBuffer<uint8_t>(std::max(nodes, kMinCapacity) * stride);
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::OutOfMemory, "Out of memory copying a mapped index of " + str(nodes) + " vectors into memory");
  }
  if (nodes > 0) std::memcpy(own.data(), vectorBase, nodes * stride);
  {
    std::lock_guard<Gate> exclusive(gate);
    graph.swap(copy);
    vectors = std::move(own);
    vectorBase = vectors.data();
    mappedFile.reset();
    graphView = nullptr;
    graphViewBytes = 0;
    mappedBytes.store(0, std::memory_order_relaxed);
  }
  refreshMemory();
}

size_t HnswIndex::compact(unsigned threads) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> write(m.writeMutex);
  const size_t dropped = m.freeSlots.size();
  if (dropped == 0) return 0;
  const size_t rows = m.rowCount.load(std::memory_order_relaxed);
  const size_t live = m.graph.size() - dropped;
  // The live rows in row order take slots 0 .. live-1 of the new graph.
  std::vector<uint32_t> liveRows;
  std::vector<uint32_t> slots;
  Graph rebuilt(us::index_config_t(m.params.connectivity));
  AlignedBuffer<uint8_t> packed;
  try {
    liveRows.reserve(live);
    slots.assign(m.slotOfRow.begin(), m.slotOfRow.end());
    for (size_t r = 0; r < rows; ++r) {
      if (m.slotOfRow[r] != kNoSlot) liveRows.push_back(static_cast<uint32_t>(r));
    }
    const size_t capacity = std::max(live, kMinCapacity);
    packed = AlignedBuffer<uint8_t>(capacity * m.stride);
    if (!rebuilt.reserve(us::index_limits_t(capacity, m.contextCount))) throw std::bad_alloc();
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::OutOfMemory, "Out of memory compacting an index of " + str(live) + " vectors");
  }
  // Insert in row order (one thread: slot i is row liveRows[i]'s). The inserted vectors are
  // read where they are now, which needs no gate: only writers change them, and they wait.
  // usearch calls back once a node exists and before any link reaches it, and the vector is
  // placed at its slot then.
  const unsigned parallelism = ThreadPool::shared().resolve(threads == 0 ? m.threadsOption : threads);
  m.withMetricAt(packed.data(), [&](const auto& metric) {
    ThreadPool::shared().parallelFor(liveRows.size(), parallelism, [&](size_t i, unsigned) {
      ContextLease context(m.contexts);
      const uint32_t row = liveRows[i];
      const uint8_t* vector = m.vectorBase + size_t{m.slotOfRow[row]} * m.stride;
      us::index_update_config_t config;
      config.expansion = m.params.expansionAdd;
      config.thread = context.id;
      auto result = rebuilt.add(row, vector, metric, config, [&](MemberRef member) {
        std::memcpy(packed.data() + member.slot * m.stride, vector, m.stride);
        slots[row] = static_cast<uint32_t>(member.slot);
      });
      if (result.error) throwUsearch(result, "insert");
    });
  });
  {
    std::lock_guard<Gate> exclusive(m.gate);
    m.graph.swap(rebuilt);
    m.vectors = std::move(packed);
    m.vectorBase = m.vectors.data();
    m.slotOfRow.swap(slots);
    m.freeSlots.clear();
    m.freeCount.store(0, std::memory_order_relaxed);
    m.mappedFile.reset();
    m.graphView = nullptr;
    m.graphViewBytes = 0;
    m.mappedBytes.store(0, std::memory_order_relaxed);
  }
  m.refreshMemory();
  return dropped;
}

size_t HnswIndex::mappedBytes() const { return impl_->mappedBytes.load(std::memory_order_relaxed); }

// --- the file ----------------------------------------------------------------------------
//
// An HNSW index file (index_file.h, type Hnsw) has these sections, little-endian:
//   1 meta      u32 dim, u32 metric (0 ip, 1 cosine, 2 l2), u32 storage (0 f32, 1 f16,
//               2 bf16), u32 connectivity, u32 expansionAdd, u32 expansionSearch, u64 rows
//               (numbered over the index's life, removed ones included), u64 nodes (graph
//               slots), u64 live (vectors held), u32 modelVersion bytes, u32 zero, then the
//               model version id as UTF-8
//   2 ids       rows u64: the id of each row (a removed row's id is kept but means nothing)
//   3 slots     rows u32: the graph slot of each row; 0xFFFFFFFF marks a removed row (the
//               tombstones: a removed row never comes back, and its id may be held again
//               by a later row)
//   4 vectors   nodes × dim elements of the storage type (f32, or f16 / bf16 bits), by slot;
//               cosine vectors are the normalised ones
//   5 graph     usearch's serialised graph (index_gt::save_to_stream, usearch 2.25): five
//               u64 (nodes, connectivity M, base connectivity 2M, top level, entry slot),
//               nodes i16 levels, then each node: u64 key (its row, or 2^64-1 for a removed
//               node kept for reuse), i16 level, and level + 1 neighbour lists of u32 count
//               then capacity u32 slots (2M at level 0, M above), byte-packed
//   6 free      the removed nodes awaiting reuse (keyed 2^64-1), u32 slots in the order
//               later adds take them (from the end)
//  64 attributes an index made with attributes: the records of every row, removed ones
//               included (attributes_file.h); absent otherwise
// The file holds the index as it is, tombstones and free nodes included, so rows, ids and
// search results are identical after a round trip; compact() before save() to drop them.
//
// Reading trusts nothing: usearch's loaders take the graph as given (a neighbour slot past
// the end, or a level a neighbour lacks, would be read out of bounds), so validateGraph
// checks every node before usearch sees the bytes.
namespace {

enum HnswSection : uint32_t { kMeta = 1, kIds = 2, kSlots = 3, kVectors = 4, kGraph = 5, kFree = 6 };
constexpr size_t kMetaFixedBytes = 56;
constexpr size_t kMaxModelVersionBytes = 4096;
constexpr size_t kGraphHeaderBytes = 40;
// usearch draws levels as floor(-ln(u) / ln(M)); a level this high never happens.
constexpr int kMaxLevel = 64;

uint32_t metricCode(Metric m) { return m == Metric::InnerProduct ? 0 : m == Metric::Cosine ? 1 : 2; }

template <class T>
T loadAt(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// Checks a serialised graph against the row tables; fills `freeSlots` with the nodes keyed
// kFreeKey. Throws via `corrupt`.
template <class Corrupt>
void validateGraph(const uint8_t* data, size_t bytes, size_t nodes, size_t connectivity, const uint32_t* slotOfRow,
                   size_t rows, std::vector<uint32_t>& freeSlots, const Corrupt& corrupt) {
  if (bytes < kGraphHeaderBytes) throw corrupt("graph section shorter than its header");
  const uint64_t size = loadAt<uint64_t>(data), m = loadAt<uint64_t>(data + 8), base = loadAt<uint64_t>(data + 16);
  const uint64_t top = loadAt<uint64_t>(data + 24), entry = loadAt<uint64_t>(data + 32);
  if (size != nodes) throw corrupt("the graph has " + std::to_string(size) + " nodes, the index " + str(nodes));
  if (m != connectivity || base != 2 * connectivity) throw corrupt("graph connectivity does not match the index");
  if (nodes == 0) {
    if (bytes != kGraphHeaderBytes) throw corrupt("bytes after an empty graph");
    return;
  }
  // nodes ≤ 2^32 - 1 and every node ≤ 10 + 4 (2M + 1) + 64 × 4 (M + 1) bytes: no overflow.
  if ((bytes - kGraphHeaderBytes) / 2 < nodes) throw corrupt("truncated graph levels");
  const uint8_t* levels = data + kGraphHeaderBytes;
  const size_t baseBytes = 4 * (2 * connectivity + 1), levelBytes = 4 * (connectivity + 1);
  size_t total = kGraphHeaderBytes + 2 * nodes;
  int maxLevel = -1;
  for (size_t i = 0; i < nodes; ++i) {
    const int level = loadAt<int16_t>(levels + 2 * i);
    if (level < 0 || level > kMaxLevel) throw corrupt("graph node " + str(i) + " has level " + std::to_string(level));
    maxLevel = std::max(maxLevel, level);
    total += 10 + baseBytes + size_t(level) * levelBytes;
  }
  if (total != bytes) throw corrupt("the graph section has " + str(bytes) + " bytes, its nodes need " + str(total));
  if (top != uint64_t(maxLevel)) throw corrupt("graph top level " + std::to_string(top));
  if (entry >= nodes || loadAt<int16_t>(levels + 2 * entry) != maxLevel) throw corrupt("graph entry node");
  const uint8_t* node = levels + 2 * nodes;
  for (size_t i = 0; i < nodes; ++i) {
    const uint64_t key = loadAt<uint64_t>(node);
    const int level = loadAt<int16_t>(node + 8);
    if (level != loadAt<int16_t>(levels + 2 * i)) throw corrupt("graph node " + str(i) + " level mismatch");
    if (key == kFreeKey) {
      freeSlots.push_back(static_cast<uint32_t>(i));
    } else if (key >= rows || slotOfRow[key] != i) {
      throw corrupt("graph node " + str(i) + " has key " + std::to_string(key) + " that no row maps to it");
    }
    const uint8_t* list = node + 10;
    for (int l = 0; l <= level; ++l) {
      const uint32_t count = loadAt<uint32_t>(list);
      const size_t capacity = l == 0 ? 2 * connectivity : connectivity;
      if (count > capacity) throw corrupt("graph node " + str(i) + " has " + std::to_string(count) + " neighbours");
      for (uint32_t n = 0; n < count; ++n) {
        const uint32_t slot = loadAt<uint32_t>(list + 4 + 4 * size_t{n});
        // usearch reads the neighbour's list at this level: it must have the level.
        if (slot >= nodes || loadAt<int16_t>(levels + 2 * size_t{slot}) < l) {
          throw corrupt("graph node " + str(i) + " links to slot " + std::to_string(slot));
        }
      }
      list += l == 0 ? baseBytes : levelBytes;
    }
    node = list;
  }
}

}  // namespace

void HnswIndex::save(const std::string& path, const std::string& modelVersion, const AttributeTable* attributes) const {
  const Impl& m = *impl_;
  if (modelVersion.size() > kMaxModelVersionBytes) {
    throw Error(ErrorCode::InvalidArgument, "Expected a model version id of at most 4096 bytes");
  }
  // Writers wait: under writeMutex no add inserts and no remove rewrites a key, so the graph,
  // the tables and the vectors read below are one state. Searches only read.
  std::lock_guard<std::mutex> write(m.writeMutex);
  const uint64_t rows = m.rowCount.load(std::memory_order_relaxed);
  const uint64_t nodes = m.graph.size();
  const uint64_t live = m.live.load(std::memory_order_relaxed);
  std::vector<uint8_t> meta(kMetaFixedBytes + modelVersion.size(), 0);
  const uint32_t fixed[6] = {static_cast<uint32_t>(m.params.dim), metricCode(m.params.metric),
                             static_cast<uint32_t>(m.params.storage), static_cast<uint32_t>(m.params.connectivity),
                             static_cast<uint32_t>(m.params.expansionAdd), static_cast<uint32_t>(m.params.expansionSearch)};
  const uint32_t versionBytes = static_cast<uint32_t>(modelVersion.size());
  std::memcpy(meta.data(), fixed, 24);
  std::memcpy(meta.data() + 24, &rows, 8);
  std::memcpy(meta.data() + 32, &nodes, 8);
  std::memcpy(meta.data() + 40, &live, 8);
  std::memcpy(meta.data() + 48, &versionBytes, 4);
  std::memcpy(meta.data() + kMetaFixedBytes, modelVersion.data(), modelVersion.size());

  std::vector<uint8_t> graphBytes;
  try {
    graphBytes.reserve(m.graph.serialized_length());
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::OutOfMemory, "Out of memory serialising the graph of " + str(nodes) + " vectors");
  }
  auto result = m.graph.save_to_stream([&](const void* buffer, size_t length) {
    const auto* p = static_cast<const uint8_t*>(buffer);
    graphBytes.insert(graphBytes.end(), p, p + length);  // reserved: no allocation
    return true;
  });
  if (!result) throwUsearch(result, "save");
  std::vector<uint8_t> attributeBytes;
  if (attributes != nullptr) {
    // The records of every row (removed ones too, so that rows keep their numbers): a write
    // appends its records before it publishes, and writes wait, so the table has them all.
    attributeBytes = encodeAttributes(*attributes, *attributes->snapshot(), nullptr, rows);
  }

  static const uint8_t none = 0;
  FileWriter writer(path, IndexType::Hnsw);
  writer.add(kMeta, meta.data(), meta.size());
  writer.add(kIds, rows ? static_cast<const void*>(m.idOfRow.data()) : &none, rows * sizeof(uint64_t));
  writer.add(kSlots, rows ? static_cast<const void*>(m.slotOfRow.data()) : &none, rows * sizeof(uint32_t));
  writer.add(kVectors, nodes ? static_cast<const void*>(m.vectorBase) : &none, nodes * m.stride);
  writer.add(kGraph, graphBytes.data(), graphBytes.size());
  writer.add(kFree, m.freeSlots.empty() ? static_cast<const void*>(&none) : m.freeSlots.data(),
             m.freeSlots.size() * sizeof(uint32_t));
  if (attributes != nullptr) writer.add(kAttributesSection, attributeBytes.data(), attributeBytes.size());
  writer.commit();
}

HnswIndex::Opened HnswIndex::open(const std::string& path, bool map, bool verify, simd::Level level, unsigned threads) {
  const std::shared_ptr<IndexFile> file = IndexFile::open(path, map);
  auto corrupt = [&](const std::string& what) {
    return Error(ErrorCode::CorruptFile, "Corrupt index file " + path + ": " + what);
  };
  if (file->type() != IndexType::Hnsw) throw corrupt("not an HNSW index (type " + str(size_t(file->type())) + ")");
  const std::vector<uint8_t> meta = file->readBetween(kMeta, kMetaFixedBytes, kMetaFixedBytes + kMaxModelVersionBytes, "meta");
  uint32_t fixed[6];
  std::memcpy(fixed, meta.data(), 24);
  const uint64_t rows = loadAt<uint64_t>(meta.data() + 24), nodes = loadAt<uint64_t>(meta.data() + 32);
  const uint64_t live = loadAt<uint64_t>(meta.data() + 40);
  const uint32_t versionBytes = loadAt<uint32_t>(meta.data() + 48);
  if (kMetaFixedBytes + size_t{versionBytes} != meta.size() || loadAt<uint32_t>(meta.data() + 52) != 0) {
    throw corrupt("malformed meta section");
  }
  HnswParams p;
  p.dim = fixed[0];
  if (p.dim == 0 || p.dim > (size_t(1) << 20)) throw corrupt("dim " + str(p.dim));
  if (fixed[1] > 2 || fixed[2] > 2) throw corrupt("unknown metric or storage");
  p.metric = fixed[1] == 0 ? Metric::InnerProduct : fixed[1] == 1 ? Metric::Cosine : Metric::L2;
  p.storage = static_cast<simd::Element>(fixed[2]);
  p.connectivity = fixed[3];
  p.expansionAdd = fixed[4];
  p.expansionSearch = fixed[5];
  if (p.connectivity < 2 || p.connectivity > 1024 || p.expansionAdd == 0 || p.expansionAdd > (1u << 20) ||
      p.expansionSearch == 0 || p.expansionSearch > (1u << 20)) {
    throw corrupt("graph parameters out of range");
  }
  if (rows > kMaxRows || nodes > rows || live > nodes) throw corrupt("inconsistent row and node counts");

  Opened out;
  out.modelVersion.assign(reinterpret_cast<const char*>(meta.data()) + kMetaFixedBytes, versionBytes);
  out.index = std::make_unique<HnswIndex>(p, level, threads);
  Impl& m = *out.index->impl_;
  // rows ≤ 2^32 - 1 and stride ≤ 2^22: the products cannot overflow.
  const SectionEntry& idsEntry = file->require(kIds, rows * sizeof(uint64_t), "ids");
  const SectionEntry& slotsEntry = file->require(kSlots, rows * sizeof(uint32_t), "slots");
  const SectionEntry& vectorsEntry = file->require(kVectors, nodes * m.stride, "vectors");
  const SectionEntry* graphEntry = file->find(kGraph);
  if (graphEntry == nullptr) throw corrupt("no graph section");
  try {
    m.idOfRow.resize(std::max<size_t>(rows, kMinCapacity), 0);
    m.slotOfRow.resize(std::max<size_t>(rows, kMinCapacity), kNoSlot);
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::OutOfMemory, "Out of memory opening an index of " + str(rows) + " rows");
  }
  if (rows > 0) {
    file->read(idsEntry, m.idOfRow.data());
    file->read(slotsEntry, m.slotOfRow.data());
  }
  size_t held = 0;
  for (size_t r = 0; r < rows; ++r) {
    const uint32_t slot = m.slotOfRow[r];
    if (slot == kNoSlot) continue;
    if (slot >= nodes) throw corrupt("row " + str(r) + " maps to slot " + std::to_string(slot));
    if (m.idOfRow[r] == kNoId) throw corrupt("row " + str(r) + " has the reserved id");
    if (!m.rowOfId.emplace(m.idOfRow[r], static_cast<uint32_t>(r)).second) {
      throw corrupt("id " + std::to_string(m.idOfRow[r]) + " held twice");
    }
    ++held;
  }
  if (held != live) throw corrupt(str(held) + " live rows, the meta section says " + str(live));

  std::vector<uint8_t> graphCopy;
  const uint8_t* graphBytes;
  if (map) {
    graphBytes = file->view(*graphEntry, true);
  } else {
    try {
      graphCopy.resize(graphEntry->bytes);
    } catch (const std::bad_alloc&) {
      throw Error(ErrorCode::OutOfMemory, "Out of memory reading the graph of " + path);
    }
    file->read(*graphEntry, graphCopy.data());
    graphBytes = graphCopy.data();
  }
  std::vector<uint32_t> freeNodes;  // ascending
  validateGraph(graphBytes, graphEntry->bytes, nodes, p.connectivity, m.slotOfRow.data(), rows, freeNodes, corrupt);
  // Every node is a live row's or free: the slots of live rows are distinct (validateGraph
  // matched each node's key to its row), so nodes = live + free.
  if (freeNodes.size() + live != nodes) throw corrupt("graph nodes do not match the rows");
  // The free list, in its reuse order: exactly the free nodes.
  const SectionEntry& freeEntry = file->require(kFree, freeNodes.size() * sizeof(uint32_t), "free nodes");
  m.freeSlots.resize(freeNodes.size());
  if (!freeNodes.empty()) file->read(freeEntry, m.freeSlots.data());
  std::vector<uint32_t> sorted = m.freeSlots;
  std::sort(sorted.begin(), sorted.end());
  if (sorted != freeNodes) throw corrupt("the free list does not match the graph's free nodes");

  if (nodes > 0) {
    // usearch keeps the contexts reserved before a load or view.
    if (!m.graph.reserve(us::index_limits_t(0, m.contextCount))) {
      throw Error(ErrorCode::OutOfMemory, "Out of memory opening " + path);
    }
    us::serialization_result_t loaded;
    if (map) {
      loaded = m.graph.view(us::memory_mapped_file_t(reinterpret_cast<us::byte_t*>(const_cast<uint8_t*>(graphBytes)), graphEntry->bytes));
      m.graphView = graphBytes;
      m.graphViewBytes = graphEntry->bytes;
    } else {
      const uint8_t* at = graphBytes;
      size_t left = graphEntry->bytes;
      loaded = m.graph.load_from_stream([&](void* buffer, size_t length) {
        if (length > left) return false;
        std::memcpy(buffer, at, length);
        at += length;
        left -= length;
        return true;
      });
    }
    if (!loaded) {
      const char* message = loaded.error.release();
      throw corrupt(std::string("usearch rejected the graph: ") + (message ? message : "unknown error"));
    }
    if (map) {
      m.vectorBase = file->view(vectorsEntry, verify);
      m.mappedFile = file;
      m.mappedBytes.store(graphEntry->bytes + vectorsEntry.bytes, std::memory_order_relaxed);
    } else {
      try {
        m.vectors = AlignedBuffer<uint8_t>(std::max<size_t>(nodes, kMinCapacity) * m.stride);
      } catch (const std::bad_alloc&) {
        throw Error(ErrorCode::OutOfMemory, "Out of memory reading the vectors of " + path);
      }
      file->read(vectorsEntry, m.vectors.data());
      m.vectorBase = m.vectors.data();
    }
  }
  out.attributes = readAttributes(*file, rows);
  m.freeCount.store(m.freeSlots.size(), std::memory_order_relaxed);
  m.live.store(live, std::memory_order_relaxed);
  m.rowCount.store(rows, std::memory_order_release);
  m.refreshMemory();
  return out;
}

}  // namespace ebrix
