import { describe, expect, it } from 'vitest';

import {
  DimensionMismatchError,
  DisposedError,
  DuplicateIdError,
  FlatIndex,
  HnswIndex,
  InvalidArgumentError,
  InvalidVectorError,
  NO_ID,
  VersionMismatchError,
  supportedSimdLevels,
  type HnswFilterStrategy,
  type Metric,
  type SearchResult,
} from '../lib/index.js';
import { clustered, mnist, recall } from './datasets.js';
import { makeIds, rng } from './helpers.js';

async function exact(
  metric: Metric,
  dim: number,
  ids: bigint[],
  data: Float32Array,
  queries: Float32Array,
  k: number,
  allow?: Uint32Array,
): Promise<SearchResult> {
  using flat = new FlatIndex({ dim, metric });
  await flat.add(ids, data);
  return flat.search(queries, k, { allow });
}

describe('HnswIndex recall against FlatIndex', () => {
  const dim = 32;
  const n = 4000;
  const k = 10;
  const data = clustered(n, dim, 24, 7);
  const queries = clustered(50, dim, 24, 8);
  const ids = makeIds(n);

  it.each(['ip', 'cosine', 'l2'] as const)('clustered, %s: >= 0.95 at expansion 64, rising with expansion', async (metric) => {
    const truth = await exact(metric, dim, ids, data, queries, k);
    using index = new HnswIndex({ dim, metric });
    await index.add(ids.slice(0, 1500), data.subarray(0, 1500 * dim));
    index.addSync(ids.slice(1500), data.subarray(1500 * dim));
    expect(index.size).toBe(n);
    const recalls: number[] = [];
    for (const expansion of [10, 64, 256]) recalls.push(recall(truth, await index.search(queries, k, { expansion })));
    console.info(`HnswIndex clustered ${metric} recall@10 at expansion 10 / 64 / 256: ${recalls.map((r) => r.toFixed(3)).join(' / ')}`);
    expect(recalls[1]!).toBeGreaterThanOrEqual(0.95);
    expect(recalls[2]!).toBeGreaterThanOrEqual(recalls[0]!);
    expect(recalls[2]!).toBeGreaterThanOrEqual(0.99);
    // Scores are exact for the ids returned (FlatIndex's within float rounding), best first.
    const got = await index.search(queries, k, { expansion: 256 });
    for (let q = 0; q < got.nq; q++) {
      const { ids: rowIds, scores } = got.row(q);
      for (let i = 1; i < k; i++) expect(scores[i]!).toBeLessThanOrEqual(scores[i - 1]!);
      const truthRow = truth.row(q);
      const at = Array.from(rowIds).indexOf(truthRow.ids[0]!);
      if (at >= 0) expect(scores[at]!).toBeCloseTo(truthRow.scores[0]!, 3);
    }
    // Sync and async searches of one graph agree; the default expansion is the index's.
    const sync = index.searchSync(queries, k, { expansion: 64 });
    const async = await index.search(queries, k);
    expect(Array.from(sync.ids)).toEqual(Array.from(async.ids));
  });

  it('MNIST (784-d): l2 and cosine >= 0.95 at expansion 64', { timeout: 120_000 }, async () => {
    const all = mnist(5050);
    const mdim = 784;
    const base = all.subarray(50 * mdim);
    const mq = all.subarray(0, 50 * mdim);
    const mids = makeIds(5000);
    for (const metric of ['l2', 'cosine'] as const) {
      const truth = await exact(metric, mdim, mids, base, mq, k);
      using index = new HnswIndex({ dim: mdim, metric });
      await index.add(mids, base);
      const recalls: number[] = [];
      for (const expansion of [16, 64, 128]) recalls.push(recall(truth, await index.search(mq, k, { expansion })));
      console.info(`HnswIndex MNIST ${metric} recall@10 at expansion 16 / 64 / 128: ${recalls.map((r) => r.toFixed(3)).join(' / ')}`);
      expect(recalls[1]!).toBeGreaterThanOrEqual(0.95);
      expect(recalls[2]!).toBeGreaterThanOrEqual(recalls[0]!);
    }
  });

  it('f16 and bf16 storage stay close to f32, on every SIMD level', async () => {
    const m = 2000;
    const truth = await exact('l2', dim, ids.slice(0, m), data.subarray(0, m * dim), queries, k);
    for (const simd of supportedSimdLevels()) {
      for (const storage of ['f32', 'f16', 'bf16'] as const) {
        using index = new HnswIndex({ dim, metric: 'l2', storage, simd });
        expect(index.simd).toBe(simd);
        await index.add(ids.slice(0, m), data.subarray(0, m * dim));
        const got = await index.search(queries, k, { expansion: 128 });
        expect(recall(truth, got), `${simd} ${storage}`).toBeGreaterThanOrEqual(storage === 'bf16' ? 0.9 : 0.97);
        for (let q = 0; q < got.nq; q++) {
          if (got.row(q).ids[0] !== truth.row(q).ids[0]) continue;
          const want = truth.row(q).scores[0]!;
          const tolerance = storage === 'f32' ? 1e-4 : 0.02;
          expect(Math.abs(got.row(q).scores[0]! - want)).toBeLessThanOrEqual(tolerance * Math.abs(want) + 1e-4);
        }
      }
    }
  });
});

describe('HnswIndex filtered search', () => {
  const dim = 24;
  const n = 6000;
  const k = 10;
  const data = clustered(n, dim, 30, 11);
  const queries = clustered(40, dim, 30, 12);
  const ids = makeIds(n);

  it.each([0.5, 0.1, 0.01])('allow bitsets with %s of rows allowed: only allowed rows, recall >= 0.9 on every strategy', async (fraction) => {
    using index = new HnswIndex({ dim, metric: 'ip' });
    await index.add(ids.slice(0, 2000), data.subarray(0, 2000 * dim));
    await index.add(ids.slice(2000), data.subarray(2000 * dim)); // rows are numbered across adds
    const next = rng(Math.round(fraction * 1000));
    const allow = new Uint32Array(Math.ceil(n / 32));
    const allowed = new Set<bigint>();
    for (let r = 0; r < n; r++) {
      if (next() < fraction) {
        allow[r >> 5]! |= 1 << (r & 31);
        allowed.add(ids[r]!);
      }
    }
    const truth = await exact('ip', dim, ids, data, queries, k, allow);
    const measured: string[] = [];
    for (const filter of ['auto', 'graph', 'scan'] as HnswFilterStrategy[]) {
      const got = await index.search(queries, k, { allow, filterStrategy: filter, expansion: 64 });
      for (const id of got.ids) expect(id === NO_ID || allowed.has(id)).toBe(true);
      const r = recall(truth, got);
      measured.push(`${filter} ${r.toFixed(3)}`);
      expect(r, filter).toBeGreaterThanOrEqual(filter === 'scan' ? 0.999 : 0.9);
    }
    const sync = index.searchSync(queries, k, { allow, expansion: 64 });
    for (const id of sync.ids) expect(id === NO_ID || allowed.has(id)).toBe(true);
    console.info(`HnswIndex filtered recall@10, ${allowed.size} of ${n} rows allowed: ${measured.join(', ')}`);
  });

  it('an empty or short bitset allows nothing past its end', async () => {
    // One build thread: the graph (and so what a filtered walk reaches) is the same every run.
    using index = new HnswIndex({ dim, metric: 'l2', threads: 1 });
    await index.add(ids.slice(0, 500), data.subarray(0, 500 * dim));
    const none = await index.search(queries.subarray(0, dim), 5, { allow: new Uint32Array(0) });
    expect(Array.from(none.ids)).toEqual(new Array(5).fill(NO_ID));
    const first = new Set(ids.slice(0, 32));
    const allow = new Uint32Array([0xffffffff]);
    // The scan (what 'auto' picks for 32 of 500 rows) finds every allowed row; the graph walk
    // finds those its links reach within its candidate list, and never another.
    const scanned = Array.from((await index.search(queries.subarray(0, dim), 40, { allow })).row(0).ids);
    expect(new Set(scanned.slice(0, 32))).toEqual(first);
    expect(scanned.slice(32)).toEqual(new Array(8).fill(NO_ID));
    const walked = Array.from((await index.search(queries.subarray(0, dim), 40, { allow, filterStrategy: 'graph' })).row(0).ids);
    const found = walked.filter((id) => id !== NO_ID);
    expect(found.length).toBeGreaterThanOrEqual(30);
    expect(found.every((id) => first.has(id))).toBe(true);
    expect(walked.slice(found.length)).toEqual(new Array(40 - found.length).fill(NO_ID));
  });
});

describe('HnswIndex behaviour', () => {
  const dim = 16;
  const n = 3000;
  const data = clustered(n, dim, 12, 21);
  const queries = clustered(30, dim, 12, 22);
  const ids = makeIds(n);

  it('remove: removed ids never come back, the rest are still found, ids can be re-added', async () => {
    using index = new HnswIndex({ dim, metric: 'l2' });
    await index.add(ids, data);
    const gone = ids.filter((_, i) => i % 2 === 0);
    const removed = new Set(gone);
    await index.remove(gone);
    expect(index.size).toBe(n - gone.length);
    expect(index.has(gone[0]!)).toBe(false);
    expect(index.has(ids[1]!)).toBe(true);
    expect(index.has(Number(ids[1]!))).toBe(true);
    for (const expansion of [16, 64]) {
      const got = await index.search(queries, 10, { expansion });
      for (const id of got.ids) expect(removed.has(id)).toBe(false);
      expect(Array.from(got.ids).includes(NO_ID)).toBe(false);
    }
    const keptRows = ids.map((_, i) => i).filter((i) => i % 2 === 1);
    const kept = new Float32Array(keptRows.length * dim);
    keptRows.forEach((r, i) => kept.set(data.subarray(r * dim, (r + 1) * dim), i * dim));
    const truth = await exact('l2', dim, keptRows.map((r) => ids[r]!), kept, queries, 10);
    expect(recall(truth, await index.search(queries, 10, { expansion: 64 }))).toBeGreaterThanOrEqual(0.95);

    // As FlatIndex and IvfPqIndex: unknown ids (or ones already removed) are ignored, a
    // repeated id counts once, and the count is of the ids actually removed.
    expect(await index.remove([999_999_999n, gone[0]!])).toBe(0);
    expect(index.removeSync([gone[1]!])).toBe(0);
    expect(index.size).toBe(n - gone.length);
    expect(await index.remove([ids[1]!, 999_999_999n, ids[1]!])).toBe(1);
    expect(index.has(ids[1]!)).toBe(false);
    await index.add([ids[1]!], data.subarray(dim, 2 * dim));
    expect(index.has(ids[1]!)).toBe(true);
    expect(index.size).toBe(n - gone.length);

    // Removed ids can be added again (new rows, reusing the removed nodes); a second remove
    // empties the index.
    const goneRows = new Float32Array(gone.length * dim);
    ids.forEach((_, i) => {
      if (i % 2 === 0) goneRows.set(data.subarray(i * dim, (i + 1) * dim), (i / 2) * dim);
    });
    const before = index.memoryUsage().bytes;
    await index.add(gone, goneRows);
    expect(index.size).toBe(n);
    expect(index.memoryUsage().bytes).toBeLessThan(before * 1.2);
    const self = await index.search(data.subarray(0, dim), 1);
    expect(self.ids[0]).toBe(ids[0]);
    expect(self.scores[0]).toBe(0);
    index.removeSync(ids);
    expect(index.size).toBe(0);
    const empty = await index.search(queries, 3);
    expect(new Set(empty.ids)).toEqual(new Set([NO_ID]));
  });

  it('rejects bad arguments with typed errors and leaves the index unchanged', async () => {
    expect(() => new HnswIndex({ dim: 0 })).toThrow(InvalidArgumentError);
    expect(() => new HnswIndex({ dim, connectivity: 1 })).toThrow(InvalidArgumentError);
    expect(() => new HnswIndex({ dim, connectivity: 2000 })).toThrow(InvalidArgumentError);
    expect(() => new HnswIndex({ dim, expansionAdd: 0 })).toThrow(InvalidArgumentError);
    expect(() => new HnswIndex({ dim, storage: 'i4' as 'f16' })).toThrow(InvalidArgumentError);
    expect(() => new HnswIndex({ dim, metric: 'dot' as 'ip' })).toThrow(InvalidArgumentError);
    // One build thread: a small graph built by racing inserts can leave a node no walk reaches
    // (seen once in 25 runs), and the padding check below needs every node found.
    using index = new HnswIndex({ dim, metric: 'cosine', connectivity: 8, expansionAdd: 64, expansionSearch: 32, modelVersion: 'v1', threads: 1 });
    expect(index.connectivity).toBe(8);
    expect(index.modelVersion).toBe('v1');
    index.bindModelVersion('v1');
    expect(() => index.bindModelVersion('v2')).toThrow(VersionMismatchError);
    await index.add(ids.slice(0, 100), data.subarray(0, 100 * dim));

    await expect(index.add([1n, 2n], data.subarray(0, dim))).rejects.toThrow(DimensionMismatchError);
    await expect(index.add([1n], data.subarray(0, dim + 1))).rejects.toThrow(DimensionMismatchError);
    const nan = data.slice(0, 2 * dim);
    nan[dim + 3] = Number.NaN;
    await expect(index.add([1n, 2n], nan)).rejects.toThrow(InvalidVectorError);
    const inf = data.slice(0, dim);
    inf[0] = Number.POSITIVE_INFINITY;
    expect(() => index.addSync([1n], inf)).toThrow(InvalidVectorError);
    await expect(index.add([ids[0]!], data.subarray(0, dim))).rejects.toThrow(DuplicateIdError);
    await expect(index.add([5n, 5n], data.subarray(0, 2 * dim))).rejects.toThrow(DuplicateIdError);
    await expect(index.add([NO_ID], data.subarray(0, dim))).rejects.toThrow(InvalidArgumentError);
    expect(index.size).toBe(100);
    expect(index.has(1n) || index.has(5n)).toBe(false);

    await expect(index.search(data.subarray(0, dim), 0)).rejects.toThrow(InvalidArgumentError);
    expect(() => index.searchSync(data.subarray(0, dim), 1.5)).toThrow(InvalidArgumentError);
    await expect(index.search(data.subarray(0, dim - 1), 5)).rejects.toThrow(DimensionMismatchError);
    await expect(index.search(inf, 5)).rejects.toThrow(InvalidVectorError);
    await expect(index.search(data.subarray(0, dim), 5, { expansion: 0 })).rejects.toThrow(InvalidArgumentError);
    await expect(index.search(data.subarray(0, dim), 5, { filterStrategy: 'brute' as 'scan' })).rejects.toThrow(InvalidArgumentError);
    // The strategy's old name gets a message that says where it went.
    await expect(index.search(data.subarray(0, dim), 5, { filter: 'scan' as never })).rejects.toThrow('options.filterStrategy');
    await expect(index.search(data.subarray(0, dim), 5, { allow: [1] as unknown as Uint32Array })).rejects.toThrow(InvalidArgumentError);
    expect(() => index.has(-1)).toThrow(InvalidArgumentError);
    // k past the size pads, as FlatIndex.
    const padded = await index.search(data.subarray(0, dim), 105);
    expect(padded.row(0).ids[99]).not.toBe(NO_ID);
    expect(padded.row(0).ids[100]).toBe(NO_ID);
    expect(padded.row(0).scores[104]).toBe(-Infinity);
  });

  it('memoryUsage counts the graph and the vectors, all on the host', async () => {
    using index = new HnswIndex({ dim, metric: 'ip', storage: 'f16' });
    const empty = index.memoryUsage();
    await index.add(ids, data);
    const usage = index.memoryUsage();
    expect(usage.deviceBytes).toBe(0);
    expect(usage.hostBytes).toBe(usage.bytes);
    // f16 vectors (2 bytes a value) and at least the base layer's links (2 × 16 × 4 bytes).
    expect(usage.bytes - empty.bytes).toBeGreaterThan(n * (dim * 2 + 2 * 16 * 4));
    expect(usage.bytes).toBeLessThan(n * (dim * 4 + 1000));
  });

  it('adds and removes while searches run: results hold only added ids', async () => {
    using index = new HnswIndex({ dim, metric: 'ip', threads: 2 });
    await index.add(ids.slice(0, 200), data.subarray(0, 200 * dim));
    const known = new Set(ids);
    let stop = false;
    let searches = 0;
    const searchers = Array.from({ length: 6 }, async (_, t) => {
      const allow = t % 2 === 0 ? new Uint32Array(Math.ceil(n / 32)).fill(0x33333333) : undefined;
      while (!stop) {
        const got = await index.search(queries, 10, { allow });
        for (const id of got.ids) {
          if (id !== NO_ID) expect(known.has(id)).toBe(true);
        }
        searches++;
      }
    });
    for (let start = 200; start < n; start += 200) {
      await index.add(ids.slice(start, start + 200), data.subarray(start * dim, (start + 200) * dim));
      if (start % 1000 === 0) await index.remove(ids.slice(start - 1000, start - 900));
    }
    stop = true;
    await Promise.all(searchers);
    expect(searches).toBeGreaterThan(10);
    expect(index.size).toBe(n - 2 * 100);
  });

  it('dispose releases the index; calls after it throw DisposedError', async () => {
    const index = new HnswIndex({ dim });
    const adding = index.add(ids, data);
    index.dispose(); // the add in flight keeps the native index alive until it ends
    await adding;
    expect(index.disposed).toBe(true);
    expect(() => index.size).toThrow(DisposedError);
    expect(() => index.memoryUsage()).toThrow(DisposedError);
    expect(() => index.has(1)).toThrow(DisposedError);
    await expect(index.search(data.subarray(0, dim), 1)).rejects.toThrow(DisposedError);
    await expect(index.add([1], data.subarray(0, dim))).rejects.toThrow(DisposedError);
    await expect(index.remove([1])).rejects.toThrow(DisposedError);
    index.dispose();
    {
      using scoped = new HnswIndex({ dim });
      expect(scoped.size).toBe(0);
    }
  });
});
