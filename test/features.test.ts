import { describe, expect, it } from 'vitest';

import { EbrixError, InvalidArgumentError, InvalidRecordError, InvalidSpecError } from '../lib/errors.js';
import {
  FeatureEncoder,
  cardinality,
  fitDense,
  fitVocabulary,
  hashToken,
  inputsOf,
  tokenize,
  validateFeatureSpec,
  type DenseFeature,
  type FeatureSpec,
  type TextFeature,
} from '../lib/model/features.js';
import { textTerms } from '../lib/model/tokenize.js';
import { rng } from './helpers.js';

/** The tokenizer's definition, written the slow, obvious way. */
function referenceTokenize(text: string): string[] {
  return text.normalize('NFKC').toLowerCase().match(/[\p{L}\p{M}\p{N}]+/gu) ?? [];
}

/** FNV-1a 32 over the bytes Node's own UTF-8 encoder produces. */
function referenceHash(text: string): number {
  let h = 0x811c9dc5;
  for (const byte of Buffer.from(text, 'utf8')) h = Math.imul(h ^ byte, 0x01000193) >>> 0;
  return h;
}

/** Random text over an alphabet chosen to hit every branch of the scanner and the hash. */
function randomText(next: () => number, length: number): string {
  const pieces = [
    'a', 'Z', 'q', '0', '9', ' ', '  ', '-', '_', "'", '.', ',', '\t', '\n',
    'é', 'É', 'e\u0301', '\u0301', 'ß', 'ẞ', 'İ', 'ı', 'ﬁ', 'Ａ', '１', '½', '²', 'Ⅻ',
    'Σ', 'σ', 'ς', 'Ω', 'Ж', 'ж', '東', '京', 'タ', 'ー', '한', '\u0627', '\u0661', '\u093f',
    '🙂', '👍🏽', '𝒜', '𠀀', '\u200d', '\u00a0', '\u3000', '\ud800', '\udc00', '\ufeff', '™',
  ];
  let text = '';
  for (let i = 0; i < length; i++) text += pieces[Math.floor(next() * pieces.length)]!;
  return text;
}

function expectThrows(fn: () => unknown, type: new (...args: never[]) => EbrixError, message: string | RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  expect(caught, 'expected a throw').toBeInstanceOf(type);
  const { message: actual } = caught as Error;
  if (typeof message === 'string') expect(actual).toBe(message);
  else expect(actual).toMatch(message);
}

const title = (spec: Partial<TextFeature> = {}): TextFeature => ({
  kind: 'text',
  name: 'title',
  field: 'title',
  maxLength: 8,
  buckets: 1000,
  ...spec,
});

describe('tokenize', () => {
  it('lower-cases, splits on anything but letters, marks and digits, and normalises with NFKC', () => {
    expect(tokenize('Crème BRÛLÉE!')).toEqual(['crème', 'brûlée']);
    expect(tokenize('ﬁne ﬂour')).toEqual(['fine', 'flour']);
    expect(tokenize('Ｆｕｌｌ１２３ width')).toEqual(['full123', 'width']);
    expect(tokenize('cafe\u0301')).toEqual(['café']); // composed by NFKC
    expect(tokenize('x²')).toEqual(['x2']);
    expect(tokenize("don't stop_now, 3.14")).toEqual(['don', 't', 'stop', 'now', '3', '14']);
    expect(tokenize('  leading\tand\ntrailing  ')).toEqual(['leading', 'and', 'trailing']);
  });

  it('handles Greek, Cyrillic and CJK, with emoji only separating', () => {
    expect(tokenize('ΚΑΛΗΜΕΡΑ κόσμε ΟΔΟΣ')).toEqual(['καλημερα', 'κόσμε', 'οδος']);
    expect(tokenize('ΟΔΟΣ')[0]!.endsWith('ς')).toBe(true); // final sigma, by toLowerCase's context rule
    expect(tokenize('Привет, МИР!')).toEqual(['привет', 'мир']);
    expect(tokenize('東京タワー に 行く')).toEqual(['東京タワー', 'に', '行く']);
    expect(tokenize('hot🙂dog')).toEqual(['hot', 'dog']);
    expect(tokenize('👍🏽👍🏽')).toEqual([]);
    expect(tokenize('𝒜lpha')).toEqual(['alpha']); // mathematical script A, astral, NFKC → a
  });

  it('gives no tokens for empty or separator-only text', () => {
    expect(tokenize('')).toEqual([]);
    expect(tokenize(' ,.;!? ')).toEqual([]);
    expect(tokenize('🙂')).toEqual([]);
  });

  it('treats lone surrogates as separators', () => {
    expect(tokenize('a\ud800b\udc00c')).toEqual(['a', 'b', 'c']);
  });

  it('matches the regular-expression definition on random text', () => {
    const next = rng(7);
    for (let i = 0; i < 3000; i++) {
      const text = randomText(next, Math.floor(next() * 24));
      expect(tokenize(text), JSON.stringify(text)).toEqual(referenceTokenize(text));
    }
    for (let i = 0; i < 1000; i++) {
      const ascii = Array.from({ length: Math.floor(next() * 30) }, () => String.fromCharCode(Math.floor(next() * 128))).join('');
      expect(tokenize(ascii), JSON.stringify(ascii)).toEqual(referenceTokenize(ascii));
    }
  });

  it('rejects a non-string', () => {
    expectThrows(() => tokenize(42 as unknown as string), InvalidArgumentError, 'Expected a string for text but received 42');
  });
});

describe('textTerms', () => {
  it('lists unigrams, then bigrams, then trigrams, truncated', () => {
    expect(textTerms('A b, C d', 1)).toEqual(['a', 'b', 'c', 'd']);
    expect(textTerms('A b, C d', 2)).toEqual(['a', 'b', 'c', 'd', 'a b', 'b c', 'c d']);
    expect(textTerms('A b, C d', 3)).toEqual(['a', 'b', 'c', 'd', 'a b', 'b c', 'c d', 'a b c', 'b c d']);
    expect(textTerms('A b, C d', 3, 6)).toEqual(['a', 'b', 'c', 'd', 'a b', 'b c']);
    expect(textTerms('A b, C d', 3, 3)).toEqual(['a', 'b', 'c']);
    expect(textTerms('solo', 3)).toEqual(['solo']);
    expect(textTerms('', 3)).toEqual([]);
  });

  it('adds the prefixes of longer words after the words, before the n-grams', () => {
    expect(textTerms('Striped stripes strip', 1, Infinity, 5)).toEqual(['striped', 'stripes', 'strip', 'strip', 'strip']);
    expect(textTerms('big striped cats', 2, Infinity, 3)).toEqual(['big', 'striped', 'cats', 'str', 'cat', 'big striped', 'striped cats']);
    expect(textTerms('big striped cats', 2, 4, 3)).toEqual(['big', 'striped', 'cats', 'str']);
    expect(textTerms('big striped cats', 2, 2, 3)).toEqual(['big', 'striped']);
    // Code points, not code units: a surrogate pair is one and is never split.
    expect(textTerms('𝐀𝐁𝐂𝐃x', 1, Infinity, 2)).toEqual(['abcdx', 'ab']); // NFKC folds the bold letters
    expect(textTerms('𠀀𠀁𠀂', 1, Infinity, 2)).toEqual(['𠀀𠀁𠀂', '𠀀𠀁']);
    expect(textTerms('𠀀𠀁', 1, Infinity, 2)).toEqual(['𠀀𠀁']);
    expect(textTerms('Crème brûlée', 1, Infinity, 3)).toEqual(['crème', 'brûlée', 'crè', 'brû']);
    expectThrows(() => textTerms('a', 1, Infinity, -1), InvalidArgumentError, /prefixLength/);
    expectThrows(() => textTerms('a', 1, Infinity, 1.5), InvalidArgumentError, /prefixLength/);
  });
});

describe('hashToken', () => {
  it('is FNV-1a 32 over UTF-8: pinned values', () => {
    // The first three are FNV's published test vectors.
    expect(hashToken('')).toBe(0x811c9dc5);
    expect(hashToken('a')).toBe(0xe40c292c);
    expect(hashToken('foobar')).toBe(0xbf9cf968);
    expect(hashToken('crème')).toBe(3651701885);
    expect(hashToken('new york')).toBe(46162376);
    expect(hashToken('привет')).toBe(2168984447);
    expect(hashToken('東京')).toBe(1759422319);
    expect(hashToken('🙂')).toBe(1470331467);
  });

  it('agrees with hashing Buffer.from(text, "utf8") on random text, lone surrogates as U+FFFD', () => {
    const next = rng(11);
    for (let i = 0; i < 3000; i++) {
      const text = randomText(next, Math.floor(next() * 16));
      expect(hashToken(text), JSON.stringify(text)).toBe(referenceHash(text));
    }
    expect(hashToken('\ud800x')).toBe(hashToken('\ufffdx'));
    expect(hashToken('x\udc00')).toBe(hashToken('x\ufffd'));
  });

  it('returns an unsigned 32-bit integer', () => {
    for (const token of ['a', 'b', 'zz', 'hello', '東京']) {
      const h = hashToken(token);
      expect(Number.isInteger(h) && h >= 0 && h < 2 ** 32).toBe(true);
    }
  });
});

describe('inputsOf and cardinality', () => {
  it('names and shapes each feature’s tensors', () => {
    expect(inputsOf({ kind: 'categorical', name: 'country', field: 'c', buckets: 10 })).toEqual([
      { name: 'country', type: 'int32', dims: ['batch'] },
    ]);
    expect(inputsOf(title({ maxLength: 5 }))).toEqual([
      { name: 'title.ids', type: 'int32', dims: ['batch', 5] },
      { name: 'title.mask', type: 'float32', dims: ['batch', 5] },
    ]);
    expect(inputsOf({ kind: 'dense', name: 'stats', fields: ['a', 'b'], mean: [0, 0], std: [1, 1] })).toEqual([
      { name: 'stats', type: 'float32', dims: ['batch', 2] },
    ]);
  });

  it('counts the reserved row 0', () => {
    expect(cardinality({ kind: 'categorical', name: 'c', field: 'c', vocabulary: ['a', 'b', 'c'] })).toBe(4);
    expect(cardinality(title({ buckets: 100 }))).toBe(101);
  });

  it('the encoder concatenates inputs in spec order', () => {
    const encoder = new FeatureEncoder([
      title(),
      { kind: 'dense', name: 'stats', fields: ['a'], mean: [0], std: [1] },
      { kind: 'categorical', name: 'country', field: 'country', buckets: 7 },
    ]);
    expect(encoder.inputs.map((i) => i.name)).toEqual(['title.ids', 'title.mask', 'stats', 'country']);
  });
});

describe('FeatureEncoder: categorical', () => {
  const vocabulary = new FeatureEncoder([{ kind: 'categorical', name: 'country', field: 'country', vocabulary: ['us', 'fr', '3', '2.5'] }]);

  it('maps a vocabulary value to 1 + position and an unknown one to 0', () => {
    const out = vocabulary.encode([{ country: 'fr' }, { country: 'us' }, { country: 'xx' }, { country: 'US' }, { country: '' }]);
    expect(out.country).toEqual({ type: 'int32', dims: [5], data: Int32Array.from([2, 1, 0, 0, 0]) });
  });

  it('uses a number as its decimal string', () => {
    const out = vocabulary.encode([{ country: 3 }, { country: '3' }, { country: 2.5 }, { country: 3.0 }, { country: 4 }]);
    expect(Array.from(out.country!.data)).toEqual([3, 3, 4, 3, 0]);
  });

  it('hashes into 1 + hashToken(value) mod buckets', () => {
    const hashed = new FeatureEncoder([{ kind: 'categorical', name: 'city', field: 'city', buckets: 1000 }]);
    const values = ['paris', 'tokyo', '東京', '', '42'];
    const out = hashed.encode([...values.map((city) => ({ city })), { city: 42 }]);
    const expected = [...values, '42'].map((v) => 1 + (hashToken(v) % 1000));
    expect(Array.from(out.city!.data)).toEqual(expected);
    expect(expected[4]).toBe(expected[5]);
    for (const id of out.city!.data) expect(id >= 1 && id <= 1000).toBe(true);
  });

  it('rejects missing values and wrong types, naming field and record', () => {
    const encode = (value: unknown) => () => vocabulary.encode([{ country: 'us' }, { country: 'fr' }, { country: value }]);
    expectThrows(encode(undefined), InvalidRecordError, 'Expected a string or finite number for field "country" in record 2 but received undefined');
    expectThrows(encode(null), InvalidRecordError, /received null$/);
    expectThrows(encode(true), InvalidRecordError, /received true$/);
    expectThrows(encode(['us']), InvalidRecordError, /received an array of length 1$/);
    expectThrows(encode({}), InvalidRecordError, /received an object \(Object\)$/);
    expectThrows(encode(NaN), InvalidRecordError, /received NaN$/);
    expectThrows(encode(Infinity), InvalidRecordError, /received Infinity$/);
    expectThrows(encode(10n), InvalidRecordError, /received 10n$/);
    expectThrows(() => vocabulary.encode([{}]), InvalidRecordError, /field "country" in record 0 but received undefined/);
  });
});

describe('FeatureEncoder: text', () => {
  it('gives a prefix the id of the same word in the vocabulary', () => {
    const spec = title({ maxLength: 6, prefixLength: 5, vocabulary: ['strip', 'stripes', 'cat'], buckets: undefined });
    const out = new FeatureEncoder([validateFeatureSpec(spec)]).encode([{ title: 'Striped cat' }, { title: 'stripes' }]);
    // 'striped' is unknown (0) but its prefix 'strip' is word 1; 'cat' is no longer than 5 and adds nothing.
    expect(Array.from(out['title.ids']!.data)).toEqual([0, 3, 1, 0, 0, 0, 2, 1, 0, 0, 0, 0]);
    expect(Array.from(out['title.mask']!.data)).toEqual([1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0]);
  });

  it('pads ids and mask with 0 after the last term, and gives empty text no terms', () => {
    const spec = title({ maxLength: 4, vocabulary: ['red', 'fox', 'quick'], buckets: undefined });
    const out = new FeatureEncoder([spec]).encode([{ title: 'Quick red FOX' }, { title: '' }, { title: '!!' }]);
    expect(out['title.ids']).toEqual({ type: 'int32', dims: [3, 4], data: Int32Array.from([3, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0]) });
    expect(out['title.mask']).toEqual({ type: 'float32', dims: [3, 4], data: Float32Array.from([1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]) });
  });

  it('gives an out-of-vocabulary term id 0 but mask 1', () => {
    const spec = title({ maxLength: 5, vocabulary: ['red', 'fox'], buckets: undefined });
    const out = new FeatureEncoder([spec]).encode([{ title: 'red wolf fox' }]);
    expect(Array.from(out['title.ids']!.data)).toEqual([1, 0, 2, 0, 0]);
    expect(Array.from(out['title.mask']!.data)).toEqual([1, 1, 1, 0, 0]);
  });

  it('adds n-grams after the unigrams and truncates to maxLength', () => {
    const vocabulary = ['new', 'york', 'pizza', 'new york', 'york pizza', 'new york pizza'];
    const encode = (ngrams: number, maxLength: number) =>
      Array.from(
        new FeatureEncoder([title({ maxLength, ngrams, vocabulary, buckets: undefined })]).encode([{ title: 'New-York pizza!' }])['title.ids']!
          .data,
      );
    expect(encode(1, 6)).toEqual([1, 2, 3, 0, 0, 0]); // n-gram words may sit unused in the vocabulary
    expect(encode(2, 6)).toEqual([1, 2, 3, 4, 5, 0]);
    expect(encode(3, 7)).toEqual([1, 2, 3, 4, 5, 6, 0]);
    expect(encode(3, 4)).toEqual([1, 2, 3, 4]);
    expect(encode(3, 2)).toEqual([1, 2]);
  });

  it('hashes every term, n-grams included, as 1 + hashToken(term) mod buckets', () => {
    const next = rng(3);
    const texts = ['', 'one', 'New York pizza', 'Crème BRÛLÉE à la carte', '東京 タワー 🙂 night view', 'a b c d e f g h i j k l'];
    for (let i = 0; i < 40; i++) texts.push(randomText(next, 40));
    for (const [ngrams, prefixLength] of [[1, 0], [2, 0], [3, 0], [1, 2], [3, 4]] as const) {
      for (const maxLength of [1, 3, 8, 30]) {
        const spec = title({ ngrams, maxLength, buckets: 997, ...(prefixLength > 0 ? { prefixLength } : {}) });
        const encoder = new FeatureEncoder([spec]);
        const out = encoder.encode(texts.map((t) => ({ title: t })));
        texts.forEach((text, r) => {
          const terms = textTerms(text, ngrams, maxLength, prefixLength);
          const expected = new Array<number>(maxLength).fill(0);
          terms.forEach((term, k) => (expected[k] = 1 + (hashToken(term) % 997)));
          const row = Array.from(out['title.ids']!.data.subarray(r * maxLength, (r + 1) * maxLength));
          expect(row, `${JSON.stringify(text)} ngrams=${ngrams} maxLength=${maxLength} prefixLength=${prefixLength}`).toEqual(expected);
          const mask = Array.from(out['title.mask']!.data.subarray(r * maxLength, (r + 1) * maxLength));
          expect(mask).toEqual(expected.map((_, k) => (k < terms.length ? 1 : 0)));
        });
      }
    }
  });

  it('does not carry state from a long text into the next, shorter one', () => {
    const encoder = new FeatureEncoder([title({ maxLength: 40, ngrams: 3 })]);
    const long = Array.from({ length: 60 }, (_, i) => `w${i}`).join(' ');
    const alone = encoder.encode([{ title: 'short text' }]);
    const after = encoder.encode([{ title: long }, { title: 'short text' }]);
    expect(after['title.ids']!.data.subarray(40)).toEqual(alone['title.ids']!.data);
    expect(after['title.mask']!.data.subarray(40)).toEqual(alone['title.mask']!.data);
  });

  it('rejects a missing or non-string field, naming field and record', () => {
    const encoder = new FeatureEncoder([title()]);
    const records = [{ title: 'a' }, { title: 'b' }, { title: 'c' }, {}];
    expectThrows(() => encoder.encode(records), InvalidRecordError, 'Expected a string for field "title" in record 3 but received undefined');
    expectThrows(() => encoder.encode([{ title: null }]), InvalidRecordError, 'Expected a string for field "title" in record 0 but received null');
    expectThrows(() => encoder.encode([{ title: 12 }]), InvalidRecordError, /received 12$/);
    expectThrows(() => encoder.encode([{ title: ['a'] }]), InvalidRecordError, /received an array of length 1$/);
  });
});

describe('FeatureEncoder: dense', () => {
  const spec: DenseFeature = { kind: 'dense', name: 'stats', fields: ['price', 'rating'], mean: [10, 3], std: [5, 0.5] };
  const encoder = new FeatureEncoder([spec]);

  it('standardises each field with its mean and std', () => {
    const out = encoder.encode([
      { price: 10, rating: 3 },
      { price: 20, rating: 2 },
      { price: -5, rating: 3.25, other: 'ignored' },
    ]);
    expect(out.stats!.type).toBe('float32');
    expect(out.stats!.dims).toEqual([3, 2]);
    expect(Array.from(out.stats!.data)).toEqual([0, 0, 2, -2, -3, 0.5]);
  });

  it('rejects missing, non-number, NaN and infinite values', () => {
    const bad = (rating: unknown) => () => encoder.encode([{ price: 1, rating: 1 }, { price: 1, rating }]);
    expectThrows(bad(undefined), InvalidRecordError, 'Expected a finite number for field "rating" in record 1 but received undefined');
    expectThrows(bad(NaN), InvalidRecordError, 'Expected a finite number for field "rating" in record 1 but received NaN');
    expectThrows(bad(Infinity), InvalidRecordError, /received Infinity$/);
    expectThrows(bad(-Infinity), InvalidRecordError, /received -Infinity$/);
    expectThrows(bad('4.5'), InvalidRecordError, /received "4.5"$/);
    expectThrows(bad(null), InvalidRecordError, /received null$/);
    expectThrows(bad(true), InvalidRecordError, /received true$/);
  });
});

describe('FeatureEncoder: batches', () => {
  const specs: FeatureSpec[] = [
    { kind: 'categorical', name: 'country', field: 'country', vocabulary: ['us', 'fr'] },
    title({ maxLength: 3 }),
    { kind: 'dense', name: 'stats', fields: ['price'], mean: [0], std: [1] },
  ];
  const encoder = new FeatureEncoder(specs);
  const record = { country: 'fr', title: 'hello world', price: 2 };

  it('uses the real batch size in every shape, an empty batch included', () => {
    const one = encoder.encode([record]);
    expect(one.country!.dims).toEqual([1]);
    expect(one['title.ids']!.dims).toEqual([1, 3]);
    expect(one.stats!.dims).toEqual([1, 1]);
    const none = encoder.encode([]);
    expect(Object.keys(none)).toEqual(['country', 'title.ids', 'title.mask', 'stats']);
    expect(none['title.mask']!.dims).toEqual([0, 3]);
    expect(none.stats!.data.length).toBe(0);
  });

  it('is deterministic, across calls and across encoders', () => {
    const records = Array.from({ length: 50 }, (_, i) => ({ country: i % 3 ? 'us' : 'de', title: `item ${i} Crème`, price: i }));
    const first = encoder.encode(records);
    expect(encoder.encode(records)).toEqual(first);
    expect(new FeatureEncoder(specs).encode(records)).toEqual(first);
    expect(first.country!.data).not.toBe(encoder.encode(records).country!.data); // fresh arrays per batch
  });

  it('rejects records that are not objects, and a batch that is not an array', () => {
    expectThrows(() => encoder.encode([record, null]), InvalidRecordError, 'Expected an object for record 1 but received null');
    expectThrows(() => encoder.encode([record, record, 'x']), InvalidRecordError, 'Expected an object for record 2 but received "x"');
    expectThrows(() => encoder.encode([[record]]), InvalidRecordError, /record 0 but received an array of length 1/);
    expectThrows(() => encoder.encode(record as unknown as unknown[]), InvalidArgumentError, /^Expected an array of records for records/);
  });

  it('keeps its own frozen copy of the specs', () => {
    const vocabulary = ['us', 'fr'];
    const spec: FeatureSpec = { kind: 'categorical', name: 'country', field: 'country', vocabulary };
    const own = new FeatureEncoder([spec]);
    vocabulary.reverse();
    expect(Array.from(own.encode([{ country: 'us' }]).country!.data)).toEqual([1]);
    expect(Object.isFrozen(own.specs[0])).toBe(true);
    expect(Object.isFrozen(own.inputs)).toBe(true);
  });

  it('rejects duplicate feature names and colliding tensor names', () => {
    expectThrows(
      () => new FeatureEncoder([title(), title({ field: 'other' })]),
      InvalidSpecError,
      'Expected a name not already used by specs[0] for the name of specs[1] but received "title"',
    );
    expectThrows(
      () => new FeatureEncoder([title(), { kind: 'categorical', name: 'title.ids', field: 'x', buckets: 3 }]),
      InvalidSpecError,
      'Expected tensor inputs not already fed by feature "title" for specs[1] but received "title.ids"',
    );
    expectThrows(() => new FeatureEncoder([]), InvalidSpecError, /non-empty array of feature specs/);
    expectThrows(() => new FeatureEncoder([title(), { kind: 'text' } as unknown as FeatureSpec]), InvalidSpecError, /for the name of specs\[1\]/);
  });

  it('encodes a feature named like an Object.prototype property', () => {
    const odd = new FeatureEncoder([{ kind: 'dense', name: '__proto__', fields: ['constructor'], mean: [0], std: [1] }]);
    const out = odd.encode([{ constructor: 4 }]);
    expect(Object.keys(out)).toEqual(['__proto__']);
    expect(Array.from(out['__proto__']!.data)).toEqual([4]);
  });
});

describe('validateFeatureSpec', () => {
  it('returns a clean copy of a valid spec', () => {
    const spec = { kind: 'text', name: 't', field: 'f', maxLength: 4, ngrams: 2, vocabulary: ['a', 'a b'] };
    const copy = validateFeatureSpec(spec);
    expect(copy).toEqual(spec);
    expect(copy).not.toBe(spec);
    expect((copy as TextFeature).vocabulary).not.toBe(spec.vocabulary);
    expect(validateFeatureSpec({ kind: 'categorical', name: 'c', field: 'c', buckets: 5, vocabulary: undefined })).toEqual({
      kind: 'categorical',
      name: 'c',
      field: 'c',
      buckets: 5,
    });
  });

  const categorical = { kind: 'categorical', name: 'c', field: 'c', buckets: 10 };
  const text = { kind: 'text', name: 't', field: 'f', maxLength: 4, buckets: 10 };
  const dense = { kind: 'dense', name: 'd', fields: ['x', 'y'], mean: [0, 0], std: [1, 1] };
  const without = <T extends object>(spec: T, key: keyof T) => Object.fromEntries(Object.entries(spec).filter(([k]) => k !== key));
  const rejected: Array<[string, unknown, string | RegExp]> = [
    ['null', null, 'Expected an object for the feature spec but received null'],
    ['an array', [], 'Expected an object for the feature spec but received an array of length 0'],
    ['no name', without(categorical, 'name'), 'Expected a non-empty string for the name of the feature spec but received undefined'],
    ['an empty name', { ...categorical, name: '' }, /for the name of the feature spec but received ""$/],
    ['an unknown kind', { ...categorical, kind: 'sparse' }, `Expected 'categorical', 'text' or 'dense' for the kind of feature "c" but received "sparse"`],
    ['an unknown property', { ...text, ngram: 2 }, 'Expected only kind, name, field, maxLength, ngrams, prefixLength, vocabulary, buckets for the properties of feature "t" but received "ngram"'],
    ['no field', without(categorical, 'field'), 'Expected a non-empty string for field of feature "c" but received undefined'],
    ['both vocabulary and buckets', { ...categorical, vocabulary: ['a'] }, 'Expected exactly one of vocabulary or buckets for feature "c" but received both'],
    ['neither vocabulary nor buckets', without(text, 'buckets'), 'Expected exactly one of vocabulary or buckets for feature "t" but received neither'],
    ['zero buckets', { ...categorical, buckets: 0 }, /^Expected an integer from 1 to 2147483646 for buckets of feature "c" but received 0$/],
    ['fractional buckets', { ...categorical, buckets: 2.5 }, /for buckets of feature "c" but received 2.5$/],
    ['string buckets', { ...categorical, buckets: '10' }, /for buckets of feature "c" but received "10"$/],
    ['too many buckets', { ...categorical, buckets: 2 ** 31 }, /for buckets of feature "c"/],
    ['an empty vocabulary', { ...without(categorical, 'buckets'), vocabulary: [] }, /non-empty array of strings for vocabulary of feature "c"/],
    ['an empty word', { ...without(categorical, 'buckets'), vocabulary: ['a', ''] }, 'Expected a non-empty string for vocabulary[1] of feature "c" but received ""'],
    ['a non-string word', { ...without(categorical, 'buckets'), vocabulary: ['a', 1] }, /for vocabulary\[1\] of feature "c" but received 1$/],
    ['a repeated word', { ...without(categorical, 'buckets'), vocabulary: ['a', 'b', 'a'] }, 'Expected a word not already at vocabulary[0] for vocabulary[2] of feature "c" but received "a"'],
    ['an upper-case text word', { ...without(text, 'buckets'), vocabulary: ['ok', 'New'] }, /^Expected a term as tokenize produces it .* for vocabulary\[1\] of feature "t" but received "New"$/],
    ['a text word with punctuation', { ...without(text, 'buckets'), vocabulary: ['c++'] }, /for vocabulary\[0\] of feature "t" but received "c\+\+"$/],
    ['a 4-gram', { ...without(text, 'buckets'), ngrams: 3, vocabulary: ['a b c d'] }, /at most 3 words joined by single spaces\) .* received "a b c d"$/],
    ['a double space', { ...without(text, 'buckets'), ngrams: 2, vocabulary: ['new  york'] }, /received "new  york"$/],
    ['maxLength 0', { ...text, maxLength: 0 }, /^Expected an integer from 1 to 65536 for maxLength of feature "t" but received 0$/],
    ['fractional maxLength', { ...text, maxLength: 1.5 }, /for maxLength of feature "t" but received 1.5$/],
    ['no maxLength', without(text, 'maxLength'), /for maxLength of feature "t" but received undefined$/],
    ['ngrams 0', { ...text, ngrams: 0 }, 'Expected an integer from 1 to 3 for ngrams of feature "t" but received 0'],
    ['fractional ngrams', { ...text, ngrams: 1.5 }, /for ngrams of feature "t" but received 1.5$/],
    ['ngrams 4', { ...text, ngrams: 4 }, /for ngrams of feature "t" but received 4$/],
    ['prefixLength 0', { ...text, prefixLength: 0 }, 'Expected an integer from 1 to 64 for prefixLength of feature "t" but received 0'],
    ['string prefixLength', { ...text, prefixLength: '5' }, /for prefixLength of feature "t" but received/],
    ['empty fields', { ...dense, fields: [], mean: [], std: [] }, 'Expected a non-empty array of field names for fields of feature "d" but received an array of length 0'],
    ['a repeated field', { ...dense, fields: ['x', 'x'] }, /a field not listed before for fields\[1\] of feature "d" but received "x"$/],
    ['short mean', { ...dense, mean: [0] }, 'Expected an array of 2 numbers (one per field) for mean of feature "d" but received an array of length 1'],
    ['long std', { ...dense, std: [1, 1, 1] }, /for std of feature "d" but received an array of length 3$/],
    ['zero std', { ...dense, std: [1, 0] }, 'Expected a finite number > 0 for std[1] of feature "d" but received 0'],
    ['negative std', { ...dense, std: [-1, 1] }, /for std\[0\] of feature "d" but received -1$/],
    ['NaN mean', { ...dense, mean: [NaN, 0] }, 'Expected a finite number for mean[0] of feature "d" but received NaN'],
    ['a hole in mean', { ...dense, mean: [0, ,] }, 'Expected a finite number for mean[1] of feature "d" but received undefined'],
    ['a dense field property', { ...dense, field: 'x' }, /properties of feature "d" but received "field"$/],
  ];
  it.each(rejected)('rejects %s', (_, spec, message) => {
    expectThrows(() => validateFeatureSpec(spec), InvalidSpecError, message);
  });

  it('gives the EBRIX_INVALID_SPEC code', () => {
    try {
      validateFeatureSpec({ kind: 'nope', name: 'x' });
      expect.unreachable();
    } catch (error) {
      expect((error as EbrixError).code).toBe('EBRIX_INVALID_SPEC');
    }
  });

  it('accepts real terms whose NFKC form would differ (lower-casing after NFKC)', () => {
    // 'H̱' has no precomposed capital; lower-cased it is 'h' + U+0331, which NFKC would compose.
    const [term] = tokenize('H\u0331at');
    expect(term).toBe('h\u0331at');
    expect(() => validateFeatureSpec({ ...text, buckets: undefined, vocabulary: [term] })).not.toThrow();
  });
});

describe('fitVocabulary', () => {
  it('orders by count, then by code-unit string order', () => {
    const values = ['b', 'a', 'c', 'b', 'c', 'a', 'B', 'é', 'é', 'z', 'c'];
    expect(fitVocabulary(values)).toEqual(['c', 'a', 'b', 'é', 'B', 'z']);
  });

  it('is independent of input order', () => {
    const values = Array.from({ length: 500 }, (_, i) => `v${(i * i) % 37}`);
    const next = rng(5);
    const shuffled = [...values].sort(() => next() - 0.5);
    expect(fitVocabulary(shuffled)).toEqual(fitVocabulary(values));
  });

  it('applies minCount and maxSize, and skips empty strings', () => {
    const values = ['x', 'x', 'x', 'y', 'y', 'z', '', '', '', ''];
    expect(fitVocabulary(values, { minCount: 2 })).toEqual(['x', 'y']);
    expect(fitVocabulary(values, { maxSize: 1 })).toEqual(['x']);
    expect(fitVocabulary(values, { maxSize: 10, minCount: 3 })).toEqual(['x']);
    expect(fitVocabulary([])).toEqual([]);
  });

  it('reads any iterable, and feeds a valid text spec through textTerms', () => {
    function* terms(): Generator<string> {
      for (const t of ['Red fox', 'red FOX jumps', 'the fox']) yield* textTerms(t, 2);
    }
    const vocabulary = fitVocabulary(terms());
    expect(vocabulary.slice(0, 3)).toEqual(['fox', 'red', 'red fox']);
    expect(() => new FeatureEncoder([title({ ngrams: 2, buckets: undefined, vocabulary })])).not.toThrow();
  });

  it('rejects non-string values and bad options', () => {
    expectThrows(() => fitVocabulary(['a', 3 as unknown as string]), InvalidArgumentError, 'Expected a string for values[1] but received 3');
    expectThrows(() => fitVocabulary(['a'], { maxSize: 0 }), InvalidArgumentError, /for maxSize but received 0$/);
    expectThrows(() => fitVocabulary(['a'], { minCount: 1.5 }), InvalidArgumentError, /for minCount but received 1.5$/);
    expectThrows(() => fitVocabulary(5 as unknown as string[]), InvalidArgumentError, /iterable of strings for values/);
  });
});

describe('fitDense', () => {
  it('measures mean and population std per field', () => {
    const spec = fitDense('stats', ['a', 'b'], [
      { a: 1, b: 10 },
      { a: 2, b: 10 },
      { a: 3, b: 10 },
      { a: 6, b: 10 },
    ]);
    expect(spec.kind).toBe('dense');
    expect(spec.name).toBe('stats');
    expect(spec.fields).toEqual(['a', 'b']);
    expect(spec.mean[0]).toBeCloseTo(3, 12);
    expect(spec.std[0]).toBeCloseTo(Math.sqrt((4 + 1 + 0 + 9) / 4), 12);
    expect(spec.mean[1]).toBe(10);
    expect(spec.std[1]).toBe(1e-6); // constant field: the floor
  });

  it('keeps precision under a large offset, from a one-shot iterable', () => {
    function* records(): Generator<unknown> {
      for (let i = 0; i < 1000; i++) yield { t: 1e9 + (i % 2) };
    }
    const spec = fitDense('t', ['t'], records());
    expect(spec.mean[0]).toBeCloseTo(1e9 + 0.5, 6);
    expect(spec.std[0]).toBeCloseTo(0.5, 9);
  });

  it('yields a spec the encoder turns into zero-mean, unit-variance columns', () => {
    const next = rng(9);
    const records = Array.from({ length: 2000 }, () => ({ x: next() * 100 - 20, y: next() * 0.01 }));
    const encoder = new FeatureEncoder([fitDense('xy', ['x', 'y'], records)]);
    const data = encoder.encode(records).xy!.data;
    for (let j = 0; j < 2; j++) {
      let sum = 0;
      let squares = 0;
      for (let r = 0; r < records.length; r++) {
        sum += data[r * 2 + j]!;
        squares += data[r * 2 + j]! ** 2;
      }
      expect(sum / records.length).toBeCloseTo(0, 4);
      expect(squares / records.length).toBeCloseTo(1, 4);
    }
  });

  it('rejects invalid values, naming field and record, and an empty input', () => {
    const bad = [{ a: 1 }, { a: 2 }, { a: NaN }];
    expectThrows(() => fitDense('d', ['a'], bad), InvalidRecordError, 'Expected a finite number for field "a" in record 2 but received NaN');
    expectThrows(() => fitDense('d', ['a'], [{ a: 1 }, null]), InvalidRecordError, 'Expected an object for record 1 but received null');
    expectThrows(() => fitDense('d', ['a'], [{ b: 1 }]), InvalidRecordError, /field "a" in record 0 but received undefined$/);
    expectThrows(() => fitDense('d', ['a'], []), InvalidArgumentError, 'Expected at least one record for records but received none');
    expectThrows(() => fitDense('d', [], [{}]), InvalidSpecError, /fields of feature "d"/);
    expectThrows(() => fitDense('', ['a'], [{ a: 1 }]), InvalidSpecError, /for name but received ""$/);
  });
});
