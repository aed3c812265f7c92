// The host-side logic of the GPU search, tested without a GPU: the order-preserving score
// keys the selection runs on, and the launch plan (paths, tiling, shared memory budgets).
#include <cmath>
#include <limits>
#include <random>

#include "../../cuda/plan.h"
#include "../../cuda/select_common.h"
#include "../error.h"
#include "check.h"

using namespace ebrix;
using namespace ebrix::gpu;

TEST_CASE("gpu.score_keys_preserve_float_order") {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> values = {-inf, -3e38f, -1.f, -1e-30f, -0.f, 0.f, 1e-30f, 0.5f, 1.f, 3e38f, inf};
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1e6f, 1e6f);
  for (int i = 0; i < 1000; ++i) values.push_back(u(rng));
  for (float a : values) {
    CHECK(keyScore(scoreKey(a)) == a || (a == 0.f && keyScore(scoreKey(a)) == 0.f));
    CHECK(scoreKey(a) > kEmptyKey);
    for (float b : {-inf, -2.f, 0.f, 0.25f, 7e5f, inf}) {
      if (a < b) CHECK(scoreKey(a) < scoreKey(b));
      if (a > b) CHECK(scoreKey(a) > scoreKey(b));
    }
  }
  // NaN ranks as -inf, never above a real score, and never as an empty slot.
  CHECK(scoreKey(std::nanf("")) == scoreKey(-inf));
}

TEST_CASE("gpu.plan_picks_the_path_by_query_count") {
  PlanInput in;
  in.rows = 10'000'000;
  in.dim = 128;
  in.elementBytes = 2;
  in.k = 100;
  for (size_t nq : {size_t(1), size_t(3), size_t(8)}) {
    in.queries = nq;
    const SearchPlan plan = planSearch(in);
    CHECK(plan.path == SearchPlan::Path::FusedScan);
    CHECK(plan.queriesPerBlock >= nq);
    CHECK(plan.queryGroups == 1);
  }
  in.queries = 9;
  CHECK(planSearch(in).path == SearchPlan::Path::Gemm);
  in.force = PlanInput::Path::FusedScan;
  const SearchPlan forced = planSearch(in);
  CHECK(forced.path == SearchPlan::Path::FusedScan);
  CHECK(forced.queryGroups * forced.queriesPerBlock >= 9);
}

TEST_CASE("gpu.plan_scan_covers_every_row_once") {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 300; ++trial) {
    PlanInput in;
    in.rows = 1 + rng() % 3'000'000;
    in.dim = 1 + rng() % 1024;
    in.elementBytes = trial % 3 == 0 ? 4 : 2;
    in.k = 1 + rng() % 2048;
    in.queries = 1 + rng() % 8;
    in.multiprocessors = 1 + rng() % 160;
    const SearchPlan p = planSearch(in);
    CHECK(p.rowStride * in.elementBytes % 16 == 0);
    CHECK(p.rowStride >= in.dim);
    CHECK(p.groupLanes >= 1 && p.groupLanes <= 32 && (p.groupLanes & (p.groupLanes - 1)) == 0);
    // Blocks tile the rows: contiguous, disjoint, nothing left over, none empty.
    CHECK(p.scanBlocks * p.rowsPerBlock >= in.rows);
    CHECK((p.scanBlocks - 1) * p.rowsPerBlock < in.rows);
    CHECK(p.rowsPerBlock % p.rowsPerStep == 0);
    // A pool always has room for k plus one step of admissions.
    CHECK(p.poolCapacity >= in.k + p.rowsPerStep);
    CHECK(p.poolCapacity >= 2 * in.k || p.poolCapacity >= in.k + 64);
    CHECK(p.selectCapacity >= in.k + (p.warpSelect ? 128 : 1024));
    CHECK(p.scanSharedBytes <= in.sharedPerBlock);
    CHECK(p.selectSharedBytes <= in.sharedPerBlock);
    CHECK(p.warpSelect == (in.k <= 256));
    CHECK(p.scanStages == 0 || p.scanStages == 3 || p.scanStages == 4);
    CHECK(p.stageBytes == p.rowsPerStep * p.rowChunks * 16);
  }
}

TEST_CASE("gpu.plan_stages_rows_of_the_target_shapes") {
  // 128-d f32 rows go through a 4-slot ring for every query count up to 8, with room for two
  // blocks per multiprocessor; f16 / bf16 rows take the tensor-core scan instead.
  PlanInput in;
  in.rows = 10'000'000;
  in.dim = 128;
  in.elementBytes = 2;
  in.queries = 8;
  CHECK(planSearch(in).tensorScan);
  CHECK(planSearch(in).scanStages == 0);
  CHECK(planSearch(in).rowsPerStep == 256);
  in.elementBytes = 4;
  for (size_t k : {size_t(10), size_t(100), size_t(1000)}) {
    for (size_t nq : {size_t(1), size_t(2), size_t(8)}) {
      in.k = k;
      in.queries = nq;
      const SearchPlan p = planSearch(in);
      // (eight pools of k = 1000 leave no room for a ring: that case reads directly)
      if (k <= 100 || nq == 1) {
        CHECK(p.scanStages == 4);
        CHECK(p.scanSharedBytes <= in.sharedPerMultiprocessor / 2);
      }
    }
  }
  in.dim = 4096;  // 16 KiB rows: no ring fits, rows are read directly
  in.elementBytes = 4;
  in.k = 10;
  in.queries = 1;
  CHECK(planSearch(in).scanStages == 0);
}

TEST_CASE("gpu.plan_gemm_tiles_fit_the_score_budget") {
  PlanInput in;
  in.rows = 1'000'000;
  in.dim = 768;
  in.elementBytes = 2;
  in.k = 100;
  in.queries = 4096;
  const SearchPlan p = planSearch(in);
  CHECK(p.path == SearchPlan::Path::Gemm);
  CHECK(p.queryTile == 4096);
  CHECK(p.rowTile % 256 == 0);
  CHECK(p.rowTile * p.queryTile * 4 <= in.scoreTileBytes);
  in.queries = 100'000;
  CHECK(planSearch(in).queryTile == 4096);
  in.rows = 300;  // a tile never spans more than the rows, rounded to 256
  in.queries = 20;
  CHECK(planSearch(in).rowTile == 512);
}

TEST_CASE("gpu.plan_rejects_bad_k_and_empty_input") {
  PlanInput in;
  in.rows = 1000;
  in.dim = 16;
  in.queries = 1;
  for (size_t k : {size_t(0), size_t(2049), size_t(1) << 40}) {
    in.k = k;
    bool threw = false;
    try {
      planSearch(in);
    } catch (const Error& e) {
      threw = e.code() == ErrorCode::InvalidArgument;
    }
    CHECK(threw);
  }
  in.k = 10;
  in.rows = 0;
  bool threw = false;
  try {
    planSearch(in);
  } catch (const Error& e) {
    threw = e.code() == ErrorCode::InvalidArgument;
  }
  CHECK(threw);
}

TEST_CASE("gpu.plan_shrinks_query_groups_to_fit_shared_memory") {
  PlanInput in;
  in.rows = 5'000'000;
  in.dim = 768;
  in.elementBytes = 4;
  in.k = 2048;
  in.queries = 8;
  in.sharedPerBlock = 100 * 1024;
  const SearchPlan p = planSearch(in);
  CHECK(p.queriesPerBlock < 8);
  CHECK(p.queryGroups * p.queriesPerBlock >= 8);
  CHECK(p.scanSharedBytes <= in.sharedPerBlock);
  CHECK(!p.tensorScan);
  CHECK(p.scanSharedBytes == poolSharedBytes(p.queriesPerBlock, p.poolCapacity, in.k, false) +
                                 p.queriesPerBlock * p.rowStride * 4 + p.scanStages * p.stageBytes);
}

TEST_CASE("gpu.merge_rounds_shrink_to_one_segment") {
  for (size_t k : {size_t(1), size_t(10), size_t(100), size_t(256), size_t(1000), size_t(2048)}) {
    for (size_t length : {size_t(1), k, size_t(4096), size_t(4097), size_t(52'800), size_t(264) * k, size_t(4096) * k}) {
      const std::vector<size_t> rounds = mergeRounds(length, k);
      CHECK(!rounds.empty() && rounds.back() == 1);
      size_t list = length;
      for (size_t i = 0; i + 1 < rounds.size(); ++i) {
        CHECK(rounds[i] > 1);
        const size_t segment = (list + rounds[i] - 1) / rounds[i];
        CHECK(segment <= std::max(kMergeSegment, 4 * k));  // each warp's share stays bounded
        CHECK(rounds[i] * k < list);                        // and every round shrinks the lists
        list = rounds[i] * k;
      }
      CHECK(list <= std::max(kMergeSegment, 4 * k));
    }
  }
}

TEST_CASE("gpu.plan_sends_rows_too_wide_for_the_scan_to_gemm") {
  PlanInput in;
  in.rows = 1000;
  in.dim = 65536;  // 256 KiB of query values: more than a block's shared memory
  in.elementBytes = 4;
  in.k = 10;
  in.queries = 1;
  CHECK(planSearch(in).path == SearchPlan::Path::Gemm);
  in.force = PlanInput::Path::FusedScan;
  CHECK_THROWS_CODE(planSearch(in), ErrorCode::InvalidArgument);
  // f16 rows take the tensor scan, whose 8 query slots need 16 bytes per dimension.
  in.force = PlanInput::Path::Auto;
  in.elementBytes = 2;
  for (size_t dim : {size_t(16'384), size_t(57'000)}) {
    for (size_t k : {size_t(1), size_t(2048)}) {
      in.dim = dim;
      in.k = k;
      CHECK(planSearch(in).path == SearchPlan::Path::Gemm);
    }
  }
  in.dim = 1024;
  CHECK(planSearch(in).path == SearchPlan::Path::FusedScan);
}

TEST_CASE("gpu.ivfpq_scan_plan_lays_out_pool_table_and_query") {
  // The pool holds k, one step of admissions (a block of kIvfPqThreads) and slack; the
  // table (m × 2^nbits floats) starts 16-byte aligned after it, the query (dim floats) last.
  for (size_t k : {size_t(1), size_t(10), size_t(100), size_t(2048)}) {
    for (unsigned nbits : {4u, 8u}) {
      const IvfPqScanPlan plan = planIvfPqScan(128, 32, nbits, k, 227 * 1024);
      CHECK(plan.poolCapacity >= k + kIvfPqThreads);
      CHECK(plan.poolCapacity % 32 == 0);
      CHECK(plan.poolBytes % 16 == 0);
      CHECK(plan.poolBytes >= poolSharedBytes(1, plan.poolCapacity, k, false));
      CHECK(plan.sharedBytes == plan.poolBytes + (32 * (size_t(1) << nbits) + 128) * sizeof(float));
    }
  }
  auto throwsInvalid = [](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return e.code() == ErrorCode::InvalidArgument;
    }
    return false;
  };
  CHECK(throwsInvalid([] { planIvfPqScan(128, 32, 8, 0, 227 * 1024); }));
  CHECK(throwsInvalid([] { planIvfPqScan(128, 32, 8, 2049, 227 * 1024); }));
  // 256 sub-quantizers of 8 bits: a 256 KiB table, more than a block's shared memory.
  CHECK(throwsInvalid([] { planIvfPqScan(1024, 256, 8, 10, 227 * 1024); }));
  CHECK(!throwsInvalid([] { planIvfPqScan(1024, 256, 4, 10, 227 * 1024); }));
}

TEST_CASE("gpu.ivfpq_probes_per_block_fill_the_card_first") {
  // 132 multiprocessors: 1,056 blocks are enough to fill the card.
  CHECK(ivfpqProbesPerBlock(1, 8, 132) == 1);
  CHECK(ivfpqProbesPerBlock(16, 128, 132) == 1);    // 2,048 pairs: one list a block (1.9 would be too few blocks)
  CHECK(ivfpqProbesPerBlock(4096, 8, 132) == 8);    // each block a whole query
  CHECK(ivfpqProbesPerBlock(4096, 128, 132) == 128);
  CHECK(ivfpqProbesPerBlock(256, 64, 132) == 15);   // 16,384 pairs / 1,056
  CHECK(ivfpqProbesPerBlock(10, 0, 132) == 1);
  for (size_t q : {size_t(1), size_t(7), size_t(300), size_t(5000)}) {
    for (size_t nprobe : {size_t(1), size_t(3), size_t(64), size_t(2048)}) {
      const size_t per = ivfpqProbesPerBlock(q, nprobe, 132);
      CHECK(per >= 1 && per <= nprobe);
      const size_t blocks = q * ((nprobe + per - 1) / per);
      CHECK(per == 1 || blocks >= 8 * 132);
    }
  }
}
