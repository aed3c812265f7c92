// The lexical baseline of the train bench: BM25 retrieval of each query's one relevant item,
// scored as MiniSearch scores it.
//
// The form is MiniSearch's (src/MiniSearch.ts, calcBM25Score) with its BM25+ lower bound δ
// set to 0 and the classic k1 = 1.2, b = 0.75; for a query of terms t (repeats count again):
//
//   score(d) = Σ_t ln(1 + (N − n_t + 0.5) / (n_t + 0.5)) · tf·(k1 + 1) / (tf + k1·(1 − b + b·|d| / avgdl))
//
// That differs from Robertson's textbook BM25 in two places, both MiniSearch's choices: the
// IDF is Lucene's, which never goes negative for terms in more than half the documents, and
// the document length |d| is the number of distinct tokens, not of all tokens. MiniSearch's
// search() then multiplies that sum by the number of distinct query terms the document
// matched (a coordination factor, not BM25); that factor is divided back out here, so the
// ranking is BM25's. (With it, gloss recall@10 on WordNet's test split drops from 0.160 to
// 0.150.)
//
// Both sides are tokenised by lib/model/tokenize.ts, the splitter of the model's text
// features, so BM25 and the two-tower model are compared on the same words: MiniSearch's own
// splitter would, for one, keep 'o'clock' or '3-d' whole and skip NFKC, and a gap between the
// two would then measure tokenisers, not retrieval. The usage task's mask '___' is no token.
//
// MiniSearch needs ~10 ms a query against WordNet's 117k items (it builds a result object for
// each of the thousands of items a gloss touches), a minute per task. The default engine
// computes the same scores over posting lists in typed arrays and ranks only the relevant
// item, in a few milliseconds per hundred queries; `engine: 'minisearch'` runs the library
// itself, and test/bm25.test.ts checks the two agree.

import MiniSearch from 'minisearch';

import { tokenize } from '../../lib/model/tokenize.js';
import { invalid } from '../../lib/validate.js';

export interface RetrievalMetrics {
  queries: number;
  /** k → the mean over queries of the fraction of their relevant items ranked in the top k. */
  recallAt: Record<number, number>;
  /** Mean reciprocal rank of the best relevant item within the top 100 (0 where it ranks lower or not at all). */
  mrr: number;
  /** The fraction of queries with a relevant item in the top k, at the largest k asked. */
  hitRate: number;
}

export interface Bm25Options {
  /** Cut-offs for recall (default [1, 10, 100]). */
  ks?: number[];
  /** 'compact' (default): typed-array posting lists; 'minisearch': the library itself, ~100x slower. */
  engine?: 'compact' | 'minisearch';
}

export const BM25_K1 = 1.2;
export const BM25_B = 0.75;
const MRR_DEPTH = 100;

/**
 * Ranks every item for every query with BM25 and scores the rank of the query's item. Ties
 * go to the item listed first in `items`; an item no query term matches is never ranked.
 */
export function bm25Evaluate(
  items: readonly { id: number; text: string }[],
  queries: readonly { text: string; item: number }[],
  options: Bm25Options = {},
): RetrievalMetrics {
  if (!Array.isArray(items)) throw invalid('an array of items', 'items', items);
  if (!Array.isArray(queries)) throw invalid('an array of queries', 'queries', queries);
  const ks = options.ks ?? [1, 10, 100];
  if (!Array.isArray(ks) || ks.length === 0 || !ks.every((k) => Number.isInteger(k) && k >= 1)) {
    throw invalid('a non-empty array of positive integers', 'options.ks', ks);
  }
  const engine = options.engine ?? 'compact';
  if (engine !== 'compact' && engine !== 'minisearch') {
    throw invalid("'compact' or 'minisearch'", 'options.engine', engine);
  }

  const positionOf = new Map<number, number>();
  items.forEach((item, position) => {
    if (typeof item?.text !== 'string') throw invalid('a string', `items[${position}].text`, item?.text);
    if (positionOf.has(item.id)) throw invalid('distinct ids', `items[${position}].id`, item.id);
    positionOf.set(item.id, position);
  });
  const targets = queries.map((query, q) => {
    const position = positionOf.get(query?.item);
    if (position === undefined) throw invalid('the id of one of the items', `queries[${q}].item`, query?.item);
    if (typeof query.text !== 'string') throw invalid('a string', `queries[${q}].text`, query.text);
    return position;
  });

  const rankOf = engine === 'compact' ? compactRanker(items) : miniSearchRanker(items);
  const depth = Math.max(MRR_DEPTH, ...ks);
  // Queries with the same text are one query with several relevant items, as lib/train/evaluate.ts
  // counts them (a synonym query 'bank' has one relevant synset per sense): recall@k is the
  // fraction of its relevant items in the top k, the reciprocal rank that of the best one.
  const groups = new Map<string, number[]>();
  queries.forEach((query, q) => {
    const group = groups.get(query.text);
    if (group === undefined) groups.set(query.text, [targets[q]!]);
    else if (!group.includes(targets[q]!)) group.push(targets[q]!);
  });
  const recalled = new Array<number>(ks.length).fill(0);
  const hit = new Array<number>(ks.length).fill(0);
  let reciprocalRanks = 0;
  for (const [text, relevant] of groups) {
    let best = Infinity;
    const found = new Array<number>(ks.length).fill(0);
    for (const target of relevant) {
      const rank = rankOf(text, target, depth);
      if (rank === undefined) continue;
      best = Math.min(best, rank);
      ks.forEach((k, i) => {
        if (rank <= k) found[i]!++;
      });
    }
    ks.forEach((k, i) => {
      recalled[i]! += found[i]! / relevant.length;
      if (best <= k) hit[i]!++;
    });
    if (best <= MRR_DEPTH) reciprocalRanks += 1 / best;
  }

  const n = groups.size;
  const recallAt: Record<number, number> = {};
  ks.forEach((k, i) => {
    recallAt[k] = n === 0 ? 0 : recalled[i]! / n;
  });
  return {
    queries: n,
    recallAt,
    mrr: n === 0 ? 0 : reciprocalRanks / n,
    hitRate: n === 0 ? 0 : hit[ks.indexOf(Math.max(...ks))]! / n,
  };
}

/** The 1-based rank of the item at `target` for `text`, or undefined if it ranks below `depth` or is not matched. */
type Ranker = (text: string, target: number, depth: number) => number | undefined;

function compactRanker(items: readonly { text: string }[]): Ranker {
  const index = new CompactBm25(items);
  return (text, target, depth) => index.rank(text, target, depth);
}

/**
 * Posting lists in flat typed arrays: for term t, documents `docs[start[t] .. start[t+1])`
 * with their precomputed BM25 term weights (everything but the IDF). A query adds weights
 * into one score array and counts the items that beat the target: no sort, no per-item
 * objects.
 */
class CompactBm25 {
  readonly #termIds = new Map<string, number>();
  readonly #start: Int32Array;
  readonly #docs: Int32Array;
  readonly #weights: Float64Array;
  readonly #idf: Float64Array;
  readonly #scores: Float64Array;
  readonly #touched: Int32Array;
  #touchedCount = 0;

  constructor(items: readonly { text: string }[]) {
    const n = items.length;
    // Per document, its distinct terms and their counts, appended to two growing lists.
    const docTerms: number[] = [];
    const docCounts: number[] = [];
    const docEnd = new Int32Array(n);
    const docLength = new Int32Array(n);
    let totalLength = 0;
    const counts = new Map<number, number>();
    items.forEach((item, d) => {
      counts.clear();
      for (const token of tokenize(item.text)) {
        let id = this.#termIds.get(token);
        if (id === undefined) this.#termIds.set(token, (id = this.#termIds.size));
        counts.set(id, (counts.get(id) ?? 0) + 1);
      }
      for (const [id, count] of counts) {
        docTerms.push(id);
        docCounts.push(count);
      }
      docEnd[d] = docTerms.length;
      docLength[d] = counts.size;
      totalLength += counts.size;
    });

    const termCount = this.#termIds.size;
    const start = new Int32Array(termCount + 1);
    for (const id of docTerms) start[id + 1]!++;
    for (let t = 0; t < termCount; t++) start[t + 1]! += start[t]!;
    const docs = new Int32Array(docTerms.length);
    const weights = new Float64Array(docTerms.length);
    const fill = start.slice(0, termCount);
    const averageLength = n === 0 ? 0 : totalLength / n;
    for (let d = 0, p = 0; d < n; d++) {
      const norm = BM25_K1 * (1 - BM25_B + (BM25_B * docLength[d]!) / averageLength);
      for (; p < docEnd[d]!; p++) {
        const slot = fill[docTerms[p]!]!++;
        const tf = docCounts[p]!;
        docs[slot] = d;
        weights[slot] = (tf * (BM25_K1 + 1)) / (tf + norm);
      }
    }
    const idf = new Float64Array(termCount);
    for (let t = 0; t < termCount; t++) {
      const df = start[t + 1]! - start[t]!;
      idf[t] = Math.log(1 + (n - df + 0.5) / (df + 0.5));
    }
    this.#start = start;
    this.#docs = docs;
    this.#weights = weights;
    this.#idf = idf;
    this.#scores = new Float64Array(n);
    this.#touched = new Int32Array(n);
  }

  rank(text: string, target: number, depth: number): number | undefined {
    this.#accumulate(text);
    const scores = this.#scores;
    const targetScore = scores[target]!;
    let rank: number | undefined;
    if (targetScore > 0) {
      let ahead = 0;
      for (let i = 0; i < this.#touchedCount; i++) {
        const d = this.#touched[i]!;
        const s = scores[d]!;
        if (s > targetScore || (s === targetScore && d < target)) ahead++;
      }
      rank = ahead < depth ? ahead + 1 : undefined;
    }
    this.#clear();
    return rank;
  }

  /** Every matched item's score, by position. */
  scores(text: string): Map<number, number> {
    this.#accumulate(text);
    const out = new Map<number, number>();
    for (let i = 0; i < this.#touchedCount; i++) out.set(this.#touched[i]!, this.#scores[this.#touched[i]!]!);
    this.#clear();
    return out;
  }

  #accumulate(text: string): void {
    const scores = this.#scores;
    let touchedCount = 0;
    for (const token of tokenize(text)) {
      const t = this.#termIds.get(token);
      if (t === undefined) continue;
      const idf = this.#idf[t]!;
      for (let p = this.#start[t]!, end = this.#start[t + 1]!; p < end; p++) {
        const d = this.#docs[p]!;
        // Every weight is positive, so a zero score means not yet touched.
        if (scores[d] === 0) this.#touched[touchedCount++] = d;
        scores[d]! += idf * this.#weights[p]!;
      }
    }
    this.#touchedCount = touchedCount;
  }

  #clear(): void {
    for (let i = 0; i < this.#touchedCount; i++) this.#scores[this.#touched[i]!] = 0;
    this.#touchedCount = 0;
  }
}

function miniSearchIndex(items: readonly { text: string }[]): MiniSearch<{ position: number; text: string }> {
  const index = new MiniSearch<{ position: number; text: string }>({
    idField: 'position',
    fields: ['text'],
    tokenize: (text) => tokenize(text),
    // tokenize has lower-cased already.
    processTerm: (term) => term,
    searchOptions: { bm25: { k: BM25_K1, b: BM25_B, d: 0 } },
  });
  index.addAll(items.map((item, position) => ({ position, text: item.text })));
  return index;
}

/** BM25 by position: MiniSearch's score without its coordination factor (see the header). */
function miniSearchScores(index: MiniSearch<{ position: number; text: string }>, text: string): Map<number, number> {
  return new Map(index.search(text).map((r) => [r.id as number, r.score / r.queryTerms.length]));
}

function miniSearchRanker(items: readonly { text: string }[]): Ranker {
  const index = miniSearchIndex(items);
  return (text, target, depth) => {
    const scores = miniSearchScores(index, text);
    const targetScore = scores.get(target);
    if (targetScore === undefined) return undefined;
    // Ranked by score with the compact engine's tie rule rather than MiniSearch's order.
    let ahead = 0;
    for (const [position, score] of scores) {
      if (score > targetScore || (score === targetScore && position < target)) ahead++;
    }
    return ahead < depth ? ahead + 1 : undefined;
  };
}

/**
 * Each query's BM25 score for every item it matches, keyed by position in `items`, from
 * either engine: what the tests compare score by score.
 */
export function bm25Scores(
  items: readonly { text: string }[],
  texts: readonly string[],
  engine: 'compact' | 'minisearch',
): Map<number, number>[] {
  if (engine === 'minisearch') {
    const index = miniSearchIndex(items);
    return texts.map((text) => miniSearchScores(index, text));
  }
  const index = new CompactBm25(items);
  return texts.map((text) => index.scores(text));
}
