/**
 * Lexical scores for a second stage: BM25 of a query against the items a retrieval returned.
 *
 * A two-tower model pools words into one vector, which blurs what exact word overlap says; a
 * ranker that adds a weighted BM25 score to the tower score (a hybrid second stage) recovers
 * some of it at the cost of a few map lookups per candidate. The WordNet job's ranker does
 * this (lib/serve/wordnet-job.ts).
 *
 * The scorer holds, per item, its distinct terms with their BM25 weights (IDF times the
 * saturated term frequency, computed once over the whole corpus), so scoring a hundred
 * candidates reads a few hundred numbers and touches no posting list. The form is the one of
 * the train bench's lexical baseline (bench/baselines/bm25.ts), which follows MiniSearch:
 *
 *   score(d) = Σ_t ln(1 + (N − n_t + 0.5) / (n_t + 0.5)) · tf·(k1 + 1) / (tf + k1·(1 − b + b·|d| / avgdl))
 *
 * over the query's tokens t (a repeated token counts again), with N items, n_t of them
 * holding t, and |d| the item's number of distinct tokens. Texts are split by
 * lib/model/tokenize.ts, the tokenizer of the model's text features.
 */
import { tokenize } from '../model/tokenize.js';
import { invalid } from '../validate.js';

export interface Bm25Options {
  /** Term-frequency saturation (default 1.2). */
  k1?: number;
  /** Length normalisation, from 0 (none) to 1 (default 0.75). */
  b?: number;
}

export class Bm25Scorer {
  /** Items scored, by position 0 .. size − 1 in the texts given. */
  readonly size: number;
  readonly #termIds = new Map<string, number>();
  /** Item i's terms and weights: entries docStart[i] .. docStart[i + 1] of the two arrays below. */
  readonly #docStart: Int32Array;
  readonly #docTerms: Int32Array;
  readonly #docWeights: Float64Array;

  constructor(texts: readonly string[], options: Bm25Options = {}) {
    if (!Array.isArray(texts)) throw invalid('an array of strings', 'texts', texts);
    const k1 = options.k1 ?? 1.2;
    const b = options.b ?? 0.75;
    if (typeof k1 !== 'number' || !(k1 >= 0) || !Number.isFinite(k1)) throw invalid('a finite number ≥ 0', 'options.k1', k1);
    if (typeof b !== 'number' || !(b >= 0 && b <= 1)) throw invalid('a number from 0 to 1', 'options.b', b);
    const n = texts.length;
    const docStart = new Int32Array(n + 1);
    const terms: number[] = [];
    const counts: number[] = [];
    const documentFrequency: number[] = [];
    const perDoc = new Map<number, number>();
    texts.forEach((text, i) => {
      if (typeof text !== 'string') throw invalid('a string', `texts[${i}]`, text);
      perDoc.clear();
      for (const token of tokenize(text)) {
        let id = this.#termIds.get(token);
        if (id === undefined) {
          id = this.#termIds.size;
          this.#termIds.set(token, id);
          documentFrequency.push(0);
        }
        perDoc.set(id, (perDoc.get(id) ?? 0) + 1);
      }
      for (const [id, count] of perDoc) {
        terms.push(id);
        counts.push(count);
        documentFrequency[id]!++;
      }
      docStart[i + 1] = terms.length;
    });
    const averageLength = n === 0 ? 0 : terms.length / n;
    const docWeights = new Float64Array(terms.length);
    for (let d = 0; d < n; d++) {
      const start = docStart[d]!;
      const end = docStart[d + 1]!;
      const norm = k1 * (1 - b + (b * (end - start)) / averageLength);
      for (let p = start; p < end; p++) {
        const df = documentFrequency[terms[p]!]!;
        const tf = counts[p]!;
        docWeights[p] = Math.log(1 + (n - df + 0.5) / (df + 0.5)) * ((tf * (k1 + 1)) / (tf + norm));
      }
    }
    this.size = n;
    this.#docStart = docStart;
    this.#docTerms = Int32Array.from(terms);
    this.#docWeights = docWeights;
  }

  /**
   * The BM25 score of `query` for each item at `positions` (numbers or bigints from 0 to
   * size − 1), in order; 0 for an item that holds none of its terms.
   */
  scores(query: string, positions: ArrayLike<number | bigint>): Float64Array {
    if (typeof query !== 'string') throw invalid('a string', 'query', query);
    if (positions === null || typeof positions !== 'object' || typeof positions.length !== 'number') {
      throw invalid('an array of item positions', 'positions', positions);
    }
    const out = new Float64Array(positions.length);
    const occurrences = new Map<number, number>();
    for (const token of tokenize(query)) {
      const id = this.#termIds.get(token);
      if (id !== undefined) occurrences.set(id, (occurrences.get(id) ?? 0) + 1);
    }
    for (let i = 0; i < positions.length; i++) {
      const value = positions[i];
      const d = typeof value === 'bigint' ? Number(value) : value;
      if (typeof d !== 'number' || !Number.isInteger(d) || d < 0 || d >= this.size) {
        throw invalid(`an item position from 0 to ${this.size - 1}`, `positions[${i}]`, value);
      }
      if (occurrences.size === 0) continue;
      let score = 0;
      for (let p = this.#docStart[d]!, end = this.#docStart[d + 1]!; p < end; p++) {
        const times = occurrences.get(this.#docTerms[p]!);
        if (times !== undefined) score += times * this.#docWeights[p]!;
      }
      out[i] = score;
    }
    return out;
  }
}
