/**
 * Suite lifecycle: the life of a FlatIndex beyond search.
 *
 * - open: `FlatIndex.open(file)` mapped and read, against the naive peer, reading the same
 *   rows from a raw float32 file with fs.readFileSync (what a user without an index format
 *   would do); the target is a mapped open of 1,000,000 × 128 under 50 ms.
 * - filter: single-query filtered search (pre-filtering: the filter compiled natively to an
 *   allow bitset tested inside the scan) at selectivities 50%, 10%, 1% and 0.1%, against
 *   post-filtering as the naive peer (search 10 × k unfiltered, keep the rows that pass);
 *   recall@10 of both against exact filtered search.
 * - ivfpq filter: the same selectivities on an IvfPqIndex over Gaussian clusters (its
 *   filterStrategy 'auto': nprobe scaled by the allowed fraction, or a direct scan of the
 *   allowed rows' codes), against the unfiltered recall at the same nprobe and against
 *   post-filtering 10 × k unfiltered candidates; recall@10 against exact filtered search.
 * - writer: single-query search latency with and without a concurrent writer adding
 *   `writerRate` vectors per second (in batches every 100 ms); the target is a p99 under
 *   the writer within 1.5× of the p99 without.
 */
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { FlatIndex, IvfPqIndex } from '../../lib/index.js';
import { seededUniform } from '../../lib/random.js';
import { clusteredDataset } from '../datasets.js';

export interface LifecycleSuiteOptions {
  n: number;
  dim: number;
  seed: number;
  /** Opens timed per way (the median is reported). */
  openRepeats: number;
  /** Seconds of searching in each of the two latency phases. */
  latencySeconds: number;
  /** Vectors per second the writer adds during the second phase. */
  writerRate: number;
  /** Queries per selectivity of the filtered search. */
  filterQueries: number;
  /** Rows of the IVF-PQ filtered search (Gaussian clusters, dim as above). */
  ivfpqN: number;
  log: (message: string) => void;
}

export interface OpenResult {
  n: number;
  dim: number;
  fileBytes: number;
  saveSeconds: number;
  mmapOpenMs: number;
  readOpenMs: number;
  /** The peer: fs.readFileSync of the rows as one raw float32 file. */
  rawReadMs: number;
  targetMs: number;
  pass: boolean;
}

export interface LatencyPhase {
  searches: number;
  p50Ms: number;
  p99Ms: number;
}

export interface WriterResult {
  n: number;
  dim: number;
  writerRate: number;
  added: number;
  alone: LatencyPhase;
  withWriter: LatencyPhase;
  p99Ratio: number;
  targetRatio: number;
  pass: boolean;
}

export interface FilterPoint {
  selectivity: number;
  /** Pre-filtering (ebrix filter): queries per second and recall@10. */
  preQps: number;
  preRecall: number;
  /** Post-filtering 10 × k candidates. */
  postQps: number;
  postRecall: number;
}

export interface FilterResult {
  n: number;
  dim: number;
  queries: number;
  points: FilterPoint[];
  /** Pre-filtering has recall 1.0 everywhere and its QPS rises as selectivity falls. */
  pass: boolean;
}

export interface IvfPqFilterPoint {
  selectivity: number;
  /** ebrix filter (filterStrategy 'auto'): queries per second and recall@10. */
  preQps: number;
  preRecall: number;
  /** Post-filtering 10 × k unfiltered candidates at the same nprobe. */
  postQps: number;
  postRecall: number;
}

export interface IvfPqFilterResult {
  n: number;
  dim: number;
  nlist: number;
  m: number;
  nprobe: number;
  queries: number;
  /** Unfiltered recall@10 and QPS at the same nprobe: the recall the filtered ones should keep. */
  unfilteredRecall: number;
  unfilteredQps: number;
  points: IvfPqFilterPoint[];
  /** Filtered recall within 0.05 of the unfiltered at every selectivity. */
  pass: boolean;
}

export interface LifecycleSuiteResult {
  open: OpenResult;
  filter: FilterResult;
  ivfpqFilter: IvfPqFilterResult;
  writer: WriterResult;
}

function randomRows(n: number, dim: number, seed: number): Float32Array {
  const next = seededUniform(seed);
  const out = new Float32Array(n * dim);
  for (let i = 0; i < out.length; i++) out[i] = next() * 2 - 1;
  return out;
}

function idsFrom(first: number, n: number): BigUint64Array {
  const ids = new BigUint64Array(n);
  for (let i = 0; i < n; i++) ids[i] = BigInt(first + i);
  return ids;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

async function timeMs(fn: () => Promise<unknown> | unknown): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

async function latencyPhase(index: FlatIndex, queries: Float32Array, dim: number, seconds: number): Promise<LatencyPhase> {
  const times: number[] = [];
  const nq = queries.length / dim;
  const end = performance.now() + seconds * 1000;
  for (let i = 0; performance.now() < end; i++) {
    const q = queries.subarray((i % nq) * dim, ((i % nq) + 1) * dim);
    const t0 = performance.now();
    await index.search(q, 10);
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return { searches: times.length, p50Ms: percentile(times, 0.5), p99Ms: percentile(times, 0.99) };
}

export async function runLifecycleSuite(options: LifecycleSuiteOptions): Promise<LifecycleSuiteResult> {
  const { n, dim, log } = options;
  const dir = mkdtempSync(path.join(tmpdir(), 'ebrix-bench-lifecycle-'));
  try {
    log(`lifecycle: ${n.toLocaleString('en-US')} × ${dim} random rows`);
    const rows = randomRows(n, dim, options.seed);
    using index = new FlatIndex({ dim, metric: 'ip' });
    await index.add(idsFrom(0, n), rows);

    const file = path.join(dir, 'flat.ebrix');
    const saveSeconds = (await timeMs(() => index.save(file))) / 1000;
    const raw = path.join(dir, 'rows.f32');
    writeFileSync(raw, new Uint8Array(rows.buffer, rows.byteOffset, rows.byteLength));
    const mmapTimes: number[] = [];
    const readTimes: number[] = [];
    const rawTimes: number[] = [];
    for (let r = 0; r < options.openRepeats; r++) {
      mmapTimes.push(await timeMs(async () => (await FlatIndex.open(file)).dispose()));
      readTimes.push(await timeMs(async () => (await FlatIndex.open(file, { mmap: false })).dispose()));
      rawTimes.push(await timeMs(() => new Float32Array(readFileSync(raw).buffer)));
    }
    const mmapOpenMs = median(mmapTimes);
    const open: OpenResult = {
      n,
      dim,
      fileBytes: statSync(file).size,
      saveSeconds,
      mmapOpenMs,
      readOpenMs: median(readTimes),
      rawReadMs: median(rawTimes),
      targetMs: 50,
      pass: mmapOpenMs < 50,
    };
    log(`lifecycle: mapped open ${mmapOpenMs.toFixed(2)} ms, read open ${open.readOpenMs.toFixed(1)} ms, raw read ${open.rawReadMs.toFixed(1)} ms`);

    const queries = randomRows(256, dim, options.seed + 1);
    const filter = await filterPoints(rows, n, dim, queries, options);
    const ivfpqFilter = await ivfpqFilterPoints(options);
    await latencyPhase(index, queries, dim, Math.min(0.5, options.latencySeconds)); // warm-up
    const alone = await latencyPhase(index, queries, dim, options.latencySeconds);
    // The writer: a batch every 100 ms, so that writerRate vectors arrive each second.
    const batch = Math.max(1, Math.round(options.writerRate / 10));
    const fresh = randomRows(batch * Math.ceil(options.latencySeconds * 10 + 10), dim, options.seed + 2);
    let added = 0;
    let writing: Promise<void> = Promise.resolve();
    const timer = setInterval(() => {
      writing = writing.then(async () => {
        const offset = (added / batch) * batch * dim;
        await index.add(idsFrom(n + added, batch), fresh.subarray(offset, offset + batch * dim));
        added += batch;
      });
    }, 100);
    let withWriter: LatencyPhase;
    try {
      withWriter = await latencyPhase(index, queries, dim, options.latencySeconds);
    } finally {
      clearInterval(timer);
      await writing;
    }
    const p99Ratio = withWriter.p99Ms / alone.p99Ms;
    const writer: WriterResult = {
      n,
      dim,
      writerRate: options.writerRate,
      added,
      alone,
      withWriter,
      p99Ratio,
      targetRatio: 1.5,
      pass: p99Ratio <= 1.5,
    };
    log(`lifecycle: search p99 ${alone.p99Ms.toFixed(2)} ms alone, ${withWriter.p99Ms.toFixed(2)} ms with a writer (${added} added)`);
    return { open, filter, ivfpqFilter, writer };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function filterPoints(
  rows: Float32Array,
  n: number,
  dim: number,
  queries: Float32Array,
  options: LifecycleSuiteOptions,
): Promise<FilterResult> {
  const levels = 100_000;
  const next = seededUniform(options.seed + 3);
  const level = Uint32Array.from({ length: n }, () => Math.floor(next() * levels));
  using index = new FlatIndex({ dim, metric: 'ip', attributes: { level: 'uint' } });
  const records = Array.from(level, (l) => ({ level: l }));
  await index.add(idsFrom(0, n), rows, { attributes: records });
  const k = 10;
  const nq = Math.min(options.filterQueries, queries.length / dim);
  const points: FilterPoint[] = [];
  for (const selectivity of [0.5, 0.1, 0.01, 0.001]) {
    const bound = Math.round(selectivity * levels);
    const filter = { level: { lt: bound } };
    let preHits = 0;
    let postHits = 0;
    let preMs = 0;
    let postMs = 0;
    // Exact filtered truth: the same exact scan with a bitset built here from the levels.
    const allow = new Uint32Array(Math.ceil(n / 32));
    for (let r = 0; r < n; r++) if (level[r]! < bound) allow[r >> 5]! |= 1 << (r & 31);
    for (let q = 0; q < nq; q++) {
      const query = queries.subarray(q * dim, (q + 1) * dim);
      const truth = new Set((await index.search(query, k, { allow })).row(0).ids);
      let t0 = performance.now();
      const pre = (await index.search(query, k, { filter })).row(0).ids;
      preMs += performance.now() - t0;
      t0 = performance.now();
      const over = (await index.search(query, 10 * k)).row(0).ids;
      const post = [...over].filter((id) => level[Number(id)]! < bound).slice(0, k);
      postMs += performance.now() - t0;
      for (const id of pre) if (truth.has(id)) preHits++;
      for (const id of post) if (truth.has(id)) postHits++;
    }
    points.push({
      selectivity,
      preQps: (nq * 1000) / preMs,
      preRecall: preHits / (nq * k),
      postQps: (nq * 1000) / postMs,
      postRecall: postHits / (nq * k),
    });
    options.log(`lifecycle: filter ${selectivity * 100}%: pre ${points.at(-1)!.preQps.toFixed(0)} QPS recall ${points.at(-1)!.preRecall.toFixed(3)}, post ${points.at(-1)!.postQps.toFixed(0)} QPS recall ${points.at(-1)!.postRecall.toFixed(3)}`);
  }
  const rising = points.every((p, i) => i === 0 || p.preQps >= points[i - 1]!.preQps * 0.95);
  return { n, dim, queries: nq, points, pass: points.every((p) => p.preRecall === 1) && rising };
}

async function ivfpqFilterPoints(options: LifecycleSuiteOptions): Promise<IvfPqFilterResult> {
  const { dim, log } = options;
  const n = options.ivfpqN;
  const data = clusteredDataset({ n, dim, nq: options.filterQueries, seed: options.seed + 4 });
  const nlist = Math.max(16, Math.round(Math.sqrt(n) / 2) * 2);
  const m = 32;
  const nprobe = 16;
  const k = 10;
  const levels = 100_000;
  const next = seededUniform(options.seed + 5);
  const level = Uint32Array.from({ length: n }, () => Math.floor(next() * levels));
  log(`lifecycle: IVF-PQ filter over ${n.toLocaleString('en-US')} × ${dim} clusters (nlist ${nlist}, m ${m}, nprobe ${nprobe})`);
  using exact = new FlatIndex({ dim });
  await exact.add(idsFrom(0, n), data.base);
  using index = new IvfPqIndex({ dim, nlist, m, attributes: { level: 'uint' } });
  // Trained on a sample: enough points per list, and minutes less on a large n.
  await index.train(data.base.subarray(0, Math.min(n, nlist * 64) * dim), { maxIterations: 10 });
  await index.add(idsFrom(0, n), data.base, { attributes: Array.from(level, (l) => ({ level: l })) });
  const nq = data.nq;
  const query = (q: number) => data.queries.subarray(q * dim, (q + 1) * dim);
  const hitsOf = (truth: BigUint64Array, got: Iterable<bigint>) => {
    const want = new Set(truth);
    let hits = 0;
    for (const id of got) if (want.has(id)) hits++;
    return hits;
  };
  let hits = 0;
  let ms = 0;
  for (let q = 0; q < nq; q++) {
    const truth = (await exact.search(query(q), k)).row(0).ids;
    const t0 = performance.now();
    const got = (await index.search(query(q), k, { nprobe })).row(0).ids;
    ms += performance.now() - t0;
    hits += hitsOf(truth, got);
  }
  const unfilteredRecall = hits / (nq * k);
  const unfilteredQps = (nq * 1000) / ms;
  log(`lifecycle: IVF-PQ unfiltered ${unfilteredQps.toFixed(0)} QPS recall ${unfilteredRecall.toFixed(3)}`);
  const points: IvfPqFilterPoint[] = [];
  for (const selectivity of [0.5, 0.1, 0.01, 0.001]) {
    const bound = Math.round(selectivity * levels);
    const filter = { level: { lt: bound } };
    const allow = new Uint32Array(Math.ceil(n / 32));
    for (let r = 0; r < n; r++) if (level[r]! < bound) allow[r >> 5]! |= 1 << (r & 31);
    let preHits = 0;
    let postHits = 0;
    let preMs = 0;
    let postMs = 0;
    for (let q = 0; q < nq; q++) {
      const truth = (await exact.search(query(q), k, { allow })).row(0).ids;
      let t0 = performance.now();
      const pre = (await index.search(query(q), k, { nprobe, filter })).row(0).ids;
      preMs += performance.now() - t0;
      t0 = performance.now();
      const over = (await index.search(query(q), 10 * k, { nprobe })).row(0).ids;
      const post = [...over].filter((id) => id < BigInt(n) && level[Number(id)]! < bound).slice(0, k);
      postMs += performance.now() - t0;
      preHits += hitsOf(truth, pre);
      postHits += hitsOf(truth, post);
    }
    const point: IvfPqFilterPoint = {
      selectivity,
      preQps: (nq * 1000) / preMs,
      preRecall: preHits / (nq * k),
      postQps: (nq * 1000) / postMs,
      postRecall: postHits / (nq * k),
    };
    points.push(point);
    log(
      `lifecycle: IVF-PQ filter ${selectivity * 100}%: ebrix ${point.preQps.toFixed(0)} QPS recall ${point.preRecall.toFixed(3)}, ` +
        `post ${point.postQps.toFixed(0)} QPS recall ${point.postRecall.toFixed(3)}`,
    );
  }
  const pass = points.every((p) => p.preRecall >= unfilteredRecall - 0.05);
  return { n, dim, nlist, m, nprobe, queries: nq, unfilteredRecall, unfilteredQps, points, pass };
}

/** Console and Markdown lines of the suite (report.ts puts them under its heading). */
export function lifecycleLines(r: LifecycleSuiteResult): string[] {
  const o = r.open;
  const w = r.writer;
  const f = r.filter;
  const mb = (o.fileBytes / 1e6).toFixed(0);
  return [
    `filtered search over ${f.n.toLocaleString('en-US')} × ${f.dim}, single queries, k 10 (${f.queries} per point): ` +
      f.points
        .map(
          (p) =>
            `${p.selectivity * 100}%: ebrix ${p.preQps.toFixed(0)} QPS recall ${p.preRecall.toFixed(3)} vs post-filter ` +
            `${p.postQps.toFixed(0)} QPS recall ${p.postRecall.toFixed(3)}`,
        )
        .join('; ') +
      `; target recall 1.0 everywhere and QPS rising as selectivity falls: ${f.pass ? 'met' : 'missed'}`,
    `IVF-PQ filtered search over ${r.ivfpqFilter.n.toLocaleString('en-US')} × ${r.ivfpqFilter.dim} clusters ` +
      `(nlist ${r.ivfpqFilter.nlist}, m ${r.ivfpqFilter.m}, nprobe ${r.ivfpqFilter.nprobe}, filterStrategy auto), single ` +
      `queries, k 10 (${r.ivfpqFilter.queries} per point): unfiltered ${r.ivfpqFilter.unfilteredQps.toFixed(0)} QPS recall ` +
      `${r.ivfpqFilter.unfilteredRecall.toFixed(3)}; ` +
      r.ivfpqFilter.points
        .map(
          (p) =>
            `${p.selectivity * 100}%: ebrix ${p.preQps.toFixed(0)} QPS recall ${p.preRecall.toFixed(3)} vs post-filter ` +
            `${p.postQps.toFixed(0)} QPS recall ${p.postRecall.toFixed(3)}`,
        )
        .join('; ') +
      `; target recall within 0.05 of the unfiltered everywhere: ${r.ivfpqFilter.pass ? 'met' : 'missed'}`,
    `open ${o.n.toLocaleString('en-US')} × ${o.dim} flat (${mb} MB file, saved in ${o.saveSeconds.toFixed(2)} s): ` +
      `mapped ${o.mmapOpenMs.toFixed(2)} ms, read into memory ${o.readOpenMs.toFixed(1)} ms; peer fs.readFileSync of the raw rows ` +
      `${o.rawReadMs.toFixed(1)} ms (mapped open ${(o.rawReadMs / o.mmapOpenMs).toFixed(0)}× faster); ` +
      `target mapped < ${o.targetMs} ms: ${o.pass ? 'met' : 'missed'}`,
    `search p50 / p99 over ${w.n.toLocaleString('en-US')} × ${w.dim}, single queries, k 10: alone ${w.alone.p50Ms.toFixed(2)} / ` +
      `${w.alone.p99Ms.toFixed(2)} ms (${w.alone.searches} searches); with a writer adding ${w.writerRate}/s ` +
      `${w.withWriter.p50Ms.toFixed(2)} / ${w.withWriter.p99Ms.toFixed(2)} ms (${w.withWriter.searches} searches, ${w.added} added); ` +
      `p99 ratio ${w.p99Ratio.toFixed(2)}×, target ≤ ${w.targetRatio}×: ${w.pass ? 'met' : 'missed'}`,
  ];
}
