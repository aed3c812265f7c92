/**
 * Mutation sequences for comparing an index against references (test/gpu.test.ts): the index
 * under test takes adds, upserts, removes and compactions; after each step its answers must
 * equal those of (a) a fresh index built from the live vectors only, and (b) a reference that
 * took the same steps (same row numbers, so the same allow bitsets mean the same vectors).
 */
import { expect } from 'vitest';

import { DuplicateIdError, InvalidVectorError, NO_ID, UnknownIdError, type SearchResult } from '../lib/index.js';
import { randomVectors, rng } from './helpers.js';

/** What the harness needs of FlatIndex and IvfPqIndex. */
export interface MutableIndex {
  readonly size: number;
  add(ids: bigint[], vectors: Float32Array): Promise<void>;
  upsert(ids: bigint[], vectors: Float32Array): Promise<void>;
  upsertSync(ids: bigint[], vectors: Float32Array): void;
  remove(ids: bigint[]): Promise<number>;
  removeSync(ids: bigint[]): number;
  has(id: bigint): boolean;
  get(id: bigint): Float32Array;
  compact(): Promise<number>;
  dispose(): void;
}

export interface MutationScenario<I extends MutableIndex> {
  label: string;
  dim: number;
  /** The index under test and the reference that takes the same steps (both empty, trained). */
  make(): Promise<[I, I]>;
  /** A fresh reference index holding `ids` / `vectors` only. */
  fresh(ids: bigint[], vectors: Float32Array): Promise<I>;
  /** Searches (several settings); `allow` over rows. Same call for every index. */
  search(index: I, queries: Float32Array, k: number, allow?: Uint32Array): Promise<SearchResult>;
  searchSync(index: I, queries: Float32Array, k: number): SearchResult;
  /** Whether get() gives vectors back (IVF-PQ with refine 'none' does not). */
  gets: boolean;
  /** Score tolerance for a result row, given the reference's scores. */
  tolerance(scores: Float32Array): number;
}

/**
 * `actual` equals `expected` up to float rounding: padding in the same places, scores
 * position by position within `tol`, and the same id wherever the score is not within `tol`
 * of a neighbour's (near-ties may swap).
 */
export function expectSameResults(expected: SearchResult, actual: SearchResult, tol: number, label: string): void {
  expect(actual.nq, label).toBe(expected.nq);
  expect(actual.k, label).toBe(expected.k);
  for (let q = 0; q < expected.nq; q++) {
    const e = expected.row(q);
    const a = actual.row(q);
    for (let i = 0; i < e.ids.length; i++) {
      const where = `${label}, query ${q}, position ${i}`;
      if (e.ids[i] === NO_ID) {
        expect(a.ids[i], where).toBe(NO_ID);
        expect(a.scores[i], where).toBe(-Infinity);
        continue;
      }
      expect(a.ids[i], where).not.toBe(NO_ID);
      expect(Math.abs(a.scores[i]! - e.scores[i]!), where).toBeLessThanOrEqual(tol);
      const tiedBefore = i > 0 && Math.abs(e.scores[i - 1]! - e.scores[i]!) <= 2 * tol;
      const tiedAfter = i + 1 < e.ids.length && e.ids[i + 1] !== NO_ID && Math.abs(e.scores[i + 1]! - e.scores[i]!) <= 2 * tol;
      if (!tiedBefore && !tiedAfter) expect(a.ids[i], where).toBe(e.ids[i]);
    }
  }
}

/** Runs the sequence; returns how many comparisons it made (so a caller can see it ran). */
export async function runMutationSequence<I extends MutableIndex>(s: MutationScenario<I>, seed: number): Promise<number> {
  const { dim } = s;
  const random = rng(seed);
  const live = new Map<bigint, Float32Array>();
  const removed = new Set<bigint>();
  let nextId = 1000n;
  let nextSeed = seed * 1000;
  let comparisons = 0;
  const queriesFew = randomVectors(5, dim, seed + 1);
  const queriesMany = randomVectors(40, dim, seed + 2);
  const [index, twin] = await s.make();

  const vectorsOf = (count: number) => randomVectors(count, dim, ++nextSeed);
  const pick = (count: number): bigint[] => {
    const held = [...live.keys()];
    for (let i = held.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [held[i], held[j]] = [held[j]!, held[i]!];
    }
    return held.slice(0, count);
  };
  const take = (ids: bigint[], vectors: Float32Array) => {
    ids.forEach((id, i) => {
      live.set(id, vectors.slice(i * dim, (i + 1) * dim));
      removed.delete(id);
    });
  };

  const check = async (step: string) => {
    const label = `${s.label}, after ${step}`;
    expect(index.size, label).toBe(live.size);
    expect(twin.size, label).toBe(live.size);
    const ids = [...live.keys()];
    const vectors = new Float32Array(ids.length * dim);
    ids.forEach((id, i) => vectors.set(live.get(id)!, i * dim));
    const fresh = await s.fresh(ids, vectors);
    try {
      for (const id of ids.slice(0, 20)) expect(index.has(id), `${label}: has ${id}`).toBe(true);
      for (const id of [...removed].slice(0, 20)) expect(index.has(id), `${label}: has removed ${id}`).toBe(false);
      if (s.gets) {
        for (const id of ids.slice(0, 10)) {
          const got = index.get(id);
          const want = fresh.get(id);
          for (let d = 0; d < dim; d++) {
            expect(Math.abs(got[d]! - want[d]!), `${label}: get ${id}[${d}]`).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(want[d]!)));
          }
        }
      }
      for (const id of [...removed].slice(0, 3)) expect(() => index.get(id), label).toThrow(UnknownIdError);
      for (const queries of [queriesFew, queriesMany]) {
        for (const k of [10, 50]) {
          const expected = await s.search(fresh, queries, k);
          const tol = Math.max(...Array.from({ length: expected.nq }, (_, q) => s.tolerance(expected.row(q).scores)));
          expectSameResults(expected, await s.search(index, queries, k), tol, `${label}, k ${k}`);
          expectSameResults(expected, s.searchSync(index, queries, k), tol, `${label}, k ${k}, sync`);
          // Removed ids never come back, allowed or not; an allow bitset over rows means the
          // same vectors in the index and in the twin that took the same steps.
          const allow = new Uint32Array(200);
          for (let w = 0; w < allow.length; w++) allow[w] = Math.floor(random() * 2 ** 32) >>> 0;
          const allowedTwin = await s.search(twin, queries, k, allow);
          const allowed = await s.search(index, queries, k, allow);
          expectSameResults(allowedTwin, allowed, tol, `${label}, k ${k}, allow`);
          for (const id of allowed.ids) if (id !== NO_ID) expect(live.has(id), `${label}: returned ${id}`).toBe(true);
          comparisons += 3;
        }
      }
    } finally {
      fresh.dispose();
    }
  };

  try {
    // Adds, in two batches.
    for (const count of [400, 250]) {
      const ids = Array.from({ length: count }, () => nextId++);
      const vectors = vectorsOf(count);
      await index.add(ids, vectors);
      await twin.add(ids, vectors);
      take(ids, vectors);
    }
    await check('adds');

    // Removes: held ids, unknown ids and repeats; the count is of ids removed.
    const gone = pick(120);
    const asked = [...gone, 99_999_999n, gone[0]!, gone[1]!];
    expect(await index.remove(asked)).toBe(gone.length);
    expect(await twin.remove(asked)).toBe(gone.length);
    for (const id of gone) {
      live.delete(id);
      removed.add(id);
    }
    expect(await index.remove(gone.slice(0, 5))).toBe(0);
    await check('removes');

    // Upserts: held ids replaced, removed ids back, new ids added; async, then sync.
    for (const sync of [false, true]) {
      const ids = [...pick(60), ...[...removed].slice(0, 10), ...Array.from({ length: 30 }, () => nextId++)];
      const vectors = vectorsOf(ids.length);
      if (sync) index.upsertSync(ids, vectors);
      else await index.upsert(ids, vectors);
      twin.upsertSync(ids, vectors);
      take(ids, vectors);
    }
    await check('upserts');

    // A rejected upsert leaves both unchanged: a repeated id, then a NaN.
    const held = pick(2);
    await expect(index.upsert([held[0]!, held[0]!], vectorsOf(2))).rejects.toThrow(DuplicateIdError);
    const bad = vectorsOf(2);
    bad[dim + 1] = Number.NaN;
    await expect(index.upsert([held[1]!, nextId++], bad)).rejects.toThrow(InvalidVectorError);

    // Compaction drops every tombstone (removed and replaced rows), as the twin's does.
    const dropped = await twin.compact();
    expect(dropped).toBeGreaterThan(0);
    expect(await index.compact()).toBe(dropped);
    expect(await index.compact()).toBe(0);
    await check('compact');

    // Writes after a compaction (rows keep counting, slots restart).
    {
      const ids = Array.from({ length: 80 }, () => nextId++);
      const vectors = vectorsOf(80);
      await index.add(ids, vectors);
      await twin.add(ids, vectors);
      take(ids, vectors);
      const out = pick(40);
      expect(index.removeSync(out)).toBe(40);
      expect(twin.removeSync(out)).toBe(40);
      for (const id of out) {
        live.delete(id);
        removed.add(id);
      }
      const up = [...pick(30), nextId++];
      const upVectors = vectorsOf(up.length);
      await index.upsert(up, upVectors);
      await twin.upsert(up, upVectors);
      take(up, upVectors);
    }
    await check('writes after a compaction');

    // Searches in flight while removes and a compaction run: none returns an id removed
    // before it started, and the final state matches.
    {
      const out = pick(100);
      await index.remove(out);
      await twin.remove(out);
      for (const id of out) {
        live.delete(id);
        removed.add(id);
      }
      const searches: Promise<SearchResult>[] = [];
      for (let i = 0; i < 8; i++) searches.push(s.search(index, i % 2 === 0 ? queriesFew : queriesMany, 10));
      const compacting = index.compact();
      for (let i = 0; i < 8; i++) searches.push(s.search(index, queriesMany, 10));
      expect(await compacting).toBe(await twin.compact());
      for (const result of await Promise.all(searches)) {
        for (const id of result.ids) if (id !== NO_ID) expect(out.includes(id), `in-flight search returned ${id}`).toBe(false);
      }
    }
    await check('compaction under searches');

    // Nearly empty, then empty: results pad.
    {
      const out = pick(live.size - 5);
      await index.remove(out);
      await twin.remove(out);
      for (const id of out) {
        live.delete(id);
        removed.add(id);
      }
    }
    await check('removing all but 5');
    await index.compact();
    await twin.compact();
    await check('compacting to 5');
    const last = pick(5);
    await index.remove(last);
    await twin.remove(last);
    for (const id of last) {
      live.delete(id);
      removed.add(id);
    }
    await check('removing everything');
  } finally {
    index.dispose();
    twin.dispose();
  }
  return comparisons;
}
