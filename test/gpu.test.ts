import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

import { requireCuda, resetGpuForTests } from '../lib/gpu.js';
import {
  DeviceUnavailableError,
  DimensionMismatchError,
  DisposedError,
  DuplicateIdError,
  FlatIndex,
  InvalidArgumentError,
  InvalidVectorError,
  IvfPqIndex,
  NO_ID,
  NotTrainedError,
  gpuInfo,
  type Metric,
  type SearchResult,
} from '../lib/index.js';
import { clustered } from './datasets.js';
import {
  bruteForce,
  expectRowMatches,
  makeIds,
  randomVectors,
  rng,
  scoredMetric,
  storedRows,
} from './helpers.js';
import { expectSameResults, runMutationSequence, type MutationScenario } from './mutation-harness.js';

const METRICS: Metric[] = ['ip', 'cosine', 'l2'];
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const defaultAddon = path.join(root, 'build-cuda', 'Release', 'ebrix_cuda.node');
const scratch = mkdtempSync(path.join(tmpdir(), 'ebrix-gpu-test-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** Runs `fn` with EBRIX_CUDA_ADDON set to `file` and a fresh probe, then restores both. */
function withCudaAddon<T>(file: string, fn: () => T): T {
  const saved = process.env.EBRIX_CUDA_ADDON;
  process.env.EBRIX_CUDA_ADDON = file;
  resetGpuForTests();
  try {
    return fn();
  } finally {
    if (saved === undefined) delete process.env.EBRIX_CUDA_ADDON;
    else process.env.EBRIX_CUDA_ADDON = saved;
    resetGpuForTests();
  }
}

/** A CUDA addon path that does not exist: whatever this machine has, no GPU is usable. */
const noAddon = path.join(scratch, 'missing', 'ebrix_cuda.node');

describe('gpuInfo', () => {
  it.skipIf(existsSync(defaultAddon) || process.env.EBRIX_CUDA_ADDON !== undefined)(
    'says ebrix was built without CUDA when build-cuda holds no addon',
    () => {
      const info = gpuInfo();
      expect(info).toMatchObject({ available: false, device: -1, name: '', addonPath: defaultAddon });
      expect(info.reason).toBe(
        'ebrix was built without CUDA: run `npm run build:cuda` on a machine with nvcc and a CUDA driver',
      );
      expect(gpuInfo()).toBe(info); // probed once
    },
  );

  it('names a missing EBRIX_CUDA_ADDON file', () => {
    const info = withCudaAddon(noAddon, gpuInfo);
    expect(info.available).toBe(false);
    expect(info.addonPath).toBe(noAddon);
    expect(info.reason).toBe(`cannot load ${noAddon} (from EBRIX_CUDA_ADDON): no such file`);
  });

  it('reports a file that is not a loadable addon, and never runs it as JavaScript', () => {
    const garbage = path.join(scratch, 'garbage.node');
    writeFileSync(garbage, Buffer.from('\x7fELF this is not a shared library', 'latin1'));
    const garbageInfo = withCudaAddon(garbage, gpuInfo);
    expect(garbageInfo.available).toBe(false);
    expect(garbageInfo.reason).toMatch(new RegExp(`^cannot load ${escape(garbage)}: .+`));

    const script = path.join(scratch, 'addon.js');
    writeFileSync(script, 'globalThis.ebrixScriptRan = true; module.exports = { probeDevice: () => ({ available: true }) };');
    const scriptInfo = withCudaAddon(script, gpuInfo);
    expect(scriptInfo.available).toBe(false);
    expect(scriptInfo.reason).toMatch(new RegExp(`^cannot load ${escape(script)}: .+`));
    expect((globalThis as { ebrixScriptRan?: boolean }).ebrixScriptRan).toBeUndefined();
  });
});

describe('FlatIndex without a usable GPU', () => {
  it("falls back to the CPU under device 'auto', saying why, and searches exactly", async () => {
    const dim = 16;
    const n = 500;
    const data = randomVectors(n, dim, 21);
    const ids = makeIds(n);
    const index = withCudaAddon(noAddon, () => new FlatIndex({ dim, metric: 'l2', device: 'auto' }));
    try {
      expect(index.device).toBe('cpu');
      expect(index.storage).toBe('f32');
      expect(index.deviceReason).toBe(`cannot load ${noAddon} (from EBRIX_CUDA_ADDON): no such file`);
      expect(index.simd).toBeDefined();
      await index.add(ids, data);
      const queries = randomVectors(5, dim, 22);
      const result = await index.search(queries, 10, { tf32: true }); // tf32 means nothing on the CPU
      for (let q = 0; q < 5; q++) {
        const truth = bruteForce('l2', data, ids, queries.subarray(q * dim, (q + 1) * dim), dim);
        expectRowMatches(truth, result.row(q).ids, result.row(q).scores, 10);
      }
      const memory = index.memoryUsage();
      expect(memory.deviceBytes).toBe(0);
      expect(memory.hostBytes).toBe(memory.bytes);
      expect(memory.bytes).toBeGreaterThan(n * dim * 4);
    } finally {
      index.dispose();
    }
  });

  it("keeps storage f16 or bf16 when 'auto' falls back to the CPU", async () => {
    const dim = 12;
    const n = 300;
    const data = randomVectors(n, dim, 23);
    const ids = makeIds(n);
    for (const storage of ['f16', 'bf16'] as const) {
      using index = withCudaAddon(noAddon, () => new FlatIndex({ dim, metric: 'cosine', device: 'auto', storage }));
      expect(index.device).toBe('cpu');
      expect(index.storage).toBe(storage);
      expect(index.deviceReason).toBe(`cannot load ${noAddon} (from EBRIX_CUDA_ADDON): no such file`);
      await index.add(ids, data);
      const queries = randomVectors(4, dim, 24);
      const rows = storedRows(data, dim, 'cosine', storage);
      const stored = storedRows(queries, dim, 'cosine', storage);
      const result = await index.search(queries, 10);
      for (let q = 0; q < 4; q++) {
        const truth = bruteForce('ip', rows, ids, stored.subarray(q * dim, (q + 1) * dim), dim);
        expectRowMatches(truth, result.row(q).ids, result.row(q).scores, 10);
      }
    }
  });

  it("rejects device 'cuda' with EBRIX_DEVICE_UNAVAILABLE and the reason", () => {
    withCudaAddon(noAddon, () => {
      expect(() => new FlatIndex({ dim: 4, device: 'cuda' })).toThrow(DeviceUnavailableError);
      expect(() => new FlatIndex({ dim: 4, device: 'cuda', storage: 'bf16' })).toThrow(
        expect.objectContaining({
          code: 'EBRIX_DEVICE_UNAVAILABLE',
          message: `No usable GPU: cannot load ${noAddon} (from EBRIX_CUDA_ADDON): no such file`,
        }),
      );
    });
  });

  it('stores f16 and bf16 on the CPU, and rejects bad device, storage, allow and tf32 values', () => {
    for (const storage of ['f32', 'f16', 'bf16'] as const) {
      using cpu = new FlatIndex({ dim: 4, device: 'cpu', storage });
      expect(cpu.device).toBe('cpu');
      expect(cpu.storage).toBe(storage);
    }
    using unspecified = new FlatIndex({ dim: 4 });
    expect(unspecified.storage).toBe('f32');
    expect(() => new FlatIndex({ dim: 4, storage: 'f64' as never })).toThrow(InvalidArgumentError);
    expect(() => new FlatIndex({ dim: 4, device: 'tpu' as never })).toThrow(/for device but received "tpu"/);
    expect(() => new FlatIndex({ dim: 4, storage: 'int8' as never })).toThrow(/for storage but received "int8"/);
    // Checked before any probe, so the same on every machine.
    expect(() => new FlatIndex({ dim: 4, device: 'cuda', simd: 'scalar' })).toThrow(/simd option applies to the CPU only/);

    using index = new FlatIndex({ dim: 4 });
    expect(index.device).toBe('cpu');
    expect(index.deviceReason).toBe('');
    index.addSync([1], new Float32Array(4));
    expect(() => index.searchSync(new Float32Array(4), 1, { allow: [1] as never })).toThrow(
      /Expected a Uint32Array for options.allow/,
    );
    expect(() => index.searchSync(new Float32Array(4), 1, { tf32: 1 as never })).toThrow(
      /Expected a boolean for options.tf32 but received 1/,
    );
  });
});

const info = gpuInfo();
if (!info.available) console.log(`GPU tests skipped: ${info.reason}`);

describe.skipIf(!info.available)('FlatIndex on the GPU', () => {
  /**
   * `actual` ranks like `expected` up to near-ties: scores equal position by position within
   * `tol`, every id clearly above the k-th score present, padding in the same places.
   */
  function expectSameTopK(expected: SearchResult, actual: SearchResult, tol: number): void {
    expect(actual.nq).toBe(expected.nq);
    for (let q = 0; q < expected.nq; q++) {
      const e = expected.row(q);
      const a = actual.row(q);
      const kth = e.scores[e.scores.length - 1]!;
      for (let i = 0; i < e.ids.length; i++) {
        if (e.ids[i] === NO_ID) {
          expect(a.ids[i]).toBe(NO_ID);
          expect(a.scores[i]).toBe(-Infinity);
        } else {
          expect(Math.abs(a.scores[i]! - e.scores[i]!), `query ${q}, position ${i}`).toBeLessThanOrEqual(tol);
        }
      }
      const got = new Set(a.ids);
      for (let i = 0; i < e.ids.length && e.scores[i]! > kth + tol; i++) {
        expect(got.has(e.ids[i]!), `query ${q}: id ${e.ids[i]} missing`).toBe(true);
      }
    }
  }

  it('reports the device', () => {
    expect(info.reason).toBe('');
    expect(info.device).toBe(0);
    expect(info.name).not.toBe('');
    expect(info.computeCapability).toMatch(/^\d+\.\d$/);
    expect(info.multiprocessors).toBeGreaterThan(0);
    expect(info.totalMemory).toBeGreaterThanOrEqual(info.freeMemory);
    expect(info.freeMemory).toBeGreaterThan(0);
    using index = new FlatIndex({ dim: 8, device: 'auto' });
    expect(index.device).toBe('cuda');
    expect(index.deviceReason).toBe('');
    expect(index.simd).toBeUndefined();
    expect(index.threads).toBeUndefined();
  });

  it.each(METRICS)('f32 ranks like the CPU index for metric %s, on awkward dimensions and both paths', async (metric) => {
    for (const dim of [1, 7, 33, 100, 768]) {
      const n = 3000;
      const data = randomVectors(n, dim, dim);
      const ids = makeIds(n);
      using cpu = new FlatIndex({ dim, metric });
      using gpu = new FlatIndex({ dim, metric, device: 'cuda' });
      expect(gpu.storage).toBe('f32');
      await cpu.add(ids, data);
      await gpu.add(ids, data);
      expect(gpu.size).toBe(n);
      // A few queries take the fused scan, a large batch the GEMM tiles.
      for (const nq of [3, 300]) {
        const queries = randomVectors(nq, dim, dim + nq);
        for (const k of [1, 10, 100]) {
          const expected = await cpu.search(queries, k);
          const tol = 1e-4 * Math.max(1, ...Array.from(expected.scores, Math.abs));
          expectSameTopK(expected, await gpu.search(queries, k), tol);
          expectSameTopK(expected, gpu.searchSync(queries, k), tol);
        }
      }
    }
  });

  it.each(['f16', 'bf16'] as const)(
    '%s ranks like a reference that rounds rows and queries to the storage type',
    async (storage) => {
      const n = 2000;
      const ids = makeIds(n);
      for (const metric of METRICS) {
        for (const dim of [7, 64, 100]) {
          const data = randomVectors(n, dim, 31 + dim);
          using index = new FlatIndex({ dim, metric, device: 'cuda', storage });
          expect(index.storage).toBe(storage);
          await index.add(ids, data);
          const rows = storedRows(data, dim, metric, storage);
          for (const nq of [3, 200]) {
            const queries = randomVectors(nq, dim, 41 + dim + nq);
            const stored = storedRows(queries, dim, metric, storage);
            const result = await index.search(queries, 10);
            for (let q = 0; q < nq; q++) {
              const truth = bruteForce(scoredMetric(metric), rows, ids, stored.subarray(q * dim, (q + 1) * dim), dim);
              expectRowMatches(truth, result.row(q).ids, result.row(q).scores, 10);
            }
          }
        }
      }
    },
  );

  it.each(['f16', 'bf16'] as const)('%s ranks like the CPU index with the same storage', async (storage) => {
    const n = 3000;
    const ids = makeIds(n);
    for (const metric of METRICS) {
      for (const dim of [7, 100]) {
        const data = randomVectors(n, dim, 51 + dim);
        using cpu = new FlatIndex({ dim, metric, storage });
        using gpu = new FlatIndex({ dim, metric, device: 'cuda', storage });
        expect(cpu.storage).toBe(storage);
        await cpu.add(ids, data);
        await gpu.add(ids, data);
        for (const nq of [3, 200]) {
          const queries = randomVectors(nq, dim, 61 + dim + nq);
          const expected = await cpu.search(queries, 10);
          const tol = 1e-4 * Math.max(1, ...Array.from(expected.scores, Math.abs));
          expectSameTopK(expected, await gpu.search(queries, 10), tol);
        }
      }
    }
  });

  it('halves device memory with f16 and bf16', async () => {
    const n = 20_000;
    const dim = 128;
    const data = randomVectors(n, dim, 5);
    const bytes: Record<string, number> = {};
    for (const storage of ['f32', 'f16', 'bf16'] as const) {
      using index = new FlatIndex({ dim, device: 'cuda', storage });
      await index.add(makeIds(n), data);
      const memory = index.memoryUsage();
      expect(memory.bytes).toBe(memory.deviceBytes + memory.hostBytes);
      expect(memory.deviceBytes).toBeGreaterThanOrEqual(n * dim * (storage === 'f32' ? 4 : 2));
      expect(memory.hostBytes).toBeGreaterThan(0);
      bytes[storage] = memory.deviceBytes;
    }
    expect(bytes.f16!).toBeLessThan(0.75 * bytes.f32!);
    expect(bytes.bf16).toBe(bytes.f16);
  });

  it('stays close to exact with tf32', async () => {
    const n = 4000;
    const dim = 256;
    const data = randomVectors(n, dim, 61);
    const ids = makeIds(n);
    using index = new FlatIndex({ dim, device: 'cuda' });
    await index.add(ids, data);
    const queries = randomVectors(256, dim, 62);
    const exact = await index.search(queries, 10);
    const fast = await index.search(queries, 10, { tf32: true });
    let found = 0;
    for (let q = 0; q < 256; q++) {
      const truth = new Set(exact.row(q).ids);
      for (const id of fast.row(q).ids) if (truth.has(id)) found++;
      expect(Math.abs(fast.row(q).scores[0]! - exact.row(q).scores[0]!)).toBeLessThan(1e-2 * Math.abs(exact.row(q).scores[0]!) + 1e-2);
    }
    expect(found / (256 * 10)).toBeGreaterThan(0.9);
  });

  it('returns only allowed rows, as a CPU index of the allowed subset would', async () => {
    const n = 5000;
    const dim = 32;
    const data = randomVectors(n, dim, 71);
    const ids = makeIds(n);
    using gpu = new FlatIndex({ dim, metric: 'cosine', device: 'cuda' });
    // Two adds: rows are numbered across them in add order.
    await gpu.add(ids.slice(0, 2000), data.subarray(0, 2000 * dim));
    await gpu.add(ids.slice(2000), data.subarray(2000 * dim));
    const next = rng(72);
    const dense = new Uint32Array(Math.ceil(n / 32));
    const allowed = (bits: Uint32Array, r: number) => ((bits[r >> 5] ?? 0) >>> (r & 31)) & 1;
    for (let r = 0; r < n; r++) if (next() < 0.3) dense[r >> 5]! |= 1 << (r & 31);
    // A bitset shorter than the index allows nothing past its end: this one allows 18 rows.
    const short = new Uint32Array([0x0000ffff, 0b1010]);
    for (const bits of [dense, short]) {
      const keep: number[] = [];
      for (let r = 0; r < n; r++) if (allowed(bits, r)) keep.push(r);
      using cpu = new FlatIndex({ dim, metric: 'cosine' });
      const subset = new Float32Array(keep.length * dim);
      keep.forEach((r, i) => subset.set(data.subarray(r * dim, (r + 1) * dim), i * dim));
      cpu.addSync(
        keep.map((r) => ids[r]!),
        subset,
      );
      for (const nq of [3, 100]) {
        const queries = randomVectors(nq, dim, 73 + nq);
        const expected = await cpu.search(queries, 25); // k > 18: the short bitset pads
        expectSameTopK(expected, await gpu.search(queries, 25, { allow: bits }), 1e-4);
        expectSameTopK(expected, gpu.searchSync(queries, 25, { allow: bits }), 1e-4);
      }
    }
    for (const none of [new Uint32Array(0), new Uint32Array(200)]) {
      const result = await gpu.search(randomVectors(2, dim, 74), 5, { allow: none });
      expect(Array.from(result.ids)).toEqual(new Array(10).fill(NO_ID));
      expect(Array.from(result.scores)).toEqual(new Array(10).fill(-Infinity));
    }
  });

  it('pads past the row count, breaks ties by the smaller id, and caps k at 2048', async () => {
    using index = new FlatIndex({ dim: 2, device: 'cuda' });
    expect(Array.from((await index.search(new Float32Array(4), 3)).ids)).toEqual(new Array(6).fill(NO_ID));
    index.addSync([50, 10, 30, 20, 40], new Float32Array(10).fill(1));
    const result = index.searchSync(new Float32Array([1, 1]), 2048);
    expect(Array.from(result.row(0).ids.subarray(0, 6))).toEqual([10n, 20n, 30n, 40n, 50n, NO_ID]);
    expect(result.hits(0).map((h) => h.score)).toEqual([2, 2, 2, 2, 2]);
    expect(result.row(0).scores[2047]).toBe(-Infinity);
    expect(() => index.searchSync(new Float32Array(2), 2049)).toThrow(/from 1 to 2048 for k/);
    await expect(index.search(new Float32Array(2), 4096)).rejects.toThrow(InvalidArgumentError);
  });

  it('validates adds and queries like the CPU index, leaving the index unchanged', async () => {
    using index = new FlatIndex({ dim: 4, device: 'cuda' });
    index.addSync([1, 2], new Float32Array([1, 0, 0, 0, 0, 1, 0, 0]));
    await expect(index.add([3, 4], new Float32Array([0, 0, 0, 0, 1, NaN, 0, 0]))).rejects.toThrow(InvalidVectorError);
    expect(() => index.addSync([3], new Float32Array([Infinity, 0, 0, 0]))).toThrow(/row 0, column 0/);
    await expect(index.add([7, 7], new Float32Array(8))).rejects.toThrow(DuplicateIdError);
    expect(() => index.addSync([8, 2], new Float32Array(8))).toThrow(/duplicate id 2 \(already in the index\)/);
    expect(() => index.addSync([3], new Float32Array(5))).toThrow(DimensionMismatchError);
    expect(() => index.addSync([NO_ID], new Float32Array(4))).toThrow(InvalidArgumentError);
    await expect(index.search(new Float32Array([0, -Infinity, 0, 0]), 1)).rejects.toThrow(InvalidVectorError);
    expect(() => index.searchSync(new Float32Array(6), 1)).toThrow(DimensionMismatchError);
    expect(index.size).toBe(2);
    expect(index.searchSync(new Float32Array([0, 1, 0, 0]), 5).hits(0).map((h) => h.id)).toEqual([2n, 1n]);
  });

  it('allows adds while searches are in flight, each search seeing whole batches', async () => {
    const dim = 8;
    using index = new FlatIndex({ dim, metric: 'l2', device: 'cuda', storage: 'f16' });
    await index.add([0], new Float32Array(dim));
    const searches: Promise<SearchResult>[] = [];
    for (let b = 1; b <= 20; b++) {
      const ids = Array.from({ length: 1000 }, (_, i) => b * 1000 + i);
      searches.push(index.search(randomVectors(20, dim, b), 3));
      await index.add(ids, randomVectors(1000, dim, 100 + b));
    }
    for (const result of await Promise.all(searches)) {
      for (const id of result.ids) expect(id === 0n || id === NO_ID || (id >= 1000n && id < 21_000n)).toBe(true);
      for (const row of result) if (row.ids[2] === NO_ID) expect(Array.from(row.ids)).toEqual([0n, NO_ID, NO_ID]);
    }
    expect(index.size).toBe(20_001);
  });

  it('keeps serving a search in flight after dispose, then fails clearly', async () => {
    const index = new FlatIndex({ dim: 64, device: 'cuda' });
    await index.add(makeIds(100_000), randomVectors(100_000, 64, 81));
    const pending = index.search(randomVectors(500, 64, 82), 5);
    index.dispose();
    index.dispose();
    expect((await pending).ids[0]).not.toBe(NO_ID);
    expect(index.disposed).toBe(true);
    expect(() => index.size).toThrow(DisposedError);
    expect(() => index.memoryUsage()).toThrow(DisposedError);
    await expect(index.search(new Float32Array(64), 1)).rejects.toMatchObject({ code: 'EBRIX_DISPOSED' });
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

describe('IvfPqIndex without a usable GPU', () => {
  it("falls back to the CPU under device 'auto', saying why; 'cuda' is EBRIX_DEVICE_UNAVAILABLE", async () => {
    const dim = 16;
    const data = clustered(600, dim, 8, 41);
    using index = withCudaAddon(noAddon, () => new IvfPqIndex({ dim, metric: 'l2', nlist: 4, m: 4, refine: 'f32', device: 'auto' }));
    expect(index.device).toBe('cpu');
    expect(index.deviceReason).toBe(`cannot load ${noAddon} (from EBRIX_CUDA_ADDON): no such file`);
    await index.train(data);
    await index.add(makeIds(600), data);
    expect((await index.search(data.subarray(0, dim), 1, { nprobe: 4 })).row(0).ids[0]).toBe(makeIds(1)[0]);
    const memory = index.memoryUsage();
    expect(memory.deviceBytes).toBe(0);
    expect(memory.hostBytes).toBe(memory.bytes);
    withCudaAddon(noAddon, () => {
      expect(() => new IvfPqIndex({ dim, nlist: 4, m: 4, device: 'cuda' })).toThrow(DeviceUnavailableError);
    });
    expect(() => new IvfPqIndex({ dim, nlist: 4, m: 4, device: 'cuda', simd: 'scalar' })).toThrow(InvalidArgumentError);
    expect(() => new IvfPqIndex({ dim, nlist: 4, m: 4, device: 'gpu' as never })).toThrow(InvalidArgumentError);
  });
});

describe.skipIf(!info.available)('IvfPqIndex on the GPU', () => {
  const dim = 32;
  const n = 6000;
  const nq = 50;
  const data = clustered(n, dim, 24, 51);
  const queries = clustered(nq, dim, 24, 52);
  const ids = makeIds(n);

  /** Mean recall@k of `result` against exact search of `metric`. */
  function recall(metric: Metric, result: SearchResult, k: number, allowed?: (row: number) => boolean): number {
    const rows = allowed === undefined ? null : [...Array(n).keys()].filter(allowed);
    const subset = rows === null ? data : Float32Array.from(rows.flatMap((r) => [...data.subarray(r * dim, (r + 1) * dim)]));
    const subsetIds = rows === null ? ids : rows.map((r) => ids[r]!);
    let hits = 0;
    for (let q = 0; q < nq; q++) {
      const truth = new Set(bruteForce(metric, subset, subsetIds, queries.subarray(q * dim, (q + 1) * dim), dim).slice(0, k).map((t) => t.id));
      for (const id of result.row(q).ids) if (truth.has(id)) hits++;
    }
    return hits / (nq * k);
  }

  async function pair(options: ConstructorParameters<typeof IvfPqIndex>[0]): Promise<[IvfPqIndex, IvfPqIndex]> {
    const gpu = new IvfPqIndex({ ...options, device: 'cuda' });
    const cpu = new IvfPqIndex({ ...options, device: 'cpu' });
    for (const index of [gpu, cpu]) {
      await index.train(data, { seed: 7, maxIterations: 10 });
      await index.add(ids.slice(0, 2500), data.subarray(0, 2500 * dim));
      await index.add(ids.slice(2500), data.subarray(2500 * dim));
    }
    return [gpu, cpu];
  }

  it('reaches the recall of the CPU index for the same parameters, for every metric, nbits and refine', async () => {
    for (const metric of METRICS) {
      for (const nbits of [8, 4] as const) {
        for (const refine of ['none', 'f16', 'f32'] as const) {
          const [gpu, cpu] = await pair({ dim, metric, nlist: 32, m: 8, nbits, refine, opq: nbits === 4 && refine === 'f16' });
          try {
            expect(gpu.device).toBe('cuda');
            expect(gpu.size).toBe(n);
            for (const nprobe of [2, 8]) {
              const g = await gpu.search(queries, 10, { nprobe });
              const c = await cpu.search(queries, 10, { nprobe });
              const label = `${metric} nbits ${nbits} refine ${refine} nprobe ${nprobe}`;
              expect(recall(metric, g, 10), label).toBeGreaterThanOrEqual(recall(metric, c, 10) - 0.03);
              for (let q = 0; q < nq; q++) {
                const scores = g.row(q).scores;
                for (let i = 1; i < scores.length; i++) expect(scores[i]!, label).toBeLessThanOrEqual(scores[i - 1]!);
              }
            }
            if (refine === 'f32') {
              // Every list probed, exact re-rank: near exact search.
              expect(recall(metric, await gpu.search(queries, 10, { nprobe: 32, refineFactor: 16 }), 10)).toBeGreaterThanOrEqual(0.99);
            }
          } finally {
            gpu.dispose();
            cpu.dispose();
          }
        }
      }
    }
  }, 120_000);

  it('returns only allowed rows, keeps its memory on the device, and validates like the CPU index', async () => {
    using index = new IvfPqIndex({ dim, metric: 'l2', nlist: 16, m: 8, refine: 'f32', device: 'cuda' });
    await expect(index.search(queries, 10)).rejects.toThrow(NotTrainedError);
    await index.train(data);
    await index.add(ids, data);
    const allowed = (row: number) => row % 7 === 0;
    const allow = new Uint32Array(Math.ceil(n / 32));
    for (let r = 0; r < n; r++) if (allowed(r)) allow[r >> 5]! |= 1 << (r & 31);
    const result = await index.search(queries, 10, { nprobe: 16, allow });
    const allowedIds = new Set(ids.filter((_, r) => allowed(r)));
    for (let q = 0; q < nq; q++) for (const id of result.row(q).ids) expect(allowedIds.has(id)).toBe(true);
    expect(recall('l2', result, 10, allowed)).toBeGreaterThanOrEqual(0.95);
    const memory = index.memoryUsage();
    expect(memory.deviceBytes).toBeGreaterThan(n * (8 + dim * 4));
    expect(memory.bytes).toBe(memory.hostBytes + memory.deviceBytes);
    await expect(index.search(queries, 600, { refineFactor: 4 })).rejects.toThrow(InvalidArgumentError);
    await expect(index.add([ids[0]!], data.subarray(0, dim))).rejects.toThrow(DuplicateIdError);
    const bad = data.slice(0, dim);
    bad[3] = Number.NaN;
    await expect(index.add([123456789n], bad)).rejects.toThrow(InvalidVectorError);
    await expect(index.search(data.subarray(0, dim - 1), 1)).rejects.toThrow(DimensionMismatchError);
    expect(index.size).toBe(n);
  });

  it('serves searches while adds run, each seeing whole batches', async () => {
    using index = new IvfPqIndex({ dim, nlist: 16, m: 8, nbits: 4, device: 'cuda' });
    await index.train(data);
    const batches = 6;
    const per = n / batches;
    const searches: Promise<SearchResult>[] = [];
    for (let b = 0; b < batches; b++) {
      searches.push(index.search(queries, 5, { nprobe: 16 }));
      await index.add(ids.slice(b * per, (b + 1) * per), data.subarray(b * per * dim, (b + 1) * per * dim));
    }
    const known = new Set(ids);
    for (const result of await Promise.all(searches)) {
      for (let q = 0; q < nq; q++) for (const id of result.row(q).ids) expect(id === NO_ID || known.has(id)).toBe(true);
    }
    expect(index.size).toBe(n);
  });
});

/**
 * Removes, upserts, get, has and compaction on the GPU indexes, against CPU references
 * (test/mutation-harness.ts): after every step the GPU index answers as a fresh CPU index
 * built from the live vectors, and, with an allow bitset over rows, as a CPU index that took
 * the same steps. The same sequences run CPU against CPU first, so the references are known
 * to agree with each other wherever this file runs.
 */
function flatScenario(device: 'cpu' | 'cuda', metric: Metric, storage: 'f32' | 'f16' | 'bf16'): MutationScenario<FlatIndex> {
  const dim = 33;
  return {
    label: `FlatIndex ${device} ${metric} ${storage}`,
    dim,
    gets: true,
    make: async () => [new FlatIndex({ dim, metric, storage, device }), new FlatIndex({ dim, metric, storage })],
    fresh: async (ids, vectors) => {
      const index = new FlatIndex({ dim, metric, storage });
      if (ids.length > 0) await index.add(ids, vectors);
      return index;
    },
    search: (index, queries, k, allow) => index.search(queries, k, allow === undefined ? {} : { allow }),
    searchSync: (index, queries, k) => index.searchSync(queries, k),
    tolerance: (scores) => 1e-4 * Math.max(1, ...Array.from(scores, (v) => (Number.isFinite(v) ? Math.abs(v) : 0))),
  };
}

function ivfpqScenario(device: 'cpu' | 'cuda', metric: Metric, refine: 'none' | 'f16' | 'f32'): MutationScenario<IvfPqIndex> {
  const dim = 32;
  const sample = clustered(3000, dim, 16, 77);
  const options = { dim, metric, nlist: 16, m: 8, nbits: 8 as const, refine };
  const trained = async (onDevice: 'cpu' | 'cuda') => {
    const index = new IvfPqIndex({ ...options, device: onDevice });
    await index.train(sample, { seed: 5, maxIterations: 8 });
    return index;
  };
  // The GPU probes the lists it is asked to whatever the tombstones, as a fresh index does; a
  // CPU index with many tombstones probes more (it treats them as a filter), so CPU against
  // CPU compares over every list.
  const partial = device === 'cuda' ? 4 : 16;
  return {
    label: `IvfPqIndex ${device} ${metric} refine ${refine}`,
    dim,
    gets: refine !== 'none',
    make: async () => [await trained(device), await trained('cpu')],
    fresh: async (ids, vectors) => {
      const index = await trained('cpu');
      if (ids.length > 0) await index.add(ids, vectors);
      return index;
    },
    // A partial probe for k 10, every list for k 50; with an allow bitset, every list (the
    // CPU's 'probe' strategy then scores the same lists the GPU does).
    search: (index, queries, k, allow) =>
      index.search(
        queries,
        k,
        allow === undefined
          ? { nprobe: k <= 10 ? partial : 16, refineFactor: 8 }
          : { nprobe: 16, refineFactor: 8, allow, filterStrategy: 'probe' },
      ),
    searchSync: (index, queries, k) => index.searchSync(queries, k, { nprobe: k <= 10 ? partial : 16, refineFactor: 8 }),
    tolerance: (scores) => 2e-4 * Math.max(1, ...Array.from(scores, (v) => (Number.isFinite(v) ? Math.abs(v) : 0))),
  };
}

describe('mutation references (CPU against CPU, the GPU checks below use them)', () => {
  it('FlatIndex: a fresh index of the live vectors and a twin that took the same steps agree', async () => {
    expect(await runMutationSequence(flatScenario('cpu', 'l2', 'f16'), 3)).toBeGreaterThan(0);
  });

  it('IvfPqIndex: two indexes trained on one sample with one seed agree after the same steps', async () => {
    expect(await runMutationSequence(ivfpqScenario('cpu', 'ip', 'f16'), 4)).toBeGreaterThan(0);
  }, 60_000);
});

describe.skipIf(!info.available)('mutations on the GPU', () => {
  for (const storage of ['f32', 'f16', 'bf16'] as const) {
    it.each(METRICS)(`FlatIndex ${storage} %s: remove, upsert, get, has and compact answer as the CPU does`, async (metric) => {
      expect(await runMutationSequence(flatScenario('cuda', metric, storage), 11)).toBeGreaterThan(0);
    });
  }

  for (const refine of ['none', 'f16', 'f32'] as const) {
    it.each(METRICS)(`IvfPqIndex 8-bit refine ${refine} %s: the same, with the CPU twin in step`, async (metric) => {
      expect(await runMutationSequence(ivfpqScenario('cuda', metric, refine), 13)).toBeGreaterThan(0);
    }, 60_000);
  }

  it('FlatIndex: attribute records follow upserts, filters see removes, ids in filters resolve', async () => {
    const dim = 8;
    const schema = { color: 'category' } as const;
    using gpu = new FlatIndex({ dim, device: 'cuda', attributes: schema });
    using cpu = new FlatIndex({ dim, attributes: schema });
    const data = randomVectors(300, dim, 91);
    const ids = makeIds(300);
    const colors = ids.map((_, i) => ({ color: i % 3 === 0 ? 'red' : 'blue' }));
    for (const index of [gpu, cpu]) {
      await index.add(ids, data, { attributes: colors });
      await index.upsert(ids.slice(0, 30), randomVectors(30, dim, 92), { attributes: ids.slice(0, 30).map(() => ({ color: 'green' })) });
      await index.remove(ids.slice(30, 60));
    }
    await gpu.compact();
    const queries = randomVectors(4, dim, 93);
    for (const filter of [{ color: 'green' }, { color: 'red' }, { id: { in: [ids[0]!, ids[31]!, ids[99]!] } }] as const) {
      const expected = await cpu.search(queries, 20, { filter });
      const actual = await gpu.search(queries, 20, { filter });
      expectSameResults(expected, actual, 1e-4, JSON.stringify(filter, (_, v) => (typeof v === 'bigint' ? `${v}` : v)));
    }
  });

  it('the GPU classes report their host bytes to V8 after every write, and 0 after dispose', async () => {
    const addon = requireCuda();
    const dim = 16;
    const ids = BigUint64Array.from(makeIds(3000));
    const data = randomVectors(3000, dim, 95);
    const flat = new addon.GpuFlatIndex(dim, 'ip', 'f32', 0);
    flat.addSync(ids.subarray(0, 10), data.subarray(0, 10 * dim));
    expect(flat.externalBytes()).toBe(flat.hostBytes());
    await flat.addAsync(ids.subarray(10), data.subarray(10 * dim));
    expect(flat.externalBytes()).toBe(flat.hostBytes());
    await flat.removeAsync(ids.subarray(0, 2000));
    expect(flat.externalBytes()).toBe(flat.hostBytes());
    await flat.upsertAsync(ids.subarray(2000, 2100), data.subarray(0, 100 * dim));
    expect(flat.externalBytes()).toBe(flat.hostBytes());
    await flat.compactAsync();
    expect(flat.externalBytes()).toBe(flat.hostBytes());
    flat.dispose();
    expect(flat.externalBytes()).toBe(0);
    const ivf = new addon.GpuIvfPqIndex(dim, 'l2', 8, 4, 8, false, 'f16', 0, 0);
    await ivf.trainAsync(data, 1, 3, undefined);
    await ivf.addAsync(ids, data);
    const hostBytes = () => ivf.memory().hostBytes;
    expect(ivf.externalBytes()).toBe(hostBytes());
    await ivf.removeAsync(ids.subarray(0, 2000));
    expect(ivf.externalBytes()).toBe(hostBytes());
    await ivf.upsertAsync(ids.subarray(2000, 2100), data.subarray(0, 100 * dim));
    expect(ivf.externalBytes()).toBe(hostBytes());
    await ivf.compactAsync();
    expect(ivf.externalBytes()).toBe(hostBytes());
    ivf.dispose();
    expect(ivf.externalBytes()).toBe(0);
  });

  it('FlatIndex: reports host memory to V8 through writes and compaction, and frees device memory', async () => {
    const dim = 64;
    using index = new FlatIndex({ dim, device: 'cuda' });
    const ids = makeIds(20_000);
    await index.add(ids, randomVectors(20_000, dim, 94));
    const before = index.memoryUsage();
    await index.remove(ids.slice(0, 15_000));
    expect(index.memoryUsage().hostBytes).toBeGreaterThan(0);
    expect(await index.compact()).toBe(15_000);
    const after = index.memoryUsage();
    expect(after.deviceBytes).toBeLessThan(before.deviceBytes / 2);
    expect(index.size).toBe(5000);
  });
});
