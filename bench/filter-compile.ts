// Filter compile time on a large attribute table (a speed note, not a suite).
//
//   npx tsx bench/filter-compile.ts [--rows 1000000] [--repeats 15] [--seed 42]
//
// Builds a table of uint, number, bool, category and multi-valued category attributes (some
// values missing), then times Attributes.compileSync for a few filters, on one native thread
// and on all of them, and compile() (off the event loop) on all of them: the median of the
// repeats after a warm-up. A plain TypeScript loop over the same columns as typed arrays,
// writing the same bitset, is timed beside it for the filters it is written for; every native
// bitset is checked against it.
import { parseArgs } from 'node:util';
import { Attributes, hardwareThreads, simdLevel, type Filter } from '../lib/index.js';
import { seededUniform } from '../lib/random.js';

const { values } = parseArgs({
  options: { rows: { type: 'string', default: '1000000' }, repeats: { type: 'string', default: '15' }, seed: { type: 'string', default: '42' } },
});
const n = Number(values.rows);
const repeats = Number(values.repeats);
const next = seededUniform(Number(values.seed));

// Columns kept as typed arrays too, for the plain-TS peer.
const level = new Uint32Array(n);
const salary = new Float64Array(n);
const salaryPresent = new Uint8Array(n);
const remote = new Uint8Array(n);
const country = new Uint8Array(n);
const skillSets: number[][] = [];
const records = new Array(n);
for (let r = 0; r < n; r++) {
  level[r] = Math.floor(next() * 1000);
  salaryPresent[r] = next() < 0.9 ? 1 : 0;
  salary[r] = Math.round(20_000 + next() * 100_000);
  remote[r] = next() < 0.3 ? 1 : 0;
  country[r] = Math.floor(next() * 50);
  const skills = Array.from({ length: Math.floor(next() * 5) }, () => Math.floor(next() * 30));
  skillSets.push(skills);
  records[r] = {
    level: level[r],
    salary: salaryPresent[r] ? salary[r] : null,
    remote: remote[r] === 1,
    country: `c${country[r]}`,
    skills: skills.map((s) => `s${s}`),
  };
}

const attributes = new Attributes({
  level: 'uint',
  salary: 'number',
  remote: 'bool',
  country: 'category',
  skills: { type: 'category', multi: true },
});
let t = performance.now();
const batch = 100_000;
for (let i = 0; i < n; i += batch) attributes.append(records.slice(i, i + batch));
const appendMs = performance.now() - t;
records.length = 0;

const idToRow = new Map<bigint, number>();
for (let r = 0; r < n; r++) idToRow.set(BigInt(r * 7 + 1), r);
const allowIds = Array.from({ length: 10_000 }, () => BigInt(Math.floor(next() * n) * 7 + 1));

type Peer = (out: Uint32Array) => void;
const bitsOf = (pred: (r: number) => boolean): Peer => (out) => {
  out.fill(0);
  for (let r = 0; r < n; r++) if (pred(r)) out[r >>> 5]! |= 1 << (r & 31);
};
const has = (r: number, s: number) => skillSets[r]!.includes(s);

const cases: Array<{ name: string; filter: Filter; peer?: Peer }> = [
  { name: 'level >= 500', filter: { level: { gte: 500 } }, peer: bitsOf((r) => level[r]! >= 500) },
  {
    name: 'country in 5 of 50',
    filter: { country: { in: ['c1', 'c2', 'c3', 'c4', 'c5'] } },
    peer: bitsOf((r) => country[r]! >= 1 && country[r]! <= 5),
  },
  {
    name: 'skills hasAny 2, remote, salary < 50k',
    filter: { skills: { hasAny: ['s1', 's2'] }, remote: true, salary: { lt: 50_000 } },
    peer: bitsOf((r) => (has(r, 1) || has(r, 2)) && remote[r] === 1 && salaryPresent[r] === 1 && salary[r]! < 50_000),
  },
  {
    name: 'or(level < 10, and(country c7, not skills has s3))',
    filter: { or: [{ level: { lt: 10 } }, { country: 'c7', not: { skills: { has: 's3' } } }] },
    peer: bitsOf((r) => level[r]! < 10 || (country[r] === 7 && !has(r, 3))),
  },
  { name: 'level < 1 (0.1%, with row list)', filter: { level: { lt: 1 } }, peer: bitsOf((r) => level[r]! < 1) },
  { name: 'id in 10,000 ids (mapped in JS by a Map<bigint, number>)', filter: { id: { in: allowIds } } },
];

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
async function time(fn: () => unknown | Promise<unknown>): Promise<number> {
  await fn();
  const ms: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    await fn();
    ms.push(performance.now() - t0);
  }
  return median(ms);
}

console.log(
  `${n.toLocaleString('en')} rows, ${hardwareThreads()} hardware threads, SIMD ${simdLevel()}, Node ${process.version}; ` +
    `append ${appendMs.toFixed(0)} ms (records to columns included), ${(attributes.memoryBytes() / 2 ** 20).toFixed(1)} MiB native`,
);
console.log('filter | selected | compileSync 1 thread | compileSync all | compile (async) all | plain TS loop');
console.log('---|---:|---:|---:|---:|---:');
const all = hardwareThreads();
for (const c of cases) {
  const options = { idToRow, threads: 1 };
  const compiled = attributes.compileSync(c.filter, options);
  let peerMs = NaN;
  if (c.peer) {
    const out = new Uint32Array(compiled.bits.length);
    c.peer(out);
    if (!out.every((w, i) => w === compiled.bits[i])) throw new Error(`native bitset differs from the TS loop for ${c.name}`);
    peerMs = await time(() => c.peer!(out));
  }
  const one = await time(() => attributes.compileSync(c.filter, options));
  const many = await time(() => attributes.compileSync(c.filter, { idToRow, threads: all }));
  const async = await time(() => attributes.compile(c.filter, { idToRow, threads: all }));
  const pct = ((100 * compiled.count) / n).toFixed(compiled.count < n / 100 ? 2 : 1);
  const ms = (x: number) => (Number.isNaN(x) ? '–' : `${x.toFixed(2)} ms`);
  console.log(`${c.name} | ${pct}%${compiled.rows ? ' + rows' : ''} | ${ms(one)} | ${ms(many)} | ${ms(async)} | ${ms(peerMs)}`);
}
attributes.dispose();
