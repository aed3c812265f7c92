// The bench's picture: one SVG with a group of horizontal bars per comparison, on a log
// scale, so ebrix and its peers can be compared at a glance (the numbers stay in the
// Markdown and JSON).

import type { BenchReport } from './report.js';

interface Bar {
  label: string;
  value: number;
  text: string;
}

interface Group {
  title: string;
  unit: string;
  bars: Bar[];
}

const COLORS = ['#2f6fdf', '#e0892b', '#7a7a7a', '#3a9d5d', '#b04fc5', '#c94343'];
const WIDTH = 860;
const LABEL_WIDTH = 230;
const BAR_HEIGHT = 18;
const GAP = 6;

function escape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function compact(value: number): string {
  if (value >= 1e6) return `${(value / 1e6).toFixed(1)}M`;
  if (value >= 1e3) return `${(value / 1e3).toFixed(1)}k`;
  return value >= 10 ? value.toFixed(0) : value.toFixed(2);
}

function groupsOf(report: BenchReport): Group[] {
  const groups: Group[] = [];
  for (const d of report.suites.flat ?? []) {
    groups.push({
      title: `flat: ${d.dataset} ${d.n.toLocaleString('en-US')}×${d.dim}, batch of ${d.queries} queries, k=${d.k}`,
      unit: 'queries/s',
      bars: d.engines.map((e) => ({ label: e.engine, value: e.batch.qps, text: `${compact(e.batch.qps)} q/s` })),
    });
  }
  const models = report.suites.models;
  if (models) {
    const callers = [...new Set(models.load.map((l) => l.callers))].sort((a, b) => a - b);
    for (const c of callers) {
      groups.push({
        title: `models: query tower, ${c} concurrent caller${c === 1 ? '' : 's'}`,
        unit: 'requests/s',
        bars: models.load
          .filter((l) => l.callers === c)
          .map((l) => ({ label: l.mode, value: l.requestsPerSecond, text: `${compact(l.requestsPerSecond)} req/s` })),
      });
    }
  }
  return groups;
}

/** An SVG of every suite in the report, or undefined when there is nothing to draw. */
export function renderChart(report: BenchReport): string | undefined {
  const groups = groupsOf(report).filter((g) => g.bars.some((b) => b.value > 0));
  if (groups.length === 0) return undefined;
  const plotWidth = WIDTH - LABEL_WIDTH - 110;
  const parts: string[] = [];
  let y = 64;
  for (const group of groups) {
    const max = Math.max(...group.bars.map((b) => b.value));
    const min = Math.min(...group.bars.filter((b) => b.value > 0).map((b) => b.value));
    // Log scale from a decade below the smallest bar, so a 100× gap stays readable.
    const floor = Math.pow(10, Math.floor(Math.log10(min)) - 1);
    const scale = (v: number): number => (Math.log10(Math.max(v, floor) / floor) / Math.log10(max / floor)) * plotWidth;
    parts.push(`<text x="12" y="${y}" class="title">${escape(group.title)}</text>`);
    y += 10;
    group.bars.forEach((bar, i) => {
      const w = Math.max(1, scale(bar.value));
      parts.push(
        `<text x="${LABEL_WIDTH - 8}" y="${y + 13}" class="label" text-anchor="end">${escape(bar.label)}</text>`,
        `<rect x="${LABEL_WIDTH}" y="${y}" width="${w.toFixed(1)}" height="${BAR_HEIGHT}" fill="${COLORS[i % COLORS.length]}"/>`,
        `<text x="${(LABEL_WIDTH + w + 6).toFixed(1)}" y="${y + 13}" class="value">${escape(bar.text)}</text>`,
      );
      y += BAR_HEIGHT + GAP;
    });
    y += 26;
  }
  const m = report.machine;
  const subtitle = `${m.cpuModel}, ${m.logicalCores} cores, ${m.simdLevel}, GPU ${m.gpu} · ${report.startedAt} · log scale`;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${y}" viewBox="0 0 ${WIDTH} ${y}" font-family="sans-serif">`,
    '<style>.title{font-size:14px;font-weight:bold}.label{font-size:12px}.value{font-size:12px;fill:#333}.sub{font-size:11px;fill:#666}</style>',
    `<rect width="${WIDTH}" height="${y}" fill="white"/>`,
    `<text x="12" y="20" class="title">ebrix bench</text>`,
    `<text x="12" y="34" class="sub">${escape(subtitle)}</text>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}
