// A process-wide pool of native worker threads. A caller splits its work into tasks and
// runs them with `parallelFor`; it works on its own tasks too, so a pool of N-1 workers plus
// the caller keeps N cores busy. Several callers (e.g. concurrent searches from the libuv
// threads) may share the pool: their jobs queue up and workers drain them in order.
//
// Size: `threadCount()` is the most threads one job runs on (the caller included), and the
// pool keeps threadCount() - 1 workers. The shared pool starts at EBRIX_THREADS (read once,
// an integer in [1, kMaxThreads]) or the hardware thread count, and `resize` changes it at
// any time, jobs in flight included: a job never depends on a worker to finish (its caller
// claims tasks too), so growing only adds helpers and shrinking retires the workers above the
// new size once they finish the task they hold; no task is dropped. A job's parallelism is
// capped when it starts, so a job that started under a larger size may still use its slots
// (one per thread that joined it) until it ends.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace ebrix {

class ThreadPool {
 public:
  // fn(task, slot): `slot` is in [0, parallelism) and is held by one thread for the whole
  // job, so callers can keep per-slot scratch state without locks.
  using TaskFn = std::function<void(size_t task, unsigned slot)>;

  static constexpr unsigned kMaxThreads = 4096;

  static ThreadPool& shared();
  static unsigned hardwareThreads();
  // EBRIX_THREADS parsed: true and *out set for an integer in [1, kMaxThreads]; false with
  // *error saying why for any other value; false with an empty error when it is unset.
  static bool threadsFromEnvironment(unsigned* out, std::string* error);

  // A pool of `threads` threads: threads - 1 workers plus each caller (at least 1).
  explicit ThreadPool(unsigned threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Runs fn for every task in [0, tasks) on at most min(parallelism, threadCount()) threads
  // (the caller included) and returns when all are done. The first exception thrown by a
  // task is rethrown here, after the other tasks have stopped.
  void parallelFor(size_t tasks, unsigned parallelism, const TaskFn& fn);

  // Sets the size (InvalidArgument outside [1, kMaxThreads]); safe while jobs run.
  void resize(unsigned threads);
  unsigned threadCount() const;
  // The threads a job asking for `requested` gets by default: the pool size for 0, else
  // the request capped at the pool size.
  unsigned resolve(unsigned requested) const;
  // Worker threads running now, retiring ones included (tests).
  unsigned workerCount();

 private:
  struct Job;
  struct Worker;
  void workerLoop(Worker* self);
  static void work(Job& job, unsigned slot);

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::vector<std::unique_ptr<Worker>> workers_;   // the current size's
  std::vector<std::unique_ptr<Worker>> retiring_;  // above a smaller size, finishing their task
  unsigned threads_ = 1;
  bool stopping_ = false;
};

}  // namespace ebrix
