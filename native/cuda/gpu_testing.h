// Measurements for the device check (bench/gpu): the card's ceilings, taken in the same run
// as the search timings they are compared with.
#pragma once

#include <cstddef>

#include "gpu_index.h"

namespace ebrix::gpu {

// Read bandwidth in GB/s (1e9 bytes per second): `bytes` read once with 16-byte loads,
// median of 10 runs.
double measureReadBandwidth(int device, size_t bytes);

// cuBLAS GEMM rate in TFLOP/s for n×n×n with the storage type's inputs and float32
// accumulation (tensor cores for f16 / bf16), median of 6 runs.
double measureGemmTflops(int device, Storage storage, int n);

}  // namespace ebrix::gpu
