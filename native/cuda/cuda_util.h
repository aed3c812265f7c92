// Host-side CUDA plumbing shared by the GPU indexes: error checks that turn CUDA and cuBLAS
// failures into ebrix errors (device OOM → OutOfMemory, anything else → DeviceUnavailable),
// owned device buffers (plain and stream-ordered), and a pool of streams with their cuBLAS
// handles and events, so that concurrent searches each run on a stream of their own.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "error.h"

namespace ebrix::gpu {

[[noreturn]] inline void throwCuda(cudaError_t status, const char* what) {
  cudaGetLastError();  // clear a non-sticky error so the next call starts clean
  const ErrorCode code = status == cudaErrorMemoryAllocation ? ErrorCode::OutOfMemory : ErrorCode::DeviceUnavailable;
  throw Error(code, std::string(status == cudaErrorMemoryAllocation ? "Out of GPU memory: " : "CUDA error: ") + what +
                        " failed with " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
}

#define EBRIX_CUDA(call)                                  \
  do {                                                    \
    const cudaError_t status_ = (call);                   \
    if (status_ != cudaSuccess) throwCuda(status_, #call); \
  } while (0)

// Every launch is checked at once, so an error names the kernel that caused it.
#define EBRIX_LAUNCHED(what) EBRIX_CUDA(cudaPeekAtLastError())

inline void checkBlas(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  const ErrorCode code = status == CUBLAS_STATUS_ALLOC_FAILED ? ErrorCode::OutOfMemory : ErrorCode::DeviceUnavailable;
  throw Error(code, std::string("cuBLAS error: ") + what + " failed with " + cublasGetStatusName(status) + " (" +
                        cublasGetStatusString(status) + ")");
}

// Device memory owned by one object (cudaFree on destruction).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(size_t bytes, const char* what) : bytes_(bytes) {
    if (bytes == 0) return;
    const cudaError_t status = cudaMalloc(&ptr_, bytes);
    if (status != cudaSuccess) {
      ptr_ = nullptr;
      throwCuda(status, what);
    }
  }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Stream-ordered scratch memory of one search (cudaMallocAsync / cudaFreeAsync).
class StreamBuffer {
 public:
  StreamBuffer(size_t bytes, cudaStream_t stream, const char* what) : stream_(stream) {
    if (bytes == 0) return;
    const cudaError_t status = cudaMallocAsync(&ptr_, bytes, stream);
    if (status != cudaSuccess) {
      ptr_ = nullptr;
      throwCuda(status, what);
    }
  }
  ~StreamBuffer() {
    if (ptr_ != nullptr) cudaFreeAsync(ptr_, stream_);
  }
  StreamBuffer(const StreamBuffer&) = delete;
  StreamBuffer& operator=(const StreamBuffer&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

// A stream with its cuBLAS handle and timing events. Searches and adds borrow one from the
// index's pool, so concurrent searches run on their own streams.
struct Context {
  cudaStream_t stream = nullptr;
  cudaStream_t selectStream = nullptr;  // GEMM path: selects tile t while tile t+1 multiplies
  cublasHandle_t blas = nullptr;
  cudaEvent_t start = nullptr;
  cudaEvent_t stop = nullptr;
  cudaEvent_t ready = nullptr;
  cudaEvent_t scored[2] = {nullptr, nullptr};
  cudaEvent_t selected[2] = {nullptr, nullptr};

  Context() {
    try {
      EBRIX_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
      EBRIX_CUDA(cudaStreamCreateWithFlags(&selectStream, cudaStreamNonBlocking));
      EBRIX_CUDA(cudaEventCreate(&start));
      EBRIX_CUDA(cudaEventCreate(&stop));
      EBRIX_CUDA(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
      for (int i = 0; i < 2; ++i) {
        EBRIX_CUDA(cudaEventCreateWithFlags(&scored[i], cudaEventDisableTiming));
        EBRIX_CUDA(cudaEventCreateWithFlags(&selected[i], cudaEventDisableTiming));
      }
      checkBlas(cublasCreate(&blas), "cublasCreate");
      checkBlas(cublasSetStream(blas, stream), "cublasSetStream");
    } catch (...) {
      release();  // a half-built context must not leak its streams and events
      throw;
    }
  }
  ~Context() { release(); }
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

 private:
  void release() {
    if (blas != nullptr) cublasDestroy(blas);
    for (cudaEvent_t e : {start, stop, ready, scored[0], scored[1], selected[0], selected[1]}) {
      if (e != nullptr) cudaEventDestroy(e);
    }
    if (selectStream != nullptr) cudaStreamDestroy(selectStream);
    if (stream != nullptr) cudaStreamDestroy(stream);
    blas = nullptr;
    start = stop = ready = nullptr;
    scored[0] = scored[1] = selected[0] = selected[1] = nullptr;
    selectStream = stream = nullptr;
  }
};

class ContextPool {
 public:
  std::unique_ptr<Context> acquire() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!free_.empty()) {
        auto context = std::move(free_.back());
        free_.pop_back();
        return context;
      }
    }
    return std::make_unique<Context>();
  }
  void release(std::unique_ptr<Context> context) {
    std::lock_guard<std::mutex> lock(mutex_);
    free_.push_back(std::move(context));
  }

 private:
  std::mutex mutex_;
  std::vector<std::unique_ptr<Context>> free_;
};

class ContextLease {
 public:
  explicit ContextLease(ContextPool& pool) : pool_(pool), context_(pool.acquire()) {}
  ~ContextLease() {
    // A context whose stream failed is dropped rather than reused.
    if (cudaStreamSynchronize(context_->stream) == cudaSuccess &&
        cudaStreamSynchronize(context_->selectStream) == cudaSuccess) {
      pool_.release(std::move(context_));
    }
    cudaGetLastError();
  }
  Context& operator*() const { return *context_; }
  Context* operator->() const { return context_.get(); }

 private:
  ContextPool& pool_;
  std::unique_ptr<Context> context_;
};

}  // namespace ebrix::gpu
