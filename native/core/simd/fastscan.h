// 4-bit PQ fast-scan kernels, one per ISA (the packed block layout is documented in pq.h).
// Each kernel computes, for nBlocks blocks of 32 vectors,
//   out[b*32 + v] = min(65535, sum_j entries[j*16 + code_v[j]])
// over `pairs` pairs of sub-quantizers (entries holds 2 × pairs tables of 16 bytes). The
// ISA kernels live in their own translation units under the rule of kernels.h; pq.cpp picks
// one by simd::Level after checking the CPU supports it. All return the same integers.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ebrix::simd {

void fastScanScalar(const uint8_t* entries, size_t pairs, const uint8_t* packed, size_t nBlocks, uint16_t* out);
#if defined(__x86_64__) || defined(_M_X64)
void fastScanAvx2(const uint8_t* entries, size_t pairs, const uint8_t* packed, size_t nBlocks, uint16_t* out);
void fastScanAvx512(const uint8_t* entries, size_t pairs, const uint8_t* packed, size_t nBlocks, uint16_t* out);
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
void fastScanNeon(const uint8_t* entries, size_t pairs, const uint8_t* packed, size_t nBlocks, uint16_t* out);
#endif

}  // namespace ebrix::simd
