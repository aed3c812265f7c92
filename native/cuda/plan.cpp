#include "plan.h"

#include <algorithm>
#include <string>

#include "../core/error.h"

namespace ebrix::gpu {
namespace {

size_t nextPow2(size_t x) {
  size_t p = 1;
  while (p < x) p <<= 1;
  return p;
}

size_t roundUp(size_t x, size_t to) { return (x + to - 1) / to * to; }

// Slots per query: the k kept, one step's worth of admissions, and slack so that a pool is
// compacted only after max(k, 64) more candidates arrived (amortised O(1) per candidate).
size_t poolCapacityFor(size_t k, size_t step) { return roundUp(k + step + std::max<size_t>(k, 64), 32); }

}  // namespace

size_t poolSharedBytes(size_t queries, size_t capacity, size_t k, bool warpSelect) {
  const size_t pools = queries * capacity * 8;                   // u32 key + u32 row per slot
  // One scratch area per selecting group (a warp per query, or the block): the compaction's
  // survivors, then the ids of the final sort (a power of two of them), a radix histogram and
  // four words to broadcast digits and counts.
  const size_t groups = warpSelect ? queries : 1;
  const size_t scratch = groups * (nextPow2(k) * 8 + 256 * 4 + 16);
  const size_t counters = queries * 8;  // pool size and admission threshold
  return pools + scratch + counters;
}

SearchPlan planSearch(const PlanInput& in) {
  if (in.k == 0 || in.k > 2048) {
    throw Error(ErrorCode::InvalidArgument, "GPU search needs k in [1, 2048], got " + std::to_string(in.k));
  }
  if (in.rows == 0 || in.queries == 0 || in.dim == 0) {
    throw Error(ErrorCode::InvalidArgument, "GPU search plan needs rows, queries and dim > 0");
  }
  SearchPlan plan;
  plan.rowChunks = (in.dim * in.elementBytes + 15) / 16;
  plan.rowStride = plan.rowChunks * 16 / in.elementBytes;
  plan.warpSelect = in.k <= kWarpSelectMaxK;

  bool fused = in.force == PlanInput::Path::FusedScan ||
               (in.force == PlanInput::Path::Auto && in.queries <= kMaxFusedQueries);
  // The scan keeps its queries and pools in shared memory; the GEMM path needs neither.
  const bool tensorScan = in.elementBytes == 2;
  const size_t groupLanes = std::min<size_t>(32, nextPow2(plan.rowChunks));
  auto stepFor = [&](size_t q) {
    return tensorScan ? (kScanThreads / 32) * kTensorTileRows * kTensorTilesPerWarp
                      : (kScanThreads / 32) * (32 / groupLanes) * rowsPerLaneGroup(q);
  };
  auto sharedFor = [&](size_t q) {
    // Query values: 8 slots of the storage type (tensor scan), or q float rows.
    const size_t queryBytes = tensorScan ? kTensorQueries * plan.rowStride * 2 : q * plan.rowStride * 4;
    return poolSharedBytes(q, poolCapacityFor(in.k, stepFor(q)), in.k, plan.warpSelect) + queryBytes;
  };
  // Very wide rows, or a k whose pool does not fit even for one query: the GEMM path.
  if (fused && in.force == PlanInput::Path::Auto && sharedFor(1) > in.sharedPerBlock) fused = false;
  // Both paths finish with the select kernel (tile select or merge of the scan's partials).
  const size_t selectQueries = plan.warpSelect ? kSelectThreads / 32 : 1;
  const size_t selectStep = plan.warpSelect ? 32 * 4 : kSelectThreads * 4;
  const size_t selectCapacity = poolCapacityFor(in.k, selectStep);
  plan.selectCapacity = selectCapacity;
  plan.selectSharedBytes = poolSharedBytes(selectQueries, selectCapacity, in.k, plan.warpSelect);

  if (fused) {
    plan.path = SearchPlan::Path::FusedScan;
    plan.tensorScan = tensorScan;
    plan.groupLanes = groupLanes;
    size_t perBlock = nextPow2(std::min(in.queries, kMaxFusedQueries));
    while (perBlock > 1 && sharedFor(perBlock) > in.sharedPerBlock) perBlock /= 2;
    if (sharedFor(perBlock) > in.sharedPerBlock) {
      throw Error(ErrorCode::InvalidArgument,
                  "GPU search: k = " + std::to_string(in.k) + " at dim " + std::to_string(in.dim) +
                      " needs more shared memory than a block has");
    }
    plan.rowsPerStep = stepFor(perBlock);
    plan.poolCapacity = poolCapacityFor(in.k, plan.rowsPerStep);
    plan.queriesPerBlock = perBlock;
    plan.queryGroups = (in.queries + perBlock - 1) / perBlock;
    if (plan.queryGroups > 65535) {  // the grid's y limit (only a forced scan gets here)
      throw Error(ErrorCode::InvalidArgument, "GPU search: too many queries for the fused scan in one call");
    }
    plan.scanSharedBytes = sharedFor(perBlock);
    // The deepest ring (4 or 3 slots) that still lets two blocks share a multiprocessor.
    plan.stageBytes = plan.rowsPerStep * plan.rowChunks * 16;
    const size_t ringBudget =
        std::min(in.sharedPerBlock, in.sharedPerMultiprocessor / kScanBlocksPerMultiprocessor - 1024);
    for (size_t stages : {size_t(4), size_t(3)}) {
      if (plan.tensorScan) break;  // loads straight into the mma fragments
      if (plan.scanSharedBytes + stages * plan.stageBytes <= ringBudget) {
        plan.scanStages = stages;
        break;
      }
    }
    plan.scanSharedBytes += plan.scanStages * plan.stageBytes;
    // One wave: every block resident at once (as many per multiprocessor as the registers
    // and shared memory allow), but never blocks with less than a few steps of rows each.
    const size_t resident = std::clamp<size_t>(in.sharedPerMultiprocessor / (plan.scanSharedBytes + 1024), 1,
                                               kScanBlocksPerMultiprocessor);
    const size_t wanted = in.multiprocessors * resident;
    const size_t byRows = std::max<size_t>(1, in.rows / (plan.rowsPerStep * 4));
    plan.scanBlocks = std::max<size_t>(1, std::min(wanted, byRows));
    plan.rowsPerBlock = roundUp((in.rows + plan.scanBlocks - 1) / plan.scanBlocks, plan.rowsPerStep);
    plan.scanBlocks = (in.rows + plan.rowsPerBlock - 1) / plan.rowsPerBlock;
  } else {
    plan.path = SearchPlan::Path::Gemm;
    plan.poolCapacity = selectCapacity;
    plan.stateCapacity = selectCapacity - selectStep;
    plan.queryTile = std::min<size_t>(in.queries, 4096);
    size_t rowTile = in.scoreTileBytes / (plan.queryTile * 4) / 256 * 256;
    rowTile = std::max<size_t>(rowTile, 256);
    plan.rowTile = std::min(rowTile, roundUp(in.rows, 256));
  }
  if (plan.selectSharedBytes > in.sharedPerBlock) {
    throw Error(ErrorCode::InvalidArgument, "GPU search: k = " + std::to_string(in.k) + " does not fit in shared memory");
  }
  return plan;
}

IvfPqScanPlan planIvfPqScan(size_t dim, size_t m, unsigned nbits, size_t k, size_t sharedPerBlock) {
  if (k == 0 || k > 2048) {
    throw Error(ErrorCode::InvalidArgument, "GPU IVF-PQ search needs k (× refineFactor with refine vectors) in [1, 2048], got " +
                                                std::to_string(k));
  }
  IvfPqScanPlan plan;
  plan.poolCapacity = poolCapacityFor(k, kIvfPqThreads);
  plan.poolBytes = roundUp(poolSharedBytes(1, plan.poolCapacity, k, false), 16);
  plan.sharedBytes = plan.poolBytes + (m * (size_t(1) << nbits) + dim) * sizeof(float);
  if (plan.sharedBytes > sharedPerBlock) {
    throw Error(ErrorCode::InvalidArgument,
                "GPU IVF-PQ search: the lookup table (m = " + std::to_string(m) + ", nbits = " + std::to_string(nbits) +
                    "), the query (dim = " + std::to_string(dim) + ") and a pool for k = " + std::to_string(k) + " need " +
                    std::to_string(plan.sharedBytes) + " bytes of shared memory; a block has " +
                    std::to_string(sharedPerBlock));
  }
  return plan;
}

size_t ivfpqProbesPerBlock(size_t queries, size_t nprobe, size_t multiprocessors) {
  const size_t target = 8 * std::max<size_t>(multiprocessors, 1);
  const size_t pairs = queries * nprobe;
  if (pairs <= target) return 1;
  return std::clamp<size_t>(pairs / target, 1, std::max<size_t>(nprobe, 1));
}

std::vector<size_t> mergeRounds(size_t listLength, size_t k) {
  std::vector<size_t> rounds;
  const size_t segment = std::max(kMergeSegment, 4 * k);
  while (listLength > segment) {
    const size_t segments = (listLength + segment - 1) / segment;
    rounds.push_back(segments);
    listLength = segments * k;
  }
  rounds.push_back(1);
  return rounds;
}

}  // namespace ebrix::gpu
