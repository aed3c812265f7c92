// Recall–QPS curves: the exact ground truth (FlatIndex), one sweep of a search-time knob
// (nprobe, ef) timed as single-thread single queries and as batches, and reading a curve at a
// target recall. Engine-agnostic: the ivfpq suite plugs ebrix and its peers into it.

import { FlatIndex } from '../lib/index.js';
import type { Dataset } from './datasets.js';
import type { ExactTopK } from './peers.js';
import { recallAgainst, type Recall } from './recall.js';
import { median, repeatTimed, sampleLatency, type RepeatPolicy } from './timing.js';

export type CurveMetric = 'ip' | 'l2';

/** Exact float64 score of base row `row` for query `query`, higher is better (l2: −squared distance). */
export function exactScorer(data: Dataset, metric: CurveMetric): (row: number, query: number) => number {
  const { base, queries, dim } = data;
  if (metric === 'ip') {
    return (row, query) => {
      let s = 0;
      const b = row * dim;
      const q = query * dim;
      for (let j = 0; j < dim; j++) s += base[b + j]! * queries[q + j]!;
      return s;
    };
  }
  return (row, query) => {
    let s = 0;
    const b = row * dim;
    const q = query * dim;
    for (let j = 0; j < dim; j++) {
      const d = base[b + j]! - queries[q + j]!;
      s += d * d;
    }
    return -s;
  };
}

/**
 * Exact top-k of every query with ebrix's FlatIndex (all threads), the ground truth every
 * engine's recall is measured against; the reference scores are then recomputed in float64
 * so that ties on the k-th score are judged exactly.
 */
export async function exactGroundTruth(
  data: Dataset,
  metric: CurveMetric,
  k: number,
  threads: number,
): Promise<ExactTopK[]> {
  const { n, dim, nq, base, queries } = data;
  const index = new FlatIndex({ dim, metric, threads });
  try {
    const ids = new BigUint64Array(n);
    for (let i = 0; i < n; i++) ids[i] = BigInt(i);
    await index.add(ids, base);
    const result = await index.search(queries, k, { threads });
    const score = exactScorer(data, metric);
    const reference: ExactTopK[] = [];
    for (let q = 0; q < nq; q++) {
      const rows = Array.from(result.ids.subarray(q * k, (q + 1) * k), Number).filter((row) => row < n);
      const scored = rows.map((row) => ({ row, s: score(row, q) })).sort((a, b) => b.s - a.s);
      reference.push({ ids: Uint32Array.from(scored, (e) => e.row), scores: Float64Array.from(scored, (e) => e.s) });
    }
    return reference;
  } finally {
    index.dispose();
  }
}

/** One engine as a sweep sees it: a knob to set, then single and batch searches. */
export interface SweepTarget {
  /** Sets the knob (nprobe, ef) for the searches that follow. */
  set(value: number): void;
  /** Query `queryRow` alone, on one thread. */
  searchOne(queryRow: number, k: number): ArrayLike<number | bigint>;
  /** The first `count` queries in one call (the engine's batch path and threads). */
  searchBatch(count: number, k: number): Promise<(q: number) => ArrayLike<number | bigint>> | ((q: number) => ArrayLike<number | bigint>);
}

export interface SweepPolicy {
  /** Single queries per point: at most this many, fewer once maxSeconds is spent... */
  singleQueries: number;
  singleMaxSeconds: number;
  /** ...but never fewer than this many. */
  singleMinQueries: number;
  /** Queries in the batch (the first ones; at most all of them)... */
  batchQueries: number;
  /** ...and timed runs of it. */
  batch: RepeatPolicy;
  /** Untimed queries before each point's timings. */
  warmupQueries: number;
}

export interface SinglePoint {
  queries: number;
  /** Sum of the per-query times. */
  seconds: number;
  qps: number;
  p50Ms: number;
  /** On the queries it ran (the first `queries`). */
  recall: Recall;
}

export interface BatchPoint {
  queries: number;
  /** Median over the runs. */
  seconds: number;
  runs: number;
  qps: number;
  recall: Recall;
}

export interface SweepPoint {
  /** The knob's value (nprobe or ef). */
  value: number;
  /** ebrix IVF-PQ: the refine factor the point ran with (the suite sweeps it next to nprobe). */
  refineFactor?: number;
  single: SinglePoint;
  batch: BatchPoint;
}

/** A sweep point's settings in words: `nprobe 8`, or `nprobe 8, refine × 16` for a point with a refine factor. */
export function knobOf(param: string, p: SweepPoint): string {
  return `${param} ${p.value}${p.refineFactor === undefined ? '' : `, refine × ${p.refineFactor}`}`;
}

/**
 * Runs every knob value: warm-up, single-thread single queries (each timed apart, recall on
 * those queries), then the batch (median of runs, recall on the batch's queries).
 */
export async function sweep(
  target: SweepTarget,
  values: readonly number[],
  data: Dataset,
  reference: readonly ExactTopK[],
  score: (row: number, query: number) => number,
  k: number,
  policy: SweepPolicy,
  onPoint?: (point: SweepPoint) => void,
): Promise<SweepPoint[]> {
  const { nq } = data;
  const points: SweepPoint[] = [];
  const recallOf = (idsOf: (q: number) => ArrayLike<number | bigint>, queries: number): Recall =>
    recallAgainst(reference.slice(0, queries), idsOf, data, k, score);
  for (const value of values) {
    target.set(value);
    const warmup = Math.min(nq, policy.warmupQueries);
    for (let q = 0; q < warmup; q++) target.searchOne(q, k);

    const singleIds: Array<ArrayLike<number | bigint>> = [];
    const samples = sampleLatency((q) => singleIds.push(target.searchOne(q, k)), {
      maxSamples: Math.min(nq, policy.singleQueries),
      minSamples: Math.min(nq, policy.singleMinQueries),
      maxSeconds: policy.singleMaxSeconds,
    });
    const singleSeconds = samples.reduce((sum, s) => sum + s, 0);
    const single: SinglePoint = {
      queries: samples.length,
      seconds: singleSeconds,
      qps: samples.length / singleSeconds,
      p50Ms: median(samples) * 1e3,
      recall: recallOf((q) => singleIds[q]!, samples.length),
    };

    await target.searchBatch(warmup, k);
    const batchQueries = Math.min(nq, policy.batchQueries);
    let batchIds: ((q: number) => ArrayLike<number | bigint>) | undefined;
    const runs = await repeatTimed(async () => {
      batchIds = await target.searchBatch(batchQueries, k);
    }, policy.batch);
    const batchSeconds = median(runs);
    const point: SweepPoint = {
      value,
      single,
      batch: {
        queries: batchQueries,
        seconds: batchSeconds,
        runs: runs.length,
        qps: batchQueries / batchSeconds,
        recall: recallOf(batchIds!, batchQueries),
      },
    };
    points.push(point);
    onPoint?.(point);
  }
  return points;
}

export interface CurveReading {
  /** QPS at the target recall, or null when no point reaches it. */
  qps: number | null;
  /**
   * 'interpolated': between the two frontier points around the target (log QPS linear in
   * recall); 'first point': every point is already above the target, so this is the fastest
   * of them (a lower bound); 'not reached': the best recall on the curve is below the target.
   */
  how: 'interpolated' | 'first point' | 'not reached';
  /** Best recall on the curve. */
  maxRecall: number;
  /** Knob values of the points read (one or two). */
  between: number[];
}

/**
 * Reads a curve at `target` recall on its Pareto frontier (a point is dropped when another has
 * at least its recall and more QPS), interpolating log QPS linearly in recall.
 */
export function qpsAtRecall(
  points: ReadonlyArray<{ value: number; recall: number; qps: number }>,
  target: number,
): CurveReading {
  const valid = points.filter((p) => Number.isFinite(p.recall) && Number.isFinite(p.qps) && p.qps > 0);
  const maxRecall = valid.reduce((m, p) => Math.max(m, p.recall), Number.NEGATIVE_INFINITY);
  const frontier = valid
    .filter((p) => !valid.some((o) => o !== p && o.recall >= p.recall && o.qps > p.qps))
    .sort((a, b) => a.recall - b.recall || b.qps - a.qps);
  const above = frontier.findIndex((p) => p.recall >= target);
  if (above < 0) return { qps: null, how: 'not reached', maxRecall, between: [] };
  const hi = frontier[above]!;
  if (above === 0) return { qps: hi.qps, how: 'first point', maxRecall, between: [hi.value] };
  const lo = frontier[above - 1]!;
  const t = (target - lo.recall) / (hi.recall - lo.recall);
  const qps = Math.exp(Math.log(lo.qps) + t * (Math.log(hi.qps) - Math.log(lo.qps)));
  return { qps, how: 'interpolated', maxRecall, between: [lo.value, hi.value] };
}
