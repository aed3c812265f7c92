#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <string>
#include <system_error>

#include "error.h"

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

struct ThreadPool::Worker {
  std::thread thread;
  bool retire = false;  // guarded by the pool's mutex_
  bool exited = false;  // guarded by the pool's mutex_: the loop has returned (join is immediate)
};

bool ThreadPool::threadsFromEnvironment(unsigned* out, std::string* error) {
  error->clear();
  const char* text = std::getenv("EBRIX_THREADS");
  if (text == nullptr) return false;
  const std::string value(text);
  char* end = nullptr;
  const long parsed = value.empty() ? 0 : std::strtol(value.c_str(), &end, 10);
  if (value.empty() || end == nullptr || *end != '\0' || parsed < 1 || parsed > long(kMaxThreads)) {
    *error = "Expected an integer from 1 to " + std::to_string(kMaxThreads) + " for EBRIX_THREADS but received '" +
             value + "'";
    return false;
  }
  *out = static_cast<unsigned>(parsed);
  return true;
}

ThreadPool& ThreadPool::shared() {
  // Never destroyed: worker threads may outlive static destruction order at process exit.
  // An invalid EBRIX_THREADS leaves the hardware default here; lib/native.ts reports it.
  static ThreadPool* pool = [] {
    unsigned threads = hardwareThreads();
    std::string error;
    threadsFromEnvironment(&threads, &error);
    return new ThreadPool(threads);
  }();
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

ThreadPool::ThreadPool(unsigned threads) { resize(std::clamp(threads, 1u, kMaxThreads)); }

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& w : workers_) w->thread.join();
  for (auto& w : retiring_) w->thread.join();
}

unsigned ThreadPool::threadCount() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return threads_;
}

unsigned ThreadPool::resolve(unsigned requested) const {
  const unsigned size = threadCount();
  return requested == 0 ? size : std::min(requested, size);
}

unsigned ThreadPool::workerCount() {
  std::lock_guard<std::mutex> lock(mutex_);
  unsigned running = static_cast<unsigned>(workers_.size());
  for (const auto& w : retiring_) running += w->exited ? 0 : 1;
  return running;
}

void ThreadPool::resize(unsigned threads) {
  if (threads < 1 || threads > kMaxThreads) {
    throw Error(ErrorCode::InvalidArgument, "Expected an integer from 1 to " + std::to_string(kMaxThreads) +
                                                " for threads but received " + std::to_string(threads));
  }
  std::vector<std::unique_ptr<Worker>> exited;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    // Workers retired by an earlier shrink that have left their loop are joined below,
    // outside the lock; the ones still finishing a task stay until a later resize or the end.
    for (auto it = retiring_.begin(); it != retiring_.end();) {
      if ((*it)->exited) {
        exited.push_back(std::move(*it));
        it = retiring_.erase(it);
      } else {
        ++it;
      }
    }
    while (workers_.size() + 1 > threads) {
      workers_.back()->retire = true;
      retiring_.push_back(std::move(workers_.back()));
      workers_.pop_back();
    }
    try {
      while (workers_.size() + 1 < threads) {
        auto worker = std::make_unique<Worker>();
        Worker* self = worker.get();
        worker->thread = std::thread([this, self] { workerLoop(self); });
        workers_.push_back(std::move(worker));
      }
    } catch (const std::system_error&) {
      // The pool stays usable at the size it reached.
      threads_ = static_cast<unsigned>(workers_.size()) + 1;
      throw Error(ErrorCode::OutOfMemory, "Cannot start " + std::to_string(threads - 1) +
                                              " worker threads (the system refused a thread)");
    }
    threads_ = threads;
  }
  wake_.notify_all();  // retiring workers wake up to leave
  for (auto& w : exited) w->thread.join();
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

void ThreadPool::workerLoop(Worker* self) {
  for (;;) {
    std::shared_ptr<Job> job;
    unsigned slot = 0;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || self->retire || !queue_.empty(); });
      if (stopping_ || self->retire) {
        self->exited = true;
        return;
      }
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
  const unsigned cap = threadCount();
  parallelism = std::max(1u, std::min({parallelism, cap, static_cast<unsigned>(std::min<size_t>(tasks, cap))}));
  if (parallelism == 1) {
    for (size_t t = 0; t < tasks; ++t) fn(t, 0);
    return;
  }

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

  // The caller works through the tasks itself, so the job finishes even if every worker is
  // busy elsewhere or retires meanwhile.
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
