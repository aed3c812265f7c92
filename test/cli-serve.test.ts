import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';

import { main } from '../lib/cli.js';
import { FlatIndex, HnswIndex, IndexStore, IvfPqIndex, TwoTowerModel } from '../lib/index.js';
import { serveCommand } from '../lib/serve/commands.js';
import { DIM, catalogItem, catalogPackage, textPackage } from './serve-fixtures.js';

const N = 300;
let dir: string;
let pkg: string;
let otherPkg: string;
let items: string;
let model: TwoTowerModel;
let out: string[] = [];
let err: string[] = [];

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'ebrix-cli-'));
  pkg = await catalogPackage(dir, 'catalog', 3);
  otherPkg = await catalogPackage(dir, 'other', 8);
  model = await TwoTowerModel.load(pkg, { threads: 1 });
  items = path.join(dir, 'items.jsonl');
  // One id as a string of digits, a blank line in the middle: both are fine.
  const lines = Array.from({ length: N }, (_, i) => JSON.stringify(i === 7 ? { ...catalogItem(i), id: String(catalogItem(i).id) } : catalogItem(i)));
  lines.splice(100, 0, '');
  await writeFile(items, `${lines.join('\n')}\n`);
});
afterAll(async () => {
  await model.dispose();
  await rm(dir, { recursive: true, force: true });
});

async function run(...argv: string[]): Promise<number> {
  out = [];
  err = [];
  const log = vi.spyOn(console, 'log').mockImplementation((...args) => void out.push(args.join(' ')));
  const error = vi.spyOn(console, 'error').mockImplementation((...args) => void err.push(args.join(' ')));
  try {
    return await main(argv);
  } finally {
    log.mockRestore();
    error.mockRestore();
  }
}
afterEach(() => vi.restoreAllMocks());

describe('ebrix CLI: embed, build, search, serve', () => {
  it('embeds a JSONL file into JSONL or raw float32 vectors', async () => {
    const jsonl = path.join(dir, 'vectors.jsonl');
    expect(await run('embed', '--model', pkg, '--items', items, '--out', jsonl, '--batch', '64')).toBe(0);
    expect(out.at(-1)).toMatch(/^embedded 300 items with catalog \(version \S+, dim 16\) into .*vectors\.jsonl in [\d.]+ s$/);
    const rows = (await readFile(jsonl, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { id: string; vector: number[] });
    expect(rows).toHaveLength(N);
    expect(rows[7]!.id).toBe('1007');
    const expected = await model.embedItems([catalogItem(0), catalogItem(299)]);
    rows[0]!.vector.forEach((v, i) => expect(v).toBeCloseTo(expected[i]!, 5));
    rows[299]!.vector.forEach((v, i) => expect(v).toBeCloseTo(expected[DIM + i]!, 5));

    const raw = path.join(dir, 'vectors.f32');
    expect(await run('embed', '--model', pkg, '--items', items, '--out', raw, '--format', 'f32', '--id-field', '#')).toBe(0);
    const bytes = await readFile(raw);
    expect(bytes.length).toBe(N * DIM * 4);
    const floats = new Float32Array(bytes.buffer, bytes.byteOffset, N * DIM);
    expect(floats[DIM * 299]).toBeCloseTo(expected[DIM]!, 5);
    expect((await readFile(`${raw}.ids`, 'utf8')).trim().split('\n')).toEqual(Array.from({ length: N }, (_, i) => String(i)));
  });

  it('builds flat and IVF-PQ index files and store versions bound to the model version', async () => {
    const flatFile = path.join(dir, 'flat.ebrix');
    expect(await run('build', '--model', pkg, '--items', items, '--out', flatFile)).toBe(0);
    expect(out.at(-1)).toMatch(/^built FlatIndex \(f32\) of 300 items with model catalog version \S+ in [\d.]+ s; saved to /);
    using flat = await FlatIndex.open(flatFile);
    expect(flat.size).toBe(N);
    expect(flat.modelVersion).toBe(model.version);
    const probe = await model.embedItems([catalogItem(42)]);
    expect((await flat.search(probe, 1)).ids[0]).toBe(1042n);

    const ivfFile = path.join(dir, 'ivf.ebrix');
    expect(await run('build', '--model', pkg, '--items', items, '--out', ivfFile, '--type', 'ivfpq', '--nlist', '8', '--refine', 'f32')).toBe(0);
    using ivf = await IvfPqIndex.open(ivfFile);
    expect(ivf.size).toBe(N);
    expect(ivf.modelVersion).toBe(model.version);

    const i8File = path.join(dir, 'i8.ebrix');
    expect(await run('build', '--model', pkg, '--items', items, '--out', i8File, '--storage', 'i8')).toBe(0);
    using i8 = await FlatIndex.open(i8File);
    expect(i8.storage).toBe('i8');

    const storeDir = path.join(dir, 'store');
    expect(await run('build', '--model', pkg, '--items', items, '--store', storeDir)).toBe(0);
    expect(await run('build', '--model', pkg, '--items', items, '--store', storeDir, '--type', 'ivfpq')).toBe(0);
    expect(out.at(-1)).toMatch(/published as version 2 of /);
    const store = await IndexStore.open(storeDir);
    expect(store.current()).toMatchObject({ version: 2, type: 'ivfpq', modelVersion: model.version, size: N });
    store.close();
  });

  it('searches an index and prints the results with their records', async () => {
    const flatFile = path.join(dir, 'flat.ebrix');
    expect(await run('search', '--model', pkg, '--index', flatFile, '--text', 'red wooden chair', '--k', '3', '--items', items)).toBe(0);
    expect(out[0]).toMatch(/^model catalog version \S+ · flat index .*flat\.ebrix \(300 items\)$/);
    expect(out[1]).toMatch(/^3 items in [\d.]+ ms \(embed [\d.]+, search [\d.]+, rank [\d.]+\)$/);
    expect(out.slice(2)).toHaveLength(3);
    for (const line of out.slice(2)) expect(line).toMatch(/^\d\. 1\d{3}\s+-?\d\.\d{4}  id=1\d{3}  title=.* price=\d+  rating=\d  category=\w+$/);

    expect(await run('search', '--model', pkg, '--store', path.join(dir, 'store'), '--query', '{"text":"lamp"}', '--k', '2', '--json', '--task', 'click')).toBe(0);
    const json = JSON.parse(out.join('\n')) as { items: { id: string; score: number }[]; timings: Record<string, number> };
    expect(json.items).toHaveLength(2);
    expect(json.items[0]!.id).toMatch(/^1\d{3}$/);
    expect(json.timings.totalMs).toBeGreaterThan(0);

    // The wrong package for the index: refused, exit 1, with the code.
    expect(await run('search', '--model', otherPkg, '--index', flatFile, '--text', 'lamp')).toBe(1);
    expect(err[0]).toMatch(/^ebrix search failed \[EBRIX_VERSION_MISMATCH\]: /);
  });

  it('search --filter: only items whose attributes (kept in the index file) pass', async () => {
    // The CLI's build keeps no attributes; an index made with a schema through the API does,
    // in its file. Same vectors and model version as the built flat index.
    using built = await FlatIndex.open(path.join(dir, 'flat.ebrix'));
    const ids = Array.from({ length: N }, (_, i) => BigInt(1000 + i));
    const vectors = new Float32Array(N * DIM);
    ids.forEach((id, i) => vectors.set(built.get(id), i * DIM));
    const attrsFile = path.join(dir, 'with-attributes.ebrix');
    for (const type of ['flat', 'hnsw'] as const) {
      const schema = { category: 'category', price: 'uint' } as const;
      using index =
        type === 'flat'
          ? new FlatIndex({ dim: DIM, modelVersion: model.version, attributes: schema })
          : new HnswIndex({ dim: DIM, modelVersion: model.version, attributes: schema, threads: 1 });
      const records = ids.map((_, i) => ({ category: catalogItem(i).category, price: catalogItem(i).price }));
      await index.add(ids, vectors, { attributes: records });
      await index.save(attrsFile);
      const filter = '{"category":"home","price":{"lt":50}}';
      expect(await run('search', '--model', pkg, '--index', attrsFile, '--text', 'lamp', '--k', '5', '--filter', filter, '--json')).toBe(0);
      const found = (JSON.parse(out.join('\n')) as { items: { id: string }[] }).items;
      expect(found).toHaveLength(5);
      for (const hit of found) {
        const item = catalogItem(Number(hit.id) - 1000);
        expect(item.category).toBe('home');
        expect(item.price).toBeLessThan(50);
      }
      // Without the filter other categories come first for some query.
      expect(await run('search', '--model', pkg, '--index', attrsFile, '--text', 'lamp', '--k', '30', '--json')).toBe(0);
      const all = (JSON.parse(out.join('\n')) as { items: { id: string }[] }).items;
      expect(all.some((hit) => catalogItem(Number(hit.id) - 1000).category !== 'home')).toBe(true);
    }
    expect(await run('search', '--model', pkg, '--index', attrsFile, '--text', 'x', '--filter', '[1]')).toBe(2);
    expect(await run('search', '--model', pkg, '--index', attrsFile, '--text', 'x', '--filter', '{"nope":1}')).toBe(1);
    expect(err[0]).toMatch(/\[EBRIX_INVALID_ARGUMENT\]/);
    // An index file without attributes: the filter is refused, with the reason.
    expect(await run('search', '--model', pkg, '--index', path.join(dir, 'flat.ebrix'), '--text', 'x', '--filter', '{"category":"home"}')).toBe(1);
    expect(err[0]).toMatch(/options.attributes/);
  });

  it('exits 2 on usage errors, 1 on failures, 0 with --help', async () => {
    expect(await run('embed', '--help')).toBe(0);
    expect(out[0]).toMatch(/^ebrix embed --model DIR --items FILE --out FILE/);
    for (const command of ['embed', 'build', 'search', 'serve']) {
      expect(await run(command, '-h')).toBe(0);
      expect(out.join('\n')).toContain(`ebrix ${command} `);
    }
    expect(await run('embed', '--items', items, '--out', path.join(dir, 'x'))).toBe(2);
    expect(err[0]).toMatch(/^ebrix embed: --model is required/);
    expect(await run('build', '--model', pkg, '--items', items)).toBe(2);
    expect(err[0]).toContain('give one of --out and --store');
    expect(await run('build', '--model', pkg, '--items', items, '--out', 'x', '--type', 'hnsw')).toBe(2);
    expect(await run('build', '--model', pkg, '--items', items, '--out', 'x', '--nlist', '4')).toBe(2);
    expect(await run('search', '--model', pkg, '--index', 'a', '--store', 'b', '--text', 'x')).toBe(2);
    expect(await run('search', '--model', pkg, '--index', 'a', '--query', '[1]')).toBe(2);
    expect(await run('search', '--model', pkg, '--index', 'a', '--text', 'x', '--k', '0')).toBe(2);
    expect(await run('search', '--model', pkg, '--index', 'a', '--text', 'x', '--bogus')).toBe(2);
    expect(await run('serve', '--model', pkg, '--store', 'a', '--save')).toBe(2);
    expect(await run('serve', '--model', pkg, '--index', 'a', '--port', '99999')).toBe(2);
    // ebrix bench hands its arguments to bench/run.ts and exits with its status (2: a bad suite).
    expect(await run('bench', '--suite', 'nope')).toBe(2);

    expect(await run('search', '--model', path.join(dir, 'missing'), '--index', 'a', '--text', 'x')).toBe(1);
    expect(err[0]).toMatch(/\[EBRIX_CORRUPT_MODEL\]/);
    const broken = path.join(dir, 'broken.jsonl');
    await writeFile(broken, `${JSON.stringify(catalogItem(0))}\n{"id": 5, "title": \n`);
    expect(await run('embed', '--model', pkg, '--items', broken, '--out', path.join(dir, 'broken.out'))).toBe(1);
    expect(err[0]).toMatch(/\[EBRIX_INVALID_RECORD\].*line 2 of .*broken\.jsonl/);
    await writeFile(broken, `${JSON.stringify({ ...catalogItem(0), id: -4 })}\n`);
    expect(await run('embed', '--model', pkg, '--items', broken, '--out', path.join(dir, 'broken.out'))).toBe(1);
    expect(err[0]).toMatch(/Expected a non-negative integer id .* for .*broken\.jsonl: record 0, field "id" but received -4/);
    // Nothing half-written is left behind.
    await expect(readFile(path.join(dir, 'broken.out'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('serves until told to stop, then drains and saves', async () => {
    let stop!: () => void;
    const until = new Promise<void>((resolve) => (stop = resolve));
    const logs: string[] = [];
    let listening!: (url: string) => void;
    const urlKnown = new Promise<string>((resolve) => (listening = resolve));
    const serving = serveCommand({
      model: pkg,
      index: path.join(dir, 'flat.ebrix'),
      items: { items, idField: 'id' },
      memory: path.join(dir, 'memory'),
      memoryModel: await textPackage(dir, 'text', 4),
      host: '127.0.0.1',
      port: 0,
      token: 'cli-token',
      save: false,
      log: (line) => {
        logs.push(line);
        const match = /serving on (\S+)/.exec(line);
        if (match) listening(match[1]!);
      },
      until,
    });
    // A failure to start rejects `serving` before any URL is known.
    const url = await Promise.race([urlKnown, serving.then(() => '')]);
    const remembered = await fetch(`${url}/v1/memory/cli`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer cli-token' },
      body: JSON.stringify({ text: 'remember the milk' }),
    });
    expect(remembered.status).toBe(201);
    const response = await fetch(`${url}/v1/search`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer cli-token' },
      body: JSON.stringify({ query: { text: 'desk' }, k: 2 }),
    });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { items: { record: { title: string } }[] };
    expect(body.items[0]!.record.title).toEqual(expect.any(String));
    expect((await fetch(`${url}/v1/search`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } })).status).toBe(401);
    stop();
    await serving;
    expect(logs.at(-1)).toBe('stopping: draining requests in flight, then saving');
    await expect(fetch(`${url}/healthz`)).rejects.toThrow();
    // The memory store was saved on the way out: its log folded into a snapshot.
    expect((await readFile(path.join(dir, 'memory', 'namespaces', 'cli', 'log.jsonl'), 'utf8')).length).toBe(0);
    expect(await readFile(path.join(dir, 'memory', 'namespaces', 'cli', 'CURRENT'), 'utf8')).toBe('1\n');
  });

  it('stops on SIGTERM as a process, exiting 0', async () => {
    const script = `import('./lib/cli.ts').then(async (m) => { process.exitCode = await m.main(process.argv.slice(1)); })`;
    const child = spawn(process.execPath, ['--import', 'tsx', '-e', script, 'serve', '--model', pkg, '--index', path.join(dir, 'flat.ebrix'), '--port', '0'], {
      cwd: path.resolve(import.meta.dirname, '..'),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const url = await new Promise<string>((resolve, reject) => {
      child.stdout.on('data', (chunk: Buffer) => {
        stdout += chunk.toString();
        const match = /serving on (\S+)/.exec(stdout);
        if (match) resolve(match[1]!);
      });
      child.once('exit', (code) => reject(new Error(`exited ${code} before serving: ${stderr}`)));
    });
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(stdout).toContain('stopping: draining requests in flight, then saving');
  }, 60_000);
});
