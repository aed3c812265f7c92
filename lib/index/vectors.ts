/**
 * Vectors arrive as one row-major Float32Array (n × dim) or as an array of rows; the
 * native layer always takes the former.
 */
import { DimensionMismatchError } from '../errors.js';
import { describe, invalid } from '../validate.js';
import { toIdArray, type Ids } from './ids.js';

export type Vectors = Float32Array | readonly (Float32Array | readonly number[])[];

/** Flattens `vectors` to n × dim floats, checking every row has `dim` values. */
export function toMatrix(vectors: unknown, dim: number, name: string): Float32Array {
  if (vectors instanceof Float32Array) {
    if (vectors.length % dim !== 0) {
      throw new DimensionMismatchError(
        `Expected a multiple of dim ${dim} floats for ${name} but received ${describe(vectors)}`,
      );
    }
    return vectors;
  }
  if (!Array.isArray(vectors)) {
    throw invalid('a Float32Array or an array of Float32Array', name, vectors);
  }
  const out = new Float32Array(vectors.length * dim);
  // A plain loop, not forEach: a hole in a sparse array must fail, not become a zero vector.
  for (let i = 0; i < vectors.length; i++) {
    const row: unknown = vectors[i];
    if (!(row instanceof Float32Array) && !Array.isArray(row)) {
      throw invalid('a Float32Array or number[]', `${name}[${i}]`, row);
    }
    if (row.length !== dim) {
      throw new DimensionMismatchError(`Expected ${dim} values for ${name}[${i}] but received ${row.length}`);
    }
    out.set(row as ArrayLike<number>, i * dim);
  }
  return out;
}

/** The ids and the n × dim floats of an add, checked against each other. */
export function toAddArgs(ids: Ids, vectors: Vectors, dim: number): [BigUint64Array, Float32Array] {
  const idArray = toIdArray(ids);
  const matrix = toMatrix(vectors, dim, 'vectors');
  if (matrix.length !== idArray.length * dim) {
    throw new DimensionMismatchError(
      `Expected ${idArray.length * dim} floats for vectors (${idArray.length} ids × dim ${dim}) but received ${matrix.length}`,
    );
  }
  return [idArray, matrix];
}
