/**
 * embedCorpus: streams item records through a model's item tower into an index, in batches,
 * optionally through a checkpoint log so a crashed run resumes with no duplicates and no gaps.
 */
import { InvalidArgumentError, VersionMismatchError } from '../errors.js';
import type { Ids } from '../index/ids.js';
import { toIdArray } from '../index/ids.js';
import { progressBar } from '../progress.js';
import { invalid, requirePositiveInteger } from '../validate.js';
import { EmbeddingCheckpoint, MAX_RECORD_BYTES } from './checkpoint.js';

/** What embedCorpus needs of a model (TwoTowerModel has it). */
export interface ItemEmbedder {
  readonly version: string;
  readonly dim: number;
  embedItems(records: readonly unknown[], options?: { task?: string }): Promise<Float32Array>;
}

/** What embedCorpus needs of an index (FlatIndex has it). */
export interface VectorSink {
  readonly dim: number;
  add(ids: Ids, vectors: Float32Array): Promise<void>;
  bindModelVersion?(version: string): void;
  readonly modelVersion?: string | undefined;
}

export interface CorpusProgress {
  /** Items in the index from this corpus so far (resumed ones included). */
  done: number;
  total: number | undefined;
  /** Items taken from the checkpoint instead of being embedded again. */
  resumed: number;
  itemsPerSecond: number;
}

export interface EmbedCorpusOptions<T> {
  model: ItemEmbedder;
  items: AsyncIterable<T> | Iterable<T>;
  index: VectorSink;
  /** The id of an item (default: its `id` field, a number or bigint). */
  id?: (item: T) => number | bigint;
  batchSize?: number;
  task?: string;
  /** Path of the checkpoint log; resuming requires the same items in the same order. */
  checkpoint?: string;
  /** Item count, for progress display only. */
  total?: number;
  onProgress?: (progress: CorpusProgress) => void;
  /** Draw a progress bar on stderr (default: when stderr is a TTY). */
  progressBar?: boolean;
}

export interface EmbedCorpusResult {
  items: number;
  resumed: number;
  embedded: number;
  seconds: number;
  /** Items embedded per second in this run (resumed ones excluded). */
  itemsPerSecond: number;
}

const defaultId = (item: unknown): number | bigint => {
  const id = (item as { id?: unknown } | null)?.id;
  if (typeof id !== 'number' && typeof id !== 'bigint') throw invalid('a number or bigint id field', 'item.id', id);
  return id;
};

/** One iterator over a sync or async iterable. */
function iterate<T>(items: AsyncIterable<T> | Iterable<T>): AsyncIterator<T> | Iterator<T> {
  const asyncIterator = (items as AsyncIterable<T>)[Symbol.asyncIterator];
  if (typeof asyncIterator === 'function') return asyncIterator.call(items);
  const syncIterator = (items as Iterable<T>)[Symbol.iterator];
  if (typeof syncIterator === 'function') return syncIterator.call(items);
  throw invalid('an iterable or async iterable of items', 'items', items);
}

export async function embedCorpus<T>(options: EmbedCorpusOptions<T>): Promise<EmbedCorpusResult> {
  const { model, index } = options;
  const batchSize = requirePositiveInteger(options.batchSize ?? 256, 'batchSize', 1 << 20);
  const idOf = options.id ?? (defaultId as (item: T) => number | bigint);
  if (index.dim !== model.dim) {
    throw invalid(`an index of dim ${model.dim} (the model's)`, 'index', `an index of dim ${index.dim}`);
  }
  if (index.modelVersion !== undefined && index.modelVersion !== model.version) {
    throw new VersionMismatchError(
      `The index holds vectors of model version ${index.modelVersion}; this model is version ${model.version}`,
    );
  }

  const started = performance.now();
  const bar = progressBar('embedding items', process.stderr, options.progressBar ?? process.stderr.isTTY === true);
  let done = 0;
  let resumed = 0;
  let checkpoint: EmbeddingCheckpoint | undefined;
  let source: AsyncIterator<T> | Iterator<T> | undefined;
  const report = (): void => {
    const seconds = (performance.now() - started) / 1000;
    const itemsPerSecond = seconds > 0 ? (done - resumed) / seconds : 0;
    bar.update(done, options.total);
    options.onProgress?.({ done, total: options.total, resumed, itemsPerSecond });
  };

  try {
    if (options.checkpoint !== undefined) {
      const recordBytes = batchSize * (8 + model.dim * 4);
      if (recordBytes > MAX_RECORD_BYTES) {
        throw invalid(`a batchSize of at most ${Math.floor(MAX_RECORD_BYTES / (8 + model.dim * 4))} with a checkpoint`, 'batchSize', batchSize);
      }
      checkpoint = await EmbeddingCheckpoint.open(options.checkpoint, model.version, model.dim);
    }
    // Bound only once nothing can fail before vectors go in.
    index.bindModelVersion?.(model.version);
    source = iterate(options.items);

    if (checkpoint !== undefined) {
      // Replay the log alongside the source: each logged batch goes into the index only after
      // the source has yielded the same ids in the same order (else resuming would leave gaps
      // or stale rows), so nothing of the log is held beyond one batch.
      let position = 0;
      for await (const batch of checkpoint.replay()) {
        for (let i = 0; i < batch.ids.length; i++, position++) {
          const next = await source.next();
          const id = next.done ? undefined : toIdArray([idOf(next.value)])[0];
          if (id !== batch.ids[i]) {
            throw new InvalidArgumentError(
              `Item ${position} of the source ${id === undefined ? 'is missing' : `has id ${id}`} but the checkpoint ` +
                `holds id ${batch.ids[i]} there: resuming needs the same items in the same order (start a new checkpoint otherwise)`,
            );
          }
        }
        await index.add(batch.ids, batch.vectors);
        resumed += batch.ids.length;
      }
      done = resumed;
      if (resumed > 0) report();
    }

    let pending: T[] = [];
    const flush = async (): Promise<void> => {
      if (pending.length === 0) return;
      const batch = pending;
      pending = [];
      const ids = toIdArray(batch.map(idOf));
      const vectors = await model.embedItems(batch, options.task === undefined ? {} : { task: options.task });
      await index.add(ids, vectors);
      await checkpoint?.append({ ids, vectors });
      done += batch.length;
      report();
    };
    for (let next = await source.next(); !next.done; next = await source.next()) {
      pending.push(next.value);
      if (pending.length >= batchSize) await flush();
    }
    await flush();
  } catch (error) {
    // Let the source release what it holds (a file, a database cursor) when we stop early.
    await source?.return?.();
    throw error;
  } finally {
    bar.finish();
    await checkpoint?.close();
  }
  const seconds = (performance.now() - started) / 1000;
  const embedded = done - resumed;
  return { items: done, resumed, embedded, seconds, itemsPerSecond: seconds > 0 ? embedded / seconds : 0 };
}
