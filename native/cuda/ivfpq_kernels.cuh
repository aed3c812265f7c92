// Launchers of the GPU IVF-PQ index's kernels (ivfpq_kernels.cu): the query rotation (OPQ),
// the list scan with lookup tables in shared memory, and the exact re-score of a shortlist
// on refine vectors. Every launch goes on the given stream and is checked by the caller.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

#include "kernels.cuh"  // Allow
#include "plan.h"

namespace ebrix::gpu {

// One inverted list in device memory: `size` codes of `codeStride` bytes (plain layout,
// zero padded to a multiple of 4) and their row numbers (add order).
struct IvfPqListView {
  const uint8_t* codes = nullptr;
  const uint32_t* rows = nullptr;
  uint32_t size = 0;
  uint32_t reserved = 0;
};

constexpr uint32_t kNoList = 0xFFFFFFFFu;

struct IvfPqScanArgs {
  const IvfPqListView* lists = nullptr;  // nlist views
  const float* queries = nullptr;        // [query][dim], rotated (the PQ's space)
  const float* rotatedCentroids = nullptr;  // [list][dim], l2 only
  const float* codebooks = nullptr;      // [m][2^nbits][dim / m]
  const uint32_t* probeLists = nullptr;  // [query][nprobe], kNoList for none
  const float* probeScores = nullptr;    // [query][nprobe]: q·c, the list constant for ip
  const uint64_t* rowIds = nullptr;      // by row: ranks exact ties (smaller first)
  Allow allow;
  uint32_t dim = 0;
  uint32_t m = 0;
  uint32_t nbits = 8;
  uint32_t nprobe = 0;
  // Probed lists one block scans in turn (into one pool): ip and cosine build the query's
  // table once for all of them; l2 rebuilds it per list (it depends on the centroid).
  uint32_t probesPerBlock = 1;
  uint32_t codeStride = 0;
  bool l2 = false;
  uint32_t k = 0;
  uint32_t sortSlots = 0;  // set by the launcher
  IvfPqScanPlan plan;
  uint32_t* partKeys = nullptr;  // [query][probe group][k]: each block's k best
  uint32_t* partRows = nullptr;
};

// out[q] = R · in[q] for n queries (R: dim × dim, row-major).
void launchRotate(const float* rotation, const float* in, float* out, size_t n, uint32_t dim, cudaStream_t stream);

// One block per (query, group of probesPerBlock probed lists) of `queries` queries.
void launchIvfPqScan(const IvfPqScanArgs& args, size_t queries, cudaStream_t stream);

// Exact scores of each query's `keep` candidates (candidate rows as uint64, kNoId for none)
// on the refine vectors (float32 or f16, `stride` elements per row): keys / rows
// [query][keep] for the final merge (key 0 for none). ip and cosine: q·x; l2: -|q - x|^2.
void launchRefine(const uint64_t* candidates, const float* queries, size_t queryCount, uint32_t keep,
                  const void* vectors, bool half, uint32_t dim, uint32_t stride, bool l2, uint32_t* keys,
                  uint32_t* rows, cudaStream_t stream);

// rowIds[first + i] = first + i for i < n (the ids that make a merge return row numbers).
void launchIota(uint64_t* rowIds, size_t first, size_t n, cudaStream_t stream);

}  // namespace ebrix::gpu
