// Approximate (graph) peers of the ivfpq suite, run on the same arrays in the same process:
// usearch's HNSW `Index` (f32 and i8 vectors) and hnswlib-node's `HierarchicalNSW`. Both are
// built once per dataset; a sweep point changes only the search-time expansion (ef).

import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import hnswlib from 'hnswlib-node';
import { Index, MetricKind, ScalarKind } from 'usearch';

/** Scoring of a dataset, as ebrix names it (higher is better; l2 = −squared distance). */
export type AnnMetric = 'ip' | 'l2';

export interface GraphBuildSettings {
  /** Graph degree: usearch `connectivity`, hnswlib `M`. */
  connectivity: number;
  /** Candidate list while inserting: usearch `expansion_add`, hnswlib `efConstruction`. */
  expansionAdd: number;
}

/** A built peer: how long it took, how big it is, and a searcher per ef. */
export interface GraphPeer {
  buildSeconds: number;
  /** Bytes of the serialized index (vectors + graph + keys): the peer has no in-memory size API. */
  serializedBytes: number;
  /** Threads the build used. */
  buildThreads: number;
  /** Switches the search-time expansion; searches after it use `ef`. */
  useEf(ef: number): void;
  /** Query `queryRow` of the dataset alone, on the calling thread; ids are base row numbers. */
  searchOne(queryRow: number, k: number): ArrayLike<number | bigint>;
  /** The first `count` queries of the dataset as one batch; returns the ids of query q. */
  searchBatch(count: number, k: number): (q: number) => ArrayLike<number | bigint>;
  /** What the batch call is (for the notes). */
  batchNote: string;
  /** Removes the peer's temporary files (its memory goes with the last reference). */
  close(): void;
}

// ---------------------------------------------------------------------------------------------
// usearch HNSW

export type UsearchQuantization = 'f32' | 'i8';

/**
 * usearch's JS binding fixes `expansion_search` at construction and has no setter, so the
 * graph is built once, saved to a temp file, and each ef gets a fresh `Index` constructed with
 * that `expansion_search` that memory-maps the file (`view`): same graph, same bytes, no
 * rebuild. The mapped pages are warm (just written, and touched by the warm-up queries).
 */
export function buildUsearchHnsw(options: {
  base: Float32Array;
  queries: Float32Array;
  dim: number;
  metric: AnnMetric;
  quantization: UsearchQuantization;
  graph: GraphBuildSettings;
  threads: number;
}): GraphPeer {
  const { base, queries, dim, metric, quantization, graph, threads } = options;
  const n = base.length / dim;
  const config = (expansionSearch: number) => ({
    dimensions: dim,
    metric: metric === 'ip' ? MetricKind.IP : MetricKind.L2sq,
    quantization: quantization === 'f32' ? ScalarKind.F32 : ScalarKind.I8,
    connectivity: graph.connectivity,
    expansion_add: graph.expansionAdd,
    expansion_search: expansionSearch,
    multi: false,
  });
  const keys = new BigUint64Array(n);
  for (let i = 0; i < n; i++) keys[i] = BigInt(i);

  const start = process.hrtime.bigint();
  let built: Index | undefined = new Index(config(64));
  built.add(keys, base, threads);
  const buildSeconds = Number(process.hrtime.bigint() - start) / 1e9;

  const dir = mkdtempSync(join(tmpdir(), 'ebrix-bench-usearch-'));
  const file = join(dir, `hnsw-${quantization}.usearch`);
  built.save(file);
  built = undefined; // the in-memory build is dropped; searches use views of the file
  const serializedBytes = statSync(file).size;

  let index: Index | undefined;
  const current = (): Index => {
    if (!index) throw new Error('useEf must be called before searching');
    return index;
  };
  return {
    buildSeconds,
    serializedBytes,
    buildThreads: threads,
    useEf(ef: number) {
      const view = new Index(config(ef));
      view.view(file);
      index = view;
    },
    searchOne(queryRow, k) {
      return current().search(queries.subarray(queryRow * dim, (queryRow + 1) * dim), k, 1).keys;
    },
    searchBatch(count, k) {
      // A flat Float32Array of several rows comes back as BatchMatches (count × k keys).
      const all = current().search(queries.subarray(0, count * dim), k, threads).keys;
      return (q) => all.subarray(q * k, (q + 1) * k);
    },
    batchNote: `one Index.search call, ${threads} threads`,
    close() {
      index = undefined;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------------------------------------
// hnswlib-node

/**
 * hnswlib-node: vectors go in and out as `number[]` (one `addPoint` per vector, on the main
 * thread; the binding has no multi-threaded build and no batch search). Building therefore
 * includes each row's conversion to an array, which is the binding's API. Queries are converted
 * once before any timing. A "batch" is a loop of `searchKnn` calls on one thread.
 */
export function buildHnswlib(options: {
  base: Float32Array;
  dim: number;
  metric: AnnMetric;
  graph: GraphBuildSettings;
  queries: Float32Array;
  seed: number;
}): GraphPeer {
  const { base, dim, metric, graph, queries, seed } = options;
  const n = base.length / dim;
  const index = new hnswlib.HierarchicalNSW(metric, dim);
  index.initIndex({ maxElements: n, m: graph.connectivity, efConstruction: graph.expansionAdd, randomSeed: seed });

  const start = process.hrtime.bigint();
  for (let row = 0; row < n; row++) index.addPoint(Array.from(base.subarray(row * dim, (row + 1) * dim)), row);
  const buildSeconds = Number(process.hrtime.bigint() - start) / 1e9;

  const dir = mkdtempSync(join(tmpdir(), 'ebrix-bench-hnswlib-'));
  const file = join(dir, 'hnswlib.bin');
  index.writeIndexSync(file);
  const serializedBytes = statSync(file).size;
  rmSync(dir, { recursive: true, force: true });

  // number[] copies of the queries, made once (the binding reads nothing else).
  const nq = queries.length / dim;
  const queryArrays = Array.from({ length: nq }, (_, q) => Array.from(queries.subarray(q * dim, (q + 1) * dim)));

  return {
    buildSeconds,
    serializedBytes,
    buildThreads: 1,
    useEf(ef: number) {
      index.setEf(ef);
    },
    searchOne(queryRow, k) {
      return index.searchKnn(queryArrays[queryRow]!, k).neighbors;
    },
    searchBatch(count, k) {
      const out: number[][] = [];
      for (let q = 0; q < count; q++) out.push(index.searchKnn(queryArrays[q]!, k).neighbors);
      return (q) => out[q]!;
    },
    batchNote: 'a loop of searchKnn calls on 1 thread (the binding has no batch or threaded search)',
    close() {},
  };
}
