/**
 * k-means over float32 vectors, in native code: k-means++ seeding, Lloyd iterations whose
 * assignment step is the exact top-1 search of FlatIndex's kernels, empty clusters re-seeded
 * from the worst-served points, training on a seeded sample when the input is large.
 * Deterministic for a given seed, whatever the thread count.
 */
import { DimensionMismatchError, awaitNative } from './errors.js';
import { METRICS, type Metric } from './index/flat.js';
import { SIMD_LEVELS, type SimdLevel } from './machine.js';
import { native } from './native.js';
import { invalid, requireNonNegativeInteger, requireOneOf, requirePositiveInteger } from './validate.js';

export interface KMeansOptions {
  /** Lloyd iterations at most (default 25). */
  maxIterations?: number;
  /** Stop when an iteration improves the objective by less than this fraction (default 1e-4). */
  tolerance?: number;
  /** Seed of the sample and of the k-means++ draws (default 1). */
  seed?: number;
  /** Train on at most k × this many points, a seeded sample (default 256; 0 = all points). */
  maxPointsPerCentroid?: number;
  /** 'l2' (default): squared distances. 'ip' / 'cosine': spherical k-means, unit-norm centroids. */
  metric?: Metric;
  threads?: number;
  simd?: SimdLevel;
  /** k × dim starting centroids (a warm start) instead of k-means++ seeding. */
  initialCentroids?: Float32Array;
}

export interface KMeansResult {
  /** k × dim. */
  centroids: Float32Array;
  /** Sum over the training points of the squared distance (l2) or 1 − inner product to their centroid. */
  objective: number;
  iterations: number;
  trainingPoints: number;
  /** Empty clusters re-seeded over all iterations. */
  reseeded: number;
}

export async function kmeans(vectors: Float32Array, dim: number, k: number, options: KMeansOptions = {}): Promise<KMeansResult> {
  if (!(vectors instanceof Float32Array)) throw invalid('a Float32Array', 'vectors', vectors);
  requirePositiveInteger(dim, 'dim', 1 << 20);
  if (vectors.length % dim !== 0) {
    throw new DimensionMismatchError(`Expected a multiple of dim ${dim} floats for vectors but received ${vectors.length}`);
  }
  const count = vectors.length / dim;
  requirePositiveInteger(k, 'k', Math.max(1, count));
  if (k > count) throw invalid(`a k of at most the number of vectors (${count})`, 'k', k);
  const settings: Record<string, unknown> = {};
  if (options.maxIterations !== undefined) settings.maxIterations = requireNonNegativeInteger(options.maxIterations, 'maxIterations');
  if (options.tolerance !== undefined) {
    if (typeof options.tolerance !== 'number' || !(options.tolerance >= 0)) {
      throw invalid('a non-negative number', 'tolerance', options.tolerance);
    }
    settings.tolerance = options.tolerance;
  }
  if (options.seed !== undefined) settings.seed = requireNonNegativeInteger(options.seed, 'seed');
  if (options.maxPointsPerCentroid !== undefined) {
    settings.maxPointsPerCentroid = requireNonNegativeInteger(options.maxPointsPerCentroid, 'maxPointsPerCentroid');
  }
  if (options.metric !== undefined) settings.metric = requireOneOf(options.metric, METRICS, 'metric');
  if (options.threads !== undefined) settings.threads = requirePositiveInteger(options.threads, 'threads', 4096);
  if (options.simd !== undefined) settings.simd = requireOneOf(options.simd, SIMD_LEVELS, 'simd');
  if (options.initialCentroids !== undefined) {
    if (!(options.initialCentroids instanceof Float32Array) || options.initialCentroids.length !== k * dim) {
      throw invalid(`a Float32Array of k × dim = ${k * dim} floats`, 'initialCentroids', options.initialCentroids);
    }
    settings.initialCentroids = options.initialCentroids;
  }
  return awaitNative(native().kmeans(vectors, dim, k, settings));
}
