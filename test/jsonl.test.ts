import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { InvalidArgumentError, InvalidRecordError, IoError } from '../lib/errors.js';
import * as ebrix from '../lib/index.js';
import { READ_CHUNK_BYTES, bufferedShuffle, readJsonl, writeJsonl } from '../lib/train/jsonl.js';
import { seededUniform } from '../lib/random.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'ebrix-jsonl-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function collect<T>(records: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const record of records) out.push(record);
  return out;
}

async function* numbered(n: number): AsyncGenerator<{ i: number }> {
  for (let i = 0; i < n; i++) yield { i };
}

describe('writeJsonl and readJsonl', () => {
  it('are exported from the package', () => {
    expect(ebrix.readJsonl).toBe(readJsonl);
    expect(ebrix.writeJsonl).toBe(writeJsonl);
    expect(typeof ebrix.loadWordNet).toBe('function');
    expect(typeof ebrix.wordnetQueries).toBe('function');
  });

  it('round-trip records of every JSON kind, one per line', async () => {
    const file = path.join(dir, 'round-trip.jsonl');
    const records = [
      { task: 'gloss', text: 'large feline; "tiger"\nwith a newline', item: 11108 },
      { text: 'Crème brûlée 🙂 日本語', tags: ['a', 'b'], nested: { x: null, y: [1.5, -2e-7] } },
      'a bare string',
      42,
      null,
      [],
      { lone: '\ud800' },
    ];
    expect(await writeJsonl(file, records)).toBe(records.length);
    const text = await readFile(file, 'utf8');
    expect(text.endsWith('\n')).toBe(true);
    expect(text.split('\n')).toHaveLength(records.length + 1);
    expect(await collect(readJsonl(file))).toEqual(records);
    // An async source works the same, and the iterable can be read more than once.
    expect(await writeJsonl(file, numbered(5))).toBe(5);
    const again = readJsonl<{ i: number }>(file);
    expect((await collect(again)).map((r) => r.i)).toEqual([0, 1, 2, 3, 4]);
    expect((await collect(again)).map((r) => r.i)).toEqual([0, 1, 2, 3, 4]);
    expect(await writeJsonl(file, [])).toBe(0);
    expect(await collect(readJsonl(file))).toEqual([]);
  });

  it('skips blank lines, reads CRLF endings, a BOM and a last line without a newline', async () => {
    const file = path.join(dir, 'crlf.jsonl');
    await writeFile(file, '\ufeff{"a":1}\r\n\r\n  \r\n{"a":2}\r\n\n{"a":3}');
    expect(await collect(readJsonl(file))).toEqual([{ a: 1 }, { a: 2 }, { a: 3 }]);
  });

  it('reassembles characters and lines split across reads', async () => {
    // Each file puts the 64 KiB read boundary at a different byte of a 4-byte, a 3-byte
    // and a 2-byte character, and one line spans several reads.
    for (let shift = 0; shift < 4; shift++) {
      const file = path.join(dir, `split-${shift}.jsonl`);
      // '{"s":"' is 6 bytes: the first 🙂 starts at byte READ_CHUNK_BYTES - 3 + shift.
      const filler = 'y'.repeat(READ_CHUNK_BYTES - 9);
      const records = [
        { s: `${'x'.repeat(shift)}${filler}🙂€é🙂` },
        { s: '日本'.repeat(3 * READ_CHUNK_BYTES) },
        { s: 'é' },
      ];
      await writeJsonl(file, records);
      const bytes = await readFile(file);
      expect(bytes.subarray(READ_CHUNK_BYTES - 4, READ_CHUNK_BYTES + 4).toString('utf8')).toMatch(/🙂|€|é/);
      expect(await collect(readJsonl(file))).toEqual(records);
    }
  });

  it('names the file and the 1-based line of a malformed record', async () => {
    const file = path.join(dir, 'malformed.jsonl');
    await writeFile(file, '{"a":1}\n\n{"a":2}\n{"a": oops}\n{"a":4}\n');
    const seen: unknown[] = [];
    const read = async () => {
      for await (const record of readJsonl(file)) seen.push(record);
    };
    await expect(read()).rejects.toThrow(InvalidRecordError);
    expect(seen).toEqual([{ a: 1 }, { a: 2 }]);
    await expect(collect(readJsonl(file))).rejects.toThrow(
      new RegExp(`^Expected a JSON value for line 4 of ${file.replace(/[.\\]/g, '\\$&')} but received "\\{\\\\"a\\\\": oops\\}"`),
    );

    await writeFile(file, Buffer.concat([Buffer.from('{"a":1}\n"'), Buffer.from([0xff, 0xfe]), Buffer.from('"\n')]));
    await expect(collect(readJsonl(file))).rejects.toThrow(`Expected UTF-8 text for line 2 of ${file}`);
  });

  it('fails clearly on a missing file, when iterated', async () => {
    const file = path.join(dir, 'missing.jsonl');
    const records = readJsonl(file);
    await expect(collect(records)).rejects.toThrow(IoError);
    await expect(collect(records)).rejects.toThrow(`Cannot read the JSON Lines file ${file}`);
  });

  it('checks its arguments with the usual message', () => {
    expect(() => readJsonl('')).toThrow(InvalidArgumentError);
    expect(() => readJsonl('x.jsonl', { shuffleBuffer: -1 })).toThrow(
      'Expected a non-negative integer for options.shuffleBuffer but received -1',
    );
    expect(() => readJsonl('x.jsonl', { seed: 1.5 })).toThrow(/for options\.seed but received 1\.5/);
    expect(() => readJsonl('x.jsonl', { signal: {} as AbortSignal })).toThrow(/AbortSignal for options\.signal/);
    return expect(writeJsonl('x.jsonl', 3 as unknown as unknown[])).rejects.toThrow(
      'Expected an iterable or async iterable of records for records but received 3',
    );
  });

  it('stops when the signal aborts', async () => {
    const file = path.join(dir, 'abort.jsonl');
    await writeJsonl(file, numbered(1000));
    const controller = new AbortController();
    const seen: number[] = [];
    const read = async () => {
      for await (const record of readJsonl<{ i: number }>(file, { signal: controller.signal, shuffleBuffer: 10 })) {
        seen.push(record.i);
        if (seen.length === 20) controller.abort();
      }
    };
    await expect(read()).rejects.toThrow(/aborted/i);
    expect(seen).toHaveLength(20);
    await expect(collect(readJsonl(file, { signal: controller.signal }))).rejects.toThrow(/aborted/i);
  });
});

describe('shuffled reading', () => {
  const n = 200_000;
  const size = 1000;
  let file: string;
  beforeAll(async () => {
    file = path.join(dir, 'large.jsonl');
    expect(await writeJsonl(file, numbered(n))).toBe(n);
  });

  it('emits every record once, differently for each seed, the same for one seed', async () => {
    const heapBefore = process.memoryUsage().heapUsed;
    const start = performance.now();
    const order = new Int32Array(n).fill(-1);
    let at = 0;
    for await (const { i } of readJsonl<{ i: number }>(file, { shuffleBuffer: size, seed: 5 })) order[at++] = i;
    console.log(
      `read ${n} records shuffled through ${size} in ${(performance.now() - start).toFixed(0)} ms; ` +
        `heap grew ${((process.memoryUsage().heapUsed - heapBefore) / 2 ** 20).toFixed(1)} MiB`,
    );
    expect(at).toBe(n);
    const seen = new Uint8Array(n);
    for (const i of order) seen[i]!++;
    expect(seen.every((c) => c === 1)).toBe(true);

    // A record read from the file can only leave the buffer after it: with a buffer of
    // `size`, record i comes out at place i - size or later. This is what bounds memory.
    let earliest = 0;
    let displaced = 0;
    for (let place = 0; place < n; place++) {
      earliest = Math.min(earliest, place - (order[place]! - size));
      if (order[place] !== place) displaced++;
    }
    expect(earliest).toBeGreaterThanOrEqual(0);
    expect(displaced).toBeGreaterThan(0.99 * n);

    const same: number[] = [];
    for await (const { i } of readJsonl<{ i: number }>(file, { shuffleBuffer: size, seed: 5 })) {
      same.push(i);
      if (same.length === 5000) break;
    }
    expect(same).toEqual(Array.from(order.subarray(0, 5000)));
    const other: number[] = [];
    for await (const { i } of readJsonl<{ i: number }>(file, { shuffleBuffer: size, seed: 6 })) {
      other.push(i);
      if (other.length === 5000) break;
    }
    expect(other).not.toEqual(same);
  });

  it('never holds more than the buffer size', async () => {
    let pulled = 0;
    async function* counted(): AsyncGenerator<number> {
      for (let i = 0; i < 20_000; i++) {
        pulled++;
        yield i;
      }
    }
    let received = 0;
    let mostHeld = 0;
    const out: number[] = [];
    for await (const i of bufferedShuffle(counted(), 100, seededUniform(3))) {
      received++;
      mostHeld = Math.max(mostHeld, pulled - received);
      out.push(i);
    }
    expect(mostHeld).toBe(100);
    expect(out.sort((a, b) => a - b)).toEqual(Array.from({ length: 20_000 }, (_, i) => i));
  });

  it('reads in file order without a buffer, and with a buffer larger than the file', async () => {
    const small = path.join(dir, 'small.jsonl');
    await writeJsonl(small, numbered(50));
    const plain = (await collect(readJsonl<{ i: number }>(small))).map((r) => r.i);
    expect(plain).toEqual(Array.from({ length: 50 }, (_, i) => i));
    const shuffled = (await collect(readJsonl<{ i: number }>(small, { shuffleBuffer: 1000 }))).map((r) => r.i);
    expect(shuffled).not.toEqual(plain);
    expect([...shuffled].sort((a, b) => a - b)).toEqual(plain);
  });
});

describe('writeJsonl atomicity', () => {
  it('leaves an existing file as it was when the source throws or a record cannot be written', async () => {
    const sub = await mkdtemp(path.join(dir, 'atomic-'));
    const file = path.join(sub, 'data.jsonl');
    await writeJsonl(file, [{ version: 1 }]);
    const before = await readFile(file, 'utf8');

    async function* failing(): AsyncGenerator<unknown> {
      yield { version: 2 };
      yield { version: 2 };
      throw new Error('source broke');
    }
    await expect(writeJsonl(file, failing())).rejects.toThrow('source broke');
    expect(await readFile(file, 'utf8')).toBe(before);

    await expect(writeJsonl(file, [{ ok: true }, { big: 1n }])).rejects.toThrow(InvalidRecordError);
    await expect(writeJsonl(file, [{ ok: true }, undefined])).rejects.toThrow(
      'Expected a JSON-serialisable value for record 1 but received undefined',
    );
    expect(await readFile(file, 'utf8')).toBe(before);
    expect(await readdir(sub)).toEqual(['data.jsonl']);

    await expect(writeJsonl(path.join(sub, 'no-such-dir', 'x.jsonl'), [1])).rejects.toThrow(IoError);
    expect(await readdir(sub)).toEqual(['data.jsonl']);
  });
});
