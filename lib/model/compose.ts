/**
 * From feature specs to tower definitions: which tensor inputs a tower reads, and a seeded
 * initial set of weights (the trainer starts from these; tests and benches use them as they
 * are). The definition is what lib/model/onnx/tower.ts turns into an ONNX graph.
 */
import { InvalidSpecError } from '../errors.js';
import { seededUniform } from '../random.js';
import { cardinality, type FeatureSpec } from './features.js';
import type { DenseLayer, EmbeddingTable, TowerDefinition, TowerHead, TowerInput } from './onnx/tower.js';

export interface TowerShape {
  name: string;
  features: readonly FeatureSpec[];
  /** Width of every embedding table. */
  embeddingDim: number;
  /** Hidden layer widths of the MLP after the concatenation (may be empty). */
  hidden: readonly number[];
  /** Output embedding dimension (every head). */
  outputDim: number;
  /** Extra heads, one per task, beside the default 'embedding' output. */
  tasks?: readonly string[];
  layerNorm?: boolean;
  /** Add the input back around hidden layers whose width does not change. */
  residual?: boolean;
  /** L2-normalise the head outputs (for cosine-style retrieval). */
  normalize?: boolean;
  pooling?: 'mean' | 'sum';
  /** Table name per feature name; features mapped to one name share a table. */
  tables?: Readonly<Record<string, string>>;
  /**
   * Mixture of experts after the hidden layers: `count` experts of `layers` widths each (with
   * the hidden layers' LayerNorm and residual settings, and `activation`, default 'relu'), and a
   * softmax gate per head, initialised to zero (an even mixture at the start).
   */
  experts?: { count: number; layers: readonly number[]; activation?: 'relu' | 'none' };
  seed?: number;
}

/** Tensor inputs and table names for features, in feature order. */
export function towerInputs(
  features: readonly FeatureSpec[],
  tableOf: (feature: FeatureSpec) => string,
  pooling: 'mean' | 'sum' = 'mean',
): TowerInput[] {
  return features.map((f): TowerInput => {
    switch (f.kind) {
      case 'categorical':
        return { kind: 'ids', input: f.name, table: tableOf(f) };
      case 'text':
        return { kind: 'bag', ids: `${f.name}.ids`, mask: `${f.name}.mask`, table: tableOf(f), pooling };
      case 'dense':
        return { kind: 'dense', input: f.name, width: f.fields.length };
    }
  });
}

/** A seeded tower with Xavier-uniform weights and zero biases, ready for export or training. */
export function initTower(shape: TowerShape): TowerDefinition {
  const random = seededUniform(shape.seed ?? 1);
  const tableName = (f: FeatureSpec): string => shape.tables?.[f.name] ?? f.name;
  const inputs = towerInputs(shape.features, tableName, shape.pooling ?? 'mean');
  const tables: Record<string, EmbeddingTable> = {};
  let width = 0;
  for (const f of shape.features) {
    if (f.kind === 'dense') {
      width += f.fields.length;
      continue;
    }
    const name = tableName(f);
    const rows = cardinality(f);
    const existing = tables[name];
    if (existing !== undefined && existing.rows !== rows) {
      throw new InvalidSpecError(`Features sharing table ${name} must have the same cardinality (${existing.rows} vs ${rows})`);
    }
    if (existing === undefined) {
      const data = new Float32Array(rows * shape.embeddingDim);
      const scale = 1 / Math.sqrt(shape.embeddingDim);
      for (let i = shape.embeddingDim; i < data.length; i++) data[i] = (random() * 2 - 1) * scale; // row 0 (OOV/padding) stays zero
      tables[name] = { rows, dim: shape.embeddingDim, data };
    }
    width += shape.embeddingDim;
  }
  const linear = (inDim: number, outDim: number): { weight: Float32Array; bias: Float32Array } => {
    const limit = Math.sqrt(6 / (inDim + outDim));
    const weight = new Float32Array(outDim * inDim);
    for (let i = 0; i < weight.length; i++) weight[i] = (random() * 2 - 1) * limit;
    return { weight, bias: new Float32Array(outDim) };
  };
  const stack = (widths: readonly number[], activation: 'relu' | 'none'): DenseLayer[] =>
    widths.map((outDim) => {
      const inDim = width;
      width = outDim;
      return {
        ...linear(inDim, outDim),
        inDim,
        outDim,
        activation,
        ...(shape.layerNorm ? { layerNorm: { gamma: new Float32Array(outDim).fill(1), beta: new Float32Array(outDim) } } : {}),
        ...(shape.residual && inDim === outDim ? { residual: true } : {}),
      };
    });
  const layers = stack(shape.hidden, 'relu');
  const bottom = width;
  const experts: DenseLayer[][] = [];
  for (let e = 0; e < (shape.experts?.count ?? 0); e++) {
    width = bottom;
    experts.push(stack(shape.experts!.layers, shape.experts!.activation ?? 'relu'));
  }
  const head = (output: string): TowerHead => ({
    output,
    ...linear(width, shape.outputDim),
    inDim: width,
    outDim: shape.outputDim,
    normalize: shape.normalize ?? false,
    ...(experts.length > 0 ? { gate: { weight: new Float32Array(experts.length * bottom), bias: new Float32Array(experts.length) } } : {}),
  });
  const heads = [head('embedding'), ...(shape.tasks ?? []).map(head)];
  return { name: shape.name, inputs, tables, layers, ...(experts.length > 0 ? { experts } : {}), heads };
}
