import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

import {
  CorruptFileError,
  FlatIndex,
  InvalidArgumentError,
  IoError,
  IvfPqIndex,
  VersionMismatchError,
  type Metric,
  type VectorStorage,
} from '../lib/index.js';
import { clustered } from './datasets.js';
import { makeIds, randomVectors } from './helpers.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dir = mkdtempSync(path.join(tmpdir(), 'ebrix-persist-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function built(dim: number, n: number, metric: Metric, storage: VectorStorage, seed: number): Promise<FlatIndex> {
  const index = new FlatIndex({ dim, metric, storage, modelVersion: 'model-a' });
  const data = randomVectors(n, dim, seed);
  if (storage === 'i8') await index.train(data);
  await index.add(makeIds(n), data);
  return index;
}

describe('FlatIndex save and open', () => {
  it('round-trips every storage and metric, mapped or read, with the model version', async () => {
    const dim = 24;
    const queries = randomVectors(7, dim, 3);
    for (const storage of ['f32', 'f16', 'bf16', 'i8'] as const) {
      for (const metric of ['ip', 'cosine', 'l2'] as const) {
        using index = await built(dim, 800, metric, storage, 1);
        const file = path.join(dir, `${storage}-${metric}.ebrix`);
        await index.save(file);
        const expected = await index.search(queries, 10);
        for (const mmap of [true, false]) {
          using opened = await FlatIndex.open(file, { mmap });
          expect(opened.dim).toBe(dim);
          expect(opened.metric).toBe(metric);
          expect(opened.storage).toBe(storage);
          expect(opened.size).toBe(800);
          expect(opened.modelVersion).toBe('model-a');
          const got = await opened.search(queries, 10);
          expect(got.ids).toEqual(expected.ids);
          expect(got.scores).toEqual(expected.scores);
          expect(opened.memoryUsage().mappedBytes > 0).toBe(mmap);
          expect(() => opened.bindModelVersion('model-b')).toThrow(VersionMismatchError);
        }
      }
    }
  });

  it('copies a mapped index into memory at the first add, keeping the file ids unique', async () => {
    const dim = 16;
    using index = await built(dim, 500, 'l2', 'f32', 5);
    const file = path.join(dir, 'mapped.ebrix');
    await index.save(file);
    using opened = await FlatIndex.open(file);
    expect(opened.memoryUsage().mappedBytes).toBe(500 * (dim * 4 + 4 + 8));
    await expect(opened.add([makeIds(500)[3]!], randomVectors(1, dim, 6))).rejects.toThrow('duplicate id');
    const extra = randomVectors(1, dim, 7);
    await opened.add([123456789n], extra);
    expect(opened.size).toBe(501);
    expect(opened.memoryUsage().mappedBytes).toBe(0);
    expect((await opened.search(extra, 1)).row(0).ids[0]).toBe(123456789n);
  });

  it('reports missing, foreign, truncated and damaged files with typed errors', async () => {
    await expect(FlatIndex.open(path.join(dir, 'none.ebrix'))).rejects.toThrow(IoError);
    const foreign = path.join(dir, 'foreign.ebrix');
    writeFileSync(foreign, 'not an index at all, just some text that is long enough to look like a header '.repeat(4));
    await expect(FlatIndex.open(foreign)).rejects.toThrow(CorruptFileError);
    using index = await built(8, 300, 'ip', 'f16', 9);
    const file = path.join(dir, 'damaged.ebrix');
    await index.save(file);
    const bytes = readFileSync(file);
    truncateSync(file, bytes.length - 5);
    await expect(FlatIndex.open(file)).rejects.toThrow(CorruptFileError);
    const flipped = Buffer.from(bytes);
    flipped[bytes.length - 100]! ^= 0x40; // inside the ids: checked even when mapped
    writeFileSync(file, flipped);
    await expect(FlatIndex.open(file)).rejects.toThrow(CorruptFileError);
    const rowsFlipped = Buffer.from(bytes);
    rowsFlipped[600]! ^= 0x01; // inside the rows: found by verify, or by a read open
    writeFileSync(file, rowsFlipped);
    await expect(FlatIndex.open(file, { verify: true })).rejects.toThrow('checksum');
    await expect(FlatIndex.open(file, { mmap: false })).rejects.toThrow(CorruptFileError);
    await expect(FlatIndex.open(file, { mmap: 'yes' as never })).rejects.toThrow(InvalidArgumentError);
  });

  it('leaves the previous file whole when a save fails', async () => {
    using first = await built(8, 100, 'ip', 'f32', 11);
    const file = path.join(dir, 'kept.ebrix');
    await first.save(file);
    const before = readFileSync(file);
    using second = await built(8, 200, 'ip', 'f32', 12);
    await expect(second.save(path.join(dir, 'no-such-dir', 'x.ebrix'))).rejects.toThrow(IoError);
    await expect(second.save(dir)).rejects.toThrow(IoError); // a directory is not replaced
    expect(readFileSync(file).equals(before)).toBe(true);
  });

  it('survives a process killed in the middle of saves: the file is always one whole version', async () => {
    // A child process saves a 40 MB index over the same path again and again (each save a
    // different size) and is killed with SIGKILL; the file must then open and verify.
    const file = path.join(dir, 'killed.ebrix');
    const addon = path.join(root, 'build', 'Release', 'ebrix.node');
    const child = `
      const addon = require(${JSON.stringify(addon)});
      const dim = 64;
      (async () => {
        for (let round = 0; ; round++) {
          const n = 100000 + (round % 7) * 20000;
          const index = new addon.FlatIndex(dim, 'ip', undefined, 1, 'f32');
          const ids = new BigUint64Array(n).map((_, i) => BigInt(i));
          const data = new Float32Array(n * dim).map((_, i) => (i % 97) / 97);
          index.add(ids, data);
          await index.saveAsync(${JSON.stringify(file)}, 'round-' + round);
          process.stdout.write('saved ' + round + '\\n');
        }
      })();`;
    const proc = spawn(process.execPath, ['-e', child], { stdio: ['ignore', 'pipe', 'inherit'] });
    let saved = 0;
    await new Promise<void>((resolve) => {
      proc.stdout.on('data', (chunk: Buffer) => {
        saved += chunk.toString().split('\n').filter((l) => l.startsWith('saved')).length;
        // Kill while the third save is being written.
        if (saved === 2) setTimeout(() => proc.kill('SIGKILL'), 150);
      });
      proc.on('exit', () => resolve());
    });
    expect(saved).toBeGreaterThanOrEqual(2);
    using opened = await FlatIndex.open(file, { verify: true });
    expect(opened.modelVersion).toMatch(/^round-\d+$/);
    expect(statSync(file).size).toBeGreaterThan(opened.size * 64 * 4);
  }, 60_000);
});

describe('IvfPqIndex save and open', () => {
  it('round-trips the trained state, lists and refine vectors, and keeps taking adds', async () => {
    const dim = 32;
    const data = clustered(3000, dim, 12, 61);
    const queries = clustered(20, dim, 12, 62);
    for (const [nbits, refine, opq] of [[8, 'none', false], [4, 'f16', true], [8, 'f32', false]] as const) {
      using index = new IvfPqIndex({ dim, metric: 'l2', nlist: 16, m: 8, nbits, refine, opq, modelVersion: 'ivf-a' });
      const file = path.join(dir, `ivf-${nbits}-${refine}.ebrix`);
      await index.save(file); // untrained
      using untrained = await IvfPqIndex.open(file);
      expect(untrained.trained).toBe(false);
      expect(untrained.modelVersion).toBe('ivf-a');
      await index.train(data, { maxIterations: 5 });
      await index.add(makeIds(3000), data);
      await index.save(file);
      using opened = await IvfPqIndex.open(file);
      expect([opened.nlist, opened.m, opened.nbits, opened.refine, opened.opq]).toEqual([16, 8, nbits, refine, opq]);
      expect(opened.size).toBe(3000);
      const a = await index.search(queries, 10, { nprobe: 4 });
      const b = await opened.search(queries, 10, { nprobe: 4 });
      expect(b.ids).toEqual(a.ids);
      expect(b.scores).toEqual(a.scores);
      await expect(opened.add([makeIds(3000)[0]!], data.subarray(0, dim))).rejects.toThrow('duplicate id');
      await opened.add([99n], data.subarray(0, dim));
      expect(opened.size).toBe(3001);
    }
  });

  it('rejects a file of another type, a damaged file and a missing one', async () => {
    using flat = await built(8, 50, 'ip', 'f32', 71);
    const file = path.join(dir, 'flat-not-ivf.ebrix');
    await flat.save(file);
    await expect(IvfPqIndex.open(file)).rejects.toThrow(CorruptFileError);
    await expect(IvfPqIndex.open(path.join(dir, 'missing.ebrix'))).rejects.toThrow(IoError);
    using index = new IvfPqIndex({ dim: 8, nlist: 4, m: 2 });
    const data = clustered(600, 8, 4, 72);
    await index.train(data);
    await index.add(makeIds(600), data);
    const ivf = path.join(dir, 'ivf-damaged.ebrix');
    await index.save(ivf);
    const bytes = readFileSync(ivf);
    bytes[bytes.length - 3]! ^= 0x10;
    writeFileSync(ivf, bytes);
    await expect(IvfPqIndex.open(ivf)).rejects.toThrow(CorruptFileError);
  });
});

