#include <algorithm>
#include <random>

#include "../topk.h"
#include "check.h"

using namespace ebrix;

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
      TopKCollector collector;
      collector.reset(k);
      for (size_t i = 0; i < n; ++i) {
        const Candidate c{static_cast<float>(score(rng)), static_cast<uint32_t>(i), ids[i]};
        all.push_back(c);
        if (c.score >= collector.threshold()) collector.offer(c.score, c.row, c.id);
      }
      std::vector<Candidate> got;
      collector.drainInto(got);
      selectBest(got, k);
      std::sort(all.begin(), all.end(), ranksBefore);
      all.resize(std::min(n, k));
      CHECK_MSG(got.size() == all.size(), "k " << k << " n " << n);
      for (size_t i = 0; i < all.size(); ++i) {
        CHECK_MSG(got[i].id == all[i].id && got[i].score == all[i].score, "k " << k << " n " << n << " at " << i);
      }
    }
  }
}
