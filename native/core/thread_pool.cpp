#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <exception>

namespace ebrix {

struct ThreadPool::Job {
  size_t tasks = 0;
  unsigned maxSlots = 1;
  const TaskFn* fn = nullptr;
  std::atomic<size_t> next{0};
  std::atomic<unsigned> slotsTaken{0};
  std::atomic<bool> failed{false};
  std::mutex doneMutex;
  std::condition_variable doneCv;
  size_t finished = 0;  // guarded by doneMutex
  std::exception_ptr error;  // guarded by doneMutex
};

ThreadPool& ThreadPool::shared() {
  // Never destroyed: worker threads may outlive static destruction order at process exit.
  static ThreadPool* pool = new ThreadPool(hardwareThreads() - 1);
  return *pool;
}

unsigned ThreadPool::hardwareThreads() {
  // Read once: glibc answers hardware_concurrency() by opening and reading /sys files, which
  // cost more than a small search when done on every call.
  static const unsigned n = [] {
    const unsigned found = std::thread::hardware_concurrency();
    return found == 0 ? 1u : found;
  }();
  return n;
}

ThreadPool::ThreadPool(unsigned workers) { ensureWorkers(workers); }

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

unsigned ThreadPool::workerCount() {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<unsigned>(workers_.size());
}

void ThreadPool::ensureWorkers(unsigned count) {
  std::lock_guard<std::mutex> lock(mutex_);
  while (workers_.size() < count) workers_.emplace_back([this] { workerLoop(); });
}

void ThreadPool::work(Job& job, unsigned slot) {
  size_t done = 0;
  std::exception_ptr error;
  for (;;) {
    if (job.failed.load(std::memory_order_relaxed)) break;
    const size_t task = job.next.fetch_add(1, std::memory_order_relaxed);
    if (task >= job.tasks) break;
    try {
      (*job.fn)(task, slot);
    } catch (...) {
      error = std::current_exception();
      job.failed.store(true, std::memory_order_relaxed);
    }
    ++done;
  }
  // Tasks skipped after a failure count as finished so the caller can return.
  std::lock_guard<std::mutex> lock(job.doneMutex);
  if (error && !job.error) job.error = error;
  job.finished += done;
  if (job.failed.load()) {
    // Claim every task nobody has started yet.
    const size_t claimed = job.next.exchange(job.tasks);
    if (claimed < job.tasks) job.finished += job.tasks - claimed;
  }
  job.doneCv.notify_all();
}

void ThreadPool::workerLoop() {
  for (;;) {
    std::shared_ptr<Job> job;
    unsigned slot = 0;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = queue_.front();
      slot = job->slotsTaken.fetch_add(1);
      const bool exhausted = job->next.load() >= job->tasks;
      if (slot + 1 >= job->maxSlots || exhausted) queue_.pop_front();
      if (slot >= job->maxSlots || exhausted) continue;
    }
    work(*job, slot);
  }
}

void ThreadPool::parallelFor(size_t tasks, unsigned parallelism, const TaskFn& fn) {
  if (tasks == 0) return;
  // More threads than twice the cores only adds switching, and the pool never shrinks.
  const unsigned cap = 2 * hardwareThreads();
  parallelism = std::max(1u, std::min({parallelism, cap, static_cast<unsigned>(std::min<size_t>(tasks, cap))}));
  if (parallelism == 1) {
    for (size_t t = 0; t < tasks; ++t) fn(t, 0);
    return;
  }
  ensureWorkers(parallelism - 1);

  auto job = std::make_shared<Job>();
  job->tasks = tasks;
  job->maxSlots = parallelism;
  job->fn = &fn;
  job->slotsTaken.store(1);  // slot 0 is the caller's
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(job);
  }
  for (unsigned i = 1; i < parallelism; ++i) wake_.notify_one();

  work(*job, 0);
  {
    std::unique_lock<std::mutex> lock(job->doneMutex);
    job->doneCv.wait(lock, [&] { return job->finished >= job->tasks; });
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = std::find(queue_.begin(), queue_.end(), job);
    if (it != queue_.end()) queue_.erase(it);
  }
  if (job->error) std::rethrow_exception(job->error);
}

}  // namespace ebrix
