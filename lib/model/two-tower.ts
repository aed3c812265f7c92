/**
 * TwoTowerModel: a model package's query and item towers, opened as onnxruntime-node
 * sessions (each in a worker thread, see ort-session.ts) behind the package's own feature
 * encoders.
 */
import type * as ort from 'onnxruntime-node';

import { CorruptModelError, DimensionMismatchError, DisposedError, InvalidRecordError } from '../errors.js';
import { Batcher, type BatcherOptions, type BatcherStats } from '../serve/batcher.js';
import { invalid, requirePositiveInteger } from '../validate.js';
import { FeatureEncoder, type EncodedTensor } from './features.js';
import { WorkerSession, type WireTensor } from './ort-session.js';
import { outputFor, readModelPackage, type ModelManifest, type TowerRole } from './package.js';

export interface LoadOptions {
  /** onnxruntime intra-op threads per session (default: onnxruntime's choice). */
  threads?: number;
  /** onnxruntime execution providers, e.g. ['cpu'] (default) or ['cuda', 'cpu']. */
  executionProviders?: ort.InferenceSession.ExecutionProviderConfig[];
  /** Batching of single-record `embedQuery` calls. */
  batching?: Partial<BatcherOptions>;
}

export interface EmbedOptions {
  /** A task head's embedding instead of the default one. */
  task?: string;
}

const DEFAULT_BATCHING: BatcherOptions = { maxBatchSize: 64, maxDelayMs: 2, maxQueue: 4096, dispatchWhenIdle: true };

class Tower {
  readonly encoder: FeatureEncoder;
  readonly int64Inputs = new Set<string>();
  constructor(
    readonly role: TowerRole,
    readonly session: WorkerSession,
    readonly manifest: ModelManifest,
  ) {
    this.encoder = new FeatureEncoder(manifest.towers[role].features);
    const { inputNames, outputNames, inputTypes } = session.info;
    const missingInputs = this.encoder.inputs.map((i) => i.name).filter((n) => !inputNames.includes(n));
    if (missingInputs.length > 0) {
      throw new CorruptModelError(`The ${role} tower has no input named ${missingInputs.join(', ')} that its features encode`);
    }
    // Index inputs are encoded as int32; graphs exported elsewhere (PyTorch) often take int64.
    for (const input of this.encoder.inputs) {
      const type = inputTypes[input.name];
      const compatible = type === input.type || (input.type === 'int32' && type === 'int64');
      if (!compatible) {
        throw new CorruptModelError(`The ${role} tower's input ${input.name} is ${type} but its feature encodes ${input.type}`);
      }
      if (type === 'int64') this.int64Inputs.add(input.name);
    }
    const outputs = [manifest.towers[role].output, ...Object.values(manifest.towers[role].taskOutputs)];
    const missingOutputs = outputs.filter((o) => !outputNames.includes(o));
    if (missingOutputs.length > 0) {
      throw new CorruptModelError(`The ${role} tower has no output named ${missingOutputs.join(', ')}`);
    }
  }

  async embed(records: readonly unknown[], task: string | undefined): Promise<Float32Array> {
    if (!Array.isArray(records)) throw invalid('an array of records', 'records', records);
    const dim = this.manifest.dim;
    if (records.length === 0) return new Float32Array(0);
    const output = outputFor(this.manifest, this.role, task);
    const feeds = toFeeds(this.encoder.encode(records), this.int64Inputs);
    const result = await this.session.run(feeds, [output]);
    const tensor = result[output];
    if (tensor === undefined || tensor.type !== 'float32') {
      throw new CorruptModelError(`The ${this.role} tower's output ${output} is not a float32 tensor`);
    }
    if (tensor.dims.length !== 2 || tensor.dims[0] !== records.length || tensor.dims[1] !== dim) {
      throw new DimensionMismatchError(
        `Expected [${records.length}, ${dim}] from the ${this.role} tower's output ${output} but received [${tensor.dims.join(', ')}]`,
      );
    }
    return tensor.data as Float32Array;
  }
}

function toFeeds(encoded: Record<string, EncodedTensor>, int64Inputs: ReadonlySet<string>): Record<string, WireTensor> {
  const feeds: Record<string, WireTensor> = {};
  for (const [name, t] of Object.entries(encoded)) {
    if (t.type === 'int32' && int64Inputs.has(name)) {
      const wide = new BigInt64Array(t.data.length);
      for (let i = 0; i < wide.length; i++) wide[i] = BigInt(t.data[i]!);
      feeds[name] = { type: 'int64', data: wide, dims: t.dims };
    } else {
      feeds[name] = { type: t.type, data: t.data, dims: t.dims };
    }
  }
  return feeds;
}

export class TwoTowerModel {
  readonly manifest: ModelManifest;
  #towers: Record<TowerRole, Tower> | undefined;
  #batchers = new Map<string, Batcher<unknown, Float32Array>>();
  #batching: BatcherOptions;

  private constructor(manifest: ModelManifest, towers: Record<TowerRole, Tower>, batching: BatcherOptions) {
    this.manifest = manifest;
    this.#towers = towers;
    this.#batching = batching;
  }

  /**
   * Opens a model package: checks the manifest and every file's checksum
   * (EBRIX_CORRUPT_MODEL on any mismatch), then opens one onnxruntime session per tower.
   */
  static async load(dir: string, options: LoadOptions = {}): Promise<TwoTowerModel> {
    if (typeof dir !== 'string' || dir.length === 0) throw invalid('a directory path', 'dir', dir);
    const sessionOptions: ort.InferenceSession.SessionOptions = {
      executionProviders: options.executionProviders ?? ['cpu'],
      graphOptimizationLevel: 'all',
    };
    if (options.threads !== undefined) {
      sessionOptions.intraOpNumThreads = requirePositiveInteger(options.threads, 'threads', 4096);
      sessionOptions.interOpNumThreads = 1;
    }
    const batching: BatcherOptions = { ...DEFAULT_BATCHING, ...options.batching };
    // A larger batch than the default queue would make the defaults invalid: scale the queue.
    if (options.batching?.maxQueue === undefined) {
      batching.maxQueue = Math.max(DEFAULT_BATCHING.maxQueue!, 10 * batching.maxBatchSize);
    }
    new Batcher<unknown, unknown>(() => [], batching).close(); // validates the options now, not on the first call
    const { manifest, files } = await readModelPackage(dir);
    const open = async (role: TowerRole): Promise<Tower> => {
      const bytes = files.get(manifest.towers[role].file)!;
      let session: WorkerSession;
      try {
        session = await WorkerSession.open(bytes, sessionOptions);
      } catch (error) {
        throw new CorruptModelError(`onnxruntime cannot open the ${role} tower: ${(error as Error).message}`);
      }
      try {
        return new Tower(role, session, manifest);
      } catch (error) {
        await session.release();
        throw error;
      }
    };
    const query = await open('query');
    let item: Tower;
    try {
      item = await open('item');
    } catch (error) {
      await query.session.release();
      throw error;
    }
    return new TwoTowerModel(manifest, { query, item }, batching);
  }

  /** The model version id; an index built from this model's items records it. */
  get version(): string {
    return this.manifest.version;
  }

  get dim(): number {
    return this.manifest.dim;
  }

  get disposed(): boolean {
    return this.#towers === undefined;
  }

  /** Embeds request records with the query tower: records.length × dim floats. */
  async embedQueries(records: readonly unknown[], options: EmbedOptions = {}): Promise<Float32Array> {
    return this.#live().query.embed(records, options.task);
  }

  /** Embeds item records with the item tower: records.length × dim floats. */
  async embedItems(records: readonly unknown[], options: EmbedOptions = {}): Promise<Float32Array> {
    return this.#live().item.embed(records, options.task);
  }

  /**
   * Embeds one request, batched with concurrent calls (see LoadOptions.batching). A record
   * that fails to encode fails only its own call. The result is a view into its batch's
   * buffer (as Node's pooled Buffers are): `slice()` it before transferring it elsewhere.
   */
  async embedQuery(record: unknown, options: EmbedOptions = {}): Promise<Float32Array> {
    const towers = this.#live();
    const task = options.task;
    outputFor(this.manifest, 'query', task);
    const key = task ?? '';
    let batcher = this.#batchers.get(key);
    if (batcher === undefined) {
      const dim = this.manifest.dim;
      // Views of the batch's one buffer, like Node's pooled Buffers: a copy per row is an
      // off-heap allocation per request, and at ~100k requests/s those GC pauses doubled the
      // p99 latency. So a row's `.buffer` holds the whole batch: copy (slice) a row before
      // transferring it to another thread.
      const split = (vectors: Float32Array, rows: number): Float32Array[] =>
        Array.from({ length: rows }, (_, i) => vectors.subarray(i * dim, (i + 1) * dim));
      batcher = new Batcher<unknown, Float32Array>(async (records) => {
        try {
          return split(await towers.query.embed(records, task), records.length);
        } catch (error) {
          if (!(error instanceof InvalidRecordError)) throw error;
        }
        // Some record does not encode: find which, so that only its caller fails.
        const good: unknown[] = [];
        const outcome = records.map((record): Error | undefined => {
          try {
            towers.query.encoder.encode([record]);
            good.push(record);
            return undefined;
          } catch (error) {
            return error as Error;
          }
        });
        const vectors = good.length > 0 ? split(await towers.query.embed(good, task), good.length) : [];
        let next = 0;
        return outcome.map((error) => error ?? vectors[next++]!);
      }, this.#batching);
      this.#batchers.set(key, batcher);
    }
    return batcher.call(record);
  }

  /** Statistics of the `embedQuery` batchers, by task ('' for the default output). */
  batchingStats(): Record<string, BatcherStats> {
    return Object.fromEntries([...this.#batchers].map(([task, b]) => [task, b.stats()]));
  }

  /** Closes the batchers (waiting calls still complete) and releases both sessions. */
  async dispose(): Promise<void> {
    const towers = this.#towers;
    if (towers === undefined) return;
    this.#towers = undefined;
    await Promise.all([...this.#batchers.values()].map((b) => b.close()));
    this.#batchers.clear();
    await towers.query.session.release();
    await towers.item.session.release();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  #live(): Record<TowerRole, Tower> {
    if (this.#towers === undefined) throw new DisposedError('model');
    return this.#towers;
  }
}

