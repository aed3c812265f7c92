/**
 * The main job (`npm start`, `ebrix start`): WordNet retrieval on localhost, end to end.
 *
 *   1. the model package: trained (lib/train/wordnet-model.ts) into <dir>/wordnet when there is
 *      none, else loaded;
 *   2. the indexes: every synset embedded with each of the item tower's task outputs into an
 *      HNSW graph (default) or an exact FlatIndex, bound to the model version and saved to
 *      <dir>/wordnet.<task>.hnsw.index (flat: wordnet.<task>.index); later starts map those
 *      files, and a file built by another model version is rebuilt;
 *   3. a Retriever (query tower → top 100 → a hybrid re-ranker: tower score, BM25 and an
 *      exact-name bonus → top 10) behind the HTTP service and its search page, with three
 *      example queries printed on start.
 */
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';

import { FlatIndex } from '../index/flat.js';
import { HnswIndex } from '../index/hnsw.js';
import { MANIFEST_FILE } from '../model/package.js';
import { textTerms } from '../model/tokenize.js';
import { TwoTowerModel } from '../model/two-tower.js';
import { progressBar } from '../progress.js';
import { WORDNET_TASKS, trainWordNet, wordnetItemRecord, wordnetItemText, type WordNetItemRecord } from '../train/wordnet-model.js';
import { loadWordNet } from '../train/wordnet.js';
import { invalid } from '../validate.js';
import { createServer, type EbrixServer } from './http.js';
import { Bm25Scorer } from './lexical.js';
import type { RankCandidate } from './ranker.js';
import { Retriever } from './retriever.js';

export interface WordNetJobOptions {
  /** Folder of the model package and the index (default ./models). */
  dir?: string;
  host?: string;
  port?: number;
  token?: string;
  log?: (line: string) => void;
  /** Index kind (default 'hnsw'): see WordNetIndexKind. */
  index?: WordNetIndexKind;
  /** Resolves when the service should stop (e.g. on SIGINT). */
  until: Promise<unknown>;
  /** Called once the service listens, with its address (tests use it). */
  onListening?: (url: string, retriever: Retriever<{ text: string }, WordNetItemRecord>) => void | Promise<void>;
}

export const EXAMPLE_QUERIES: ReadonlyArray<{ text: string; task: string }> = [
  { text: 'a large wild cat with a striped coat', task: 'gloss' },
  { text: 'she poured ___ into her coffee to sweeten it', task: 'usage' },
  { text: 'automobile', task: 'synonym' },
];

/** Bonus the re-ranker gives an item one of whose words is the whole query (cosine scores lie in [-1, 1]). */
export const EXACT_NAME_BONUS = 0.2;

/**
 * Weight of the BM25 score (of the query against wordnetItemText) in the job's ranker.
 * Chosen on the validation split of the seed-1 default model (top 100 of the exact index,
 * recall@10): gloss 0.389 with the tower alone, 0.407 at 0.005, 0.410 at 0.01, 0.400 at 0.02;
 * usage 0.011 → 0.012 (noise); synonym, with the exact-name bonus, 0.955 at 0 and 0.957 at
 * 0.01. Re-ranking 50 candidates instead of 100 cost 0.005 on gloss and on synonym.
 */
export const LEXICAL_WEIGHT = 0.01;

/**
 * The job's second stage: the tower score, plus LEXICAL_WEIGHT × the BM25 score of the
 * query against the synset's words, hypernyms and lexicographer file, plus the exact-name
 * bonus (exactNameRanker). The tower pools words into one vector; the BM25 term gives back
 * what exact word overlap says. On the test split (seed-1 default model, the job's HNSW
 * graphs) gloss recall@10 goes from 0.376 to 0.401.
 */
export function wordnetRanker(
  records: readonly WordNetItemRecord[],
): (request: { text?: unknown }, candidates: readonly RankCandidate<WordNetItemRecord>[]) => number[] {
  const bm25 = new Bm25Scorer(records.map(wordnetItemText));
  return (request, candidates) => {
    const named = exactNameRanker(request, candidates);
    const text = typeof request.text === 'string' ? request.text : '';
    const lexical = bm25.scores(text, candidates.map((c) => c.id));
    return named.map((score, i) => score + LEXICAL_WEIGHT * lexical[i]!);
  };
}

/**
 * The tower score, plus a bonus when the query is exactly one of the synset's words. Pooling
 * words into one vector can blur an exact name, which is what a one-word (synonym) query is
 * about; a reverse-dictionary or usage query is never a lemma and keeps the tower's order.
 * For the seed-1 default model it lifts synonym recall@10 on the validation split from 0.903
 * to 0.955 (exact index, top 100 re-ranked).
 */
export function exactNameRanker(request: { text?: unknown }, candidates: readonly RankCandidate<WordNetItemRecord>[]): number[] {
  const query = textTerms(typeof request.text === 'string' ? request.text : '').join(' ');
  return candidates.map((c) => {
    const named = query.length > 0 && c.record !== undefined && normalizedNames(c.record).includes(query);
    return c.towerScore + (named ? EXACT_NAME_BONUS : 0);
  });
}

/**
 * A record's words as the tokenizer sees them, computed once per record: tokenizing the words
 * of 100 candidates on every request cost about a millisecond, more than the query tower.
 */
const namesOf = new WeakMap<WordNetItemRecord, readonly string[]>();
function normalizedNames(record: WordNetItemRecord): readonly string[] {
  let names = namesOf.get(record);
  if (names === undefined) {
    names = (record.words ?? []).map((word) => textTerms(word).join(' '));
    namesOf.set(record, names);
  }
  return names;
}

/** The job's index per item output: exact flat scan, or an HNSW graph (approximate, much faster under load). */
export type WordNetIndexKind = 'flat' | 'hnsw';
export const WORDNET_INDEX_KINDS: readonly WordNetIndexKind[] = ['flat', 'hnsw'];

/**
 * The job's HNSW settings. The search list (`expansion`) is never shorter than the 100
 * candidates the ranker asks for; at 128 the held-out recall@10 of the seed-1 model was
 * within 1% (gloss) and 2% (synonym) of the exact index's.
 */
export const WORDNET_HNSW = { connectivity: 16, expansionAdd: 128, expansion: 128 } as const;

export type WordNetIndex = FlatIndex | HnswIndex;

export interface PreparedWordNet {
  model: TwoTowerModel;
  records: WordNetItemRecord[];
  /** One index per item-tower output. */
  indexes: Map<string, WordNetIndex>;
  /** The index each task searches. */
  taskIndexes: Record<string, WordNetIndex>;
  kind: WordNetIndexKind;
  dispose(): Promise<void>;
}

export interface PrepareWordNetOptions {
  /** Folder of the model package and the indexes (default ./models). */
  dir?: string;
  /** Index kind (default 'hnsw'). */
  index?: WordNetIndexKind;
  log?: (line: string) => void;
}

/**
 * Steps 1 and 2 of the job: the model package (trained when there is none) and one index per
 * item-tower output (opened when saved by this model version, else embedded, built and saved).
 */
export async function prepareWordNet(options: PrepareWordNetOptions = {}): Promise<PreparedWordNet> {
  const log = options.log ?? (() => {});
  const kind = options.index ?? 'hnsw';
  if (!WORDNET_INDEX_KINDS.includes(kind)) throw invalid(`one of ${WORDNET_INDEX_KINDS.join(', ')}`, 'index', kind);
  const dir = path.resolve(options.dir ?? 'models');
  const modelDir = path.join(dir, 'wordnet');
  if (!existsSync(path.join(modelDir, MANIFEST_FILE))) {
    log(`no model in ${modelDir}: training the WordNet model (once; under 2 minutes on 2 cores)`);
    const result = await trainWordNet({ out: modelDir, evaluate: true, log });
    for (const [task, m] of Object.entries(result.test?.perTask ?? {})) {
      log(`  held-out ${task.padEnd(8)} recall@10 ${m.recallAt[10]!.toFixed(3)}  MRR ${m.mrr.toFixed(3)}`);
    }
    // Indexes built by an older model (the versions differ, so they would be rebuilt anyway).
    for (const task of WORDNET_TASKS) {
      for (const k of WORDNET_INDEX_KINDS) await rm(wordnetIndexFile(dir, task, k), { force: true });
    }
  }
  const [model, items] = await Promise.all([TwoTowerModel.load(modelDir), loadWordNet()]);
  const records = items.map(wordnetItemRecord);
  const indexes = new Map<string, WordNetIndex>();
  const dispose = async (): Promise<void> => {
    for (const index of indexes.values()) index.dispose();
    await model.dispose();
  };
  try {
    const outputs = model.manifest.towers.item.taskOutputs;
    for (const task of model.manifest.tasks) {
      const output = outputs[task]!;
      if (indexes.has(output)) continue;
      indexes.set(output, await openOrBuildIndex(wordnetIndexFile(dir, output, kind), kind, model, records, task, log));
    }
    const taskIndexes = Object.fromEntries(model.manifest.tasks.map((task) => [task, indexes.get(outputs[task]!)!]));
    return { model, records, indexes, taskIndexes, kind, dispose };
  } catch (error) {
    await dispose();
    throw error;
  }
}

/** Where the job keeps the index of one item output. */
export function wordnetIndexFile(dir: string, output: string, kind: WordNetIndexKind): string {
  return path.join(dir, kind === 'flat' ? `wordnet.${output}.index` : `wordnet.${output}.${kind}.index`);
}

export async function runWordNetJob(options: WordNetJobOptions): Promise<void> {
  const log = options.log ?? ((line: string) => console.log(line));
  const started = performance.now();
  const seconds = (): string => `${((performance.now() - started) / 1000).toFixed(1)} s`;
  const prepared = await prepareWordNet({ ...(options.dir !== undefined ? { dir: options.dir } : {}), index: options.index ?? 'hnsw', log });
  const { model, indexes } = prepared;
  let server: EbrixServer | undefined;
  let retriever: Retriever<{ text: string }, WordNetItemRecord> | undefined;
  try {
    const index = indexes.get(model.manifest.towers.item.output) ?? indexes.values().next().value!;
    log(`model ${model.manifest.name} ${model.version} and ${indexes.size} ${prepared.kind} indexes of ${index.size} synsets ready after ${seconds()}`);

    retriever = wordnetRetriever(prepared);
    server = await createServer({
      retriever,
      host: options.host ?? '127.0.0.1',
      port: options.port ?? 8080,
      ...(options.token !== undefined ? { token: options.token } : {}),
    });
    const url = await server.listen();
    log(`serving WordNet search on ${url} (tasks: ${WORDNET_TASKS.join(', ')}; started in ${seconds()}); Ctrl-C stops`);
    for (const example of EXAMPLE_QUERIES) {
      const result = await retriever.retrieve({ text: example.text }, { task: example.task, k: 5 });
      const found = result.items.map((it) => `${it.record?.lemmas ?? String(it.id)} (${it.score.toFixed(3)})`).join('; ');
      log(`  [${example.task}] "${example.text}" → ${found}`);
    }
    await options.onListening?.(url, retriever);
    await options.until;
    log('stopping: draining requests in flight');
  } finally {
    await server?.close();
    await retriever?.dispose();
    await prepared.dispose();
  }
}

/** The job's Retriever over prepared indexes: query tower → 100 candidates → wordnetRanker → top 10. */
export function wordnetRetriever(prepared: PreparedWordNet): Retriever<{ text: string }, WordNetItemRecord> {
  const { model, indexes, taskIndexes, records } = prepared;
  return new Retriever<{ text: string }, WordNetItemRecord>({
    model,
    index: indexes.get(model.manifest.towers.item.output) ?? indexes.values().next().value!,
    taskIndexes,
    items: records,
    ranker: wordnetRanker(records),
    candidates: 100,
    k: 10,
    ...(prepared.kind === 'hnsw' ? { search: { expansion: WORDNET_HNSW.expansion } } : {}),
  });
}

/** The saved index of one item output, or a new one embedded with that output and saved. */
async function openOrBuildIndex(
  file: string,
  kind: WordNetIndexKind,
  model: TwoTowerModel,
  records: readonly WordNetItemRecord[],
  task: string,
  log: (line: string) => void,
): Promise<WordNetIndex> {
  if (existsSync(file)) {
    const opened = kind === 'flat' ? await FlatIndex.open(file) : await HnswIndex.open(file);
    if (opened.modelVersion === model.version && opened.size === records.length) return opened;
    log(`${file} was built by model ${opened.modelVersion ?? '(none)'}: rebuilding it for ${model.version}`);
    opened.dispose();
  }
  log(`embedding ${records.length} synsets with the item tower's ${task} output`);
  const vectors = new Float32Array(records.length * model.dim);
  const bar = progressBar('embed');
  const batch = 2048;
  for (let start = 0; start < records.length; start += batch) {
    const part = records.slice(start, start + batch);
    vectors.set(await model.embedItems(part, { task }), start * model.dim);
    bar.update(start + part.length, records.length);
  }
  bar.finish();
  const ids = records.map((_, i) => i);
  let index: WordNetIndex;
  if (kind === 'flat') {
    index = new FlatIndex({ dim: model.dim, metric: 'ip', modelVersion: model.version });
  } else {
    log(`building the ${task} HNSW graph (M ${WORDNET_HNSW.connectivity}, efConstruction ${WORDNET_HNSW.expansionAdd})`);
    index = new HnswIndex({ dim: model.dim, metric: 'ip', modelVersion: model.version, connectivity: WORDNET_HNSW.connectivity, expansionAdd: WORDNET_HNSW.expansionAdd });
  }
  try {
    await index.add(ids, vectors);
    await index.save(file);
  } catch (error) {
    index.dispose();
    throw error;
  }
  return index;
}
