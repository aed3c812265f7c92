import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { FlatIndex, HnswIndex, IndexStore, IvfPqIndex, LATENCY_BUCKETS_SECONDS, OnnxRanker, Retriever, TwoTowerModel } from '../lib/index.js';
import { GraphBuilder } from '../lib/model/onnx/graph.js';
import { LatencyHistogram } from '../lib/serve/metrics.js';
import { DIM, catalogIndex, catalogItem, catalogPackage, type CatalogItem } from './serve-fixtures.js';

const N = 300;
let dir: string;
let model: TwoTowerModel;
let other: TwoTowerModel;
let index: FlatIndex;
const records = new Map<bigint, CatalogItem>(Array.from({ length: N }, (_, i) => [BigInt(1000 + i), catalogItem(i)]));

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'ebrix-retriever-'));
  model = await TwoTowerModel.load(await catalogPackage(dir, 'main', 3), { threads: 1 });
  other = await TwoTowerModel.load(await catalogPackage(dir, 'other', 9), { threads: 1 });
  index = await catalogIndex(model, N);
});
afterAll(async () => {
  index.dispose();
  await model.dispose();
  await other.dispose();
  await rm(dir, { recursive: true, force: true });
});

/** Exact top-n of the query tower's embedding, straight from the index. */
async function exact(text: string, n: number, filter?: object): Promise<{ id: bigint; score: number }[]> {
  const vector = await model.embedQueries([{ text }]);
  return (await index.search(vector, n, filter ? { filter } : {})).hits(0);
}

/** A linear ranker as an ONNX graph: score = features · weights + bias, output [n, 1]. */
function linearRanker(weights: number[], bias: number): Uint8Array {
  const g = new GraphBuilder('linear-ranker');
  g.input('features', 'float32', ['n', weights.length]);
  g.initializer('weights', Float32Array.from(weights), [weights.length, 1]);
  g.initializer('bias', Float32Array.from([bias]), [1]);
  g.output('score', 'float32', ['n', 1]);
  g.node('Add', [g.node('MatMul', ['features', 'weights']), 'bias'], 'score');
  return g.toBytes({ producerName: 'ebrix-test', producerVersion: '1' });
}

describe('Retriever', () => {
  it('returns the index top-k of the query embedding, with records and timings', async () => {
    const retriever = new Retriever({ model, index, items: records, k: 5 });
    const result = await retriever.retrieve({ text: 'red wooden chair' });
    const expected = await exact('red wooden chair', 5);
    expect(result.items.map((i) => i.id)).toEqual(expected.map((h) => h.id));
    for (const [j, item] of result.items.entries()) {
      expect(item.towerScore).toBeCloseTo(expected[j]!.score, 5);
      expect(item.score).toBe(item.towerScore);
      expect(item.record).toEqual(records.get(item.id));
    }
    const t = result.timings;
    expect(t.embedMs).toBeGreaterThan(0);
    expect(t.searchMs).toBeGreaterThan(0);
    expect(t.totalMs).toBeGreaterThanOrEqual(t.embedMs + t.searchMs + t.rankMs - 1e-6);

    // k per request, a task head, the array and function lookups.
    const byArray = new Retriever({ model, index, items: Array.from({ length: 2000 }, (_, i) => (i >= 1000 ? catalogItem(i - 1000) : undefined)) });
    const three = await byArray.retrieve({ text: 'lamp' }, { k: 3, task: 'click' });
    expect(three.items).toHaveLength(3);
    expect(three.items[0]!.record).toEqual(records.get(three.items[0]!.id));
    const clickVector = await model.embedQueries([{ text: 'lamp' }], { task: 'click' });
    expect(three.items.map((i) => i.id)).toEqual((await index.search(clickVector, 3)).hits(0).map((h) => h.id));
    const byFunction = new Retriever({ model, index, items: async (ids: bigint[]) => ids.map((id) => records.get(id)) });
    expect((await byFunction.retrieve({ text: 'lamp' }, { k: 2 })).items[1]!.record).toBeDefined();
    const none = new Retriever({ model, index });
    expect((await none.retrieve({ text: 'lamp' }, { k: 1 })).items[0]).not.toHaveProperty('record');
  });

  it('batches concurrent searches into one index search, each request getting its own rows', async () => {
    const texts = Array.from({ length: 40 }, (_, i) => `query ${i % 7} ${i}`);
    const expected = await Promise.all(texts.map((text) => exact(text, 10)));
    await using batched = new Retriever({ model, index });
    const results = await Promise.all(texts.map((text) => batched.retrieve({ text })));
    results.forEach((r, i) => expect(r.items.map((x) => x.id)).toEqual(expected[i]!.map((h) => h.id)));
    // Filtered ones go alone, mixed in with batched ones.
    const mixed = await Promise.all(texts.map((text, i) => batched.retrieve({ text }, i % 2 ? { filter: { category: 'home' } } : {})));
    mixed.forEach((r, i) => {
      if (i % 2) expect(r.items.every((x) => records.get(x.id)!.category === 'home')).toBe(true);
      else expect(r.items.map((x) => x.id)).toEqual(expected[i]!.map((h) => h.id));
    });
    await using alone = new Retriever({ model, index, searchBatching: false });
    expect((await alone.retrieve({ text: texts[3]! })).items.map((x) => x.id)).toEqual(expected[3]!.map((h) => h.id));
    expect(() => new Retriever({ model, index, searchBatching: { maxBatchSize: 0 } })).toThrow(/maxBatchSize/);
    await batched.dispose();
    await expect(batched.retrieve({ text: 'late' })).rejects.toMatchObject({ code: 'EBRIX_DISPOSED' });
  });

  it('applies attribute filters inside the search', async () => {
    const retriever = new Retriever({ model, index, items: records });
    const filter = { category: 'garden', price: { lt: 40 } };
    const result = await retriever.retrieve({ text: 'steel table' }, { k: 8, filter });
    expect(result.items.length).toBe(8);
    for (const item of result.items) {
      expect(item.record!.category).toBe('garden');
      expect(item.record!.price).toBeLessThan(40);
    }
    expect(result.items.map((i) => i.id)).toEqual((await exact('steel table', 8, filter)).map((h) => h.id));
    // A filter no item passes gives no items, not padding.
    expect((await retriever.retrieve({ text: 'steel' }, { filter: { category: 'nowhere' } })).items).toEqual([]);
    await expect(retriever.retrieve({ text: 'x' }, { filter: { colour: 'red' } })).rejects.toMatchObject({ code: 'EBRIX_INVALID_ARGUMENT' });
  });

  it('re-scores the candidates with a TypeScript ranker', async () => {
    // Cheapest first among the 50 candidates; ties by tower score.
    const retriever = new Retriever<{ text: string }, CatalogItem>({
      model,
      index,
      items: records,
      candidates: 50,
      k: 10,
      ranker: (_request, candidates) => candidates.map((c) => -c.record!.price),
    });
    const result = await retriever.retrieve({ text: 'blue sofa' });
    const pool = await exact('blue sofa', 50);
    const expected = pool
      .map((h) => ({ id: h.id, tower: h.score, price: records.get(h.id)!.price }))
      .sort((a, b) => a.price - b.price || b.tower - a.tower)
      .slice(0, 10);
    expect(result.items.map((i) => i.id)).toEqual(expected.map((e) => e.id));
    expect(result.items.map((i) => i.score)).toEqual(expected.map((e) => -e.price));
    expect(result.timings.rankMs).toBeGreaterThanOrEqual(0);

    const wrongLength = new Retriever({ model, index, ranker: () => [1, 2] });
    await expect(wrongLength.retrieve({ text: 'a' })).rejects.toMatchObject({ code: 'EBRIX_INVALID_ARGUMENT' });
    const nan = new Retriever({ model, index, ranker: (_r, c) => c.map(() => Number.NaN) });
    await expect(nan.retrieve({ text: 'a' })).rejects.toThrow(/ranker scores\[0\]/);
  });

  it('re-scores with an ONNX ranker over the tower score and item fields', async () => {
    // score = 0.5 · towerScore + 0.02 · price − 0.3 · rating + 1
    await using ranker = await OnnxRanker.load(linearRanker([0.5, 0.02, -0.3], 1), { features: ['towerScore', 'item.price', 'item.rating'] });
    const candidates = [
      { id: 1n, towerScore: 0.25, record: { price: 10, rating: 2 } },
      { id: 2n, towerScore: -1, record: { price: 'n/a', rating: true } },
      { id: 3n, towerScore: 0.5, record: undefined },
    ];
    expect(Array.from(ranker.featureMatrix({}, candidates))).toEqual([0.25, 10, 2, -1, 0, 1, 0.5, 0, 0]);
    const scores = await ranker.rank({}, candidates);
    const expectedScores = [0.125 + 0.2 - 0.6 + 1, -0.5 - 0.3 + 1, 0.25 + 1];
    expect(scores).toHaveLength(3);
    expectedScores.forEach((s, i) => expect(scores[i]).toBeCloseTo(s, 5));

    const retriever = new Retriever({ model, index, items: records, ranker, candidates: 40, k: 7 });
    const result = await retriever.retrieve({ text: 'large clock' });
    const pool = await exact('large clock', 40);
    const score = (h: { id: bigint; score: number }): number => {
      const r = records.get(h.id)!;
      return Math.fround(0.5 * h.score + 0.02 * r.price - 0.3 * r.rating + 1);
    };
    const expected = [...pool].sort((a, b) => score(b) - score(a) || b.score - a.score).slice(0, 7);
    expect(result.items.map((i) => i.id)).toEqual(expected.map((h) => h.id));
    // The ranker reorders: the result is not the tower order.
    expect(result.items.map((i) => i.id)).not.toEqual(pool.slice(0, 7).map((h) => h.id));
    for (const item of result.items) expect(item.score).toBeCloseTo(score({ id: item.id, score: item.towerScore }), 4);

    // On the calling thread, and without batching: the same scores.
    await using inline = await OnnxRanker.load(linearRanker([0.5, 0.02, -0.3], 1), { features: ['towerScore', 'item.price', 'item.rating'], inline: true });
    expect(Array.from(await inline.rank({}, candidates))).toEqual(Array.from(scores));
    await using alone = await OnnxRanker.load(linearRanker([0.5, 0.02, -0.3], 1), { features: ['towerScore', 'item.price', 'item.rating'], batching: false });
    expect(Array.from(await alone.rank({}, candidates))).toEqual(Array.from(scores));
    // Concurrent calls share runs and each gets its own rows.
    const many = await Promise.all(Array.from({ length: 20 }, (_, i) => ranker.rank({}, candidates.slice(0, 1 + (i % 3)))));
    many.forEach((s, i) => expect(Array.from(s)).toEqual(Array.from(scores.subarray(0, 1 + (i % 3)))));

    // Request features are the same in every row.
    await using byRequest = await OnnxRanker.load(linearRanker([1, 1], 0), { features: ['request.boost', 'towerScore'], missing: -5 });
    expect(Array.from(byRequest.featureMatrix({ boost: 2 }, candidates.slice(0, 2)))).toEqual([2, 0.25, 2, -1]);
    expect(Array.from(byRequest.featureMatrix({}, candidates.slice(0, 1)))).toEqual([-5, 0.25]);

    await expect(OnnxRanker.load(linearRanker([1], 0), { features: ['price'] })).rejects.toMatchObject({ code: 'EBRIX_INVALID_SPEC' });
    await expect(OnnxRanker.load(new Uint8Array([1, 2, 3]), { features: ['towerScore'] })).rejects.toMatchObject({ code: 'EBRIX_CORRUPT_MODEL' });
    await using narrow = await OnnxRanker.load(linearRanker([1, 1], 0), { features: ['towerScore'] });
    await expect(narrow.rank({}, candidates)).rejects.toThrow();
  });

  it('refuses a model and an index of different versions', async () => {
    expect(() => new Retriever({ model: other, index })).toThrow(expect.objectContaining({ code: 'EBRIX_VERSION_MISMATCH' }));
    using unbound = new FlatIndex({ dim: DIM });
    expect(() => new Retriever({ model, index: unbound })).toThrow(/bound to no model version/);
    using narrow = new FlatIndex({ dim: DIM + 1, modelVersion: model.version });
    expect(() => new Retriever({ model, index: narrow })).toThrow(expect.objectContaining({ code: 'EBRIX_DIM_MISMATCH' }));
    expect(() => new Retriever({ model, index: {} as FlatIndex })).toThrow(/FlatIndex, IvfPqIndex, HnswIndex or IndexStore/);
    expect(() => new Retriever({ model, index, k: 0 })).toThrow(/options\.k/);
  });

  it('searches the live version of an IndexStore: swaps apply to new requests, a mismatched version is refused', async () => {
    const store = await IndexStore.open(path.join(dir, 'store'));
    try {
      const retriever = new Retriever({ model, index: store, k: 3 });
      await expect(retriever.retrieve({ text: 'desk' })).rejects.toThrow(/no version yet/);
      using first = await catalogIndex(model, 100);
      using second = await catalogIndex(model, 100, 5000);
      await store.publish(first);
      const a = await retriever.retrieve({ text: 'desk' });
      expect(a.items.every((i) => i.id < 1100n)).toBe(true);
      await store.publish(second);
      const b = await retriever.retrieve({ text: 'desk' });
      expect(b.items.every((i) => i.id >= 6000n)).toBe(true);
      using foreign = await catalogIndex(other, 20);
      await store.publish(foreign);
      await expect(retriever.retrieve({ text: 'desk' })).rejects.toMatchObject({ code: 'EBRIX_VERSION_MISMATCH' });
      await store.rollback();
      expect((await retriever.retrieve({ text: 'desk' })).items[0]!.id).toBeGreaterThanOrEqual(6000n);
      expect(retriever.metrics().errors).toEqual({ EBRIX_INVALID_ARGUMENT: 1, EBRIX_VERSION_MISMATCH: 1 });
    } finally {
      store.close();
    }
  });

  it('searches HnswIndex and IvfPqIndex too, with filters where the index keeps attributes', async () => {
    const vectors = await model.embedItems(Array.from({ length: N }, (_, i) => catalogItem(i)));
    const ids = Array.from({ length: N }, (_, i) => 1000 + i);
    using hnsw = new HnswIndex({ dim: DIM, modelVersion: model.version, threads: 1 });
    await hnsw.add(ids, vectors);
    const retriever = new Retriever({ model, index: hnsw, search: { expansion: 400 } });
    expect((await retriever.retrieve({ text: 'rug' })).items.map((i) => i.id)).toEqual((await exact('rug', 10)).map((h) => h.id));
    await expect(retriever.retrieve({ text: 'rug' }, { filter: { category: 'home' } })).rejects.toThrow(/needs an index made with options.attributes/);

    using filtered = new HnswIndex({ dim: DIM, modelVersion: model.version, threads: 1, attributes: { category: 'category' } });
    await filtered.add(ids, vectors, { attributes: ids.map((_, i) => ({ category: catalogItem(i).category })) });
    const viaHnsw = new Retriever({ model, index: filtered, search: { expansion: 400 } });
    const office = await viaHnsw.retrieve({ text: 'rug' }, { filter: { category: 'office' } });
    expect(office.items.map((i) => i.id)).toEqual((await exact('rug', 10, { category: 'office' })).map((h) => h.id));

    using ivf = new IvfPqIndex({ dim: DIM, nlist: 4, m: 4, refine: 'f32', modelVersion: model.version, attributes: { category: 'category' } });
    await ivf.train(vectors);
    await ivf.add(ids, vectors, { attributes: ids.map((_, i) => ({ category: catalogItem(i).category })) });
    const viaIvf = new Retriever({ model, index: ivf, items: records, search: { nprobe: 4, refineFactor: 30 } });
    const result = await viaIvf.retrieve({ text: 'rug' }, { filter: { category: 'office' } });
    expect(result.items.map((i) => i.id)).toEqual((await exact('rug', 10, { category: 'office' })).map((h) => h.id));
  });

  it('searches by vector: no tower, no ranker, dimension checked', async () => {
    const retriever = new Retriever({ model, index, items: records, ranker: () => [] });
    const vector = await model.embedQueries([{ text: 'green shelf' }]);
    const result = await retriever.retrieveByVector(Array.from(vector), { k: 4 });
    expect(result.items.map((i) => i.id)).toEqual((await exact('green shelf', 4)).map((h) => h.id));
    expect(result.timings.embedMs).toBe(0);
    await expect(retriever.retrieveByVector([1, 2, 3])).rejects.toMatchObject({ code: 'EBRIX_DIM_MISMATCH' });
    await expect(retriever.retrieveByVector(new Array(DIM).fill(Number.NaN))).rejects.toThrow(/finite numbers for vector\[0\]/);
  });

  it('counts requests, stage latency and errors, and renders Prometheus text', async () => {
    const retriever = new Retriever({ model, index, ranker: (_r, c) => c.map((x) => x.towerScore) });
    await Promise.all(Array.from({ length: 20 }, (_, i) => retriever.retrieve({ text: `query ${i}` })));
    await expect(retriever.retrieve({ text: 7 } as unknown as Record<string, unknown>)).rejects.toMatchObject({ code: 'EBRIX_INVALID_RECORD' });
    await expect(retriever.retrieve(null as unknown as Record<string, unknown>)).rejects.toMatchObject({ code: 'EBRIX_INVALID_ARGUMENT' });
    const m = retriever.metrics();
    expect(m.requests).toBe(22);
    expect(m.errors).toEqual({ EBRIX_INVALID_ARGUMENT: 1, EBRIX_INVALID_RECORD: 1 });
    expect(m.qps).toBeGreaterThan(0);
    for (const stage of ['embed', 'search', 'rank', 'total'] as const) {
      expect(m.stages[stage].count).toBe(20);
      expect(m.stages[stage].p50Ms).toBeGreaterThan(0);
      expect(m.stages[stage].p99Ms).toBeGreaterThanOrEqual(m.stages[stage].p50Ms);
      expect(m.stages[stage].p99Ms).toBeLessThanOrEqual(m.stages[stage].maxMs);
    }
    expect(m.stages.total.p50Ms).toBeGreaterThanOrEqual(m.stages.search.p50Ms);

    const text = retriever.prometheus();
    const lines = text.trimEnd().split('\n');
    for (const line of lines) expect(line).toMatch(/^(# (HELP|TYPE) \w+ .+|\w+(\{[^}]*\})? [-+0-9.eInfNa]+)$/);
    expect(text).toContain('# TYPE ebrix_retrieval_stage_seconds histogram');
    expect(text).toContain('ebrix_retrieval_stage_seconds_count{stage="total"} 20');
    expect(text).toContain('ebrix_retrieval_stage_seconds_bucket{stage="embed",le="+Inf"} 20');
    expect(text).toContain('ebrix_retrieval_requests_total 22');
    expect(text).toContain('ebrix_retrieval_errors_total{code="EBRIX_INVALID_RECORD"} 1');
    // Buckets are cumulative and end at the count.
    const buckets = lines.filter((l) => l.startsWith('ebrix_retrieval_stage_seconds_bucket{stage="search"')).map((l) => Number(l.split(' ')[1]));
    expect(buckets.length).toBe(24);
    expect(buckets).toEqual([...buckets].sort((a, b) => a - b));
    expect(buckets.at(-1)).toBe(20);
    retriever.resetMetrics();
    expect(retriever.metrics().requests).toBe(0);
  });
});

describe('LatencyHistogram', () => {
  it('estimates quantiles within a bucket of the truth', () => {
    const h = new LatencyHistogram();
    const values = Array.from({ length: 1000 }, (_, i) => 0.05 + i * 0.01); // 0.05 … 10.04 ms
    for (const v of values) h.observe(v);
    const truth = (q: number) => values[Math.ceil(q * values.length) - 1]!;
    for (const q of [0.5, 0.9, 0.99]) {
      const estimate = h.quantileMs(q);
      expect(estimate / truth(q)).toBeGreaterThan(1 / 1.19);
      expect(estimate / truth(q)).toBeLessThan(1.19);
    }
    expect(h.summary().maxMs).toBeCloseTo(10.04, 6);
    expect(LATENCY_BUCKETS_SECONDS[0]).toBe(1e-5);
    expect(LATENCY_BUCKETS_SECONDS.at(-1)).toBeGreaterThan(50);
    h.observe(1e9);
    expect(h.quantileMs(1)).toBe(1e9);
    expect(Number.isNaN(new LatencyHistogram().quantileMs(0.5))).toBe(true);
  });
});
