/**
 * A small streaming JSONL reader for the CLI, standing in until the shared reader in
 * lib/train/jsonl.ts lands (same call shape, `readJsonl<T>(file)`, without its shuffle
 * buffer). One JSON value per line, blank lines skipped; a line that is not JSON fails with
 * its file and line number.
 */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';

import { CorruptFileError } from '../errors.js';
import { asIoError } from './atomic-file.js';

export async function* readJsonl<T>(file: string): AsyncGenerator<T> {
  const stream = createReadStream(file, { encoding: 'utf8' });
  const lines = createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY });
  let line = 0;
  try {
    for await (const text of lines) {
      line++;
      if (text.trim().length === 0) continue;
      try {
        yield JSON.parse(text) as T;
      } catch (error) {
        if (!(error instanceof SyntaxError)) throw error;
        throw new CorruptFileError(`${file}:${line}: not JSON (${error.message})`);
      }
    }
  } catch (error) {
    throw asIoError(error, file);
  } finally {
    lines.close();
    stream.destroy();
  }
}

/** Lines in a file (for a progress bar's total), counted in one streaming pass. */
export async function countLines(file: string): Promise<number> {
  let count = 0;
  let last = 0x0a;
  try {
    for await (const chunk of createReadStream(file) as AsyncIterable<Buffer>) {
      for (let i = chunk.indexOf(0x0a); i >= 0; i = chunk.indexOf(0x0a, i + 1)) count++;
      if (chunk.length > 0) last = chunk[chunk.length - 1]!;
    }
  } catch (error) {
    throw asIoError(error, file);
  }
  return last === 0x0a ? count : count + 1;
}
