/**
 * Trainer: trains a compiled two-tower model with the native trainer (native/core/train) and
 * exports it as a model package.
 *
 * Determinism: the native trainer sums every gradient in a fixed order whatever its thread
 * count, and everything random here (epoch order, extra negatives) is derived from the seed
 * and the epoch or step number, so a run is reproducible bit for bit, and a run resumed from
 * a checkpoint ends with the parameters of an uninterrupted one.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';

import { awaitNative, callNative, CorruptFileError, DisposedError, InvalidArgumentError, OverloadedError } from '../errors.js';
import { FeatureEncoder } from '../model/features.js';
import { buildTowerModel, type DenseLayer, type TowerDefinition } from '../model/onnx/tower.js';
import { writeModelPackage, type ModelManifest } from '../model/package.js';
import { native, type NativeTrainer, type NativeTrainerBatch, type NativeTrainerParameters, type NativeTrainerLayer, type NativeTrainerStepResult, type NativeTrainerTower } from '../native.js';
import { progressBar } from '../progress.js';
import { seededUniform } from '../random.js';
import { invalid, requireNonNegativeInteger, requirePositiveInteger } from '../validate.js';
import { FrequencyEstimator, PackedRows, itemKeyOf, tensorOrder, type Example } from './batches.js';
import { compileModelSpec, type CompiledModel, type ModelSpec } from './spec.js';
import { MemorySource, StreamSource, type BatchSource, type Encoders, type ExampleStream, type RawBatch } from './sources.js';

export type { Example } from './batches.js';

export interface TrainerOptions {
  /** Adam learning rate of the dense layers (default 2e-3). */
  learningRate?: number;
  /** Learning rate of the embedding tables (default 2e-3 with sparse Adam, 0.05 with Adagrad). */
  sparseLearningRate?: number;
  /** Optimizer of the embedding tables: lazy (touched rows only) Adam, or Adagrad (default 'adam'). */
  sparseOptimizer?: 'adam' | 'adagrad';
  /** Clip the global gradient norm to this (default 0: no clipping). */
  clipNorm?: number;
  /** Decoupled weight decay of the dense layers (default 0). */
  weightDecay?: number;
  /** Native threads (default: the native pool's size when the trainer is made). Results do not depend on it. */
  threads?: number;
}

export interface TrainProgress {
  epoch: number;
  step: number;
  /** Examples trained on so far in this run (resumed runs count from the checkpoint). */
  examples: number;
  /** Examples per second over this run. */
  examplesPerSecond: number;
  loss: number;
  /** Mean loss per task over the steps since the previous report (NaN where a task had no examples). */
  taskLoss: Record<string, number>;
  gradNorm: number;
  /** Present on the report that follows a validation. */
  validation?: ValidationReport;
}

export interface ValidationReport {
  step: number;
  loss: number;
  taskLoss: Record<string, number>;
  /** The early-stopping metric (higher is better): -loss, or the value of `validation.metric`. */
  metric: number;
  best: boolean;
}

export interface FitOptions {
  epochs?: number;
  batchSize?: number;
  /** Stop after this many optimizer steps in total (checkpointed steps included). */
  maxSteps?: number;
  /**
   * Items drawn uniformly per batch as extra negatives for every retrieval task (mixed negative
   * sampling; default 0). Drawn from `corpus`, or from the examples' own items when they are
   * held in memory.
   */
  extraNegatives?: number;
  corpus?: readonly Record<string, unknown>[];
  /** The key of a corpus item (default: the record as JSON); must agree with the examples' itemKey. */
  corpusKey?: (item: Record<string, unknown>) => string | number;
  /** Seed of the epoch order and of the extra negatives (default: the model spec's seed). */
  seed?: number;
  /** Shuffle in-memory examples each epoch (default true). Streams come in their own order. */
  shuffle?: boolean;
  validation?: {
    examples: readonly Example[];
    /** Validate every this many steps (default: at the end of each epoch). */
    everySteps?: number;
    /** Stop after this many validations without improvement (default: never stop early). */
    patience?: number;
    /** Higher is better; default: minus the validation loss. */
    metric?: (trainer: Trainer) => Promise<number>;
  };
  checkpoint?: {
    dir: string;
    everySteps: number;
    /** Checkpoints kept (default 2). */
    keep?: number;
  };
  /** Continue from the newest checkpoint in `checkpoint.dir`, if there is one. */
  resume?: boolean;
  onProgress?: (progress: TrainProgress) => void;
  /** Report every this many steps (default 10). */
  progressEvery?: number;
  /** A one-line progress bar on stderr (default: when stderr is a TTY). */
  progressBar?: boolean;
  signal?: AbortSignal;
}

export interface FitResult {
  steps: number;
  epochs: number;
  examples: number;
  seconds: number;
  examplesPerSecond: number;
  stoppedEarly: boolean;
  /** The best validation, whose parameters the trainer holds at the end (when validating). */
  bestValidation?: ValidationReport;
  finalTaskLoss: Record<string, number>;
}

export interface ExportOptions {
  /** Free-form provenance stored in the manifest. */
  metadata?: Record<string, unknown>;
  version?: string;
}

function nativeLayer(l: DenseLayer): NativeTrainerLayer {
  return {
    inDim: l.inDim,
    outDim: l.outDim,
    weight: l.weight,
    bias: l.bias,
    relu: l.activation === 'relu',
    layerNorm: l.layerNorm ? { gamma: l.layerNorm.gamma, beta: l.layerNorm.beta, epsilon: l.layerNorm.epsilon ?? 1e-5 } : null,
    residual: l.residual === true,
  };
}

const CHECKPOINT_FORMAT = 'ebrix-train-checkpoint';
const CHECKPOINT_VERSION = 1;
const LATEST = 'latest';

/** Mean of per-step task losses, skipping the steps where a task had no examples. */
class LossMeter {
  readonly sum: Float64Array;
  readonly count: Float64Array;
  constructor(tasks: number) {
    this.sum = new Float64Array(tasks);
    this.count = new Float64Array(tasks);
  }
  add(result: NativeTrainerStepResult): void {
    for (let t = 0; t < this.sum.length; t++) {
      const n = result.taskExamples[t]!;
      if (n > 0 && Number.isFinite(result.taskLoss[t]!)) {
        this.sum[t]! += result.taskLoss[t]! * n;
        this.count[t]! += n;
      }
    }
  }
  means(names: readonly string[]): Record<string, number> {
    return Object.fromEntries(names.map((name, t) => [name, this.count[t]! > 0 ? this.sum[t]! / this.count[t]! : Number.NaN]));
  }
  reset(): void {
    this.sum.fill(0);
    this.count.fill(0);
  }
}

export class Trainer {
  readonly model: CompiledModel;
  #native: NativeTrainer | undefined;
  readonly #encoders: Encoders;
  readonly #taskNames: string[];
  #frequency = new FrequencyEstimator();
  #busy = false;

  constructor(spec: ModelSpec, options: TrainerOptions = {}) {
    this.model = compileModelSpec(spec);
    if (options === null || typeof options !== 'object') throw invalid('an options object', 'options', options);
    const m = this.model;
    const { query, item } = m.towers;
    this.#taskNames = m.tasks.map((t) => t.name);
    this.#encoders = {
      query: new FeatureEncoder(m.spec.query.features),
      item: new FeatureEncoder(m.spec.item.features),
      queryOrder: tensorOrder(query),
      itemOrder: tensorOrder(item),
      tasks: new Map(m.tasks.map((t, i) => [t.name, i])),
      binary: m.tasks.map((t) => t.kind === 'binary'),
    };
    const sparse = options.sparseOptimizer ?? 'adam';
    if (sparse !== 'adam' && sparse !== 'adagrad') throw invalid("'adam' or 'adagrad'", 'sparseOptimizer', sparse);
    const rate = (value: number | undefined, name: string, fallback: number): number => {
      if (value === undefined) return fallback;
      if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) throw invalid('a finite number >= 0', name, value);
      return value;
    };
    const tableIndex = new Map(m.tableNames.map((name, i) => [name, i]));
    const tower = (def: TowerDefinition): NativeTrainerTower => ({
      inputs: def.inputs.map((input) => {
        if (input.kind === 'dense') return { kind: 'dense', width: input.width };
        const table = tableIndex.get(input.table)!;
        if (input.kind === 'ids') return { kind: 'ids', table };
        const feature = [...m.spec.query.features, ...m.spec.item.features].find((f) => `${f.name}.ids` === input.ids && f.kind === 'text');
        return { kind: 'bag', table, length: feature!.kind === 'text' ? feature!.maxLength : 0, pooling: input.pooling };
      }),
      layers: def.layers.map(nativeLayer),
      ...(def.experts && def.experts.length > 0
        ? { experts: def.experts.map((e) => e.map(nativeLayer)), gates: def.heads.map((h) => ({ weight: h.gate!.weight, bias: h.gate!.bias })) }
        : {}),
      heads: def.heads.map((h) => ({ inDim: h.inDim, outDim: h.outDim, weight: h.weight, bias: h.bias, normalize: h.normalize })),
    });
    const tables = m.tableNames.map((name) => (query.tables[name] ?? item.tables[name])!);
    this.#native = callNative(
      () =>
        new (native().Trainer)({
          tables: tables.map((t) => ({ rows: t.rows, dim: t.dim, data: t.data })),
          towers: [tower(query), tower(item)],
          tasks: m.tasks.map((t) => ({
            kind: t.kind === 'binary' ? 'bce' : t.kind === 'regression' ? 'mse' : 'retrieval',
            queryHead: t.queryHead,
            itemHead: t.itemHead,
            weight: t.weight,
            temperature: t.temperature,
            logQ: t.logQ,
            maskAccidentalHits: t.maskAccidentalHits,
          })),
          optimizer: {
            learningRate: rate(options.learningRate, 'learningRate', 2e-3),
            sparseLearningRate: rate(options.sparseLearningRate, 'sparseLearningRate', sparse === 'adam' ? 2e-3 : 0.05),
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            sparse,
            clipNorm: rate(options.clipNorm, 'clipNorm', 0),
            weightDecay: rate(options.weightDecay, 'weightDecay', 0),
          },
          uncertaintyWeighting: m.spec.taskWeighting === 'uncertainty',
          threads: options.threads === undefined ? 0 : requirePositiveInteger(options.threads, 'threads', 4096),
        }),
    );
  }

  /** Optimizer steps taken so far. */
  get steps(): number {
    return this.#live().steps();
  }

  get disposed(): boolean {
    return this.#native === undefined;
  }

  #live(): NativeTrainer {
    if (this.#native === undefined) throw new DisposedError('trainer');
    return this.#native;
  }

  /**
   * Trains on `examples`: an array (checked and encoded once, reshuffled every epoch) or a
   * function returning a fresh iterable per epoch (streamed and encoded a batch at a time, e.g.
   * `() => readJsonl(file, { shuffleBuffer: 10000, seed })`). Runs off the event loop.
   */
  async fit(examples: readonly Example[] | ExampleStream, options: FitOptions = {}): Promise<FitResult> {
    if (this.#busy) throw new OverloadedError('This trainer is already running fit or evaluate; wait for it to finish');
    this.#busy = true;
    try {
      return await this.#fit(examples, options);
    } finally {
      this.#busy = false;
    }
  }

  async #fit(examples: readonly Example[] | ExampleStream, options: FitOptions): Promise<FitResult> {
    const live = this.#live();
    if (options === null || typeof options !== 'object') throw invalid('an options object', 'options', options);
    const epochs = options.epochs === undefined ? 1 : requirePositiveInteger(options.epochs, 'epochs', 1e6);
    const batchSize = options.batchSize === undefined ? 256 : requirePositiveInteger(options.batchSize, 'batchSize', 1 << 16);
    const maxSteps = options.maxSteps === undefined ? Infinity : requirePositiveInteger(options.maxSteps, 'maxSteps');
    const extra = options.extraNegatives === undefined ? 0 : requireNonNegativeInteger(options.extraNegatives, 'extraNegatives');
    const seed = options.seed ?? this.model.spec.seed ?? 1;
    const progressEvery = options.progressEvery === undefined ? 10 : requirePositiveInteger(options.progressEvery, 'progressEvery');
    const source: BatchSource = Array.isArray(examples)
      ? new MemorySource(examples, this.#encoders, options.shuffle === false ? undefined : seed)
      : new StreamSource(examples as ExampleStream, this.#encoders);
    const negatives = extra > 0 ? this.#negativePool(source, options) : undefined;
    const validation = options.validation ? this.#validationSet(options.validation) : undefined;
    const checkpoint = options.checkpoint ? this.#checkpointOptions(options.checkpoint) : undefined;
    if (options.resume && !checkpoint) throw new InvalidArgumentError('Expected checkpoint.dir with resume: true');

    let epoch = 0;
    let epochBatch = 0;
    let examplesSeen = 0;
    let best: { report: ValidationReport; state: Uint8Array } | undefined;
    let sinceBest = 0;
    if (options.resume && checkpoint) {
      const restored = await this.#restore(checkpoint.dir);
      if (restored) ({ epoch, epochBatch, examples: examplesSeen, best, sinceBest } = restored);
    }

    const bar = progressBar('train', process.stderr, options.progressBar ?? process.stderr.isTTY === true);
    const meter = new LossMeter(this.#taskNames.length);
    const started = performance.now();
    let trainedHere = 0;
    let last: NativeTrainerStepResult | undefined;
    let stoppedEarly = false;
    const finalMeter = new LossMeter(this.#taskNames.length);
    const report = (result: NativeTrainerStepResult, validated?: ValidationReport): void => {
      const seconds = (performance.now() - started) / 1000;
      const p: TrainProgress = {
        epoch,
        step: result.step,
        examples: examplesSeen,
        examplesPerSecond: seconds > 0 ? trainedHere / seconds : 0,
        loss: result.loss,
        taskLoss: meter.means(this.#taskNames),
        gradNorm: result.gradNorm,
        ...(validated ? { validation: validated } : {}),
      };
      meter.reset();
      options.onProgress?.(p);
      bar.update(examplesSeen, source.size === undefined ? undefined : source.size * epochs);
    };
    const validate = async (): Promise<boolean> => {
      if (!validation) return false;
      const v = await this.#validate(validation);
      const improved = best === undefined || v.metric > best.report.metric;
      const validated: ValidationReport = { ...v, step: live.steps(), best: improved };
      if (improved) {
        best = { report: validated, state: await awaitNative(live.saveState()) };
        sinceBest = 0;
      } else sinceBest++;
      if (last) report(last, validated);
      return validation.patience !== undefined && sinceBest >= validation.patience;
    };

    try {
      outer: for (; epoch < epochs; epoch++, epochBatch = 0) {
        const iterator = source.batches(epoch, batchSize, epochBatch)[Symbol.asyncIterator]();
        let next = await iterator.next();
        while (!next.done) {
          if (live.steps() >= maxSteps) break outer;
          options.signal?.throwIfAborted();
          const raw = next.value;
          const batch = this.#nativeBatch(raw, negatives, extra, live.steps(), seed, true);
          const pending = awaitNative(live.step(batch));
          // Prepare the next batch while the native step runs.
          next = await iterator.next();
          last = await pending;
          meter.add(last);
          finalMeter.add(last);
          epochBatch++;
          examplesSeen += raw.size;
          trainedHere += raw.size;
          const step = last.step;
          let stop = false;
          if (validation?.everySteps !== undefined && step % validation.everySteps === 0) stop = await validate();
          else if (step % progressEvery === 0) report(last);
          if (checkpoint && step % checkpoint.everySteps === 0) {
            await this.#saveCheckpoint(checkpoint, { epoch, epochBatch, examples: examplesSeen, best, sinceBest });
          }
          if (stop) {
            stoppedEarly = true;
            break outer;
          }
        }
        if (validation && validation.everySteps === undefined && (await validate())) {
          stoppedEarly = true;
          epoch++;
          break;
        }
      }
    } finally {
      bar.finish();
    }
    if (best) callNative(() => live.loadState(best!.state));
    const seconds = (performance.now() - started) / 1000;
    return {
      steps: live.steps(),
      epochs: epoch,
      examples: examplesSeen,
      seconds,
      examplesPerSecond: seconds > 0 ? trainedHere / seconds : 0,
      stoppedEarly,
      ...(best ? { bestValidation: best.report } : {}),
      finalTaskLoss: finalMeter.means(this.#taskNames),
    };
  }

  /** Loss per task on `examples`, without updating anything (extra negatives are not drawn). */
  async evaluateLoss(examples: readonly Example[], batchSize = 256): Promise<{ loss: number; taskLoss: Record<string, number> }> {
    return this.#lossOver(new MemorySource(examples, this.#encoders, undefined), batchSize);
  }

  /** Mean loss (weighted by batch size) and per-task loss over a source; updates nothing. */
  async #lossOver(source: MemorySource, batchSize: number): Promise<{ loss: number; taskLoss: Record<string, number> }> {
    const meter = new LossMeter(this.#taskNames.length);
    let total = 0;
    let count = 0;
    for await (const raw of source.batches(0, batchSize, 0)) {
      const result = await awaitNative(this.#live().evaluate(this.#nativeBatch(raw, undefined, 0, 0, 0, false)));
      meter.add(result);
      total += result.loss * raw.size;
      count += raw.size;
    }
    return { loss: total / count, taskLoss: meter.means(this.#taskNames) };
  }

  #validationSet(v: NonNullable<FitOptions['validation']>): NonNullable<FitOptions['validation']> & { source: MemorySource } {
    if (v.everySteps !== undefined) requirePositiveInteger(v.everySteps, 'validation.everySteps');
    if (v.patience !== undefined) requirePositiveInteger(v.patience, 'validation.patience');
    if (v.metric !== undefined && typeof v.metric !== 'function') throw invalid('a function', 'validation.metric', v.metric);
    return { ...v, source: new MemorySource(v.examples as Example[], this.#encoders, undefined) };
  }

  async #validate(v: { source: MemorySource; metric?: (trainer: Trainer) => Promise<number> }): Promise<Omit<ValidationReport, 'step' | 'best'>> {
    const { loss, taskLoss } = await this.#lossOver(v.source, 256);
    const metric = v.metric ? await v.metric(this) : -loss;
    if (!Number.isFinite(metric)) throw invalid('a finite number', 'the value of validation.metric', metric);
    return { loss, taskLoss, metric };
  }

  #negativePool(source: BatchSource, options: FitOptions): { items: PackedRows; keys: Uint32Array } {
    if (options.corpus !== undefined) {
      if (!Array.isArray(options.corpus) || options.corpus.length === 0) throw invalid('a non-empty array of item records', 'corpus', options.corpus);
      const keyOf = options.corpusKey;
      if (keyOf !== undefined && typeof keyOf !== 'function') throw invalid('a function', 'corpusKey', keyOf);
      const keys = Uint32Array.from(options.corpus, (item) => itemKeyOf({ item, ...(keyOf ? { itemKey: keyOf(item) } : {}) }));
      return { items: PackedRows.encode(this.#encoders.item, this.#encoders.itemOrder, options.corpus), keys };
    }
    if (source instanceof MemorySource) return { items: source.items, keys: source.uniqueKeys };
    throw new InvalidArgumentError('Expected a corpus to draw extraNegatives from (streamed examples have no item set of their own)');
  }

  /**
   * The native batch of `raw` plus `extra` corpus negatives drawn for `step`. A training batch
   * (`observe`) also feeds the item-frequency estimate; an evaluation batch only reads it.
   */
  #nativeBatch(
    raw: RawBatch,
    negatives: { items: PackedRows; keys: Uint32Array } | undefined,
    extra: number,
    step: number,
    seed: number,
    observe: boolean,
  ): NativeTrainerBatch {
    const count = negatives ? extra : 0;
    const itemRows = raw.size + count;
    let items = raw.items;
    const itemKey = new Uint32Array(itemRows);
    itemKey.set(raw.itemKeys);
    if (negatives && count > 0) {
      items = PackedRows.like(raw.items, itemRows);
      raw.items.gather(Int32Array.from({ length: raw.size }, (_, i) => i), items, 0);
      const random = seededUniform((seed * 2654435761 + step * 40503 + 17) >>> 0);
      const pool = negatives.keys.length;
      const drawn = Int32Array.from({ length: count }, () => Math.floor(random() * pool));
      negatives.items.gather(drawn, items, raw.size);
      for (let i = 0; i < count; i++) itemKey[raw.size + i] = negatives.keys[drawn[i]!]!;
    }
    if (observe) this.#frequency.observe(raw.itemKeys, raw.size, step);
    const itemLogQ = new Float32Array(itemRows);
    this.#frequency.logQ(itemKey, itemLogQ, negatives ? count / negatives.keys.length : 0);
    return {
      size: raw.size,
      query: raw.queries.tensors,
      itemRows,
      item: items.tensors,
      itemKey,
      itemLogQ,
      task: raw.task,
      label: raw.label,
      weight: raw.weight,
    };
  }

  // -------------------------------------------------------------------------------------------
  // Parameters, embedding and export

  /** The towers with the current parameters (copies), as lib/model/onnx/tower.ts defines them. */
  towers(): { query: TowerDefinition; item: TowerDefinition } {
    const p = callNative(() => this.#live().parameters());
    const m = this.model;
    const tables = Object.fromEntries(m.tableNames.map((name, i) => [name, p.tables[i]!]));
    const layers = (defs: DenseLayer[], params: NativeTrainerParameters['towers'][number]['layers']): DenseLayer[] =>
      defs.map((l, i) => {
        const q = params[i]!;
        return {
          ...l,
          weight: q.weight,
          bias: q.bias,
          ...(l.layerNorm ? { layerNorm: { ...l.layerNorm, gamma: q.gamma!, beta: q.beta! } } : {}),
        };
      });
    const withParameters = (def: TowerDefinition, params: NativeTrainerParameters['towers'][number]): TowerDefinition => ({
      ...def,
      tables: Object.fromEntries(Object.entries(def.tables).map(([name, t]) => [name, { ...t, data: tables[name]! }])),
      layers: layers(def.layers, params.layers),
      ...(def.experts ? { experts: def.experts.map((e, i) => layers(e, params.experts[i]!)) } : {}),
      heads: def.heads.map((h, i) => ({
        ...h,
        weight: params.heads[i]!.weight,
        bias: params.heads[i]!.bias,
        ...(h.gate ? { gate: { weight: params.gates[i]!.weight, bias: params.gates[i]!.bias } } : {}),
      })),
    });
    return { query: withParameters(m.towers.query, p.towers[0]), item: withParameters(m.towers.item, p.towers[1]) };
  }

  /** Learned log-variances of the tasks under uncertainty weighting (0 otherwise). */
  taskLogVariance(): Record<string, number> {
    const v = callNative(() => this.#live().parameters()).taskLogVariance;
    return Object.fromEntries(this.#taskNames.map((name, i) => [name, v[i]!]));
  }

  /**
   * Embeds records with the native forward pass (no ONNX runtime), e.g. for evaluating during
   * training. `task` picks a query head (default: the default task); items use the task's head.
   */
  async embed(role: 'query' | 'item', records: readonly unknown[], task?: string): Promise<Float32Array> {
    const live = this.#live();
    const m = this.model;
    const taskName = task ?? m.spec.defaultTask!;
    const t = m.tasks.find((x) => x.name === taskName);
    if (t === undefined) throw invalid(`one of ${this.#taskNames.join(', ')}`, 'task', task);
    const encoder = role === 'query' ? this.#encoders.query : this.#encoders.item;
    const order = role === 'query' ? this.#encoders.queryOrder : this.#encoders.itemOrder;
    const out = new Float32Array(records.length * m.spec.dim);
    const chunk = 4096;
    for (let start = 0; start < records.length; start += chunk) {
      const part = records.slice(start, start + chunk);
      const pack = PackedRows.encode(encoder, order, part);
      const head = role === 'query' ? t.queryHead : t.itemHead;
      out.set(await awaitNative(live.embedAsync(role === 'query' ? 0 : 1, pack.tensors, part.length, head)), start * m.spec.dim);
    }
    return out;
  }

  /**
   * Writes the trained model as a model package (ONNX towers and a manifest with a new version
   * id): the query tower has one output per task, the item tower one per item head.
   */
  async export(dir: string, options: ExportOptions = {}): Promise<ModelManifest> {
    const { query, item } = this.towers();
    const m = this.model;
    const defaultTask = m.tasks.find((t) => t.name === m.spec.defaultTask)!;
    return writeModelPackage(dir, {
      name: m.spec.name,
      dim: m.spec.dim,
      metric: m.metric,
      tasks: this.#taskNames,
      query: {
        features: m.spec.query.features,
        onnx: buildTowerModel(query),
        output: defaultTask.name,
        taskOutputs: Object.fromEntries(m.tasks.map((t) => [t.name, t.name])),
      },
      item: {
        features: m.spec.item.features,
        onnx: buildTowerModel(item),
        output: m.itemHeads[defaultTask.itemHead]!,
        taskOutputs: Object.fromEntries(m.tasks.map((t) => [t.name, m.itemHeads[t.itemHead]!])),
      },
      metadata: { spec: { ...m.spec, query: { ...m.spec.query, features: undefined }, item: { ...m.spec.item, features: undefined } }, steps: this.steps, ...options.metadata },
      ...(options.version ? { version: options.version } : {}),
    });
  }

  dispose(): void {
    const live = this.#native;
    this.#native = undefined;
    live?.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  // -------------------------------------------------------------------------------------------
  // Checkpoints: dir/step-<n>/{trainer.json, native.bin, frequency.bin, best.bin?}, and
  // dir/latest naming the newest. Each is written to a temporary folder first and renamed, so a
  // crash leaves the previous checkpoint whole.

  #checkpointOptions(c: NonNullable<FitOptions['checkpoint']>): { dir: string; everySteps: number; keep: number } {
    if (typeof c.dir !== 'string' || c.dir.length === 0) throw invalid('a directory path', 'checkpoint.dir', c.dir);
    return {
      dir: c.dir,
      everySteps: requirePositiveInteger(c.everySteps, 'checkpoint.everySteps'),
      keep: c.keep === undefined ? 2 : requirePositiveInteger(c.keep, 'checkpoint.keep'),
    };
  }

  async #saveCheckpoint(
    c: { dir: string; keep: number },
    s: { epoch: number; epochBatch: number; examples: number; best: { report: ValidationReport; state: Uint8Array } | undefined; sinceBest: number },
  ): Promise<void> {
    const live = this.#live();
    const step = live.steps();
    const name = `step-${String(step).padStart(9, '0')}`;
    const temp = path.join(c.dir, `.${name}.tmp-${randomBytes(4).toString('hex')}`);
    await mkdir(temp, { recursive: true });
    const meta = {
      format: CHECKPOINT_FORMAT,
      formatVersion: CHECKPOINT_VERSION,
      model: this.model.spec.name,
      step,
      epoch: s.epoch,
      epochBatch: s.epochBatch,
      examples: s.examples,
      sinceBest: s.sinceBest,
      best: s.best?.report,
    };
    await writeFile(path.join(temp, 'native.bin'), await awaitNative(live.saveState()));
    const f = this.#frequency;
    const frequency = new Float64Array(f.buckets * 2);
    frequency.set(f.lastSeen);
    frequency.set(f.interval, f.buckets);
    await writeFile(path.join(temp, 'frequency.bin'), new Uint8Array(frequency.buffer));
    if (s.best) await writeFile(path.join(temp, 'best.bin'), s.best.state);
    await writeFile(path.join(temp, 'trainer.json'), `${JSON.stringify(meta, null, 2)}\n`);
    const final = path.join(c.dir, name);
    await rm(final, { recursive: true, force: true });
    await rename(temp, final);
    const latestTemp = path.join(c.dir, `.${LATEST}.tmp-${randomBytes(4).toString('hex')}`);
    await writeFile(latestTemp, `${name}\n`);
    await rename(latestTemp, path.join(c.dir, LATEST));
    const old = (await readdir(c.dir)).filter((n) => /^step-\d+$/.test(n)).sort();
    for (const n of old.slice(0, Math.max(0, old.length - c.keep))) await rm(path.join(c.dir, n), { recursive: true, force: true });
  }

  async #restore(dir: string): Promise<
    | { epoch: number; epochBatch: number; examples: number; best: { report: ValidationReport; state: Uint8Array } | undefined; sinceBest: number }
    | undefined
  > {
    let name: string;
    try {
      name = (await readFile(path.join(dir, LATEST), 'utf8')).trim();
    } catch {
      return undefined; // nothing to resume from: start fresh
    }
    const where = path.join(dir, name);
    if (!/^step-\d+$/.test(name)) throw new CorruptFileError(`${path.join(dir, LATEST)} names ${JSON.stringify(name)}, not a checkpoint`);
    let meta: Record<string, unknown>;
    try {
      meta = JSON.parse(await readFile(path.join(where, 'trainer.json'), 'utf8')) as Record<string, unknown>;
    } catch (error) {
      throw new CorruptFileError(`Cannot read checkpoint ${where}: ${(error as Error).message}`);
    }
    if (meta.format !== CHECKPOINT_FORMAT || meta.formatVersion !== CHECKPOINT_VERSION) {
      throw new CorruptFileError(`${where} is not a checkpoint this ebrix reads (format ${String(meta.format)} ${String(meta.formatVersion)})`);
    }
    if (meta.model !== this.model.spec.name) {
      throw new CorruptFileError(`${where} is a checkpoint of model ${String(meta.model)}, not ${this.model.spec.name}`);
    }
    const live = this.#live();
    const state = new Uint8Array(await readFile(path.join(where, 'native.bin')));
    callNative(() => live.loadState(state));
    const bytes = await readFile(path.join(where, 'frequency.bin'));
    const f = new FrequencyEstimator();
    if (bytes.byteLength !== f.buckets * 16) throw new CorruptFileError(`${where}/frequency.bin has ${bytes.byteLength} bytes, not ${f.buckets * 16}`);
    const values = new Float64Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    f.lastSeen.set(values.subarray(0, f.buckets));
    f.interval.set(values.subarray(f.buckets));
    this.#frequency = f;
    const best = meta.best
      ? { report: meta.best as ValidationReport, state: new Uint8Array(await readFile(path.join(where, 'best.bin'))) }
      : undefined;
    const int = (key: string): number => {
      const v = meta[key];
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new CorruptFileError(`${where}/trainer.json: ${key} is not a count`);
      return v;
    };
    if (int('step') !== live.steps()) throw new CorruptFileError(`${where}: trainer.json and native.bin disagree on the step`);
    return { epoch: int('epoch'), epochBatch: int('epochBatch'), examples: int('examples'), best, sinceBest: int('sinceBest') };
  }
}
