// Exact top-k over row-major float32, f16 or bf16 vectors, fused: scores are produced a register tile at
// a time and filtered against each query's running threshold at once, so the queries ×
// rows score matrix never exists.
//
// Two paths:
//  - few queries: a streaming scan (rows read once, at memory bandwidth), split over threads
//    by row ranges;
//  - many queries: GEMM-like register tiles (tileRows queries × tileCols rows) over packed
//    panels: a panel of rows is transposed once into L1 and scored against every query.
// Either way each thread keeps its own collectors and they are merged at the end; the final
// scores of the k winners are recomputed with the plain dot / l2 kernel, so they do not
// depend on which path or tile produced them. 16-bit rows are widened to float as they are
// read (the tiled path widens while packing a panel); products and sums stay float32.
//
// i8 rows (codes of a ScalarQuantizer, sq.h) take the streaming scan at every batch size:
// each query is quantized to signed bytes and scored by integer dot products (KernelsI8),
// and the scan's row blocks (about 128 KiB, L2-resident) are shared by all queries of a
// chunk, so many queries still read the codes from memory once per chunk; the threads split
// the rows as for the other types. A register-tiled integer kernel would be faster for large
// batches but is not written. The scan shortlists kI8Shortlist × k candidates per query,
// which are re-scored exactly on the decoded rows with the float query.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "metric.h"
#include "simd/kernels.h"
#include "sq.h"
#include "thread_pool.h"

namespace ebrix {

struct RowSet {
  // The rows, count × dim, row-major: `vectors` for F32, `halves` (f16 / bf16 bit patterns)
  // otherwise. The queries of a 16-bit row set must already be rounded to its type.
  simd::Element element = simd::Element::F32;
  const float* vectors = nullptr;
  const uint16_t* halves = nullptr;
  // I8: `codes` (count × dim bytes) of `quantizer`; the queries are the float queries (normalised
  // for cosine), quantized by the search itself.
  const uint8_t* codes = nullptr;
  const ScalarQuantizer* quantizer = nullptr;
  const uint64_t* ids = nullptr;   // count
  // For l2 only: -0.5 * |x|^2 per row. Ranking by q·x - 0.5|x|^2 equals ranking by -|q-x|^2,
  // so l2 runs on the inner-product kernels with this per-row bias.
  const float* l2Bias = nullptr;
  size_t count = 0;
  size_t dim = 0;
};

struct SearchParams {
  size_t k = 10;
  Metric metric = Metric::InnerProduct;  // cosine expects rows and queries already normalised
  unsigned threads = 1;
  // Pre-filter: bit r of word r/32 allows row r; rows past the last word are not allowed.
  // Null: every row. Tested before a score is offered, so filtered results stay exact.
  const uint32_t* allowBits = nullptr;
  size_t allowWords = 0;
};

struct SearchOutput {
  size_t queries = 0;
  size_t k = 0;
  std::vector<uint64_t> ids;  // queries × k, best first, padded with kNoId
  std::vector<float> scores;  // queries × k, padded with -inf
};

// Batches of at most this many queries take the streaming path (every batch, for i8 rows).
constexpr size_t kStreamingMaxQueries = 8;

// i8 rows: candidates per result the integer scan keeps for the exact re-score.
constexpr size_t kI8Shortlist = 2;

SearchOutput exactSearch(const RowSet& rows, const float* queries, size_t queryCount,
                         const SearchParams& params, const simd::Kernels& kernels,
                         ThreadPool& pool);

}  // namespace ebrix
