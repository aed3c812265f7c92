import { describe, expect, it } from 'vitest';

import { BM25_B, BM25_K1, bm25Evaluate, bm25Scores } from '../bench/baselines/bm25.js';
import { InvalidArgumentError } from '../lib/errors.js';
import { Bm25Scorer } from '../lib/serve/lexical.js';
import { loadWordNet, wordnetQueries } from '../lib/train/wordnet.js';

// Distinct-token lengths: 5, 4 ('cat' twice), 4, 5, 5, 5.
const items = [
  { id: 10, text: 'tiger, big cat noun.animal' },
  { id: 11, text: 'house cat, cat noun.animal' },
  { id: 12, text: 'oak tree noun.plant' },
  { id: 13, text: 'run move fast verb.motion' },
  { id: 14, text: 'bank financial institution noun.group' },
  { id: 15, text: 'bank sloping land noun.object' },
];

const queries = [
  { text: 'a striped BIG cat', item: 10 }, // rank 1
  { text: 'a tree', item: 12 }, // rank 1
  { text: 'to move fast', item: 13 }, // rank 1
  { text: 'land by the river bank', item: 15 }, // rank 1
  // One query with two relevant items: 14 ties with 15 (same length) and is listed first, rank 1; 15 rank 2.
  { text: 'bank', item: 14 },
  { text: 'bank', item: 15 },
  { text: 'cat', item: 10 }, // 11 has 'cat' twice and is shorter: rank 2
  { text: 'zebra', item: 10 }, // no match: never ranked
];

describe('bm25Evaluate', () => {
  it('scores ranks on a hand-made corpus', () => {
    for (const engine of ['compact', 'minisearch'] as const) {
      const metrics = bm25Evaluate(items, queries, { ks: [1, 2, 10], engine });
      expect(metrics.queries).toBe(7);
      expect(metrics.recallAt[1]).toBeCloseTo(4.5 / 7, 12); // 'bank' finds one of its two items at 1
      expect(metrics.recallAt[2]).toBeCloseTo(6 / 7, 12);
      expect(metrics.recallAt[10]).toBeCloseTo(6 / 7, 12);
      expect(metrics.mrr).toBeCloseTo((5 + 0.5) / 7, 12);
      expect(metrics.hitRate).toBe(metrics.recallAt[10]);
    }
  });

  it('computes BM25 with k1 = 1.2, b = 0.75 and the Lucene IDF, as MiniSearch does', () => {
    const n = items.length;
    const averageLength = (5 + 4 + 4 + 5 + 5 + 5) / n;
    const idf = (df: number) => Math.log(1 + (n - df + 0.5) / (df + 0.5));
    const weight = (tf: number, length: number) =>
      (tf * (BM25_K1 + 1)) / (tf + BM25_K1 * (1 - BM25_B + (BM25_B * length) / averageLength));
    expect([BM25_K1, BM25_B]).toEqual([1.2, 0.75]);
    for (const engine of ['compact', 'minisearch'] as const) {
      const [tree, cat] = bm25Scores(items, ['tree', 'big cat'], engine);
      expect([...tree!.keys()]).toEqual([2]);
      expect(tree!.get(2)).toBeCloseTo(idf(1) * weight(1, 4), 12);
      expect(cat!.get(0)).toBeCloseTo(idf(1) * weight(1, 5) + idf(2) * weight(1, 5), 12);
      expect(cat!.get(1)).toBeCloseTo(idf(2) * weight(2, 4), 12);
      expect(cat!.size).toBe(2);
    }
  });

  it('stops ranking below the largest of 100 and the ks', () => {
    const many = Array.from({ length: 300 }, (_, i) => ({ id: i, text: `word filler${i}` }));
    // Every item ties on 'word': the last one ranks 300th.
    const last = [{ text: 'word', item: 299 }];
    expect(bm25Evaluate(many, last).hitRate).toBe(0);
    expect(bm25Evaluate(many, last, { ks: [300] }).hitRate).toBe(1);
    expect(bm25Evaluate(many, last, { ks: [300] }).mrr).toBe(0);
    expect(bm25Evaluate(many, [{ text: 'word', item: 9 }], { ks: [5, 10] }).mrr).toBeCloseTo(0.1, 12);
  });

  it('handles empty inputs and checks its arguments', () => {
    expect(bm25Evaluate(items, [])).toEqual({ queries: 0, recallAt: { 1: 0, 10: 0, 100: 0 }, mrr: 0, hitRate: 0 });
    expect(() => bm25Evaluate(items, [{ text: 'x', item: 99 }])).toThrow(
      'Expected the id of one of the items for queries[0].item but received 99',
    );
    expect(() => bm25Evaluate([...items, { id: 10, text: 'again' }], [])).toThrow(InvalidArgumentError);
    expect(() => bm25Evaluate(items, queries, { ks: [] })).toThrow(/positive integers for options\.ks/);
    expect(() => bm25Evaluate(items, queries, { ks: [0] })).toThrow(InvalidArgumentError);
    expect(() => bm25Evaluate(items, queries, { engine: 'lucene' as 'compact' })).toThrow(InvalidArgumentError);
  });

  it('gives the same scores and metrics as MiniSearch on a WordNet sample', async () => {
    const wordnet = await loadWordNet();
    // Every 25th synset: ~4.7k items, small enough for MiniSearch to search in seconds.
    const sample = wordnet.filter((_, i) => i % 25 === 0);
    const docs = sample.map((i) => ({ id: i.id, text: `${i.lemmas} ${i.hypernyms} ${i.lexfile}` }));
    const split = wordnetQueries(sample, { valid: 0, test: 0.1 });
    const glosses = split.test.filter((q) => q.task === 'gloss').slice(0, 200);

    const compact = bm25Scores(docs, glosses.map((q) => q.text), 'compact');
    const reference = bm25Scores(docs, glosses.map((q) => q.text), 'minisearch');
    let worst = 0;
    compact.forEach((scores, q) => {
      expect(scores.size).toBe(reference[q]!.size);
      for (const [position, score] of scores) worst = Math.max(worst, Math.abs(score - reference[q]!.get(position)!) / score);
    });
    expect(worst).toBeLessThan(1e-12);

    for (const task of ['gloss', 'usage', 'synonym'] as const) {
      const taskQueries = split.test.filter((q) => q.task === task).slice(0, 300);
      const a = bm25Evaluate(docs, taskQueries, { engine: 'compact' });
      const b = bm25Evaluate(docs, taskQueries, { engine: 'minisearch' });
      expect(a).toEqual(b);
    }
  });
});

// The serving scorer (lib/serve/lexical.ts) keeps a forward index and scores only the
// candidates it is given; MiniSearch, through the bench's engine, is its reference.
describe('Bm25Scorer', () => {
  it('scores candidates as MiniSearch scores them, 0 where nothing matches, on a WordNet sample', async () => {
    const wordnet = await loadWordNet();
    const sample = wordnet.filter((_, i) => i % 25 === 0);
    const texts = sample.map((i) => `${i.lemmas} ${i.hypernyms} ${i.lexfile}`);
    const scorer = new Bm25Scorer(texts);
    expect(scorer.size).toBe(texts.length);
    const split = wordnetQueries(sample, { valid: 0, test: 0.1 });
    const queries = split.test.filter((q) => q.task !== 'usage').slice(0, 300).map((q) => q.text);
    const reference = bm25Scores(texts.map((text) => ({ text })), queries, 'minisearch');
    let worst = 0;
    let matched = 0;
    queries.forEach((query, q) => {
      // Every item MiniSearch matched, and as many it did not (in bigint form too).
      const hits = [...reference[q]!.keys()];
      const misses = Array.from({ length: hits.length + 5 }, (_, i) => (i * 37 + q) % texts.length).filter((p) => !reference[q]!.has(p));
      const got = scorer.scores(query, [...hits, ...misses.map(BigInt)]);
      hits.forEach((position, i) => {
        const want = reference[q]!.get(position)!;
        worst = Math.max(worst, Math.abs(got[i]! - want) / want);
      });
      for (let i = hits.length; i < got.length; i++) expect(got[i]).toBe(0);
      matched += hits.length;
    });
    expect(matched).toBeGreaterThan(1000);
    expect(worst).toBeLessThan(1e-12);
  });

  it('counts a repeated query word again, uses k1 and b, and checks its arguments', () => {
    const scorer = new Bm25Scorer(items.map((i) => i.text));
    const [once] = scorer.scores('cat', [1]);
    expect(scorer.scores('cat cat', [1])[0]).toBeCloseTo(2 * once!, 12);
    expect(scorer.scores('', [0, 1])).toEqual(new Float64Array(2));
    expect(scorer.scores('cat', [])).toEqual(new Float64Array(0));
    // b = 0: no length normalisation, so the single 'cat' of item 0 weighs the same wherever it is.
    const flat = new Bm25Scorer(['cat', 'cat dog bird fish'], { b: 0 });
    const [short, long] = flat.scores('cat', [0, 1]);
    expect(short).toBeCloseTo(long!, 12);
    expect(new Bm25Scorer(['cat', 'cat dog bird fish']).scores('cat', [0, 1])[0]).toBeGreaterThan(long!);
    expect(new Bm25Scorer([]).scores('cat', [])).toEqual(new Float64Array(0));

    expect(() => scorer.scores('cat', [6])).toThrow('Expected an item position from 0 to 5 for positions[0] but received 6');
    expect(() => scorer.scores('cat', [0, -1])).toThrow(InvalidArgumentError);
    expect(() => scorer.scores('cat', [1.5])).toThrow(InvalidArgumentError);
    expect(() => scorer.scores('cat', [7n])).toThrow(InvalidArgumentError);
    expect(() => scorer.scores(3 as unknown as string, [0])).toThrow('Expected a string for query but received 3');
    expect(() => scorer.scores('cat', null as unknown as number[])).toThrow(InvalidArgumentError);
    expect(() => new Bm25Scorer('cat' as unknown as string[])).toThrow(InvalidArgumentError);
    expect(() => new Bm25Scorer(['cat', 5 as unknown as string])).toThrow('Expected a string for texts[1] but received 5');
    expect(() => new Bm25Scorer(['cat'], { b: 2 })).toThrow(InvalidArgumentError);
    expect(() => new Bm25Scorer(['cat'], { k1: -1 })).toThrow(InvalidArgumentError);
  });
});
