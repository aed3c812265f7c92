// The engines ebrix is measured against in the same run, on the same arrays:
// usearch's exact (brute-force) search, and the loop a user would write in plain TypeScript.

import { exactSearch, MetricKind } from 'usearch';

/** Top-k rows of one or more queries; ids are row numbers in the base array. */
export interface PeerResult {
  nq: number;
  k: number;
  /** nq × k row numbers (usearch pads missing results with 2^64 − 1). */
  ids: BigUint64Array;
}

/**
 * usearch `exactSearch` allocates a distance per (base row, query) pair for the whole call
 * (≈ 16 bytes each: 1,000 queries over 1M rows take ~16 GB), so big batches go in chunks that
 * keep that scratch under this budget. Per call the chunk is still thousands of base passes'
 * worth of work, so chunking does not cost usearch throughput.
 */
export const USEARCH_SCRATCH_BYTES = 2 * 2 ** 30;
const USEARCH_BYTES_PER_PAIR = 16;

/** Queries per exactSearch call for a base of `n` rows under USEARCH_SCRATCH_BYTES. */
export function usearchQueriesPerCall(n: number): number {
  return Math.max(1, Math.floor(USEARCH_SCRATCH_BYTES / (USEARCH_BYTES_PER_PAIR * n)));
}

/**
 * usearch `exactSearch` with the inner-product metric. It is synchronous and reads the
 * Float32Arrays in place (no copy), so a call measures its search alone. usearch reports
 * IP as a distance (1 − dot), which only changes the sign of the order, not the ids.
 */
export function usearchExactSearch(
  base: Float32Array,
  queries: Float32Array,
  dim: number,
  k: number,
  threads: number,
): PeerResult {
  const nq = queries.length / dim;
  const perCall = usearchQueriesPerCall(base.length / dim);
  const ids = new BigUint64Array(nq * k);
  for (let first = 0; first < nq; first += perCall) {
    const count = Math.min(perCall, nq - first);
    const chunk = queries.subarray(first * dim, (first + count) * dim);
    // One query comes back as Matches (k keys), several as BatchMatches (count × k keys).
    const matches = exactSearch(base, chunk, dim, k, MetricKind.IP, threads);
    ids.set(matches.keys.subarray(0, count * k), first * k);
  }
  return { nq, k, ids };
}

/** Exact top-k of one query computed with float64 accumulation: the bench's ground truth. */
export interface ExactTopK {
  ids: Uint32Array;
  scores: Float64Array;
}

/**
 * Brute-force inner product with a bounded, sorted top-k: the plain loop without SIMD,
 * threads or blocking. `rows` limits the scan to the first rows (used for JIT warm-up).
 */
export function plainTsSearch(
  base: Float32Array,
  dim: number,
  queries: Float32Array,
  queryRow: number,
  k: number,
  rows = base.length / dim,
): ExactTopK {
  const topIds = new Uint32Array(k);
  const topScores = new Float64Array(k).fill(Number.NEGATIVE_INFINITY);
  const q = queryRow * dim;
  let filled = 0;
  for (let row = 0; row < rows; row++) {
    const offset = row * dim;
    let score = 0;
    for (let j = 0; j < dim; j++) score += base[offset + j]! * queries[q + j]!;
    if (filled === k && score <= topScores[k - 1]!) continue;
    // Insert into the descending list, dropping the current last entry when full.
    let slot = filled < k ? filled++ : k - 1;
    while (slot > 0 && topScores[slot - 1]! < score) {
      topScores[slot] = topScores[slot - 1]!;
      topIds[slot] = topIds[slot - 1]!;
      slot--;
    }
    topScores[slot] = score;
    topIds[slot] = row;
  }
  return filled === k ? { ids: topIds, scores: topScores } : { ids: topIds.slice(0, filled), scores: topScores.slice(0, filled) };
}

/** Exact float64 inner product of base row `row` and query `queryRow`. */
export function exactScore(base: Float32Array, dim: number, row: number, queries: Float32Array, queryRow: number): number {
  let score = 0;
  const offset = row * dim;
  const q = queryRow * dim;
  for (let j = 0; j < dim; j++) score += base[offset + j]! * queries[q + j]!;
  return score;
}
