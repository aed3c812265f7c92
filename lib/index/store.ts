/**
 * Index files by type, and IndexStore: numbered, durable versions of an index in one
 * directory, with an atomic switch between them for searches in flight.
 *
 * Layout of a store directory:
 *   v000001/index.ebrix   the index (FlatIndex.save / IvfPqIndex.save / HnswIndex.save)
 *   v000001/version.json  { version, modelVersion, type, size, createdAt }
 *   CURRENT               the live version number, replaced atomically (temporary + rename)
 * A version directory is written under a temporary name and renamed into place when whole,
 * so a crash during publish leaves no half version behind (stray `*.tmp-*` directories are
 * removed when the store opens).
 */
import { open as openFile, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';

import { CorruptFileError, DisposedError, InvalidArgumentError, IoError, VersionMismatchError } from '../errors.js';
import { invalid, requirePositiveInteger } from '../validate.js';
import { FlatIndex, type SearchOptions } from './flat.js';
import { HnswIndex, type HnswSearchOptions } from './hnsw.js';
import { IvfPqIndex, type IvfPqSearchOptions } from './ivfpq.js';
import type { SearchResult } from './search-result.js';
import type { Vectors } from './vectors.js';

export type IndexKind = 'flat' | 'ivfpq' | 'hnsw';
export type StoredIndex = FlatIndex | IvfPqIndex | HnswIndex;

const TYPE_BY_CODE: Record<number, IndexKind> = { 1: 'flat', 2: 'ivfpq', 3: 'hnsw' };
const KINDS: readonly IndexKind[] = ['flat', 'ivfpq', 'hnsw'];

/** The index type recorded in an index file's header (see native/core/index_file.h). */
export async function indexFileKind(file: string): Promise<IndexKind> {
  let header: Buffer;
  try {
    const handle = await openFile(file, 'r');
    try {
      header = Buffer.alloc(16);
      const { bytesRead } = await handle.read(header, 0, 16, 0);
      if (bytesRead < 16) throw new CorruptFileError(`Corrupt index file ${file}: too short for an index file`);
    } finally {
      await handle.close();
    }
  } catch (error) {
    throw asIoError(error, file);
  }
  if (header.subarray(0, 8).toString('latin1') !== 'EBRIXIDX') {
    throw new CorruptFileError(`Corrupt index file ${file}: not an ebrix index file (bad magic)`);
  }
  const kind = TYPE_BY_CODE[header.readUInt32LE(12)];
  if (kind === undefined) {
    throw new CorruptFileError(`Corrupt index file ${file}: index type ${header.readUInt32LE(12)} cannot be opened by this ebrix`);
  }
  return kind;
}

export interface OpenIndexOptions {
  /**
   * FlatIndex and HnswIndex: map the file instead of reading it (default true; see their
   * `open`). IvfPqIndex reads it.
   */
  mmap?: boolean;
  /** Native threads a search may use (default: the native pool's size, following `configure({ threads })`; capped at it). */
  threads?: number;
}

/**
 * Opens an index file of any type (FlatIndex, IvfPqIndex or HnswIndex), as its class's `open`
 * does, with the attributes it was saved with.
 */
export async function openIndex(file: string, options: OpenIndexOptions = {}): Promise<StoredIndex> {
  const kind = await indexFileKind(file);
  const threads = options.threads;
  const mapped = { ...(options.mmap === undefined ? {} : { mmap: options.mmap }), ...(threads ? { threads } : {}) };
  if (kind === 'flat') return FlatIndex.open(file, mapped);
  if (kind === 'hnsw') return HnswIndex.open(file, mapped);
  return IvfPqIndex.open(file, threads ? { threads } : {});
}

/** The kind of an index object. */
function kindOf(index: StoredIndex): IndexKind {
  return index instanceof FlatIndex ? 'flat' : index instanceof HnswIndex ? 'hnsw' : 'ivfpq';
}

export interface IndexVersion {
  version: number;
  /** The model version id bound to the index when it was published, or null. */
  modelVersion: string | null;
  type: IndexKind;
  /** Vectors held. */
  size: number;
  /** ISO time of publication. */
  createdAt: string;
  /** The index file. */
  file: string;
}

export interface IndexStoreOptions {
  /** Versions kept on disk, the live one always among them (default 3). */
  retain?: number;
  /** Options for opening versions. */
  open?: OpenIndexOptions;
}

interface Live {
  version: IndexVersion;
  index: StoredIndex;
  /** Searches in flight on this version. */
  inFlight: number;
  /** Set once another version took over: dispose when the last search ends. */
  retired: boolean;
}

export class IndexStore {
  readonly dir: string;
  readonly retain: number;
  #openOptions: OpenIndexOptions;
  #live: Live | undefined;
  #closed = false;
  /** Publishes and swaps run one at a time. */
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(dir: string, retain: number, openOptions: OpenIndexOptions) {
    this.dir = dir;
    this.retain = retain;
    this.#openOptions = openOptions;
  }

  /** Opens (creating it if needed) a store directory, and the version CURRENT names. */
  static async open(dir: string, options: IndexStoreOptions = {}): Promise<IndexStore> {
    if (typeof dir !== 'string' || dir.length === 0) throw invalid('a directory path', 'dir', dir);
    if (options === null || typeof options !== 'object') throw invalid('an options object', 'options', options);
    const retain = options.retain === undefined ? 3 : requirePositiveInteger(options.retain, 'options.retain', 1 << 20);
    const store = new IndexStore(path.resolve(dir), retain, options.open ?? {});
    try {
      await mkdir(store.dir, { recursive: true });
      for (const entry of await readdir(store.dir)) {
        if (entry.includes('.tmp-')) await rm(path.join(store.dir, entry), { recursive: true, force: true });
      }
    } catch (error) {
      throw asIoError(error, store.dir);
    }
    const current = await store.#readCurrent();
    if (current !== null) await store.#activate(current);
    return store;
  }

  /** The versions on disk, oldest first. */
  async versions(): Promise<IndexVersion[]> {
    let entries: string[];
    try {
      entries = await readdir(this.dir);
    } catch (error) {
      throw asIoError(error, this.dir);
    }
    const numbers = entries
      .map((e) => /^v(\d{6,})$/.exec(e))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[1]))
      .sort((a, b) => a - b);
    return Promise.all(numbers.map((v) => this.#readVersion(v)));
  }

  /** The live version, or undefined before the first publish. */
  current(): IndexVersion | undefined {
    this.#open();
    return this.#live?.version;
  }

  /** The live index. Prefer `search`, which keeps a version alive until its searches end. */
  index(): StoredIndex | undefined {
    this.#open();
    return this.#live?.index;
  }

  /**
   * Searches the live version. A swap during the search does not disturb it: the version it
   * started on stays open until its last search ends, and is disposed then.
   */
  async search(
    queries: Vectors,
    k: number,
    options?: SearchOptions | IvfPqSearchOptions | HnswSearchOptions,
  ): Promise<SearchResult> {
    this.#open();
    const live = this.#live;
    if (live === undefined) throw new InvalidArgumentError('The store has no version yet: publish an index first');
    live.inFlight++;
    try {
      if (live.index instanceof FlatIndex) return await live.index.search(queries, k, options as SearchOptions | undefined);
      if (live.index instanceof HnswIndex) {
        return await live.index.search(queries, k, options as HnswSearchOptions | undefined);
      }
      return await live.index.search(queries, k, options as IvfPqSearchOptions | undefined);
    } finally {
      live.inFlight--;
      if (live.retired && live.inFlight === 0) live.index.dispose();
    }
  }

  /**
   * Writes `index` as the next version (the index stays the caller's) and, unless
   * `activate` is false, makes it the live one. When a version is live, the new index must
   * hold vectors of the same model version or of one bound explicitly: a mismatch with the
   * live version's model is not an error (a new model needs a new index), but a missing
   * binding is. Old versions beyond `retain` are removed.
   */
  async publish(index: StoredIndex, options: { activate?: boolean } = {}): Promise<IndexVersion> {
    this.#open();
    if (!(index instanceof FlatIndex) && !(index instanceof IvfPqIndex) && !(index instanceof HnswIndex)) {
      throw invalid('a FlatIndex, IvfPqIndex or HnswIndex', 'index', index);
    }
    if (index.disposed) throw new DisposedError('index');
    const activate = options.activate ?? true;
    return this.#serial(async () => {
      const existing = await this.versions();
      const version = (existing.at(-1)?.version ?? 0) + 1;
      const name = versionName(version);
      const temp = path.join(this.dir, `${name}.tmp-${process.pid}-${Date.now()}`);
      const info: IndexVersion = {
        version,
        modelVersion: index.modelVersion ?? null,
        type: kindOf(index),
        size: index.size,
        createdAt: new Date().toISOString(),
        file: path.join(this.dir, name, 'index.ebrix'),
      };
      try {
        await mkdir(temp);
        await index.save(path.join(temp, 'index.ebrix'));
        const { file: _file, ...meta } = info;
        await writeFile(path.join(temp, 'version.json'), `${JSON.stringify(meta, null, 2)}\n`);
        await rename(temp, path.join(this.dir, name));
      } catch (error) {
        await rm(temp, { recursive: true, force: true });
        throw asIoError(error, temp);
      }
      if (activate) await this.#activate(version);
      await this.#prune();
      return info;
    });
  }

  /** Makes `version` the live one: searches started before go on with the old one. */
  async swap(version: number): Promise<IndexVersion> {
    this.#open();
    requirePositiveInteger(version, 'version');
    return this.#serial(async () => {
      await this.#activate(version);
      return this.#live!.version;
    });
  }

  /** Goes back to the newest version older than the live one. */
  async rollback(): Promise<IndexVersion> {
    this.#open();
    return this.#serial(async () => {
      const live = this.#live;
      if (live === undefined) throw new InvalidArgumentError('The store has no live version to roll back from');
      const older = (await this.versions()).filter((v) => v.version < live.version.version);
      const target = older.at(-1);
      if (target === undefined) {
        throw new InvalidArgumentError(`No version older than ${live.version.version} is kept (retain ${this.retain})`);
      }
      await this.#activate(target.version);
      return this.#live!.version;
    });
  }

  /** Closes the live index (once its searches end). The files stay. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const live = this.#live;
    this.#live = undefined;
    if (live !== undefined) this.#retire(live);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #open(): void {
    if (this.#closed) throw new DisposedError('index store');
  }

  #serial<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(task, task);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #activate(version: number): Promise<void> {
    const info = await this.#readVersion(version);
    const index = await openIndex(info.file, this.#openOptions);
    if (info.modelVersion !== null && index.modelVersion !== info.modelVersion) {
      index.dispose();
      throw new VersionMismatchError(
        `Version ${version} of ${this.dir} says model ${info.modelVersion} but its file holds ${index.modelVersion ?? 'none'}`,
      );
    }
    // CURRENT is replaced atomically before searches move: a crash leaves either version.
    const temp = path.join(this.dir, `CURRENT.tmp-${process.pid}-${Date.now()}`);
    try {
      await writeFile(temp, `${version}\n`);
      await rename(temp, path.join(this.dir, 'CURRENT'));
    } catch (error) {
      index.dispose();
      await rm(temp, { force: true });
      throw asIoError(error, temp);
    }
    const previous = this.#live;
    this.#live = { version: info, index, inFlight: 0, retired: false };
    if (previous !== undefined) this.#retire(previous);
  }

  #retire(live: Live): void {
    live.retired = true;
    if (live.inFlight === 0) live.index.dispose();
  }

  async #readCurrent(): Promise<number | null> {
    let text: string;
    try {
      text = await readFile(path.join(this.dir, 'CURRENT'), 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw asIoError(error, path.join(this.dir, 'CURRENT'));
    }
    const version = Number(text.trim());
    if (!Number.isSafeInteger(version) || version < 1) {
      throw new CorruptFileError(`Corrupt index store ${this.dir}: CURRENT holds ${JSON.stringify(text.trim())}`);
    }
    return version;
  }

  async #readVersion(version: number): Promise<IndexVersion> {
    const dir = path.join(this.dir, versionName(version));
    let meta: unknown;
    try {
      meta = JSON.parse(await readFile(path.join(dir, 'version.json'), 'utf8'));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new InvalidArgumentError(`Expected a version of ${this.dir} but received ${version} (not found)`);
      }
      if (error instanceof SyntaxError) throw new CorruptFileError(`Corrupt index store ${dir}: version.json is not JSON`);
      throw asIoError(error, dir);
    }
    const m = meta as Partial<IndexVersion>;
    if (m.version !== version || !KINDS.includes(m.type as IndexKind) || typeof m.createdAt !== 'string') {
      throw new CorruptFileError(`Corrupt index store ${dir}: version.json does not describe version ${version}`);
    }
    return {
      version,
      modelVersion: typeof m.modelVersion === 'string' ? m.modelVersion : null,
      type: m.type as IndexKind,
      size: typeof m.size === 'number' ? m.size : 0,
      createdAt: m.createdAt,
      file: path.join(dir, 'index.ebrix'),
    };
  }

  async #prune(): Promise<void> {
    const versions = await this.versions();
    const live = this.#live?.version.version;
    const keep = new Set(versions.slice(-this.retain).map((v) => v.version));
    if (live !== undefined) keep.add(live);
    for (const v of versions) {
      if (!keep.has(v.version)) await rm(path.join(this.dir, versionName(v.version)), { recursive: true, force: true });
    }
  }
}

function versionName(version: number): string {
  return `v${String(version).padStart(6, '0')}`;
}

function asIoError(error: unknown, where: string): Error {
  if (error instanceof Error && 'code' in error && typeof (error as NodeJS.ErrnoException).code === 'string') {
    const code = (error as NodeJS.ErrnoException).code!;
    if (!code.startsWith('EBRIX_')) return new IoError(`${error.message} (${where})`);
  }
  return error as Error;
}
