/**
 * Where batches come from. Examples held in memory are checked and encoded once (items
 * de-duplicated by key) and reshuffled each epoch from the seed; streamed examples (a function
 * returning an iterable, e.g. readJsonl over a file larger than memory) are encoded a batch at
 * a time, in the order the stream gives them.
 */
import { InvalidArgumentError, InvalidRecordError } from '../errors.js';
import type { FeatureEncoder } from '../model/features.js';
import { seededUniform } from '../random.js';
import { checkExample, itemKeyOf, PackedRows, type Example } from './batches.js';

/** One batch's own rows, before extra negatives are appended. */
export interface RawBatch {
  size: number;
  queries: PackedRows;
  items: PackedRows;
  itemKeys: Uint32Array;
  task: Int32Array;
  label: Float32Array;
  weight: Float32Array;
}

export type ExampleStream = () => Iterable<Example> | AsyncIterable<Example>;

export interface Encoders {
  query: FeatureEncoder;
  item: FeatureEncoder;
  queryOrder: readonly string[];
  itemOrder: readonly string[];
  tasks: ReadonlyMap<string, number>;
  /** Task kinds by index: binary labels must lie in [0, 1]. */
  binary: readonly boolean[];
}

export interface BatchSource {
  /** Examples per epoch, when known. */
  readonly size: number | undefined;
  /** Batches of one epoch, skipping the first `skip` (to resume mid-epoch). */
  batches(epoch: number, batchSize: number, skip: number): AsyncIterable<RawBatch>;
}

function checkLabel(example: Example, index: number, enc: Encoders): number {
  const label = example.label ?? 1;
  if (enc.binary[enc.tasks.get(example.task)!] && !(label >= 0 && label <= 1)) {
    throw new InvalidRecordError(`Expected a label from 0 to 1 (task ${example.task} is binary) for example ${index} but received ${label}`);
  }
  return label;
}

/** A seeded permutation of 0..n-1 (Fisher–Yates). */
export function permutation(n: number, seed: number): Int32Array {
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  const random = seededUniform(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const t = order[i]!;
    order[i] = order[j]!;
    order[j] = t;
  }
  return order;
}

export class MemorySource implements BatchSource {
  readonly size: number;
  readonly queries: PackedRows;
  /** Unique items, and each example's row among them. */
  readonly items: PackedRows;
  readonly itemRecords: Record<string, unknown>[];
  readonly uniqueKeys: Uint32Array;
  readonly #itemRow: Int32Array;
  readonly #task: Int32Array;
  readonly #label: Float32Array;
  readonly #weight: Float32Array;

  constructor(
    examples: readonly Example[],
    enc: Encoders,
    readonly shuffleSeed: number | undefined,
  ) {
    if (!Array.isArray(examples) || examples.length === 0) {
      throw new InvalidArgumentError(`Expected a non-empty array of examples but received ${Array.isArray(examples) ? 'none' : typeof examples}`);
    }
    const n = examples.length;
    this.size = n;
    this.#task = new Int32Array(n);
    this.#label = new Float32Array(n);
    this.#weight = new Float32Array(n);
    this.#itemRow = new Int32Array(n);
    const rowOfKey = new Map<number, number>();
    const itemRecords: Record<string, unknown>[] = [];
    const keys: number[] = [];
    const queries: unknown[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const e = checkExample(examples[i], i, enc.tasks);
      this.#task[i] = enc.tasks.get(e.task)!;
      this.#label[i] = checkLabel(e, i, enc);
      this.#weight[i] = e.weight ?? 1;
      queries[i] = e.query;
      const key = itemKeyOf(e);
      let row = rowOfKey.get(key);
      if (row === undefined) {
        row = itemRecords.length;
        rowOfKey.set(key, row);
        itemRecords.push(e.item);
        keys.push(key);
      }
      this.#itemRow[i] = row;
    }
    this.queries = PackedRows.encode(enc.query, enc.queryOrder, queries);
    this.items = PackedRows.encode(enc.item, enc.itemOrder, itemRecords);
    this.itemRecords = itemRecords;
    this.uniqueKeys = Uint32Array.from(keys);
  }

  async *batches(epoch: number, batchSize: number, skip: number): AsyncIterable<RawBatch> {
    const order = this.shuffleSeed === undefined ? null : permutation(this.size, (this.shuffleSeed * 1000003 + epoch) >>> 0);
    for (let start = skip * batchSize; start < this.size; start += batchSize) {
      const size = Math.min(batchSize, this.size - start);
      const rows = new Int32Array(size);
      for (let i = 0; i < size; i++) rows[i] = order ? order[start + i]! : start + i;
      yield this.batchOf(rows);
    }
  }

  batchOf(rows: Int32Array): RawBatch {
    const size = rows.length;
    const queries = PackedRows.like(this.queries, size);
    this.queries.gather(rows, queries, 0);
    const itemRows = rows.map((r) => this.#itemRow[r]!);
    const items = PackedRows.like(this.items, size);
    this.items.gather(itemRows, items, 0);
    return {
      size,
      queries,
      items,
      itemKeys: Uint32Array.from(itemRows, (r) => this.uniqueKeys[r]!),
      task: rows.map((r) => this.#task[r]!),
      label: Float32Array.from(rows, (r) => this.#label[r]!),
      weight: Float32Array.from(rows, (r) => this.#weight[r]!),
    };
  }
}

export class StreamSource implements BatchSource {
  readonly size = undefined;
  constructor(
    readonly stream: ExampleStream,
    readonly enc: Encoders,
  ) {
    if (typeof stream !== 'function') throw new InvalidArgumentError('Expected an array of examples or a function returning an iterable of them for examples');
  }

  async *batches(_epoch: number, batchSize: number, skip: number): AsyncIterable<RawBatch> {
    let pending: Example[] = [];
    let index = 0;
    let skipped = 0;
    const toSkip = skip * batchSize;
    for await (const value of this.stream()) {
      const example = checkExample(value, index, this.enc.tasks);
      index++;
      if (skipped < toSkip) {
        skipped++;
        continue;
      }
      pending.push(example);
      if (pending.length === batchSize) {
        yield this.#encode(pending, index - pending.length);
        pending = [];
      }
    }
    if (pending.length > 0) yield this.#encode(pending, index - pending.length);
  }

  #encode(examples: Example[], first: number): RawBatch {
    const size = examples.length;
    return {
      size,
      queries: PackedRows.encode(this.enc.query, this.enc.queryOrder, examples.map((e) => e.query)),
      items: PackedRows.encode(this.enc.item, this.enc.itemOrder, examples.map((e) => e.item)),
      itemKeys: Uint32Array.from(examples, itemKeyOf),
      task: Int32Array.from(examples, (e) => this.enc.tasks.get(e.task)!),
      label: Float32Array.from(examples, (e, i) => checkLabel(e, first + i, this.enc)),
      weight: Float32Array.from(examples, (e) => e.weight ?? 1),
    };
  }
}
