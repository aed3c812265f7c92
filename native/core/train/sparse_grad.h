// Gradients of embedding tables, kept sparse: only the rows a batch touched.
//
// The backward pass offers contributions (row, gradient vector, scale) one by one in a fixed
// order (tower, input, batch row, bag position). Each table numbers its touched rows in order
// of first touch, with a row → slot map the size of the table that is reset row by row, so a
// step costs nothing per untouched row. reduce() sorts the contributions by slot (a stable
// counting sort) and sums each row's contributions in the order they were offered, one row
// per task: the sums, and so the gradients, do not depend on the thread count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "compute.h"
#include "model.h"

namespace ebrix::train {

class SparseGradients {
 public:
  void reset(const std::vector<TableSpec>& tables);
  // Forgets the rows of the previous step.
  void clear();

  // Adds scale × src[0, dim) to the gradient of `row`. `src` must stay valid until reduce().
  void add(size_t table, uint32_t row, const float* src, float scale) {
    Table& t = tables_[table];
    int32_t& slot = t.slotOf[row];
    if (slot < 0) {
      slot = static_cast<int32_t>(t.rows.size());
      t.rows.push_back(row);
      t.counts.push_back(0);
    }
    ++t.counts[static_cast<size_t>(slot)];
    t.items.push_back({src, scale, static_cast<uint32_t>(slot)});
  }

  // Sums the contributions into one gradient per touched row.
  void reduce(const Compute& compute);

  size_t tableCount() const { return tables_.size(); }
  size_t dim(size_t table) const { return tables_[table].dim; }
  // Touched rows in order of first touch; their gradients, rows × dim, after reduce().
  const std::vector<uint32_t>& rows(size_t table) const { return tables_[table].rows; }
  const float* gradients(size_t table) const { return tables_[table].grads.data(); }
  // Σ of squared gradients over every touched row of every table, in a fixed order.
  double sumSquares() const;

 private:
  struct Item {
    const float* src;
    float scale;
    uint32_t slot;
  };
  struct Table {
    size_t dim = 0;
    std::vector<int32_t> slotOf;  // per table row: its slot this step, or -1
    std::vector<uint32_t> rows;
    std::vector<uint32_t> counts;  // contributions per slot, then the start of each slot
    std::vector<Item> items;
    std::vector<Item> sorted;
    std::vector<float> grads;
    std::vector<double> squares;  // per slot
  };
  std::vector<Table> tables_;
};

}  // namespace ebrix::train
