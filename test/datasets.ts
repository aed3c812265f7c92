/** Data sets shared by the approximate-index tests (IvfPqIndex, HnswIndex) and their recall. */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

import type { SearchResult } from '../lib/index.js';
import { rng } from './helpers.js';

/** Gaussian clusters with low-rank spread (as embeddings tend to be), seeded. */
export function clustered(n: number, dim: number, clusters: number, seed: number): Float32Array {
  const rank = 6;
  const gaussian = (next: () => number) => () => {
    const u = Math.max(next(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * next());
  };
  const shared = gaussian(rng(1234)); // centres and bases shared by every seed
  const centres = Float32Array.from({ length: clusters * dim }, () => 0.3 * shared());
  const bases = Float32Array.from({ length: clusters * rank * dim }, () => (0.4 * shared()) / Math.sqrt(rank));
  const next = rng(seed);
  const normal = gaussian(next);
  const out = new Float32Array(n * dim);
  for (let i = 0; i < n; i++) {
    const c = Math.floor(next() * clusters);
    const z = Array.from({ length: rank }, normal);
    for (let d = 0; d < dim; d++) {
      let x = centres[c * dim + d]! + 0.05 * normal();
      for (let j = 0; j < rank; j++) x += z[j]! * bases[(c * rank + j) * dim + d]!;
      out[i * dim + d] = x;
    }
  }
  return out;
}

/** The first `n` digits of the `mnist` package (784-d, values in [0, 1]), digits interleaved. */
export function mnist(n: number): Float32Array {
  const require = createRequire(import.meta.url);
  const dir = join(dirname(require.resolve('mnist/package.json')), 'src', 'digits');
  const dim = 784;
  const perDigit = Array.from({ length: 10 }, (_, d) => (JSON.parse(readFileSync(join(dir, `${d}.json`), 'utf8')) as { data: number[] }).data);
  const out = new Float32Array(n * dim);
  for (let i = 0; i < n; i++) {
    const data = perDigit[i % 10]!;
    const row = Math.floor(i / 10);
    for (let j = 0; j < dim; j++) out[i * dim + j] = data[row * dim + j]!;
  }
  return out;
}

export function recall(truth: SearchResult, got: SearchResult): number {
  let hits = 0;
  for (let q = 0; q < truth.nq; q++) {
    const want = new Set(truth.row(q).ids);
    for (const id of got.row(q).ids) if (want.has(id)) hits++;
  }
  return hits / (truth.nq * truth.k);
}
