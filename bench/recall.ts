// Recall of an engine's top-k against the float64 brute force in peers.ts.

import { exactScore, type ExactTopK } from './peers.js';

export interface Recall {
  /** Hits / (queries × k), where a returned id also counts as a hit when its exact score ties
   *  the k-th exact score: with duplicate vectors (MNIST has some) any of the tied ids is right. */
  tieAware: number;
  /** Plain id overlap with the reference top-k. */
  strict: number;
  queries: number;
}

/** Relative slack for "ties the k-th score": well below any real gap, above float32 rounding. */
const TIE_TOLERANCE = 1e-5;

/**
 * `idsOf(q)` gives the engine's ids for reference query q (first `k` used). Ids are numbers or
 * bigints that index base rows; anything out of range (padding) is a miss. `score(row, q)` is
 * the exact float64 score the reference ranks by (default: the inner product); ties are judged
 * with it.
 */
export function recallAgainst(
  reference: readonly ExactTopK[],
  idsOf: (query: number) => ArrayLike<number | bigint>,
  data: { base: Float32Array; queries: Float32Array; dim: number; n: number },
  k: number,
  score: (row: number, query: number) => number = (row, query) => exactScore(data.base, data.dim, row, data.queries, query),
): Recall {
  let tieAwareHits = 0;
  let strictHits = 0;
  let expected = 0;
  reference.forEach((truth, q) => {
    const truthIds = new Set(truth.ids);
    const kth = truth.scores[truth.scores.length - 1] ?? Number.NEGATIVE_INFINITY;
    const slack = TIE_TOLERANCE * Math.max(Math.abs(kth), 1e-12);
    const got = idsOf(q);
    const seen = new Set<number>();
    for (let i = 0; i < Math.min(k, got.length); i++) {
      const id = Number(got[i]);
      if (!Number.isInteger(id) || id < 0 || id >= data.n || seen.has(id)) continue;
      seen.add(id);
      if (truthIds.has(id)) {
        strictHits++;
        tieAwareHits++;
      } else if (score(id, q) >= kth - slack) {
        tieAwareHits++;
      }
    }
    expected += truth.ids.length;
  });
  return {
    tieAware: expected === 0 ? Number.NaN : tieAwareHits / expected,
    strict: expected === 0 ? Number.NaN : strictHits / expected,
    queries: reference.length,
  };
}
