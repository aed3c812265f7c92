// Suite "flat": exact inner-product top-k over a FlatIndex, with usearch exactSearch and a
// plain TypeScript loop measured side by side on the same arrays in the same process.

import { FlatIndex } from '../../lib/index.js';
import { clusteredDataset, mnistDataset, type Dataset } from '../datasets.js';
import { ceilingFor, type Ceiling } from '../machine.js';
import { plainTsSearch, usearchExactSearch, usearchQueriesPerCall, type ExactTopK } from '../peers.js';
import { recallAgainst, type Recall } from '../recall.js';
import { median, percentile, repeatTimed, sampleLatency, timed, type LatencyPolicy, type RepeatPolicy } from '../timing.js';

export const ENGINES = ['ebrix', 'usearch exactSearch', 'plain TS loop'] as const;
export type Engine = (typeof ENGINES)[number];

export interface FlatSuiteSettings {
  k: number;
  /** Threads for ebrix (index and search) and for usearch. */
  threads: number;
  batch: RepeatPolicy;
  latency: LatencyPolicy;
  /** Latency policy for the peers (usually a tighter time cap: they can be 10–100× slower). */
  peerLatency: LatencyPolicy;
  /** Queries the plain-TS loop runs (fixed), or undefined to size them by `plainTsFlopBudget`. */
  plainTsQueries: number | undefined;
  plainTsFlopBudget: number;
  log: (line: string) => void;
}

export interface BatchMeasurement {
  queries: number;
  /** Median over `runs` timed runs. */
  seconds: number;
  runs: number;
  qps: number;
  gflops: number;
  /** gflops / FMA peak at the suite's thread count (filled in by attachCeilings). */
  fractionOfFmaPeak: number;
  /** True when timed on a subset of the queries and scaled to QPS (plain TS on big sets). */
  extrapolated: boolean;
}

export interface LatencyMeasurement {
  samples: number;
  p50Ms: number;
  p99Ms: number;
  /** Base bytes scanned per query / p50. */
  gbPerSecond: number;
  /** gbPerSecond / read bandwidth at the suite's thread count (filled in by attachCeilings). */
  fractionOfReadBandwidth: number;
}

export interface EngineResult {
  engine: Engine;
  /** Threads the engine was allowed (plain TS is always 1). */
  threads: number;
  batch: BatchMeasurement;
  latency: LatencyMeasurement;
  /** Batch QPS ratios: this engine / usearch, this engine / plain TS. */
  qpsVsUsearch: number;
  qpsVsPlainTs: number;
  /** usearch p50 / this engine's p50 (above 1: faster than usearch for one query). */
  latencySpeedupVsUsearch: number;
  /** Against the plain-TS float64 brute force; null for the reference itself. */
  recall: Recall | null;
  notes: string[];
}

export interface FlatDatasetResult {
  dataset: string;
  description: string;
  n: number;
  dim: number;
  queries: number;
  k: number;
  metric: 'ip';
  /** Time to load or generate the data (not part of any search timing). */
  prepareSeconds: number;
  /** ebrix index.add of the whole base. */
  addSeconds: number;
  addVectorsPerSecond: number;
  simd: string;
  threads: number;
  /** Queries the plain-TS loop ran; recall is measured on these. */
  referenceQueries: number;
  /** usearch exactSearch calls were split into chunks of this many queries (memory cap). */
  usearchQueriesPerCall: number;
  /** The ceiling the fractions are relative to; null until attachCeilings. */
  ceiling: Ceiling | null;
  engines: EngineResult[];
}

const METRIC = 'ip';
const WARMUP_QUERIES = 16;

export async function runFlatOnDataset(
  data: Dataset,
  prepareSeconds: number,
  settings: FlatSuiteSettings,
): Promise<FlatDatasetResult> {
  const { k, threads, log } = settings;
  const { n, dim, nq, base, queries } = data;
  if (n < k) throw new Error(`Expected at least k = ${k} base vectors for ${data.name} but received ${n}`);
  const flopsPerQuery = 2 * n * dim;
  const bytesPerQuery = n * dim * 4;
  const label = `${data.name} ${n}×${dim}`;
  const oneQuery = (i: number): Float32Array => queries.subarray((i % nq) * dim, ((i % nq) + 1) * dim);
  const warmupQueries = queries.subarray(0, Math.min(nq, WARMUP_QUERIES) * dim);

  const batchOf = (seconds: number, runs: number, queriesTimed: number, extrapolated: boolean): BatchMeasurement => {
    const qps = queriesTimed / seconds;
    const gflops = (qps * flopsPerQuery) / 1e9;
    return {
      queries: queriesTimed,
      seconds,
      runs,
      qps,
      gflops,
      fractionOfFmaPeak: Number.NaN,
      extrapolated,
    };
  };
  const latencyOf = (samples: number[]): LatencyMeasurement => {
    const p50 = percentile(samples, 50);
    const gbPerSecond = bytesPerQuery / p50 / 1e9;
    return {
      samples: samples.length,
      p50Ms: p50 * 1e3,
      p99Ms: percentile(samples, 99) * 1e3,
      gbPerSecond,
      fractionOfReadBandwidth: Number.NaN,
    };
  };

  // ebrix ------------------------------------------------------------------------------------
  const ids = new BigUint64Array(n);
  for (let i = 0; i < n; i++) ids[i] = BigInt(i);
  const index = new FlatIndex({ dim, metric: METRIC, threads });
  let ebrixBatch: BatchMeasurement;
  let ebrixLatency: LatencyMeasurement;
  let ebrixIds: BigUint64Array;
  let addSeconds: number;
  const simd = index.simd!; // a CPU index: it always has a SIMD level
  try {
    log(`${label}: ebrix add`);
    addSeconds = (await timed(() => index.add(ids, base))).seconds;

    log(`${label}: ebrix batch of ${nq} queries`);
    await index.search(warmupQueries, k, { threads });
    let last: Awaited<ReturnType<FlatIndex['search']>> | undefined;
    const runs = await repeatTimed(async () => {
      last = await index.search(queries, k, { threads });
    }, settings.batch);
    ebrixBatch = batchOf(median(runs), runs.length, nq, false);
    ebrixIds = last!.ids;

    log(`${label}: ebrix single-query latency`);
    index.searchSync(oneQuery(0), k);
    ebrixLatency = latencyOf(sampleLatency((i) => index.searchSync(oneQuery(i), k), settings.latency));
  } finally {
    index.dispose();
  }

  // usearch exactSearch -------------------------------------------------------------------
  const usearchPerCall = Math.min(nq, usearchQueriesPerCall(n));
  log(`${label}: usearch exactSearch batch of ${nq} queries${usearchPerCall < nq ? ` (${usearchPerCall} per call)` : ''}`);
  usearchExactSearch(base, warmupQueries, dim, k, threads);
  let usearchIds: BigUint64Array | undefined;
  const usearchRuns = await repeatTimed(() => {
    usearchIds = usearchExactSearch(base, queries, dim, k, threads).ids;
  }, settings.batch);
  const usearchBatch = batchOf(median(usearchRuns), usearchRuns.length, nq, false);
  log(`${label}: usearch exactSearch single-query latency`);
  const usearchLatency = latencyOf(
    sampleLatency((i) => usearchExactSearch(base, oneQuery(i), dim, k, threads), settings.peerLatency),
  );

  // plain TypeScript loop: also the float64 ground truth -----------------------------------
  const referenceQueries = Math.max(
    1,
    Math.min(nq, settings.plainTsQueries ?? Math.max(3, Math.floor(settings.plainTsFlopBudget / flopsPerQuery))),
  );
  log(`${label}: plain TS loop on ${referenceQueries} of ${nq} queries`);
  plainTsSearch(base, dim, queries, 0, k, Math.min(n, 2000)); // JIT warm-up on a slice
  const reference: ExactTopK[] = [];
  const plainSamples = sampleLatency(
    (q) => reference.push(plainTsSearch(base, dim, queries, q, k)),
    { maxSamples: referenceQueries, minSamples: referenceQueries, maxSeconds: Number.POSITIVE_INFINITY },
  );
  const plainSeconds = plainSamples.reduce((sum, s) => sum + s, 0);
  const plainBatch = batchOf(plainSeconds, 1, referenceQueries, referenceQueries < nq);
  const plainLatency = latencyOf(plainSamples);

  const recallData = { base, queries, dim, n };
  const rowIds = (all: BigUint64Array) => (q: number) => all.subarray(q * k, (q + 1) * k);
  const ebrixRecall = recallAgainst(reference, rowIds(ebrixIds), recallData, k);
  const usearchRecall = recallAgainst(reference, rowIds(usearchIds!), recallData, k);

  const row = (
    engine: Engine,
    engineThreads: number,
    batch: BatchMeasurement,
    latency: LatencyMeasurement,
    recall: Recall | null,
    notes: string[],
  ): EngineResult => ({
    engine,
    threads: engineThreads,
    batch,
    latency,
    qpsVsUsearch: batch.qps / usearchBatch.qps,
    qpsVsPlainTs: batch.qps / plainBatch.qps,
    latencySpeedupVsUsearch: usearchLatency.p50Ms / latency.p50Ms,
    recall,
    notes,
  });

  const plainNotes = ['float64 accumulation; ground truth for recall'];
  if (plainBatch.extrapolated) plainNotes.push(`timed on ${referenceQueries} of ${nq} queries, QPS scaled`);

  return {
    dataset: data.name,
    description: data.description,
    n,
    dim,
    queries: nq,
    k,
    metric: METRIC,
    prepareSeconds,
    addSeconds,
    addVectorsPerSecond: n / addSeconds,
    simd,
    threads,
    referenceQueries,
    usearchQueriesPerCall: usearchPerCall,
    ceiling: null,
    engines: [
      row('ebrix', threads, ebrixBatch, ebrixLatency, ebrixRecall, [`simd ${simd}`]),
      row(
        'usearch exactSearch',
        threads,
        usearchBatch,
        usearchLatency,
        usearchRecall,
        usearchPerCall < nq ? [`batch run as ${Math.ceil(nq / usearchPerCall)} calls of ≤ ${usearchPerCall} queries (its n×nq scratch)`] : [],
      ),
      row('plain TS loop', 1, plainBatch, plainLatency, null, plainNotes),
    ],
  };
}

export type DatasetPlan = { kind: 'mnist' } | { kind: 'clustered'; n: number; dim: number };

export interface FlatSuiteOptions extends FlatSuiteSettings {
  datasets: DatasetPlan[];
  /** Queries per dataset (the batch size). */
  queries: number;
  seed: number;
}

/**
 * Runs the suite dataset by dataset, loading each only when its turn comes so that at most
 * one base array (and the index's copy of it) is alive at a time.
 */
export async function runFlatSuite(options: FlatSuiteOptions): Promise<FlatDatasetResult[]> {
  const results: FlatDatasetResult[] = [];
  for (const plan of options.datasets) {
    options.log(plan.kind === 'mnist' ? 'mnist: loading' : `clustered ${plan.n}×${plan.dim}: generating`);
    const { value: data, seconds } = await timed(() =>
      plan.kind === 'mnist'
        ? mnistDataset({ nq: options.queries, seed: options.seed })
        : clusteredDataset({ n: plan.n, dim: plan.dim, nq: options.queries, seed: options.seed }),
    );
    results.push(await runFlatOnDataset(data, seconds, options));
  }
  return results;
}

/**
 * Expresses every measurement as a fraction of the ceilings at the suite's thread count. Done
 * after the suite so the ceilings can be the best of measurements taken before and after it.
 */
export function attachCeilings(results: FlatDatasetResult[], ceilings: readonly Ceiling[]): void {
  for (const result of results) {
    const ceiling = ceilingFor(ceilings, result.threads);
    result.ceiling = ceiling;
    for (const engine of result.engines) {
      engine.batch.fractionOfFmaPeak = engine.batch.gflops / ceiling.fmaGflops;
      engine.latency.fractionOfReadBandwidth = engine.latency.gbPerSecond / ceiling.readGbPerSecond;
    }
  }
}
