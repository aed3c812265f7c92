/**
 * Index files with their attributes, for every index type: save → open (mapped and read) →
 * the same ids, rows, vectors, search results and filtered results; damaged files (a flipped
 * byte in every section, truncations) are EBRIX_CORRUPT_FILE; HnswIndex files in IndexStore;
 * HnswIndex.compact.
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

import {
  CorruptFileError,
  FlatIndex,
  HnswIndex,
  IndexStore,
  IoError,
  IvfPqIndex,
  indexFileKind,
  openIndex,
  type AttributeRecord,
  type AttributeSchema,
  type Filter,
  type SearchResult,
  type StoredIndex,
} from '../lib/index.js';
import { clustered } from './datasets.js';
import { makeIds, randomVectors } from './helpers.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dir = mkdtempSync(path.join(tmpdir(), 'ebrix-durable-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const schema: AttributeSchema = {
  level: 'uint',
  price: 'number',
  remote: 'bool',
  city: 'category',
  skills: { type: 'category', multi: true },
};

function recordsFor(n: number): AttributeRecord[] {
  const cities = ['paris', 'oslo', 'lima'];
  const skills = ['go', 'rust', 'c++', 'ts'];
  return Array.from({ length: n }, (_, i) => ({
    level: i % 9 === 0 ? undefined : i % 11 === 0 ? 2n ** 40n + BigInt(i) : i % 7,
    price: i % 13 === 0 ? null : (i % 100) / 4,
    remote: i % 3 === 0,
    city: i % 5 === 0 ? undefined : cities[i % 3],
    skills: skills.filter((_, s) => (i >> s) % 3 === 1),
  }));
}

const filters: Filter[] = [
  { level: { gte: 3 } },
  { city: 'oslo', remote: true },
  { or: [{ skills: { hasAny: ['rust', 'ts'] } }, { price: { lt: 5 } }] },
  { not: { level: { exists: true } } },
  { level: { gte: 2n ** 40n } },
];

type AnyIndex = FlatIndex | IvfPqIndex | HnswIndex;

async function search(index: AnyIndex, q: Float32Array, k: number, filter?: Filter): Promise<SearchResult> {
  const options = filter === undefined ? {} : { filter };
  if (index instanceof HnswIndex) return index.search(q, k, { ...options, expansion: 80 });
  if (index instanceof IvfPqIndex) return index.search(q, k, { ...options, nprobe: 8 });
  return index.search(q, k, options);
}

/** Searches both and expects the same ids and scores, unfiltered and for every filter. */
async function expectSameAnswers(a: AnyIndex, b: AnyIndex, queries: Float32Array): Promise<void> {
  for (const filter of [undefined, ...filters]) {
    const x = await search(a, queries, 8, filter);
    const y = await search(b, queries, 8, filter);
    expect(Array.from(y.ids), `filter ${filters.indexOf(filter!)}`).toEqual(Array.from(x.ids));
    expect(Array.from(y.scores)).toEqual(Array.from(x.scores));
  }
}

const dim = 16;
const n = 1500;
const data = clustered(n, dim, 12, 5);
const ids = makeIds(n);
const queries = randomVectors(12, dim, 6);
const gone = ids.filter((_, i) => i % 4 === 1);

async function build(kind: 'flat' | 'ivfpq' | 'hnsw'): Promise<AnyIndex> {
  let index: AnyIndex;
  if (kind === 'flat') index = new FlatIndex({ dim, metric: 'l2', attributes: schema, modelVersion: 'm1' });
  else if (kind === 'hnsw') index = new HnswIndex({ dim, metric: 'l2', threads: 1, attributes: schema, modelVersion: 'm1' });
  else {
    index = new IvfPqIndex({ dim, metric: 'l2', nlist: 8, m: 4, refine: 'f32', attributes: schema, modelVersion: 'm1' });
    await index.train(data);
  }
  await index.add(ids, data, { attributes: recordsFor(n) });
  expect(await index.remove(gone)).toBe(gone.length);
  return index;
}

/** The section table of an index file (native/core/index_file.h). */
function sections(bytes: Buffer): { kind: number; offset: number; bytes: number }[] {
  const count = bytes.readUInt32LE(16);
  return Array.from({ length: count }, (_, i) => ({
    kind: bytes.readUInt32LE(128 + 32 * i),
    offset: Number(bytes.readBigUInt64LE(128 + 32 * i + 8)),
    bytes: Number(bytes.readBigUInt64LE(128 + 32 * i + 16)),
  }));
}

async function openAll(file: string): Promise<StoredIndex[]> {
  return [await openIndex(file, { mmap: true }), await openIndex(file, { mmap: false })];
}

describe('index files keep their attributes', () => {
  for (const kind of ['flat', 'ivfpq', 'hnsw'] as const) {
    it(`${kind}: save → open (mapped and read) gives the same ids, vectors, results and filtered results`, async () => {
      using index = await build(kind);
      const file = path.join(dir, `${kind}.ebrix`);
      await index.save(file);
      expect(await indexFileKind(file)).toBe(kind);
      for (const opened of await openAll(file)) {
        using o = opened;
        expect(o.constructor).toBe(index.constructor);
        expect(o.size).toBe(index.size);
        expect(o.modelVersion).toBe('m1');
        expect(o.attributes?.schema).toEqual(index.attributes?.schema);
        for (const id of ids.slice(0, 200)) {
          expect(o.has(id)).toBe(index.has(id));
          if (index.has(id)) expect(o.get(id)).toEqual(index.get(id));
        }
        await expectSameAnswers(index, o as AnyIndex, queries);
        // The opened index keeps working: adds with records, removes, filters.
        await o.add([10_000_000n], data.subarray(0, dim), { attributes: [{ level: 99, city: 'oslo' }] } as never);
        const hit = await search(o as AnyIndex, data.subarray(0, dim), 3, { level: 99 });
        expect(hit.ids[0]).toBe(10_000_000n);
        expect(await o.remove([10_000_000n, 123_456_789n])).toBe(1);
      }
    });
  }

  it('files without attributes (older files, or an index made without them) open with none', async () => {
    // The fuzz corpus: files of format version 1 written before attributes were stored, and
    // (named *-attrs) files written with them.
    const corpus = path.join(root, 'native/core/tests/fuzz/corpus');
    for (const name of readdirSync(corpus)) {
      using opened = await openIndex(path.join(corpus, name));
      expect(opened.size).toBeGreaterThan(0);
      if (name.includes('-attrs')) {
        expect(opened.attributes?.schema.map((c) => c.name)).toEqual(['level', 'price', 'remote', 'city', 'skills']);
        const hits = await search(opened as AnyIndex, randomVectors(1, opened.dim, 1), 3, { remote: true });
        expect(hits.ids[0]! % 2n).toBe(1n); // record i (id i + 1) is remote when i is even
        continue;
      }
      expect(opened.attributes).toBeUndefined();
      await expect(search(opened as AnyIndex, randomVectors(1, opened.dim, 1), 2, { level: 1 })).rejects.toThrow(
        /options.filter needs an index made with options.attributes/,
      );
    }
    using plain = new HnswIndex({ dim: 4 });
    await plain.add([1, 2], randomVectors(2, 4, 1));
    const file = path.join(dir, 'plain.ebrix');
    await plain.save(file);
    using o = await HnswIndex.open(file);
    expect(o.attributes).toBeUndefined();
    expect(o.size).toBe(2);
  });

  it('flipped bytes in every section and truncations are EBRIX_CORRUPT_FILE', async () => {
    const bad = path.join(dir, 'bad.ebrix');
    for (const kind of ['flat', 'ivfpq', 'hnsw'] as const) {
      using index = await build(kind);
      const file = path.join(dir, `damaged-${kind}.ebrix`);
      await index.save(file);
      const bytes = readFileSync(file);
      const table = sections(bytes);
      expect(table.some((s) => s.kind === 64)).toBe(true); // the attributes section
      for (const s of table) {
        for (const at of [0, Math.floor(s.bytes / 2), s.bytes - 1]) {
          const flipped = Buffer.from(bytes);
          flipped[s.offset + at]! ^= 0x21;
          writeFileSync(bad, flipped);
          await expect(openIndex(bad, { mmap: false }), `${kind} section ${s.kind} byte ${at}`).rejects.toThrow(CorruptFileError);
          if (kind !== 'ivfpq') {
            await expect(
              kind === 'flat' ? FlatIndex.open(bad, { verify: true }) : HnswIndex.open(bad, { verify: true }),
            ).rejects.toThrow(CorruptFileError);
          }
        }
      }
      for (let cut = 0; cut < bytes.length; cut += Math.max(1, Math.floor(bytes.length / 97))) {
        writeFileSync(bad, bytes.subarray(0, cut));
        await expect(openIndex(bad, { mmap: true }), `${kind} cut at ${cut}`).rejects.toThrow(CorruptFileError);
      }
    }
  });

  it('a failed HNSW save leaves the previous file whole', async () => {
    using first = await build('hnsw');
    const file = path.join(dir, 'kept-hnsw.ebrix');
    await first.save(file);
    const before = readFileSync(file);
    using second = new HnswIndex({ dim, attributes: schema });
    await second.add([1], data.subarray(0, dim), { attributes: [{ level: 1 }] });
    await expect(second.save(path.join(dir, 'no-such-dir', 'x.ebrix'))).rejects.toThrow(IoError);
    await expect(second.save(dir)).rejects.toThrow(IoError);
    expect(readFileSync(file).equals(before)).toBe(true);
    expect(readdirSync(dir).some((e) => e.includes('.tmp-'))).toBe(false);
  });
});

describe('HnswIndex in an IndexStore', () => {
  it('publishes, filters, swaps between HNSW and flat versions, and reopens at CURRENT', async () => {
    const storeDir = path.join(dir, 'store');
    using hnsw = await build('hnsw');
    using flat = await build('flat');
    {
      using store = await IndexStore.open(storeDir);
      const v1 = await store.publish(hnsw);
      expect(v1.type).toBe('hnsw');
      expect(store.index()).toBeInstanceOf(HnswIndex);
      for (const filter of filters) {
        const want = await search(hnsw, queries, 8, filter);
        const got = await store.search(queries, 8, { filter, expansion: 80 });
        expect(Array.from(got.ids)).toEqual(Array.from(want.ids));
      }
      const v2 = await store.publish(flat);
      expect(v2.type).toBe('flat');
      expect(store.index()).toBeInstanceOf(FlatIndex);
      const running = store.search(queries, 8, { filter: filters[0]! });
      await store.swap(1);
      expect(Array.from((await running).ids)).toEqual(Array.from((await search(flat, queries, 8, filters[0])).ids));
      expect(store.index()).toBeInstanceOf(HnswIndex);
    }
    using reopened = await IndexStore.open(storeDir);
    expect(reopened.current()?.type).toBe('hnsw');
    const got = await reopened.search(queries, 8, { filter: filters[2]!, expansion: 80 });
    expect(Array.from(got.ids)).toEqual(Array.from((await search(hnsw, queries, 8, filters[2])).ids));
  });
});

describe('HnswIndex.compact', () => {
  it('drops removed nodes; ids, rows, vectors and filters are unchanged, and searches in flight finish', async () => {
    using index = await build('hnsw');
    const hnsw = index as HnswIndex;
    const before = hnsw.memoryUsage().bytes;
    const rowsBefore = await hnsw.search(queries, 8, { filter: filters[1]!, filterStrategy: 'scan' });
    const inFlight = Array.from({ length: 20 }, () => hnsw.search(queries, 8, { filter: filters[2]!, filterStrategy: 'scan' }));
    expect(await hnsw.compact()).toBe(gone.length);
    const settled = await Promise.all(inFlight);
    for (const r of settled) expect(Array.from(r.ids)).toEqual(Array.from(settled[0]!.ids));
    expect(await hnsw.compact()).toBe(0);
    expect(hnsw.memoryUsage().bytes).toBeLessThan(before);
    expect(hnsw.size).toBe(n - gone.length);
    for (const [i, id] of ids.entries()) {
      if (i % 4 === 1) expect(hnsw.has(id)).toBe(false);
      else if (i % 50 === 0) expect(hnsw.get(id)).toEqual(data.subarray(i * dim, (i + 1) * dim));
    }
    // A scan is exact: the same rows pass the filter after compaction.
    const rowsAfter = await hnsw.search(queries, 8, { filter: filters[1]!, filterStrategy: 'scan' });
    expect(Array.from(rowsAfter.ids)).toEqual(Array.from(rowsBefore.ids));
    // The graph still finds each live vector itself.
    let found = 0;
    for (let i = 0; i < 200; i += 2) {
      const hit = await hnsw.search(data.subarray(i * dim, (i + 1) * dim), 1, { expansion: 64 });
      if (i % 4 !== 1 && hit.ids[0] === ids[i]) found++;
    }
    expect(found).toBeGreaterThanOrEqual(90);
  });
});
