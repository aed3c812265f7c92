import { NO_ID } from './ids.js';

export interface Hit {
  id: bigint;
  score: number;
}

/**
 * Top-k results of a batch of queries, row-major and best first. Every metric scores
 * higher-is-better (`l2` gives the negative squared distance). Rows with fewer than k hits
 * are padded with id `NO_ID` (2^64-1) and score `-Infinity`.
 */
export class SearchResult {
  /** Number of queries (rows). */
  readonly nq: number;
  readonly k: number;
  /** nq × k ids. */
  readonly ids: BigUint64Array;
  /** nq × k scores. */
  readonly scores: Float32Array;

  constructor(nq: number, k: number, ids: BigUint64Array, scores: Float32Array) {
    this.nq = nq;
    this.k = k;
    this.ids = ids;
    this.scores = scores;
  }

  /** Views (not copies) of one query's ids and scores, padding included. */
  row(i: number): { ids: BigUint64Array; scores: Float32Array } {
    if (!Number.isInteger(i) || i < 0 || i >= this.nq) {
      throw new RangeError(`Expected a row from 0 to ${this.nq - 1} but received ${i}`);
    }
    const start = i * this.k;
    return { ids: this.ids.subarray(start, start + this.k), scores: this.scores.subarray(start, start + this.k) };
  }

  /** One query's hits as objects, padding left out. */
  hits(i: number): Hit[] {
    const { ids, scores } = this.row(i);
    const out: Hit[] = [];
    for (let j = 0; j < ids.length; j++) {
      if (ids[j] === NO_ID) break;
      out.push({ id: ids[j]!, score: scores[j]! });
    }
    return out;
  }

  *[Symbol.iterator](): IterableIterator<{ ids: BigUint64Array; scores: Float32Array }> {
    for (let i = 0; i < this.nq; i++) yield this.row(i);
  }
}
