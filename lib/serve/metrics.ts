/**
 * Serving metrics: a latency histogram per stage, the request rate, and errors by code, as
 * a plain object (`snapshot()`) and in the Prometheus text exposition format.
 *
 * Histograms have fixed log-spaced buckets, four per octave from 10 µs to about 60 s, so
 * that any two histograms can be merged or subtracted bucket by bucket and a quantile read
 * from one is within 19% of the true value. Prometheus gets every fourth boundary (one per
 * octave, 24 buckets): cumulative counts at those boundaries are exact, and a scrape stays
 * small.
 */
import { EbrixError } from '../errors.js';

/** The lowest bucket boundary, in seconds. */
const BASE_SECONDS = 1e-5;
const BUCKETS_PER_OCTAVE = 4;
/** Boundaries 10 µs × 2^(i/4) for i = 0 … 90 (the last is about 59 s); then +Inf. */
const BOUNDARY_COUNT = 91;
const BOUNDARIES = Float64Array.from({ length: BOUNDARY_COUNT }, (_, i) => BASE_SECONDS * 2 ** (i / BUCKETS_PER_OCTAVE));
/** Seconds of history behind the rate (`qps`). */
const RATE_WINDOW_SECONDS = 10;

/** Upper bounds (seconds) of a histogram's buckets, ascending; a last, unbounded bucket follows. */
export const LATENCY_BUCKETS_SECONDS: readonly number[] = Array.from(BOUNDARIES);

export interface LatencySummary {
  count: number;
  /** Sum of every observation, milliseconds. */
  sumMs: number;
  meanMs: number;
  /** Estimated from the buckets (within a bucket's width, 19%). */
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  /** Exact. */
  maxMs: number;
}

/** A latency histogram over the fixed buckets. */
export class LatencyHistogram {
  /** counts[i]: observations in (boundary[i-1], boundary[i]]; counts[BOUNDARY_COUNT]: above the last. */
  readonly counts = new Float64Array(BOUNDARY_COUNT + 1);
  count = 0;
  sumSeconds = 0;
  maxSeconds = 0;

  observe(ms: number): void {
    if (!(ms >= 0)) return; // NaN or negative: a clock bug upstream, not a latency
    const seconds = ms / 1e3;
    this.counts[bucketOf(seconds)]!++;
    this.count++;
    this.sumSeconds += seconds;
    if (seconds > this.maxSeconds) this.maxSeconds = seconds;
  }

  /** The q-quantile (0 ≤ q ≤ 1) in milliseconds, interpolated geometrically inside its bucket; NaN when empty. */
  quantileMs(q: number): number {
    if (this.count === 0) return Number.NaN;
    const rank = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    for (let i = 0; i < this.counts.length; i++) {
      const inBucket = this.counts[i]!;
      if (seen + inBucket < rank) {
        seen += inBucket;
        continue;
      }
      const upper = i < BOUNDARY_COUNT ? BOUNDARIES[i]! : this.maxSeconds;
      const lower = i === 0 ? 0 : BOUNDARIES[i - 1]!;
      const fraction = (rank - seen) / inBucket;
      const estimate = lower === 0 ? upper * fraction : lower * (upper / lower) ** fraction;
      // No estimate may pass the largest value actually seen.
      return Math.min(estimate, this.maxSeconds) * 1e3;
    }
    return this.maxSeconds * 1e3;
  }

  summary(): LatencySummary {
    return {
      count: this.count,
      sumMs: this.sumSeconds * 1e3,
      meanMs: this.count > 0 ? (this.sumSeconds / this.count) * 1e3 : Number.NaN,
      p50Ms: this.quantileMs(0.5),
      p90Ms: this.quantileMs(0.9),
      p99Ms: this.quantileMs(0.99),
      maxMs: this.maxSeconds * 1e3,
    };
  }

  reset(): void {
    this.counts.fill(0);
    this.count = 0;
    this.sumSeconds = 0;
    this.maxSeconds = 0;
  }
}

function bucketOf(seconds: number): number {
  if (seconds <= BASE_SECONDS) return 0;
  // The small epsilon puts a value sitting on a boundary (up to rounding) in that boundary's bucket.
  const i = Math.ceil(BUCKETS_PER_OCTAVE * Math.log2(seconds / BASE_SECONDS) - 1e-9);
  return Math.min(i, BOUNDARY_COUNT);
}

/** Requests per second over the last RATE_WINDOW_SECONDS, in one-second slots. */
class RateMeter {
  readonly #slots = new Float64Array(RATE_WINDOW_SECONDS + 1);
  readonly #slotSecond = new Float64Array(RATE_WINDOW_SECONDS + 1).fill(-1);
  #startedAt = performance.now();

  mark(now = performance.now()): void {
    const second = Math.floor(now / 1e3);
    const slot = second % this.#slots.length;
    if (this.#slotSecond[slot] !== second) {
      this.#slotSecond[slot] = second;
      this.#slots[slot] = 0;
    }
    this.#slots[slot]!++;
  }

  /** Events per second over the window (or since the start, when that is shorter). */
  rate(now = performance.now()): number {
    const second = Math.floor(now / 1e3);
    let events = 0;
    for (let i = 0; i < this.#slots.length; i++) {
      const age = second - this.#slotSecond[i]!;
      // The current second is partial: the window is the last RATE_WINDOW_SECONDS full seconds plus it.
      if (age >= 0 && age <= RATE_WINDOW_SECONDS) events += this.#slots[i]!;
    }
    const span = Math.min(RATE_WINDOW_SECONDS + (now / 1e3 - second), (now - this.#startedAt) / 1e3);
    return span > 0 ? events / span : 0;
  }

  reset(): void {
    this.#slots.fill(0);
    this.#slotSecond.fill(-1);
    this.#startedAt = performance.now();
  }
}

/** The stages of a retrieval: query embedding, index search, item lookup and ranking, all of it. */
export const STAGES = ['embed', 'search', 'rank', 'total'] as const;
export type Stage = (typeof STAGES)[number];

export interface StageTimings {
  embedMs: number;
  searchMs: number;
  rankMs: number;
  totalMs: number;
}

export interface RetrievalMetricsSnapshot {
  /** Requests finished since the start or the last reset, failed ones included. */
  requests: number;
  /** Requests that failed, by error code (EBRIX_… codes; EBRIX_INTERNAL for errors without one). */
  errors: Record<string, number>;
  /** Requests finished per second over the last 10 s. */
  qps: number;
  /** Latency per stage of the successful requests. */
  stages: Record<Stage, LatencySummary>;
  uptimeSeconds: number;
}

/** The code an error is counted under. */
export function errorCode(error: unknown): string {
  if (error instanceof EbrixError) return error.code;
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('EBRIX_') ? code : 'EBRIX_INTERNAL';
}

/** Per-stage latency, rate and errors of a Retriever. */
export class RetrievalMetrics {
  readonly stages: Record<Stage, LatencyHistogram> = {
    embed: new LatencyHistogram(),
    search: new LatencyHistogram(),
    rank: new LatencyHistogram(),
    total: new LatencyHistogram(),
  };
  readonly #errors = new Map<string, number>();
  readonly #rate = new RateMeter();
  #requests = 0;
  #startedAt = performance.now();

  /** Records a successful request; a stage left out (a search by vector embeds nothing) is not observed. */
  observe(timings: Partial<StageTimings>): void {
    this.#requests++;
    this.#rate.mark();
    if (timings.embedMs !== undefined) this.stages.embed.observe(timings.embedMs);
    if (timings.searchMs !== undefined) this.stages.search.observe(timings.searchMs);
    if (timings.rankMs !== undefined) this.stages.rank.observe(timings.rankMs);
    if (timings.totalMs !== undefined) this.stages.total.observe(timings.totalMs);
  }

  /** Records a failed request under its error code. */
  fail(error: unknown): void {
    this.#requests++;
    this.#rate.mark();
    const code = errorCode(error);
    this.#errors.set(code, (this.#errors.get(code) ?? 0) + 1);
  }

  snapshot(): RetrievalMetricsSnapshot {
    return {
      requests: this.#requests,
      errors: Object.fromEntries([...this.#errors].sort(([a], [b]) => a.localeCompare(b))),
      qps: this.#rate.rate(),
      stages: {
        embed: this.stages.embed.summary(),
        search: this.stages.search.summary(),
        rank: this.stages.rank.summary(),
        total: this.stages.total.summary(),
      },
      uptimeSeconds: (performance.now() - this.#startedAt) / 1e3,
    };
  }

  /** Appends this object's metrics, named `<prefix>_…`, to a Prometheus text writer. */
  writePrometheus(out: PrometheusText, prefix = 'ebrix_retrieval'): void {
    out.histogram(
      `${prefix}_stage_seconds`,
      'Latency of each retrieval stage (embed, search, rank) and of the whole request (total).',
      STAGES.map((stage) => ({ labels: { stage }, histogram: this.stages[stage] })),
    );
    out.counter(`${prefix}_requests_total`, 'Retrieval requests finished, failed ones included.', [{ labels: {}, value: this.#requests }]);
    out.counter(
      `${prefix}_errors_total`,
      'Retrieval requests that failed, by error code.',
      [...this.#errors].map(([code, value]) => ({ labels: { code }, value })),
    );
    out.gauge(`${prefix}_requests_per_second`, 'Retrieval requests finished per second over the last 10 s.', [
      { labels: {}, value: this.#rate.rate() },
    ]);
  }

  reset(): void {
    for (const stage of STAGES) this.stages[stage].reset();
    this.#errors.clear();
    this.#rate.reset();
    this.#requests = 0;
    this.#startedAt = performance.now();
  }
}

export type Labels = Readonly<Record<string, string>>;

/**
 * Builds a Prometheus text exposition (format 0.0.4): one HELP and TYPE line per metric
 * family, then its samples. Label values are escaped as the format requires.
 */
export class PrometheusText {
  readonly #lines: string[] = [];

  counter(name: string, help: string, samples: readonly { labels: Labels; value: number }[]): this {
    return this.#family(name, help, 'counter', samples);
  }

  gauge(name: string, help: string, samples: readonly { labels: Labels; value: number }[]): this {
    return this.#family(name, help, 'gauge', samples);
  }

  /** A histogram family: cumulative buckets at one boundary per octave, +Inf, _sum and _count. */
  histogram(name: string, help: string, series: readonly { labels: Labels; histogram: LatencyHistogram }[]): this {
    this.#lines.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} histogram`);
    for (const { labels, histogram } of series) {
      let cumulative = 0;
      for (let i = 0; i < BOUNDARY_COUNT; i++) {
        cumulative += histogram.counts[i]!;
        if (i % BUCKETS_PER_OCTAVE !== 0) continue;
        this.#lines.push(`${name}_bucket${labelText({ ...labels, le: formatNumber(BOUNDARIES[i]!) })} ${cumulative}`);
      }
      this.#lines.push(`${name}_bucket${labelText({ ...labels, le: '+Inf' })} ${histogram.count}`);
      this.#lines.push(`${name}_sum${labelText(labels)} ${formatNumber(histogram.sumSeconds)}`);
      this.#lines.push(`${name}_count${labelText(labels)} ${histogram.count}`);
    }
    return this;
  }

  toString(): string {
    return `${this.#lines.join('\n')}\n`;
  }

  #family(name: string, help: string, type: string, samples: readonly { labels: Labels; value: number }[]): this {
    this.#lines.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`);
    for (const { labels, value } of samples) this.#lines.push(`${name}${labelText(labels)} ${formatNumber(value)}`);
    return this;
  }
}

function labelText(labels: Labels): string {
  const entries = Object.entries(labels);
  if (entries.length === 0) return '';
  return `{${entries.map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`).join(',')}}`;
}

function escapeHelp(help: string): string {
  return help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function formatNumber(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Number.POSITIVE_INFINITY) return '+Inf';
  if (value === Number.NEGATIVE_INFINITY) return '-Inf';
  // Up to 6 significant digits keeps bucket boundaries readable (0.0000141421 → 1.41421e-05).
  return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(6)));
}
