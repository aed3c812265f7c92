/**
 * The authoring side of training: a declarative model spec (two towers over FeatureSpecs, and
 * the tasks they are trained on), checked once and compiled into the tower definitions that
 * lib/model/onnx/tower.ts exports and the native trainer updates.
 *
 * Structure of a compiled model:
 *   - each tower: feature inputs → concat → a shared MLP (the shared bottom) → heads;
 *   - with `mmoe`, a tower's heads read a mixture of experts instead (MMoE): E expert MLPs over
 *     the shared bottom's output, and one softmax gate per head over the experts. In the query
 *     tower that is one gate per task; in the item tower one gate per item head, so tasks that
 *     share an item head share its gate (their item vectors are one index, so one mixture);
 *   - the query tower has one head per task (named after the task);
 *   - the item tower has one head per distinct `itemHead` of the tasks (default 'embedding'),
 *     so tasks that share the item head are served by one index;
 *   - embedding tables are named; every feature mapped to one table name, in either tower,
 *     reads and trains the same table (a query word and an item word then share a vector).
 */
import { InvalidSpecError } from '../errors.js';
import { initTower } from '../model/compose.js';
import { cardinality, validateFeatureSpec, type FeatureSpec } from '../model/features.js';
import type { EmbeddingTable, TowerDefinition } from '../model/onnx/tower.js';
import { describe } from '../validate.js';

export type TaskKind = 'retrieval' | 'binary' | 'regression';

export interface TaskSpec {
  name: string;
  /**
   * retrieval: in-batch sampled softmax over the batch's items (plus any extra negatives);
   * binary: binary cross-entropy of (q·v)/temperature against a label in [0, 1];
   * regression: squared error of q·v against the label.
   */
  kind: TaskKind;
  /** Weight of this task's loss in the sum (default 1); ignored under uncertainty weighting. */
  weight?: number;
  /** Softmax / logit temperature (default 0.05 for retrieval, 0.1 for binary, unused for regression). */
  temperature?: number;
  /** Subtract the log of each item's estimated sampling probability from its logit (retrieval; default true). */
  logQ?: boolean;
  /** Leave out negatives that are the positive item itself under another row (retrieval; default true). */
  maskAccidentalHits?: boolean;
  /** The item tower head this task scores against (default 'embedding', shared by all tasks). */
  itemHead?: string;
}

export interface TowerSpec {
  features: FeatureSpec[];
  /** Width of this tower's embedding tables (a table shared across towers needs the same width). */
  embeddingDim: number;
  /** Hidden widths of the shared MLP (default none: a linear map to the heads). */
  hidden?: number[];
  layerNorm?: boolean;
  /** Add the input back around hidden layers whose width does not change. */
  residual?: boolean;
  /** Pooling of text bags (default 'mean'). */
  pooling?: 'mean' | 'sum';
  /** Table name per feature name (default: the feature's own name). */
  tables?: Record<string, string>;
  /** A multi-gate mixture of experts between the shared MLP and the heads (default none). */
  mmoe?: MmoeSpec;
}

export interface MmoeSpec {
  /** Number of experts (2 to 64). */
  experts: number;
  /** Widths of each expert's layers (at least one); the last is what the heads read. */
  expertLayers: number[];
  /** Activation after each expert layer (default 'relu'; 'none' gives linear experts). */
  activation?: 'relu' | 'none';
}

export interface ModelSpec {
  name: string;
  /** Output embedding width of every head. */
  dim: number;
  query: TowerSpec;
  item: TowerSpec;
  tasks: TaskSpec[];
  /** L2-normalise every head (default true): scores are then cosines, searched as inner products. */
  normalize?: boolean;
  /** 'fixed' (default): Σ weight·loss; 'uncertainty': learned per-task weights (Kendall et al.). */
  taskWeighting?: 'fixed' | 'uncertainty';
  /** The task whose query head is the package's default output (default: the first task). */
  defaultTask?: string;
  /** Seed of the initial weights (default 1). */
  seed?: number;
}

export interface CompiledTask {
  name: string;
  kind: TaskKind;
  weight: number;
  temperature: number;
  logQ: boolean;
  maskAccidentalHits: boolean;
  /** Head index in the query tower. */
  queryHead: number;
  /** Head index in the item tower. */
  itemHead: number;
}

export interface CompiledModel {
  spec: ModelSpec;
  towers: { query: TowerDefinition; item: TowerDefinition };
  /** Every table, in the order the native trainer numbers them. */
  tableNames: string[];
  tasks: CompiledTask[];
  /** Item tower head names, in head order. */
  itemHeads: string[];
  metric: 'ip' | 'l2';
}

const TASK_KINDS: readonly TaskKind[] = ['retrieval', 'binary', 'regression'];
const TASK_KEYS = ['name', 'kind', 'weight', 'temperature', 'logQ', 'maskAccidentalHits', 'itemHead'];
const TOWER_KEYS = ['features', 'embeddingDim', 'hidden', 'layerNorm', 'residual', 'pooling', 'tables', 'mmoe'];
const MMOE_KEYS = ['experts', 'expertLayers', 'activation'];
const MAX_EXPERTS = 64;
const MODEL_KEYS = ['name', 'dim', 'query', 'item', 'tasks', 'normalize', 'taskWeighting', 'defaultTask', 'seed'];
const MAX_WIDTH = 1 << 16;
const NAME = /^[A-Za-z_][A-Za-z0-9_.-]*$/;

function fail(what: string, where: string, value: unknown): never {
  throw new InvalidSpecError(`Expected ${what} for ${where} but received ${describe(value)}`);
}

function requireObject(value: unknown, where: string, keys: readonly string[]): Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) fail('an object', where, value);
  const o = value as Record<string, unknown>;
  for (const key of Object.keys(o)) if (!keys.includes(key)) fail(`only ${keys.join(', ')}`, `the properties of ${where}`, key);
  return o;
}

function requireWidth(value: unknown, where: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > MAX_WIDTH) {
    fail(`an integer from 1 to ${MAX_WIDTH}`, where, value);
  }
  return value;
}

function optionalBoolean(value: unknown, where: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') fail('a boolean', where, value);
  return value;
}

function optionalPositive(value: unknown, where: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) fail('a positive finite number', where, value);
  return value;
}

function requireName(value: unknown, where: string): string {
  if (typeof value !== 'string' || !NAME.test(value)) fail('a name of letters, digits, _ . - (not starting with a digit)', where, value);
  return value;
}

/** A checked copy of the tower spec with its features validated. */
function validateTowerSpec(value: unknown, role: 'query' | 'item'): TowerSpec {
  const where = `the ${role} tower`;
  const t = requireObject(value, where, TOWER_KEYS);
  if (!Array.isArray(t.features) || t.features.length === 0) fail('a non-empty array of feature specs', `${where}'s features`, t.features);
  const features = t.features.map((f) => validateFeatureSpec(f));
  const names = new Set<string>();
  for (const f of features) {
    if (names.has(f.name)) fail('feature names used once per tower', `${where}'s features`, f.name);
    names.add(f.name);
  }
  const hidden = t.hidden === undefined ? [] : t.hidden;
  if (!Array.isArray(hidden)) fail('an array of widths', `${where}'s hidden`, hidden);
  hidden.forEach((w, i) => requireWidth(w, `${where}'s hidden[${i}]`));
  const pooling = t.pooling ?? 'mean';
  if (pooling !== 'mean' && pooling !== 'sum') fail("'mean' or 'sum'", `${where}'s pooling`, pooling);
  const tables: Record<string, string> = {};
  if (t.tables !== undefined) {
    const map = requireObject(t.tables, `${where}'s tables`, [...names]);
    for (const [feature, table] of Object.entries(map)) {
      const spec = features.find((f) => f.name === feature)!;
      if (spec.kind === 'dense') fail('a categorical or text feature', `${where}'s tables.${feature}`, 'a dense feature');
      tables[feature] = requireName(table, `${where}'s tables.${feature}`);
    }
  }
  return {
    features,
    embeddingDim: requireWidth(t.embeddingDim, `${where}'s embeddingDim`),
    hidden: hidden as number[],
    layerNorm: optionalBoolean(t.layerNorm, `${where}'s layerNorm`, false),
    residual: optionalBoolean(t.residual, `${where}'s residual`, false),
    pooling,
    tables,
    ...(t.mmoe === undefined ? {} : { mmoe: validateMmoe(t.mmoe, `${where}'s mmoe`) }),
  };
}

function validateMmoe(value: unknown, where: string): MmoeSpec {
  const m = requireObject(value, where, MMOE_KEYS);
  const experts = m.experts;
  if (typeof experts !== 'number' || !Number.isInteger(experts) || experts < 2 || experts > MAX_EXPERTS) {
    fail(`an integer from 2 to ${MAX_EXPERTS}`, `${where}.experts`, experts);
  }
  if (!Array.isArray(m.expertLayers) || m.expertLayers.length === 0) fail('a non-empty array of widths', `${where}.expertLayers`, m.expertLayers);
  m.expertLayers.forEach((w, i) => requireWidth(w, `${where}.expertLayers[${i}]`));
  const activation = m.activation ?? 'relu';
  if (activation !== 'relu' && activation !== 'none') fail("'relu' or 'none'", `${where}.activation`, activation);
  return { experts, expertLayers: [...(m.expertLayers as number[])], activation };
}

function validateTask(value: unknown, i: number): Required<Omit<TaskSpec, 'temperature'>> & { temperature: number } {
  const where = `tasks[${i}]`;
  const t = requireObject(value, where, TASK_KEYS);
  const name = requireName(t.name, `${where}.name`);
  if (!TASK_KINDS.includes(t.kind as TaskKind)) fail(TASK_KINDS.map((k) => `'${k}'`).join(', '), `${where}.kind`, t.kind);
  const kind = t.kind as TaskKind;
  if (t.weight !== undefined && (typeof t.weight !== 'number' || !Number.isFinite(t.weight) || t.weight < 0)) {
    fail('a finite number >= 0', `${where}.weight`, t.weight);
  }
  const retrievalOnly = ['logQ', 'maskAccidentalHits'] as const;
  if (kind !== 'retrieval') for (const key of retrievalOnly) if (t[key] !== undefined) fail(`no ${key} (retrieval tasks only)`, where, key);
  if (kind === 'regression' && t.temperature !== undefined) fail('no temperature (regression uses q·v as is)', where, 'temperature');
  return {
    name,
    kind,
    weight: (t.weight as number | undefined) ?? 1,
    temperature: optionalPositive(t.temperature, `${where}.temperature`, kind === 'retrieval' ? 0.05 : 0.1),
    logQ: optionalBoolean(t.logQ, `${where}.logQ`, kind === 'retrieval'),
    maskAccidentalHits: optionalBoolean(t.maskAccidentalHits, `${where}.maskAccidentalHits`, kind === 'retrieval'),
    itemHead: t.itemHead === undefined ? 'embedding' : requireName(t.itemHead, `${where}.itemHead`),
  };
}

/** Ids a feature maps to: features reading one table must map every value to the same row. */
function idSpace(f: FeatureSpec): string {
  if (f.kind === 'dense') return '';
  return f.vocabulary !== undefined ? `vocabulary:${JSON.stringify(f.vocabulary)}` : `buckets:${f.buckets}`;
}

/**
 * Checks a model spec (InvalidSpecError naming the offending part: unknown feature, dimension
 * mismatch between towers sharing a table, no tasks, duplicate names, …) and compiles it into
 * initial tower definitions. Tables shared between towers are one object in both definitions.
 */
export function compileModelSpec(value: ModelSpec): CompiledModel {
  const m = requireObject(value, 'the model spec', MODEL_KEYS);
  const name = requireName(m.name, 'the model name');
  const dim = requireWidth(m.dim, 'the model dim');
  const query = validateTowerSpec(m.query, 'query');
  const item = validateTowerSpec(m.item, 'item');
  if (!Array.isArray(m.tasks) || m.tasks.length === 0) fail('at least one task', 'tasks', m.tasks);
  const tasks = m.tasks.map(validateTask);
  const taskNames = new Set<string>();
  for (const t of tasks) {
    if (taskNames.has(t.name)) fail('task names used once', 'tasks', t.name);
    taskNames.add(t.name);
  }
  const normalize = optionalBoolean(m.normalize, 'normalize', true);
  const taskWeighting = m.taskWeighting ?? 'fixed';
  if (taskWeighting !== 'fixed' && taskWeighting !== 'uncertainty') fail("'fixed' or 'uncertainty'", 'taskWeighting', taskWeighting);
  const defaultTask = m.defaultTask === undefined ? tasks[0]!.name : (m.defaultTask as string);
  if (!taskNames.has(defaultTask)) fail(`one of the task names (${[...taskNames].join(', ')})`, 'defaultTask', defaultTask);
  const seed = m.seed === undefined ? 1 : m.seed;
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed)) fail('an integer', 'seed', seed);

  // Tables: one width and one id space per name, across both towers.
  const tableOf = (tower: TowerSpec, f: FeatureSpec): string => tower.tables?.[f.name] ?? f.name;
  const seen = new Map<string, { dim: number; ids: string; rows: number; by: string }>();
  for (const [role, tower] of [['query', query], ['item', item]] as const) {
    for (const f of tower.features) {
      if (f.kind === 'dense') continue;
      const table = tableOf(tower, f);
      const entry = { dim: tower.embeddingDim, ids: idSpace(f), rows: cardinality(f), by: `${role}.${f.name}` };
      const earlier = seen.get(table);
      if (earlier === undefined) seen.set(table, entry);
      else if (earlier.dim !== entry.dim) {
        throw new InvalidSpecError(
          `Table '${table}' is ${earlier.dim} wide for ${earlier.by} but ${entry.dim} wide for ${entry.by} (the towers' embeddingDim differ)`,
        );
      } else if (earlier.ids !== entry.ids) {
        throw new InvalidSpecError(`Features ${earlier.by} and ${entry.by} share table '${table}' but map values to different ids (give them the same vocabulary or buckets)`);
      }
    }
  }

  const queryHeads = tasks.map((t) => t.name);
  const itemHeads = [...new Set(tasks.map((t) => t.itemHead))];
  const build = (role: 'query' | 'item', tower: TowerSpec, heads: string[], seedOffset: number): TowerDefinition => {
    const def = initTower({
      name: `${name}.${role}`,
      features: tower.features,
      embeddingDim: tower.embeddingDim,
      hidden: tower.hidden ?? [],
      outputDim: dim,
      layerNorm: tower.layerNorm,
      residual: tower.residual,
      normalize,
      pooling: tower.pooling,
      tables: Object.fromEntries(tower.features.filter((f) => f.kind !== 'dense').map((f) => [f.name, tableOf(tower, f)])),
      ...(tower.mmoe ? { experts: { count: tower.mmoe.experts, layers: tower.mmoe.expertLayers, activation: tower.mmoe.activation ?? 'relu' } } : {}),
      // initTower's heads are 'embedding' then one per extra name: rename the first below.
      tasks: heads.slice(1),
      seed: seed + seedOffset,
    });
    def.heads[0] = { ...def.heads[0]!, output: heads[0]! };
    return def;
  };
  const queryDef = build('query', query, queryHeads, 0);
  const itemDef = build('item', item, itemHeads, 1);
  // One object per shared table: the query tower's initial values win.
  const tables = new Map<string, EmbeddingTable>();
  for (const def of [queryDef, itemDef]) {
    for (const [tableName, table] of Object.entries(def.tables)) {
      const first = tables.get(tableName);
      if (first === undefined) tables.set(tableName, table);
      else def.tables[tableName] = first;
    }
  }

  const compiledTasks: CompiledTask[] = tasks.map((t) => ({
    name: t.name,
    kind: t.kind,
    weight: t.weight,
    temperature: t.temperature,
    logQ: t.logQ,
    maskAccidentalHits: t.maskAccidentalHits,
    queryHead: queryHeads.indexOf(t.name),
    itemHead: itemHeads.indexOf(t.itemHead),
  }));
  const spec: ModelSpec = {
    name,
    dim,
    query,
    item,
    tasks: tasks.map((t) => ({ ...t })),
    normalize,
    taskWeighting: taskWeighting as 'fixed' | 'uncertainty',
    defaultTask,
    seed,
  };
  return {
    spec,
    towers: { query: queryDef, item: itemDef },
    tableNames: [...tables.keys()],
    tasks: compiledTasks,
    itemHeads,
    metric: 'ip',
  };
}
