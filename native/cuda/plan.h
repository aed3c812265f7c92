// How a GPU search is cut into launches: which path, how many queries share a block, how
// large the candidate pools and score tiles are, and how much shared memory that takes.
// Plain C++ so that the tests run it on machines without a GPU.
#pragma once

#include <cstddef>
#include <vector>

namespace ebrix::gpu {

struct PlanInput {
  size_t queries = 0;
  size_t rows = 0;
  size_t dim = 0;
  size_t elementBytes = 4;        // 4 (f32) or 2 (f16, bf16)
  size_t k = 10;
  size_t multiprocessors = 132;
  size_t sharedPerBlock = 227 * 1024;   // the opt-in limit per block
  size_t sharedPerMultiprocessor = 228 * 1024;
  size_t scoreTileBytes = 256u << 20;   // GEMM path: bytes of one score tile (two are used)
  enum class Path { Auto, FusedScan, Gemm } force = Path::Auto;
};

struct SearchPlan {
  enum class Path { FusedScan, Gemm } path = Path::FusedScan;
  // Rows are stored padded to whole 16-byte chunks.
  size_t rowChunks = 0;      // 16-byte chunks per row
  size_t rowStride = 0;      // elements per stored row
  // Selection: one warp per query (k <= 256) or one block per query.
  bool warpSelect = true;
  size_t poolCapacity = 0;   // candidate slots per query: the scan's (fused) or the tile select's
  size_t selectCapacity = 0; // candidate slots per query of the select kernel (tiles, final merge)

  // Fused scan.
  bool tensorScan = false;   // f16 / bf16 rows: mma.sync over 16-row tiles, 8 query slots
  size_t groupLanes = 0;     // lanes that share one row (a power of two, <= 32)
  size_t rowsPerStep = 0;    // rows a block scores between two pool checks
  size_t queriesPerBlock = 0;  // the kernel's query capacity (1, 2, 4 or 8)
  size_t queryGroups = 0;    // blocks in y: ceil(queries / queriesPerBlock)
  size_t scanBlocks = 0;     // blocks in x, each scanning one contiguous row range
  size_t rowsPerBlock = 0;
  size_t scanSharedBytes = 0;
  // Rows staged through shared memory with asynchronous copies: `scanStages` slots of one
  // step each (0: rows too wide for the ring, read straight from global memory).
  size_t scanStages = 0;
  size_t stageBytes = 0;

  // GEMM tiles.
  size_t queryTile = 0;
  size_t rowTile = 0;
  size_t selectSharedBytes = 0;  // tile select and final merge kernels
  // GEMM path: candidates a query keeps between tiles (compacted to k only beyond this).
  size_t stateCapacity = 0;
};

// Lengths of the merge rounds for `listLength` candidates per query: each round cuts every
// query's list into segments of max(kMergeSegment, 4k) and keeps k per segment, until one
// segment is left (the final, sorted round). Returns the segment counts, last one 1.
std::vector<size_t> mergeRounds(size_t listLength, size_t k);

constexpr size_t kScanThreads = 256;
// Scan blocks resident per multiprocessor (the kernel's launch bounds hold it to 128
// registers per thread so that two fit).
constexpr size_t kScanBlocksPerMultiprocessor = 2;
constexpr size_t kSelectThreads = 256;
// Rows each lane group scores per pass: 4, or 2 with 8 queries (whose accumulators would
// otherwise crowd out the registers that keep a second batch of loads in flight).
constexpr size_t rowsPerLaneGroup(size_t queriesPerBlock) { return queriesPerBlock >= 8 ? 2 : 4; }
// Tensor-core scan: rows per warp tile (the mma's m), tiles per warp per step, query slots.
constexpr size_t kTensorTileRows = 16;
constexpr size_t kTensorTilesPerWarp = 2;
constexpr size_t kTensorQueries = 8;
// Lists longer than this are merged in two or more rounds, many warps per query.
constexpr size_t kMergeSegment = 4096;
constexpr size_t kMaxFusedQueries = 8;      // above this the GEMM path is used
constexpr size_t kWarpSelectMaxK = 256;

// Shared memory the candidate pools of `queries` queries take (keys + rows per slot, the
// compaction scratch, the radix histograms).
size_t poolSharedBytes(size_t queries, size_t capacity, size_t k, bool warpSelect);

// The IVF-PQ scan: one block of kIvfPqThreads per (query, probed list) builds the list's
// lookup table in shared memory, scores the list's codes and keeps its k best in a
// block-wide pool. Shared memory: the pool (with its select scratch), then the m × 2^nbits
// float table, then the query (minus the list's centroid for l2) as dim floats.
constexpr size_t kIvfPqThreads = 256;
struct IvfPqScanPlan {
  size_t poolCapacity = 0;
  size_t poolBytes = 0;    // a multiple of 16; the table starts here
  size_t sharedBytes = 0;  // the whole block's
};
// Throws ebrix::Error(InvalidArgument) when k is outside [1, 2048] or the block's shared
// memory would exceed sharedPerBlock (a very large m × 2^nbits, dim or k).
IvfPqScanPlan planIvfPqScan(size_t dim, size_t m, unsigned nbits, size_t k, size_t sharedPerBlock);
// Probed lists per scan block for `queries` queries of `nprobe` lists: one while that keeps
// fewer than 8 blocks per multiprocessor, else as many as still leave that many (at most
// nprobe). A block builds an ip table once for all its lists and hands the merge one list.
size_t ivfpqProbesPerBlock(size_t queries, size_t nprobe, size_t multiprocessors);

// Throws ebrix::Error(InvalidArgument) for k == 0, k > 2048 or an empty index.
SearchPlan planSearch(const PlanInput& input);

}  // namespace ebrix::gpu
