// A process-wide pool of native worker threads. A caller splits its work into tasks and
// runs them with `parallelFor`; it works on its own tasks too, so a pool of N-1 workers plus
// the caller keeps N cores busy. Several callers (e.g. concurrent searches from the libuv
// threads) may share the pool: their jobs queue up and workers drain them in order.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace ebrix {

class ThreadPool {
 public:
  // fn(task, slot): `slot` is in [0, parallelism) and is held by one thread for the whole
  // job, so callers can keep per-slot scratch state without locks.
  using TaskFn = std::function<void(size_t task, unsigned slot)>;

  static ThreadPool& shared();
  static unsigned hardwareThreads();

  explicit ThreadPool(unsigned workers);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Runs fn for every task in [0, tasks) on at most `parallelism` threads (the caller
  // included) and returns when all are done. The first exception thrown by a task is
  // rethrown here, after the other tasks have stopped.
  void parallelFor(size_t tasks, unsigned parallelism, const TaskFn& fn);

  unsigned workerCount();

 private:
  struct Job;
  void ensureWorkers(unsigned count);
  void workerLoop();
  static void work(Job& job, unsigned slot);

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::vector<std::thread> workers_;
  bool stopping_ = false;
};

}  // namespace ebrix
