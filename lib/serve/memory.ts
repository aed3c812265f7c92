/**
 * MemoryStore: text memories for retrieval-augmented generation and chat, in namespaces (one
 * per user, conversation or corpus), recalled by meaning.
 *
 * A memory's text is embedded by the model package's item tower when it is remembered, and
 * a recall's text by the query tower; both towers are fed `{ text }` by default, so the
 * package must be a text-to-text model whose towers read a string field named `text` (pass
 * `itemRecord` / `queryRecord` to feed other fields). Each namespace is one FlatIndex (the
 * model's metric, bound to its version) plus the memories' text, metadata and creation time.
 * Metadata named in the store's `metadata` schema can be filtered on, in ebrix's filter
 * language; other metadata is kept and returned but not filterable.
 *
 * On disk (`dir`):
 *
 *   store.json                   model version, dim, metric and metadata schema
 *   namespaces/<name>/CURRENT    the live snapshot's generation number (replaced atomically)
 *   namespaces/<name>/g000007/   a snapshot: index.ebrix (FlatIndex.save) and memories.json
 *   namespaces/<name>/log.jsonl  what happened since that snapshot, one line per change
 *
 * remember and forget append a line to the namespace's log (synced to disk before they
 * resolve, unless `sync: false`), so nothing acknowledged is lost in a crash. A snapshot
 * (written under a temporary name, then made live by replacing CURRENT) folds the log into
 * the index file; it is taken every `snapshotEvery` log lines, on `save()` and `close()`, and
 * at once after a forget, so a forgotten text leaves the disk when forget resolves. Opening
 * the directory restores every namespace: its snapshot, then the log lines after it (a torn
 * last line from a crash is dropped).
 *
 * A forgotten memory's row stays in the index, excluded from every recall, until forgotten
 * rows make up a quarter of the namespace; the next snapshot then rebuilds the index from the
 * remaining memories' stored vectors (read back with FlatIndex.get, so nothing is embedded
 * again). A rebuild rather than FlatIndex.remove + compact keeps the index's rows, the
 * attribute table and `rows` numbered alike in memory and in the snapshot files.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, type FileHandle } from 'node:fs/promises';
import path from 'node:path';

import { CorruptFileError, DisposedError, InvalidArgumentError, InvalidSpecError, UnknownIdError, VersionMismatchError } from '../errors.js';
import { Attributes } from '../index/attributes.js';
import { FlatIndex, type Metric } from '../index/flat.js';
import { normalizeSchema, type AttributeRecord, type AttributeSchema, type Filter } from '../index/filter.js';
import { NO_ID } from '../index/ids.js';
import type { FeatureSpec } from '../model/features.js';
import { describe, invalid, requirePositiveInteger } from '../validate.js';
import { asIoError, syncDirectory, writeFileAtomic } from './atomic-file.js';

/** What a MemoryStore needs of a model (TwoTowerModel has it). */
export interface MemoryModel {
  readonly version: string;
  readonly dim: number;
  readonly manifest: { readonly metric: Metric; readonly towers: Record<'query' | 'item', { readonly features: readonly FeatureSpec[] }> };
  embedQuery(record: unknown): Promise<Float32Array>;
  embedItems(records: readonly unknown[]): Promise<Float32Array>;
}

export type MemoryMetadata = Record<string, unknown>;

export interface MemoryStoreOptions {
  model: MemoryModel;
  /**
   * Metadata that recall can filter on: an attribute schema (`{ source: 'category', page:
   * 'uint' }`), checked on every remember. Saved with the store; reopening may leave it out,
   * and giving a different one is an error.
   */
  metadata?: AttributeSchema;
  /** The record the item tower embeds for a memory (default `{ text }`). */
  itemRecord?: (text: string, metadata: MemoryMetadata) => unknown;
  /** The record the query tower embeds for a recall (default `{ text }`). */
  queryRecord?: (text: string) => unknown;
  /** Log lines after which a namespace is snapshotted (default 1000). */
  snapshotEvery?: number;
  /** Sync each log line to disk before remember / forget resolve (default true). */
  sync?: boolean;
}

export interface Memory {
  id: number;
  text: string;
  metadata: MemoryMetadata;
  /** ISO time the memory was remembered. */
  createdAt: string;
}

export interface RecalledMemory extends Memory {
  /** Similarity to the recall text, higher is better (the model's metric). */
  score: number;
}

export interface RecallOptions {
  /** Memories returned at most (default 10). */
  k?: number;
  /** Only memories whose metadata passes (needs the store's `metadata` schema); see Filter. */
  filter?: Filter;
}

/** Namespace names: a letter or digit, then letters, digits, '.', '_' or '-'; 1 to 128 characters. */
export const NAMESPACE_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const MAX_TEXT_LENGTH = 1 << 20;
const MAX_METADATA_BYTES = 64 * 1024;
const MAX_K = 10_000;
const STORE_FORMAT = 'ebrix-memory-store';
const NAMESPACE_FORMAT = 'ebrix-memory-namespace';
const FORMAT_VERSION = 1;
const COMPACT_FRACTION = 0.25;
const REBUILD_BATCH = 1024;

type Row = { id: number; createdAt: string; text: string; metadata: MemoryMetadata } | { id: number; forgotten: true };

type LogEntry =
  | { seq: number; op: 'remember'; id: number; createdAt: string; text: string; metadata: MemoryMetadata; vector: string }
  | { seq: number; op: 'forget'; id: number };

interface NamespaceFile {
  format: typeof NAMESPACE_FORMAT;
  formatVersion: number;
  namespace: string;
  modelVersion: string;
  /** The last log sequence number folded into this snapshot. */
  lastSeq: number;
  nextId: number;
  rows: Row[];
}

/**
 * One namespace's searchable state: the index and the rows it numbers. A rebuild replaces the
 * whole view; recalls in flight keep the view they started on until they finish.
 */
class View {
  readonly rows: Row[] = [];
  readonly rowOf = new Map<number, number>();
  /** Bit r set: row r is a memory not forgotten. */
  live = new Uint32Array(64);
  forgotten = 0;
  inFlight = 0;
  retired = false;

  constructor(
    readonly index: FlatIndex,
    readonly attributes: Attributes | undefined,
  ) {}

  push(row: Row): void {
    const r = this.rows.length;
    this.rows.push(row);
    this.rowOf.set(row.id, r);
    if (r >> 5 >= this.live.length) {
      const grown = new Uint32Array(this.live.length * 2);
      grown.set(this.live);
      this.live = grown;
    }
    if ('forgotten' in row) this.forgotten++;
    else this.live[r >> 5]! |= 1 << (r & 31);
  }

  forget(id: number): boolean {
    const r = this.rowOf.get(id);
    if (r === undefined || 'forgotten' in this.rows[r]!) return false;
    this.rows[r] = { id, forgotten: true };
    this.live[r >> 5]! &= ~(1 << (r & 31));
    this.forgotten++;
    return true;
  }

  get size(): number {
    return this.rows.length - this.forgotten;
  }

  dispose(): void {
    this.index.dispose();
    this.attributes?.dispose();
  }
}

class Namespace {
  view: View;
  nextId = 1;
  /** The last sequence number written to the log (or folded into the snapshot). */
  seq = 0;
  /** Log lines since the snapshot. */
  logged = 0;
  generation = 0;
  log: FileHandle | undefined;

  constructor(
    readonly name: string,
    readonly dir: string,
    view: View,
  ) {
    this.view = view;
  }
}

export class MemoryStore implements AsyncDisposable {
  readonly dir: string;
  readonly model: MemoryModel;
  /** The metadata schema recall can filter on, if any. */
  readonly metadata: AttributeSchema | undefined;
  readonly snapshotEvery: number;
  readonly sync: boolean;
  readonly #itemRecord: (text: string, metadata: MemoryMetadata) => unknown;
  readonly #queryRecord: (text: string) => unknown;
  readonly #schemaColumns: string[];
  /** Checks metadata against the schema before anything (a namespace, a log line) is created. */
  readonly #validator: Attributes | undefined;
  readonly #spaces = new Map<string, Namespace>();
  /** Writes to a namespace (and its creation and drop) run one at a time, per name. */
  readonly #queues = new Map<string, Promise<unknown>>();
  #closed = false;

  private constructor(dir: string, options: MemoryStoreOptions, metadata: AttributeSchema | undefined) {
    this.dir = dir;
    this.model = options.model;
    this.metadata = metadata;
    this.#schemaColumns = metadata === undefined ? [] : normalizeSchema(metadata).map((c) => c.name);
    this.#validator = metadata === undefined ? undefined : new Attributes(metadata);
    this.snapshotEvery = requirePositiveInteger(options.snapshotEvery ?? 1000, 'options.snapshotEvery', 1 << 24);
    if (options.sync !== undefined && typeof options.sync !== 'boolean') throw invalid('a boolean', 'options.sync', options.sync);
    this.sync = options.sync ?? true;
    this.#itemRecord = options.itemRecord ?? ((text) => ({ text }));
    this.#queryRecord = options.queryRecord ?? ((text) => ({ text }));
  }

  /**
   * Opens (creating it if needed) a memory directory and restores every namespace in it. A
   * directory written with another model version is EBRIX_VERSION_MISMATCH; a damaged one
   * EBRIX_CORRUPT_FILE.
   */
  static async open(dir: string, options: MemoryStoreOptions): Promise<MemoryStore> {
    if (typeof dir !== 'string' || dir.length === 0) throw invalid('a directory path', 'dir', dir);
    if (options === null || typeof options !== 'object') throw invalid('an options object', 'options', options);
    const { model } = options;
    if (model === null || typeof model !== 'object' || typeof model.embedItems !== 'function' || typeof model.embedQuery !== 'function') {
      throw invalid('a TwoTowerModel', 'options.model', model);
    }
    for (const name of ['itemRecord', 'queryRecord'] as const) {
      if (options[name] !== undefined && typeof options[name] !== 'function') throw invalid('a function', `options.${name}`, options[name]);
    }
    checkTowerFields(model, options);
    if (options.metadata !== undefined) normalizeSchema(options.metadata);
    const root = path.resolve(dir);
    const spacesDir = path.join(root, 'namespaces');
    try {
      await mkdir(spacesDir, { recursive: true });
    } catch (error) {
      throw asIoError(error, spacesDir);
    }
    const metadata = await readOrWriteStoreFile(root, model, options.metadata);
    const store = new MemoryStore(root, options, metadata);
    let entries: string[];
    try {
      entries = await readdir(spacesDir);
    } catch (error) {
      throw asIoError(error, spacesDir);
    }
    try {
      for (const entry of entries.sort()) {
        if (entry.startsWith('.drop-')) {
          // A drop that crashed before its directory was gone.
          await rm(path.join(spacesDir, entry), { recursive: true, force: true });
        } else if (NAMESPACE_PATTERN.test(entry)) {
          store.#spaces.set(entry, await store.#load(entry));
        }
      }
    } catch (error) {
      await store.#closeAll(false);
      throw error;
    }
    return store;
  }

  /** Names of the namespaces that hold or held memories (not yet dropped), sorted. */
  namespaces(): string[] {
    this.#open();
    return [...this.#spaces.keys()].sort();
  }

  /** Memories held in a namespace (0 for one that does not exist). */
  size(namespace: string): number {
    this.#open();
    return this.#spaces.get(checkNamespace(namespace))?.view.size ?? 0;
  }

  /**
   * Embeds `text` with the item tower and stores it in `namespace` (created on first use)
   * with its metadata; resolves with the memory's id once its log line is on disk.
   */
  async remember(namespace: string, text: string, metadata: MemoryMetadata = {}): Promise<number> {
    this.#open();
    const name = checkNamespace(namespace);
    checkText(text, 'text');
    const meta = checkMetadata(metadata);
    const attributeRecord = this.#attributeRecord(meta);
    // Validation only: the append this prepares is never run.
    this.#validator?.prepareAppend([attributeRecord]);
    const vector = await this.model.embedItems([this.#itemRecord(text, meta)]);
    if (vector.length !== this.model.dim) {
      throw invalid(`${this.model.dim} values from the item tower`, 'the embedding', vector);
    }
    return this.#serial(name, async () => {
      this.#open();
      const space = this.#spaces.get(name) ?? (await this.#create(name));
      const view = space.view;
      // Validated before anything is written, so a bad metadata value changes nothing.
      const commitAttributes = view.attributes?.prepareAppend([attributeRecord]);
      const id = space.nextId++;
      const createdAt = new Date().toISOString();
      await this.#append(space, { seq: space.seq + 1, op: 'remember', id, createdAt, text, metadata: meta, vector: encodeVector(vector) });
      try {
        await view.index.add([id], vector);
      } catch (error) {
        // The log says it was remembered; say it is gone, so a replay agrees with the index.
        await this.#append(space, { seq: space.seq + 1, op: 'forget', id }).catch(() => undefined);
        throw error;
      }
      commitAttributes?.();
      view.push({ id, createdAt, text, metadata: meta });
      if (space.logged >= this.snapshotEvery) await this.#snapshot(space);
      return id;
    });
  }

  /**
   * The `k` memories of `namespace` closest in meaning to `text` (embedded by the query
   * tower), best first; none for a namespace that does not exist.
   */
  async recall(namespace: string, text: string, options: RecallOptions = {}): Promise<RecalledMemory[]> {
    this.#open();
    const name = checkNamespace(namespace);
    checkText(text, 'text', true);
    if (options === null || typeof options !== 'object') throw invalid('an options object', 'options', options);
    const k = requirePositiveInteger(options.k ?? 10, 'options.k', MAX_K);
    const { filter } = options;
    if (filter !== undefined && (filter === null || typeof filter !== 'object' || Array.isArray(filter))) {
      throw invalid('a filter object', 'options.filter', filter);
    }
    if (filter !== undefined && this.metadata === undefined) {
      throw new InvalidArgumentError('options.filter needs a store opened with a metadata schema (options.metadata)');
    }
    const query = await this.model.embedQuery(this.#queryRecord(text));
    const space = this.#spaces.get(name);
    if (space === undefined || space.view.size === 0) return [];
    const view = space.view;
    view.inFlight++;
    try {
      const rows = view.rows.length;
      // A copy: remembers and forgets during the search must not change the rows it may return.
      const allow = view.live.slice(0, (rows + 31) >> 5);
      if (filter !== undefined) {
        const compiled = await view.attributes!.compile(filter, { idToRow: (id) => view.rowOf.get(Number(id)) });
        for (let i = 0; i < allow.length; i++) allow[i]! &= compiled.bits[i] ?? 0;
      }
      const result = await view.index.search(query, Math.min(k, rows), { allow });
      const out: RecalledMemory[] = [];
      for (let j = 0; j < result.k; j++) {
        const id = result.ids[j]!;
        if (id === NO_ID) break;
        const row = view.rows[view.rowOf.get(Number(id))!];
        if (row === undefined || 'forgotten' in row) continue; // forgotten while the search ran
        out.push({ id: row.id, text: row.text, metadata: row.metadata, createdAt: row.createdAt, score: result.scores[j]! });
      }
      return out;
    } finally {
      view.inFlight--;
      if (view.retired && view.inFlight === 0) view.dispose();
    }
  }

  /** One memory by id, or undefined. */
  get(namespace: string, id: number): Memory | undefined {
    this.#open();
    const view = this.#spaces.get(checkNamespace(namespace))?.view;
    const r = view?.rowOf.get(checkId(id));
    const row = r === undefined ? undefined : view!.rows[r];
    return row === undefined || 'forgotten' in row ? undefined : { id: row.id, text: row.text, metadata: row.metadata, createdAt: row.createdAt };
  }

  /**
   * Forgets one memory: it is never recalled again, and its text and metadata leave the disk
   * before this resolves (the namespace is snapshotted). An id the namespace does not hold is
   * EBRIX_UNKNOWN_ID.
   */
  async forget(namespace: string, id: number): Promise<void> {
    this.#open();
    const name = checkNamespace(namespace);
    const memoryId = checkId(id);
    await this.#serial(name, async () => {
      this.#open();
      const space = this.#spaces.get(name);
      const r = space?.view.rowOf.get(memoryId);
      if (space === undefined || r === undefined || 'forgotten' in space.view.rows[r]!) {
        throw new UnknownIdError(`Namespace ${name} holds no memory ${memoryId}`);
      }
      await this.#append(space, { seq: space.seq + 1, op: 'forget', id: memoryId });
      space.view.forget(memoryId);
      await this.#snapshot(space);
    });
  }

  /** Deletes a namespace and every file of it; resolves false when there was none. */
  async dropNamespace(namespace: string): Promise<boolean> {
    this.#open();
    const name = checkNamespace(namespace);
    return this.#serial(name, async () => {
      this.#open();
      const space = this.#spaces.get(name);
      if (space === undefined) return false;
      this.#spaces.delete(name);
      await space.log?.close();
      space.log = undefined;
      retire(space.view);
      // Renamed first: a crash mid-delete leaves a '.drop-' directory, removed on the next open.
      const doomed = path.join(this.dir, 'namespaces', `.drop-${name}-${randomBytes(4).toString('hex')}`);
      try {
        await rename(space.dir, doomed);
        await syncDirectory(path.dirname(space.dir));
        await rm(doomed, { recursive: true, force: true });
      } catch (error) {
        throw asIoError(error, space.dir);
      }
      return true;
    });
  }

  /** Snapshots every namespace with log lines not yet in its snapshot. */
  async save(): Promise<void> {
    this.#open();
    await Promise.all(
      [...this.#spaces.keys()].map((name) =>
        this.#serial(name, async () => {
          const space = this.#spaces.get(name);
          if (space !== undefined && space.logged > 0) await this.#snapshot(space);
        }),
      ),
    );
  }

  /**
   * Waits for the writes in flight, snapshots what the logs hold, and releases every index.
   * The model stays the caller's. Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.#closeAll(true);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  get closed(): boolean {
    return this.#closed;
  }

  async #closeAll(snapshot: boolean): Promise<void> {
    // Queued writes finish first; new calls fail from here on.
    this.#closed = true;
    await Promise.all([...this.#queues.values()].map((q) => q.catch(() => undefined)));
    let failure: unknown;
    for (const space of this.#spaces.values()) {
      try {
        if (snapshot && space.logged > 0) await this.#snapshot(space);
      } catch (error) {
        failure ??= error;
      }
      await space.log?.close().catch(() => undefined);
      space.log = undefined;
      retire(space.view);
    }
    this.#spaces.clear();
    this.#validator?.dispose();
    if (failure !== undefined) throw failure;
  }

  #open(): void {
    if (this.#closed) throw new DisposedError('memory store');
  }

  #serial<T>(name: string, task: () => Promise<T>): Promise<T> {
    const previous = this.#queues.get(name) ?? Promise.resolve();
    const run = previous.then(task, task);
    const settled = run.catch(() => undefined);
    this.#queues.set(name, settled);
    // Forget the queue once idle, so dropped or idle namespaces leave nothing behind.
    void settled.then(() => {
      if (this.#queues.get(name) === settled) this.#queues.delete(name);
    });
    return run;
  }

  #attributeRecord(metadata: MemoryMetadata): AttributeRecord {
    const record: Record<string, unknown> = {};
    for (const name of this.#schemaColumns) if (metadata[name] !== undefined) record[name] = metadata[name];
    return record as AttributeRecord;
  }

  #newView(): View {
    const index = new FlatIndex({ dim: this.model.dim, metric: this.model.manifest.metric, modelVersion: this.model.version });
    return new View(index, this.metadata === undefined ? undefined : new Attributes(this.metadata));
  }

  async #create(name: string): Promise<Namespace> {
    const dir = path.join(this.dir, 'namespaces', name);
    try {
      await mkdir(dir, { recursive: true });
      await syncDirectory(path.dirname(dir));
    } catch (error) {
      throw asIoError(error, dir);
    }
    const space = new Namespace(name, dir, this.#newView());
    await this.#openLog(space);
    this.#spaces.set(name, space);
    return space;
  }

  async #openLog(space: Namespace): Promise<void> {
    const file = path.join(space.dir, 'log.jsonl');
    try {
      space.log = await open(file, 'a');
    } catch (error) {
      throw asIoError(error, file);
    }
  }

  async #append(space: Namespace, entry: LogEntry): Promise<void> {
    const log = space.log;
    if (log === undefined) throw new DisposedError('memory namespace');
    const line = `${JSON.stringify(entry)}\n`;
    try {
      await log.write(line);
      if (this.sync) await log.datasync();
    } catch (error) {
      throw asIoError(error, path.join(space.dir, 'log.jsonl'));
    }
    space.seq = entry.seq;
    space.logged++;
  }

  /** Restores a namespace: its snapshot (if any), then its log. */
  async #load(name: string): Promise<Namespace> {
    const dir = path.join(this.dir, 'namespaces', name);
    const generation = await readCurrent(dir);
    // Leftovers of a snapshot that crashed, and generations no longer live.
    for (const entry of await readdir(dir)) {
      const isGeneration = /^g\d{6,}(\.tmp-.*)?$/.test(entry);
      if (isGeneration && entry !== generationName(generation)) await rm(path.join(dir, entry), { recursive: true, force: true });
      else if (entry.includes('.tmp-')) await rm(path.join(dir, entry), { force: true });
    }
    let view: View;
    let space: Namespace;
    if (generation === 0) {
      view = this.#newView();
      space = new Namespace(name, dir, view);
    } else {
      const snapshotDir = path.join(dir, generationName(generation));
      const index = await FlatIndex.open(path.join(snapshotDir, 'index.ebrix'));
      let file: NamespaceFile;
      try {
        if (index.modelVersion !== this.model.version) {
          throw new VersionMismatchError(
            `Namespace ${name} holds vectors of model version ${index.modelVersion ?? '(none)'} but the model is version ${this.model.version}`,
          );
        }
        file = await readNamespaceFile(path.join(snapshotDir, 'memories.json'), name);
        if (file.rows.length !== index.size) {
          throw new CorruptFileError(`Corrupt memory namespace ${dir}: memories.json lists ${file.rows.length} rows but the index holds ${index.size}`);
        }
      } catch (error) {
        index.dispose();
        throw error;
      }
      const attributes = this.metadata === undefined ? undefined : new Attributes(this.metadata);
      view = new View(index, attributes);
      try {
        attributes?.append(file.rows.map((row) => ('forgotten' in row ? {} : this.#attributeRecord(row.metadata))));
      } catch (error) {
        view.dispose();
        throw new CorruptFileError(`Corrupt memory namespace ${dir}: metadata does not fit the schema (${(error as Error).message})`);
      }
      for (const row of file.rows) view.push(row);
      space = new Namespace(name, dir, view);
      space.generation = generation;
      space.seq = file.lastSeq;
      space.nextId = file.nextId;
    }
    try {
      await this.#replay(space);
      await this.#openLog(space);
    } catch (error) {
      view.dispose();
      throw error;
    }
    return space;
  }

  /** Applies the log lines after the snapshot; cuts the log after its last whole line. */
  async #replay(space: Namespace): Promise<void> {
    const file = path.join(space.dir, 'log.jsonl');
    let bytes: Buffer;
    try {
      bytes = await readFile(file);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw asIoError(error, file);
    }
    let start = 0;
    let goodEnd = 0;
    while (start < bytes.length) {
      const end = bytes.indexOf(0x0a, start);
      if (end < 0) break; // a torn last line: the append it belongs to never resolved
      const entry = parseLogEntry(bytes.subarray(start, end).toString('utf8'), this.model.dim);
      if (entry === undefined) break;
      start = end + 1;
      goodEnd = start;
      if (entry.seq <= space.seq) continue; // already in the snapshot (a crash came before the log was cut)
      const view = space.view;
      if (entry.op === 'remember') {
        if (view.rowOf.has(entry.id)) throw new CorruptFileError(`Corrupt memory log ${file}: memory ${entry.id} is remembered twice`);
        const commit = view.attributes?.prepareAppend([this.#attributeRecord(entry.metadata)]);
        await view.index.add([entry.id], decodeVector(entry.vector));
        commit?.();
        view.push({ id: entry.id, createdAt: entry.createdAt, text: entry.text, metadata: entry.metadata });
        space.nextId = Math.max(space.nextId, entry.id + 1);
      } else {
        view.forget(entry.id);
      }
      space.seq = entry.seq;
      space.logged++;
    }
    if (goodEnd < bytes.length) {
      const handle = await open(file, 'r+');
      try {
        await handle.truncate(goodEnd);
        await handle.sync();
      } finally {
        await handle.close();
      }
    }
  }

  /**
   * Writes the namespace as a new generation and makes it live, then empties the log. Runs
   * in the namespace's queue. Rebuilds the index first when forgotten rows reach a quarter.
   */
  async #snapshot(space: Namespace): Promise<void> {
    if (space.view.forgotten > 0 && space.view.forgotten >= COMPACT_FRACTION * space.view.rows.length) await this.#rebuild(space);
    const view = space.view;
    const generation = space.generation + 1;
    const name = generationName(generation);
    const temp = path.join(space.dir, `${name}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
    const file: NamespaceFile = {
      format: NAMESPACE_FORMAT,
      formatVersion: FORMAT_VERSION,
      namespace: space.name,
      modelVersion: this.model.version,
      lastSeq: space.seq,
      nextId: space.nextId,
      rows: view.rows,
    };
    try {
      await mkdir(temp);
      await view.index.save(path.join(temp, 'index.ebrix'));
      await writeFileAtomic(path.join(temp, 'memories.json'), `${JSON.stringify(file)}\n`);
      await rename(temp, path.join(space.dir, name));
      await syncDirectory(space.dir);
      await writeFileAtomic(path.join(space.dir, 'CURRENT'), `${generation}\n`);
    } catch (error) {
      await rm(temp, { recursive: true, force: true });
      throw asIoError(error, temp);
    }
    const previous = space.generation;
    space.generation = generation;
    space.logged = 0;
    // The log is folded into the live snapshot: start it afresh. (Were this cut short by a
    // crash, the lines left behind are skipped on replay by their sequence numbers.)
    await space.log?.close();
    space.log = undefined;
    const logFile = path.join(space.dir, 'log.jsonl');
    try {
      const handle = await open(logFile, 'w');
      await handle.sync();
      await handle.close();
    } catch (error) {
      throw asIoError(error, logFile);
    }
    await this.#openLog(space);
    if (previous > 0) await rm(path.join(space.dir, generationName(previous)), { recursive: true, force: true });
  }

  /** A new index of the namespace's remaining memories, from their stored vectors. */
  async #rebuild(space: Namespace): Promise<void> {
    const old = space.view;
    const next = this.#newView();
    try {
      const kept = old.rows.filter((row): row is Exclude<Row, { forgotten: true }> => !('forgotten' in row));
      const dim = this.model.dim;
      for (let start = 0; start < kept.length; start += REBUILD_BATCH) {
        const batch = kept.slice(start, start + REBUILD_BATCH);
        // The stored vectors, read back (exact for f32 storage): nothing is embedded again.
        const vectors = new Float32Array(batch.length * dim);
        batch.forEach((row, i) => vectors.set(old.index.get(row.id), i * dim));
        next.attributes?.append(batch.map((row) => this.#attributeRecord(row.metadata)));
        await next.index.add(
          batch.map((row) => row.id),
          vectors,
        );
        for (const row of batch) next.push(row);
      }
    } catch (error) {
      next.dispose();
      throw error;
    }
    space.view = next;
    retire(old);
  }
}

function retire(view: View): void {
  view.retired = true;
  if (view.inFlight === 0) view.dispose();
}

function generationName(generation: number): string {
  return `g${String(generation).padStart(6, '0')}`;
}

async function readCurrent(dir: string): Promise<number> {
  const file = path.join(dir, 'CURRENT');
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw asIoError(error, file);
  }
  const generation = Number(text.trim());
  if (!Number.isSafeInteger(generation) || generation < 1) {
    throw new CorruptFileError(`Corrupt memory namespace ${dir}: CURRENT holds ${JSON.stringify(text.trim())}`);
  }
  return generation;
}

async function readOrWriteStoreFile(root: string, model: MemoryModel, schema: AttributeSchema | undefined): Promise<AttributeSchema | undefined> {
  const file = path.join(root, 'store.json');
  let text: string | undefined;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw asIoError(error, file);
  }
  if (text === undefined) {
    const content = {
      format: STORE_FORMAT,
      formatVersion: FORMAT_VERSION,
      modelVersion: model.version,
      dim: model.dim,
      metric: model.manifest.metric,
      metadata: schema ?? null,
    };
    await writeFileAtomic(file, `${JSON.stringify(content, null, 2)}\n`);
    return schema;
  }
  let saved: Record<string, unknown>;
  try {
    saved = JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw new CorruptFileError(`Corrupt memory store ${root}: store.json is not JSON`);
  }
  if (saved === null || typeof saved !== 'object' || saved.format !== STORE_FORMAT) {
    throw new CorruptFileError(`Corrupt memory store ${root}: store.json is not an ebrix memory store file`);
  }
  if (saved.formatVersion !== FORMAT_VERSION) {
    throw new CorruptFileError(`Memory store ${root} has format version ${String(saved.formatVersion)}; this ebrix reads ${FORMAT_VERSION}`);
  }
  if (saved.modelVersion !== model.version) {
    throw new VersionMismatchError(`Memory store ${root} was written with model version ${String(saved.modelVersion)} but the model is version ${model.version}`);
  }
  const savedSchema = (saved.metadata ?? undefined) as AttributeSchema | undefined;
  if (schema !== undefined && JSON.stringify(normalizeSchema(schema)) !== JSON.stringify(savedSchema === undefined ? undefined : normalizeSchema(savedSchema))) {
    throw new InvalidArgumentError(
      `Expected the metadata schema the store was created with (${JSON.stringify(savedSchema ?? null)}) for options.metadata but received ${JSON.stringify(schema)}`,
    );
  }
  return savedSchema;
}

async function readNamespaceFile(file: string, name: string): Promise<NamespaceFile> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(file, 'utf8'));
  } catch (error) {
    if (error instanceof SyntaxError) throw new CorruptFileError(`Corrupt memory namespace file ${file}: not JSON`);
    throw asIoError(error, file);
  }
  const f = parsed as Partial<NamespaceFile> | null;
  const ok =
    f !== null &&
    typeof f === 'object' &&
    f.format === NAMESPACE_FORMAT &&
    f.formatVersion === FORMAT_VERSION &&
    f.namespace === name &&
    Number.isSafeInteger(f.lastSeq) &&
    Number.isSafeInteger(f.nextId) &&
    Array.isArray(f.rows) &&
    f.rows.every(
      (row) =>
        row !== null &&
        typeof row === 'object' &&
        Number.isSafeInteger(row.id) &&
        ('forgotten' in row
          ? row.forgotten === true
          : typeof row.text === 'string' && typeof row.createdAt === 'string' && row.metadata !== null && typeof row.metadata === 'object'),
    );
  if (!ok) throw new CorruptFileError(`Corrupt memory namespace file ${file}: not a snapshot of namespace ${name}`);
  return f as NamespaceFile;
}

function parseLogEntry(line: string, dim: number): LogEntry | undefined {
  let e: Record<string, unknown>;
  try {
    e = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (e === null || typeof e !== 'object' || !Number.isSafeInteger(e.seq) || !Number.isSafeInteger(e.id)) return undefined;
  if (e.op === 'forget') return e as LogEntry;
  if (
    e.op === 'remember' &&
    typeof e.text === 'string' &&
    typeof e.createdAt === 'string' &&
    e.metadata !== null &&
    typeof e.metadata === 'object' &&
    typeof e.vector === 'string' &&
    Buffer.byteLength(e.vector, 'base64') === dim * 4
  ) {
    return e as LogEntry;
  }
  return undefined;
}

/** Float32 little-endian bytes as base64: exact, and a third the size of decimal text. */
function encodeVector(vector: Float32Array): string {
  return Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength).toString('base64');
}

function decodeVector(text: string): Float32Array {
  const bytes = Buffer.from(text, 'base64');
  const out = new Float32Array(bytes.length / 4);
  new Uint8Array(out.buffer).set(bytes);
  return out;
}

function checkNamespace(namespace: unknown): string {
  if (typeof namespace !== 'string' || !NAMESPACE_PATTERN.test(namespace)) {
    throw invalid("a namespace name (a letter or digit, then up to 127 letters, digits, '.', '_' or '-')", 'namespace', namespace);
  }
  return namespace;
}

function checkText(text: unknown, name: string, allowEmpty = false): void {
  if (typeof text !== 'string' || (!allowEmpty && text.trim().length === 0) || text.length > MAX_TEXT_LENGTH) {
    throw invalid(`a ${allowEmpty ? '' : 'non-blank '}string of at most ${MAX_TEXT_LENGTH} characters`, name, text);
  }
}

function checkId(id: unknown): number {
  if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 1) throw invalid('a memory id (a positive integer)', 'id', id);
  return id;
}

/** A deep, JSON-safe copy of the metadata (what the log and snapshot will hold). */
function checkMetadata(metadata: unknown): MemoryMetadata {
  if (metadata === null || typeof metadata !== 'object' || Array.isArray(metadata) || Object.getPrototypeOf(metadata) !== Object.prototype) {
    throw invalid('a plain object', 'metadata', metadata);
  }
  let json: string;
  try {
    json = JSON.stringify(metadata);
  } catch (error) {
    throw invalid(`JSON-serialisable values (${(error as Error).message})`, 'metadata', metadata);
  }
  if (Buffer.byteLength(json) > MAX_METADATA_BYTES) {
    throw invalid(`at most ${MAX_METADATA_BYTES} bytes of JSON`, 'metadata', `${Buffer.byteLength(json)} bytes`);
  }
  return JSON.parse(json) as MemoryMetadata;
}

/** With the default `{ text }` records, every feature of both towers must read the field `text`. */
function checkTowerFields(model: MemoryModel, options: MemoryStoreOptions): void {
  for (const role of ['item', 'query'] as const) {
    if ((role === 'item' ? options.itemRecord : options.queryRecord) !== undefined) continue;
    const fields = (model.manifest.towers[role]?.features ?? []).flatMap((f) => ('fields' in f ? f.fields : [f.field]));
    const others = fields.filter((f) => f !== 'text');
    if (others.length > 0) {
      throw new InvalidSpecError(
        `MemoryStore feeds the ${role} tower { text }, but it reads ${others.map((f) => describe(f)).join(', ')}: ` +
          `use a text model, or pass options.${role}Record to build the record it needs`,
      );
    }
  }
}
