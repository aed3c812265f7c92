// Device-side pieces shared by the GPU kernels: launching under a dynamic shared-memory
// limit, the allow-bitset test, a warp sum, and the layout of candidate pools in shared
// memory (in the order plan.cpp's poolSharedBytes counts them).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>

#include "kernels.cuh"  // Allow
#include "select.cuh"

namespace ebrix::gpu {

// A kernel's dynamic shared-memory limit is a process-wide attribute of the function: two
// threads setting different limits and launching could each launch under the other's
// limit. Setting and launching happen under one lock (a launch only enqueues).
inline std::mutex& launchMutex() {
  static std::mutex mutex;
  return mutex;
}

template <typename Kernel, typename Params>
void launchWithShared(Kernel kernel, dim3 grid, dim3 block, size_t shared, cudaStream_t stream, const Params& params) {
  std::lock_guard<std::mutex> lock(launchMutex());
  const cudaError_t status = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared));
  if (status != cudaSuccess) return;  // left for the caller's cudaPeekAtLastError
  kernel<<<grid, block, shared, stream>>>(params);
}

__device__ __forceinline__ bool rowAllowed(Allow allow, uint32_t row) {
  if (allow.bits == nullptr) return true;
  const uint32_t word = row >> 5;
  return word < allow.words && ((__ldg(allow.bits + word) >> (row & 31)) & 1u);
}

__device__ __forceinline__ float warpSum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

struct PoolLayout {
  char* scratchBase;
  uint32_t scratchBytes;
  uint32_t* keys;
  uint32_t* rows;
  uint32_t* counters;
  uint32_t capacity;
  uint32_t k;

  // `pools` pools and `groups` scratch areas, carved from `base` in the order plan.cpp counts.
  __device__ PoolLayout(char* base, uint32_t pools, uint32_t groups, uint32_t capacity_, uint32_t k_,
                        uint32_t sortSlots)
      : capacity(capacity_), k(k_) {
    scratchBytes = sortSlots * 8 + 256 * 4 + 16;
    scratchBase = base;
    base += size_t(groups) * scratchBytes;
    keys = reinterpret_cast<uint32_t*>(base);
    base += size_t(pools) * capacity * 4;
    rows = reinterpret_cast<uint32_t*>(base);
    base += size_t(pools) * capacity * 4;
    counters = reinterpret_cast<uint32_t*>(base);
  }
  __device__ Pool pool(uint32_t q) const {
    return Pool{keys + size_t(q) * capacity, rows + size_t(q) * capacity, counters + 2 * q, counters + 2 * q + 1};
  }
  __device__ Scratch scratch(uint32_t g) const {
    char* b = scratchBase + size_t(g) * scratchBytes;
    Scratch s;
    s.keys = reinterpret_cast<uint32_t*>(b);
    s.rows = s.keys + k;
    s.histogram = reinterpret_cast<uint32_t*>(b + (scratchBytes - 256 * 4 - 16));
    s.words = s.histogram + 256;
    return s;
  }
};

inline uint32_t sortSlotsFor(size_t k) {
  uint32_t p = 1;
  while (p < k) p <<= 1;
  return p;
}

}  // namespace ebrix::gpu
