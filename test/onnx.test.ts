import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';

import { CorruptModelError, DimensionMismatchError, InvalidArgumentError, InvalidSpecError } from '../lib/errors.js';
import { GraphBuilder, attr } from '../lib/model/onnx/graph.js';
import { IR_VERSION, OPSET_VERSION, decodeModel } from '../lib/model/onnx/schema.js';
import {
  buildTowerModel,
  towerForward,
  towerGraphInputs,
  validateTower,
  type DenseLayer,
  type EmbeddingTable,
  type TensorData,
  type TowerDefinition,
  type TowerHead,
} from '../lib/model/onnx/tower.js';

const TOLERANCE = 1e-5;

/** splitmix32: small, seeded, good enough to make weights and ids reproducible. */
function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return ((z ^ (z >>> 16)) >>> 0) / 2 ** 32;
  };
}

function uniform(next: () => number, length: number, scale: number): Float32Array {
  return Float32Array.from({ length }, () => (next() * 2 - 1) * scale);
}

function table(next: () => number, rows: number, dim: number): EmbeddingTable {
  return { rows, dim, data: uniform(next, rows * dim, 1) };
}

function layer(
  next: () => number,
  inDim: number,
  outDim: number,
  options: { relu?: boolean; layerNorm?: boolean; residual?: boolean; epsilon?: number } = {},
): DenseLayer {
  const scale = 1 / Math.sqrt(inDim);
  return {
    weight: uniform(next, outDim * inDim, scale),
    bias: uniform(next, outDim, 0.1),
    inDim,
    outDim,
    activation: options.relu ? 'relu' : 'none',
    ...(options.layerNorm
      ? {
          layerNorm: {
            gamma: Float32Array.from({ length: outDim }, () => 0.5 + next()),
            beta: uniform(next, outDim, 0.2),
            ...(options.epsilon === undefined ? {} : { epsilon: options.epsilon }),
          },
        }
      : {}),
    ...(options.residual ? { residual: true } : {}),
  };
}

function head(next: () => number, output: string, inDim: number, outDim: number, normalize: boolean): TowerHead {
  return { output, weight: uniform(next, outDim * inDim, 1 / Math.sqrt(inDim)), bias: uniform(next, outDim, 0.1), inDim, outDim, normalize };
}

type MaskStyle = 'partial' | 'zeros' | 'weighted';

/** Feeds for every graph input: ids in range, masks with partial rows and at least one all-zero row. */
function randomFeeds(def: TowerDefinition, batch: number, next: () => number, bagLength: number, masks: MaskStyle = 'partial'): Record<string, TensorData> {
  const feeds: Record<string, TensorData> = {};
  for (const input of def.inputs) {
    if (input.kind === 'ids') {
      const rows = def.tables[input.table]!.rows;
      feeds[input.input] = { data: Int32Array.from({ length: batch }, () => Math.floor(next() * rows)), dims: [batch] };
    } else if (input.kind === 'bag') {
      const rows = def.tables[input.table]!.rows;
      const length = batch * bagLength;
      feeds[input.ids] = { data: Int32Array.from({ length }, () => Math.floor(next() * rows)), dims: [batch, bagLength] };
      const mask = new Float32Array(length);
      for (let r = 0; r < batch; r++) {
        // Row 1 (when there is one) is all padding; the others keep a random prefix of at least one.
        const keep = masks === 'zeros' || r === 1 ? 0 : Math.min(bagLength, 1 + Math.floor(next() * bagLength));
        for (let l = 0; l < keep; l++) mask[r * bagLength + l] = masks === 'weighted' ? 0.25 + next() : 1;
      }
      feeds[input.mask] = { data: mask, dims: [batch, bagLength] };
    } else {
      feeds[input.input] = { data: uniform(next, batch * input.width, 1), dims: [batch, input.width] };
    }
  }
  return feeds;
}

// Fatal only: the out-of-range tests make onnxruntime log the errors it also rejects with.
const sessionOptions: ort.InferenceSession.SessionOptions = { logSeverityLevel: 4 };

async function runOrt(bytes: Uint8Array, feeds: Record<string, TensorData>): Promise<Record<string, { data: Float32Array; dims: number[] }>> {
  const session = await ort.InferenceSession.create(bytes, sessionOptions);
  try {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [name, { data, dims }] of Object.entries(feeds)) {
      ortFeeds[name] = data instanceof Int32Array ? new ort.Tensor('int32', data, dims) : new ort.Tensor('float32', data, dims);
    }
    const results = await session.run(ortFeeds, { logSeverityLevel: 4 });
    return Object.fromEntries(
      Object.entries(results).map(([name, tensor]) => [name, { data: tensor.data as Float32Array, dims: [...tensor.dims] }]),
    );
  } finally {
    await session.release();
  }
}

let maxDiffSeen = 0;
afterAll(() => {
  console.log(`onnx parity: largest |ORT − towerForward| over all outputs = ${maxDiffSeen.toExponential(3)}`);
});

/** Builds the model, runs it in onnxruntime and the reference, and compares every head. */
async function expectParity(def: TowerDefinition, feeds: Record<string, TensorData>): Promise<number> {
  const bytes = buildTowerModel(def);
  const expected = towerForward(def, feeds);
  const actual = await runOrt(bytes, feeds);
  expect(Object.keys(actual).sort()).toEqual(def.heads.map((h) => h.output).sort());
  let worst = 0;
  for (const h of def.heads) {
    const want = expected[h.output]!;
    const got = actual[h.output]!;
    expect(got.dims).toEqual(want.dims);
    expect(got.data.length).toBe(want.data.length);
    for (let i = 0; i < want.data.length; i++) {
      expect(Number.isFinite(got.data[i]!)).toBe(true);
      worst = Math.max(worst, Math.abs(got.data[i]! - want.data[i]!));
    }
  }
  maxDiffSeen = Math.max(maxDiffSeen, worst);
  expect(worst).toBeLessThanOrEqual(TOLERANCE);
  return worst;
}

/** Every input kind, a table shared by an ids input and a bag, both poolings, three layers, three heads. */
function fullTower(seed: number): TowerDefinition {
  const next = seeded(seed);
  const tables = { users: table(next, 11, 6), items: table(next, 17, 8), tags: table(next, 5, 3), unused: table(next, 3, 2) };
  const width = 6 + 8 + 8 + 3 + 5; // user, item, history(items), tags, context
  return {
    name: 'full',
    inputs: [
      { kind: 'ids', input: 'user_id', table: 'users' },
      { kind: 'ids', input: 'item_id', table: 'items' },
      { kind: 'bag', ids: 'history', mask: 'history_mask', table: 'items', pooling: 'mean' },
      { kind: 'bag', ids: 'tags', mask: 'tags_mask', table: 'tags', pooling: 'sum' },
      { kind: 'dense', input: 'context', width: 5 },
    ],
    tables,
    layers: [
      layer(next, width, 16, { relu: true, layerNorm: true }),
      layer(next, 16, 16, { relu: true, residual: true }),
      layer(next, 16, 12, { layerNorm: true, epsilon: 1e-3 }),
      layer(next, 12, 12, { relu: true, layerNorm: true, residual: true }),
    ],
    heads: [head(next, 'embedding', 12, 8, true), head(next, 'task_click', 12, 4, false), head(next, 'task_share', 12, 3, true)],
  };
}

/** fullTower with a mixture of experts after its layers: 3 experts of two layers, a gate per head. */
function mixtureTower(seed: number, experts = 3): TowerDefinition {
  const def = fullTower(seed);
  const next = seeded(seed + 50);
  def.name = 'mixture';
  def.experts = Array.from({ length: experts }, () => [layer(next, 12, 10, { relu: true, layerNorm: true }), layer(next, 10, 10, { relu: true, residual: true })]);
  def.heads = def.heads.map((h) => ({
    ...head(next, h.output, 10, h.outDim, h.normalize),
    // Gates scaled up so that the mixtures are far from even.
    gate: { weight: uniform(next, experts * 12, 1.5), bias: uniform(next, experts, 0.5) },
  }));
  return def;
}

describe('tower parity: onnxruntime vs towerForward', () => {
  for (const batch of [1, 7]) {
    it(`mixture of experts: a softmax gate per head (batch ${batch})`, async () => {
      const def = mixtureTower(21);
      await expectParity(def, randomFeeds(def, batch, seeded(600 + batch), 4));
      const two = mixtureTower(22, 2);
      await expectParity(two, randomFeeds(two, batch, seeded(700 + batch), 2, 'weighted'));
      // The gates matter: another head's gate gives another output.
      const swapped = mixtureTower(21);
      swapped.heads[0]!.gate = swapped.heads[1]!.gate;
      const feeds = randomFeeds(def, batch, seeded(600 + batch), 4);
      expect(towerForward(swapped, feeds).embedding!.data).not.toEqual(towerForward(def, feeds).embedding!.data);
    });

    it(`every input kind, shared table, layers and several heads (batch ${batch})`, async () => {
      const def = fullTower(1);
      await expectParity(def, randomFeeds(def, batch, seeded(100 + batch), 4));
      await expectParity(def, randomFeeds(def, batch, seeded(200 + batch), 1, 'weighted'));
    });

    it(`all-zero masks pool to zeros for mean and sum (batch ${batch})`, async () => {
      const def = fullTower(2);
      const feeds = randomFeeds(def, batch, seeded(300 + batch), 3, 'zeros');
      await expectParity(def, feeds);
      // The pooled features themselves: a tower whose only inputs are the two bags, no layers, identity heads.
      const next = seeded(3);
      const bags: TowerDefinition = {
        name: 'bags',
        inputs: [def.inputs[2]!, def.inputs[3]!],
        tables: def.tables,
        layers: [],
        heads: [{ output: 'pooled', weight: identity(11), bias: new Float32Array(11), inDim: 11, outDim: 11, normalize: false }],
      };
      const bagFeeds = randomFeeds(bags, batch, next, 3, 'zeros');
      const pooled = towerForward(bags, bagFeeds).pooled!;
      expect(Array.from(pooled.data).every((v) => v === 0)).toBe(true);
      await expectParity(bags, bagFeeds);
    });

    it(`ids only, no layers, normalised head (batch ${batch})`, async () => {
      const next = seeded(4);
      const def: TowerDefinition = {
        name: 'lookup',
        inputs: [{ kind: 'ids', input: 'id', table: 't' }],
        tables: { t: table(next, 9, 7) },
        layers: [],
        heads: [head(next, 'out', 7, 5, true)],
      };
      await expectParity(def, randomFeeds(def, batch, seeded(400 + batch), 1));
    });

    it(`dense only, residual layer without LayerNorm, plain and zero heads (batch ${batch})`, async () => {
      const next = seeded(5);
      const zero: TowerHead = { output: 'zero', weight: new Float32Array(4 * 6), bias: new Float32Array(4), inDim: 6, outDim: 4, normalize: true };
      const tiny: TowerHead = { output: 'tiny', weight: new Float32Array(2 * 6), bias: Float32Array.of(3e-13, 4e-13), inDim: 6, outDim: 2, normalize: true };
      const def: TowerDefinition = {
        name: 'dense',
        inputs: [{ kind: 'dense', input: 'x', width: 6 }],
        tables: {},
        layers: [layer(next, 6, 6, { residual: true }), layer(next, 6, 6, { relu: true, residual: true })],
        heads: [head(next, 'y', 6, 3, false), zero, tiny],
      };
      const feeds = randomFeeds(def, batch, seeded(500 + batch), 1);
      await expectParity(def, feeds);
      // A zero row normalises to zero (the 1e-12 floor), not NaN, on both sides; a row whose
      // norm is under the floor is divided by the floor, not by its norm.
      const out = towerForward(def, feeds);
      expect(Array.from(out.zero!.data).every((v) => v === 0)).toBe(true);
      expect(out.tiny!.data[0]).toBeCloseTo(0.3, 6);
      expect(out.tiny!.data[1]).toBeCloseTo(0.4, 6);
    });

    it(`mean bag alone, sum bag alone (batch ${batch})`, async () => {
      for (const pooling of ['mean', 'sum'] as const) {
        const next = seeded(pooling === 'mean' ? 6 : 7);
        const def: TowerDefinition = {
          name: `bag-${pooling}`,
          inputs: [{ kind: 'bag', ids: 'ids', mask: 'mask', table: 't', pooling }],
          tables: { t: table(next, 13, 5) },
          layers: [layer(next, 5, 8, { relu: true })],
          heads: [head(next, 'out', 8, 4, false)],
        };
        await expectParity(def, randomFeeds(def, batch, seeded(600 + batch), 5));
        await expectParity(def, randomFeeds(def, batch, seeded(700 + batch), 5, 'weighted'));
      }
    });
  }

  it('empty bags (length 0) and an empty batch', async () => {
    const def = fullTower(12);
    await expectParity(def, randomFeeds(def, 3, seeded(900), 0));
    await expectParity(def, randomFeeds(def, 0, seeded(901), 2));
  });

  it('larger widths and batches stay within tolerance', async () => {
    const next = seeded(8);
    const def: TowerDefinition = {
      name: 'wide',
      inputs: [
        { kind: 'ids', input: 'a', table: 'big' },
        { kind: 'bag', ids: 'b', mask: 'bm', table: 'big', pooling: 'mean' },
        { kind: 'dense', input: 'c', width: 33 },
      ],
      tables: { big: table(next, 1000, 64) },
      layers: [layer(next, 161, 128, { relu: true, layerNorm: true }), layer(next, 128, 128, { relu: true, layerNorm: true, residual: true })],
      heads: [head(next, 'emb', 128, 64, true), head(next, 'logits', 128, 17, false)],
    };
    await expectParity(def, randomFeeds(def, 64, seeded(800), 20));
  });
});

function identity(n: number): Float32Array {
  const m = new Float32Array(n * n);
  for (let i = 0; i < n; i++) m[i * n + i] = 1;
  return m;
}

describe('model bytes', () => {
  it('decodes back the declared inputs, outputs, metadata and opset', async () => {
    const def = fullTower(9);
    const bytes = buildTowerModel(def, { metadata: { 'ebrix.version': 'v1', task: 'click' }, producerVersion: '0.1.0' });
    const model = decodeModel(bytes);
    expect(model.irVersion).toBe(IR_VERSION);
    expect(model.opsetImports).toEqual([{ domain: '', version: OPSET_VERSION }]);
    expect(model.producerName).toBe('ebrix');
    expect(model.producerVersion).toBe('0.1.0');
    expect(model.metadata).toEqual({ 'ebrix.version': 'v1', task: 'click' });
    expect(model.graphName).toBe('full');
    expect(model.inputs).toEqual(
      towerGraphInputs(def).map((i) => ({ name: i.name, elementType: i.type, dims: i.dims })),
    );
    expect(model.inputs.map((i) => i.name)).toEqual(['user_id', 'item_id', 'history', 'history_mask', 'tags', 'tags_mask', 'context']);
    expect(model.inputs[2]!.dims).toEqual(['batch', 'history_length']);
    expect(model.outputs).toEqual([
      { name: 'embedding', elementType: 'float32', dims: ['batch', 8] },
      { name: 'task_click', elementType: 'float32', dims: ['batch', 4] },
      { name: 'task_share', elementType: 'float32', dims: ['batch', 3] },
    ]);
    // The shared table is stored once; the unused one not at all.
    const tables = model.initializers.filter((t) => t.name.startsWith('table/'));
    expect(tables).toEqual([
      { name: 'table/users', elementType: 'float32', dims: [11, 6] },
      { name: 'table/items', elementType: 'float32', dims: [17, 8] },
      { name: 'table/tags', elementType: 'float32', dims: [5, 3] },
    ]);
    const ops = new Set(model.nodes.map((n) => n.opType));
    for (const op of ['Gather', 'Unsqueeze', 'Mul', 'ReduceSum', 'Max', 'Div', 'Concat', 'Gemm', 'LayerNormalization', 'Relu', 'Add', 'ReduceL2']) {
      expect(ops.has(op), op).toBe(true);
    }
    const gemm = model.nodes.find((n) => n.opType === 'Gemm')!;
    expect(gemm.attributes).toEqual({ transB: 1 });
    const norm = model.nodes.find((n) => n.opType === 'LayerNormalization')!;
    expect(norm.attributes.axis).toBe(-1);
    expect(norm.attributes.epsilon).toBeCloseTo(1e-5, 10);

    // onnxruntime reads the same interface.
    const session = await ort.InferenceSession.create(bytes, sessionOptions);
    expect([...session.inputNames]).toEqual(model.inputs.map((i) => i.name));
    expect([...session.outputNames]).toEqual(model.outputs.map((o) => o.name));
    await session.release();
  });

  it('stores tensors as little-endian raw_data', () => {
    const b = new GraphBuilder('g');
    b.input('x', 'float32', ['batch', 2]);
    b.output('y', 'float32', ['batch', 2]);
    const w = b.initializer('w', Float32Array.of(1.5, -2), [2]);
    b.node('Add', ['x', w], 'y');
    const bytes = b.toBytes({ producerName: 'test', producerVersion: '0' });
    const le = new Uint8Array(8);
    new DataView(le.buffer).setFloat32(0, 1.5, true);
    new DataView(le.buffer).setFloat32(4, -2, true);
    expect(Buffer.from(bytes).includes(Buffer.from(le))).toBe(true);
    expect(decodeModel(bytes).initializers).toEqual([{ name: 'w', elementType: 'float32', dims: [2] }]);
  });

  it('writes proto2 wire format: explicit zero-valued fields, unpacked dims and attribute lists', () => {
    const b = new GraphBuilder('g');
    b.input('x', 'int32', [3]);
    b.output('y', 'float32', [3, 2]);
    const w = b.initializer('w', new Float32Array(6), [3, 2]);
    b.node('Gather', [w, 'x'], 'y', { axis: attr.int(0), ints: attr.ints([3, 4]) });
    const hex = Buffer.from(b.toBytes({ producerName: 'p', producerVersion: '0' })).toString('hex');
    const text = (s: string): string => Buffer.from(s).toString('hex');
    // AttributeProto { name: 'axis' (1), i: 0 (3), type: INT (20) }: proto3 rules would drop `i: 0`.
    expect(hex).toContain(`0a04${text('axis')}1800a00102`);
    // ints [3, 4] as two tag-8 varints, not one packed run.
    expect(hex).toContain(`0a04${text('ints')}40034004a00107`);
    // TensorProto dims [3, 2] as two tag-1 varints, then data_type FLOAT.
    expect(hex).toContain('080308021001');
  });

  it('rejects bytes that are not a model', () => {
    expect(() => decodeModel(Uint8Array.of(0xff, 0xff, 0xff))).toThrow(CorruptModelError);
    expect(() => decodeModel(new Uint8Array(0))).toThrow(/no graph/);
  });
});

describe('GraphBuilder checks', () => {
  it('rejects reused names, unknown inputs, bad dims and unproduced outputs', () => {
    const b = new GraphBuilder('g');
    b.input('x', 'float32', ['batch', 3]);
    expect(() => b.input('x', 'int32', ['batch'])).toThrow(InvalidSpecError);
    expect(() => b.initializer('x', new Float32Array(3), [3])).toThrow(/already used/);
    expect(() => b.initializer('w', new Float32Array(5), [2, 3])).toThrow(/holds 5/);
    expect(() => b.node('Relu', ['nope'])).toThrow(/'nope'/);
    b.output('y', 'float32', ['batch', 3]);
    expect(() => b.toBytes({ producerName: 'p', producerVersion: '0' })).toThrow(/never produced/);
    // Auto names never take a declared output's name.
    expect(b.uniqueName('y')).toBe('y_1');
    const r = b.node('Relu', ['x']);
    expect(r).toBe('Relu');
    expect(b.node('Relu', [r])).toBe('Relu_1');
    b.node('Neg', [r], 'y');
    expect(() => b.node('Neg', [r], 'y')).toThrow(/already used/);
    expect(decodeModel(b.toBytes({ producerName: 'p', producerVersion: '0' })).outputs[0]!.name).toBe('y');
  });

  it('encodes typed attributes', () => {
    const b = new GraphBuilder('g');
    b.input('x', 'float32', [2, 3]);
    b.node('Custom', ['x'], 'y', {
      i: attr.int(-1),
      f: attr.float(0.5),
      s: attr.string('hé'),
      is: attr.ints([1, -2]),
      fs: attr.floats([0.25, 2]),
    });
    b.output('y', 'float32', [2, 3]);
    const node = decodeModel(b.toBytes({ producerName: 'p', producerVersion: '0' })).nodes[0]!;
    expect(node.attributes).toEqual({ i: -1, f: 0.5, s: 'hé', is: [1, -2], fs: [0.25, 2] });
  });
});

describe('validateTower', () => {
  const base = (): TowerDefinition => fullTower(10);
  const expectSpecError = (mutate: (def: TowerDefinition) => void, message: RegExp): void => {
    const def = base();
    mutate(def);
    let error: unknown;
    try {
      validateTower(def);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(InvalidSpecError);
    expect((error as InvalidSpecError).code).toBe('EBRIX_INVALID_SPEC');
    expect((error as Error).message).toMatch(/^Tower 'full': /);
    expect((error as Error).message).toMatch(message);
  };

  it('accepts a consistent definition', () => {
    expect(() => validateTower(base())).not.toThrow();
  });

  it('names what is wrong', () => {
    expectSpecError((d) => ((d.inputs[0] as { table: string }).table = 'nope'), /inputs\[0\] reads unknown table "nope"/);
    expectSpecError((d) => ((d.inputs[2] as { pooling: string }).pooling = 'max'), /inputs\[2\]\.pooling/);
    expectSpecError((d) => ((d.inputs[4] as { width: number }).width = 0), /inputs\[4\]\.width/);
    expectSpecError((d) => ((d.inputs[1] as { input: string }).input = 'user_id'), /'user_id' names a graph input already used/);
    expectSpecError((d) => (d.inputs[0] = { kind: 'sparse' } as never), /inputs\[0\]\.kind/);
    expectSpecError((d) => (d.inputs = []), /inputs must be a non-empty array/);
    expectSpecError((d) => (d.tables.users!.data = new Float32Array(3)), /table 'users' data \(11×6\) holds 3 values but needs 66/);
    expectSpecError((d) => (d.layers[0]!.inDim = 29), /layers\[0\]\.inDim is 29 but it receives 30 values per row \(the concatenated input features\)/);
    expectSpecError((d) => d.layers.splice(1, 1, layer(seeded(1), 16, 20)), /layers\[2\]\.inDim is 16 but it receives 20 values per row \(layers\[1\]\.outDim\)/);
    expectSpecError((d) => (d.layers[0]!.weight = new Float32Array(10)), /layers\[0\]\.weight \(16×30\) holds 10 values/);
    expectSpecError((d) => (d.layers[0]!.bias = new Float32Array(15)), /layers\[0\]\.bias holds 15 values but needs 16/);
    expectSpecError((d) => (d.layers[0]!.layerNorm!.gamma = new Float32Array(2)), /layers\[0\]\.layerNorm\.gamma/);
    expectSpecError((d) => (d.layers[0]!.layerNorm!.epsilon = 0), /epsilon must be a positive number/);
    expectSpecError((d) => (d.layers[0]!.activation = 'gelu' as never), /activation must be 'relu' or 'none'/);
    expectSpecError((d) => (d.layers[2]!.residual = true), /layers\[2\] is residual but its inDim \(16\) differs from its outDim \(12\)/);
    expectSpecError((d) => (d.heads = []), /at least one output/);
    expectSpecError((d) => (d.heads[1]!.output = 'embedding'), /heads\[1\]\.output 'embedding' is used by another head/);
    expectSpecError((d) => (d.heads[1]!.output = 'context'), /also the name of a graph input/);
    expectSpecError((d) => (d.heads[0]!.inDim = 16), /heads\[0\]\.inDim is 16 but it receives 12 values per row \(the last layer's outDim\)/);
    expectSpecError((d) => (d.heads[2]!.weight = new Float32Array(1)), /heads\[2\]\.weight \(3×12\)/);
    expectSpecError((d) => (d.heads[0]!.weight = [] as never), /must be a Float32Array, not an array/);
  });

  it('names what is wrong with a mixture of experts', () => {
    const expectMixtureError = (mutate: (def: TowerDefinition) => void, message: RegExp): void => {
      const def = mixtureTower(30);
      mutate(def);
      expect(() => validateTower(def)).toThrow(InvalidSpecError);
      expect(() => validateTower(def)).toThrow(message);
    };
    expect(() => validateTower(mixtureTower(30))).not.toThrow();
    expectMixtureError((d) => delete d.heads[1]!.gate, /heads\[1\]\.gate must be an object \(one gate per head with experts\)/);
    expectMixtureError((d) => (d.heads[0]!.gate!.weight = new Float32Array(5)), /heads\[0\]\.gate\.weight \(3×12\) holds 5 values/);
    expectMixtureError((d) => (d.heads[2]!.gate!.bias = new Float32Array(2)), /heads\[2\]\.gate\.bias holds 2 values but needs 3/);
    expectMixtureError((d) => (d.experts![1]![0]!.inDim = 11), /experts\[1\]\[0\]\.inDim is 11 but it receives 12 values per row/);
    expectMixtureError((d) => (d.experts![2] = [layer(seeded(1), 12, 9)]), /experts\[2\] outputs 9 values per row but experts\[0\] outputs 10/);
    expectMixtureError((d) => (d.experts![0] = []), /experts\[0\] must be a non-empty array of layers/);
    expectMixtureError((d) => (d.heads[0]!.inDim = 12), /heads\[0\]\.inDim is 12 but it receives 10 values per row \(the experts' outDim\)/);
    expectMixtureError((d) => delete d.experts, /heads\[0\]\.inDim is 10 but it receives 12|has a gate but the tower has no experts/);
    const noExperts = fullTower(31);
    noExperts.heads[0]!.gate = { weight: new Float32Array(12), bias: new Float32Array(1) };
    expect(() => validateTower(noExperts)).toThrow(/heads\[0\] has a gate but the tower has no experts/);
  });

  it('export also rejects non-finite weights', () => {
    const def = base();
    def.layers[1]!.weight[3] = Number.NaN;
    expect(() => buildTowerModel(def)).toThrow(/layers\[1\]\.weight\[3\] is NaN/);
  });
});

describe('towerForward inputs', () => {
  const next = seeded(11);
  const def: TowerDefinition = {
    name: 'small',
    inputs: [
      { kind: 'ids', input: 'id', table: 't' },
      { kind: 'bag', ids: 'bag', mask: 'mask', table: 't', pooling: 'mean' },
      { kind: 'dense', input: 'x', width: 2 },
    ],
    tables: { t: table(next, 4, 3) },
    layers: [],
    heads: [head(next, 'out', 8, 2, true)],
  };
  const feeds = (): Record<string, TensorData> => ({
    id: { data: Int32Array.of(0, 3), dims: [2] },
    bag: { data: Int32Array.of(1, 2, 3, 0), dims: [2, 2] },
    mask: { data: Float32Array.of(1, 1, 1, 0), dims: [2, 2] },
    x: { data: Float32Array.of(1, 2, 3, 4), dims: [2, 2] },
  });

  it('throws a clear error for an id outside the table, masked or not', () => {
    for (const bad of [4, -1, 1000]) {
      const f = feeds();
      (f.id!.data as Int32Array)[1] = bad;
      expect(() => towerForward(def, f)).toThrow(InvalidArgumentError);
      expect(() => towerForward(def, f)).toThrow(`Expected an id from 0 to 3 (table 't') for input 'id'[1] but received ${bad}`);
    }
    const f = feeds();
    (f.bag!.data as Int32Array)[3] = 7; // under a zero mask, still an error (the graph's Gather reads it too)
    expect(() => towerForward(def, f)).toThrow(/input 'bag'\[3\] but received 7/);
  });

  it('rejects missing inputs, wrong array types and inconsistent dims', () => {
    const missing = feeds();
    delete missing.x;
    expect(() => towerForward(def, missing)).toThrow(/input 'x' but received undefined/);
    const wrongType = feeds();
    wrongType.id = { data: Float32Array.of(0, 1), dims: [2] };
    expect(() => towerForward(def, wrongType)).toThrow(/Expected an Int32Array for input 'id' data/);
    const batch = feeds();
    batch.x = { data: Float32Array.of(1, 2, 3, 4, 5, 6), dims: [3, 2] };
    expect(() => towerForward(def, batch)).toThrow(DimensionMismatchError);
    const width = feeds();
    width.x = { data: new Float32Array(8), dims: [2, 4] };
    expect(() => towerForward(def, width)).toThrow("Expected 2 values per row for input 'x' but received 4");
    const length = feeds();
    length.mask = { data: Float32Array.of(1, 1), dims: [2, 1] };
    expect(() => towerForward(def, length)).toThrow(/bag length 1 but its ids have 2/);
    const count = feeds();
    count.x = { data: Float32Array.of(1, 2, 3), dims: [2, 2] };
    expect(() => towerForward(def, count)).toThrow(/Expected 4 values/);
  });

  it("documents onnxruntime's Gather on ids outside the table: rejects, except negatives count from the end", async () => {
    const bytes = buildTowerModel(def);
    const ok = feeds();
    await expect(runOrt(bytes, ok)).resolves.toBeDefined();
    const tooLarge = feeds();
    (tooLarge.id!.data as Int32Array)[1] = 4;
    await expect(runOrt(bytes, tooLarge)).rejects.toThrow(/out of data bounds/);
    const tooSmall = feeds();
    (tooSmall.id!.data as Int32Array)[1] = -5;
    await expect(runOrt(bytes, tooSmall)).rejects.toThrow(/out of data bounds/);
    const masked = feeds();
    (masked.bag!.data as Int32Array)[3] = 4;
    await expect(runOrt(bytes, masked)).rejects.toThrow(/out of data bounds/);
    // -1 is row rows-1 (3) to onnxruntime, where towerForward refuses it.
    const negative = feeds();
    (negative.id!.data as Int32Array)[1] = -1;
    const wrapped = await runOrt(bytes, negative);
    const asLast = towerForward(def, feeds()); // feeds() has id 3 in that slot
    let diff = 0;
    for (let i = 0; i < asLast.out!.data.length; i++) diff = Math.max(diff, Math.abs(asLast.out!.data[i]! - wrapped.out!.data[i]!));
    expect(diff).toBeLessThanOrEqual(TOLERANCE);
  });
});
