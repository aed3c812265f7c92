/**
 * The one place that loads the addon, and the one typed view of it.
 *
 * Load order: a local build (node-gyp's build/Release, then cmake-js's build-cmake/Release),
 * then a prebuilt binary under prebuilds/ matched by node-gyp-build. If none loads, the
 * error lists every attempt and how to build from source.
 *
 * The optional CUDA addon (build-cuda/Release/ebrix_cuda.node) is typed here too, but loaded
 * by lib/gpu.ts: its absence is a normal state with a reason, not an error.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

import { EbrixError, InvalidArgumentError } from './errors.js';

export interface NativeSearchOutput {
  ids: BigUint64Array;
  scores: Float32Array;
}

/** An opened index on its way to `new FlatIndex(handle)` (an External). */
export type NativeOpenedHandle = { readonly __openedIndex: unique symbol };

export interface NativeFlatIndex {
  trainAsync(sample: Float32Array): Promise<void>;
  trained(): boolean;
  /** With `attributes`, `columns` holds one record per vector, appended before the rows publish. */
  add(ids: BigUint64Array, vectors: Float32Array, attributes?: NativeAttributeTable, columns?: NativeColumns): void;
  addAsync(
    ids: BigUint64Array,
    vectors: Float32Array,
    attributes?: NativeAttributeTable,
    columns?: NativeColumns,
  ): Promise<void>;
  /** With `filter`, the search evaluates it against `attributes` on the state it reads. */
  search(
    queries: Float32Array,
    k: number,
    threads: number,
    allow?: Uint32Array,
    filter?: NativeFilterNode,
    attributes?: NativeAttributeTable,
  ): NativeSearchOutput;
  searchAsync(
    queries: Float32Array,
    k: number,
    threads: number,
    allow?: Uint32Array,
    filter?: NativeFilterNode,
    attributes?: NativeAttributeTable,
  ): Promise<NativeSearchOutput>;
  size(): number;
  memoryBytes(): number;
  simdLevel(): string;
  threads(): number;
  storage(): string;
  dispose(): void;
  mappedBytes(): number;
  /** With `attributes`, the records of the saved rows go into the file too. */
  saveAsync(path: string, modelVersion: string, attributes?: NativeAttributeTable): Promise<void>;
  /** Native bytes last reported to V8 as external memory (tests). */
  externalBytes(): number;
  /** The row of each id, -1 for an id the index does not hold. */
  rowsOf(ids: BigUint64Array): Float64Array;
  upsert(ids: BigUint64Array, vectors: Float32Array, attributes?: NativeAttributeTable, columns?: NativeColumns): void;
  upsertAsync(
    ids: BigUint64Array,
    vectors: Float32Array,
    attributes?: NativeAttributeTable,
    columns?: NativeColumns,
  ): Promise<void>;
  /** Returns how many of the ids were held (and are now removed). */
  remove(ids: BigUint64Array): number;
  removeAsync(ids: BigUint64Array): Promise<number>;
  has(id: bigint): boolean;
  /** The stored vector (dim floats); EBRIX_UNKNOWN_ID for an id not held. */
  get(id: bigint): Float32Array;
  /** Resolves to the number of tombstones dropped. */
  compactAsync(): Promise<number>;
}

export interface NativeIvfPqMemory {
  bytes: number;
  codes: number;
  ids: number;
  centroids: number;
  refine: number;
  idMap: number;
}

export interface NativeIvfPqIndex {
  trainAsync(
    vectors: Float32Array,
    seed: number,
    maxIterations: number,
    progress: ((fraction: number) => void) | undefined,
  ): Promise<void>;
  /** CPU index: with `attributes`, `columns` (one record per vector) are appended before the rows publish. */
  add(ids: BigUint64Array, vectors: Float32Array, attributes?: NativeAttributeTable, columns?: NativeColumns): void;
  addAsync(
    ids: BigUint64Array,
    vectors: Float32Array,
    attributes?: NativeAttributeTable,
    columns?: NativeColumns,
  ): Promise<void>;
  /** CPU index: with `filter`, the search evaluates it against `attributes` on the state it reads. */
  search(
    queries: Float32Array,
    k: number,
    nprobe: number,
    refineFactor: number,
    threads: number,
    allow?: Uint32Array,
    filter?: NativeFilterNode,
    attributes?: NativeAttributeTable,
    filterStrategy?: string,
  ): NativeSearchOutput;
  searchAsync(
    queries: Float32Array,
    k: number,
    nprobe: number,
    refineFactor: number,
    threads: number,
    allow?: Uint32Array,
    filter?: NativeFilterNode,
    attributes?: NativeAttributeTable,
    filterStrategy?: string,
  ): Promise<NativeSearchOutput>;
  trained(): boolean;
  /** Threads a search or train uses by default (follows the pool unless given). */
  threads(): number;
  size(): number;
  memory(): NativeIvfPqMemory;
  dispose(): void;
  /** With `attributes`, the records of the saved rows go into the file too. */
  saveAsync(path: string, modelVersion: string, attributes?: NativeAttributeTable): Promise<void>;
  /** Native bytes last reported to V8 as external memory (tests). */
  externalBytes(): number;
  /** The row of each id, -1 for an id the index does not hold. */
  rowsOf(ids: BigUint64Array): Float64Array;
  /** The records arguments are the CPU index's (the GPU index keeps them in lib/). */
  upsert(ids: BigUint64Array, vectors: Float32Array, attributes?: NativeAttributeTable, columns?: NativeColumns): void;
  upsertAsync(
    ids: BigUint64Array,
    vectors: Float32Array,
    attributes?: NativeAttributeTable,
    columns?: NativeColumns,
  ): Promise<void>;
  remove(ids: BigUint64Array): number;
  removeAsync(ids: BigUint64Array): Promise<number>;
  has(id: bigint): boolean;
  /** The refine vector; EBRIX_INVALID_ARGUMENT without refine vectors. */
  get(id: bigint): Float32Array;
  compactAsync(): Promise<number>;
}

export interface NativeHnswIndex {
  /** With `attributes`, `columns` (one record per vector) are appended before the rows publish. */
  add(ids: BigUint64Array, vectors: Float32Array, attributes?: NativeAttributeTable, columns?: NativeColumns): void;
  addAsync(
    ids: BigUint64Array,
    vectors: Float32Array,
    attributes?: NativeAttributeTable,
    columns?: NativeColumns,
  ): Promise<void>;
  upsert(ids: BigUint64Array, vectors: Float32Array, attributes?: NativeAttributeTable, columns?: NativeColumns): void;
  upsertAsync(
    ids: BigUint64Array,
    vectors: Float32Array,
    attributes?: NativeAttributeTable,
    columns?: NativeColumns,
  ): Promise<void>;
  remove(ids: BigUint64Array): number;
  removeAsync(ids: BigUint64Array): Promise<number>;
  /** With `filter`, the search evaluates it against `attributes` on the state it reads. */
  search(
    queries: Float32Array,
    k: number,
    expansion: number,
    threads: number,
    allow: Uint32Array | undefined,
    filterStrategy: string,
    filter?: NativeFilterNode,
    attributes?: NativeAttributeTable,
  ): NativeSearchOutput;
  searchAsync(
    queries: Float32Array,
    k: number,
    expansion: number,
    threads: number,
    allow: Uint32Array | undefined,
    filterStrategy: string,
    filter?: NativeFilterNode,
    attributes?: NativeAttributeTable,
  ): Promise<NativeSearchOutput>;
  has(id: bigint): boolean;
  /** The stored vector (dim floats); EBRIX_UNKNOWN_ID for an id not held. */
  get(id: bigint): Float32Array;
  size(): number;
  memoryBytes(): number;
  /** The native bytes last reported to V8 (tests). */
  externalBytes(): number;
  simdLevel(): string;
  threads(): number;
  /** Bytes of graph and vectors read from a mapped file (0 once copied into memory). */
  mappedBytes(): number;
  /** With `attributes`, the records of every row go into the file too. */
  saveAsync(path: string, modelVersion: string, attributes?: NativeAttributeTable): Promise<void>;
  /** Rebuilds the graph without removed nodes; resolves to the number dropped. */
  compactAsync(): Promise<number>;
  dispose(): void;
  /** The row of each id, -1 for an id the index does not hold. */
  rowsOf(ids: BigUint64Array): Float64Array;
}

/** One attribute of a table's schema (lib/index/filter.ts normalises the public schema to it). */
export interface NativeAttributeSpec {
  name: string;
  type: 'uint' | 'number' | 'bool' | 'category';
  multi: boolean;
}

/**
 * One column of an append or setRows batch: `values` for uint (Uint32Array or BigUint64Array),
 * number (Float64Array) and bool (Uint8Array); `dictionary` + `codes` (+ `offsets`, count + 1,
 * for a multi-valued one) for a category. `present` (a byte per row, 0: missing) is optional.
 */
export interface NativeAttributeColumn {
  values?: Uint32Array | BigUint64Array | Float64Array | Uint8Array;
  present?: Uint8Array;
  dictionary?: string[];
  codes?: Uint32Array;
  offsets?: Uint32Array;
}

/** A filter as the native compiler takes it (built by lib/index/filter.ts). */
export type NativeFilterNode =
  | { op: 'all' | 'none' }
  | { op: 'and' | 'or'; args: NativeFilterNode[] }
  | { op: 'not'; arg: NativeFilterNode }
  | { op: 'exists'; attr: string }
  | {
      op: 'eq' | 'in' | 'has' | 'hasAny' | 'hasAll';
      attr: string;
      values: BigUint64Array | Float64Array | boolean[] | string[];
    }
  | {
      op: 'range';
      attr: string;
      lower?: bigint | number;
      lowerInclusive: boolean;
      upper?: bigint | number;
      upperInclusive: boolean;
    }
  | { op: 'rows'; rows: Uint32Array }
  /** Only in a filter an index search evaluates (it maps ids to rows on its own state). */
  | { op: 'ids'; ids: BigUint64Array };

/** A batch's columns keyed by attribute name (AttributeTable.append's second argument). */
export type NativeColumns = Record<string, NativeAttributeColumn>;

export interface NativeFilterResult {
  rowCount: number;
  count: number;
  bits: Uint32Array;
  rows?: Uint32Array;
}

export interface NativeAttributeTable {
  append(count: number, columns: Record<string, NativeAttributeColumn>): void;
  setRows(rows: Uint32Array, columns: Record<string, NativeAttributeColumn>): void;
  compile(filter: NativeFilterNode, rowListBelow: number, threads: number): NativeFilterResult;
  compileAsync(filter: NativeFilterNode, rowListBelow: number, threads: number): Promise<NativeFilterResult>;
  size(): number;
  memoryBytes(): number;
  dispose(): void;
}

export type NativeTensors = Array<Int32Array | Float32Array>;

export interface NativeTrainerLayer {
  inDim: number;
  outDim: number;
  weight: Float32Array;
  bias: Float32Array;
  relu: boolean;
  layerNorm: { gamma: Float32Array; beta: Float32Array; epsilon: number } | null;
  residual: boolean;
}

export interface NativeTrainerTower {
  inputs: Array<
    | { kind: 'ids'; table: number }
    | { kind: 'bag'; table: number; length: number; pooling: 'mean' | 'sum' }
    | { kind: 'dense'; width: number }
  >;
  layers: NativeTrainerLayer[];
  /** Mixture of experts: one layer stack per expert (all of one shape) and one gate per head. */
  experts?: NativeTrainerLayer[][];
  gates?: Array<{ weight: Float32Array; bias: Float32Array }>;
  heads: Array<{ inDim: number; outDim: number; weight: Float32Array; bias: Float32Array; normalize: boolean }>;
}

export interface NativeTrainerConfig {
  tables: Array<{ rows: number; dim: number; data: Float32Array }>;
  towers: [NativeTrainerTower, NativeTrainerTower];
  tasks: Array<{
    kind: 'retrieval' | 'bce' | 'mse';
    queryHead: number;
    itemHead: number;
    weight: number;
    temperature: number;
    logQ: boolean;
    maskAccidentalHits: boolean;
  }>;
  optimizer: {
    learningRate: number;
    sparseLearningRate: number;
    beta1: number;
    beta2: number;
    epsilon: number;
    sparse: 'adam' | 'adagrad';
    clipNorm: number;
    weightDecay: number;
  };
  uncertaintyWeighting: boolean;
  threads: number;
}

export interface NativeTrainerBatch {
  size: number;
  query: NativeTensors;
  itemRows: number;
  item: NativeTensors;
  itemKey: Uint32Array;
  itemLogQ: Float32Array;
  task: Int32Array;
  label: Float32Array;
  weight: Float32Array;
}

export interface NativeTrainerStepResult {
  loss: number;
  taskLoss: Float64Array;
  taskExamples: Float64Array;
  gradNorm: number;
  step: number;
}

type NativeLayerParameters = { weight: Float32Array; bias: Float32Array; gamma?: Float32Array; beta?: Float32Array };

interface NativeTowerParameters {
  layers: NativeLayerParameters[];
  /** Empty without a mixture; setParameters accepts them left out. */
  experts: NativeLayerParameters[][];
  gates: Array<{ weight: Float32Array; bias: Float32Array }>;
  heads: Array<{ weight: Float32Array; bias: Float32Array }>;
}

export interface NativeTrainerParameters {
  tables: Float32Array[];
  towers: [NativeTowerParameters, NativeTowerParameters];
  taskLogVariance: Float32Array;
}

export interface NativeTrainer {
  step(batch: NativeTrainerBatch): Promise<NativeTrainerStepResult>;
  evaluate(batch: NativeTrainerBatch): Promise<NativeTrainerStepResult>;
  gradients(batch: NativeTrainerBatch): NativeTrainerParameters & { loss: number };
  embed(role: 0 | 1, tensors: NativeTensors, rows: number, head: number): Float32Array;
  embedAsync(role: 0 | 1, tensors: NativeTensors, rows: number, head: number): Promise<Float32Array>;
  parameters(): NativeTrainerParameters;
  setParameters(parameters: NativeTrainerParameters): void;
  saveState(): Promise<Uint8Array>;
  loadState(bytes: Uint8Array): void;
  steps(): number;
  dispose(): void;
}

/** What an index file's attributes section opens to (absent when the file holds none). */
export interface NativeOpenedAttributes {
  /** For `new AttributeTable(handle)`, which takes the table. */
  attributes?: NativeOpenedHandle;
  attributeSchema?: NativeAttributeSpec[];
}

export interface NativeAddon {
  simdLevel(): string;
  supportedSimdLevels(): string[];
  hardwareThreads(): number;
  /** The shared native thread pool's size (native/core/thread_pool.h). */
  threadCount(): number;
  /** Resizes the shared pool; an integer in [1, 4096]. Safe while searches run. */
  setThreadCount(threads: number): void;
  /** Why EBRIX_THREADS was not used; '' when unset or valid. */
  threadsEnvironmentError(): string;
  measureFmaPeak(threads: number, seconds: number): Promise<number>;
  measureReadBandwidth(threads: number, bytes: number): Promise<number>;
  FlatIndex: {
    new (dim: number, metric: string, simd: string | undefined, threads: number, storage: string | undefined): NativeFlatIndex;
    /** Takes the index of an openFlatIndexAsync handle. */
    new (handle: NativeOpenedHandle): NativeFlatIndex;
  };
  openFlatIndexAsync(
    path: string,
    map: boolean,
    verify: boolean,
    simd: string | undefined,
    threads: number,
  ): Promise<
    { handle: NativeOpenedHandle; modelVersion: string; dim: number; metric: string; storage: string } & NativeOpenedAttributes
  >;
  openHnswIndexAsync(
    path: string,
    map: boolean,
    verify: boolean,
    simd: string | undefined,
    threads: number,
  ): Promise<
    {
      handle: NativeOpenedHandle;
      modelVersion: string;
      dim: number;
      metric: string;
      connectivity: number;
      expansionAdd: number;
      expansionSearch: number;
      storage: string;
    } & NativeOpenedAttributes
  >;
  openIvfPqIndexAsync(
    path: string,
    simd: string | undefined,
    threads: number,
  ): Promise<{
    handle: NativeOpenedHandle;
    modelVersion: string;
    dim: number;
    metric: string;
    nlist: number;
    m: number;
    nbits: number;
    opq: boolean;
    refine: string;
  } & NativeOpenedAttributes>;
  IvfPqIndex: (new (handle: NativeOpenedHandle) => NativeIvfPqIndex) & (new (
    dim: number,
    metric: string,
    nlist: number,
    m: number,
    nbits: number,
    opq: boolean,
    refine: string,
    simd: string | undefined,
    threads: number,
  ) => NativeIvfPqIndex);
  HnswIndex: (new (handle: NativeOpenedHandle) => NativeHnswIndex) & (new (
    dim: number,
    metric: string,
    connectivity: number,
    expansionAdd: number,
    expansionSearch: number,
    storage: string,
    simd: string | undefined,
    threads: number,
  ) => NativeHnswIndex);
  /** A new table of a schema, or (a handle from an index file's open) the table it read. */
  AttributeTable: new (schema: NativeAttributeSpec[] | NativeOpenedHandle) => NativeAttributeTable;
  Trainer: new (config: NativeTrainerConfig) => NativeTrainer;
  kmeans(
    points: Float32Array,
    dim: number,
    k: number,
    options: Record<string, unknown>,
  ): Promise<{ centroids: Float32Array; objective: number; iterations: number; trainingPoints: number; reseeded: number }>;
}

export interface NativeDeviceInfo {
  available: boolean;
  device: number;
  name: string;
  /** "9.0"; empty when the probe never reached a device. */
  computeCapability: string;
  multiprocessors: number;
  totalMemory: number;
  freeMemory: number;
  /** CUDA's encoding: 1000 × major + 10 × minor; 0 when unknown. */
  driverVersion: number;
  runtimeVersion: number;
  reason: string;
}

export interface NativeGpuFlatIndex {
  addSync(ids: BigUint64Array, vectors: Float32Array): void;
  addAsync(ids: BigUint64Array, vectors: Float32Array): Promise<void>;
  searchSync(queries: Float32Array, k: number, allow: Uint32Array | undefined, tf32: boolean): NativeSearchOutput;
  searchAsync(
    queries: Float32Array,
    k: number,
    allow: Uint32Array | undefined,
    tf32: boolean,
  ): Promise<NativeSearchOutput>;
  /** As addSync / addAsync; ids may already be held (their rows become tombstones). */
  upsertSync(ids: BigUint64Array, vectors: Float32Array): void;
  upsertAsync(ids: BigUint64Array, vectors: Float32Array): Promise<void>;
  removeSync(ids: BigUint64Array): number;
  removeAsync(ids: BigUint64Array): Promise<number>;
  has(id: bigint): boolean;
  /** The stored vector read back from the device; EBRIX_UNKNOWN_ID for an id not held. */
  get(id: bigint): Float32Array;
  compactAsync(): Promise<number>;
  /** The row of each id, -1 for an id the index does not hold. */
  rowsOf(ids: BigUint64Array): Float64Array;
  /** Host bytes last reported to V8 as external memory (tests). */
  externalBytes(): number;
  size(): number;
  deviceBytes(): number;
  hostBytes(): number;
  dispose(): void;
}

/** The GPU IVF-PQ index: NativeIvfPqIndex's methods; memory() adds hostBytes and deviceBytes. */
export interface NativeGpuIvfPqIndex extends NativeIvfPqIndex {
  memory(): ReturnType<NativeIvfPqIndex['memory']> & { hostBytes: number; deviceBytes: number };
}

export interface NativeCudaAddon {
  probeDevice(device?: number): NativeDeviceInfo;
  GpuFlatIndex: new (dim: number, metric: string, storage: string, device: number) => NativeGpuFlatIndex;
  GpuIvfPqIndex: new (
    dim: number,
    metric: string,
    nlist: number,
    m: number,
    nbits: number,
    opq: boolean,
    refine: string,
    device: number,
    threads: number,
  ) => NativeGpuIvfPqIndex;
}

/*
 * What the native Trainer (native/binding/trainer.cpp) adds to the declarations above:
 *
 * - One call that changes it (step, evaluate, gradients, setParameters, loadState,
 *   loadStateAsync) runs at a time, or any number that only read it (embed, embedAsync,
 *   parameters, saveState): an overlapping call throws EBRIX_OVERLOADED at once (await each
 *   step first). steps() always answers (the count before a step in flight). After dispose():
 *   EBRIX_DISPOSED ("The trainer has been disposed"); work in flight finishes first.
 * - Config errors are EBRIX_INVALID_SPEC; batch tensors of the wrong type EBRIX_INVALID_ARGUMENT,
 *   of the wrong length EBRIX_DIM_MISMATCH; ids outside their table, non-finite dense values,
 *   masks, labels or weights, bce labels outside [0, 1], negative weights and task indexes out
 *   of range EBRIX_INVALID_ARGUMENT (a step rejects before changing anything).
 * - step().gradNorm is the global norm before clipping (NaN from evaluate); a step whose norm is
 *   not finite changes nothing (its result keeps the previous step count). taskLoss is NaN for
 *   a task with no examples, or whose examples weigh 0 in total; such a task adds nothing,
 *   not even its s_t term under uncertainty weighting.
 * - gradients() also returns gradNorm, taskLoss, taskExamples and step.
 * - layerNorm.epsilon may be omitted (1e-5); weightDecay applies to layer and head weights only.
 * - loadState(bytes) restores saveState() bytes synchronously; EBRIX_CORRUPT_FILE for truncated,
 *   damaged or mismatched bytes (a different model or sparse optimizer), leaving the trainer as
 *   it was.
 */
export interface NativeTrainerConfig {
  /** Initial s_t per task (default 0). */
  taskLogVariance?: Float32Array;
  /** SIMD level of the kernels (default: EBRIX_SIMD or the best); results are bit-identical per level. */
  simd?: string;
}

export interface NativeTrainer {
  /** The objective's gradients before clipping, as full-size arrays, with the step summary (no update). */
  gradients(batch: NativeTrainerBatch): NativeTrainerParameters & NativeTrainerStepResult;
  /** loadState off the event loop (the bytes are copied first): for large checkpoints. */
  loadStateAsync(bytes: Uint8Array): Promise<void>;
  threads(): number;
  /** Native bytes of parameters, gradients and optimizer state. */
  memoryBytes(): number;
}

const require = createRequire(import.meta.url);
/** The package root: lib/ (sources) and dist/ (compiled) both sit one level below it. */
export const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

let cached: NativeAddon | undefined;

export function native(): NativeAddon {
  if (cached === undefined) {
    const addon = loadAddon();
    // The pool read EBRIX_THREADS when the addon loaded; a value it could not use is the
    // caller's error, reported on first use as an invalid EBRIX_SIMD is.
    const threadsError = addon.threadsEnvironmentError();
    if (threadsError !== '') throw new InvalidArgumentError(threadsError);
    cached = addon;
  }
  return cached;
}

function loadAddon(): NativeAddon {
  const attempts: string[] = [];
  const localBuilds = [
    path.join(packageRoot, 'build', 'Release', 'ebrix.node'),
    path.join(packageRoot, 'build-cmake', 'Release', 'ebrix.node'),
  ];
  for (const file of localBuilds) {
    if (!existsSync(file)) {
      attempts.push(`${file}: not built`);
      continue;
    }
    try {
      return require(file) as NativeAddon;
    } catch (error) {
      attempts.push(`${file}: ${(error as Error).message}`);
    }
  }
  try {
    const nodeGypBuild = require('node-gyp-build') as { resolve(dir: string): string };
    const file = nodeGypBuild.resolve(packageRoot);
    return require(file) as NativeAddon;
  } catch (error) {
    attempts.push(`prebuilds for ${process.platform}-${process.arch} (node-gyp-build): ${(error as Error).message.split('\n')[0]}`);
  }
  throw new EbrixError(
    'EBRIX_NATIVE_LOAD',
    [
      'Could not load the ebrix native addon. Tried:',
      ...attempts.map((a) => `  - ${a}`),
      'Build it from source with `npm run build:native` (needs python3, make and a C++17 compiler),',
      'or `npm run build:cmake` (needs cmake).',
    ].join('\n'),
  );
}
