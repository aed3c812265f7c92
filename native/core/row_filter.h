// What a search and a write of an index with attributes (attributes.h) need from the index so
// that a filtered search reads one state: the filter is evaluated after the search has taken
// its snapshot, and a write appends its attribute records before it publishes its rows.
//
// Evaluated in the other order (compile, then search, as two calls), a write landing between
// the two is seen by the search but not by the filter: an upserted id would be missing from
// that search (its old row is a tombstone, its new row not yet in the filter's bitset), and an
// id named by the filter would resolve to the row it had before. With the filter run on the
// search's own state, and a state's rows always having their records, a filtered search is an
// exact filtered search over one published state.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace ebrix {

// Maps an id to its row on the search's state; false when the id is not held there. (The
// same type as filter.h's IdToRow.)
using RowOfId = std::function<bool(uint64_t id, uint32_t* row)>;

// Returns the allow bitset over rows (bit r & 31 of word r >> 5) of a filter, evaluated by the
// search after it took its state; rows past the last word are not allowed.
using RowFilter = std::function<std::vector<uint32_t>(const RowOfId& rowOfId)>;

// Runs during a write under the index's writer lock, after validation and allocation and
// before the write's rows are published, with the first row the write numbers (rows first ..
// first + count - 1, in the order given). Appends the write's attribute records. If it throws,
// the write is abandoned and the index left as it was.
using WriteHook = std::function<void(uint64_t firstRow)>;

}  // namespace ebrix
