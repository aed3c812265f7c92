#include "flat.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <unordered_set>

#include "error.h"
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

FlatIndex::Storage::Storage(size_t cap, size_t dim, simd::Element element)
    : capacity(cap),
      vectors(element == simd::Element::F32 ? cap * dim : 0),
      halves(element == simd::Element::F16 || element == simd::Element::BF16 ? cap * dim : 0),
      codes(element == simd::Element::I8 ? cap * dim : 0),
      l2Bias(cap),
      ids(cap) {}

FlatIndex::FlatIndex(size_t dim, Metric metric, simd::Level level, unsigned threads, simd::Element storage)
    : dim_(dim),
      metric_(metric),
      kernels_(&simd::kernelsFor(level)),
      threads_(threads == 0 ? ThreadPool::hardwareThreads() : threads),
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

size_t FlatIndex::size() const { return snapshot().count; }

size_t FlatIndex::memoryBytes() const {
  const Snapshot snap = snapshot();
  size_t bytes = snap.quantizer ? snap.quantizer->memoryBytes() : 0;
  if (!snap.storage) return bytes;
  bytes += snap.storage->capacity * (dim_ * elementBytes() + sizeof(float) + sizeof(uint64_t));
  return bytes + idMapBytes_.load(std::memory_order_relaxed);
}

void FlatIndex::add(const uint64_t* ids, const float* vectors, size_t count) {
  if (count == 0) return;
  std::lock_guard<std::mutex> writeLock(writeMutex_);
  const Snapshot snap = snapshot();
  if (element_ == simd::Element::I8 && !snap.quantizer) {
    throw Error(ErrorCode::NotTrained, "The index (storage 'i8') must be trained before vectors are added");
  }

  // Validate everything before touching the index.
  requireFinite(vectors, count, dim_, "vectors");
  requireStorable(vectors, count, "vectors");
  requireNewIds(ids, count, rowOfId_);
  const size_t newCount = snap.count + count;
  if (newCount > kMaxRows) {
    throw Error(ErrorCode::InvalidArgument,
                "A flat index holds at most " + std::to_string(kMaxRows) + " vectors");
  }

  std::shared_ptr<Storage> target = snap.storage;
  try {
    rowOfId_.reserve(newCount);
    if (!target || target->capacity < newCount) {
      const size_t oldCapacity = target ? target->capacity : 0;
      const size_t capacity = std::max({newCount, oldCapacity + oldCapacity / 2, kMinCapacity});
      auto grown = std::make_shared<Storage>(capacity, dim_, element_);
      if (snap.count > 0) {
        if (element_ == simd::Element::F32) {
          std::memcpy(grown->vectors.data(), target->vectors.data(), snap.count * dim_ * sizeof(float));
        } else if (element_ == simd::Element::I8) {
          std::memcpy(grown->codes.data(), target->codes.data(), snap.count * dim_);
        } else {
          std::memcpy(grown->halves.data(), target->halves.data(), snap.count * dim_ * sizeof(uint16_t));
        }
        std::memcpy(grown->l2Bias.data(), target->l2Bias.data(), snap.count * sizeof(float));
        std::memcpy(grown->ids.data(), target->ids.data(), snap.count * sizeof(uint64_t));
      }
      target = std::move(grown);
    }
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::OutOfMemory,
                "Out of memory growing the index to " + std::to_string(newCount) + " vectors");
  }

  // Rows past snap.count are invisible to every reader until the snapshot below is published.
  try {
    for (size_t i = 0; i < count; ++i) rowOfId_.emplace(ids[i], static_cast<uint32_t>(snap.count + i));
  } catch (const std::bad_alloc&) {
    for (size_t i = 0; i < count; ++i) rowOfId_.erase(ids[i]);  // none of them was published
    throw Error(ErrorCode::OutOfMemory, "Out of memory indexing the ids of " + std::to_string(count) + " vectors");
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

  // The id → row map, estimated: a node per id (key, value, next pointer, cached hash) and
  // the bucket array. Kept in an atomic so memoryUsage() never waits for a running add.
  idMapBytes_.store(rowOfId_.size() * (sizeof(uint64_t) + sizeof(uint32_t) + 2 * sizeof(void*)) +
                        rowOfId_.bucket_count() * sizeof(void*),
                    std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(snapshotMutex_);
  current_ = Snapshot{std::move(target), newCount, snap.quantizer};
}

SearchOutput FlatIndex::search(const float* queries, size_t queryCount, size_t k, unsigned threads,
                               const uint32_t* allowBits, size_t allowWords) const {
  if (k == 0) throw Error(ErrorCode::InvalidArgument, "Expected a positive integer for k but received 0");
  requireFinite(queries, queryCount, dim_, "queries");
  requireStorable(queries, queryCount, "queries");
  const Snapshot snap = snapshot();
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
    rows.vectors = snap.storage->vectors.data();
    rows.halves = snap.storage->halves.data();
    rows.codes = snap.storage->codes.data();
    rows.ids = snap.storage->ids.data();
    rows.l2Bias = snap.storage->l2Bias.data();
  }
  rows.quantizer = snap.quantizer.get();  // i8: the exact search quantizes each query itself
  rows.count = snap.count;
  rows.dim = dim_;

  SearchParams params;
  params.k = k;
  params.metric = metric_;
  params.allowBits = allowBits;
  params.allowWords = allowWords;
  params.threads = threads == 0 ? threads_ : threads;
  return exactSearch(rows, prepared, queryCount, params, *kernels_, ThreadPool::shared());
}

}  // namespace ebrix
