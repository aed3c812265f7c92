/**
 * Rankers: the second stage of a retrieval, which re-scores the candidates the index found.
 *
 * A ranker is a TypeScript function or an object with a `rank` method, given the request and
 * the candidates (id, tower score, item record) and returning one score per candidate, higher
 * is better. OnnxRanker is such an object over an ONNX model run by onnxruntime-node in a
 * worker thread (as the towers are; `inline` runs a small one on the calling thread), fed a
 * float32 matrix of features that its spec names, with concurrent calls batched into one run.
 */
import { readFile } from 'node:fs/promises';
import type * as ort from 'onnxruntime-node';

import { CorruptModelError, DisposedError, InvalidSpecError, IoError } from '../errors.js';
import { WorkerSession, type SessionInfo, type WireTensor } from '../model/ort-session.js';
import { invalid, requirePositiveInteger } from '../validate.js';
import { Batcher, type BatcherOptions } from './batcher.js';

/** A candidate as a ranker sees it. `record` is undefined when the retriever has no item lookup or the lookup lacks the id. */
export interface RankCandidate<R = Record<string, unknown>> {
  id: bigint;
  /** The index's score for the query embedding (inner product, cosine or −L2, as the index's metric). */
  towerScore: number;
  record: R | undefined;
}

/** One score per candidate, in candidate order. */
export type RankScores = ArrayLike<number>;

export type RankerFunction<Q = Record<string, unknown>, R = Record<string, unknown>> = (
  request: Q,
  candidates: readonly RankCandidate<R>[],
) => RankScores | Promise<RankScores>;

export interface RankerObject<Q = Record<string, unknown>, R = Record<string, unknown>> {
  rank(request: Q, candidates: readonly RankCandidate<R>[]): RankScores | Promise<RankScores>;
}

export type Ranker<Q = Record<string, unknown>, R = Record<string, unknown>> = RankerFunction<Q, R> | RankerObject<Q, R>;

/**
 * What an OnnxRanker feeds its model. Row i of the input is candidate i; column j is
 * `features[j]`:
 *
 * - `'towerScore'`: the candidate's score from the index;
 * - `'item.<field>'`: a field of the candidate's item record (`item.price`; a dotted path
 *   reaches nested objects: `item.stats.clicks`);
 * - `'request.<field>'`: a field of the request record, the same in every row.
 *
 * A number is used as it is, a boolean as 1 or 0; anything else (missing, a string, NaN,
 * ±Infinity) becomes `missing`.
 */
export interface OnnxRankerSpec {
  features: readonly string[];
  /** The value of a missing or non-numeric feature (default 0). */
  missing?: number;
  /** The model's input, float32 [n, features.length] (default: its only input). */
  input?: string;
  /** The model's output, float32 [n] or [n, 1] (default: its first output). */
  output?: string;
  /**
   * onnxruntime intra-op threads (default 1: a ranker's batch is small, and a pool of threads
   * spinning after every run costs more CPU than the run itself).
   */
  threads?: number;
  /**
   * Run the model on the calling (main) thread instead of a worker thread (default false).
   * It saves the worker round trip, measured at about 140 µs of a rank's 160 µs for a small
   * MLP over 100 candidates, but blocks the event loop while the model runs: for rankers that
   * score a batch in well under a millisecond.
   */
  inline?: boolean;
  /**
   * Batching of concurrent rank calls into one model run (default: up to 64 calls, dispatched
   * at once when no run is in flight); false runs each call alone.
   */
  batching?: Partial<BatcherOptions> | false;
}

/** What OnnxRanker needs of a session: a WorkerSession, or InlineSession on this thread. */
interface ScoringSession {
  readonly info: SessionInfo;
  run(feeds: Record<string, WireTensor>, outputs: string[]): Promise<Record<string, WireTensor>>;
  release(): Promise<void>;
}

/** An onnxruntime session on the calling thread, with WorkerSession's interface. */
class InlineSession implements ScoringSession {
  readonly info: SessionInfo;
  readonly #ort: typeof ort;
  readonly #session: ort.InferenceSession;

  private constructor(runtime: typeof ort, session: ort.InferenceSession) {
    this.#ort = runtime;
    this.#session = session;
    this.info = {
      inputNames: [...session.inputNames],
      outputNames: [...session.outputNames],
      inputTypes: Object.fromEntries(session.inputMetadata.map((m) => [m.name, m.isTensor ? String(m.type) : 'non-tensor'])),
    };
  }

  static async open(bytes: Uint8Array, options: ort.InferenceSession.SessionOptions): Promise<InlineSession> {
    // Loaded only here: a process that ranks in workers never loads onnxruntime on its main thread.
    const runtime = await import('onnxruntime-node');
    return new InlineSession(runtime, await runtime.InferenceSession.create(bytes, options));
  }

  async run(feeds: Record<string, WireTensor>, outputs: string[]): Promise<Record<string, WireTensor>> {
    const tensors: Record<string, ort.Tensor> = {};
    for (const [name, t] of Object.entries(feeds)) tensors[name] = new this.#ort.Tensor(t.type, t.data, t.dims);
    const result = await this.#session.run(tensors, outputs);
    const out: Record<string, WireTensor> = {};
    for (const name of outputs) {
      const tensor = result[name];
      if (tensor !== undefined) out[name] = { type: tensor.type as WireTensor['type'], data: tensor.data as Float32Array, dims: [...tensor.dims] };
    }
    return out;
  }

  release(): Promise<void> {
    return this.#session.release();
  }
}

const DEFAULT_BATCHING: BatcherOptions = { maxBatchSize: 64, maxDelayMs: 1, maxQueue: 4096, dispatchWhenIdle: true };

type FeatureSource = { kind: 'towerScore' } | { kind: 'item' | 'request'; path: string[] };

function parseFeature(feature: unknown, i: number): FeatureSource {
  if (feature === 'towerScore') return { kind: 'towerScore' };
  if (typeof feature === 'string') {
    const match = /^(item|request)\.(.+)$/.exec(feature);
    if (match && match[2]!.split('.').every((part) => part.length > 0)) {
      return { kind: match[1] as 'item' | 'request', path: match[2]!.split('.') };
    }
  }
  throw new InvalidSpecError(
    `Expected 'towerScore', 'item.<field>' or 'request.<field>' for features[${i}] but received ${JSON.stringify(feature) ?? String(feature)}`,
  );
}

function valueAt(record: unknown, path: readonly string[]): unknown {
  // One field is the common case: read it without the loop.
  if (path.length === 1) return record !== null && typeof record === 'object' ? (record as Record<string, unknown>)[path[0]!] : undefined;
  let value = record;
  for (const part of path) {
    if (value === null || typeof value !== 'object') return undefined;
    value = (value as Record<string, unknown>)[part];
  }
  return value;
}

function numeric(value: unknown, missing: number): number {
  if (typeof value === 'number') return Number.isFinite(value) ? value : missing;
  if (typeof value === 'boolean') return value ? 1 : 0;
  return missing;
}

export class OnnxRanker implements RankerObject<unknown, unknown> {
  readonly features: readonly string[];
  readonly missing: number;
  readonly input: string;
  readonly output: string;
  readonly #sources: FeatureSource[];
  #session: ScoringSession | undefined;
  /** Gathers the feature matrices of concurrent calls into one run (a worker round trip each otherwise). */
  readonly #batcher: Batcher<Float32Array, Float32Array> | undefined;

  private constructor(
    spec: OnnxRankerSpec,
    sources: FeatureSource[],
    session: ScoringSession,
    input: string,
    output: string,
    batching: BatcherOptions | undefined,
  ) {
    this.features = Object.freeze([...spec.features]);
    this.missing = spec.missing ?? 0;
    this.#sources = sources;
    this.#session = session;
    this.input = input;
    this.output = output;
    this.#batcher = batching === undefined ? undefined : new Batcher((matrices) => this.#runBatch(matrices), batching);
  }

  /** Opens a ranker from ONNX bytes or a file path; checks the model's input and output against the spec. */
  static async load(model: Uint8Array | string, spec: OnnxRankerSpec): Promise<OnnxRanker> {
    if (spec === null || typeof spec !== 'object') throw invalid('a ranker spec object', 'spec', spec);
    if (!Array.isArray(spec.features) || spec.features.length === 0) {
      throw invalid('a non-empty array of feature names', 'spec.features', spec.features);
    }
    const sources = spec.features.map(parseFeature);
    if (spec.missing !== undefined && (typeof spec.missing !== 'number' || !Number.isFinite(spec.missing))) {
      throw invalid('a finite number', 'spec.missing', spec.missing);
    }
    let batching: BatcherOptions | undefined;
    if (spec.batching !== false) {
      if (spec.batching !== undefined && (spec.batching === null || typeof spec.batching !== 'object')) {
        throw invalid('false or batching options', 'spec.batching', spec.batching);
      }
      batching = { ...DEFAULT_BATCHING, ...spec.batching };
      new Batcher<unknown, unknown>(() => [], batching).close(); // validates the options now
    }
    let bytes: Uint8Array;
    if (typeof model === 'string') {
      try {
        bytes = await readFile(model);
      } catch (error) {
        throw new IoError(`Cannot read the ranker model ${model}: ${(error as Error).message}`);
      }
    } else if (model instanceof Uint8Array) {
      bytes = model;
    } else {
      throw invalid('ONNX bytes (Uint8Array) or a file path', 'model', model);
    }
    if (spec.inline !== undefined && typeof spec.inline !== 'boolean') throw invalid('a boolean', 'spec.inline', spec.inline);
    const options: ort.InferenceSession.SessionOptions = {
      executionProviders: ['cpu'],
      graphOptimizationLevel: 'all',
      intraOpNumThreads: spec.threads === undefined ? 1 : requirePositiveInteger(spec.threads, 'spec.threads', 4096),
      interOpNumThreads: 1,
    };
    let session: ScoringSession;
    try {
      session = spec.inline === true ? await InlineSession.open(bytes, options) : await WorkerSession.open(bytes, options);
    } catch (error) {
      throw new CorruptModelError(`onnxruntime cannot open the ranker model: ${(error as Error).message}`);
    }
    try {
      const { inputNames, outputNames, inputTypes } = session.info;
      const input = spec.input ?? (inputNames.length === 1 ? inputNames[0]! : undefined);
      if (input === undefined) {
        throw new InvalidSpecError(`The ranker model has inputs ${inputNames.join(', ')}: name the feature matrix with spec.input`);
      }
      if (!inputNames.includes(input)) throw new InvalidSpecError(`The ranker model has no input named ${input}`);
      if (inputTypes[input] !== 'float32') {
        throw new CorruptModelError(`The ranker model's input ${input} is ${inputTypes[input]}, not float32`);
      }
      const output = spec.output ?? outputNames[0];
      if (output === undefined || !outputNames.includes(output)) {
        throw new InvalidSpecError(`The ranker model has no output named ${String(output)}`);
      }
      return new OnnxRanker(spec, sources, session, input, output, batching);
    } catch (error) {
      await session.release();
      throw error;
    }
  }

  /** The feature matrix the model is fed: candidates.length × features.length, row-major. */
  featureMatrix(request: unknown, candidates: readonly RankCandidate<unknown>[]): Float32Array {
    const width = this.#sources.length;
    const out = new Float32Array(candidates.length * width);
    // Request features are the same in every row: read them once.
    const fromRequest = this.#sources.map((s) => (s.kind === 'request' ? numeric(valueAt(request, s.path), this.missing) : 0));
    for (let r = 0; r < candidates.length; r++) {
      const candidate = candidates[r]!;
      for (let c = 0; c < width; c++) {
        const source = this.#sources[c]!;
        out[r * width + c] =
          source.kind === 'towerScore'
            ? numeric(candidate.towerScore, this.missing)
            : source.kind === 'item'
              ? numeric(valueAt(candidate.record, source.path), this.missing)
              : fromRequest[c]!;
      }
    }
    return out;
  }

  /** Scores the candidates with the model, off the event loop (batched with concurrent calls). */
  async rank(request: unknown, candidates: readonly RankCandidate<unknown>[]): Promise<Float32Array> {
    if (this.#session === undefined) throw new DisposedError('ranker');
    if (candidates.length === 0) return new Float32Array(0);
    const matrix = this.featureMatrix(request, candidates);
    if (this.#batcher === undefined) return (await this.#runBatch([matrix]))[0]!;
    return this.#batcher.call(matrix);
  }

  /** One model run over the rows of every matrix; each caller gets its rows' scores. */
  async #runBatch(matrices: Float32Array[]): Promise<Float32Array[]> {
    const session = this.#session;
    if (session === undefined) throw new DisposedError('ranker');
    const width = this.#sources.length;
    const rows = matrices.map((m) => m.length / width);
    const n = rows.reduce((a, b) => a + b, 0);
    let data = matrices[0]!;
    if (matrices.length > 1) {
      data = new Float32Array(n * width);
      let offset = 0;
      for (const m of matrices) {
        data.set(m, offset);
        offset += m.length;
      }
    }
    const outputs = await session.run({ [this.input]: { type: 'float32', data, dims: [n, width] } }, [this.output]);
    const tensor = outputs[this.output];
    const dims = tensor?.dims ?? [];
    const shapeOk = (dims.length === 1 && dims[0] === n) || (dims.length === 2 && dims[0] === n && dims[1] === 1);
    if (tensor === undefined || tensor.type !== 'float32' || !shapeOk) {
      throw new CorruptModelError(
        `Expected a float32 [${n}] or [${n}, 1] output ${this.output} from the ranker but received ${tensor?.type ?? 'none'} [${dims.join(', ')}]`,
      );
    }
    const scores = tensor.data as Float32Array;
    let start = 0;
    return rows.map((count) => scores.subarray(start, (start += count)));
  }

  get disposed(): boolean {
    return this.#session === undefined;
  }

  /** Releases the onnxruntime session once the ranks in flight complete. Idempotent. */
  async dispose(): Promise<void> {
    await this.#batcher?.close();
    const session = this.#session;
    this.#session = undefined;
    await session?.release();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}
