#include "attributes.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "error.h"

namespace ebrix {
namespace {

using Words = std::unique_ptr<std::atomic<uint32_t>[]>;

constexpr uint32_t kChunkRows = AttributeTable::kChunkRows;
constexpr uint32_t kMinChunkCapacity = 256;
constexpr size_t kMinCodeCapacity = 64;
constexpr uint64_t kMaxNarrow = std::numeric_limits<uint32_t>::max();

Error invalid(const std::string& what, const std::string& name, const std::string& received) {
  return Error(ErrorCode::InvalidArgument, "Expected " + what + " for " + name + " but received " + received);
}

std::string quoted(const std::string& s) { return "\"" + s + "\""; }

std::string typeLabel(const AttributeSpec& spec) {
  return spec.multi ? "multi-valued category" : attributeTypeName(spec.type);
}

Words zeroWords(size_t count) { return Words(new std::atomic<uint32_t>[count]()); }

// Only the (serialised) writer changes bits, so a relaxed load and store is enough; readers
// load words relaxed and are ordered after the write by the snapshot mutex.
inline void setBit(std::atomic<uint32_t>* words, uint32_t row, bool on) {
  std::atomic<uint32_t>& word = words[row >> 5];
  const uint32_t bit = 1u << (row & 31);
  const uint32_t old = word.load(std::memory_order_relaxed);
  word.store(on ? (old | bit) : (old & ~bit), std::memory_order_relaxed);
}

// Copies the words of `rows` rows, clearing the bits past them.
void copyWords(const std::atomic<uint32_t>* from, std::atomic<uint32_t>* to, uint32_t rows) {
  const uint32_t words = (rows + 31) / 32;
  for (uint32_t w = 0; w < words; ++w) to[w].store(from[w].load(std::memory_order_relaxed), std::memory_order_relaxed);
  if (rows % 32 != 0) {
    const uint32_t keep = (1u << (rows % 32)) - 1;
    to[words - 1].store(to[words - 1].load(std::memory_order_relaxed) & keep, std::memory_order_relaxed);
  }
}

uint32_t roundUp32(size_t n) { return static_cast<uint32_t>((n + 31) / 32 * 32); }

// Row capacity for a chunk that must hold `needed` rows (needed <= kChunkRows): doubling, so
// a column appended a row at a time copies each value O(1) times on average.
uint32_t grownCapacity(uint32_t current, size_t needed) {
  const size_t doubled = std::max<size_t>({needed, size_t{current} * 2, kMinChunkCapacity});
  return roundUp32(std::min<size_t>(doubled, kChunkRows));
}

uint32_t grownCodeCapacity(uint32_t current, size_t needed) {
  const size_t doubled = std::max<size_t>({needed, size_t{current} * 2, kMinCodeCapacity});
  return static_cast<uint32_t>(std::min<size_t>(doubled, kMaxNarrow));
}

inline bool isGiven(const AttributeValues& v, size_t i) { return v.present == nullptr || v.present[i] != 0; }

inline uint64_t uintAt(const AttributeValues& v, size_t i) { return v.uint64s ? v.uint64s[i] : v.uint32s[i]; }

// What a batch column holds, for type mismatch messages.
std::string givenKind(const AttributeValues& v) {
  std::vector<const char*> kinds;
  if (v.uint32s || v.uint64s) kinds.push_back("unsigned integers");
  if (v.numbers) kinds.push_back("numbers");
  if (v.bools) kinds.push_back("booleans");
  if (v.codes || v.offsets || v.dictionary) kinds.push_back("categories");
  if (kinds.empty()) return "no values";
  if (kinds.size() > 1) return "values of several types";
  return kinds[0];
}

void checkValues(const AttributeSpec& spec, const AttributeValues& v, size_t count) {
  if (count == 0) return;  // nothing is read (an empty array may come with a null pointer)
  const std::string name = "attribute " + spec.name + " (" + typeLabel(spec) + ")";
  const bool uints = (v.uint32s != nullptr) != (v.uint64s != nullptr) && !(v.uint32s && v.uint64s);
  const bool others = v.numbers || v.bools || v.codes || v.offsets || v.dictionary;
  switch (spec.type) {
    case AttributeType::Uint:
      if (!uints || others) throw invalid("unsigned integers", name, givenKind(v));
      return;
    case AttributeType::Number:
      if (!v.numbers || v.uint32s || v.uint64s || v.bools || v.codes || v.offsets || v.dictionary) {
        throw invalid("numbers", name, givenKind(v));
      }
      for (size_t i = 0; i < count; ++i) {
        if (isGiven(v, i) && std::isnan(v.numbers[i])) {
          throw invalid("a number that is not NaN", name + " at batch row " + std::to_string(i), "NaN");
        }
      }
      return;
    case AttributeType::Bool:
      if (!v.bools || v.uint32s || v.uint64s || v.numbers || v.codes || v.offsets || v.dictionary) {
        throw invalid("booleans", name, givenKind(v));
      }
      return;
    case AttributeType::Category:
      break;
  }
  const bool wrongType = v.uint32s || v.uint64s || v.numbers || v.bools;
  if (v.dictionarySize > 0 && v.dictionary == nullptr) throw invalid("a dictionary", name, "none");
  if (!spec.multi) {
    if (wrongType || !v.codes || v.offsets) throw invalid("one category code per row", name, givenKind(v));
    for (size_t i = 0; i < count; ++i) {
      if (isGiven(v, i) && v.codes[i] >= v.dictionarySize) {
        throw invalid("a code below the batch dictionary's size " + std::to_string(v.dictionarySize),
                      name + " at batch row " + std::to_string(i), std::to_string(v.codes[i]));
      }
    }
    return;
  }
  if (wrongType || !v.offsets) throw invalid("offsets and category codes", name, givenKind(v));
  if (v.present) throw invalid("no presence flags (an empty set is a missing value)", name, "presence flags");
  if (v.offsets[0] != 0) throw invalid("0", name + " offsets[0]", std::to_string(v.offsets[0]));
  for (size_t i = 0; i < count; ++i) {
    if (v.offsets[i + 1] < v.offsets[i]) {
      throw invalid("non-decreasing offsets", name + " at batch row " + std::to_string(i),
                    std::to_string(v.offsets[i]) + " then " + std::to_string(v.offsets[i + 1]));
    }
  }
  if (v.offsets[count] > 0 && v.codes == nullptr) throw invalid("category codes", name, "none");
  for (size_t j = 0; j < v.offsets[count]; ++j) {
    if (v.codes[j] >= v.dictionarySize) {
      throw invalid("a code below the batch dictionary's size " + std::to_string(v.dictionarySize),
                    name + " codes[" + std::to_string(j) + "]", std::to_string(v.codes[j]));
    }
  }
}

std::shared_ptr<AttributeChunk> copyChunk(const AttributeSpec& spec, const AttributeChunk& from, uint32_t usedRows,
                                          uint32_t capacity, bool wide, uint32_t codeCapacity) {
  // A single-valued chunk may cover fewer rows than its range holds: the rows past its
  // capacity are missing (appends that leave the column out do not grow it).
  usedRows = std::min(usedRows, from.capacity);
  auto to = std::make_shared<AttributeChunk>(spec, capacity, wide, codeCapacity);
  if (from.present) copyWords(from.present.get(), to->present.get(), usedRows);
  if (from.flags) copyWords(from.flags.get(), to->flags.get(), usedRows);
  if (from.numbers) std::memcpy(to->numbers.get(), from.numbers.get(), usedRows * sizeof(double));
  if (from.wideValues) {
    std::memcpy(to->wideValues.get(), from.wideValues.get(), usedRows * sizeof(uint64_t));
  } else if (from.narrow && to->wideValues) {
    for (uint32_t r = 0; r < usedRows; ++r) to->wideValues[r] = from.narrow[r];
  } else if (from.narrow) {
    std::memcpy(to->narrow.get(), from.narrow.get(), usedRows * sizeof(uint32_t));
  }
  if (from.offsets) {
    std::memcpy(to->offsets.get(), from.offsets.get(), (size_t{usedRows} + 1) * sizeof(uint32_t));
    std::memcpy(to->codes.get(), from.codes.get(), size_t{from.offsets[usedRows]} * sizeof(uint32_t));
  }
  return to;
}

// Writes batch rows [batchBegin, batchBegin + (localEnd - localBegin)) into chunk rows
// [localBegin, localEnd), which no snapshot covers yet (their bits and values are zero).
// Never throws: the chunk has room (ensured before anything was published).
void writeRows(const AttributeSpec& spec, AttributeChunk& chunk, uint32_t localBegin, uint32_t localEnd,
               const AttributeValues* v, size_t batchBegin, const std::vector<uint32_t>& codeMap) {
  if (spec.multi) {
    uint32_t* offsets = chunk.offsets.get();
    for (uint32_t l = localBegin; l < localEnd; ++l) {
      uint32_t end = offsets[l];
      if (v) {
        const size_t i = batchBegin + (l - localBegin);
        for (uint32_t j = v->offsets[i]; j < v->offsets[i + 1]; ++j) chunk.codes[end++] = codeMap[v->codes[j]];
      }
      offsets[l + 1] = end;
    }
    return;
  }
  if (!v) return;  // missing: the bits stay clear
  std::atomic<uint32_t>* present = chunk.present.get();
  for (uint32_t l = localBegin; l < localEnd; ++l) {
    const size_t i = batchBegin + (l - localBegin);
    if (!isGiven(*v, i)) continue;
    setBit(present, l, true);
    switch (spec.type) {
      case AttributeType::Uint:
        if (chunk.wideValues) chunk.wideValues[l] = uintAt(*v, i);
        else chunk.narrow[l] = static_cast<uint32_t>(uintAt(*v, i));
        break;
      case AttributeType::Number: chunk.numbers[l] = v->numbers[i]; break;
      case AttributeType::Bool: setBit(chunk.flags.get(), l, v->bools[i] != 0); break;
      case AttributeType::Category: chunk.narrow[l] = codeMap[v->codes[i]]; break;
    }
  }
}

}  // namespace

const char* attributeTypeName(AttributeType type) {
  switch (type) {
    case AttributeType::Uint: return "uint";
    case AttributeType::Number: return "number";
    case AttributeType::Bool: return "bool";
    case AttributeType::Category: return "category";
  }
  return "unknown";
}

// --- CategoryDictionary --------------------------------------------------------------------

uint32_t CategoryDictionary::find(std::string_view value) const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  const auto it = codes_.find(value);
  return it == codes_.end() ? kNoCode : it->second;
}

size_t CategoryDictionary::size() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return strings_.size();
}

std::string CategoryDictionary::at(uint32_t code) const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return strings_.at(code);
}

size_t CategoryDictionary::memoryBytes() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  // A hash node holds the key view, the code, the next pointer and the cached hash.
  const size_t node = sizeof(std::string_view) + sizeof(uint32_t) + 2 * sizeof(void*);
  return stringBytes_ + codes_.size() * node + codes_.bucket_count() * sizeof(void*);
}

uint32_t CategoryDictionary::intern(const std::string& value) {
  // The writer is the only thread that changes the dictionary, so it may look up unlocked.
  const auto it = codes_.find(value);
  if (it != codes_.end()) return it->second;
  std::unique_lock<std::shared_mutex> lock(mutex_);
  if (strings_.size() >= kNoCode) {
    throw Error(ErrorCode::InvalidArgument, "Expected at most 4294967294 distinct categories per attribute but received more");
  }
  const uint32_t code = static_cast<uint32_t>(strings_.size());
  strings_.push_back(value);
  try {
    codes_.emplace(std::string_view(strings_.back()), code);
  } catch (...) {
    strings_.pop_back();
    throw;
  }
  stringBytes_ += sizeof(std::string) + (value.size() >= sizeof(std::string) ? value.size() + 1 : 0);
  return code;
}

// --- AttributeChunk ------------------------------------------------------------------------

AttributeChunk::AttributeChunk(const AttributeSpec& spec, uint32_t capacity_, bool wide_, uint32_t codeCapacity_)
    : capacity(capacity_), wide(wide_), codeCapacity(codeCapacity_) {
  const size_t words = capacity / 32;
  // Value-initialised (zero): rows not written read as missing with value 0.
  if (spec.multi) {
    offsets.reset(new uint32_t[size_t{capacity} + 1]());
    codes.reset(new uint32_t[codeCapacity]());
    return;
  }
  present = zeroWords(words);
  switch (spec.type) {
    case AttributeType::Uint:
      if (wide) wideValues.reset(new uint64_t[capacity]());
      else narrow.reset(new uint32_t[capacity]());
      break;
    case AttributeType::Number: numbers.reset(new double[capacity]()); break;
    case AttributeType::Bool: flags = zeroWords(words); break;
    case AttributeType::Category: narrow.reset(new uint32_t[capacity]()); break;
  }
}

size_t AttributeChunk::bytes() const {
  const size_t words = capacity / 32;
  size_t b = sizeof(AttributeChunk);
  if (present) b += words * sizeof(uint32_t);
  if (flags) b += words * sizeof(uint32_t);
  if (narrow) b += size_t{capacity} * sizeof(uint32_t);
  if (wideValues) b += size_t{capacity} * sizeof(uint64_t);
  if (numbers) b += size_t{capacity} * sizeof(double);
  if (offsets) b += (size_t{capacity} + 1) * sizeof(uint32_t) + size_t{codeCapacity} * sizeof(uint32_t);
  return b;
}

// --- AttributeTable ------------------------------------------------------------------------

AttributeTable::AttributeTable(std::vector<AttributeSpec> schema) : schema_(std::move(schema)) {
  for (size_t c = 0; c < schema_.size(); ++c) {
    const AttributeSpec& spec = schema_[c];
    if (spec.name.empty()) throw invalid("a non-empty name", "attribute " + std::to_string(c), "\"\"");
    if (!columnOf_.emplace(spec.name, c).second) {
      throw invalid("distinct attribute names", "the schema", quoted(spec.name) + " twice");
    }
    if (spec.multi && spec.type != AttributeType::Category) {
      throw invalid("type category for a multi-valued attribute", "attribute " + spec.name, attributeTypeName(spec.type));
    }
    dictionaries_.push_back(spec.type == AttributeType::Category ? std::make_unique<CategoryDictionary>() : nullptr);
  }
  chunks_.resize(schema_.size());
  state_ = makeSnapshot(chunks_, 0);
}

int AttributeTable::column(std::string_view name) const {
  const auto it = columnOf_.find(std::string(name));
  return it == columnOf_.end() ? -1 : static_cast<int>(it->second);
}

std::string AttributeTable::columnNames() const {
  std::string names;
  for (const AttributeSpec& spec : schema_) names += (names.empty() ? "" : ", ") + spec.name;
  return names.empty() ? "none" : names;
}

size_t AttributeTable::rowCount() const {
  std::lock_guard<std::mutex> lock(stateMutex_);
  return state_->rows;
}

std::shared_ptr<const AttributeSnapshot> AttributeTable::snapshot() const {
  std::lock_guard<std::mutex> lock(stateMutex_);
  return state_;
}

size_t AttributeTable::memoryBytes() const {
  const auto state = snapshot();
  size_t bytes = 0;
  for (const auto& column : state->chunks) {
    bytes += column.capacity() * sizeof(column[0]);
    for (const auto& chunk : column) bytes += chunk ? chunk->bytes() : 0;
  }
  for (const auto& dictionary : dictionaries_) bytes += dictionary ? dictionary->memoryBytes() : 0;
  return bytes;
}

std::shared_ptr<const AttributeSnapshot> AttributeTable::makeSnapshot(const std::vector<ChunkList>& chunks, size_t rows) {
  auto state = std::make_shared<AttributeSnapshot>();
  state->rows = rows;
  state->chunks.resize(chunks.size());
  for (size_t c = 0; c < chunks.size(); ++c) state->chunks[c].assign(chunks[c].begin(), chunks[c].end());
  return state;
}

void AttributeTable::install(std::shared_ptr<const AttributeSnapshot> state) {
  {
    std::lock_guard<std::mutex> lock(stateMutex_);
    state_.swap(state);
  }
  // `state` now holds the previous snapshot: released here, outside the lock.
}

std::vector<const AttributeValues*> AttributeTable::matchColumns(const std::vector<AttributeValues>& columns,
                                                                  size_t count) const {
  std::vector<const AttributeValues*> given(schema_.size(), nullptr);
  for (const AttributeValues& v : columns) {
    const int c = column(v.name);
    if (c < 0) throw invalid("an attribute of the table (" + columnNames() + ")", "a column name", quoted(v.name));
    if (given[c]) throw invalid("each attribute at most once", "the columns", quoted(v.name) + " twice");
    checkValues(schema_[c], v, count);
    given[c] = &v;
  }
  return given;
}

std::vector<std::vector<uint32_t>> AttributeTable::internBatch(const std::vector<const AttributeValues*>& given) {
  std::vector<std::vector<uint32_t>> codeMaps(schema_.size());
  for (size_t c = 0; c < schema_.size(); ++c) {
    if (!given[c] || schema_[c].type != AttributeType::Category) continue;
    const AttributeValues& v = *given[c];
    codeMaps[c].resize(v.dictionarySize);
    for (size_t k = 0; k < v.dictionarySize; ++k) codeMaps[c][k] = dictionaries_[c]->intern(v.dictionary[k]);
  }
  return codeMaps;
}

void AttributeTable::append(size_t count, const std::vector<AttributeValues>& columns) {
  std::lock_guard<std::mutex> writeLock(writeMutex_);
  const std::vector<const AttributeValues*> given = matchColumns(columns, count);
  if (count == 0) return;
  if (count > kMaxRows - rows_) {
    throw invalid("at most " + std::to_string(kMaxRows - rows_) + " rows (rows are addressed with 32 bits)",
                  "an append", std::to_string(count));
  }
  const std::vector<std::vector<uint32_t>> codeMaps = internBatch(given);

  const size_t begin = rows_, end = rows_ + count;
  const size_t firstChunk = begin / kChunkRows, chunkCount = (end - 1) / kChunkRows + 1;
  // Phase 1 (may throw): every chunk the rows land in, grown or copied as needed, and the
  // snapshot that will publish them.
  std::vector<ChunkList> next = chunks_;
  for (size_t c = 0; c < schema_.size(); ++c) {
    const AttributeSpec& spec = schema_[c];
    const AttributeValues* v = given[c];
    next[c].resize(chunkCount);
    for (size_t k = firstChunk; k < chunkCount; ++k) {
      std::shared_ptr<AttributeChunk>& chunk = next[c][k];
      // Missing values are clear bits, which need no writes; a multi-valued chunk must still
      // record the empty sets in its offsets.
      if (!v && !(chunk && spec.multi)) continue;
      const size_t chunkBegin = k * kChunkRows;
      const uint32_t localBegin = static_cast<uint32_t>(std::max(begin, chunkBegin) - chunkBegin);
      const uint32_t localEnd = static_cast<uint32_t>(std::min(end, chunkBegin + kChunkRows) - chunkBegin);
      const size_t batchBegin = chunkBegin + localBegin - begin;
      bool wide = false;
      if (v && v->uint64s) {
        for (size_t i = batchBegin; i < batchBegin + (localEnd - localBegin) && !wide; ++i) {
          wide = isGiven(*v, i) && v->uint64s[i] > kMaxNarrow;
        }
      }
      size_t codesNeeded = 0;
      if (spec.multi) {
        codesNeeded = (chunk ? chunk->offsets[localBegin] : 0) +
                      (v ? v->offsets[batchBegin + (localEnd - localBegin)] - v->offsets[batchBegin] : 0);
        if (codesNeeded > kMaxNarrow) {
          throw invalid("at most 4294967295 categories per " + std::to_string(kChunkRows) + " rows",
                        "attribute " + spec.name, std::to_string(codesNeeded));
        }
      }
      if (!chunk) {
        chunk = std::make_shared<AttributeChunk>(spec, grownCapacity(0, localEnd), wide,
                                                 spec.multi ? grownCodeCapacity(0, codesNeeded) : 0);
      } else if (chunk->capacity < localEnd || (wide && !chunk->wide) ||
                 (spec.multi && chunk->codeCapacity < codesNeeded)) {
        chunk = copyChunk(spec, *chunk, localBegin, grownCapacity(chunk->capacity, localEnd), wide || chunk->wide,
                          spec.multi ? grownCodeCapacity(chunk->codeCapacity, codesNeeded) : 0);
      }
    }
  }
  std::shared_ptr<const AttributeSnapshot> state = makeSnapshot(next, end);

  // Phase 2 (no throw): write the rows past the published count, then publish them.
  chunks_.swap(next);
  for (size_t c = 0; c < schema_.size(); ++c) {
    for (size_t k = firstChunk; k < chunkCount; ++k) {
      AttributeChunk* chunk = chunks_[c][k].get();
      if (!chunk) continue;
      const size_t chunkBegin = k * kChunkRows;
      const uint32_t localBegin = static_cast<uint32_t>(std::max(begin, chunkBegin) - chunkBegin);
      const uint32_t localEnd = static_cast<uint32_t>(std::min(end, chunkBegin + kChunkRows) - chunkBegin);
      writeRows(schema_[c], *chunk, localBegin, localEnd, given[c], chunkBegin + localBegin - begin, codeMaps[c]);
    }
  }
  rows_ = end;
  install(std::move(state));
}

namespace {

// A copy of chunk `old` (null: no values) holding `filled` rows, in which the rows of
// `replaced` ({chunk row, batch index}, sorted by row) take the batch's values `v` (null: they
// become missing). Keeps the old capacity so appends continue in place in a last chunk.
std::shared_ptr<AttributeChunk> rebuildChunk(const AttributeSpec& spec, const AttributeChunk* old, uint32_t filled,
                                             const std::vector<std::pair<uint32_t, size_t>>& replaced,
                                             const AttributeValues* v, const std::vector<uint32_t>& codeMap) {
  if (!spec.multi) {
    // Room for the last replaced row only when it gets a value: rows past the capacity are
    // missing already.
    const uint32_t needed = v ? replaced.back().first + 1 : 0;
    const uint32_t capacity = old ? std::max(old->capacity, roundUp32(needed)) : grownCapacity(0, needed);
    bool wide = old && old->wide;
    if (v && v->uint64s) {
      for (const auto& [row, i] : replaced) wide = wide || (isGiven(*v, i) && v->uint64s[i] > kMaxNarrow);
    }
    auto chunk = old ? copyChunk(spec, *old, filled, capacity, wide, 0)
                     : std::make_shared<AttributeChunk>(spec, capacity, wide, 0);
    for (const auto& [l, i] : replaced) {
      if (l >= capacity) break;  // being made missing, and missing already
      const bool has = v && isGiven(*v, i);
      setBit(chunk->present.get(), l, has);
      switch (spec.type) {
        case AttributeType::Uint:
          if (chunk->wideValues) chunk->wideValues[l] = has ? uintAt(*v, i) : 0;
          else chunk->narrow[l] = has ? static_cast<uint32_t>(uintAt(*v, i)) : 0;
          break;
        case AttributeType::Number: chunk->numbers[l] = has ? v->numbers[i] : 0.0; break;
        case AttributeType::Bool: setBit(chunk->flags.get(), l, has && v->bools[i] != 0); break;
        case AttributeType::Category: chunk->narrow[l] = has ? codeMap[v->codes[i]] : 0; break;
      }
    }
    return chunk;
  }
  // Multi-valued: the offsets move, so the chunk's CSR is rebuilt. A multi-valued chunk
  // always covers every row of its range (appends write the offsets of empty sets).
  const uint32_t capacity = old ? old->capacity : grownCapacity(0, filled);
  size_t total = 0;
  size_t p = 0;
  for (uint32_t l = 0; l < filled; ++l) {
    if (p < replaced.size() && replaced[p].first == l) {
      const size_t i = replaced[p++].second;
      total += v ? v->offsets[i + 1] - v->offsets[i] : 0;
    } else if (old) {
      total += old->offsets[l + 1] - old->offsets[l];
    }
  }
  if (total > kMaxNarrow) {
    throw invalid("at most 4294967295 categories per " + std::to_string(kChunkRows) + " rows", "attribute " + spec.name,
                  std::to_string(total));
  }
  const uint32_t codeCapacity = std::max(static_cast<uint32_t>(total), old ? old->codeCapacity : 0u);
  auto chunk = std::make_shared<AttributeChunk>(spec, capacity, false, codeCapacity);
  uint32_t end = 0;
  p = 0;
  for (uint32_t l = 0; l < filled; ++l) {
    if (p < replaced.size() && replaced[p].first == l) {
      const size_t i = replaced[p++].second;
      if (v) {
        for (uint32_t j = v->offsets[i]; j < v->offsets[i + 1]; ++j) chunk->codes[end++] = codeMap[v->codes[j]];
      }
    } else if (old) {
      for (uint32_t j = old->offsets[l]; j < old->offsets[l + 1]; ++j) chunk->codes[end++] = old->codes[j];
    }
    chunk->offsets[l + 1] = end;
  }
  return chunk;
}

// Whether any of `replaced` has a value in `chunk` (else making them missing changes nothing).
bool anyPresent(const AttributeSpec& spec, const AttributeChunk& chunk,
                const std::vector<std::pair<uint32_t, size_t>>& replaced) {
  for (const auto& [l, i] : replaced) {
    if (l >= chunk.capacity) break;
    if (spec.multi ? chunk.offsets[l + 1] != chunk.offsets[l] : chunk.isPresent(l)) return true;
  }
  return false;
}

}  // namespace

void AttributeTable::setRows(const uint32_t* rows, size_t count, const std::vector<AttributeValues>& columns) {
  std::lock_guard<std::mutex> writeLock(writeMutex_);
  const std::vector<const AttributeValues*> given = matchColumns(columns, count);
  std::vector<std::pair<uint32_t, size_t>> order(count);
  for (size_t i = 0; i < count; ++i) {
    if (rows[i] >= rows_) {
      throw invalid("a row below the row count " + std::to_string(rows_), "rows[" + std::to_string(i) + "]",
                    std::to_string(rows[i]));
    }
    order[i] = {rows[i], i};
  }
  std::sort(order.begin(), order.end());
  for (size_t i = 1; i < count; ++i) {
    if (order[i].first == order[i - 1].first) throw invalid("distinct rows", "rows", std::to_string(order[i].first) + " twice");
  }
  if (count == 0) return;
  const std::vector<std::vector<uint32_t>> codeMaps = internBatch(given);

  std::vector<ChunkList> next = chunks_;
  std::vector<std::pair<uint32_t, size_t>> replaced;  // {chunk row, batch index} of one chunk
  for (size_t g = 0; g < count;) {
    const size_t k = order[g].first / kChunkRows;
    const size_t chunkBegin = k * kChunkRows;
    replaced.clear();
    for (; g < count && order[g].first / kChunkRows == k; ++g) {
      replaced.emplace_back(static_cast<uint32_t>(order[g].first - chunkBegin), order[g].second);
    }
    const uint32_t filled = static_cast<uint32_t>(std::min<size_t>(rows_ - chunkBegin, kChunkRows));
    for (size_t c = 0; c < schema_.size(); ++c) {
      std::shared_ptr<AttributeChunk>& chunk = next[c][k];
      if (!given[c] && (!chunk || !anyPresent(schema_[c], *chunk, replaced))) continue;
      chunk = rebuildChunk(schema_[c], chunk.get(), filled, replaced, given[c], codeMaps[c]);
    }
  }
  std::shared_ptr<const AttributeSnapshot> state = makeSnapshot(next, rows_);
  chunks_.swap(next);
  install(std::move(state));
}

}  // namespace ebrix
