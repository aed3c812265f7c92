/**
 * IvfPqIndex: approximate top-k over an inverted file of product-quantized vectors, in
 * native code. A coarse k-means splits the vectors into `nlist` lists; each vector is stored
 * as the PQ code of its residual from its list's centroid (m bytes with 8-bit codes, m / 2
 * with 4-bit fast-scan codes). A search scores the `nprobe` nearest lists of each query and,
 * when refine vectors are kept, re-ranks k × refineFactor candidates exactly on them.
 *
 * Scores are those of FlatIndex (higher is better; ip, cosine, l2 as -|q - x|^2), estimated
 * from the codes unless refine vectors are kept.
 *
 * With device 'cuda' the lists, ids and refine vectors are also kept in GPU memory and
 * searched there (one block per query and probed list, lookup tables in shared memory); the
 * index trains and encodes on the CPU, where a twin of the lists stays.
 */
import { DisposedError, InvalidArgumentError, awaitNative, callNative } from '../errors.js';
import { openOnGpu } from '../gpu.js';
import { SIMD_LEVELS, type SimdLevel } from '../machine.js';
import {
  native,
  type NativeAttributeTable,
  type NativeFilterNode,
  type NativeIvfPqIndex,
  type NativeOpenedHandle,
} from '../native.js';
import { invalid, requireNonNegativeInteger, requireOneOf, requirePositiveInteger } from '../validate.js';
import { openArgs } from './open-args.js';
import { DEVICE_PREFERENCES, METRICS, type Device, type DevicePreference, type Metric } from './flat.js';
import { toIdArray, type Ids } from './ids.js';
import { bindVersion } from './model-version.js';
import type { Attributes } from './attributes.js';
import type { AttributeSchema, Filter } from './filter.js';
import { RowAttributes, checkAddOptions, requireAttributes, type AddOptions } from './row-attributes.js';
import { SearchResult } from './search-result.js';
import { toAddArgs, toMatrix, type Vectors } from './vectors.js';

/** Vectors kept besides the codes for an exact re-rank: none, f16 or f32 copies. */
export type IvfPqRefine = 'none' | 'f16' | 'f32';
export const IVFPQ_REFINES: readonly IvfPqRefine[] = ['none', 'f16', 'f32'];

export interface IvfPqIndexOptions {
  /** Vector dimension. */
  dim: number;
  /** Scoring, higher is better: inner product (default), cosine, or negative squared L2. */
  metric?: Metric;
  /** Lists of the coarse quantizer (k-means centroids). */
  nlist: number;
  /** Sub-quantizers; must divide dim. A code takes m bytes (nbits 8) or m / 2 (nbits 4). */
  m: number;
  /** 8 (default): ADC on float tables. 4: fast-scan on 8-bit tables, re-scored exactly. */
  nbits?: 4 | 8;
  /** Learn a rotation (OPQ) that lowers quantization error. Default false. */
  opq?: boolean;
  /** Keep f16 or f32 copies of the vectors to re-rank candidates exactly. Default 'none'. */
  refine?: IvfPqRefine;
  /** Native threads a search or train may use (default: the native pool's size, following `configure({ threads })`; capped at it). */
  threads?: number;
  /** Force a SIMD level (default: `EBRIX_SIMD`, else the best supported). Not with device 'cuda'. */
  simd?: SimdLevel;
  /** Version id of the model whose item tower embeds this index's vectors. */
  modelVersion?: string;
  /** Attributes kept per vector, for `search(q, k, { filter })` (as FlatIndex). */
  attributes?: AttributeSchema;
  /**
   * 'cpu' (default); 'cuda': search on the GPU (EBRIX_DEVICE_UNAVAILABLE when none is usable,
   * see `gpuInfo()`), where k, k × refineFactor (with refine vectors) and nprobe are at most
   * 2048; 'auto': the GPU when usable, else the CPU, with the reason in `deviceReason`.
   */
  device?: DevicePreference;
}

export interface IvfPqTrainOptions {
  /** Seed of the k-means samples and draws (default 1): the same seed trains the same index. */
  seed?: number;
  /** Lloyd iterations at most, for the coarse and the PQ k-means (default 25). */
  maxIterations?: number;
  /** Called with the fraction done, from 0 to 1 (the last call is 1). */
  onProgress?: (fraction: number) => void;
}

export interface IvfPqSearchOptions {
  /** Lists scanned per query (default min(8, nlist); clamped to nlist). More: better recall, slower. */
  nprobe?: number;
  /** With refine vectors, k × refineFactor candidates are re-ranked exactly (default 4). */
  refineFactor?: number;
  /** Threads for this search (default: the index's). */
  threads?: number;
  /**
   * Only rows whose bit is set may be returned (rows numbered as FlatIndex numbers them: in
   * add order, kept for life; removed rows are never returned).
   */
  allow?: Uint32Array;
  /**
   * Only rows whose attributes pass the filter (an index made with `attributes`): evaluated
   * natively on the state the search reads (on the GPU, compiled first) into an allow bitset,
   * ANDed with `allow`. How the allowed rows are found is `filterStrategy`'s.
   */
  filter?: Filter;
  /**
   * How a search with `allow` or `filter` finds its rows (CPU index; the GPU index probes
   * `nprobe` lists as given):
   * - 'probe': probe the query's nearest lists, nprobe scaled up by 1 / (fraction of rows
   *   allowed), at most nlist, so that about as many allowed candidates are scored as an
   *   unfiltered search scores and recall stays near the unfiltered one;
   * - 'scan': score the allowed rows directly (their codes with the query's lookup tables, or
   *   exactly on their refine vectors when the index keeps them: then the filtered top-k is
   *   exact);
   * - 'auto' (default): the scan when it reads less than the probe would (few rows allowed),
   *   else the probe.
   */
  filterStrategy?: IvfPqFilterStrategy;
}

/** See IvfPqSearchOptions.filterStrategy. */
export type IvfPqFilterStrategy = 'auto' | 'probe' | 'scan';
export const IVFPQ_FILTER_STRATEGIES: readonly IvfPqFilterStrategy[] = ['auto', 'probe', 'scan'];

export interface IvfPqOpenOptions {
  /** Native threads a search or train may use (default: the native pool's size, following `configure({ threads })`; capped at it). */
  threads?: number;
  /** Force a SIMD level (default: `EBRIX_SIMD`, else the best supported). */
  simd?: SimdLevel;
}

/** Carries an opened native index into the constructor; not part of the options a user passes. */
const OPENED = Symbol('ebrix.openedIvfPqIndex');
const OPENED_ATTRIBUTES = Symbol('ebrix.openedIvfPqAttributes');
type ConstructorOptions = IvfPqIndexOptions & { [OPENED]?: NativeOpenedHandle; [OPENED_ATTRIBUTES]?: RowAttributes };

export interface IvfPqMemoryUsage {
  /** The sum of the parts. */
  bytes: number;
  /** PQ codes (plain, and fast-scan blocks with nbits 4), spare capacity included. */
  codes: number;
  /** Per-list ids and row numbers. */
  ids: number;
  /** Coarse centroids, PQ codebooks and the OPQ rotation. */
  centroids: number;
  /** Refine vectors. */
  refine: number;
  /** The id → row map (estimated). */
  idMap: number;
  /** Host memory: the parts above (on the GPU, those of the CPU twin). */
  hostBytes: number;
  /** GPU memory: lists, ids, refine vectors, centroids and codebooks; 0 on the CPU. */
  deviceBytes: number;
}

const MAX_THREADS = 4096;
const MAX_K = 1 << 24;
/** Result entries (ids + scores, 12 bytes each) one search may return: 1.5 GiB. */
const MAX_RESULT_ENTRIES = 2 ** 27;
const MAX_REFINE_FACTOR = 1 << 16;

interface PreparedSearch {
  matrix: Float32Array;
  nq: number;
  k: number;
  nprobe: number;
  refineFactor: number;
  threads: number;
  allow: Uint32Array | undefined;
  filterStrategy: IvfPqFilterStrategy;
}

export class IvfPqIndex implements Disposable {
  readonly dim: number;
  readonly metric: Metric;
  readonly nlist: number;
  readonly m: number;
  readonly nbits: 4 | 8;
  readonly opq: boolean;
  readonly refine: IvfPqRefine;
  /** Where searches run. */
  readonly device: Device;
  /** Why device 'auto' chose the CPU; empty otherwise. */
  readonly deviceReason: string;
  #native: NativeIvfPqIndex | undefined;
  #modelVersion: string | undefined;
  #attributes: RowAttributes | undefined;

  constructor(options: IvfPqIndexOptions) {
    if (options === null || typeof options !== 'object') throw invalid('an options object', 'options', options);
    this.dim = requirePositiveInteger(options.dim, 'dim', 1 << 20);
    this.metric = requireOneOf(options.metric ?? 'ip', METRICS, 'metric');
    this.nlist = requirePositiveInteger(options.nlist, 'nlist', 1 << 24);
    this.m = requirePositiveInteger(options.m, 'm', this.dim);
    if (this.dim % this.m !== 0) throw invalid(`a divisor of dim ${this.dim}`, 'm', options.m);
    const nbits = options.nbits ?? 8;
    if (nbits !== 4 && nbits !== 8) throw invalid('4 or 8', 'nbits', options.nbits);
    this.nbits = nbits;
    const opq = options.opq ?? false;
    if (typeof opq !== 'boolean') throw invalid('a boolean', 'opq', options.opq);
    this.opq = opq;
    this.refine = requireOneOf(options.refine ?? 'none', IVFPQ_REFINES, 'refine');
    const threads = options.threads === undefined ? 0 : requirePositiveInteger(options.threads, 'threads', MAX_THREADS);
    const simd = options.simd === undefined ? undefined : requireOneOf(options.simd, SIMD_LEVELS, 'simd');
    if (options.modelVersion !== undefined) this.bindModelVersion(options.modelVersion);
    if (options.attributes !== undefined) this.#attributes = new RowAttributes(options.attributes);
    const opened = (options as ConstructorOptions)[OPENED];
    if (opened !== undefined) {
      const Native = native().IvfPqIndex;
      this.#attributes = (options as ConstructorOptions)[OPENED_ATTRIBUTES];
      this.#native = callNative(() => new Native(opened));
      this.device = 'cpu';
      this.deviceReason = '';
      return;
    }
    const device = requireOneOf(options.device ?? 'cpu', DEVICE_PREFERENCES, 'device');
    if (device === 'cuda' && simd !== undefined) {
      throw new InvalidArgumentError(`The simd option applies to the CPU only and cannot be combined with device 'cuda'`);
    }
    const gpu = openOnGpu(
      device,
      (addon, ordinal) =>
        new addon.GpuIvfPqIndex(this.dim, this.metric, this.nlist, this.m, this.nbits, this.opq, this.refine, ordinal, threads),
    );
    this.#native = gpu.index;
    this.deviceReason = gpu.reason;
    this.device = this.#native === undefined ? 'cpu' : 'cuda';
    if (this.#native === undefined) {
      const Native = native().IvfPqIndex;
      this.#native = callNative(
        () => new Native(this.dim, this.metric, this.nlist, this.m, this.nbits, this.opq, this.refine, simd, threads),
      );
    }
  }

  /** Whether train() has completed. */
  get trained(): boolean {
    return this.#live().trained();
  }

  /** Number of vectors held (added or upserted, and not removed). */
  get size(): number {
    return this.#live().size();
  }

  /**
   * Native threads a search or train uses by default (on the GPU: the CPU twin's, which
   * trains and encodes): as FlatIndex's `threads`.
   */
  get threads(): number {
    return this.#live().threads();
  }

  get disposed(): boolean {
    return this.#native === undefined;
  }

  /** Version id of the model that embeds this index's vectors, once bound. */
  get modelVersion(): string | undefined {
    return this.#modelVersion;
  }

  /** As FlatIndex.bindModelVersion: another version than the bound one is EBRIX_VERSION_MISMATCH. */
  bindModelVersion(version: string): void {
    this.#modelVersion = bindVersion(this.#modelVersion, version);
  }

  /**
   * Writes the index (trained state, lists, refine vectors, model version, and the attribute
   * records of the saved rows on an index made with `attributes`) to `path`, off
   * the event loop, atomically as FlatIndex.save (EBRIX_IO on failure, the previous file
   * whole). On the GPU the CPU twin is written; `IvfPqIndex.open` reads it back on the CPU.
   */
  async save(path: string): Promise<void> {
    const live = this.#live();
    if (typeof path !== 'string' || path.length === 0) throw invalid('a file path', 'path', path);
    await awaitNative(live.saveAsync(path, this.#modelVersion ?? '', this.#attributes?.native));
  }

  /** Reads an index file `save` wrote into memory, checking every section (EBRIX_CORRUPT_FILE, EBRIX_IO). */
  static async open(path: string, options: IvfPqOpenOptions = {}): Promise<IvfPqIndex> {
    // IVF-PQ files are read, never mapped: only threads and simd apply.
    const { threads, simd } = openArgs(path, options === null || typeof options !== 'object' ? options : { threads: options.threads, simd: options.simd });
    const opened = await awaitNative(native().openIvfPqIndexAsync(path, simd, threads));
    const init: ConstructorOptions = {
      dim: opened.dim,
      metric: opened.metric as Metric,
      nlist: opened.nlist,
      m: opened.m,
      nbits: opened.nbits as 4 | 8,
      opq: opened.opq,
      refine: opened.refine as IvfPqRefine,
      ...(opened.modelVersion === '' ? {} : { modelVersion: opened.modelVersion }),
      [OPENED]: opened.handle,
      [OPENED_ATTRIBUTES]: RowAttributes.opened(opened),
    };
    return new IvfPqIndex(init);
  }

  /**
   * Trains the coarse quantizer and the PQ codebooks (and the OPQ rotation) on a sample, off
   * the event loop. Needs at least max(nlist, 2^nbits) vectors; a few hundred per list is
   * typical. Training twice is EBRIX_INVALID_ARGUMENT.
   */
  async train(sample: Vectors, options: IvfPqTrainOptions = {}): Promise<void> {
    const live = this.#live();
    if (options === null || typeof options !== 'object') throw invalid('an options object', 'options', options);
    const matrix = toMatrix(sample, this.dim, 'sample');
    const count = matrix.length / this.dim;
    const minimum = Math.max(this.nlist, 2 ** this.nbits);
    if (count < minimum) {
      throw invalid(`at least max(nlist, 2^nbits) = ${minimum} vectors`, 'sample', `${count} vectors`);
    }
    const seed = options.seed === undefined ? 1 : requireNonNegativeInteger(options.seed, 'options.seed');
    const maxIterations =
      options.maxIterations === undefined ? 25 : requirePositiveInteger(options.maxIterations, 'options.maxIterations', 1 << 20);
    const { onProgress } = options;
    if (onProgress !== undefined && typeof onProgress !== 'function') {
      throw invalid('a function', 'options.onProgress', onProgress);
    }
    // Native progress arrives asynchronously and may trail the promise: report only rising
    // fractions, nothing after completion, and 1 exactly once at the end.
    let last = -1;
    let settled = false;
    const progress =
      onProgress === undefined
        ? undefined
        : (fraction: number) => {
            if (settled || fraction <= last || fraction >= 1) return;
            last = fraction;
            onProgress(fraction);
          };
    try {
      await awaitNative(live.trainAsync(matrix, seed, maxIterations, progress));
    } finally {
      settled = true;
    }
    onProgress?.(1);
  }

  /**
   * Adds vectors under the given ids, off the event loop. All-or-nothing as FlatIndex.add; the
   * index must be trained first (EBRIX_NOT_TRAINED). With metric 'cosine' vectors are
   * normalised; with refine 'f16' (ip, l2) values must be below 65520 in magnitude.
   */
  async add(ids: Ids, vectors: Vectors, options: AddOptions = {}): Promise<void> {
    const [idArray, matrix] = this.#prepareAdd(ids, vectors);
    checkAddOptions(options, this.#attributes);
    const live = this.#live();
    if (this.device === 'cpu') {
      // The index appends the records itself, before the rows publish.
      const [table, columns] = this.#attributes?.records(idArray.length, options) ?? [];
      return awaitNative(live.addAsync(idArray, matrix, table, columns));
    }
    const addVectors = () => awaitNative(live.addAsync(idArray, matrix));
    if (this.#attributes !== undefined) return this.#attributes.add(idArray.length, options, addVectors);
    await addVectors();
  }

  /** `add` on the calling thread, for small batches. */
  addSync(ids: Ids, vectors: Vectors, options: AddOptions = {}): void {
    const [idArray, matrix] = this.#prepareAdd(ids, vectors);
    checkAddOptions(options, this.#attributes);
    const live = this.#live();
    if (this.device === 'cpu') {
      const [table, columns] = this.#attributes?.records(idArray.length, options) ?? [];
      callNative(() => live.add(idArray, matrix, table, columns));
      return;
    }
    const addVectors = () => callNative(() => live.add(idArray, matrix));
    if (this.#attributes !== undefined) this.#attributes.addSync(idArray.length, options, addVectors);
    else addVectors();
  }

  /**
   * As FlatIndex.upsert: replaces the vectors (and attribute records) of held ids and adds the
   * others, off the event loop, all-or-nothing and in one step for searches; each vector takes
   * a new row and the replaced rows become tombstones until `compact()`. On the GPU the CPU
   * twin and the device take the upsert together, or neither does.
   */
  async upsert(ids: Ids, vectors: Vectors, options: AddOptions = {}): Promise<void> {
    const [idArray, matrix] = this.#prepareAdd(ids, vectors);
    checkAddOptions(options, this.#attributes);
    const live = this.#live();
    if (this.device === 'cpu') {
      const [table, columns] = this.#attributes?.records(idArray.length, options) ?? [];
      return awaitNative(live.upsertAsync(idArray, matrix, table, columns));
    }
    // The upserted vectors take new rows, so their records append as an add's do.
    const upsertVectors = () => awaitNative(live.upsertAsync(idArray, matrix));
    if (this.#attributes !== undefined) return this.#attributes.add(idArray.length, options, upsertVectors);
    await upsertVectors();
  }

  /** `upsert` on the calling thread, for small batches. */
  upsertSync(ids: Ids, vectors: Vectors, options: AddOptions = {}): void {
    const [idArray, matrix] = this.#prepareAdd(ids, vectors);
    checkAddOptions(options, this.#attributes);
    const live = this.#live();
    if (this.device === 'cpu') {
      const [table, columns] = this.#attributes?.records(idArray.length, options) ?? [];
      callNative(() => live.upsert(idArray, matrix, table, columns));
      return;
    }
    const upsertVectors = () => callNative(() => live.upsert(idArray, matrix));
    if (this.#attributes !== undefined) this.#attributes.addSync(idArray.length, options, upsertVectors);
    else upsertVectors();
  }

  /**
   * As FlatIndex.remove: ids not held are ignored; resolves to the number removed. Waits for
   * the searches in flight (it publishes under the lock they hold), off the event loop. The
   * removed rows are excluded inside the list scan until `compact()` drops them (on the GPU by
   * a live bitset on the device; the CPU twin takes the remove too, or neither does).
   */
  async remove(ids: Ids): Promise<number> {
    const idArray = this.#prepareIds(ids);
    return awaitNative(this.#live().removeAsync(idArray));
  }

  /** `remove` on the calling thread: it blocks until the searches in flight end. */
  removeSync(ids: Ids): number {
    const idArray = this.#prepareIds(ids);
    const index = this.#live();
    return callNative(() => index.remove(idArray));
  }

  /** Whether a vector is held under `id`. */
  has(id: number | bigint): boolean {
    const index = this.#live();
    const [value] = toIdArray([id], 'id');
    return callNative(() => index.has(value!));
  }

  /**
   * The vector stored under `id`: its refine vector (normalised for cosine, rounded for 'f16').
   * An index with refine 'none' keeps only PQ codes and cannot give vectors back
   * (EBRIX_INVALID_ARGUMENT says so); an id not held is EBRIX_UNKNOWN_ID. On the GPU: the CPU
   * twin's copy, which equals the device's.
   */
  get(id: number | bigint): Float32Array {
    const index = this.#live();
    const [value] = toIdArray([id], 'id');
    return callNative(() => index.get(value!));
  }

  /**
   * Rewrites the lists (and refine vectors) without the entries of removed and replaced
   * vectors, off the event loop; resolves to the number dropped. Searches keep running on the
   * old lists until the new ones are swapped in; writes wait. Rows keep their numbers. On the
   * GPU the device lists, ids and refine vectors are gathered into new device buffers (the old
   * ones are freed when the searches using them end), and the CPU twin compacts too.
   */
  async compact(): Promise<number> {
    return awaitNative(this.#live().compactAsync());
  }

  /** The index's attributes (an index made with `attributes`). */
  get attributes(): Attributes | undefined {
    return this.#attributes?.table;
  }

  /**
   * Approximate top-k for one query or many, off the event loop. k may exceed what the probed
   * lists hold: rows are padded (NO_ID, -Infinity).
   */
  async search(queries: Vectors, k: number, options: IvfPqSearchOptions = {}): Promise<SearchResult> {
    const s = this.#prepareSearch(queries, k, options);
    const live = this.#live();
    let filter: NativeFilterNode | undefined;
    let table: NativeAttributeTable | undefined;
    if (options.filter !== undefined) {
      // CPU: evaluated natively on the state the search reads; GPU: compiled here.
      if (this.device === 'cpu') [filter, table] = requireAttributes(this.#attributes).filter(options.filter);
      else s.allow = await requireAttributes(this.#attributes).allow(options.filter, s.allow, this.#rowsOf);
    }
    const out = await awaitNative(
      live.searchAsync(s.matrix, s.k, s.nprobe, s.refineFactor, s.threads, s.allow, filter, table, s.filterStrategy),
    );
    return new SearchResult(s.nq, s.k, out.ids, out.scores);
  }

  /** `search` on the calling thread, for small work. */
  searchSync(queries: Vectors, k: number, options: IvfPqSearchOptions = {}): SearchResult {
    const s = this.#prepareSearch(queries, k, options);
    const live = this.#live();
    let filter: NativeFilterNode | undefined;
    let table: NativeAttributeTable | undefined;
    if (options.filter !== undefined) {
      if (this.device === 'cpu') [filter, table] = requireAttributes(this.#attributes).filter(options.filter);
      else s.allow = requireAttributes(this.#attributes).allowSync(options.filter, s.allow, this.#rowsOf);
    }
    const out = callNative(() =>
      live.search(s.matrix, s.k, s.nprobe, s.refineFactor, s.threads, s.allow, filter, table, s.filterStrategy),
    );
    return new SearchResult(s.nq, s.k, out.ids, out.scores);
  }

  /** Bytes of native memory held, by part, and split between host and device. */
  memoryUsage(): IvfPqMemoryUsage {
    const live = this.#live();
    const parts = callNative(() => live.memory());
    const deviceBytes = 'deviceBytes' in parts ? (parts.deviceBytes as number) : 0;
    const hostBytes = 'hostBytes' in parts ? (parts.hostBytes as number) : parts.bytes;
    return { ...parts, hostBytes, deviceBytes, bytes: hostBytes + deviceBytes };
  }

  /** Releases the native memory; work in flight finishes first. Idempotent. */
  dispose(): void {
    this.#attributes?.dispose();
    this.#attributes = undefined;
    this.#native?.dispose();
    this.#native = undefined;
  }

  #rowsOf = (ids: BigUint64Array): Float64Array => {
    const live = this.#live();
    return callNative(() => live.rowsOf(ids));
  };

  [Symbol.dispose](): void {
    this.dispose();
  }

  #live(): NativeIvfPqIndex {
    if (this.#native === undefined) throw new DisposedError('index');
    return this.#native;
  }



  #prepareIds(ids: Ids): BigUint64Array {
    this.#live();
    return toIdArray(ids);
  }

  #prepareAdd(ids: Ids, vectors: Vectors): [BigUint64Array, Float32Array] {
    this.#live();
    return toAddArgs(ids, vectors, this.dim);
  }

  #prepareSearch(queries: Vectors, k: number, options: IvfPqSearchOptions): PreparedSearch {
    this.#live();
    if (options === null || typeof options !== 'object') throw invalid('an options object', 'options', options);
    const kk = requirePositiveInteger(k, 'k', MAX_K);
    const nprobe =
      options.nprobe === undefined ? Math.min(8, this.nlist) : requirePositiveInteger(options.nprobe, 'options.nprobe');
    const refineFactor =
      options.refineFactor === undefined
        ? 4
        : requirePositiveInteger(options.refineFactor, 'options.refineFactor', MAX_REFINE_FACTOR);
    const threads =
      options.threads === undefined ? 0 : requirePositiveInteger(options.threads, 'options.threads', MAX_THREADS);
    const { allow } = options;
    if (allow !== undefined && !(allow instanceof Uint32Array)) throw invalid('a Uint32Array', 'options.allow', allow);
    const matrix = toMatrix(queries, this.dim, 'queries');
    if (matrix.length === 0) throw invalid('at least one query', 'queries', queries);
    const nq = matrix.length / this.dim;
    if (nq * kk > MAX_RESULT_ENTRIES) {
      throw invalid(`nq × k of at most ${MAX_RESULT_ENTRIES} (split the batch)`, 'k', `${kk} for ${nq} queries`);
    }
    if (kk * refineFactor > MAX_RESULT_ENTRIES) {
      throw invalid(`k × refineFactor of at most ${MAX_RESULT_ENTRIES}`, 'options.refineFactor', refineFactor);
    }
    const filterStrategy = requireOneOf(options.filterStrategy ?? 'auto', IVFPQ_FILTER_STRATEGIES, 'options.filterStrategy');
    return { matrix, nq, k: kk, nprobe: Math.min(nprobe, this.nlist), refineFactor, threads, allow, filterStrategy };
  }
}
