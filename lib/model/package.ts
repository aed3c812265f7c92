/**
 * The model package: one directory per model version, holding
 *
 *   manifest.json   what the towers take and give (feature specs, tensor names, dimension,
 *                   metric, tasks), the version id, and a SHA-256 of every other file;
 *   query.onnx      the query (request) tower;
 *   item.onnx       the item tower;
 *   ranker.onnx     optional second-stage model.
 *
 * A query is only ever embedded by the query tower of the same version that embedded the
 * index's items, so the version id travels with everything built from the package.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile, open } from 'node:fs/promises';
import path from 'node:path';

import { CorruptModelError, InvalidSpecError } from '../errors.js';
import { METRICS, type Metric } from '../index/flat.js';
import { FeatureEncoder, validateFeatureSpec, type FeatureSpec } from './features.js';

export const MANIFEST_FILE = 'manifest.json';
export const MANIFEST_FORMAT = 'ebrix-model';
export const MANIFEST_FORMAT_VERSION = 1;

export type TowerRole = 'query' | 'item';

export interface TowerManifest {
  /** File name inside the package. */
  file: string;
  /** Features the tower's inputs are encoded from, in input order. */
  features: FeatureSpec[];
  /** The graph input names those features feed (FeatureEncoder.inputs), for readers of the manifest. */
  inputs: string[];
  /** Graph output holding the default embedding (rows × dim). */
  output: string;
  /** Task name → graph output holding that task head's embedding. */
  taskOutputs: Record<string, string>;
}

export interface ModelManifest {
  format: typeof MANIFEST_FORMAT;
  formatVersion: number;
  name: string;
  /** Unique per exported model: an index built with this model records it. */
  version: string;
  createdAt: string;
  /** Embedding dimension of every tower output. */
  dim: number;
  metric: Metric;
  tasks: string[];
  towers: Record<TowerRole, TowerManifest>;
  ranker?: { file: string };
  /** File name → its SHA-256 (hex) and size. */
  files: Record<string, { sha256: string; bytes: number }>;
  /** Free-form provenance (trainer settings, data, metrics). */
  metadata?: Record<string, unknown>;
}

export interface TowerFiles {
  features: FeatureSpec[];
  onnx: Uint8Array;
  output?: string;
  taskOutputs?: Record<string, string>;
}

export interface WriteModelOptions {
  name: string;
  dim: number;
  metric: Metric;
  tasks?: string[];
  query: TowerFiles;
  item: TowerFiles;
  ranker?: Uint8Array;
  metadata?: Record<string, unknown>;
  /** Defaults to a fresh id: creation time plus random bits. */
  version?: string;
}

export function newVersionId(now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return `${stamp}-${randomBytes(4).toString('hex')}`;
}

export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * Writes a model package to `dir` (created if needed) and returns its manifest. Each file is
 * written to a temporary name, flushed and renamed, the manifest last, so a crash leaves
 * either the old package or a complete new one behind the manifest.
 */
export async function writeModelPackage(dir: string, options: WriteModelOptions): Promise<ModelManifest> {
  const tasks = options.tasks ?? [];
  const files: Record<string, Uint8Array> = { 'query.onnx': options.query.onnx, 'item.onnx': options.item.onnx };
  if (options.ranker) files['ranker.onnx'] = options.ranker;
  const tower = (file: string, t: TowerFiles): TowerManifest => ({
    file,
    features: t.features,
    inputs: new FeatureEncoder(t.features).inputs.map((i) => i.name),
    output: t.output ?? 'embedding',
    taskOutputs: t.taskOutputs ?? Object.fromEntries(tasks.map((task) => [task, task])),
  });
  const manifest: ModelManifest = {
    format: MANIFEST_FORMAT,
    formatVersion: MANIFEST_FORMAT_VERSION,
    name: options.name,
    version: options.version ?? newVersionId(),
    createdAt: new Date().toISOString(),
    dim: options.dim,
    metric: options.metric,
    tasks,
    towers: { query: tower('query.onnx', options.query), item: tower('item.onnx', options.item) },
    ...(options.ranker ? { ranker: { file: 'ranker.onnx' } } : {}),
    files: Object.fromEntries(
      Object.entries(files).map(([name, bytes]) => [name, { sha256: sha256(bytes), bytes: bytes.byteLength }]),
    ),
    ...(options.metadata ? { metadata: options.metadata } : {}),
  };
  validateManifest(manifest, 'the manifest to write');
  await mkdir(dir, { recursive: true });
  for (const [name, bytes] of Object.entries(files)) await writeAtomic(path.join(dir, name), bytes);
  await writeAtomic(path.join(dir, MANIFEST_FILE), new TextEncoder().encode(`${JSON.stringify(manifest, null, 2)}\n`));
  return manifest;
}

async function writeAtomic(file: string, bytes: Uint8Array): Promise<void> {
  const temp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    const handle = await open(temp, 'w');
    try {
      await handle.writeFile(bytes);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, file);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}

/** Reads and checks a package: manifest structure, every file's size and SHA-256. */
export async function readModelPackage(dir: string): Promise<{ manifest: ModelManifest; files: Map<string, Uint8Array> }> {
  let text: string;
  try {
    text = await readFile(path.join(dir, MANIFEST_FILE), 'utf8');
  } catch (error) {
    throw new CorruptModelError(`Cannot read ${MANIFEST_FILE} in ${dir}: ${(error as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new CorruptModelError(`${MANIFEST_FILE} in ${dir} is not valid JSON: ${(error as Error).message}`);
  }
  const manifest = validateManifest(parsed, `${MANIFEST_FILE} in ${dir}`);
  const files = new Map<string, Uint8Array>();
  for (const [name, expected] of Object.entries(manifest.files)) {
    let bytes: Uint8Array;
    try {
      bytes = await readFile(path.join(dir, name));
    } catch (error) {
      throw new CorruptModelError(`Model file ${name} in ${dir} cannot be read: ${(error as Error).message}`);
    }
    if (bytes.byteLength !== expected.bytes || sha256(bytes) !== expected.sha256) {
      throw new CorruptModelError(
        `Model file ${name} in ${dir} does not match its checksum in ${MANIFEST_FILE} (${bytes.byteLength} bytes, expected ${expected.bytes})`,
      );
    }
    files.set(name, bytes);
  }
  return { manifest, files };
}

/** Structural check of a manifest; throws CorruptModelError naming the first problem. */
export function validateManifest(value: unknown, where: string): ModelManifest {
  const fail = (what: string): never => {
    throw new CorruptModelError(`Invalid ${where}: ${what}`);
  };
  if (value === null || typeof value !== 'object') fail('not an object');
  const m = value as Record<string, unknown>;
  if (m.format !== MANIFEST_FORMAT) fail(`format must be "${MANIFEST_FORMAT}"`);
  if (m.formatVersion !== MANIFEST_FORMAT_VERSION) {
    fail(`formatVersion ${String(m.formatVersion)} is not supported (this ebrix reads ${MANIFEST_FORMAT_VERSION})`);
  }
  for (const key of ['name', 'version', 'createdAt'] as const) {
    if (typeof m[key] !== 'string' || (m[key] as string).length === 0) fail(`${key} must be a non-empty string`);
  }
  if (typeof m.dim !== 'number' || !Number.isInteger(m.dim) || m.dim < 1) fail('dim must be a positive integer');
  if (!METRICS.includes(m.metric as Metric)) fail(`metric must be one of ${METRICS.join(', ')}`);
  if (!Array.isArray(m.tasks) || !m.tasks.every((t) => typeof t === 'string')) fail('tasks must be an array of names');
  const files = m.files as Record<string, { sha256?: unknown; bytes?: unknown }> | undefined;
  if (files === null || typeof files !== 'object') fail('files must map file names to checksums');
  for (const [name, entry] of Object.entries(files!)) {
    if (name.includes('/') || name.includes('\\') || name.startsWith('.')) fail(`file name ${name} must be a plain name`);
    if (typeof entry?.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(entry.sha256)) fail(`files.${name}.sha256 is not a SHA-256`);
    if (typeof entry.bytes !== 'number' || !Number.isInteger(entry.bytes) || entry.bytes < 0) fail(`files.${name}.bytes is not a size`);
  }
  const towers = m.towers as Record<string, unknown> | undefined;
  if (towers === null || typeof towers !== 'object') fail('towers must hold query and item');
  for (const role of ['query', 'item'] as const) {
    const t = towers![role] as Record<string, unknown> | undefined;
    if (t === null || typeof t !== 'object') fail(`towers.${role} is missing`);
    if (typeof t!.file !== 'string' || files![t!.file] === undefined) fail(`towers.${role}.file must name a file listed in files`);
    if (typeof t!.output !== 'string') fail(`towers.${role}.output must be a graph output name`);
    if (!Array.isArray(t!.features) || t!.features.length === 0) fail(`towers.${role}.features must list the features`);
    try {
      t!.features = (t!.features as unknown[]).map((f) => validateFeatureSpec(f));
    } catch (error) {
      fail(`towers.${role}.features: ${(error as Error).message}`);
    }
    let inputs: string[] = [];
    try {
      inputs = new FeatureEncoder(t!.features as FeatureSpec[]).inputs.map((i) => i.name);
    } catch (error) {
      fail(`towers.${role}.features: ${(error as Error).message}`);
    }
    if (!Array.isArray(t!.inputs) || t!.inputs.join('\n') !== inputs.join('\n')) {
      fail(`towers.${role}.inputs must list the inputs its features feed (${inputs.join(', ')})`);
    }
    const taskOutputs = t!.taskOutputs as Record<string, unknown> | undefined;
    if (taskOutputs === null || typeof taskOutputs !== 'object') fail(`towers.${role}.taskOutputs must map tasks to outputs`);
    for (const task of m.tasks as string[]) {
      if (typeof taskOutputs![task] !== 'string') fail(`towers.${role}.taskOutputs has no output for task ${task}`);
    }
  }
  if (m.ranker !== undefined) {
    const r = m.ranker as Record<string, unknown>;
    if (typeof r?.file !== 'string' || files![r.file] === undefined) fail('ranker.file must name a file listed in files');
  }
  return m as unknown as ModelManifest;
}

/** Throws InvalidSpecError unless `task` is one of the manifest's tasks (undefined = default output). */
export function outputFor(manifest: ModelManifest, role: TowerRole, task: string | undefined): string {
  const tower = manifest.towers[role];
  if (task === undefined) return tower.output;
  const output = tower.taskOutputs[task];
  if (output === undefined) {
    throw new InvalidSpecError(
      `Expected one of ${manifest.tasks.length ? manifest.tasks.map((t) => `"${t}"`).join(', ') : '(no tasks)'} for task but received "${task}"`,
    );
  }
  return output;
}
