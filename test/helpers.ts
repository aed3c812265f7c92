/** Plain TypeScript references the native results are checked against. */
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
