// What the trainer's kernels run on: the SIMD kernel table, the process thread pool and a
// thread count. Work is split into blocks whose boundaries depend only on the problem size,
// never on the thread count, and each output value is computed by one block in a fixed
// order, so results are bit-identical for any thread count.
#pragma once

#include <algorithm>
#include <cstddef>

#include "../simd/kernels.h"
#include "../thread_pool.h"

namespace ebrix::train {

struct Compute {
  const simd::Kernels* kernels = nullptr;
  ThreadPool* pool = nullptr;
  unsigned threads = 1;

  // fn(begin, end) for consecutive blocks of `block` items covering [0, count). Work below
  // `serialBelow` items runs on the calling thread: waking the pool costs more.
  template <typename Fn>
  void blocks(size_t count, size_t block, Fn&& fn, size_t serialBelow = 0) const {
    if (count == 0) return;
    block = std::max<size_t>(block, 1);
    const size_t tasks = (count + block - 1) / block;
    if (tasks == 1 || threads <= 1 || count < serialBelow) {
      for (size_t t = 0; t < tasks; ++t) fn(t * block, std::min(count, (t + 1) * block));
      return;
    }
    pool->parallelFor(tasks, threads, [&](size_t t, unsigned) { fn(t * block, std::min(count, (t + 1) * block)); });
  }
};

}  // namespace ebrix::train
