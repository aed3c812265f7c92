#include "sparse_grad.h"

#include <algorithm>

namespace ebrix::train {

void SparseGradients::reset(const std::vector<TableSpec>& tables) {
  tables_.clear();
  tables_.resize(tables.size());
  for (size_t t = 0; t < tables.size(); ++t) {
    tables_[t].dim = tables[t].dim;
    tables_[t].slotOf.assign(tables[t].rows, -1);
  }
}

void SparseGradients::clear() {
  for (Table& t : tables_) {
    for (uint32_t row : t.rows) t.slotOf[row] = -1;
    t.rows.clear();
    t.counts.clear();
    t.items.clear();
  }
}

void SparseGradients::reduce(const Compute& compute) {
  for (Table& t : tables_) {
    const size_t slots = t.rows.size();
    // counts → start of each slot's run in `sorted`; the scatter keeps the offered order.
    size_t start = 0;
    for (size_t s = 0; s < slots; ++s) {
      const uint32_t n = t.counts[s];
      t.counts[s] = static_cast<uint32_t>(start);
      start += n;
    }
    t.sorted.resize(t.items.size());
    for (const Item& item : t.items) t.sorted[t.counts[item.slot]++] = item;
    // Now counts[s] is the end of slot s's run, and the start of slot s + 1's.
    const size_t dim = t.dim;
    t.grads.resize(slots * dim);
    t.squares.resize(slots);
    compute.blocks(slots, 64, [&](size_t begin, size_t end) {
      for (size_t s = begin; s < end; ++s) {
        float* g = t.grads.data() + s * dim;
        std::fill(g, g + dim, 0.0f);
        const size_t first = s == 0 ? 0 : t.counts[s - 1];
        for (size_t i = first; i < t.counts[s]; ++i) {
          const float* src = t.sorted[i].src;
          const float scale = t.sorted[i].scale;
          for (size_t d = 0; d < dim; ++d) g[d] += scale * src[d];
        }
        double sq = 0.0;
        for (size_t d = 0; d < dim; ++d) sq += static_cast<double>(g[d]) * g[d];
        t.squares[s] = sq;
      }
    }, 256);
  }
}

double SparseGradients::sumSquares() const {
  double total = 0.0;
  for (const Table& t : tables_) {
    for (size_t s = 0; s < t.rows.size(); ++s) total += t.squares[s];
  }
  return total;
}

}  // namespace ebrix::train
