#include "topk.h"

#include <algorithm>

namespace ebrix {
namespace {

// ranksBefore as a function object: the standard algorithms inline it, where a function
// pointer costs an indirect call per comparison (a third of a small search's selection time).
struct RanksBefore {
  bool operator()(const Candidate& a, const Candidate& b) const { return ranksBefore(a, b); }
};

}  // namespace

void TopKCollector::reset(size_t k) {
  k_ = k;
  capacity_ = std::max<size_t>(2 * k, k + 64);
  threshold_ = -std::numeric_limits<float>::infinity();
  thresholdId_ = kNoId;
  buffer_.clear();
  buffer_.reserve(capacity_);
}

void TopKCollector::shrink() {
  std::nth_element(buffer_.begin(), buffer_.begin() + (k_ - 1), buffer_.end(), RanksBefore{});
  buffer_.resize(k_);
  // After nth_element the element at k-1 is the k-th best: the new bar to beat.
  threshold_ = buffer_[k_ - 1].score;
  thresholdId_ = buffer_[k_ - 1].id;
}

void TopKCollector::drainInto(std::vector<Candidate>& out) {
  if (buffer_.size() > k_) shrink();
  out.insert(out.end(), buffer_.begin(), buffer_.end());
  buffer_.clear();
}

void TopKHeap::admit(const Candidate& c) {
  if (k_ == 0) return;
  // RanksBefore as the heap's "less": the front is the candidate that ranks last.
  if (heap_.size() < k_) {
    heap_.push_back(c);
    std::push_heap(heap_.begin(), heap_.end(), RanksBefore{});
  } else {
    // c ranks before the front (offer checked): it replaces the front and sinks below every
    // child that ranks after it, one pass instead of pop_heap's and push_heap's two.
    const size_t n = heap_.size();
    size_t i = 0;
    for (size_t child = 1; child < n; child = 2 * i + 1) {
      if (child + 1 < n && ranksBefore(heap_[child], heap_[child + 1])) ++child;  // the one ranking last
      if (!ranksBefore(c, heap_[child])) break;
      heap_[i] = heap_[child];
      i = child;
    }
    heap_[i] = c;
  }
  if (heap_.size() == k_) {
    threshold_ = heap_.front().score;
    thresholdId_ = heap_.front().id;
  }
}

void keepBest(std::vector<Candidate>& candidates, size_t k) {
  if (candidates.size() <= k) return;
  std::nth_element(candidates.begin(), candidates.begin() + (k - 1), candidates.end(), RanksBefore{});
  candidates.resize(k);
}

void selectBest(std::vector<Candidate>& candidates, size_t k) {
  if (candidates.size() > k) {
    std::nth_element(candidates.begin(), candidates.begin() + (k - 1), candidates.end(), RanksBefore{});
    candidates.resize(k);
  }
  std::sort(candidates.begin(), candidates.end(), RanksBefore{});
}

}  // namespace ebrix
