// The GPU IVF-PQ index's kernels. See ivfpq_kernels.cuh.
#include "ivfpq_kernels.cuh"

#include <cuda_fp16.h>

#include "kernel_common.cuh"
#include "select.cuh"

namespace ebrix::gpu {
namespace {

// A warp per output element: lanes stride over the row of R and the query, then sum.
__global__ void rotateKernel(const float* rotation, const float* in, float* out, uint32_t dim) {
  const uint32_t warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const uint32_t i = blockIdx.x * (blockDim.x >> 5) + warp;
  if (i >= dim) return;
  const float* q = in + size_t(blockIdx.y) * dim;
  const float* r = rotation + size_t(i) * dim;
  float sum = 0.f;
  for (uint32_t d = lane; d < dim; d += 32) sum += r[d] * q[d];
  sum = warpSum(sum);
  if (lane == 0) out[size_t(blockIdx.y) * dim + i] = sum;
}

// The ADC score of one code: the list constant plus one table entry per sub-quantizer.
// Codes are read a 32-bit word at a time (4 codes of 8 bits, or 8 of 4 bits, nibble n of a
// word belonging to sub-quantizer 8w + n: the plain layout puts sub-quantizer 2j in the low
// nibble of byte j).
template <int kBits>
__device__ __forceinline__ float adcScore(const float* table, const uint32_t* words, uint32_t m, float bias) {
  constexpr uint32_t kPerWord = 32 / kBits;
  constexpr uint32_t kSub = 1u << kBits;
  constexpr uint32_t kMask = kSub - 1;
  float score = bias;
  const uint32_t wordCount = (m + kPerWord - 1) / kPerWord;
  for (uint32_t w = 0; w < wordCount; ++w) {
    const uint32_t v = __ldg(words + w);
    const uint32_t first = w * kPerWord;
#pragma unroll
    for (uint32_t n = 0; n < kPerWord; ++n) {
      if (first + n < m) score += table[(first + n) * kSub + ((v >> (n * kBits)) & kMask)];
    }
  }
  return score;
}

template <int kBits>
__global__ void __launch_bounds__(kIvfPqThreads) ivfpqScanKernel(IvfPqScanArgs p) {
  constexpr uint32_t kSub = 1u << kBits;
  extern __shared__ uint4 sharedRaw[];
  char* base = reinterpret_cast<char*>(sharedRaw);
  const PoolLayout layout(base, 1, 1, uint32_t(p.plan.poolCapacity), p.k, p.sortSlots);
  float* table = reinterpret_cast<float*>(base + p.plan.poolBytes);
  float* x = table + p.m * kSub;
  const Pool pool = layout.pool(0);
  const Scratch scratch = layout.scratch(0);
  const uint32_t tid = threadIdx.x;
  const uint32_t query = blockIdx.y;
  const uint32_t firstProbe = blockIdx.x * p.probesPerBlock;
  const uint32_t endProbe = min(firstProbe + p.probesPerBlock, p.nprobe);
  const uint32_t capacity = uint32_t(p.plan.poolCapacity);
  const uint32_t dsub = p.dim / p.m;
  const float* q = p.queries + size_t(query) * p.dim;

  if (tid == 0) {
    *pool.size = 0;
    *pool.threshold = kEmptyKey + 1;
  }
  bool tableBuilt = false;
  for (uint32_t probe = firstProbe; probe < endProbe; ++probe) {
    const size_t pair = size_t(query) * p.nprobe + probe;
    const uint32_t list = p.probeLists[pair];
    if (list == kNoList) continue;
    if (p.l2 || !tableBuilt) {
      // ip: the table of R·q (the list constant q·c comes from the coarse search); l2: of
      // R·q - R·c, whose entries sum to -|q - c - r|^2 for the residual r a code stands for.
      __syncthreads();  // the previous list's scan no longer reads the table
      const float* c = p.l2 ? p.rotatedCentroids + size_t(list) * p.dim : nullptr;
      for (uint32_t d = tid; d < p.dim; d += blockDim.x) x[d] = p.l2 ? q[d] - c[d] : q[d];
      __syncthreads();
      for (uint32_t e = tid; e < p.m * kSub; e += blockDim.x) {
        const float* centroid = p.codebooks + size_t(e) * dsub;
        const float* part = x + (e / kSub) * dsub;
        float s = 0.f;
        if (p.l2) {
          for (uint32_t t = 0; t < dsub; ++t) {
            const float diff = part[t] - centroid[t];
            s -= diff * diff;
          }
        } else {
          for (uint32_t t = 0; t < dsub; ++t) s += part[t] * centroid[t];
        }
        table[e] = s;
      }
      __syncthreads();
      tableBuilt = true;
    }
    const IvfPqListView view = p.lists[list];
    const float bias = p.l2 ? 0.f : p.probeScores[pair];
    for (uint32_t first = 0; first < view.size; first += blockDim.x) {
      const uint32_t i = first + tid;
      bool pass = false;
      uint32_t key = 0, row = 0;
      if (i < view.size) {
        row = __ldg(view.rows + i);
        const auto* words = reinterpret_cast<const uint32_t*>(view.codes + size_t(i) * p.codeStride);
        key = scoreKey(adcScore<kBits>(table, words, p.m, bias));
        pass = key >= *pool.threshold && rowAllowed(p.allow, row);
      }
      if (!__syncthreads_or(pass)) continue;
      admitWarp(pool, pass, key, row);
      __syncthreads();
      const bool full = *pool.size > capacity - blockDim.x;
      __syncthreads();
      if (full) compactPool<false>(pool, p.k, p.rowIds, scratch);
    }
  }
  __syncthreads();
  compactPool<false>(pool, p.k, p.rowIds, scratch);
  const uint32_t count = *pool.size;
  const size_t part = (size_t(query) * gridDim.x + blockIdx.x) * p.k;
  uint32_t* keys = p.partKeys + part;
  uint32_t* rows = p.partRows + part;
  for (uint32_t i = tid; i < p.k; i += blockDim.x) {
    keys[i] = i < count ? pool.keys[i] : kEmptyKey;
    rows[i] = i < count ? pool.rows[i] : 0u;
  }
}

// A warp per (query, candidate).
template <bool kHalf>
__global__ void refineKernel(const uint64_t* candidates, const float* queries, size_t total, uint32_t keep,
                             const void* vectors, uint32_t dim, uint32_t stride, bool l2, uint32_t* keys,
                             uint32_t* rows) {
  const size_t slot = (size_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const uint32_t lane = threadIdx.x & 31;
  if (slot >= total) return;
  const uint64_t candidate = candidates[slot];
  if (candidate == ~uint64_t(0)) {
    if (lane == 0) {
      keys[slot] = kEmptyKey;
      rows[slot] = 0;
    }
    return;
  }
  const float* q = queries + (slot / keep) * dim;
  const size_t offset = size_t(candidate) * stride;
  float sum = 0.f;
  for (uint32_t d = lane; d < dim; d += 32) {
    const float v = kHalf ? __half2float(static_cast<const __half*>(vectors)[offset + d])
                          : static_cast<const float*>(vectors)[offset + d];
    if (l2) {
      const float diff = q[d] - v;
      sum += diff * diff;
    } else {
      sum += q[d] * v;
    }
  }
  sum = warpSum(sum);
  if (lane == 0) {
    keys[slot] = scoreKey(l2 ? -sum : sum);
    rows[slot] = uint32_t(candidate);
  }
}

__global__ void iotaKernel(uint64_t* rowIds, size_t first, size_t n) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    rowIds[first + i] = first + i;
  }
}

}  // namespace

void launchRotate(const float* rotation, const float* in, float* out, size_t n, uint32_t dim, cudaStream_t stream) {
  if (n == 0) return;
  constexpr unsigned kWarps = 8;
  const dim3 grid((dim + kWarps - 1) / kWarps, unsigned(n));
  rotateKernel<<<grid, kWarps * 32, 0, stream>>>(rotation, in, out, dim);
}

void launchIvfPqScan(const IvfPqScanArgs& scan, size_t queries, cudaStream_t stream) {
  if (queries == 0) return;
  IvfPqScanArgs args = scan;
  args.sortSlots = sortSlotsFor(args.k);
  const dim3 grid((args.nprobe + args.probesPerBlock - 1) / args.probesPerBlock, unsigned(queries));
  if (args.nbits == 4) {
    launchWithShared(ivfpqScanKernel<4>, grid, dim3(kIvfPqThreads), args.plan.sharedBytes, stream, args);
  } else {
    launchWithShared(ivfpqScanKernel<8>, grid, dim3(kIvfPqThreads), args.plan.sharedBytes, stream, args);
  }
}

void launchRefine(const uint64_t* candidates, const float* queries, size_t queryCount, uint32_t keep,
                  const void* vectors, bool half, uint32_t dim, uint32_t stride, bool l2, uint32_t* keys,
                  uint32_t* rows, cudaStream_t stream) {
  const size_t total = queryCount * keep;
  if (total == 0) return;
  constexpr unsigned kThreads = 256;
  const unsigned blocks = unsigned((total * 32 + kThreads - 1) / kThreads);
  if (half) {
    refineKernel<true><<<blocks, kThreads, 0, stream>>>(candidates, queries, total, keep, vectors, dim, stride, l2,
                                                        keys, rows);
  } else {
    refineKernel<false><<<blocks, kThreads, 0, stream>>>(candidates, queries, total, keep, vectors, dim, stride, l2,
                                                         keys, rows);
  }
}

void launchIota(uint64_t* rowIds, size_t first, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  const unsigned blocks = unsigned(std::min<size_t>((n + 255) / 256, 4096));
  iotaKernel<<<blocks, 256, 0, stream>>>(rowIds, first, n);
}

}  // namespace ebrix::gpu
