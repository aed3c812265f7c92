import { describe, expect, it } from 'vitest';

import { FlatIndex, InvalidArgumentError, IvfPqIndex, NO_ID, type Filter } from '../lib/index.js';
import { bruteForce, makeIds, randomVectors, rng } from './helpers.js';

describe('FlatIndex with attributes and filters', () => {
  const dim = 16;
  const n = 3000;
  const data = randomVectors(n, dim, 5);
  const ids = makeIds(n);
  const next = rng(6);
  const skills = ['go', 'rust', 'ts', 'sql', 'ml'];
  const records = Array.from({ length: n }, (_, i) => ({
    level: Math.floor(next() * 10),
    skills: skills.filter(() => next() < 0.3),
    remote: next() < 0.2,
    ...(i % 17 === 0 ? {} : { country: ['de', 'fr', 'us'][i % 3]! }),
  }));
  const schema = { level: 'uint', skills: { type: 'category', multi: true }, remote: 'bool', country: 'category' } as const;

  /** Exact top-k over the rows `keep` accepts. */
  function expected(query: Float32Array, k: number, keep: (row: number) => boolean) {
    const rows = [...Array(n).keys()].filter(keep);
    const sub = new Float32Array(rows.length * dim);
    rows.forEach((r, i) => sub.set(data.subarray(r * dim, (r + 1) * dim), i * dim));
    return bruteForce('ip', sub, rows.map((r) => ids[r]!), query, dim).slice(0, k);
  }

  it('returns exactly the filtered top-k, in batches added async and sync', async () => {
    using index = new FlatIndex({ dim, attributes: schema });
    await index.add(ids.slice(0, 1000), data.subarray(0, 1000 * dim), { attributes: records.slice(0, 1000) });
    index.addSync(ids.slice(1000, 1500), data.subarray(1000 * dim, 1500 * dim), { attributes: records.slice(1000, 1500) });
    await Promise.all([
      index.add(ids.slice(1500, 2200), data.subarray(1500 * dim, 2200 * dim), { attributes: records.slice(1500, 2200) }),
      index.add(ids.slice(2200), data.subarray(2200 * dim), { attributes: records.slice(2200) }),
    ]);
    expect(index.attributes?.size).toBe(n);
    const cases: Array<[Filter, (r: number) => boolean]> = [
      [{ level: { gte: 5 } }, (r) => records[r]!.level >= 5],
      [{ skills: { hasAny: ['rust', 'ml'] }, remote: true }, (r) => records[r]!.remote && records[r]!.skills.some((s) => s === 'rust' || s === 'ml')],
      [{ or: [{ country: 'de' }, { level: 0 }] }, (r) => records[r]!.country === 'de' || records[r]!.level === 0],
      [{ not: { country: { in: ['fr', 'us'] } } }, (r) => records[r]!.country !== 'fr' && records[r]!.country !== 'us'],
      [{ id: { in: [ids[3]!, ids[10]!, ids[2999]!, 123456789012n] } }, (r) => r === 3 || r === 10 || r === 2999],
      [{ and: [{ level: { lt: 2 } }, { id: { notIn: ids.slice(0, 1500) } }] }, (r) => records[r]!.level < 2 && r >= 1500],
    ];
    const queries = randomVectors(4, dim, 7);
    for (const [filter, keep] of cases) {
      for (let q = 0; q < 4; q++) {
        const query = queries.subarray(q * dim, (q + 1) * dim);
        const want = expected(query, 10, keep);
        const got = (await index.search(query, 10, { filter })).row(0);
        expect([...got.ids].slice(0, want.length), JSON.stringify(filter, (_, v) => (typeof v === "bigint" ? String(v) : v))).toEqual(want.map((w) => w.id));
        const sync = index.searchSync(query, 10, { filter }).row(0);
        expect(sync.ids).toEqual(got.ids);
      }
    }
    // A filter and an allow bitset together: both must pass.
    const allow = new Uint32Array(Math.ceil(n / 32)).fill(0x55555555); // even rows
    const query = queries.subarray(0, dim);
    const got = (await index.search(query, 10, { filter: { level: { gte: 5 } }, allow })).row(0);
    expect([...got.ids]).toEqual(expected(query, 10, (r) => r % 2 === 0 && records[r]!.level >= 5).map((w) => w.id));
  });

  it('keeps rows and records aligned when an add fails, and refuses bad use', async () => {
    using index = new FlatIndex({ dim, attributes: schema });
    await index.add(ids.slice(0, 10), data.subarray(0, 10 * dim), { attributes: records.slice(0, 10) });
    await expect(index.add([ids[0]!], data.subarray(0, dim), { attributes: [records[0]!] })).rejects.toThrow('duplicate');
    expect(() => index.addSync([1n], data.subarray(0, dim), { attributes: [{ level: 'high' as never }] })).toThrow(InvalidArgumentError);
    expect(() => index.addSync([1n, 2n], data.subarray(0, 2 * dim), { attributes: [{}] })).toThrow(InvalidArgumentError);
    expect(index.size).toBe(10);
    expect(index.attributes?.size).toBe(10);
    index.addSync([5n], data.subarray(0, dim)); // no records: all attributes missing
    expect(index.attributes?.size).toBe(11);
    // The index appends each write's records under its writer lock, so a sync add beside a
    // pending async one keeps rows and records aligned (it waits for the other).
    const pending = index.add([6n], data.subarray(0, dim), { attributes: [{ level: 106 }] });
    index.addSync([7n], data.subarray(0, dim), { attributes: [{ level: 107 }] });
    await pending;
    expect([index.size, index.attributes?.size]).toEqual([13, 13]);
    for (const level of [106, 107]) {
      expect([...(await index.search(data.subarray(0, dim), 2, { filter: { level } })).row(0).ids]).toEqual([BigInt(level - 100), NO_ID]);
    }
    await expect(index.search(data.subarray(0, dim), 1, { filter: { levle: 1 } as never })).rejects.toThrow(InvalidArgumentError);
    using plain = new FlatIndex({ dim });
    await expect(plain.search(data.subarray(0, dim), 1, { filter: { level: 1 } })).rejects.toThrow('options.attributes');
    expect(() => plain.addSync([1n], data.subarray(0, dim), { attributes: [{}] })).toThrow(InvalidArgumentError);
  });
});

describe('IvfPqIndex with attributes and filters', () => {
  it('returns only rows that pass, and with every list probed and exact refine, the filtered top-k', async () => {
    const dim = 16;
    const n = 2000;
    const data = randomVectors(n, dim, 15);
    const ids = makeIds(n);
    const records = Array.from({ length: n }, (_, i) => ({ tier: i % 10 }));
    using index = new IvfPqIndex({ dim, nlist: 8, m: 4, refine: 'f32', attributes: { tier: 'uint' } });
    await index.train(data, { maxIterations: 5 });
    await index.add(ids.slice(0, 1200), data.subarray(0, 1200 * dim), { attributes: records.slice(0, 1200) });
    index.addSync(ids.slice(1200), data.subarray(1200 * dim), { attributes: records.slice(1200) });
    expect(index.attributes?.size).toBe(n);
    const queries = randomVectors(5, dim, 16);
    for (let q = 0; q < 5; q++) {
      const query = queries.subarray(q * dim, (q + 1) * dim);
      const filter: Filter = { or: [{ tier: 3 }, { id: { in: [ids[7]!] } }] };
      const got = (await index.search(query, 10, { filter, nprobe: 8, refineFactor: 50 })).row(0);
      const keep = (r: number) => records[r]!.tier === 3 || r === 7;
      const rows = [...Array(n).keys()].filter(keep);
      const sub = new Float32Array(rows.length * dim);
      rows.forEach((r, i) => sub.set(data.subarray(r * dim, (r + 1) * dim), i * dim));
      const want = bruteForce('ip', sub, rows.map((r) => ids[r]!), query, dim).slice(0, 10).map((w) => w.id);
      expect([...got.ids]).toEqual(want);
      expect(index.searchSync(query, 10, { filter, nprobe: 8, refineFactor: 50 }).row(0).ids).toEqual(got.ids);
    }
    using plain = new IvfPqIndex({ dim, nlist: 8, m: 4 });
    await expect(plain.search(queries.subarray(0, dim), 1, { filter: { tier: 1 } })).rejects.toThrow('options.attributes');
  });
});
