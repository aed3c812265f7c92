// Turns a finished run into a console table, a Markdown file and a JSON file. Only
// formatting lives here; every number is computed by the suites.

import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Ceiling, MachineInfo } from './machine.js';
import type { EngineResult, FlatDatasetResult } from './suites/flat.js';

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
  suites: { flat?: FlatDatasetResult[] };
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
      `${r.queries} queries, k=${r.k}, metric ${r.metric}; recall on the ${r.referenceQueries} queries the plain TS loop ran` +
      (r.usearchQueriesPerCall < r.queries
        ? `; usearch batch split into calls of ≤ ${r.usearchQueriesPerCall} queries (its n×nq scratch is capped at 2 GiB)`
        : ''),
  );
}

/** Warnings a reader needs before trusting the fractions. */
function warnings(results: readonly FlatDatasetResult[]): string[] {
  const overPeak = results.flatMap((r) =>
    r.engines.filter((e) => e.batch.fractionOfFmaPeak > 1).map((e) => `${r.dataset} ${r.n}×${r.dim} ${e.engine}`),
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
  'p50/p99: single-query `searchSync` (usearch: `exactSearch` with one query); GB/s = n·dim·4 bytes / p50.',
  '% FMA peak and % read BW are against the ceilings measured in this run at the run\'s thread count (--threads), for every row, the single-threaded plain TS loop included; the read ceiling is from DRAM, so a base that fits in the CPU caches can exceed 100%.',
  `A trailing ${EXTRAPOLATED_MARK} on batch QPS: timed on a subset of the queries and scaled to QPS (p50/p99 are over those queries).`,
  'recall@10 against the float64 plain-TS brute force; an id whose exact score ties the 10th best counts as a hit (plain id overlap in parentheses when different).',
];

export function renderConsole(report: BenchReport): string {
  const parts: string[] = [];
  const flat = report.suites.flat;
  if (flat && flat.length > 0) {
    parts.push('Ceilings (best of before and after the suites)', renderText(ceilingsTable(report.ceilings)), '');
    parts.push('Suite flat (metric ip, k = 10)', renderText(flatTable(flat)), '');
    parts.push(...warnings(flat), ...datasetNotes(flat).map((note) => `  ${note}`));
    parts.push(...LEGEND.map((note) => `  ${note}`));
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
  out.push(`Command: \`npm run bench -- ${report.argv.join(' ')}\` — total ${fixed(report.durationSeconds, 1)} s`, '');
  return out.join('\n');
}

/** Writes `<stamp>.json`, `<stamp>.md`, `latest.json` and `latest.md`; returns the paths. */
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
  const paths: string[] = [];
  for (const [name, content] of files) {
    const path = join(outDir, name);
    await writeFile(path, content);
    paths.push(path);
  }
  return paths;
}
