/**
 * FlatIndex: exact top-k, in native code: on the CPU (SIMD kernels picked once per index, a
 * native thread pool, fused scoring and selection) or on a CUDA GPU (vectors resident in
 * device memory), stored as f32, f16 or bf16 on either, or as 8-bit codes of a trained
 * scalar quantizer ('i8') on the CPU.
 */
import {
  DisposedError,
  InvalidArgumentError,
  awaitNative,
  callNative,
} from '../errors.js';
import { openOnGpu } from '../gpu.js';
import { SIMD_LEVELS, type SimdLevel } from '../machine.js';
import { native, type NativeFlatIndex, type NativeGpuFlatIndex, type NativeOpenedHandle } from '../native.js';
import { invalid, requireOneOf, requirePositiveInteger } from '../validate.js';
import { openArgs } from './open-args.js';
import { toIdArray, type Ids } from './ids.js';
import { bindVersion } from './model-version.js';
import { SearchResult } from './search-result.js';
import type { Attributes } from './attributes.js';
import type { AttributeSchema, Filter } from './filter.js';
import { RowAttributes, checkAddOptions, requireAttributes, type AddOptions } from './row-attributes.js';
import { toAddArgs, toMatrix, type Vectors } from './vectors.js';

export type Metric = 'ip' | 'cosine' | 'l2';
export const METRICS: readonly Metric[] = ['ip', 'cosine', 'l2'];

/** Where an index lives. */
export type Device = 'cpu' | 'cuda';
/** Where to put an index: 'auto' takes the GPU when one is usable, else the CPU. */
export type DevicePreference = Device | 'auto';
export const DEVICE_PREFERENCES: readonly DevicePreference[] = ['cpu', 'cuda', 'auto'];

/**
 * How vectors are stored. f16 and bf16 halve the memory; both rows and queries are rounded
 * to the type (round to nearest even, after normalisation for cosine) and products
 * accumulate in float32, with the same results on the CPU and the GPU. With f16 (ip, l2) a
 * value of magnitude 65520 or more, which f16 cannot hold, is EBRIX_INVALID_VECTOR.
 *
 * 'i8' (CPU only) quarters the memory: one byte per value, the code of a scalar quantizer
 * that `train()` fits to a sample before the first add (per dimension, the sample's [min,
 * max] in 256 levels; values outside that range clamp to it, so train on a sample that
 * represents the data). A search scores the codes with integer dot products against the
 * query rounded to signed bytes (VNNI where the CPU has it), keeps 2k candidates per query
 * and re-scores them exactly against the decoded vectors: results and scores are those of
 * exact search over the decoded vectors. Recall@10 against f32 measured 0.93 to 1 (lowest
 * for cosine on tightly clustered data; see the README).
 */
export type VectorStorage = 'f32' | 'f16' | 'bf16' | 'i8';
export const VECTOR_STORAGES: readonly VectorStorage[] = ['f32', 'f16', 'bf16', 'i8'];

export interface FlatIndexOptions {
  /** Vector dimension. */
  dim: number;
  /** Scoring, higher is better: inner product (default), cosine, or negative squared L2. */
  metric?: Metric;
  /** Native threads a search may use (default: the native pool's size, following `configure({ threads })`; capped at it). CPU only. */
  threads?: number;
  /**
   * Force a SIMD level for this index (default: `EBRIX_SIMD`, else the best supported). CPU
   * only: not allowed with device 'cuda'; with 'auto' it applies if the CPU is chosen.
   */
  simd?: SimdLevel;
  /**
   * 'cpu' (default); 'cuda' (EBRIX_DEVICE_UNAVAILABLE when no GPU is usable, see `gpuInfo()`);
   * 'auto': the GPU when usable, else the CPU, with the reason in `deviceReason`.
   */
  device?: DevicePreference;
  /**
   * 'f32' (default), 'f16' or 'bf16', on either device; 'i8' on the CPU only (with device
   * 'cuda' it is EBRIX_INVALID_ARGUMENT; 'auto' then takes the CPU and says why in
   * `deviceReason`). An 'i8' index must be trained (`train()`) before vectors are added.
   */
  storage?: VectorStorage;
  /** Version id of the model whose item tower embeds this index's vectors. */
  modelVersion?: string;
  /**
   * Attributes kept per vector (columnar, native), for `search(q, k, { filter })`; see
   * Attributes and the Filter language. `add` then takes one record per vector.
   */
  attributes?: AttributeSchema;
}

export type { AddOptions } from './row-attributes.js';

export interface SearchOptions {
  /** Threads for this search (default: the index's). Ignored on the GPU. */
  threads?: number;
  /**
   * Only rows whose bit is set may be returned. Rows are numbered in add order from 0: bit
   * `r & 31` of word `r >> 5` allows row r; rows past the end of the bitset are not allowed.
   * Every vector an add or upsert stores takes the next row, and a row keeps its number for
   * the life of the index (remove and compact renumber nothing; a saved index reopens with
   * its live vectors numbered from 0 again). Tested inside the scan on both devices, so a
   * filtered search stays exact; removed rows are never returned, allowed or not.
   */
  allow?: Uint32Array;
  /**
   * Only rows whose attributes pass the filter (an index made with `attributes`): compiled
   * natively to an allow bitset (combined with `allow` when both are given) and tested inside
   * the scan, so the search stays exact. `id: { in | notIn }` conditions need a CPU index.
   */
  filter?: Filter;
  /**
   * f32 storage on the GPU: let matrix products use TF32 tensor cores (about 10 mantissa
   * bits: faster on large batches, less exact). Ignored elsewhere. Default false.
   */
  tf32?: boolean;
}

export interface MemoryUsage {
  /** hostBytes + deviceBytes. */
  bytes: number;
  /** Native host memory: vectors, norms and ids on the CPU; the id map on the GPU. */
  hostBytes: number;
  /** GPU memory: vectors, norms and ids (spare capacity included); 0 on the CPU. */
  deviceBytes: number;
  /**
   * Rows still read from a file mapped by `FlatIndex.open` (page cache, shared and
   * reclaimable; not in `bytes`); 0 once an add has copied them into memory.
   */
  mappedBytes: number;
}

export interface FlatIndexOpenOptions {
  /**
   * Map the file instead of reading it (default true): opening copies nothing and checks
   * the header, the section table, the ids and norms, but not the rows (see `verify`); the
   * rows stay in the page cache, read-only, until the first add copies them into memory.
   * false: every section is read into memory and checked.
   */
  mmap?: boolean;
  /** With mmap, check the rows' checksum too (reads every page once). Default false. */
  verify?: boolean;
  /** Native threads a search may use (default: the native pool's size, following `configure({ threads })`; capped at it). */
  threads?: number;
  /** Force a SIMD level (default: `EBRIX_SIMD`, else the best supported). */
  simd?: SimdLevel;
}

/** Carries an opened native index into the constructor; not part of the options a user passes. */
const OPENED = Symbol('ebrix.openedFlatIndex');
type ConstructorOptions = FlatIndexOptions & { [OPENED]?: NativeOpenedHandle; [OPENED_ATTRIBUTES]?: RowAttributes };
const OPENED_ATTRIBUTES = Symbol('ebrix.openedFlatAttributes');

const MAX_THREADS = 4096;
/** The largest k one search takes, per device (GpuFlatIndex::kMaxK on the GPU). */
const MAX_K = { cpu: 1 << 24, cuda: 2048 } as const;
/** Result entries (ids + scores, 12 bytes each) one search may return: 1.5 GiB. */
const MAX_RESULT_ENTRIES = 2 ** 27;

type NativeIndex = { device: 'cpu'; index: NativeFlatIndex } | { device: 'cuda'; index: NativeGpuFlatIndex };

interface PreparedSearch {
  matrix: Float32Array;
  nq: number;
  k: number;
  threads: number;
  allow: Uint32Array | undefined;
  tf32: boolean;
}

export class FlatIndex implements Disposable {
  readonly dim: number;
  readonly metric: Metric;
  /** Where the vectors live. */
  readonly device: Device;
  /** How the vectors are stored. */
  readonly storage: VectorStorage;
  /** Why device 'auto' chose the CPU (no usable GPU, or storage 'i8'); empty otherwise. */
  readonly deviceReason: string;
  #native: NativeIndex | undefined;
  #modelVersion: string | undefined;
  #attributes: RowAttributes | undefined;

  constructor(options: FlatIndexOptions) {
    if (options === null || typeof options !== 'object') throw invalid('an options object', 'options', options);
    this.dim = requirePositiveInteger(options.dim, 'dim', 1 << 20);
    this.metric = requireOneOf(options.metric ?? 'ip', METRICS, 'metric');
    const opened = (options as ConstructorOptions)[OPENED];
    if (opened !== undefined) {
      const Native = native().FlatIndex;
      this.#native = { device: 'cpu', index: callNative(() => new Native(opened)) };
      this.device = 'cpu';
      this.storage = this.#native.index.storage() as VectorStorage;
      this.deviceReason = '';
      if (options.modelVersion !== undefined) this.bindModelVersion(options.modelVersion);
      this.#attributes = (options as ConstructorOptions)[OPENED_ATTRIBUTES];
      return;
    }
    const threads = options.threads === undefined ? 0 : requirePositiveInteger(options.threads, 'threads', MAX_THREADS);
    const simd = options.simd === undefined ? undefined : requireOneOf(options.simd, SIMD_LEVELS, 'simd');
    const device = requireOneOf(options.device ?? 'cpu', DEVICE_PREFERENCES, 'device');
    const storage = requireOneOf(options.storage ?? 'f32', VECTOR_STORAGES, 'storage');
    if (device === 'cuda' && simd !== undefined) {
      throw new InvalidArgumentError(`The simd option applies to the CPU only and cannot be combined with device 'cuda'`);
    }
    if (options.modelVersion !== undefined) this.bindModelVersion(options.modelVersion);

    let reason = '';
    if (storage === 'i8') {
      if (device === 'cuda') {
        throw new InvalidArgumentError(`Storage 'i8' runs on the CPU only: use device 'cpu' or 'auto' with it`);
      }
      if (device === 'auto') reason = `storage 'i8' runs on the CPU only`;
    } else {
      const gpu = openOnGpu(device, (addon, ordinal) => new addon.GpuFlatIndex(this.dim, this.metric, storage, ordinal));
      if (gpu.index !== undefined) this.#native = { device: 'cuda', index: gpu.index };
      reason = gpu.reason;
    }
    if (this.#native === undefined) {
      const Native = native().FlatIndex;
      this.#native = { device: 'cpu', index: callNative(() => new Native(this.dim, this.metric, simd, threads, storage)) };
    }
    this.device = this.#native.device;
    this.storage = this.#native.device === 'cpu' ? (this.#native.index.storage() as VectorStorage) : storage;
    this.deviceReason = reason;
    if (options.attributes !== undefined) this.#attributes = new RowAttributes(options.attributes);
  }

  /** The index's attributes (an index made with `attributes`), e.g. to compile a filter once. */
  get attributes(): Attributes | undefined {
    return this.#attributes?.table;
  }

  /** Number of vectors held (added or upserted, and not removed). */
  get size(): number {
    return this.#live().index.size();
  }

  /**
   * Whether vectors can be added: always for f32, f16 and bf16 storage; for 'i8', once
   * `train()` has completed. (The same name as IvfPqIndex's.)
   */
  get trained(): boolean {
    const live = this.#live();
    return live.device === 'cpu' ? live.index.trained() : true;
  }

  /**
   * Fits the scalar quantizer of storage 'i8' to a sample (at least one vector; a few
   * thousand representative ones is plenty), off the event loop: per dimension, the sample's
   * minimum and maximum (of the normalised vectors for cosine). Once per index, before the
   * first add: training again is EBRIX_INVALID_ARGUMENT, and so is training an index of
   * another storage, which needs no training (check `trained` when code handles both).
   */
  async train(sample: Vectors): Promise<void> {
    const live = this.#live();
    if (this.storage !== 'i8' || live.device !== 'cpu') {
      throw new InvalidArgumentError(`Storage '${this.storage}' needs no training: train() applies to storage 'i8'`);
    }
    const matrix = toMatrix(sample, this.dim, 'sample');
    if (matrix.length === 0) throw invalid('at least one vector', 'sample', sample);
    await awaitNative(live.index.trainAsync(matrix));
  }

  /** SIMD level this index's kernels use; undefined on the GPU. */
  get simd(): SimdLevel | undefined {
    const live = this.#live();
    return live.device === 'cpu' ? (live.index.simdLevel() as SimdLevel) : undefined;
  }

  /**
   * Native threads a search uses by default: the `threads` option capped at the pool size,
   * or the pool size (`configure`, `threadCount()`) when none was given; undefined on the GPU.
   */
  get threads(): number | undefined {
    const live = this.#live();
    return live.device === 'cpu' ? live.index.threads() : undefined;
  }

  /** Version id of the model that embeds this index's vectors, once bound. */
  get modelVersion(): string | undefined {
    return this.#modelVersion;
  }

  /**
   * Records which model version embeds this index's vectors. Binding again to the same
   * version is a no-op; another version is EBRIX_VERSION_MISMATCH: vectors from two models
   * never share an index.
   */
  bindModelVersion(version: string): void {
    this.#modelVersion = bindVersion(this.#modelVersion, version);
  }

  get disposed(): boolean {
    return this.#native === undefined;
  }

  /**
   * Bytes of native memory held: vectors (for 'i8', one byte per value and the quantizer's
   * ranges), norms and ids (spare capacity included) and the id map; on the GPU, split into
   * device and host bytes.
   */
  memoryUsage(): MemoryUsage {
    const live = this.#live();
    if (live.device === 'cpu') {
      const bytes = live.index.memoryBytes();
      return { bytes, hostBytes: bytes, deviceBytes: 0, mappedBytes: live.index.mappedBytes() };
    }
    const hostBytes = live.index.hostBytes();
    const deviceBytes = live.index.deviceBytes();
    return { bytes: hostBytes + deviceBytes, hostBytes, deviceBytes, mappedBytes: 0 };
  }

  /**
   * Writes the index to `path`, off the event loop: a temporary file beside it, synced, then
   * renamed over it, so a failure (EBRIX_IO: disk full, permissions) or a crash leaves the
   * previous file whole. The file holds the rows published when the save starts (adds and
   * searches may run meanwhile), the bound model version and, on an index made with
   * `attributes`, the records of the saved rows (`open` restores them, so filters work on the
   * opened index). The format is versioned and checksummed (native/core/index_file.h). CPU
   * indexes only for now.
   */
  async save(path: string): Promise<void> {
    const live = this.#live();
    if (typeof path !== 'string' || path.length === 0) throw invalid('a file path', 'path', path);
    if (live.device !== 'cpu') {
      throw new InvalidArgumentError('Saving an index on the GPU is not supported yet: build a CPU index to save');
    }
    await awaitNative(live.index.saveAsync(path, this.#modelVersion ?? '', this.#attributes?.native));
  }

  /**
   * Opens an index file `save` wrote, off the event loop (see FlatIndexOpenOptions). A
   * truncated, damaged or foreign file is EBRIX_CORRUPT_FILE; a missing one EBRIX_IO. The
   * index comes back on the CPU, with its model version bound and its attributes, if saved.
   */
  static async open(path: string, options: FlatIndexOpenOptions = {}): Promise<FlatIndex> {
    const { mmap, verify, threads, simd } = openArgs(path, options);
    const opened = await awaitNative(native().openFlatIndexAsync(path, mmap, verify, simd, threads));
    const init: ConstructorOptions = {
      dim: opened.dim,
      metric: opened.metric as Metric,
      storage: opened.storage as VectorStorage,
      ...(opened.modelVersion === '' ? {} : { modelVersion: opened.modelVersion }),
      [OPENED]: opened.handle,
      [OPENED_ATTRIBUTES]: RowAttributes.opened(opened),
    };
    return new FlatIndex(init);
  }

  /**
   * Adds vectors under the given ids, off the event loop. All-or-nothing: a wrong dimension,
   * a NaN or Infinity, or an id already present (or repeated) rejects and leaves the index
   * unchanged. `vectors` is read while the promise is pending: do not modify it meanwhile.
   * With metric 'cosine' the stored vectors are normalised copies. Storage 'i8' must be
   * trained first (EBRIX_NOT_TRAINED).
   */
  async add(ids: Ids, vectors: Vectors, options: AddOptions = {}): Promise<void> {
    const [idArray, matrix] = this.#prepareAdd(ids, vectors);
    checkAddOptions(options, this.#attributes);
    const live = this.#live();
    if (live.device === 'cpu') {
      const [table, columns] = this.#attributes?.records(idArray.length, options) ?? [];
      return awaitNative(live.index.addAsync(idArray, matrix, table, columns));
    }
    if (this.#attributes !== undefined) {
      return this.#attributes.add(idArray.length, options, () => awaitNative(live.index.addAsync(idArray, matrix)));
    }
    await awaitNative(live.index.addAsync(idArray, matrix));
  }

  /** `add` on the calling thread, for small batches. Adds are serialised: while an async add
   * runs, addSync waits for it (blocking the event loop), so do not mix them on a hot path. */
  addSync(ids: Ids, vectors: Vectors, options: AddOptions = {}): void {
    const [idArray, matrix] = this.#prepareAdd(ids, vectors);
    checkAddOptions(options, this.#attributes);
    const live = this.#live();
    if (live.device === 'cpu') {
      const [table, columns] = this.#attributes?.records(idArray.length, options) ?? [];
      callNative(() => live.index.add(idArray, matrix, table, columns));
      return;
    }
    const addVectors = () => callNative(() => live.index.addSync(idArray, matrix));
    if (this.#attributes !== undefined) this.#attributes.addSync(idArray.length, options, addVectors);
    else addVectors();
  }

  /**
   * Replaces the vectors (and, on an index with `attributes`, the attribute records) of ids
   * the index holds and adds the others, off the event loop. All-or-nothing, and one step for
   * searches: none sees an upserted id twice, or misses it. Validated as `add`, except that
   * ids may already be held (they must still be distinct within the call). Each vector takes
   * a new row (see SearchOptions.allow); the replaced rows become tombstones until
   * `compact()`. On the GPU too (device memory exhaustion leaves the index unchanged).
   */
  async upsert(ids: Ids, vectors: Vectors, options: AddOptions = {}): Promise<void> {
    const [idArray, matrix] = this.#prepareAdd(ids, vectors);
    checkAddOptions(options, this.#attributes);
    const live = this.#live();
    if (live.device === 'cpu') {
      const [table, columns] = this.#attributes?.records(idArray.length, options) ?? [];
      return awaitNative(live.index.upsertAsync(idArray, matrix, table, columns));
    }
    // The upserted vectors take new rows, so their records append as an add's do.
    const upsertVectors = () => awaitNative(live.index.upsertAsync(idArray, matrix));
    if (this.#attributes !== undefined) return this.#attributes.add(idArray.length, options, upsertVectors);
    await upsertVectors();
  }

  /** `upsert` on the calling thread, for small batches (as `addSync`). */
  upsertSync(ids: Ids, vectors: Vectors, options: AddOptions = {}): void {
    const [idArray, matrix] = this.#prepareAdd(ids, vectors);
    checkAddOptions(options, this.#attributes);
    const live = this.#live();
    if (live.device === 'cpu') {
      const [table, columns] = this.#attributes?.records(idArray.length, options) ?? [];
      callNative(() => live.index.upsert(idArray, matrix, table, columns));
      return;
    }
    const upsertVectors = () => callNative(() => live.index.upsertSync(idArray, matrix));
    if (this.#attributes !== undefined) this.#attributes.addSync(idArray.length, options, upsertVectors);
    else upsertVectors();
  }

  /**
   * Removes the vectors of the given ids; ids the index does not hold are ignored, and so are
   * repeats. Resolves to the number removed. A removed vector is a tombstone: searches that
   * start after this never return it (it is excluded inside the scan, so results stay exact
   * and filters never match it), and `compact()` reclaims its memory. On the GPU the live
   * bitset is copied to the device, where the scan masks the removed rows the same way.
   */
  async remove(ids: Ids): Promise<number> {
    const idArray = this.#prepareRemove(ids);
    return awaitNative(this.#live().index.removeAsync(idArray));
  }

  /** `remove` on the calling thread (it copies one bit per stored vector; on the GPU, uploads them). */
  removeSync(ids: Ids): number {
    const idArray = this.#prepareRemove(ids);
    const live = this.#live();
    return callNative(() => (live.device === 'cpu' ? live.index.remove(idArray) : live.index.removeSync(idArray)));
  }

  /** Whether a vector is held under `id`. */
  has(id: number | bigint): boolean {
    const { index } = this.#live();
    const [value] = toIdArray([id], 'id');
    return callNative(() => index.has(value!));
  }

  /**
   * The vector stored under `id`, as the index stores it: normalised for cosine, rounded for
   * f16 / bf16, decoded from its 8-bit code for 'i8'. EBRIX_UNKNOWN_ID when the id is not
   * held. On the GPU the row is read back from the device (the same rounding as the CPU's).
   */
  get(id: number | bigint): Float32Array {
    const { index } = this.#live();
    const [value] = toIdArray([id], 'id');
    return callNative(() => index.get(value!));
  }

  /**
   * Rewrites the storage without the tombstones of removed and replaced vectors, off the event
   * loop, and resolves to the number dropped (0, copying nothing, when there are none). Searches
   * keep running meanwhile on the storage they started with; adds, upserts and removes wait
   * for it. Rows keep their numbers. On the GPU the live rows are gathered into new device
   * buffers; the old ones are freed when the searches still reading them end.
   */
  async compact(): Promise<number> {
    return awaitNative(this.#live().index.compactAsync());
  }

  /**
   * Exact top-k for one query (a Float32Array of dim) or many (n × dim, or an array of
   * rows), off the event loop. k may exceed the index size: rows are padded. On the GPU k is
   * at most 2048. Storage 'i8' must be trained first (EBRIX_NOT_TRAINED).
   */
  async search(queries: Vectors, k: number, options: SearchOptions = {}): Promise<SearchResult> {
    const s = this.#prepareSearch(queries, k, options);
    const live = this.#live();
    let out;
    if (live.device === 'cpu') {
      // The filter is evaluated natively, on the state the search reads.
      const [filter, table] = options.filter === undefined ? [] : requireAttributes(this.#attributes).filter(options.filter);
      out = await awaitNative(live.index.searchAsync(s.matrix, s.k, s.threads, s.allow, filter, table));
    } else {
      if (options.filter !== undefined) {
        s.allow = await requireAttributes(this.#attributes).allow(options.filter, s.allow, this.#rowsOf);
      }
      out = await awaitNative(live.index.searchAsync(s.matrix, s.k, s.allow, s.tf32));
    }
    return new SearchResult(s.nq, s.k, out.ids, out.scores);
  }

  /** `search` on the calling thread, for small work (one query, a small index). */
  searchSync(queries: Vectors, k: number, options: SearchOptions = {}): SearchResult {
    const s = this.#prepareSearch(queries, k, options);
    const live = this.#live();
    let out;
    if (live.device === 'cpu') {
      const [filter, table] = options.filter === undefined ? [] : requireAttributes(this.#attributes).filter(options.filter);
      out = callNative(() => live.index.search(s.matrix, s.k, s.threads, s.allow, filter, table));
    } else {
      if (options.filter !== undefined) {
        s.allow = requireAttributes(this.#attributes).allowSync(options.filter, s.allow, this.#rowsOf);
      }
      out = callNative(() => live.index.searchSync(s.matrix, s.k, s.allow, s.tf32));
    }
    return new SearchResult(s.nq, s.k, out.ids, out.scores);
  }

  /** Releases the native memory; in-flight searches finish first. Idempotent. */
  dispose(): void {
    this.#attributes?.dispose();
    this.#attributes = undefined;
    this.#native?.index.dispose();
    this.#native = undefined;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  #live(): NativeIndex {
    if (this.#native === undefined) throw new DisposedError('index');
    return this.#native;
  }

  /** Rows of ids, for filters compiled here (GPU indexes). */
  #rowsOf = (ids: BigUint64Array): Float64Array => {
    const { index } = this.#live();
    return callNative(() => index.rowsOf(ids));
  };

  #prepareRemove(ids: Ids): BigUint64Array {
    this.#live();
    return toIdArray(ids);
  }

  #prepareAdd(ids: Ids, vectors: Vectors): [BigUint64Array, Float32Array] {
    this.#live();
    return toAddArgs(ids, vectors, this.dim);
  }

  #prepareSearch(queries: Vectors, k: number, options: SearchOptions): PreparedSearch {
    const { device } = this.#live();
    const kk = requirePositiveInteger(k, 'k', MAX_K[device]);
    const threads =
      options.threads === undefined ? 0 : requirePositiveInteger(options.threads, 'options.threads', MAX_THREADS);
    const { allow, tf32 = false } = options;
    if (allow !== undefined && !(allow instanceof Uint32Array)) throw invalid('a Uint32Array', 'options.allow', allow);
    if (typeof tf32 !== 'boolean') throw invalid('a boolean', 'options.tf32', tf32);
    const matrix = toMatrix(queries, this.dim, 'queries');
    if (matrix.length === 0) throw invalid('at least one query', 'queries', queries);
    const nq = matrix.length / this.dim;
    if (nq * kk > MAX_RESULT_ENTRIES) {
      throw invalid(`nq × k of at most ${MAX_RESULT_ENTRIES} (split the batch)`, 'k', `${kk} for ${nq} queries`);
    }
    return { matrix, nq, k: kk, threads, allow, tf32 };
  }
}
