// ThreadPool resizing: the pool's size caps a job's threads, and resizing while jobs run
// (the shared pool under configure({ threads })) drops no task and never deadlocks. Run under
// ThreadSanitizer by scripts/test-sanitizers.sh.
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../error.h"
#include "../thread_pool.h"
#include "check.h"

using namespace ebrix;

namespace {

// Waits (bounded) until the pool's running workers are `expected`.
bool workersSettle(ThreadPool& pool, unsigned expected) {
  for (int i = 0; i < 2000; ++i) {
    if (pool.workerCount() == expected) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

}  // namespace

TEST_CASE("thread_pool.size_caps_slots_and_resize_changes_workers") {
  ThreadPool pool(3);
  CHECK(pool.threadCount() == 3);
  CHECK(pool.resolve(0) == 3);
  CHECK(pool.resolve(2) == 2);
  CHECK(pool.resolve(10) == 3);
  CHECK(workersSettle(pool, 2));
  std::atomic<unsigned> maxSlot{0};
  std::vector<std::atomic<int>> runs(500);
  pool.parallelFor(runs.size(), 16, [&](size_t task, unsigned slot) {
    unsigned seen = maxSlot.load();
    while (slot > seen && !maxSlot.compare_exchange_weak(seen, slot)) {
    }
    runs[task].fetch_add(1);
  });
  CHECK_MSG(maxSlot.load() < 3, "slot " << maxSlot.load() << " in a pool of 3");
  for (auto& r : runs) CHECK(r.load() == 1);

  pool.resize(6);
  CHECK(pool.threadCount() == 6);
  CHECK(workersSettle(pool, 5));
  pool.resize(1);
  CHECK(pool.threadCount() == 1);
  CHECK(workersSettle(pool, 0));
  // Size 1: the caller runs every task itself, on slot 0.
  std::atomic<int> sum{0};
  pool.parallelFor(100, 8, [&](size_t task, unsigned slot) {
    CHECK(slot == 0);
    sum.fetch_add(static_cast<int>(task));
  });
  CHECK(sum.load() == 4950);
  pool.resize(4);
  CHECK(workersSettle(pool, 3));
}

TEST_CASE("thread_pool.rejects_invalid_sizes") {
  ThreadPool pool(2);
  CHECK_THROWS_CODE(pool.resize(0), ErrorCode::InvalidArgument);
  CHECK_THROWS_CODE(pool.resize(ThreadPool::kMaxThreads + 1), ErrorCode::InvalidArgument);
  CHECK(pool.threadCount() == 2);
}

TEST_CASE("thread_pool.resize_under_load_drops_nothing") {
  ThreadPool pool(4);
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::atomic<long> jobs{0};
  // Callers run jobs whose every task must run exactly once, with per-slot scratch that must
  // never be shared by two threads at once.
  const auto caller = [&](unsigned seed) {
    std::mt19937 rng(seed);
    while (!stop.load()) {
      const size_t tasks = 1 + rng() % 300;
      const unsigned parallelism = 1 + rng() % 8;
      std::vector<std::atomic<int>> runs(tasks);
      std::vector<std::atomic<int>> slotBusy(parallelism);
      pool.parallelFor(tasks, parallelism, [&](size_t task, unsigned slot) {
        if (slot >= parallelism || slotBusy[slot].fetch_add(1) != 0) failures.fetch_add(1);
        volatile double x = 0;
        for (int i = 0; i < 200; ++i) x = x + i * 0.5;
        runs[task].fetch_add(1);
        slotBusy[slot].fetch_sub(1);
      });
      for (auto& r : runs) {
        if (r.load() != 1) failures.fetch_add(1);
      }
      jobs.fetch_add(1);
    }
  };
  std::vector<std::thread> callers;
  for (unsigned c = 0; c < 3; ++c) callers.emplace_back(caller, 11 + c);
  std::mt19937 rng(7);
  for (int i = 0; i < 200; ++i) {
    pool.resize(1 + rng() % 8);
    std::this_thread::sleep_for(std::chrono::microseconds(200 + rng() % 800));
  }
  stop.store(true);
  for (auto& t : callers) t.join();
  CHECK_MSG(failures.load() == 0, failures.load() << " tasks ran twice, never, or on a shared slot");
  CHECK(jobs.load() > 0);
  // Retired workers leave once idle; the survivors match the last size.
  CHECK(workersSettle(pool, pool.threadCount() - 1));
}

TEST_CASE("thread_pool.errors_propagate_after_resize") {
  ThreadPool pool(2);
  pool.resize(5);
  bool threw = false;
  try {
    pool.parallelFor(1000, 5, [&](size_t task, unsigned) {
      if (task == 500) throw std::runtime_error("task 500");
    });
  } catch (const std::runtime_error& e) {
    threw = std::string(e.what()) == "task 500";
  }
  CHECK(threw);
  pool.resize(2);
  std::atomic<int> count{0};
  pool.parallelFor(100, 2, [&](size_t, unsigned) { count.fetch_add(1); });
  CHECK(count.load() == 100);
}

TEST_CASE("thread_pool.threads_from_environment") {
  unsigned threads = 0;
  std::string error;
  const char* saved = std::getenv("EBRIX_THREADS");
  const std::string previous = saved ? saved : "";
  setenv("EBRIX_THREADS", "6", 1);
  CHECK(ThreadPool::threadsFromEnvironment(&threads, &error) && threads == 6 && error.empty());
  for (const char* bad : {"0", "-1", "4097", "3.5", "abc", "", "8x"}) {
    setenv("EBRIX_THREADS", bad, 1);
    CHECK_MSG(!ThreadPool::threadsFromEnvironment(&threads, &error) && !error.empty(), "'" << bad << "'");
    CHECK_MSG(error.find("EBRIX_THREADS") != std::string::npos, error);
  }
  unsetenv("EBRIX_THREADS");
  CHECK(!ThreadPool::threadsFromEnvironment(&threads, &error) && error.empty());
  if (saved) setenv("EBRIX_THREADS", previous.c_str(), 1);
}
