/**
 * The attributes of an index's rows, as FlatIndex, IvfPqIndex and HnswIndex keep them when
 * made with `attributes` (a schema): one record per row, appended in add order so that row r
 * of the table is the r-th vector stored (an upsert appends its records as an add does: its
 * vectors take new rows). Records of removed rows stay in the table (rows are never
 * renumbered); they never match a search, because the index excludes removed rows inside
 * the scan.
 *
 * CPU indexes take the records and the filter natively (`records`, `filter`): the index
 * appends a write's records under its writer lock before the write's rows are published, and
 * a search evaluates its filter on the state it reads (native/core/row_filter.h), so a
 * filtered search is exact over one state even while writes run. GPU indexes append records
 * after their vectors (`add`, queued; an upsert's vectors take new rows, so its records go the
 * same way, and a remove leaves the table alone) and take the filter compiled here into an
 * allow bitset (`allow`), which the device ANDs with its live rows.
 */
import { InvalidArgumentError } from '../errors.js';
import type { NativeAttributeTable, NativeColumns, NativeFilterNode, NativeOpenedAttributes } from '../native.js';
import { invalid } from '../validate.js';
import { Attributes, adoptAttributes, attributesInternals, type CompileFilterOptions } from './attributes.js';
import type { AttributeRecord, AttributeSchema, Filter } from './filter.js';

export interface AddOptions {
  /** One attribute record per vector, in order (an index with `attributes`); default all missing. */
  attributes?: readonly AttributeRecord[];
}

/** The rows of the given ids (-1 for an id the index does not hold), from the index. */
export type RowsOf = (ids: BigUint64Array) => Float64Array;

export class RowAttributes {
  readonly table: Attributes;
  /** Adds run one after another, so that rows and records land in the same order. */
  #adds: Promise<unknown> = Promise.resolve();
  #pending = 0;

  constructor(schema: AttributeSchema | Attributes) {
    this.table = schema instanceof Attributes ? schema : new Attributes(schema);
  }

  /** The attributes an index file held, or undefined for a file without them. */
  static opened(opened: NativeOpenedAttributes): RowAttributes | undefined {
    if (opened.attributes === undefined || opened.attributeSchema === undefined) return undefined;
    return new RowAttributes(adoptAttributes(opened.attributeSchema, opened.attributes));
  }

  /** The native table, for an index's save to write the records of its rows. */
  get native(): NativeAttributeTable {
    return attributesInternals(this.table).table;
  }

  /**
   * A write's records for a CPU index to append itself: the native table and the batch's
   * columns (validated now; the defaults are records with every attribute missing).
   */
  records(count: number, options: AddOptions): [NativeAttributeTable, NativeColumns] {
    const { attributes: records } = options;
    if (records !== undefined && (!Array.isArray(records) || records.length !== count)) {
      throw invalid(`an array of ${count} attribute records (one per vector)`, 'options.attributes', records);
    }
    const internals = attributesInternals(this.table);
    return [internals.table, internals.columns(records ?? Array.from({ length: count }, () => ({})), 'options.attributes')];
  }

  /** A filter for a CPU index's search to evaluate on its own state: the node and the native table. */
  filter(filter: Filter): [NativeFilterNode, NativeAttributeTable] {
    const internals = attributesInternals(this.table);
    return [internals.filter(filter), internals.table];
  }

  /**
   * An add with its records (GPU indexes): the records are validated before `addVectors` runs
   * and appended after it succeeds; adds are queued behind one another.
   */
  add(count: number, options: AddOptions, addVectors: () => Promise<void>): Promise<void> {
    const commit = this.#prepare(count, options);
    this.#pending++;
    const run = this.#adds.then(async () => {
      try {
        await addVectors();
        commit();
      } finally {
        this.#pending--;
      }
    });
    this.#adds = run.catch(() => undefined);
    return run;
  }

  /** `add` on the calling thread; refused while an async add is pending (its rows could land first and its records last). */
  addSync(count: number, options: AddOptions, addVectors: () => void): void {
    const commit = this.#prepare(count, options);
    if (this.#pending > 0) {
      throw new InvalidArgumentError('addSync on an index with attributes while an add is pending: await the add first');
    }
    addVectors();
    commit();
  }

  /** The allow bitset of `filter`, and of `allow` too when given. */
  async allow(filter: Filter, allow: Uint32Array | undefined, rowsOf: RowsOf): Promise<Uint32Array> {
    return andBits((await this.table.compile(filter, filterOptions(filter, rowsOf))).bits, allow);
  }

  allowSync(filter: Filter, allow: Uint32Array | undefined, rowsOf: RowsOf): Uint32Array {
    return andBits(this.table.compileSync(filter, filterOptions(filter, rowsOf)).bits, allow);
  }

  dispose(): void {
    this.table.dispose();
  }

  #prepare(count: number, options: AddOptions): () => void {
    const { attributes: records } = options;
    if (records !== undefined && (!Array.isArray(records) || records.length !== count)) {
      throw invalid(`an array of ${count} attribute records (one per vector)`, 'options.attributes', records);
    }
    return this.table.prepareAppend(records ?? Array.from({ length: count }, () => ({})));
  }
}

/** Checks an add's options; records on an index without attributes are an error. */
export function checkAddOptions(options: AddOptions, attributes: RowAttributes | undefined): void {
  if (options === null || typeof options !== 'object') throw invalid('an options object', 'options', options);
  if (attributes === undefined && options.attributes !== undefined) {
    throw new InvalidArgumentError('This index keeps no attributes: create it with options.attributes (a schema)');
  }
}

/** The index's attributes, or the error a filter on an index without them gets. */
export function requireAttributes(attributes: RowAttributes | undefined): RowAttributes {
  if (attributes === undefined) {
    throw new InvalidArgumentError('options.filter needs an index made with options.attributes (a schema)');
  }
  return attributes;
}

/** Bitwise and of two allow bitsets (b optional); rows past the shorter are not allowed. */
function andBits(a: Uint32Array, b: Uint32Array | undefined): Uint32Array {
  if (b === undefined) return a;
  const out = new Uint32Array(Math.min(a.length, b.length));
  for (let i = 0; i < out.length; i++) out[i] = a[i]! & b[i]!;
  return out;
}

/** Resolves the ids a filter names to rows with one call into the index. */
function filterOptions(filter: Filter, rowsOf: RowsOf): CompileFilterOptions {
  const ids = filterIds(filter);
  if (ids.length === 0) return {};
  const rows = rowsOf(BigUint64Array.from(ids));
  const idToRow = new Map<bigint, number>();
  ids.forEach((id, i) => {
    if (rows[i]! >= 0) idToRow.set(id, rows[i]!);
  });
  return { idToRow: (id) => idToRow.get(id) };
}

/** The ids named by `id: { in | notIn }` conditions anywhere in a filter (unvalidated). */
function filterIds(filter: unknown, out: bigint[] = []): bigint[] {
  if (filter === null || typeof filter !== 'object') return out;
  for (const [key, value] of Object.entries(filter)) {
    if (key === 'and' || key === 'or') {
      if (Array.isArray(value)) for (const f of value) filterIds(f, out);
    } else if (key === 'not') {
      filterIds(value, out);
    } else if (key === 'id' && value !== null && typeof value === 'object') {
      for (const list of [(value as { in?: unknown }).in, (value as { notIn?: unknown }).notIn]) {
        if (!Array.isArray(list)) continue;
        for (const id of list) {
          if ((typeof id === 'number' && Number.isSafeInteger(id) && id >= 0) || (typeof id === 'bigint' && id >= 0n)) {
            out.push(BigInt(id));
          }
        }
      }
    }
  }
  return out;
}

