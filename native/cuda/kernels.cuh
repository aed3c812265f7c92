// Launchers of the GPU index's kernels (kernels.cu). Host code calls these; every launch
// goes on the given stream and is checked by the caller with cudaGetLastError.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

#include "gpu_index.h"
#include "plan.h"

namespace ebrix::gpu {

// Rows as stored: `stride` elements per row (a whole number of 16-byte chunks, zero padded).
struct DeviceRows {
  const void* vectors = nullptr;
  const uint64_t* ids = nullptr;
  const float* l2Bias = nullptr;  // null unless the metric is l2
  uint32_t count = 0;
  uint32_t dim = 0;
  uint32_t stride = 0;
  Storage storage = Storage::F32;
};

struct Allow {
  const uint32_t* bits = nullptr;  // null: every row
  uint32_t words = 0;
};

// Converts `count` float32 rows (dim each, row-major) into the storage type at `dest`
// (stride elements per row, padding zeroed) and, when bias is non-null, writes
// bias[r] = -|x~|^2 / 2 of the rounded row.
void launchStoreRows(Storage storage, const float* source, size_t count, uint32_t dim, uint32_t stride,
                     void* dest, float* bias, cudaStream_t stream);

// Random rows in [-1, 1) straight on the device (benchmarks), with the same outputs.
void launchRandomRows(Storage storage, size_t count, uint32_t dim, uint32_t stride, uint64_t seed,
                      uint64_t firstRow, void* dest, float* bias, cudaStream_t stream);

// Rounds float32 queries to the storage type (padded rows) and writes |q~|^2 per query.
void launchPrepareQueries(Storage storage, const float* source, size_t queries, uint32_t dim,
                          uint32_t stride, void* dest, float* norms, cudaStream_t stream);

// Few queries: one pass over the rows; each block leaves its k best per query in
// partKeys / partRows ([query][block][k], empty slots have key 0).
void launchFusedScan(const DeviceRows& rows, const void* queries, size_t queryCount, Allow allow,
                     const SearchPlan& plan, size_t k, uint32_t* partKeys, uint32_t* partRows,
                     cudaStream_t stream);

// Many queries: merges one GEMM score tile (tileRows × tileQueries, column-major, ld =
// ldScores; tile row i is index row rowOffset + i, column j is query j) into the running
// candidates of each query, kept in `state` ([query][plan.stateCapacity], zeroed first).
struct SelectState {
  uint32_t* keys = nullptr;
  uint32_t* rows = nullptr;
  uint32_t* size = nullptr;
  uint32_t* threshold = nullptr;
};
void launchTileSelect(const DeviceRows& rows, const float* scores, size_t ldScores, uint32_t tileRows,
                      uint32_t rowOffset, size_t tileQueries, Allow allow, const SearchPlan& plan, size_t k,
                      SelectState state, cudaStream_t stream);

// One merge round over per-query lists of listLength (key, row) entries at
// [query][listLength] (empty entries have key 0). With segments > 1 each list is cut into
// that many pieces and each piece's k best go to partKeys / partRows ([query][segment][k]);
// with segments == 1 the k best are sorted best first and written as scores (l2:
// 2·s - |q|^2) and ids, padded with kNoId / -inf.
void launchMergeRound(const DeviceRows& rows, const uint32_t* listKeys, const uint32_t* listRows, size_t listLength,
                      size_t queryCount, size_t segments, const SearchPlan& plan, size_t k, uint32_t* partKeys,
                      uint32_t* partRows, const float* queryNorms, bool l2, float* outScores, uint64_t* outIds,
                      cudaStream_t stream);

// Every merge round of per-query candidate lists (mergeRounds in plan.h) down to sorted
// results, with stream-ordered scratch between rounds. Throws ebrix::Error on CUDA errors.
void mergeLists(const DeviceRows& rows, const uint32_t* keys, const uint32_t* rowsIn, size_t listLength,
                size_t queries, const SearchPlan& plan, size_t k, const float* norms, bool l2, float* outScores,
                uint64_t* outIds, cudaStream_t stream);

// dst item i = src item index[i], for i in [0, count); items of `words` 32-bit words (rows,
// ids, norms: compaction gathers each array by the slots it keeps). dst must not overlap src.
void launchGatherWords(const uint32_t* src, uint32_t* dst, const uint32_t* index, size_t count, size_t words,
                       cudaStream_t stream);

// Sums `bytes` of device memory with 16-byte loads (the read-bandwidth probe of the check).
void launchReadProbe(const void* data, size_t bytes, float* sink, int blocks, cudaStream_t stream);

}  // namespace ebrix::gpu
