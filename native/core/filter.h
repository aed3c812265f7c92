// Filter expressions over an AttributeTable, compiled to an allow bitset over its rows (bit
// r & 31 of word r >> 5 allows row r, as the indexes' search takes it), and to a sorted row
// list when few rows pass.
//
// Leaves (on attribute `attribute`):
//   Exists            the row has a value (multi-valued: a non-empty set)
//   Eq / In           the value is the given one / one of the given ones (uint, number, bool,
//                     category). On a multi-valued category, Eq is Has and In is HasAny.
//   Range             lower and/or upper bound, each inclusive or exclusive (uint, number)
//   Has / HasAny / HasAll   the row's categories contain the one / any / all of the given
//                     strings (category; a single-valued row is a set of one)
//   IdIn / IdNotIn    the rows of the given ids (mapped by FilterOptions::idToRow; unknown
//                     ids select nothing) / every other row
//   RowIn             the given rows (already mapped by the caller)
//   All / None
// Combinators: And, Or (any number of children; And of none is All, Or of none is None), Not.
//
// Missing values (two-valued logic, the simplest consistent rule): every leaf on an attribute
// is false on a row without a value for it, Exists included; Not is the plain complement over
// the rows. So Not(level == 3) selects the rows without a level too, and Not(level < 3) is not
// the same as level >= 3 on them; And(Exists(level), Not(...)) excludes them.
//
// Values are typed and must match the attribute: a uint attribute takes Uint values (64-bit),
// number takes Number (not NaN; infinities are fine), bool takes Bool, category takes String.
// A string no row has selects nothing. Errors are InvalidArgument naming the attribute:
// unknown attribute, type mismatch, an operator the type lacks (a range on a category),
// an empty value list, a NaN bound, an id leaf without idToRow, a tree deeper than
// kMaxFilterDepth.
//
// Evaluation is column at a time: each leaf fills a bitset of one chunk of rows (64 Ki rows:
// its words stay in cache) from the column's arrays, and combinators merge children word by
// word, skipping the rest of an And once it is empty. Chunks are independent, so several
// threads can evaluate them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "attributes.h"

namespace ebrix {

constexpr size_t kMaxFilterDepth = 64;

enum class FilterOp { All, None, And, Or, Not, Exists, Eq, In, Range, Has, HasAny, HasAll, IdIn, IdNotIn, RowIn };
const char* filterOpName(FilterOp op);

struct FilterValue {
  enum class Kind { Uint, Number, Bool, String };
  Kind kind = Kind::Uint;
  uint64_t uint = 0;
  double number = 0.0;
  bool boolean = false;
  std::string string;

  static FilterValue ofUint(uint64_t v);
  static FilterValue ofNumber(double v);
  static FilterValue ofBool(bool v);
  static FilterValue ofString(std::string v);
};

struct FilterNode {
  FilterOp op = FilterOp::All;
  std::string attribute;
  std::vector<FilterValue> values;   // Eq, Has: one; In, HasAny, HasAll: at least one
  bool hasLower = false, hasUpper = false;
  bool lowerInclusive = true, upperInclusive = true;
  FilterValue lower, upper;          // Range
  std::vector<uint64_t> ids;         // IdIn, IdNotIn
  std::vector<uint32_t> rows;        // RowIn
  std::vector<FilterNode> children;  // And, Or; Not: exactly one

  static FilterNode all();
  static FilterNode none();
  static FilterNode both(std::vector<FilterNode> children);    // And
  static FilterNode either(std::vector<FilterNode> children);  // Or
  static FilterNode negate(FilterNode child);                  // Not
  static FilterNode exists(std::string attribute);
  static FilterNode eq(std::string attribute, FilterValue value);
  static FilterNode in(std::string attribute, std::vector<FilterValue> values);
  // A range; pass a bound as nullptr to leave that side open.
  static FilterNode range(std::string attribute, const FilterValue* lower, bool lowerInclusive, const FilterValue* upper,
                          bool upperInclusive);
  static FilterNode has(std::string attribute, std::string value);
  static FilterNode hasAny(std::string attribute, std::vector<std::string> values);
  static FilterNode hasAll(std::string attribute, std::vector<std::string> values);
  static FilterNode idIn(std::vector<uint64_t> ids);
  static FilterNode idNotIn(std::vector<uint64_t> ids);
  static FilterNode rowIn(std::vector<uint32_t> rows);
};

// Maps an id to its row; false when the id is unknown. Called on the compiling thread, once
// per id of the filter, before evaluation.
using IdToRow = std::function<bool(uint64_t id, uint32_t* row)>;

struct FilterOptions {
  // A sorted row list comes with the bitset when count <= rowListBelow × rowCount (0: never;
  // 1: always).
  double rowListBelow = 0.01;
  IdToRow idToRow;  // needed by IdIn / IdNotIn
  // Threads evaluating chunks (on the shared pool, the caller included); 0: all hardware
  // threads. Tables of one chunk are evaluated on the calling thread.
  unsigned threads = 1;
};

struct FilterResult {
  size_t rowCount = 0;          // rows of the table state the filter was evaluated on
  std::vector<uint32_t> bits;   // (rowCount + 31) / 32 words; bits past rowCount are clear
  size_t count = 0;             // rows selected
  bool hasRows = false;
  std::vector<uint32_t> rows;   // when hasRows: the selected rows, ascending
};

// Validates `filter` against the table's schema and evaluates it on one consistent state of
// the table (appends and setRows running meanwhile are not seen, and do not wait).
FilterResult compileFilter(const AttributeTable& table, const FilterNode& filter, const FilterOptions& options = {});

}  // namespace ebrix
