#include "attributes_file.h"

#include <cstring>
#include <limits>
#include <new>

#include "error.h"
#include "index_file.h"

namespace ebrix {
namespace {

constexpr uint32_t kLayoutVersion = 1;
// Bounds on what a file may claim before anything is allocated for it.
constexpr size_t kMaxColumns = 4096;
constexpr size_t kMaxNameBytes = 4096;

class Writer {
 public:
  template <class T>
  void put(T v) {
    const size_t at = out.size();
    out.resize(at + sizeof(T));
    std::memcpy(out.data() + at, &v, sizeof(T));
  }
  void bytes(const void* p, size_t n) {
    const size_t at = out.size();
    out.resize(at + n);
    if (n > 0) std::memcpy(out.data() + at, p, n);
  }
  std::vector<uint8_t> out;
};

// Reads from a byte range with every read bounds-checked.
class Reader {
 public:
  Reader(const uint8_t* data, size_t bytes, const std::string& path) : p_(data), left_(bytes), path_(path) {}
  template <class T>
  T get() {
    T v;
    std::memcpy(&v, take(sizeof(T)), sizeof(T));
    return v;
  }
  // n elements of T, checked to fit before the multiplication can overflow.
  template <class T>
  const uint8_t* array(uint64_t n) {
    if (n > left_ / sizeof(T)) fail("values past the end of the section");
    return take(static_cast<size_t>(n) * sizeof(T));
  }
  const uint8_t* take(size_t n) {
    if (n > left_) fail("truncated");
    const uint8_t* at = p_;
    p_ += n;
    left_ -= n;
    return at;
  }
  size_t left() const { return left_; }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(ErrorCode::CorruptFile, "Corrupt index file " + path_ + ": attributes section: " + what);
  }

 private:
  const uint8_t* p_;
  size_t left_;
  const std::string& path_;
};

uint8_t typeCode(AttributeType t) {
  switch (t) {
    case AttributeType::Uint: return 0;
    case AttributeType::Number: return 1;
    case AttributeType::Bool: return 2;
    case AttributeType::Category: return 3;
  }
  return 0;
}

// The chunk holding `row` of a column in a snapshot, and the row's index inside it. A row the
// snapshot does not hold yet (a GPU index appends records after its rows) reads as missing.
const AttributeChunk* chunkOf(const AttributeSnapshot& s, size_t column, uint32_t row, uint32_t* local) {
  *local = 0;
  if (row >= s.rows) return nullptr;
  const size_t c = row / AttributeTable::kChunkRows;
  *local = row % AttributeTable::kChunkRows;
  const auto& chunks = s.chunks[column];
  return c < chunks.size() ? chunks[c].get() : nullptr;
}

}  // namespace

std::vector<uint8_t> encodeAttributes(const AttributeTable& table, const AttributeSnapshot& snapshot,
                                      const uint32_t* rows, size_t count) {
  const auto& schema = table.schema();
  Writer w;
  try {
    w.put<uint32_t>(kLayoutVersion);
    w.put<uint32_t>(static_cast<uint32_t>(schema.size()));
    w.put<uint64_t>(count);
    // Dictionaries only grow and a snapshot's rows use codes interned before it was taken, so
    // the dictionary read now covers every code written below.
    for (size_t c = 0; c < schema.size(); ++c) {
      const AttributeSpec& spec = schema[c];
      w.put<uint8_t>(typeCode(spec.type));
      w.put<uint8_t>(spec.multi ? 1 : 0);
      w.put<uint16_t>(0);
      w.put<uint32_t>(static_cast<uint32_t>(spec.name.size()));
      w.bytes(spec.name.data(), spec.name.size());
      if (spec.type != AttributeType::Category) {
        w.put<uint32_t>(0);
        continue;
      }
      const CategoryDictionary& dict = table.dictionary(c);
      const size_t n = dict.size();
      w.put<uint32_t>(static_cast<uint32_t>(n));
      for (size_t i = 0; i < n; ++i) {
        const std::string s = dict.at(static_cast<uint32_t>(i));
        w.put<uint32_t>(static_cast<uint32_t>(s.size()));
        w.bytes(s.data(), s.size());
      }
    }
    const auto rowAt = [&](size_t i) { return rows ? rows[i] : static_cast<uint32_t>(i); };
    for (size_t c = 0; c < schema.size(); ++c) {
      const AttributeSpec& spec = schema[c];
      uint32_t local;
      if (spec.multi) {
        uint32_t total = 0;
        w.put<uint32_t>(0);
        for (size_t i = 0; i < count; ++i) {
          const AttributeChunk* chunk = chunkOf(snapshot, c, rowAt(i), &local);
          if (chunk != nullptr && local < chunk->capacity) total += chunk->offsets[local + 1] - chunk->offsets[local];
          w.put<uint32_t>(total);
        }
        for (size_t i = 0; i < count; ++i) {
          const AttributeChunk* chunk = chunkOf(snapshot, c, rowAt(i), &local);
          if (chunk == nullptr || local >= chunk->capacity) continue;
          for (uint32_t k = chunk->offsets[local]; k < chunk->offsets[local + 1]; ++k) w.put<uint32_t>(chunk->codes[k]);
        }
        continue;
      }
      for (size_t i = 0; i < count; ++i) {
        const AttributeChunk* chunk = chunkOf(snapshot, c, rowAt(i), &local);
        w.put<uint8_t>(chunk != nullptr && local < chunk->capacity && chunk->isPresent(local) ? 1 : 0);
      }
      for (size_t i = 0; i < count; ++i) {
        const AttributeChunk* chunk = chunkOf(snapshot, c, rowAt(i), &local);
        const bool has = chunk != nullptr && local < chunk->capacity && chunk->isPresent(local);
        switch (spec.type) {
          case AttributeType::Uint:
            w.put<uint64_t>(!has ? 0 : chunk->wideValues ? chunk->wideValues[local] : chunk->narrow[local]);
            break;
          case AttributeType::Number: w.put<double>(has ? chunk->numbers[local] : 0.0); break;
          case AttributeType::Bool:
            w.put<uint8_t>(has && ((chunk->flags[local >> 5].load(std::memory_order_relaxed) >> (local & 31)) & 1u) ? 1 : 0);
            break;
          case AttributeType::Category: w.put<uint32_t>(has ? chunk->narrow[local] : 0); break;
        }
      }
    }
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::OutOfMemory, "Out of memory encoding the attributes of " + std::to_string(count) + " rows");
  }
  return std::move(w.out);
}

std::shared_ptr<AttributeTable> decodeAttributes(const uint8_t* data, size_t bytes, size_t rows,
                                                 const std::string& path) {
  Reader r(data, bytes, path);
  if (r.get<uint32_t>() != kLayoutVersion) r.fail("unknown layout version");
  const uint32_t columnCount = r.get<uint32_t>();
  if (columnCount > kMaxColumns) r.fail(std::to_string(columnCount) + " columns");
  const uint64_t count = r.get<uint64_t>();
  if (count != rows) r.fail(std::to_string(count) + " rows for an index of " + std::to_string(rows));

  struct Column {
    std::vector<std::string> dictionary;
    std::vector<uint8_t> present, bools;
    std::vector<uint64_t> uints;
    std::vector<double> numbers;
    std::vector<uint32_t> codes, offsets;
  };
  std::vector<AttributeSpec> schema(columnCount);
  std::vector<Column> columns(columnCount);
  try {
    for (uint32_t c = 0; c < columnCount; ++c) {
      const uint8_t type = r.get<uint8_t>();
      const uint8_t multi = r.get<uint8_t>();
      if (r.get<uint16_t>() != 0) r.fail("reserved bits set");
      if (type > 3 || multi > 1 || (multi == 1 && type != 3)) r.fail("column " + std::to_string(c) + " has an unknown type");
      const uint32_t nameBytes = r.get<uint32_t>();
      if (nameBytes > kMaxNameBytes) r.fail("a column name of " + std::to_string(nameBytes) + " bytes");
      schema[c].name.assign(reinterpret_cast<const char*>(r.take(nameBytes)), nameBytes);
      schema[c].type = static_cast<AttributeType>(type);
      schema[c].multi = multi == 1;
      const uint32_t strings = r.get<uint32_t>();
      if (type != 3 && strings != 0) r.fail("a dictionary on a column that is not a category");
      // Each string takes at least its 4-byte length: a claim beyond that is a lie.
      if (strings > r.left() / 4) r.fail("a dictionary larger than the section");
      columns[c].dictionary.reserve(strings);
      for (uint32_t i = 0; i < strings; ++i) {
        const uint32_t n = r.get<uint32_t>();
        columns[c].dictionary.emplace_back(reinterpret_cast<const char*>(r.take(n)), n);
      }
    }
    std::vector<AttributeValues> values(columnCount);
    for (uint32_t c = 0; c < columnCount; ++c) {
      Column& col = columns[c];
      AttributeValues& v = values[c];
      v.name = schema[c].name;
      if (schema[c].type == AttributeType::Category) {
        v.dictionary = col.dictionary.data();
        v.dictionarySize = col.dictionary.size();
      }
      if (schema[c].multi) {
        if (count == std::numeric_limits<uint64_t>::max()) r.fail("too many rows");
        const uint8_t* o = r.array<uint32_t>(count + 1);
        col.offsets.resize(count + 1);
        std::memcpy(col.offsets.data(), o, col.offsets.size() * 4);
        // append() checks the offsets' order; the code count must be read before it can.
        const uint8_t* k = r.array<uint32_t>(col.offsets.back());
        col.codes.resize(col.offsets.back());
        std::memcpy(col.codes.data(), k, col.codes.size() * 4);
        v.offsets = col.offsets.data();
        v.codes = col.codes.data();
        continue;
      }
      const uint8_t* present = r.array<uint8_t>(count);
      col.present.assign(present, present + count);
      for (const uint8_t p : col.present) {
        if (p > 1) r.fail("a presence flag of " + std::to_string(p));
      }
      v.present = col.present.data();
      switch (schema[c].type) {
        case AttributeType::Uint: {
          const uint8_t* a = r.array<uint64_t>(count);
          col.uints.resize(count);
          std::memcpy(col.uints.data(), a, count * 8);
          v.uint64s = col.uints.data();
          break;
        }
        case AttributeType::Number: {
          const uint8_t* a = r.array<double>(count);
          col.numbers.resize(count);
          std::memcpy(col.numbers.data(), a, count * 8);
          // A missing row's value is ignored by append(), but NaN is rejected even there.
          for (size_t i = 0; i < count; ++i) {
            if (!col.present[i]) col.numbers[i] = 0.0;
          }
          v.numbers = col.numbers.data();
          break;
        }
        case AttributeType::Bool: {
          const uint8_t* a = r.array<uint8_t>(count);
          col.bools.assign(a, a + count);
          v.bools = col.bools.data();
          break;
        }
        case AttributeType::Category: {
          const uint8_t* a = r.array<uint32_t>(count);
          col.codes.resize(count);
          std::memcpy(col.codes.data(), a, count * 4);
          for (size_t i = 0; i < count; ++i) {
            if (!col.present[i]) col.codes[i] = 0;
          }
          v.codes = col.codes.data();
          break;
        }
      }
    }
    if (r.left() != 0) r.fail(std::to_string(r.left()) + " bytes after the last column");
    // The table validates the rest (distinct names, codes inside the dictionary, offsets in
    // order, no NaN), as it does for a user's batch; here its complaint means a bad file.
    std::shared_ptr<AttributeTable> table;
    try {
      table = std::make_shared<AttributeTable>(std::move(schema));
      if (count > 0) table->append(static_cast<size_t>(count), values);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::InvalidArgument) throw;
      r.fail(e.what());
    }
    return table;
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::OutOfMemory, "Out of memory reading the attributes of " + path);
  }
}

std::shared_ptr<AttributeTable> readAttributes(const IndexFile& file, size_t rows) {
  const SectionEntry* s = file.find(kAttributesSection);
  if (s == nullptr) return nullptr;
  std::vector<uint8_t> bytes;
  try {
    bytes.resize(s->bytes);
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::OutOfMemory, "Out of memory reading the attributes of " + file.path());
  }
  file.read(*s, bytes.data());
  return decodeAttributes(bytes.data(), bytes.size(), rows, file.path());
}

}  // namespace ebrix
