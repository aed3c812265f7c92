#include "flat.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <unordered_set>

#include "attributes_file.h"
#include "error.h"
#include "index_file.h"
#include "simd/dispatch.h"
#include "simd/half.h"
#include "thread_pool.h"
#include "topk.h"

namespace ebrix {
namespace {

constexpr size_t kMinCapacity = 1024;
constexpr double kMaxSquaredNorm = 1e36;

float halfSquaredNorm(const float* x, size_t dim) {
  double sum = 0.0;
  for (size_t i = 0; i < dim; ++i) sum += static_cast<double>(x[i]) * x[i];
  return static_cast<float>(0.5 * sum);
}

}  // namespace

void requireFinite(const float* vectors, size_t count, size_t dim, const char* what) {
  for (size_t r = 0; r < count; ++r) {
    const float* row = vectors + r * dim;
    double squaredNorm = 0.0;
    for (size_t i = 0; i < dim; ++i) {
      if (!std::isfinite(row[i])) {
        throw Error(ErrorCode::InvalidVector,
                    std::string("Expected finite values for ") + what + " but received " +
                        (std::isnan(row[i]) ? "NaN" : (row[i] > 0 ? "Infinity" : "-Infinity")) +
                        " at row " + std::to_string(r) + ", column " + std::to_string(i));
      }
      squaredNorm += static_cast<double>(row[i]) * row[i];
    }
    // Bounding |x|^2 keeps every partial sum of q·x and |q-x|^2 inside float range (by
    // Cauchy-Schwarz), so no summation order can overflow to Infinity or NaN.
    if (squaredNorm > kMaxSquaredNorm) {
      char norm[32];
      std::snprintf(norm, sizeof norm, "%.3g", squaredNorm);
      throw Error(ErrorCode::InvalidVector, std::string("Expected vectors with a squared norm up to 1e36 for ") + what +
                                                " but received " + norm + " at row " + std::to_string(r));
    }
  }
}

FlatIndex::Storage::Storage(size_t cap, size_t dim, simd::Element element, bool withRowNumbers)
    : capacity(cap),
      vectors(element == simd::Element::F32 ? cap * dim : 0),
      halves(element == simd::Element::F16 || element == simd::Element::BF16 ? cap * dim : 0),
      codes(element == simd::Element::I8 ? cap * dim : 0),
      l2Bias(cap),
      ids(cap),
      rowNumbers(withRowNumbers ? cap : 0) {
  rowData = element == simd::Element::F32 ? static_cast<const void*>(vectors.data())
            : element == simd::Element::I8 ? static_cast<const void*>(codes.data())
                                           : static_cast<const void*>(halves.data());
  biasData = l2Bias.data();
  idData = ids.data();
  rowNumberData = withRowNumbers ? rowNumbers.data() : nullptr;
}

int64_t FlatIndex::Snapshot::slotOfRow(uint32_t row) const {
  if (!storage) return -1;
  if (!storage->rowNumberData) return row < count ? static_cast<int64_t>(row) : -1;
  // Row numbers ascend with slots: compaction keeps their order and adds append larger ones.
  const uint32_t* begin = storage->rowNumberData;
  const uint32_t* it = std::lower_bound(begin, begin + count, row);
  return it != begin + count && *it == row ? static_cast<int64_t>(it - begin) : -1;
}

unsigned FlatIndex::threads() const { return ThreadPool::shared().resolve(threads_); }

FlatIndex::FlatIndex(size_t dim, Metric metric, simd::Level level, unsigned threads, simd::Element storage)
    : dim_(dim),
      metric_(metric),
      kernels_(&simd::kernelsFor(level)),
      threads_(threads),
      element_(storage) {
  if (dim == 0) throw Error(ErrorCode::InvalidArgument, "Expected a positive integer for dim but received 0");
  // The integer scan needs 255 × dim to fit int32 even with query bytes of magnitude 1.
  if (storage == simd::Element::I8 && dim > static_cast<size_t>(std::numeric_limits<int32_t>::max()) / 255) {
    throw Error(ErrorCode::InvalidArgument, "Expected dim up to " +
                                                std::to_string(std::numeric_limits<int32_t>::max() / 255) +
                                                " for storage 'i8' but received " + std::to_string(dim));
  }
}

void FlatIndex::train(const float* sample, size_t count) {
  if (element_ != simd::Element::I8) {
    throw Error(ErrorCode::InvalidArgument, std::string("Storage '") + simd::elementName(element_) +
                                                "' needs no training: train() applies to storage 'i8'");
  }
  std::lock_guard<std::mutex> writeLock(writeMutex_);
  if (snapshot().quantizer) {
    throw Error(ErrorCode::InvalidArgument, "The index is already trained: its quantizer is fixed once vectors may be added");
  }
  if (count == 0) throw Error(ErrorCode::InvalidArgument, "Expected at least one vector for sample but received 0");
  requireFinite(sample, count, dim_, "sample");
  std::shared_ptr<const ScalarQuantizer> quantizer;
  try {
    std::vector<float> normalized;
    if (metric_ == Metric::Cosine) {
      // Cosine rows are normalised before they are encoded, so the ranges are of unit vectors.
      normalized.resize(count * dim_);
      normalizeRows(sample, normalized.data(), count, dim_);
      sample = normalized.data();
    }
    quantizer = std::make_shared<const ScalarQuantizer>(ScalarQuantizer::train(sample, count, dim_));
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::OutOfMemory, "Out of memory training on " + std::to_string(count) + " vectors");
  }
  std::lock_guard<std::mutex> lock(snapshotMutex_);
  current_.quantizer = std::move(quantizer);
}

bool FlatIndex::trained() const { return element_ != simd::Element::I8 || snapshot().quantizer != nullptr; }

void FlatIndex::requireStorable(const float* vectors, size_t count, const char* what) const {
  // Cosine rows are normalised before rounding (|x_i| <= 1), and bf16 has float's exponent
  // range, so only f16 with ip or l2 can overflow.
  if (element_ != simd::Element::F16 || metric_ == Metric::Cosine) return;
  requireF16Range(vectors, count, dim_, what);
}

void requireNewIds(const uint64_t* ids, size_t count, const std::unordered_map<uint64_t, uint32_t>& rowOfId) {
  std::unordered_set<uint64_t> batch;
  batch.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    if (ids[i] == kNoId) {
      throw Error(ErrorCode::InvalidArgument,
                  "Expected ids below 2^64-1 (reserved for padding) but received 18446744073709551615");
    }
    const bool present = rowOfId.count(ids[i]) != 0;
    if (!batch.insert(ids[i]).second || present) {
      throw Error(ErrorCode::DuplicateId, "Expected unique ids but received duplicate id " + std::to_string(ids[i]) +
                                              (present ? " (already in the index)" : " (twice in this add)"));
    }
  }
}

void requireDistinctIds(const uint64_t* ids, size_t count) {
  std::unordered_set<uint64_t> batch;
  batch.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    if (ids[i] == kNoId) {
      throw Error(ErrorCode::InvalidArgument,
                  "Expected ids below 2^64-1 (reserved for padding) but received 18446744073709551615");
    }
    if (!batch.insert(ids[i]).second) {
      throw Error(ErrorCode::DuplicateId,
                  "Expected unique ids but received duplicate id " + std::to_string(ids[i]) + " (twice in this upsert)");
    }
  }
}

void requireF16Range(const float* vectors, size_t count, size_t dim, const char* what) {
  for (size_t r = 0; r < count; ++r) {
    for (size_t i = 0; i < dim; ++i) {
      const float x = vectors[r * dim + i];
      if (std::fabs(x) >= simd::kF16RoundsToInfinity) {
        char value[32];
        std::snprintf(value, sizeof value, "%.9g", x);
        throw Error(ErrorCode::InvalidVector,
                    std::string("Expected values of magnitude below 65520 (the f16 range) for ") + what +
                        " but received " + value + " at row " + std::to_string(r) + ", column " +
                        std::to_string(i));
      }
    }
  }
}

FlatIndex::Snapshot FlatIndex::snapshot() const {
  std::lock_guard<std::mutex> lock(snapshotMutex_);
  return current_;
}

void FlatIndex::publish(Snapshot next) {
  std::lock_guard<std::mutex> lock(snapshotMutex_);
  current_ = std::move(next);
}

size_t FlatIndex::size() const { return snapshot().live; }

size_t FlatIndex::memoryBytes() const {
  const Snapshot snap = snapshot();
  size_t bytes = snap.quantizer ? snap.quantizer->memoryBytes() : 0;
  if (snap.liveBits) bytes += snap.liveBits->capacity() * sizeof(uint32_t);
  if (!snap.storage) return bytes + idMapBytes_.load(std::memory_order_relaxed);
  bytes += snap.storage->capacity * (dim_ * elementBytes() + sizeof(float) + sizeof(uint64_t));
  bytes += snap.storage->rowNumbers.size() * sizeof(uint32_t);
  return bytes + idMapBytes_.load(std::memory_order_relaxed);
}

size_t FlatIndex::mappedBytes() const {
  const Snapshot snap = snapshot();
  if (!snap.storage || !snap.storage->file) return 0;
  return snap.count * (dim_ * elementBytes() + sizeof(float) + sizeof(uint64_t));
}

void FlatIndex::updateIdMapBytes() {
  // The id → row map, estimated: a node per id (key, value, next pointer, cached hash) and
  // the bucket array. Kept in an atomic so memoryUsage() never waits for a running write.
  idMapBytes_.store(rowOfId_.size() * (sizeof(uint64_t) + sizeof(uint32_t) + 2 * sizeof(void*)) +
                        rowOfId_.bucket_count() * sizeof(void*),
                    std::memory_order_relaxed);
}

void FlatIndex::buildIdMap(const Snapshot& snap, const std::string& path) {
  std::unordered_map<uint64_t, uint32_t> map;
  try {
    map.reserve(snap.count);
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::OutOfMemory, "Out of memory indexing the ids of " + std::to_string(snap.count) + " vectors");
  }
  for (size_t r = 0; r < snap.count; ++r) {
    const uint64_t id = snap.storage->idData[r];
    if (id == kNoId || !map.emplace(id, static_cast<uint32_t>(r)).second) {
      throw Error(ErrorCode::CorruptFile, "Corrupt index file " + path + ": id " + std::to_string(id) +
                                              (id == kNoId ? " is reserved" : " appears twice"));
    }
  }
  std::unique_lock<std::shared_mutex> ids(idMutex_);
  rowOfId_ = std::move(map);
  idMapBuilt_.store(true, std::memory_order_release);
  updateIdMapBytes();
}

void FlatIndex::ensureIdMap() {
  if (idMapBuilt_.load(std::memory_order_acquire)) return;
  std::lock_guard<std::mutex> writeLock(writeMutex_);
  if (idMapBuilt_.load(std::memory_order_acquire)) return;
  const Snapshot snap = snapshot();
  buildIdMap(snap, snap.storage->file->path());
}

void FlatIndex::rowsOf(const uint64_t* ids, size_t count, int64_t* rows) {
  ensureIdMap();
  std::shared_lock<std::shared_mutex> lock(idMutex_);
  for (size_t i = 0; i < count; ++i) {
    const auto it = rowOfId_.find(ids[i]);
    rows[i] = it == rowOfId_.end() ? -1 : static_cast<int64_t>(it->second);
  }
}

bool FlatIndex::contains(uint64_t id) {
  ensureIdMap();
  std::shared_lock<std::shared_mutex> lock(idMutex_);
  return rowOfId_.count(id) != 0;
}

void FlatIndex::decodeSlot(const Snapshot& snap, size_t slot, float* out) const {
  const Storage& st = *snap.storage;
  if (element_ == simd::Element::F32) {
    std::memcpy(out, static_cast<const float*>(st.rowData) + slot * dim_, dim_ * sizeof(float));
  } else if (element_ == simd::Element::I8) {
    snap.quantizer->decode(static_cast<const uint8_t*>(st.rowData) + slot * dim_, out);
  } else {
    halfKernels().toFloat(static_cast<const uint16_t*>(st.rowData) + slot * dim_, out, dim_);
  }
}

void FlatIndex::get(uint64_t id, float* out) {
  ensureIdMap();
  Snapshot snap;
  int64_t slot = -1;
  {
    // The row and the snapshot are taken together: writers change both under idMutex_.
    std::shared_lock<std::shared_mutex> lock(idMutex_);
    const auto it = rowOfId_.find(id);
    if (it != rowOfId_.end()) {
      snap = snapshot();
      slot = snap.slotOfRow(it->second);
    }
  }
  if (slot < 0 || !snap.slotLive(static_cast<size_t>(slot))) {
    throw Error(ErrorCode::UnknownId, "Expected an id in the index but received unknown id " + std::to_string(id));
  }
  decodeSlot(snap, static_cast<size_t>(slot), out);
}

void FlatIndex::add(const uint64_t* ids, const float* vectors, size_t count, const WriteHook& hook) {
  if (count == 0) return;
  std::lock_guard<std::mutex> writeLock(writeMutex_);
  write(ids, vectors, count, false, hook);
}

void FlatIndex::upsert(const uint64_t* ids, const float* vectors, size_t count, const WriteHook& hook) {
  if (count == 0) return;
  std::lock_guard<std::mutex> writeLock(writeMutex_);
  write(ids, vectors, count, true, hook);
}

void FlatIndex::write(const uint64_t* ids, const float* vectors, size_t count, bool upsert, const WriteHook& hook) {
  const Snapshot snap = snapshot();
  if (!idMapBuilt_.load(std::memory_order_acquire)) buildIdMap(snap, snap.storage->file->path());
  if (element_ == simd::Element::I8 && !snap.quantizer) {
    throw Error(ErrorCode::NotTrained, "The index (storage 'i8') must be trained before vectors are added");
  }

  // Validate everything before touching the index.
  requireFinite(vectors, count, dim_, "vectors");
  requireStorable(vectors, count, "vectors");
  if (upsert) {
    requireDistinctIds(ids, count);
  } else {
    requireNewIds(ids, count, rowOfId_);
  }
  const size_t newCount = snap.count + count;
  if (snap.rows + count > kMaxRows) {
    throw Error(ErrorCode::InvalidArgument,
                "A flat index numbers at most " + std::to_string(kMaxRows) + " rows over its life (adds and upserts)");
  }
  // The slots an upsert replaces, and the ids' previous rows (to restore the map on failure).
  std::vector<size_t> replaced;
  std::vector<std::pair<uint64_t, uint32_t>> previous;
  if (upsert) {
    for (size_t i = 0; i < count; ++i) {
      const auto it = rowOfId_.find(ids[i]);
      if (it == rowOfId_.end()) continue;
      previous.emplace_back(ids[i], it->second);
      const int64_t slot = snap.slotOfRow(it->second);
      if (slot >= 0) replaced.push_back(static_cast<size_t>(slot));
    }
  }

  std::shared_ptr<Storage> target = snap.storage;
  // Slots carry row numbers once they differ from the slots (after a compaction dropped some).
  const bool numbered = snap.rows != snap.count || (target && target->rowNumberData);
  std::shared_ptr<std::vector<uint32_t>> liveBits;
  try {
    rowOfId_.reserve(rowOfId_.size() + count);
    if (!target || target->capacity < newCount || (numbered && !target->rowNumberData)) {
      const size_t oldCapacity = target ? target->capacity : 0;
      const size_t capacity = std::max({newCount, oldCapacity + oldCapacity / 2, kMinCapacity});
      auto grown = std::make_shared<Storage>(capacity, dim_, element_, numbered);
      if (snap.count > 0) {
        // From buffers or from a mapped file alike.
        std::memcpy(const_cast<void*>(grown->rowData), target->rowData, snap.count * dim_ * elementBytes());
        std::memcpy(grown->l2Bias.data(), target->biasData, snap.count * sizeof(float));
        std::memcpy(grown->ids.data(), target->idData, snap.count * sizeof(uint64_t));
        if (numbered) {
          for (size_t s = 0; s < snap.count; ++s) grown->rowNumbers[s] = snap.rowOfSlot(s);
        }
      }
      target = std::move(grown);
    }
    if (snap.liveBits || !replaced.empty()) {
      liveBits = std::make_shared<std::vector<uint32_t>>(snap.liveBits ? *snap.liveBits : allBits(snap.count));
      extendSet(*liveBits, snap.count, newCount);
      for (const size_t slot : replaced) clearBit(*liveBits, slot);
    }
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::OutOfMemory,
                "Out of memory growing the index to " + std::to_string(newCount) + " vectors");
  }

  // Slots past snap.count are invisible to every reader until the snapshot below is published.
  if (target->rowNumberData) {
    for (size_t i = 0; i < count; ++i) target->rowNumbers[snap.count + i] = static_cast<uint32_t>(snap.rows + i);
  }
  if (element_ == simd::Element::F32) {
    for (size_t i = 0; i < count; ++i) {
      const size_t row = snap.count + i;
      float* dst = target->vectors.data() + row * dim_;
      const float* src = vectors + i * dim_;
      if (metric_ == Metric::Cosine) {
        normalizeRows(src, dst, 1, dim_);
      } else {
        std::memcpy(dst, src, dim_ * sizeof(float));
      }
      target->l2Bias[row] = -halfSquaredNorm(dst, dim_);
      target->ids[row] = ids[i];
    }
  } else if (element_ == simd::Element::I8) {
    // Normalise (cosine), encode, and take the l2 bias of the decoded row: the scan ranks
    // by the decoded rows, and the re-score measures them.
    const ScalarQuantizer& quantizer = *snap.quantizer;
    std::vector<float> prepared(metric_ == Metric::Cosine ? dim_ : 0), decoded(dim_);
    for (size_t i = 0; i < count; ++i) {
      const size_t row = snap.count + i;
      uint8_t* dst = target->codes.data() + row * dim_;
      const float* src = vectors + i * dim_;
      if (metric_ == Metric::Cosine) {
        normalizeRows(src, prepared.data(), 1, dim_);
        src = prepared.data();
      }
      quantizer.encode(src, dst);
      quantizer.decode(dst, decoded.data());
      target->l2Bias[row] = -halfSquaredNorm(decoded.data(), dim_);
      target->ids[row] = ids[i];
    }
  } else {
    // Normalise (cosine), round to the storage type, and take the l2 bias of the rounded row.
    const simd::Kernels16& half = halfKernels();
    std::vector<float> prepared(metric_ == Metric::Cosine ? dim_ : 0), rounded(dim_);
    for (size_t i = 0; i < count; ++i) {
      const size_t row = snap.count + i;
      uint16_t* dst = target->halves.data() + row * dim_;
      const float* src = vectors + i * dim_;
      if (metric_ == Metric::Cosine) {
        normalizeRows(src, prepared.data(), 1, dim_);
        src = prepared.data();
      }
      half.fromFloat(src, dst, dim_);
      half.toFloat(dst, rounded.data(), dim_);
      target->l2Bias[row] = -halfSquaredNorm(rounded.data(), dim_);
      target->ids[row] = ids[i];
    }
  }

  // The map and the snapshot change together for get / has / rowsOf (idMutex_); searches
  // only take the snapshot.
  std::unique_lock<std::shared_mutex> idLock(idMutex_);
  const auto restoreMap = [&] {
    for (size_t i = 0; i < count; ++i) rowOfId_.erase(ids[i]);
    for (const auto& [id, row] : previous) rowOfId_.emplace(id, row);
  };
  try {
    for (size_t i = 0; i < count; ++i) rowOfId_.insert_or_assign(ids[i], static_cast<uint32_t>(snap.rows + i));
  } catch (const std::bad_alloc&) {
    restoreMap();  // nothing was published: the map goes back as it was
    throw Error(ErrorCode::OutOfMemory, "Out of memory indexing the ids of " + std::to_string(count) + " vectors");
  }
  if (hook) {
    try {
      hook(snap.rows);
    } catch (...) {
      restoreMap();
      updateIdMapBytes();
      throw;
    }
  }
  updateIdMapBytes();
  publish(Snapshot{std::move(target), newCount, snap.rows + count, snap.live + count - replaced.size(),
                   std::move(liveBits), snap.quantizer});
}

size_t FlatIndex::remove(const uint64_t* ids, size_t count) {
  if (count == 0) return 0;
  std::lock_guard<std::mutex> writeLock(writeMutex_);
  const Snapshot snap = snapshot();
  if (!idMapBuilt_.load(std::memory_order_acquire)) buildIdMap(snap, snap.storage->file->path());
  std::vector<uint64_t> found;
  std::vector<size_t> slots;
  std::unordered_set<uint64_t> seen;
  for (size_t i = 0; i < count; ++i) {
    const auto it = rowOfId_.find(ids[i]);
    if (it == rowOfId_.end() || !seen.insert(ids[i]).second) continue;
    const int64_t slot = snap.slotOfRow(it->second);
    if (slot < 0) continue;  // not reached: the map holds live rows only
    found.push_back(ids[i]);
    slots.push_back(static_cast<size_t>(slot));
  }
  if (found.empty()) return 0;
  std::shared_ptr<std::vector<uint32_t>> liveBits;
  try {
    liveBits = std::make_shared<std::vector<uint32_t>>(snap.liveBits ? *snap.liveBits : allBits(snap.count));
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::OutOfMemory, "Out of memory removing " + std::to_string(found.size()) + " vectors");
  }
  for (const size_t slot : slots) clearBit(*liveBits, slot);
  std::unique_lock<std::shared_mutex> idLock(idMutex_);
  for (const uint64_t id : found) rowOfId_.erase(id);
  updateIdMapBytes();
  publish(Snapshot{snap.storage, snap.count, snap.rows, snap.live - found.size(), std::move(liveBits), snap.quantizer});
  return found.size();
}

size_t FlatIndex::compact() {
  std::lock_guard<std::mutex> writeLock(writeMutex_);
  const Snapshot snap = snapshot();
  if (!snap.liveBits || snap.live == snap.count) return 0;
  // Built beside the published storage: searches keep reading that one until the swap.
  std::shared_ptr<Storage> compacted;
  if (snap.live > 0) {
    try {
      compacted = std::make_shared<Storage>(std::max(snap.live, kMinCapacity), dim_, element_, true);
    } catch (const std::bad_alloc&) {
      throw Error(ErrorCode::OutOfMemory, "Out of memory compacting " + std::to_string(snap.live) + " vectors");
    }
    const Storage& from = *snap.storage;
    const size_t rowBytes = dim_ * elementBytes();
    size_t to = 0;
    for (size_t s = 0; s < snap.count; ++s) {
      if (!snap.slotLive(s)) continue;
      std::memcpy(static_cast<char*>(const_cast<void*>(compacted->rowData)) + to * rowBytes,
                  static_cast<const char*>(from.rowData) + s * rowBytes, rowBytes);
      compacted->l2Bias[to] = from.biasData[s];
      compacted->ids[to] = from.idData[s];
      compacted->rowNumbers[to] = snap.rowOfSlot(s);
      ++to;
    }
  }
  // Rows keep their numbers, so the id map stays as it is.
  publish(Snapshot{std::move(compacted), snap.live, snap.rows, snap.live, nullptr, snap.quantizer});
  return snap.count - snap.live;
}

const uint32_t* FlatIndex::slotAllow(const Snapshot& snap, const uint32_t* allowBits, size_t allowWords,
                                     std::vector<uint32_t>& scratch, size_t* words) const {
  const bool numbered = snap.storage && snap.storage->rowNumberData;
  if (!snap.liveBits && (allowBits == nullptr || !numbered)) {
    *words = allowWords;
    return allowBits;
  }
  if (!numbered) {
    // Slots are rows: one AND a word at a time.
    if (allowBits == nullptr) {
      *words = snap.liveBits->size();
      return snap.liveBits->data();
    }
    scratch = andBits(allowBits, allowWords, snap.liveBits->data(), snap.liveBits->size());
  } else {
    // Slots carry their rows: the row bitset is read through them (ascending, so the reads
    // stream), one pass over the slots.
    scratch.assign(bitWords(snap.count), 0u);
    const uint32_t* rows = snap.storage->rowNumberData;
    for (size_t s = 0; s < snap.count; ++s) {
      if ((allowBits == nullptr || testBit(allowBits, allowWords, rows[s])) && snap.slotLive(s)) setBit(scratch, s);
    }
  }
  *words = scratch.size();
  // A search treats a null bitset as "every row", so an empty one must not be null.
  static const uint32_t kNone = 0;
  return scratch.empty() ? &kNone : scratch.data();
}

SearchOutput FlatIndex::search(const float* queries, size_t queryCount, size_t k, unsigned threads,
                               const uint32_t* allowBits, size_t allowWords, const RowFilter* filter) const {
  if (k == 0) throw Error(ErrorCode::InvalidArgument, "Expected a positive integer for k but received 0");
  requireFinite(queries, queryCount, dim_, "queries");
  requireStorable(queries, queryCount, "queries");
  Snapshot snap;
  std::vector<uint32_t> filtered;
  if (filter != nullptr) {
    // The id map of a mapped open is built on first use, a cache behind the const interface.
    const_cast<FlatIndex*>(this)->ensureIdMap();
    // The snapshot and the id lookups of the filter are of one state: writers change the map
    // and publish under idMutex_. Records are appended before a write publishes, so every
    // row of the snapshot has its record.
    std::shared_lock<std::shared_mutex> lock(idMutex_);
    snap = snapshot();
    filtered = (*filter)([this](uint64_t id, uint32_t* row) {
      const auto it = rowOfId_.find(id);
      if (it == rowOfId_.end()) return false;
      *row = it->second;
      return true;
    });
    lock.unlock();
    if (allowBits != nullptr) filtered = andBits(filtered.data(), filtered.size(), allowBits, allowWords);
    static const uint32_t kNone = 0;
    allowBits = filtered.empty() ? &kNone : filtered.data();
    allowWords = filtered.size();
  } else {
    snap = snapshot();
  }
  if (element_ == simd::Element::I8 && !snap.quantizer) {
    throw Error(ErrorCode::NotTrained, "The index (storage 'i8') must be trained before it is searched");
  }

  std::vector<float> normalized;
  const float* prepared = queries;
  if (metric_ == Metric::Cosine) {
    normalized.resize(queryCount * dim_);
    normalizeRows(queries, normalized.data(), queryCount, dim_);
    prepared = normalized.data();
  }
  if (element_ == simd::Element::F16 || element_ == simd::Element::BF16) {
    // Queries are rounded to the storage type as the rows were, and scored as floats.
    const simd::Kernels16& half = halfKernels();
    normalized.resize(queryCount * dim_);
    std::vector<uint16_t> bits(dim_);
    for (size_t q = 0; q < queryCount; ++q) {
      half.fromFloat(prepared + q * dim_, bits.data(), dim_);
      half.toFloat(bits.data(), normalized.data() + q * dim_, dim_);
    }
    prepared = normalized.data();
  }

  RowSet rows;
  rows.element = element_;
  if (snap.storage) {
    const void* data = snap.storage->rowData;
    if (element_ == simd::Element::F32) rows.vectors = static_cast<const float*>(data);
    else if (element_ == simd::Element::I8) rows.codes = static_cast<const uint8_t*>(data);
    else rows.halves = static_cast<const uint16_t*>(data);
    rows.ids = snap.storage->idData;
    rows.l2Bias = snap.storage->biasData;
  }
  rows.quantizer = snap.quantizer.get();  // i8: the exact search quantizes each query itself
  rows.count = snap.count;
  rows.dim = dim_;

  SearchParams params;
  params.k = k;
  params.metric = metric_;
  std::vector<uint32_t> scratch;
  params.allowBits = slotAllow(snap, allowBits, allowWords, scratch, &params.allowWords);
  params.threads = ThreadPool::shared().resolve(threads == 0 ? threads_ : threads);
  return exactSearch(rows, prepared, queryCount, params, *kernels_, ThreadPool::shared());
}

// --- the file ----------------------------------------------------------------------------
//
// A flat index file (index_file.h, type Flat) has these sections, little-endian:
//   1 meta       u32 dim, u32 metric (0 ip, 1 cosine, 2 l2), u32 storage (0 f32, 1 f16,
//                2 bf16, 3 i8), u32 zero, u64 count, u32 modelVersion bytes, then the
//                model version id as UTF-8
//   2 rows       count × dim elements of the storage type (f32, f16 / bf16 bits, i8 codes);
//                cosine rows are the normalised ones
//   3 l2 bias    count f32: -|x|^2 / 2 of each stored row (as decoded or rounded)
//   4 ids        count u64, in row order
//   5 quantizer  i8 only: dim f32 minimums, then dim f32 steps
//  64 attributes an index made with attributes: the records of the saved rows, in the file's
//                row order (attributes_file.h); absent otherwise
// count is the live vectors: removed ones are left out (the format has no tombstones), so
// the file's rows are numbered 0 .. count-1 in the index's row order.
namespace {

enum FlatSection : uint32_t { kMeta = 1, kRows = 2, kBias = 3, kIds = 4, kQuantizer = 5 };
constexpr size_t kMetaFixedBytes = 28;
// A model version id is a short string; anything longer is not one of ours.
constexpr size_t kMaxModelVersionBytes = 4096;

uint32_t metricCode(Metric m) { return m == Metric::InnerProduct ? 0 : m == Metric::Cosine ? 1 : 2; }

}  // namespace

void FlatIndex::save(const std::string& path, const std::string& modelVersion, const AttributeTable* attributes) const {
  if (modelVersion.size() > kMaxModelVersionBytes) {
    throw Error(ErrorCode::InvalidArgument, "Expected a model version id of at most 4096 bytes");
  }
  const Snapshot snap = snapshot();
  std::vector<uint8_t> meta(kMetaFixedBytes + modelVersion.size(), 0);
  const uint32_t fixed[4] = {static_cast<uint32_t>(dim_), metricCode(metric_), static_cast<uint32_t>(element_), 0};
  const uint64_t count = snap.live;
  const uint32_t versionBytes = static_cast<uint32_t>(modelVersion.size());
  std::memcpy(meta.data(), fixed, 16);
  std::memcpy(meta.data() + 16, &count, 8);
  std::memcpy(meta.data() + 24, &versionBytes, 4);
  std::memcpy(meta.data() + kMetaFixedBytes, modelVersion.data(), modelVersion.size());

  FileWriter writer(path, IndexType::Flat);
  writer.add(kMeta, meta.data(), meta.size());
  static const uint8_t none = 0;
  const Storage* st = snap.storage.get();
  const void* rowData = st ? st->rowData : &none;
  const void* biasData = st ? static_cast<const void*>(st->biasData) : &none;
  const void* idData = st ? static_cast<const void*>(st->idData) : &none;
  // With tombstones the live slots are gathered first: the file holds no tombstones, so its
  // rows are the live vectors in row order (numbered from 0 again when opened).
  std::vector<uint8_t> liveRows;
  std::vector<float> liveBias;
  std::vector<uint64_t> liveIds;
  if (snap.liveBits && snap.live < snap.count) {
    const size_t rowBytes = dim_ * elementBytes();
    try {
      liveRows.resize(snap.live * rowBytes);
      liveBias.resize(snap.live);
      liveIds.resize(snap.live);
    } catch (const std::bad_alloc&) {
      throw Error(ErrorCode::OutOfMemory, "Out of memory gathering " + std::to_string(snap.live) + " vectors to save");
    }
    size_t to = 0;
    for (size_t s = 0; s < snap.count; ++s) {
      if (!snap.slotLive(s)) continue;
      std::memcpy(liveRows.data() + to * rowBytes, static_cast<const char*>(st->rowData) + s * rowBytes, rowBytes);
      liveBias[to] = st->biasData[s];
      liveIds[to] = st->idData[s];
      ++to;
    }
    rowData = liveRows.data();
    biasData = liveBias.data();
    idData = liveIds.data();
  }
  writer.add(kRows, rowData, count * dim_ * elementBytes());
  writer.add(kBias, biasData, count * sizeof(float));
  writer.add(kIds, idData, count * sizeof(uint64_t));
  // The attribute records of the saved rows, in the file's row order. Taken after the index
  // snapshot: a write appends its records before it publishes its rows, so the table holds
  // a record for every row of the snapshot (records never change once appended).
  std::vector<uint8_t> attributeBytes;
  if (attributes != nullptr) {
    std::vector<uint32_t> savedRows;
    try {
      savedRows.reserve(snap.live);
      for (size_t s = 0; s < snap.count; ++s) {
        if (snap.slotLive(s)) savedRows.push_back(snap.rowOfSlot(s));
      }
    } catch (const std::bad_alloc&) {
      throw Error(ErrorCode::OutOfMemory, "Out of memory listing the rows of " + std::to_string(snap.live) + " vectors");
    }
    attributeBytes = encodeAttributes(*attributes, *attributes->snapshot(), savedRows.data(), savedRows.size());
    writer.add(kAttributesSection, attributeBytes.data(), attributeBytes.size());
  }
  std::vector<float> ranges;
  if (snap.quantizer) {
    ranges.assign(snap.quantizer->mins(), snap.quantizer->mins() + dim_);
    ranges.insert(ranges.end(), snap.quantizer->steps(), snap.quantizer->steps() + dim_);
    writer.add(kQuantizer, ranges.data(), ranges.size() * sizeof(float));
  }
  writer.commit();
}

FlatIndex::Opened FlatIndex::open(const std::string& path, bool map, bool verify, simd::Level level,
                                  unsigned threads) {
  const std::shared_ptr<IndexFile> file = IndexFile::open(path, map);
  auto corrupt = [&](const std::string& what) -> Error {
    return Error(ErrorCode::CorruptFile, "Corrupt index file " + path + ": " + what);
  };
  if (file->type() != IndexType::Flat) throw corrupt("not a flat index (type " + std::to_string(int(file->type())) + ")");
  const std::vector<uint8_t> meta = file->readBetween(kMeta, kMetaFixedBytes, kMetaFixedBytes + kMaxModelVersionBytes, "meta");
  uint32_t fixed[4];
  uint64_t count;
  uint32_t versionBytes;
  std::memcpy(fixed, meta.data(), 16);
  std::memcpy(&count, meta.data() + 16, 8);
  std::memcpy(&versionBytes, meta.data() + 24, 4);
  const size_t dim = fixed[0];
  if (dim == 0 || dim > (size_t(1) << 24)) throw corrupt("dim " + std::to_string(dim));
  if (fixed[1] > 2) throw corrupt("unknown metric " + std::to_string(fixed[1]));
  if (fixed[2] > 3) throw corrupt("unknown storage " + std::to_string(fixed[2]));
  if (count > kMaxRows) throw corrupt(std::to_string(count) + " rows");
  if (kMetaFixedBytes + size_t{versionBytes} != meta.size()) throw corrupt("malformed meta section");
  const Metric metric = fixed[1] == 0 ? Metric::InnerProduct : fixed[1] == 1 ? Metric::Cosine : Metric::L2;
  const auto element = static_cast<simd::Element>(fixed[2]);

  Opened out;
  out.modelVersion.assign(reinterpret_cast<const char*>(meta.data()) + kMetaFixedBytes, versionBytes);
  out.index = std::make_unique<FlatIndex>(dim, metric, level, threads, element);
  FlatIndex& index = *out.index;
  const size_t element_bytes = index.elementBytes();
  // count ≤ 2^32 and dim ≤ 2^24: the products below cannot overflow 64 bits.
  const SectionEntry& rows = file->require(kRows, count * dim * element_bytes, "rows");
  const SectionEntry& bias = file->require(kBias, count * sizeof(float), "l2 bias");
  const SectionEntry& ids = file->require(kIds, count * sizeof(uint64_t), "ids");
  std::shared_ptr<const ScalarQuantizer> quantizer;
  // An i8 index holds rows only once trained, so an empty one may have no quantizer.
  if (element == simd::Element::I8 && (count > 0 || file->find(kQuantizer) != nullptr)) {
    const SectionEntry& q = file->require(kQuantizer, 2 * dim * sizeof(float), "quantizer");
    std::vector<float> ranges(2 * dim);
    file->read(q, ranges.data());
    for (size_t d = 0; d < dim; ++d) {
      if (!std::isfinite(ranges[d]) || !std::isfinite(ranges[dim + d]) || ranges[dim + d] < 0.0f) {
        throw corrupt("quantizer range of dimension " + std::to_string(d));
      }
    }
    quantizer = std::make_shared<const ScalarQuantizer>(ScalarQuantizer::fromRanges(ranges.data(), ranges.data() + dim, dim));
  }

  std::shared_ptr<Storage> storage;
  if (count > 0) {
    if (map) {
      storage = std::make_shared<Storage>(file);
      storage->rowData = file->view(rows, verify);
      storage->biasData = reinterpret_cast<const float*>(file->view(bias, true));
      storage->idData = reinterpret_cast<const uint64_t*>(file->view(ids, true));
    } else {
      try {
        storage = std::make_shared<Storage>(std::max<size_t>(count, kMinCapacity), dim, element, false);
      } catch (const std::bad_alloc&) {
        throw Error(ErrorCode::OutOfMemory, "Out of memory loading " + std::to_string(count) + " vectors");
      }
      file->read(rows, const_cast<void*>(storage->rowData));
      file->read(bias, storage->l2Bias.data());
      file->read(ids, storage->ids.data());
    }
  }
  out.attributes = readAttributes(*file, count);
  index.current_ = Snapshot{std::move(storage), count, count, count, nullptr, std::move(quantizer)};
  if (count == 0) return out;
  if (map) {
    index.idMapBuilt_ = false;  // built by the first write or lookup: a mapped open reads no ids
  } else {
    index.buildIdMap(index.current_, path);
  }
  return out;
}

}  // namespace ebrix
