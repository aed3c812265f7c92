/** Plain TypeScript references the native results are checked against, and test data. */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

import { expect } from 'vitest';

import { NO_ID } from '../lib/index.js';
import { seededUniform as rng } from '../lib/random.js';

/** Deterministic PRNG so failures reproduce. */
export { rng };

export type Metric = 'ip' | 'cosine' | 'l2';

export function randomVectors(count: number, dim: number, seed: number): Float32Array {
  const next = rng(seed);
  const out = new Float32Array(count * dim);
  for (let i = 0; i < out.length; i++) out[i] = next() * 2 - 1;
  return out;
}

export function exactScore(metric: Metric, q: Float32Array, x: Float32Array): number {
  let dot = 0;
  let qq = 0;
  let xx = 0;
  let l2 = 0;
  for (let i = 0; i < q.length; i++) {
    dot += q[i]! * x[i]!;
    qq += q[i]! * q[i]!;
    xx += x[i]! * x[i]!;
    l2 += (q[i]! - x[i]!) ** 2;
  }
  if (metric === 'l2') return -l2;
  if (metric === 'cosine') return qq === 0 || xx === 0 ? 0 : dot / Math.sqrt(qq * xx);
  return dot;
}

export interface Ranked {
  id: bigint;
  score: number;
}

/** Brute force: every row scored in float64, sorted best first, ties to the smaller id. */
export function bruteForce(
  metric: Metric,
  data: Float32Array,
  ids: readonly bigint[],
  query: Float32Array,
  dim: number,
): Ranked[] {
  const out: Ranked[] = [];
  for (let r = 0; r < ids.length; r++) {
    out.push({ id: ids[r]!, score: exactScore(metric, query, data.subarray(r * dim, (r + 1) * dim)) });
  }
  out.sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return out;
}

/** Unique, unordered ids so that id order never coincides with row order. */
export function makeIds(n: number): bigint[] {
  return Array.from({ length: n }, (_, i) => BigInt((i * 7919 + 13) % 1_000_003));
}

/**
 * One result row against brute force: scores sorted and right for their ids, nothing clearly
 * better than the k-th true score missing, padding where the index runs short. The tolerance
 * is relative to the largest true score (at least 1).
 */
export function expectRowMatches(
  truth: Ranked[],
  ids: BigUint64Array,
  scores: Float32Array,
  k: number,
  relativeTolerance = 1e-4,
): void {
  const keep = Math.min(k, truth.length);
  const scale = Math.max(1, ...truth.slice(0, keep).map((t) => Math.abs(t.score)));
  const tol = relativeTolerance * scale;
  const scoreOf = new Map(truth.map((t) => [t.id, t.score]));
  const kth = truth[keep - 1]!.score;
  for (let i = 0; i < k; i++) {
    if (i >= keep) {
      expect(ids[i]).toBe(NO_ID);
      expect(scores[i]).toBe(-Infinity);
      continue;
    }
    const exact = scoreOf.get(ids[i]!);
    expect(exact, `row position ${i} holds an unknown id`).toBeDefined();
    expect(Math.abs(scores[i]! - exact!)).toBeLessThanOrEqual(tol);
    expect(exact!).toBeGreaterThanOrEqual(kth - tol);
    if (i > 0) expect(scores[i]!).toBeLessThanOrEqual(scores[i - 1]!);
  }
  const returned = new Set(ids.subarray(0, keep));
  for (const t of truth.slice(0, keep)) {
    if (t.score <= kth + tol) break;
    expect(returned.has(t.id), `true hit ${t.id} missing`).toBe(true);
  }
}

/**
 * `x` rounded to the nearest value of a binary float with `significandBits` bits (the
 * implicit one included) and smallest normal exponent `minExponent`, ties to even: what
 * CUDA's __float2half_rn and __float2bfloat16_rn do. Past `maxFinite` it is Infinity.
 */
function roundToFloat(x: number, significandBits: number, minExponent: number, maxFinite: number): number {
  if (x === 0 || !Number.isFinite(x)) return x;
  const a = Math.abs(x);
  let e = Math.floor(Math.log2(a));
  // Math.log2 may be off by one next to a power of two.
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  const ulp = 2 ** (Math.max(e, minExponent) - (significandBits - 1));
  const scaled = a / ulp; // exact: ulp is a power of two
  let m = Math.floor(scaled);
  const fraction = scaled - m;
  if (fraction > 0.5 || (fraction === 0.5 && m % 2 === 1)) m++;
  const r = m * ulp;
  return Math.sign(x) * (r > maxFinite ? Infinity : r);
}

export const toF16 = (x: number): number => roundToFloat(x, 11, -14, 65504);
export const toBf16 = (x: number): number => roundToFloat(x, 8, -126, 3.3895313892515355e38);

/**
 * Rows (or queries) as the GPU index scores them: normalised in float32 for cosine, then
 * rounded to the storage type. Score them with `bruteForce` under `scoredMetric(metric)`.
 */
export function storedRows(data: Float32Array, dim: number, metric: Metric, storage: 'f32' | 'f16' | 'bf16'): Float32Array {
  const round = storage === 'f16' ? toF16 : storage === 'bf16' ? toBf16 : (x: number) => x;
  const out = new Float32Array(data.length);
  for (let r = 0; r < data.length / dim; r++) {
    let norm = 1;
    if (metric === 'cosine') {
      let squares = 0;
      for (let i = 0; i < dim; i++) squares += data[r * dim + i]! ** 2;
      norm = squares > 0 ? Math.sqrt(squares) : 1;
    }
    for (let i = 0; i < dim; i++) out[r * dim + i] = round(Math.fround(data[r * dim + i]! / norm));
  }
  return out;
}

/** Cosine over rows already normalised (and rounded) is their inner product. */
export const scoredMetric = (metric: Metric): Metric => (metric === 'cosine' ? 'ip' : metric);
