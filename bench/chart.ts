// The bench's picture: one SVG with a group of horizontal bars per comparison, on a log
// scale, so ebrix and its peers can be compared at a glance (the numbers stay in the
// Markdown and JSON), and, for suite ivfpq, recall–QPS curves (log QPS against recall, one
// line per engine) per dataset and search mode.

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

export interface Series {
  label: string;
  points: Array<{ x: number; y: number }>;
}

export interface LinePanel {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** A dashed vertical line (the target recall). */
  xMarker?: number;
}

const PANEL_WIDTH = 410;
const PANEL_HEIGHT = 270;
const PANEL_GAP = 20;
const MARGIN = { left: 58, right: 12, top: 26, bottom: 40 };

function fmtTick(value: number): string {
  return compact(value);
}

/** One line chart, log-scale y, at (x0, y0); returns its SVG elements. */
export function renderLinePanel(panel: LinePanel, x0: number, y0: number): string[] {
  const all = panel.series.flatMap((s) => s.points).filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y) && p.y > 0);
  const out: string[] = [`<text x="${x0}" y="${y0 + 14}" class="label" font-weight="bold">${escape(panel.title)}</text>`];
  if (all.length === 0) return out;
  const plotW = PANEL_WIDTH - MARGIN.left - MARGIN.right;
  const plotH = PANEL_HEIGHT - MARGIN.top - MARGIN.bottom;
  const left = x0 + MARGIN.left;
  const top = y0 + MARGIN.top;
  const minX = Math.min(...all.map((p) => p.x), panel.xMarker ?? 1);
  const xLo = Math.max(0, Math.floor(minX * 10) / 10);
  const xHi = 1;
  const yLo = Math.pow(10, Math.floor(Math.log10(Math.min(...all.map((p) => p.y)))));
  const yHi = Math.pow(10, Math.ceil(Math.log10(Math.max(...all.map((p) => p.y)))));
  const sx = (x: number): number => left + ((x - xLo) / (xHi - xLo || 1)) * plotW;
  const sy = (y: number): number => top + plotH - (Math.log10(y / yLo) / Math.log10(yHi / yLo || 10)) * plotH;
  out.push(`<rect x="${left}" y="${top}" width="${plotW}" height="${plotH}" fill="none" stroke="#bbb"/>`);
  for (let e = Math.round(Math.log10(yLo)); e <= Math.round(Math.log10(yHi)); e++) {
    const y = sy(Math.pow(10, e));
    out.push(
      `<line x1="${left}" x2="${left + plotW}" y1="${y.toFixed(1)}" y2="${y.toFixed(1)}" stroke="#eee"/>`,
      `<text x="${left - 4}" y="${(y + 4).toFixed(1)}" class="tick" text-anchor="end">${fmtTick(Math.pow(10, e))}</text>`,
    );
  }
  const steps = Math.round((xHi - xLo) / 0.1);
  const xStep = steps > 5 ? 0.2 : 0.1;
  for (let x = xLo; x <= xHi + 1e-9; x += xStep) {
    const px = sx(x);
    out.push(
      `<line x1="${px.toFixed(1)}" x2="${px.toFixed(1)}" y1="${top}" y2="${top + plotH}" stroke="#eee"/>`,
      `<text x="${px.toFixed(1)}" y="${top + plotH + 14}" class="tick" text-anchor="middle">${x.toFixed(1)}</text>`,
    );
  }
  if (panel.xMarker !== undefined) {
    const px = sx(panel.xMarker);
    out.push(`<line x1="${px.toFixed(1)}" x2="${px.toFixed(1)}" y1="${top}" y2="${top + plotH}" stroke="#c94343" stroke-dasharray="4 3"/>`);
  }
  out.push(
    `<text x="${left + plotW / 2}" y="${top + plotH + 30}" class="tick" text-anchor="middle">${escape(panel.xLabel)}</text>`,
    `<text x="${x0 + 12}" y="${top + plotH / 2}" class="tick" text-anchor="middle" transform="rotate(-90 ${x0 + 12} ${top + plotH / 2})">${escape(panel.yLabel)}</text>`,
  );
  panel.series.forEach((series, i) => {
    const color = COLORS[i % COLORS.length]!;
    const pts = series.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y) && p.y > 0);
    if (pts.length === 0) return;
    const path = pts.map((p, j) => `${j === 0 ? 'M' : 'L'}${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(' ');
    out.push(`<path d="${path}" fill="none" stroke="${color}" stroke-width="1.8"/>`);
    for (const p of pts) out.push(`<circle cx="${sx(p.x).toFixed(1)}" cy="${sy(p.y).toFixed(1)}" r="2.6" fill="${color}"/>`);
  });
  return out;
}

function legend(labels: readonly string[], x0: number, y0: number): { parts: string[]; height: number } {
  const parts: string[] = [];
  let x = x0;
  let y = y0;
  labels.forEach((label, i) => {
    const w = 28 + label.length * 6.6;
    if (x + w > WIDTH - 12) {
      x = x0;
      y += 18;
    }
    parts.push(
      `<line x1="${x}" x2="${x + 18}" y1="${y - 4}" y2="${y - 4}" stroke="${COLORS[i % COLORS.length]}" stroke-width="2.5"/>`,
      `<text x="${x + 22}" y="${y}" class="label">${escape(label)}</text>`,
    );
    x += w;
  });
  return { parts, height: y - y0 + 18 };
}

function curvePanelsOf(report: BenchReport): Array<{ title: string; panels: LinePanel[]; labels: string[] }> {
  const suite = report.suites.ivfpq;
  if (!suite) return [];
  return suite.datasets.map((d) => {
    const labels = d.curves.map((c) => c.engine);
    const panel = (mode: 'single' | 'batch'): LinePanel => ({
      title: mode === 'single' ? 'single-thread, one query per call' : `batch of ${d.curves[0]?.points[0]?.batch.queries ?? d.queries} queries`,
      xLabel: 'recall@10',
      yLabel: 'queries/s (log)',
      xMarker: suite.targetRecall,
      series: d.curves.map((c) => ({
        label: c.engine,
        points: c.points.map((p) => ({ x: p[mode].recall.tieAware, y: p[mode].qps })),
      })),
    });
    return {
      title: `ivfpq: ${d.dataset} ${d.n.toLocaleString('en-US')}×${d.dim}, metric ${d.metric}, k=${d.k} (dashed: recall ${suite.targetRecall})`,
      panels: [panel('single'), panel('batch')],
      labels,
    };
  });
}

/** An SVG of every suite in the report, or undefined when there is nothing to draw. */
export function renderChart(report: BenchReport): string | undefined {
  const groups = groupsOf(report).filter((g) => g.bars.some((b) => b.value > 0));
  const curveGroups = curvePanelsOf(report);
  if (groups.length === 0 && curveGroups.length === 0) return undefined;
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
  for (const group of curveGroups) {
    parts.push(`<text x="12" y="${y}" class="title">${escape(group.title)}</text>`);
    y += 8;
    group.panels.forEach((panel, i) => parts.push(...renderLinePanel(panel, 12 + i * (PANEL_WIDTH + PANEL_GAP), y)));
    y += PANEL_HEIGHT + 4;
    const key = legend(group.labels, 12 + MARGIN.left, y + 4);
    parts.push(...key.parts);
    y += key.height + 26;
  }
  const m = report.machine;
  const subtitle = `${m.cpuModel}, ${m.logicalCores} cores, ${m.simdLevel}, GPU ${m.gpu} · ${report.startedAt} · log scale`;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${y}" viewBox="0 0 ${WIDTH} ${y}" font-family="sans-serif">`,
    '<style>.title{font-size:14px;font-weight:bold}.label{font-size:12px}.value{font-size:12px;fill:#333}.sub{font-size:11px;fill:#666}.tick{font-size:10px;fill:#555}</style>',
    `<rect width="${WIDTH}" height="${y}" fill="white"/>`,
    `<text x="12" y="20" class="title">ebrix bench</text>`,
    `<text x="12" y="34" class="sub">${escape(subtitle)}</text>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}
