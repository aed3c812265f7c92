/**
 * The word splitter behind text features, shared by the encoder, the trainer and the tests.
 *
 * tokenize(text): Unicode NFKC normalisation, then `toLowerCase()` (locale-independent), then
 * every maximal run of letters, marks and digits (`\p{L}\p{M}\p{N}`) is a token; anything else
 * (spaces, punctuation, symbols, emoji) only separates tokens. So 'Crème BRÛLÉE!' gives
 * ['crème', 'brûlée'], 'ﬁne' (the ligature) gives ['fine'], and 'a🙂b' gives ['a', 'b'].
 *
 * textTerms adds terms: all unigrams first; then, with a prefix length P, the first P code
 * points of every token longer than that (a truncation stem: 'striped' and 'stripes' both
 * give 'strip', which is also the word 'strip'); then every bigram (two consecutive tokens
 * joined by one space), then every trigram; and keeps the first `maxLength` of that list.
 *
 * Pure-ASCII text, the common case on the request path, is already NFKC-stable and its only
 * letters and digits are [A-Za-z0-9], so it skips normalisation. No text is run through a
 * Unicode-property regular expression: each code point is classified once, with the same
 * \p{L}\p{M}\p{N} class, and remembered, so the scan is a table lookup per code unit. The
 * tests check the result against the plain regular-expression definition.
 */
import { invalid } from '../validate.js';

const ASCII_WORD = new Uint8Array(128);
for (let c = 0x30; c <= 0x39; c++) ASCII_WORD[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) ASCII_WORD[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) ASCII_WORD[c] = 1;

const WORD_CHAR = /^[\p{L}\p{M}\p{N}]$/u;
const UNKNOWN = 0;
const WORD = 1;
const SEPARATOR = 2;
/**
 * Per code point: UNKNOWN until first seen, then WORD or SEPARATOR. Running the Unicode
 * property regex over whole texts costs ~150 ns a token; asking it once per distinct code
 * point and remembering the answer makes non-ASCII text nearly as cheap as ASCII. 1.1 MB,
 * allocated on the first non-ASCII text.
 */
let codePointClass: Uint8Array | undefined;

function isWordCodePoint(cp: number): boolean {
  codePointClass ??= new Uint8Array(0x110000);
  let kind = codePointClass[cp]!;
  if (kind === UNKNOWN) {
    kind = WORD_CHAR.test(String.fromCodePoint(cp)) ? WORD : SEPARATOR;
    codePointClass[cp] = kind;
  }
  return kind === WORD;
}

/**
 * Token boundaries of one text, in buffers reused from text to text so that finding tokens
 * allocates no per-token objects. `starts[i]..ends[i]` index into `text`, the normalised,
 * lower-cased form of the input.
 */
export class TokenSpans {
  text = '';
  count = 0;
  starts = new Int32Array(16);
  ends = new Int32Array(16);
  #sawUpper = false;

  /**
   * Normalises `raw` and records its first `limit` tokens. Later tokens are never needed: a
   * text feature keeps `maxLength` terms, and n-grams are only reached when the unigrams fall
   * short of that.
   */
  scan(raw: string, limit: number): this {
    this.count = 0;
    this.#sawUpper = false;
    if (this.#scanAscii(raw, limit)) {
      // Lower-cased text is common on the request path: then there is nothing to copy.
      this.text = this.#sawUpper ? raw.toLowerCase() : raw;
      return this;
    }
    this.count = 0;
    this.text = raw.normalize('NFKC').toLowerCase();
    this.#scanUnicode(this.text, limit);
    return this;
  }

  token(i: number): string {
    return this.text.slice(this.starts[i], this.ends[i]);
  }

  /** Returns false, part-way, at the first non-ASCII code unit. */
  #scanAscii(raw: string, limit: number): boolean {
    const n = raw.length;
    let start = -1;
    for (let i = 0; i < n; i++) {
      const c = raw.charCodeAt(i);
      if (c >= 0x80) return false;
      if (c >= 0x41 && c <= 0x5a) this.#sawUpper = true;
      if (ASCII_WORD[c] === 1) {
        if (start < 0) start = i;
      } else if (start >= 0) {
        if (this.count < limit) this.#push(start, i);
        start = -1;
      }
    }
    if (start >= 0 && this.count < limit) this.#push(start, n);
    return true;
  }

  /** Code point by code point, on text already normalised: stopping at `limit` is safe. */
  #scanUnicode(text: string, limit: number): void {
    const n = text.length;
    let start = -1;
    for (let i = 0; i < n; i++) {
      const c = text.charCodeAt(i);
      let word: boolean;
      let units = 1;
      if (c < 0x80) {
        word = ASCII_WORD[c] === 1;
      } else if (c < 0xd800 || c > 0xdfff) {
        word = isWordCodePoint(c);
      } else {
        const low = i + 1 < n ? text.charCodeAt(i + 1) : 0;
        if (c <= 0xdbff && low >= 0xdc00 && low <= 0xdfff) {
          word = isWordCodePoint(0x10000 + ((c - 0xd800) << 10) + (low - 0xdc00));
          units = 2;
        } else {
          word = false; // a lone surrogate is category Cs
        }
      }
      if (word) {
        if (start < 0) start = i;
      } else if (start >= 0) {
        this.#push(start, i);
        if (this.count >= limit) return;
        start = -1;
      }
      i += units - 1;
    }
    if (start >= 0 && this.count < limit) this.#push(start, n);
  }

  #push(start: number, end: number): void {
    if (this.count === this.starts.length) {
      const starts = new Int32Array(this.count * 2);
      const ends = new Int32Array(this.count * 2);
      starts.set(this.starts);
      ends.set(this.ends);
      this.starts = starts;
      this.ends = ends;
    }
    this.starts[this.count] = start;
    this.ends[this.count] = end;
    this.count++;
  }
}

/** The word tokens of `text` (see the header for the exact rule). */
export function tokenize(text: string): string[] {
  if (typeof text !== 'string') throw invalid('a string', 'text', text);
  const spans = new TokenSpans().scan(text, Infinity);
  const tokens = new Array<string>(spans.count);
  for (let i = 0; i < spans.count; i++) tokens[i] = spans.token(i);
  return tokens;
}

/**
 * The terms a text feature sees, in the order it sees them: tokens, their prefixes (with
 * `prefixLength` > 0), bigrams, then trigrams (up to `ngrams`), truncated to `maxLength`. Use
 * it to fit a text vocabulary.
 */
export function textTerms(text: string, ngrams = 1, maxLength = Infinity, prefixLength = 0): string[] {
  if (typeof text !== 'string') throw invalid('a string', 'text', text);
  if (ngrams !== 1 && ngrams !== 2 && ngrams !== 3) throw invalid('1, 2 or 3', 'ngrams', ngrams);
  if (maxLength !== Infinity && !(Number.isInteger(maxLength) && maxLength >= 1)) {
    throw invalid('a positive integer or Infinity', 'maxLength', maxLength);
  }
  if (!(Number.isInteger(prefixLength) && prefixLength >= 0)) throw invalid('an integer ≥ 0', 'prefixLength', prefixLength);
  return termsOf(new TokenSpans().scan(text, maxLength), ngrams, maxLength, prefixLength);
}

/** textTerms over already-scanned spans; the encoder's vocabulary path shares it. */
export function termsOf(spans: TokenSpans, ngrams: number, maxLength: number, prefixLength = 0): string[] {
  const n = spans.count;
  const terms: string[] = [];
  for (let i = 0; i < n && terms.length < maxLength; i++) terms.push(spans.token(i));
  for (let i = 0; prefixLength > 0 && i < n && terms.length < maxLength; i++) {
    const end = prefixEnd(spans.text, spans.starts[i]!, spans.ends[i]!, prefixLength);
    if (end >= 0) terms.push(spans.text.slice(spans.starts[i], end));
  }
  // The n-gram loops only run while terms.length < maxLength, that is once all n tokens are
  // in terms[0, n): they read their words from there.
  for (let i = 0; ngrams >= 2 && i + 1 < n && terms.length < maxLength; i++) {
    terms.push(`${terms[i]} ${terms[i + 1]}`);
  }
  for (let i = 0; ngrams >= 3 && i + 2 < n && terms.length < maxLength; i++) {
    terms.push(`${terms[i]} ${terms[i + 1]} ${terms[i + 2]}`);
  }
  return terms;
}

/**
 * Where the first `length` code points of the token text[start, end) end, or -1 when the
 * token has no more than `length` code points (it is its own prefix and adds no term). A
 * surrogate pair counts as one code point and is never split.
 */
export function prefixEnd(text: string, start: number, end: number, length: number): number {
  if (end - start <= length) return -1;
  let i = start;
  for (let points = 0; points < length; points++) {
    const c = text.charCodeAt(i);
    i += c >= 0xd800 && c <= 0xdbff && i + 1 < end ? 2 : 1;
    if (i >= end) return -1;
  }
  return i;
}
