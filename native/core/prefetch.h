#pragma once
// A read prefetch of one cache line that the compiler keeps: GCC drops a loop whose body is
// only __builtin_prefetch calls once the loop is inlined (the refine's whole-vector prefetch
// compiled to nothing at -O1 and above), so the hint is an asm statement where the ISA is known.

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
