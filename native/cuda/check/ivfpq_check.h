// Parts of the device check (gpu_check.cpp) kept in files of their own: IVF-PQ
// (ivfpq_check.cpp) and mutations (mutation_check.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>

namespace ebrix::gpu::check {

// Correctness cases run and failed.
struct Tally {
  size_t cases = 0;
  size_t failed = 0;
};

// GpuIvfPqIndex against its CPU twin and exact search (ivfpq_check.cpp).
void checkIvfPq(Tally& tally, uint64_t seed);
// GpuFlatIndex and GpuIvfPqIndex through adds, upserts, removes and compactions, against CPU
// indexes after every step (mutation_check.cpp).
void checkMutations(Tally& tally, uint64_t seed);
// GPU IVF-PQ search times and recall next to the CPU twin's, as JSON lines of kind "ivfpq".
void benchIvfPq(std::FILE* json);

}  // namespace ebrix::gpu::check
