// Suite "serve": the main job's serving path on WordNet, end to end, against tower inference
// alone.
//
// The bench serves what `npm start` serves: the WordNet default model (trained into
// `<models>/wordnet` if missing, as the job does) and one index per item-tower output, opened
// or built by the job's own code (lib/serve/wordnet-job.ts), behind the HTTP service with the
// job's hybrid re-ranker (tower score + BM25 + exact-name bonus; 100 candidates → k 10). It
// runs once with the exact FlatIndex and once with the job's HNSW graphs, and sends held-out
// queries of all three tasks (the seed-1 split's test queries, each with its task):
//
//   1. HTTP: autocannon (in a worker thread, so that the load generator does not share the
//      server's event loop) at 1, 16 and 64 connections against POST /v1/search (query tower →
//      index top-100 → ranker → top 10 with records), and against a route that runs only the
//      micro-batched query tower on the same requests (the peer: what retrieval, ranking and
//      the larger response add); per-stage p50 / p99 from the retriever's own histograms;
//   2. in process: the same comparison without HTTP, `retriever.retrieve(record)` against
//      `model.embedQuery(record)` with 1, 16 and 64 concurrent callers.
//
// Targets: end-to-end p99 under 20 ms at 16 connections, and retrieval + ranking add at most
// 25% over tower inference (requests per second of the tower-only path over the full path,
// minus one), at every concurrency.

import autocannon from 'autocannon';

import { EbrixServer, type RetrievalMetricsSnapshot } from '../../lib/index.js';
import { seededUniform } from '../../lib/random.js';
import { WORDNET_HNSW, prepareWordNet, wordnetRetriever, type PreparedWordNet } from '../../lib/serve/wordnet-job.js';
import { loadWordNet, wordnetQueries } from '../../lib/train/wordnet.js';
import { nowMs, percentile } from '../timing.js';

export interface ServeSuiteOptions {
  seed: number;
  /** The job's folder: the model package and its saved indexes (trained and built there when missing). */
  modelsDir: string;
  /** Connections (HTTP) and concurrent callers (in process), e.g. [1, 16, 64]. */
  concurrency: number[];
  /** Seconds per timed run, after `warmupSeconds` untimed at the same concurrency. */
  seconds: number;
  warmupSeconds: number;
  candidates: number;
  k: number;
  log: (line: string) => void;
}

export const SERVE_PATHS = ['retrieve', 'tower-only'] as const;
export type ServePath = (typeof SERVE_PATHS)[number];
export const SERVE_INDEXES = ['flat', 'hnsw'] as const;
export type ServeIndex = (typeof SERVE_INDEXES)[number];

export interface ServeLoad {
  path: ServePath;
  /** The index kind searched (retrieve rows); null for the tower-only path. */
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
  /** The end-to-end p99 target at 16 connections (ms) and, per index, whether it was met. */
  p99Target: { connections: number; ms: number; pass: Partial<Record<ServeIndex, boolean>> };
  pass: boolean;
}

export const SERVE_TARGET = 0.25;
export const P99_TARGET = { connections: 16, ms: 20 } as const;
const QUERY_POOL = 1024;

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
async function inProcessLoad(call: (query: ServeQuery) => Promise<unknown>, pool: readonly ServeQuery[], callers: number, seconds: number): Promise<Omit<ServeLoad, 'path' | 'index'>> {
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

/** One held-out query and the task it belongs to. */
interface ServeQuery {
  text: string;
  task: string;
}

/** `count` held-out queries of every task (the seed-1 test split the job's model never saw), in a seeded order. */
async function heldOutQueries(count: number, seed: number): Promise<ServeQuery[]> {
  const split = wordnetQueries(await loadWordNet(), { seed: 1 });
  const all = split.test.map((q) => ({ text: q.text, task: q.task }));
  const random = seededUniform(seed);
  for (let i = all.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [all[i], all[j]] = [all[j]!, all[i]!];
  }
  return all.slice(0, count);
}

export async function runServeSuite(options: ServeSuiteOptions): Promise<ServeSuiteResult> {
  const { log } = options;
  const pool = await heldOutQueries(QUERY_POOL, options.seed);
  const bodies = pool.map((q) => JSON.stringify({ query: { text: q.text }, task: q.task, k: options.k }));
  const routes: Record<ServePath, string> = { retrieve: '/v1/search', 'tower-only': '/bench/tower' };
  const http: ServeLoad[] = [];
  const stages: StageLatency[] = [];
  const inProcess: ServeLoad[] = [];
  let items = 0;
  let dim = 0;
  let buildSeconds = 0;

  for (const kind of SERVE_INDEXES) {
    log(`serve: the main job's model and ${kind} indexes (${options.modelsDir}; trained and built there when missing)`);
    const started = nowMs();
    const prepared: PreparedWordNet = await prepareWordNet({ dir: options.modelsDir, index: kind, log: (line) => log(`serve:   ${line}`) });
    buildSeconds += (nowMs() - started) / 1e3;
    const { model } = prepared;
    items = prepared.records.length;
    dim = model.dim;
    const retriever = wordnetRetriever(prepared);
    try {
      const server = new EbrixServer({ retriever });
      // The peer route: the same request bodies through the micro-batched query tower only.
      server.app.post<{ Body: { query: { text: string }; task: string } }>('/bench/tower', async (request) => {
        await model.embedQuery(request.body.query, { task: request.body.task });
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
      const calls: Record<ServePath, (query: ServeQuery) => Promise<unknown>> = {
        retrieve: (query) => retriever.retrieve({ text: query.text }, { task: query.task }),
        'tower-only': (query) => model.embedQuery({ text: query.text }, { task: query.task }),
      };
      const paths = kind === SERVE_INDEXES[0] ? SERVE_PATHS : (['retrieve'] as const);
      for (const callers of options.concurrency) {
        for (const path of paths) {
          log(`serve: in process ${path}${path === 'retrieve' ? ` (${kind})` : ''}, ${callers} caller${callers === 1 ? '' : 's'}`);
          await inProcessLoad(calls[path], pool, callers, options.warmupSeconds);
          inProcess.push({ path, index: path === 'retrieve' ? kind : null, ...(await inProcessLoad(calls[path], pool, callers, options.seconds)) });
        }
      }
    } finally {
      await retriever.dispose();
      await prepared.dispose();
    }
  }

  const overhead = [...overheadOf('http', http), ...overheadOf('in-process', inProcess)];
  const p99Pass: Partial<Record<ServeIndex, boolean>> = {};
  for (const row of http) {
    if (row.path === 'retrieve' && row.index !== null && row.concurrency === P99_TARGET.connections) p99Pass[row.index] = row.p99Ms < P99_TARGET.ms;
  }
  return {
    description:
      `WordNet default model (${options.modelsDir}/wordnet), ${items.toLocaleString('en-US')} synsets, one index per item-tower output; ` +
      `${QUERY_POOL} held-out queries of all tasks (seed-1 test split)`,
    items,
    dim,
    candidates: options.candidates,
    k: options.k,
    ranker: `the job's hybrid re-ranker: tower + BM25 + exact-name bonus (TypeScript)`,
    indexes: {
      flat: 'FlatIndex (ip, f32, exact)',
      hnsw: `HnswIndex (ip, f32, M ${WORDNET_HNSW.connectivity}, efConstruction ${WORDNET_HNSW.expansionAdd}, ef ${WORDNET_HNSW.expansion})`,
    },
    buildSeconds,
    http,
    stages,
    inProcess,
    overhead,
    target: SERVE_TARGET,
    p99Target: { ...P99_TARGET, pass: p99Pass },
    pass: overhead.every((o) => o.pass) && Object.values(p99Pass).some((p) => p),
  };
}

const ms = (v: number): string => (Number.isFinite(v) ? v.toFixed(2) : '–');

/** The suite as report lines (console and Markdown alike). */
export function serveLines(r: ServeSuiteResult): string[] {
  const lines = [
    `${r.description}; ${r.ranker}; ${r.candidates} candidates → k ${r.k}; prepared (opened or built) in ${r.buildSeconds.toFixed(1)} s; ` +
      `indexes: ${SERVE_INDEXES.map((i) => `${i} = ${r.indexes[i]}`).join(', ')}`,
    `end-to-end p99 at ${r.p99Target.connections} connections, target < ${r.p99Target.ms} ms: ` +
      SERVE_INDEXES.map((i) => `${i} ${r.p99Target.pass[i] === undefined ? 'not run' : r.p99Target.pass[i] ? 'met' : 'missed'}`).join(', '),
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
