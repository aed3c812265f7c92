#include "exact_search.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "aligned_buffer.h"
#include "error.h"
#include "simd/half.h"
#include "topk.h"

namespace ebrix {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Rows scored per streaming step: at most this many, and about kScanBlockBytes of them, so a
// block read from memory for the first query is still in L2 for the others.
constexpr size_t kScanBlock = 256;
constexpr size_t kScanBlockBytes = size_t{128} << 10;
// Bytes of per-thread collectors one query chunk may hold.
constexpr size_t kCollectorBudget = size_t{128} << 20;

// Row ranges handed to threads: enough tasks to balance, each big enough to amortise setup.
size_t rowsPerTask(size_t count, unsigned slots, size_t granule) {
  const size_t target = std::max<size_t>(1, count / (size_t{slots} * 8));
  const size_t minimum = granule * 16;
  size_t rows = std::max(target, minimum);
  rows = (rows + granule - 1) / granule * granule;
  return rows;
}

// The allow bitset of a search (SearchParams), read 32 rows at a time.
struct AllowBits {
  const uint32_t* words = nullptr;  // null: every row
  size_t count = 0;

  bool all() const { return words == nullptr; }
  bool row(size_t r) const { return words == nullptr || (r / 32 < count && (words[r / 32] >> (r % 32) & 1u)); }
  // Bits of rows [first, first + 32): bit j for row first + j.
  uint32_t window(size_t first) const {
    if (words == nullptr) return ~0u;
    const size_t word = first / 32, shift = first % 32;
    const uint32_t low = word < count ? words[word] >> shift : 0u;
    const uint32_t high = shift != 0 && word + 1 < count ? words[word + 1] << (32 - shift) : 0u;
    return low | high;
  }
};

size_t elementBytes(const RowSet& rows) {
  switch (rows.element) {
    case simd::Element::F32: return sizeof(float);
    case simd::Element::I8: return sizeof(uint8_t);
    default: return sizeof(uint16_t);
  }
}

// The 16-bit kernels of the row set's element type; null for float32 rows.
const simd::Kernels16* halfKernels(const RowSet& rows, const simd::Kernels& kernels) {
  switch (rows.element) {
    case simd::Element::F16: return &kernels.f16;
    case simd::Element::BF16: return &kernels.bf16;
    default: return nullptr;
  }
}

const char* rowAddress(const RowSet& rows, size_t row) {
  if (rows.element == simd::Element::F32) return reinterpret_cast<const char*>(rows.vectors + row * rows.dim);
  if (rows.element == simd::Element::I8) return reinterpret_cast<const char*>(rows.codes + row * rows.dim);
  return reinterpret_cast<const char*>(rows.halves + row * rows.dim);
}

// Per-thread collectors for a chunk of queries.
struct SlotCollectors {
  std::vector<TopKCollector> perQuery;
};

void prepareSlots(std::vector<SlotCollectors>& slots, size_t queries, size_t k) {
  for (auto& slot : slots) {
    if (slot.perQuery.size() < queries) slot.perQuery.resize(queries);
    for (size_t q = 0; q < queries; ++q) slot.perQuery[q].reset(k);
  }
}

// The queries of a chunk quantized for i8 rows: dim signed bytes and a scale / offset each.
struct I8Queries {
  const int8_t* codes = nullptr;
  const I8Query* params = nullptr;
};

void streamingScan(const RowSet& rows, const float* queries, size_t queryCount,
                   const float* bias, AllowBits allow, const simd::Kernels& kernels, ThreadPool& pool,
                   unsigned slots, std::vector<SlotCollectors>& collectors, const I8Queries* i8) {
  const size_t dim = rows.dim;
  const size_t block = std::clamp<size_t>(kScanBlockBytes / (dim * elementBytes(rows)), 8, kScanBlock);
  const simd::Kernels16* half = halfKernels(rows, kernels);
  const size_t perTask = rowsPerTask(rows.count, slots, kScanBlock);
  const size_t tasks = (rows.count + perTask - 1) / perTask;
  pool.parallelFor(tasks, slots, [&](size_t task, unsigned slot) {
    float scores[kScanBlock];
    auto& mine = collectors[slot].perQuery;
    const size_t begin = task * perTask;
    const size_t end = std::min(rows.count, begin + perTask);
    // Spans of a block that hold allowed rows: 32-row groups with none are not scored, so a
    // selective filter reads less (at 1% of rows spread at random, ~70% of groups are empty).
    struct Span {
      size_t begin, end;
    };
    Span spans[kScanBlock / 32 + 1];
    for (size_t r0 = begin; r0 < end; r0 += block) {
      const size_t n = std::min(block, end - r0);
      size_t spanCount = 0;
      if (allow.all()) {
        spans[spanCount++] = {0, n};
      } else {
        for (size_t g = 0; g < n; g += 32) {
          const size_t len = std::min<size_t>(32, n - g);
          const uint32_t bits = allow.window(r0 + g) & (len == 32 ? ~0u : (1u << len) - 1u);
          if (bits == 0) continue;
          if (spanCount > 0 && spans[spanCount - 1].end == g) {
            spans[spanCount - 1].end = g + len;
          } else {
            spans[spanCount++] = {g, g + len};
          }
        }
      }
      for (size_t q = 0; q < queryCount; ++q) {
        TopKCollector& collector = mine[q];
        for (size_t si = 0; si < spanCount; ++si) {
          const size_t first = r0 + spans[si].begin;
          const size_t len = spans[si].end - spans[si].begin;
          if (i8 != nullptr) {
            const I8Query& p = i8->params[q];
            kernels.i8.scanRows(i8->codes + q * dim, rows.codes + first * dim, len, dim, p.scale, p.offset,
                                bias ? bias + first : nullptr, scores);
          } else if (half != nullptr) {
            half->scanRows(queries + q * dim, rows.halves + first * dim, len, dim, bias ? bias + first : nullptr, scores);
          } else {
            kernels.scanRows(queries + q * dim, rows.vectors + first * dim, len, dim, bias ? bias + first : nullptr,
                             scores);
          }
          float threshold = collector.threshold();
          for (size_t j = 0; j < len; ++j) {
            if (scores[j] >= threshold && allow.row(first + j)) {
              collector.offer(scores[j], static_cast<uint32_t>(first + j), rows.ids[first + j]);
              threshold = collector.threshold();
            }
          }
        }
      }
    }
  });
}

// Queries of a chunk, packed for the tile kernel: panel p holds queries [p*MR, p*MR+MR) as
// dim steps of MR floats (zero where the last panel runs short).
AlignedBuffer<float> packQueries(const float* queries, size_t queryCount, size_t dim, int mr) {
  const size_t panels = (queryCount + mr - 1) / mr;
  AlignedBuffer<float> packed(panels * dim * mr);
  std::fill(packed.data(), packed.data() + packed.size(), 0.0f);
  for (size_t q = 0; q < queryCount; ++q) {
    float* panel = packed.data() + (q / mr) * dim * mr;
    const size_t lane = q % mr;
    const float* src = queries + q * dim;
    for (size_t k = 0; k < dim; ++k) panel[k * mr + lane] = src[k];
  }
  return packed;
}

float widenOne(simd::Element element, uint16_t h) {
  return element == simd::Element::F16 ? simd::f16ToFloat(h) : simd::bf16ToFloat(h);
}

// Transposes up to NR rows into dim steps of NR floats, followed by NR biases. Missing rows
// get zero vectors and a -inf bias. 16-bit rows are widened to float on the way.
void packRows(const RowSet& rows, size_t first, size_t n, const float* bias,
              const simd::Kernels& kernels, float* out) {
  const size_t dim = rows.dim;
  const int nr = kernels.tileCols;
  const bool full = n == static_cast<size_t>(nr);
  const simd::Kernels16* half = halfKernels(rows, kernels);
  if (half != nullptr && full && half->packPanel != nullptr) {
    half->packPanel(rows.halves + first * dim, dim, out);
  } else if (half == nullptr && full && kernels.packPanel != nullptr) {
    kernels.packPanel(rows.vectors + first * dim, dim, out);
  } else {
    for (size_t j = 0; j < n; ++j) {
      if (half != nullptr) {
        const uint16_t* src = rows.halves + (first + j) * dim;
        for (size_t k = 0; k < dim; ++k) out[k * nr + j] = widenOne(rows.element, src[k]);
      } else {
        const float* src = rows.vectors + (first + j) * dim;
        for (size_t k = 0; k < dim; ++k) out[k * nr + j] = src[k];
      }
    }
    for (size_t j = n; j < static_cast<size_t>(nr); ++j) {
      for (size_t k = 0; k < dim; ++k) out[k * nr + j] = 0.0f;
    }
  }
  float* biasOut = out + dim * nr;
  for (size_t j = 0; j < static_cast<size_t>(nr); ++j) {
    biasOut[j] = j < n ? (bias ? bias[first + j] : 0.0f) : kNegInf;
  }
}

void tiledScan(const RowSet& rows, const float* queries, size_t queryCount, const float* bias,
               AllowBits allow, const simd::Kernels& kernels, ThreadPool& pool, unsigned slots,
               std::vector<SlotCollectors>& collectors) {
  const size_t dim = rows.dim;
  const int mr = kernels.tileRows;
  const int nr = kernels.tileCols;
  const size_t panels = (queryCount + mr - 1) / mr;
  const AlignedBuffer<float> packedQueries = packQueries(queries, queryCount, dim, mr);

  const size_t perTask = rowsPerTask(rows.count, slots, nr);
  const size_t tasks = (rows.count + perTask - 1) / perTask;
  pool.parallelFor(tasks, slots, [&](size_t task, unsigned slot) {
    AlignedBuffer<float> packedRows(dim * nr + nr);
    alignas(64) float tileScores[simd::kMaxTileRows * simd::kMaxTileCols];
    float thresholds[simd::kMaxTileRows];
    uint32_t masks[simd::kMaxTileRows];
    auto& mine = collectors[slot].perQuery;
    const size_t begin = task * perTask;
    const size_t end = std::min(rows.count, begin + perTask);
    for (size_t r0 = begin; r0 < end; r0 += nr) {
      const size_t n = std::min<size_t>(nr, end - r0);
      // Columns past the last row are padding; with an empty collector's -inf threshold even
      // their -inf scores would pass the kernel's compare, so they are masked off here.
      // Rows the filter excludes are masked off the same way.
      const uint32_t valid = (n >= 32 ? ~0u : (1u << n) - 1u) & allow.window(r0);
      if (valid == 0) continue;
      // Ask for the next panel now, so that its rows stream in while this one is scored.
      if (r0 + nr < end) {
        const char* next = rowAddress(rows, r0 + nr);
        const size_t bytes = std::min<size_t>(nr, end - r0 - nr) * dim * elementBytes(rows);
        for (size_t offset = 0; offset < bytes; offset += 64) __builtin_prefetch(next + offset);
      }
      packRows(rows, r0, n, bias, kernels, packedRows.data());
      for (size_t p = 0; p < panels; ++p) {
        const size_t q0 = p * mr;
        const int count = static_cast<int>(std::min<size_t>(mr, queryCount - q0));
        for (int i = 0; i < count; ++i) thresholds[i] = mine[q0 + i].threshold();
        kernels.tile(packedQueries.data() + p * dim * mr, count, packedRows.data(), dim,
                     thresholds, tileScores, masks);
        for (int i = 0; i < count; ++i) {
          uint32_t mask = masks[i] & valid;
          if (mask == 0) continue;
          TopKCollector& collector = mine[q0 + i];
          const float* s = tileScores + i * nr;
          while (mask != 0) {
            const int j = __builtin_ctz(mask);
            mask &= mask - 1;
            collector.offer(s[j], static_cast<uint32_t>(r0 + j), rows.ids[r0 + j]);
          }
        }
      }
    }
  });
}

// `decoded`: dim floats of scratch for an i8 row.
float exactScore(Metric metric, const RowSet& rows, const simd::Kernels& kernels, const float* q, size_t row,
                 float* decoded) {
  const size_t dim = rows.dim;
  if (rows.element == simd::Element::I8) {
    rows.quantizer->decode(rows.codes + row * dim, decoded);
    return metric == Metric::L2 ? -kernels.l2sq(q, decoded, dim) : kernels.dot(q, decoded, dim);
  }
  if (const simd::Kernels16* half = halfKernels(rows, kernels)) {
    const uint16_t* x = rows.halves + row * dim;
    return metric == Metric::L2 ? -half->l2sq(q, x, dim) : half->dot(q, x, dim);
  }
  const float* x = rows.vectors + row * dim;
  return metric == Metric::L2 ? -kernels.l2sq(q, x, dim) : kernels.dot(q, x, dim);
}

}  // namespace

SearchOutput exactSearch(const RowSet& rows, const float* queries, size_t queryCount,
                         const SearchParams& params, const simd::Kernels& kernels,
                         ThreadPool& pool) {
  if (params.k == 0 || queryCount > std::numeric_limits<size_t>::max() / 16 / params.k) {
    throw Error(ErrorCode::InvalidArgument, "Expected a result of nq × k that fits in memory");
  }
  SearchOutput out;
  out.queries = queryCount;
  out.k = params.k;
  out.ids.assign(queryCount * params.k, kNoId);
  out.scores.assign(queryCount * params.k, kNegInf);
  if (rows.count == 0 || queryCount == 0) return out;

  const size_t dim = rows.dim;
  const size_t keep = std::min(params.k, rows.count);
  const float* bias = params.metric == Metric::L2 ? rows.l2Bias : nullptr;
  const bool i8 = rows.element == simd::Element::I8;
  // Candidates each query's collectors keep: the i8 scan ranks by approximate scores, so it
  // keeps more for the exact re-score to choose from.
  const size_t shortlist = i8 ? std::min(rows.count, keep * kI8Shortlist) : keep;

  const bool streaming = i8 || queryCount <= kStreamingMaxQueries;
  const size_t granule = streaming ? kScanBlock : static_cast<size_t>(kernels.tileCols);
  const size_t maxTasks = (rows.count + granule * 16 - 1) / (granule * 16);
  // The pool runs at most threadCount() threads on one job; sizing for more would only split
  // the rows, and the collectors, finer for nothing.
  const size_t usable = std::min<size_t>(params.threads, ThreadPool::shared().threadCount());
  const unsigned slots = static_cast<unsigned>(std::max<size_t>(1, std::min<size_t>(usable, maxTasks)));

  // Chunk the queries so that per-thread collectors stay within budget.
  const size_t collectorBytes = std::max<size_t>(2 * shortlist, shortlist + 64) * sizeof(Candidate);
  size_t chunk = std::max<size_t>(1, kCollectorBudget / (collectorBytes * slots));
  chunk = std::min(chunk, queryCount);
  if (!streaming) chunk = std::max<size_t>(chunk, std::min<size_t>(queryCount, kernels.tileRows));

  std::vector<SlotCollectors> collectors(slots);
  std::vector<std::vector<Candidate>> merged(slots);
  std::vector<int8_t> i8Codes;
  std::vector<I8Query> i8Params;
  for (size_t q0 = 0; q0 < queryCount; q0 += chunk) {
    const size_t n = std::min(chunk, queryCount - q0);
    const float* chunkQueries = queries + q0 * dim;
    prepareSlots(collectors, n, shortlist);
    const AllowBits allow{params.allowBits, params.allowWords};
    I8Queries i8Queries;
    if (i8) {
      i8Codes.resize(n * dim);
      i8Params.resize(n);
      for (size_t q = 0; q < n; ++q) {
        i8Params[q] = rows.quantizer->prepareQuery(chunkQueries + q * dim, i8Codes.data() + q * dim);
      }
      i8Queries = I8Queries{i8Codes.data(), i8Params.data()};
    }
    if (streaming) {
      streamingScan(rows, chunkQueries, n, bias, allow, kernels, pool, slots, collectors, i8 ? &i8Queries : nullptr);
    } else {
      tiledScan(rows, chunkQueries, n, bias, allow, kernels, pool, slots, collectors);
    }
    // Merge the threads' collectors and re-score the winners exactly, in parallel by query.
    constexpr size_t kMergeBlock = 32;
    pool.parallelFor((n + kMergeBlock - 1) / kMergeBlock, slots, [&](size_t block, unsigned slot) {
      std::vector<Candidate>& best = merged[slot];
      std::vector<float> decoded(i8 ? dim : 0);
      const size_t end = std::min(n, (block + 1) * kMergeBlock);
      for (size_t q = block * kMergeBlock; q < end; ++q) {
        best.clear();
        for (auto& other : collectors) other.perQuery[q].drainInto(best);
        selectBest(best, shortlist);
        const float* query = chunkQueries + q * dim;
        for (auto& c : best) {
          c.score = exactScore(params.metric, rows, kernels, query, c.row, decoded.data());
          if (std::isnan(c.score)) c.score = kNegInf;  // keeps the sort's ordering strict
        }
        std::sort(best.begin(), best.end(), ranksBefore);
        const size_t base = (q0 + q) * params.k;
        for (size_t i = 0; i < std::min(keep, best.size()); ++i) {
          out.ids[base + i] = best[i].id;
          out.scores[base + i] = best[i].score;
        }
      }
    });
  }
  return out;
}

}  // namespace ebrix
