/**
 * FlatIndex: exact top-k over float32 vectors, in native code (SIMD kernels picked once per
 * index, a native thread pool, fused scoring and selection).
 */
import { DimensionMismatchError, DisposedError, VersionMismatchError, awaitNative, callNative } from '../errors.js';
import { SIMD_LEVELS, type SimdLevel } from '../machine.js';
import { native, type NativeFlatIndex } from '../native.js';
import { invalid, requireOneOf, requirePositiveInteger } from '../validate.js';
import { toIdArray, type Ids } from './ids.js';
import { SearchResult } from './search-result.js';
import { toMatrix, type Vectors } from './vectors.js';

export type Metric = 'ip' | 'cosine' | 'l2';
export const METRICS: readonly Metric[] = ['ip', 'cosine', 'l2'];

export interface FlatIndexOptions {
  /** Vector dimension. */
  dim: number;
  /** Scoring, higher is better: inner product (default), cosine, or negative squared L2. */
  metric?: Metric;
  /** Native threads a search may use (default: all hardware threads). */
  threads?: number;
  /** Force a SIMD level for this index (default: `EBRIX_SIMD`, else the best supported). */
  simd?: SimdLevel;
  /** Version id of the model whose item tower embeds this index's vectors. */
  modelVersion?: string;
}

export interface SearchOptions {
  /** Threads for this search (default: the index's). */
  threads?: number;
}

const MAX_THREADS = 4096;
/** Result entries (ids + scores, 12 bytes each) one search may return: 1.5 GiB. */
const MAX_RESULT_ENTRIES = 2 ** 27;

export class FlatIndex implements Disposable {
  readonly dim: number;
  readonly metric: Metric;
  #native: NativeFlatIndex | undefined;
  #modelVersion: string | undefined;

  constructor(options: FlatIndexOptions) {
    if (options === null || typeof options !== 'object') throw invalid('an options object', 'options', options);
    this.dim = requirePositiveInteger(options.dim, 'dim', 1 << 20);
    this.metric = requireOneOf(options.metric ?? 'ip', METRICS, 'metric');
    const threads = options.threads === undefined ? 0 : requirePositiveInteger(options.threads, 'threads', MAX_THREADS);
    const simd = options.simd === undefined ? undefined : requireOneOf(options.simd, SIMD_LEVELS, 'simd');
    if (options.modelVersion !== undefined) this.bindModelVersion(options.modelVersion);
    const Native = native().FlatIndex;
    this.#native = callNative(() => new Native(this.dim, this.metric, simd, threads));
  }

  /** Number of vectors held. */
  get size(): number {
    return this.#live().size();
  }

  /** SIMD level this index's kernels use. */
  get simd(): SimdLevel {
    return this.#live().simdLevel() as SimdLevel;
  }

  /** Native threads a search uses by default. */
  get threads(): number {
    return this.#live().threads();
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
    if (typeof version !== 'string' || version.length === 0) throw invalid('a non-empty string', 'modelVersion', version);
    if (this.#modelVersion !== undefined && this.#modelVersion !== version) {
      throw new VersionMismatchError(
        `This index holds vectors of model version ${this.#modelVersion} and cannot take vectors of version ${version}`,
      );
    }
    this.#modelVersion = version;
  }

  get disposed(): boolean {
    return this.#native === undefined;
  }

  /** Bytes of native memory held: vectors, norms and ids (spare capacity included) and the id map. */
  memoryUsage(): { bytes: number } {
    return { bytes: this.#live().memoryBytes() };
  }

  /**
   * Adds vectors under the given ids, off the event loop. All-or-nothing: a wrong dimension,
   * a NaN or Infinity, or an id already present (or repeated) rejects and leaves the index
   * unchanged. `vectors` is read while the promise is pending: do not modify it meanwhile.
   * With metric 'cosine' the stored vectors are normalised copies.
   */
  async add(ids: Ids, vectors: Vectors): Promise<void> {
    const [idArray, matrix] = this.#prepareAdd(ids, vectors);
    await awaitNative(this.#live().addAsync(idArray, matrix));
  }

  /** `add` on the calling thread, for small batches. Adds are serialised: while an async add
   * runs, addSync waits for it (blocking the event loop), so do not mix them on a hot path. */
  addSync(ids: Ids, vectors: Vectors): void {
    const [idArray, matrix] = this.#prepareAdd(ids, vectors);
    callNative(() => this.#live().add(idArray, matrix));
  }

  /**
   * Exact top-k for one query (a Float32Array of dim) or many (n × dim, or an array of
   * rows), off the event loop. k may exceed the index size: rows are padded.
   */
  async search(queries: Vectors, k: number, options: SearchOptions = {}): Promise<SearchResult> {
    const [matrix, kk, threads] = this.#prepareSearch(queries, k, options);
    const out = await awaitNative(this.#live().searchAsync(matrix, kk, threads));
    return new SearchResult(matrix.length / this.dim, kk, out.ids, out.scores);
  }

  /** `search` on the calling thread, for small work (one query, a small index). */
  searchSync(queries: Vectors, k: number, options: SearchOptions = {}): SearchResult {
    const [matrix, kk, threads] = this.#prepareSearch(queries, k, options);
    const out = callNative(() => this.#live().search(matrix, kk, threads));
    return new SearchResult(matrix.length / this.dim, kk, out.ids, out.scores);
  }

  /** Releases the native memory; in-flight searches finish first. Idempotent. */
  dispose(): void {
    this.#native?.dispose();
    this.#native = undefined;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  #live(): NativeFlatIndex {
    if (this.#native === undefined) throw new DisposedError('index');
    return this.#native;
  }

  #prepareAdd(ids: Ids, vectors: Vectors): [BigUint64Array, Float32Array] {
    this.#live();
    const idArray = toIdArray(ids);
    const matrix = toMatrix(vectors, this.dim, 'vectors');
    if (matrix.length !== idArray.length * this.dim) {
      throw new DimensionMismatchError(
        `Expected ${idArray.length * this.dim} floats for vectors (${idArray.length} ids × dim ${this.dim}) but received ${matrix.length}`,
      );
    }
    return [idArray, matrix];
  }

  #prepareSearch(queries: Vectors, k: number, options: SearchOptions): [Float32Array, number, number] {
    this.#live();
    const kk = requirePositiveInteger(k, 'k', 1 << 24);
    const threads =
      options.threads === undefined ? 0 : requirePositiveInteger(options.threads, 'options.threads', MAX_THREADS);
    const matrix = toMatrix(queries, this.dim, 'queries');
    if (matrix.length === 0) throw invalid('at least one query', 'queries', queries);
    const rows = matrix.length / this.dim;
    if (rows * kk > MAX_RESULT_ENTRIES) {
      throw invalid(`nq × k of at most ${MAX_RESULT_ENTRIES} (split the batch)`, 'k', `${kk} for ${rows} queries`);
    }
    return [matrix, kk, threads];
  }
}
