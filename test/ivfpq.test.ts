import { describe, expect, it } from 'vitest';

import {
  DimensionMismatchError,
  DisposedError,
  DuplicateIdError,
  FlatIndex,
  InvalidArgumentError,
  IvfPqIndex,
  NO_ID,
  NotTrainedError,
  type Metric,
} from '../lib/index.js';
import { clustered, mnist, recall } from './datasets.js';
import { makeIds } from './helpers.js';

async function exact(metric: Metric, dim: number, ids: bigint[], data: Float32Array, queries: Float32Array, k: number) {
  using flat = new FlatIndex({ dim, metric });
  await flat.add(ids, data);
  return flat.search(queries, k);
}

describe('IvfPqIndex recall against FlatIndex', () => {
  const dim = 32;
  const n = 4000;
  const nlist = 16;
  const k = 10;
  const data = clustered(n, dim, 24, 7);
  const queries = clustered(50, dim, 24, 8);
  const ids = makeIds(n);

  it.each([
    { nbits: 8 as const, m: 8, metric: 'l2' as const },
    { nbits: 4 as const, m: 16, metric: 'ip' as const },
    { nbits: 4 as const, m: 16, metric: 'cosine' as const },
  ])('clustered, $nbits-bit, $metric: rises with nprobe, >= 0.99 with refine f32', async ({ nbits, m, metric }) => {
    const truth = await exact(metric, dim, ids, data, queries, k);
    using plain = new IvfPqIndex({ dim, metric, nlist, m, nbits });
    using refined = new IvfPqIndex({ dim, metric, nlist, m, nbits, refine: 'f32' });
    for (const index of [plain, refined]) {
      expect(index.trained).toBe(false);
      await index.train(data, { seed: 3, maxIterations: 12 });
      expect(index.trained).toBe(true);
      await index.add(ids.slice(0, 1000), data.subarray(0, 1000 * dim));
      index.addSync(ids.slice(1000), data.subarray(1000 * dim));
      expect(index.size).toBe(n);
    }
    const recalls: number[] = [];
    for (const nprobe of [1, 2, 4, 16]) recalls.push(recall(truth, await plain.search(queries, k, { nprobe })));
    for (let i = 1; i < recalls.length; i++) expect(recalls[i]!).toBeGreaterThanOrEqual(recalls[i - 1]! - 0.02);
    expect(recalls[3]!).toBeGreaterThan(recalls[0]! + 0.05);
    expect(recalls[3]!).toBeGreaterThan(0.5);
    const best = await refined.search(queries, k, { nprobe: nlist, refineFactor: 8 });
    const refinedRecall = recall(truth, best);
    expect(refinedRecall).toBeGreaterThanOrEqual(0.99);
    // Refined scores are exact, so they agree with the flat index's for the same ids.
    for (let q = 0; q < truth.nq; q++) {
      if (best.row(q).ids[0] === truth.row(q).ids[0]) {
        expect(Math.abs(best.row(q).scores[0]! - truth.row(q).scores[0]!)).toBeLessThan(1e-3 * Math.max(1, Math.abs(truth.row(q).scores[0]!)));
      }
    }
    // Sync and async give the same results.
    const sync = refined.searchSync(queries, k, { nprobe: 4 });
    const async = await refined.search(queries, k, { nprobe: 4 });
    expect(Array.from(sync.ids)).toEqual(Array.from(async.ids));
  });

  it('MNIST (784-d, l2): 8-bit and 4-bit with codes of dim × 4 / 64 bytes', { timeout: 60_000 }, async () => {
    const all = mnist(4050);
    const mdim = 784;
    const base = all.subarray(50 * mdim);
    const mq = all.subarray(0, 50 * mdim);
    const mids = makeIds(4000);
    const truth = await exact('l2', mdim, mids, base, mq, k);
    for (const { nbits, m } of [
      { nbits: 8 as const, m: 49 },
      { nbits: 4 as const, m: 98 },
    ]) {
      using index = new IvfPqIndex({ dim: mdim, metric: 'l2', nlist: 32, m, nbits, refine: 'f16' });
      await index.train(base, { seed: 5, maxIterations: 8 });
      await index.add(mids, base);
      const recalls: number[] = [];
      for (const nprobe of [1, 4, 32]) recalls.push(recall(truth, await index.search(mq, k, { nprobe, refineFactor: 1 })));
      expect(recalls[2]!).toBeGreaterThan(recalls[0]!);
      const refined = recall(truth, await index.search(mq, k, { nprobe: 32, refineFactor: 10 }));
      expect(refined).toBeGreaterThanOrEqual(0.97);
      const usage = index.memoryUsage();
      // 49 bytes of code per 784-float (3,136-byte) vector, spare capacity included.
      expect(usage.codes).toBeLessThanOrEqual((4000 * mdim * 4) / 16);
    }
  });
});

describe('IvfPqIndex behaviour', () => {
  const dim = 16;
  const data = clustered(1200, dim, 10, 21);
  const ids = makeIds(1200);

  it('rejects work before train with NotTrainedError, and bad arguments', async () => {
    expect(() => new IvfPqIndex({ dim, nlist: 4, m: 5 })).toThrow(InvalidArgumentError);
    expect(() => new IvfPqIndex({ dim, nlist: 4, m: 4, nbits: 6 as 8 })).toThrow(InvalidArgumentError);
    expect(() => new IvfPqIndex({ dim, nlist: 0, m: 4 })).toThrow(InvalidArgumentError);
    expect(() => new IvfPqIndex({ dim, nlist: 4, m: 4, refine: 'f8' as 'f16' })).toThrow(InvalidArgumentError);
    using index = new IvfPqIndex({ dim, nlist: 8, m: 4, nbits: 4 });
    await expect(index.add([1], data.subarray(0, dim))).rejects.toThrow(NotTrainedError);
    expect(() => index.addSync([1], data.subarray(0, dim))).toThrow(NotTrainedError);
    await expect(index.search(data.subarray(0, dim), 5)).rejects.toThrow(NotTrainedError);
    expect(() => index.searchSync(data.subarray(0, dim), 5)).toThrow(NotTrainedError);
    await expect(index.train(data.subarray(0, 10 * dim))).rejects.toThrow(InvalidArgumentError);
    await expect(index.train(data.subarray(0, 100 * dim + 3))).rejects.toThrow(DimensionMismatchError);

    const fractions: number[] = [];
    await index.train(data, { onProgress: (f) => fractions.push(f) });
    expect(fractions.at(-1)).toBe(1);
    expect(fractions.filter((f) => f === 1)).toHaveLength(1);
    for (let i = 1; i < fractions.length; i++) expect(fractions[i]!).toBeGreaterThan(fractions[i - 1]!);
    await expect(index.train(data)).rejects.toThrow(InvalidArgumentError);

    await index.add(ids.slice(0, 600), data.subarray(0, 600 * dim));
    await expect(index.add([ids[0]!], data.subarray(0, dim))).rejects.toThrow(DuplicateIdError);
    await expect(index.add([5_000_000n, 5_000_001n], data.subarray(0, dim))).rejects.toThrow(DimensionMismatchError);
    expect(index.size).toBe(600);
    await expect(index.search(data.subarray(0, dim), 0)).rejects.toThrow(InvalidArgumentError);
    await expect(index.search(data.subarray(0, dim), 5, { nprobe: 0 })).rejects.toThrow(InvalidArgumentError);
    await expect(index.search(data.subarray(0, dim), 5, { refineFactor: 1.5 })).rejects.toThrow(InvalidArgumentError);
    await expect(index.search(data.subarray(0, dim - 1), 5)).rejects.toThrow(DimensionMismatchError);
    // nprobe beyond nlist is clamped; k beyond the size pads.
    const padded = await index.search(data.subarray(0, dim), 610, { nprobe: 100 });
    expect(padded.row(0).ids[599]).not.toBe(NO_ID);
    expect(padded.row(0).ids[600]).toBe(NO_ID);
    expect(padded.row(0).scores[609]).toBe(-Infinity);
  });

  it('allow bitsets restrict results to allowed rows (numbered in add order)', async () => {
    const n = 1200;
    using index = new IvfPqIndex({ dim, metric: 'l2', nlist: 8, m: 4, refine: 'f32' });
    await index.train(data);
    await index.add(ids.slice(0, 500), data.subarray(0, 500 * dim));
    await index.add(ids.slice(500), data.subarray(500 * dim));
    const allow = new Uint32Array(Math.ceil(n / 32));
    const keep: number[] = [];
    for (let r = 0; r < n; r++) {
      if (r % 3 === 1) {
        allow[r >> 5]! |= 1 << (r & 31);
        keep.push(r);
      }
    }
    const subset = new Float32Array(keep.length * dim);
    keep.forEach((r, i) => subset.set(data.subarray(r * dim, (r + 1) * dim), i * dim));
    const subsetIds = keep.map((r) => ids[r]!);
    const queries = clustered(20, dim, 10, 22);
    const truth = await exact('l2', dim, subsetIds, subset, queries, 10);
    const allowed = new Set(subsetIds);
    for (const result of [
      await index.search(queries, 10, { nprobe: 8, refineFactor: 10, allow }),
      index.searchSync(queries, 10, { nprobe: 8, refineFactor: 10, allow }),
    ]) {
      for (const id of result.ids) expect(allowed.has(id)).toBe(true);
      expect(recall(truth, result)).toBeGreaterThanOrEqual(0.98);
    }
    const none = await index.search(queries.subarray(0, dim), 5, { allow: new Uint32Array(0) });
    expect(Array.from(none.ids)).toEqual(new Array(5).fill(NO_ID));
  });

  it('reports memory by part, and PQ codes take at most 1/16 of float32', async () => {
    const mdim = 64;
    const n = 3000;
    const vectors = clustered(n, mdim, 12, 31);
    using index = new IvfPqIndex({ dim: mdim, nlist: 16, m: mdim / 16 });
    const before = index.memoryUsage();
    expect(before.codes).toBe(0);
    await index.train(vectors);
    await index.add(makeIds(n), vectors);
    const usage = index.memoryUsage();
    expect(usage.bytes).toBe(usage.codes + usage.ids + usage.centroids + usage.refine + usage.idMap);
    expect(usage.codes).toBeGreaterThanOrEqual(n * (mdim / 16));
    expect(usage.codes).toBeLessThanOrEqual((n * mdim * 4) / 16);
    // ids (8 bytes) and row numbers (4) per vector, with vector growth at most doubling.
    expect(usage.ids).toBeGreaterThanOrEqual(n * 12);
    expect((usage.codes + usage.ids) / n).toBeLessThanOrEqual((mdim * 4) / 16 + 2 * 12 + 16);
    expect(usage.refine).toBe(0);
    expect(usage.idMap).toBeGreaterThan(0);
    using refined = new IvfPqIndex({ dim: mdim, nlist: 16, m: mdim / 16, nbits: 4, refine: 'f16' });
    await refined.train(vectors);
    await refined.add(makeIds(n), vectors);
    expect(refined.memoryUsage().refine).toBeGreaterThanOrEqual(n * mdim * 2);
  });

  it('dispose releases the index; calls after it throw DisposedError', async () => {
    const index = new IvfPqIndex({ dim, nlist: 4, m: 4 });
    const training = index.train(data);
    index.dispose(); // the train in flight keeps the native index alive until it ends
    await training;
    expect(index.disposed).toBe(true);
    expect(() => index.size).toThrow(DisposedError);
    expect(() => index.memoryUsage()).toThrow(DisposedError);
    await expect(index.search(data.subarray(0, dim), 1)).rejects.toThrow(DisposedError);
    index.dispose();
    {
      using scoped = new IvfPqIndex({ dim, nlist: 4, m: 4 });
      expect(scoped.trained).toBe(false);
    }
  });
});
