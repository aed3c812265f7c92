/**
 * Attribute schemas and filter expressions: the public types, their validation, and the
 * conversion to the tree the native compiler takes (native/core/filter.h).
 *
 * A filter is a plain object whose keys are clauses, all of which must hold (an implicit
 * `and`; `{}` selects every row):
 *
 * - `attribute: value` — the attribute equals the value (`{ remote: true }`, `{ level: 3 }`,
 *   `{ country: 'de' }`); on a multi-valued category, the row's set contains it.
 * - `attribute: { ...operators }` — every operator must hold:
 *   `eq`, `in` (a non-empty array: equals one of them; on a multi-valued category, contains
 *   one of them), `gt` / `gte` / `lt` / `lte` (uint and number; at most one lower and one
 *   upper bound), `has` / `hasAny` / `hasAll` (category: the row's set contains the string /
 *   any / all of the strings; a single-valued row is a set of one), `exists` (true: the row has
 *   a value; false: it has none).
 * - `and: [filters]` (every one; `[]` selects every row), `or: [filters]` (at least one; `[]`
 *   selects none), `not: filter`.
 * - `id: { in: ids }` / `id: { notIn: ids }` — rows of the given ids (allow list) / all other
 *   rows (deny list). Needs `idToRow` when compiling.
 *
 * So `and`, `or`, `not` and `id` cannot be attribute names.
 *
 * Values are typed by the schema: uint takes non-negative safe integers or bigints below
 * 2^64, number takes numbers other than NaN (±Infinity is fine; 0 equals -0), bool takes
 * booleans, category takes strings. A string no row has simply matches nothing.
 *
 * Missing values: a row without a value for an attribute fails every condition on that
 * attribute (`exists: false` aside), and `not` is the plain complement. So
 * `{ not: { level: 3 } }` selects the rows without a level too, and `{ not: { level: { lt: 3 } } }`
 * is not `{ level: { gte: 3 } }` on them; add `level: { exists: true }` to exclude them.
 */
import { invalid } from '../validate.js';
import { type NativeAttributeSpec, type NativeFilterNode } from '../native.js';
import { NO_ID, toIdArray, type Ids } from './ids.js';

export type AttributeType = 'uint' | 'number' | 'bool' | 'category';
export const ATTRIBUTE_TYPES: readonly AttributeType[] = ['uint', 'number', 'bool', 'category'];

/**
 * An attribute: its type, or `{ type, multi }` where `multi: true` (category only) makes each
 * row's value a set of strings (e.g. skills).
 */
export type AttributeSpec = AttributeType | { readonly type: AttributeType; readonly multi?: boolean };

/** Attribute names to specs, e.g. `{ level: 'uint', skills: { type: 'category', multi: true } }`. */
export type AttributeSchema = Readonly<Record<string, AttributeSpec>>;

/** A schema entry with everything spelled out. */
export interface AttributeColumn {
  readonly name: string;
  readonly type: AttributeType;
  readonly multi: boolean;
}

/** A row's attribute values, by name; null, undefined or an absent key is a missing value. */
export type AttributeRecord = Readonly<Record<string, AttributeValue | null | undefined>>;
/** uint: number | bigint; number: number; bool: boolean; category: string, or string[] when multi. */
export type AttributeValue = number | bigint | boolean | string | readonly string[];

export type FilterScalar = number | bigint | boolean | string;

/** The operators on one attribute; all given ones must hold. */
export interface AttributeCondition {
  readonly eq?: FilterScalar;
  readonly in?: readonly FilterScalar[];
  readonly gt?: number | bigint;
  readonly gte?: number | bigint;
  readonly lt?: number | bigint;
  readonly lte?: number | bigint;
  readonly has?: string;
  readonly hasAny?: readonly string[];
  readonly hasAll?: readonly string[];
  readonly exists?: boolean;
}

/** Allow (`in`) or deny (`notIn`) lists of ids. */
export interface IdCondition {
  readonly in?: Ids;
  readonly notIn?: Ids;
}

export interface LogicalFilter {
  readonly and?: readonly Filter[];
  readonly or?: readonly Filter[];
  readonly not?: Filter;
  readonly id?: IdCondition;
}

export type AttributeFilter = { readonly [attribute: string]: FilterScalar | AttributeCondition };

export type Filter = LogicalFilter | AttributeFilter;

/** Maps an id to its row (in add order), or undefined for an unknown id. */
export type IdToRow = ReadonlyMap<bigint, number> | ((id: bigint) => number | undefined);

const RESERVED = ['and', 'or', 'not', 'id'] as const;
/** Nesting of filter objects; each level may add two native levels (kMaxFilterDepth = 64). */
const MAX_DEPTH = 30;
const MAX_UINT = 0xffff_ffff_ffff_ffffn;

const OPERATORS: Record<AttributeType, readonly string[]> = {
  uint: ['eq', 'in', 'gt', 'gte', 'lt', 'lte', 'exists'],
  number: ['eq', 'in', 'gt', 'gte', 'lt', 'lte', 'exists'],
  bool: ['eq', 'in', 'exists'],
  category: ['eq', 'in', 'has', 'hasAny', 'hasAll', 'exists'],
};

/** Checks a schema and spells it out, in the schema's key order. */
export function normalizeSchema(schema: unknown): AttributeColumn[] {
  if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) {
    throw invalid('an object of attribute specs', 'schema', schema);
  }
  const columns: AttributeColumn[] = [];
  for (const [name, spec] of Object.entries(schema as Record<string, unknown>)) {
    const where = `schema.${name}`;
    if (name.length === 0) throw invalid('a non-empty attribute name', 'a key of schema', name);
    if ((RESERVED as readonly string[]).includes(name)) {
      throw invalid(`an attribute name other than ${RESERVED.join(', ')} (they are filter keywords)`, 'a key of schema', name);
    }
    let type: unknown = spec;
    let multi: unknown = false;
    if (spec !== null && typeof spec === 'object' && !Array.isArray(spec)) {
      const s = spec as { type?: unknown; multi?: unknown };
      for (const key of Object.keys(s)) {
        if (key !== 'type' && key !== 'multi') throw invalid("'type' or 'multi'", `a key of ${where}`, key);
      }
      type = s.type;
      multi = s.multi ?? false;
    }
    if (typeof type !== 'string' || !(ATTRIBUTE_TYPES as readonly string[]).includes(type)) {
      throw invalid(`one of ${ATTRIBUTE_TYPES.map((t) => `'${t}'`).join(', ')}`, typeof spec === 'object' ? `${where}.type` : where, type);
    }
    if (typeof multi !== 'boolean') throw invalid('a boolean', `${where}.multi`, multi);
    if (multi && type !== 'category') throw invalid("type 'category' for a multi-valued attribute", `${where}.type`, type);
    columns.push({ name, type: type as AttributeType, multi });
  }
  return columns;
}

export function toNativeSchema(columns: readonly AttributeColumn[]): NativeAttributeSpec[] {
  return columns.map(({ name, type, multi }) => ({ name, type, multi }));
}

// --- values --------------------------------------------------------------------------------

/** A uint value as a bigint, or undefined when `value` is not one. */
export function toUint(value: unknown): bigint | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value >= 0 ? BigInt(value) : undefined;
  if (typeof value === 'bigint') return value >= 0n && value <= MAX_UINT ? value : undefined;
  return undefined;
}

const UINT_WHAT = 'an unsigned integer (a non-negative safe integer, or a bigint below 2^64)';

function describeType(column: AttributeColumn): string {
  return column.multi ? 'multi-valued category' : column.type;
}

/** A filter value for `column`, checked: a bigint (uint), number, boolean or string. */
function filterValue(column: AttributeColumn, value: unknown, name: string): bigint | number | boolean | string {
  switch (column.type) {
    case 'uint': {
      const u = toUint(value);
      if (u === undefined) throw invalid(UINT_WHAT, name, value);
      return u;
    }
    case 'number':
      if (typeof value !== 'number' || Number.isNaN(value)) throw invalid('a number that is not NaN', name, value);
      return value;
    case 'bool':
      if (typeof value !== 'boolean') throw invalid('a boolean', name, value);
      return value;
    case 'category':
      if (typeof value !== 'string') throw invalid('a string', name, value);
      return value;
  }
}

function valueList(column: AttributeColumn, values: unknown[], name: string): BigUint64Array | Float64Array | boolean[] | string[] {
  const checked: (bigint | number | boolean | string)[] = [];
  for (let i = 0; i < values.length; i++) checked.push(filterValue(column, values[i], `${name}[${i}]`));
  if (column.type === 'uint') return BigUint64Array.from(checked as bigint[]);
  if (column.type === 'number') return Float64Array.from(checked as number[]);
  return checked as boolean[] | string[];
}

/** One value as a list of one, named as given (not `name[0]`). */
function singleValue(column: AttributeColumn, value: unknown, name: string): BigUint64Array | Float64Array | boolean[] | string[] {
  const v = filterValue(column, value, name);
  if (column.type === 'uint') return BigUint64Array.of(v as bigint);
  if (column.type === 'number') return Float64Array.of(v as number);
  return [v] as boolean[] | string[];
}

function nonEmptyArray(value: unknown, name: string): unknown[] {
  if (!Array.isArray(value) || value.length === 0) throw invalid('a non-empty array', name, value);
  return value;
}

// --- filters -------------------------------------------------------------------------------

// A Map, Date or typed array has no own keys and would read as `{}`, which selects every row.
function isPlainObject(value: object): boolean {
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

export interface FilterContext {
  columns: ReadonlyMap<string, AttributeColumn>;
  idToRow: IdToRow | undefined;
  /**
   * Leave ids as ids (`{ op: 'ids' }`) for an index search to map on the state it reads,
   * instead of mapping them with idToRow here.
   */
  nativeIds?: boolean;
}

/**
 * Checks `filter` against the schema and builds the native tree; ids are mapped to rows with
 * `idToRow` here. Throws InvalidArgumentError naming the path of the offending part
 * (`filter.and[1].level.gte`).
 */
export function toNativeFilter(filter: unknown, context: FilterContext, name = 'filter', depth = 0): NativeFilterNode {
  if (depth > MAX_DEPTH) throw invalid(`a filter nested at most ${MAX_DEPTH} levels deep`, name, 'a deeper one');
  if (filter === null || typeof filter !== 'object' || Array.isArray(filter) || !isPlainObject(filter)) {
    throw invalid('a filter object', name, filter);
  }
  const clauses: NativeFilterNode[] = [];
  for (const [key, value] of Object.entries(filter as Record<string, unknown>)) {
    const where = `${name}.${key}`;
    switch (key) {
      case 'and':
      case 'or': {
        if (!Array.isArray(value)) throw invalid('an array of filters', where, value);
        const args: NativeFilterNode[] = [];
        // A plain loop, not map: a hole in a sparse array must fail, not vanish.
        for (let i = 0; i < value.length; i++) args.push(toNativeFilter(value[i], context, `${where}[${i}]`, depth + 1));
        clauses.push({ op: key, args });
        break;
      }
      case 'not':
        clauses.push({ op: 'not', arg: toNativeFilter(value, context, where, depth + 1) });
        break;
      case 'id':
        clauses.push(...idClauses(value, context, where));
        break;
      default: {
        const column = context.columns.get(key);
        if (column === undefined) {
          const names = [...context.columns.keys()].join(', ') || 'none';
          throw invalid(`an attribute of the schema (${names}) or one of ${RESERVED.join(', ')}`, `a key of ${name}`, key);
        }
        clauses.push(...attributeClauses(column, value, where));
      }
    }
  }
  return clauses.length === 1 ? clauses[0]! : { op: 'and', args: clauses };
}

function attributeClauses(column: AttributeColumn, condition: unknown, where: string): NativeFilterNode[] {
  const attr = column.name;
  if (typeof condition !== 'object' || condition === null) {
    if (condition === undefined || condition === null) {
      throw invalid(`a value or a condition object (use { exists: false } for rows without ${attr})`, where, condition);
    }
    return [{ op: 'eq', attr, values: singleValue(column, condition, where) } as NativeFilterNode];
  }
  if (Array.isArray(condition) || ArrayBuffer.isView(condition)) {
    throw invalid('a value or a condition object (use { in: [...] } for a list)', where, condition);
  }
  const operators = OPERATORS[column.type];
  const entries = Object.entries(condition as Record<string, unknown>);
  if (entries.length === 0) throw invalid(`a condition with an operator (${operators.join(', ')})`, where, condition);
  const clauses: NativeFilterNode[] = [];
  let lower: { value: bigint | number; inclusive: boolean } | undefined;
  let upper: { value: bigint | number; inclusive: boolean } | undefined;
  for (const [op, value] of entries) {
    const name = `${where}.${op}`;
    if (!operators.includes(op)) {
      throw invalid(`one of ${operators.join(', ')} (the operators of ${describeType(column)} attribute ${attr})`, `a key of ${where}`, op);
    }
    switch (op) {
      case 'eq':
      case 'has':
        clauses.push({ op: op, attr, values: singleValue(column, value, name) } as NativeFilterNode);
        break;
      case 'in':
      case 'hasAny':
      case 'hasAll':
        clauses.push({ op: op, attr, values: valueList(column, nonEmptyArray(value, name), name) } as NativeFilterNode);
        break;
      case 'gt':
      case 'gte':
        if (lower !== undefined) throw invalid('at most one of gt and gte', where, condition);
        lower = { value: filterValue(column, value, name) as bigint | number, inclusive: op === 'gte' };
        break;
      case 'lt':
      case 'lte':
        if (upper !== undefined) throw invalid('at most one of lt and lte', where, condition);
        upper = { value: filterValue(column, value, name) as bigint | number, inclusive: op === 'lte' };
        break;
      case 'exists':
        if (typeof value !== 'boolean') throw invalid('a boolean', name, value);
        clauses.push(value ? { op: 'exists', attr } : { op: 'not', arg: { op: 'exists', attr } });
        break;
    }
  }
  if (lower !== undefined || upper !== undefined) {
    clauses.push({
      op: 'range',
      attr,
      ...(lower !== undefined ? { lower: lower.value } : {}),
      lowerInclusive: lower?.inclusive ?? true,
      ...(upper !== undefined ? { upper: upper.value } : {}),
      upperInclusive: upper?.inclusive ?? true,
    });
  }
  return clauses;
}

function idClauses(condition: unknown, context: FilterContext, where: string): NativeFilterNode[] {
  if (condition === null || typeof condition !== 'object' || Array.isArray(condition)) {
    throw invalid('an object with in and/or notIn', where, condition);
  }
  const entries = Object.entries(condition as Record<string, unknown>);
  if (entries.length === 0) throw invalid('an object with in and/or notIn', where, condition);
  const clauses: NativeFilterNode[] = [];
  for (const [op, ids] of entries) {
    if (op !== 'in' && op !== 'notIn') throw invalid("'in' or 'notIn'", `a key of ${where}`, op);
    const idArray = toIdArray(ids, `${where}.${op}`);
    const node: NativeFilterNode = context.nativeIds
      ? { op: 'ids', ids: idArray }
      : { op: 'rows', rows: idsToRows(idArray, context.idToRow, `${where}.${op}`) };
    clauses.push(op === 'in' ? node : { op: 'not', arg: node });
  }
  return clauses;
}

function idsToRows(ids: BigUint64Array, idToRow: IdToRow | undefined, where: string): Uint32Array {
  if (idToRow === undefined) {
    throw invalid(`a Map or a function from id to row (${where} needs one)`, 'options.idToRow', idToRow);
  }
  const lookup = typeof idToRow === 'function' ? idToRow : (id: bigint) => idToRow.get(id);
  const rows: number[] = [];
  for (const id of ids) {
    if (id === NO_ID) continue;
    const row = lookup(id);
    if (row === undefined) continue;
    if (!Number.isInteger(row) || row < 0 || row > 0xffff_ffff) {
      throw invalid('a row from 0 to 2^32-1 or undefined', `options.idToRow(${id}n)`, row);
    }
    rows.push(row);
  }
  return Uint32Array.from(rows);
}
