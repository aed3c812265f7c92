import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { DisposedError, InvalidRecordError, InvalidSpecError, OverloadedError } from '../lib/errors.js';
import { FeatureEncoder, fitVocabulary } from '../lib/model/features.js';
import { towerForward } from '../lib/model/onnx/tower.js';
import { TwoTowerModel } from '../lib/model/two-tower.js';
import { seededUniform } from '../lib/random.js';
import { evaluate, type EvaluationPair } from '../lib/train/evaluate.js';
import { readJsonl, writeJsonl } from '../lib/train/jsonl.js';
import type { ModelSpec } from '../lib/train/spec.js';
import { Trainer, type Example } from '../lib/train/trainer.js';

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ebrix-train-'));
  dirs.push(dir);
  return dir;
}
afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

// A tiny catalogue: each item has a name id, three tag words out of 60, a price. A query names
// two of its item's tags plus a noise word; a click example pairs a query with its item
// (label 1) or a random one (label 0).
const ITEMS = 120;
const random = seededUniform(5);
const word = (i: number): string => `w${i}`;
const items = Array.from({ length: ITEMS }, (_, i) => {
  const tags = [Math.floor(random() * 60), Math.floor(random() * 60), Math.floor(random() * 60)];
  return { name: `item${i}`, tags: tags.map(word).join(' '), price: 10 + (i % 7) * 3, _tags: tags };
});
const records = items.map(({ name, tags, price }) => ({ name, tags, price }));
function queryFor(i: number, r: () => number): Record<string, unknown> {
  const t = items[i]!._tags;
  const a = Math.floor(r() * 3);
  return { text: `${word(t[a]!)} ${word(t[(a + 1) % 3]!)} ${word(Math.floor(r() * 60))} ${items[i]!.name}` };
}
function examples(count: number, seed: number, withClicks = true): Example[] {
  const r = seededUniform(seed);
  const out: Example[] = [];
  for (let n = 0; n < count; n++) {
    const i = Math.floor(r() * ITEMS);
    out.push({ task: 'search', query: queryFor(i, r), item: records[i]!, itemKey: i });
    if (withClicks && n % 2 === 0) {
      const j = r() < 0.5 ? i : Math.floor(r() * ITEMS);
      out.push({ task: 'click', query: queryFor(i, r), item: records[j]!, itemKey: j, label: i === j ? 1 : 0 });
    }
  }
  return out;
}
const vocabulary = fitVocabulary([...Array.from({ length: 60 }, (_, i) => word(i)), ...items.map((i) => i.name)]);

function spec(overrides: Partial<ModelSpec> = {}): ModelSpec {
  return {
    name: 'tiny',
    dim: 16,
    seed: 3,
    query: {
      features: [{ kind: 'text', name: 'text', field: 'text', maxLength: 6, vocabulary }],
      embeddingDim: 16,
      hidden: [32],
      layerNorm: true,
      tables: { text: 'words' },
    },
    item: {
      features: [
        { kind: 'categorical', name: 'name', field: 'name', vocabulary: items.map((i) => i.name) },
        { kind: 'text', name: 'tags', field: 'tags', maxLength: 3, vocabulary },
        { kind: 'dense', name: 'price', fields: ['price'], mean: [19], std: [6] },
      ],
      embeddingDim: 16,
      hidden: [32, 32],
      residual: true,
      tables: { tags: 'words' },
    },
    tasks: [
      { name: 'search', kind: 'retrieval', temperature: 0.1 },
      { name: 'click', kind: 'binary', temperature: 0.2, weight: 0.5 },
    ],
    ...overrides,
  };
}

const pairs = (count: number, seed: number): EvaluationPair[] => {
  const r = seededUniform(seed);
  return Array.from({ length: count }, () => {
    const i = Math.floor(r() * ITEMS);
    return { task: 'search', query: queryFor(i, r), item: i };
  });
};

function sameParameters(a: Trainer, b: Trainer): boolean {
  const pa = a.towers();
  const pb = b.towers();
  for (const role of ['query', 'item'] as const) {
    for (const [name, t] of Object.entries(pa[role].tables)) if (!Buffer.from(t.data.buffer).equals(Buffer.from(pb[role].tables[name]!.data.buffer))) return false;
    for (const [i, l] of pa[role].layers.entries()) {
      if (!Buffer.from(l.weight.buffer).equals(Buffer.from(pb[role].layers[i]!.weight.buffer))) return false;
    }
    for (const [i, h] of pa[role].heads.entries()) {
      if (!Buffer.from(h.weight.buffer).equals(Buffer.from(pb[role].heads[i]!.weight.buffer))) return false;
      if (h.gate && !Buffer.from(h.gate.weight.buffer).equals(Buffer.from(pb[role].heads[i]!.gate!.weight.buffer))) return false;
    }
    for (const [e, expert] of (pa[role].experts ?? []).entries()) {
      for (const [i, l] of expert.entries()) {
        if (!Buffer.from(l.weight.buffer).equals(Buffer.from(pb[role].experts![e]![i]!.weight.buffer))) return false;
      }
    }
  }
  return true;
}

/** The tiny spec with a mixture of experts in both towers and an item head (so a gate) per task. */
function mmoeSpec(): ModelSpec {
  const base = spec();
  return {
    ...base,
    query: { ...base.query, mmoe: { experts: 3, expertLayers: [24] } },
    item: { ...base.item, hidden: [32], mmoe: { experts: 2, expertLayers: [32, 24], activation: 'none' } },
    tasks: base.tasks.map((t) => ({ ...t, itemHead: t.name })),
  };
}

describe('model specs', () => {
  it('compile shared tables once and name heads after tasks', () => {
    using trainer = new Trainer(spec());
    const { query, item } = trainer.model.towers;
    expect(query.tables.words).toBe(item.tables.words);
    expect(query.heads.map((h) => h.output)).toEqual(['search', 'click']);
    expect(item.heads.map((h) => h.output)).toEqual(['embedding']);
  });

  it('reject unknown features, mismatched tables, no tasks and bad task options', () => {
    const bad: Array<[string, ModelSpec]> = [
      ['unknown feature', spec({ item: { ...spec().item, tables: { nope: 'words' } } })],
      ['dimension mismatch', spec({ item: { ...spec().item, embeddingDim: 8 } })],
      ['zero tasks', spec({ tasks: [] })],
      ['duplicate task', spec({ tasks: [{ name: 'a', kind: 'retrieval' }, { name: 'a', kind: 'binary' }] })],
      ['bad kind', spec({ tasks: [{ name: 'a', kind: 'ranking' as 'binary' }] })],
      ['logQ on binary', spec({ tasks: [{ name: 'a', kind: 'binary', logQ: true }] })],
      ['bad temperature', spec({ tasks: [{ name: 'a', kind: 'retrieval', temperature: 0 }] })],
      ['shared table, other ids', spec({ item: { ...spec().item, tables: { tags: 'words', name: 'words' } } })],
    ];
    for (const [what, s] of bad) expect(() => new Trainer(s), what).toThrow(InvalidSpecError);
  });

  it('compile MMoE into experts and one gate per query head and per item head', () => {
    using trainer = new Trainer(mmoeSpec());
    const { query, item } = trainer.model.towers;
    expect(query.experts?.length).toBe(3);
    expect(query.experts![0]!.map((l) => [l.inDim, l.outDim, l.activation])).toEqual([[32, 24, 'relu']]);
    expect(query.heads.map((h) => [h.output, h.inDim, h.gate?.weight.length])).toEqual([['search', 24, 3 * 32], ['click', 24, 3 * 32]]);
    expect(item.experts?.length).toBe(2);
    expect(item.experts![1]!.map((l) => [l.inDim, l.outDim, l.activation])).toEqual([[32, 32, 'none'], [32, 24, 'none']]);
    expect(item.heads.map((h) => [h.output, h.gate?.bias.length])).toEqual([['search', 2], ['click', 2]]);
    // Tasks sharing an item head share its gate.
    using shared = new Trainer({ ...mmoeSpec(), tasks: spec().tasks });
    expect(shared.model.towers.item.heads.map((h) => h.output)).toEqual(['embedding']);
    expect(shared.model.towers.item.heads[0]!.gate?.weight.length).toBe(2 * 32);
  });

  it('reject bad MMoE options with InvalidSpecError naming them', () => {
    const withMmoe = (mmoe: unknown): ModelSpec => ({ ...spec(), query: { ...spec().query, mmoe: mmoe as ModelSpec['query']['mmoe'] } });
    const bad: Array<[unknown, RegExp]> = [
      [{ experts: 1, expertLayers: [8] }, /an integer from 2 to 64 for the query tower's mmoe.experts but received 1/],
      [{ experts: 65, expertLayers: [8] }, /mmoe.experts/],
      [{ experts: 2.5, expertLayers: [8] }, /mmoe.experts/],
      [{ experts: 2 }, /a non-empty array of widths for the query tower's mmoe.expertLayers/],
      [{ experts: 2, expertLayers: [] }, /mmoe.expertLayers/],
      [{ experts: 2, expertLayers: [8, 0] }, /mmoe.expertLayers\[1\]/],
      [{ experts: 2, expertLayers: [8], activation: 'tanh' }, /'relu' or 'none' for the query tower's mmoe.activation/],
      [{ experts: 2, expertLayers: [8], gates: 'per-task' }, /only experts, expertLayers, activation/],
      ['yes', /an object for the query tower's mmoe/],
    ];
    for (const [mmoe, message] of bad) {
      expect(() => new Trainer(withMmoe(mmoe)), JSON.stringify(mmoe)).toThrow(InvalidSpecError);
      expect(() => new Trainer(withMmoe(mmoe))).toThrow(message);
    }
  });
});

describe('Trainer', () => {
  it('learns a tiny two-task catalogue to near-perfect recall, and the exported towers match the native forward pass', async () => {
    using trainer = new Trainer(spec(), { learningRate: 5e-3, sparseLearningRate: 2e-2 });
    const before = await evaluate(trainer, pairs(300, 11), { corpus: records, k: 10 });
    const fit = await trainer.fit(examples(3000, 1), { epochs: 6, batchSize: 64, extraNegatives: 32 });
    expect(fit.steps).toBe(Math.ceil(4500 / 64) * 6);
    const after = await evaluate(trainer, pairs(300, 11), { corpus: records, k: 10 });
    console.info(
      `tiny catalogue: recall@1 ${before.recallAt[1]!.toFixed(3)} → ${after.recallAt[1]!.toFixed(3)}, recall@10 ${after.recallAt[10]!.toFixed(3)}, ` +
        `${Math.round(fit.examplesPerSecond)} examples/s, losses ${JSON.stringify(fit.finalTaskLoss)}`,
    );
    expect(after.recallAt[10]).toBeGreaterThanOrEqual(0.98);
    expect(after.recallAt[1]).toBeGreaterThan(0.9);
    expect(before.recallAt[10]).toBeLessThan(0.5);

    const dir = await tempDir();
    const manifest = await trainer.export(dir);
    expect(manifest.tasks).toEqual(['search', 'click']);
    await using model = await TwoTowerModel.load(dir);
    const queries = pairs(40, 12).map((p) => p.query);
    for (const task of ['search', 'click']) {
      const viaOnnx = await model.embedQueries(queries, { task });
      const native = await trainer.embed('query', queries, task);
      let worst = 0;
      for (let i = 0; i < native.length; i++) worst = Math.max(worst, Math.abs(native[i]! - viaOnnx[i]!));
      expect(worst, task).toBeLessThan(1e-4);
    }
    const itemsOnnx = await model.embedItems(records);
    const itemsNative = await trainer.embed('item', records);
    let worst = 0;
    for (let i = 0; i < itemsNative.length; i++) worst = Math.max(worst, Math.abs(itemsNative[i]! - itemsOnnx[i]!));
    expect(worst).toBeLessThan(1e-4);
    // The TypeScript reference forward pass (what the ONNX writer is tested against) agrees too.
    const towers = trainer.towers();
    const reference = towerForward(towers.item, new FeatureEncoder(spec().item.features).encode(records)).embedding!.data;
    worst = 0;
    for (let i = 0; i < itemsNative.length; i++) worst = Math.max(worst, Math.abs(itemsNative[i]! - reference[i]!));
    expect(worst).toBeLessThan(1e-4);
    const onnxEval = await evaluate(model, pairs(300, 11), { corpus: records, k: 10 });
    expect(onnxEval.recallAt[10]).toBeCloseTo(after.recallAt[10]!, 2);
  });

  it('trains MMoE towers, and ONNX Runtime and towerForward reproduce the native forward pass of every gate', async () => {
    using trainer = new Trainer(mmoeSpec(), { learningRate: 5e-3, sparseLearningRate: 2e-2 });
    const initialGate = trainer.towers().query.heads[0]!.gate!.weight.slice();
    await trainer.fit(examples(3000, 1), { epochs: 4, batchSize: 64, extraNegatives: 32 });
    const after = await evaluate(trainer, pairs(300, 11), { corpus: records, k: 10 });
    expect(after.recallAt[10]).toBeGreaterThanOrEqual(0.95);
    const towers = trainer.towers();
    expect(towers.query.heads[0]!.gate!.weight).not.toEqual(initialGate);

    const dir = await tempDir();
    await trainer.export(dir);
    await using model = await TwoTowerModel.load(dir);
    const queries = pairs(40, 12).map((p) => p.query);
    const queryFeatures = new FeatureEncoder(spec().query.features).encode(queries);
    const itemFeatures = new FeatureEncoder(spec().item.features).encode(records);
    for (const task of ['search', 'click']) {
      const native = await trainer.embed('query', queries, task);
      const viaOnnx = await model.embedQueries(queries, { task });
      const reference = towerForward(towers.query, queryFeatures)[task]!.data;
      const itemsNative = await trainer.embed('item', records, task);
      const itemsOnnx = await model.embedItems(records, { task });
      const itemsReference = towerForward(towers.item, itemFeatures)[task]!.data;
      let worst = 0;
      for (let i = 0; i < native.length; i++) worst = Math.max(worst, Math.abs(native[i]! - viaOnnx[i]!), Math.abs(native[i]! - reference[i]!));
      for (let i = 0; i < itemsNative.length; i++) {
        worst = Math.max(worst, Math.abs(itemsNative[i]! - itemsOnnx[i]!), Math.abs(itemsNative[i]! - itemsReference[i]!));
      }
      expect(worst, task).toBeLessThan(1e-4);
    }
  });

  it('resumes an MMoE model from a checkpoint to the parameters of an uninterrupted run', async () => {
    const data = examples(500, 13);
    const options = { epochs: 2, batchSize: 64, extraNegatives: 8 };
    using whole = new Trainer(mmoeSpec());
    await whole.fit(data, options);
    const dir = await tempDir();
    {
      using first = new Trainer(mmoeSpec());
      await first.fit(data, { ...options, maxSteps: 17, checkpoint: { dir, everySteps: 5 } });
    }
    using resumed = new Trainer(mmoeSpec());
    await resumed.fit(data, { ...options, checkpoint: { dir, everySteps: 5 }, resume: true });
    expect(sameParameters(whole, resumed)).toBe(true);
    using fresh = new Trainer(mmoeSpec());
    expect(sameParameters(whole, fresh)).toBe(false);
  });

  it('is deterministic under a seed, whatever the thread count', async () => {
    const data = examples(600, 2);
    using one = new Trainer(spec(), { threads: 1 });
    using two = new Trainer(spec(), { threads: 2 });
    await one.fit(data, { epochs: 2, batchSize: 50, extraNegatives: 16 });
    await two.fit(data, { epochs: 2, batchSize: 50, extraNegatives: 16 });
    expect(sameParameters(one, two)).toBe(true);
    using other = new Trainer(spec({ seed: 4 }), { threads: 2 });
    await other.fit(data, { epochs: 2, batchSize: 50, extraNegatives: 16 });
    expect(sameParameters(one, other)).toBe(false);
  });

  it('resumes from a checkpoint to the parameters of an uninterrupted run', async () => {
    const data = examples(800, 3);
    const options = { epochs: 3, batchSize: 64, extraNegatives: 8, validation: { examples: examples(100, 9), everySteps: 7 } };
    using whole = new Trainer(spec());
    const full = await whole.fit(data, options);
    const dir = await tempDir();
    {
      using first = new Trainer(spec());
      // Stops mid-epoch (19 steps per epoch), as a crash would after the checkpoint at step 25.
      await first.fit(data, { ...options, maxSteps: 27, checkpoint: { dir, everySteps: 5, keep: 2 } });
    }
    expect((await readdir(dir)).filter((n) => n.startsWith('step-')).sort()).toEqual(['step-000000020', 'step-000000025']);
    using resumed = new Trainer(spec());
    const rest = await resumed.fit(data, { ...options, checkpoint: { dir, everySteps: 5 }, resume: true });
    expect(rest.steps).toBe(full.steps);
    expect(rest.bestValidation?.step).toBe(full.bestValidation?.step);
    expect(sameParameters(whole, resumed)).toBe(true);
  });

  it('trains the same from a JSON Lines stream as from the same examples in memory', async () => {
    const data = examples(400, 4);
    const file = path.join(await tempDir(), 'examples.jsonl');
    await writeJsonl(file, data);
    using fromMemory = new Trainer(spec());
    using fromFile = new Trainer(spec());
    await fromMemory.fit(data, { epochs: 2, batchSize: 32, shuffle: false, extraNegatives: 8, corpus: records, corpusKey: (r) => Number(String(r.name).slice(4)) });
    await fromFile.fit(() => readJsonl<Example>(file), { epochs: 2, batchSize: 32, extraNegatives: 8, corpus: records, corpusKey: (r) => Number(String(r.name).slice(4)) });
    expect(sameParameters(fromMemory, fromFile)).toBe(true);
  });

  it('stops early when the validation metric stops improving, keeping the best parameters', async () => {
    using trainer = new Trainer(spec(), { learningRate: 0.05, sparseLearningRate: 0.2 });
    let calls = 0;
    const fit = await trainer.fit(examples(600, 5), {
      epochs: 50,
      batchSize: 64,
      validation: {
        examples: examples(60, 6),
        patience: 2,
        // A metric that peaks at the third validation.
        metric: async () => {
          calls++;
          return -Math.abs(calls - 3);
        },
      },
    });
    expect(fit.stoppedEarly).toBe(true);
    expect(calls).toBe(5);
    expect(fit.bestValidation?.metric === 0).toBe(true); // -|3 - 3| is -0
    expect(fit.bestValidation?.step).toBe(Math.ceil(900 / 64) * 3);
  });

  it('learns task weights under uncertainty weighting', async () => {
    using trainer = new Trainer(spec({ taskWeighting: 'uncertainty' }));
    await trainer.fit(examples(600, 7), { epochs: 2, batchSize: 64 });
    const logVariance = trainer.taskLogVariance();
    expect(Object.keys(logVariance)).toEqual(['search', 'click']);
    expect(Object.values(logVariance).every((v) => Number.isFinite(v) && v !== 0)).toBe(true);
  });

  it('rejects bad examples, concurrent fits and use after dispose with typed errors', async () => {
    const trainer = new Trainer(spec());
    await expect(trainer.fit([{ task: 'nope', query: { text: 'a' }, item: records[0]! }])).rejects.toThrow(InvalidRecordError);
    await expect(trainer.fit([{ task: 'click', query: { text: 'a' }, item: records[0]!, label: 2 }])).rejects.toThrow(InvalidRecordError);
    await expect(trainer.fit([{ task: 'search', query: { text: 'a' }, item: { name: 'item1' } }])).rejects.toThrow(InvalidRecordError);
    const running = trainer.fit(examples(200, 8), { batchSize: 16 });
    await expect(trainer.fit(examples(10, 8))).rejects.toThrow(OverloadedError);
    await running;
    trainer.dispose();
    await expect(trainer.fit(examples(10, 8))).rejects.toThrow(DisposedError);
    expect(() => trainer.towers()).toThrow(DisposedError);
  });

  it('refuses a corrupt checkpoint', async () => {
    const dir = await tempDir();
    {
      using trainer = new Trainer(spec());
      await trainer.fit(examples(100, 10), { batchSize: 32, checkpoint: { dir, everySteps: 2 } });
    }
    const latest = (await readdir(dir)).filter((n) => n.startsWith('step-')).sort().at(-1)!;
    await writeFile(path.join(dir, latest, 'native.bin'), new Uint8Array(100));
    using trainer = new Trainer(spec());
    await expect(trainer.fit(examples(100, 10), { batchSize: 32, checkpoint: { dir, everySteps: 2 }, resume: true })).rejects.toMatchObject({
      code: 'EBRIX_CORRUPT_FILE',
    });
  });
});
