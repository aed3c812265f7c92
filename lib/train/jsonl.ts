/**
 * JSON Lines in and out for training data: one JSON value per line, UTF-8, '\n' or '\r\n'.
 *
 * readJsonl streams: it holds one read chunk and the line being assembled, never the file,
 * so a file larger than memory trains as well as a small one. writeJsonl replaces its target
 * atomically (temp file, fsync, rename), so a crash or a throwing source leaves the previous
 * file whole.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { TextDecoder } from 'node:util';

import { InvalidRecordError, IoError } from '../errors.js';
import { seededUniform } from '../random.js';
import { describe, invalid } from '../validate.js';

export interface ReadJsonlOptions {
  /**
   * Records held for a seeded shuffle (default 0: file order). A record is emitted no more
   * than this many places before its place in the file, so a buffer well above the length
   * of any run of similar records is needed for a good mix.
   */
  shuffleBuffer?: number;
  /** Seed of the shuffle (default 1). */
  seed?: number;
  /** Stops the read: the iteration rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** Bytes read from the file at a time. Exported for the tests that split characters across reads. */
export const READ_CHUNK_BYTES = 64 * 1024;

/**
 * The records of a JSON Lines file, in file order or shuffled through a bounded buffer.
 * Blank lines are skipped; a line that is not valid UTF-8 JSON rejects with
 * InvalidRecordError naming the file and the 1-based line number; a file that cannot be
 * opened rejects with IoError. Nothing is read until the iteration starts, and each
 * iteration reads the file afresh.
 */
export function readJsonl<T = unknown>(file: string, options: ReadJsonlOptions = {}): AsyncIterable<T> {
  if (typeof file !== 'string' || file === '') throw invalid('a file path', 'file', file);
  if (options === null || typeof options !== 'object') throw invalid('an options object', 'options', options);
  const shuffleBuffer = options.shuffleBuffer ?? 0;
  if (typeof shuffleBuffer !== 'number' || !Number.isSafeInteger(shuffleBuffer) || shuffleBuffer < 0) {
    throw invalid('a non-negative integer', 'options.shuffleBuffer', shuffleBuffer);
  }
  const seed = options.seed ?? 1;
  if (typeof seed !== 'number' || !Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw invalid('an integer from 0 to 2^32-1', 'options.seed', seed);
  }
  const signal = options.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw invalid('an AbortSignal', 'options.signal', signal);

  return {
    [Symbol.asyncIterator]: () => {
      const records = readRecords(file, signal) as AsyncGenerator<T>;
      return shuffleBuffer > 1 ? bufferedShuffle(records, shuffleBuffer, seededUniform(seed), signal) : records;
    },
  };
}

async function* readRecords(file: string, signal: AbortSignal | undefined): AsyncGenerator<unknown> {
  signal?.throwIfAborted();
  let handle: FileHandle;
  try {
    handle = await open(file, 'r');
  } catch (error) {
    throw new IoError(`Cannot read the JSON Lines file ${file}: ${(error as Error).message}`);
  }
  try {
    // fatal: a line with invalid UTF-8 is a bad record, not one with U+FFFD in its strings.
    const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
    const chunk = Buffer.allocUnsafe(READ_CHUNK_BYTES);
    // The start of a line that continues into the next read; copied, as `chunk` is reused.
    let partial: Buffer[] = [];
    let lineNumber = 0;
    for (;;) {
      signal?.throwIfAborted();
      let bytesRead: number;
      try {
        ({ bytesRead } = await handle.read(chunk, 0, chunk.length, null));
      } catch (error) {
        throw new IoError(`Cannot read the JSON Lines file ${file}: ${(error as Error).message}`);
      }
      if (bytesRead === 0) break;
      let start = 0;
      for (;;) {
        // '\n' never occurs inside a multi-byte UTF-8 sequence, so lines split on bytes.
        const newline = chunk.indexOf(0x0a, start);
        if (newline < 0 || newline >= bytesRead) {
          if (start < bytesRead) partial.push(Buffer.from(chunk.subarray(start, bytesRead)));
          break;
        }
        let line = chunk.subarray(start, newline);
        if (partial.length > 0) {
          partial.push(line);
          line = Buffer.concat(partial);
          partial = [];
        }
        start = newline + 1;
        lineNumber++;
        const record = parseLine(line, decoder, file, lineNumber);
        if (record !== BLANK) {
          signal?.throwIfAborted();
          yield record;
        }
      }
    }
    if (partial.length > 0) {
      // A last line without a trailing newline.
      const record = parseLine(Buffer.concat(partial), decoder, file, lineNumber + 1);
      if (record !== BLANK) {
        signal?.throwIfAborted();
        yield record;
      }
    }
  } finally {
    await handle.close();
  }
}

const BLANK = Symbol('blank line');

function parseLine(bytes: Buffer, decoder: TextDecoder, file: string, lineNumber: number): unknown {
  const end = bytes.length > 0 && bytes[bytes.length - 1] === 0x0d ? bytes.length - 1 : bytes.length;
  let text: string;
  try {
    text = decoder.decode(bytes.subarray(0, end));
  } catch {
    throw new InvalidRecordError(`Expected UTF-8 text for line ${lineNumber} of ${file} but received invalid bytes`);
  }
  if (lineNumber === 1 && text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  if (text.trim() === '') return BLANK;
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new InvalidRecordError(
      `Expected a JSON value for line ${lineNumber} of ${file} but received ${describe(text)} (${(error as Error).message})`,
    );
  }
}

/**
 * A seeded buffer shuffle: fill a buffer of `size` records, then for each further record
 * emit a random buffered one and put the new record in its place; at the end, emit what is
 * left in random order. At most `size` records are held at any time, every record is
 * emitted exactly once, and the order depends only on the source order and `random`.
 */
export async function* bufferedShuffle<T>(
  source: AsyncIterable<T>,
  size: number,
  random: () => number,
  signal?: AbortSignal,
): AsyncGenerator<T> {
  const buffer: T[] = [];
  for await (const record of source) {
    if (buffer.length < size) {
      buffer.push(record);
      continue;
    }
    const j = Math.floor(random() * size);
    const out = buffer[j]!;
    buffer[j] = record;
    signal?.throwIfAborted();
    yield out;
  }
  while (buffer.length > 0) {
    // Swap a random record to the end and pop it, so the drain releases records as it goes.
    const j = Math.floor(random() * buffer.length);
    const last = buffer.length - 1;
    [buffer[j], buffer[last]] = [buffer[last]!, buffer[j]!];
    signal?.throwIfAborted();
    yield buffer.pop()!;
  }
}

/** Lines are gathered into writes of about this many characters. */
const WRITE_BATCH_CHARS = 1 << 20;

/**
 * Writes `records` to `file`, one JSON value per line, and returns how many it wrote. The
 * file is replaced only once every record is written and synced: if a record cannot be
 * serialised (InvalidRecordError), the source throws (its error is passed on) or the disk
 * fails (IoError), an existing `file` is left as it was and no temp file remains.
 */
export async function writeJsonl(file: string, records: Iterable<unknown> | AsyncIterable<unknown>): Promise<number> {
  if (typeof file !== 'string' || file === '') throw invalid('a file path', 'file', file);
  if (
    records === null ||
    typeof records !== 'object' ||
    (typeof (records as Iterable<unknown>)[Symbol.iterator] !== 'function' &&
      typeof (records as AsyncIterable<unknown>)[Symbol.asyncIterator] !== 'function')
  ) {
    throw invalid('an iterable or async iterable of records', 'records', records);
  }

  const temp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  let handle: FileHandle | undefined;
  try {
    handle = await io(open(temp, 'wx'), temp);
    let count = 0;
    let batch: string[] = [];
    let batchChars = 0;
    for await (const record of records) {
      const line = serialise(record, count);
      batch.push(line, '\n');
      batchChars += line.length + 1;
      count++;
      if (batchChars >= WRITE_BATCH_CHARS) {
        await io(writeAll(handle, batch.join('')), temp);
        batch = [];
        batchChars = 0;
      }
    }
    if (batch.length > 0) await io(writeAll(handle, batch.join('')), temp);
    await io(handle.sync(), temp);
    await io(handle.close(), temp);
    handle = undefined;
    await io(rename(temp, file), file);
    return count;
  } catch (error) {
    await handle?.close().catch(() => undefined);
    await rm(temp, { force: true }).catch(() => undefined);
    throw error;
  }
}

function serialise(record: unknown, index: number): string {
  let line: string | undefined;
  try {
    line = JSON.stringify(record);
  } catch (error) {
    // BigInt values and cycles.
    throw new InvalidRecordError(
      `Expected a JSON-serialisable value for record ${index} but received ${describe(record)} (${(error as Error).message})`,
    );
  }
  if (line === undefined) {
    throw new InvalidRecordError(`Expected a JSON-serialisable value for record ${index} but received ${describe(record)}`);
  }
  return line;
}

/** FileHandle.write may write part of what it is given; this loops until all of it is written. */
async function writeAll(handle: FileHandle, text: string): Promise<void> {
  const bytes = Buffer.from(text, 'utf8');
  for (let offset = 0; offset < bytes.length; ) {
    const { bytesWritten } = await handle.write(bytes, offset, bytes.length - offset);
    offset += bytesWritten;
  }
}

/** Awaits a file-system call, reporting its failure as IoError. */
async function io<T>(promise: Promise<T>, where: string): Promise<T> {
  try {
    return await promise;
  } catch (error) {
    throw new IoError(`Cannot write the JSON Lines file ${where}: ${(error as Error).message}`);
  }
}

/** Lines in a file (a progress bar's total), counted in one streaming pass; a last line without a newline counts. */
export async function countLines(file: string): Promise<number> {
  let count = 0;
  let last = 0x0a;
  try {
    for await (const chunk of createReadStream(file) as AsyncIterable<Buffer>) {
      for (let i = chunk.indexOf(0x0a); i >= 0; i = chunk.indexOf(0x0a, i + 1)) count++;
      if (chunk.length > 0) last = chunk[chunk.length - 1]!;
    }
  } catch (error) {
    throw new IoError(`Cannot read the JSON Lines file ${file}: ${(error as Error).message}`);
  }
  return last === 0x0a ? count : count + 1;
}
