/**
 * The token hash behind hashed (`buckets`) features: 32-bit FNV-1a over the UTF-8 bytes of
 * the string.
 *
 * UTF-8 rather than UTF-16 code units so that the native trainer (C++, which holds text as
 * UTF-8 bytes) and any other consumer can reproduce it without transcoding. A lone surrogate,
 * which has no UTF-8 form, is hashed as U+FFFD (bytes EF BF BD), exactly as `TextEncoder` and
 * `Buffer.from(s, 'utf8')` encode it. The bytes are produced on the fly: no buffer is
 * allocated per call.
 *
 * FNV-1a, 32-bit: h = 0x811c9dc5; for each byte b: h = (h XOR b) * 0x01000193 mod 2^32.
 * Published vectors: "" → 0x811c9dc5, "a" → 0xe40c292c, "foobar" → 0xbf9cf968.
 */

/** FNV-1a's initial state (the hash of the empty string). */
export const FNV_OFFSET_BASIS = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** Unsigned 32-bit FNV-1a of the UTF-8 bytes of `token`. */
export function hashToken(token: string): number {
  return continueHash(FNV_OFFSET_BASIS, token, 0, token.length);
}

/**
 * Continues an FNV-1a state over the UTF-8 bytes of `text[start, end)`. Because FNV-1a is a
 * plain left fold over bytes, hashing "new york" equals continuing the state of "new" over
 * " " and then "york": the encoder hashes word n-grams this way without building them.
 */
export function continueHash(state: number, text: string, start: number, end: number): number {
  // ASCII (one byte per code unit) is kept in this small loop so that the optimiser can
  // inline it into the encoder's loops; anything else continues in continueHashUtf8.
  let h = state | 0;
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0x80) return continueHashUtf8(h, text, i, end);
    h = Math.imul(h ^ c, FNV_PRIME);
  }
  return h >>> 0;
}

function continueHashUtf8(state: number, text: string, start: number, end: number): number {
  let h = state;
  for (let i = start; i < end; i++) {
    let c = text.charCodeAt(i);
    if (c < 0x80) {
      h = Math.imul(h ^ c, FNV_PRIME);
      continue;
    }
    if (c < 0x800) {
      h = Math.imul(h ^ (0xc0 | (c >> 6)), FNV_PRIME);
      h = Math.imul(h ^ (0x80 | (c & 0x3f)), FNV_PRIME);
      continue;
    }
    if (c >= 0xd800 && c <= 0xdfff) {
      const next = i + 1 < end ? text.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
        const cp = 0x10000 + ((c - 0xd800) << 10) + (next - 0xdc00);
        h = Math.imul(h ^ (0xf0 | (cp >> 18)), FNV_PRIME);
        h = Math.imul(h ^ (0x80 | ((cp >> 12) & 0x3f)), FNV_PRIME);
        h = Math.imul(h ^ (0x80 | ((cp >> 6) & 0x3f)), FNV_PRIME);
        h = Math.imul(h ^ (0x80 | (cp & 0x3f)), FNV_PRIME);
        i++;
        continue;
      }
      c = 0xfffd; // a lone surrogate has no UTF-8 form; TextEncoder writes U+FFFD
    }
    h = Math.imul(h ^ (0xe0 | (c >> 12)), FNV_PRIME);
    h = Math.imul(h ^ (0x80 | ((c >> 6) & 0x3f)), FNV_PRIME);
    h = Math.imul(h ^ (0x80 | (c & 0x3f)), FNV_PRIME);
  }
  return h >>> 0;
}

/** Continues an FNV-1a state over one byte (the space that joins n-gram words). */
export function continueHashByte(state: number, byte: number): number {
  return Math.imul((state | 0) ^ byte, FNV_PRIME) >>> 0;
}
