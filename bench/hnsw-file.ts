// HnswIndex file times (a speed note, not a suite): build, save, and open mapped or read.
//
//   npx tsx bench/hnsw-file.ts [--n 200000] [--dim 128] [--repeats 5] [--threads N] [--dir /tmp]
//
// Builds an index of n random unit vectors (cosine, connectivity 16, expansionAdd 128, one
// attribute column), saves it, then opens it `repeats` times each way and prints the median:
// mapped (the graph and vectors used in place; the graph's checksum and structure checked,
// the vectors' not), mapped with verify (the vectors' checksum too), and read into memory
// (everything read and checked). The file was just written, so its pages are in the page
// cache: these are warm opens. Each open's first search is timed too, and every opened index
// is checked to answer a batch of queries exactly as the saved one does.
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { HnswIndex, hardwareThreads, simdLevel } from '../lib/index.js';
import { seededUniform } from '../lib/random.js';

const { values } = parseArgs({
  options: {
    n: { type: 'string', default: '200000' },
    dim: { type: 'string', default: '128' },
    repeats: { type: 'string', default: '5' },
    threads: { type: 'string' },
    dir: { type: 'string', default: tmpdir() },
  },
});
const n = Number(values.n);
const dim = Number(values.dim);
const repeats = Number(values.repeats);
const threads = values.threads === undefined ? hardwareThreads() : Number(values.threads);
const next = seededUniform(42);

const vectors = new Float32Array(n * dim);
for (let i = 0; i < vectors.length; i++) vectors[i] = next() * 2 - 1;
const ids = Array.from({ length: n }, (_, i) => i);
const queries = vectors.slice(0, 100 * dim);

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ms = (t0: number): number => performance.now() - t0;

const dir = mkdtempSync(path.join(values.dir, 'ebrix-hnsw-file-'));
const file = path.join(dir, 'index.ebrix');
try {
  using index = new HnswIndex({ dim, metric: 'cosine', connectivity: 16, expansionAdd: 128, threads, attributes: { group: 'uint' } });
  let t0 = performance.now();
  await index.add(ids, vectors, { attributes: ids.map((i) => ({ group: i % 10 })) });
  const buildMs = ms(t0);
  const want = await index.search(queries, 10);
  const saves: number[] = [];
  for (let r = 0; r < Math.max(1, Math.min(repeats, 3)); r++) {
    t0 = performance.now();
    await index.save(file);
    saves.push(ms(t0));
  }
  const bytes = statSync(file).size;
  console.log(
    `HnswIndex ${n.toLocaleString('en-US')} × ${dim} cosine (M 16, efConstruction 128), ${threads} threads, ${simdLevel()}; ` +
      `built in ${(buildMs / 1e3).toFixed(1)} s; file ${(bytes / 2 ** 20).toFixed(1)} MiB`,
  );
  console.log(`save (temporary file, fsync, rename): median ${median(saves).toFixed(0)} ms of ${saves.map((s) => s.toFixed(0)).join(', ')}`);
  for (const [name, options] of [
    ['open mapped', { mmap: true }],
    ['open mapped + verify', { mmap: true, verify: true }],
    ['open read (full load)', { mmap: false }],
  ] as const) {
    const opens: number[] = [];
    const firsts: number[] = [];
    for (let r = 0; r < repeats; r++) {
      t0 = performance.now();
      using opened = await HnswIndex.open(file, options);
      opens.push(ms(t0));
      t0 = performance.now();
      const got = await opened.search(queries, 10);
      firsts.push(ms(t0));
      if (got.ids.some((id, i) => id !== want.ids[i]) || got.scores.some((s, i) => s !== want.scores[i])) {
        throw new Error(`${name}: results differ from the saved index`);
      }
    }
    console.log(
      `${name.padEnd(22)} median ${median(opens).toFixed(1)} ms (of ${opens.map((o) => o.toFixed(1)).join(', ')}); ` +
        `first 100-query search after it ${median(firsts).toFixed(1)} ms`,
    );
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
