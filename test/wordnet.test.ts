import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';
import { EXACT_NAME_BONUS, LEXICAL_WEIGHT, exactNameRanker, wordnetRanker } from '../lib/serve/wordnet-job.js';
import { Bm25Scorer } from '../lib/serve/lexical.js';
import { wordnetItemText, type WordNetItemRecord } from '../lib/train/wordnet-model.js';

import { CorruptFileError, InvalidArgumentError, IoError } from '../lib/errors.js';
import {
  loadWordNet,
  maskWords,
  splitGloss,
  wordnetQueries,
  type WordNetItem,
  type WordNetQuery,
  type WordNetSplit,
} from '../lib/train/wordnet.js';

let items: WordNetItem[];
let split: WordNetSplit;
let loadMs: number;

beforeAll(async () => {
  const start = performance.now();
  items = await loadWordNet();
  loadMs = performance.now() - start;
  const splitStart = performance.now();
  split = wordnetQueries(items);
  console.log(
    `WordNet: loaded ${items.length} synsets in ${loadMs.toFixed(0)} ms; ` +
      `queries and split in ${(performance.now() - splitStart).toFixed(0)} ms`,
  );
});

function byKey(key: string): WordNetItem {
  const item = items.find((i) => i.key === key);
  if (item === undefined) throw new Error(`no synset ${key}`);
  return item;
}

function countByTask(queries: readonly WordNetQuery[]): Record<string, number> {
  const counts: Record<string, number> = { gloss: 0, usage: 0, synonym: 0 };
  for (const q of queries) counts[q.task]!++;
  return counts;
}

describe('loadWordNet', () => {
  it('reads every synset of WordNet 3.1, in pos then file order, with ids 0..n-1', () => {
    const perPos: Record<string, number> = {};
    for (const item of items) perPos[item.pos] = (perPos[item.pos] ?? 0) + 1;
    console.log('WordNet synsets per pos:', perPos);
    expect(perPos).toEqual({ noun: 82192, verb: 13789, adj: 18185, adv: 3625 });
    expect(items.length).toBe(117791);
    expect(items.length).toBeGreaterThan(110_000);
    expect(items.length).toBeLessThan(125_000);
    expect(items.every((item, i) => item.id === i)).toBe(true);
    const order = ['noun', 'verb', 'adj', 'adv'];
    const outOfOrder = items.filter((b, i) => {
      const a = items[i - 1];
      return a !== undefined && !(order.indexOf(a.pos) < order.indexOf(b.pos) || (a.pos === b.pos && a.key < b.key));
    });
    expect(outOfOrder).toEqual([]);
    expect(new Set(items.map((i) => i.key)).size).toBe(items.length);
    expect(new Set(items.map((i) => i.lexfile)).size).toBe(45);
    // Every synset but the root 'entity' has a hypernym among nouns; verbs often have none.
    expect(items.filter((i) => i.pos === 'noun' && i.hypernyms === '').map((i) => i.lemmas)).toEqual(['entity']);
    expect(items.every((i) => i.definition !== '' && i.words.length > 0)).toBe(true);
    expect(items.every((i) => i.lemmas === i.words.join(', ') && !i.lemmas.includes('_'))).toBe(true);
  });

  it('takes a couple of seconds at most', () => {
    expect(loadMs).toBeLessThan(5_000);
  });

  it('parses the tiger (the animal): words, hypernym, lexicographer file, gloss', () => {
    expect(byKey('n:02132256')).toEqual({
      id: expect.any(Number),
      key: 'n:02132256',
      lemmas: 'tiger, Panthera tigris',
      words: ['tiger', 'Panthera tigris'],
      pos: 'noun',
      lexfile: 'noun.animal',
      hypernyms: 'big cat, cat',
      definition: 'large feline of forests in most of Asia having a tawny coat with black stripes; endangered',
      examples: [],
    });
  });

  it('splits the examples off the definition', () => {
    const person = byKey('n:10730281');
    expect(person.lexfile).toBe('noun.person');
    expect(person.definition).toBe('a fierce or audacious person');
    expect(person.examples).toEqual(["he's a tiger on the tennis court", 'it aroused the tiger in me']);
  });

  it('parses a verb past its frames', () => {
    expect(byKey('v:00002724')).toMatchObject({
      lemmas: 'choke',
      pos: 'verb',
      lexfile: 'verb.body',
      hypernyms: 'breathe, take a breath, respire, suspire',
      definition: 'breathe with great difficulty, as when experiencing a strong emotion',
      examples: ['She choked with emotion when she spoke about her deceased husband'],
    });
  });

  it('parses an adjective satellite as adj and drops the syntactic marker', () => {
    expect(byKey('a:00019769')).toMatchObject({
      lemmas: 'handy, ready to hand',
      words: ['handy', 'ready to hand'],
      pos: 'adj',
      lexfile: 'adj.all',
      hypernyms: '',
      definition: 'easy to reach',
      examples: ['found a handy spot for the can opener'],
    });
    expect(items.some((i) => i.words.some((w) => /\((a|p|ip)\)/.test(w)))).toBe(false);
  });

  it('reads the dictionary folder it is given and fails clearly without one', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'ebrix-wordnet-'));
    try {
      await expect(loadWordNet({ dict: dir })).rejects.toThrow(IoError);
      await expect(loadWordNet({ dict: dir })).rejects.toThrow(/data\.noun/);
      const header = '  1 This software and database is being provided to you, the LICENSEE, by  \n';
      await writeFile(
        path.join(dir, 'data.noun'),
        header +
          '00000001 03 n 01 thing 0 000 | a thing; "a thing or two"  \n' +
          '00000002 05 n 02 big_cat 0 cat 0 001 @ 00000001 n 0000 | a cat  \n',
      );
      await expect(loadWordNet({ dict: dir })).rejects.toThrow(/Cannot read the WordNet file .*data\.verb/);
      await writeFile(path.join(dir, 'data.verb'), '00000001 29 v 01 purr 0 000 01 + 01 00 | sound like a cat  \n');
      await writeFile(path.join(dir, 'data.adj'), '00000001 00 s 01 feline(a) 0 000 | catlike  \n');
      await writeFile(path.join(dir, 'data.adv'), '');
      const small = await loadWordNet({ dict: dir });
      expect(small.map((i) => [i.key, i.lemmas, i.pos, i.lexfile, i.hypernyms])).toEqual([
        ['n:00000001', 'thing', 'noun', 'noun.Tops', ''],
        ['n:00000002', 'big cat, cat', 'noun', 'noun.animal', 'thing'],
        ['v:00000001', 'purr', 'verb', 'verb.body', ''],
        ['a:00000001', 'feline', 'adj', 'adj.all', ''],
      ]);
      expect(small[0]!.examples).toEqual(['a thing or two']);

      await writeFile(path.join(dir, 'data.adv'), '00000001 02 r 01 fast 0 001 @ 00000009 r 0000 | quickly  \n');
      await expect(loadWordNet({ dict: dir })).rejects.toThrow(CorruptFileError);
      await expect(loadWordNet({ dict: dir })).rejects.toThrow('r:00000001 points to a missing hypernym r:00000009');
      await writeFile(path.join(dir, 'data.adv'), '00000001 77 r 01 fast 0 000 | quickly  \n');
      await expect(loadWordNet({ dict: dir })).rejects.toThrow(/data\.adv at line 1: bad lex_filenum/);
      await writeFile(path.join(dir, 'data.adv'), '00000001 02 r 01 fast 0 003 | quickly  \n');
      await expect(loadWordNet({ dict: dir })).rejects.toThrow(CorruptFileError);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('splitGloss', () => {
  it('takes quoted examples, drops attributions, keeps other quotes and notes in the definition', () => {
    expect(splitGloss('one; "ex one; with a semicolon"; "ex two"')).toEqual({
      definition: 'one',
      examples: ['ex one; with a semicolon', 'ex two'],
    });
    expect(splitGloss('kindness; "the quality of mercy is not strained"--Shakespeare')).toEqual({
      definition: 'kindness',
      examples: ['the quality of mercy is not strained'],
    });
    expect(splitGloss('a complete extent or range: "a face that expressed a gamut of emotions"')).toEqual({
      definition: 'a complete extent or range',
      examples: ['a face that expressed a gamut of emotions'],
    });
    expect(splitGloss('a demand especially in the phrase "the call of duty"')).toEqual({
      definition: 'a demand especially in the phrase "the call of duty"',
      examples: [],
    });
    expect(splitGloss("at any place; \"you can find it anywhere\"; (`anyplace' is informal)")).toEqual({
      definition: "at any place; (`anyplace' is informal)",
      examples: ['you can find it anywhere'],
    });
  });

  it('leaves no example quote in a definition of the real data but a few dozen', () => {
    const withQuotes = items.filter((i) => i.definition.includes('"'));
    expect(withQuotes.length).toBeLessThan(40);
    expect(items.reduce((n, i) => n + i.examples.length, 0)).toBe(48556);
  });
});

describe('maskWords', () => {
  it('masks the words, their regular inflections and multi-word lemmas, case-insensitively', () => {
    expect(maskWords("he's a Tiger; two tigers", ['tiger'])).toBe("he's a ___; two ___");
    expect(maskWords('she baked bread; baking is fun; a baker bakes', ['bake'])).toBe(
      'she ___ bread; ___ is fun; a ___ ___',
    );
    expect(maskWords('he stopped; stopping; stops', ['stop'])).toBe('he ___; ___; ___');
    expect(maskWords('she carried it; he carries; carrying', ['carry'])).toBe('she ___ it; he ___; ___');
    expect(maskWords('the happiest, happier days', ['happy'])).toBe('the ___, ___ days');
    expect(maskWords('Both sides have to give up some claims; giving up', ['abandon', 'give up'])).toBe(
      'Both sides have to ___ some claims; ___',
    );
    expect(maskWords('Big cats and a cat; a big-cat house', ['big cat', 'cat'])).toBe('___ and a ___; a ___ house');
    expect(maskWords('a catalogue, a concat, cattle', ['cat'])).toBe('a catalogue, a concat, cattle');
    expect(maskWords('the race ran on', ['run'])).toBe('the race ran on');
  });

  it('matches words in capitals as written and single letters without inflections', () => {
    expect(maskWords('a typical circuit carries 50 amps or 50 A', ['ampere', 'amp', 'A'])).toBe(
      'a typical circuit carries 50 ___ or 50 ___',
    );
    expect(maskWords('keep the OR aseptic or else', ['operating room', 'OR'])).toBe('keep the ___ aseptic or else');
    expect(maskWords("`ane' is Scottish", ['one', '1', 'i', 'ane'])).toBe("`___' is Scottish");
    expect(maskWords('the kB and the KB', ['kB'])).toBe('the ___ and the ___');
    expect(maskWords('CPAs prepare tax returns; NO HAZMATS', ['certified public accountant', 'CPA', 'HAZMAT'])).toBe(
      '___ prepare tax returns; NO ___',
    );
  });

  it('masks known examples of the real data', () => {
    const all = split.train.concat(split.valid, split.test);
    const usage = (key: string) => {
      const id = byKey(key).id;
      return all.filter((q) => q.task === 'usage' && q.item === id);
    };
    expect(usage('n:10730281').map((q) => q.text)).toEqual(["he's a ___ on the tennis court", 'it aroused the ___ in me']);
    expect(usage('v:00002724').map((q) => q.text)).toEqual(['She ___ with emotion when she spoke about her deceased husband']);
    expect(usage('v:00614907').map((q) => q.text)).toEqual([
      'He ___ the thought of asking for her hand in marriage',
      'Both sides have to ___ some claims in these negotiations',
    ]);
  });

  it('masks most usage examples (irregular forms and paraphrases are left as they are)', () => {
    const usage = split.train.concat(split.valid, split.test).filter((q) => q.task === 'usage');
    const masked = usage.filter((q) => q.text.includes('___')).length;
    console.log(`usage: ${masked} of ${usage.length} examples masked (${((100 * masked) / usage.length).toFixed(1)}%)`);
    expect(usage.length).toBe(48556);
    expect(masked).toBe(46929);
  });
});

describe('wordnetQueries', () => {
  it('derives gloss, usage and synonym queries', () => {
    const counts = {
      train: countByTask(split.train),
      valid: countByTask(split.valid),
      test: countByTask(split.test),
    };
    console.log('WordNet queries per split and task:', counts);
    const all = split.train.concat(split.valid, split.test);
    expect(countByTask(all)).toEqual({ gloss: 117791, usage: 48556, synonym: 207272 });
    expect(all.filter((q) => q.task === 'synonym').length).toBe(items.reduce((n, i) => n + i.words.length, 0));
    const tiger = byKey('n:02132256');
    expect(all.filter((q) => q.item === tiger.id)).toEqual([
      { task: 'gloss', text: tiger.definition, item: tiger.id },
      { task: 'synonym', text: 'tiger', item: tiger.id },
      { task: 'synonym', text: 'Panthera tigris', item: tiger.id },
    ]);
  });

  it('holds out whole synsets, in the asked fractions', () => {
    const { valid, test } = split.heldOutItems;
    expect(valid.length).toBe(Math.round(0.05 * items.length));
    expect(test.length).toBe(Math.round(0.05 * items.length));
    const validSet = new Set(valid);
    const testSet = new Set(test);
    expect(valid.some((id) => testSet.has(id))).toBe(false);
    expect([...valid].sort((a, b) => a - b)).toEqual(valid);
    expect(split.valid.every((q) => validSet.has(q.item))).toBe(true);
    expect(split.test.every((q) => testSet.has(q.item))).toBe(true);
    expect(split.train.some((q) => validSet.has(q.item) || testSet.has(q.item))).toBe(false);
    // Every held-out synset brings its gloss along.
    expect(new Set(split.test.map((q) => q.item)).size).toBe(test.length);
    // The held-out synsets are spread over the parts of speech, not taken from the front.
    const testPos = new Set(test.map((id) => items[id]!.pos));
    expect(testPos.size).toBe(4);
  });

  it('is deterministic for a seed and differs across seeds', () => {
    const again = wordnetQueries(items);
    expect(again.heldOutItems).toEqual(split.heldOutItems);
    // Compared as text: a deep toEqual over 18k queries takes seconds.
    expect(JSON.stringify(again.test)).toBe(JSON.stringify(split.test));
    expect(JSON.stringify(again.train)).toBe(JSON.stringify(split.train));
    const other = wordnetQueries(items, { seed: 2 });
    expect(other.heldOutItems.test).not.toEqual(split.heldOutItems.test);
    const firstTest = new Set(split.heldOutItems.test);
    const overlap = other.heldOutItems.test.filter((id) => firstTest.has(id)).length;
    expect(overlap).toBeLessThan(0.2 * split.heldOutItems.test.length);
  });

  it('takes other fractions, including none', () => {
    const subset = items.slice(0, 1000);
    const s = wordnetQueries(subset, { seed: 7, valid: 0.1, test: 0.25 });
    expect(s.heldOutItems.valid.length).toBe(100);
    expect(s.heldOutItems.test.length).toBe(250);
    const none = wordnetQueries(subset, { valid: 0, test: 0 });
    expect(none.valid).toEqual([]);
    expect(none.test).toEqual([]);
    expect(none.train.length).toBe(s.train.length + s.valid.length + s.test.length);
  });

  it('rejects bad options with the usual message', () => {
    expect(() => wordnetQueries(items, { valid: 1.5 })).toThrow(InvalidArgumentError);
    expect(() => wordnetQueries(items, { valid: 0.6, test: 0.6 })).toThrow(/Expected fractions that sum to at most 1/);
    expect(() => wordnetQueries(items, { seed: -1 })).toThrow(
      'Expected an integer from 0 to 2^32-1 for options.seed but received -1',
    );
    expect(() => wordnetQueries('x' as unknown as WordNetItem[])).toThrow(InvalidArgumentError);
  });
});

describe('the main job’s exact-name ranker', () => {
  const record = (words: string[]): WordNetItemRecord => ({ key: words[0]!, lemmas: words.join(' '), words, hypernyms: '', pos: 'noun', lexfile: 'noun.Tops' });
  const candidates = [
    { id: 1n, towerScore: 0.9, record: record(['motorcar', 'machine']) },
    { id: 2n, towerScore: 0.8, record: record(['Car', 'auto', 'Automobile']) },
    { id: 3n, towerScore: 0.7, record: undefined },
  ];

  it('adds its bonus to a candidate one of whose words is the whole query, as the tokenizer normalises both', () => {
    const scores = exactNameRanker({ text: '  AUTOMOBILE ' }, candidates);
    expect(scores[0]).toBeCloseTo(0.9, 12);
    expect(scores[1]).toBeCloseTo(0.8 + EXACT_NAME_BONUS, 12);
    expect(scores[2]).toBeCloseTo(0.7, 12);
    // Asked again (the names are cached per record): the same scores.
    expect(Array.from(exactNameRanker({ text: 'automobile' }, candidates))).toEqual(Array.from(scores));
  });

  it('keeps the tower order for a query that names no candidate, or a part of a name only', () => {
    expect(exactNameRanker({ text: 'a machine for driving' }, candidates)).toEqual([0.9, 0.8, 0.7]);
    expect(exactNameRanker({ text: '' }, candidates)).toEqual([0.9, 0.8, 0.7]);
    expect(exactNameRanker({}, candidates)).toEqual([0.9, 0.8, 0.7]);
  });
});

describe('the main job’s hybrid ranker', () => {
  const records: WordNetItemRecord[] = [
    { key: 'a', lemmas: 'tiger Panthera_tigris', words: ['tiger', 'Panthera_tigris'], hypernyms: 'big_cat cat', pos: 'noun', lexfile: 'noun.animal' },
    { key: 'b', lemmas: 'lion', words: ['lion'], hypernyms: 'big_cat cat', pos: 'noun', lexfile: 'noun.animal' },
    { key: 'c', lemmas: 'coat', words: ['coat'], hypernyms: 'overgarment', pos: 'noun', lexfile: 'noun.artifact' },
    { key: 'd', lemmas: 'stripe', words: ['stripe'], hypernyms: 'band', pos: 'noun', lexfile: 'noun.shape' },
  ];
  const candidates = (scores: number[]) => scores.map((towerScore, i) => ({ id: BigInt(i), towerScore, record: records[i] }));

  it('adds the weighted BM25 score of the query against each synset’s text, and the exact-name bonus', () => {
    const ranker = wordnetRanker(records);
    const bm25 = new Bm25Scorer(records.map(wordnetItemText));
    const query = 'a striped big cat, a tiger';
    const lexical = bm25.scores(query, [0, 1, 2, 3]);
    expect(lexical[0]).toBeGreaterThan(lexical[1]!); // 'tiger' on top of the shared 'big' and 'cat'
    expect(lexical[1]).toBeGreaterThan(0);
    expect(lexical[2]).toBe(0);
    const scores = ranker({ text: query }, candidates([0.5, 0.6, 0.7, 0.55]));
    [0.5, 0.6, 0.7, 0.55].forEach((tower, i) => expect(scores[i]).toBeCloseTo(tower + LEXICAL_WEIGHT * lexical[i]!, 12));
    // 'coat' names synset c: the bonus, and its BM25 score.
    const named = ranker({ text: 'COAT' }, candidates([0.5, 0.6, 0.7, 0.55]));
    expect(named[2]).toBeCloseTo(0.7 + EXACT_NAME_BONUS + LEXICAL_WEIGHT * bm25.scores('coat', [2])[0]!, 12);
    expect(named[0]).toBeCloseTo(0.5, 12);
    // No text: the tower's scores.
    expect(ranker({}, candidates([0.5, 0.6, 0.7, 0.55]))).toEqual([0.5, 0.6, 0.7, 0.55]);
  });

  it('changes the order where the words match: a close second by tower score overtakes on them', () => {
    const ranker = wordnetRanker(records);
    const list = candidates([0.5, 0.505, 0.2, 0.2]);
    const order = (scores: ArrayLike<number>) => [...list.keys()].sort((a, b) => scores[b]! - scores[a]!);
    expect(order(list.map((c) => c.towerScore))).toEqual([1, 0, 2, 3]);
    expect(order(ranker({ text: 'a large wild cat, a tiger' }, list))).toEqual([0, 1, 2, 3]);
  });
});
