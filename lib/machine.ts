/**
 * What this machine offers: SIMD levels, threads, and measured ceilings (FMA throughput and
 * memory read bandwidth) that benchmarks report their results against.
 */
import { awaitNative, callNative } from './errors.js';
import { native } from './native.js';
import { requirePositiveInteger } from './validate.js';

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

/** Hardware threads the native pool uses by default. */
export function hardwareThreads(): number {
  return native().hardwareThreads();
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
