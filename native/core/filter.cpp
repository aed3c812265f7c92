#include "filter.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <string>

#include "error.h"
#include "thread_pool.h"

namespace ebrix {
namespace {

constexpr uint32_t kChunkRows = AttributeTable::kChunkRows;
constexpr size_t kChunkWords = kChunkRows / 32;
constexpr uint64_t kMaxNarrow = std::numeric_limits<uint32_t>::max();
// Up to this many values a membership test compares each; past it, a binary search.
constexpr size_t kLinearSetSize = 8;

Error invalid(const std::string& what, const std::string& name, const std::string& received) {
  return Error(ErrorCode::InvalidArgument, "Expected " + what + " for " + name + " but received " + received);
}

std::string describeValue(const FilterValue& v) {
  switch (v.kind) {
    case FilterValue::Kind::Uint: return "uint " + std::to_string(v.uint);
    case FilterValue::Kind::Number: {
      if (std::isnan(v.number)) return "NaN";
      char text[32];
      std::snprintf(text, sizeof text, "%.17g", v.number);
      return std::string("number ") + text;
    }
    case FilterValue::Kind::Bool: return v.boolean ? "boolean true" : "boolean false";
    case FilterValue::Kind::String: return "string \"" + v.string + "\"";
  }
  return "a value";
}

// The resolved filter: columns found, values checked and typed, strings turned into codes.
enum class Kind { All, None, And, Or, Not, Exists, UintRange, UintSet, NumberRange, NumberSet, Bool, Codes, MultiAny, MultiAll, Rows };

struct Plan {
  Kind kind = Kind::All;
  size_t column = 0;
  uint64_t lo = 0, hi = 0;            // UintRange, inclusive
  double low = 0.0, high = 0.0;       // NumberRange, inclusive
  std::vector<uint64_t> uints;        // UintSet, ascending, distinct
  std::vector<uint32_t> narrowUints;  // UintSet: those that fit 32 bits
  std::vector<double> numbers;        // NumberSet, ascending, distinct
  bool flag = false;                  // Bool: the value selected
  std::vector<uint32_t> codes;        // Codes, MultiAny, MultiAll: ascending, distinct
  std::vector<uint64_t> codeBits;     // Codes, MultiAny: membership bitmap over [0, max code]
  std::vector<uint32_t> rows;         // Rows: ascending, distinct, below the row count
  std::vector<Plan> children;

  static Plan constant(bool all) {
    Plan p;
    p.kind = all ? Kind::All : Kind::None;
    return p;
  }
};

template <class T>
void sortDistinct(std::vector<T>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}

class Resolver {
 public:
  Resolver(const AttributeTable& table, size_t rows, const FilterOptions& options)
      : table_(table), rows_(rows), options_(options) {}

  Plan resolve(const FilterNode& node, size_t depth) {
    if (depth >= kMaxFilterDepth) {
      throw invalid("a filter at most " + std::to_string(kMaxFilterDepth) + " levels deep", "filter", "a deeper one");
    }
    switch (node.op) {
      case FilterOp::All: return Plan::constant(true);
      case FilterOp::None: return Plan::constant(false);
      case FilterOp::And:
      case FilterOp::Or: return combine(node, depth);
      case FilterOp::Not: {
        if (node.children.size() != 1) {
          throw invalid("one child", "filter not", std::to_string(node.children.size()));
        }
        Plan child = resolve(node.children[0], depth + 1);
        if (child.kind == Kind::All || child.kind == Kind::None) return Plan::constant(child.kind == Kind::None);
        if (child.kind == Kind::Not) return std::move(child.children[0]);
        Plan p;
        p.kind = Kind::Not;
        p.children.push_back(std::move(child));
        return p;
      }
      case FilterOp::IdIn:
      case FilterOp::IdNotIn: return ids(node);
      case FilterOp::RowIn: {
        Plan p;
        p.kind = Kind::Rows;
        for (uint32_t r : node.rows) {
          if (r < rows_) p.rows.push_back(r);
        }
        sortDistinct(p.rows);
        return p.rows.empty() ? Plan::constant(false) : p;
      }
      default: return leaf(node);
    }
  }

 private:
  Plan combine(const FilterNode& node, size_t depth) {
    const bool isAnd = node.op == FilterOp::And;
    // The constant that decides the whole (None for and, All for or) and the one to drop.
    const Kind absorbing = isAnd ? Kind::None : Kind::All;
    const Kind neutral = isAnd ? Kind::All : Kind::None;
    Plan p;
    p.kind = isAnd ? Kind::And : Kind::Or;
    bool absorbed = false;
    for (const FilterNode& child : node.children) {
      Plan c = resolve(child, depth + 1);  // every child is validated, even after a constant
      if (c.kind == absorbing) absorbed = true;
      if (c.kind != neutral && !absorbed) p.children.push_back(std::move(c));
    }
    if (absorbed) return Plan::constant(!isAnd);
    if (p.children.empty()) return Plan::constant(isAnd);
    if (p.children.size() == 1) return std::move(p.children[0]);
    return p;
  }

  Plan ids(const FilterNode& node) {
    if (!options_.idToRow) throw invalid("an idToRow mapping", std::string("filter ") + filterOpName(node.op), "none");
    Plan p;
    p.kind = Kind::Rows;
    for (uint64_t id : node.ids) {
      uint32_t row = 0;
      if (options_.idToRow(id, &row) && row < rows_) p.rows.push_back(row);
    }
    sortDistinct(p.rows);
    const bool negate = node.op == FilterOp::IdNotIn;
    if (p.rows.empty()) return Plan::constant(negate);
    if (!negate) return p;
    Plan n;
    n.kind = Kind::Not;
    n.children.push_back(std::move(p));
    return n;
  }

  size_t columnOf(const FilterNode& node) const {
    const int c = table_.column(node.attribute);
    if (c < 0) {
      throw invalid("an attribute of the table (" + table_.columnNames() + ")", std::string("filter ") + filterOpName(node.op),
                    "\"" + node.attribute + "\"");
    }
    return static_cast<size_t>(c);
  }

  static bool opApplies(FilterOp op, const AttributeSpec& spec) {
    switch (op) {
      case FilterOp::Exists:
      case FilterOp::Eq:
      case FilterOp::In: return true;
      case FilterOp::Range: return spec.type == AttributeType::Uint || spec.type == AttributeType::Number;
      case FilterOp::Has:
      case FilterOp::HasAny:
      case FilterOp::HasAll: return spec.type == AttributeType::Category;
      default: return false;
    }
  }

  static const char* opsOf(const AttributeSpec& spec) {
    switch (spec.type) {
      case AttributeType::Uint:
      case AttributeType::Number: return "exists, eq, in, range";
      case AttributeType::Bool: return "exists, eq, in";
      case AttributeType::Category: return "exists, eq, in, has, hasAny, hasAll";
    }
    return "";
  }

  static std::string typeLabel(const AttributeSpec& spec) {
    return spec.multi ? "multi-valued category" : attributeTypeName(spec.type);
  }

  // Checks a value against the attribute's type; `where` names it in messages.
  static void checkValue(const AttributeSpec& spec, const FilterValue& v, const std::string& where) {
    FilterValue::Kind expected = FilterValue::Kind::Uint;
    const char* what = "";
    switch (spec.type) {
      case AttributeType::Uint: expected = FilterValue::Kind::Uint, what = "a uint value"; break;
      case AttributeType::Number: expected = FilterValue::Kind::Number, what = "a number value"; break;
      case AttributeType::Bool: expected = FilterValue::Kind::Bool, what = "a boolean value"; break;
      case AttributeType::Category: expected = FilterValue::Kind::String, what = "a string value"; break;
    }
    if (v.kind != expected) {
      throw invalid(std::string(what) + " (attribute " + spec.name + " is " + typeLabel(spec) + ")", where, describeValue(v));
    }
    if (v.kind == FilterValue::Kind::Number && std::isnan(v.number)) throw invalid("a number that is not NaN", where, "NaN");
  }

  Plan leaf(const FilterNode& node) {
    const size_t column = columnOf(node);
    const AttributeSpec& spec = table_.schema()[column];
    const std::string where = "filter " + spec.name + "." + filterOpName(node.op);
    if (!opApplies(node.op, spec)) {
      throw invalid(std::string("an operator a ") + typeLabel(spec) + " attribute has (" + opsOf(spec) + ")",
                    "filter attribute " + spec.name, filterOpName(node.op));
    }
    Plan p;
    p.column = column;
    if (node.op == FilterOp::Exists) {
      p.kind = Kind::Exists;
      return p;
    }
    if (node.op == FilterOp::Range) return range(node, spec, where, p);

    const bool single = node.op == FilterOp::Eq || node.op == FilterOp::Has;
    if (single && node.values.size() != 1) throw invalid("one value", where, std::to_string(node.values.size()));
    if (node.values.empty()) throw invalid("at least one value", where, "none");
    for (const FilterValue& v : node.values) checkValue(spec, v, where);

    switch (spec.type) {
      case AttributeType::Uint:
        for (const FilterValue& v : node.values) p.uints.push_back(v.uint);
        sortDistinct(p.uints);
        if (p.uints.size() == 1) {
          p.kind = Kind::UintRange;
          p.lo = p.hi = p.uints[0];
          return p;
        }
        p.kind = Kind::UintSet;
        for (uint64_t u : p.uints) {
          if (u <= kMaxNarrow) p.narrowUints.push_back(static_cast<uint32_t>(u));
        }
        return p;
      case AttributeType::Number:
        for (const FilterValue& v : node.values) p.numbers.push_back(v.number == 0.0 ? 0.0 : v.number);  // -0 is 0
        sortDistinct(p.numbers);
        if (p.numbers.size() == 1) {
          p.kind = Kind::NumberRange;
          p.low = p.high = p.numbers[0];
          return p;
        }
        p.kind = Kind::NumberSet;
        return p;
      case AttributeType::Bool: {
        bool any[2] = {false, false};
        for (const FilterValue& v : node.values) any[v.boolean ? 1 : 0] = true;
        p.kind = any[0] && any[1] ? Kind::Exists : Kind::Bool;
        p.flag = any[1];
        return p;
      }
      case AttributeType::Category: return categories(node, spec, p);
    }
    return p;
  }

  Plan categories(const FilterNode& node, const AttributeSpec& spec, Plan& p) {
    const CategoryDictionary& dictionary = table_.dictionary(p.column);
    bool unknown = false;
    for (const FilterValue& v : node.values) {
      const uint32_t code = dictionary.find(v.string);
      if (code == CategoryDictionary::kNoCode) unknown = true;
      else p.codes.push_back(code);
    }
    sortDistinct(p.codes);
    if (node.op == FilterOp::HasAll) {
      // A string no row has is in no row's set; a single-valued row holds one string.
      if (unknown || (!spec.multi && p.codes.size() > 1)) return Plan::constant(false);
      p.kind = spec.multi ? Kind::MultiAll : Kind::Codes;
      return p;
    }
    if (p.codes.empty()) return Plan::constant(false);
    p.kind = spec.multi ? Kind::MultiAny : Kind::Codes;
    if (p.codes.size() > 1) {
      p.codeBits.assign(p.codes.back() / 64 + 1, 0);
      for (uint32_t c : p.codes) p.codeBits[c / 64] |= uint64_t{1} << (c % 64);
    }
    return p;
  }

  Plan range(const FilterNode& node, const AttributeSpec& spec, const std::string& where, Plan& p) {
    if (!node.hasLower && !node.hasUpper) throw invalid("a lower or an upper bound", where, "neither");
    if (node.hasLower) checkValue(spec, node.lower, where + " lower bound");
    if (node.hasUpper) checkValue(spec, node.upper, where + " upper bound");
    // Exclusive bounds become inclusive ones, so one kernel serves the four combinations.
    if (spec.type == AttributeType::Uint) {
      p.kind = Kind::UintRange;
      p.lo = 0;
      p.hi = std::numeric_limits<uint64_t>::max();
      if (node.hasLower) {
        if (!node.lowerInclusive && node.lower.uint == p.hi) return Plan::constant(false);
        p.lo = node.lower.uint + (node.lowerInclusive ? 0 : 1);
      }
      if (node.hasUpper) {
        if (!node.upperInclusive && node.upper.uint == 0) return Plan::constant(false);
        p.hi = node.upper.uint - (node.upperInclusive ? 0 : 1);
      }
      if (p.lo > p.hi) return Plan::constant(false);
      return p;
    }
    p.kind = Kind::NumberRange;
    const double inf = std::numeric_limits<double>::infinity();
    p.low = -inf;
    p.high = inf;
    if (node.hasLower) {
      const double b = node.lower.number;
      if (!node.lowerInclusive && b == inf) return Plan::constant(false);
      p.low = node.lowerInclusive ? b : std::nextafter(b, inf);
    }
    if (node.hasUpper) {
      const double b = node.upper.number;
      if (!node.upperInclusive && b == -inf) return Plan::constant(false);
      p.high = node.upperInclusive ? b : std::nextafter(b, -inf);
    }
    if (p.low > p.high) return Plan::constant(false);
    return p;
  }

  const AttributeTable& table_;
  const size_t rows_;
  const FilterOptions& options_;
};

// --- evaluation ----------------------------------------------------------------------------

inline uint32_t wordsFor(uint32_t rows) { return (rows + 31) / 32; }

// Clears the bits of rows >= rows in words [0, wordsFor(total)).
void clearFrom(uint32_t* out, uint32_t rows, uint32_t total) {
  const uint32_t first = rows / 32;
  if (rows % 32 != 0) out[first] &= (1u << (rows % 32)) - 1;
  const uint32_t from = wordsFor(rows);
  const uint32_t to = wordsFor(total);
  if (to > from) std::memset(out + from, 0, (to - from) * sizeof(uint32_t));
}

// Leaves compute a block of rows at a time into 0/1 bytes with plain loops over the column
// arrays, which compilers vectorise (a compare per lane), and then pack the bytes into bits.
constexpr uint32_t kBlockRows = 256;

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "pack8 reads 8 flag bytes as one little-endian word");

// Bits 0..7 from 8 bytes that are each 0 or 1: the multiplier's terms move byte i's low bit to
// bit 56 + i, and no two terms share a bit, so nothing carries.
inline uint32_t pack8(const uint8_t* flags) {
  uint64_t x;
  std::memcpy(&x, flags, sizeof x);
  return static_cast<uint32_t>((x * 0x0102040810204080ull) >> 56);
}

inline uint32_t pack32(const uint8_t* flags) {
  return pack8(flags) | pack8(flags + 8) << 8 | pack8(flags + 16) << 16 | pack8(flags + 24) << 24;
}

// out bit r = flag of row r for rows [0, rows), where fill(flags, begin, count) writes the 0/1
// flags of rows [begin, begin + count). Rows past `rows` are never read: an append may be
// writing them.
template <class Fill>
void packBlocks(uint32_t rows, uint32_t* out, Fill fill) {
  alignas(64) uint8_t flags[kBlockRows];
  for (uint32_t begin = 0; begin < rows; begin += kBlockRows) {
    const uint32_t count = std::min(kBlockRows, rows - begin);
    fill(flags, begin, count);
    const uint32_t words = wordsFor(count);
    std::memset(flags + count, 0, words * 32 - count);
    for (uint32_t w = 0; w < words; ++w) out[begin / 32 + w] = pack32(flags + 32 * w);
  }
}

void andWords(uint32_t* out, const std::atomic<uint32_t>* words, uint32_t rows) {
  for (uint32_t w = 0, n = wordsFor(rows); w < n; ++w) out[w] &= words[w].load(std::memory_order_relaxed);
}

// Flags of rows whose value is in `set` (ascending): one vectorised pass per value when the
// set is small, a binary search per row otherwise.
template <class T>
void fillInSet(uint8_t* flags, const T* values, uint32_t count, const std::vector<T>& set) {
  if (set.size() <= kLinearSetSize) {
    std::memset(flags, 0, count);
    for (const T s : set) {
      for (uint32_t j = 0; j < count; ++j) flags[j] |= static_cast<uint8_t>(values[j] == s);
    }
    return;
  }
  for (uint32_t j = 0; j < count; ++j) flags[j] = std::binary_search(set.begin(), set.end(), values[j]);
}

inline bool inBits(const std::vector<uint64_t>& bits, uint32_t code) {
  const size_t w = code / 64;
  return w < bits.size() && ((bits[w] >> (code % 64)) & 1u);
}

class Evaluator {
 public:
  explicit Evaluator(const AttributeSnapshot& state) : state_(state) {}

  // Fills the words of chunk `k` (`len` rows) with the rows `p` selects.
  void eval(const Plan& p, size_t k, uint32_t len, uint32_t* out, size_t depth) {
    const uint32_t words = wordsFor(len);
    switch (p.kind) {
      case Kind::All:
        std::fill(out, out + words, ~0u);
        clearFrom(out, len, len);
        return;
      case Kind::None: std::fill(out, out + words, 0u); return;
      case Kind::Not:
        eval(p.children[0], k, len, out, depth + 1);
        for (uint32_t w = 0; w < words; ++w) out[w] = ~out[w];
        clearFrom(out, len, len);
        return;
      case Kind::And:
      case Kind::Or: {
        eval(p.children[0], k, len, out, depth + 1);
        uint32_t* tmp = scratch(depth);
        for (size_t c = 1; c < p.children.size(); ++c) {
          if (p.kind == Kind::And && std::all_of(out, out + words, [](uint32_t w) { return w == 0; })) return;
          eval(p.children[c], k, len, tmp, depth + 1);
          if (p.kind == Kind::And) {
            for (uint32_t w = 0; w < words; ++w) out[w] &= tmp[w];
          } else {
            for (uint32_t w = 0; w < words; ++w) out[w] |= tmp[w];
          }
        }
        return;
      }
      case Kind::Rows: {
        std::fill(out, out + words, 0u);
        const size_t base = k * kChunkRows;
        auto it = std::lower_bound(p.rows.begin(), p.rows.end(), base);
        for (; it != p.rows.end() && *it < base + len; ++it) {
          const uint32_t l = static_cast<uint32_t>(*it - base);
          out[l / 32] |= 1u << (l % 32);
        }
        return;
      }
      default: break;
    }
    const auto& column = state_.chunks[p.column];
    const AttributeChunk* chunk = k < column.size() ? column[k].get() : nullptr;
    if (chunk == nullptr) {
      std::fill(out, out + words, 0u);
      return;
    }
    const uint32_t rows = std::min(len, chunk->capacity);  // past its capacity a column is missing
    leaf(p, *chunk, rows, out, depth);
    clearFrom(out, rows, len);
  }

 private:
  uint32_t* scratch(size_t depth) {
    if (scratch_.size() <= depth) scratch_.resize(depth + 1);
    if (!scratch_[depth]) scratch_[depth].reset(new uint32_t[kChunkWords]);
    return scratch_[depth].get();
  }

  // Rows of a multi-valued chunk whose set holds a code `member` accepts. Branch-free over
  // rows of any set size: one pass counts matches over the chunk's codes (a running prefix
  // sum), and a row matches when the count rises across its offsets.
  template <class Member>
  void multiAny(const AttributeChunk& chunk, uint32_t rows, uint32_t* out, Member member) {
    const uint32_t* offsets = chunk.offsets.get();
    const uint32_t* codes = chunk.codes.get();
    const uint32_t total = offsets[rows];
    prefix_.resize(size_t{total} + 1);
    uint32_t* prefix = prefix_.data();
    prefix[0] = 0;
    for (uint32_t j = 0; j < total; ++j) prefix[j + 1] = prefix[j] + static_cast<uint32_t>(member(codes[j]));
    packBlocks(rows, out, [&](uint8_t* f, uint32_t b, uint32_t n) {
      const uint32_t* o = offsets + b;
      for (uint32_t j = 0; j < n; ++j) f[j] = prefix[o[j + 1]] != prefix[o[j]];
    });
  }

  // Fills words [0, wordsFor(rows)) from one column chunk; bits past `rows` are cleared by the caller.
  void leaf(const Plan& p, const AttributeChunk& chunk, uint32_t rows, uint32_t* out, size_t depth) {
    switch (p.kind) {
      case Kind::Exists:
        if (chunk.offsets) {
          const uint32_t* offsets = chunk.offsets.get();
          packBlocks(rows, out, [&](uint8_t* f, uint32_t b, uint32_t n) {
            const uint32_t* o = offsets + b;
            for (uint32_t j = 0; j < n; ++j) f[j] = o[j + 1] != o[j];
          });
          return;
        }
        for (uint32_t w = 0, n = wordsFor(rows); w < n; ++w) out[w] = chunk.present[w].load(std::memory_order_relaxed);
        return;
      case Kind::UintRange:
        if (chunk.wideValues) {
          const uint64_t* v = chunk.wideValues.get();
          const uint64_t lo = p.lo, span = p.hi - p.lo;
          packBlocks(rows, out, [&](uint8_t* f, uint32_t b, uint32_t n) {
            for (uint32_t j = 0; j < n; ++j) f[j] = v[b + j] - lo <= span;
          });
        } else if (p.lo > kMaxNarrow) {
          std::fill(out, out + wordsFor(rows), 0u);
        } else {
          const uint32_t* v = chunk.narrow.get();
          const uint32_t lo = static_cast<uint32_t>(p.lo);
          const uint32_t span = static_cast<uint32_t>(std::min(p.hi, kMaxNarrow) - p.lo);
          packBlocks(rows, out, [&](uint8_t* f, uint32_t b, uint32_t n) {
            for (uint32_t j = 0; j < n; ++j) f[j] = static_cast<uint32_t>(v[b + j] - lo) <= span;
          });
        }
        break;
      case Kind::UintSet:
        if (chunk.wideValues) {
          const uint64_t* v = chunk.wideValues.get();
          packBlocks(rows, out, [&](uint8_t* f, uint32_t b, uint32_t n) { fillInSet(f, v + b, n, p.uints); });
        } else {
          const uint32_t* v = chunk.narrow.get();
          packBlocks(rows, out, [&](uint8_t* f, uint32_t b, uint32_t n) { fillInSet(f, v + b, n, p.narrowUints); });
        }
        break;
      case Kind::NumberRange: {
        const double* v = chunk.numbers.get();
        const double low = p.low, high = p.high;
        packBlocks(rows, out, [&](uint8_t* f, uint32_t b, uint32_t n) {
          for (uint32_t j = 0; j < n; ++j) f[j] = (v[b + j] >= low) & (v[b + j] <= high);
        });
        break;
      }
      case Kind::NumberSet: {
        const double* v = chunk.numbers.get();
        packBlocks(rows, out, [&](uint8_t* f, uint32_t b, uint32_t n) { fillInSet(f, v + b, n, p.numbers); });
        break;
      }
      case Kind::Bool: {
        const uint32_t flip = p.flag ? 0u : ~0u;
        for (uint32_t w = 0, n = wordsFor(rows); w < n; ++w) out[w] = chunk.flags[w].load(std::memory_order_relaxed) ^ flip;
        break;
      }
      case Kind::Codes: {
        const uint32_t* v = chunk.narrow.get();
        if (p.codes.size() == 1) {
          const uint32_t code = p.codes[0];
          packBlocks(rows, out, [&](uint8_t* f, uint32_t b, uint32_t n) {
            for (uint32_t j = 0; j < n; ++j) f[j] = v[b + j] == code;
          });
        } else {
          packBlocks(rows, out, [&](uint8_t* f, uint32_t b, uint32_t n) {
            for (uint32_t j = 0; j < n; ++j) f[j] = inBits(p.codeBits, v[b + j]);
          });
        }
        break;
      }
      case Kind::MultiAny:
        if (p.codes.size() == 1) {
          const uint32_t code = p.codes[0];
          multiAny(chunk, rows, out, [code](uint32_t c) { return c == code; });
        } else {
          multiAny(chunk, rows, out, [&](uint32_t c) { return inBits(p.codeBits, c); });
        }
        return;
      case Kind::MultiAll: {
        // Rows holding every code: the rows holding each one, intersected.
        const uint32_t words = wordsFor(rows);
        uint32_t* tmp = scratch(depth);
        for (size_t i = 0; i < p.codes.size(); ++i) {
          const uint32_t code = p.codes[i];
          multiAny(chunk, rows, i == 0 ? out : tmp, [code](uint32_t c) { return c == code; });
          if (i > 0) {
            for (uint32_t w = 0; w < words; ++w) out[w] &= tmp[w];
          }
        }
        return;
      }
      default: return;
    }
    andWords(out, chunk.present.get(), rows);  // single-valued leaves: a missing value never matches
  }

  const AttributeSnapshot& state_;
  std::vector<std::unique_ptr<uint32_t[]>> scratch_;  // one chunk of words per tree depth
  std::vector<uint32_t> prefix_;                      // multiAny's match counts
};

size_t popcount(const uint32_t* words, size_t n) {
  size_t count = 0;
  for (size_t w = 0; w < n; ++w) count += static_cast<size_t>(__builtin_popcount(words[w]));
  return count;
}

}  // namespace

const char* filterOpName(FilterOp op) {
  switch (op) {
    case FilterOp::All: return "all";
    case FilterOp::None: return "none";
    case FilterOp::And: return "and";
    case FilterOp::Or: return "or";
    case FilterOp::Not: return "not";
    case FilterOp::Exists: return "exists";
    case FilterOp::Eq: return "eq";
    case FilterOp::In: return "in";
    case FilterOp::Range: return "range";
    case FilterOp::Has: return "has";
    case FilterOp::HasAny: return "hasAny";
    case FilterOp::HasAll: return "hasAll";
    case FilterOp::IdIn: return "idIn";
    case FilterOp::IdNotIn: return "idNotIn";
    case FilterOp::RowIn: return "rowIn";
  }
  return "unknown";
}

FilterValue FilterValue::ofUint(uint64_t v) {
  FilterValue f;
  f.kind = Kind::Uint;
  f.uint = v;
  return f;
}
FilterValue FilterValue::ofNumber(double v) {
  FilterValue f;
  f.kind = Kind::Number;
  f.number = v;
  return f;
}
FilterValue FilterValue::ofBool(bool v) {
  FilterValue f;
  f.kind = Kind::Bool;
  f.boolean = v;
  return f;
}
FilterValue FilterValue::ofString(std::string v) {
  FilterValue f;
  f.kind = Kind::String;
  f.string = std::move(v);
  return f;
}

namespace {
FilterNode node(FilterOp op, std::string attribute = {}) {
  FilterNode n;
  n.op = op;
  n.attribute = std::move(attribute);
  return n;
}
std::vector<FilterValue> strings(std::vector<std::string> values) {
  std::vector<FilterValue> out;
  for (auto& v : values) out.push_back(FilterValue::ofString(std::move(v)));
  return out;
}
}  // namespace

FilterNode FilterNode::all() { return node(FilterOp::All); }
FilterNode FilterNode::none() { return node(FilterOp::None); }
FilterNode FilterNode::both(std::vector<FilterNode> children) {
  FilterNode n = node(FilterOp::And);
  n.children = std::move(children);
  return n;
}
FilterNode FilterNode::either(std::vector<FilterNode> children) {
  FilterNode n = node(FilterOp::Or);
  n.children = std::move(children);
  return n;
}
FilterNode FilterNode::negate(FilterNode child) {
  FilterNode n = node(FilterOp::Not);
  n.children.push_back(std::move(child));
  return n;
}
FilterNode FilterNode::exists(std::string attribute) { return node(FilterOp::Exists, std::move(attribute)); }
FilterNode FilterNode::eq(std::string attribute, FilterValue value) {
  FilterNode n = node(FilterOp::Eq, std::move(attribute));
  n.values.push_back(std::move(value));
  return n;
}
FilterNode FilterNode::in(std::string attribute, std::vector<FilterValue> values) {
  FilterNode n = node(FilterOp::In, std::move(attribute));
  n.values = std::move(values);
  return n;
}
FilterNode FilterNode::range(std::string attribute, const FilterValue* lower, bool lowerInclusive, const FilterValue* upper,
                             bool upperInclusive) {
  FilterNode n = node(FilterOp::Range, std::move(attribute));
  n.hasLower = lower != nullptr;
  n.hasUpper = upper != nullptr;
  if (lower) n.lower = *lower;
  if (upper) n.upper = *upper;
  n.lowerInclusive = lowerInclusive;
  n.upperInclusive = upperInclusive;
  return n;
}
FilterNode FilterNode::has(std::string attribute, std::string value) {
  FilterNode n = node(FilterOp::Has, std::move(attribute));
  n.values.push_back(FilterValue::ofString(std::move(value)));
  return n;
}
FilterNode FilterNode::hasAny(std::string attribute, std::vector<std::string> values) {
  FilterNode n = node(FilterOp::HasAny, std::move(attribute));
  n.values = strings(std::move(values));
  return n;
}
FilterNode FilterNode::hasAll(std::string attribute, std::vector<std::string> values) {
  FilterNode n = node(FilterOp::HasAll, std::move(attribute));
  n.values = strings(std::move(values));
  return n;
}
FilterNode FilterNode::idIn(std::vector<uint64_t> ids) {
  FilterNode n = node(FilterOp::IdIn);
  n.ids = std::move(ids);
  return n;
}
FilterNode FilterNode::idNotIn(std::vector<uint64_t> ids) {
  FilterNode n = node(FilterOp::IdNotIn);
  n.ids = std::move(ids);
  return n;
}
FilterNode FilterNode::rowIn(std::vector<uint32_t> rows) {
  FilterNode n = node(FilterOp::RowIn);
  n.rows = std::move(rows);
  return n;
}

FilterResult compileFilter(const AttributeTable& table, const FilterNode& filter, const FilterOptions& options) {
  if (!(options.rowListBelow >= 0.0 && options.rowListBelow <= 1.0)) {
    throw invalid("a fraction from 0 to 1", "rowListBelow", std::to_string(options.rowListBelow));
  }
  // The snapshot comes first: every string its rows use is interned by then (attributes.h).
  const std::shared_ptr<const AttributeSnapshot> state = table.snapshot();
  const size_t rows = state->rows;
  const Plan plan = Resolver(table, rows, options).resolve(filter, 0);

  FilterResult result;
  result.rowCount = rows;
  result.bits.assign((rows + 31) / 32, 0u);
  const size_t chunks = (rows + kChunkRows - 1) / kChunkRows;
  std::vector<size_t> counts(chunks, 0);
  auto evalChunk = [&](Evaluator& evaluator, size_t k) {
    const uint32_t len = static_cast<uint32_t>(std::min<size_t>(kChunkRows, rows - k * kChunkRows));
    uint32_t* out = result.bits.data() + k * kChunkWords;
    evaluator.eval(plan, k, len, out, 0);
    counts[k] = popcount(out, wordsFor(len));
  };
  const unsigned threads = ThreadPool::shared().resolve(options.threads);
  if (chunks <= 1 || threads <= 1) {
    Evaluator evaluator(*state);
    for (size_t k = 0; k < chunks; ++k) evalChunk(evaluator, k);
  } else {
    const unsigned parallelism = static_cast<unsigned>(std::min<size_t>(threads, chunks));
    std::vector<std::unique_ptr<Evaluator>> evaluators(parallelism);
    for (auto& e : evaluators) e = std::make_unique<Evaluator>(*state);
    ThreadPool::shared().parallelFor(chunks, parallelism, [&](size_t k, unsigned slot) { evalChunk(*evaluators[slot], k); });
  }
  for (size_t c : counts) result.count += c;

  if (options.rowListBelow > 0.0 && static_cast<double>(result.count) <= options.rowListBelow * static_cast<double>(rows)) {
    result.hasRows = true;
    result.rows.reserve(result.count);
    for (size_t w = 0; w < result.bits.size(); ++w) {
      for (uint32_t bits = result.bits[w]; bits != 0; bits &= bits - 1) {
        result.rows.push_back(static_cast<uint32_t>(w * 32 + static_cast<uint32_t>(__builtin_ctz(bits))));
      }
    }
  }
  return result;
}

}  // namespace ebrix
