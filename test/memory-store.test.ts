import { appendFile, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

import { MemoryStore, TwoTowerModel } from '../lib/index.js';
import { catalogPackage, textPackage } from './serve-fixtures.js';

let dir: string;
let model: TwoTowerModel;
let otherModel: TwoTowerModel;
let catalogModel: TwoTowerModel;

const FACTS = [
  'the cat sleeps on the warm windowsill',
  'my flight to lisbon leaves on friday morning',
  'the quarterly report is due next tuesday',
  'alice prefers green tea without sugar',
  'the wifi password is written on the fridge',
  'bob is allergic to peanuts and shellfish',
  'the garden needs watering every other day',
  'our team meeting moved to thursday afternoon',
];

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'ebrix-memory-'));
  model = await TwoTowerModel.load(await textPackage(dir, 'text', 5), { threads: 1 });
  otherModel = await TwoTowerModel.load(await textPackage(dir, 'text-other', 6), { threads: 1 });
  catalogModel = await TwoTowerModel.load(await catalogPackage(dir, 'catalog', 7), { threads: 1 });
});
afterAll(async () => {
  await Promise.all([model.dispose(), otherModel.dispose(), catalogModel.dispose()]);
  await rm(dir, { recursive: true, force: true });
});

async function filesUnder(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(root, { withFileTypes: true })) {
    const full = path.join(root, entry.name);
    if (entry.isDirectory()) out.push(...(await filesUnder(full)));
    else out.push(full);
  }
  return out;
}

async function diskContains(root: string, text: string): Promise<boolean> {
  for (const file of await filesUnder(root)) if ((await readFile(file)).includes(text)) return true;
  return false;
}

describe('MemoryStore', () => {
  it('recalls by meaning, and everything survives close and reopen', async () => {
    const root = path.join(dir, 'persist');
    const store = await MemoryStore.open(root, { model, metadata: { topic: 'category', priority: 'uint' } });
    const ids: number[] = [];
    for (const [i, fact] of FACTS.entries()) {
      ids.push(await store.remember('user-1', fact, { topic: i % 2 === 0 ? 'home' : 'work', priority: i, note: { free: 'form' } }));
    }
    await store.remember('user-2', 'user two likes jazz records');
    expect(ids).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(store.namespaces()).toEqual(['user-1', 'user-2']);
    expect(store.size('user-1')).toBe(8);

    const recalled = await store.recall('user-1', FACTS[3]!, { k: 3 });
    expect(recalled).toHaveLength(3);
    expect(recalled[0]).toMatchObject({ id: 4, text: FACTS[3], metadata: { topic: 'work', priority: 3, note: { free: 'form' } } });
    expect(recalled[0]!.score).toBeCloseTo(1, 4);
    expect(Date.parse(recalled[0]!.createdAt)).toBeGreaterThan(Date.now() - 60_000);
    expect(recalled[1]!.score).toBeLessThanOrEqual(recalled[0]!.score);

    const filtered = await store.recall('user-1', FACTS[3]!, { k: 10, filter: { topic: 'home', priority: { gte: 4 } } });
    expect(filtered.map((m) => m.id).sort()).toEqual([5, 7]);
    const before = await store.recall('user-1', 'tea', { k: 8 });
    await store.close();
    await store.close();
    await expect(store.recall('user-1', 'tea')).rejects.toMatchObject({ code: 'EBRIX_DISPOSED' });

    // Reopened without the schema: the saved one applies.
    const again = await MemoryStore.open(root, { model });
    expect(again.namespaces()).toEqual(['user-1', 'user-2']);
    expect(again.metadata).toEqual({ topic: 'category', priority: 'uint' });
    const after = await again.recall('user-1', 'tea', { k: 8 });
    expect(after.map((m) => [m.id, m.text, m.createdAt])).toEqual(before.map((m) => [m.id, m.text, m.createdAt]));
    after.forEach((m, i) => expect(m.score).toBeCloseTo(before[i]!.score, 5));
    expect((await again.recall('user-1', 'x', { filter: { topic: 'home', priority: { gte: 4 } } })).map((m) => m.id).sort()).toEqual([5, 7]);
    // Ids keep counting where they stopped.
    expect(await again.remember('user-1', 'a ninth fact')).toBe(9);
    expect(again.get('user-1', 9)).toMatchObject({ text: 'a ninth fact', metadata: {} });
    await again.close();
  });

  it('keeps every acknowledged write across a crash, dropping a torn last log line', async () => {
    const root = path.join(dir, 'crash');
    const crashed = await MemoryStore.open(root, { model, snapshotEvery: 3 });
    for (const fact of FACTS.slice(0, 5)) await crashed.remember('notes', fact);
    // No close: the process "dies" here. Three lines were snapshotted, two are only in the log.
    const log = path.join(root, 'namespaces', 'notes', 'log.jsonl');
    expect((await readFile(log, 'utf8')).trim().split('\n')).toHaveLength(2);
    await appendFile(log, '{"seq":6,"op":"remember","id":6,"te');
    const sizeWithTear = (await stat(log)).size;

    const restored = await MemoryStore.open(root, { model, snapshotEvery: 3 });
    expect(restored.size('notes')).toBe(5);
    expect((await stat(log)).size).toBeLessThan(sizeWithTear);
    expect((await restored.recall('notes', FACTS[4]!, { k: 1 }))[0]).toMatchObject({ id: 5, text: FACTS[4] });
    expect(await restored.remember('notes', 'after the crash')).toBe(6);
    await restored.close();
    const third = await MemoryStore.open(root, { model });
    expect(third.size('notes')).toBe(6);
    expect(third.get('notes', 6)?.text).toBe('after the crash');
    await third.close();
  });

  it('forgets what it is told to, on disk too, and the forgetting persists', async () => {
    const root = path.join(dir, 'forget');
    const store = await MemoryStore.open(root, { model });
    for (const fact of FACTS) await store.remember('n', fact, { secret: fact.length });
    await store.forget('n', 5);
    expect(store.get('n', 5)).toBeUndefined();
    expect(store.size('n')).toBe(7);
    const recalled = await store.recall('n', FACTS[4]!, { k: 8 });
    expect(recalled.map((m) => m.id)).not.toContain(5);
    expect(recalled).toHaveLength(7);
    // The text left the disk when forget resolved (snapshot and log alike).
    expect(await diskContains(root, 'wifi password')).toBe(false);
    expect(await diskContains(root, FACTS[0]!)).toBe(true);
    await expect(store.forget('n', 5)).rejects.toMatchObject({ code: 'EBRIX_UNKNOWN_ID' });
    await expect(store.forget('n', 99)).rejects.toMatchObject({ code: 'EBRIX_UNKNOWN_ID' });
    await expect(store.forget('missing', 1)).rejects.toMatchObject({ code: 'EBRIX_UNKNOWN_ID' });

    // Forgetting a quarter rebuilds the index from the rest's stored vectors (no text is
    // embedded again); recall is unchanged for them.
    const expected = (await store.recall('n', 'tuesday report', { k: 8 })).filter((m) => m.id !== 1 && m.id !== 2);
    const embedItems = vi.spyOn(model, 'embedItems');
    await store.forget('n', 1);
    await store.forget('n', 2);
    expect(embedItems).not.toHaveBeenCalled();
    embedItems.mockRestore();
    const rebuilt = await store.recall('n', 'tuesday report', { k: 8 });
    expect(rebuilt.map((m) => m.id)).toEqual(expected.map((m) => m.id));
    rebuilt.forEach((m, i) => expect(m.score).toBeCloseTo(expected[i]!.score, 5));
    await store.close();

    const reopened = await MemoryStore.open(root, { model });
    expect(reopened.size('n')).toBe(5);
    expect((await reopened.recall('n', 'anything', { k: 10 })).map((m) => m.id).sort()).toEqual([3, 4, 6, 7, 8]);
    expect(await reopened.remember('n', 'new after forgetting')).toBe(9);
    await reopened.close();
  });

  it('keeps namespaces apart, and drops one with its files', async () => {
    const root = path.join(dir, 'isolation');
    const store = await MemoryStore.open(root, { model });
    await store.remember('alice', 'alice keeps her keys in the blue bowl');
    await store.remember('bob', 'bob keeps his keys in the blue bowl');
    const a = await store.recall('alice', 'where are the keys', { k: 10 });
    expect(a.map((m) => m.text)).toEqual(['alice keeps her keys in the blue bowl']);
    expect(await store.recall('carol', 'keys')).toEqual([]);
    expect(await store.dropNamespace('bob')).toBe(true);
    expect(await store.dropNamespace('bob')).toBe(false);
    expect(store.namespaces()).toEqual(['alice']);
    expect(await store.recall('bob', 'keys')).toEqual([]);
    expect(await readdir(path.join(root, 'namespaces'))).toEqual(['alice']);
    // A dropped name can be used again, from id 1.
    expect(await store.remember('bob', 'a new bob')).toBe(1);
    await store.close();
    const reopened = await MemoryStore.open(root, { model });
    expect(reopened.namespaces()).toEqual(['alice', 'bob']);
    expect((await reopened.recall('bob', 'keys')).map((m) => m.text)).toEqual(['a new bob']);
    await reopened.close();
  });

  it('serialises concurrent writes to one namespace', async () => {
    const store = await MemoryStore.open(path.join(dir, 'concurrent'), { model, sync: false, snapshotEvery: 7 });
    const ids = await Promise.all(Array.from({ length: 40 }, (_, i) => store.remember('busy', `memory number ${i}`)));
    expect([...ids].sort((x, y) => x - y)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    await Promise.all([store.forget('busy', 3), store.forget('busy', 4), store.recall('busy', 'memory', { k: 40 })]);
    expect(store.size('busy')).toBe(38);
    await store.close();
    const reopened = await MemoryStore.open(path.join(dir, 'concurrent'), { model });
    expect(reopened.size('busy')).toBe(38);
    await reopened.close();
  });

  it('rejects bad input with typed errors and changes nothing', async () => {
    const root = path.join(dir, 'bad');
    const store = await MemoryStore.open(root, { model, metadata: { level: 'uint' } });
    for (const name of ['', '../escape', 'a/b', '.hidden', 'x'.repeat(129), 'semi;colon', 42]) {
      await expect(store.remember(name as string, 'text')).rejects.toMatchObject({
        code: 'EBRIX_INVALID_ARGUMENT',
        message: expect.stringMatching(/^Expected a namespace name .* for namespace but received/),
      });
      await expect(store.recall(name as string, 'text')).rejects.toMatchObject({ code: 'EBRIX_INVALID_ARGUMENT' });
    }
    await expect(store.remember('ok', '   ')).rejects.toThrow(/non-blank string/);
    await expect(store.remember('ok', 5 as unknown as string)).rejects.toMatchObject({ code: 'EBRIX_INVALID_ARGUMENT' });
    await expect(store.remember('ok', 'x', [] as unknown as Record<string, unknown>)).rejects.toThrow(/plain object for metadata/);
    await expect(store.remember('ok', 'x', { n: 1n })).rejects.toThrow(/JSON-serialisable/);
    await expect(store.remember('ok', 'x', { level: -1 })).rejects.toMatchObject({ code: 'EBRIX_INVALID_ARGUMENT' });
    expect(store.namespaces()).toEqual([]);
    await expect(store.recall('ok', 'x', { k: 0 })).rejects.toThrow(/options\.k/);
    await expect(store.recall('ok', 'x', { filter: { nope: 1 } })).resolves.toEqual([]);
    await store.remember('ok', 'x', { level: 1 });
    await expect(store.recall('ok', 'x', { filter: { nope: 1 } })).rejects.toMatchObject({ code: 'EBRIX_INVALID_ARGUMENT' });
    await expect(store.forget('ok', 0)).rejects.toThrow(/memory id/);
    await store.close();

    await expect(MemoryStore.open(root, { model: otherModel })).rejects.toMatchObject({ code: 'EBRIX_VERSION_MISMATCH' });
    await expect(MemoryStore.open(root, { model, metadata: { level: 'number' } })).rejects.toThrow(/metadata schema the store was created with/);
    await expect(MemoryStore.open(path.join(dir, 'catalog-store'), { model: catalogModel })).rejects.toMatchObject({
      code: 'EBRIX_INVALID_SPEC',
      message: expect.stringContaining('"title"'),
    });
    const mapped = await MemoryStore.open(path.join(dir, 'mapped'), {
      model: catalogModel,
      itemRecord: (text, metadata) => ({ title: text, price: Number(metadata.price ?? 0), rating: 3 }),
    });
    expect(await mapped.remember('shop', 'red chair', { price: 20 })).toBe(1);
    expect((await mapped.recall('shop', 'chair'))[0]!.text).toBe('red chair');
    await mapped.close();
    const noSchema = await MemoryStore.open(path.join(dir, 'no-schema'), { model });
    await noSchema.remember('a', 'b');
    await expect(noSchema.recall('a', 'b', { filter: {} })).rejects.toThrow(/metadata schema/);
    await noSchema.close();
  });
});
