// JavaScript class AttributeTable (attributes.cpp), and what the index classes need of it to
// keep attributes with their rows: the native table behind a JS table object, filters parsed
// for a search to evaluate itself, and a batch's columns copied for a write off the event loop.
#pragma once

#include <napi.h>

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "../core/attributes.h"
#include "../core/filter.h"
#include "../core/row_filter.h"

namespace ebrix::binding {

void initAttributeTable(Napi::Env env, Napi::Object exports);

// The table of a JS AttributeTable object; EBRIX_INVALID_ARGUMENT for any other value,
// EBRIX_DISPOSED for a disposed table.
std::shared_ptr<AttributeTable> attributeTableOf(const Napi::Value& value);

// The table argument of an index's saveAsync: null for undefined, else attributeTableOf.
std::shared_ptr<const AttributeTable> optionalAttributeTable(const Napi::Value& value);

// Sets out.attributes (the handle `new AttributeTable(handle)` adopts) and
// out.attributeSchema ([{ name, type, multi }]) for the table an index file held, when any.
void setOpenedAttributes(Napi::Env env, Napi::Object out, std::shared_ptr<AttributeTable> table);

// A filter node as AttributeTable.compile takes it (lib/native.ts, NativeFilterNode).
FilterNode parseFilterNode(const Napi::Value& value);

// A batch's columns (as AttributeTable.append takes them) copied out of the JS arrays, so
// that a write off the event loop can append them.
class OwnedColumns {
 public:
  static std::shared_ptr<const OwnedColumns> parse(const Napi::Value& columns, size_t count);
  const std::vector<AttributeValues>& values() const { return values_; }

 private:
  struct Column {
    std::vector<uint8_t> present, bools;
    std::vector<uint32_t> uint32s, codes, offsets;
    std::vector<uint64_t> uint64s;
    std::vector<double> numbers;
    std::vector<std::string> dictionary;
  };
  std::vector<std::unique_ptr<Column>> columns_;  // stable addresses: values_ points into them
  std::vector<AttributeValues> values_;
};

// Where an index keeps its attribute records (an index made with `attributes`): the table,
// and for a write the batch to append, before the write publishes its rows.
struct RowRecords {
  std::shared_ptr<AttributeTable> table;
  std::shared_ptr<const OwnedColumns> columns;  // writes only
  size_t count = 0;

  // parse(table, columns, count): both undefined for an index without attributes.
  static RowRecords parse(const Napi::Value& table, const Napi::Value& columns, size_t count);
  // Appends the batch (the rows must be the table's next ones: row `firstRow` is the table's
  // size), or nothing without a table.
  WriteHook hook() const;
};

// A filter for a search to evaluate on its own state (row_filter.h): compiled against the
// table with the index's id lookup.
struct SearchFilter {
  std::shared_ptr<AttributeTable> table;
  std::shared_ptr<const FilterNode> node;
  unsigned threads = 1;

  // parse(node, table): both undefined for a search without a filter.
  static SearchFilter parse(const Napi::Value& node, const Napi::Value& table, unsigned threads);
  bool given() const { return table != nullptr; }
  // The RowFilter of this filter (valid while this object lives); null when none is given.
  const RowFilter* rowFilter();

 private:
  RowFilter fn_;
};

}  // namespace ebrix::binding
