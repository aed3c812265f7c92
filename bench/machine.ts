// What the numbers were measured on, and the machine's own ceilings (fp32 FMA peak and read
// bandwidth), so that every result can be read as a fraction of what the hardware allows.

import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { hardwareThreads, measureFmaPeak, measureReadBandwidth, simdLevel, supportedSimdLevels } from '../lib/index.js';

export interface MachineInfo {
  cpuModel: string;
  /** Logical CPUs as Node sees them (os.cpus()). */
  logicalCores: number;
  /** Threads the ebrix pool uses by default. */
  hardwareThreads: number;
  simdLevel: string;
  supportedSimdLevels: string[];
  /** `nvidia-smi -L` lines, or "none". */
  gpu: string;
  totalMemoryGiB: number;
  platform: string;
  arch: string;
  nodeVersion: string;
  /** EBRIX_SIMD when set: the run was forced onto one ISA. */
  forcedSimd: string | null;
}

export function describeMachine(): MachineInfo {
  const cpus = os.cpus();
  return {
    cpuModel: cpus[0]?.model.trim() || 'unknown',
    logicalCores: cpus.length,
    hardwareThreads: hardwareThreads(),
    simdLevel: simdLevel(),
    supportedSimdLevels: supportedSimdLevels(),
    gpu: detectGpu(),
    totalMemoryGiB: os.totalmem() / 2 ** 30,
    platform: `${os.type()} ${os.release()}`,
    arch: process.arch,
    nodeVersion: process.version,
    forcedSimd: process.env['EBRIX_SIMD'] ?? null,
  };
}

/** "none" unless nvidia-smi exists and lists a device; never throws, never hangs. */
function detectGpu(): string {
  try {
    const probe = spawnSync('nvidia-smi', ['-L'], { encoding: 'utf8', timeout: 5000 });
    if (probe.status !== 0 || probe.error) return 'none';
    const lines = probe.stdout
      .split('\n')
      .map((line) => line.trim())
      .filter((line) => line.length > 0);
    return lines.length > 0 ? lines.join('; ') : 'none';
  } catch {
    return 'none';
  }
}

export interface Ceiling {
  threads: number;
  /** FMA peak in GFLOP/s (one FMA = 2 flops). */
  fmaGflops: number;
  readGbPerSecond: number;
}

export interface CeilingOptions {
  /** Thread counts to measure at; duplicates are measured once. */
  threadCounts: number[];
  fmaDurationMs: number;
  readBytes: number;
}

export async function measureCeilings(options: CeilingOptions): Promise<Ceiling[]> {
  const counts = [...new Set(options.threadCounts)].sort((a, b) => a - b);
  const ceilings: Ceiling[] = [];
  for (const threads of counts) {
    const fma = await measureFmaPeak({ threads, durationMs: options.fmaDurationMs });
    const read = await measureReadBandwidth({ threads, bytes: options.readBytes });
    ceilings.push({ threads, fmaGflops: fma.gflops, readGbPerSecond: read.gbPerSecond });
  }
  return ceilings;
}

/** The ceiling measured at `threads`, else the nearest measured count. */
export function ceilingFor(ceilings: readonly Ceiling[], threads: number): Ceiling {
  let best: Ceiling | undefined;
  for (const ceiling of ceilings) {
    if (!best || Math.abs(ceiling.threads - threads) < Math.abs(best.threads - threads)) best = ceiling;
  }
  if (!best) throw new Error('No ceilings were measured');
  return best;
}

/**
 * Per thread count, the higher of each ceiling across measurement rounds. Other load on the
 * machine only ever lowers a measured ceiling, so the best round is the closest to the truth.
 */
export function bestCeilings(...rounds: ReadonlyArray<readonly Ceiling[]>): Ceiling[] {
  const best = new Map<number, Ceiling>();
  for (const round of rounds) {
    for (const c of round) {
      const seen = best.get(c.threads);
      best.set(c.threads, {
        threads: c.threads,
        fmaGflops: Math.max(c.fmaGflops, seen?.fmaGflops ?? 0),
        readGbPerSecond: Math.max(c.readGbPerSecond, seen?.readGbPerSecond ?? 0),
      });
    }
  }
  return [...best.values()].sort((a, b) => a.threads - b.threads);
}
