/**
 * The serving commands of the `ebrix` CLI (lib/cli.ts parses the command line and calls
 * these): embed a JSONL file of item records, build an index from one, search an index, and
 * serve one over HTTP.
 *
 * Item files hold one JSON object per line. An item's id is its `idField` (a non-negative
 * integer, or a string of digits for ids past 2^53), or with idField '#' its position in the
 * file, counting from 0.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream, type WriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';

import { CorruptFileError, InvalidArgumentError, InvalidSpecError } from '../errors.js';
import type { Filter } from '../index/filter.js';
import { FlatIndex, type VectorStorage } from '../index/flat.js';
import { HnswIndex } from '../index/hnsw.js';
import { toIdArray, type Ids } from '../index/ids.js';
import { IvfPqIndex, type IvfPqRefine } from '../index/ivfpq.js';
import { IndexStore, openIndex, type StoredIndex } from '../index/store.js';
import { TwoTowerModel } from '../model/two-tower.js';
import { progressBar } from '../progress.js';
import { embedCorpus, type VectorSink } from './embed-corpus.js';
import { createServer } from './http.js';
import { MemoryStore } from './memory.js';
import { OnnxRanker } from './ranker.js';
import { asIoError } from './atomic-file.js';
import { countLines, readJsonl } from '../train/jsonl.js';
import { Retriever, type RetrieveResult } from './retriever.js';

type ItemRecord = Record<string, unknown>;

export interface ItemFileOptions {
  /** JSONL file of item records. */
  items: string;
  /** The record field holding the id, or '#' for the position in the file (default 'id'). */
  idField: string;
}

export interface ModelOptions {
  /** Model package directory. */
  model: string;
  /** onnxruntime intra-op threads. */
  threads?: number;
  /** Embed with this task head. */
  task?: string;
}

export type Log = (line: string) => void;

/** Reads item records with their ids; the ids are looked up by record object. */
function itemsWithIds(options: ItemFileOptions, ids: WeakMap<object, bigint>): AsyncGenerator<ItemRecord> {
  const { items, idField } = options;
  return (async function* () {
    let position = 0;
    for await (const value of readJsonl<unknown>(items)) {
      if (value === null || typeof value !== 'object' || Array.isArray(value)) {
        throw new CorruptFileError(`${items}: record ${position} is not a JSON object`);
      }
      const record = value as ItemRecord;
      ids.set(record, idField === '#' ? BigInt(position) : parseId(record[idField], `${items}: record ${position}, field "${idField}"`));
      position++;
      yield record;
    }
  })();
}

function parseId(value: unknown, where: string): bigint {
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) return BigInt(value);
  if (typeof value === 'string' && /^[0-9]{1,20}$/.test(value) && BigInt(value) < 0xffff_ffff_ffff_ffffn) return BigInt(value);
  throw new InvalidArgumentError(`Expected a non-negative integer id (or a string of digits) for ${where} but received ${JSON.stringify(value) ?? 'nothing'}`);
}

async function loadModel(options: ModelOptions): Promise<TwoTowerModel> {
  return TwoTowerModel.load(options.model, options.threads ? { threads: options.threads } : {});
}

/** Writes to a temporary file beside `file`, renamed over it once complete. */
async function writeThenRename(file: string, write: (out: WriteStream) => Promise<void>): Promise<void> {
  const temp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const out = createWriteStream(temp);
  try {
    await write(out);
    await new Promise<void>((resolve, reject) => {
      out.once('error', reject);
      out.end(resolve);
    });
    await rename(temp, file);
  } catch (error) {
    out.destroy();
    await rm(temp, { force: true });
    throw asIoError(error, file);
  }
}

function written(out: WriteStream, chunk: string | Uint8Array): Promise<void> {
  // Waits for 'drain' when the stream's buffer is full, so a large corpus never piles up in memory.
  return out.write(chunk) ? Promise.resolve() : new Promise((resolve, reject) => {
    out.once('drain', resolve);
    out.once('error', reject);
  });
}

export interface EmbedCommandOptions extends ItemFileOptions, ModelOptions {
  out: string;
  /** jsonl: {"id": "…", "vector": […]} per line; f32: raw little-endian float32 rows, ids in <out>.ids (one per line). */
  format: 'jsonl' | 'f32';
  batch: number;
  log: Log;
}

export async function embedCommand(options: EmbedCommandOptions): Promise<void> {
  const model = await loadModel(options);
  try {
    const total = await countLines(options.items);
    const ids = new WeakMap<object, bigint>();
    const started = performance.now();
    let count = 0;
    const run = async (vectorsOut: WriteStream, idsOut: WriteStream | undefined): Promise<void> => {
      const sink: VectorSink = {
        dim: model.dim,
        async add(batchIds: Ids, vectors: Float32Array) {
          const idArray = toIdArray(batchIds);
          count += idArray.length;
          if (idsOut === undefined) {
            const lines: string[] = [];
            for (let i = 0; i < idArray.length; i++) {
              lines.push(JSON.stringify({ id: String(idArray[i]), vector: Array.from(vectors.subarray(i * model.dim, (i + 1) * model.dim)) }));
            }
            await written(vectorsOut, `${lines.join('\n')}\n`);
          } else {
            const bytes = new Uint8Array(vectors.byteLength);
            new Float32Array(bytes.buffer).set(vectors);
            await written(vectorsOut, bytes);
            await written(idsOut, `${Array.from(idArray, String).join('\n')}\n`);
          }
        },
      };
      await embedCorpus({
        model,
        items: itemsWithIds(options, ids),
        index: sink,
        id: (record) => ids.get(record)!,
        batchSize: options.batch,
        total,
        ...(options.task !== undefined ? { task: options.task } : {}),
      });
    };
    if (options.format === 'jsonl') {
      await writeThenRename(options.out, (out) => run(out, undefined));
    } else {
      await writeThenRename(options.out, (out) => writeThenRename(`${options.out}.ids`, (idsOut) => run(out, idsOut)));
    }
    const seconds = (performance.now() - started) / 1e3;
    options.log(
      `embedded ${count.toLocaleString('en-US')} items with ${model.manifest.name} (version ${model.version}, dim ${model.dim}) ` +
        `into ${options.out}${options.format === 'f32' ? ` and ${options.out}.ids` : ''} in ${seconds.toFixed(1)} s`,
    );
  } finally {
    await model.dispose();
  }
}

export interface BuildCommandOptions extends ItemFileOptions, ModelOptions {
  /** Write the index file here… */
  out?: string;
  /** …or publish it as the next version of this IndexStore. */
  store?: string;
  type: 'flat' | 'ivfpq';
  storage: VectorStorage;
  /** IvfPqIndex: lists (default about 4√n), sub-quantizers (default dim / 4), refine vectors. */
  nlist?: number;
  m?: number;
  refine?: IvfPqRefine;
  batch: number;
  log: Log;
}

export async function buildCommand(options: BuildCommandOptions): Promise<void> {
  const model = await loadModel(options);
  let index: StoredIndex | undefined;
  try {
    const total = await countLines(options.items);
    const ids = new WeakMap<object, bigint>();
    const started = performance.now();
    const corpus = {
      model,
      items: itemsWithIds(options, ids),
      id: (record: ItemRecord) => ids.get(record)!,
      batchSize: options.batch,
      total,
      ...(options.task !== undefined ? { task: options.task } : {}),
    };
    const metric = model.manifest.metric;
    const needsTraining = options.type === 'ivfpq' || options.storage === 'i8';
    if (!needsTraining) {
      index = new FlatIndex({ dim: model.dim, metric, storage: options.storage });
      await embedCorpus({ ...corpus, index });
    } else {
      // Training needs the vectors first: embed them all, train on them, then add them.
      const chunks: { ids: BigUint64Array; vectors: Float32Array }[] = [];
      const collect: VectorSink = {
        dim: model.dim,
        async add(batchIds: Ids, vectors: Float32Array) {
          chunks.push({ ids: toIdArray(batchIds), vectors: vectors.slice() });
        },
      };
      await embedCorpus({ ...corpus, index: collect });
      const n = chunks.reduce((sum, c) => sum + c.ids.length, 0);
      const vectors = new Float32Array(n * model.dim);
      const allIds = new BigUint64Array(n);
      let offset = 0;
      for (const c of chunks) {
        vectors.set(c.vectors, offset * model.dim);
        allIds.set(c.ids, offset);
        offset += c.ids.length;
      }
      const bar = progressBar('training', process.stderr);
      if (options.type === 'ivfpq') {
        const nlist = options.nlist ?? Math.max(1, Math.min(65536, Math.round(4 * Math.sqrt(n))));
        const m = options.m ?? defaultSubquantizers(model.dim);
        const ivf = new IvfPqIndex({ dim: model.dim, metric, nlist, m, refine: options.refine ?? 'none' });
        index = ivf;
        await ivf.train(vectors, { onProgress: (fraction) => bar.update(Math.round(fraction * 100), 100) });
      } else {
        const flat = new FlatIndex({ dim: model.dim, metric, storage: 'i8' });
        index = flat;
        await flat.train(vectors);
      }
      bar.finish();
      index.bindModelVersion(model.version);
      await index.add(allIds, vectors);
    }
    const seconds = (performance.now() - started) / 1e3;
    const what = `${options.type === 'ivfpq' ? 'IvfPqIndex' : `FlatIndex (${options.storage})`} of ${index.size.toLocaleString('en-US')} items`;
    if (options.store !== undefined) {
      const store = await IndexStore.open(options.store);
      try {
        const version = await store.publish(index);
        options.log(`built ${what} with model ${model.manifest.name} version ${model.version} in ${seconds.toFixed(1)} s; published as version ${version.version} of ${store.dir}`);
      } finally {
        store.close();
      }
    } else {
      await index.save(options.out!);
      options.log(`built ${what} with model ${model.manifest.name} version ${model.version} in ${seconds.toFixed(1)} s; saved to ${options.out}`);
    }
  } finally {
    index?.dispose();
    await model.dispose();
  }
}

/** Sub-quantizers for a dimension: one per four values (a code byte each) where that divides, else one per two or per value. */
function defaultSubquantizers(dim: number): number {
  if (dim % 4 === 0) return dim / 4;
  if (dim % 2 === 0) return dim / 2;
  return dim;
}

/** Opens an index file or store for searching; the caller closes it. */
async function openTarget(options: { index?: string; store?: string }): Promise<{ target: StoredIndex | IndexStore; close: () => void; describe: string }> {
  if (options.store !== undefined) {
    const store = await IndexStore.open(options.store);
    const current = store.current();
    if (current === undefined) {
      store.close();
      throw new InvalidArgumentError(`The index store ${options.store} has no version yet: build one with ebrix build --store`);
    }
    return { target: store, close: () => store.close(), describe: `store ${store.dir} version ${current.version} (${current.type}, ${current.size.toLocaleString('en-US')} items)` };
  }
  const index = await openIndex(options.index!);
  const kind = index instanceof FlatIndex ? 'flat' : index instanceof HnswIndex ? 'hnsw' : 'ivfpq';
  return { target: index, close: () => index.dispose(), describe: `${kind} index ${options.index} (${index.size.toLocaleString('en-US')} items)` };
}

/** Item records by id from a JSONL file, for showing results. */
async function loadRecords(options: ItemFileOptions): Promise<Map<bigint, ItemRecord>> {
  const total = await countLines(options.items);
  const bar = progressBar('loading items', process.stderr);
  const ids = new WeakMap<object, bigint>();
  const records = new Map<bigint, ItemRecord>();
  for await (const record of itemsWithIds(options, ids)) {
    records.set(ids.get(record)!, record);
    if (records.size % 4096 === 0) bar.update(records.size, total);
  }
  bar.update(records.size, total);
  bar.finish();
  return records;
}

/** The one text field of a query tower, for `--text`. */
function textField(model: TwoTowerModel): string {
  const fields = model.manifest.towers.query.features.filter((f) => f.kind === 'text').map((f) => (f as { field: string }).field);
  if (fields.length !== 1) {
    throw new InvalidSpecError(
      `--text needs a query tower with exactly one text field; this one has ${fields.length ? fields.join(', ') : 'none'}: pass --query with a JSON record`,
    );
  }
  return fields[0]!;
}

export interface SearchCommandOptions extends ModelOptions {
  index?: string;
  store?: string;
  /** The request record… */
  query?: Record<string, unknown>;
  /** …or the text of the query tower's one text field. */
  text?: string;
  k: number;
  /** Only items whose attributes pass this filter (an index file that holds attributes). */
  filter?: Filter;
  /** Show these item records with the results. */
  items?: ItemFileOptions;
  json: boolean;
  print: Log;
}

export async function searchCommand(options: SearchCommandOptions): Promise<void> {
  const model = await loadModel(options);
  let close = (): void => {};
  try {
    const opened = await openTarget(options);
    close = opened.close;
    const records = options.items === undefined ? undefined : await loadRecords(options.items);
    await using retriever = new Retriever({ model, index: opened.target, ...(records ? { items: records } : {}) });
    const request = options.query ?? { [textField(model)]: options.text };
    const result = await retriever.retrieve(request, {
      k: options.k,
      ...(options.filter !== undefined ? { filter: options.filter } : {}),
      ...(options.task !== undefined ? { task: options.task } : {}),
    });
    if (options.json) {
      options.print(JSON.stringify({ items: result.items.map((i) => ({ ...i, id: String(i.id) })), timings: result.timings }, null, 2));
      return;
    }
    options.print(`model ${model.manifest.name} version ${model.version} · ${opened.describe}`);
    options.print(formatTimings(result));
    const width = String(result.items.length).length;
    for (const [rank, item] of result.items.entries()) {
      const record = item.record === undefined ? '' : `  ${summarise(item.record)}`;
      options.print(`${String(rank + 1).padStart(width)}. ${String(item.id).padEnd(10)} ${item.score.toFixed(4)}${record}`);
    }
    if (result.items.length === 0) options.print('no items');
  } finally {
    close();
    await model.dispose();
  }
}

function formatTimings(result: RetrieveResult<unknown>): string {
  const t = result.timings;
  return `${result.items.length} items in ${t.totalMs.toFixed(2)} ms (embed ${t.embedMs.toFixed(2)}, search ${t.searchMs.toFixed(2)}, rank ${t.rankMs.toFixed(2)})`;
}

/** A record on one line: its fields as name=value, long values cut. */
function summarise(record: unknown): string {
  if (record === null || typeof record !== 'object') return JSON.stringify(record) ?? '';
  return Object.entries(record as Record<string, unknown>)
    .map(([key, value]) => {
      const text = typeof value === 'string' ? value : JSON.stringify(value);
      return `${key}=${text.length > 60 ? `${text.slice(0, 59)}…` : text}`;
    })
    .join('  ');
}

export interface ServeCommandOptions extends ModelOptions {
  index?: string;
  store?: string;
  items?: ItemFileOptions;
  /** A memory store directory to serve the memory routes from… */
  memory?: string;
  /** …with this (text) model package (default: the main model). */
  memoryModel?: string;
  host: string;
  port: number;
  token?: string;
  /** An ONNX ranker and its features (see OnnxRankerSpec). */
  ranker?: string;
  rankerFeatures?: string[];
  candidates?: number;
  bodyLimit?: number;
  /** Save the index back to its file on shutdown when items were upserted. */
  save: boolean;
  log: Log;
  /** Resolves when the service should stop (the CLI: on SIGINT or SIGTERM). */
  until: Promise<unknown>;
}

export async function serveCommand(options: ServeCommandOptions): Promise<void> {
  const disposers: (() => unknown)[] = [];
  const cleanup = async (): Promise<void> => {
    for (const dispose of disposers.reverse()) await dispose();
  };
  try {
    const model = await loadModel(options);
    disposers.push(() => model.dispose());
    const opened = await openTarget(options);
    disposers.push(opened.close);
    const items = options.items === undefined ? undefined : await loadRecords(options.items);
    let ranker: OnnxRanker | undefined;
    if (options.ranker !== undefined) {
      ranker = await OnnxRanker.load(options.ranker, { features: options.rankerFeatures ?? ['towerScore'] });
      disposers.push(() => ranker!.dispose());
    }
    const retriever = new Retriever({
      model,
      index: opened.target,
      ...(items ? { items } : {}),
      ...(ranker ? { ranker } : {}),
      ...(options.candidates !== undefined ? { candidates: options.candidates } : {}),
    });
    disposers.push(() => retriever.dispose());
    let memory: MemoryStore | undefined;
    if (options.memory !== undefined) {
      const memoryModel = options.memoryModel === undefined ? model : await TwoTowerModel.load(options.memoryModel, options.threads ? { threads: options.threads } : {});
      if (memoryModel !== model) disposers.push(() => memoryModel.dispose());
      memory = await MemoryStore.open(options.memory, { model: memoryModel });
      disposers.push(() => memory!.close());
    }
    const server = await createServer({
      retriever,
      ...(memory ? { memory } : {}),
      host: options.host,
      port: options.port,
      ...(options.token !== undefined ? { token: options.token } : {}),
      ...(options.bodyLimit !== undefined ? { bodyLimit: options.bodyLimit } : {}),
      ...(options.save && options.index !== undefined ? { indexPath: options.index } : {}),
    });
    disposers.push(() => server.close());
    const url = await server.listen();
    options.log(`model ${model.manifest.name} version ${model.version} · ${opened.describe}${ranker ? ` · ranker ${options.ranker}` : ''}${memory ? ` · memory ${memory.dir}` : ''}`);
    options.log(`serving on ${url} (${options.token ? 'bearer token required' : 'no token'}); Ctrl-C stops`);
    await options.until;
    options.log('stopping: draining requests in flight, then saving');
    await server.close();
  } finally {
    await cleanup();
  }
}
