// JavaScript class AttributeTable over ebrix::AttributeTable, with filter compilation.
// lib/index/attributes.ts validates records and filters against the schema, with messages that
// name the record or the filter path, and converts them to the shapes below; this layer
// re-checks what memory safety depends on (typed array types and lengths) and leaves the
// rest to the core's own checks.
//
//   new AttributeTable([{ name, type: 'uint' | 'number' | 'bool' | 'category', multi }])
//   append(count, columns) and setRows(rows: Uint32Array, columns); columns keyed by name:
//     uint      { values: Uint32Array | BigUint64Array, present?: Uint8Array }
//     number    { values: Float64Array, present?: Uint8Array }
//     bool      { values: Uint8Array, present?: Uint8Array }
//     category  { dictionary: string[], codes: Uint32Array, present?: Uint8Array }, and for a
//               multi-valued one offsets: Uint32Array (count + 1) instead of present
//   Typed arrays cross without a copy (the core copies what it keeps during the call); only
//   the batch's distinct strings are read as JS strings.
//
//   compile(node, rowListBelow, threads), compileAsync(...) -> { rowCount, count, bits, rows? }
//     node: { op: 'all' | 'none' } | { op: 'and' | 'or', args: node[] } | { op: 'not', arg }
//         | { op: 'exists', attr } | { op: 'eq' | 'in' | 'has' | 'hasAny' | 'hasAll', attr, values }
//         | { op: 'range', attr, lower?, lowerInclusive, upper?, upperInclusive }
//         | { op: 'rows', rows: Uint32Array } | { op: 'ids', ids: BigUint64Array }
//     ('ids' only in a filter an index search evaluates: the index maps ids to rows)
//     values: an array of bigint (uint), number, boolean or string, or a BigUint64Array or
//     Float64Array; a bound is a bigint (uint) or a number.
#include "attributes.h"

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../core/attributes.h"
#include "../core/error.h"
#include "../core/filter.h"
#include "args.h"
#include "errors.h"
#include "index_args.h"

namespace ebrix::binding {
namespace {

bool isTypedArray(const Napi::Value& v, napi_typedarray_type type) {
  return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == type;
}

std::string requireString(const Napi::Value& v, const std::string& name) {
  if (!v.IsString()) throwInvalid(v.Env(), "Expected a string for " + name);
  return v.As<Napi::String>().Utf8Value();
}

// A typed array of `type` holding exactly `length` elements, or EBRIX_INVALID_ARGUMENT.
template <class T>
const T* requireLength(const Napi::Value& v, napi_typedarray_type type, const char* typeName, size_t length,
                       const std::string& name) {
  if (!isTypedArray(v, type)) throwInvalid(v.Env(), std::string("Expected a ") + typeName + " for " + name);
  auto array = v.As<Napi::TypedArrayOf<T>>();
  if (array.ElementLength() != length) {
    throwInvalid(v.Env(), "Expected " + std::to_string(length) + " elements for " + name + " but received " +
                              std::to_string(array.ElementLength()));
  }
  return array.Data();
}

// A batch's columns: AttributeValues pointing into the caller's typed arrays (alive for the
// call) and into the dictionaries held here.
struct Columns {
  std::vector<std::vector<std::string>> dictionaries;
  std::vector<AttributeValues> values;
};

Columns parseColumns(const Napi::Value& arg, size_t count) {
  Napi::Env env = arg.Env();
  if (!arg.IsObject()) throwInvalid(env, "Expected an object of columns for columns");
  Napi::Object object = arg.As<Napi::Object>();
  Napi::Array names = object.GetPropertyNames();
  Columns columns;
  columns.dictionaries.reserve(names.Length());  // the values point into these vectors
  for (uint32_t i = 0; i < names.Length(); ++i) {
    AttributeValues v;
    v.name = names.Get(i).ToString().Utf8Value();
    const std::string where = "columns." + v.name;
    const Napi::Value column = object.Get(v.name);
    if (!column.IsObject()) throwInvalid(env, "Expected an object for " + where);
    Napi::Object c = column.As<Napi::Object>();
    const Napi::Value present = c.Get("present");
    if (!present.IsUndefined()) v.present = requireLength<uint8_t>(present, napi_uint8_array, "Uint8Array", count, where + ".present");
    const Napi::Value values = c.Get("values");
    if (!values.IsUndefined()) {
      const std::string name = where + ".values";
      if (isTypedArray(values, napi_uint32_array)) v.uint32s = requireLength<uint32_t>(values, napi_uint32_array, "Uint32Array", count, name);
      else if (isTypedArray(values, napi_biguint64_array)) v.uint64s = requireLength<uint64_t>(values, napi_biguint64_array, "BigUint64Array", count, name);
      else if (isTypedArray(values, napi_float64_array)) v.numbers = requireLength<double>(values, napi_float64_array, "Float64Array", count, name);
      else if (isTypedArray(values, napi_uint8_array)) v.bools = requireLength<uint8_t>(values, napi_uint8_array, "Uint8Array", count, name);
      else throwInvalid(env, "Expected a Uint32Array, BigUint64Array, Float64Array or Uint8Array for " + name);
    }
    const Napi::Value dictionary = c.Get("dictionary");
    if (!dictionary.IsUndefined()) {
      if (!dictionary.IsArray()) throwInvalid(env, "Expected an array of strings for " + where + ".dictionary");
      Napi::Array strings = dictionary.As<Napi::Array>();
      std::vector<std::string>& owned = columns.dictionaries.emplace_back();
      owned.reserve(strings.Length());
      for (uint32_t k = 0; k < strings.Length(); ++k) {
        owned.push_back(requireString(strings.Get(k), where + ".dictionary[" + std::to_string(k) + "]"));
      }
      v.dictionary = owned.data();
      v.dictionarySize = owned.size();
    }
    const Napi::Value offsets = c.Get("offsets");
    const Napi::Value codes = c.Get("codes");
    size_t codeCount = count;
    if (!offsets.IsUndefined()) {
      v.offsets = requireLength<uint32_t>(offsets, napi_uint32_array, "Uint32Array", count + 1, where + ".offsets");
      codeCount = v.offsets[count];  // the core checks the offsets rise to it before reading codes
    }
    if (!codes.IsUndefined()) v.codes = requireLength<uint32_t>(codes, napi_uint32_array, "Uint32Array", codeCount, where + ".codes");
    columns.values.push_back(std::move(v));
  }
  return columns;
}

FilterValue parseValue(const Napi::Value& v, const std::string& name) {
  if (v.IsBigInt()) {
    bool lossless = false;
    const uint64_t u = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) throwInvalid(v.Env(), "Expected a bigint from 0 to 2^64-1 for " + name);
    return FilterValue::ofUint(u);
  }
  if (v.IsNumber()) return FilterValue::ofNumber(v.As<Napi::Number>().DoubleValue());
  if (v.IsBoolean()) return FilterValue::ofBool(v.As<Napi::Boolean>().Value());
  if (v.IsString()) return FilterValue::ofString(v.As<Napi::String>().Utf8Value());
  throwInvalid(v.Env(), "Expected a bigint, number, boolean or string for " + name);
}

std::vector<FilterValue> parseValues(const Napi::Value& v, const std::string& name) {
  std::vector<FilterValue> out;
  if (isTypedArray(v, napi_biguint64_array)) {
    auto a = v.As<Napi::TypedArrayOf<uint64_t>>();
    for (size_t i = 0; i < a.ElementLength(); ++i) out.push_back(FilterValue::ofUint(a[i]));
  } else if (isTypedArray(v, napi_float64_array)) {
    auto a = v.As<Napi::TypedArrayOf<double>>();
    for (size_t i = 0; i < a.ElementLength(); ++i) out.push_back(FilterValue::ofNumber(a[i]));
  } else if (v.IsArray()) {
    Napi::Array a = v.As<Napi::Array>();
    out.reserve(a.Length());
    for (uint32_t i = 0; i < a.Length(); ++i) out.push_back(parseValue(a.Get(i), name + "[" + std::to_string(i) + "]"));
  } else {
    throwInvalid(v.Env(), "Expected an array, BigUint64Array or Float64Array for " + name);
  }
  return out;
}

FilterNode parseFilter(const Napi::Value& v, const std::string& name, size_t depth) {
  Napi::Env env = v.Env();
  // Deeper trees are refused by the core too; stopping here also stops a cyclic object.
  if (depth > kMaxFilterDepth) throwInvalid(env, "Expected a filter at most " + std::to_string(kMaxFilterDepth) + " levels deep for filter");
  if (!v.IsObject()) throwInvalid(env, "Expected a filter node object for " + name);
  Napi::Object o = v.As<Napi::Object>();
  const std::string op = requireString(o.Get("op"), name + ".op");
  FilterNode node;
  if (op == "all" || op == "none") {
    node.op = op == "all" ? FilterOp::All : FilterOp::None;
  } else if (op == "and" || op == "or") {
    node.op = op == "and" ? FilterOp::And : FilterOp::Or;
    const Napi::Value args = o.Get("args");
    if (!args.IsArray()) throwInvalid(env, "Expected an array for " + name + ".args");
    Napi::Array a = args.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); ++i) {
      node.children.push_back(parseFilter(a.Get(i), name + ".args[" + std::to_string(i) + "]", depth + 1));
    }
  } else if (op == "not") {
    node.op = FilterOp::Not;
    node.children.push_back(parseFilter(o.Get("arg"), name + ".arg", depth + 1));
  } else if (op == "rows") {
    node.op = FilterOp::RowIn;
    const Napi::Uint32Array rows = requireUint32(o.Get("rows"), (name + ".rows").c_str());
    node.rows.assign(rows.Data(), rows.Data() + rows.ElementLength());
  } else if (op == "ids") {
    node.op = FilterOp::IdIn;
    const Napi::BigUint64Array ids = requireBigUint64(o.Get("ids"), (name + ".ids").c_str());
    node.ids.assign(ids.Data(), ids.Data() + ids.ElementLength());
  } else {
    static const std::pair<const char*, FilterOp> kLeaves[] = {
        {"exists", FilterOp::Exists}, {"eq", FilterOp::Eq},         {"in", FilterOp::In},
        {"range", FilterOp::Range},   {"has", FilterOp::Has},       {"hasAny", FilterOp::HasAny},
        {"hasAll", FilterOp::HasAll}};
    bool known = false;
    for (const auto& [leafName, leafOp] : kLeaves) {
      if (op == leafName) node.op = leafOp, known = true;
    }
    if (!known) throwInvalid(env, "Expected a filter operator for " + name + ".op but received " + op);
    node.attribute = requireString(o.Get("attr"), name + ".attr");
    if (node.op == FilterOp::Range) {
      const Napi::Value lower = o.Get("lower"), upper = o.Get("upper");
      node.hasLower = !lower.IsUndefined();
      node.hasUpper = !upper.IsUndefined();
      if (node.hasLower) node.lower = parseValue(lower, name + ".lower");
      if (node.hasUpper) node.upper = parseValue(upper, name + ".upper");
      node.lowerInclusive = o.Get("lowerInclusive").ToBoolean().Value();
      node.upperInclusive = o.Get("upperInclusive").ToBoolean().Value();
    } else if (node.op != FilterOp::Exists) {
      node.values = parseValues(o.Get("values"), name + ".values");
    }
  }
  return node;
}

FilterOptions parseOptions(const Napi::CallbackInfo& info) {
  FilterOptions options;
  if (!info[1].IsNumber()) throwInvalid(info.Env(), "Expected a number for rowListBelow");
  options.rowListBelow = info[1].As<Napi::Number>().DoubleValue();  // the core checks the range
  options.threads = static_cast<unsigned>(requireCount(info[2], "threads"));
  return options;
}

Napi::Object resultObject(Napi::Env env, const FilterResult& result) {
  auto bits = Napi::Uint32Array::New(env, result.bits.size());
  if (!result.bits.empty()) std::memcpy(bits.Data(), result.bits.data(), result.bits.size() * sizeof(uint32_t));
  Napi::Object out = Napi::Object::New(env);
  out.Set("rowCount", Napi::Number::New(env, static_cast<double>(result.rowCount)));
  out.Set("count", Napi::Number::New(env, static_cast<double>(result.count)));
  out.Set("bits", bits);
  if (result.hasRows) {
    auto rows = Napi::Uint32Array::New(env, result.rows.size());
    if (!result.rows.empty()) std::memcpy(rows.Data(), result.rows.data(), result.rows.size() * sizeof(uint32_t));
    out.Set("rows", rows);
  }
  return out;
}

// A compile off the event loop; the filter was converted on the main thread.
class CompileWorker : public PromiseWorker {
 public:
  CompileWorker(Napi::Env env, std::shared_ptr<AttributeTable> table, FilterNode filter, FilterOptions options)
      : PromiseWorker(env), table_(std::move(table)), filter_(std::move(filter)), options_(std::move(options)) {}

 protected:
  void Run() override { result_ = compileFilter(*table_, filter_, options_); }
  Napi::Value Resolve(Napi::Env env) override { return resultObject(env, result_); }

 private:
  std::shared_ptr<AttributeTable> table_;
  FilterNode filter_;
  FilterOptions options_;
  FilterResult result_;
};

// The tag of AttributeTable objects, so that attributeTableOf never unwraps another class's.
const napi_type_tag kTableTag = {0x6562726978617474ull, 0x722d7461626c6573ull};
// The tag of the handles of tables read from index files (setOpenedAttributes).
const napi_type_tag kOpenedTableTag = {0x6562726978617474ull, 0x722d6f70656e6564ull};

bool parseType(const std::string& name, AttributeType* type) {
  static const std::pair<const char*, AttributeType> kTypes[] = {{"uint", AttributeType::Uint},
                                                                 {"number", AttributeType::Number},
                                                                 {"bool", AttributeType::Bool},
                                                                 {"category", AttributeType::Category}};
  for (const auto& [typeName, t] : kTypes) {
    if (name == typeName) {
      *type = t;
      return true;
    }
  }
  return false;
}

class AttributeTableWrap : public Napi::ObjectWrap<AttributeTableWrap> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "AttributeTable",
                       {
                           InstanceMethod<&AttributeTableWrap::append>("append"),
                           InstanceMethod<&AttributeTableWrap::setRows>("setRows"),
                           InstanceMethod<&AttributeTableWrap::compile>("compile"),
                           InstanceMethod<&AttributeTableWrap::compileAsync>("compileAsync"),
                           InstanceMethod<&AttributeTableWrap::size>("size"),
                           InstanceMethod<&AttributeTableWrap::memoryBytes>("memoryBytes"),
                           InstanceMethod<&AttributeTableWrap::dispose>("dispose"),
                       });
  }

  // new AttributeTable([{ name, type, multi }]), or new AttributeTable(handle) with the handle
  // of a table read from an index file (setOpenedAttributes).
  explicit AttributeTableWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AttributeTableWrap>(info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      if (info[0].IsExternal()) {
        table_ = takeOpened<AttributeTable>(env, info[0], kOpenedTableTag);
        if (napi_type_tag_object(env, info.This(), &kTableTag) != napi_ok) throw Napi::Error::New(env, "Cannot tag the table");
        return;
      }
      if (!info[0].IsArray()) throwInvalid(env, "Expected an array of attribute specs for schema");
      Napi::Array specs = info[0].As<Napi::Array>();
      std::vector<AttributeSpec> schema;
      for (uint32_t i = 0; i < specs.Length(); ++i) {
        const std::string where = "schema[" + std::to_string(i) + "]";
        const Napi::Value s = specs.Get(i);
        if (!s.IsObject()) throwInvalid(env, "Expected an object for " + where);
        Napi::Object o = s.As<Napi::Object>();
        AttributeSpec spec;
        spec.name = requireString(o.Get("name"), where + ".name");
        const std::string type = requireString(o.Get("type"), where + ".type");
        if (!parseType(type, &spec.type)) {
          throwInvalid(env, "Expected 'uint', 'number', 'bool' or 'category' for " + where + ".type but received " + type);
        }
        spec.multi = o.Get("multi").ToBoolean().Value();
        schema.push_back(std::move(spec));
      }
      table_ = std::make_shared<AttributeTable>(std::move(schema));
      if (napi_type_tag_object(env, info.This(), &kTableTag) != napi_ok) throw Napi::Error::New(env, "Cannot tag the table");
    })
  }

  // The table behind a JS object made by this class (attributeTableOf).
  static std::shared_ptr<AttributeTable> tableOf(const Napi::Value& value) {
    Napi::Env env = value.Env();
    bool ours = false;
    if (!value.IsObject() || napi_check_object_type_tag(env, value, &kTableTag, &ours) != napi_ok || !ours) {
      throwInvalid(env, "Expected an AttributeTable for attributes");
    }
    return Unwrap(value.As<Napi::Object>())->live(env);
  }

 private:
  std::shared_ptr<AttributeTable> live(Napi::Env env) {
    if (!table_) throw makeError(env, {"EBRIX_DISPOSED", "The attribute table has been disposed"});
    return table_;
  }

  // append(count, columns)
  Napi::Value append(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto table = live(env);
      const size_t count = requireCount(info[0], "count");
      const Columns columns = parseColumns(info[1], count);
      table->append(count, columns.values);
      return env.Undefined();
    })
  }

  // setRows(rows, columns)
  Napi::Value setRows(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto table = live(env);
      const Napi::Uint32Array rows = requireUint32(info[0], "rows");
      const Columns columns = parseColumns(info[1], rows.ElementLength());
      table->setRows(rows.Data(), rows.ElementLength(), columns.values);
      return env.Undefined();
    })
  }

  // compile(node, rowListBelow, threads)
  Napi::Value compile(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto table = live(env);
      const FilterNode filter = parseFilter(info[0], "filter", 0);
      return resultObject(env, compileFilter(*table, filter, parseOptions(info)));
    })
  }

  Napi::Value compileAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EBRIX_BOUNDARY(env, {
      auto table = live(env);
      FilterNode filter = parseFilter(info[0], "filter", 0);
      return (new CompileWorker(env, table, std::move(filter), parseOptions(info)))->Start();
    })
  }

  Napi::Value size(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(live(info.Env())->rowCount()));
  }
  Napi::Value memoryBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(live(info.Env())->memoryBytes()));
  }
  // Drops this handle's reference; compiles in flight keep the table until they end.
  Napi::Value dispose(const Napi::CallbackInfo& info) {
    table_.reset();
    return info.Env().Undefined();
  }

  std::shared_ptr<AttributeTable> table_;
};

}  // namespace

void initAttributeTable(Napi::Env env, Napi::Object exports) {
  exports.Set("AttributeTable", AttributeTableWrap::define(env));
}

std::shared_ptr<AttributeTable> attributeTableOf(const Napi::Value& value) { return AttributeTableWrap::tableOf(value); }

std::shared_ptr<const AttributeTable> optionalAttributeTable(const Napi::Value& value) {
  if (value.IsUndefined()) return nullptr;
  return attributeTableOf(value);
}

void setOpenedAttributes(Napi::Env env, Napi::Object out, std::shared_ptr<AttributeTable> table) {
  if (!table) return;
  const auto& schema = table->schema();
  Napi::Array specs = Napi::Array::New(env, schema.size());
  for (size_t i = 0; i < schema.size(); ++i) {
    Napi::Object spec = Napi::Object::New(env);
    spec.Set("name", Napi::String::New(env, schema[i].name));
    spec.Set("type", Napi::String::New(env, attributeTypeName(schema[i].type)));
    spec.Set("multi", Napi::Boolean::New(env, schema[i].multi));
    specs.Set(static_cast<uint32_t>(i), spec);
  }
  out.Set("attributeSchema", specs);
  out.Set("attributes", openedHandle(env, std::move(table), kOpenedTableTag));
}

FilterNode parseFilterNode(const Napi::Value& value) { return parseFilter(value, "filter", 0); }

std::shared_ptr<const OwnedColumns> OwnedColumns::parse(const Napi::Value& arg, size_t count) {
  const Columns borrowed = parseColumns(arg, count);
  auto owned = std::make_shared<OwnedColumns>();
  for (const AttributeValues& v : borrowed.values) {
    auto column = std::make_unique<Column>();
    AttributeValues copy;
    copy.name = v.name;
    const auto take = [](auto& into, const auto* from, size_t n) {
      if (from == nullptr) return static_cast<decltype(from)>(nullptr);
      into.assign(from, from + n);
      return static_cast<decltype(from)>(into.data());
    };
    copy.present = take(column->present, v.present, count);
    copy.uint32s = take(column->uint32s, v.uint32s, count);
    copy.uint64s = take(column->uint64s, v.uint64s, count);
    copy.numbers = take(column->numbers, v.numbers, count);
    copy.bools = take(column->bools, v.bools, count);
    copy.offsets = take(column->offsets, v.offsets, count + 1);
    copy.codes = take(column->codes, v.codes, v.offsets != nullptr ? v.offsets[count] : count);
    if (v.dictionary != nullptr) {
      column->dictionary.assign(v.dictionary, v.dictionary + v.dictionarySize);
      copy.dictionary = column->dictionary.data();
      copy.dictionarySize = column->dictionary.size();
    }
    owned->columns_.push_back(std::move(column));
    owned->values_.push_back(std::move(copy));
  }
  return owned;
}

RowRecords RowRecords::parse(const Napi::Value& table, const Napi::Value& columns, size_t count) {
  RowRecords records;
  if (table.IsUndefined() && columns.IsUndefined()) return records;
  records.table = attributeTableOf(table);
  records.columns = OwnedColumns::parse(columns, count);
  records.count = count;
  return records;
}

WriteHook RowRecords::hook() const {
  if (!table) return {};
  return [table = table, columns = columns, count = count](uint64_t firstRow) {
    // The index numbers rows and the table holds one record per row: the two move together,
    // under the index's writer lock, so the table's next row is the write's first.
    if (table->rowCount() != firstRow) {
      throw Error(ErrorCode::Internal, "The attribute table holds " + std::to_string(table->rowCount()) +
                                           " rows but the index numbers " + std::to_string(firstRow));
    }
    table->append(count, columns->values());
  };
}

SearchFilter SearchFilter::parse(const Napi::Value& node, const Napi::Value& table, unsigned threads) {
  SearchFilter filter;
  if (node.IsUndefined() && table.IsUndefined()) return filter;
  filter.table = attributeTableOf(table);
  filter.node = std::make_shared<const FilterNode>(parseFilterNode(node));
  filter.threads = threads;
  return filter;
}

const RowFilter* SearchFilter::rowFilter() {
  if (!table) return nullptr;
  if (!fn_) {
    fn_ = [table = table, node = node, threads = threads](const RowOfId& rowOfId) {
      FilterOptions options;
      options.rowListBelow = 0;  // the bitset is all a search needs
      options.idToRow = rowOfId;
      options.threads = threads;
      return compileFilter(*table, *node, options).bits;
    };
  }
  return &fn_;
}

}  // namespace ebrix::binding
