// Clock and statistics helpers shared by the suites. Every timing in the bench goes through
// here so that "seconds" always means the same monotonic clock.

/** Runs `fn` once and returns its value with the elapsed wall time. */
export async function timed<T>(fn: () => T | Promise<T>): Promise<{ value: T; seconds: number }> {
  const start = process.hrtime.bigint();
  const value = await fn();
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return { value, seconds };
}

/**
 * Milliseconds on the same monotonic clock as `timed` (both are libuv's hrtime), as a plain
 * double: load runs time every request, and a BigInt per sample would add GC work to the
 * very tails they measure.
 */
export function nowMs(): number {
  return performance.now();
}

/** Nearest-rank percentile of already measured samples (p in [0, 100]). */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export function median(samples: readonly number[]): number {
  return percentile(samples, 50);
}

export interface RepeatPolicy {
  /** Keep repeating until this much time has been spent measuring... */
  minSeconds: number;
  /** ...but never more than this many runs (at least one run always happens). */
  maxRuns: number;
}

/**
 * Times `fn` repeatedly under `policy` and returns every run's duration. The caller warms up
 * separately: the first timed run is counted, so it must not include one-off costs.
 */
export async function repeatTimed(fn: () => unknown, policy: RepeatPolicy): Promise<number[]> {
  const runs: number[] = [];
  let spent = 0;
  while (runs.length < policy.maxRuns && (runs.length === 0 || spent < policy.minSeconds)) {
    const { seconds } = await timed(fn);
    runs.push(seconds);
    spent += seconds;
  }
  return runs;
}

export interface LatencyPolicy {
  maxSamples: number;
  /** Stop early once this much time has been spent, so slow peers cannot stall the run. */
  maxSeconds: number;
  /** Fewer samples than this are taken even past maxSeconds (p99 of 3 samples is meaningless). */
  minSamples: number;
}

/** Times `fn(i)` once per sample, synchronously, for single-query latency. */
export function sampleLatency(fn: (sample: number) => unknown, policy: LatencyPolicy): number[] {
  const samples: number[] = [];
  let spent = 0;
  while (
    samples.length < policy.maxSamples &&
    (samples.length < policy.minSamples || spent < policy.maxSeconds)
  ) {
    const start = process.hrtime.bigint();
    fn(samples.length);
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    samples.push(seconds);
    spent += seconds;
  }
  return samples;
}
