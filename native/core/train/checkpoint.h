// The trainer's checkpoint: every array needed to resume bit-identically (parameters,
// optimizer moments or accumulators, task log-variances and their moments) and the step
// counter, in one byte buffer.
//
// Layout (little-endian):
//   0   magic "EBRIXTRN"
//   8   u32 format version (1)
//   12  u32 sparse optimizer (0 Adam, 1 Adagrad: their state arrays differ)
//   16  u64 optimizer steps taken
//   24  u64 array count
//   32  u64 total bytes (a shorter buffer was truncated)
//   40  u64 checksum64 of bytes [64, total)
//   48  u64 reserved (0)
//   56  u64 checksum64 of bytes [0, 56)
//   64  array count × (u64 rows, u64 cols): each array's shape
//   ... the arrays' float32 values, in order, back to back
// The arrays and their order are the trainer's business (trainer.cpp lists them).
//
// Reading validates everything (header, checksums, sizes, each shape against the trainer's)
// before it writes anything: a truncated, damaged or mismatched buffer throws
// Error(CorruptFile) and leaves the trainer as it was.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ebrix::train {

constexpr uint32_t kCheckpointVersion = 1;

struct StateArray {
  std::string name;  // for error messages: "tables[0].m"
  float* data;
  size_t rows;
  size_t cols;
};

std::vector<uint8_t> writeCheckpoint(uint64_t step, uint32_t sparseOptimizer, const std::vector<StateArray>& arrays);

// Returns the step counter; fills every array.
uint64_t readCheckpoint(const uint8_t* bytes, size_t size, uint32_t sparseOptimizer, const std::vector<StateArray>& arrays);

}  // namespace ebrix::train
