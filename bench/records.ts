// Synthetic request and item records for the models suite: a seeded vocabulary of made-up
// words drawn with a Zipf-like frequency, so that text features see a realistic long tail
// (a few words everywhere, most words rare) and the same seed always gives the same records.

import { Rng } from './datasets.js';

export interface QueryRecord {
  text: string;
  region: string;
}

export interface ItemRecord {
  id: number;
  title: string;
  category: string;
  price: number;
  rating: number;
}

export interface Vocabulary {
  words: string[];
  /** Exponent s of the word frequencies: the word of rank r (from 1) has weight r^-s. */
  zipfExponent: number;
}

const ONSETS = ['b', 'c', 'd', 'f', 'g', 'h', 'j', 'k', 'l', 'm', 'n', 'p', 'r', 's', 't', 'v', 'w', 'z', 'br', 'st', 'tr', 'kl'];
const NUCLEI = ['a', 'e', 'i', 'o', 'u', 'ai', 'ou'];
const CODAS = ['', '', '', 'n', 'r', 's', 'l', 'x'];

/** `size` distinct pronounceable words of two to four syllables; rank order is generation order. */
export function makeVocabulary(size: number, seed: number, zipfExponent = 1.05): Vocabulary {
  const rng = new Rng(seed);
  const pick = (list: readonly string[]): string => list[rng.nextInt(list.length)]!;
  const seen = new Set<string>();
  while (seen.size < size) {
    const syllables = 2 + rng.nextInt(3);
    let word = '';
    for (let s = 0; s < syllables; s++) word += pick(ONSETS) + pick(NUCLEI) + pick(CODAS);
    seen.add(word);
  }
  return { words: [...seen], zipfExponent };
}

/** Draws ranks 0..n-1 with probability ∝ (rank + 1)^-s, by binary search in the cumulative weights. */
export class ZipfSampler {
  readonly #cumulative: Float64Array;

  constructor(n: number, exponent: number) {
    this.#cumulative = new Float64Array(n);
    let total = 0;
    for (let r = 0; r < n; r++) {
      total += (r + 1) ** -exponent;
      this.#cumulative[r] = total;
    }
  }

  sample(rng: Rng): number {
    const cumulative = this.#cumulative;
    const target = rng.nextFloat() * cumulative[cumulative.length - 1]!;
    let lo = 0;
    let hi = cumulative.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (cumulative[mid]! <= target) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

export const REGIONS = Array.from({ length: 48 }, (_, i) => `r${String(i).padStart(2, '0')}`);
export const CATEGORY_COUNT = 2000;

/** Generates both record kinds from one vocabulary; each kind has its own stream of the seed. */
export class RecordGenerator {
  readonly vocabulary: Vocabulary;
  readonly #words: ZipfSampler;
  readonly #regions: ZipfSampler;
  readonly #categories: ZipfSampler;
  readonly #queryRng: Rng;
  readonly #itemRng: Rng;

  constructor(vocabulary: Vocabulary, seed: number) {
    this.vocabulary = vocabulary;
    this.#words = new ZipfSampler(vocabulary.words.length, vocabulary.zipfExponent);
    this.#regions = new ZipfSampler(REGIONS.length, 0.8);
    this.#categories = new ZipfSampler(CATEGORY_COUNT, 0.9);
    this.#queryRng = new Rng(seed ^ 0x51ed);
    this.#itemRng = new Rng(seed ^ 0x17e3);
  }

  #phrase(rng: Rng, words: number): string {
    const out: string[] = [];
    for (let i = 0; i < words; i++) out.push(this.vocabulary.words[this.#words.sample(rng)]!);
    return out.join(' ');
  }

  /** A search request: one to five words and the caller's region. */
  query(): QueryRecord {
    const rng = this.#queryRng;
    return { text: this.#phrase(rng, 1 + rng.nextInt(5)), region: REGIONS[this.#regions.sample(rng)]! };
  }

  /** A catalogue item: a four- to twelve-word title, a category, a log-normal price, a rating. */
  item(id: number): ItemRecord {
    const rng = this.#itemRng;
    const title = this.#phrase(rng, 4 + rng.nextInt(9));
    const category = `cat-${this.#categories.sample(rng)}`;
    const price = Math.round(Math.exp(3 + 1.2 * rng.nextGaussian()) * 100) / 100;
    const rating = Math.round((1 + 4 * rng.nextFloat() ** 0.6) * 10) / 10;
    return { id, title, category, price, rating };
  }

  queries(n: number): QueryRecord[] {
    return Array.from({ length: n }, () => this.query());
  }

  items(n: number, firstId = 0): ItemRecord[] {
    return Array.from({ length: n }, (_, i) => this.item(firstId + i));
  }
}
