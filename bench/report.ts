// Turns a finished run into a console table, a Markdown file and a JSON file. Only
// formatting lives here; every number is computed by the suites.

import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Ceiling, MachineInfo } from './machine.js';
import { renderChart } from './chart.js';
import type { EngineResult, FlatDatasetResult } from './suites/flat.js';
import type { CorpusResult, EncodingResult, ModelsSuiteResult, QueryLoadResult, TailCheck } from './suites/models.js';
import type { CurveResult, IvfPqDatasetResult, IvfPqSuiteResult, TargetSummary } from './suites/ivfpq.js';
import { lifecycleLines, type LifecycleSuiteResult } from './suites/lifecycle.js';
import { trainLines, type TrainSuiteResult } from './suites/train.js';
import { serveLines, type ServeSuiteResult } from './suites/serve.js';
import { knobOf, type CurveReading } from './curves.js';

export interface BenchReport {
  tool: 'ebrix-bench';
  formatVersion: 1;
  startedAt: string;
  finishedAt: string;
  durationSeconds: number;
  /** The argv the bench was started with, for rerunning it. */
  argv: string[];
  options: Record<string, unknown>;
  machine: MachineInfo;
  /** Measured by the bench itself at 1 thread, all threads and the run's thread count: the best
   *  of the rounds before and after the suites (other load only lowers a ceiling). */
  ceilings: Ceiling[];
  ceilingRounds: { before: Ceiling[]; after: Ceiling[] };
  suites: {
    flat?: FlatDatasetResult[];
    models?: ModelsSuiteResult;
    ivfpq?: IvfPqSuiteResult;
    lifecycle?: LifecycleSuiteResult;
    train?: TrainSuiteResult;
    serve?: ServeSuiteResult;
  };
}

type Align = 'left' | 'right';

interface Table {
  headers: string[];
  align: Align[];
  rows: string[][];
}

const EXTRAPOLATED_MARK = '*';

function fixed(value: number, digits: number): string {
  return Number.isFinite(value) ? value.toFixed(digits) : '–';
}

/** Three significant digits, thousands grouped: 1,234 · 56.7 · 0.123. */
function significant(value: number): string {
  if (!Number.isFinite(value)) return '–';
  if (Math.abs(value) >= 100) return Math.round(value).toLocaleString('en-US');
  return value.toPrecision(3);
}

function percent(fraction: number): string {
  return Number.isFinite(fraction) ? `${(fraction * 100).toFixed(1)}%` : '–';
}

function ratio(value: number): string {
  if (!Number.isFinite(value)) return '–';
  return `${value >= 10 ? value.toFixed(0) : value.toFixed(2)}×`;
}

function recallCell(engine: EngineResult): string {
  if (!engine.recall) return 'reference';
  const { tieAware, strict } = engine.recall;
  return strict === tieAware ? fixed(tieAware, 3) : `${fixed(tieAware, 3)} (ids ${fixed(strict, 3)})`;
}

function flatTable(results: readonly FlatDatasetResult[]): Table {
  const headers = [
    'dataset',
    'n×dim',
    'engine',
    'threads',
    'batch QPS',
    'GFLOP/s',
    '% FMA peak',
    'p50 ms',
    'p99 ms',
    'GB/s @p50',
    '% read BW',
    'QPS vs usearch',
    'QPS vs plain TS',
    'recall@10',
  ];
  const align: Align[] = ['left', 'left', 'left', ...Array<Align>(10).fill('right'), 'right'];
  const rows = results.flatMap((result) =>
    result.engines.map((engine) => [
      result.dataset,
      `${result.n.toLocaleString('en-US')}×${result.dim}`,
      engine.engine,
      String(engine.threads),
      significant(engine.batch.qps) + (engine.batch.extrapolated ? EXTRAPOLATED_MARK : ''),
      fixed(engine.batch.gflops, 1),
      percent(engine.batch.fractionOfFmaPeak),
      significant(engine.latency.p50Ms),
      significant(engine.latency.p99Ms),
      fixed(engine.latency.gbPerSecond, 2),
      percent(engine.latency.fractionOfReadBandwidth),
      ratio(engine.qpsVsUsearch),
      ratio(engine.qpsVsPlainTs),
      recallCell(engine),
    ]),
  );
  return { headers, align, rows };
}

function ceilingsTable(ceilings: readonly Ceiling[]): Table {
  return {
    headers: ['threads', 'FMA peak GFLOP/s', 'read GB/s'],
    align: ['right', 'right', 'right'],
    rows: ceilings.map((c) => [String(c.threads), fixed(c.fmaGflops, 1), fixed(c.readGbPerSecond, 2)]),
  };
}

function renderText(table: Table): string {
  const widths = table.headers.map((header, column) =>
    Math.max(header.length, ...table.rows.map((row) => (row[column] ?? '').length)),
  );
  const line = (cells: readonly string[]): string =>
    cells
      .map((cell, column) =>
        table.align[column] === 'right' ? cell.padStart(widths[column]!) : cell.padEnd(widths[column]!),
      )
      .join('  ')
      .trimEnd();
  return [line(table.headers), widths.map((w) => '─'.repeat(w)).join('  '), ...table.rows.map(line)].join('\n');
}

function renderMarkdown(table: Table): string {
  const escape = (cell: string): string => cell.replaceAll('|', '\\|');
  const line = (cells: readonly string[]): string => `| ${cells.map(escape).join(' | ')} |`;
  const rule = `|${table.align.map((a) => (a === 'right' ? '---:' : ':---')).join('|')}|`;
  return [line(table.headers), rule, ...table.rows.map(line)].join('\n');
}

function machineLines(report: BenchReport): Array<[string, string]> {
  const m = report.machine;
  return [
    ['CPU', `${m.cpuModel} (${m.logicalCores} logical cores, ${m.hardwareThreads} ebrix threads)`],
    ['SIMD', `${m.simdLevel} (supported: ${m.supportedSimdLevels.join(', ')})${m.forcedSimd ? `, forced by EBRIX_SIMD=${m.forcedSimd}` : ''}`],
    ['GPU', m.gpu],
    ['Memory', `${m.totalMemoryGiB.toFixed(1)} GiB`],
    ['OS', `${m.platform} ${m.arch}`],
    ['Node', m.nodeVersion],
    ['Date', report.startedAt],
  ];
}

function datasetNotes(results: readonly FlatDatasetResult[]): string[] {
  return results.map(
    (r) =>
      `${r.dataset} ${r.n.toLocaleString('en-US')}×${r.dim} (${fixed((r.n * r.dim * 4) / 2 ** 20, 1)} MiB): ${r.description}; ` +
      `prepared in ${fixed(r.prepareSeconds, 2)} s; ` +
      `ebrix add ${fixed(r.addSeconds, 3)} s (${significant(r.addVectorsPerSecond / 1e6)} M vectors/s, simd ${r.simd}); ` +
      `ebrix i8 trained on ${r.i8TrainVectors.toLocaleString('en-US')} vectors in ${fixed(r.i8TrainSeconds, 3)} s, add ${fixed(r.i8AddSeconds, 3)} s, ` +
      `${fixed(r.i8BytesPerVector, 1)} B per vector vs ${fixed(r.bytesPerVector, 1)} for float32` +
      i8Ratios(r) +
      '; ' +
      `${r.queries} queries, k=${r.k}, metric ${r.metric}; recall on the ${r.referenceQueries} queries the plain TS loop ran` +
      (r.usearchQueriesPerCall < r.queries
        ? `; usearch batch split into calls of ≤ ${r.usearchQueriesPerCall} queries (its n×nq scratch is capped at 2 GiB)`
        : ''),
  );
}

/** ebrix i8 against float32 ebrix: batch QPS and single-query latency ratios. */
function i8Ratios(r: FlatDatasetResult): string {
  const f32 = r.engines.find((e) => e.engine === 'ebrix');
  const i8 = r.engines.find((e) => e.engine === 'ebrix i8');
  if (!f32 || !i8) return '';
  return ` (batch QPS ${ratio(i8.batch.qps / f32.batch.qps)}, p50 ${ratio(f32.latency.p50Ms / i8.latency.p50Ms)} of float32)`;
}

/** Warnings a reader needs before trusting the fractions. */
function warnings(results: readonly FlatDatasetResult[]): string[] {
  // i8's integer multiply-adds are not bound by the float FMA peak (VNNI does 4 per lane).
  const overPeak = results.flatMap((r) =>
    r.engines.filter((e) => e.engine !== 'ebrix i8' && e.batch.fractionOfFmaPeak > 1).map((e) => `${r.dataset} ${r.n}×${r.dim} ${e.engine}`),
  );
  return overPeak.length === 0
    ? []
    : [
        `WARNING: above 100% of the FMA peak (${overPeak.join(', ')}): the ceilings were measured while ` +
          'something else loaded the machine; rerun on an idle machine.',
      ];
}

const LEGEND = [
  'batch QPS: one `search` call with every query (median of the timed runs, after a warm-up); GFLOP/s = 2·nq·n·dim / time.',
  'p50/p99: single-query `searchSync` (usearch: `exactSearch` with one query); GB/s = n·dim·4 bytes / p50 (n·dim bytes for ebrix i8).',
  "ebrix i8: storage 'i8', 8-bit scalar-quantizer codes scored by integer dot products (its GFLOP/s counts int8 multiply-adds), trained on a sample of the base; its recall is the cost of the quarter memory.",
  '% FMA peak and % read BW are against the ceilings measured in this run at the run\'s thread count (--threads), for every row, the single-threaded plain TS loop included; the read ceiling is from DRAM, so a base that fits in the CPU caches can exceed 100%.',
  `A trailing ${EXTRAPOLATED_MARK} on batch QPS: timed on a subset of the queries and scaled to QPS (p50/p99 are over those queries).`,
  'recall@10 against the float64 plain-TS brute force; an id whose exact score ties the 10th best counts as a hit (plain id overlap in parentheses when different).',
];

// ---------------------------------------------------------------------------------------------
// Suite models

function loadTable(rows: readonly QueryLoadResult[]): Table {
  return {
    headers: ['mode', 'callers', 'requests', 'req/s', 'p50 ms', 'p99 ms', 'max ms', 'mean batch', 'loop stall ms', 'req/s vs per-call'],
    align: ['left', ...Array<Align>(9).fill('right')],
    rows: rows.map((r) => [
      r.mode,
      String(r.callers),
      r.requests.toLocaleString('en-US'),
      significant(r.requestsPerSecond),
      significant(r.p50Ms),
      significant(r.p99Ms),
      significant(r.maxMs),
      r.meanBatchSize === null ? '' : significant(r.meanBatchSize),
      significant(r.eventLoopMaxMs),
      r.throughputVsPerCall === null ? '' : ratio(r.throughputVsPerCall),
    ]),
  };
}

function corpusTable(c: CorpusResult): Table {
  return {
    headers: ['path', 'items', 'batch', 'seconds', 'items/s', 'vs raw embedItems', 'loop stall ms'],
    align: ['left', ...Array<Align>(6).fill('right')],
    rows: [
      [
        'embedCorpus → FlatIndex',
        c.items.toLocaleString('en-US'),
        String(c.batchSize),
        fixed(c.seconds, 2),
        significant(c.itemsPerSecond),
        ratio(c.corpusVsRaw),
        significant(c.eventLoopMaxMs),
      ],
      [
        'embedItems (raw)',
        c.raw.items.toLocaleString('en-US'),
        String(c.batchSize),
        fixed(c.raw.seconds, 3),
        significant(c.raw.itemsPerSecond),
        ratio(1),
        '',
      ],
    ],
  };
}

function verdict(pass: boolean): string {
  return pass ? 'PASS' : 'FAIL';
}

function encodingTable(rows: readonly EncodingResult[], maxFraction: number): Table {
  return {
    headers: [
      'batch',
      'records',
      'encode µs/rec',
      'embedQueries µs/rec',
      'inference µs/rec',
      'encode / inference',
      `≤ ${percent(maxFraction)}`,
      'plain TS forward µs/rec',
      'ORT vs plain TS',
    ],
    align: Array<Align>(9).fill('right'),
    rows: rows.map((e) => [
      String(e.batch),
      e.records.toLocaleString('en-US'),
      significant(e.encodeUsPerRecord),
      significant(e.embedUsPerRecord),
      significant(e.inferenceUsPerRecord),
      percent(e.encodeFraction),
      verdict(e.pass),
      significant(e.plainTsUsPerRecord),
      ratio(e.onnxSpeedupVsPlainTs),
    ]),
  };
}

function tailLine(check: TailCheck | null): string {
  if (!check) return 'Tail check: not run (needs per-call at 1 caller and micro-batched runs).';
  return (
    `Tail check (${check.callers} callers): p99 micro-batched ${fixed(check.batchedP99Ms, 3)} ms ` +
    `vs 2 × p50 per-call at 1 caller (${fixed(check.perCallSingleP50Ms, 3)} ms) + maxDelayMs ${check.maxDelayMs} = ` +
    `${fixed(check.boundMs, 3)} ms: ${verdict(check.pass)}`
  );
}

function encodingLines(models: ModelsSuiteResult): string[] {
  return models.encoding.map(
    (e) =>
      `Encoding at batch ${e.batch}: ${fixed(e.encodeUsPerRecord, 2)} µs/record = ${percent(e.encodeFraction)} of ` +
      `inference (${fixed(e.inferenceUsPerRecord, 2)} µs/record); target ≤ ${percent(models.maxEncodeFraction)}: ${verdict(e.pass)}`,
  );
}

function modelNotes(models: ModelsSuiteResult): string[] {
  const m = models.model;
  const mib = (bytes: number): string => fixed(bytes / 2 ** 20, 1);
  const batchedRows = models.load.filter((r) => r.meanBatchSize !== null);
  return [
    `model: ${m.description}`,
    `parameters: query ${(m.queryParameters / 1e6).toFixed(2)} M (${mib(m.queryOnnxBytes)} MiB ONNX), item ${(m.itemParameters / 1e6).toFixed(2)} M (${mib(m.itemOnnxBytes)} MiB ONNX); ` +
      `built in ${fixed(m.buildSeconds, 2)} s, loaded in ${fixed(m.loadSeconds, 2)} s; onnxruntime threads: ${m.threads}`,
    `records: ${m.vocabularyWords.toLocaleString('en-US')} made-up words, Zipf exponent ${m.zipfExponent}; queries of 1–5 words, titles of 4–12 words`,
    `batching: maxBatchSize ${models.batching.maxBatchSize}, maxDelayMs ${models.batching.maxDelayMs}; mean batch size ` +
      batchedRows.map((r) => `${significant(r.meanBatchSize!)} at ${r.callers} caller${r.callers === 1 ? '' : 's'}`).join(', '),
    `corpus: ${models.corpus.items.toLocaleString('en-US')} item records generated in ${fixed(models.corpus.generateSeconds, 2)} s (not timed); index holds ${models.corpus.indexSize.toLocaleString('en-US')} vectors`,
  ];
}

const MODELS_LEGEND = [
  'per-call: each request is `model.embedQueries([record])` (one onnxruntime run); micro-batched: `model.embedQuery(record)` through the model\'s Batcher. Each caller awaits one request at a time, so callers = requests in flight.',
  'req/s: completed requests / wall time of the timed run (after an untimed warm-up at the same concurrency); p50/p99/max: call to resolved promise. mean batch: calls / batches from `batchingStats()` over the timed run.',
  'loop stall: longest event-loop delay seen by `monitorEventLoopDelay` (1 ms resolution) during the run: tower sessions run in worker threads, so what shows here is encoding, result handling and GC pauses on the main thread.',
  'corpus: `embedCorpus` items/s by its own clock (records → item tower → `FlatIndex.add`); raw: `embedItems` in a loop over the same items in the same batches (median of runs), the ceiling embedCorpus can reach.',
  'encoding: `FeatureEncoder.encode` of query records, mean µs per record over a run (median of runs, alternated with the embedQueries runs); embedQueries: the whole call on the same batches; inference = embedQueries − encode (tensor wrapping + onnxruntime session). plain TS forward: `towerForward` (float64 reference pass) on the encoded batches, the peer of onnxruntime.',
];

function modelsConsole(models: ModelsSuiteResult): string[] {
  return [
    'Suite models: query tower under load',
    renderText(loadTable(models.load)),
    '',
    tailLine(models.tailCheck),
    '',
    'Suite models: corpus embedding',
    renderText(corpusTable(models.corpus)),
    '',
    'Suite models: feature encoding vs query tower inference',
    renderText(encodingTable(models.encoding, models.maxEncodeFraction)),
    '',
    ...encodingLines(models),
    ...modelNotes(models).map((note) => `  ${note}`),
    ...MODELS_LEGEND.map((note) => `  ${note}`),
  ];
}

function modelsMarkdown(models: ModelsSuiteResult): string[] {
  return [
    '## Suite models',
    '',
    '### Query tower under load',
    '',
    renderMarkdown(loadTable(models.load)),
    '',
    `**${tailLine(models.tailCheck)}**`,
    '',
    '### Corpus embedding',
    '',
    renderMarkdown(corpusTable(models.corpus)),
    '',
    '### Feature encoding vs query tower inference',
    '',
    renderMarkdown(encodingTable(models.encoding, models.maxEncodeFraction)),
    '',
    ...encodingLines(models).map((line) => `- ${line}`),
    '',
    ...modelNotes(models).map((note) => `- ${note}`),
    '',
    ...MODELS_LEGEND.map((note) => `- ${note}`),
    '',
  ];
}

// ---------------------------------------------------------------------------------------------
// Suite ivfpq

function bytes(value: number): string {
  return Number.isFinite(value) ? `${value >= 100 ? Math.round(value) : value.toFixed(1)} B` : '–';
}

function readingCell(reading: CurveReading): string {
  if (reading.qps === null) return `– (max ${fixed(reading.maxRecall, 3)})`;
  return significant(reading.qps) + (reading.how === 'first point' ? ' ≥' : '');
}

function ivfpqEngineTable(d: IvfPqDatasetResult, targetRecall: number): Table {
  const f32 = d.dim * 4;
  return {
    headers: [
      'engine',
      'settings',
      'train s',
      'add / build s',
      'threads',
      'bytes/vector',
      'vs f32',
      'best recall',
      `1-thread QPS @${targetRecall}`,
      `batch QPS @${targetRecall}`,
    ],
    align: ['left', 'left', 'right', 'right', 'right', 'right', 'right', 'right', 'right', 'right'],
    rows: d.curves.map((c) => [
      c.engine,
      c.config,
      c.trainSeconds === null ? '' : fixed(c.trainSeconds, 2),
      fixed(c.buildSeconds, 2),
      String(c.buildThreads),
      bytes(c.bytesPerVector) + (c.codeBytesPerVector === null ? '' : ` (codes ${bytes(c.codeBytesPerVector)})`),
      ratio(f32 / c.bytesPerVector),
      fixed(Math.max(...c.points.map((p) => p.batch.recall.tieAware)), 3),
      readingCell(c.atTarget.single),
      readingCell(c.atTarget.batch),
    ]),
  };
}

function ivfpqPointsTable(curves: readonly CurveResult[]): Table {
  return {
    headers: ['engine', 'knob', '1-thread recall@10', '1-thread QPS', 'p50 ms', 'queries', 'batch recall@10', 'batch QPS'],
    align: ['left', 'left', 'right', 'right', 'right', 'right', 'right', 'right'],
    rows: curves.flatMap((c) =>
      c.points.map((p) => [
        c.engine,
        knobOf(c.param, p),
        fixed(p.single.recall.tieAware, 3),
        significant(p.single.qps),
        significant(p.single.p50Ms),
        String(p.single.queries),
        fixed(p.batch.recall.tieAware, 3),
        significant(p.batch.qps),
      ]),
    ),
  };
}

function howNote(how: CurveReading['how']): string {
  return how === 'interpolated' ? 'interpolated' : how === 'first point' ? 'lowest point already above: a lower bound' : 'not reached';
}

function targetLine(d: IvfPqDatasetResult, t: TargetSummary): string {
  const batchSize = d.curves[0]?.points[0]?.batch.queries ?? d.queries;
  const mode = t.mode === 'single' ? 'single-thread single-query' : `batch of ${batchSize} (${d.threads} threads where the engine has them)`;
  const ebrix =
    t.ebrix.qps === null
      ? `ebrix does not reach it (${t.ebrix.engine})`
      : `ebrix ${significant(t.ebrix.qps)} q/s (${t.ebrix.engine}, ${howNote(t.ebrix.how)})`;
  const peers = t.peers.map((p) =>
    p.peerQps === null
      ? `${p.peer}: not reached, ratio –`
      : `${p.peer} ${significant(p.peerQps)} q/s${p.peerHow === 'first point' ? ' (≥)' : ''}: ratio ${p.ratio === null ? '–' : ratio(p.ratio)}`,
  );
  return `${d.dataset} ${d.n.toLocaleString('en-US')}×${d.dim}, recall@10 ≥ ${t.recall}, ${mode}: ${ebrix}; ${peers.join('; ')}`;
}

function graphEfLine(d: IvfPqDatasetResult): string | undefined {
  if (d.graphEfRatios.length === 0) return undefined;
  const parts = d.graphEfRatios.map(
    (r) =>
      `ef ${r.ef}: 1-thread ${ratio(r.single)}, batch ${ratio(r.batch)} (recall ${fixed(r.ebrixRecall, 3)} vs ${fixed(r.usearchRecall, 3)})`,
  );
  return `${d.dataset} ${d.n.toLocaleString('en-US')}×${d.dim} ebrix HNSW f32 / usearch HNSW f32 QPS at equal ef (same graph settings, each built on its own): ${parts.join('; ')}`;
}

function ivfpqLines(d: IvfPqDatasetResult): string[] {
  const lines = [...d.targets, ...(d.graphTargets ?? [])].map((t) => targetLine(d, t));
  const efLine = d.graphEfRatios ? graphEfLine(d) : undefined;
  if (efLine) lines.push(efLine);
  const sc = d.scoring;
  if (sc) {
    const long = sc.longLists;
    const sweepIx = sc.sweepIndexes;
    lines.push(
      `${d.dataset} ${d.n.toLocaleString('en-US')}×${d.dim} code scoring at ${sc.codeBytes} B per code (nprobe = nlist, 1 thread, one query, median of ${sc.queries}): ` +
        `long lists (nlist ${long.nlist}): 8-bit ADC (m ${long.eightBit.m}) ${fixed(long.eightBit.nsPerCode, 2)} ns/code, ` +
        `4-bit fast-scan (m ${long.fourBit.m}) ${fixed(long.fourBit.nsPerCode, 2)} ns/code: 4-bit is ${ratio(long.fourBitSpeedup)} as fast; ` +
        `sweep indexes (nlist ${sweepIx.nlist}, per-list costs included): ${fixed(sweepIx.eightBit.nsPerCode, 2)} vs ${fixed(sweepIx.fourBit.nsPerCode, 2)} ns/code (${ratio(sweepIx.fourBitSpeedup)})`,
    );
  }
  const f32 = d.dim * 4;
  for (const c of d.curves.filter((x) => x.codeBytesPerVector !== null)) {
    const parts = c.memoryParts ?? {};
    const detail = Object.entries(parts)
      .filter(([key]) => key !== 'bytes')
      .map(([key, value]) => `${key} ${bytes(value / d.n)}`)
      .join(', ');
    lines.push(
      `${d.dataset} ${d.n.toLocaleString('en-US')}×${d.dim} ${c.engine} memory per vector: PQ codes ${bytes(c.codeBytesPerVector!)} vs float32 ${bytes(f32)} ` +
        `(${ratio(f32 / c.codeBytesPerVector!)} smaller); whole index ${bytes(c.bytesPerVector)} (${detail})`,
    );
  }
  return lines;
}

function ivfpqNotes(suite: IvfPqSuiteResult): string[] {
  const s = suite.settings;
  const notes = suite.datasets.map(
    (d) =>
      `${d.dataset} ${d.n.toLocaleString('en-US')}×${d.dim}: ${d.description}; metric ${d.metric}; ${d.queries} queries, k=${d.k}; ` +
      `prepared in ${fixed(d.prepareSeconds, 2)} s; exact ground truth (FlatIndex) in ${fixed(d.groundTruthSeconds, 2)} s; ` +
      `ebrix nlist ${d.nlist}, trained on ${d.trainPoints.toLocaleString('en-US')} vectors`,
  );
  notes.push(
    `ebrix: nprobe ${s.nprobes.join(', ')} (clamped to nlist), each with refine f16 × ${s.refineFactors.join(', ')} (every pair swept), training ≤ ${s.trainIterations} iterations on ≤ nlist × ${s.trainPointsPerList} vectors; ` +
      `HNSW peers: connectivity/M ${s.graph.connectivity}, expansion_add/efConstruction ${s.graph.expansionAdd}, ef ${s.efs.join(', ')}`,
  );
  return notes;
}

function trainTargetLine(suite: IvfPqSuiteResult): string {
  const t = suite.trainTarget;
  if (!t) return 'Training target (1,000,000×128, nlist 1024, m 32, 8-bit): not measured in this run (it needs --synthetic 1000000x128 without --quick).';
  return (
    `Training target: IvfPqIndex.train on ${t.trainingVectors.toLocaleString('en-US')}×${t.dim} (${t.dataset}), nlist ${t.nlist}, m ${t.m}, ${t.nbits}-bit, ` +
    `${t.threads} threads, default iterations: ${fixed(t.seconds, 2)} s`
  );
}

const IVFPQ_LEGEND = [
  'recall@10 against the exact top-10 of FlatIndex (float64 re-scored; an id tying the 10th exact score counts as a hit). 1-thread: each query alone, threads 1, timed one by one (QPS = queries / summed time); batch: the first --queries queries (--quick: 250) in one call (median of runs), recall over them; hnswlib-node has no batch call, so its batch is a loop on one thread.',
  'QPS @ target: read on each curve\'s Pareto frontier, log QPS interpolated linearly in recall between the points around the target; "≥": the curve\'s lowest point is already above the target; "–": never reached (best recall shown). Ratios: ebrix (its best IVF-PQ configuration at the target; on the HNSW lines, HnswIndex) / peer.',
  'ebrix HNSW f32: HnswIndex, usearch\'s graph code (its C++ headers, usearch 2.25) compiled into the ebrix addon with ebrix\'s SIMD kernels as the metric and ebrix\'s thread pool; usearch HNSW f32 is usearch\'s own npm package (prebuilt, NumKong kernels). Same connectivity and expansion_add; each builds its own graph, so recall at an ef differs a little. The equal-ef ratio is what the binding, the kernels and the threading add or save on the same algorithm.',
  'bytes/vector: ebrix `memoryUsage().bytes / n` (IVF-PQ: codes, ids, centroids, f16 refine vectors, id map; HNSW: graph nodes and links, vectors, row and id tables, spare capacity included); peers: their serialized index / n (vectors + graph + keys; neither binding reports memory). vs f32: 4·dim bytes / bytes per vector.',
  'train s: ebrix k-means + PQ training; add / build s: ebrix add of the whole base, the peers\' graph build (hnswlib-node: one addPoint per vector on the main thread, the row\'s number[] conversion included).',
];

function ivfpqConsole(suite: IvfPqSuiteResult): string[] {
  const out: string[] = [`Suite ivfpq (recall@10 against QPS; target recall ${suite.targetRecall})`];
  for (const d of suite.datasets) {
    out.push(
      '',
      `${d.dataset} ${d.n.toLocaleString('en-US')}×${d.dim}, metric ${d.metric}`,
      renderText(ivfpqEngineTable(d, suite.targetRecall)),
      '',
      renderText(ivfpqPointsTable(d.curves)),
      '',
      ...ivfpqLines(d),
    );
  }
  out.push('', trainTargetLine(suite), ...ivfpqNotes(suite).map((n) => `  ${n}`), ...IVFPQ_LEGEND.map((n) => `  ${n}`));
  return out;
}

function ivfpqMarkdown(suite: IvfPqSuiteResult): string[] {
  const out: string[] = [`## Suite ivfpq (recall@10 against QPS, target recall ${suite.targetRecall})`, ''];
  for (const d of suite.datasets) {
    out.push(
      `### ${d.dataset} ${d.n.toLocaleString('en-US')}×${d.dim}, metric ${d.metric}`,
      '',
      renderMarkdown(ivfpqEngineTable(d, suite.targetRecall)),
      '',
      ...ivfpqLines(d).map((line) => `- **${line}**`),
      '',
      '<details><summary>every sweep point</summary>',
      '',
      renderMarkdown(ivfpqPointsTable(d.curves)),
      '',
      '</details>',
      '',
    );
  }
  out.push(`**${trainTargetLine(suite)}**`, '', ...ivfpqNotes(suite).map((n) => `- ${n}`), '', ...IVFPQ_LEGEND.map((n) => `- ${n}`), '');
  return out;
}

export function renderConsole(report: BenchReport): string {
  const parts: string[] = [];
  const flat = report.suites.flat;
  if (flat && flat.length > 0) {
    parts.push('Ceilings (best of before and after the suites)', renderText(ceilingsTable(report.ceilings)), '');
    parts.push('Suite flat (metric ip, k = 10)', renderText(flatTable(flat)), '');
    parts.push(...warnings(flat), ...datasetNotes(flat).map((note) => `  ${note}`));
    parts.push(...LEGEND.map((note) => `  ${note}`));
  }
  const models = report.suites.models;
  if (models) {
    if (parts.length > 0) parts.push('');
    parts.push(...modelsConsole(models));
  }
  const ivfpq = report.suites.ivfpq;
  if (ivfpq) {
    if (parts.length > 0) parts.push('');
    parts.push(...ivfpqConsole(ivfpq));
  }
  const lifecycle = report.suites.lifecycle;
  if (lifecycle) {
    if (parts.length > 0) parts.push('');
    parts.push('Suite lifecycle', ...lifecycleLines(lifecycle).map((line) => `  ${line}`));
  }
  const train = report.suites.train;
  if (train) {
    if (parts.length > 0) parts.push('');
    parts.push('Suite train', ...trainLines(train).map((line) => `  ${line}`));
  }
  const serve = report.suites.serve;
  if (serve) {
    if (parts.length > 0) parts.push('');
    parts.push('Suite serve', ...serveLines(serve).map((line) => `  ${line}`));
  }
  parts.push('', `Total ${fixed(report.durationSeconds, 1)} s`);
  return parts.join('\n');
}

export function renderMachineConsole(report: Pick<BenchReport, 'machine' | 'startedAt'>): string {
  return machineLines(report as BenchReport)
    .map(([key, value]) => `${key.padEnd(7)} ${value}`)
    .join('\n');
}

export function renderCeilingsConsole(ceilings: readonly Ceiling[]): string {
  return renderText(ceilingsTable(ceilings));
}

export function renderMarkdownReport(report: BenchReport): string {
  const out: string[] = ['# ebrix bench', ''];
  out.push(
    renderMarkdown({
      headers: ['machine', ''],
      align: ['left', 'left'],
      rows: machineLines(report).map(([k, v]) => [k, v]),
    }),
    '',
    '## Ceilings (measured by the bench, best of before and after the suites)',
    '',
    renderMarkdown(ceilingsTable(report.ceilings)),
    '',
  );
  const flat = report.suites.flat;
  if (flat && flat.length > 0) {
    out.push('## Suite flat (metric ip, k = 10)', '', renderMarkdown(flatTable(flat)), '');
    out.push(...warnings(flat).flatMap((w) => [`> ${w}`, '']), ...datasetNotes(flat).map((note) => `- ${note}`), '');
    out.push(...LEGEND.map((note) => `- ${note}`), '');
  }
  if (report.suites.models) out.push(...modelsMarkdown(report.suites.models));
  if (report.suites.ivfpq) out.push(...ivfpqMarkdown(report.suites.ivfpq));
  if (report.suites.lifecycle) {
    out.push('## Suite lifecycle', '', ...lifecycleLines(report.suites.lifecycle).map((line) => `- ${line}`), '');
  }
  if (report.suites.train) {
    // Table rows stay rows; the other lines are bullets, with a blank line before the table.
    const lines = trainLines(report.suites.train);
    const table = lines.filter((line) => line.startsWith('|'));
    const notes = lines.filter((line) => !line.startsWith('|')).map((line) => `- ${line}`);
    out.push('## Suite train', '', ...notes, '', ...table, '');
  }
  if (report.suites.serve) {
    out.push('## Suite serve', '', ...serveLines(report.suites.serve).map((line) => `- ${line}`), '');
  }
  out.push(`Command: \`npm run bench -- ${report.argv.join(' ')}\` — total ${fixed(report.durationSeconds, 1)} s`, '');
  return out.join('\n');
}

/** Writes `<stamp>.json`, `<stamp>.md`, `latest.json` and `latest.md` (and the `.svg` chart); returns the paths. */
export async function writeReport(report: BenchReport, outDir: string): Promise<string[]> {
  await mkdir(outDir, { recursive: true });
  const stamp = report.startedAt.replace(/\.\d+Z$/, 'Z').replaceAll(':', '-');
  const json = `${JSON.stringify(report, null, 2)}\n`;
  const markdown = renderMarkdownReport(report);
  const files: Array<[string, string]> = [
    [`bench-${stamp}.json`, json],
    [`bench-${stamp}.md`, markdown],
    ['latest.json', json],
    ['latest.md', markdown],
  ];
  const chart = renderChart(report);
  if (chart !== undefined) files.push([`bench-${stamp}.svg`, chart], ['latest.svg', chart]);
  const paths: string[] = [];
  for (const [name, content] of files) {
    const path = join(outDir, name);
    await writeFile(path, content);
    paths.push(path);
  }
  return paths;
}
