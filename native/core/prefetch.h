#pragma once
// A read prefetch of one cache line that the compiler keeps. GCC 12 compiled the IVF-PQ
// refine's loop of __builtin_prefetch calls over a vector's lines to nothing at -O1 and
// above (no prefetch instruction in the object), so the hint is an asm statement where the
// ISA is known.

#include <cstddef>

namespace ebrix {

inline void prefetchLine(const void* address) {
#if defined(__x86_64__) || defined(__i386__)
  asm volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(address)));
#elif defined(__aarch64__)
  asm volatile("prfm pldl1keep, %0" : : "Q"(*static_cast<const char*>(address)));
#else
  __builtin_prefetch(address);
#endif
}

// Every line of [address, address + bytes).
inline void prefetchBytes(const void* address, size_t bytes) {
  const char* p = static_cast<const char*>(address);
  for (size_t offset = 0; offset < bytes; offset += 64) prefetchLine(p + offset);
}

}  // namespace ebrix
