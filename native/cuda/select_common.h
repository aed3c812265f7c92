// Pieces of the GPU top-k selection that are plain arithmetic, shared by the kernels and the
// host (where the C++ tests check them without a GPU).
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define EBRIX_HD __host__ __device__ __forceinline__
#else
#define EBRIX_HD inline
#endif

namespace ebrix::gpu {

// Scores become unsigned keys whose integer order is the float order, so selection can run
// radix passes over them. NaN maps to the key of -inf (the CPU ranks NaN as -inf too); key 0
// is below every score and marks an empty slot.
EBRIX_HD uint32_t scoreKey(float score) {
  uint32_t bits;
#if defined(__CUDA_ARCH__)
  bits = __float_as_uint(score);
#else
  std::memcpy(&bits, &score, 4);
#endif
  if ((bits & 0x7F800000u) == 0x7F800000u && (bits & 0x007FFFFFu) != 0) bits = 0xFF800000u;  // NaN → -inf
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

EBRIX_HD float keyScore(uint32_t key) {
  uint32_t bits = (key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key;
  float score;
#if defined(__CUDA_ARCH__)
  score = __uint_as_float(bits);
#else
  std::memcpy(&score, &bits, 4);
#endif
  return score;
}

constexpr uint32_t kEmptyKey = 0;

}  // namespace ebrix::gpu
