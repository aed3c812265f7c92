// Suite "serve": the whole serving path, end to end, against tower inference alone.
//
// The bench builds, in a temp dir, a package of the models suite's shape (a seeded untrained
// two-tower model: inference cost does not depend on the weights), `items` synthetic
// catalogue items embedded by its item tower into a FlatIndex (exact) and an HnswIndex
// (approximate), and an ONNX ranker (an MLP over the tower score, price and rating, run
// inline), then
// serves them with the HTTP service on loopback, one index at a time:
//
//   1. HTTP: autocannon (in a worker thread, so that the load generator does not share the
//      server's event loop) at 1, 16 and 64 connections against POST /v1/search (query tower →
//      index top-100 → ranker → top 10 with records), and against a route that runs only the
//      micro-batched query tower on the same requests (the peer: what retrieval, ranking and
//      the larger response add); per-stage p50 / p99 from the retriever's own histograms;
//   2. in process: the same comparison without HTTP, `retriever.retrieve(record)` against
//      `model.embedQuery(record)` with 1, 16 and 64 concurrent callers.
//
// Target: retrieval + ranking add at most 25% over tower inference (requests per second of
// the tower-only path over the full path, minus one), at every concurrency.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import autocannon from 'autocannon';

import { EbrixServer, FlatIndex, HnswIndex, OnnxRanker, Retriever, TwoTowerModel, type RetrievalMetricsSnapshot } from '../../lib/index.js';
import { initTower, type TowerShape } from '../../lib/model/compose.js';
import { GraphBuilder } from '../../lib/model/onnx/graph.js';
import { buildTowerModel } from '../../lib/model/onnx/tower.js';
import { writeModelPackage } from '../../lib/model/package.js';
import { seededUniform } from '../../lib/random.js';
import { embedCorpus } from '../../lib/serve/embed-corpus.js';
import { RecordGenerator, makeVocabulary, type ItemRecord, type QueryRecord } from '../records.js';
import { nowMs, percentile } from '../timing.js';
import { EMBEDDING_DIM, HIDDEN, OUTPUT_DIM, QUERY_FEATURES, VOCABULARY_WORDS, itemFeatures } from './models.js';

export interface ServeSuiteOptions {
  seed: number;
  /** Items in the index. */
  items: number;
  /** Connections (HTTP) and concurrent callers (in process), e.g. [1, 16, 64]. */
  concurrency: number[];
  /** Seconds per timed run, after `warmupSeconds` untimed at the same concurrency. */
  seconds: number;
  warmupSeconds: number;
  candidates: number;
  k: number;
  /** onnxruntime intra-op threads per session; undefined leaves onnxruntime's default. */
  modelThreads: number | undefined;
  /** Native threads of the FlatIndex. */
  indexThreads: number;
  log: (line: string) => void;
}

export const SERVE_PATHS = ['retrieve', 'tower-only'] as const;
export type ServePath = (typeof SERVE_PATHS)[number];
export const SERVE_INDEXES = ['flat', 'hnsw'] as const;
export type ServeIndex = (typeof SERVE_INDEXES)[number];

export interface ServeLoad {
  path: ServePath;
  /** The index searched (retrieve rows); null for the tower-only path. */
  index: ServeIndex | null;
  concurrency: number;
  requests: number;
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  /** Non-2xx responses, connection errors and timeouts (HTTP); failed calls (in process). */
  failures: number;
}

export interface StageLatency {
  index: ServeIndex;
  concurrency: number;
  /** From the retriever's histograms over the timed HTTP run (bucket resolution, ±19%). */
  embed: { p50Ms: number; p99Ms: number };
  search: { p50Ms: number; p99Ms: number };
  rank: { p50Ms: number; p99Ms: number };
  total: { p50Ms: number; p99Ms: number };
}

export interface ServeOverhead {
  transport: 'http' | 'in-process';
  index: ServeIndex;
  concurrency: number;
  /** tower-only requests/s ÷ retrieve requests/s − 1. */
  added: number;
  /** retrieve p50 − tower-only p50, ms. */
  addedP50Ms: number;
  pass: boolean;
}

export interface ServeSuiteResult {
  description: string;
  items: number;
  dim: number;
  candidates: number;
  k: number;
  ranker: string;
  /** How each index was built. */
  indexes: Record<ServeIndex, string>;
  buildSeconds: number;
  http: ServeLoad[];
  stages: StageLatency[];
  inProcess: ServeLoad[];
  overhead: ServeOverhead[];
  target: number;
  pass: boolean;
}

export const SERVE_TARGET = 0.25;
const QUERY_POOL = 512;
const RANKER_HIDDEN = 16;

/** An MLP ranker, [n, 3] → [n, 1]: relu(x W1 + b1) W2 + b2, seeded weights. */
function rankerModel(seed: number): Uint8Array {
  const random = seededUniform(seed);
  const uniform = (n: number, scale: number): Float32Array => Float32Array.from({ length: n }, () => (random() * 2 - 1) * scale);
  const g = new GraphBuilder('bench-ranker');
  g.input('features', 'float32', ['n', 3]);
  g.initializer('w1', uniform(3 * RANKER_HIDDEN, 0.5), [3, RANKER_HIDDEN]);
  g.initializer('b1', uniform(RANKER_HIDDEN, 0.1), [RANKER_HIDDEN]);
  g.initializer('w2', uniform(RANKER_HIDDEN, 0.5), [RANKER_HIDDEN, 1]);
  g.initializer('b2', new Float32Array(1), [1]);
  g.output('score', 'float32', ['n', 1]);
  const hidden = g.node('Relu', [g.node('Add', [g.node('MatMul', ['features', 'w1']), 'b1'])]);
  g.node('Add', [g.node('MatMul', [hidden, 'w2']), 'b2'], 'score');
  return g.toBytes({ producerName: 'ebrix-bench', producerVersion: '1' });
}

async function httpLoad(url: string, path: string, bodies: string[], connections: number, seconds: number): Promise<Omit<ServeLoad, 'path' | 'index'>> {
  const result = await autocannon({
    url,
    connections,
    duration: seconds,
    workers: 1,
    timeout: 30,
    requests: bodies.map((body) => ({ method: 'POST', path, headers: { 'content-type': 'application/json' }, body })),
  });
  return {
    concurrency: connections,
    requests: result['2xx'],
    requestsPerSecond: result['2xx'] / result.duration,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    failures: result.non2xx + result.errors + result.timeouts,
  };
}

/** `callers` loops, each awaiting one call at a time, for `seconds`. */
async function inProcessLoad(call: (record: QueryRecord) => Promise<unknown>, pool: readonly QueryRecord[], callers: number, seconds: number): Promise<Omit<ServeLoad, 'path' | 'index'>> {
  const latencies: number[] = [];
  let failures = 0;
  let next = 0;
  const start = nowMs();
  const deadline = start + seconds * 1e3;
  await Promise.all(
    Array.from({ length: callers }, async () => {
      while (nowMs() < deadline) {
        const t0 = nowMs();
        try {
          await call(pool[next++ % pool.length]!);
          latencies.push(nowMs() - t0);
        } catch {
          failures++;
        }
      }
    }),
  );
  const elapsed = (nowMs() - start) / 1e3;
  return {
    concurrency: callers,
    requests: latencies.length,
    requestsPerSecond: latencies.length / elapsed,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    failures,
  };
}

function stagesOf(index: ServeIndex, concurrency: number, m: RetrievalMetricsSnapshot): StageLatency {
  const pick = (s: { p50Ms: number; p99Ms: number }) => ({ p50Ms: s.p50Ms, p99Ms: s.p99Ms });
  return { index, concurrency, embed: pick(m.stages.embed), search: pick(m.stages.search), rank: pick(m.stages.rank), total: pick(m.stages.total) };
}

function overheadOf(transport: ServeOverhead['transport'], rows: readonly ServeLoad[]): ServeOverhead[] {
  const out: ServeOverhead[] = [];
  for (const full of rows.filter((r) => r.path === 'retrieve')) {
    const tower = rows.find((r) => r.path === 'tower-only' && r.concurrency === full.concurrency);
    if (tower === undefined || full.index === null) continue;
    const added = tower.requestsPerSecond / full.requestsPerSecond - 1;
    out.push({ transport, index: full.index, concurrency: full.concurrency, added, addedP50Ms: full.p50Ms - tower.p50Ms, pass: added <= SERVE_TARGET });
  }
  return out;
}

export async function runServeSuite(options: ServeSuiteOptions): Promise<ServeSuiteResult> {
  const { log } = options;
  const vocabulary = makeVocabulary(VOCABULARY_WORDS, options.seed);
  const generator = new RecordGenerator(vocabulary, options.seed);
  const pool = generator.queries(QUERY_POOL);
  const dir = await mkdtemp(join(tmpdir(), 'ebrix-bench-serve-'));
  const disposers: (() => unknown)[] = [];
  try {
    log(`serve: building the package, ${options.items.toLocaleString('en-US')} items and the ranker`);
    const buildStarted = nowMs();
    const shape = (name: string, features: TowerShape['features'], seed: number): TowerShape => ({
      name,
      features,
      embeddingDim: EMBEDDING_DIM,
      hidden: HIDDEN,
      outputDim: OUTPUT_DIM,
      layerNorm: true,
      normalize: true,
      seed,
    });
    const itemSpec = itemFeatures(generator.items(1000));
    await writeModelPackage(dir, {
      name: 'bench-two-tower',
      dim: OUTPUT_DIM,
      metric: 'ip',
      query: { features: QUERY_FEATURES, onnx: buildTowerModel(initTower(shape('query', QUERY_FEATURES, options.seed))) },
      item: { features: itemSpec, onnx: buildTowerModel(initTower(shape('item', itemSpec, options.seed + 1))) },
    });
    const model = await TwoTowerModel.load(dir, {
      ...(options.modelThreads !== undefined ? { threads: options.modelThreads } : {}),
      batching: { maxBatchSize: 64, maxDelayMs: 2 },
    });
    disposers.push(() => model.dispose());
    const items: ItemRecord[] = generator.items(options.items);
    const flat = new FlatIndex({ dim: model.dim, metric: 'ip', threads: options.indexThreads });
    disposers.push(() => flat.dispose());
    await embedCorpus({ model, items, index: flat, batchSize: 256, progressBar: false });
    const vectors = await model.embedItems(items);
    const hnsw = new HnswIndex({ dim: model.dim, metric: 'ip', connectivity: 16, expansionAdd: 64, expansionSearch: 128, threads: options.indexThreads, modelVersion: model.version });
    disposers.push(() => hnsw.dispose());
    await hnsw.add(
      items.map((item) => item.id),
      vectors,
    );
    // Inline: a 3→16→1 MLP over 100 rows runs in tens of microseconds, less than a worker round trip.
    const ranker = await OnnxRanker.load(rankerModel(options.seed), { features: ['towerScore', 'item.price', 'item.rating'], inline: true });
    disposers.push(() => ranker.dispose());
    const buildSeconds = (nowMs() - buildStarted) / 1e3;
    const bodies = pool.map((query) => JSON.stringify({ query, k: options.k }));
    const routes: Record<ServePath, string> = { retrieve: '/v1/search', 'tower-only': '/bench/tower' };
    const http: ServeLoad[] = [];
    const stages: StageLatency[] = [];
    const inProcess: ServeLoad[] = [];

    for (const kind of SERVE_INDEXES) {
      const retriever = new Retriever({ model, index: kind === 'flat' ? flat : hnsw, items, ranker, candidates: options.candidates, k: options.k });
      const server = new EbrixServer({ retriever });
      // The peer route: the same request bodies through the micro-batched query tower only.
      server.app.post<{ Body: { query: QueryRecord } }>('/bench/tower', async (request) => {
        await model.embedQuery(request.body.query);
        return { ok: true };
      });
      const url = await server.listen();
      try {
        // The tower-only path does not depend on the index: measured with the first one only.
        const paths = kind === SERVE_INDEXES[0] ? SERVE_PATHS : (['retrieve'] as const);
        for (const connections of options.concurrency) {
          for (const path of paths) {
            log(`serve: HTTP ${path}${path === 'retrieve' ? ` (${kind})` : ''}, ${connections} connection${connections === 1 ? '' : 's'}`);
            await httpLoad(url, routes[path], bodies, connections, options.warmupSeconds);
            retriever.resetMetrics();
            const row = await httpLoad(url, routes[path], bodies, connections, options.seconds);
            http.push({ path, index: path === 'retrieve' ? kind : null, ...row });
            if (path === 'retrieve') stages.push(stagesOf(kind, connections, retriever.metrics()));
          }
        }
      } finally {
        await server.close();
      }
      const calls: Record<ServePath, (record: QueryRecord) => Promise<unknown>> = {
        retrieve: (record) => retriever.retrieve(record),
        'tower-only': (record) => model.embedQuery(record),
      };
      const paths = kind === SERVE_INDEXES[0] ? SERVE_PATHS : (['retrieve'] as const);
      for (const callers of options.concurrency) {
        for (const path of paths) {
          log(`serve: in process ${path}${path === 'retrieve' ? ` (${kind})` : ''}, ${callers} caller${callers === 1 ? '' : 's'}`);
          await inProcessLoad(calls[path], pool, callers, options.warmupSeconds);
          inProcess.push({ path, index: path === 'retrieve' ? kind : null, ...(await inProcessLoad(calls[path], pool, callers, options.seconds)) });
        }
      }
      await retriever.dispose();
    }

    const overhead = [...overheadOf('http', http), ...overheadOf('in-process', inProcess)];
    return {
      description:
        `the models suite's seeded untrained two-tower package (embedding ${EMBEDDING_DIM}, MLP ${HIDDEN.join('→')}, output ${OUTPUT_DIM}); ` +
        `${options.items.toLocaleString('en-US')} synthetic items; records looked up from an array`,
      items: options.items,
      dim: model.dim,
      candidates: options.candidates,
      k: options.k,
      ranker: `OnnxRanker MLP 3→${RANKER_HIDDEN}→1 over towerScore, item.price, item.rating (inline, batched)`,
      indexes: { flat: 'FlatIndex (ip, f32, exact)', hnsw: 'HnswIndex (ip, f32, M 16, efConstruction 64, ef 128)' },
      buildSeconds,
      http,
      stages,
      inProcess,
      overhead,
      target: SERVE_TARGET,
      pass: overhead.every((o) => o.pass),
    };
  } finally {
    for (const dispose of disposers.reverse()) await dispose();
    await rm(dir, { recursive: true, force: true });
  }
}

const ms = (v: number): string => (Number.isFinite(v) ? v.toFixed(2) : '–');

/** The suite as report lines (console and Markdown alike). */
export function serveLines(r: ServeSuiteResult): string[] {
  const lines = [
    `${r.description}; ${r.ranker}; ${r.candidates} candidates → k ${r.k}; built in ${r.buildSeconds.toFixed(1)} s; ` +
      `indexes: ${SERVE_INDEXES.map((i) => `${i} = ${r.indexes[i]}`).join(', ')}`,
  ];
  const load = (x: ServeLoad | undefined): string => (x ? `${x.requestsPerSecond.toFixed(0)} QPS p50 ${ms(x.p50Ms)} / p99 ${ms(x.p99Ms)} ms` : '–');
  for (const [transport, rows] of [['http', r.http], ['in-process', r.inProcess]] as const) {
    const label = transport === 'http' ? 'HTTP (autocannon)' : 'in process';
    for (const concurrency of [...new Set(rows.map((x) => x.concurrency))]) {
      const tower = rows.find((x) => x.path === 'tower-only' && x.concurrency === concurrency);
      const parts = [`${label}, ${concurrency} ${transport === 'http' ? 'connections' : 'callers'}: tower only ${load(tower)}`];
      for (const index of SERVE_INDEXES) {
        const full = rows.find((x) => x.path === 'retrieve' && x.index === index && x.concurrency === concurrency);
        if (full === undefined) continue;
        const o = r.overhead.find((x) => x.transport === transport && x.index === index && x.concurrency === concurrency);
        const stage = transport === 'http' ? r.stages.find((s) => s.index === index && s.concurrency === concurrency) : undefined;
        parts.push(
          `retrieve (${index}) ${load(full)}` +
            (o ? `, +${(o.added * 100).toFixed(0)}% over the tower (target ≤ ${r.target * 100}%: ${o.pass ? 'met' : 'missed'})` : '') +
            (stage
              ? ` [stage p50/p99 ms: embed ${ms(stage.embed.p50Ms)}/${ms(stage.embed.p99Ms)}, search ${ms(stage.search.p50Ms)}/${ms(stage.search.p99Ms)}, ` +
                `rank ${ms(stage.rank.p50Ms)}/${ms(stage.rank.p99Ms)}, total ${ms(stage.total.p50Ms)}/${ms(stage.total.p99Ms)}]`
              : '') +
            (full.failures > 0 ? ` (${full.failures} failed)` : ''),
        );
      }
      lines.push(parts.join('; '));
    }
  }
  return lines;
}
