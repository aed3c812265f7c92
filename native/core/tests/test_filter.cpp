// AttributeTable and compileFilter against a row-at-a-time reference: random schemas, data and
// filter trees; appends and setRows while filters compile on other threads.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>

#include "../attributes.h"
#include "../error.h"
#include "../filter.h"
#include "check.h"

using namespace ebrix;

namespace {

// A row's value for one column, as plain data.
struct Cell {
  bool present = false;
  uint64_t u = 0;
  double d = 0.0;
  bool b = false;
  std::string s;
  std::vector<std::string> set;  // multi-valued; empty = missing
};

struct Model {
  std::vector<AttributeSpec> schema;
  std::vector<std::vector<Cell>> rows;  // [row][column]
  std::vector<std::vector<std::string>> vocabulary;  // per category column
  std::vector<bool> wideUints;                       // per uint column: values past 32 bits occur
  std::vector<double> missing;                       // per column: chance of a missing value
};

// Owns the arrays an AttributeValues batch points into.
struct Batch {
  struct Buffers {
    std::vector<uint8_t> present, bools;
    std::vector<uint32_t> u32, codes, offsets;
    std::vector<uint64_t> u64;
    std::vector<double> numbers;
    std::vector<std::string> dictionary;
  };
  std::vector<Buffers> buffers;
  std::vector<AttributeValues> columns;
};

uint64_t randomUint(std::mt19937_64& rng, bool wide) {
  if (wide && rng() % 4 == 0) return (uint64_t{1} << 32) + rng() % 5 - 2;  // around 2^32, both sides
  if (rng() % 20 == 0) return std::numeric_limits<uint32_t>::max() - rng() % 2;
  return rng() % 12;
}

double randomNumber(std::mt19937_64& rng) {
  switch (rng() % 6) {
    case 0: return -0.0;
    case 1: return std::numeric_limits<double>::infinity() * (rng() % 2 ? 1 : -1);
    case 2: return std::uniform_real_distribution<double>(-5, 5)(rng);
    default: return static_cast<double>(static_cast<int>(rng() % 11) - 5) * 0.5;
  }
}

Cell randomCell(Model& m, size_t c, std::mt19937_64& rng) {
  Cell cell;
  const AttributeSpec& spec = m.schema[c];
  const auto& vocab = m.vocabulary[c];
  if (std::uniform_real_distribution<double>(0, 1)(rng) < m.missing[c]) return cell;
  cell.present = true;
  switch (spec.type) {
    case AttributeType::Uint: cell.u = randomUint(rng, m.wideUints[c]); break;
    case AttributeType::Number: cell.d = randomNumber(rng); break;
    case AttributeType::Bool: cell.b = rng() % 2 == 0; break;
    case AttributeType::Category:
      if (!spec.multi) {
        cell.s = vocab[rng() % vocab.size()];
      } else {
        const size_t n = 1 + rng() % 4;
        for (size_t i = 0; i < n; ++i) cell.set.push_back(vocab[rng() % vocab.size()]);  // repeats allowed
      }
      break;
  }
  return cell;
}

Model randomModel(std::mt19937_64& rng) {
  Model m;
  const AttributeType types[] = {AttributeType::Uint, AttributeType::Number, AttributeType::Bool, AttributeType::Category};
  const size_t columns = 3 + rng() % 6;
  for (size_t c = 0; c < columns; ++c) {
    AttributeSpec spec;
    spec.name = "a" + std::to_string(c);
    spec.type = c < 4 ? types[c] : types[rng() % 4];
    spec.multi = spec.type == AttributeType::Category && (c == 4 || rng() % 2 == 0);
    m.schema.push_back(spec);
    std::vector<std::string> vocab;
    const size_t words = 2 + rng() % 10;
    for (size_t i = 0; i < words; ++i) vocab.push_back(spec.name + "_v" + std::to_string(i) + (i % 3 == 0 ? "_a_longer_string_value" : ""));
    m.vocabulary.push_back(vocab);
    m.wideUints.push_back(rng() % 2 == 0);
    const double missing[] = {0.0, 0.1, 0.5, 0.95};
    m.missing.push_back(missing[rng() % 4]);
  }
  return m;
}

// Rows [begin, end) of the model as a batch; columns for which `leaveOut` holds are left out.
Batch makeBatch(const Model& m, const std::vector<size_t>& rows, std::mt19937_64& rng, bool leaveSomeOut) {
  Batch batch;
  batch.buffers.resize(m.schema.size());
  std::vector<size_t> given;
  for (size_t c = 0; c < m.schema.size(); ++c) {
    bool anyPresent = false;
    for (size_t r : rows) anyPresent = anyPresent || m.rows[r][c].present;
    // A column may be left out only where none of the rows has a value.
    if (leaveSomeOut && !anyPresent && rng() % 2 == 0) continue;
    given.push_back(c);
    const AttributeSpec& spec = m.schema[c];
    Batch::Buffers& b = batch.buffers[c];
    std::map<std::string, uint32_t> local;
    auto codeOf = [&](const std::string& s) {
      auto it = local.find(s);
      if (it != local.end()) return it->second;
      const uint32_t code = static_cast<uint32_t>(b.dictionary.size());
      b.dictionary.push_back(s);
      local.emplace(s, code);
      return code;
    };
    bool wide = false;
    for (size_t r : rows) wide = wide || (m.rows[r][c].present && m.rows[r][c].u > 0xFFFFFFFFu);
    b.offsets.push_back(0);
    for (size_t r : rows) {
      const Cell& cell = m.rows[r][c];
      b.present.push_back(cell.present ? 1 : 0);
      switch (spec.type) {
        case AttributeType::Uint:
          // Garbage in missing slots: it must be ignored.
          if (wide || rng() % 2 == 0) b.u64.push_back(cell.present ? cell.u : 0xDEADBEEFCAFEull);
          else b.u32.push_back(cell.present ? static_cast<uint32_t>(cell.u) : 7u);
          break;
        case AttributeType::Number: b.numbers.push_back(cell.present ? cell.d : std::nan("")); break;
        case AttributeType::Bool: b.bools.push_back(cell.present ? (cell.b ? 1 + rng() % 200 : 0) : 1); break;
        case AttributeType::Category:
          if (spec.multi) {
            for (const auto& s : cell.set) b.codes.push_back(codeOf(s));
            b.offsets.push_back(static_cast<uint32_t>(b.codes.size()));
          } else {
            b.codes.push_back(cell.present ? codeOf(cell.s) : 12345u);
          }
          break;
      }
    }
    // A uint column given part in 32 bits and part in 64 cannot be: pick one.
    if (spec.type == AttributeType::Uint && !b.u32.empty() && !b.u64.empty()) {
      b.u32.clear();
      b.u64.clear();
      for (size_t r : rows) b.u64.push_back(m.rows[r][c].present ? m.rows[r][c].u : 0);
    }
  }
  for (size_t c : given) {
    const AttributeSpec& spec = m.schema[c];
    Batch::Buffers& b = batch.buffers[c];
    AttributeValues v;
    v.name = spec.name;
    const bool allPresent = std::all_of(b.present.begin(), b.present.end(), [](uint8_t p) { return p != 0; });
    if (!spec.multi && !(allPresent && rng() % 2 == 0)) v.present = b.present.data();
    switch (spec.type) {
      case AttributeType::Uint:
        if (!b.u64.empty()) v.uint64s = b.u64.data();
        else v.uint32s = b.u32.data();
        break;
      case AttributeType::Number: v.numbers = b.numbers.data(); break;
      case AttributeType::Bool: v.bools = b.bools.data(); break;
      case AttributeType::Category:
        v.dictionary = b.dictionary.data();
        v.dictionarySize = b.dictionary.size();
        v.codes = b.codes.data();
        if (spec.multi) v.offsets = b.offsets.data();
        break;
    }
    batch.columns.push_back(v);
  }
  std::shuffle(batch.columns.begin(), batch.columns.end(), rng);
  return batch;
}

void appendRows(AttributeTable& table, Model& m, size_t count, std::mt19937_64& rng) {
  std::vector<size_t> rows;
  for (size_t i = 0; i < count; ++i) {
    std::vector<Cell> row;
    for (size_t c = 0; c < m.schema.size(); ++c) row.push_back(randomCell(m, c, rng));
    rows.push_back(m.rows.size());
    m.rows.push_back(std::move(row));
  }
  Batch batch = makeBatch(m, rows, rng, true);
  table.append(count, batch.columns);
}

uint64_t idOfRow(size_t r) { return r * 7919 + 13; }

// --- the reference: one row at a time, straight from the semantics in filter.h --------------

bool cellMatches(const FilterNode& f, const AttributeSpec& spec, const Cell& cell) {
  const bool has = spec.multi ? !cell.set.empty() : cell.present;
  if (!has) return false;
  auto contains = [&](const std::string& s) {
    if (!spec.multi) return cell.s == s;
    return std::find(cell.set.begin(), cell.set.end(), s) != cell.set.end();
  };
  auto equals = [&](const FilterValue& v) {
    switch (spec.type) {
      case AttributeType::Uint: return cell.u == v.uint;
      case AttributeType::Number: return cell.d == v.number;
      case AttributeType::Bool: return cell.b == v.boolean;
      case AttributeType::Category: return contains(v.string);
    }
    return false;
  };
  switch (f.op) {
    case FilterOp::Exists: return true;
    case FilterOp::Eq:
    case FilterOp::In:
    case FilterOp::Has:
    case FilterOp::HasAny: return std::any_of(f.values.begin(), f.values.end(), equals);
    case FilterOp::HasAll: return std::all_of(f.values.begin(), f.values.end(), equals);
    case FilterOp::Range:
      if (spec.type == AttributeType::Uint) {
        if (f.hasLower && !(f.lowerInclusive ? cell.u >= f.lower.uint : cell.u > f.lower.uint)) return false;
        if (f.hasUpper && !(f.upperInclusive ? cell.u <= f.upper.uint : cell.u < f.upper.uint)) return false;
      } else {
        if (f.hasLower && !(f.lowerInclusive ? cell.d >= f.lower.number : cell.d > f.lower.number)) return false;
        if (f.hasUpper && !(f.upperInclusive ? cell.d <= f.upper.number : cell.d < f.upper.number)) return false;
      }
      return true;
    default: return false;
  }
}

bool reference(const FilterNode& f, const Model& m, size_t r) {
  switch (f.op) {
    case FilterOp::All: return true;
    case FilterOp::None: return false;
    case FilterOp::And:
      return std::all_of(f.children.begin(), f.children.end(), [&](const FilterNode& c) { return reference(c, m, r); });
    case FilterOp::Or:
      return std::any_of(f.children.begin(), f.children.end(), [&](const FilterNode& c) { return reference(c, m, r); });
    case FilterOp::Not: return !reference(f.children[0], m, r);
    case FilterOp::IdIn:
    case FilterOp::IdNotIn: {
      const bool listed = std::find(f.ids.begin(), f.ids.end(), idOfRow(r)) != f.ids.end();
      return f.op == FilterOp::IdIn ? listed : !listed;
    }
    case FilterOp::RowIn: return std::find(f.rows.begin(), f.rows.end(), r) != f.rows.end();
    default: {
      size_t c = 0;
      while (m.schema[c].name != f.attribute) ++c;
      return cellMatches(f, m.schema[c], m.rows[r][c]);
    }
  }
}

// --- random filters ---------------------------------------------------------------------------

FilterValue randomValue(const Model& m, size_t c, std::mt19937_64& rng) {
  const AttributeSpec& spec = m.schema[c];
  switch (spec.type) {
    case AttributeType::Uint: return FilterValue::ofUint(randomUint(rng, true));
    case AttributeType::Number: return FilterValue::ofNumber(randomNumber(rng));
    case AttributeType::Bool: return FilterValue::ofBool(rng() % 2 == 0);
    case AttributeType::Category: {
      const auto& vocab = m.vocabulary[c];
      if (rng() % 10 == 0) return FilterValue::ofString("never_seen");
      return FilterValue::ofString(vocab[rng() % vocab.size()]);
    }
  }
  return {};
}

FilterNode randomFilter(const Model& m, std::mt19937_64& rng, size_t depth) {
  const size_t pick = rng() % 16;
  if (depth < 4 && pick < 6) {
    if (pick < 2) return FilterNode::negate(randomFilter(m, rng, depth + 1));
    std::vector<FilterNode> children;
    const size_t n = rng() % 4;  // 0: the empty and / or
    for (size_t i = 0; i < n; ++i) children.push_back(randomFilter(m, rng, depth + 1));
    return pick < 4 ? FilterNode::both(std::move(children)) : FilterNode::either(std::move(children));
  }
  if (pick == 6) {
    std::vector<uint64_t> ids;
    for (size_t i = 0, n = rng() % 40; i < n; ++i) ids.push_back(rng() % 3 == 0 ? rng() : idOfRow(rng() % (m.rows.size() + 5)));
    return rng() % 2 ? FilterNode::idIn(std::move(ids)) : FilterNode::idNotIn(std::move(ids));
  }
  if (pick == 7) {
    std::vector<uint32_t> rows;
    for (size_t i = 0, n = rng() % 40; i < n; ++i) rows.push_back(static_cast<uint32_t>(rng() % (m.rows.size() + 5)));
    return FilterNode::rowIn(std::move(rows));
  }
  if (pick == 8) return rng() % 2 ? FilterNode::all() : FilterNode::none();
  const size_t c = rng() % m.schema.size();
  const AttributeSpec& spec = m.schema[c];
  const std::string& name = spec.name;
  const size_t kind = rng() % 4;
  if (kind == 0) return FilterNode::exists(name);
  if (spec.type == AttributeType::Category && kind == 1) {
    std::vector<std::string> values;
    for (size_t i = 0, n = 1 + rng() % 3; i < n; ++i) values.push_back(randomValue(m, c, rng).string);
    const size_t which = rng() % 3;
    if (which == 0) return FilterNode::has(name, values[0]);
    return which == 1 ? FilterNode::hasAny(name, values) : FilterNode::hasAll(name, values);
  }
  if ((spec.type == AttributeType::Uint || spec.type == AttributeType::Number) && kind == 1) {
    const FilterValue lo = randomValue(m, c, rng), hi = randomValue(m, c, rng);
    const size_t sides = rng() % 3;
    return FilterNode::range(name, sides != 1 ? &lo : nullptr, rng() % 2, sides != 2 ? &hi : nullptr, rng() % 2);
  }
  if (kind == 2) return FilterNode::eq(name, randomValue(m, c, rng));
  std::vector<FilterValue> values;
  const size_t n = 1 + rng() % (rng() % 2 ? 3 : 20);  // past the linear-search size too
  for (size_t i = 0; i < n; ++i) values.push_back(randomValue(m, c, rng));
  return FilterNode::in(name, std::move(values));
}

FilterOptions optionsFor(const Model& m) {
  FilterOptions options;
  options.idToRow = [&m](uint64_t id, uint32_t* row) {
    if (id < 13 || (id - 13) % 7919 != 0 || (id - 13) / 7919 >= m.rows.size()) return false;
    *row = static_cast<uint32_t>((id - 13) / 7919);
    return true;
  };
  return options;
}

void expectMatchesReference(const AttributeTable& table, const Model& m, const FilterNode& f, std::mt19937_64& rng,
                            const char* what) {
  FilterOptions options = optionsFor(m);
  const double listBelow[] = {0.0, 0.01, 0.3, 1.0};
  options.rowListBelow = listBelow[rng() % 4];
  options.threads = rng() % 3 == 0 ? 2 : 1;
  const FilterResult result = compileFilter(table, f, options);
  CHECK_MSG(result.rowCount == m.rows.size(), what);
  CHECK(result.bits.size() == (m.rows.size() + 31) / 32);
  size_t count = 0;
  std::vector<uint32_t> rows;
  for (size_t r = 0; r < m.rows.size(); ++r) {
    const bool want = reference(f, m, r);
    const bool got = (result.bits[r / 32] >> (r % 32)) & 1u;
    CHECK_MSG(want == got, what << ": row " << r << " want " << want << " got " << got);
    if (want) {
      ++count;
      rows.push_back(static_cast<uint32_t>(r));
    }
  }
  if (m.rows.size() % 32 != 0) CHECK_MSG((result.bits.back() >> (m.rows.size() % 32)) == 0, "bits past the row count");
  CHECK_MSG(result.count == count, what << ": count " << result.count << " want " << count);
  const bool wantRows = options.rowListBelow > 0 && count <= options.rowListBelow * m.rows.size();
  CHECK_MSG(result.hasRows == wantRows, what);
  if (wantRows) CHECK(result.rows == rows);
}

AttributeSpec spec(const std::string& name, AttributeType type, bool multi = false) {
  AttributeSpec s;
  s.name = name;
  s.type = type;
  s.multi = multi;
  return s;
}

}  // namespace

TEST_CASE("filter.random_trees_equal_reference") {
  std::mt19937_64 rng(2024);
  size_t cases = 0;
  for (int schemaRound = 0; schemaRound < 12; ++schemaRound) {
    Model m = randomModel(rng);
    AttributeTable table(m.schema);
    // Several appends of awkward sizes: partial words, chunk growth, empty appends.
    const size_t sizes[] = {0, 1, 31, 33, 200, 1000, 3000};
    for (int a = 0; a < 6; ++a) appendRows(table, m, sizes[rng() % 7], rng);
    for (int i = 0; i < 250; ++i, ++cases) {
      expectMatchesReference(table, m, randomFilter(m, rng, 0), rng, "random tree");
    }
  }
  CHECK(cases == 3000);
}

TEST_CASE("filter.across_chunks_and_growth") {
  // More than two chunks, appended in pieces that straddle chunk boundaries, with sparse
  // columns (left out of most batches) and wide uints arriving late.
  std::mt19937_64 rng(7);
  Model m = randomModel(rng);
  m.missing[0] = 0.999;
  AttributeTable table(m.schema);
  const size_t sizes[] = {40000, 30000, 1, 65535, 20000};
  for (size_t n : sizes) appendRows(table, m, n, rng);
  CHECK(table.rowCount() == 155536);
  for (int i = 0; i < 60; ++i) expectMatchesReference(table, m, randomFilter(m, rng, 0), rng, "chunks");
}

TEST_CASE("filter.set_rows_replace_whole_rows") {
  std::mt19937_64 rng(99);
  for (int round = 0; round < 3; ++round) {
    Model m = randomModel(rng);
    AttributeTable table(m.schema);
    appendRows(table, m, 70000 + rng() % 1000, rng);
    for (int update = 0; update < 4; ++update) {
      // Distinct rows in random order, some in each chunk.
      std::vector<size_t> rows;
      for (size_t i = 0, n = 1 + rng() % 300; i < n; ++i) rows.push_back(rng() % m.rows.size());
      std::sort(rows.begin(), rows.end());
      rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
      std::shuffle(rows.begin(), rows.end(), rng);
      for (size_t r : rows) {
        for (size_t c = 0; c < m.schema.size(); ++c) m.rows[r][c] = randomCell(m, c, rng);
      }
      Batch batch = makeBatch(m, rows, rng, true);
      std::vector<uint32_t> rows32(rows.begin(), rows.end());
      table.setRows(rows32.data(), rows32.size(), batch.columns);
      for (int i = 0; i < 12; ++i) expectMatchesReference(table, m, randomFilter(m, rng, 0), rng, "setRows");
      appendRows(table, m, rng() % 500, rng);  // appends continue in place after a copy
      for (int i = 0; i < 6; ++i) expectMatchesReference(table, m, randomFilter(m, rng, 0), rng, "append after setRows");
    }
  }
}

TEST_CASE("filter.selectivity_and_row_lists") {
  AttributeTable table({spec("bucket", AttributeType::Uint)});
  const size_t n = 200000;
  std::vector<uint32_t> bucket(n);
  for (size_t r = 0; r < n; ++r) bucket[r] = static_cast<uint32_t>((r * 2654435761u) % 1000);
  AttributeValues v;
  v.name = "bucket";
  v.uint32s = bucket.data();
  table.append(n, {v});
  // bucket < t selects t / 1000 of the rows: 50%, 10%, 1%, 0.1%.
  for (uint64_t t : {500u, 100u, 10u, 1u}) {
    const FilterValue upper = FilterValue::ofUint(t);
    FilterOptions options;
    options.threads = 2;
    const FilterResult result = compileFilter(table, FilterNode::range("bucket", nullptr, true, &upper, false), options);
    size_t want = 0;
    for (size_t r = 0; r < n; ++r) want += bucket[r] < t;
    CHECK(result.count == want);
    CHECK(result.hasRows == (want <= n / 100));  // the default rowListBelow is 1%
    CHECK(result.hasRows == (t <= 10));
    if (result.hasRows) {
      CHECK(result.rows.size() == want);
      CHECK(std::is_sorted(result.rows.begin(), result.rows.end()));
      for (uint32_t r : result.rows) CHECK(bucket[r] < t);
    }
  }
}

TEST_CASE("filter.missing_values_semantics") {
  AttributeTable table({spec("level", AttributeType::Uint), spec("skills", AttributeType::Category, true)});
  // Rows: level 3 / missing / 1; skills {go} / {} / missing (left out of the second batch).
  const uint32_t levels[] = {3, 999, 1};
  const uint8_t present[] = {1, 0, 1};
  const std::string dict[] = {"go"};
  const uint32_t codes[] = {0};
  const uint32_t offsets[] = {0, 1, 1};
  AttributeValues level;
  level.name = "level";
  level.uint32s = levels;
  level.present = present;
  AttributeValues skills;
  skills.name = "skills";
  skills.dictionary = dict;
  skills.dictionarySize = 1;
  skills.codes = codes;
  skills.offsets = offsets;
  table.append(2, {level, skills});
  AttributeValues level3 = level;
  level3.uint32s = levels + 2;
  level3.present = present + 2;
  table.append(1, {level3});
  auto selected = [&](const FilterNode& f) {
    const FilterResult r = compileFilter(table, f);
    return r.bits.empty() ? 0u : r.bits[0];
  };
  const FilterValue three = FilterValue::ofUint(3);
  CHECK(selected(FilterNode::eq("level", three)) == 0b001);
  CHECK(selected(FilterNode::negate(FilterNode::eq("level", three))) == 0b110);  // the missing row too
  CHECK(selected(FilterNode::range("level", nullptr, true, &three, false)) == 0b100);
  CHECK(selected(FilterNode::negate(FilterNode::range("level", nullptr, true, &three, false))) == 0b011);
  CHECK(selected(FilterNode::exists("level")) == 0b101);
  CHECK(selected(FilterNode::exists("skills")) == 0b001);
  CHECK(selected(FilterNode::negate(FilterNode::has("skills", "go"))) == 0b110);
  CHECK(selected(FilterNode::hasAll("skills", {"go"})) == 0b001);
  CHECK(selected(FilterNode::has("skills", "rust")) == 0);  // never seen
  CHECK(selected(FilterNode::both({})) == 0b111);
  CHECK(selected(FilterNode::either({})) == 0);
}

TEST_CASE("filter.validation_errors") {
  AttributeTable table({spec("level", AttributeType::Uint), spec("salary", AttributeType::Number),
                        spec("remote", AttributeType::Bool), spec("country", AttributeType::Category),
                        spec("skills", AttributeType::Category, true)});
  auto message = [&](const FilterNode& f, FilterOptions options = {}) -> std::string {
    try {
      compileFilter(table, f, options);
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::InvalidArgument);
      return e.what();
    }
    return "";
  };
  const std::string unknown = message(FilterNode::eq("levle", FilterValue::ofUint(1)));
  CHECK_MSG(unknown == "Expected an attribute of the table (level, salary, remote, country, skills) for filter eq but received \"levle\"",
            unknown);
  const std::string mismatch = message(FilterNode::eq("level", FilterValue::ofString("3")));
  CHECK_MSG(mismatch == "Expected a uint value (attribute level is uint) for filter level.eq but received string \"3\"", mismatch);
  const FilterValue a = FilterValue::ofString("a");
  const std::string rangeOnCategory = message(FilterNode::range("country", &a, true, nullptr, true));
  CHECK_MSG(rangeOnCategory ==
                "Expected an operator a category attribute has (exists, eq, in, has, hasAny, hasAll) for filter attribute country but received range",
            rangeOnCategory);
  CHECK(message(FilterNode::has("level", "x")).find("for filter attribute level but received has") != std::string::npos);
  CHECK(message(FilterNode::in("level", {})) == "Expected at least one value for filter level.in but received none");
  CHECK(message(FilterNode::hasAny("skills", {})) == "Expected at least one value for filter skills.hasAny but received none");
  const FilterValue nan = FilterValue::ofNumber(std::nan(""));
  CHECK(message(FilterNode::range("salary", &nan, true, nullptr, true)) ==
        "Expected a number that is not NaN for filter salary.range lower bound but received NaN");
  CHECK(message(FilterNode::eq("salary", nan)) == "Expected a number that is not NaN for filter salary.eq but received NaN");
  CHECK(message(FilterNode::range("salary", nullptr, true, nullptr, true)).find("a lower or an upper bound") != std::string::npos);
  CHECK(message(FilterNode::eq("remote", FilterValue::ofNumber(1))).find("a boolean value") != std::string::npos);
  CHECK(message(FilterNode::eq("salary", FilterValue::ofUint(1))).find("a number value") != std::string::npos);
  FilterNode twoValues = FilterNode::eq("level", FilterValue::ofUint(1));
  twoValues.values.push_back(FilterValue::ofUint(2));
  CHECK(message(twoValues) == "Expected one value for filter level.eq but received 2");
  CHECK(message(FilterNode::idIn({1, 2})) == "Expected an idToRow mapping for filter idIn but received none");
  FilterNode notTwo = FilterNode::negate(FilterNode::all());
  notTwo.children.push_back(FilterNode::all());
  CHECK(message(notTwo) == "Expected one child for filter not but received 2");
  FilterNode deep = FilterNode::all();
  for (size_t i = 0; i < kMaxFilterDepth; ++i) deep = FilterNode::negate(std::move(deep));
  CHECK(message(deep).find("levels deep") != std::string::npos);
  // A child after a constant that decides the whole is still checked.
  CHECK(!message(FilterNode::both({FilterNode::none(), FilterNode::eq("nope", FilterValue::ofUint(1))})).empty());
  FilterOptions badList;
  badList.rowListBelow = 1.5;
  CHECK(message(FilterNode::all(), badList).find("rowListBelow") != std::string::npos);
}

TEST_CASE("attributes.schema_and_append_errors_leave_the_table_unchanged") {
  CHECK_THROWS_CODE(AttributeTable({spec("a", AttributeType::Uint), spec("a", AttributeType::Bool)}), ErrorCode::InvalidArgument);
  CHECK_THROWS_CODE(AttributeTable({spec("", AttributeType::Uint)}), ErrorCode::InvalidArgument);
  CHECK_THROWS_CODE(AttributeTable({spec("a", AttributeType::Uint, true)}), ErrorCode::InvalidArgument);

  AttributeTable table({spec("level", AttributeType::Uint), spec("salary", AttributeType::Number),
                        spec("skills", AttributeType::Category, true), spec("country", AttributeType::Category)});
  const uint32_t levels[] = {1, 2};
  const double salaries[] = {1.0, std::nan("")};
  const uint8_t salaryPresent[] = {1, 0};
  AttributeValues level;
  level.name = "level";
  level.uint32s = levels;
  AttributeValues salary;
  salary.name = "salary";
  salary.numbers = salaries;
  salary.present = salaryPresent;  // the NaN is in a missing slot: fine
  table.append(2, {level, salary});
  CHECK(table.rowCount() == 2);
  const size_t bytes = table.memoryBytes();

  auto expectRejected = [&](std::vector<AttributeValues> columns, const char* fragment) {
    try {
      table.append(2, columns);
      CHECK_MSG(false, "append should have thrown: " << fragment);
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::InvalidArgument);
      CHECK_MSG(std::string(e.what()).find(fragment) != std::string::npos, e.what());
    }
    CHECK(table.rowCount() == 2);
  };
  AttributeValues unknown = level;
  unknown.name = "levle";
  expectRejected({unknown}, "Expected an attribute of the table (level, salary, skills, country) for a column name but received \"levle\"");
  expectRejected({level, level}, "each attribute at most once");
  AttributeValues nanSalary = salary;
  nanSalary.present = nullptr;
  expectRejected({level, nanSalary}, "Expected a number that is not NaN for attribute salary (number) at batch row 1 but received NaN");
  AttributeValues numbersForUint;
  numbersForUint.name = "level";
  numbersForUint.numbers = salaries;
  expectRejected({numbersForUint}, "Expected unsigned integers for attribute level (uint) but received numbers");
  const std::string dict[] = {"go"};
  const uint32_t badCodes[] = {0, 1};
  const uint32_t offsets[] = {0, 1, 2};
  AttributeValues skills;
  skills.name = "skills";
  skills.dictionary = dict;
  skills.dictionarySize = 1;
  skills.codes = badCodes;
  skills.offsets = offsets;
  expectRejected({skills}, "Expected a code below the batch dictionary's size 1 for attribute skills (multi-valued category) codes[1] but received 1");
  const uint32_t backwards[] = {0, 2, 1};
  skills.offsets = backwards;
  expectRejected({skills}, "non-decreasing offsets");
  AttributeValues country;
  country.name = "country";
  country.dictionary = dict;
  country.dictionarySize = 1;
  country.codes = badCodes;
  expectRejected({country}, "for attribute country (category) at batch row 1 but received 1");
  country.offsets = offsets;
  expectRejected({country}, "Expected one category code per row");

  const uint32_t rowsToSet[] = {0, 0};
  CHECK_THROWS_CODE(table.setRows(rowsToSet, 2, {level}), ErrorCode::InvalidArgument);
  const uint32_t pastEnd[] = {2};
  CHECK_THROWS_CODE(table.setRows(pastEnd, 1, {level}), ErrorCode::InvalidArgument);
  CHECK(table.memoryBytes() == bytes);
}

TEST_CASE("attributes.memory_accounting") {
  AttributeTable table({spec("level", AttributeType::Uint), spec("sparse", AttributeType::Number),
                        spec("tags", AttributeType::Category, true)});
  const size_t empty = table.memoryBytes();
  std::vector<uint32_t> levels(100000, 5);
  AttributeValues level;
  level.name = "level";
  level.uint32s = levels.data();
  table.append(levels.size(), {level});
  const size_t withLevels = table.memoryBytes();
  // About 4 bytes a value and a bit of presence; nothing for the columns left out.
  CHECK(withLevels - empty >= 100000 * 4);
  CHECK(withLevels - empty < 100000 * 4 + 2 * 65536 * 4 / 8 + 4096);
  std::vector<uint64_t> wide(1, uint64_t{1} << 40);
  AttributeValues wideLevel;
  wideLevel.name = "level";
  wideLevel.uint64s = wide.data();
  table.append(1, {wideLevel});
  CHECK(table.memoryBytes() > withLevels);  // the last chunk widened to 64 bits
  const FilterValue big = FilterValue::ofUint(uint64_t{1} << 40);
  CHECK(compileFilter(table, FilterNode::eq("level", big)).count == 1);
  CHECK(compileFilter(table, FilterNode::eq("level", FilterValue::ofUint(5))).count == 100000);
}

TEST_CASE("filter.appends_and_set_rows_while_compiling") {
  // Row r's values are a function of r, so a reader can check any snapshot on its own. The
  // writer appends batches of varied sizes and rewrites rows with their own values (setRows
  // copies the chunks while readers scan them).
  AttributeTable table({spec("mod7", AttributeType::Uint), spec("half", AttributeType::Number),
                        spec("odd", AttributeType::Bool), spec("tags", AttributeType::Category, true),
                        spec("kind", AttributeType::Category)});
  const std::string tagNames[] = {"t0", "t1", "t2", "t3", "t4"};
  auto mod7 = [](size_t r) { return r % 7; };
  auto hasMod7 = [](size_t r) { return r % 11 != 0; };  // every 11th row is missing mod7
  auto tagsOf = [](size_t r) {
    std::vector<uint32_t> t;
    if (r % 3 == 0) t.push_back(static_cast<uint32_t>(r % 5));
    if (r % 4 == 0) t.push_back(static_cast<uint32_t>((r / 4) % 5));
    return t;
  };
  auto batchOf = [&](const std::vector<size_t>& rows, std::vector<uint32_t>& u, std::vector<uint8_t>& present,
                     std::vector<double>& d, std::vector<uint8_t>& b, std::vector<uint32_t>& codes,
                     std::vector<uint32_t>& offsets, std::vector<uint32_t>& kinds) {
    u.clear(), present.clear(), d.clear(), b.clear(), codes.clear(), offsets.assign(1, 0), kinds.clear();
    for (size_t r : rows) {
      u.push_back(static_cast<uint32_t>(mod7(r)));
      present.push_back(hasMod7(r));
      d.push_back(static_cast<double>(r) * 0.5);
      b.push_back(r % 2);
      for (uint32_t t : tagsOf(r)) codes.push_back(t);
      offsets.push_back(static_cast<uint32_t>(codes.size()));
      kinds.push_back(static_cast<uint32_t>(r % 2));
    }
    std::vector<AttributeValues> cols(5);
    cols[0].name = "mod7", cols[0].uint32s = u.data(), cols[0].present = present.data();
    cols[1].name = "half", cols[1].numbers = d.data();
    cols[2].name = "odd", cols[2].bools = b.data();
    cols[3].name = "tags", cols[3].dictionary = tagNames, cols[3].dictionarySize = 5, cols[3].codes = codes.data(),
    cols[3].offsets = offsets.data();
    cols[4].name = "kind", cols[4].dictionary = tagNames, cols[4].dictionarySize = 2, cols[4].codes = kinds.data();
    return cols;
  };

  const size_t target = 300000;
  std::atomic<bool> done{false};
  std::atomic<size_t> checks{0};
  std::thread writer([&] {
    std::mt19937_64 rng(5);
    std::vector<uint32_t> u, codes, offsets, kinds;
    std::vector<uint8_t> present, b;
    std::vector<double> d;
    size_t rows = 0;
    while (rows < target) {
      const size_t n = std::min(target - rows, size_t{1} + rng() % (rng() % 4 == 0 ? 20000 : 300));
      std::vector<size_t> batch(n);
      for (size_t i = 0; i < n; ++i) batch[i] = rows + i;
      table.append(n, batchOf(batch, u, present, d, b, codes, offsets, kinds));
      rows += n;
      if (rng() % 5 == 0) {
        std::vector<size_t> again;
        for (size_t i = 0, m = 1 + rng() % 50; i < m; ++i) again.push_back(rng() % rows);
        std::sort(again.begin(), again.end());
        again.erase(std::unique(again.begin(), again.end()), again.end());
        std::vector<uint32_t> again32(again.begin(), again.end());
        table.setRows(again32.data(), again32.size(), batchOf(again, u, present, d, b, codes, offsets, kinds));
      }
    }
    done = true;
  });

  // mod7 in {1, 3} and not tags has t2, or (odd and half >= 1000)
  const FilterNode filter = FilterNode::either(
      {FilterNode::both({FilterNode::in("mod7", {FilterValue::ofUint(1), FilterValue::ofUint(3)}),
                         FilterNode::negate(FilterNode::has("tags", "t2"))}),
       FilterNode::both({FilterNode::eq("odd", FilterValue::ofBool(true)),
                         [] {
                           const FilterValue lo = FilterValue::ofNumber(1000);
                           return FilterNode::range("half", &lo, true, nullptr, true);
                         }(),
                         FilterNode::eq("kind", FilterValue::ofString("t1"))})});
  auto expected = [&](size_t r) {
    const auto tags = tagsOf(r);
    const bool left = hasMod7(r) && (mod7(r) == 1 || mod7(r) == 3) && std::find(tags.begin(), tags.end(), 2u) == tags.end();
    const bool right = r % 2 == 1 && r * 0.5 >= 1000;
    return left || right;
  };
  std::mutex failureMutex;
  std::string failure;
  auto reader = [&](unsigned threads) {
    FilterOptions options;
    options.threads = threads;
    while (!done) try {
      const FilterResult result = compileFilter(table, filter, options);
      size_t count = 0;
      for (size_t r = 0; r < result.rowCount; ++r) {
        const bool got = (result.bits[r / 32] >> (r % 32)) & 1u;
        CHECK_MSG(got == expected(r), "row " << r << " of " << result.rowCount);
        count += got;
      }
      CHECK(count == result.count);
      ++checks;
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(failureMutex);
      if (failure.empty()) failure = e.what();
      return;
    }
  };
  std::thread a(reader, 1), b(reader, 2);
  a.join();
  b.join();
  writer.join();
  CHECK_MSG(failure.empty(), failure);
  CHECK(checks > 0);
  CHECK(table.rowCount() == target);
  FilterOptions options;
  const FilterResult last = compileFilter(table, filter, options);
  size_t want = 0;
  for (size_t r = 0; r < target; ++r) want += expected(r);
  CHECK(last.count == want);
}
