import { describe, expect, it } from 'vitest';

import {
  Attributes,
  DisposedError,
  FlatIndex,
  InvalidArgumentError,
  type AttributeColumn,
  type AttributeRecord,
  type AttributeSchema,
  type CompiledFilter,
  type Filter,
} from '../lib/index.js';
import { bruteForce, expectRowMatches, makeIds, randomVectors, rng } from './helpers.js';

// --- a brute-force reference on the public filter shape, one row at a time ------------------

type Value = AttributeRecord[string];

function isMissing(column: AttributeColumn, v: Value): boolean {
  return v === undefined || v === null || (column.multi && (v as readonly string[]).length === 0);
}

function equals(column: AttributeColumn, v: Value, x: unknown): boolean {
  if (column.multi) return (v as readonly string[]).includes(x as string);
  if (column.type === 'uint') return BigInt(v as number | bigint) === BigInt(x as number | bigint);
  return v === x; // number: 0 === -0, as the native compare
}

function compare(column: AttributeColumn, v: Value, bound: unknown): number {
  if (column.type === 'uint') {
    const a = BigInt(v as number | bigint);
    const b = BigInt(bound as number | bigint);
    return a < b ? -1 : a > b ? 1 : 0;
  }
  const a = v as number;
  const b = bound as number;
  return a < b ? -1 : a > b ? 1 : 0;
}

function conditionHolds(column: AttributeColumn, v: Value, condition: unknown): boolean {
  const missing = isMissing(column, v);
  if (typeof condition !== 'object' || condition === null) return !missing && equals(column, v, condition);
  for (const [op, x] of Object.entries(condition)) {
    if (op === 'exists') {
      if (missing === (x as boolean)) return false;
      continue;
    }
    if (missing) return false;
    let ok: boolean;
    switch (op) {
      case 'eq':
      case 'has':
        ok = equals(column, v, x);
        break;
      case 'in':
      case 'hasAny':
        ok = (x as unknown[]).some((y) => equals(column, v, y));
        break;
      case 'hasAll':
        ok = (x as unknown[]).every((y) => equals(column, v, y));
        break;
      case 'gt':
        ok = compare(column, v, x) > 0;
        break;
      case 'gte':
        ok = compare(column, v, x) >= 0;
        break;
      case 'lt':
        ok = compare(column, v, x) < 0;
        break;
      case 'lte':
        ok = compare(column, v, x) <= 0;
        break;
      default:
        throw new Error(`unknown operator ${op}`);
    }
    if (!ok) return false;
  }
  return true;
}

function reference(filter: Filter, columns: Map<string, AttributeColumn>, record: AttributeRecord, id: bigint): boolean {
  for (const [key, value] of Object.entries(filter)) {
    let ok: boolean;
    if (key === 'and') ok = (value as Filter[]).every((f) => reference(f, columns, record, id));
    else if (key === 'or') ok = (value as Filter[]).some((f) => reference(f, columns, record, id));
    else if (key === 'not') ok = !reference(value as Filter, columns, record, id);
    else if (key === 'id') {
      const { in: allow, notIn: deny } = value as { in?: bigint[]; notIn?: bigint[] };
      ok = (allow === undefined || allow.includes(id)) && (deny === undefined || !deny.includes(id));
    } else ok = conditionHolds(columns.get(key)!, record[key], value);
    if (!ok) return false;
  }
  return true;
}

// --- random schemas, records and filters ----------------------------------------------------

interface World {
  schema: AttributeSchema;
  columns: Map<string, AttributeColumn>;
  vocab: Map<string, string[]>;
  missing: Map<string, number>;
  records: AttributeRecord[];
  ids: bigint[];
}

const TYPES = ['uint', 'number', 'bool', 'category', 'multi'] as const;

function randomWorld(seed: number): World {
  const next = rng(seed);
  const schema: Record<string, AttributeSchema[string]> = {};
  const vocab = new Map<string, string[]>();
  const missing = new Map<string, number>();
  const count = 3 + Math.floor(next() * 5);
  for (let c = 0; c < count; c++) {
    const kind = c < TYPES.length ? TYPES[c]! : TYPES[Math.floor(next() * TYPES.length)]!;
    const name = `${kind}${c}`;
    schema[name] = kind === 'multi' ? { type: 'category', multi: true } : kind;
    vocab.set(name, Array.from({ length: 2 + Math.floor(next() * 8) }, (_, i) => `${name}-v${i}`));
    missing.set(name, [0, 0.1, 0.5, 0.97][Math.floor(next() * 4)]!);
  }
  const columns = new Map(
    Object.entries(schema).map(([name, spec]) => {
      const type = typeof spec === 'string' ? spec : spec.type;
      const multi = typeof spec === 'object' && spec.multi === true;
      return [name, { name, type, multi } as AttributeColumn];
    }),
  );
  return { schema, columns, vocab, missing, records: [], ids: [] };
}

function randomUint(next: () => number): number | bigint {
  const r = next();
  if (r < 0.05) return 2n ** 32n + BigInt(Math.floor(next() * 5)) - 2n; // around 2^32, as a bigint
  if (r < 0.1) return 2 ** 32 + Math.floor(next() * 3) - 1; // around 2^32, as a number
  if (r < 0.12) return 2n ** 64n - 1n;
  return Math.floor(next() * 12);
}

function randomNumber(next: () => number): number {
  const r = next();
  if (r < 0.1) return -0;
  if (r < 0.15) return next() < 0.5 ? Infinity : -Infinity;
  if (r < 0.4) return (next() - 0.5) * 10;
  return Math.floor(next() * 11 - 5) * 0.5;
}

function randomValue(world: World, name: string, next: () => number): Value {
  const column = world.columns.get(name)!;
  const words = world.vocab.get(name)!;
  switch (column.type) {
    case 'uint':
      return randomUint(next);
    case 'number':
      return randomNumber(next);
    case 'bool':
      return next() < 0.5;
    case 'category':
      if (!column.multi) return words[Math.floor(next() * words.length)]!;
      return Array.from({ length: 1 + Math.floor(next() * 4) }, () => words[Math.floor(next() * words.length)]!);
  }
}

function randomRecord(world: World, next: () => number): AttributeRecord {
  const record: Record<string, Value> = {};
  for (const name of world.columns.keys()) {
    if (next() < world.missing.get(name)!) {
      const r = next();
      if (r < 0.3) record[name] = null;
      else if (r < 0.5) record[name] = undefined;
      else if (r < 0.6 && world.columns.get(name)!.multi) record[name] = [];
      continue; // else: key absent
    }
    record[name] = randomValue(world, name, next);
  }
  return record;
}

function appendRandom(world: World, attributes: Attributes, count: number, next: () => number): void {
  const records = Array.from({ length: count }, () => randomRecord(world, next));
  attributes.append(records);
  for (const record of records) {
    world.records.push(record);
    world.ids.push(BigInt(world.ids.length * 7919 + 13));
  }
}

function filterValue(world: World, name: string, next: () => number): unknown {
  const column = world.columns.get(name)!;
  if (column.type === 'category' && next() < 0.1) return 'never-seen';
  const v = randomValue(world, name, next);
  return column.multi ? (v as string[])[0] : v;
}

function randomCondition(world: World, name: string, next: () => number): unknown {
  const column = world.columns.get(name)!;
  const r = next();
  if (r < 0.2) return filterValue(world, name, next); // shorthand equality
  if (r < 0.3) return { exists: next() < 0.5 };
  const list = () => Array.from({ length: 1 + Math.floor(next() * (next() < 0.5 ? 3 : 15)) }, () => filterValue(world, name, next));
  if (column.type === 'category') {
    const ops = ['eq', 'in', 'has', 'hasAny', 'hasAll'] as const;
    const op = ops[Math.floor(next() * ops.length)]!;
    const condition: Record<string, unknown> = { [op]: op === 'eq' || op === 'has' ? filterValue(world, name, next) : list() };
    if (next() < 0.2) condition.exists = true;
    return condition;
  }
  if (column.type === 'bool' || r < 0.5) return next() < 0.5 ? { eq: filterValue(world, name, next) } : { in: list() };
  const condition: Record<string, unknown> = {};
  const sides = next();
  if (sides < 0.7) condition[next() < 0.5 ? 'gt' : 'gte'] = filterValue(world, name, next);
  if (sides > 0.3) condition[next() < 0.5 ? 'lt' : 'lte'] = filterValue(world, name, next);
  return condition;
}

function randomFilter(world: World, next: () => number, depth = 0): Filter {
  const r = next();
  if (depth < 4 && r < 0.35) {
    if (r < 0.1) return { not: randomFilter(world, next, depth + 1) };
    const children = Array.from({ length: Math.floor(next() * 4) }, () => randomFilter(world, next, depth + 1));
    return r < 0.25 ? { and: children } : { or: children };
  }
  if (r < 0.42) {
    const ids = Array.from({ length: Math.floor(next() * 30) }, () =>
      next() < 0.2 ? BigInt(Math.floor(next() * 1e9)) : world.ids[Math.floor(next() * world.ids.length)] ?? 1n,
    );
    return { id: next() < 0.5 ? { in: ids } : { notIn: ids } };
  }
  // One to three clauses in one object: an implicit and.
  const filter: Record<string, unknown> = {};
  const names = [...world.columns.keys()];
  for (let i = 0, n = 1 + Math.floor(next() * 3); i < n; i++) {
    const name = names[Math.floor(next() * names.length)]!;
    filter[name] = randomCondition(world, name, next);
  }
  return filter as Filter;
}

function selected(compiled: CompiledFilter, row: number): boolean {
  return (((compiled.bits[row >> 5] ?? 0) >>> (row & 31)) & 1) === 1;
}

function expectMatchesReference(world: World, compiled: CompiledFilter, filter: Filter, rowListBelow: number): void {
  const n = world.records.length;
  expect(compiled.rowCount).toBe(n);
  expect(compiled.bits.length).toBe(Math.ceil(n / 32));
  const want: number[] = [];
  for (let r = 0; r < n; r++) {
    const ok = reference(filter, world.columns, world.records[r]!, world.ids[r]!);
    if (ok) want.push(r);
    if (ok !== selected(compiled, r)) {
      expect.fail(`row ${r}: want ${ok} for ${JSON.stringify(filter, (_, v) => (typeof v === 'bigint' ? `${v}n` : v))} on ${JSON.stringify(world.records[r], (_, v) => (typeof v === 'bigint' ? `${v}n` : v))}`);
    }
  }
  if (n % 32 !== 0) expect(compiled.bits[compiled.bits.length - 1]! >>> (n % 32)).toBe(0);
  expect(compiled.count).toBe(want.length);
  const hasRows = rowListBelow > 0 && want.length <= rowListBelow * n;
  expect(compiled.rows !== undefined).toBe(hasRows);
  if (hasRows) expect([...compiled.rows!]).toEqual(want);
}

function idToRowOf(world: World): Map<bigint, number> {
  return new Map(world.ids.map((id, r) => [id, r]));
}

// --- tests ----------------------------------------------------------------------------------

describe('Attributes filters against a brute-force reference', () => {
  it('agrees on random schemas, records and filter trees of depth up to 4', async () => {
    let cases = 0;
    for (let seed = 1; seed <= 8; seed++) {
      const next = rng(1000 + seed);
      const world = randomWorld(seed);
      using attributes = new Attributes(world.schema);
      for (const size of [0, 1, 31, 700, 1500]) appendRandom(world, attributes, size, next);
      const idToRow = idToRowOf(world);
      for (let i = 0; i < 300; i++, cases++) {
        const filter = randomFilter(world, next);
        const rowListBelow = [0, 0.01, 0.2, 1][Math.floor(next() * 4)]!;
        const options = { idToRow, rowListBelow, threads: 1 + Math.floor(next() * 2) };
        const compiled = i % 10 === 0 ? await attributes.compile(filter, options) : attributes.compileSync(filter, options);
        expectMatchesReference(world, compiled, filter, rowListBelow);
      }
    }
    expect(cases).toBe(2400);
  });

  it('agrees across chunks of 65,536 rows, with appends of every size', async () => {
    const next = rng(77);
    const world = randomWorld(77);
    using attributes = new Attributes(world.schema);
    for (const size of [50_000, 20_000, 1, 70_000]) appendRandom(world, attributes, size, next);
    const idToRow = idToRowOf(world);
    for (let i = 0; i < 25; i++) {
      const filter = randomFilter(world, next);
      expectMatchesReference(world, await attributes.compile(filter, { idToRow }), filter, 0.01);
    }
  });

  it('agrees after setRows replaces whole rows, and appends continue after it', () => {
    const next = rng(5);
    const world = randomWorld(5);
    using attributes = new Attributes(world.schema);
    appendRandom(world, attributes, 70_000, next);
    const idToRow = idToRowOf(world);
    for (let round = 0; round < 3; round++) {
      const rows = [...new Set(Array.from({ length: 200 }, () => Math.floor(next() * world.records.length)))];
      const records = rows.map(() => randomRecord(world, next));
      attributes.setRows(rows, records);
      rows.forEach((row, i) => (world.records[row] = records[i]!));
      appendRandom(world, attributes, 100, next);
      for (const [id, row] of world.ids.slice(idToRow.size).map((id, i) => [id, idToRow.size + i] as const)) idToRow.set(id, row);
      for (let i = 0; i < 15; i++) {
        const filter = randomFilter(world, next);
        expectMatchesReference(world, attributes.compileSync(filter, { idToRow }), filter, 0.01);
      }
    }
  });
});

describe('Attributes semantics', () => {
  const schema = {
    level: 'uint',
    skills: { type: 'category', multi: true },
    salary: 'number',
    remote: 'bool',
    country: 'category',
  } as const satisfies AttributeSchema;
  const records: AttributeRecord[] = [
    { level: 3, skills: ['go', 'rust'], salary: 100, remote: true, country: 'de' },
    { level: 1, skills: [], salary: -0, remote: false, country: 'fr' },
    { skills: ['rust'], salary: null, country: 'de' },
    { level: 2n ** 40n, skills: ['go'], salary: Infinity, remote: true },
    { level: 7, salary: 55.5, remote: false, country: 'us' },
  ];
  const rowsOf = (a: Attributes, filter: Filter): number[] => {
    const { bits, rowCount } = a.compileSync(filter);
    return Array.from({ length: rowCount }, (_, r) => r).filter((r) => ((bits[r >> 5]! >>> (r & 31)) & 1) === 1);
  };

  it('multi-valued categories: eq and has contain, in and hasAny contain any, hasAll contains all', () => {
    using a = new Attributes(schema);
    a.append(records);
    expect(rowsOf(a, { skills: 'rust' })).toEqual([0, 2]);
    expect(rowsOf(a, { skills: { has: 'go' } })).toEqual([0, 3]);
    expect(rowsOf(a, { skills: { in: ['go', 'java'] } })).toEqual([0, 3]);
    expect(rowsOf(a, { skills: { hasAny: ['rust', 'go'] } })).toEqual([0, 2, 3]);
    expect(rowsOf(a, { skills: { hasAll: ['rust', 'go'] } })).toEqual([0]);
    expect(rowsOf(a, { skills: { hasAll: ['rust', 'never'] } })).toEqual([]);
    expect(rowsOf(a, { skills: { exists: true } })).toEqual([0, 2, 3]); // [] is missing
    expect(rowsOf(a, { skills: { exists: false } })).toEqual([1, 4]);
    expect(rowsOf(a, { country: { hasAny: ['de', 'us'] } })).toEqual([0, 2, 4]); // a single value is a set of one
  });

  it('missing values fail every condition and not is the plain complement', () => {
    using a = new Attributes(schema);
    a.append(records);
    expect(rowsOf(a, { level: { lt: 5 } })).toEqual([0, 1]);
    expect(rowsOf(a, { not: { level: { lt: 5 } } })).toEqual([2, 3, 4]); // row 2 has no level
    expect(rowsOf(a, { level: { gte: 5 } })).toEqual([3, 4]);
    expect(rowsOf(a, { level: { exists: true }, not: { level: { lt: 5 } } })).toEqual([3, 4]);
    expect(rowsOf(a, { remote: false })).toEqual([1, 4]);
    expect(rowsOf(a, { not: { remote: true } })).toEqual([1, 2, 4]);
    expect(rowsOf(a, { salary: 0 })).toEqual([1]); // -0 equals 0
    expect(rowsOf(a, { salary: { gt: 1e308 } })).toEqual([3]); // Infinity
    expect(rowsOf(a, { salary: { lt: Infinity } })).toEqual([0, 1, 4]);
    expect(rowsOf(a, { level: 2n ** 40n })).toEqual([3]);
    expect(rowsOf(a, { level: { in: [1, 7, 2 ** 40] } })).toEqual([1, 3, 4]);
    expect(rowsOf(a, { country: { in: ['de', 'fr'] }, remote: true })).toEqual([0]);
    expect(rowsOf(a, {})).toEqual([0, 1, 2, 3, 4]);
    expect(rowsOf(a, { and: [] })).toEqual([0, 1, 2, 3, 4]);
    expect(rowsOf(a, { or: [] })).toEqual([]);
    expect(rowsOf(a, { country: 'nowhere' })).toEqual([]);
  });

  it('id allow and deny lists map ids to rows with idToRow (a Map or a function)', async () => {
    using a = new Attributes(schema);
    a.append(records);
    const ids = [10n, 20n, 30n, 40n, 50n];
    const map = new Map(ids.map((id, r) => [id, r]));
    const allowed = a.compileSync({ id: { in: [20, 40n, 999n] } }, { idToRow: map });
    expect(allowed.count).toBe(2);
    expect(allowed.bits[0]).toBe(0b01010);
    const denied = await a.compile({ id: { notIn: [20n] }, remote: true }, { idToRow: (id) => map.get(id) });
    expect(denied.bits[0]).toBe(0b01001);
    expect(() => a.compileSync({ id: { in: [1n] } }, { idToRow: () => -1 })).toThrow(InvalidArgumentError);
  });

  it('selectivity sweep: counts, and a row list below rowListBelow', async () => {
    const n = 100_000;
    const next = rng(3);
    using a = new Attributes({ bucket: 'uint', tag: 'category' });
    const buckets = Array.from({ length: n }, () => Math.floor(next() * 1000));
    a.append(buckets.map((bucket, r) => ({ bucket, tag: r % 2 === 0 ? 'even' : 'odd' })));
    for (const fraction of [0.5, 0.1, 0.01, 0.001]) {
      const below = fraction * 1000;
      const want = buckets.filter((b) => b < below).length;
      const compiled = await a.compile({ bucket: { lt: below } });
      expect(compiled.count).toBe(want);
      expect(Math.abs(want / n - fraction)).toBeLessThan(0.3 * fraction + 0.001);
      // The default rowListBelow is 0.01.
      expect(compiled.rows !== undefined).toBe(want <= 0.01 * n);
      if (compiled.rows) expect([...compiled.rows]).toEqual(buckets.flatMap((b, r) => (b < below ? [r] : [])));
      const combined = a.compileSync({ bucket: { lt: below }, tag: 'even' }, { rowListBelow: 1 });
      expect([...combined.rows!]).toEqual(buckets.flatMap((b, r) => (b < below && r % 2 === 0 ? [r] : [])));
    }
  });

  it('compiles on an empty table', () => {
    using a = new Attributes(schema);
    expect(a.compileSync({ level: 1 })).toEqual({ bits: new Uint32Array(0), count: 0, rowCount: 0, rows: new Uint32Array(0) });
    a.append([]);
    expect(a.size).toBe(0);
  });

  it('reports memory and size, and disposes', () => {
    const a = new Attributes(schema);
    const empty = a.memoryBytes();
    a.append(Array.from({ length: 10_000 }, (_, i) => ({ level: i, country: `c${i % 10}` })));
    expect(a.size).toBe(10_000);
    expect(a.memoryBytes()).toBeGreaterThan(empty + 10_000 * 8);
    expect(a.schema.map((c) => `${c.name}:${c.type}${c.multi ? '[]' : ''}`)).toEqual([
      'level:uint',
      'skills:category[]',
      'salary:number',
      'remote:bool',
      'country:category',
    ]);
    a.dispose();
    a.dispose();
    expect(a.disposed).toBe(true);
    expect(() => a.size).toThrow(DisposedError);
    expect(() => a.compileSync({})).toThrow(DisposedError);
    expect(() => a.append([])).toThrow(DisposedError);
  });
});

describe('Attributes errors', () => {
  const schema = { level: 'uint', skills: { type: 'category', multi: true }, salary: 'number', remote: 'bool', country: 'category' } as const;
  const message = (fn: () => unknown): string => {
    try {
      fn();
    } catch (error) {
      expect(error).toBeInstanceOf(InvalidArgumentError);
      expect((error as InvalidArgumentError).code).toBe('EBRIX_INVALID_ARGUMENT');
      return (error as Error).message;
    }
    throw new Error('expected an error');
  };

  it('rejects unknown attributes, type mismatches, empty lists and NaN in filters, naming the path', () => {
    using a = new Attributes(schema);
    a.append([{ level: 1 }]);
    const f = (filter: unknown) => message(() => a.compileSync(filter as Filter));
    expect(f({ and: [{ levle: 3 }] })).toBe(
      'Expected an attribute of the schema (level, skills, salary, remote, country) or one of and, or, not, id for a key of filter.and[0] but received "levle"',
    );
    expect(f({ level: '3' })).toBe(
      'Expected an unsigned integer (a non-negative safe integer, or a bigint below 2^64) for filter.level but received "3"',
    );
    expect(f({ level: { gte: -1 } })).toMatch(/for filter\.level\.gte but received -1$/);
    expect(f({ level: 1.5 })).toMatch(/for filter\.level but received 1\.5$/);
    expect(f({ remote: 1 })).toBe('Expected a boolean for filter.remote but received 1');
    expect(f({ country: { gte: 'a' } })).toBe(
      'Expected one of eq, in, has, hasAny, hasAll, exists (the operators of category attribute country) for a key of filter.country but received "gte"',
    );
    expect(f({ level: { has: 1 } })).toMatch(/operators of uint attribute level\) for a key of filter\.level but received "has"/);
    expect(f({ country: { in: [] } })).toBe('Expected a non-empty array for filter.country.in but received an array of length 0');
    expect(f({ skills: { hasAll: [] } })).toBe('Expected a non-empty array for filter.skills.hasAll but received an array of length 0');
    expect(f({ skills: { in: ['go', 3] } })).toBe('Expected a string for filter.skills.in[1] but received 3');
    expect(f({ salary: { lt: NaN } })).toBe('Expected a number that is not NaN for filter.salary.lt but received NaN');
    expect(f({ salary: { gt: 1, gte: 2 } })).toMatch(/^Expected at most one of gt and gte for filter.salary/);
    expect(f({ salary: {} })).toMatch(/^Expected a condition with an operator/);
    expect(f({ level: [1, 2] })).toMatch(/use \{ in: \[\.\.\.\] \} for a list/);
    expect(f({ level: null })).toMatch(/use \{ exists: false \}/);
    expect(f({ or: { level: 1 } })).toMatch(/^Expected an array of filters for filter.or/);
    expect(f({ not: [] })).toBe('Expected a filter object for filter.not but received an array of length 0');
    expect(f({ id: { in: [1] } })).toMatch(/^Expected a Map or a function from id to row \(filter.id.in needs one\) for options.idToRow/);
    expect(f({ id: { within: [1] } })).toMatch(/for a key of filter.id but received "within"/);
    expect(f(null)).toBe('Expected a filter object for filter but received null');
    expect(f(new Map([['level', 1]]))).toBe('Expected a filter object for filter but received an object (Map)');
    let deep: Filter = { level: 1 };
    for (let i = 0; i < 40; i++) deep = { not: deep };
    expect(f(deep)).toMatch(/nested at most 30 levels deep/);
    const cyclic: { not?: unknown } = {};
    cyclic.not = cyclic;
    expect(f(cyclic)).toMatch(/nested at most 30 levels deep/);
    expect(message(() => a.compileSync({}, { rowListBelow: 2 }))).toBe('Expected a fraction from 0 to 1 for options.rowListBelow but received 2');
  });

  it('rejects bad schemas and bad records, leaving the table unchanged', () => {
    expect(message(() => new Attributes({ and: 'uint' }))).toMatch(/other than and, or, not, id/);
    expect(message(() => new Attributes({ level: 'int' } as never))).toBe(
      "Expected one of 'uint', 'number', 'bool', 'category' for schema.level but received \"int\"",
    );
    expect(message(() => new Attributes({ level: { type: 'uint', multi: true } }))).toMatch(/type 'category' for a multi-valued attribute/);
    using a = new Attributes(schema);
    a.append([{ level: 1, skills: ['go'] }]);
    const bytes = a.memoryBytes();
    const bad = (records: unknown[]) => message(() => a.append(records as AttributeRecord[]));
    expect(bad([{ level: 2 }, { levle: 3 }])).toBe(
      'Expected an attribute of the schema (level, skills, salary, remote, country) for a key of records[1] but received "levle"',
    );
    expect(bad([{ level: 2 }, { level: -3 }])).toMatch(/for records\[1\]\.level but received -3$/);
    expect(bad([{ level: 2 ** 53 }])).toMatch(/for records\[0\]\.level but received 9007199254740992$/);
    expect(bad([{ salary: NaN }])).toBe('Expected a number that is not NaN for records[0].salary but received NaN');
    expect(bad([{ remote: 'yes' }])).toBe('Expected a boolean for records[0].remote but received "yes"');
    expect(bad([{ skills: 'go' }])).toBe('Expected an array of strings for records[0].skills but received "go"');
    expect(bad([{ skills: ['go', 1] }])).toBe('Expected a string for records[0].skills[1] but received 1');
    expect(bad([{ country: 3 }])).toBe('Expected a string for records[0].country but received 3');
    expect(bad([null])).toBe('Expected a record object for records[0] but received null');
    expect(a.size).toBe(1);
    expect(a.memoryBytes()).toBe(bytes);
    expect(message(() => a.setRows([0, 0], [{}, {}]))).toMatch(/distinct rows/);
    expect(message(() => a.setRows([1], [{}]))).toMatch(/a row below the row count 1/);
    expect(message(() => a.setRows([0], []))).toMatch(/an array of 1 records/);
  });
});

describe('filtered FlatIndex search', () => {
  it('returns exactly the brute-force top-k of the filtered rows at selectivities 50%, 10%, 1% and 0.1%', async () => {
    const n = 20_000;
    const dim = 24;
    const k = 10;
    const data = randomVectors(n, dim, 11);
    const ids = makeIds(n);
    const next = rng(12);
    const records = Array.from({ length: n }, () => ({
      bucket: Math.floor(next() * 1000),
      skills: ['a', 'b', 'c', 'd'].filter(() => next() < 0.5),
      remote: next() < 0.5,
    }));
    using index = new FlatIndex({ dim, metric: 'ip' });
    using attributes = new Attributes({ bucket: 'uint', skills: { type: 'category', multi: true }, remote: 'bool' });
    // Two adds and two appends, in the same order, keep rows aligned.
    await index.add(ids.slice(0, 12_000), data.subarray(0, 12_000 * dim));
    attributes.append(records.slice(0, 12_000));
    await index.add(ids.slice(12_000), data.subarray(12_000 * dim));
    attributes.append(records.slice(12_000));
    const idToRow = new Map(ids.map((id, r) => [id, r]));
    const queries = randomVectors(4, dim, 13);
    const cases: Array<[string, Filter, (r: number) => boolean]> = [
      ['50%', { bucket: { lt: 500 } }, (r) => records[r]!.bucket < 500],
      ['10%', { or: [{ bucket: { lt: 50 } }, { bucket: { gte: 950 } }] }, (r) => records[r]!.bucket < 50 || records[r]!.bucket >= 950],
      [
        '1%',
        { bucket: { lt: 20 }, not: { remote: false } },
        (r) => records[r]!.bucket < 20 && records[r]!.remote,
      ],
      [
        '0.1%',
        { bucket: { lt: 4 }, skills: { hasAny: ['a', 'b', 'c'] }, id: { notIn: [ids[0]!] } },
        (r) => records[r]!.bucket < 4 && records[r]!.skills.some((s) => s !== 'd') && r !== 0,
      ],
    ];
    for (const [label, filter, keep] of cases) {
      const compiled = await attributes.compile(filter, { idToRow });
      const rows = Array.from({ length: n }, (_, r) => r).filter(keep);
      expect(compiled.count, label).toBe(rows.length);
      expect(rows.length, label).toBeGreaterThan(k);
      const subset = new Float32Array(rows.length * dim);
      rows.forEach((r, i) => subset.set(data.subarray(r * dim, (r + 1) * dim), i * dim));
      const subsetIds = rows.map((r) => ids[r]!);
      const result = await index.search(queries, k, { allow: compiled.bits });
      for (let q = 0; q < queries.length / dim; q++) {
        const truth = bruteForce('ip', subset, subsetIds, queries.subarray(q * dim, (q + 1) * dim), dim);
        const row = result.row(q);
        expectRowMatches(truth, row.ids, row.scores, k);
        // Exact search over distinct random vectors: the same ids, in order.
        expect([...row.ids], label).toEqual(truth.slice(0, k).map((t) => t.id));
      }
    }
  });
});
