import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

import { DimensionMismatchError, InvalidArgumentError, InvalidVectorError, kmeans, supportedSimdLevels } from '../lib/index.js';
import { rng } from './helpers.js';

/** The 10,000 MNIST digits of the `mnist` package with their labels. */
function mnist(): { vectors: Float32Array; labels: Uint8Array } {
  const dir = path.dirname(createRequire(import.meta.url).resolve('mnist/package.json'));
  const rows: number[][] = [];
  const labels: number[] = [];
  for (let digit = 0; digit < 10; digit++) {
    const data = (JSON.parse(readFileSync(path.join(dir, 'src', 'digits', `${digit}.json`), 'utf8')) as { data: number[] }).data;
    for (let start = 0; start < data.length; start += 784) {
      rows.push(data.slice(start, start + 784));
      labels.push(digit);
    }
  }
  const vectors = new Float32Array(rows.length * 784);
  rows.forEach((row, i) => vectors.set(row, i * 784));
  return { vectors, labels: Uint8Array.from(labels) };
}

function nearest(point: Float32Array, centroids: Float32Array, dim: number): number {
  let best = 0;
  let bestDistance = Infinity;
  for (let c = 0; c < centroids.length / dim; c++) {
    let d = 0;
    for (let j = 0; j < dim; j++) d += (point[j]! - centroids[c * dim + j]!) ** 2;
    if (d < bestDistance) {
      bestDistance = d;
      best = c;
    }
  }
  return best;
}

describe('kmeans', () => {
  it('clusters MNIST digits far better than chance, and iterating helps', async () => {
    const { vectors, labels } = mnist();
    const dim = 784;
    const result = await kmeans(vectors, dim, 10, { seed: 3, maxPointsPerCentroid: 0 });
    expect(result.centroids.length).toBe(10 * dim);
    expect(result.trainingPoints).toBe(10_000);
    // Purity: each cluster votes for its most common digit.
    const votes = Array.from({ length: 10 }, () => new Array<number>(10).fill(0));
    for (let i = 0; i < labels.length; i++) {
      votes[nearest(vectors.subarray(i * dim, (i + 1) * dim), result.centroids, dim)]![labels[i]!]!++;
    }
    const purity = votes.reduce((sum, v) => sum + Math.max(...v), 0) / labels.length;
    expect(purity).toBeGreaterThan(0.45); // chance is 0.1
    const oneStep = await kmeans(vectors, dim, 10, { seed: 3, maxPointsPerCentroid: 0, maxIterations: 1 });
    expect(result.objective).toBeLessThan(oneStep.objective);
  });

  it('is deterministic for a seed, across thread counts and SIMD levels up to rounding', async () => {
    const next = rng(5);
    const dim = 24;
    const vectors = Float32Array.from({ length: 6000 * dim }, () => next() * 2 - 1);
    const a = await kmeans(vectors, dim, 32, { seed: 9, threads: 1 });
    const b = await kmeans(vectors, dim, 32, { seed: 9, threads: 2 });
    expect(Array.from(b.centroids)).toEqual(Array.from(a.centroids));
    const c = await kmeans(vectors, dim, 32, { seed: 10 });
    expect(Array.from(c.centroids)).not.toEqual(Array.from(a.centroids));
    for (const simd of supportedSimdLevels()) {
      const r = await kmeans(vectors, dim, 32, { seed: 9, simd });
      expect(Math.abs(r.objective - a.objective) / a.objective).toBeLessThan(0.02);
    }
  });

  it('trains on a seeded sample of large inputs, and runs off the event loop', async () => {
    const next = rng(6);
    const dim = 64;
    const vectors = Float32Array.from({ length: 60_000 * dim }, () => next());
    let ticks = 0;
    let settled = false;
    const timer = setInterval(() => {
      if (!settled) ticks++;
    }, 1);
    const result = await kmeans(vectors, dim, 100, { maxPointsPerCentroid: 300, threads: 1 }).finally(() => (settled = true));
    clearInterval(timer);
    expect(result.trainingPoints).toBe(30_000);
    expect(ticks).toBeGreaterThanOrEqual(2);
  });

  it('gives unit-norm centroids for cosine (spherical k-means)', async () => {
    const next = rng(7);
    const vectors = Float32Array.from({ length: 2000 * 8 }, () => next() - 0.5);
    const { centroids } = await kmeans(vectors, 8, 6, { metric: 'cosine' });
    for (let c = 0; c < 6; c++) {
      const norm = Math.hypot(...centroids.subarray(c * 8, (c + 1) * 8));
      expect(norm).toBeCloseTo(1, 5);
    }
  });

  it('rejects bad input', async () => {
    const v = new Float32Array(40);
    await expect(kmeans(v, 3, 2)).rejects.toThrow(DimensionMismatchError);
    await expect(kmeans(v, 4, 11)).rejects.toThrow(InvalidArgumentError);
    await expect(kmeans(v, 4, 0)).rejects.toThrow(InvalidArgumentError);
    await expect(kmeans(v, 4, 2, { tolerance: -1 })).rejects.toThrow(/tolerance/);
    await expect(kmeans(v, 4, 2, { metric: 'hamming' as never })).rejects.toThrow(/metric/);
    v[7] = Number.NaN;
    await expect(kmeans(v, 4, 2)).rejects.toThrow(InvalidVectorError);
  });
});
