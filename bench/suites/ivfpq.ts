// Suite "ivfpq": recall@10 against QPS curves of ebrix's IvfPqIndex (8-bit ADC and 4-bit
// fast-scan codes, f16 refine), of ebrix's HnswIndex (usearch's graph compiled into the addon,
// with ebrix's kernels) and of two HNSW peers, usearch's own npm package (f32 and i8 vectors)
// and hnswlib-node, built on the same arrays in the same process with the same graph
// settings, every recall measured against the same exact ground truth (FlatIndex). Also:
// build / train time and memory per vector of each, ebrix HNSW against usearch f32 at equal
// ef (what the binding and the kernels add or save on the same algorithm), the 4-bit vs 8-bit
// code-scoring speed at equal code size, and the training time of the reference
// configuration (1,000,000 × 128, nlist 1024, m 32).

import { HnswIndex, IvfPqIndex } from '../../lib/index.js';
import { buildHnswlib, buildUsearchHnsw, type GraphBuildSettings, type GraphPeer } from '../ann-peers.js';
import {
  exactGroundTruth,
  exactScorer,
  knobOf,
  qpsAtRecall,
  sweep,
  type CurveMetric,
  type CurveReading,
  type SweepPoint,
  type SweepPolicy,
  type SweepTarget,
} from '../curves.js';
import { clusteredDataset, mnistDataset, type Dataset } from '../datasets.js';
import type { ExactTopK } from '../peers.js';
import { median, timed } from '../timing.js';
import type { DatasetPlan } from './flat.js';

export const TARGET_RECALL = 0.95;
export const NPROBES = [1, 2, 4, 8, 16, 32, 64, 128] as const;
/**
 * Graph search depths swept for every HNSW engine. The frontier is read by interpolating
 * between sweep points, which under-reads a curved frontier where the points are far apart:
 * 24 and 48 fill the region where recall crosses 0.95 on the bench's sets.
 */
export const EFS = [10, 16, 24, 32, 48, 64, 128, 256, 512] as const;
/**
 * Refine factors swept with every nprobe (k × factor candidates re-ranked on the f16 vectors);
 * 12 and 24 refine the grid where recall crosses 0.95, as EFS's 24 and 48 do for the graphs.
 */
export const REFINE_FACTORS = [4, 8, 12, 16, 24, 32, 64] as const;

/** 'ebrix': IvfPqIndex; 'ebrix-hnsw': HnswIndex; the rest are peers. */
export type CurveFamily = 'ebrix' | 'ebrix-hnsw' | 'usearch' | 'hnswlib';

export interface IvfPqSuiteSettings {
  k: number;
  /** Threads for ebrix (train, add, batch search), usearch (build, batch search) and FlatIndex. */
  threads: number;
  seed: number;
  /** nprobe values swept (clamped to nlist, duplicates dropped). */
  nprobes: readonly number[];
  /** ef / expansion_search values swept for the HNSW peers (values below k are raised to k). */
  efs: readonly number[];
  /**
   * ebrix refine re-ranks k × refineFactor candidates: each factor is swept with every nprobe
   * (how many candidates the codes must hand over depends on how well they rank the data, so
   * the bench reads the frontier over both knobs, as a user tuning for a recall would).
   */
  refineFactors: readonly number[];
  /** ebrix trains on the first min(n, nlist × this) base rows... */
  trainPointsPerList: number;
  /** ...with at most this many Lloyd iterations (coarse k-means and PQ codebooks). */
  trainIterations: number;
  /** ebrix's HnswIndex and both HNSW peers get the same graph settings. */
  graph: GraphBuildSettings;
  sweep: SweepPolicy;
  /** Single queries timed per index for the code-scoring speed (nprobe = nlist). */
  scoringQueries: number;
  /** Lists of the long-list indexes the scoring speed is measured on (n / this codes per list). */
  scoringNlist: number;
  /** Measure the reference training (1,000,000 × 128, nlist 1024, m 32) on this dataset, if any. */
  trainTarget: { n: number; dim: number; nlist: number; m: number } | null;
  log: (line: string) => void;
}

export interface CurveResult {
  engine: string;
  family: CurveFamily;
  /** Index settings in words. */
  config: string;
  /** The knob swept. */
  param: 'nprobe' | 'ef';
  /** ebrix: k-means + PQ training on the sample (null for the graphs, which have none). */
  trainSeconds: number | null;
  /** ebrix: add of the whole base (HNSW: the graph build); peers: the graph build. */
  buildSeconds: number;
  buildThreads: number;
  /** Bytes per base vector: ebrix memoryUsage().bytes / n (in memory); peers: serialized index / n. */
  bytesPerVector: number;
  memorySource: string;
  /** ebrix only: PQ codes per vector (memoryUsage().codes / n), and the parts in bytes. */
  codeBytesPerVector: number | null;
  memoryParts: Record<string, number> | null;
  points: SweepPoint[];
  /** At TARGET_RECALL: single-thread single-query QPS, and batch QPS. */
  atTarget: { single: CurveReading; batch: CurveReading };
  notes: string[];
}

export interface ScoringTiming {
  medianSeconds: number;
  nsPerCode: number;
}

export interface ScoringSpeed {
  codeBytes: number;
  queries: number;
  /**
   * Dedicated indexes with few, long lists (`nlist` = settings.scoringNlist, refine none, codebooks
   * trained briefly on a small sample: their quality does not change the scan's speed), so the
   * scan of n codes dominates the search: the code-scoring speed.
   */
  longLists: {
    nlist: number;
    eightBit: { m: number } & ScoringTiming;
    fourBit: { m: number } & ScoringTiming;
    /** 8-bit ns per code / 4-bit ns per code (above 1: fast-scan is faster). */
    fourBitSpeedup: number;
  };
  /** The sweep's own indexes at nprobe = nlist: per-list table building and list overheads included. */
  sweepIndexes: {
    nlist: number;
    eightBit: ScoringTiming;
    fourBit: ScoringTiming;
    fourBitSpeedup: number;
  };
}

export interface TargetRatio {
  peer: string;
  peerQps: number | null;
  peerHow: CurveReading['how'];
  /** ebrix QPS / peer QPS at the target recall; null when either curve misses it. */
  ratio: number | null;
}

export interface TargetSummary {
  mode: 'single' | 'batch';
  recall: number;
  /** The best ebrix curve at the target (highest QPS). */
  ebrix: { engine: string; qps: number | null; how: CurveReading['how'] };
  peers: TargetRatio[];
}

/** ebrix HNSW f32 against usearch HNSW f32 at one ef: same algorithm, same graph settings. */
export interface GraphEfRatio {
  ef: number;
  ebrixRecall: number;
  usearchRecall: number;
  /** ebrix QPS / usearch QPS, single-thread single queries and batch. */
  single: number;
  batch: number;
}

export interface IvfPqDatasetResult {
  dataset: string;
  description: string;
  n: number;
  dim: number;
  queries: number;
  k: number;
  metric: CurveMetric;
  prepareSeconds: number;
  groundTruthSeconds: number;
  threads: number;
  nlist: number;
  trainPoints: number;
  curves: CurveResult[];
  scoring: ScoringSpeed | null;
  /** The best IvfPqIndex curve against the peers. */
  targets: TargetSummary[];
  /** HnswIndex against the peers. */
  graphTargets: TargetSummary[];
  /** HnswIndex / usearch HNSW f32 at each ef both ran. */
  graphEfRatios: GraphEfRatio[];
}

export interface TrainTargetResult {
  dataset: string;
  n: number;
  dim: number;
  nlist: number;
  m: number;
  nbits: 8;
  trainingVectors: number;
  seconds: number;
  threads: number;
}

export interface IvfPqSuiteResult {
  targetRecall: number;
  settings: {
    nprobes: readonly number[];
    efs: readonly number[];
    refineFactors: readonly number[];
    trainPointsPerList: number;
    trainIterations: number;
    graph: GraphBuildSettings;
    sweep: SweepPolicy;
  };
  datasets: IvfPqDatasetResult[];
  trainTarget: TrainTargetResult | null;
}

/**
 * ≈ 2·√n rounded to the nearest power of two (in log scale), at least 16 and at most n / 8.
 * A single query costs about nlist · dim for the coarse search plus nprobe · n / nlist codes
 * scanned; with the measured per-centroid and per-code costs on this CPU (≈ 0.08 ns per
 * centroid dimension; 4-bit fast-scan ≈ 4 ns per 32-byte code, ≈ 12 ns per 98-byte one) the
 * two balance near nlist ≈ √(0.4 · nprobe · n) for 128-d and √(0.2 · nprobe · n) for 784-d,
 * 1.3–2.5·√n at the nprobe ≈ 8–16 that high recall takes. Both configurations share the lists, and the faster one (4-bit) is what the targets
 * read; 8-bit ADC codes, ≈ 6× slower per code, would balance near 5·√n (the CLI keeps 4·√n for
 * its 8-bit indexes), nearer the 4·√n–16·√n of Faiss's guidelines, which target sets where
 * the scan dominates.
 */
export function nlistFor(n: number): number {
  const ideal = 2 * Math.sqrt(n);
  let nlist = 2 ** Math.round(Math.log2(ideal));
  while (nlist > 16 && nlist * 8 > n) nlist /= 2;
  return Math.max(16, nlist);
}

/**
 * PQ code bytes per vector, equal for both configurations: 8-bit codes with m = bytes and
 * 4-bit codes with m = 2 × bytes. dim/4 bytes up to 256-d (128-d: 32 bytes, m 32 / 64), dim/8
 * above (784-d: 98 bytes, m 98 / 196; 768-d: 96, m 96 / 192); the nearest value for which
 * 2 × bytes divides dim.
 */
export function codeBytesFor(dim: number): number {
  const wanted = dim <= 256 ? dim / 4 : dim / 8;
  let best = 0;
  for (let bytes = 1; 2 * bytes <= dim; bytes++) {
    if (dim % (2 * bytes) !== 0) continue;
    if (best === 0 || Math.abs(bytes - wanted) < Math.abs(best - wanted)) best = bytes;
  }
  if (best === 0) throw new Error(`No PQ code size with 2 × bytes dividing dim ${dim}: the ivfpq suite needs an even dim`);
  return best;
}

interface EbrixConfig {
  nbits: 4 | 8;
  m: number;
}

function rowIds(n: number): BigUint64Array {
  const ids = new BigUint64Array(n);
  for (let i = 0; i < n; i++) ids[i] = BigInt(i);
  return ids;
}

function readings(points: readonly SweepPoint[]): CurveResult['atTarget'] {
  return {
    single: qpsAtRecall(points.map((p) => ({ value: p.value, recall: p.single.recall.tieAware, qps: p.single.qps })), TARGET_RECALL),
    batch: qpsAtRecall(points.map((p) => ({ value: p.value, recall: p.batch.recall.tieAware, qps: p.batch.qps })), TARGET_RECALL),
  };
}

function pointLine(param: string, p: SweepPoint): string {
  return (
    `${knobOf(param, p)}: recall ${p.batch.recall.tieAware.toFixed(3)}, ` +
    `1-thread ${Math.round(p.single.qps).toLocaleString('en-US')} q/s, batch ${Math.round(p.batch.qps).toLocaleString('en-US')} q/s`
  );
}

interface DatasetContext {
  data: Dataset;
  metric: CurveMetric;
  reference: ExactTopK[];
  score: (row: number, query: number) => number;
  label: string;
}

/** Median single-thread time of one query with every list probed, and per code. */
function timeFullScan(index: IvfPqIndex, data: Dataset, nlist: number, k: number, queries: number): ScoringTiming {
  const { dim, n } = data;
  const one = (q: number): Float32Array => data.queries.subarray(q * dim, (q + 1) * dim);
  index.searchSync(one(0), k, { nprobe: nlist, refineFactor: 1, threads: 1 });
  const samples: number[] = [];
  for (let i = 0; i < queries; i++) {
    const q = i % data.nq;
    const start = process.hrtime.bigint();
    index.searchSync(one(q), k, { nprobe: nlist, refineFactor: 1, threads: 1 });
    samples.push(Number(process.hrtime.bigint() - start) / 1e9);
  }
  const medianSeconds = median(samples);
  return { medianSeconds, nsPerCode: (medianSeconds * 1e9) / n };
}

/** The code-scoring speed on an index with few, long lists (see ScoringSpeed.longLists). */
async function longListScoring(ctx: DatasetContext, config: EbrixConfig, settings: IvfPqSuiteSettings): Promise<ScoringTiming> {
  const { data, metric, label } = ctx;
  const { n, dim, base } = data;
  const nlist = Math.min(settings.scoringNlist, Math.floor(n / 256));
  const sample = Math.min(n, 4096);
  settings.log(`${label}: code scoring, ${config.nbits}-bit m ${config.m}, nlist ${nlist} (long lists)`);
  const index = new IvfPqIndex({ dim, metric, nlist, m: config.m, nbits: config.nbits, refine: 'none', threads: settings.threads });
  try {
    await index.train(base.subarray(0, sample * dim), { seed: settings.seed, maxIterations: 2 });
    await index.add(rowIds(n), base);
    return timeFullScan(index, data, nlist, settings.k, settings.scoringQueries);
  } finally {
    index.dispose();
  }
}

async function runEbrixConfig(
  ctx: DatasetContext,
  config: EbrixConfig,
  nlist: number,
  trainPoints: number,
  settings: IvfPqSuiteSettings,
): Promise<{ curve: CurveResult; scoring: ScoringTiming }> {
  const { data, metric, reference, score, label } = ctx;
  const { n, dim, base, queries } = data;
  const { k, threads, refineFactors, log } = settings;
  const engine = `ebrix IVF-PQ ${config.nbits}-bit`;
  const index = new IvfPqIndex({ dim, metric, nlist, m: config.m, nbits: config.nbits, refine: 'f16', threads });
  try {
    log(`${label}: ${engine} (m ${config.m}, nlist ${nlist}): train on ${trainPoints.toLocaleString('en-US')} vectors`);
    const trainSeconds = (
      await timed(() =>
        index.train(base.subarray(0, trainPoints * dim), { seed: settings.seed, maxIterations: settings.trainIterations }),
      )
    ).seconds;
    log(`${label}: ${engine}: add ${n.toLocaleString('en-US')} vectors (trained in ${trainSeconds.toFixed(2)} s)`);
    const addSeconds = (await timed(() => index.add(rowIds(n), base))).seconds;
    const memory = index.memoryUsage();

    let nprobe = 1;
    let refineFactor = refineFactors[0]!;
    const one = (q: number): Float32Array => queries.subarray(q * dim, (q + 1) * dim);
    const target: SweepTarget = {
      set(value) {
        nprobe = value;
      },
      searchOne(q, kk) {
        return index.searchSync(one(q), kk, { nprobe, refineFactor, threads: 1 }).ids;
      },
      async searchBatch(count, kk) {
        const result = await index.search(queries.subarray(0, count * dim), kk, { nprobe, refineFactor, threads });
        return (q) => result.ids.subarray(q * kk, (q + 1) * kk);
      },
    };
    const nprobes = [...new Set(settings.nprobes.map((v) => Math.min(v, nlist)))];
    const points: SweepPoint[] = [];
    for (const factor of refineFactors) {
      refineFactor = factor;
      log(`${label}: ${engine}: refine × ${factor}, sweep nprobe ${nprobes.join(', ')}`);
      const swept = await sweep(target, nprobes, data, reference, score, k, settings.sweep, (p) =>
        log(`${label}: ${engine}: ${pointLine('nprobe', { ...p, refineFactor: factor })}`),
      );
      points.push(...swept.map((p) => ({ ...p, refineFactor: factor })));
    }

    // Every list probed, 1 thread, one query: the whole scan plus the per-list costs.
    log(`${label}: ${engine}: nprobe = nlist = ${nlist}`);
    const scoring = timeFullScan(index, data, nlist, k, settings.scoringQueries);

    const curve: CurveResult = {
      engine,
      family: 'ebrix',
      config: `nlist ${nlist}, m ${config.m} × ${config.nbits} bits (${(config.m * config.nbits) / 8} B codes), refine f16 × ${refineFactors.join(' / ')}`,
      param: 'nprobe',
      trainSeconds,
      buildSeconds: addSeconds,
      buildThreads: threads,
      bytesPerVector: memory.bytes / n,
      memorySource: 'memoryUsage().bytes / n',
      codeBytesPerVector: memory.codes / n,
      memoryParts: { ...memory },
      points,
      atTarget: readings(points),
      notes: [
        `trained on the first ${trainPoints.toLocaleString('en-US')} base vectors, ≤ ${settings.trainIterations} iterations, seed ${settings.seed}`,
        `1-thread: searchSync, threads 1; batch: one search call, ${threads} threads`,
      ],
    };
    return { curve, scoring };
  } finally {
    index.dispose();
  }
}

async function runEbrixHnsw(ctx: DatasetContext, settings: IvfPqSuiteSettings): Promise<CurveResult> {
  const { data, metric, reference, score, label } = ctx;
  const { n, dim, base, queries } = data;
  const { k, threads, log, graph } = settings;
  const engine = 'ebrix HNSW f32';
  const config = `connectivity ${graph.connectivity}, expansionAdd ${graph.expansionAdd}, f32 vectors`;
  const index = new HnswIndex({ dim, metric, connectivity: graph.connectivity, expansionAdd: graph.expansionAdd, threads });
  try {
    log(`${label}: ${engine}: build (${config})`);
    const buildSeconds = (await timed(() => index.add(rowIds(n), base))).seconds;
    log(`${label}: ${engine}: built in ${buildSeconds.toFixed(2)} s on ${threads} thread(s)`);
    const memory = index.memoryUsage();
    let expansion = 64;
    const one = (q: number): Float32Array => queries.subarray(q * dim, (q + 1) * dim);
    const target: SweepTarget = {
      set(value) {
        expansion = value;
      },
      searchOne(q, kk) {
        return index.searchSync(one(q), kk, { expansion, threads: 1 }).ids;
      },
      async searchBatch(count, kk) {
        const result = await index.search(queries.subarray(0, count * dim), kk, { expansion, threads });
        return (q) => result.ids.subarray(q * kk, (q + 1) * kk);
      },
    };
    const efs = [...new Set(settings.efs.map((ef) => Math.max(ef, k)))];
    log(`${label}: ${engine}: sweep ef ${efs.join(', ')}`);
    const points = await sweep(target, efs, data, reference, score, k, settings.sweep, (p) =>
      log(`${label}: ${engine}: ${pointLine('ef', p)}`),
    );
    return {
      engine,
      family: 'ebrix-hnsw',
      config,
      param: 'ef',
      trainSeconds: null,
      buildSeconds,
      buildThreads: threads,
      bytesPerVector: memory.bytes / n,
      memorySource: 'memoryUsage().bytes / n',
      codeBytesPerVector: null,
      memoryParts: null,
      points,
      atTarget: readings(points),
      notes: [`1-thread: searchSync, threads 1; batch: one search call, ${threads} threads`],
    };
  } finally {
    index.dispose();
  }
}

async function runGraphPeer(
  ctx: DatasetContext,
  engine: string,
  family: CurveFamily,
  config: string,
  build: () => GraphPeer,
  settings: IvfPqSuiteSettings,
): Promise<CurveResult> {
  const { data, reference, score, label } = ctx;
  const { k, log } = settings;
  log(`${label}: ${engine}: build (${config})`);
  const peer = build();
  try {
    log(`${label}: ${engine}: built in ${peer.buildSeconds.toFixed(2)} s on ${peer.buildThreads} thread(s)`);
    const efs = [...new Set(settings.efs.map((ef) => Math.max(ef, k)))];
    const target: SweepTarget = {
      set: (ef) => peer.useEf(ef),
      searchOne: (q, kk) => peer.searchOne(q, kk),
      searchBatch: (count, kk) => peer.searchBatch(count, kk),
    };
    log(`${label}: ${engine}: sweep ef ${efs.join(', ')}`);
    const points = await sweep(target, efs, data, reference, score, k, settings.sweep, (p) =>
      log(`${label}: ${engine}: ${pointLine('ef', p)}`),
    );
    return {
      engine,
      family,
      config,
      param: 'ef',
      trainSeconds: null,
      buildSeconds: peer.buildSeconds,
      buildThreads: peer.buildThreads,
      bytesPerVector: peer.serializedBytes / data.n,
      memorySource: 'serialized index / n',
      codeBytesPerVector: null,
      memoryParts: null,
      points,
      atTarget: readings(points),
      notes: [`1-thread: one query per call, threads 1; batch: ${peer.batchNote}`],
    };
  } finally {
    peer.close();
  }
}

/** The best curve of `family` at the target against each peer (usearch, hnswlib). */
function summarize(curves: readonly CurveResult[], mode: 'single' | 'batch', family: 'ebrix' | 'ebrix-hnsw'): TargetSummary {
  const ebrixCurves = curves.filter((c) => c.family === family);
  const best = ebrixCurves.reduce<CurveResult | undefined>((bestSoFar, c) => {
    const qps = c.atTarget[mode].qps;
    if (qps === null) return bestSoFar;
    const bestQps = bestSoFar?.atTarget[mode].qps ?? null;
    return bestQps === null || qps > bestQps ? c : bestSoFar;
  }, undefined);
  const ebrixQps = best?.atTarget[mode].qps ?? null;
  return {
    mode,
    recall: TARGET_RECALL,
    ebrix: {
      engine: best?.engine ?? ebrixCurves.map((c) => c.engine).join(' / '),
      qps: ebrixQps,
      how: best?.atTarget[mode].how ?? 'not reached',
    },
    peers: curves
      .filter((c) => c.family === 'usearch' || c.family === 'hnswlib')
      .map((c) => {
        const reading = c.atTarget[mode];
        return {
          peer: c.engine,
          peerQps: reading.qps,
          peerHow: reading.how,
          ratio: ebrixQps !== null && reading.qps !== null ? ebrixQps / reading.qps : null,
        };
      }),
  };
}

function efRatios(curves: readonly CurveResult[]): GraphEfRatio[] {
  const ours = curves.find((c) => c.engine === 'ebrix HNSW f32');
  const theirs = curves.find((c) => c.engine === 'usearch HNSW f32');
  if (!ours || !theirs) return [];
  return ours.points.flatMap((p) => {
    const q = theirs.points.find((o) => o.value === p.value);
    if (!q) return [];
    return [
      {
        ef: p.value,
        ebrixRecall: p.batch.recall.tieAware,
        usearchRecall: q.batch.recall.tieAware,
        single: p.single.qps / q.single.qps,
        batch: p.batch.qps / q.batch.qps,
      },
    ];
  });
}

export async function runIvfPqOnDataset(
  data: Dataset,
  metric: CurveMetric,
  prepareSeconds: number,
  settings: IvfPqSuiteSettings,
): Promise<IvfPqDatasetResult> {
  const { k, threads, log } = settings;
  const { n, dim, nq, base, queries } = data;
  const label = `${data.name} ${n}×${dim}`;
  if (n < k) throw new Error(`Expected at least k = ${k} base vectors for ${data.name} but received ${n}`);

  log(`${label}: exact ground truth (FlatIndex, metric ${metric}, ${nq} queries)`);
  const gt = await timed(() => exactGroundTruth(data, metric, k, threads));
  const ctx: DatasetContext = { data, metric, reference: gt.value, score: exactScorer(data, metric), label };

  const nlist = nlistFor(n);
  const codeBytes = codeBytesFor(dim);
  const trainPoints = Math.min(n, Math.max(nlist * settings.trainPointsPerList, 256 * 16));
  const curves: CurveResult[] = [];
  const eight = await runEbrixConfig(ctx, { nbits: 8, m: codeBytes }, nlist, trainPoints, settings);
  curves.push(eight.curve);
  const four = await runEbrixConfig(ctx, { nbits: 4, m: 2 * codeBytes }, nlist, trainPoints, settings);
  curves.push(four.curve);

  const longEight = await longListScoring(ctx, { nbits: 8, m: codeBytes }, settings);
  const longFour = await longListScoring(ctx, { nbits: 4, m: 2 * codeBytes }, settings);

  curves.push(await runEbrixHnsw(ctx, settings));

  const graph = settings.graph;
  const graphConfig = `connectivity ${graph.connectivity}, expansion_add ${graph.expansionAdd}`;
  for (const quantization of ['f32', 'i8'] as const) {
    curves.push(
      await runGraphPeer(
        ctx,
        `usearch HNSW ${quantization}`,
        'usearch',
        `${graphConfig}, ${quantization} vectors`,
        () => buildUsearchHnsw({ base, queries, dim, metric, quantization, graph, threads }),
        settings,
      ),
    );
  }
  curves.find((c) => c.engine === 'usearch HNSW i8')?.notes.push(
    "usearch casts f32 to i8 by scaling each vector to unit norm (its source: the cast assumes a dot-product-like metric), so the i8 graph ranks by cosine: on ip / l2 data whose norms vary its recall is capped by how cosine order differs from the exact order",
  );
  curves.push(
    await runGraphPeer(
      ctx,
      'hnswlib-node HNSW',
      'hnswlib',
      `M ${graph.connectivity}, efConstruction ${graph.expansionAdd}, f32 vectors`,
      () => buildHnswlib({ base, dim, metric, graph, queries, seed: settings.seed }),
      settings,
    ),
  );

  return {
    dataset: data.name,
    description: data.description,
    n,
    dim,
    queries: nq,
    k,
    metric,
    prepareSeconds,
    groundTruthSeconds: gt.seconds,
    threads,
    nlist,
    trainPoints,
    curves,
    scoring: {
      codeBytes,
      queries: settings.scoringQueries,
      longLists: {
        nlist: Math.min(settings.scoringNlist, Math.floor(n / 256)),
        eightBit: { m: codeBytes, ...longEight },
        fourBit: { m: 2 * codeBytes, ...longFour },
        fourBitSpeedup: longEight.nsPerCode / longFour.nsPerCode,
      },
      sweepIndexes: {
        nlist,
        eightBit: eight.scoring,
        fourBit: four.scoring,
        fourBitSpeedup: eight.scoring.nsPerCode / four.scoring.nsPerCode,
      },
    },
    targets: [summarize(curves, 'single', 'ebrix'), summarize(curves, 'batch', 'ebrix')],
    graphTargets: [summarize(curves, 'single', 'ebrix-hnsw'), summarize(curves, 'batch', 'ebrix-hnsw')],
    graphEfRatios: efRatios(curves),
  };
}

/** Training alone of the reference configuration (8-bit, no refine) on the whole base. */
async function runTrainTarget(data: Dataset, metric: CurveMetric, settings: IvfPqSuiteSettings): Promise<TrainTargetResult> {
  const target = settings.trainTarget!;
  const { n, dim, base } = data;
  settings.log(`${data.name} ${n}×${dim}: training target (nlist ${target.nlist}, m ${target.m}, 8-bit) on all ${n.toLocaleString('en-US')} vectors`);
  const index = new IvfPqIndex({ dim, metric, nlist: target.nlist, m: target.m, nbits: 8, threads: settings.threads });
  try {
    const { seconds } = await timed(() => index.train(base, { seed: settings.seed }));
    settings.log(`${data.name} ${n}×${dim}: training target: ${seconds.toFixed(2)} s`);
    return {
      dataset: data.name,
      n,
      dim,
      nlist: target.nlist,
      m: target.m,
      nbits: 8,
      trainingVectors: n,
      seconds,
      threads: settings.threads,
    };
  } finally {
    index.dispose();
  }
}

export interface IvfPqSuiteOptions extends IvfPqSuiteSettings {
  datasets: DatasetPlan[];
  queries: number;
}

/** MNIST is compared in L2 (the usual ANN setting for it); the clustered sets by inner product. */
export function metricFor(plan: DatasetPlan): CurveMetric {
  return plan.kind === 'mnist' ? 'l2' : 'ip';
}

/** Runs the suite dataset by dataset; at most one base array (and its indexes) alive at a time. */
export async function runIvfPqSuite(options: IvfPqSuiteOptions): Promise<IvfPqSuiteResult> {
  const datasets: IvfPqDatasetResult[] = [];
  let trainTarget: TrainTargetResult | null = null;
  for (const plan of options.datasets) {
    options.log(plan.kind === 'mnist' ? 'mnist: loading' : `clustered ${plan.n}×${plan.dim}: generating`);
    const { value: data, seconds } = await timed(() =>
      plan.kind === 'mnist'
        ? mnistDataset({ nq: options.queries, seed: options.seed })
        : clusteredDataset({ n: plan.n, dim: plan.dim, nq: options.queries, seed: options.seed }),
    );
    const metric = metricFor(plan);
    const target = options.trainTarget;
    if (
      trainTarget === null &&
      target !== null &&
      plan.kind === 'clustered' &&
      plan.n === target.n &&
      plan.dim === target.dim
    ) {
      trainTarget = await runTrainTarget(data, metric, options);
    }
    datasets.push(await runIvfPqOnDataset(data, metric, seconds, options));
  }
  return {
    targetRecall: TARGET_RECALL,
    settings: {
      nprobes: options.nprobes,
      efs: options.efs,
      refineFactors: options.refineFactors,
      trainPointsPerList: options.trainPointsPerList,
      trainIterations: options.trainIterations,
      graph: options.graph,
      sweep: options.sweep,
    },
    datasets,
    trainTarget,
  };
}
