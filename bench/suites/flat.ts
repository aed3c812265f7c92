// Suite "flat": exact inner-product top-k over a FlatIndex, with usearch exactSearch and a
// plain TypeScript loop measured side by side on the same arrays in the same process. The
// FlatIndex runs twice: float32 rows ('ebrix') and 8-bit scalar-quantizer codes ('ebrix
// i8', trained on a sample of the base), whose recall shows what the quarter memory costs.

import { FlatIndex } from '../../lib/index.js';
import { clusteredDataset, mnistDataset, type Dataset } from '../datasets.js';
import { ceilingFor, type Ceiling } from '../machine.js';
import { plainTsSearch, usearchExactSearch, usearchQueriesPerCall, type ExactTopK } from '../peers.js';
import { recallAgainst, type Recall } from '../recall.js';
import { median, percentile, repeatTimed, sampleLatency, timed, type LatencyPolicy, type RepeatPolicy } from '../timing.js';

export const ENGINES = ['ebrix', 'ebrix i8', 'usearch exactSearch', 'plain TS loop'] as const;
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
  /** Base bytes scanned per query (4 per value for float32, 1 for i8) / p50. */
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
  /** The i8 index: train on `i8TrainVectors` of the base, then add of the whole base. */
  i8TrainVectors: number;
  i8TrainSeconds: number;
  i8AddSeconds: number;
  /** memoryUsage().bytes of the float32 and the i8 index, per vector. */
  bytesPerVector: number;
  i8BytesPerVector: number;
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
/** The i8 quantizer's ranges come from at most this many base vectors, as a user would train. */
const I8_TRAIN_VECTORS = 50_000;

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
  const latencyOf = (samples: number[], bytes = bytesPerQuery): LatencyMeasurement => {
    const p50 = percentile(samples, 50);
    const gbPerSecond = bytes / p50 / 1e9;
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
  let bytesPerVector: number;
  const simd = index.simd!; // a CPU index: it always has a SIMD level
  try {
    log(`${label}: ebrix add`);
    addSeconds = (await timed(() => index.add(ids, base))).seconds;
    bytesPerVector = index.memoryUsage().bytes / n;

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

  // ebrix i8 ---------------------------------------------------------------------------------
  const i8TrainVectors = Math.min(n, I8_TRAIN_VECTORS);
  const i8 = new FlatIndex({ dim, metric: METRIC, threads, storage: 'i8' });
  let i8Batch: BatchMeasurement;
  let i8Latency: LatencyMeasurement;
  let i8Ids: BigUint64Array;
  let i8TrainSeconds: number;
  let i8AddSeconds: number;
  let i8BytesPerVector: number;
  try {
    log(`${label}: ebrix i8 train on ${i8TrainVectors} vectors, add`);
    i8TrainSeconds = (await timed(() => i8.train(base.subarray(0, i8TrainVectors * dim)))).seconds;
    i8AddSeconds = (await timed(() => i8.add(ids, base))).seconds;
    i8BytesPerVector = i8.memoryUsage().bytes / n;

    log(`${label}: ebrix i8 batch of ${nq} queries`);
    await i8.search(warmupQueries, k, { threads });
    let last: Awaited<ReturnType<FlatIndex['search']>> | undefined;
    const runs = await repeatTimed(async () => {
      last = await i8.search(queries, k, { threads });
    }, settings.batch);
    i8Batch = batchOf(median(runs), runs.length, nq, false);
    i8Ids = last!.ids;

    log(`${label}: ebrix i8 single-query latency`);
    i8.searchSync(oneQuery(0), k);
    i8Latency = latencyOf(
      sampleLatency((i) => i8.searchSync(oneQuery(i), k), settings.latency),
      n * dim,
    );
  } finally {
    i8.dispose();
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
  const i8Recall = recallAgainst(reference, rowIds(i8Ids), recallData, k);
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
    i8TrainVectors,
    i8TrainSeconds,
    i8AddSeconds,
    bytesPerVector,
    i8BytesPerVector,
    simd,
    threads,
    referenceQueries,
    usearchQueriesPerCall: usearchPerCall,
    ceiling: null,
    engines: [
      row('ebrix', threads, ebrixBatch, ebrixLatency, ebrixRecall, [`simd ${simd}`]),
      row('ebrix i8', threads, i8Batch, i8Latency, i8Recall, [
        `simd ${simd}; GFLOP/s counts int8 multiply-adds as 2 ops`,
        `${i8BytesPerVector.toFixed(1)} B per vector vs ${bytesPerVector.toFixed(1)} for float32; ` +
          `trained on ${i8TrainVectors} vectors in ${i8TrainSeconds.toFixed(3)} s, add ${i8AddSeconds.toFixed(2)} s`,
        `QPS ${(i8Batch.qps / ebrixBatch.qps).toFixed(2)}× and p50 ${(ebrixLatency.p50Ms / i8Latency.p50Ms).toFixed(2)}× of float32 ebrix`,
      ]),
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
