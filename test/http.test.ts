import { mkdtemp, rm } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { FlatIndex, HnswIndex, IndexStore, MemoryStore, Retriever, TwoTowerModel, createServer, type EbrixServer } from '../lib/index.js';
import { DIM, catalogIndex, catalogItem, catalogPackage, textPackage, type CatalogItem } from './serve-fixtures.js';

const N = 200;
let dir: string;
let model: TwoTowerModel;
let textModel: TwoTowerModel;
let index: FlatIndex;
let memory: MemoryStore;
let server: EbrixServer;
const records = new Map<bigint, CatalogItem>(Array.from({ length: N }, (_, i) => [BigInt(1000 + i), catalogItem(i)]));

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'ebrix-http-'));
  model = await TwoTowerModel.load(await catalogPackage(dir, 'catalog', 3), { threads: 1 });
  textModel = await TwoTowerModel.load(await textPackage(dir, 'text', 5), { threads: 1 });
  index = await catalogIndex(model, N);
  memory = await MemoryStore.open(path.join(dir, 'memory'), { model: textModel, sync: false, metadata: { kind: 'category' } });
  const retriever = new Retriever({ model, index, items: records, ranker: (_r, c) => c.map((x) => x.towerScore + (x.record?.rating ?? 0) * 0.01) });
  server = await createServer({ retriever, memory, bodyLimit: 64 * 1024 });
});
afterAll(async () => {
  await server.close();
  await memory.close();
  index.dispose();
  await model.dispose();
  await textModel.dispose();
  await rm(dir, { recursive: true, force: true });
});

const post = (url: string, payload: unknown, headers: Record<string, string> = {}) => server.inject({ method: 'POST', url, payload: payload as object, headers });

function expectError(response: { statusCode: number; headers: Record<string, unknown>; json(): unknown }, status: number, code: string): void {
  expect(response.statusCode).toBe(status);
  expect(response.headers['content-type']).toMatch(/^application\/json/);
  expect(response.json()).toEqual({ error: { code, message: expect.any(String) } });
}

describe('HTTP service', () => {
  it('searches by record and by vector, with filters, tasks and records', async () => {
    const response = await post('/v1/search', { query: { text: 'red wooden chair' }, k: 5 });
    expect(response.statusCode).toBe(200);
    const body = response.json();
    expect(body.items).toHaveLength(5);
    expect(body.items[0]).toEqual({ id: expect.stringMatching(/^\d+$/), towerScore: expect.any(Number), score: expect.any(Number), record: expect.any(Object) });
    expect(body.items[0].record).toEqual(records.get(BigInt(body.items[0].id)));
    expect(Object.keys(body.timings).sort()).toEqual(['embedMs', 'rankMs', 'searchMs', 'totalMs']);

    const vector = Array.from(await model.embedQueries([{ text: 'lamp' }]));
    const byVector = (await post('/v1/search', { vector, k: 3 })).json();
    expect(byVector.items.map((i: { id: string }) => i.id)).toEqual((await index.search(Float32Array.from(vector), 3)).hits(0).map((h) => String(h.id)));

    const filtered = (await post('/v1/search', { query: { text: 'lamp' }, k: 20, filter: { category: 'office' }, task: 'click', candidates: 50 })).json();
    expect(filtered.items.length).toBe(20);
    for (const item of filtered.items) expect(item.record.category).toBe('office');
  });

  it('answers every bad request with the right 4xx and a JSON error', async () => {
    const vector = new Array(DIM).fill(0.25);
    // Malformed JSON.
    expectError(await server.inject({ method: 'POST', url: '/v1/search', payload: '{"query": {', headers: { 'content-type': 'application/json' } }), 400, 'EBRIX_MALFORMED_JSON');
    expectError(await server.inject({ method: 'POST', url: '/v1/search', payload: '', headers: { 'content-type': 'application/json' } }), 400, 'EBRIX_MALFORMED_JSON');
    // Wrong dimension.
    const wrong = await post('/v1/search', { vector: [1, 2, 3] });
    expectError(wrong, 400, 'EBRIX_DIM_MISMATCH');
    expect(wrong.json().error.message).toBe(`Expected ${DIM} values (the model's dim) for vector but received an array of length 3`);
    // Oversized.
    expectError(await post('/v1/search', { query: { text: 'x'.repeat(70 * 1024) } }), 413, 'EBRIX_PAYLOAD_TOO_LARGE');
    // Unknown route and method.
    expectError(await server.inject({ method: 'GET', url: '/v1/nothing' }), 404, 'EBRIX_NOT_FOUND');
    expectError(await server.inject({ method: 'PUT', url: '/v1/search' }), 404, 'EBRIX_NOT_FOUND');
    // Schema: no coercion, no unknown properties, one of query or vector, bounds.
    expectError(await post('/v1/search', { query: { text: 'a' }, k: '5' }), 400, 'EBRIX_INVALID_ARGUMENT');
    expectError(await post('/v1/search', { query: { text: 'a' }, limit: 5 }), 400, 'EBRIX_INVALID_ARGUMENT');
    expectError(await post('/v1/search', { query: { text: 'a' }, vector }), 400, 'EBRIX_INVALID_ARGUMENT');
    expectError(await post('/v1/search', {}), 400, 'EBRIX_INVALID_ARGUMENT');
    expectError(await post('/v1/search', { query: { text: 'a' }, k: 100_000 }), 400, 'EBRIX_INVALID_ARGUMENT');
    expectError(await post('/v1/search', { vector: ['a', ...new Array(DIM - 1).fill(0)] }), 400, 'EBRIX_INVALID_ARGUMENT');
    expectError(await post('/v1/search', [1, 2]), 400, 'EBRIX_INVALID_ARGUMENT');
    // Library errors keep their codes.
    expectError(await post('/v1/search', { query: { text: 5 } }), 400, 'EBRIX_INVALID_RECORD');
    expectError(await post('/v1/search', { query: { text: 'a' }, task: 'nope' }), 400, 'EBRIX_INVALID_SPEC');
    expectError(await post('/v1/search', { query: { text: 'a' }, filter: { colour: 'red' } }), 400, 'EBRIX_INVALID_ARGUMENT');
    // Not JSON at all.
    expectError(await server.inject({ method: 'POST', url: '/v1/search', payload: 'k=5', headers: { 'content-type': 'text/plain' } }), 415, 'EBRIX_UNSUPPORTED_MEDIA_TYPE');
    // A prototype-poisoning body is refused by the parser.
    expectError(await server.inject({ method: 'POST', url: '/v1/search', payload: '{"query":{"__proto__":{"x":1}}}', headers: { 'content-type': 'application/json' } }), 400, 'EBRIX_MALFORMED_JSON');
  });

  it('upserts, replaces and deletes items on every index type', async () => {
    const vector = Array.from({ length: DIM }, (_, i) => (i === 0 ? 1 : 0));
    const added = await post('/v1/items', {
      items: [
        { id: 5001, vector, attributes: { category: 'lab', price: 1 } },
        { id: '5002', record: { title: 'brand new steel lamp', price: 10, rating: 5 }, attributes: { category: 'lab' } },
      ],
    });
    expect(added.statusCode).toBe(200);
    expect(added.json()).toEqual({ upserted: 2, replaced: 0 });
    const found = (await post('/v1/search', { vector, k: 10, filter: { category: 'lab' } })).json();
    expect(found.items.map((i: { id: string }) => i.id).sort()).toEqual(['5001', '5002']);
    // The record was embedded by the item tower.
    const itemVector = Array.from(await model.embedItems([{ title: 'brand new steel lamp', price: 10, rating: 5 }]));
    expect((await post('/v1/search', { vector: itemVector, k: 1 })).json().items[0].id).toBe('5002');

    // Upsert replaces an id already present; delete removes it, and a second delete is 404.
    const moved = Array.from({ length: DIM }, (_, i) => (i === 1 ? 1 : 0));
    const again = await post('/v1/items', { items: [{ id: 5001, vector: moved, attributes: { category: 'lab', price: 2 } }] });
    expect(again.json()).toEqual({ upserted: 1, replaced: 1 });
    expect((await post('/v1/search', { vector: moved, k: 1 })).json().items[0].id).toBe('5001');
    expect((await server.inject({ method: 'DELETE', url: '/v1/items/5001' })).statusCode).toBe(200);
    expect((await post('/v1/search', { vector: moved, k: 10, filter: { category: 'lab' } })).json().items.map((i: { id: string }) => i.id)).toEqual(['5002']);
    expectError(await server.inject({ method: 'DELETE', url: '/v1/items/5001' }), 404, 'EBRIX_UNKNOWN_ID');
    expectError(await post('/v1/items', { items: [{ id: 7, vector }, { id: 7, vector }] }), 409, 'EBRIX_DUPLICATE_ID');
    expectError(await post('/v1/items', { items: [{ id: 8, vector: [1] }] }), 400, 'EBRIX_DIM_MISMATCH');
    expectError(await post('/v1/items', { items: [{ id: 8 }] }), 400, 'EBRIX_INVALID_ARGUMENT');
    expectError(await post('/v1/items', { items: [{ id: -1, vector }] }), 400, 'EBRIX_INVALID_ARGUMENT');
    expectError(await post('/v1/items', { items: [{ id: 8, vector, attributes: { category: 3 } }] }), 400, 'EBRIX_INVALID_ARGUMENT');
    expectError(await post('/v1/items', { items: [] }), 400, 'EBRIX_INVALID_ARGUMENT');

    // HnswIndex removes: upsert replaces, delete deletes.
    const hnsw = new HnswIndex({ dim: DIM, modelVersion: model.version });
    const hnswServer = await createServer({ retriever: new Retriever({ model, index: hnsw }) });
    try {
      const one = Array.from({ length: DIM }, (_, i) => (i === 1 ? 1 : 0));
      expect((await hnswServer.inject({ method: 'POST', url: '/v1/items', payload: { items: [{ id: 1, vector }, { id: 2, vector: one }] } })).json()).toEqual({ upserted: 2, replaced: 0 });
      expect((await hnswServer.inject({ method: 'POST', url: '/v1/items', payload: { items: [{ id: 1, vector: one }] } })).json()).toEqual({ upserted: 1, replaced: 1 });
      expect(hnsw.size).toBe(2);
      const deleted = await hnswServer.inject({ method: 'DELETE', url: '/v1/items/2' });
      expect(deleted.json()).toEqual({ deleted: '2' });
      expect(hnsw.has(2)).toBe(false);
      expectError(await hnswServer.inject({ method: 'DELETE', url: '/v1/items/2' }), 404, 'EBRIX_UNKNOWN_ID');
      expectError(await hnswServer.inject({ method: 'DELETE', url: '/v1/items/abc' }), 400, 'EBRIX_INVALID_ARGUMENT');
      expectError(await hnswServer.inject({ method: 'POST', url: '/v1/search', payload: { vector, filter: { category: 'x' } } }), 400, 'EBRIX_INVALID_ARGUMENT');
    } finally {
      await hnswServer.close();
      hnsw.dispose();
    }
  });

  it('serves the memory routes', async () => {
    const created = await post('/v1/memory/chat-42', { text: 'the user likes hiking in the alps', metadata: { kind: 'preference' } });
    expect(created.statusCode).toBe(201);
    expect(created.json()).toEqual({ id: 1 });
    await post('/v1/memory/chat-42', { text: 'the user has a dentist appointment on monday', metadata: { kind: 'event' } });
    const recalled = (await post('/v1/memory/chat-42/recall', { text: 'the user likes hiking in the alps', k: 1 })).json();
    expect(recalled.memories).toEqual([
      { id: 1, text: 'the user likes hiking in the alps', metadata: { kind: 'preference' }, createdAt: expect.any(String), score: expect.any(Number) },
    ]);
    const events = (await post('/v1/memory/chat-42/recall', { text: 'hiking', filter: { kind: 'event' } })).json();
    expect(events.memories.map((m: { id: number }) => m.id)).toEqual([2]);
    expect((await server.inject({ method: 'DELETE', url: '/v1/memory/chat-42/1' })).json()).toEqual({ forgotten: 1 });
    expectError(await server.inject({ method: 'DELETE', url: '/v1/memory/chat-42/1' }), 404, 'EBRIX_UNKNOWN_ID');
    expectError(await server.inject({ method: 'DELETE', url: '/v1/memory/chat-42/0' }), 400, 'EBRIX_INVALID_ARGUMENT');
    expectError(await post('/v1/memory/.hidden', { text: 'x' }), 400, 'EBRIX_INVALID_ARGUMENT');
    // An encoded '..' is resolved away by URL parsing before routing: it never names a namespace.
    expectError(await post('/v1/memory/%2E%2E', { text: 'x' }), 404, 'EBRIX_NOT_FOUND');
    expectError(await post('/v1/memory/a%2Fb', { text: 'x' }), 400, 'EBRIX_INVALID_ARGUMENT');
    expectError(await post('/v1/memory/ok', { text: '' }), 400, 'EBRIX_INVALID_ARGUMENT');
    expectError(await post('/v1/memory/ok', { text: 'x', metadata: { kind: 1 } }), 400, 'EBRIX_INVALID_ARGUMENT');
    expect((await server.inject({ method: 'DELETE', url: '/v1/memory/chat-42' })).json()).toEqual({ dropped: 'chat-42' });
    expectError(await server.inject({ method: 'DELETE', url: '/v1/memory/chat-42' }), 404, 'EBRIX_NOT_FOUND');
    expect((await post('/v1/memory/chat-42/recall', { text: 'hiking' })).json()).toEqual({ memories: [] });
  });

  it('reports health, readiness, info, metrics, and serves the page', async () => {
    expect((await server.inject('/healthz')).json()).toEqual({ status: 'ok' });
    expect((await server.inject('/readyz')).json()).toEqual({ status: 'ready' });
    const info = (await server.inject('/v1/info')).json();
    expect(info).toMatchObject({
      model: { name: 'catalog', version: model.version, dim: DIM, metric: 'ip' },
      tasks: ['click'],
      queryFields: [{ field: 'text', kind: 'text' }],
      index: { type: 'flat', dim: DIM },
      ranker: true,
      memory: true,
    });
    const metrics = await server.inject('/metrics');
    expect(metrics.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
    expect(metrics.body).toContain('ebrix_retrieval_stage_seconds_bucket{stage="rank",le="+Inf"}');
    expect(metrics.body).toMatch(/ebrix_retrieval_errors_total\{code="EBRIX_DIM_MISMATCH"\} \d+/);
    expect(metrics.body).toMatch(/ebrix_http_requests_total\{method="POST",route="\/v1\/search",status="200"\} \d+/);
    expect(metrics.body).toMatch(/ebrix_http_requests_total\{method="GET",route="\(unmatched\)",status="404"\} \d+/);
    const page = await server.inject('/');
    expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(page.headers['content-security-policy']).toMatch(/default-src 'none'; script-src 'sha256-/);
    expect(page.body).toContain('<title>ebrix search</title>');
    expect(page.body).not.toMatch(/(src|href)="https?:/);
  });

  it('requires the bearer token everywhere but the health checks and the page', async () => {
    const guarded = await createServer({ index, token: 's3cret' });
    try {
      const vector = new Array(DIM).fill(0.1);
      const missing = await guarded.inject({ method: 'POST', url: '/v1/search', payload: { vector } });
      expectError(missing, 401, 'EBRIX_UNAUTHORIZED');
      expect(missing.headers['www-authenticate']).toBe('Bearer');
      expectError(await guarded.inject({ method: 'POST', url: '/v1/search', payload: { vector }, headers: { authorization: 'Bearer wrong' } }), 401, 'EBRIX_UNAUTHORIZED');
      expectError(await guarded.inject({ method: 'GET', url: '/metrics' }), 401, 'EBRIX_UNAUTHORIZED');
      // Checked before the body is read: an unauthenticated caller learns nothing else.
      expectError(await guarded.inject({ method: 'POST', url: '/v1/search', payload: '{bad', headers: { 'content-type': 'application/json' } }), 401, 'EBRIX_UNAUTHORIZED');
      const ok = await guarded.inject({ method: 'POST', url: '/v1/search', payload: { vector, k: 2 }, headers: { authorization: 'Bearer s3cret' } });
      expect(ok.statusCode).toBe(200);
      expect(ok.json().items).toHaveLength(2);
      expect((await guarded.inject('/healthz')).statusCode).toBe(200);
      expect((await guarded.inject('/readyz')).statusCode).toBe(200);
      expect((await guarded.inject('/')).statusCode).toBe(200);
      // Without a retriever, searching by record is refused.
      expectError(await guarded.inject({ method: 'POST', url: '/v1/search', payload: { query: { text: 'a' } }, headers: { authorization: 'Bearer s3cret' } }), 400, 'EBRIX_INVALID_ARGUMENT');
    } finally {
      await guarded.close();
    }
  });

  it('swaps IndexStore versions under a running server; readiness follows the store', async () => {
    const store = await IndexStore.open(path.join(dir, 'store'));
    const swapping = await createServer({ retriever: new Retriever({ model, index: store, items: (ids: bigint[]) => ids.map(() => undefined) }) });
    try {
      expectError(await swapping.inject('/readyz'), 503, 'EBRIX_NOT_READY');
      using first = await catalogIndex(model, 50);
      await store.publish(first);
      expect((await swapping.inject('/readyz')).statusCode).toBe(200);
      const a = (await swapping.inject({ method: 'POST', url: '/v1/search', payload: { query: { text: 'sofa' } } })).json();
      expect(a.items.every((i: { id: string }) => Number(i.id) < 1050)).toBe(true);
      using second = await catalogIndex(model, 50, 9000);
      await store.publish(second);
      const b = (await swapping.inject({ method: 'POST', url: '/v1/search', payload: { query: { text: 'sofa' } } })).json();
      expect(b.items.every((i: { id: string }) => Number(i.id) >= 10000)).toBe(true);
      expect((await swapping.inject('/v1/info')).json().index).toMatchObject({ type: 'store', version: 2, size: 50 });
      expectError(await swapping.inject({ method: 'POST', url: '/v1/items', payload: { items: [{ id: 1, vector: new Array(DIM).fill(0) }] } }), 501, 'EBRIX_NOT_SUPPORTED');
    } finally {
      await swapping.close();
      store.close();
    }
  });

  it('drains requests in flight on close, then saves the memory store and the changed index', async () => {
    const own = new FlatIndex({ dim: DIM, modelVersion: model.version });
    await own.add([1, 2, 3], Float32Array.from({ length: 3 * DIM }, (_, i) => (i % DIM === Math.floor(i / DIM) ? 1 : 0)));
    const ownMemory = await MemoryStore.open(path.join(dir, 'drain-memory'), { model: textModel });
    let rankerStarted!: () => void;
    const started = new Promise<void>((resolve) => (rankerStarted = resolve));
    const slow = new Retriever({
      model,
      index: own,
      ranker: async (_r, c) => {
        rankerStarted();
        await new Promise((resolve) => setTimeout(resolve, 300));
        return c.map((x) => x.towerScore);
      },
    });
    const indexPath = path.join(dir, 'drained.ebrix');
    const live = await createServer({ retriever: slow, memory: ownMemory, indexPath });
    const url = await live.listen();
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    try {
      await fetch(`${url}/v1/items`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ items: [{ id: 9, vector: new Array(DIM).fill(0.5) }] }) });
      await fetch(`${url}/v1/memory/drain`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text: 'kept across close' }) });
      const inFlight = fetch(`${url}/v1/search`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: { text: 'slow' }, k: 2 }) });
      await started;
      let closed = false;
      const closing = live.close().then(() => (closed = true));
      const response = await inFlight;
      expect(response.status).toBe(200);
      expect(((await response.json()) as { items: unknown[] }).items).toHaveLength(2);
      await closing;
      expect(closed).toBe(true);
      // Nothing listens any more.
      const refused = await new Promise<string>((resolve) => {
        const req = httpRequest(`${url}/healthz`, (res) => resolve(String(res.statusCode)));
        req.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
        req.end();
      });
      expect(refused).toBe('ECONNREFUSED');
      // The index was saved with the upserted item; the memory snapshot holds the memory.
      using saved = await FlatIndex.open(indexPath);
      expect(saved.size).toBe(4);
      expect(saved.modelVersion).toBe(model.version);
      await ownMemory.close();
      const reopened = await MemoryStore.open(path.join(dir, 'drain-memory'), { model: textModel });
      expect(reopened.size('drain')).toBe(1);
      await reopened.close();
    } finally {
      await live.close();
      own.dispose();
    }
  });

  it('closes a keep-alive connection with the response in flight when closing, leaving later pipelined requests unread', async () => {
    const own = new FlatIndex({ dim: DIM, modelVersion: model.version });
    await own.add([1], new Float32Array(DIM).fill(0.1));
    let rankerStarted!: () => void;
    const started = new Promise<void>((resolve) => (rankerStarted = resolve));
    const slow = new Retriever({
      model,
      index: own,
      ranker: async (_r, c) => {
        rankerStarted();
        await new Promise((resolve) => setTimeout(resolve, 200));
        return c.map((x) => x.towerScore);
      },
    });
    const live = await createServer({ retriever: slow });
    const { port } = new URL(await live.listen());
    try {
      // Two pipelined requests on one keep-alive connection: the second is read after the first is answered.
      const socket = connect(Number(port), '127.0.0.1');
      let received = '';
      socket.on('data', (chunk: Buffer) => (received += chunk.toString()));
      const ended = new Promise<void>((resolve) => socket.on('close', () => resolve()));
      const body = JSON.stringify({ query: { text: 'slow' }, k: 1 });
      const request = `POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
      socket.write(request + request);
      await started;
      await live.close();
      await ended;
      const statuses = [...received.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]);
      // The request in flight is answered, told to close, and the connection ends there.
      expect(statuses).toEqual(['200']);
      expect(received).toMatch(/\r\nconnection: close\r\n/i);
    } finally {
      await live.close();
      own.dispose();
    }
  });

  it('refuses bad options', async () => {
    await expect(createServer({})).rejects.toThrow(/retriever, an index or a memory store/);
    await expect(createServer({ index, port: 70000 })).rejects.toThrow(/port from 0 to 65535/);
    await expect(createServer({ index, token: '' })).rejects.toMatchObject({ code: 'EBRIX_INVALID_ARGUMENT' });
    await expect(createServer({ index, indexPath: '' })).rejects.toMatchObject({ code: 'EBRIX_INVALID_ARGUMENT' });
  });
});
