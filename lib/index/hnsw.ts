/**
 * HnswIndex: approximate top-k over a hierarchical navigable small-world graph, in native
 * code: usearch's graph (its C++ headers, compiled into the addon) with ebrix's SIMD
 * distance kernels, inserts and searches on ebrix's native thread pool.
 *
 * Same ids, scores, result shape and errors as FlatIndex: higher is better for every metric
 * (`l2` as −squared distance), ids are u64 (2^64−1 reserved), rows short of k are padded
 * with (NO_ID, −Infinity), allow bitsets address rows in add order, and attributes with
 * filters work as on FlatIndex (through the same RowAttributes).
 */
import { DisposedError, InvalidArgumentError, awaitNative, callNative } from '../errors.js';
import { SIMD_LEVELS, type SimdLevel } from '../machine.js';
import {
  native,
  type NativeAttributeTable,
  type NativeFilterNode,
  type NativeHnswIndex,
  type NativeOpenedHandle,
} from '../native.js';
import { invalid, requireOneOf, requirePositiveInteger } from '../validate.js';
import { openArgs } from './open-args.js';
import type { Attributes } from './attributes.js';
import type { AttributeSchema, Filter } from './filter.js';
import { METRICS, VECTOR_STORAGES, type MemoryUsage, type Metric, type VectorStorage } from './flat.js';
import { toIdArray, type Ids } from './ids.js';
import { bindVersion } from './model-version.js';
import { RowAttributes, checkAddOptions, requireAttributes, type AddOptions } from './row-attributes.js';
import { SearchResult } from './search-result.js';
import { toAddArgs, toMatrix, type Vectors } from './vectors.js';

/**
 * How a search with an allow bitset or a filter finds its rows. 'graph': usearch's filtered
 * graph walk (rows that are not allowed still route the walk but are never returned). 'scan':
 * every allowed row is scored exactly. 'auto' (default): the scan when so few rows are
 * allowed that the walk would compute more distances (allowed² ≤ expansion × size), else the
 * walk.
 */
export type HnswFilterStrategy = 'auto' | 'graph' | 'scan';
export const HNSW_FILTER_STRATEGIES: readonly HnswFilterStrategy[] = ['auto', 'graph', 'scan'];

export interface HnswIndexOptions {
  /** Vector dimension. */
  dim: number;
  /** Scoring, higher is better: inner product (default), cosine, or negative squared L2. */
  metric?: Metric;
  /** Graph degree M, 2 to 1024 (default 16); the base layer keeps twice as many links. */
  connectivity?: number;
  /** Candidate list while inserting, efConstruction (default 128): higher builds a better graph, slower. */
  expansionAdd?: number;
  /** Candidate list of a search, ef, when the search names none (default 64). */
  expansionSearch?: number;
  /**
   * 'f32' (default), 'f16' or 'bf16', with FlatIndex's semantics: rows and queries rounded to
   * the type (after normalisation for cosine), products in float32; f16 (ip, l2) rejects
   * values of magnitude 65520 or more.
   */
  storage?: VectorStorage;
  /** Native threads an add or search may use (default: the native pool's size, following `configure({ threads })`; capped at it). */
  threads?: number;
  /** Force a SIMD level for the distance kernels (default: `EBRIX_SIMD`, else the best supported). */
  simd?: SimdLevel;
  /** Version id of the model whose item tower embeds this index's vectors. */
  modelVersion?: string;
  /**
   * Attributes kept per vector (as FlatIndex), for `search(q, k, { filter })`; `add` and
   * `upsert` then take one record per vector.
   */
  attributes?: AttributeSchema;
}

export interface HnswSearchOptions {
  /** Candidate list of this search (ef; default: the index's expansionSearch; never below k). */
  expansion?: number;
  /** Threads for this search (default: the index's); queries of a batch run in parallel. */
  threads?: number;
  /**
   * Only rows whose bit is set may be returned. Rows are numbered in add order from 0 (as
   * FlatIndex): bit `r & 31` of word `r >> 5` allows row r; rows past the end of the bitset
   * are not allowed. A removed vector's row is never reused; an upserted vector takes a new one.
   */
  allow?: Uint32Array;
  /**
   * Only rows whose attributes pass the filter (an index made with `attributes`; the filter
   * language of FlatIndex). Evaluated natively on the state the search reads, into the allow
   * bitset that the graph walk or the scan tests (see `filterStrategy`); ANDed with `allow`.
   */
  filter?: Filter;
  /** How a search with `allow` or `filter` finds its rows (default 'auto'). */
  filterStrategy?: HnswFilterStrategy;
}

export interface HnswIndexOpenOptions {
  /**
   * Map the file instead of reading it (default true): the graph and the vectors are used in
   * place from the page cache (usearch's view of a serialised graph), nothing is copied, and
   * the row tables, ids and free list are read into memory. Either way the graph is validated
   * node by node and every section but the vectors is checksummed (see `verify`). The first
   * add, upsert, remove or compact of a mapped index copies the graph and vectors into memory
   * (once, as a full load would; searches run on meanwhile), so a mapped index mutates like any
   * other. false: everything is read into memory and checked.
   */
  mmap?: boolean;
  /** With mmap, check the vectors' checksum too (reads every page once). Default false. */
  verify?: boolean;
  /** Native threads an add or search may use (default: the native pool's size, following `configure({ threads })`; capped at it). */
  threads?: number;
  /** Force a SIMD level (default: `EBRIX_SIMD`, else the best supported). */
  simd?: SimdLevel;
}

/** Carries an opened native index into the constructor; not part of the options a user passes. */
const OPENED = Symbol('ebrix.openedHnswIndex');
const OPENED_ATTRIBUTES = Symbol('ebrix.openedHnswAttributes');
type ConstructorOptions = HnswIndexOptions & { [OPENED]?: NativeOpenedHandle; [OPENED_ATTRIBUTES]?: RowAttributes };

const MAX_THREADS = 4096;
const MAX_K = 1 << 24;
const MAX_EXPANSION = 1 << 20;
/** Result entries (ids + scores, 12 bytes each) one search may return: 1.5 GiB. */
const MAX_RESULT_ENTRIES = 2 ** 27;

interface PreparedSearch {
  matrix: Float32Array;
  nq: number;
  k: number;
  expansion: number;
  threads: number;
  allow: Uint32Array | undefined;
  filterStrategy: HnswFilterStrategy;
  filter: NativeFilterNode | undefined;
  table: NativeAttributeTable | undefined;
}

export class HnswIndex implements Disposable {
  readonly dim: number;
  readonly metric: Metric;
  readonly connectivity: number;
  readonly expansionAdd: number;
  readonly expansionSearch: number;
  readonly storage: VectorStorage;
  #native: NativeHnswIndex | undefined;
  #modelVersion: string | undefined;
  #attributes: RowAttributes | undefined;

  constructor(options: HnswIndexOptions) {
    if (options === null || typeof options !== 'object') throw invalid('an options object', 'options', options);
    this.dim = requirePositiveInteger(options.dim, 'dim', 1 << 20);
    this.metric = requireOneOf(options.metric ?? 'ip', METRICS, 'metric');
    const connectivity = options.connectivity ?? 16;
    if (connectivity === 1) throw invalid('an integer from 2 to 1024', 'connectivity', connectivity);
    this.connectivity = requirePositiveInteger(connectivity, 'connectivity', 1024);
    this.expansionAdd = requirePositiveInteger(options.expansionAdd ?? 128, 'expansionAdd', MAX_EXPANSION);
    this.expansionSearch = requirePositiveInteger(options.expansionSearch ?? 64, 'expansionSearch', MAX_EXPANSION);
    this.storage = requireOneOf(options.storage ?? 'f32', VECTOR_STORAGES, 'storage');
    const threads = options.threads === undefined ? 0 : requirePositiveInteger(options.threads, 'threads', MAX_THREADS);
    const simd = options.simd === undefined ? undefined : requireOneOf(options.simd, SIMD_LEVELS, 'simd');
    if (options.modelVersion !== undefined) this.bindModelVersion(options.modelVersion);
    const Native = native().HnswIndex;
    const opened = (options as ConstructorOptions)[OPENED];
    if (opened !== undefined) {
      this.#native = callNative(() => new Native(opened));
      this.#attributes = (options as ConstructorOptions)[OPENED_ATTRIBUTES];
      return;
    }
    this.#native = callNative(
      () =>
        new Native(this.dim, this.metric, this.connectivity, this.expansionAdd, this.expansionSearch, this.storage, simd, threads),
    );
    if (options.attributes !== undefined) this.#attributes = new RowAttributes(options.attributes);
  }

  /** The index's attributes (an index made with `attributes`), e.g. to compile a filter once. */
  get attributes(): Attributes | undefined {
    return this.#attributes?.table;
  }

  /** Number of vectors held (added and not removed). */
  get size(): number {
    return this.#live().size();
  }

  /** SIMD level of the distance kernels. */
  get simd(): SimdLevel {
    return this.#live().simdLevel() as SimdLevel;
  }

  /** Native threads an add or search uses by default (as FlatIndex's `threads`). */
  get threads(): number {
    return this.#live().threads();
  }

  /** Version id of the model that embeds this index's vectors, once bound. */
  get modelVersion(): string | undefined {
    return this.#modelVersion;
  }

  /**
   * Records which model version embeds this index's vectors. Binding again to the same
   * version is a no-op; another version is EBRIX_VERSION_MISMATCH (as FlatIndex).
   */
  bindModelVersion(version: string): void {
    this.#modelVersion = bindVersion(this.#modelVersion, version);
  }

  get disposed(): boolean {
    return this.#native === undefined;
  }

  /**
   * Bytes of native memory held: the graph (nodes and links), the vectors, the row and id
   * tables (spare capacity included; the id map estimated). All on the host.
   */
  memoryUsage(): MemoryUsage {
    const live = this.#live();
    const bytes = callNative(() => live.memoryBytes());
    return { bytes, hostBytes: bytes, deviceBytes: 0, mappedBytes: callNative(() => live.mappedBytes()) };
  }

  /**
   * Writes the index to `path`, off the event loop, atomically as FlatIndex.save (a temporary
   * file, synced, renamed over the target: on failure, EBRIX_IO, the previous file is whole).
   * The file (native/core/hnsw.cpp documents its sections) holds the index as it is: params,
   * rows with their ids, removed rows, the vectors, usearch's graph and, on an index made with
   * `attributes`, the records of every row, so that an opened index returns the same ids and
   * scores and filters the same. Adds, upserts and removes wait for it; searches run on.
   */
  async save(path: string): Promise<void> {
    const live = this.#live();
    if (typeof path !== 'string' || path.length === 0) throw invalid('a file path', 'path', path);
    await awaitNative(live.saveAsync(path, this.#modelVersion ?? '', this.#attributes?.native));
  }

  /**
   * Opens an index file `save` wrote, off the event loop (see HnswIndexOpenOptions). A
   * truncated, damaged or hostile file is EBRIX_CORRUPT_FILE; a missing one EBRIX_IO. The
   * index comes back with its model version bound and its attributes, if it had any.
   */
  static async open(path: string, options: HnswIndexOpenOptions = {}): Promise<HnswIndex> {
    const { mmap, verify, threads, simd } = openArgs(path, options);
    const opened = await awaitNative(native().openHnswIndexAsync(path, mmap, verify, simd, threads));
    const init: ConstructorOptions = {
      dim: opened.dim,
      metric: opened.metric as Metric,
      connectivity: opened.connectivity,
      expansionAdd: opened.expansionAdd,
      expansionSearch: opened.expansionSearch,
      storage: opened.storage as VectorStorage,
      ...(opened.modelVersion === '' ? {} : { modelVersion: opened.modelVersion }),
      [OPENED]: opened.handle,
      [OPENED_ATTRIBUTES]: RowAttributes.opened(opened),
    };
    return new HnswIndex(init);
  }

  /**
   * Rebuilds the graph from the live vectors, off the event loop, dropping the nodes of
   * removed vectors (a removed node otherwise stays in the graph, routing searches, until an
   * add reuses it). Ids, rows, stored vectors and attributes are unchanged, so `get`, filters
   * and allow bitsets mean what they meant. Cost: as building an index of `size` vectors
   * (every live vector is inserted again, on the index's threads) plus, meanwhile, the memory
   * of a second graph and vector array. Adds, upserts and removes wait; searches run on
   * against the old graph and move to the new one in one step. Resolves to the number of nodes
   * dropped (0, and nothing rebuilt, when none was removed). A graph built on several threads
   * is not bit-for-bit reproducible; results are approximate as after any build.
   */
  async compact(): Promise<number> {
    return awaitNative(this.#live().compactAsync());
  }

  /**
   * Inserts vectors under the given ids, off the event loop, on the index's threads. All or
   * nothing: a wrong dimension, a NaN or Infinity, or an id already present (or repeated)
   * rejects and leaves the index unchanged. Searches keep running meanwhile and return none of
   * the new vectors until the add completes. With metric 'cosine' the stored vectors are
   * normalised copies. On an index with `attributes`, `options.attributes` holds one record per
   * vector (default: all missing), appended with the vectors.
   */
  async add(ids: Ids, vectors: Vectors, options: AddOptions = {}): Promise<void> {
    const [idArray, matrix] = this.#prepareAdd(ids, vectors);
    checkAddOptions(options, this.#attributes);
    const [table, columns] = this.#attributes?.records(idArray.length, options) ?? [];
    await awaitNative(this.#live().addAsync(idArray, matrix, table, columns));
  }

  /** `add` on the calling thread (its inserts still use the native threads), for small batches. */
  addSync(ids: Ids, vectors: Vectors, options: AddOptions = {}): void {
    const [idArray, matrix] = this.#prepareAdd(ids, vectors);
    checkAddOptions(options, this.#attributes);
    const [table, columns] = this.#attributes?.records(idArray.length, options) ?? [];
    const live = this.#live();
    callNative(() => live.add(idArray, matrix, table, columns));
  }

  /**
   * Replaces the vectors (and attribute records) of ids the index holds and inserts the others,
   * off the event loop, all-or-nothing (validated as `add`, except that ids may be held; they
   * must be distinct). A replaced vector is removed as `remove` removes it and the new one takes
   * a new row; searches see both changes in one step (never the id twice, never neither).
   */
  async upsert(ids: Ids, vectors: Vectors, options: AddOptions = {}): Promise<void> {
    const [idArray, matrix] = this.#prepareAdd(ids, vectors);
    checkAddOptions(options, this.#attributes);
    const [table, columns] = this.#attributes?.records(idArray.length, options) ?? [];
    await awaitNative(this.#live().upsertAsync(idArray, matrix, table, columns));
  }

  /** `upsert` on the calling thread. */
  upsertSync(ids: Ids, vectors: Vectors, options: AddOptions = {}): void {
    const [idArray, matrix] = this.#prepareAdd(ids, vectors);
    checkAddOptions(options, this.#attributes);
    const [table, columns] = this.#attributes?.records(idArray.length, options) ?? [];
    const live = this.#live();
    callNative(() => live.upsert(idArray, matrix, table, columns));
  }

  /**
   * Removes the vectors of the given ids, off the event loop: it waits for the searches in
   * flight, and no search after it returns them. As FlatIndex and IvfPqIndex: ids the index
   * does not hold are ignored, a repeated id counts once, and it resolves to the number actually
   * removed. The graph keeps a removed node (it still routes searches) until a later add reuses
   * it or `compact` drops it; a removed id can be added again, under a new row number.
   */
  async remove(ids: Ids): Promise<number> {
    const idArray = this.#prepareRemove(ids);
    return awaitNative(this.#live().removeAsync(idArray));
  }

  /** `remove` on the calling thread: it blocks until the searches in flight end. */
  removeSync(ids: Ids): number {
    const idArray = this.#prepareRemove(ids);
    const live = this.#live();
    return callNative(() => live.remove(idArray));
  }

  /**
   * The vector stored under `id`: normalised for cosine, rounded for f16 / bf16.
   * EBRIX_UNKNOWN_ID when the id is not held.
   */
  get(id: number | bigint): Float32Array {
    const live = this.#live();
    const [value] = toIdArray([id], 'id');
    return callNative(() => live.get(value!));
  }

  /** Whether a vector is held under `id`. */
  has(id: number | bigint): boolean {
    const live = this.#live();
    const [value] = toIdArray([id], 'id');
    return callNative(() => live.has(value!));
  }

  /**
   * Approximate top-k for one query (a Float32Array of dim) or many (n × dim, or an array of
   * rows), off the event loop; the queries of a batch run in parallel. k may exceed the
   * index size: rows are padded.
   */
  async search(queries: Vectors, k: number, options: HnswSearchOptions = {}): Promise<SearchResult> {
    const s = this.#prepareSearch(queries, k, options);
    const out = await awaitNative(
      this.#live().searchAsync(s.matrix, s.k, s.expansion, s.threads, s.allow, s.filterStrategy, s.filter, s.table),
    );
    return new SearchResult(s.nq, s.k, out.ids, out.scores);
  }

  /** `search` on the calling thread, for small work (a query or a few). */
  searchSync(queries: Vectors, k: number, options: HnswSearchOptions = {}): SearchResult {
    const s = this.#prepareSearch(queries, k, options);
    const live = this.#live();
    const out = callNative(() =>
      live.search(s.matrix, s.k, s.expansion, s.threads, s.allow, s.filterStrategy, s.filter, s.table),
    );
    return new SearchResult(s.nq, s.k, out.ids, out.scores);
  }

  /** Releases the native memory; work in flight finishes first. Idempotent. */
  dispose(): void {
    this.#attributes?.dispose();
    this.#attributes = undefined;
    this.#native?.dispose();
    this.#native = undefined;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  #live(): NativeHnswIndex {
    if (this.#native === undefined) throw new DisposedError('index');
    return this.#native;
  }

  #prepareAdd(ids: Ids, vectors: Vectors): [BigUint64Array, Float32Array] {
    this.#live();
    return toAddArgs(ids, vectors, this.dim);
  }

  #prepareRemove(ids: Ids): BigUint64Array {
    this.#live();
    return toIdArray(ids);
  }

  #prepareSearch(queries: Vectors, k: number, options: HnswSearchOptions): PreparedSearch {
    this.#live();
    if (options === null || typeof options !== 'object') throw invalid('an options object', 'options', options);
    const kk = requirePositiveInteger(k, 'k', MAX_K);
    const expansion =
      options.expansion === undefined ? 0 : requirePositiveInteger(options.expansion, 'options.expansion', MAX_EXPANSION);
    const threads =
      options.threads === undefined ? 0 : requirePositiveInteger(options.threads, 'options.threads', MAX_THREADS);
    const { allow } = options;
    if (allow !== undefined && !(allow instanceof Uint32Array)) throw invalid('a Uint32Array', 'options.allow', allow);
    if (typeof options.filter === 'string') {
      // The strategy was named `filter` before attribute filters came to this index.
      throw new InvalidArgumentError(
        `options.filter is an attribute filter; the strategy '${options.filter}' goes in options.filterStrategy`,
      );
    }
    const filterStrategy = requireOneOf(options.filterStrategy ?? 'auto', HNSW_FILTER_STRATEGIES, 'options.filterStrategy');
    const [filter, table] =
      options.filter === undefined ? [undefined, undefined] : requireAttributes(this.#attributes).filter(options.filter);
    const matrix = toMatrix(queries, this.dim, 'queries');
    if (matrix.length === 0) throw invalid('at least one query', 'queries', queries);
    const nq = matrix.length / this.dim;
    if (nq * kk > MAX_RESULT_ENTRIES) {
      throw invalid(`nq × k of at most ${MAX_RESULT_ENTRIES} (split the batch)`, 'k', `${kk} for ${nq} queries`);
    }
    return { matrix, nq, k: kk, expansion, threads, allow, filterStrategy, filter, table };
  }
}
