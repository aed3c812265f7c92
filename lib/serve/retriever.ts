/**
 * Retriever: the serving path of a two-tower model. A request record is embedded by the
 * query tower (micro-batched with concurrent requests), the index returns `candidates`
 * nearest items (pre-filtered by attributes when asked), a ranker re-scores them, and the
 * best `k` come back with their scores and, given an item lookup, their records.
 *
 * A model and an index of different model versions are never combined: the index must be
 * bound to the model's version (embedCorpus binds it; FlatIndex.open restores it), checked
 * when the retriever is made and again on every request, since an IndexStore can swap in
 * another version at any time.
 */
import { DimensionMismatchError, DisposedError, InvalidArgumentError, VersionMismatchError } from '../errors.js';
import { FlatIndex, type SearchOptions } from '../index/flat.js';
import { HnswIndex, type HnswSearchOptions } from '../index/hnsw.js';
import { IvfPqIndex, type IvfPqSearchOptions } from '../index/ivfpq.js';
import type { Filter } from '../index/filter.js';
import type { SearchResult } from '../index/search-result.js';
import { IndexStore } from '../index/store.js';
import { describe, invalid, requirePositiveInteger } from '../validate.js';
import { Batcher, type BatcherOptions } from './batcher.js';
import { PrometheusText, RetrievalMetrics, type RetrievalMetricsSnapshot, type StageTimings } from './metrics.js';
import type { RankCandidate, Ranker, RankScores } from './ranker.js';

/** Where a retriever searches. An IndexStore is searched through its live version. */
export type RetrievalIndex = FlatIndex | IvfPqIndex | HnswIndex | IndexStore;

/** What a retriever needs of a model (TwoTowerModel has it). */
export interface QueryModel {
  readonly version: string;
  readonly dim: number;
  embedQuery(record: unknown, options?: { task?: string }): Promise<Float32Array>;
}

/**
 * Item records by id: a function given the ids (one record or undefined per id, in order), a
 * Map keyed by bigint or by number, or an array indexed by id.
 */
export type ItemLookup<R> =
  | ((ids: bigint[]) => ArrayLike<R | undefined> | Promise<ArrayLike<R | undefined>>)
  | ReadonlyMap<bigint, R>
  | ReadonlyMap<number, R>
  | readonly (R | undefined)[];

/** Index-specific search settings applied to every search (e.g. `nprobe`, `expansion`). */
export type IndexSearchSettings = Pick<IvfPqSearchOptions, 'nprobe' | 'refineFactor'> &
  Pick<HnswSearchOptions, 'expansion'> &
  Pick<SearchOptions, 'threads'>;

export interface RetrieverOptions<Q, R> {
  model: QueryModel;
  index: RetrievalIndex;
  /**
   * Indexes by task, for models whose tasks score against different item-tower heads (one
   * index per head): a request for one of these tasks searches its index, others `index`.
   */
  taskIndexes?: Readonly<Record<string, RetrievalIndex>>;
  /** Re-scores the candidates; without one, items are ordered by tower score. */
  ranker?: Ranker<Q, R>;
  /** Candidates the index returns for the ranker (default 100; never fewer than k). */
  candidates?: number;
  /** Items a retrieval returns (default 10). */
  k?: number;
  /** Item records, handed to the ranker and returned with the items. */
  items?: ItemLookup<R>;
  /** Passed to every index search. */
  search?: IndexSearchSettings;
  /**
   * Batching of concurrent unfiltered searches into one index search (default on: up to 64
   * queries, dispatched at once when no batch is in flight); false searches each request alone.
   */
  searchBatching?: Partial<BatcherOptions> | false;
}

export interface RetrieveOptions {
  k?: number;
  /** Candidates for the ranker (default: the retriever's). */
  candidates?: number;
  /** An attribute filter (an index made with attributes, or opened from a file that has them). */
  filter?: Filter;
  /** Embed with a task head of the query tower. */
  task?: string;
}

export interface RetrievedItem<R> {
  id: bigint;
  /** The index's score for the query embedding. */
  towerScore: number;
  /** The ranker's score; the tower score when there is no ranker. */
  score: number;
  /** Present when the retriever has an item lookup that holds the id. */
  record?: R;
}

export interface RetrieveResult<R> {
  /** Best first. */
  items: RetrievedItem<R>[];
  /** Milliseconds per stage: embed (query tower), search (index), rank (item lookup + ranker + sort), total. */
  timings: StageTimings;
}

const MAX_K = 10_000;
const MAX_CANDIDATES = 100_000;
const DEFAULT_SEARCH_BATCHING: BatcherOptions = { maxBatchSize: 64, maxDelayMs: 1, maxQueue: 4096, dispatchWhenIdle: true };

type Hits = { id: bigint; score: number }[];

export class Retriever<Q = Record<string, unknown>, R = Record<string, unknown>> {
  readonly model: QueryModel;
  readonly index: RetrievalIndex;
  readonly taskIndexes: Readonly<Record<string, RetrievalIndex>>;
  readonly k: number;
  readonly candidates: number;
  readonly #ranker: ((request: Q, candidates: readonly RankCandidate<R>[]) => RankScores | Promise<RankScores>) | undefined;
  readonly #lookup: ((ids: bigint[]) => ArrayLike<R | undefined> | Promise<ArrayLike<R | undefined>>) | undefined;
  readonly #search: IndexSearchSettings;
  readonly #metrics = new RetrievalMetrics();
  readonly #batching: BatcherOptions | undefined;
  /** One batcher per index and result count: a batch is one index search of n results per query. */
  readonly #batchers = new Map<RetrievalIndex, Map<number, Batcher<Float32Array, Hits>>>();
  #disposed = false;

  constructor(options: RetrieverOptions<Q, R>) {
    if (options === null || typeof options !== 'object') throw invalid('an options object', 'options', options);
    const { model, index, ranker, items } = options;
    if (model === null || typeof model !== 'object' || typeof model.embedQuery !== 'function' || typeof model.version !== 'string') {
      throw invalid('a TwoTowerModel', 'options.model', model);
    }
    const isIndex = (value: unknown): value is RetrievalIndex =>
      value instanceof FlatIndex || value instanceof IvfPqIndex || value instanceof HnswIndex || value instanceof IndexStore;
    if (!isIndex(index)) throw invalid('a FlatIndex, IvfPqIndex, HnswIndex or IndexStore', 'options.index', index);
    const taskIndexes = options.taskIndexes ?? {};
    if (taskIndexes === null || typeof taskIndexes !== 'object') throw invalid('an object of indexes by task', 'options.taskIndexes', taskIndexes);
    for (const [task, value] of Object.entries(taskIndexes)) {
      if (!isIndex(value)) throw invalid('a FlatIndex, IvfPqIndex, HnswIndex or IndexStore', `options.taskIndexes.${task}`, value);
    }
    this.model = model;
    this.index = index;
    this.taskIndexes = Object.freeze({ ...taskIndexes });
    this.k = requirePositiveInteger(options.k ?? 10, 'options.k', MAX_K);
    this.candidates = requirePositiveInteger(options.candidates ?? 100, 'options.candidates', MAX_CANDIDATES);
    if (ranker === undefined) this.#ranker = undefined;
    else if (typeof ranker === 'function') this.#ranker = ranker;
    else if (ranker !== null && typeof ranker === 'object' && typeof ranker.rank === 'function') {
      this.#ranker = (request, candidates) => ranker.rank(request, candidates);
    } else throw invalid('a function or an object with a rank method', 'options.ranker', ranker);
    this.#lookup = items === undefined ? undefined : toLookup(items);
    const search = options.search ?? {};
    if (search === null || typeof search !== 'object') throw invalid('an object of search settings', 'options.search', search);
    this.#search = { ...search };
    const batching = options.searchBatching;
    if (batching === false) this.#batching = undefined;
    else {
      if (batching !== undefined && (batching === null || typeof batching !== 'object')) {
        throw invalid('false or batching options', 'options.searchBatching', batching);
      }
      this.#batching = { ...DEFAULT_SEARCH_BATCHING, ...batching };
      new Batcher<unknown, unknown>(() => [], this.#batching).close(); // validates the options now
    }
    // Checked now for a plain index; an IndexStore without a version yet is checked per request.
    for (const each of [index, ...Object.values(this.taskIndexes)]) this.#checkLive(each);
  }

  /** Whether the retriever re-scores candidates with a ranker. */
  get ranked(): boolean {
    return this.#ranker !== undefined;
  }

  /**
   * Embeds `request` with the query tower and returns the best `k` items (see the class
   * comment). Failures are counted in the metrics by error code and rethrown.
   */
  async retrieve(request: Q, options: RetrieveOptions = {}): Promise<RetrieveResult<R>> {
    const started = performance.now();
    try {
      if (request === null || typeof request !== 'object' || Array.isArray(request)) {
        throw invalid('a request record (an object)', 'request', request);
      }
      const { k, candidates, filter, task } = this.#options(options);
      const index = this.#indexFor(task);
      // Refuse before the tower runs: a request for a mismatched index should fail fast.
      this.#checkLive(index);
      const vector = await this.model.embedQuery(request, task === undefined ? {} : { task });
      const embedded = performance.now();
      const wanted = this.#ranker === undefined ? k : Math.max(k, candidates);
      const hits = await this.#searchOne(index, vector, wanted, filter);
      const searched = performance.now();
      const items = await this.#rank(request, hits, k);
      const ranked = performance.now();
      const timings: StageTimings = {
        embedMs: embedded - started,
        searchMs: searched - embedded,
        rankMs: ranked - searched,
        totalMs: ranked - started,
      };
      this.#metrics.observe(timings);
      return { items, timings };
    } catch (error) {
      this.#metrics.fail(error);
      throw error;
    }
  }

  /**
   * Searches with a query embedding the caller already has (length = the model's dim): no
   * query tower and no ranker (a ranker scores requests, and there is none), items ordered by
   * tower score, with their records when there is a lookup.
   */
  async retrieveByVector(vector: Float32Array | readonly number[], options: Omit<RetrieveOptions, 'task' | 'candidates'> = {}): Promise<RetrieveResult<R>> {
    const started = performance.now();
    try {
      const { k, filter } = this.#options(options);
      const query = toQueryVector(vector, this.model.dim);
      this.#checkLive(this.index);
      const hits = await this.#searchOne(this.index, query, k, filter);
      const searched = performance.now();
      const items = await this.#withRecords(hits);
      const done = performance.now();
      const timings: StageTimings = { embedMs: 0, searchMs: searched - started, rankMs: done - searched, totalMs: done - started };
      this.#metrics.observe({ searchMs: timings.searchMs, rankMs: timings.rankMs, totalMs: timings.totalMs });
      return { items, timings };
    } catch (error) {
      this.#metrics.fail(error);
      throw error;
    }
  }

  /** Per-stage latency (embed, search, rank, total), requests per second, errors by code. */
  metrics(): RetrievalMetricsSnapshot {
    return this.#metrics.snapshot();
  }

  /** The same metrics in the Prometheus text exposition format (`ebrix_retrieval_…`). */
  prometheus(): string {
    const out = new PrometheusText();
    this.writePrometheus(out);
    return out.toString();
  }

  /** Appends the metrics to a Prometheus text being built (the HTTP service adds its own). */
  writePrometheus(out: PrometheusText): void {
    this.#metrics.writePrometheus(out);
  }

  /** Clears the metrics (e.g. between benchmark runs). */
  resetMetrics(): void {
    this.#metrics.reset();
  }

  #options(options: RetrieveOptions): { k: number; candidates: number; filter: Filter | undefined; task: string | undefined } {
    if (options === null || typeof options !== 'object') throw invalid('an options object', 'options', options);
    const k = options.k === undefined ? this.k : requirePositiveInteger(options.k, 'options.k', MAX_K);
    const candidates =
      options.candidates === undefined ? this.candidates : requirePositiveInteger(options.candidates, 'options.candidates', MAX_CANDIDATES);
    if (options.task !== undefined && typeof options.task !== 'string') throw invalid('a task name', 'options.task', options.task);
    const { filter } = options;
    if (filter !== undefined && (filter === null || typeof filter !== 'object' || Array.isArray(filter))) {
      throw invalid('a filter object', 'options.filter', filter);
    }
    return { k, candidates, filter, task: options.task };
  }

  /** The index searches go to now: a plain index, or the store's live one (undefined before its first version). */
  #target(index: RetrievalIndex): { modelVersion: string | null | undefined; dim: number } | undefined {
    if (index instanceof IndexStore) {
      const live = index.index();
      const current = index.current();
      return live === undefined || current === undefined ? undefined : { modelVersion: current.modelVersion, dim: live.dim };
    }
    return { modelVersion: index.modelVersion, dim: index.dim };
  }

  #indexFor(task: string | undefined): RetrievalIndex {
    return (task !== undefined && Object.hasOwn(this.taskIndexes, task) ? this.taskIndexes[task] : undefined) ?? this.index;
  }

  #checkLive(index: RetrievalIndex): void {
    const target = this.#target(index);
    if (target !== undefined) this.#check(target.modelVersion, target.dim);
  }

  #check(indexVersion: string | null | undefined, dim: number): void {
    if (indexVersion === undefined || indexVersion === null) {
      throw new VersionMismatchError(
        `The index is bound to no model version, so it cannot be checked against model version ${this.model.version}: ` +
          'build it with embedCorpus or bind it with bindModelVersion',
      );
    }
    if (indexVersion !== this.model.version) {
      throw new VersionMismatchError(
        `The index holds vectors of model version ${indexVersion} but the model is version ${this.model.version}`,
      );
    }
    if (dim !== this.model.dim) {
      throw new DimensionMismatchError(`Expected an index of dim ${this.model.dim} (the model's) but received one of dim ${dim}`);
    }
  }

  /**
   * Searches alone when filtered (each filter selects its own rows), else through the batcher
   * for n: concurrent requests' queries go to the index as one batch, which reads the vectors
   * once for all of them (a flat scan of a batch costs little more than of one query).
   */
  #searchOne(index: RetrievalIndex, vector: Float32Array, n: number, filter: Filter | undefined): Promise<Hits> {
    if (this.#disposed) return Promise.reject(new DisposedError('retriever'));
    if (filter !== undefined || this.#batching === undefined) {
      // Checked and searched in the same tick: an IndexStore reads its live version
      // synchronously when the search starts, so no swap can come between the two.
      if (index instanceof IndexStore) this.#checkLive(index);
      return searchIndex(index, vector, n, filter, this.#search);
    }
    let byCount = this.#batchers.get(index);
    if (byCount === undefined) this.#batchers.set(index, (byCount = new Map()));
    let batcher = byCount.get(n);
    if (batcher === undefined) {
      const dim = this.model.dim;
      batcher = new Batcher<Float32Array, Hits>(async (vectors) => {
        const queries = new Float32Array(vectors.length * dim);
        vectors.forEach((v, i) => queries.set(v, i * dim));
        if (index instanceof IndexStore) this.#checkLive(index);
        const result = await searchIndexRows(index, queries, n, undefined, this.#search);
        return vectors.map((_, i) => result.hits(i));
      }, this.#batching);
      byCount.set(n, batcher);
    }
    // A copy: the embedding may be a view into its tower batch's buffer, reused by others.
    return batcher.call(vector.slice());
  }

  /** Closes the search batchers (searches in flight finish). The model, index and ranker stay the caller's. Idempotent. */
  async dispose(): Promise<void> {
    this.#disposed = true;
    await Promise.all([...this.#batchers.values()].flatMap((byCount) => [...byCount.values()]).map((b) => b.close()));
    this.#batchers.clear();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  async #records(ids: bigint[]): Promise<ArrayLike<R | undefined> | undefined> {
    if (this.#lookup === undefined) return undefined;
    const records = await this.#lookup(ids);
    if (records === null || typeof records !== 'object' || records.length !== ids.length) {
      throw invalid(`${ids.length} records (one per id) from the item lookup`, 'items', records);
    }
    return records;
  }

  async #withRecords(hits: { id: bigint; score: number }[]): Promise<RetrievedItem<R>[]> {
    const records = await this.#records(hits.map((h) => h.id));
    return hits.map((hit, i) => item(hit.id, hit.score, hit.score, records?.[i]));
  }

  async #rank(request: Q, hits: { id: bigint; score: number }[], k: number): Promise<RetrievedItem<R>[]> {
    const ranker = this.#ranker;
    if (ranker === undefined) return this.#withRecords(hits.slice(0, k));
    const records = await this.#records(hits.map((h) => h.id));
    const candidates: RankCandidate<R>[] = hits.map((hit, i) => ({ id: hit.id, towerScore: hit.score, record: records?.[i] }));
    if (candidates.length === 0) return [];
    const scores = await ranker(request, candidates);
    if (scores === null || typeof scores !== 'object' || scores.length !== candidates.length) {
      throw invalid(`${candidates.length} scores (one per candidate) from the ranker`, 'ranker scores', scores);
    }
    for (let i = 0; i < scores.length; i++) {
      // ±Infinity orders fine (a ranker may use it to bury or pin an item); NaN does not order.
      if (typeof scores[i] !== 'number' || Number.isNaN(scores[i])) {
        throw invalid('a number', `ranker scores[${i}]`, scores[i]);
      }
    }
    const order = candidates.map((_, i) => i);
    // Ties go to the better tower score, then the smaller id, so equal scores order the same every time.
    order.sort((a, b) => {
      const byScore = scores[b]! - scores[a]!;
      if (byScore !== 0 && !Number.isNaN(byScore)) return byScore;
      const byTower = candidates[b]!.towerScore - candidates[a]!.towerScore;
      if (byTower !== 0) return byTower;
      return candidates[a]!.id < candidates[b]!.id ? -1 : candidates[a]!.id > candidates[b]!.id ? 1 : 0;
    });
    return order.slice(0, k).map((i) => item(candidates[i]!.id, candidates[i]!.towerScore, scores[i]!, candidates[i]!.record));
  }
}

/**
 * One query's hits (padding left out) from any retrieval index, with the filter and the
 * settings that index takes. A filter needs an index made with an attributes schema (the
 * index refuses it otherwise).
 */
export async function searchIndex(
  index: RetrievalIndex,
  vector: Float32Array,
  n: number,
  filter: Filter | undefined,
  settings: IndexSearchSettings = {},
): Promise<Hits> {
  return (await searchIndexRows(index, vector, n, filter, settings)).hits(0);
}

/** A batch of queries (nq × dim) against any retrieval index: the index's SearchResult. */
export async function searchIndexRows(
  index: RetrievalIndex,
  queries: Float32Array,
  n: number,
  filter: Filter | undefined,
  settings: IndexSearchSettings = {},
): Promise<SearchResult> {
  const { nprobe, refineFactor, expansion, threads } = settings;
  const ivfOptions = (): IvfPqSearchOptions => ({
    filter,
    ...(nprobe ? { nprobe } : {}),
    ...(refineFactor ? { refineFactor } : {}),
    ...(threads ? { threads } : {}),
  });
  const hnswOptions = (): HnswSearchOptions => ({
    ...(filter !== undefined ? { filter } : {}),
    ...(expansion ? { expansion } : {}),
    ...(threads ? { threads } : {}),
  });
  if (index instanceof HnswIndex) return index.search(queries, n, hnswOptions());
  if (index instanceof FlatIndex) return index.search(queries, n, { filter, ...(threads ? { threads } : {}) });
  if (index instanceof IvfPqIndex) return index.search(queries, n, ivfOptions());
  const live = index.index();
  const options =
    live instanceof IvfPqIndex ? ivfOptions() : live instanceof HnswIndex ? hnswOptions() : { filter, ...(threads ? { threads } : {}) };
  return index.search(queries, n, options);
}

/** The index a search of `index` reaches now (an IndexStore's live one; undefined before its first version). */
export function liveIndex(index: RetrievalIndex): FlatIndex | IvfPqIndex | HnswIndex | undefined {
  return index instanceof IndexStore ? index.index() : index;
}

function item<R>(id: bigint, towerScore: number, score: number, record: R | undefined): RetrievedItem<R> {
  return record === undefined ? { id, towerScore, score } : { id, towerScore, score, record };
}

const MAX_SAFE_ID = BigInt(Number.MAX_SAFE_INTEGER);

function toLookup<R>(items: ItemLookup<R>): (ids: bigint[]) => ArrayLike<R | undefined> | Promise<ArrayLike<R | undefined>> {
  if (typeof items === 'function') return items;
  if (items instanceof Map) {
    // Keyed by bigint or by number: try the id as given, then as a number when it is a safe one.
    const map = items as ReadonlyMap<unknown, R>;
    return (ids) =>
      ids.map((id) => map.get(id) ?? (id <= MAX_SAFE_ID ? map.get(Number(id)) : undefined));
  }
  if (Array.isArray(items)) {
    const array = items as readonly (R | undefined)[];
    // The length is read per call (the array may grow); ids past a safe integer are past any array.
    return (ids) => ids.map((id) => (id <= MAX_SAFE_ID ? array[Number(id)] : undefined));
  }
  throw invalid('a function, a Map or an array of item records', 'options.items', items);
}

/** A query vector of `dim` finite values as a Float32Array (EBRIX_DIM_MISMATCH for another length). */
export function toQueryVector(vector: unknown, dim: number): Float32Array {
  if (!(vector instanceof Float32Array) && !Array.isArray(vector)) {
    throw invalid('a Float32Array or number[]', 'vector', vector);
  }
  if (vector.length !== dim) {
    throw new DimensionMismatchError(`Expected ${dim} values (the model's dim) for vector but received ${describe(vector)}`);
  }
  const out = vector instanceof Float32Array ? vector : Float32Array.from(vector as number[]);
  for (let i = 0; i < out.length; i++) {
    if (!Number.isFinite(out[i])) throw invalid('finite numbers', `vector[${i}]`, (vector as ArrayLike<unknown>)[i]);
  }
  return out;
}
