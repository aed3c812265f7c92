/**
 * Feature specs, and the batch encoder that turns JSON records into the typed tensors a tower
 * takes. Training and serving share these rules, so they are part of every model's contract:
 * changing one changes what every trained model sees.
 *
 * Tensors, one per input, batch-major (row r is record r):
 *   categorical  `name`       int32    [batch]
 *   text         `name.ids`   int32    [batch, maxLength]
 *                `name.mask`  float32  [batch, maxLength]
 *   dense        `name`       float32  [batch, fields.length]
 *
 * Ids. Row 0 of every embedding table is reserved: it is the id of an out-of-vocabulary value
 * and of text padding. With `vocabulary`, a value's id is 1 + its position in the list, or 0
 * when it is not in the list (matching is exact: no case folding or normalisation beyond what
 * tokenize does for text). With `buckets`, it is 1 + (hashToken(value) mod buckets), where
 * hashToken is 32-bit FNV-1a over the value's UTF-8 bytes (hash.ts). Either way the table has
 * cardinality(spec) rows.
 *
 * Categorical values: a string is used as is; a finite number as String(value), JavaScript's
 * shortest round-trip decimal form (3 → "3", 2.5 → "2.5", -0 → "0", 1e21 → "1e+21"), so 3 and
 * "3" are the same value. Anything else is an InvalidRecordError, a missing (undefined or
 * null) value included: the model was never trained on an "unknown" that it could fall back to.
 *
 * Text: the field must be a string; '' is fine and has no terms. Its terms are
 * textTerms(text, ngrams, maxLength, prefixLength) from tokenize.ts: NFKC, toLowerCase,
 * maximal runs of \p{L}\p{M}\p{N} as tokens; then, with prefixLength P, the first P code
 * points of each token longer than P; then all bigrams, then all trigrams (words joined by one
 * space); then the first maxLength of those. Term k of record r sets ids[r, k] and mask[r, k] = 1;
 * later positions are padding, id 0 and mask 0. An out-of-vocabulary term keeps mask 1 with
 * id 0, so a model can tell an unknown word from no word. A text vocabulary therefore holds
 * terms: lower-case runs of \p{L}\p{M}\p{N}, one to three of them joined by single spaces
 * (validation rejects anything else, since it could never match).
 *
 * Dense: every field must hold a finite number (not NaN, not ±Infinity, not a numeric
 * string). Column j is (value - mean[j]) / std[j], computed in float64, stored as float32.
 * fitDense takes mean and the population standard deviation (divided by n), floored at 1e-6.
 *
 * Records must be non-null, non-array objects; a field is a top-level property name (no path
 * syntax). Errors name the field and the record's index in the batch.
 */
import { InvalidArgumentError, InvalidRecordError, InvalidSpecError } from '../errors.js';
import { describe, invalid, requirePositiveInteger } from '../validate.js';
import { FNV_OFFSET_BASIS, continueHash, continueHashByte, hashToken } from './hash.js';
import { TokenSpans, prefixEnd, termsOf, tokenize } from './tokenize.js';

export { hashToken, tokenize };

export type FeatureSpec = CategoricalFeature | TextFeature | DenseFeature;

/** One categorical value per record (string or finite number; numbers are used as their decimal string). */
export interface CategoricalFeature {
  kind: 'categorical';
  name: string;
  field: string;
  /** Known values, id 1 + position (exactly one of vocabulary / buckets). */
  vocabulary?: string[];
  /** Hashing trick: id 1 + hashToken(value) mod buckets. */
  buckets?: number;
}

/** A bag of word tokens from a text field (a string; an absent/null field is an error, an empty string is fine). */
export interface TextFeature {
  kind: 'text';
  name: string;
  field: string;
  /** Terms kept (after n-grams are added), padded to this length. */
  maxLength: number;
  /** 1 (default) to 3: also emit word n-grams up to this order, joined with a single space. */
  ngrams?: number;
  /**
   * Also emit the first `prefixLength` code points of every word longer than that, after the
   * words (a truncation stem: with 5, 'striped' and 'stripes' both add 'strip'). Words that
   * differ only in their endings then share a term, which helps a bag-of-words tower with
   * words rare or unseen in training. Default: none.
   */
  prefixLength?: number;
  /** Known terms, id 1 + position (exactly one of vocabulary / buckets). */
  vocabulary?: string[];
  /** Hashing trick: id 1 + hashToken(term) mod buckets. */
  buckets?: number;
}

/** Dense numbers from one or more numeric fields, standardised with stored statistics. */
export interface DenseFeature {
  kind: 'dense';
  name: string;
  fields: string[];
  /** Same length as fields. */
  mean: number[];
  /** Same length as fields; every entry > 0. */
  std: number[];
}

export interface EncodedTensor {
  type: 'int32' | 'float32';
  dims: number[];
  data: Int32Array | Float32Array;
}

export interface TensorInput {
  name: string;
  type: 'int32' | 'float32';
  dims: Array<number | 'batch'>;
}

/** Ids are int32, so a hashed table can have at most this many buckets (plus row 0). */
const MAX_BUCKETS = 2 ** 31 - 2;
/** Far beyond any bag-of-words tower; it bounds what one malformed spec can allocate per record. */
const MAX_TEXT_LENGTH = 1 << 16;
const STD_FLOOR = 1e-6;
const MAX_NGRAMS = 3;
/** Longer prefixes would be whole words nearly always. */
const MAX_PREFIX_LENGTH = 64;
/** Checked on the raw word: tokenize would normalise it first and hide what is wrong. */
const TERM_SHAPE = /^[\p{L}\p{M}\p{N}]+(?: [\p{L}\p{M}\p{N}]+)*$/u;

const PROPERTIES: Record<FeatureSpec['kind'], readonly string[]> = {
  categorical: ['kind', 'name', 'field', 'vocabulary', 'buckets'],
  text: ['kind', 'name', 'field', 'maxLength', 'ngrams', 'prefixLength', 'vocabulary', 'buckets'],
  dense: ['kind', 'name', 'fields', 'mean', 'std'],
};

// ---------------------------------------------------------------------------------------------
// Specs

/**
 * Checks a spec (for instance one read from a model manifest) and returns a clean copy holding
 * only its known properties. Unknown properties are rejected rather than ignored, so that a
 * typo such as `ngram: 2` cannot silently train or serve a different model.
 */
export function validateFeatureSpec(spec: unknown): FeatureSpec {
  return validateSpec(spec, 'the feature spec');
}

/** The tensors a feature feeds its tower, named and shaped as the header describes. */
export function inputsOf(spec: FeatureSpec): TensorInput[] {
  switch (spec.kind) {
    case 'categorical':
      return [{ name: spec.name, type: 'int32', dims: ['batch'] }];
    case 'text':
      return [
        { name: `${spec.name}.ids`, type: 'int32', dims: ['batch', spec.maxLength] },
        { name: `${spec.name}.mask`, type: 'float32', dims: ['batch', spec.maxLength] },
      ];
    case 'dense':
      return [{ name: spec.name, type: 'float32', dims: ['batch', spec.fields.length] }];
    default:
      throw specError("'categorical', 'text' or 'dense'", 'the kind of the feature spec', (spec as { kind: unknown }).kind);
  }
}

/** Rows of the feature's embedding table: the ids it can produce, 0 (unknown / padding) included. */
export function cardinality(spec: CategoricalFeature | TextFeature): number {
  if (Array.isArray(spec.vocabulary)) return spec.vocabulary.length + 1;
  if (typeof spec.buckets === 'number') return spec.buckets + 1;
  const label = `feature ${JSON.stringify(spec.name)}`;
  throw new InvalidSpecError(`Expected a vocabulary or buckets for ${label} but received neither`);
}

function validateSpec(spec: unknown, where: string): FeatureSpec {
  if (spec === null || typeof spec !== 'object' || Array.isArray(spec)) throw specError('an object', where, spec);
  const s = spec as Record<string, unknown>;
  const name = s.name;
  if (typeof name !== 'string' || name.length === 0) throw specError('a non-empty string', `the name of ${where}`, name);
  const label = `feature ${JSON.stringify(name)}`;
  const kind = s.kind;
  if (kind !== 'categorical' && kind !== 'text' && kind !== 'dense') {
    throw specError("'categorical', 'text' or 'dense'", `the kind of ${label}`, kind);
  }
  const allowed = PROPERTIES[kind];
  for (const key of Object.keys(s)) {
    if (!allowed.includes(key)) throw specError(`only ${allowed.join(', ')}`, `the properties of ${label}`, key);
  }
  if (kind === 'dense') return validateDense(name, s.fields, s.mean, s.std, label);

  const field = s.field;
  if (typeof field !== 'string' || field.length === 0) throw specError('a non-empty string', `field of ${label}`, field);
  if (kind === 'categorical') {
    return { kind, name, field, ...validateIds(s, label, false) };
  }
  const maxLength = s.maxLength;
  if (typeof maxLength !== 'number' || !Number.isInteger(maxLength) || maxLength < 1 || maxLength > MAX_TEXT_LENGTH) {
    throw specError(`an integer from 1 to ${MAX_TEXT_LENGTH}`, `maxLength of ${label}`, maxLength);
  }
  const ngrams = s.ngrams;
  if (
    ngrams !== undefined &&
    (typeof ngrams !== 'number' || !Number.isInteger(ngrams) || ngrams < 1 || ngrams > MAX_NGRAMS)
  ) {
    throw specError(`an integer from 1 to ${MAX_NGRAMS}`, `ngrams of ${label}`, ngrams);
  }
  const prefixLength = s.prefixLength;
  if (
    prefixLength !== undefined &&
    (typeof prefixLength !== 'number' || !Number.isInteger(prefixLength) || prefixLength < 1 || prefixLength > MAX_PREFIX_LENGTH)
  ) {
    throw specError(`an integer from 1 to ${MAX_PREFIX_LENGTH}`, `prefixLength of ${label}`, prefixLength);
  }
  const text: TextFeature = { kind, name, field, maxLength };
  if (ngrams !== undefined) text.ngrams = ngrams;
  if (prefixLength !== undefined) text.prefixLength = prefixLength;
  return { ...text, ...validateIds(s, label, true) };
}

/** A text feature's words must be terms; a categorical feature's may be any non-empty string. */
function validateIds(
  s: Record<string, unknown>,
  label: string,
  wordsAreTerms: boolean,
): { vocabulary: string[] } | { buckets: number } {
  const { vocabulary, buckets } = s;
  if ((vocabulary === undefined) === (buckets === undefined)) {
    const received = vocabulary === undefined ? 'neither' : 'both';
    throw new InvalidSpecError(`Expected exactly one of vocabulary or buckets for ${label} but received ${received}`);
  }
  if (buckets !== undefined) {
    if (typeof buckets !== 'number' || !Number.isInteger(buckets) || buckets < 1 || buckets > MAX_BUCKETS) {
      throw specError(`an integer from 1 to ${MAX_BUCKETS}`, `buckets of ${label}`, buckets);
    }
    return { buckets };
  }
  if (!Array.isArray(vocabulary) || vocabulary.length === 0) {
    throw specError('a non-empty array of strings', `vocabulary of ${label}`, vocabulary);
  }
  const idOf = new Map<string, number>();
  for (let i = 0; i < vocabulary.length; i++) {
    const word: unknown = vocabulary[i];
    if (typeof word !== 'string' || word.length === 0) throw specError('a non-empty string', `vocabulary[${i}] of ${label}`, word);
    const earlier = idOf.get(word);
    if (earlier !== undefined) {
      throw specError(`a word not already at vocabulary[${earlier - 1}]`, `vocabulary[${i}] of ${label}`, word);
    }
    idOf.set(word, i + 1);
    if (wordsAreTerms && !isTerm(word)) {
      throw specError(
        `a term as tokenize produces it (lower-case, at most ${MAX_NGRAMS} words joined by single spaces)`,
        `vocabulary[${i}] of ${label}`,
        word,
      );
    }
  }
  const copy = [...(vocabulary as string[])];
  idMaps.set(copy, idOf);
  return { vocabulary: copy };
}

/**
 * Whether `word` could ever be a text term: lower-case, and one to three runs of letters,
 * marks and digits joined by single spaces. A vocabulary fitted on raw strings ('New York',
 * 'c++') would otherwise load fine and quietly map those words to id 0. Words of more
 * n-gram order than the spec's `ngrams` are allowed (merely unused), so one vocabulary can
 * serve specs that differ only in `ngrams`. NFKC is deliberately not re-checked: lower-casing
 * after NFKC can leave text that NFKC would change again ('H̱' becomes 'h' + U+0331), and such
 * terms are real.
 */
function isTerm(word: string): boolean {
  if (word.toLowerCase() !== word || !TERM_SHAPE.test(word)) return false;
  let words = 1;
  for (let i = word.indexOf(' '); i >= 0; i = word.indexOf(' ', i + 1)) words++;
  return words <= MAX_NGRAMS;
}

function validateDense(name: string, fields: unknown, mean: unknown, std: unknown, label: string): DenseFeature {
  const fieldList = validateFields(fields, label);
  const stats = (values: unknown, what: string, check: (x: number) => boolean, wanted: string): number[] => {
    if (!Array.isArray(values) || values.length !== fieldList.length) {
      throw specError(`an array of ${fieldList.length} numbers (one per field)`, `${what} of ${label}`, values);
    }
    // Indexed loops, not forEach, so that a hole in a sparse array is seen and rejected.
    for (let j = 0; j < values.length; j++) {
      const x: unknown = values[j];
      if (typeof x !== 'number' || !check(x)) throw specError(wanted, `${what}[${j}] of ${label}`, x);
    }
    return [...(values as number[])];
  };
  return {
    kind: 'dense',
    name,
    fields: fieldList,
    mean: stats(mean, 'mean', Number.isFinite, 'a finite number'),
    std: stats(std, 'std', (x) => Number.isFinite(x) && x > 0, 'a finite number > 0'),
  };
}

function validateFields(fields: unknown, label: string): string[] {
  if (!Array.isArray(fields) || fields.length === 0) throw specError('a non-empty array of field names', `fields of ${label}`, fields);
  const seen = new Set<string>();
  for (let j = 0; j < fields.length; j++) {
    const field: unknown = fields[j];
    if (typeof field !== 'string' || field.length === 0) throw specError('a non-empty string', `fields[${j}] of ${label}`, field);
    if (seen.has(field)) throw specError('a field not listed before', `fields[${j}] of ${label}`, field);
    seen.add(field);
  }
  return [...(fields as string[])];
}

function specError(what: string, name: string, value: unknown): InvalidSpecError {
  return new InvalidSpecError(`Expected ${what} for ${name} but received ${describe(value)}`);
}

// ---------------------------------------------------------------------------------------------
// Fitting

/**
 * A vocabulary from observed values: every distinct non-empty value seen at least `minCount`
 * times (default 1), most frequent first, ties in code-unit string order (JavaScript's `<`,
 * not locale order), at most `maxSize` of them. Pass values as the encoder keys them:
 * categorical values as strings (numbers through String), text terms from textTerms. Empty
 * strings are skipped: no vocabulary may hold one.
 */
export function fitVocabulary(values: Iterable<string>, options: { maxSize?: number; minCount?: number } = {}): string[] {
  if (!isIterable(values)) throw invalid('an iterable of strings', 'values', values);
  if (options === null || typeof options !== 'object') throw invalid('an options object', 'options', options);
  const maxSize = options.maxSize === undefined ? Infinity : requirePositiveInteger(options.maxSize, 'maxSize');
  const minCount = options.minCount === undefined ? 1 : requirePositiveInteger(options.minCount, 'minCount');
  const counts = new Map<string, number>();
  let i = 0;
  for (const value of values as Iterable<unknown>) {
    if (typeof value !== 'string') throw invalid('a string', `values[${i}]`, value);
    if (value.length > 0) counts.set(value, (counts.get(value) ?? 0) + 1);
    i++;
  }
  const kept = [...counts].filter(([, count]) => count >= minCount);
  kept.sort(([a, countA], [b, countB]) => countB - countA || (a < b ? -1 : a > b ? 1 : 0));
  return kept.slice(0, maxSize).map(([value]) => value);
}

/**
 * A dense feature whose mean and std are measured on `records` in one pass (Welford's method,
 * so a one-shot iterable works and large offsets lose no precision).
 */
export function fitDense(name: string, fields: string[], records: Iterable<unknown>): DenseFeature {
  if (typeof name !== 'string' || name.length === 0) throw specError('a non-empty string', 'name', name);
  const label = `feature ${JSON.stringify(name)}`;
  const fieldList = validateFields(fields, label);
  if (!isIterable(records)) throw invalid('an iterable of records', 'records', records);
  const width = fieldList.length;
  const mean = new Float64Array(width);
  const sumSquares = new Float64Array(width);
  let n = 0;
  for (const record of records) {
    const object = requireRecord(record, n);
    for (let j = 0; j < width; j++) requireFinite(object, fieldList[j]!, n);
    n++;
    for (let j = 0; j < width; j++) {
      const x = object[fieldList[j]!] as number;
      const delta = x - mean[j]!;
      mean[j] = mean[j]! + delta / n;
      sumSquares[j] = sumSquares[j]! + delta * (x - mean[j]!);
    }
  }
  if (n === 0) throw new InvalidArgumentError('Expected at least one record for records but received none');
  const std = Array.from(sumSquares, (s) => Math.max(Math.sqrt(s / n), STD_FLOOR));
  // Values near the float64 limit can overflow the statistics: validation reports that here.
  return validateSpec({ kind: 'dense', name, fields: fieldList, mean: Array.from(mean), std }, label) as DenseFeature;
}

function isIterable(value: unknown): value is Iterable<unknown> {
  if (value === null || value === undefined) return false;
  return typeof (value as { [Symbol.iterator]?: unknown })[Symbol.iterator] === 'function';
}

// ---------------------------------------------------------------------------------------------
// Encoding

type Row = Record<string, unknown>;

/** Encodes one feature of a batch into its tensors. Records have been checked to be objects. */
interface Column {
  encode(records: readonly Row[], out: Record<string, EncodedTensor>): void;
}

/**
 * Encodes batches of records for one tower. Construction validates the specs and builds the
 * vocabulary maps once; `encode` then allocates one typed array per tensor per batch and, for
 * hashed text, no per-token objects.
 */
export class FeatureEncoder {
  readonly specs: readonly FeatureSpec[];
  readonly inputs: readonly TensorInput[];
  readonly #columns: readonly Column[];

  constructor(specs: readonly FeatureSpec[]) {
    if (!Array.isArray(specs) || specs.length === 0) throw specError('a non-empty array of feature specs', 'specs', specs);
    // Array.from, not map, so that a hole in a sparse array is validated (and rejected) too.
    const validated = Array.from(specs as readonly unknown[], (spec, i) => deepFreeze(validateSpec(spec, `specs[${i}]`)));
    const featureAt = new Map<string, number>();
    const inputOf = new Map<string, string>();
    const inputs: TensorInput[] = [];
    validated.forEach((spec, i) => {
      const earlier = featureAt.get(spec.name);
      if (earlier !== undefined) throw specError(`a name not already used by specs[${earlier}]`, `the name of specs[${i}]`, spec.name);
      featureAt.set(spec.name, i);
      for (const input of inputsOf(spec)) {
        // A text feature 'title' feeds 'title.ids': a categorical feature named so would collide.
        const owner = inputOf.get(input.name);
        if (owner !== undefined) {
          throw specError(`tensor inputs not already fed by feature ${JSON.stringify(owner)}`, `specs[${i}]`, input.name);
        }
        inputOf.set(input.name, spec.name);
        inputs.push(deepFreeze(input));
      }
    });
    this.specs = Object.freeze(validated);
    this.inputs = Object.freeze(inputs);
    this.#columns = validated.map(columnFor);
  }

  /** Encodes one batch; every tensor's leading dimension is `records.length`. */
  encode(records: readonly unknown[]): Record<string, EncodedTensor> {
    if (!Array.isArray(records)) throw invalid('an array of records', 'records', records);
    for (let r = 0; r < records.length; r++) requireRecord(records[r], r);
    // No prototype: a feature may be named '__proto__' or 'constructor'.
    const out = Object.create(null) as Record<string, EncodedTensor>;
    for (const column of this.#columns) column.encode(records as readonly Row[], out);
    return out;
  }
}

function columnFor(spec: FeatureSpec): Column {
  switch (spec.kind) {
    case 'categorical':
      return new CategoricalColumn(spec);
    case 'text':
      return new TextColumn(spec);
    case 'dense':
      return new DenseColumn(spec);
  }
}

class CategoricalColumn implements Column {
  readonly #name: string;
  readonly #field: string;
  readonly #idOf: Map<string, number> | undefined;
  readonly #buckets: number;

  constructor(spec: CategoricalFeature) {
    this.#name = spec.name;
    this.#field = spec.field;
    this.#idOf = spec.vocabulary && vocabularyIds(spec.vocabulary);
    this.#buckets = spec.buckets ?? 0;
  }

  encode(records: readonly Row[], out: Record<string, EncodedTensor>): void {
    const n = records.length;
    const field = this.#field;
    const idOf = this.#idOf;
    const buckets = this.#buckets;
    const data = new Int32Array(n);
    for (let r = 0; r < n; r++) {
      const value = records[r]![field];
      let key: string;
      if (typeof value === 'string') key = value;
      else if (typeof value === 'number' && Number.isFinite(value)) key = String(value);
      else throw recordError('a string or finite number', field, r, value);
      data[r] = idOf !== undefined ? (idOf.get(key) ?? 0) : 1 + (hashToken(key) % buckets);
    }
    out[this.#name] = { type: 'int32', dims: [n], data };
  }
}

class TextColumn implements Column {
  readonly #idsName: string;
  readonly #maskName: string;
  readonly #field: string;
  readonly #maxLength: number;
  readonly #ngrams: number;
  readonly #prefixLength: number;
  readonly #idOf: Map<string, number> | undefined;
  readonly #buckets: number;
  // Scratch reused across records and batches: encode is synchronous, so no two use it at once.
  readonly #spans = new TokenSpans();
  #unigramHashes = new Uint32Array(16);
  #bigramHashes = new Uint32Array(16);

  constructor(spec: TextFeature) {
    this.#idsName = `${spec.name}.ids`;
    this.#maskName = `${spec.name}.mask`;
    this.#field = spec.field;
    this.#maxLength = spec.maxLength;
    this.#ngrams = spec.ngrams ?? 1;
    this.#prefixLength = spec.prefixLength ?? 0;
    this.#idOf = spec.vocabulary && vocabularyIds(spec.vocabulary);
    this.#buckets = spec.buckets ?? 0;
  }

  encode(records: readonly Row[], out: Record<string, EncodedTensor>): void {
    const n = records.length;
    const width = this.#maxLength;
    const ids = new Int32Array(n * width);
    const mask = new Float32Array(n * width);
    for (let r = 0; r < n; r++) {
      const value = records[r]![this.#field];
      if (typeof value !== 'string') throw recordError('a string', this.#field, r, value);
      const spans = this.#spans.scan(value, width);
      const offset = r * width;
      const count = this.#idOf !== undefined ? this.#vocabularyRow(spans, ids, offset) : this.#hashedRow(spans, ids, offset);
      mask.fill(1, offset, offset + count);
    }
    const dims = [n, width];
    out[this.#idsName] = { type: 'int32', dims, data: ids };
    out[this.#maskName] = { type: 'float32', dims: [...dims], data: mask };
  }

  #vocabularyRow(spans: TokenSpans, ids: Int32Array, offset: number): number {
    const idOf = this.#idOf!;
    const terms = termsOf(spans, this.#ngrams, this.#maxLength, this.#prefixLength);
    for (let k = 0; k < terms.length; k++) ids[offset + k] = idOf.get(terms[k]!) ?? 0;
    return terms.length;
  }

  /**
   * termsOf's order without building the terms: an n-gram's hash continues the hash of its
   * first n-1 words over ' ' and the last word (FNV-1a is a left fold over bytes). Each loop
   * only runs when every term of the previous order fitted, so the states it reads exist.
   */
  #hashedRow(spans: TokenSpans, ids: Int32Array, offset: number): number {
    const { text, count, starts, ends } = spans;
    const width = this.#maxLength;
    const buckets = this.#buckets;
    if (this.#unigramHashes.length < count) {
      this.#unigramHashes = new Uint32Array(starts.length);
      this.#bigramHashes = new Uint32Array(starts.length);
    }
    const unigrams = this.#unigramHashes;
    const bigrams = this.#bigramHashes;
    let k = 0;
    for (let i = 0; i < count && k < width; i++) {
      const h = continueHash(FNV_OFFSET_BASIS, text, starts[i]!, ends[i]!);
      unigrams[i] = h;
      ids[offset + k++] = 1 + (h % buckets);
    }
    for (let i = 0; this.#prefixLength > 0 && i < count && k < width; i++) {
      const end = prefixEnd(text, starts[i]!, ends[i]!, this.#prefixLength);
      if (end >= 0) ids[offset + k++] = 1 + (continueHash(FNV_OFFSET_BASIS, text, starts[i]!, end) % buckets);
    }
    if (this.#ngrams < 2) return k;
    for (let i = 0; i + 1 < count && k < width; i++) {
      const h = continueHash(continueHashByte(unigrams[i]!, 0x20), text, starts[i + 1]!, ends[i + 1]!);
      bigrams[i] = h;
      ids[offset + k++] = 1 + (h % buckets);
    }
    if (this.#ngrams < 3) return k;
    for (let i = 0; i + 2 < count && k < width; i++) {
      const h = continueHash(continueHashByte(bigrams[i]!, 0x20), text, starts[i + 2]!, ends[i + 2]!);
      ids[offset + k++] = 1 + (h % buckets);
    }
    return k;
  }
}

class DenseColumn implements Column {
  readonly #name: string;
  readonly #fields: readonly string[];
  readonly #mean: Float64Array;
  readonly #std: Float64Array;

  constructor(spec: DenseFeature) {
    this.#name = spec.name;
    this.#fields = spec.fields;
    this.#mean = Float64Array.from(spec.mean);
    this.#std = Float64Array.from(spec.std);
  }

  encode(records: readonly Row[], out: Record<string, EncodedTensor>): void {
    const n = records.length;
    const fields = this.#fields;
    const width = fields.length;
    const data = new Float32Array(n * width);
    for (let r = 0; r < n; r++) {
      const record = records[r]!;
      for (let j = 0; j < width; j++) {
        const value = requireFinite(record, fields[j]!, r);
        data[r * width + j] = (value - this.#mean[j]!) / this.#std[j]!;
      }
    }
    out[this.#name] = { type: 'float32', dims: [n, width], data };
  }
}

/**
 * Word → id maps built while validating, keyed by the validated (then frozen) vocabulary
 * copy. For a large vocabulary the Map is most of the cost of opening a model; this way the
 * encoder reuses the one validation built instead of building a second.
 */
const idMaps = new WeakMap<readonly string[], Map<string, number>>();

function vocabularyIds(vocabulary: readonly string[]): Map<string, number> {
  let idOf = idMaps.get(vocabulary);
  if (idOf === undefined) {
    idOf = new Map();
    for (let i = 0; i < vocabulary.length; i++) idOf.set(vocabulary[i]!, i + 1);
  }
  return idOf;
}

function requireRecord(record: unknown, index: number): Row {
  if (record === null || typeof record !== 'object' || Array.isArray(record)) {
    throw new InvalidRecordError(`Expected an object for record ${index} but received ${describe(record)}`);
  }
  return record as Row;
}

function requireFinite(record: Row, field: string, index: number): number {
  const value = record[field];
  if (typeof value !== 'number' || !Number.isFinite(value)) throw recordError('a finite number', field, index, value);
  return value;
}

function recordError(what: string, field: string, index: number, value: unknown): InvalidRecordError {
  const where = `field ${JSON.stringify(field)} in record ${index}`;
  return new InvalidRecordError(`Expected ${what} for ${where} but received ${describe(value)}`);
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}
