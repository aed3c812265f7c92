/**
 * The checks every index class's `open(path, options)` makes before it asks the addon to open
 * a file: one place, so the three classes answer bad input alike.
 */
import { SIMD_LEVELS, type SimdLevel } from '../machine.js';
import { invalid, requireOneOf, requirePositiveInteger } from '../validate.js';

const MAX_THREADS = 4096;

export interface OpenArgs {
  mmap: boolean;
  verify: boolean;
  /** 0: follow the native pool. */
  threads: number;
  simd: SimdLevel | undefined;
}

/** `path` and `options` of an `open` call, validated, with their defaults (mapped, unverified). */
export function openArgs(
  path: unknown,
  options: { mmap?: unknown; verify?: unknown; threads?: unknown; simd?: unknown } | null,
): OpenArgs {
  if (typeof path !== 'string' || path.length === 0) throw invalid('a file path', 'path', path);
  if (options === null || typeof options !== 'object') throw invalid('an options object', 'options', options);
  const mmap = options.mmap ?? true;
  if (typeof mmap !== 'boolean') throw invalid('a boolean', 'options.mmap', options.mmap);
  const verify = options.verify ?? false;
  if (typeof verify !== 'boolean') throw invalid('a boolean', 'options.verify', options.verify);
  const threads = options.threads === undefined ? 0 : requirePositiveInteger(options.threads, 'options.threads', MAX_THREADS);
  const simd = options.simd === undefined ? undefined : (requireOneOf(options.simd, SIMD_LEVELS, 'options.simd') as SimdLevel);
  return { mmap, verify, threads, simd };
}
