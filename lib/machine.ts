/**
 * What this machine offers: SIMD levels, threads, and measured ceilings (FMA throughput and
 * memory read bandwidth) that benchmarks report their results against.
 */
import { awaitNative, callNative } from './errors.js';
import { native } from './native.js';
import { invalid, requirePositiveInteger } from './validate.js';

export type SimdLevel = 'scalar' | 'avx2' | 'avx512' | 'neon';
export const SIMD_LEVELS: readonly SimdLevel[] = ['scalar', 'avx2', 'avx512', 'neon'];

/** The level a new index uses by default: `EBRIX_SIMD` if set, else the best this CPU runs. */
export function simdLevel(): SimdLevel {
  return callNative(() => native().simdLevel()) as SimdLevel;
}

/** Every level this CPU and OS can run, scalar first, best last. */
export function supportedSimdLevels(): SimdLevel[] {
  return native().supportedSimdLevels() as SimdLevel[];
}

/** Hardware threads of this machine: the native pool's size unless configured otherwise. */
export function hardwareThreads(): number {
  return native().hardwareThreads();
}

/** The most threads one job may use, for `configure`. */
export const MAX_THREADS = 4096;

export interface ConfigureOptions {
  /**
   * Size of the process-wide native thread pool: the most threads one search, add, train or
   * filter runs on at once (the calling thread included). Default: `EBRIX_THREADS` (read once,
   * when the addon loads), else `hardwareThreads()`.
   */
  threads?: number;
}

/**
 * Process-wide native settings. `threads` resizes the pool at once, also while searches run:
 * growing adds workers to the jobs that start next (and to queued ones), shrinking lets busy
 * workers finish their task before they stop; no work is dropped. Indexes made without an
 * explicit `threads` follow the pool (their `threads` reports the new size); an explicit
 * `threads` stays, capped at the pool size. An invalid value is EBRIX_INVALID_ARGUMENT and
 * changes nothing.
 */
export function configure(options: ConfigureOptions): void {
  if (options === null || typeof options !== 'object') throw invalid('an options object', 'options', options);
  if (options.threads !== undefined) {
    const threads = requirePositiveInteger(options.threads, 'threads', MAX_THREADS);
    callNative(() => native().setThreadCount(threads));
  }
}

/** The native thread pool's size (see `configure`). */
export function threadCount(): number {
  return native().threadCount();
}

export interface CeilingOptions {
  threads?: number;
}

/** fp32 FMA throughput of the best SIMD level, in GFLOP/s, over `threads` threads. */
export async function measureFmaPeak(
  options: CeilingOptions & { durationMs?: number } = {},
): Promise<{ gflops: number; threads: number }> {
  const threads = requirePositiveInteger(options.threads ?? hardwareThreads(), 'threads', 4096);
  const durationMs = requirePositiveInteger(options.durationMs ?? 500, 'durationMs');
  const gflops = await awaitNative(native().measureFmaPeak(threads, durationMs / 1000));
  return { gflops, threads };
}

/** Read bandwidth from memory, in GB/s, over `threads` threads and a `bytes` buffer. */
export async function measureReadBandwidth(
  options: CeilingOptions & { bytes?: number } = {},
): Promise<{ gbPerSecond: number; threads: number }> {
  const threads = requirePositiveInteger(options.threads ?? hardwareThreads(), 'threads', 4096);
  const bytes = requirePositiveInteger(options.bytes ?? 1 << 30, 'bytes');
  const gbPerSecond = await awaitNative(native().measureReadBandwidth(threads, bytes));
  return { gbPerSecond, threads };
}
