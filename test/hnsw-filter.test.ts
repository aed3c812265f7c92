/**
 * HnswIndex with attributes: filters at several selectivities against a brute-force filter
 * over the records (recall through the graph walk, exactness through the scan), with removals
 * and upserts, and beside writes; get and upsert.
 */
import { describe, expect, it } from 'vitest';

import {
  DimensionMismatchError,
  DisposedError,
  FlatIndex,
  HnswIndex,
  InvalidArgumentError,
  NO_ID,
  UnknownIdError,
  type Filter,
  type HnswFilterStrategy,
  type SearchResult,
} from '../lib/index.js';
import { clustered, recall } from './datasets.js';
import { makeIds, randomVectors, rng } from './helpers.js';

const schema = { bucket: 'uint', color: 'category' } as const;
type Rec = { bucket: number; color: string };
const COLORS = ['red', 'green', 'blue'];

/** The exact filtered top-k: FlatIndex over the same vectors, allowed rows computed here record by record. */
async function truthOf(
  dim: number,
  ids: readonly bigint[],
  data: Float32Array,
  live: (r: number) => boolean,
  queries: Float32Array,
  k: number,
): Promise<SearchResult> {
  // Rows as ids (an upserted id has a dead row and a live one), mapped back after the search.
  using flat = new FlatIndex({ dim });
  await flat.add(Array.from(ids, (_, r) => BigInt(r)), data);
  const allow = new Uint32Array(Math.ceil(ids.length / 32));
  for (let r = 0; r < ids.length; r++) if (live(r)) allow[r >> 5]! |= 1 << (r & 31);
  const result = await flat.search(queries, k, { allow });
  result.ids.forEach((row, i) => {
    if (row !== NO_ID) result.ids[i] = ids[Number(row)]!;
  });
  return result;
}

describe('HnswIndex attribute filters', () => {
  const dim = 24;
  const n = 5000;
  const k = 10;
  const data = clustered(n, dim, 30, 21);
  const queries = clustered(40, dim, 30, 22);
  const ids = makeIds(n);
  const next = rng(23);
  const records: Rec[] = Array.from({ length: n }, () => ({
    bucket: Math.floor(next() * 1000),
    color: COLORS[Math.floor(next() * 3)]!,
  }));

  it.each([0.5, 0.1, 0.01, 0.002])(
    '%s of rows pass: only passing rows; scan exact, graph walk recall >= 0.9, auto one of the two',
    async (selectivity) => {
      // One build thread: the graph (and so what a filtered walk reaches) is the same every run.
      using index = new HnswIndex({ dim, attributes: schema, threads: 1 });
      await index.add(ids.slice(0, 2000), data.subarray(0, 2000 * dim), { attributes: records.slice(0, 2000) });
      index.addSync(ids.slice(2000), data.subarray(2000 * dim), { attributes: records.slice(2000) });
      const bound = Math.round(selectivity * 1000);
      const filter: Filter = { bucket: { lt: bound } };
      const passes = (r: number) => records[r]!.bucket < bound;
      const passing = new Set(ids.filter((_, r) => passes(r)));
      const truth = await truthOf(dim, ids, data, passes, queries, k);
      const measured: string[] = [];
      const expansion = 64;
      for (const filterStrategy of ['scan', 'graph', 'auto'] as HnswFilterStrategy[]) {
        // The walk is not meant for a handful of rows in thousands: 'auto' scans those.
        if (filterStrategy === 'graph' && selectivity < 0.1) continue;
        const got = await index.search(queries, k, { filter, filterStrategy, expansion });
        for (const id of got.ids) expect(id === NO_ID || passing.has(id)).toBe(true);
        const r = recall(truth, got);
        measured.push(`${filterStrategy} ${r.toFixed(3)}`);
        // 'auto' scans when allowed² <= expansion × size.
        const scans = filterStrategy === 'scan' || (filterStrategy === 'auto' && passing.size ** 2 <= expansion * n);
        if (scans) expect(got.ids).toEqual(truth.ids);
        else expect(r, filterStrategy).toBeGreaterThanOrEqual(0.9);
      }
      const sync = index.searchSync(queries.subarray(0, dim), k, { filter, filterStrategy: 'scan' });
      expect(sync.ids).toEqual(truth.row(0).ids);
      console.info(`HnswIndex filter ${selectivity * 100}% (${passing.size} rows) recall@10: ${measured.join(', ')}`);
    },
  );

  it('combines a filter with allow and id conditions, and refuses filters without a schema', async () => {
    using index = new HnswIndex({ dim, attributes: schema });
    await index.add(ids.slice(0, 1000), data.subarray(0, 1000 * dim), { attributes: records.slice(0, 1000) });
    const allow = new Uint32Array(Math.ceil(1000 / 32)).fill(0x55555555); // even rows
    const filter: Filter = { and: [{ color: 'red' }, { id: { notIn: ids.slice(0, 100) } }] };
    const keep = (r: number) => r < 1000 && r % 2 === 0 && records[r]!.color === 'red' && r >= 100;
    const truth = await truthOf(dim, ids.slice(0, 1000), data.subarray(0, 1000 * dim), keep, queries, k);
    const got = await index.search(queries, k, { filter, allow, filterStrategy: 'scan' });
    expect(got.ids).toEqual(truth.ids);
    using plain = new HnswIndex({ dim });
    await expect(plain.search(queries, k, { filter: { color: 'red' } })).rejects.toThrow('options.attributes');
    expect(() => plain.addSync([1n], data.subarray(0, dim), { attributes: [{}] })).toThrow(InvalidArgumentError);
    await expect(index.search(queries, k, { filter: { colour: 'red' } as never })).rejects.toThrow(InvalidArgumentError);
  });

  it('removed rows never match; upserts replace vectors and records (scan: exact against brute force)', async () => {
    const m = 2000;
    using index = new HnswIndex({ dim, attributes: schema });
    await index.add(ids.slice(0, m), data.subarray(0, m * dim), { attributes: records.slice(0, m) });
    // The model: rows in order, as the index numbers them.
    const rowIds = ids.slice(0, m);
    const rowData: Float32Array[] = Array.from({ length: m }, (_, r) => data.slice(r * dim, (r + 1) * dim));
    const rowRecords = records.slice(0, m);
    const live = rowIds.map(() => true);
    const rowOf = new Map(rowIds.map((id, r) => [id, r]));
    const gone = rowIds.filter((_, r) => r % 5 === 0);
    expect(await index.remove(gone)).toBe(gone.length);
    for (const id of gone) {
      live[rowOf.get(id)!] = false;
      rowOf.delete(id);
    }
    // Upsert 300 held ids (new vectors and records) and 100 new ones.
    const upserted = [...rowIds.filter((_, r) => r % 5 === 1).slice(0, 300), ...ids.slice(m, m + 100)];
    const fresh = randomVectors(upserted.length, dim, 24);
    const freshRecords: Rec[] = upserted.map((_, i) => ({ bucket: i % 50, color: 'blue' }));
    await index.upsert(upserted, fresh, { attributes: freshRecords });
    upserted.forEach((id, i) => {
      const old = rowOf.get(id);
      if (old !== undefined) live[old] = false;
      rowOf.set(id, rowIds.length);
      rowIds.push(id);
      rowData.push(fresh.slice(i * dim, (i + 1) * dim));
      rowRecords.push(freshRecords[i]!);
      live.push(true);
    });
    expect(index.size).toBe(rowOf.size);
    expect(index.attributes?.size).toBe(rowIds.length);
    const flatData = new Float32Array(rowIds.length * dim);
    rowData.forEach((v, r) => flatData.set(v, r * dim));
    for (const [filter, keep] of [
      [{ bucket: { lt: 30 } }, (r: Rec) => r.bucket < 30],
      [{ color: 'blue' }, (r: Rec) => r.color === 'blue'],
      [{ not: { color: 'blue' } }, (r: Rec) => r.color !== 'blue'],
    ] as Array<[Filter, (r: Rec) => boolean]>) {
      const truth = await truthOf(dim, rowIds, flatData, (r) => live[r]! && keep(rowRecords[r]!), queries, k);
      const got = await index.search(queries, k, { filter, filterStrategy: 'scan' });
      expect(got.ids, JSON.stringify(filter)).toEqual(truth.ids);
      const walked = await index.search(queries, k, { filter, filterStrategy: 'graph', expansion: 128 });
      for (const id of walked.ids) {
        if (id === NO_ID) continue;
        const r = rowOf.get(id);
        expect(r !== undefined && keep(rowRecords[r]!)).toBe(true);
      }
    }
    expect(index.get(upserted[0]!)).toEqual(fresh.subarray(0, dim));
    expect(() => index.get(gone[0]!)).toThrow(UnknownIdError);
    await expect(index.upsert([1n], [[1, 2]])).rejects.toThrow(DimensionMismatchError);
  });

  it('filtered searches beside upserts and removes return results of states that existed', async () => {
    const small = 600;
    using index = new HnswIndex({ dim, attributes: schema, threads: 1 });
    const rowIds: bigint[] = [];
    const rowData: Float32Array[] = [];
    const rowRecords: Rec[] = [];
    const live: boolean[] = [];
    const rowOf = new Map<bigint, number>();
    const write = (batch: bigint[], vectors: Float32Array, recs: Rec[]) =>
      batch.forEach((id, i) => {
        const old = rowOf.get(id);
        if (old !== undefined) live[old] = false;
        rowOf.set(id, rowIds.length);
        rowIds.push(id);
        rowData.push(vectors.slice(i * dim, (i + 1) * dim));
        rowRecords.push(recs[i]!);
        live.push(true);
      });
    const states: Array<{ rows: number; live: boolean[] }> = [{ rows: 0, live: [] }];
    const query = queries.subarray(0, dim);
    const filter: Filter = { bucket: { lt: 500 } };
    const seen: bigint[][] = [];
    let writing = true;
    const searcher = async () => {
      while (writing) {
        const out = await index.search(query, k, { filter, filterStrategy: 'scan' });
        seen.push([...out.row(0).ids].filter((id) => id !== NO_ID));
      }
    };
    const searchers = [searcher(), searcher()];
    const pick = rng(25);
    for (let step = 0; step < 40; step++) {
      const op = step < 2 ? 0 : Math.floor(pick() * 3);
      if (op <= 1) {
        const batch = [...new Set(Array.from({ length: 60 }, () => ids[Math.floor(pick() * small)]!))].filter(
          (id) => op === 1 || !rowOf.has(id),
        );
        const vectors = randomVectors(batch.length, dim, 100 + step);
        const recs = batch.map(() => ({ bucket: Math.floor(pick() * 1000), color: 'red' }));
        if (op === 0) await index.add(batch, vectors, { attributes: recs });
        else await index.upsert(batch, vectors, { attributes: recs });
        write(batch, vectors, recs);
      } else {
        const batch = [...rowOf.keys()].filter(() => pick() < 0.1);
        expect(await index.remove(batch)).toBe(batch.length);
        for (const id of batch) {
          live[rowOf.get(id)!] = false;
          rowOf.delete(id);
        }
      }
      states.push({ rows: rowIds.length, live: [...live] });
    }
    writing = false;
    await Promise.all(searchers);
    const flatData = new Float32Array(rowIds.length * dim);
    rowData.forEach((v, r) => flatData.set(v, r * dim));
    const valid = new Set<string>();
    for (const state of states) {
      const truth = await truthOf(dim, rowIds, flatData, (r) => r < state.rows && state.live[r]! && rowRecords[r]!.bucket < 500, query, k);
      valid.add([...truth.row(0).ids].filter((id) => id !== NO_ID).join());
    }
    expect(seen.length).toBeGreaterThan(10);
    for (const ids of seen) expect(valid.has(ids.join()), ids.join()).toBe(true);
    index.dispose();
    expect(() => index.get(1n)).toThrow(DisposedError);
    await expect(index.upsert([1n], query)).rejects.toThrow(DisposedError);
  });
});
