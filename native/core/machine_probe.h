// Measures this machine's own ceilings, so benchmarks can report achieved throughput as a
// fraction of what the hardware actually delivers rather than of a datasheet number.
#pragma once

#include <cstddef>

#include "simd/kernels.h"

namespace ebrix {

// fp32 GFLOP/s of independent FMA chains on `threads` threads for about `seconds`.
double measureFmaGflops(const simd::Kernels& kernels, unsigned threads, double seconds);

// GB/s of reading a `bytes` buffer (far larger than the caches) on `threads` threads; best of
// a few passes.
double measureReadGBps(const simd::Kernels& kernels, unsigned threads, size_t bytes);

}  // namespace ebrix
