/**
 * Towers: a small, fixed family of networks (embedding lookups and pooled bags, dense features,
 * an MLP, one or more linear heads), exported as ONNX graphs and computed by a plain TypeScript
 * forward pass. The forward pass is the reference the graphs are tested against, and what the
 * trainer can check its own numbers with.
 *
 * Semantics, shared by both:
 *   features = concat(inputs in order, axis 1), each input giving [batch, width]:
 *     ids   → rows of its table;
 *     bag   → Σ_l mask[b,l]·table[ids[b,l]], divided by max(Σ_l mask[b,l], 1) for 'mean';
 *     dense → the input as is.
 *   x = features; per layer: y = x Wᵀ + b → LayerNorm (if any) → activation → x + y (if residual).
 *   mixture of experts (if `experts`): each expert is its own stack of layers over x; head h
 *     reads m = Σ_e g[e]·expert_e(x) with g = softmax(x Gₕᵀ + cₕ), its gate (MMoE).
 *   per head: h = m Wᵀ + b (m = x without experts), then h / max(‖h‖₂, 1e-12) if normalised.
 */
import { DimensionMismatchError, InvalidSpecError } from '../../errors.js';
import { describe, invalid } from '../../validate.js';
import { GraphBuilder, attr } from './graph.js';

export type TowerInput =
  | { kind: 'ids'; input: string; table: string }
  | { kind: 'bag'; ids: string; mask: string; table: string; pooling: 'mean' | 'sum' }
  | { kind: 'dense'; input: string; width: number };

/** Row-major rows × dim. Several inputs may read one table. */
export interface EmbeddingTable {
  rows: number;
  dim: number;
  data: Float32Array;
}

export interface DenseLayer {
  /** outDim × inDim, row-major. */
  weight: Float32Array;
  bias: Float32Array;
  inDim: number;
  outDim: number;
  activation: 'relu' | 'none';
  /** Over the last axis, after the linear map; epsilon defaults to 1e-5 (ONNX's default). */
  layerNorm?: { gamma: Float32Array; beta: Float32Array; epsilon?: number };
  /** y = x + f(x); needs inDim === outDim. */
  residual?: boolean;
}

export interface TowerHead {
  /** Graph output name. */
  output: string;
  /** outDim × inDim, row-major. */
  weight: Float32Array;
  bias: Float32Array;
  inDim: number;
  outDim: number;
  /** L2-normalise each output row. */
  normalize: boolean;
  /**
   * With experts (and only then): the head's gate, a linear map of the layers' output to one
   * logit per expert (weight experts × the layers' output width, row-major; bias per expert).
   */
  gate?: { weight: Float32Array; bias: Float32Array };
}

export interface TowerDefinition {
  name: string;
  inputs: TowerInput[];
  tables: Record<string, EmbeddingTable>;
  layers: DenseLayer[];
  /** Mixture of experts: one layer stack per expert, all of one shape, each reading the layers' output. */
  experts?: DenseLayer[][];
  heads: TowerHead[];
}

export interface TowerGraphInput {
  name: string;
  type: 'int32' | 'float32';
  /** 'batch' for the batch axis, `<ids>_length` for a bag's length axis. */
  dims: Array<number | string>;
}

export interface TensorData {
  data: Int32Array | Float32Array;
  dims: number[];
}

export interface TowerOutput {
  data: Float32Array;
  dims: number[];
}

export const BATCH_DIM = 'batch';
export const DEFAULT_LAYER_NORM_EPSILON = 1e-5;
/** Floor of the norm an output row is divided by, so an all-zero row stays zero. */
export const NORMALIZE_EPSILON = 1e-12;

// ---------------------------------------------------------------------------------------------
// Validation

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object';
}

function isName(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0;
}

function isPositiveInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value > 0;
}

function requireFloats(value: unknown, length: number, what: string, fail: (message: string) => never): void {
  if (!(value instanceof Float32Array)) fail(`${what} must be a Float32Array, not ${describe(value)}`);
  else if (value.length !== length) fail(`${what} holds ${value.length} values but needs ${length}`);
}

/** Width of the concatenated features, for a definition whose inputs and tables are valid. */
function featureWidth(def: TowerDefinition): number {
  let width = 0;
  for (const input of def.inputs) width += input.kind === 'dense' ? input.width : def.tables[input.table]!.dim;
  return width;
}

/**
 * Throws InvalidSpecError, naming the offending part, unless the definition is consistent:
 * known input kinds and tables, unique graph input and output names, every weight and bias of
 * the size its dims say, each layer's inDim equal to the width it receives, residuals only
 * where inDim === outDim, and at least one head.
 */
export function validateTower(def: TowerDefinition): void {
  const tower = isObject(def) && isName(def.name) ? `Tower '${def.name}'` : 'Tower';
  const fail: (message: string) => never = (message) => {
    throw new InvalidSpecError(`${tower}: ${message}`);
  };
  if (!isObject(def)) fail(`expected a definition object but received ${describe(def)}`);
  if (!isName(def.name)) fail(`name must be a non-empty string, not ${describe(def.name)}`);
  if (!isObject(def.tables)) fail(`tables must be an object, not ${describe(def.tables)}`);
  for (const [name, table] of Object.entries(def.tables)) {
    if (!isObject(table)) fail(`table '${name}' must be an object`);
    if (!isPositiveInteger(table.rows)) fail(`table '${name}' rows must be a positive integer, not ${describe(table.rows)}`);
    if (!isPositiveInteger(table.dim)) fail(`table '${name}' dim must be a positive integer, not ${describe(table.dim)}`);
    requireFloats(table.data, table.rows * table.dim, `table '${name}' data (${table.rows}×${table.dim})`, fail);
  }

  if (!Array.isArray(def.inputs) || def.inputs.length === 0) fail('inputs must be a non-empty array');
  const graphInputs = new Set<string>();
  const claim = (name: unknown, what: string): void => {
    if (!isName(name)) fail(`${what} must be a non-empty string, not ${describe(name)}`);
    else if (graphInputs.has(name)) fail(`${what} '${name}' names a graph input already used by another input`);
    else graphInputs.add(name);
  };
  const requireTable = (table: unknown, what: string): void => {
    if (!isName(table) || !Object.hasOwn(def.tables, table)) fail(`${what} reads unknown table ${describe(table)}`);
  };
  def.inputs.forEach((input, i) => {
    const what = `inputs[${i}]`;
    if (!isObject(input)) fail(`${what} must be an object`);
    switch (input.kind) {
      case 'ids':
        claim(input.input, `${what}.input`);
        requireTable(input.table, what);
        break;
      case 'bag':
        claim(input.ids, `${what}.ids`);
        claim(input.mask, `${what}.mask`);
        requireTable(input.table, what);
        if (input.pooling !== 'mean' && input.pooling !== 'sum') fail(`${what}.pooling must be 'mean' or 'sum', not ${describe(input.pooling)}`);
        break;
      case 'dense':
        claim(input.input, `${what}.input`);
        if (!isPositiveInteger(input.width)) fail(`${what}.width must be a positive integer, not ${describe(input.width)}`);
        break;
      default:
        fail(`${what}.kind must be 'ids', 'bag' or 'dense', not ${describe((input as { kind: unknown }).kind)}`);
    }
  });

  const validateLayers = (layers: DenseLayer[], width: number, where: string, first: string): number => {
    layers.forEach((layer, i) => {
      const what = `${where}[${i}]`;
      if (!isObject(layer)) fail(`${what} must be an object`);
      if (!isPositiveInteger(layer.inDim)) fail(`${what}.inDim must be a positive integer, not ${describe(layer.inDim)}`);
      if (!isPositiveInteger(layer.outDim)) fail(`${what}.outDim must be a positive integer, not ${describe(layer.outDim)}`);
      if (layer.inDim !== width) {
        fail(`${what}.inDim is ${layer.inDim} but it receives ${width} values per row (${i === 0 ? first : `${where}[${i - 1}].outDim`})`);
      }
      requireFloats(layer.weight, layer.outDim * layer.inDim, `${what}.weight (${layer.outDim}×${layer.inDim})`, fail);
      requireFloats(layer.bias, layer.outDim, `${what}.bias`, fail);
      if (layer.activation !== 'relu' && layer.activation !== 'none') fail(`${what}.activation must be 'relu' or 'none', not ${describe(layer.activation)}`);
      if (layer.layerNorm !== undefined) {
        if (!isObject(layer.layerNorm)) fail(`${what}.layerNorm must be an object`);
        requireFloats(layer.layerNorm.gamma, layer.outDim, `${what}.layerNorm.gamma`, fail);
        requireFloats(layer.layerNorm.beta, layer.outDim, `${what}.layerNorm.beta`, fail);
        const epsilon = layer.layerNorm.epsilon;
        if (epsilon !== undefined && !(typeof epsilon === 'number' && Number.isFinite(epsilon) && epsilon > 0)) {
          fail(`${what}.layerNorm.epsilon must be a positive number, not ${describe(epsilon)}`);
        }
      }
      if (layer.residual !== undefined && typeof layer.residual !== 'boolean') fail(`${what}.residual must be a boolean`);
      if (layer.residual && layer.inDim !== layer.outDim) {
        fail(`${what} is residual but its inDim (${layer.inDim}) differs from its outDim (${layer.outDim})`);
      }
      width = layer.outDim;
    });
    return width;
  };
  if (!Array.isArray(def.layers)) fail(`layers must be an array, not ${describe(def.layers)}`);
  const bottom = validateLayers(def.layers, featureWidth(def), 'layers', 'the concatenated input features');
  let width = bottom;
  const experts = def.experts ?? [];
  if (!Array.isArray(experts)) fail(`experts must be an array of layer arrays, not ${describe(def.experts)}`);
  experts.forEach((expert, e) => {
    if (!Array.isArray(expert) || expert.length === 0) fail(`experts[${e}] must be a non-empty array of layers, not ${describe(expert)}`);
    const out = validateLayers(expert, bottom, `experts[${e}]`, def.layers.length === 0 ? 'the concatenated input features' : "the last layer's outDim");
    if (e > 0 && out !== width) fail(`experts[${e}] outputs ${out} values per row but experts[0] outputs ${width}`);
    width = out;
  });
  const headInput = experts.length > 0 ? "the experts' outDim" : def.layers.length === 0 ? 'the concatenated input features' : "the last layer's outDim";

  if (!Array.isArray(def.heads) || def.heads.length === 0) fail('heads must be a non-empty array: a tower needs at least one output');
  const outputs = new Set<string>();
  def.heads.forEach((head, i) => {
    const what = `heads[${i}]`;
    if (!isObject(head)) fail(`${what} must be an object`);
    if (!isName(head.output)) fail(`${what}.output must be a non-empty string, not ${describe(head.output)}`);
    if (outputs.has(head.output)) fail(`${what}.output '${head.output}' is used by another head`);
    if (graphInputs.has(head.output)) fail(`${what}.output '${head.output}' is also the name of a graph input`);
    outputs.add(head.output);
    if (!isPositiveInteger(head.inDim)) fail(`${what}.inDim must be a positive integer, not ${describe(head.inDim)}`);
    if (!isPositiveInteger(head.outDim)) fail(`${what}.outDim must be a positive integer, not ${describe(head.outDim)}`);
    if (head.inDim !== width) fail(`${what}.inDim is ${head.inDim} but it receives ${width} values per row (${headInput})`);
    if (experts.length === 0 && head.gate !== undefined) fail(`${what} has a gate but the tower has no experts`);
    if (experts.length > 0) {
      if (!isObject(head.gate)) fail(`${what}.gate must be an object (one gate per head with experts), not ${describe(head.gate)}`);
      requireFloats(head.gate.weight, experts.length * bottom, `${what}.gate.weight (${experts.length}×${bottom})`, fail);
      requireFloats(head.gate.bias, experts.length, `${what}.gate.bias`, fail);
    }
    requireFloats(head.weight, head.outDim * head.inDim, `${what}.weight (${head.outDim}×${head.inDim})`, fail);
    requireFloats(head.bias, head.outDim, `${what}.bias`, fail);
    if (typeof head.normalize !== 'boolean') fail(`${what}.normalize must be a boolean, not ${describe(head.normalize)}`);
  });
}

/** The graph inputs a tower's ONNX model declares (and its forward pass takes), in order. */
export function towerGraphInputs(def: TowerDefinition): TowerGraphInput[] {
  return def.inputs.flatMap((input): TowerGraphInput[] => {
    switch (input.kind) {
      case 'ids':
        return [{ name: input.input, type: 'int32', dims: [BATCH_DIM] }];
      case 'bag': {
        const length = `${input.ids}_length`;
        return [
          { name: input.ids, type: 'int32', dims: [BATCH_DIM, length] },
          { name: input.mask, type: 'float32', dims: [BATCH_DIM, length] },
        ];
      }
      case 'dense':
        return [{ name: input.input, type: 'float32', dims: [BATCH_DIM, input.width] }];
    }
  });
}

// ---------------------------------------------------------------------------------------------
// ONNX export

export interface BuildTowerOptions {
  /** ModelProto.metadata_props. */
  metadata?: Record<string, string>;
  /** ModelProto.producer_version (the producer name is 'ebrix'). */
  producerVersion?: string;
}

function requireFinite(data: Float32Array, what: string): void {
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i]!)) throw new InvalidSpecError(`${what}[${i}] is ${data[i]}; exported weights must be finite`);
  }
}

/**
 * Builds the tower's ONNX model (opset 18). Index inputs are int32 (Gather takes them as they
 * come from the encoder); the batch axis is symbolic. Tables read by no input are left out.
 * Besides validateTower's checks, every weight must be finite.
 */
export function buildTowerModel(def: TowerDefinition, options: BuildTowerOptions = {}): Uint8Array {
  validateTower(def);
  const tower = `Tower '${def.name}'`;
  const b = new GraphBuilder(def.name);
  for (const input of towerGraphInputs(def)) b.input(input.name, input.type, input.dims);
  for (const head of def.heads) b.output(head.output, 'float32', [BATCH_DIM, head.outDim]);

  // Shared constants and tables, created on first use so that the graph holds only what it reads.
  const constants = new Map<string, string>();
  const constant = (hint: string, data: Float32Array | BigInt64Array, dims: number[]): string => {
    let name = constants.get(hint);
    if (name === undefined) {
      name = b.initializer(b.uniqueName(hint), data, dims);
      constants.set(hint, name);
    }
    return name;
  };
  const axisLast = (): string => constant('axes_last', BigInt64Array.of(-1n), [1]);
  const axisOne = (): string => constant('axes_1', BigInt64Array.of(1n), [1]);
  const tables = new Map<string, string>();
  const table = (name: string): string => {
    let initializer = tables.get(name);
    if (initializer === undefined) {
      const t = def.tables[name]!;
      requireFinite(t.data, `${tower}: table '${name}'`);
      initializer = b.initializer(b.uniqueName(`table/${name}`), t.data, [t.rows, t.dim]);
      tables.set(name, initializer);
    }
    return initializer;
  };
  const weights = (label: string, prefix: string, weight: Float32Array, bias: Float32Array, outDim: number, inDim: number): [string, string] => {
    requireFinite(weight, `${tower}: ${label}.weight`);
    requireFinite(bias, `${tower}: ${label}.bias`);
    return [b.initializer(b.uniqueName(`${prefix}/weight`), weight, [outDim, inDim]), b.initializer(b.uniqueName(`${prefix}/bias`), bias, [outDim])];
  };
  const gemm = (x: string, w: string, bias: string, output: string): string => b.node('Gemm', [x, w, bias], output, { transB: attr.int(1) });

  const features = def.inputs.map((input): string => {
    switch (input.kind) {
      case 'ids':
        return b.node('Gather', [table(input.table), input.input], b.uniqueName(`${input.input}/embedding`), { axis: attr.int(0) });
      case 'bag': {
        const rows = b.node('Gather', [table(input.table), input.ids], b.uniqueName(`${input.ids}/rows`), { axis: attr.int(0) });
        const mask = b.node('Unsqueeze', [input.mask, axisLast()], b.uniqueName(`${input.mask}/unsqueezed`));
        const masked = b.node('Mul', [rows, mask], b.uniqueName(`${input.ids}/masked`));
        const sum = b.node('ReduceSum', [masked, axisOne()], b.uniqueName(`${input.ids}/sum`), { keepdims: attr.int(0) });
        if (input.pooling === 'sum') return sum;
        const count = b.node('ReduceSum', [input.mask, axisOne()], b.uniqueName(`${input.mask}/count`), { keepdims: attr.int(1) });
        const one = constant('one', Float32Array.of(1), []);
        const divisor = b.node('Max', [count, one], b.uniqueName(`${input.mask}/divisor`));
        return b.node('Div', [sum, divisor], b.uniqueName(`${input.ids}/mean`));
      }
      case 'dense':
        return input.input;
    }
  });
  let x = features.length === 1 ? features[0]! : b.node('Concat', features, b.uniqueName('features'), { axis: attr.int(1) });

  const layers = (stack: DenseLayer[], input: string, where: string): string => {
    let x = input;
    stack.forEach((layer, i) => {
      const prefix = `${where}[${i}]`;
      const [w, bias] = weights(prefix, prefix, layer.weight, layer.bias, layer.outDim, layer.inDim);
      let y = gemm(x, w, bias, b.uniqueName(`${prefix}/linear`));
      if (layer.layerNorm) {
        const { gamma, beta } = layer.layerNorm;
        requireFinite(gamma, `${tower}: ${prefix}.layerNorm.gamma`);
        requireFinite(beta, `${tower}: ${prefix}.layerNorm.beta`);
        const g = b.initializer(b.uniqueName(`${prefix}/gamma`), gamma, [layer.outDim]);
        const bt = b.initializer(b.uniqueName(`${prefix}/beta`), beta, [layer.outDim]);
        y = b.node('LayerNormalization', [y, g, bt], b.uniqueName(`${prefix}/norm`), {
          axis: attr.int(-1),
          epsilon: attr.float(layer.layerNorm.epsilon ?? DEFAULT_LAYER_NORM_EPSILON),
        });
      }
      if (layer.activation === 'relu') y = b.node('Relu', [y], b.uniqueName(`${prefix}/relu`));
      if (layer.residual) y = b.node('Add', [x, y], b.uniqueName(`${prefix}/residual`));
      x = y;
    });
    return x;
  };
  x = layers(def.layers, x, 'layers');

  // Experts stacked as [batch, experts, width]; each head weighs them with its own softmax gate.
  const experts = def.experts ?? [];
  let stacked = '';
  if (experts.length > 0) {
    const axisMiddle = constant('axes_1', BigInt64Array.of(1n), [1]);
    const outputs = experts.map((expert, e) => {
      const y = layers(expert, x, `experts[${e}]`);
      return b.node('Unsqueeze', [y, axisMiddle], b.uniqueName(`experts[${e}]/unsqueezed`));
    });
    stacked = outputs.length === 1 ? outputs[0]! : b.node('Concat', outputs, b.uniqueName('experts'), { axis: attr.int(1) });
  }
  const headInput = (head: TowerHead): string => {
    if (experts.length === 0) return x;
    const gate = head.gate!;
    const [w, bias] = weights(`head '${head.output}' gate`, `${head.output}/gate`, gate.weight, gate.bias, experts.length, gate.weight.length / experts.length);
    const logits = gemm(x, w, bias, b.uniqueName(`${head.output}/gate/logits`));
    const g = b.node('Softmax', [logits], b.uniqueName(`${head.output}/gate/softmax`), { axis: attr.int(-1) });
    const g3 = b.node('Unsqueeze', [g, axisLast()], b.uniqueName(`${head.output}/gate/unsqueezed`));
    const weighted = b.node('Mul', [stacked, g3], b.uniqueName(`${head.output}/weighted`));
    return b.node('ReduceSum', [weighted, axisOne()], b.uniqueName(`${head.output}/mixture`), { keepdims: attr.int(0) });
  };

  for (const head of def.heads) {
    const input = headInput(head);
    const [w, bias] = weights(`head '${head.output}'`, head.output, head.weight, head.bias, head.outDim, head.inDim);
    if (!head.normalize) {
      gemm(input, w, bias, head.output);
      continue;
    }
    const h = gemm(input, w, bias, b.uniqueName(`${head.output}/linear`));
    // ReduceL2 → Max(·, 1e-12) → Div is exactly x / max(‖x‖, 1e-12); LpNormalization would
    // leave the epsilon (and so an all-zero row's result) to the runtime.
    const norm = b.node('ReduceL2', [h, axisLast()], b.uniqueName(`${head.output}/norm`), { keepdims: attr.int(1) });
    const floor = constant('normalize_epsilon', Float32Array.of(NORMALIZE_EPSILON), []);
    const divisor = b.node('Max', [norm, floor], b.uniqueName(`${head.output}/divisor`));
    b.node('Div', [h, divisor], head.output);
  }

  return b.toBytes({
    producerName: 'ebrix',
    producerVersion: options.producerVersion ?? '',
    docString: `ebrix tower '${def.name}'`,
    ...(options.metadata ? { metadata: options.metadata } : {}),
  });
}

// ---------------------------------------------------------------------------------------------
// Reference forward pass

/**
 * Computes the tower in plain TypeScript, on the same inputs its ONNX model takes (see
 * towerGraphInputs). Sums accumulate in float64 and every stage's result is stored as float32,
 * as the runtime stores its intermediate tensors. An id outside [0, rows) throws; so do missing
 * inputs, wrong array types and inconsistent dims.
 */
export function towerForward(def: TowerDefinition, inputs: Record<string, TensorData>): Record<string, TowerOutput> {
  validateTower(def);
  if (!isObject(inputs)) throw invalid('an object of input tensors', 'inputs', inputs);
  let batch: number | undefined;
  let batchFrom = '';
  const bagLengths = new Map<string, number>();
  for (const spec of towerGraphInputs(def)) {
    const tensor = Object.hasOwn(inputs, spec.name) ? inputs[spec.name] : undefined;
    if (!isObject(tensor)) throw invalid('a { data, dims } tensor', `input '${spec.name}'`, tensor);
    const Expected = spec.type === 'int32' ? Int32Array : Float32Array;
    if (!(tensor.data instanceof Expected)) throw invalid(`an ${Expected.name}`, `input '${spec.name}' data`, tensor.data);
    const dims = tensor.dims;
    if (!Array.isArray(dims) || dims.length !== spec.dims.length || !dims.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw invalid(`${spec.dims.length} non-negative integer dims [${spec.dims.join(', ')}]`, `input '${spec.name}' dims`, dims);
    }
    const count = dims.reduce((a, d) => a * d, 1);
    if (tensor.data.length !== count) throw invalid(`${count} values (dims [${dims.join(', ')}])`, `input '${spec.name}' data`, tensor.data);
    spec.dims.forEach((dim, axis) => {
      const actual = dims[axis]!;
      if (dim === BATCH_DIM) {
        if (batch === undefined) [batch, batchFrom] = [actual, spec.name];
        else if (actual !== batch) {
          throw new DimensionMismatchError(`Input '${spec.name}' has a batch of ${actual} rows but '${batchFrom}' has ${batch}`);
        }
      } else if (typeof dim === 'string') {
        const known = bagLengths.get(dim);
        if (known === undefined) bagLengths.set(dim, actual);
        else if (known !== actual) throw new DimensionMismatchError(`Input '${spec.name}' has bag length ${actual} but its ids have ${known}`);
      } else if (actual !== dim) {
        throw new DimensionMismatchError(`Expected ${dim} values per row for input '${spec.name}' but received ${actual}`);
      }
    });
  }
  const rows = batch ?? 0;

  const width = featureWidth(def);
  let x: Float32Array = new Float32Array(rows * width);
  let offset = 0;
  for (const input of def.inputs) {
    if (input.kind === 'dense') {
      const data = inputs[input.input]!.data;
      for (let r = 0; r < rows; r++) x.set(data.subarray(r * input.width, (r + 1) * input.width), r * width + offset);
      offset += input.width;
      continue;
    }
    const table = def.tables[input.table]!;
    const rowOf = (ids: Int32Array, at: number, name: string): number => {
      const id = ids[at]!;
      if (id < 0 || id >= table.rows) {
        throw invalid(`an id from 0 to ${table.rows - 1} (table '${input.table}')`, `${name}[${at}]`, id);
      }
      return id * table.dim;
    };
    if (input.kind === 'ids') {
      const ids = inputs[input.input]!.data as Int32Array;
      for (let r = 0; r < rows; r++) {
        const start = rowOf(ids, r, `input '${input.input}'`);
        x.set(table.data.subarray(start, start + table.dim), r * width + offset);
      }
    } else {
      const ids = inputs[input.ids]!.data as Int32Array;
      const mask = inputs[input.mask]!.data as Float32Array;
      const length = bagLengths.get(`${input.ids}_length`) ?? 0;
      const sum = new Float64Array(table.dim);
      for (let r = 0; r < rows; r++) {
        sum.fill(0);
        let count = 0;
        for (let l = 0; l < length; l++) {
          const at = r * length + l;
          const start = rowOf(ids, at, `input '${input.ids}'`);
          const m = mask[at]!;
          count += m;
          for (let d = 0; d < table.dim; d++) sum[d]! += m * table.data[start + d]!;
        }
        const divisor = input.pooling === 'mean' ? Math.max(count, 1) : 1;
        for (let d = 0; d < table.dim; d++) x[r * width + offset + d] = sum[d]! / divisor;
      }
    }
    offset += table.dim;
  }

  const applyLayers = (stack: DenseLayer[], input: Float32Array): Float32Array => {
    let y0 = input;
    for (const layer of stack) {
      const y = linear(y0, rows, layer.weight, layer.bias, layer.inDim, layer.outDim);
      if (layer.layerNorm) layerNorm(y, rows, layer.outDim, layer.layerNorm.gamma, layer.layerNorm.beta, layer.layerNorm.epsilon ?? DEFAULT_LAYER_NORM_EPSILON);
      if (layer.activation === 'relu') for (let i = 0; i < y.length; i++) y[i] = Math.max(y[i]!, 0);
      if (layer.residual) for (let i = 0; i < y.length; i++) y[i] = y0[i]! + y[i]!;
      y0 = y;
    }
    return y0;
  };
  x = applyLayers(def.layers, x);
  const bottomWidth = def.layers.length === 0 ? width : def.layers[def.layers.length - 1]!.outDim;
  const experts = (def.experts ?? []).map((expert) => applyLayers(expert, x));
  const expertWidth = def.experts && def.experts.length > 0 ? def.experts[0]![def.experts[0]!.length - 1]!.outDim : bottomWidth;

  const outputs: Record<string, TowerOutput> = {};
  for (const head of def.heads) {
    let input = x;
    if (experts.length > 0) {
      const E = experts.length;
      const gate = linear(x, rows, head.gate!.weight, head.gate!.bias, bottomWidth, E);
      input = new Float32Array(rows * expertWidth);
      const g = new Float64Array(E);
      const m = new Float64Array(expertWidth);
      for (let r = 0; r < rows; r++) {
        let top = -Infinity;
        for (let e = 0; e < E; e++) top = Math.max(top, gate[r * E + e]!);
        let sum = 0;
        for (let e = 0; e < E; e++) sum += (g[e] = Math.exp(gate[r * E + e]! - top));
        // The softmax is stored as float32, as the runtime's tensor is.
        for (let e = 0; e < E; e++) g[e] = Math.fround(g[e]! / sum);
        m.fill(0);
        for (let e = 0; e < E; e++) {
          const y = experts[e]!;
          for (let d = 0; d < expertWidth; d++) m[d]! += g[e]! * y[r * expertWidth + d]!;
        }
        input.set(m, r * expertWidth);
      }
    }
    const h = linear(input, rows, head.weight, head.bias, head.inDim, head.outDim);
    if (head.normalize) {
      for (let r = 0; r < rows; r++) {
        const row = h.subarray(r * head.outDim, (r + 1) * head.outDim);
        let squares = 0;
        for (const v of row) squares += v * v;
        const divisor = Math.max(Math.sqrt(squares), NORMALIZE_EPSILON);
        for (let d = 0; d < row.length; d++) row[d] = row[d]! / divisor;
      }
    }
    outputs[head.output] = { data: h, dims: [rows, head.outDim] };
  }
  return outputs;
}

/** y = x Wᵀ + b for row-major x (rows × inDim) and W (outDim × inDim). */
function linear(x: Float32Array, rows: number, weight: Float32Array, bias: Float32Array, inDim: number, outDim: number): Float32Array {
  const y = new Float32Array(rows * outDim);
  for (let r = 0; r < rows; r++) {
    const xr = r * inDim;
    for (let o = 0; o < outDim; o++) {
      const wo = o * inDim;
      let acc = bias[o]!;
      for (let i = 0; i < inDim; i++) acc += x[xr + i]! * weight[wo + i]!;
      y[r * outDim + o] = acc;
    }
  }
  return y;
}

/** In place, per row: (y − mean) / sqrt(var + ε) · γ + β, with the biased variance. */
function layerNorm(y: Float32Array, rows: number, dim: number, gamma: Float32Array, beta: Float32Array, epsilon: number): void {
  // The graph stores ε as a float32 attribute; use the same value here.
  const eps = Math.fround(epsilon);
  for (let r = 0; r < rows; r++) {
    const row = y.subarray(r * dim, (r + 1) * dim);
    let mean = 0;
    for (const v of row) mean += v;
    mean /= dim;
    let variance = 0;
    for (const v of row) variance += (v - mean) ** 2;
    variance /= dim;
    const scale = 1 / Math.sqrt(variance + eps);
    for (let d = 0; d < dim; d++) row[d] = (row[d]! - mean) * scale * gamma[d]! + beta[d]!;
  }
}
