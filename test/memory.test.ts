import { describe, expect, it } from 'vitest';

import { native } from '../lib/native.js';
import { makeIds, randomVectors } from './helpers.js';

// Node's process.memoryUsage() does not show what addons report with
// napi_adjust_external_memory, so the tests read the bytes each index last reported.
describe('native memory reported to V8', () => {
  it('follows FlatIndex adds, sync and async, and leaves out mapped rows', async () => {
    const dim = 64;
    const index = new (native().FlatIndex)(dim, 'ip', undefined, 1, 'f32');
    expect(index.externalBytes()).toBe(0);
    index.add(new BigUint64Array([1n, 2n]), randomVectors(2, dim, 1));
    expect(index.externalBytes()).toBe(index.memoryBytes());
    const n = 5000;
    await index.addAsync(BigUint64Array.from(makeIds(n), (id) => id + 10n), randomVectors(n, dim, 2));
    expect(index.externalBytes()).toBe(index.memoryBytes());
    expect(index.externalBytes()).toBeGreaterThanOrEqual(n * dim * 4);
    index.dispose();
  });

  it('follows IvfPqIndex adds', async () => {
    const dim = 16;
    const index = new (native().IvfPqIndex)(dim, 'l2', 4, 4, 8, false, 'f32', undefined, 1);
    const data = randomVectors(1000, dim, 3);
    await index.trainAsync(data, 1, 3, undefined);
    await index.addAsync(BigUint64Array.from(makeIds(1000)), data);
    expect(index.externalBytes()).toBe(index.memory().bytes);
    expect(index.externalBytes()).toBeGreaterThanOrEqual(1000 * dim * 4);
    index.dispose();
  });

  it('follows FlatIndex removes, upserts and compactions, and drops to 0 on dispose', async () => {
    const dim = 32;
    const index = new (native().FlatIndex)(dim, 'ip', undefined, 0, 'f32');
    const ids = BigUint64Array.from(makeIds(4000));
    await index.addAsync(ids, randomVectors(4000, dim, 4));
    const added = index.externalBytes();
    expect(added).toBe(index.memoryBytes());
    await index.removeAsync(ids.subarray(0, 3000));
    expect(index.externalBytes()).toBe(index.memoryBytes());
    await index.upsertAsync(ids.subarray(3000, 3100), randomVectors(100, dim, 5));
    expect(index.externalBytes()).toBe(index.memoryBytes());
    expect(await index.compactAsync()).toBe(3100);
    expect(index.externalBytes()).toBe(index.memoryBytes());
    expect(index.externalBytes()).toBeLessThan(added / 2);
    index.remove(ids.subarray(3100, 3200));
    expect(index.externalBytes()).toBe(index.memoryBytes());
    index.dispose();
    expect(index.externalBytes()).toBe(0);
  });

  it('follows IvfPqIndex removes, upserts and compactions, and drops to 0 on dispose', async () => {
    const dim = 16;
    const index = new (native().IvfPqIndex)(dim, 'l2', 4, 4, 8, false, 'f32', undefined, 1);
    const data = randomVectors(2000, dim, 6);
    const ids = BigUint64Array.from(makeIds(2000));
    await index.trainAsync(data, 1, 3, undefined);
    await index.addAsync(ids, data);
    const added = index.externalBytes();
    await index.removeAsync(ids.subarray(0, 1500));
    expect(index.externalBytes()).toBe(index.memory().bytes);
    await index.upsertAsync(ids.subarray(1500, 1600), data.subarray(0, 100 * dim));
    expect(index.externalBytes()).toBe(index.memory().bytes);
    await index.compactAsync();
    expect(index.externalBytes()).toBe(index.memory().bytes);
    expect(index.externalBytes()).toBeLessThan(added / 2);
    index.dispose();
    expect(index.externalBytes()).toBe(0);
  });

  it('follows HnswIndex adds, upserts and removes, and drops to 0 on dispose', async () => {
    const dim = 16;
    const index = new (native().HnswIndex)(dim, 'ip', 16, 64, 32, 'f32', undefined, 1);
    expect(index.externalBytes()).toBe(index.memoryBytes());
    const ids = BigUint64Array.from(makeIds(2000));
    index.add(ids.subarray(0, 10), randomVectors(10, dim, 7));
    expect(index.externalBytes()).toBe(index.memoryBytes());
    await index.addAsync(ids.subarray(10), randomVectors(1990, dim, 8));
    expect(index.externalBytes()).toBe(index.memoryBytes());
    expect(index.externalBytes()).toBeGreaterThanOrEqual(2000 * dim * 4);
    await index.upsertAsync(ids.subarray(0, 100), randomVectors(100, dim, 9));
    expect(index.externalBytes()).toBe(index.memoryBytes());
    await index.removeAsync(ids.subarray(100, 1000));
    expect(index.externalBytes()).toBe(index.memoryBytes());
    index.remove(ids.subarray(1000, 1100));
    expect(index.externalBytes()).toBe(index.memoryBytes());
    index.dispose();
    expect(index.externalBytes()).toBe(0);
  });
});
