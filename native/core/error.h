// Errors raised by the core. The core never includes Node headers; the binding turns an
// ebrix::Error into a JavaScript error whose `code` property is the code string below.
#pragma once

#include <stdexcept>
#include <string>

namespace ebrix {

enum class ErrorCode {
  InvalidArgument,   // EBRIX_INVALID_ARGUMENT
  DimMismatch,       // EBRIX_DIM_MISMATCH
  InvalidVector,     // EBRIX_INVALID_VECTOR (NaN or Infinity)
  DuplicateId,       // EBRIX_DUPLICATE_ID
  UnsupportedSimd,   // EBRIX_UNSUPPORTED_SIMD
  OutOfMemory,       // EBRIX_OUT_OF_MEMORY (host or device memory)
  DeviceUnavailable, // EBRIX_DEVICE_UNAVAILABLE (no usable GPU, or a CUDA failure)
  NotTrained,        // EBRIX_NOT_TRAINED (an index that needs train() first)
  CorruptFile,       // EBRIX_CORRUPT_FILE (truncated, damaged, foreign or newer index file)
  Io,                // EBRIX_IO (the file system refused: missing file, permissions, disk full)
  UnknownId,         // EBRIX_UNKNOWN_ID (an id the index does not hold)
  InvalidSpec,       // EBRIX_INVALID_SPEC (an inconsistent model or trainer configuration)
  Internal,          // EBRIX_INTERNAL
};

const char* errorCodeName(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }
  const char* codeName() const { return errorCodeName(code_); }

 private:
  ErrorCode code_;
};

}  // namespace ebrix
