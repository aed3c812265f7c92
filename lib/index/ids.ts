/**
 * Ids are unsigned 64-bit integers, accepted as number[] / bigint[] / Uint32Array /
 * BigUint64Array. 2^64-1 is reserved: it pads result rows that have fewer than k hits.
 */
import { invalid } from '../validate.js';

export type Ids = BigUint64Array | Uint32Array | readonly (number | bigint)[];

/** The id of padding entries in search results (2^64 - 1). */
export const NO_ID = 0xffff_ffff_ffff_ffffn;

export function toIdArray(ids: unknown, name = 'ids'): BigUint64Array {
  if (ids instanceof BigUint64Array) return ids;
  if (ids instanceof Uint32Array) {
    const out = new BigUint64Array(ids.length);
    for (let i = 0; i < ids.length; i++) out[i] = BigInt(ids[i]!);
    return out;
  }
  if (!Array.isArray(ids)) {
    throw invalid('a number[], bigint[], Uint32Array or BigUint64Array', name, ids);
  }
  const out = new BigUint64Array(ids.length);
  for (let i = 0; i < ids.length; i++) {
    const id: unknown = ids[i];
    if (typeof id === 'number') {
      if (!Number.isSafeInteger(id) || id < 0) throw invalid('a non-negative safe integer', `${name}[${i}]`, id);
      out[i] = BigInt(id);
    } else if (typeof id === 'bigint') {
      if (id < 0n || id >= NO_ID) throw invalid('a bigint from 0 to 2^64-2', `${name}[${i}]`, id);
      out[i] = id;
    } else {
      throw invalid('a number or bigint', `${name}[${i}]`, id);
    }
  }
  return out;
}
