import { mkdtemp, readFile, rm, truncate, writeFile, appendFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { FlatIndex } from '../lib/index.js';
import { initTower } from '../lib/model/compose.js';
import { FeatureEncoder, type FeatureSpec } from '../lib/model/features.js';
import { GraphBuilder, attr } from '../lib/model/onnx/graph.js';
import { buildTowerModel, towerForward, type TowerDefinition } from '../lib/model/onnx/tower.js';
import { writeModelPackage } from '../lib/model/package.js';
import { TwoTowerModel } from '../lib/model/two-tower.js';
import { embedCorpus } from '../lib/serve/embed-corpus.js';

const QUERY_FEATURES: FeatureSpec[] = [
  { kind: 'text', name: 'q', field: 'text', maxLength: 12, ngrams: 2, buckets: 5000 },
  { kind: 'categorical', name: 'country', field: 'country', vocabulary: ['de', 'fr', 'us'] },
];
const ITEM_FEATURES: FeatureSpec[] = [
  { kind: 'text', name: 'title', field: 'title', maxLength: 16, buckets: 5000 },
  { kind: 'dense', name: 'numbers', fields: ['price', 'rating'], mean: [50, 3], std: [20, 1] },
];
const DIM = 16;
const WORDS = 'red green blue small large wooden steel chair table lamp desk sofa shelf bed rug clock'.split(' ');

function item(i: number): { id: number; title: string; price: number; rating: number } {
  const words = [WORDS[i % WORDS.length]!, WORDS[(i * 7 + 3) % WORDS.length]!, WORDS[(i * 13 + 5) % WORDS.length]!];
  return { id: 1000 + i, title: `${words.join(' ')} #${i}`, price: (i * 37) % 100, rating: 1 + (i % 5) };
}

let dir: string;
let query: TowerDefinition;
let itemTower: TowerDefinition;

async function freshPackage(name: string, seed: number): Promise<string> {
  const target = path.join(dir, name);
  const q = initTower({ name: 'query', features: QUERY_FEATURES, embeddingDim: 12, hidden: [24], outputDim: DIM, tasks: ['click'], layerNorm: true, normalize: true, seed });
  const it = initTower({ name: 'item', features: ITEM_FEATURES, embeddingDim: 12, hidden: [24], outputDim: DIM, tasks: ['click'], normalize: true, seed: seed + 1 });
  await writeModelPackage(target, {
    name,
    dim: DIM,
    metric: 'ip',
    tasks: ['click'],
    query: { features: QUERY_FEATURES, onnx: buildTowerModel(q) },
    item: { features: ITEM_FEATURES, onnx: buildTowerModel(it) },
  });
  if (name === 'main') {
    query = q;
    itemTower = it;
  }
  return target;
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'ebrix-model-'));
  await freshPackage('main', 7);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function reference(def: TowerDefinition, features: FeatureSpec[], records: unknown[], output = 'embedding'): Float32Array {
  const encoded = new FeatureEncoder(features).encode(records);
  return towerForward(def, encoded)[output]!.data;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

describe('TwoTowerModel', () => {
  it('embeds queries and items like the TypeScript forward pass, per task', async () => {
    await using model = await TwoTowerModel.load(path.join(dir, 'main'), { threads: 1 });
    expect(model.version).toMatch(/^\d{8}T\d{6}Z-[0-9a-f]{8}$/);
    expect(model.dim).toBe(DIM);
    const queries = [
      { text: 'red wooden chair', country: 'de' },
      { text: '', country: 'xx' },
      { text: 'Crème brûlée LAMP lamp', country: 'us' },
    ];
    const q = await model.embedQueries(queries);
    expect(q.length).toBe(3 * DIM);
    expect(maxAbsDiff(q, reference(query, QUERY_FEATURES, queries))).toBeLessThan(1e-5);
    const click = await model.embedQueries(queries, { task: 'click' });
    expect(maxAbsDiff(click, reference(query, QUERY_FEATURES, queries, 'click'))).toBeLessThan(1e-5);
    const items = [item(1), item(2)];
    expect(maxAbsDiff(await model.embedItems(items), reference(itemTower, ITEM_FEATURES, items))).toBeLessThan(1e-5);
    await expect(model.embedQueries(queries, { task: 'nope' })).rejects.toMatchObject({ code: 'EBRIX_INVALID_SPEC' });
    await expect(model.embedItems([{ title: 'x', price: Number.NaN, rating: 1 }])).rejects.toMatchObject({ code: 'EBRIX_INVALID_RECORD' });
    expect((await model.embedQueries([])).length).toBe(0);
  });

  it('batches concurrent single queries, each caller getting its own row or error', async () => {
    await using model = await TwoTowerModel.load(path.join(dir, 'main'), { batching: { maxBatchSize: 8, maxDelayMs: 5 } });
    const records = Array.from({ length: 30 }, (_, i) => ({ text: `${WORDS[i % WORDS.length]} ${i}`, country: 'fr' }));
    const batch = await model.embedQueries(records);
    const calls = records.map((r) => model.embedQuery(r));
    const bad = model.embedQuery({ text: 42, country: 'fr' });
    const rows = await Promise.all(calls);
    await expect(bad).rejects.toMatchObject({ code: 'EBRIX_INVALID_RECORD' });
    rows.forEach((row, i) => expect(maxAbsDiff(row, batch.subarray(i * DIM, (i + 1) * DIM))).toBeLessThan(1e-6));
    const stats = model.batchingStats()['']!;
    expect(stats.calls).toBe(31);
    expect(Math.max(...Object.keys(stats.batchSizes).map(Number))).toBeLessThanOrEqual(8);
    expect(stats.batches).toBeLessThan(31);
  });

  it('detects tampering: a changed tower file, a broken or unsupported manifest', async () => {
    const target = await freshPackage('tampered', 11);
    const onnxPath = path.join(target, 'item.onnx');
    const bytes = await readFile(onnxPath);
    bytes[bytes.length - 5] = bytes[bytes.length - 5]! ^ 0x01;
    await writeFile(onnxPath, bytes);
    await expect(TwoTowerModel.load(target)).rejects.toMatchObject({ code: 'EBRIX_CORRUPT_MODEL', message: expect.stringContaining('item.onnx') });

    const manifestPath = path.join(await freshPackage('manifest', 12), 'manifest.json');
    const manifest = JSON.parse(await readFile(manifestPath, 'utf8'));
    await writeFile(manifestPath, JSON.stringify({ ...manifest, formatVersion: 99 }));
    await expect(TwoTowerModel.load(path.dirname(manifestPath))).rejects.toThrow(/formatVersion 99/);
    await writeFile(manifestPath, '{ not json');
    await expect(TwoTowerModel.load(path.dirname(manifestPath))).rejects.toMatchObject({ code: 'EBRIX_CORRUPT_MODEL' });
    await writeFile(manifestPath, JSON.stringify({ ...manifest, files: { ...manifest.files, '../x.onnx': manifest.files['item.onnx'] } }));
    await expect(TwoTowerModel.load(path.dirname(manifestPath))).rejects.toThrow(/plain name/);
    await expect(TwoTowerModel.load(path.join(dir, 'missing'))).rejects.toMatchObject({ code: 'EBRIX_CORRUPT_MODEL' });
  });

  it('runs towers exported elsewhere, with int64 index inputs, from a hand-written manifest', async () => {
    // A tower like a PyTorch export: int64 ids, one Gather, no ebrix tower definition.
    const features: FeatureSpec[] = [{ kind: 'categorical', name: 'country', field: 'country', vocabulary: ['de', 'fr', 'us'] }];
    const table = Float32Array.from({ length: 4 * DIM }, (_, i) => (i % 7) - 3);
    const graph = (indexType: 'int64' | 'float32'): Uint8Array => {
      const g = new GraphBuilder('foreign');
      g.input('country', indexType, ['batch']);
      g.initializer('table', table, [4, DIM]);
      g.output('embedding', 'float32', ['batch', DIM]);
      g.node('Gather', ['table', indexType === 'int64' ? 'country' : g.node('Cast', ['country'], undefined, { to: attr.int(7) })], 'embedding');
      return g.toBytes({ producerName: 'elsewhere', producerVersion: '1' });
    };
    const target = path.join(dir, 'foreign');
    await writeModelPackage(target, { name: 'foreign', dim: DIM, metric: 'ip', query: { features, onnx: graph('int64') }, item: { features, onnx: graph('int64') } });
    await using model = await TwoTowerModel.load(target);
    const out = await model.embedQueries([{ country: 'us' }, { country: 'zz' }]);
    expect(Array.from(out.subarray(0, DIM))).toEqual(Array.from(table.subarray(3 * DIM, 4 * DIM)));
    expect(Array.from(out.subarray(DIM))).toEqual(Array.from(table.subarray(0, DIM)));

    const mismatched = path.join(dir, 'mismatched');
    await writeModelPackage(mismatched, { name: 'm', dim: DIM, metric: 'ip', query: { features, onnx: graph('float32') }, item: { features, onnx: graph('int64') } });
    await expect(TwoTowerModel.load(mismatched)).rejects.toThrow(/input country is float32 but its feature encodes int32/);
  });

  it('runs inference off the event loop', async () => {
    await using model = await TwoTowerModel.load(path.join(dir, 'main'), { threads: 1 });
    const records = Array.from({ length: 16384 }, (_, i) => item(i));
    // Encoding runs on this thread before the first await; only the gaps after the first
    // tick that follows it count: those are spent in the tower.
    let firstTick = -1;
    let last = 0;
    let longestGap = 0;
    let ticks = 0;
    let settled = false;
    const timer = setInterval(() => {
      if (settled) return;
      const t = performance.now();
      if (firstTick < 0) firstTick = t;
      else longestGap = Math.max(longestGap, t - last);
      last = t;
      ticks++;
    }, 1);
    const vectors = await model.embedItems(records);
    const settledAt = performance.now();
    settled = true;
    clearInterval(timer);
    expect(vectors.length).toBe(16384 * DIM);
    expect(firstTick).toBeGreaterThan(0);
    const towerTime = settledAt - firstTick;
    // Run on this thread, the tower would be one gap as long as towerTime.
    expect(ticks).toBeGreaterThanOrEqual(3);
    expect(longestGap).toBeLessThan(Math.max(towerTime * 0.5, 1));
  });

  it('fails clearly once disposed', async () => {
    const model = await TwoTowerModel.load(path.join(dir, 'main'));
    await model.dispose();
    await model.dispose();
    await expect(model.embedQueries([{ text: 'a', country: 'de' }])).rejects.toMatchObject({ code: 'EBRIX_DISPOSED' });
    await expect(model.embedQuery({ text: 'a', country: 'de' })).rejects.toMatchObject({ code: 'EBRIX_DISPOSED' });
    await expect(TwoTowerModel.load(path.join(dir, 'main'), { batching: { maxBatchSize: 0 } })).rejects.toMatchObject({
      code: 'EBRIX_INVALID_ARGUMENT',
    });
    const big = await TwoTowerModel.load(path.join(dir, 'main'), { batching: { maxBatchSize: 8192 } });
    expect((await big.embedQuery({ text: 'a', country: 'de' })).length).toBe(DIM);
    await big.dispose();
  });
});

describe('embedCorpus', () => {
  const N = 1234;
  const items = (): Generator<ReturnType<typeof item>> =>
    (function* () {
      for (let i = 0; i < N; i++) yield item(i);
    })();

  it('embeds a stream into an index, binding the model version', async () => {
    await using model = await TwoTowerModel.load(path.join(dir, 'main'));
    using index = new FlatIndex({ dim: DIM });
    const progress: number[] = [];
    const result = await embedCorpus({ model, items: items(), index, batchSize: 100, onProgress: (p) => progress.push(p.done) });
    expect(result).toMatchObject({ items: N, resumed: 0, embedded: N });
    expect(result.itemsPerSecond).toBeGreaterThan(0);
    expect(progress.at(-1)).toBe(N);
    expect(index.size).toBe(N);
    expect(index.modelVersion).toBe(model.version);
    // An item's own embedding finds that item.
    const probe = [item(5), item(777)];
    const hits = await index.search(await model.embedItems(probe), 1);
    expect(hits.ids[0]).toBe(1005n);
    expect(hits.ids[1]).toBe(1777n);

    await using other = await TwoTowerModel.load(await freshPackage('other', 21));
    await expect(embedCorpus({ model: other, items: [item(1)], index })).rejects.toMatchObject({ code: 'EBRIX_VERSION_MISMATCH' });
  });

  it('resumes after a crash with no duplicates and no gaps', async () => {
    await using model = await TwoTowerModel.load(path.join(dir, 'main'));
    const checkpoint = path.join(dir, 'corpus.ckpt');
    // First run: the source fails after 730 items (7 full batches committed).
    const crashing = (function* () {
      for (let i = 0; i < N; i++) {
        if (i === 730) throw new Error('simulated crash');
        yield item(i);
      }
    })();
    const first = new FlatIndex({ dim: DIM });
    await expect(embedCorpus({ model, items: crashing, index: first, batchSize: 100, checkpoint })).rejects.toThrow('simulated crash');
    first.dispose();
    // The process also died mid-append: a torn batch record at the end of the log.
    const sizeBefore = (await stat(checkpoint)).size;
    await appendFile(checkpoint, Buffer.from([100, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9]));
    expect((await stat(checkpoint)).size).toBeGreaterThan(sizeBefore);

    using resumed = new FlatIndex({ dim: DIM });
    const result = await embedCorpus({ model, items: items(), index: resumed, batchSize: 100, checkpoint });
    expect(result).toMatchObject({ items: N, resumed: 700, embedded: N - 700 });
    expect(resumed.size).toBe(N);

    using direct = new FlatIndex({ dim: DIM });
    await embedCorpus({ model, items: items(), index: direct, batchSize: 100 });
    const queries = await model.embedQueries([{ text: 'red chair', country: 'de' }, { text: 'steel lamp', country: 'us' }]);
    const a = await resumed.search(queries, 50);
    const b = await direct.search(queries, 50);
    expect(Array.from(a.ids)).toEqual(Array.from(b.ids));
    // Every id once: a full-size search returns N distinct ids.
    const all = await resumed.search(queries.subarray(0, DIM), N);
    expect(new Set(all.ids).size).toBe(N);

    // The log now holds the whole corpus; a third run resumes everything and embeds nothing.
    using again = new FlatIndex({ dim: DIM });
    expect(await embedCorpus({ model, items: items(), index: again, batchSize: 100, checkpoint })).toMatchObject({ resumed: N, embedded: 0 });

    // A source that changed order cannot resume against this log.
    using reordered = new FlatIndex({ dim: DIM });
    const backwards = (function* () {
      for (let i = N - 1; i >= 0; i--) yield item(i);
    })();
    await expect(embedCorpus({ model, items: backwards, index: reordered, batchSize: 100, checkpoint })).rejects.toThrow(
      /same items in the same order/,
    );

    // A flipped byte inside the log: that record fails its CRC, it and everything after it are
    // embedded again, and the result is still complete and duplicate-free.
    const log = await readFile(checkpoint);
    const headerBytes = Math.ceil((16 + Buffer.byteLength(model.version)) / 8) * 8;
    const inThirdRecordPayload = headerBytes + 2 * (8 + 100 * (8 + DIM * 4)) + 8 + 20;
    log[inThirdRecordPayload] = log[inThirdRecordPayload]! ^ 0xff;
    await writeFile(checkpoint, log);
    using repaired = new FlatIndex({ dim: DIM });
    const third = await embedCorpus({ model, items: items(), index: repaired, batchSize: 100, checkpoint });
    expect(third).toMatchObject({ items: N, resumed: 200, embedded: N - 200 });
    expect(Array.from((await repaired.search(queries, 50)).ids)).toEqual(Array.from(b.ids));

    await using other = await TwoTowerModel.load(await freshPackage('other2', 31));
    using fresh = new FlatIndex({ dim: DIM });
    await expect(embedCorpus({ model: other, items: items(), index: fresh, checkpoint })).rejects.toMatchObject({ code: 'EBRIX_VERSION_MISMATCH' });
    await truncate(checkpoint, 5);
    await expect(embedCorpus({ model, items: items(), index: fresh, checkpoint })).rejects.toMatchObject({ code: 'EBRIX_CORRUPT_FILE' });
  });
});
