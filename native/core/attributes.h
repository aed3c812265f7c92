// AttributeTable: columnar attributes of an index's rows, for filtered search (filter.h
// compiles a filter against a table into an allow bitset).
//
// Rows are numbered as the index numbers its vectors: row r is the r-th vector added. A column
// has a name and one of four types:
//   uint      unsigned integers, stored in 32 bits per value until a value needs 64 (per chunk)
//   number    doubles (NaN is rejected: it would make every comparison false silently)
//   bool
//   category  strings interned to uint32 codes per column; single-valued (one string per row)
//             or multi-valued (a set per row, such as skills), kept as offsets + codes (CSR)
// A row may have no value for a column ("missing"). A multi-valued row with no categories is
// missing: the two are the same thing. Filter semantics of missing values are in filter.h.
//
// Storage is chunked: each column keeps one chunk per kChunkRows rows (a multiple of 32, so a
// chunk is a whole number of bitset words), allocated only once a row of the chunk has a value
// for that column, so a sparse column costs nothing where it is empty. Within a chunk a
// single-valued column has a presence bitmap and a value array, and may cover fewer rows than
// its range holds (appends that leave the column out do not grow it): rows past its capacity
// are missing. A multi-valued chunk always covers its range's rows, since an empty set is
// recorded in the offsets. A chunk grows by doubling up to kChunkRows.
//
// Concurrency: readers (filter compiles) take an immutable snapshot {row count, chunk
// pointers}; writers are serialised and never block a reader for longer than a pointer copy.
//  * An append writes the new rows in place, past the published row count, into the last
//    chunk when it has room (no reader looks past the count it took), and publishes a new
//    snapshot afterwards. Bitmap words are std::atomic because a word holds both published
//    rows (read) and new ones (written); value arrays need no atomics, as readers and the
//    writer touch different elements.
//  * A chunk that must grow, widen (uint to 64 bits) or change published rows (setRows) is
//    copied, the copy is changed and then published; snapshots taken before still hold the
//    old chunk through its shared_ptr. So a compile sees one consistent table state.
//  * Category dictionaries only grow and codes never change. A compile looks up its strings
//    after taking its snapshot, so every string a snapshot row uses is already interned.
//  * All allocation of a write happens before anything is published or written in place: an
//    out-of-memory failure leaves the table as it was.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace ebrix {

enum class AttributeType { Uint, Number, Bool, Category };
const char* attributeTypeName(AttributeType type);

struct AttributeSpec {
  std::string name;
  AttributeType type = AttributeType::Uint;
  bool multi = false;  // category only: a set of strings per row
};

// One column's values for a batch of `count` rows (rows of an append, or the rows given to
// setRows, in that order). Exactly the pointers of the column's type are set:
//   uint      uint32s or uint64s (count values)
//   number    numbers (count values)
//   bool      bools (count bytes, non-zero is true)
//   category  dictionary (the distinct strings of the batch) and codes indexing it: one code
//             per row (single-valued), or offsets (count + 1, offsets[0] = 0, non-decreasing)
//             delimiting each row's codes (multi-valued)
// present (count bytes, zero for a missing value) is optional for single-valued columns and
// not allowed for multi-valued ones (an empty set is a missing value). The value of a missing
// row is ignored. A column of the schema left out of a batch is missing on its rows.
struct AttributeValues {
  std::string name;
  const uint8_t* present = nullptr;
  const uint32_t* uint32s = nullptr;
  const uint64_t* uint64s = nullptr;
  const double* numbers = nullptr;
  const uint8_t* bools = nullptr;
  const std::string* dictionary = nullptr;
  size_t dictionarySize = 0;
  const uint32_t* codes = nullptr;
  const uint32_t* offsets = nullptr;
};

// Strings of one category column and their codes, in the order first seen. Append-only.
class CategoryDictionary {
 public:
  static constexpr uint32_t kNoCode = 0xFFFFFFFFu;

  // The code of `value`, or kNoCode when no row ever had it.
  uint32_t find(std::string_view value) const;
  size_t size() const;
  std::string at(uint32_t code) const;
  size_t memoryBytes() const;

  // The code of `value`, interning it when new (callers serialise interning).
  uint32_t intern(const std::string& value);

 private:
  mutable std::shared_mutex mutex_;
  std::deque<std::string> strings_;  // a deque never moves its elements: codes_ keys view them
  std::unordered_map<std::string_view, uint32_t> codes_;
  size_t stringBytes_ = 0;
};

// One chunk of one column. Read-only once published, except in-place appends past the
// published row count (see the top of this file).
struct AttributeChunk {
  AttributeChunk(const AttributeSpec& spec, uint32_t capacity, bool wide, uint32_t codeCapacity);

  bool isPresent(uint32_t row) const {
    return (present[row >> 5].load(std::memory_order_relaxed) >> (row & 31)) & 1u;
  }
  size_t bytes() const;

  uint32_t capacity;      // rows, a multiple of 32
  bool wide;              // uint: values in wideValues (else narrow)
  uint32_t codeCapacity;  // multi-valued category: capacity of codes
  std::unique_ptr<std::atomic<uint32_t>[]> present;  // single-valued columns
  std::unique_ptr<std::atomic<uint32_t>[]> flags;    // bool values
  std::unique_ptr<uint32_t[]> narrow;                // uint in 32 bits, or category codes
  std::unique_ptr<uint64_t[]> wideValues;            // uint in 64 bits
  std::unique_ptr<double[]> numbers;
  std::unique_ptr<uint32_t[]> offsets;  // multi-valued: capacity + 1, into codes
  std::unique_ptr<uint32_t[]> codes;    // multi-valued
};

// What a filter compile reads: `rows` rows, and per column its chunks (a null chunk: no row
// of it has a value for the column). Chunk c holds rows [c * kChunkRows, (c + 1) * kChunkRows).
struct AttributeSnapshot {
  size_t rows = 0;
  std::vector<std::vector<std::shared_ptr<const AttributeChunk>>> chunks;  // [column][chunk]
};

class AttributeTable {
 public:
  // Rows are addressed with 32 bits, as in the indexes.
  static constexpr size_t kMaxRows = 0xFFFFFFFFu;
  static constexpr uint32_t kChunkRows = 1u << 16;

  // InvalidArgument for an empty or repeated name, or `multi` on a type other than category.
  explicit AttributeTable(std::vector<AttributeSpec> schema);

  const std::vector<AttributeSpec>& schema() const { return schema_; }
  // The column named `name`, or -1.
  int column(std::string_view name) const;
  // The schema's names, comma separated, for error messages.
  std::string columnNames() const;
  const CategoryDictionary& dictionary(size_t column) const { return *dictionaries_[column]; }

  size_t rowCount() const;

  // Appends `count` rows. Everything is validated first (known and distinct column names,
  // the pointers of each column's type, no NaN, codes inside the batch dictionary, offsets
  // well formed); on any error the table is unchanged. Safe while filters compile.
  void append(size_t count, const std::vector<AttributeValues>& columns);

  // Replaces whole rows (an upsert): each of the `count` rows (distinct, below rowCount())
  // takes the batch's values; columns left out of the batch become missing on those rows.
  // Copies each touched chunk of each column that has one (up to kChunkRows values), so it is
  // meant for occasional updates or batches of them, not one row at a time in a hot loop.
  void setRows(const uint32_t* rows, size_t count, const std::vector<AttributeValues>& columns);

  std::shared_ptr<const AttributeSnapshot> snapshot() const;

  // Bytes held by chunks (capacity included) and dictionaries (estimated).
  size_t memoryBytes() const;

 private:
  using ChunkList = std::vector<std::shared_ptr<AttributeChunk>>;

  // Validates a batch; returns per schema column its values or null when left out, and for
  // category columns the batch dictionary's codes in the table's dictionary (interned).
  std::vector<const AttributeValues*> matchColumns(const std::vector<AttributeValues>& columns, size_t count) const;
  std::vector<std::vector<uint32_t>> internBatch(const std::vector<const AttributeValues*>& given);
  // Builds (allocates) a snapshot of `chunks`; install() then publishes it without throwing.
  static std::shared_ptr<const AttributeSnapshot> makeSnapshot(const std::vector<ChunkList>& chunks, size_t rows);
  void install(std::shared_ptr<const AttributeSnapshot> state);

  const std::vector<AttributeSpec> schema_;
  std::unordered_map<std::string, size_t> columnOf_;
  std::vector<std::unique_ptr<CategoryDictionary>> dictionaries_;  // null for other types

  std::mutex writeMutex_;           // serialises append and setRows; guards chunks_, rows_
  std::vector<ChunkList> chunks_;   // the writer's view: [column][chunk]
  size_t rows_ = 0;
  mutable std::mutex stateMutex_;   // guards state_
  std::shared_ptr<const AttributeSnapshot> state_;
};

}  // namespace ebrix
