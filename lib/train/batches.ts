/**
 * From examples to the native trainer's batches: records encoded into packed per-tensor
 * arrays (once, for data held in memory; per batch, for streamed data), rows gathered into a
 * batch, and the streaming item-frequency estimate behind the logQ correction.
 */
import { InvalidRecordError } from '../errors.js';
import { hashToken } from '../model/hash.js';
import { FeatureEncoder } from '../model/features.js';
import type { TowerDefinition } from '../model/onnx/tower.js';
import { describe } from '../validate.js';

/** One training example: a query record and an item record, for one task. */
export interface Example {
  task: string;
  query: Record<string, unknown>;
  item: Record<string, unknown>;
  /**
   * Identifies the item: rows with equal keys are the same item (accidental hits are masked,
   * and the frequency estimate counts them together). Default: the item record as JSON.
   */
  itemKey?: string | number;
  /** Binary (0..1) or regression target; retrieval tasks ignore it. Default 1. */
  label?: number;
  /** Weight of the example in its task's mean loss (default 1). */
  weight?: number;
}

export type Tensor = Int32Array | Float32Array;

/** Tensor names of a tower in the order the native trainer takes them. */
export function tensorOrder(def: TowerDefinition): string[] {
  return def.inputs.flatMap((input) => (input.kind === 'bag' ? [input.ids, input.mask] : [input.input]));
}

/** Rows of encoded records: one flat array per tensor, `widths[t]` values per row. */
export class PackedRows {
  private constructor(
    readonly rows: number,
    readonly tensors: Tensor[],
    readonly widths: number[],
  ) {}

  static encode(encoder: FeatureEncoder, order: readonly string[], records: readonly unknown[]): PackedRows {
    const encoded = encoder.encode(records);
    const tensors = order.map((name) => encoded[name]!.data);
    const widths = order.map((name) => encoded[name]!.dims.slice(1).reduce((a, d) => a * d, 1));
    return new PackedRows(records.length, tensors, widths);
  }

  /** Empty tensors of `rows` rows, shaped like this pack's. */
  static like(pack: PackedRows, rows: number): PackedRows {
    return new PackedRows(
      rows,
      pack.tensors.map((t, i) => new (t.constructor as typeof Int32Array | typeof Float32Array)(rows * pack.widths[i]!)),
      pack.widths,
    );
  }

  /** Copies this pack's rows `from[i]` to `into`'s rows `at + i`. */
  gather(from: ArrayLike<number>, into: PackedRows, at: number): void {
    for (let t = 0; t < this.tensors.length; t++) {
      const width = this.widths[t]!;
      const src = this.tensors[t]!;
      const dst = into.tensors[t]!;
      for (let i = 0; i < from.length; i++) {
        const row = from[i]!;
        dst.set(src.subarray(row * width, (row + 1) * width), (at + i) * width);
      }
    }
  }
}

/** A 32-bit key for an item: equal items get equal keys (up to hash collisions, 1 in 4·10⁹ per pair). */
export function itemKeyOf(example: { itemKey?: string | number; item: unknown }): number {
  const key = example.itemKey;
  if (typeof key === 'number') return hashToken(`#${key}`);
  if (typeof key === 'string') return hashToken(key);
  return hashToken(JSON.stringify(example.item));
}

/**
 * Streaming estimate of how often each item is a positive (Yi et al., "Sampling-bias-corrected
 * neural modeling for large corpus item recommendations", 2019): per hashed key, the step it was
 * last seen and a moving average of the steps between sightings. 1 / interval estimates how
 * many times per batch the item appears, which is what the in-batch softmax over-counts.
 */
export class FrequencyEstimator {
  readonly lastSeen: Float64Array;
  readonly interval: Float64Array;
  constructor(
    readonly buckets = 1 << 20,
    readonly rate = 0.05,
  ) {
    this.lastSeen = new Float64Array(buckets).fill(-1);
    this.interval = new Float64Array(buckets);
  }

  observe(keys: Uint32Array, count: number, step: number): void {
    for (let i = 0; i < count; i++) {
      const h = keys[i]! % this.buckets;
      const last = this.lastSeen[h]!;
      if (last < 0) this.interval[h] = step + 1;
      else if (last < step) this.interval[h] = (1 - this.rate) * this.interval[h]! + this.rate * (step - last);
      this.lastSeen[h] = step;
    }
  }

  /**
   * log q for each key: the expected times it appears in a batch, in-batch (1 / interval)
   * plus `uniform` (extra negatives drawn uniformly: count / corpus size).
   */
  logQ(keys: Uint32Array, out: Float32Array, uniform: number): void {
    for (let i = 0; i < keys.length; i++) {
      const h = keys[i]! % this.buckets;
      const interval = this.interval[h]!;
      const inBatch = interval > 0 ? 1 / Math.max(interval, 1) : 0;
      out[i] = Math.log(Math.max(inBatch + uniform, 1e-12));
    }
  }
}

/** Throws InvalidRecordError unless the example has a known task and object records. */
export function checkExample(example: unknown, index: number, taskIndex: ReadonlyMap<string, number>): Example {
  const where = `example ${index}`;
  if (example === null || typeof example !== 'object') throw new InvalidRecordError(`Expected an object for ${where} but received ${describe(example)}`);
  const e = example as Record<string, unknown>;
  if (typeof e.task !== 'string' || !taskIndex.has(e.task)) {
    throw new InvalidRecordError(`Expected one of the tasks ${[...taskIndex.keys()].join(', ')} for ${where}.task but received ${describe(e.task)}`);
  }
  for (const side of ['query', 'item'] as const) {
    const record = e[side];
    if (record === null || typeof record !== 'object' || Array.isArray(record)) {
      throw new InvalidRecordError(`Expected a record object for ${where}.${side} but received ${describe(record)}`);
    }
  }
  for (const key of ['label', 'weight'] as const) {
    const v = e[key];
    if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v) || (key === 'weight' && v < 0))) {
      throw new InvalidRecordError(`Expected a finite ${key === 'weight' ? 'number >= 0' : 'number'} for ${where}.${key} but received ${describe(v)}`);
    }
  }
  if (e.itemKey !== undefined && typeof e.itemKey !== 'string' && typeof e.itemKey !== 'number') {
    throw new InvalidRecordError(`Expected a string or number for ${where}.itemKey but received ${describe(e.itemKey)}`);
  }
  return e as unknown as Example;
}
