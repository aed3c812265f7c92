#include "machine_probe.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <vector>

#include "aligned_buffer.h"
#include "thread_pool.h"

namespace ebrix {
namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Keeps results observable so the compiler cannot drop the measured work.
std::atomic<float> sink{0.0f};

}  // namespace

double measureFmaGflops(const simd::Kernels& kernels, unsigned threads, double seconds) {
  threads = std::max(1u, threads);
  constexpr size_t kIterationsPerCall = size_t{1} << 20;
  std::vector<double> flops(threads, 0.0);
  const Clock::time_point start = Clock::now();
  // A pool of its own: the probe asks for exactly `threads` threads, whatever the shared
  // pool's size.
  ThreadPool pool(threads);
  pool.parallelFor(threads, threads, [&](size_t task, unsigned) {
    float local = 0.0f;
    double done = 0.0;
    do {
      local += kernels.fmaLoop(kIterationsPerCall);
      done += static_cast<double>(kIterationsPerCall) * kernels.fmaLoopFlops;
    } while (secondsSince(start) < seconds);
    flops[task] = done;
    sink.store(local, std::memory_order_relaxed);
  });
  const double elapsed = secondsSince(start);
  double total = 0.0;
  for (double f : flops) total += f;
  return total / elapsed / 1e9;
}

double measureReadGBps(const simd::Kernels& kernels, unsigned threads, size_t bytes) {
  threads = std::max(1u, threads);
  const size_t floats = std::max<size_t>(bytes / sizeof(float), threads * 4096);
  AlignedBuffer<float> buffer(floats);
  const size_t perThread = floats / threads;
  ThreadPool pool(threads);  // exactly `threads` threads, as in measureFmaGflops
  // Touch every page first (in parallel, so each thread's slice is local to it).
  pool.parallelFor(threads, threads, [&](size_t task, unsigned) {
    std::fill(buffer.data() + task * perThread, buffer.data() + (task + 1) * perThread, 1.0f);
  });
  double best = 0.0;
  for (int pass = 0; pass < 3; ++pass) {
    const Clock::time_point start = Clock::now();
    pool.parallelFor(threads, threads, [&](size_t task, unsigned) {
      const float* slice = buffer.data() + task * perThread;
      // dot(x, x) loads each line once from memory; the second operand hits the same line.
      sink.store(kernels.dot(slice, slice, perThread), std::memory_order_relaxed);
    });
    const double elapsed = secondsSince(start);
    best = std::max(best, static_cast<double>(perThread * threads * sizeof(float)) / elapsed / 1e9);
  }
  return best;
}

}  // namespace ebrix
