import { spawnSync } from 'node:child_process';

import { afterAll, describe, expect, it } from 'vitest';

import {
  FlatIndex,
  HnswIndex,
  InvalidArgumentError,
  IvfPqIndex,
  configure,
  hardwareThreads,
  threadCount,
  type SearchResult,
} from '../lib/index.js';
import { clustered } from './datasets.js';
import { makeIds, randomVectors } from './helpers.js';

// configure() changes the process-wide pool: put the size this file found back at the end.
const initial = threadCount();
afterAll(() => configure({ threads: initial }));

function runChild(env: Record<string, string>, script: string): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
  });
}

function expectIdentical(a: SearchResult, b: SearchResult, label: string): void {
  expect(Array.from(b.ids), label).toEqual(Array.from(a.ids));
  expect(Array.from(b.scores), label).toEqual(Array.from(a.scores));
}

describe('the native thread pool', () => {
  it('starts at EBRIX_THREADS or the hardware threads', () => {
    const fromEnv = process.env.EBRIX_THREADS;
    expect(initial).toBe(fromEnv === undefined ? hardwareThreads() : Number(fromEnv));
    const child = runChild(
      { EBRIX_THREADS: '3' },
      `const { threadCount, FlatIndex } = await import('./lib/index.ts');
       console.log(threadCount(), new FlatIndex({ dim: 4 }).threads, new FlatIndex({ dim: 4, threads: 2 }).threads);`,
    );
    expect(child.status, child.stderr).toBe(0);
    expect(child.stdout.trim()).toBe('3 3 2');
  });

  it('reports an unusable EBRIX_THREADS as EBRIX_INVALID_ARGUMENT on first use', () => {
    for (const value of ['0', 'many', '4097', '2.5']) {
      const child = runChild(
        { EBRIX_THREADS: value },
        `const { FlatIndex } = await import('./lib/index.ts');
         try { new FlatIndex({ dim: 4 }); console.log('no error'); } catch (e) { console.log(e.code, e.message); }`,
      );
      expect(child.status, child.stderr).toBe(0);
      expect(child.stdout.trim()).toBe(
        `EBRIX_INVALID_ARGUMENT Expected an integer from 1 to 4096 for EBRIX_THREADS but received '${value}'`,
      );
    }
  });

  it('rejects invalid sizes with a typed error and keeps the size it had', () => {
    configure({ threads: 2 });
    for (const bad of [0, -1, 1.5, 4097, Number.NaN, '4', null]) {
      expect(() => configure({ threads: bad as number }), String(bad)).toThrow(InvalidArgumentError);
    }
    expect(() => configure({ threads: 0 })).toThrow('Expected an integer from 1 to 4096 for threads but received 0');
    expect(() => configure(null as never)).toThrow(InvalidArgumentError);
    expect(threadCount()).toBe(2);
    configure({}); // nothing to change
    expect(threadCount()).toBe(2);
  });

  it('is followed by indexes made without threads, and caps the ones given threads', async () => {
    const dim = 16;
    const data = clustered(600, dim, 8, 1);
    configure({ threads: 2 });
    using flat = new FlatIndex({ dim });
    using flatThree = new FlatIndex({ dim, threads: 3 });
    using hnsw = new HnswIndex({ dim });
    using ivfpq = new IvfPqIndex({ dim, nlist: 4, m: 4 });
    await ivfpq.train(data);
    expect([flat.threads, flatThree.threads, hnsw.threads, ivfpq.threads]).toEqual([2, 2, 2, 2]);
    configure({ threads: 5 });
    expect(threadCount()).toBe(5);
    expect([flat.threads, flatThree.threads, hnsw.threads, ivfpq.threads]).toEqual([5, 3, 5, 5]);
    configure({ threads: 1 });
    expect([flat.threads, flatThree.threads, hnsw.threads, ivfpq.threads]).toEqual([1, 1, 1, 1]);
  });

  it('gives the same results at every size', async () => {
    const dim = 24;
    const n = 20_000;
    const data = randomVectors(n, dim, 2);
    const queries = randomVectors(64, dim, 3);
    using flat = new FlatIndex({ dim, metric: 'l2' });
    await flat.add(makeIds(n), data);
    using ivfpq = new IvfPqIndex({ dim, nlist: 32, m: 8, refine: 'f32' });
    await ivfpq.train(data.subarray(0, 5000 * dim), { seed: 1 });
    await ivfpq.add(makeIds(n), data);
    configure({ threads: 1 });
    const flatOne = await flat.search(queries, 20);
    const ivfOne = await ivfpq.search(queries, 20, { nprobe: 8 });
    for (const threads of [2, 3, 8, 1]) {
      configure({ threads });
      expectIdentical(flatOne, await flat.search(queries, 20), `flat at ${threads}`);
      expectIdentical(flatOne, flat.searchSync(queries, 20), `flat sync at ${threads}`);
      expectIdentical(ivfOne, await ivfpq.search(queries, 20, { nprobe: 8 }), `ivfpq at ${threads}`);
    }
  });

  it('resizes while searches and adds are in flight, dropping nothing', async () => {
    const dim = 32;
    const n = 30_000;
    const data = randomVectors(n, dim, 4);
    const queries = randomVectors(16, dim, 5);
    using index = new FlatIndex({ dim, metric: 'l2' });
    await index.add(makeIds(n), data);
    configure({ threads: 4 });
    const expected = await index.search(queries, 10);
    const searches: Promise<SearchResult>[] = [];
    const adds: Promise<void>[] = [];
    const sizes = [1, 6, 2, 8, 3, 1, 5];
    for (let round = 0; round < 28; round++) {
      searches.push(index.search(queries, 10));
      // Far from every query (ids above n): the results must not change.
      const far = new Float32Array(dim).fill(-50);
      if (round % 4 === 0) adds.push(index.add([BigInt(n + round)], far));
      configure({ threads: sizes[round % sizes.length]! });
      await new Promise((resolve) => setImmediate(resolve));
    }
    const results = await Promise.all(searches);
    await Promise.all(adds);
    for (const [i, result] of results.entries()) expectIdentical(expected, result, `search ${i}`);
    expect(index.size).toBe(n + 7);
    expect(threadCount()).toBe(sizes[27 % sizes.length]);
  });
});
