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
});
