#include "error.h"

namespace ebrix {

const char* errorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::InvalidArgument: return "EBRIX_INVALID_ARGUMENT";
    case ErrorCode::DimMismatch: return "EBRIX_DIM_MISMATCH";
    case ErrorCode::InvalidVector: return "EBRIX_INVALID_VECTOR";
    case ErrorCode::DuplicateId: return "EBRIX_DUPLICATE_ID";
    case ErrorCode::UnsupportedSimd: return "EBRIX_UNSUPPORTED_SIMD";
    case ErrorCode::OutOfMemory: return "EBRIX_OUT_OF_MEMORY";
    case ErrorCode::DeviceUnavailable: return "EBRIX_DEVICE_UNAVAILABLE";
    case ErrorCode::NotTrained: return "EBRIX_NOT_TRAINED";
    case ErrorCode::CorruptFile: return "EBRIX_CORRUPT_FILE";
    case ErrorCode::Io: return "EBRIX_IO";
    case ErrorCode::UnknownId: return "EBRIX_UNKNOWN_ID";
    case ErrorCode::InvalidSpec: return "EBRIX_INVALID_SPEC";
    case ErrorCode::Internal: return "EBRIX_INTERNAL";
  }
  return "EBRIX_INTERNAL";
}

}  // namespace ebrix
