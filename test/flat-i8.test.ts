import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

import {
  DimensionMismatchError,
  FlatIndex,
  InvalidArgumentError,
  InvalidVectorError,
  NO_ID,
  NotTrainedError,
  type Metric,
  type SearchResult,
} from '../lib/index.js';
import { clustered, mnist } from './datasets.js';
import { makeIds } from './helpers.js';

const METRICS: Metric[] = ['ip', 'cosine', 'l2'];

function recall(truth: SearchResult, got: SearchResult): number {
  let hits = 0;
  for (let q = 0; q < truth.nq; q++) {
    const want = new Set(truth.row(q).ids);
    for (const id of got.row(q).ids) if (want.has(id)) hits++;
  }
  return hits / (truth.nq * truth.k);
}

async function buildPair(metric: Metric, dim: number, data: Float32Array, ids: bigint[], sample: Float32Array) {
  const exact = new FlatIndex({ dim, metric });
  await exact.add(ids, data);
  const i8 = new FlatIndex({ dim, metric, storage: 'i8' });
  await i8.train(sample);
  await i8.add(ids, data);
  return { exact, i8 };
}

describe("FlatIndex storage 'i8'", () => {
  it.each(METRICS)('trains, adds and searches clustered data with recall@10 >= 0.95 against f32 (%s)', async (metric) => {
    const dim = 64;
    const n = 5000;
    const data = clustered(n, dim, 16, 11);
    const queries = clustered(50, dim, 16, 12);
    const ids = makeIds(n);
    const { exact, i8 } = await buildPair(metric, dim, data, ids, data.subarray(0, 1500 * dim));
    using _exact = exact;
    using _i8 = i8;
    expect(i8.storage).toBe('i8');
    expect(i8.trained).toBe(true);
    expect(i8.size).toBe(n);
    const truth = await exact.search(queries, 10);
    const got = await i8.search(queries, 10);
    expect(recall(truth, got)).toBeGreaterThanOrEqual(0.95);
    // The sync path and one query at a time give the same answer.
    const one = i8.searchSync(queries.subarray(0, dim), 10);
    expect(one.row(0).ids).toEqual(got.row(0).ids);
    for (let q = 0; q < got.nq; q++) {
      const { scores } = got.row(q);
      for (let i = 1; i < scores.length; i++) expect(scores[i]!).toBeLessThanOrEqual(scores[i - 1]!);
    }
  });

  it.each(METRICS)('reports scores within the codec error bound of the exact f32 scores (%s)', async (metric) => {
    // Trained on all the data, every value lies in its range and decodes within step / 2:
    // |e_d| <= step_d / 2 bounds q·x's error by sum |q_d| |e_d|, and -|q - x|^2's by
    // sum 2 |q_d - x_d| |e_d| + e_d^2.
    const dim = 40;
    const n = 3000;
    const raw = clustered(n, dim, 8, 61);
    const queries = clustered(20, dim, 8, 62);
    const ids = makeIds(n);
    using index = new FlatIndex({ dim, metric, storage: 'i8' });
    await index.train(raw);
    await index.add(ids, raw);
    const unit = (v: Float32Array) => {
      const out = Float32Array.from(v);
      for (let r = 0; r < v.length / dim; r++) {
        let s = 0;
        for (let d = 0; d < dim; d++) s += v[r * dim + d]! ** 2;
        for (let d = 0; d < dim; d++) out[r * dim + d] = v[r * dim + d]! / Math.sqrt(s);
      }
      return out;
    };
    const data = metric === 'cosine' ? unit(raw) : raw;
    const qs = metric === 'cosine' ? unit(queries) : queries;
    const halfStep = Array.from({ length: dim }, (_, d) => {
      let lo = Infinity;
      let hi = -Infinity;
      for (let r = 0; r < n; r++) {
        lo = Math.min(lo, data[r * dim + d]!);
        hi = Math.max(hi, data[r * dim + d]!);
      }
      return (hi - lo) / 255 / 2;
    });
    const rowOf = new Map(ids.map((id, r) => [id, r]));
    const result = await index.search(queries, 10);
    let checked = 0;
    for (let q = 0; q < result.nq; q++) {
      const { ids: got, scores } = result.row(q);
      got.forEach((id, i) => {
        const r = rowOf.get(id)!;
        let exact = 0;
        let bound = 0;
        for (let d = 0; d < dim; d++) {
          const qd = qs[q * dim + d]!;
          const xd = data[r * dim + d]!;
          const e = halfStep[d]!;
          if (metric === 'l2') {
            exact -= (qd - xd) ** 2;
            bound += 2 * Math.abs(qd - xd) * e + e * e;
          } else {
            exact += qd * xd;
            bound += Math.abs(qd) * e;
          }
        }
        expect(Math.abs(scores[i]! - exact)).toBeLessThanOrEqual(bound * 1.001 + 1e-5 * Math.max(1, Math.abs(exact)));
        checked++;
      });
    }
    expect(checked).toBe(200);
  });

  it('MNIST (784-d): recall@10 against f32 >= 0.95 for every metric, trained on a sample', { timeout: 60_000 }, async () => {
    const dim = 784;
    const all = mnist(6100);
    const n = 6000;
    const data = all.subarray(0, n * dim);
    const queries = all.subarray(n * dim);
    const ids = makeIds(n);
    for (const metric of METRICS) {
      const { exact, i8 } = await buildPair(metric, dim, data, ids, data.subarray(0, 2000 * dim));
      using _exact = exact;
      using _i8 = i8;
      const r = recall(await exact.search(queries, 10), await i8.search(queries, 10));
      expect(r, metric).toBeGreaterThanOrEqual(0.95);
    }
  });

  it('cosine: rows and queries are normalised, so a stored vector finds itself with score ~1', async () => {
    const dim = 24;
    const data = clustered(800, dim, 4, 21);
    const ids = makeIds(800);
    using index = new FlatIndex({ dim, metric: 'cosine', storage: 'i8' });
    await index.train(data);
    await index.add(ids, data);
    for (const r of [0, 17, 799]) {
      // Scaled: cosine ignores the length of the query.
      const query = data.slice(r * dim, (r + 1) * dim).map((x) => x * 7);
      const { ids: got, scores } = (await index.search(query, 3)).row(0);
      expect(got[0]).toBe(ids[r]);
      expect(Math.abs(scores[0]! - 1)).toBeLessThan(0.01);
      for (const s of scores) expect(Math.abs(s)).toBeLessThanOrEqual(1.01);
    }
  });

  it('needs train() before add and search, once, and only for i8', async () => {
    const dim = 4;
    const rows = new Float32Array([0, 1, 2, 3, 4, 5, 6, 7]);
    using index = new FlatIndex({ dim, metric: 'l2', storage: 'i8' });
    expect(index.trained).toBe(false);
    await expect(index.add([1, 2], rows)).rejects.toThrow(NotTrainedError);
    expect(() => index.addSync([1, 2], rows)).toThrow(expect.objectContaining({ code: 'EBRIX_NOT_TRAINED' }));
    await expect(index.search(rows.subarray(0, 4), 1)).rejects.toThrow(NotTrainedError);
    expect(() => index.searchSync(rows.subarray(0, 4), 1)).toThrow(NotTrainedError);
    await expect(index.train(new Float32Array(0))).rejects.toThrow(InvalidArgumentError);
    await expect(index.train(new Float32Array(6))).rejects.toThrow(DimensionMismatchError);
    await expect(index.train([[0, 1, Number.NaN, 3]])).rejects.toThrow(InvalidVectorError);
    expect(index.trained).toBe(false);
    await index.train([
      [0, 1, 2, 3],
      [4, 5, 6, 7],
    ]);
    expect(index.trained).toBe(true);
    await expect(index.train(rows)).rejects.toThrow(/already trained/);
    expect((await index.search(rows.subarray(0, 4), 2)).row(0).ids[0]).toBe(NO_ID); // empty, not an error
    await index.add([1, 2], rows);
    const { ids, scores } = (await index.search(rows.subarray(4), 2)).row(0);
    expect([...ids]).toEqual([2n, 1n]);
    expect(Math.abs(scores[0]!)).toBeLessThan(1e-4);
    expect(scores[1]).toBeCloseTo(-64, 3);

    for (const storage of ['f32', 'f16', 'bf16'] as const) {
      using plain = new FlatIndex({ dim, storage });
      expect(plain.trained).toBe(true);
      await expect(plain.train(rows)).rejects.toThrow(InvalidArgumentError);
    }
  });

  it('values outside the trained range clamp to it', async () => {
    using index = new FlatIndex({ dim: 2, metric: 'l2', storage: 'i8' });
    await index.train([
      [0, 0],
      [1, 1],
    ]);
    await index.add([1, 2], [
      [0.5, 0.5],
      [50, -50],
    ]);
    // Row 2 is stored as (1, 0): its distance to (1, 0) is ~0.
    const { ids, scores } = (await index.search([[1, 0]], 1)).row(0);
    expect([...ids]).toEqual([2n]);
    expect(Math.abs(scores[0]!)).toBeLessThan(1e-4);
  });

  it('memoryUsage: one byte per value, plus norms, ids and the quantizer', async () => {
    const dim = 96;
    const n = 4000;
    const data = clustered(n, dim, 8, 31);
    const ids = makeIds(n);
    using f32 = new FlatIndex({ dim });
    using i8 = new FlatIndex({ dim, storage: 'i8' });
    expect(i8.memoryUsage().bytes).toBe(0);
    await i8.train(data);
    const quantizer = i8.memoryUsage().bytes;
    expect(quantizer).toBe(2 * dim * 4);
    await f32.add(ids, data);
    await i8.add(ids, data);
    const f32Bytes = f32.memoryUsage().bytes;
    const i8Bytes = i8.memoryUsage();
    expect(i8Bytes.hostBytes).toBe(i8Bytes.bytes);
    expect(i8Bytes.deviceBytes).toBe(0);
    // Same capacity, ids and norms: 3 bytes less per stored value.
    expect(f32Bytes - (i8Bytes.bytes - quantizer)).toBeGreaterThanOrEqual(n * dim * 3);
    expect(i8Bytes.bytes).toBeGreaterThanOrEqual(n * (dim + 4 + 8));
  });

  it.each(METRICS)('allow bitsets: a filtered search equals an index of the allowed rows (%s)', async (metric) => {
    const dim = 20;
    const n = 2000;
    const data = clustered(n, dim, 8, 41);
    const queries = clustered(12, dim, 8, 42);
    const ids = makeIds(n);
    const sample = data.subarray(0, 600 * dim);
    using all = new FlatIndex({ dim, metric, storage: 'i8' });
    using subset = new FlatIndex({ dim, metric, storage: 'i8' });
    // Trained on the same sample, the two share a quantizer and so the same codes.
    await all.train(sample);
    await subset.train(sample);
    await all.add(ids, data);
    const allow = new Uint32Array(Math.ceil(n / 32));
    const allowedIds: bigint[] = [];
    const allowedRows: Float32Array[] = [];
    for (let r = 0; r < n; r++) {
      if (r % 4 === 1 || r % 9 === 0) continue;
      allow[r >> 5]! |= 1 << (r & 31);
      allowedIds.push(ids[r]!);
      allowedRows.push(data.subarray(r * dim, (r + 1) * dim));
    }
    await subset.add(allowedIds, allowedRows);
    const filtered = await all.search(queries, 10, { allow });
    const plain = await subset.search(queries, 10);
    const allowed = new Set(allowedIds);
    for (let q = 0; q < queries.length / dim; q++) {
      expect(filtered.row(q).ids).toEqual(plain.row(q).ids);
      expect(filtered.row(q).scores).toEqual(plain.row(q).scores);
      for (const id of filtered.row(q).ids) expect(allowed.has(id)).toBe(true);
    }
    const none = await all.search(queries.subarray(0, dim), 5, { allow: new Uint32Array(0) });
    expect([...none.row(0).ids]).toEqual(Array(5).fill(NO_ID));
  });

  it("runs on the CPU only: device 'cuda' is rejected, 'auto' takes the CPU and says why", () => {
    expect(() => new FlatIndex({ dim: 8, storage: 'i8', device: 'cuda' })).toThrow(InvalidArgumentError);
    expect(() => new FlatIndex({ dim: 8, storage: 'i8', device: 'cuda' })).toThrow(/CPU only/);
    using index = new FlatIndex({ dim: 8, storage: 'i8', device: 'auto' });
    expect(index.device).toBe('cpu');
    expect(index.storage).toBe('i8');
    expect(index.deviceReason).toMatch(/'i8' runs on the CPU only/);
  });

  it('gives the same results with every SIMD level, and under EBRIX_SIMD=scalar', async () => {
    const dim = 33;
    const n = 3000;
    const data = clustered(n, dim, 8, 51);
    const queries = clustered(20, dim, 8, 52);
    const ids = makeIds(n);
    const run = async (simd?: 'scalar') => {
      using index = new FlatIndex({ dim, metric: 'l2', storage: 'i8', ...(simd ? { simd } : {}) });
      await index.train(data);
      await index.add(ids, data);
      return index.search(queries, 10);
    };
    const best = await run();
    const scalar = await run('scalar');
    expect(recall(best, scalar)).toBeGreaterThanOrEqual(0.99);

    // A child process forced to scalar: the level is honoured and i8 search still works.
    const script = `
      import('./lib/index.ts').then(async (m) => {
        const index = new m.FlatIndex({ dim: 3, metric: 'ip', storage: 'i8' });
        await index.train([[0, 0, 0], [1, 1, 1]]);
        await index.add([1, 2, 3], [[1, 0, 0], [0, 1, 0], [0.2, 0.2, 0.9]]);
        const row = (await index.search([[0, 0, 1]], 2)).row(0);
        console.log(JSON.stringify({ simd: index.simd, ids: Array.from(row.ids, String) }));
      });`;
    const child = spawnSync(process.execPath, ['--import', 'tsx', '-e', script], {
      env: { ...process.env, EBRIX_SIMD: 'scalar' },
      encoding: 'utf8',
    });
    expect(child.status, child.stderr).toBe(0);
    expect(JSON.parse(child.stdout.trim())).toEqual({ simd: 'scalar', ids: ['3', '1'] });
  });
});
