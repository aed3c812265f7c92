/**
 * Removal, upsert, get, has and compaction of the indexes, against plain TypeScript
 * references: the live vectors scored by brute force (or a fresh index of them), and the
 * attribute filter evaluated record by record.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import {
  DimensionMismatchError,
  DisposedError,
  DuplicateIdError,
  FlatIndex,
  IvfPqIndex,
  NO_ID,
  UnknownIdError,
  type Filter,
  type VectorStorage,
} from '../lib/index.js';
import { bruteForce, expectRowMatches, randomVectors, rng, type Metric } from './helpers.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ebrix-mutation-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

type Rec = {
  tier: number;
  tags: string[];
  on?: boolean;
};

/** What an index should hold: every row it numbered (adds and upserts, in order), and which are live. */
class Model {
  readonly ids: bigint[] = [];
  readonly vectors: Float32Array[] = [];
  readonly records: Rec[] = [];
  readonly live: boolean[] = [];
  readonly rowOf = new Map<bigint, number>();

  constructor(readonly dim: number) {}

  write(ids: readonly bigint[], data: Float32Array, records: readonly Rec[]): void {
    ids.forEach((id, i) => {
      const old = this.rowOf.get(id);
      if (old !== undefined) this.live[old] = false;
      this.rowOf.set(id, this.ids.length);
      this.ids.push(id);
      this.vectors.push(data.slice(i * this.dim, (i + 1) * this.dim));
      this.records.push(records[i]!);
      this.live.push(true);
    });
  }

  remove(ids: readonly bigint[]): number {
    let n = 0;
    for (const id of ids) {
      const row = this.rowOf.get(id);
      if (row === undefined) continue;
      this.live[row] = false;
      this.rowOf.delete(id);
      n++;
    }
    return n;
  }

  get size(): number {
    return this.rowOf.size;
  }

  /** Live rows passing `keep`, in row order. */
  rows(keep: (r: number) => boolean = () => true): number[] {
    return this.ids.map((_, r) => r).filter((r) => this.live[r] && keep(r));
  }

  /** The exact top-k ids over the live rows `keep` accepts. */
  top(metric: Metric, query: Float32Array, k: number, keep?: (r: number) => boolean): bigint[] {
    const rows = this.rows(keep);
    const data = new Float32Array(rows.length * this.dim);
    rows.forEach((r, i) => data.set(this.vectors[r]!, i * this.dim));
    return bruteForce(metric, data, rows.map((r) => this.ids[r]!), query, this.dim)
      .slice(0, k)
      .map((t) => t.id);
  }

  snapshot(): Model {
    const copy = new Model(this.dim);
    copy.ids.push(...this.ids);
    copy.vectors.push(...this.vectors);
    copy.records.push(...this.records);
    copy.live.push(...this.live);
    for (const [id, row] of this.rowOf) copy.rowOf.set(id, row);
    return copy;
  }
}

const TAGS = ['a', 'b', 'c', 'd'];
const schema = { tier: 'uint', tags: { type: 'category', multi: true }, on: 'bool' } as const;

function randomRecords(n: number, next: () => number): Rec[] {
  return Array.from({ length: n }, () => ({
    tier: Math.floor(next() * 10),
    tags: TAGS.filter(() => next() < 0.4),
    ...(next() < 0.8 ? { on: next() < 0.5 } : {}),
  }));
}

/** Filters and the same predicates over records. */
const FILTERS: Array<[Filter, (r: Rec) => boolean]> = [
  [{ tier: { lt: 3 } }, (r) => r.tier < 3],
  [{ tags: { hasAll: ['a', 'b'] } }, (r) => r.tags.includes('a') && r.tags.includes('b')],
  [{ or: [{ on: true }, { tier: 9 }] }, (r) => r.on === true || r.tier === 9],
  [{ not: { on: { exists: true } } }, (r) => r.on === undefined],
];

function distinctIds(next: () => number, n: number, range: number): bigint[] {
  const out = new Set<bigint>();
  while (out.size < n) out.add(BigInt(Math.floor(next() * range)));
  return [...out];
}

describe('FlatIndex mutations', () => {
  const dim = 12;

  it.each([
    ['ip', 'f32'],
    ['l2', 'f32'],
    ['cosine', 'f32'],
    ['cosine', 'f16'],
    ['l2', 'i8'],
  ] as Array<[Metric, VectorStorage]>)(
    '%s %s: remove, upsert, get, has and compact match a fresh index of the live vectors, and exact search for f32',
    async (metric, storage) => {
      const next = rng(11);
      const sample = randomVectors(300, dim, 12);
      const make = async () => {
        const index = new FlatIndex({ dim, metric, storage });
        if (storage === 'i8') await index.train(sample);
        return index;
      };
      using index = await make();
      const model = new Model(dim);
      let seed = 20;
      for (let step = 0; step < 16; step++) {
        const op = step < 2 ? 0 : Math.floor(next() * 4);
        if (op === 0 || op === 1) {
          let ids = distinctIds(next, 1 + Math.floor(next() * 200), op === 0 ? 1e9 : 1500);
          if (op === 0) ids = ids.filter((id) => !model.rowOf.has(id));
          const data = randomVectors(ids.length, dim, seed++);
          if (op === 0) {
            if (next() < 0.5) await index.add(ids, data);
            else index.addSync(ids, data);
          } else if (next() < 0.5) {
            await index.upsert(ids, data);
          } else {
            index.upsertSync(ids, data);
          }
          model.write(ids, data, ids.map(() => ({ tier: 0, tags: [] })));
        } else if (op === 2) {
          const held = [...model.rowOf.keys()];
          const ids = Array.from({ length: 1 + Math.floor(next() * 100) }, () => held[Math.floor(next() * held.length)]!);
          ids.push(123456789n);
          const want = model.remove([...new Set(ids)]);
          expect(next() < 0.5 ? await index.remove(ids) : index.removeSync(ids)).toBe(want);
        } else {
          await index.compact();
        }
        expect(index.size).toBe(model.size);

        using fresh = await make();
        const rows = model.rows();
        const data = new Float32Array(rows.length * dim);
        rows.forEach((r, i) => data.set(model.vectors[r]!, i * dim));
        await fresh.add(rows.map((r) => model.ids[r]!), data);
        const queries = randomVectors(3, dim, seed++);
        const got = await index.search(queries, 8);
        const want = await fresh.search(queries, 8);
        expect(got.ids).toEqual(want.ids);
        expect(got.scores).toEqual(want.scores);
        if (storage === 'f32') {
          for (let q = 0; q < 3; q++) {
            const query = queries.subarray(q * dim, (q + 1) * dim);
            const truth = bruteForce(metric, data, rows.map((r) => model.ids[r]!), query, dim);
            const row = got.row(q);
            expectRowMatches(truth, row.ids, row.scores, 8);
          }
        }
        for (const r of rows.slice(0, 5)) {
          const id = model.ids[r]!;
          expect(index.has(id)).toBe(true);
          expect(index.has(Number(id))).toBe(true);
          expect(index.get(id)).toEqual(fresh.get(id));
        }
        for (let r = 0; r < model.ids.length; r += 97) {
          if (!model.rowOf.has(model.ids[r]!)) expect(index.has(model.ids[r]!)).toBe(false);
        }
      }
    },
  );

  it('get returns the vector as stored: as given for f32 ip, normalised for cosine', async () => {
    using ip = new FlatIndex({ dim: 3 });
    using cosine = new FlatIndex({ dim: 3, metric: 'cosine' });
    for (const index of [ip, cosine]) await index.add([7], [[3, 0, 4]]);
    expect([...ip.get(7)]).toEqual([3, 0, 4]);
    expect([...cosine.get(7n)].map((x) => Math.round(x * 1e6) / 1e6)).toEqual([0.6, 0, 0.8]);
    await ip.upsert([7], [[1, 2, 3]]);
    expect([...ip.get(7)]).toEqual([1, 2, 3]);
    expect(ip.size).toBe(1);
  });

  it('filters never match removed rows, and upserts replace attributes (against a brute-force filter)', async () => {
    const next = rng(31);
    using index = new FlatIndex({ dim, attributes: schema });
    const model = new Model(dim);
    let seed = 40;
    for (let step = 0; step < 12; step++) {
      const op = step < 2 ? 0 : Math.floor(next() * 4);
      if (op <= 1) {
        let ids = distinctIds(next, 50 + Math.floor(next() * 300), op === 0 ? 1e9 : 2000);
        if (op === 0) ids = ids.filter((id) => !model.rowOf.has(id));
        const data = randomVectors(ids.length, dim, seed++);
        const records = randomRecords(ids.length, next);
        if (op === 0) await index.add(ids, data, { attributes: records });
        else await index.upsert(ids, data, { attributes: records });
        model.write(ids, data, records);
      } else if (op === 2) {
        const held = [...model.rowOf.keys()];
        const ids = held.filter(() => next() < 0.2);
        expect(await index.remove(ids)).toBe(model.remove(ids));
      } else {
        await index.compact();
      }
      const queries = randomVectors(2, dim, seed++);
      for (const [filter, keep] of FILTERS) {
        for (let q = 0; q < 2; q++) {
          const query = queries.subarray(q * dim, (q + 1) * dim);
          const want = model.top('ip', query, 10, (r) => keep(model.records[r]!));
          const got = [...(await index.search(query, 10, { filter })).row(0).ids].filter((id) => id !== NO_ID);
          expect(got, JSON.stringify(filter)).toEqual(want);
          expect([...index.searchSync(query, 10, { filter }).row(0).ids].filter((id) => id !== NO_ID)).toEqual(want);
        }
      }
      // An id filter maps ids on the search's state: a removed id selects nothing.
      const someIds = model.ids.filter((_, r) => r % 7 === 0);
      const query = queries.subarray(0, dim);
      const want = model.top('ip', query, 10, (r) => someIds.includes(model.ids[r]!));
      const got = [...(await index.search(query, 10, { filter: { id: { in: someIds } } })).row(0).ids];
      expect(got.filter((id) => id !== NO_ID)).toEqual(want);
    }
    // Records of removed rows stay in the table; rows are never renumbered.
    expect(index.attributes?.size).toBe(model.ids.length);
  });

  it('searches beside adds, upserts, removes and compaction return results of states that existed', async () => {
    const next = rng(51);
    using index = new FlatIndex({ dim, attributes: schema, threads: 1 });
    const model = new Model(dim);
    const states: Model[] = [model.snapshot()];
    const query = randomVectors(1, dim, 52);
    const k = 10;
    const filter: Filter = { tier: { lt: 5 } };
    const seen: Array<{ filtered: boolean; ids: bigint[] }> = [];
    let writing = true;
    const searcher = async (filtered: boolean) => {
      while (writing) {
        const out = await index.search(query, k, filtered ? { filter } : {});
        seen.push({ filtered, ids: [...out.row(0).ids].filter((id) => id !== NO_ID) });
      }
    };
    const searchers = [searcher(false), searcher(true), searcher(false), searcher(true)];
    let seed = 60;
    for (let step = 0; step < 60; step++) {
      const op = step < 3 ? 0 : Math.floor(next() * 4);
      if (op <= 1) {
        let ids = distinctIds(next, 100 + Math.floor(next() * 200), 3000);
        if (op === 0) ids = ids.filter((id) => !model.rowOf.has(id));
        const data = randomVectors(ids.length, dim, seed++);
        const records = randomRecords(ids.length, next);
        if (op === 0) await index.add(ids, data, { attributes: records });
        else await index.upsert(ids, data, { attributes: records });
        model.write(ids, data, records);
      } else if (op === 2) {
        const ids = distinctIds(next, 150, 3000);
        expect(await index.remove(ids)).toBe(model.remove(ids));
      } else {
        await index.compact();
      }
      states.push(model.snapshot());
    }
    writing = false;
    await Promise.all(searchers);

    const valid = { plain: new Set<string>(), filtered: new Set<string>() };
    for (const state of states) {
      valid.plain.add(state.top('ip', query, k).join());
      valid.filtered.add(state.top('ip', query, k, (r) => state.records[r]!.tier < 5).join());
    }
    expect(seen.filter((s) => s.filtered).length).toBeGreaterThan(10);
    for (const s of seen) {
      expect(s.filtered ? valid.filtered.has(s.ids.join()) : valid.plain.has(s.ids.join()), `${s.filtered}: ${s.ids}`).toBe(true);
    }
  });

  it('fails with typed errors: unknown id, disposed, wrong dimension, repeated id', async () => {
    const index = new FlatIndex({ dim: 4 });
    await index.add([1, 2], [[1, 0, 0, 0], [0, 1, 0, 0]]);
    expect(() => index.get(3)).toThrow(UnknownIdError);
    expect(() => index.get(3)).toThrow(expect.objectContaining({ code: 'EBRIX_UNKNOWN_ID' }));
    await expect(index.upsert([1], [[1, 2, 3]])).rejects.toThrow(DimensionMismatchError);
    await expect(index.upsert([5, 5], [[1, 2, 3, 4], [1, 2, 3, 4]])).rejects.toThrow(DuplicateIdError);
    expect(() => index.has(-1)).toThrow('non-negative');
    expect(index.removeSync([])).toBe(0);
    index.dispose();
    expect(() => index.get(1)).toThrow(DisposedError);
    expect(() => index.has(1)).toThrow(DisposedError);
    await expect(index.remove([1])).rejects.toThrow(DisposedError);
    await expect(index.upsert([1], [[1, 2, 3, 4]])).rejects.toThrow(DisposedError);
    await expect(index.compact()).rejects.toThrow(DisposedError);
  });

  it('saves the live vectors after removes, and reopens them numbered from 0 (mapped and read)', async () => {
    const n = 600;
    const data = randomVectors(n, dim, 71);
    const ids = Array.from({ length: n }, (_, i) => BigInt(1000 + i));
    using index = new FlatIndex({ dim, metric: 'l2' });
    await index.add(ids, data);
    const gone = ids.filter((_, i) => i % 3 === 0);
    expect(await index.remove(gone)).toBe(gone.length);
    await index.upsert([ids[1]!, 5n], randomVectors(2, dim, 72));
    const file = path.join(dir, 'removed.ebrix');
    await index.save(file);
    const queries = randomVectors(4, dim, 73);
    const before = await index.search(queries, 10);
    for (const mmap of [true, false]) {
      using opened = await FlatIndex.open(file, { mmap });
      expect(opened.size).toBe(index.size);
      expect(opened.has(gone[0]!)).toBe(false);
      expect(opened.get(5n)).toEqual(index.get(5n));
      const after = await opened.search(queries, 10);
      expect(after.ids).toEqual(before.ids);
      expect(after.scores).toEqual(before.scores);
      // Rows are the live vectors in row order: id 1001 was upserted, so it comes last but one.
      const allow = new Uint32Array(Math.ceil(opened.size / 32));
      allow[(opened.size - 2) >> 5]! |= 1 << ((opened.size - 2) & 31);
      expect((await opened.search(queries.subarray(0, dim), 2, { allow })).row(0).ids[0]).toBe(ids[1]);
      expect(await opened.remove([ids[2]!])).toBe(1);
      expect(await opened.compact()).toBe(1);
      expect(opened.size).toBe(index.size - 1);
    }
  });
});

describe('IvfPqIndex mutations', () => {
  const dim = 16;
  const sample = randomVectors(800, dim, 81);

  /** A trained, empty index saved once, so that reference indexes share its quantizers. */
  async function trainedBase(name: string, options: Partial<ConstructorParameters<typeof IvfPqIndex>[0]> = {}) {
    using index = new IvfPqIndex({ dim, nlist: 8, m: 4, ...options });
    await index.train(sample, { maxIterations: 6 });
    const file = path.join(dir, `${name}.ebrix`);
    await index.save(file);
    return file;
  }

  it.each([
    ['8-bit, no refine', { nbits: 8, refine: 'none' }],
    ['8-bit, refine f32, l2', { nbits: 8, refine: 'f32', metric: 'l2' }],
    ['4-bit, refine f16, cosine', { nbits: 4, refine: 'f16', metric: 'cosine' }],
  ] as const)('%s: remove, upsert, has, get and compact match a fresh index of the live vectors', async (name, options) => {
    const base = await trainedBase(name.replace(/\W+/g, '-'), options);
    const next = rng(91);
    using index = await IvfPqIndex.open(base);
    const model = new Model(dim);
    let seed = 100;
    let tombstones = false;
    for (let step = 0; step < 14; step++) {
      const op = step < 2 ? 0 : Math.floor(next() * 4);
      if (op <= 1) {
        let ids = distinctIds(next, 1 + Math.floor(next() * 250), op === 0 ? 1e9 : 1500);
        if (op === 0) ids = ids.filter((id) => !model.rowOf.has(id));
        const data = randomVectors(ids.length, dim, seed++);
        tombstones ||= op === 1 && ids.some((id) => model.rowOf.has(id));
        if (op === 0) await index.add(ids, data);
        else if (next() < 0.5) await index.upsert(ids, data);
        else index.upsertSync(ids, data);
        model.write(ids, data, ids.map(() => ({ tier: 0, tags: [] })));
      } else if (op === 2) {
        const held = [...model.rowOf.keys()];
        const ids = held.filter(() => next() < 0.15);
        const want = model.remove(ids);
        tombstones ||= want > 0;
        expect(next() < 0.5 ? await index.remove(ids) : index.removeSync(ids)).toBe(want);
      } else {
        await index.compact();
        tombstones = false;
      }
      expect(index.size).toBe(model.size);
      using fresh = await IvfPqIndex.open(base);
      const rows = model.rows();
      const data = new Float32Array(rows.length * dim);
      rows.forEach((r, i) => data.set(model.vectors[r]!, i * dim));
      await fresh.add(rows.map((r) => model.ids[r]!), data);
      const queries = randomVectors(4, dim, seed++);
      const got = await index.search(queries, 8, { nprobe: 3 });
      const want = await fresh.search(queries, 8, { nprobe: 3 });
      // 4-bit candidates tie-break on list positions, which tombstones shift: exact once compacted.
      if (options.nbits === 8 || !tombstones) {
        expect(got.ids).toEqual(want.ids);
        expect(got.scores).toEqual(want.scores);
      }
      for (const id of got.ids) if (id !== NO_ID) expect(model.rowOf.has(id)).toBe(true);
      for (const r of rows.slice(0, 4)) {
        const id = model.ids[r]!;
        expect(index.has(id)).toBe(true);
        if (options.refine === 'none') expect(() => index.get(id)).toThrow(/refine 'none'/);
        else expect(index.get(id)).toEqual(fresh.get(id));
      }
    }
  });

  it('filters never match removed rows, and upserts replace attributes (against a brute-force filter)', async () => {
    const next = rng(61);
    using index = new IvfPqIndex({ dim, nlist: 8, m: 4, refine: 'f32', attributes: schema });
    await index.train(sample, { maxIterations: 6 });
    const model = new Model(dim);
    let seed = 200;
    for (let step = 0; step < 10; step++) {
      const op = step < 2 ? 0 : Math.floor(next() * 4);
      if (op <= 1) {
        let ids = distinctIds(next, 50 + Math.floor(next() * 300), op === 0 ? 1e9 : 2000);
        if (op === 0) ids = ids.filter((id) => !model.rowOf.has(id));
        const data = randomVectors(ids.length, dim, seed++);
        const records = randomRecords(ids.length, next);
        if (op === 0) await index.add(ids, data, { attributes: records });
        else await index.upsert(ids, data, { attributes: records });
        model.write(ids, data, records);
      } else if (op === 2) {
        const ids = [...model.rowOf.keys()].filter(() => next() < 0.2);
        expect(await index.remove(ids)).toBe(model.remove(ids));
      } else {
        await index.compact();
      }
      // Every list probed and every candidate re-ranked exactly: the filtered top-k is exact.
      const exact = { nprobe: 8, refineFactor: 1000 };
      const queries = randomVectors(2, dim, seed++);
      for (const [filter, keep] of FILTERS) {
        for (let q = 0; q < 2; q++) {
          const query = queries.subarray(q * dim, (q + 1) * dim);
          const want = model.top('ip', query, 10, (r) => keep(model.records[r]!));
          const got = [...(await index.search(query, 10, { filter, ...exact })).row(0).ids].filter((id) => id !== NO_ID);
          expect(got, JSON.stringify(filter)).toEqual(want);
          const sync = [...index.searchSync(query, 10, { filter, ...exact }).row(0).ids].filter((id) => id !== NO_ID);
          expect(sync).toEqual(want);
        }
      }
      const someIds = model.ids.filter((_, r) => r % 5 === 0);
      const query = queries.subarray(0, dim);
      const want = model.top('ip', query, 10, (r) => someIds.includes(model.ids[r]!));
      const got = [...(await index.search(query, 10, { filter: { id: { in: someIds } }, ...exact })).row(0).ids];
      expect(got.filter((id) => id !== NO_ID)).toEqual(want);
    }
  });

  it('searches beside adds, upserts, removes and compaction return results of states that existed', async () => {
    const next = rng(71);
    using index = new IvfPqIndex({ dim, nlist: 8, m: 4, refine: 'f32', attributes: schema, threads: 1 });
    await index.train(sample, { maxIterations: 6 });
    const model = new Model(dim);
    const states: Model[] = [model.snapshot()];
    const query = randomVectors(1, dim, 72);
    const k = 10;
    // Exact: every list, every candidate re-ranked on the refine vectors.
    const exact = { nprobe: 8, refineFactor: 1000 };
    const filter: Filter = { tier: { lt: 5 } };
    const seen: Array<{ filtered: boolean; ids: bigint[] }> = [];
    let writing = true;
    const searcher = async (filtered: boolean) => {
      while (writing) {
        const out = await index.search(query, k, filtered ? { filter, ...exact } : exact);
        seen.push({ filtered, ids: [...out.row(0).ids].filter((id) => id !== NO_ID) });
      }
    };
    const searchers = [searcher(false), searcher(true), searcher(true)];
    let seed = 300;
    for (let step = 0; step < 40; step++) {
      const op = step < 3 ? 0 : Math.floor(next() * 4);
      if (op <= 1) {
        let ids = distinctIds(next, 100 + Math.floor(next() * 200), 2500);
        if (op === 0) ids = ids.filter((id) => !model.rowOf.has(id));
        const data = randomVectors(ids.length, dim, seed++);
        const records = randomRecords(ids.length, next);
        if (op === 0) await index.add(ids, data, { attributes: records });
        else await index.upsert(ids, data, { attributes: records });
        model.write(ids, data, records);
      } else if (op === 2) {
        const ids = distinctIds(next, 150, 2500);
        expect(await index.remove(ids)).toBe(model.remove(ids));
      } else {
        await index.compact();
      }
      states.push(model.snapshot());
    }
    writing = false;
    await Promise.all(searchers);
    const valid = { plain: new Set<string>(), filtered: new Set<string>() };
    for (const state of states) {
      valid.plain.add(state.top('ip', query, k).join());
      valid.filtered.add(state.top('ip', query, k, (r) => state.records[r]!.tier < 5).join());
    }
    expect(seen.filter((s) => s.filtered).length).toBeGreaterThan(5);
    for (const s of seen) {
      expect(s.filtered ? valid.filtered.has(s.ids.join()) : valid.plain.has(s.ids.join()), `${s.filtered}: ${s.ids}`).toBe(true);
    }
  });

  it('fails with typed errors and saves the live vectors after removes', async () => {
    const index = new IvfPqIndex({ dim, nlist: 8, m: 4 });
    await index.train(sample, { maxIterations: 4 });
    const data = randomVectors(300, dim, 401);
    const ids = Array.from({ length: 300 }, (_, i) => BigInt(i * 11));
    await index.add(ids, data);
    expect(() => index.get(5)).toThrow(UnknownIdError);
    expect(() => index.get(11)).toThrow(expect.objectContaining({ code: 'EBRIX_INVALID_ARGUMENT' }));
    await expect(index.upsert([1], [[1, 2, 3]])).rejects.toThrow(DimensionMismatchError);
    await expect(index.upsert([2, 2], randomVectors(2, dim, 1))).rejects.toThrow(DuplicateIdError);
    expect(await index.remove(ids.filter((_, i) => i % 4 === 0))).toBe(75);
    await index.upsert([ids[1]!, 7n], randomVectors(2, dim, 402));
    const file = path.join(dir, 'ivfpq-removed.ebrix');
    await index.save(file);
    const queries = randomVectors(3, dim, 403);
    const before = await index.search(queries, 10, { nprobe: 8 });
    using opened = await IvfPqIndex.open(file);
    expect(opened.size).toBe(index.size);
    expect(opened.has(ids[0]!)).toBe(false);
    expect(opened.has(7n)).toBe(true);
    const after = await opened.search(queries, 10, { nprobe: 8 });
    expect(after.ids).toEqual(before.ids);
    expect(after.scores).toEqual(before.scores);
    index.dispose();
    expect(() => index.has(1)).toThrow(DisposedError);
    await expect(index.remove([1])).rejects.toThrow(DisposedError);
    await expect(index.compact()).rejects.toThrow(DisposedError);
  });
});
