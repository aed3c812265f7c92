import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

import {
  DimensionMismatchError,
  DisposedError,
  DuplicateIdError,
  EbrixError,
  FlatIndex,
  InvalidArgumentError,
  InvalidVectorError,
  NO_ID,
  type Metric,
  type SearchResult,
  simdLevel,
  supportedSimdLevels,
  configure,
  threadCount,
} from '../lib/index.js';
import {
  bruteForce,
  expectRowMatches,
  makeIds,
  randomVectors,
  scoredMetric,
  storedRows,
} from './helpers.js';

const METRICS: Metric[] = ['ip', 'cosine', 'l2'];
const AWKWARD_DIMS = [1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 100, 784, 1536];

describe('FlatIndex allow bitsets', () => {
  it.each(METRICS)('returns only allowed rows, as an index of the allowed subset would (%s)', async (metric) => {
    const n = 3000;
    const dim = 20;
    const data = randomVectors(n, dim, 81);
    const ids = makeIds(n);
    using index = new FlatIndex({ dim, metric });
    // Two adds: rows are numbered across them in add order.
    await index.add(ids.slice(0, 1000), data.subarray(0, 1000 * dim));
    await index.add(ids.slice(1000), data.subarray(1000 * dim));
    let seed = 82;
    const next = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
    const dense = new Uint32Array(Math.ceil(n / 32));
    for (let r = 0; r < n; r++) if (next() < 0.3) dense[r >> 5]! |= 1 << (r & 31);
    // Shorter than the index: nothing past its end is allowed (18 rows here).
    const short = new Uint32Array([0x0000ffff, 0b1010]);
    // Every other panel of 32 rows: whole tiles filtered out.
    const striped = new Uint32Array(Math.ceil(n / 32)).map((_, w) => (w % 2 === 0 ? 0xffffffff : 0));
    for (const bits of [dense, short, striped]) {
      const keep: number[] = [];
      for (let r = 0; r < n; r++) if (((bits[r >> 5] ?? 0) >>> (r & 31)) & 1) keep.push(r);
      const subset = new Float32Array(keep.length * dim);
      keep.forEach((r, i) => subset.set(data.subarray(r * dim, (r + 1) * dim), i * dim));
      const subsetIds = keep.map((r) => ids[r]!);
      // 3 queries stream, 40 take the tiled path.
      for (const nq of [3, 40]) {
        const queries = randomVectors(nq, dim, 83 + nq);
        for (const result of [await index.search(queries, 25, { allow: bits }), index.searchSync(queries, 25, { allow: bits })]) {
          for (let q = 0; q < nq; q++) {
            const truth = bruteForce(metric, subset, subsetIds, queries.subarray(q * dim, (q + 1) * dim), dim);
            const row = result.row(q);
            expectRowMatches(truth, row.ids, row.scores, 25);
          }
        }
      }
    }
    for (const none of [new Uint32Array(0), new Uint32Array(200)]) {
      const result = await index.search(randomVectors(2, dim, 84), 5, { allow: none });
      expect(Array.from(result.ids)).toEqual(new Array(10).fill(NO_ID));
      expect(Array.from(result.scores)).toEqual(new Array(10).fill(-Infinity));
    }
  });
});

describe('FlatIndex f16 / bf16 storage on the CPU', () => {
  it.each(['f16', 'bf16'] as const)(
    '%s ranks like a reference that rounds rows and queries, on every SIMD level, both paths, with allow',
    async (storage) => {
      const n = 1200;
      const ids = makeIds(n);
      const allow = new Uint32Array(Math.ceil(n / 32)).map((_, w) => (w % 3 === 1 ? 0 : 0x5a5a5a5a));
      const keep: number[] = [];
      for (let r = 0; r < n; r++) if ((allow[r >> 5]! >>> (r & 31)) & 1) keep.push(r);
      for (const metric of METRICS) {
        for (const dim of [7, 33]) {
          const data = randomVectors(n, dim, 91 + dim);
          const rows = storedRows(data, dim, metric, storage);
          const subset = new Float32Array(keep.length * dim);
          keep.forEach((r, i) => subset.set(rows.subarray(r * dim, (r + 1) * dim), i * dim));
          const subsetIds = keep.map((r) => ids[r]!);
          for (const simd of supportedSimdLevels()) {
            using index = new FlatIndex({ dim, metric, simd, storage });
            expect(index.storage).toBe(storage);
            await index.add(ids.slice(0, 500), data.subarray(0, 500 * dim));
            index.addSync(ids.slice(500), data.subarray(500 * dim));
            // 3 queries stream, 40 take the tiled path.
            for (const nq of [3, 40]) {
              const queries = randomVectors(nq, dim, 92 + dim + nq);
              const stored = storedRows(queries, dim, metric, storage);
              const all = await index.search(queries, 15);
              const filtered = index.searchSync(queries, 15, { allow });
              for (let q = 0; q < nq; q++) {
                const query = stored.subarray(q * dim, (q + 1) * dim);
                const truth = bruteForce(scoredMetric(metric), rows, ids, query, dim);
                expectRowMatches(truth, all.row(q).ids, all.row(q).scores, 15);
                const allowedTruth = bruteForce(scoredMetric(metric), subset, subsetIds, query, dim);
                expectRowMatches(allowedTruth, filtered.row(q).ids, filtered.row(q).scores, 15);
              }
            }
          }
        }
      }
    },
  );

  it('takes about half the memory of f32', () => {
    const n = 5000;
    const dim = 128;
    const data = randomVectors(n, dim, 7);
    const bytes: Record<string, number> = {};
    for (const storage of ['f32', 'f16', 'bf16'] as const) {
      using index = new FlatIndex({ dim, storage });
      index.addSync(makeIds(n), data);
      const memory = index.memoryUsage();
      expect(memory.deviceBytes).toBe(0);
      expect(memory.bytes).toBeGreaterThanOrEqual(n * dim * (storage === 'f32' ? 4 : 2));
      bytes[storage] = memory.bytes;
    }
    expect(bytes.f16!).toBeLessThan(0.6 * bytes.f32!);
    expect(bytes.bf16).toBe(bytes.f16);
  });

  it('rejects values f16 cannot hold (ip, l2), naming row and column; bf16 and cosine take them', () => {
    const big = new Float32Array([1, 2, 3, 4, 5, 6, 70000, 8]);
    for (const metric of ['ip', 'l2'] as const) {
      using f16 = new FlatIndex({ dim: 4, metric, storage: 'f16' });
      expect(() => f16.addSync([1, 2], big)).toThrow(InvalidVectorError);
      expect(() => f16.addSync([1, 2], big)).toThrow(/magnitude below 65520 .* at row 1, column 2/);
      expect(f16.size).toBe(0);
      f16.addSync([1], new Float32Array([65504, -65519, 0, 1]));
      expect(() => f16.searchSync(big, 1)).toThrow(InvalidVectorError);
    }
    using cosine = new FlatIndex({ dim: 4, metric: 'cosine', storage: 'f16' });
    cosine.addSync([1, 2], big);
    using bf16 = new FlatIndex({ dim: 4, metric: 'l2', storage: 'bf16' });
    bf16.addSync([1, 2], big);
    expect(bf16.searchSync(big.subarray(4), 1).ids[0]).toBe(2n);
  });
});

describe('FlatIndex exact search', () => {
  it.each(METRICS)('equals brute force for metric %s, k = 1, 10, 100 and k > size', async (metric) => {
    const dim = 24;
    const n = 900;
    const data = randomVectors(n, dim, 1);
    const ids = makeIds(n);
    using index = new FlatIndex({ dim, metric });
    await index.add(ids, data);
    expect(index.size).toBe(n);
    // 3 queries take the streaming path, 50 the tiled path.
    for (const nq of [3, 50]) {
      const queries = randomVectors(nq, dim, 2 + nq);
      const truths = Array.from({ length: nq }, (_, q) =>
        bruteForce(metric, data, ids, queries.subarray(q * dim, (q + 1) * dim), dim),
      );
      for (const k of [1, 10, 100, n + 7]) {
        const result = await index.search(queries, k);
        expect(result.nq).toBe(nq);
        expect(result.k).toBe(k);
        for (let q = 0; q < nq; q++) {
          const row = result.row(q);
          expectRowMatches(truths[q]!, row.ids, row.scores, k);
        }
      }
    }
  });

  it('gives the same results on every supported SIMD level, for awkward dimensions', async () => {
    const levels = supportedSimdLevels();
    expect(levels[0]).toBe('scalar');
    // On a machine meant to cover an ISA (e.g. EBRIX_REQUIRE_SIMD=avx512), its absence fails.
    for (const required of (process.env.EBRIX_REQUIRE_SIMD ?? '').split(',').filter(Boolean)) {
      expect(levels).toContain(required);
    }
    for (const dim of AWKWARD_DIMS) {
      const n = dim > 700 ? 300 : 700;
      const data = randomVectors(n, dim, dim);
      const ids = makeIds(n);
      const queries = randomVectors(12, dim, dim + 1);
      for (const metric of METRICS) {
        const rows: BigUint64Array[] = [];
        for (const simd of levels) {
          using index = new FlatIndex({ dim, metric, simd });
          expect(index.simd).toBe(simd);
          index.addSync(ids, data);
          const result = index.searchSync(queries, 10);
          for (let q = 0; q < 12; q++) {
            const truth = bruteForce(metric, data, ids, queries.subarray(q * dim, (q + 1) * dim), dim);
            expectRowMatches(truth, result.row(q).ids, result.row(q).scores, 10);
          }
          rows.push(result.ids);
        }
        // Identical ids across ISAs, up to near-ties (checked per row above).
        for (const r of rows) expect(Array.from(r)).toEqual(Array.from(rows[0]!));
      }
    }
  });

  it('breaks ties by the smaller id', () => {
    using index = new FlatIndex({ dim: 2 });
    index.addSync([50, 10, 30, 20, 40], new Float32Array(10).fill(1));
    const result = index.searchSync(new Float32Array([1, 1]), 3);
    expect(Array.from(result.row(0).ids)).toEqual([10n, 20n, 30n]);
  });

  it('accepts ids and vectors in every documented form', () => {
    using index = new FlatIndex({ dim: 2, metric: 'l2' });
    index.addSync([1, 2], [new Float32Array([0, 0]), new Float32Array([1, 0])]);
    index.addSync([3n], new Float32Array([2, 0]));
    index.addSync(new Uint32Array([4]), [[3, 0]]);
    index.addSync(new BigUint64Array([2n ** 63n]), new Float32Array([4, 0]));
    expect(index.size).toBe(5);
    const result = index.searchSync([[2.9, 0], new Float32Array([4.2, 0])], 2);
    expect(result.hits(0)).toEqual([
      { id: 4n, score: expect.closeTo(-0.01, 5) },
      { id: 3n, score: expect.closeTo(-0.81, 5) },
    ]);
    expect(result.hits(1)[0]!.id).toBe(2n ** 63n);
    expect([...result].length).toBe(2);
  });

  it('normalises for cosine on add and on search', () => {
    using index = new FlatIndex({ dim: 3, metric: 'cosine' });
    index.addSync([1, 2], new Float32Array([10, 0, 0, 0, 3, 4]));
    const result = index.searchSync(new Float32Array([0, 0.3, 0.4]), 2);
    expect(result.hits(0)[0]).toEqual({ id: 2n, score: expect.closeTo(1, 6) });
    expect(result.hits(0)[1]).toEqual({ id: 1n, score: expect.closeTo(0, 6) });
  });

  it('searches an empty index to a fully padded result', async () => {
    using index = new FlatIndex({ dim: 4 });
    const result = await index.search(new Float32Array(8), 3);
    expect(Array.from(result.ids)).toEqual(new Array(6).fill(NO_ID));
    expect(result.hits(1)).toEqual([]);
  });

  it('uses the requested threads and agrees across thread counts', async () => {
    const dim = 32;
    const data = randomVectors(20_000, dim, 9);
    const ids = makeIds(20_000);
    const queries = randomVectors(40, dim, 10);
    const results: BigUint64Array[] = [];
    // An index's threads are capped at the pool's size (configure): make room for 3.
    const poolSize = threadCount();
    configure({ threads: Math.max(poolSize, 3) });
    try {
      for (const threads of [1, 2, 3]) {
        using index = new FlatIndex({ dim, threads });
        expect(index.threads).toBe(threads);
        await index.add(ids, data);
        results.push((await index.search(queries, 20)).ids);
        results.push((await index.search(queries.subarray(0, dim), 20, { threads: 1 })).ids);
      }
    } finally {
      configure({ threads: poolSize });
    }
    for (let i = 2; i < results.length; i += 2) {
      expect(Array.from(results[i]!)).toEqual(Array.from(results[0]!));
      expect(Array.from(results[i + 1]!)).toEqual(Array.from(results[1]!));
    }
  });
});

describe('FlatIndex off the event loop', () => {
  it('lets timers fire while a large search runs', async () => {
    const dim = 128;
    const n = 200_000;
    // One native thread, so the search takes a while even on a fast machine and the event
    // loop has a core to itself on a small one.
    using index = new FlatIndex({ dim, threads: 1 });
    await index.add(makeIds(n), randomVectors(n, dim, 3));
    const queries = randomVectors(300, dim, 4);
    let settled = false;
    let ticksWhilePending = 0;
    const timer = setInterval(() => {
      if (!settled) ticksWhilePending++;
    }, 1);
    await index.search(queries, 10).then(() => (settled = true));
    clearInterval(timer);
    expect(ticksWhilePending).toBeGreaterThanOrEqual(2);
  });

  it('keeps serving a search in flight after dispose', async () => {
    const index = new FlatIndex({ dim: 16 });
    await index.add(makeIds(50_000), randomVectors(50_000, 16, 5));
    const pending = index.search(randomVectors(100, 16, 6), 5);
    index.dispose();
    const result = await pending;
    expect(result.ids[0]).not.toBe(NO_ID);
  });

  it('copies the inputs of an async add, so detaching them meanwhile is harmless', () => {
    const script = `
      const { FlatIndex } = await import('./lib/index.ts');
      const dim = 256, n = 16384;
      const index = new FlatIndex({ dim, threads: 1 });
      const ids = new BigUint64Array(n).map((_, i) => BigInt(i));
      const vectors = new Float32Array(n * dim).fill(0.5);
      const pending = index.add(ids, vectors);
      structuredClone(vectors.buffer, { transfer: [vectors.buffer] });
      structuredClone(ids.buffer, { transfer: [ids.buffer] });
      globalThis.gc();
      await pending;
      console.log(index.size, index.searchSync(new Float32Array(dim).fill(1), 1).scores[0]);
    `;
    const child = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', '--input-type=module', '-e', script], {
      encoding: 'utf8',
    });
    expect(child.status, child.stderr).toBe(0);
    expect(child.stdout.trim()).toBe('16384 128');
  });

  it('allows adds while searches are in flight, each search seeing whole batches', async () => {
    const dim = 8;
    using index = new FlatIndex({ dim, metric: 'l2' });
    await index.add([0], new Float32Array(dim));
    const searches: Promise<SearchResult>[] = [];
    for (let b = 1; b <= 20; b++) {
      const ids = Array.from({ length: 1000 }, (_, i) => b * 1000 + i);
      searches.push(index.search(randomVectors(20, dim, b), 3));
      await index.add(ids, randomVectors(1000, dim, 100 + b));
    }
    for (const result of await Promise.all(searches)) {
      // A consistent snapshot: only ids that were added (0 or 1000..20999); padding only while
      // the index held fewer than k rows (the first search may see id 0 alone).
      for (const id of result.ids) expect(id === 0n || id === NO_ID || (id >= 1000n && id < 21_000n)).toBe(true);
      for (const row of result) if (row.ids[2] === NO_ID) expect(Array.from(row.ids)).toEqual([0n, NO_ID, NO_ID]);
    }
    expect(index.size).toBe(20_001);
  });
});

describe('FlatIndex bad input', () => {
  const fresh = () => {
    const index = new FlatIndex({ dim: 4 });
    index.addSync([1, 2], new Float32Array([1, 0, 0, 0, 0, 1, 0, 0]));
    return index;
  };

  it('rejects bad options', () => {
    expect(() => new FlatIndex({ dim: 0 })).toThrow(InvalidArgumentError);
    expect(() => new FlatIndex({ dim: 2.5 })).toThrow(/Expected an integer from 1 to .* for dim but received 2.5/);
    expect(() => new FlatIndex({ dim: 4, metric: 'hamming' as Metric })).toThrow(/for metric but received "hamming"/);
    expect(() => new FlatIndex({ dim: 4, threads: 0 })).toThrow(InvalidArgumentError);
    expect(() => new FlatIndex({ dim: 4, simd: 'sse9' as never })).toThrow(InvalidArgumentError);
    const unsupported = (['avx2', 'avx512', 'neon'] as const).find((l) => !supportedSimdLevels().includes(l));
    if (unsupported) {
      expect(() => new FlatIndex({ dim: 4, simd: unsupported })).toThrow(
        expect.objectContaining({ code: 'EBRIX_UNSUPPORTED_SIMD' }),
      );
    }
  });

  it('rejects a wrong dimension, on add and on search, leaving the index unchanged', async () => {
    using index = fresh();
    expect(() => index.addSync([3], new Float32Array(5))).toThrow(DimensionMismatchError);
    await expect(index.add([3, 4], new Float32Array(4))).rejects.toThrow(DimensionMismatchError);
    expect(() => index.addSync([3], [new Float32Array(3)])).toThrow(DimensionMismatchError);
    const sparse: Float32Array[] = [new Float32Array(4)];
    sparse[2] = new Float32Array(4);
    expect(() => index.addSync([3, 4, 5], sparse)).toThrow(/vectors\[1\] but received undefined/);
    expect(() => index.searchSync(new Float32Array(6), 1)).toThrow(DimensionMismatchError);
    await expect(index.search(new Float32Array(3), 1)).rejects.toMatchObject({ code: 'EBRIX_DIM_MISMATCH' });
    expect(index.size).toBe(2);
  });

  it('rejects NaN and Infinity, on add and on search, leaving the index unchanged', async () => {
    using index = fresh();
    await expect(index.add([3, 4], new Float32Array([0, 0, 0, 0, 1, NaN, 0, 0]))).rejects.toThrow(InvalidVectorError);
    expect(() => index.addSync([3], new Float32Array([Infinity, 0, 0, 0]))).toThrow(/row 0, column 0/);
    expect(() => index.addSync([3], new Float32Array([3e37, 0, 0, 0]))).toThrow(/squared norm up to 1e36/);
    await expect(index.search(new Float32Array([0, -Infinity, 0, 0]), 1)).rejects.toThrow(InvalidVectorError);
    expect(index.size).toBe(2);
    index.addSync([3, 4], new Float32Array(8));
    expect(index.size).toBe(4);
  });

  it('rejects duplicate ids within one add and against the index, leaving it unchanged', async () => {
    using index = fresh();
    await expect(index.add([7, 7], new Float32Array(8))).rejects.toThrow(DuplicateIdError);
    expect(() => index.addSync([8, 2], new Float32Array(8))).toThrow(/duplicate id 2 \(already in the index\)/);
    expect(index.size).toBe(2);
    expect(index.searchSync(new Float32Array([0, 0, 0, 1]), 5).hits(0).length).toBe(2);
  });

  it('rejects bad ids', () => {
    using index = fresh();
    expect(() => index.addSync([-1], new Float32Array(4))).toThrow(/non-negative safe integer for ids\[0\]/);
    expect(() => index.addSync([1.5], new Float32Array(4))).toThrow(InvalidArgumentError);
    expect(() => index.addSync([NO_ID], new Float32Array(4))).toThrow(InvalidArgumentError);
    expect(() => index.addSync(new BigUint64Array([NO_ID]), new Float32Array(4))).toThrow(InvalidArgumentError);
    expect(() => index.addSync('1' as never, new Float32Array(4))).toThrow(InvalidArgumentError);
    expect(index.size).toBe(2);
  });

  it('rejects k < 1 and non-integer k', async () => {
    using index = fresh();
    expect(() => index.searchSync(new Float32Array(4), 0)).toThrow(/positive|from 1/);
    await expect(index.search(new Float32Array(4), -3)).rejects.toThrow(InvalidArgumentError);
    await expect(index.search(new Float32Array(4), 1.5)).rejects.toThrow(InvalidArgumentError);
    expect(() => index.searchSync(new Float32Array(4 * 1000), 1 << 20)).toThrow(/split the batch/);
  });

  it('fails clearly once disposed', async () => {
    const index = fresh();
    index.dispose();
    index.dispose();
    expect(index.disposed).toBe(true);
    expect(() => index.size).toThrow(DisposedError);
    expect(() => index.searchSync(new Float32Array(4), 1)).toThrow(expect.objectContaining({ code: 'EBRIX_DISPOSED' }));
    await expect(index.add([9], new Float32Array(4))).rejects.toThrow(DisposedError);
    await expect(index.search(new Float32Array(4), 1)).rejects.toBeInstanceOf(EbrixError);
  });
});

describe('SIMD selection', () => {
  const run = (env: Record<string, string>) =>
    spawnSync(
      process.execPath,
      ['--import', 'tsx', '-e', "import('./lib/index.ts').then(m => { try { console.log(m.simdLevel()); new m.FlatIndex({ dim: 4 }); } catch (e) { console.log(e.code); } })"],
      { env: { ...process.env, ...env }, encoding: 'utf8' },
    );

  it('reports the best level by default and honours EBRIX_SIMD', () => {
    const best = supportedSimdLevels().at(-1);
    expect(process.env.EBRIX_SIMD ? simdLevel() : best).toBe(simdLevel());
    const forced = run({ EBRIX_SIMD: 'scalar' });
    expect(forced.stdout.trim()).toBe('scalar');
  });

  it('rejects an unknown or unsupported EBRIX_SIMD with a typed error', () => {
    expect(run({ EBRIX_SIMD: 'mmx' }).stdout.trim()).toBe('EBRIX_UNSUPPORTED_SIMD');
    const unsupported = (['avx2', 'avx512', 'neon'] as const).find((l) => !supportedSimdLevels().includes(l));
    if (unsupported) expect(run({ EBRIX_SIMD: unsupported }).stdout.trim()).toBe('EBRIX_UNSUPPORTED_SIMD');
  });
});
