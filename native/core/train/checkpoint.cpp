#include "checkpoint.h"

#include <cstring>

#include "../error.h"
#include "../index_file.h"

namespace ebrix::train {
namespace {

constexpr char kMagic[8] = {'E', 'B', 'R', 'I', 'X', 'T', 'R', 'N'};
constexpr size_t kHeaderBytes = 64;
constexpr size_t kShapeBytes = 16;

void put32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
void put64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }
uint32_t get32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
uint64_t get64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

[[noreturn]] void corrupt(const std::string& what) {
  throw Error(ErrorCode::CorruptFile, "Invalid trainer checkpoint: " + what);
}

const char* optimizerName(uint32_t kind) { return kind == 0 ? "sparse Adam" : kind == 1 ? "sparse Adagrad" : "an unknown optimizer"; }

}  // namespace

std::vector<uint8_t> writeCheckpoint(uint64_t step, uint32_t sparseOptimizer, const std::vector<StateArray>& arrays) {
  size_t total = kHeaderBytes + arrays.size() * kShapeBytes;
  for (const StateArray& a : arrays) total += a.rows * a.cols * sizeof(float);
  std::vector<uint8_t> out(total, 0);
  uint8_t* p = out.data();
  std::memcpy(p, kMagic, 8);
  put32(p + 8, kCheckpointVersion);
  put32(p + 12, sparseOptimizer);
  put64(p + 16, step);
  put64(p + 24, arrays.size());
  put64(p + 32, total);
  size_t at = kHeaderBytes;
  for (const StateArray& a : arrays) {
    put64(p + at, a.rows);
    put64(p + at + 8, a.cols);
    at += kShapeBytes;
  }
  for (const StateArray& a : arrays) {
    const size_t bytes = a.rows * a.cols * sizeof(float);
    if (bytes != 0) std::memcpy(p + at, a.data, bytes);
    at += bytes;
  }
  put64(p + 40, checksum64(p + kHeaderBytes, total - kHeaderBytes));
  put64(p + 56, checksum64(p, 56));
  return out;
}

uint64_t readCheckpoint(const uint8_t* bytes, size_t size, uint32_t sparseOptimizer, const std::vector<StateArray>& arrays) {
  if (bytes == nullptr || size < kHeaderBytes) corrupt("truncated (" + std::to_string(size) + " bytes, below the 64-byte header)");
  if (std::memcmp(bytes, kMagic, 8) != 0) corrupt("not an ebrix trainer checkpoint (wrong magic)");
  if (get64(bytes + 56) != checksum64(bytes, 56)) corrupt("the header is damaged (checksum mismatch)");
  const uint32_t version = get32(bytes + 8);
  if (version > kCheckpointVersion) {
    corrupt("format version " + std::to_string(version) + " is newer than this build reads (" +
            std::to_string(kCheckpointVersion) + ")");
  }
  if (version != kCheckpointVersion) corrupt("unknown format version " + std::to_string(version));
  const uint64_t total = get64(bytes + 32);
  if (total != size) {
    corrupt(total > size ? "truncated (" + std::to_string(size) + " of " + std::to_string(total) + " bytes)"
                         : std::to_string(size - total) + " bytes past its end");
  }
  const uint64_t count = get64(bytes + 24);
  if (count != arrays.size()) {
    corrupt("it holds " + std::to_string(count) + " state arrays but this trainer has " + std::to_string(arrays.size()) +
            " (a different model or optimizer)");
  }
  if (get64(bytes + 40) != checksum64(bytes + kHeaderBytes, size - kHeaderBytes)) corrupt("the data is damaged (checksum mismatch)");
  const uint32_t kind = get32(bytes + 12);
  if (kind != sparseOptimizer) {
    corrupt(std::string("it was saved with ") + optimizerName(kind) + " but this trainer uses " + optimizerName(sparseOptimizer));
  }
  size_t at = kHeaderBytes;
  if (size - at < count * kShapeBytes) corrupt("truncated shape table");
  size_t dataBytes = 0;
  for (const StateArray& a : arrays) {
    const uint64_t rows = get64(bytes + at), cols = get64(bytes + at + 8);
    if (rows != a.rows || cols != a.cols) {
      corrupt(a.name + " is " + std::to_string(rows) + "×" + std::to_string(cols) + " in the checkpoint but " +
              std::to_string(a.rows) + "×" + std::to_string(a.cols) + " in this trainer");
    }
    dataBytes += a.rows * a.cols * sizeof(float);
    at += kShapeBytes;
  }
  if (size - at != dataBytes) corrupt("its data size does not match its shapes");
  for (const StateArray& a : arrays) {
    const size_t n = a.rows * a.cols * sizeof(float);
    if (n != 0) std::memcpy(a.data, bytes + at, n);
    at += n;
  }
  return get64(bytes + 16);
}

}  // namespace ebrix::train
