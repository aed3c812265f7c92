/**
 * The native trainer through the addon (NativeTrainer in lib/native.ts): its forward pass
 * against the TypeScript reference (towerForward) on towers made by initTower, gradients
 * against finite differences through gradients() / setParameters(), errors, and checkpoints.
 */
import { describe, expect, it } from 'vitest';

import {
  CorruptFileError,
  DimensionMismatchError,
  DisposedError,
  InvalidArgumentError,
  InvalidSpecError,
  OverloadedError,
  awaitNative,
  callNative,
} from '../lib/errors.js';
import { initTower } from '../lib/model/compose.js';
import type { FeatureSpec } from '../lib/model/features.js';
import { towerForward, towerGraphInputs, type DenseLayer, type TensorData, type TowerDefinition } from '../lib/model/onnx/tower.js';
import {
  native,
  type NativeTensors,
  type NativeTrainerBatch,
  type NativeTrainerConfig,
  type NativeTrainerLayer,
  type NativeTrainerParameters,
  type NativeTrainerTower,
} from '../lib/native.js';
import { rng } from './helpers.js';

const TEXT_BUCKETS = 40;

const queryFeatures: FeatureSpec[] = [
  { kind: 'text', name: 'query', field: 'query', maxLength: 5, buckets: TEXT_BUCKETS },
  { kind: 'categorical', name: 'lang', field: 'lang', vocabulary: ['en', 'fr'] },
  { kind: 'dense', name: 'signals', fields: ['a', 'b'], mean: [0, 0], std: [1, 1] },
];
const itemFeatures: FeatureSpec[] = [
  { kind: 'text', name: 'title', field: 'title', maxLength: 4, buckets: TEXT_BUCKETS },
  { kind: 'categorical', name: 'category', field: 'category', vocabulary: ['a', 'b', 'c'] },
];

interface Model {
  query: TowerDefinition;
  item: TowerDefinition;
  config: NativeTrainerConfig;
}

/**
 * Two towers from initTower sharing the text table ('text'), as one trainer config. The
 * definitions' tables are the config's arrays, so towerForward sees the same numbers.
 */
function model(options: { sum?: boolean; mmoe?: boolean } = {}): Model {
  const query = initTower({
    name: 'query',
    features: queryFeatures,
    embeddingDim: 8,
    hidden: [12],
    outputDim: 6,
    layerNorm: true,
    normalize: true,
    tasks: ['click'],
    tables: { query: 'text' },
    ...(options.mmoe ? { experts: { count: 3, layers: [7] } } : {}),
    seed: 3,
  });
  const item = initTower({
    name: 'item',
    features: itemFeatures,
    embeddingDim: 8,
    hidden: [16],
    outputDim: 6,
    residual: true,
    normalize: true,
    tasks: ['click'],
    tables: { title: 'text' },
    pooling: options.sum ? 'sum' : 'mean',
    ...(options.mmoe ? { experts: { count: 2, layers: [16, 5], activation: 'none' as const } } : {}),
    seed: 4,
  });
  // initTower leaves row 0 (padding) zero; give every row values so that each one is tested.
  const next = rng(11);
  for (const def of [query, item]) {
    for (const table of Object.values(def.tables)) {
      for (let i = 0; i < table.dim; i++) table.data[i] = (next() * 2 - 1) * 0.3;
    }
    // Gates start at zero (an even mixture); uneven ones test the softmax.
    for (const head of def.heads) if (head.gate) for (let i = 0; i < head.gate.weight.length; i++) head.gate.weight[i] = (next() * 2 - 1) * 1.5;
  }
  const tables: NativeTrainerConfig['tables'] = [];
  const tableIndex = new Map<string, number>();
  for (const def of [query, item]) {
    for (const [name, table] of Object.entries(def.tables)) {
      const known = tableIndex.get(name);
      if (known !== undefined) {
        def.tables[name] = { rows: tables[known]!.rows, dim: tables[known]!.dim, data: tables[known]!.data };
        continue;
      }
      tableIndex.set(name, tables.length);
      tables.push(table);
    }
  }
  const layer = (l: DenseLayer): NativeTrainerLayer => ({
    inDim: l.inDim,
    outDim: l.outDim,
    weight: l.weight,
    bias: l.bias,
    relu: l.activation === 'relu',
    layerNorm: l.layerNorm ? { gamma: l.layerNorm.gamma, beta: l.layerNorm.beta, epsilon: l.layerNorm.epsilon ?? 1e-5 } : null,
    residual: l.residual ?? false,
  });
  const tower = (def: TowerDefinition): NativeTrainerTower => ({
    inputs: def.inputs.map((input) => {
      switch (input.kind) {
        case 'ids':
          return { kind: 'ids', table: tableIndex.get(input.table)! };
        case 'bag': {
          const feature = [...queryFeatures, ...itemFeatures].find((f) => `${f.name}.ids` === input.ids);
          const length = feature?.kind === 'text' ? feature.maxLength : 0;
          return { kind: 'bag', table: tableIndex.get(input.table)!, length, pooling: input.pooling };
        }
        case 'dense':
          return { kind: 'dense', width: input.width };
      }
    }),
    layers: def.layers.map(layer),
    ...(def.experts ? { experts: def.experts.map((e) => e.map(layer)), gates: def.heads.map((h) => h.gate!) } : {}),
    heads: def.heads.map((h) => ({ inDim: h.inDim, outDim: h.outDim, weight: h.weight, bias: h.bias, normalize: h.normalize })),
  });
  const config: NativeTrainerConfig = {
    tables,
    towers: [tower(query), tower(item)],
    tasks: [
      { kind: 'retrieval', queryHead: 0, itemHead: 0, weight: 1, temperature: 0.2, logQ: true, maskAccidentalHits: true },
      { kind: 'bce', queryHead: 1, itemHead: 1, weight: 0.5, temperature: 1, logQ: false, maskAccidentalHits: false },
    ],
    optimizer: {
      learningRate: 0.01,
      sparseLearningRate: 0.05,
      beta1: 0.9,
      beta2: 0.999,
      epsilon: 1e-8,
      sparse: 'adam',
      clipNorm: 0,
      weightDecay: 0,
    },
    uncertaintyWeighting: false,
    threads: 2,
  };
  return { query, item, config };
}

/** Random tensors for a tower, in graph-input order: the native list and towerForward's record. */
function tensors(def: TowerDefinition, rows: number, seed: number): { list: NativeTensors; feeds: Record<string, TensorData> } {
  const next = rng(seed);
  const list: NativeTensors = [];
  const feeds: Record<string, TensorData> = {};
  for (const input of towerGraphInputs(def)) {
    const dims = input.dims.map((d) => (d === 'batch' ? rows : typeof d === 'number' ? d : def.name === 'query' ? 5 : 4));
    const count = dims.reduce((a, d) => a * d, 1);
    let data: Int32Array | Float32Array;
    if (input.type === 'int32') {
      data = Int32Array.from({ length: count }, () => Math.floor(next() * (input.name.endsWith('.ids') ? TEXT_BUCKETS + 1 : 2)));
    } else if (input.name.endsWith('.mask')) {
      data = Float32Array.from({ length: count }, () => (next() < 0.25 ? 0 : 1));
    } else {
      data = Float32Array.from({ length: count }, () => next() * 2 - 1);
    }
    list.push(data);
    feeds[input.name] = { data, dims };
  }
  return { list, feeds };
}

function batch(m: Model, size: number, extra: number, seed: number): NativeTrainerBatch {
  const itemRows = size + extra;
  const next = rng(seed + 1000);
  return {
    size,
    query: tensors(m.query, size, seed).list,
    itemRows,
    item: tensors(m.item, itemRows, seed + 1).list,
    itemKey: Uint32Array.from({ length: itemRows }, (_, j) => j % 5),
    itemLogQ: Float32Array.from({ length: itemRows }, () => Math.log(0.05 + next() * 0.5)),
    task: Int32Array.from({ length: size }, (_, b) => (b % 3 === 2 ? 1 : 0)),
    label: Float32Array.from({ length: size }, (_, b) => (b % 2 === 0 ? 1 : 0)),
    weight: Float32Array.from({ length: size }, (_, b) => 0.5 + (b % 4) * 0.25),
  };
}

function newTrainer(config: NativeTrainerConfig) {
  const addon = native();
  return callNative(() => new addon.Trainer(config));
}

/** The entries of a parameters object, by path. */
function arrays(p: NativeTrainerParameters): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  p.tables.forEach((t, i) => out.set(`tables[${i}]`, t));
  p.towers.forEach((tower, r) => {
    const layers = (stack: NativeTrainerParameters['towers'][number]['layers'], prefix: string): void =>
      stack.forEach((l, i) => {
        for (const key of ['weight', 'bias', 'gamma', 'beta'] as const) {
          const v = l[key];
          if (v) out.set(`${prefix}[${i}].${key}`, v);
        }
      });
    layers(tower.layers, `towers[${r}].layers`);
    tower.experts.forEach((e, i) => layers(e, `towers[${r}].experts[${i}]`));
    tower.gates.forEach((g, i) => {
      out.set(`towers[${r}].gates[${i}].weight`, g.weight);
      out.set(`towers[${r}].gates[${i}].bias`, g.bias);
    });
    tower.heads.forEach((h, i) => {
      out.set(`towers[${r}].heads[${i}].weight`, h.weight);
      out.set(`towers[${r}].heads[${i}].bias`, h.bias);
    });
  });
  out.set('taskLogVariance', p.taskLogVariance);
  return out;
}

describe('native Trainer', () => {
  it('embeds exactly as the TypeScript forward pass (towerForward) on initTower towers, with and without experts', () => {
    for (const [sum, mmoe] of [[false, false], [true, false], [false, true]] as const) {
      const m = model({ sum, mmoe });
      const trainer = newTrainer(m.config);
      for (const [role, def] of [[0, m.query], [1, m.item]] as const) {
        const rows = 13;
        const { list, feeds } = tensors(def, rows, 50 + role);
        const expected = towerForward(def, feeds);
        def.heads.forEach((head, h) => {
          const got = trainer.embed(role, list, rows, h);
          const want = expected[head.output]!.data;
          expect(got.length).toBe(want.length);
          let worst = 0;
          for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!) / (1 + Math.abs(want[i]!)));
          expect(worst, `role ${role} head ${head.output}`).toBeLessThan(2e-6);
        });
      }
      trainer.dispose();
    }
  });

  it('embedAsync gives the embed result', async () => {
    const m = model();
    const trainer = newTrainer(m.config);
    const { list } = tensors(m.item, 9, 7);
    expect(await trainer.embedAsync(1, list, 9, 0)).toEqual(trainer.embed(1, list, 9, 0));
    trainer.dispose();
  });

  it.each([false, true])('gives gradients that match finite differences of its loss (experts: %s)', (mmoe) => {
    const m = model({ mmoe });
    const trainer = newTrainer(m.config);
    const b = batch(m, 8, 4, 21);
    const grads = trainer.gradients(b);
    expect(grads.taskExamples).toEqual(Float64Array.of(6, 2));
    expect(Number.isFinite(grads.loss)).toBe(true);
    const base = trainer.parameters();
    const analytic = arrays(grads);
    const next = rng(5);
    let checked = 0;
    const checkedArrays: string[] = [];
    for (const [name, values] of arrays(base)) {
      if (name === 'taskLogVariance') continue;
      const g = analytic.get(name)!;
      // A few entries with a clear gradient from each array (finite differences in float32 need them).
      const candidates = [...g.keys()].filter((i) => Math.abs(g[i]!) > 2e-3);
      if (candidates.length > 0) checkedArrays.push(name);
      for (let k = 0; k < Math.min(3, candidates.length); k++) {
        const i = candidates[Math.floor(next() * candidates.length)]!;
        const original = values[i]!;
        const central = (h: number): number => {
          values[i] = original + h;
          trainer.setParameters(base);
          const up = trainer.gradients(b).loss;
          values[i] = original - h;
          trainer.setParameters(base);
          const down = trainer.gradients(b).loss;
          values[i] = original;
          return (up - down) / (Math.fround(original + h) - Math.fround(original - h));
        };
        const tolerance = (numeric: number): number => 0.03 * Math.max(Math.abs(numeric), Math.abs(g[i]!)) + 2e-4;
        let numeric = central(3e-3);
        // A ReLU kink inside the step mixes two slopes: a step a third as long rarely straddles one.
        if (Math.abs(numeric - g[i]!) >= tolerance(numeric)) numeric = central(1e-3);
        expect(Math.abs(numeric - g[i]!), `${name}[${i}]: analytic ${g[i]} numeric ${numeric}`).toBeLessThan(tolerance(numeric));
        checked++;
      }
    }
    trainer.setParameters(base);
    expect(trainer.gradients(b).loss).toBe(grads.loss);
    expect(checked).toBeGreaterThan(mmoe ? 50 : 25);
    if (mmoe) {
      // Every gate and expert array was checked: 2 + 2 heads × (weight, bias); query experts
      // 3 × (weight, bias, gamma, beta), item experts 2 × 2 layers × (weight, bias).
      expect(checkedArrays.filter((n) => n.includes('.gates[')).length).toBe(8);
      expect(checkedArrays.filter((n) => n.includes('.experts[')).length).toBe(3 * 4 + 2 * 2 * 2);
    }
    trainer.dispose();
  });

  it('trains: the loss on a fixed batch falls, and steps count', async () => {
    const m = model();
    const trainer = newTrainer(m.config);
    const b = batch(m, 16, 8, 31);
    const first = await trainer.step(b);
    let last = first;
    for (let s = 0; s < 30; s++) last = await trainer.step(b);
    expect(first.step).toBe(1);
    expect(last.step).toBe(31);
    expect(trainer.steps()).toBe(31);
    expect(last.loss).toBeLessThan(first.loss * 0.7);
    expect(first.gradNorm).toBeGreaterThan(0);
    const evaluated = await trainer.evaluate(b);
    expect(Number.isNaN(evaluated.gradNorm)).toBe(true);
    expect(evaluated.step).toBe(31);
    trainer.dispose();
  });

  it('refuses a bad config with InvalidSpecError', () => {
    const bad = (edit: (c: NativeTrainerConfig) => void): void => {
      const m = model();
      edit(m.config);
      expect(() => newTrainer(m.config)).toThrow(InvalidSpecError);
    };
    bad((c) => {
      c.towers[0].layers[0]!.residual = true; // 18 → 12
    });
    bad((c) => {
      c.towers[1].inputs[1] = { kind: 'ids', table: 7 };
    });
    bad((c) => {
      c.tasks[0]!.temperature = 0;
    });
    bad((c) => {
      c.tasks[1]!.itemHead = 2;
    });
    bad((c) => {
      c.towers[0].heads[0]!.bias = new Float32Array(5);
    });
    bad((c) => {
      (c as unknown as { tables: unknown }).tables = 'no';
    });
    bad((c) => {
      (c.optimizer as { sparse: string }).sparse = 'sgd';
    });
    const badMixture = (edit: (c: NativeTrainerConfig) => void): void => {
      const m = model({ mmoe: true });
      edit(m.config);
      expect(() => newTrainer(m.config)).toThrow(InvalidSpecError);
    };
    badMixture((c) => {
      c.towers[0].gates!.pop(); // a head without its gate
    });
    badMixture((c) => {
      c.towers[1].experts![1]!.pop(); // experts of different shapes
    });
    badMixture((c) => {
      c.towers[0].gates![0]!.weight = new Float32Array(5);
    });
    badMixture((c) => {
      delete c.towers[0].experts; // gates without experts
    });
    const m = model();
    expect(() => newTrainer(m.config)).not.toThrow();
    m.config.towers[0].layers[0]!.residual = true;
    expect(() => newTrainer(m.config)).toThrow(/residual but its inDim \(18\) differs from its outDim \(12\)/);
  });

  it('refuses bad batches before changing anything', async () => {
    const m = model();
    const trainer = newTrainer(m.config);
    const before = trainer.parameters();
    const outOfRange = batch(m, 4, 2, 41);
    (outOfRange.query[0] as Int32Array)[3] = TEXT_BUCKETS + 1; // the text table has buckets + 1 rows
    await expect(awaitNative(trainer.step(outOfRange))).rejects.toThrow(InvalidArgumentError);
    await expect(awaitNative(trainer.step(outOfRange))).rejects.toThrow(/Expected ids from 0 to 40/);
    const short = batch(m, 4, 2, 41);
    short.label = new Float32Array(3);
    expect(() => callNative(() => trainer.step(short))).toThrow(DimensionMismatchError);
    const wrongType = batch(m, 4, 2, 41);
    wrongType.query[0] = new Float32Array(20);
    expect(() => callNative(() => trainer.step(wrongType))).toThrow(InvalidArgumentError);
    const nan = batch(m, 4, 2, 41);
    (nan.query[3] as Float32Array)[0] = NaN; // the dense signals
    await expect(awaitNative(trainer.step(nan))).rejects.toThrow(InvalidArgumentError);
    expect(() => callNative(() => trainer.embed(0, [], 2, 0))).toThrow(InvalidArgumentError);
    expect(trainer.steps()).toBe(0);
    expect(trainer.parameters()).toEqual(before);
    trainer.dispose();
  });

  it('refuses a call that overlaps a step with OverloadedError, and any call after dispose with DisposedError', async () => {
    const m = model();
    const trainer = newTrainer(m.config);
    const b = batch(m, 8, 4, 51);
    const running = trainer.step(b);
    expect(() => callNative(() => trainer.step(b))).toThrow(OverloadedError);
    expect(() => callNative(() => trainer.gradients(b))).toThrow(OverloadedError);
    expect(() => callNative(() => trainer.embed(0, tensors(m.query, 1, 1).list, 1, 0))).toThrow(OverloadedError);
    expect(() => callNative(() => trainer.parameters())).toThrow(OverloadedError);
    expect(trainer.steps()).toBe(0);
    expect((await running).step).toBe(1);
    // Readers may overlap one another, not a writer.
    const saving = trainer.saveState();
    const embedding = trainer.embedAsync(0, tensors(m.query, 3, 2).list, 3, 1);
    expect(() => callNative(() => trainer.step(b))).toThrow(/busy/);
    await Promise.all([saving, embedding]);
    expect((await trainer.step(b)).step).toBe(2);

    // dispose while a step runs: the step finishes, later calls fail.
    const last = trainer.step(b);
    trainer.dispose();
    expect((await last).step).toBe(3);
    const calls: Array<() => unknown> = [() => trainer.step(b), () => trainer.embed(0, [], 0, 0), () => trainer.parameters(), () => trainer.steps()];
    for (const call of calls) {
      expect(() => callNative(call)).toThrow(DisposedError);
    }
    expect(() => callNative(() => trainer.steps())).toThrow('The trainer has been disposed');
    trainer.dispose(); // idempotent
  });

  it('round-trips a mixture of experts through saveState / loadState, and resumes bit-identically', async () => {
    const m = model({ mmoe: true });
    const a = newTrainer(m.config);
    const batches = [batch(m, 8, 4, 71), batch(m, 8, 4, 72), batch(m, 8, 4, 73)];
    await a.step(batches[0]!);
    await a.step(batches[1]!);
    const saved = await a.saveState();
    const b = newTrainer(model({ mmoe: true }).config);
    b.loadState(saved);
    expect(b.parameters()).toEqual(a.parameters());
    await a.step(batches[2]!);
    await b.step(batches[2]!);
    expect(b.parameters()).toEqual(a.parameters());
    expect(a.parameters().towers[0].gates[1]!.weight).not.toEqual(m.query.heads[1]!.gate!.weight);
    // A checkpoint of the model without experts does not fit this one.
    const plain = newTrainer(model().config);
    expect(() => callNative(() => plain.loadState(saved))).toThrow(CorruptFileError);
    for (const t of [a, b, plain]) t.dispose();
  });

  it('round-trips its state through saveState / loadState, and refuses damaged bytes', async () => {
    const m = model();
    const a = newTrainer(m.config);
    const batches = [batch(m, 8, 4, 61), batch(m, 8, 4, 62), batch(m, 8, 4, 63)];
    await a.step(batches[0]!);
    await a.step(batches[1]!);
    const saved = await a.saveState();
    expect(saved).toBeInstanceOf(Uint8Array);

    const fresh = model();
    const b = newTrainer(fresh.config);
    b.loadState(saved);
    expect(b.steps()).toBe(2);
    const viaAsync = newTrainer(model().config);
    await viaAsync.loadStateAsync(saved);
    expect(viaAsync.steps()).toBe(2);
    expect(viaAsync.parameters()).toEqual(b.parameters());
    viaAsync.dispose();
    expect(b.parameters()).toEqual(a.parameters());
    // Resumed training is bit-identical.
    await a.step(batches[2]!);
    await b.step(batches[2]!);
    expect(b.parameters()).toEqual(a.parameters());
    expect(await b.saveState()).toEqual(await a.saveState());

    const damaged = saved.slice();
    damaged[damaged.length - 5] = damaged[damaged.length - 5]! ^ 0x40;
    expect(() => callNative(() => b.loadState(damaged))).toThrow(CorruptFileError);
    expect(() => callNative(() => b.loadState(saved.subarray(0, 100)))).toThrow(/truncated/);
    await expect(awaitNative(b.loadStateAsync(damaged))).rejects.toThrow(CorruptFileError);
    const other = model();
    other.config.towers[0].heads.pop();
    other.config.tasks.pop();
    const c = newTrainer(other.config);
    expect(() => callNative(() => c.loadState(saved))).toThrow(CorruptFileError);
    expect(b.steps()).toBe(3);
    for (const t of [a, b, c]) t.dispose();
  });
});
