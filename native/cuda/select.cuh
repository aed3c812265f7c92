// Candidate pools in shared memory, and the group-wide selection that keeps them at k.
//
// A pool holds (key, row) candidates of one query. Candidates are admitted when their key
// is at least the pool's threshold; when a pool nears its capacity, its group (one warp, or
// the whole block for k > 256) finds the k-th best key with a radix select (4 passes of 8
// bits over the keys, histograms in shared memory with warp-aggregated atomics), keeps the
// k best and raises the threshold to that key. Exact ties at the k-th place keep the
// smaller ids (a second, 64-bit radix select over the tied ids), as the CPU does.
#pragma once

#include <cstdint>

#include "select_common.h"

namespace ebrix::gpu {

constexpr unsigned kFullMask = 0xFFFFFFFFu;

template <bool kWarp>
__device__ __forceinline__ void groupSync() {
  if constexpr (kWarp) {
    __syncwarp();
  } else {
    __syncthreads();
  }
}

struct Pool {
  uint32_t* keys;       // capacity slots
  uint32_t* rows;
  uint32_t* size;       // shared counter
  uint32_t* threshold;  // admission key
};

struct Scratch {
  uint32_t* keys;   // k survivors; reused as the ids (uint64) of the final sort
  uint32_t* rows;
  uint32_t* histogram;  // 256
  uint32_t* words;      // 4: broadcast digit, broadcast need, two counters
  __device__ uint64_t* sortIds() const { return reinterpret_cast<uint64_t*>(keys); }
};

// Finds the need-th largest key among the entries i < n for which get(i, key) is true, and
// returns it; `need` becomes how many entries equal to it belong to the selection. Every
// thread of the group calls it with the same arguments.
template <typename Key, bool kWarp, typename Get>
__device__ Key radixSelect(unsigned rank, unsigned groupSize, uint32_t n, Get get, uint32_t& need,
                           Scratch scratch) {
  Key prefix = 0;
  Key mask = 0;
  const unsigned lane = threadIdx.x & 31;
  for (int shift = int(sizeof(Key) * 8) - 8; shift >= 0; shift -= 8) {
    for (unsigned i = rank; i < 256; i += groupSize) scratch.histogram[i] = 0;
    groupSync<kWarp>();
    for (uint32_t base = 0; base < n; base += groupSize) {
      const uint32_t i = base + rank;
      Key key = 0;
      bool counted = i < n && get(i, key) && (key & mask) == prefix;
      const uint32_t digit = counted ? uint32_t(key >> shift) & 255u : 0u;
      const unsigned active = __ballot_sync(kFullMask, counted);
      if (counted) {
        const unsigned peers = __match_any_sync(active, digit);
        if (lane == unsigned(__ffs(peers) - 1)) atomicAdd(&scratch.histogram[digit], unsigned(__popc(peers)));
      }
    }
    groupSync<kWarp>();
    if (rank < 32) {
      // Lane L owns digits 255-8L down to 248-8L: prefix sums over lanes walk the digits from
      // the top, and the lane whose range crosses `need` finds the digit.
      uint32_t local[8];
      uint32_t sum = 0;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        local[j] = scratch.histogram[255 - 8 * lane - j];
        sum += local[j];
      }
      uint32_t inclusive = sum;
#pragma unroll
      for (int offset = 1; offset < 32; offset <<= 1) {
        const uint32_t other = __shfl_up_sync(kFullMask, inclusive, offset);
        if (lane >= unsigned(offset)) inclusive += other;
      }
      const uint32_t exclusive = inclusive - sum;
      const bool crosses = exclusive < need && need <= inclusive;
      const unsigned owner = __ballot_sync(kFullMask, crosses);
      if (crosses && lane == unsigned(__ffs(owner) - 1)) {
        uint32_t above = exclusive;
        uint32_t digit = 255 - 8 * lane - 7;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          if (above + local[j] >= need) {
            digit = 255 - 8 * lane - j;
            break;
          }
          above += local[j];
        }
        scratch.words[0] = digit;
        scratch.words[1] = need - above;
      }
    }
    groupSync<kWarp>();
    const Key digit = scratch.words[0];
    need = scratch.words[1];
    prefix |= digit << shift;
    mask |= Key(0xFF) << shift;
    groupSync<kWarp>();
  }
  return prefix;
}

// Sum of a per-thread count over the group.
template <bool kWarp>
__device__ uint32_t groupSum(uint32_t value, uint32_t* word) {
  value = __reduce_add_sync(kFullMask, value);
  if constexpr (kWarp) {
    return value;
  } else {
    if (threadIdx.x == 0) *word = 0;
    __syncthreads();
    if ((threadIdx.x & 31) == 0) atomicAdd(word, value);
    __syncthreads();
    const uint32_t total = *word;
    __syncthreads();
    return total;
  }
}

// Keeps the k best candidates of the pool (when it holds more) and raises its threshold to
// the k-th best key. Called by every thread of the group, after a group barrier that made
// all admissions visible.
template <bool kWarp>
__device__ void compactPool(Pool pool, uint32_t k, const uint64_t* ids, Scratch scratch) {
  const unsigned rank = kWarp ? (threadIdx.x & 31) : threadIdx.x;
  const unsigned groupSize = kWarp ? 32 : blockDim.x;
  const uint32_t n = *pool.size;
  if (n <= k) return;
  uint32_t need = k;
  const uint32_t kth = radixSelect<uint32_t, kWarp>(
      rank, groupSize, n, [&](uint32_t i, uint32_t& key) { key = pool.keys[i]; return true; }, need, scratch);
  // Entries tied with the k-th key: usually exactly `need` of them. Otherwise the smaller ids
  // win, found by a radix select over the complemented ids of the tied entries.
  uint32_t tiedCount = 0;
  for (uint32_t i = rank; i < n; i += groupSize) tiedCount += pool.keys[i] == kth;
  const uint32_t tied = groupSum<kWarp>(tiedCount, &scratch.words[2]);
  uint64_t tieCut = 0;
  const bool breakTies = tied > need;
  if (breakTies) {
    uint32_t needTied = need;
    tieCut = radixSelect<uint64_t, kWarp>(
        rank, groupSize, n,
        [&](uint32_t i, uint64_t& key) {
          if (pool.keys[i] != kth) return false;
          key = ~ids[pool.rows[i]];
          return true;
        },
        needTied, scratch);
  }
  if (rank == 0) scratch.words[3] = 0;
  groupSync<kWarp>();
  const unsigned lane = threadIdx.x & 31;
  for (uint32_t base = 0; base < n; base += groupSize) {
    const uint32_t i = base + rank;
    bool keep = false;
    uint32_t key = 0;
    uint32_t row = 0;
    if (i < n) {
      key = pool.keys[i];
      row = pool.rows[i];
      keep = key > kth || (key == kth && (!breakTies || ~ids[row] >= tieCut));
    }
    const unsigned kept = __ballot_sync(kFullMask, keep);
    uint32_t slot = 0;
    if (lane == 0 && kept) slot = atomicAdd(&scratch.words[3], unsigned(__popc(kept)));
    slot = __shfl_sync(kFullMask, slot, 0) + __popc(kept & ((1u << lane) - 1));
    if (keep) {
      scratch.keys[slot] = key;
      scratch.rows[slot] = row;
    }
  }
  groupSync<kWarp>();
  for (uint32_t i = rank; i < k; i += groupSize) {
    pool.keys[i] = scratch.keys[i];
    pool.rows[i] = scratch.rows[i];
  }
  if (rank == 0) {
    *pool.size = k;
    *pool.threshold = kth;
  }
  groupSync<kWarp>();
}

// Admits up to one candidate per lane into the pool, with one shared atomic per warp. All
// lanes of the warp call it.
__device__ __forceinline__ void admitWarp(Pool pool, bool candidate, uint32_t key, uint32_t row) {
  const bool admit = candidate && key >= *pool.threshold;
  const unsigned admitted = __ballot_sync(kFullMask, admit);
  if (!admitted) return;
  const unsigned lane = threadIdx.x & 31;
  uint32_t slot = 0;
  if (lane == unsigned(__ffs(admitted) - 1)) slot = atomicAdd(pool.size, unsigned(__popc(admitted)));
  slot = __shfl_sync(kFullMask, slot, __ffs(admitted) - 1);
  if (admit) {
    slot += __popc(admitted & ((1u << lane) - 1));
    pool.keys[slot] = key;
    pool.rows[slot] = row;
  }
}

// Sorts the pool's first `count` entries best first (higher key, then smaller id) into
// keys / ids, padding to a power of two >= count with empty entries.
template <bool kWarp>
__device__ void sortPool(Pool pool, uint32_t count, uint32_t padded, const uint64_t* ids, Scratch scratch) {
  const unsigned rank = kWarp ? (threadIdx.x & 31) : threadIdx.x;
  const unsigned groupSize = kWarp ? 32 : blockDim.x;
  uint64_t* sortIds = scratch.sortIds();
  for (uint32_t i = rank; i < padded; i += groupSize) {
    if (i < count) {
      sortIds[i] = ids[pool.rows[i]];
    } else {
      pool.keys[i] = kEmptyKey;
      sortIds[i] = ~uint64_t(0);
    }
  }
  groupSync<kWarp>();
  for (uint32_t size = 2; size <= padded; size <<= 1) {
    for (uint32_t stride = size >> 1; stride > 0; stride >>= 1) {
      for (uint32_t i = rank; i < padded / 2; i += groupSize) {
        const uint32_t lo = 2 * i - (i & (stride - 1));
        const uint32_t hi = lo + stride;
        const uint32_t keyLo = pool.keys[lo], keyHi = pool.keys[hi];
        const uint64_t idLo = sortIds[lo], idHi = sortIds[hi];
        const bool hiFirst = keyHi > keyLo || (keyHi == keyLo && idHi < idLo);
        const bool loFirst = keyLo > keyHi || (keyLo == keyHi && idLo < idHi);
        const bool bestFirst = (lo & size) == 0;
        if (bestFirst ? hiFirst : loFirst) {
          pool.keys[lo] = keyHi;
          pool.keys[hi] = keyLo;
          sortIds[lo] = idHi;
          sortIds[hi] = idLo;
        }
      }
      groupSync<kWarp>();
    }
  }
}

}  // namespace ebrix::gpu
