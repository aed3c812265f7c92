/**
 * Attributes: typed, columnar attributes of an index's rows, held in native memory, and
 * filters compiled natively against them into allow bitsets for `search(q, k, { allow })`.
 *
 * Rows are numbered as an index numbers its vectors: row r is the r-th vector added, so
 * appending one record per added vector, in the same order, keeps the two aligned.
 *
 * ```ts
 * const attributes = new Attributes({ level: 'uint', skills: { type: 'category', multi: true }, remote: 'bool' });
 * attributes.append([{ level: 3, skills: ['go', 'rust'], remote: true }, { level: 1 }]);
 * const { bits } = await attributes.compile({ level: { gte: 2 }, skills: { hasAny: ['rust'] } });
 * const hits = await index.search(query, 10, { allow: bits });
 * ```
 *
 * The filter language and the meaning of missing values are documented in ./filter.ts.
 */
import { DisposedError, awaitNative, callNative } from '../errors.js';
import {
  native,
  type NativeAttributeColumn,
  type NativeAttributeTable,
  type NativeColumns,
  type NativeAttributeSpec,
  type NativeFilterNode,
  type NativeFilterResult,
  type NativeOpenedHandle,
} from '../native.js';
import { invalid, requirePositiveInteger } from '../validate.js';
import {
  normalizeSchema,
  toNativeFilter,
  toNativeSchema,
  toUint,
  type AttributeColumn,
  type AttributeRecord,
  type AttributeSchema,
  type Filter,
  type IdToRow,
} from './filter.js';

export interface CompileFilterOptions {
  /** Maps the ids of `id: { in | notIn }` conditions to rows; required when the filter has one. */
  idToRow?: IdToRow;
  /**
   * `rows` (the selected rows, ascending) comes with the bitset when at most this fraction
   * of the rows is selected: 0 never, 1 always. Default 0.01.
   */
  rowListBelow?: number;
  /** Native threads evaluating chunks of 65,536 rows (default: the native pool's size, see `configure({ threads })`). */
  threads?: number;
}

/** A compiled filter over the rows the table held when it was compiled. */
export interface CompiledFilter {
  /**
   * Bit `r & 31` of word `r >> 5` is set when row r passes; (rowCount + 31) >> 5 words. Pass
   * it as `allow` to an index's search: rows added after the compile are not allowed.
   */
  readonly bits: Uint32Array;
  /** Rows selected. */
  readonly count: number;
  /** Rows the table held when the filter was evaluated. */
  readonly rowCount: number;
  /** The selected rows in ascending order, when few enough were selected (see rowListBelow). */
  readonly rows?: Uint32Array;
}

const MAX_THREADS = 4096;
const DEFAULT_ROW_LIST_BELOW = 0.01;

/**
 * What an index that keeps attributes with its rows (lib/index/row-attributes.ts) needs of
 * its table: the native table, records converted to native columns (validated, throwing as
 * `append` does), and filters converted for the index's search to evaluate on its own state
 * (ids left for the index to map). Not part of the public API.
 */
export interface AttributesInternals {
  readonly table: NativeAttributeTable;
  columns(records: readonly AttributeRecord[], name: string): NativeColumns;
  filter(filter: Filter): NativeFilterNode;
}

let internalsOf: (attributes: Attributes) => AttributesInternals;

/** Set while `adoptAttributes` constructs: the table read from an index file to take. */
let adopting: NativeOpenedHandle | undefined;

/**
 * The Attributes of a table an index file held (the schema and table handle its native open
 * returned). Not part of the public API.
 */
export function adoptAttributes(specs: readonly NativeAttributeSpec[], handle: NativeOpenedHandle): Attributes {
  // fromEntries defines own properties, so that no attribute name (not even __proto__) is lost.
  const schema = Object.fromEntries(specs.map((s) => [s.name, s.multi ? { type: s.type, multi: true } : s.type]));
  adopting = handle;
  try {
    return new Attributes(schema);
  } finally {
    adopting = undefined;
  }
}

/** See AttributesInternals. */
export function attributesInternals(attributes: Attributes): AttributesInternals {
  return internalsOf(attributes);
}

interface PreparedCompile {
  table: NativeAttributeTable;
  node: NativeFilterNode;
  rowListBelow: number;
  threads: number;
}

export class Attributes implements Disposable {
  /** The schema, spelled out, in its key order. */
  readonly schema: readonly AttributeColumn[];
  readonly #columns: ReadonlyMap<string, AttributeColumn>;
  #native: NativeAttributeTable | undefined;

  static {
    internalsOf = (attributes) => ({
      table: attributes.#live(),
      columns: (records, name) => toColumns(records, attributes.schema, attributes.#columns, name),
      filter: (filter) => toNativeFilter(filter, { columns: attributes.#columns, idToRow: undefined, nativeIds: true }),
    });
  }

  constructor(schema: AttributeSchema) {
    this.schema = Object.freeze(normalizeSchema(schema).map((column) => Object.freeze(column)));
    this.#columns = new Map(this.schema.map((column) => [column.name, column]));
    const Native = native().AttributeTable;
    const specs = toNativeSchema(this.schema);
    const handle = adopting;
    adopting = undefined;
    this.#native = callNative(() => new Native(handle ?? specs));
  }

  /** Rows held. */
  get size(): number {
    return this.#live().size();
  }

  get disposed(): boolean {
    return this.#native === undefined;
  }

  /** Bytes of native memory held: column chunks (capacity included) and category dictionaries. */
  memoryBytes(): number {
    return this.#live().memoryBytes();
  }

  /**
   * Appends one row per record, in order. All-or-nothing: an unknown attribute or a value of
   * the wrong type (InvalidArgumentError naming `records[i].name`) leaves the table unchanged.
   * Runs on the calling thread (converting records to columns costs more than storing them).
   */
  append(records: readonly AttributeRecord[]): void {
    this.prepareAppend(records)();
  }

  /**
   * `append` in two steps, for an index that must add vectors and their attributes together:
   * validates and converts the records now (throwing as `append` does), and returns the
   * function that appends them, which fails only on memory exhaustion.
   */
  prepareAppend(records: readonly AttributeRecord[]): () => void {
    const table = this.#live();
    const columns = toColumns(records, this.schema, this.#columns, 'records');
    return () => callNative(() => table.append(records.length, columns));
  }

  /**
   * Replaces whole rows (an upsert): row `rows[i]` takes the values of `records[i]`, and
   * attributes a record lacks become missing on its row. Rows must be distinct and below
   * `size`. Each call copies the 65,536-row chunks it touches (per attribute holding values
   * there), so batch updates rather than calling it row by row.
   */
  setRows(rows: readonly number[] | Uint32Array, records: readonly AttributeRecord[]): void {
    const table = this.#live();
    const rowArray = toRowArray(rows);
    if (!Array.isArray(records) || records.length !== rowArray.length) {
      throw invalid(`an array of ${rowArray.length} records (one per row)`, 'records', records);
    }
    const columns = toColumns(records, this.schema, this.#columns, 'records');
    callNative(() => table.setRows(rowArray, columns));
  }

  /**
   * Compiles `filter` to an allow bitset over the current rows, off the event loop. Appends
   * and setRows may run meanwhile: the filter sees the table as it was when compiling began.
   */
  async compile(filter: Filter, options: CompileFilterOptions = {}): Promise<CompiledFilter> {
    const p = this.#prepare(filter, options);
    return toCompiled(await awaitNative(p.table.compileAsync(p.node, p.rowListBelow, p.threads)));
  }

  /** `compile` on the calling thread, for small tables (about 1 ms per million rows and leaf). */
  compileSync(filter: Filter, options: CompileFilterOptions = {}): CompiledFilter {
    const p = this.#prepare(filter, options);
    return toCompiled(callNative(() => p.table.compile(p.node, p.rowListBelow, p.threads)));
  }

  /** Releases the native memory; compiles in flight finish first. Idempotent. */
  dispose(): void {
    this.#native?.dispose();
    this.#native = undefined;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  #live(): NativeAttributeTable {
    if (this.#native === undefined) throw new DisposedError('attribute table');
    return this.#native;
  }

  #prepare(filter: Filter, options: CompileFilterOptions): PreparedCompile {
    const table = this.#live();
    if (options === null || typeof options !== 'object') throw invalid('an options object', 'options', options);
    const { idToRow, rowListBelow = DEFAULT_ROW_LIST_BELOW, threads } = options;
    if (idToRow !== undefined && typeof idToRow !== 'function' && typeof (idToRow as { get?: unknown }).get !== 'function') {
      throw invalid('a Map or a function', 'options.idToRow', idToRow);
    }
    if (typeof rowListBelow !== 'number' || !(rowListBelow >= 0 && rowListBelow <= 1)) {
      throw invalid('a fraction from 0 to 1', 'options.rowListBelow', rowListBelow);
    }
    const threadCount = threads === undefined ? 0 : requirePositiveInteger(threads, 'options.threads', MAX_THREADS);
    const node = toNativeFilter(filter, { columns: this.#columns, idToRow });
    return { table, node, rowListBelow, threads: threadCount };
  }
}

function toCompiled(out: NativeFilterResult): CompiledFilter {
  const compiled: { bits: Uint32Array; count: number; rowCount: number; rows?: Uint32Array } = {
    bits: out.bits,
    count: out.count,
    rowCount: out.rowCount,
  };
  if (out.rows !== undefined) compiled.rows = out.rows;
  return compiled;
}

function toRowArray(rows: unknown): Uint32Array {
  if (rows instanceof Uint32Array) return rows;
  if (!Array.isArray(rows)) throw invalid('a number[] or Uint32Array', 'rows', rows);
  const out = new Uint32Array(rows.length);
  for (let i = 0; i < rows.length; i++) {
    const row: unknown = rows[i];
    if (typeof row !== 'number' || !Number.isInteger(row) || row < 0 || row > 0xffff_ffff) {
      throw invalid('a row from 0 to 2^32-1', `rows[${i}]`, row);
    }
    out[i] = row;
  }
  return out;
}

// --- records to columns --------------------------------------------------------------------

type Row = Readonly<Record<string, unknown>>;

/**
 * Checks records against the schema and turns them into the native columns: typed arrays,
 * and for categories the batch's distinct strings plus codes into them. An attribute no
 * record has a value for is left out (the native table treats it as missing on every row).
 */
function toColumns(
  records: unknown,
  schema: readonly AttributeColumn[],
  columns: ReadonlyMap<string, AttributeColumn>,
  name: string,
): Record<string, NativeAttributeColumn> {
  if (!Array.isArray(records)) throw invalid('an array of records', name, records);
  const rows = records as unknown[];
  for (let i = 0; i < rows.length; i++) {
    const record = rows[i];
    if (record === null || typeof record !== 'object' || Array.isArray(record)) {
      throw invalid('a record object', `${name}[${i}]`, record);
    }
    for (const key of Object.keys(record)) {
      if (!columns.has(key)) {
        const names = schema.map((c) => c.name).join(', ') || 'none';
        throw invalid(`an attribute of the schema (${names})`, `a key of ${name}[${i}]`, key);
      }
    }
  }
  const out: Record<string, NativeAttributeColumn> = {};
  for (const column of schema) {
    const built = buildColumn(column, rows as Row[], name);
    if (built !== undefined) out[column.name] = built;
  }
  return out;
}

function buildColumn(column: AttributeColumn, rows: readonly Row[], name: string): NativeAttributeColumn | undefined {
  if (column.multi) return buildMulti(column, rows, name);
  const n = rows.length;
  const key = column.name;
  let present: Uint8Array | undefined;
  let any = false;
  const missing = (i: number) => {
    present ??= new Uint8Array(n).fill(1);
    present[i] = 0;
  };
  const where = (i: number) => `${name}[${i}].${key}`;
  switch (column.type) {
    case 'uint': {
      let narrow: Uint32Array | undefined = new Uint32Array(n);
      let wide: BigUint64Array | undefined;
      for (let i = 0; i < n; i++) {
        const v = rows[i]![key];
        if (v === undefined || v === null) {
          missing(i);
          continue;
        }
        any = true;
        if (typeof v === 'number' && v >= 0 && v <= 0xffff_ffff && Number.isInteger(v) && narrow !== undefined) {
          narrow[i] = v;
          continue;
        }
        const u = toUint(v);
        if (u === undefined) throw invalid('an unsigned integer (a non-negative safe integer, or a bigint below 2^64)', where(i), v);
        if (wide === undefined) {
          wide = new BigUint64Array(n);
          for (let j = 0; j < i; j++) wide[j] = BigInt(narrow![j]!);
          narrow = undefined;
        }
        wide[i] = u;
      }
      return any ? withPresent({ values: wide ?? narrow! }, present) : undefined;
    }
    case 'number': {
      const values = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        const v = rows[i]![key];
        if (v === undefined || v === null) {
          missing(i);
          continue;
        }
        if (typeof v !== 'number' || Number.isNaN(v)) throw invalid('a number that is not NaN', where(i), v);
        any = true;
        values[i] = v;
      }
      return any ? withPresent({ values }, present) : undefined;
    }
    case 'bool': {
      const values = new Uint8Array(n);
      for (let i = 0; i < n; i++) {
        const v = rows[i]![key];
        if (v === undefined || v === null) {
          missing(i);
          continue;
        }
        if (typeof v !== 'boolean') throw invalid('a boolean', where(i), v);
        any = true;
        values[i] = v ? 1 : 0;
      }
      return any ? withPresent({ values }, present) : undefined;
    }
    case 'category': {
      const dictionary: string[] = [];
      const codeOf = new Map<string, number>();
      const codes = new Uint32Array(n);
      for (let i = 0; i < n; i++) {
        const v = rows[i]![key];
        if (v === undefined || v === null) {
          missing(i);
          continue;
        }
        if (typeof v !== 'string') throw invalid('a string', where(i), v);
        any = true;
        let code = codeOf.get(v);
        if (code === undefined) {
          code = dictionary.length;
          dictionary.push(v);
          codeOf.set(v, code);
        }
        codes[i] = code;
      }
      return any ? withPresent({ dictionary, codes }, present) : undefined;
    }
  }
}

function withPresent(column: NativeAttributeColumn, present: Uint8Array | undefined): NativeAttributeColumn {
  if (present !== undefined) column.present = present;
  return column;
}

function buildMulti(column: AttributeColumn, rows: readonly Row[], name: string): NativeAttributeColumn | undefined {
  const n = rows.length;
  const key = column.name;
  const dictionary: string[] = [];
  const codeOf = new Map<string, number>();
  const offsets = new Uint32Array(n + 1);
  const codes: number[] = [];
  for (let i = 0; i < n; i++) {
    const v = rows[i]![key];
    if (v !== undefined && v !== null) {
      if (!Array.isArray(v)) throw invalid('an array of strings', `${name}[${i}].${key}`, v);
      for (let j = 0; j < v.length; j++) {
        const s: unknown = v[j];
        if (typeof s !== 'string') throw invalid('a string', `${name}[${i}].${key}[${j}]`, s);
        let code = codeOf.get(s);
        if (code === undefined) {
          code = dictionary.length;
          dictionary.push(s);
          codeOf.set(s, code);
        }
        codes.push(code);
      }
    }
    offsets[i + 1] = codes.length;
  }
  return codes.length > 0 ? { dictionary, codes: Uint32Array.from(codes), offsets } : undefined;
}
