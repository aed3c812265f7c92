/**
 * IvfPqIndex under selective filters: recall at 50%, 10%, 1% and 0.1% of rows allowed stays
 * within a small margin of the unfiltered recall at the same nprobe, on every strategy, and
 * only allowed ids come back (checked against the records, filter by filter).
 */
import { describe, expect, it } from 'vitest';

import { FlatIndex, InvalidArgumentError, IvfPqIndex, NO_ID, type IvfPqFilterStrategy } from '../lib/index.js';
import { clustered, recall } from './datasets.js';
import { makeIds, rng } from './helpers.js';

describe('IvfPqIndex filter strategies', () => {
  const dim = 32;
  const n = 20000;
  const k = 10;
  const levels = 10000;
  const data = clustered(n, dim, 40, 31);
  const queries = clustered(40, dim, 40, 32);
  const ids = makeIds(n);
  const next = rng(33);
  const bucket = Uint32Array.from({ length: n }, () => Math.floor(next() * levels));
  const records = Array.from(bucket, (b) => ({ bucket: b }));

  it.each(['none', 'f32'] as const)('refine %s: recall within 0.05 of the unfiltered at 50/10/1/0.1%%', async (refine) => {
    using flat = new FlatIndex({ dim });
    await flat.add(ids, data);
    using index = new IvfPqIndex({ dim, nlist: 64, m: 8, refine, attributes: { bucket: 'uint' } });
    await index.train(data, { maxIterations: 10 });
    await index.add(ids, data, { attributes: records });
    const nprobe = 4;
    const unfiltered = recall(await flat.search(queries, k), await index.search(queries, k, { nprobe }));
    const measured = [`unfiltered ${unfiltered.toFixed(3)}`];
    for (const selectivity of [0.5, 0.1, 0.01, 0.001]) {
      const bound = Math.round(selectivity * levels);
      const allow = new Uint32Array(Math.ceil(n / 32));
      const passing = new Set<bigint>();
      for (let r = 0; r < n; r++) {
        if (bucket[r]! >= bound) continue;
        allow[r >> 5]! |= 1 << (r & 31);
        passing.add(ids[r]!);
      }
      const truth = await flat.search(queries, k, { allow });
      for (const filterStrategy of ['auto', 'probe', 'scan'] as IvfPqFilterStrategy[]) {
        const got = await index.search(queries, k, { nprobe, filter: { bucket: { lt: bound } }, filterStrategy });
        for (const id of got.ids) expect(id === NO_ID || passing.has(id)).toBe(true);
        const r = recall(truth, got);
        measured.push(`${selectivity * 100}% ${filterStrategy} ${r.toFixed(3)}`);
        expect(r, measured.join(', ')).toBeGreaterThanOrEqual(unfiltered - 0.05);
        // Scanning the allowed rows' refine vectors is exact.
        if (refine === 'f32' && filterStrategy === 'scan') expect(got.ids).toEqual(truth.ids);
      }
      // An allow bitset takes the same strategies as a filter.
      const viaAllow = index.searchSync(queries, k, { nprobe, allow, filterStrategy: 'scan' });
      expect(viaAllow.ids).toEqual((await index.search(queries, k, { nprobe, filter: { bucket: { lt: bound } }, filterStrategy: 'scan' })).ids);
    }
    console.info(`IvfPqIndex filtered recall@10, refine ${refine}, nprobe ${nprobe}: ${measured.join(', ')}`);
    await expect(index.search(queries, k, { allow: new Uint32Array(1), filterStrategy: 'walk' as 'scan' })).rejects.toThrow(
      InvalidArgumentError,
    );
  });
});
