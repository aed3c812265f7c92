#include <algorithm>
#include <random>

#include "../topk.h"
#include "check.h"

using namespace ebrix;

namespace {

// Offers `offered` in order to a freshly reset selector (skipping what is below its threshold,
// as the scans do) and checks that it keeps what a full sort keeps.
template <class Selector>
void checkSelectsLikeSort(Selector& selector, size_t k, std::vector<Candidate> offered) {
  selector.reset(k);
  for (const Candidate& c : offered) {
    if (c.score >= selector.threshold()) selector.offer(c.score, c.row, c.id);
  }
  std::vector<Candidate> got;
  selector.drainInto(got);
  selectBest(got, k);
  std::sort(offered.begin(), offered.end(), ranksBefore);
  offered.resize(std::min(offered.size(), k));
  const size_t n = offered.size();
  CHECK_MSG(got.size() == n, "k " << k << " kept " << n);
  for (size_t i = 0; i < n && i < got.size(); ++i) {
    CHECK_MSG(got[i].id == offered[i].id && got[i].score == offered[i].score, "k " << k << " at " << i);
  }
}

}  // namespace

TEST_CASE("topk.collector_equals_full_sort_with_ties") {
  std::mt19937 rng(42);
  for (size_t k : {size_t{1}, size_t{5}, size_t{64}, size_t{300}}) {
    for (size_t n : {size_t{1}, size_t{10}, size_t{1000}, size_t{5000}}) {
      std::vector<Candidate> all;
      // Few distinct scores: lots of ties, which must go to the smaller id.
      std::uniform_int_distribution<int> score(0, 20);
      std::vector<uint64_t> ids(n);
      for (size_t i = 0; i < n; ++i) ids[i] = i * 7 + 3;
      std::shuffle(ids.begin(), ids.end(), rng);
      for (size_t i = 0; i < n; ++i) all.push_back({static_cast<float>(score(rng)), static_cast<uint32_t>(i), ids[i]});
      TopKCollector collector;
      checkSelectsLikeSort(collector, k, all);
    }
  }
}

// TopKHeap selects what TopKCollector selects (and a full sort): ties to the smaller id, any k
// against any number offered, offers in any order, and again after a reset.
TEST_CASE("topk.heap_equals_full_sort_with_ties") {
  std::mt19937 rng(7);
  TopKHeap heap;
  for (size_t k : {size_t{1}, size_t{2}, size_t{10}, size_t{40}, size_t{300}}) {
    for (size_t n : {size_t{0}, size_t{1}, size_t{39}, size_t{40}, size_t{41}, size_t{1000}, size_t{5000}}) {
      std::uniform_int_distribution<int> score(0, 20);
      std::vector<uint64_t> ids(n);
      for (size_t i = 0; i < n; ++i) ids[i] = i * 5 + 1;
      std::shuffle(ids.begin(), ids.end(), rng);
      std::vector<Candidate> all;
      heap.reset(k);
      TopKCollector collector;
      collector.reset(k);
      for (size_t i = 0; i < n; ++i) {
        const Candidate c{static_cast<float>(score(rng)), static_cast<uint32_t>(i), ids[i]};
        all.push_back(c);
        if (c.score >= heap.threshold()) heap.offer(c.score, c.row, c.id);
        collector.offer(c.score, c.row, c.id);
      }
      std::vector<Candidate> got, fromCollector;
      heap.drainInto(got);
      collector.drainInto(fromCollector);
      selectBest(got, k);
      selectBest(fromCollector, k);
      std::sort(all.begin(), all.end(), ranksBefore);
      all.resize(std::min(n, k));
      CHECK_MSG(got.size() == all.size(), "k " << k << " n " << n);
      CHECK(fromCollector.size() == all.size());
      for (size_t i = 0; i < all.size() && i < got.size(); ++i) {
        CHECK_MSG(got[i].id == all[i].id && got[i].score == all[i].score && got[i].row == all[i].row,
                  "k " << k << " n " << n << " at " << i);
        CHECK(fromCollector[i].id == got[i].id);
      }
    }
  }
}

// TopKSelector picks the heap or the collector by k, and either way selects what a full sort
// does, including when one selector object is reset from a small k to a large one and back.
TEST_CASE("topk.selector_equals_full_sort_across_resets") {
  std::mt19937 rng(11);
  TopKSelector selector;
  for (size_t k : {size_t{1}, TopKSelector::kHeapMaxK, TopKSelector::kHeapMaxK + 1, size_t{400}, size_t{10}, size_t{800}}) {
    for (size_t n : {size_t{0}, size_t{63}, size_t{65}, size_t{3000}}) {
      std::uniform_int_distribution<int> score(0, 50);
      std::vector<Candidate> all;
      for (size_t i = 0; i < n; ++i) all.push_back({static_cast<float>(score(rng)), static_cast<uint32_t>(i), (i * 7919) % 10007});
      checkSelectsLikeSort(selector, k, all);
    }
  }
}
