import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import {
  CorruptFileError,
  FlatIndex,
  IndexStore,
  InvalidArgumentError,
  IoError,
  IvfPqIndex,
  openIndex,
  type SearchResult,
} from '../lib/index.js';
import { clustered } from './datasets.js';
import { makeIds, randomVectors } from './helpers.js';

const root = mkdtempSync(path.join(tmpdir(), 'ebrix-store-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A flat l2 index of n random vectors whose ids start at `base` (so a hit names its version). */
async function versionIndex(dim: number, n: number, base: bigint, model: string): Promise<FlatIndex> {
  const index = new FlatIndex({ dim, metric: 'l2', modelVersion: model });
  const data = randomVectors(n, dim, Number(base));
  await index.add(Array.from({ length: n }, (_, i) => base + BigInt(i)), data);
  return index;
}

describe('IndexStore', () => {
  it('publishes numbered versions, keeps `retain` of them, and reopens at CURRENT', async () => {
    const dir = path.join(root, 'basic');
    {
      using store = await IndexStore.open(dir, { retain: 2 });
      expect(store.current()).toBeUndefined();
      await expect(store.search(randomVectors(1, 8, 1), 1)).rejects.toThrow(InvalidArgumentError);
      for (let v = 1; v <= 4; v++) {
        using index = await versionIndex(8, 200, BigInt(v) * 1000n, `model-${v}`);
        const info = await store.publish(index);
        expect(info.version).toBe(v);
        expect(info.modelVersion).toBe(`model-${v}`);
        expect(info.size).toBe(200);
      }
      expect((await store.versions()).map((v) => v.version)).toEqual([3, 4]);
      expect(store.current()?.version).toBe(4);
      const hit = await store.search(randomVectors(1, 8, 1), 1);
      expect(hit.row(0).ids[0]! / 1000n).toBe(4n);
      // activate: false writes without switching.
      using next = await versionIndex(8, 10, 5000n, 'model-5');
      await store.publish(next, { activate: false });
      expect(store.current()?.version).toBe(4);
    }
    mkdirSync(path.join(dir, 'v000009.tmp-123-456')); // a publish that crashed
    using reopened = await IndexStore.open(dir, { retain: 2 });
    expect(reopened.current()?.version).toBe(4);
    expect(reopened.index()?.modelVersion).toBe('model-4');
    expect(readdirSync(dir).some((e) => e.includes('.tmp-'))).toBe(false);
  });

  it('swaps and rolls back while searches run: each search finishes on the version it started on', async () => {
    const dir = path.join(root, 'swap');
    using store = await IndexStore.open(dir, { retain: 5 });
    const dim = 64;
    using a = await versionIndex(dim, 40_000, 1_000_000n, 'model-a');
    using b = await versionIndex(dim, 40_000, 2_000_000n, 'model-b');
    await store.publish(a);
    const first = store.index()!;
    await store.publish(b, { activate: false });
    const queries = randomVectors(32, dim, 9);
    const searches: Array<Promise<SearchResult>> = [];
    for (let i = 0; i < 12; i++) searches.push(store.search(queries, 5));
    await store.swap(2);
    for (let i = 0; i < 12; i++) searches.push(store.search(queries, 5));
    const results = await Promise.all(searches);
    const versionsSeen = results.map((r) => r.row(0).ids[0]! / 1_000_000n);
    expect(versionsSeen.slice(0, 12).every((v) => v === 1n)).toBe(true);
    expect(versionsSeen.slice(12).every((v) => v === 2n)).toBe(true);
    expect(first.disposed).toBe(true); // retired once its searches ended
    expect((await store.rollback()).version).toBe(1);
    expect((await store.search(queries, 1)).row(0).ids[0]! / 1_000_000n).toBe(1n);
    await expect(store.rollback()).rejects.toThrow(InvalidArgumentError);
    await expect(store.swap(42)).rejects.toThrow(InvalidArgumentError);
    store.close();
    expect(() => store.current()).toThrow('disposed');
  });

  it('opens index files by type and reports damaged stores', async () => {
    const dir = path.join(root, 'types');
    mkdirSync(dir);
    using flat = await versionIndex(4, 30, 0n, 'm');
    await flat.save(path.join(dir, 'flat.ebrix'));
    using ivf = new IvfPqIndex({ dim: 8, nlist: 4, m: 2 });
    const data = clustered(600, 8, 4, 3);
    await ivf.train(data);
    await ivf.add(makeIds(600), data);
    await ivf.save(path.join(dir, 'ivf.ebrix'));
    using f = await openIndex(path.join(dir, 'flat.ebrix'));
    expect(f).toBeInstanceOf(FlatIndex);
    using v = await openIndex(path.join(dir, 'ivf.ebrix'));
    expect(v).toBeInstanceOf(IvfPqIndex);
    expect(v.size).toBe(600);
    writeFileSync(path.join(dir, 'junk.ebrix'), 'x'.repeat(64));
    await expect(openIndex(path.join(dir, 'junk.ebrix'))).rejects.toThrow(CorruptFileError);
    await expect(openIndex(path.join(dir, 'missing.ebrix'))).rejects.toThrow(IoError);

    const store = path.join(root, 'damaged');
    mkdirSync(store);
    writeFileSync(path.join(store, 'CURRENT'), 'seven\n');
    await expect(IndexStore.open(store)).rejects.toThrow(CorruptFileError);
  });
});
