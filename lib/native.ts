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

import { EbrixError } from './errors.js';

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
  saveAsync(path: string, modelVersion: string): Promise<void>;
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
  size(): number;
  memory(): NativeIvfPqMemory;
  dispose(): void;
  saveAsync(path: string, modelVersion: string): Promise<void>;
  /** Native bytes last reported to V8 as external memory (tests). */
  externalBytes(): number;
  /** The row of each id, -1 for an id the index does not hold. */
  rowsOf(ids: BigUint64Array): Float64Array;
  // The CPU index only (absent on the GPU index):
  upsert?(ids: BigUint64Array, vectors: Float32Array, attributes?: NativeAttributeTable, columns?: NativeColumns): void;
  upsertAsync?(
    ids: BigUint64Array,
    vectors: Float32Array,
    attributes?: NativeAttributeTable,
    columns?: NativeColumns,
  ): Promise<void>;
  remove?(ids: BigUint64Array): number;
  removeAsync?(ids: BigUint64Array): Promise<number>;
  has?(id: bigint): boolean;
  /** The refine vector; EBRIX_INVALID_ARGUMENT without refine vectors. */
  get?(id: bigint): Float32Array;
  compactAsync?(): Promise<number>;
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
  simdLevel(): string;
  threads(): number;
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

export interface NativeAddon {
  simdLevel(): string;
  supportedSimdLevels(): string[];
  hardwareThreads(): number;
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
  ): Promise<{ handle: NativeOpenedHandle; modelVersion: string; dim: number; metric: string; storage: string }>;
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
  }>;
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
  HnswIndex: new (
    dim: number,
    metric: string,
    connectivity: number,
    expansionAdd: number,
    expansionSearch: number,
    storage: string,
    simd: string | undefined,
    threads: number,
  ) => NativeHnswIndex;
  AttributeTable: new (schema: NativeAttributeSpec[]) => NativeAttributeTable;
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

const require = createRequire(import.meta.url);
/** The package root: lib/ (sources) and dist/ (compiled) both sit one level below it. */
export const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

let cached: NativeAddon | undefined;

export function native(): NativeAddon {
  cached ??= loadAddon();
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
