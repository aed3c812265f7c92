/**
 * The HTTP service: a Retriever (and optionally a MemoryStore) behind a small JSON API on
 * Fastify, with a search page for people.
 *
 *   POST   /v1/search                      { query: {...} | vector: [...], k?, filter?, task?, candidates? }
 *   POST   /v1/items                       { items: [{ id, vector? | record?, attributes? }] }  (upsert)
 *   DELETE /v1/items/:id
 *   POST   /v1/memory/:namespace           { text, metadata? }            → 201 { id }
 *   POST   /v1/memory/:namespace/recall    { text, k?, filter? }          → { memories }
 *   DELETE /v1/memory/:namespace/:id
 *   DELETE /v1/memory/:namespace
 *   GET    /v1/info                        model, index and what the query tower reads
 *   GET    /healthz  /readyz  /metrics (Prometheus)  /  (the search page)
 *
 * Every body is checked against a JSON Schema (Fastify's ajv, with no type coercion and no
 * unknown properties) and a size limit. Every error is `{ error: { code, message } }`: the
 * EBRIX_… code of the library error, or one of HTTP_ERROR_CODES for what only HTTP has. It
 * binds 127.0.0.1 unless told otherwise; with a token, every route but the health checks and
 * the page (which holds no data) needs `Authorization: Bearer <token>`.
 *
 * Ids travel as decimal strings in responses (u64 ids do not fit a JSON number) and are
 * accepted as strings or non-negative integers.
 */
import { createHash, timingSafeEqual } from 'node:crypto';

import Fastify, { type FastifyError, type FastifyInstance, type InjectOptions, type LightMyRequestResponse } from 'fastify';

import { DuplicateIdError, EbrixError, InvalidArgumentError, UnknownIdError, type EbrixErrorCode } from '../errors.js';
import { FlatIndex } from '../index/flat.js';
import { HnswIndex } from '../index/hnsw.js';
import { toIdArray } from '../index/ids.js';
import { IvfPqIndex } from '../index/ivfpq.js';
import { IndexStore } from '../index/store.js';
import type { FeatureSpec } from '../model/features.js';
import { invalid, requirePositiveInteger } from '../validate.js';
import type { MemoryStore } from './memory.js';
import { PrometheusText } from './metrics.js';
import { searchPage } from './page.js';
import { Retriever, liveIndex, searchIndex, toQueryVector, type RetrievalIndex, type RetrievedItem } from './retriever.js';

export interface ServerOptions {
  /** Serves searches by record and by vector, and upserts of records (through its model's item tower). */
  // Of any request and record types: the server hands request bodies and records through as they are.
  retriever?: Retriever<any, any>;
  /**
   * The index searches by vector and item upserts go to when there is no retriever (default:
   * the retriever's index).
   */
  index?: RetrievalIndex;
  /** Serves the memory routes. */
  memory?: MemoryStore;
  /** Require `Authorization: Bearer <token>` on every route but /healthz, /readyz and /. */
  token?: string;
  /** Address to bind (default 127.0.0.1: reachable from this machine only). */
  host?: string;
  /** Port (default 0: any free port; `listen()` says which). */
  port?: number;
  /** Largest request body, bytes (default 1 MiB); a larger one is 413. */
  bodyLimit?: number;
  /** Where `close()` saves the index when items were upserted or deleted (FlatIndex or IvfPqIndex). */
  indexPath?: string;
  /** The largest k (and memory recall k) a request may ask for (default 1000). */
  maxK?: number;
  /** Fastify's request log (default off). */
  logger?: boolean;
}

/** Error codes of the HTTP layer, besides the library's EBRIX_… codes. */
export const HTTP_ERROR_CODES = {
  EBRIX_MALFORMED_JSON: 400,
  EBRIX_BAD_REQUEST: 400,
  EBRIX_UNAUTHORIZED: 401,
  EBRIX_NOT_FOUND: 404,
  EBRIX_PAYLOAD_TOO_LARGE: 413,
  EBRIX_UNSUPPORTED_MEDIA_TYPE: 415,
  EBRIX_NOT_SUPPORTED: 501,
  EBRIX_NOT_READY: 503,
} as const;
export type HttpErrorCode = keyof typeof HTTP_ERROR_CODES;

/** HTTP status of each library error code; others are 500. */
const STATUS_BY_CODE: Partial<Record<EbrixErrorCode, number>> = {
  EBRIX_INVALID_ARGUMENT: 400,
  EBRIX_DIM_MISMATCH: 400,
  EBRIX_INVALID_VECTOR: 400,
  EBRIX_INVALID_RECORD: 400,
  EBRIX_INVALID_SPEC: 400,
  EBRIX_DUPLICATE_ID: 409,
  EBRIX_UNKNOWN_ID: 404,
  EBRIX_OVERLOADED: 503,
  EBRIX_DISPOSED: 503,
  EBRIX_NOT_TRAINED: 503,
  EBRIX_VERSION_MISMATCH: 503,
};

/** An error with an HTTP status and one of the HTTP layer's codes. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: HttpErrorCode,
    message: string,
  ) {
    super(message);
  }
}

const HEALTH_ROUTES = new Set(['/healthz', '/readyz', '/']);
const MAX_BATCH = 10_000;
const MAX_DIM = 1 << 20;

const idSchema = { anyOf: [{ type: 'integer', minimum: 0 }, { type: 'string', pattern: '^[0-9]{1,20}$' }] };
const vectorSchema = { type: 'array', items: { type: 'number' }, minItems: 1, maxItems: MAX_DIM };
const namespaceParams = {
  type: 'object',
  properties: { namespace: { type: 'string', maxLength: 128 } },
  required: ['namespace'],
};

export class EbrixServer {
  readonly app: FastifyInstance;
  readonly host: string;
  readonly port: number;
  readonly #options: ServerOptions;
  readonly #index: RetrievalIndex | undefined;
  readonly #httpRequests = new Map<string, number>();
  /** Upserts and deletes run one at a time, so a delete answers 404 or 200 from the state it saw. */
  #mutations: Promise<unknown> = Promise.resolve();
  #dirty = false;
  #closing: Promise<void> | undefined;
  #url: string | undefined;

  constructor(options: ServerOptions) {
    if (options === null || typeof options !== 'object') throw invalid('an options object', 'options', options);
    const { retriever, memory, token } = options;
    if (retriever !== undefined && !(retriever instanceof Retriever)) throw invalid('a Retriever', 'options.retriever', retriever);
    if (token !== undefined && (typeof token !== 'string' || token.length === 0)) throw invalid('a non-empty string', 'options.token', '(hidden)');
    this.#index = options.index ?? retriever?.index;
    if (this.#index === undefined && memory === undefined) {
      throw new InvalidArgumentError('A server needs a retriever, an index or a memory store to serve');
    }
    if (options.indexPath !== undefined) {
      if (typeof options.indexPath !== 'string' || options.indexPath.length === 0) throw invalid('a file path', 'options.indexPath', options.indexPath);
      if (!(this.#index instanceof FlatIndex || this.#index instanceof IvfPqIndex || this.#index instanceof HnswIndex)) {
        throw new InvalidArgumentError('options.indexPath needs a FlatIndex, IvfPqIndex or HnswIndex to save (an IndexStore saves its own versions)');
      }
    }
    this.#options = { ...options };
    this.host = options.host ?? '127.0.0.1';
    this.port = options.port === undefined ? 0 : requirePort(options.port);
    const bodyLimit = requirePositiveInteger(options.bodyLimit ?? 1 << 20, 'options.bodyLimit', 1 << 30);
    const maxK = requirePositiveInteger(options.maxK ?? 1000, 'options.maxK', 100_000);
    this.app = Fastify({
      logger: options.logger ?? false,
      bodyLimit,
      // Strict bodies: a string is not a number, and an unknown property is an error, not dropped.
      ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false, allErrors: false } },
      // Requests that arrive while closing get our own 503 (an onRequest hook), in the JSON error shape.
      return503OnClosing: false,
    });
    // JSON only: a text/plain body would otherwise reach the schema as a string.
    this.app.removeContentTypeParser('text/plain');
    this.#routes(maxK);
  }

  /** Starts listening; resolves with the base URL (e.g. http://127.0.0.1:41235). */
  async listen(): Promise<string> {
    const address = await this.app.listen({ host: this.host, port: this.port });
    this.#url = address;
    return address;
  }

  /** The base URL once listening. */
  get url(): string | undefined {
    return this.#url;
  }

  /** A request without a socket (Fastify's inject), for tests and in-process callers. */
  inject(options: InjectOptions | string): Promise<LightMyRequestResponse> {
    return this.app.inject(options);
  }

  /**
   * Graceful shutdown: stops accepting connections, lets the requests in flight finish, then
   * saves the memory store and, when items changed and `indexPath` is set, the index. The
   * retriever, model, index and memory store stay the caller's to dispose. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.app.close();
      await this.#mutations.catch(() => undefined);
      await this.#options.memory?.save();
      const { indexPath } = this.#options;
      if (this.#dirty && indexPath !== undefined) await (this.#index as FlatIndex | IvfPqIndex | HnswIndex).save(indexPath);
    })();
    return this.#closing;
  }

  get closing(): boolean {
    return this.#closing !== undefined;
  }

  #routes(maxK: number): void {
    const app = this.app;
    const { retriever, memory, token } = this.#options;
    const page = searchPage();

    app.addHook('onRequest', async () => {
      if (this.#closing !== undefined) throw new HttpError(503, 'EBRIX_NOT_READY', 'The server is shutting down');
    });
    if (token !== undefined) {
      const expected = createHash('sha256').update(token).digest();
      app.addHook('onRequest', async (request) => {
        if (HEALTH_ROUTES.has(request.url.split('?')[0]!)) return;
        const header = request.headers.authorization;
        const given = typeof header === 'string' && header.startsWith('Bearer ') ? header.slice(7) : undefined;
        // Compared as digests: equal lengths for timingSafeEqual, and no timing hint of the token's length.
        if (given === undefined || !timingSafeEqual(createHash('sha256').update(given).digest(), expected)) {
          throw new HttpError(401, 'EBRIX_UNAUTHORIZED', given === undefined ? 'This server needs Authorization: Bearer <token>' : 'The token is not valid');
        }
      });
    }
    // Node closes only the connections idle when close() starts; one whose request is still in
    // flight would stay open for its keep-alive timeout after answering. Told to close, it ends
    // with its response, and close() resolves as soon as the last request is answered.
    app.addHook('onSend', async (_request, reply) => {
      if (this.#closing !== undefined) void reply.header('connection', 'close');
    });
    app.addHook('onResponse', async (request, reply) => {
      const key = `${request.method} ${request.routeOptions.url ?? '(unmatched)'} ${reply.statusCode}`;
      this.#httpRequests.set(key, (this.#httpRequests.get(key) ?? 0) + 1);
    });
    app.setErrorHandler((error, request, reply) => {
      const { status, code, message } = toHttpError(error);
      if (status >= 500) request.log.error(error);
      if (status === 401) void reply.header('www-authenticate', 'Bearer');
      return reply.code(status).send({ error: { code, message } });
    });
    app.setNotFoundHandler((request, reply) =>
      reply.code(404).send({ error: { code: 'EBRIX_NOT_FOUND', message: `No route ${request.method} ${request.url.split('?')[0]}` } }),
    );

    app.get('/healthz', async () => ({ status: 'ok' }));
    app.get('/readyz', async (_request, reply) => {
      const reason = this.#notReady();
      if (reason !== undefined) return reply.code(503).send({ error: { code: 'EBRIX_NOT_READY', message: reason } });
      return { status: 'ready' };
    });
    app.get('/metrics', async (_request, reply) => {
      const out = new PrometheusText();
      retriever?.writePrometheus(out);
      out.counter(
        'ebrix_http_requests_total',
        'HTTP requests answered, by method, route and status.',
        [...this.#httpRequests].map(([key, value]) => {
          const [method, route, status] = key.split(' ') as [string, string, string];
          return { labels: { method, route, status }, value };
        }),
      );
      return reply.type('text/plain; version=0.0.4; charset=utf-8').send(out.toString());
    });
    app.get('/', async (_request, reply) =>
      reply
        .type('text/html; charset=utf-8')
        .header('content-security-policy', page.contentSecurityPolicy)
        .header('x-content-type-options', 'nosniff')
        .header('referrer-policy', 'no-referrer')
        .send(page.html),
    );
    app.get('/v1/info', async () => this.#info());

    if (this.#index !== undefined) this.#itemRoutes(maxK);
    if (memory !== undefined) this.#memoryRoutes(memory, maxK);
  }

  #itemRoutes(maxK: number): void {
    const app = this.app;
    const retriever = this.#options.retriever;
    const index = this.#index!;

    app.post<{ Body: { query?: Record<string, unknown>; vector?: number[]; k?: number; candidates?: number; filter?: object; task?: string } }>(
      '/v1/search',
      {
        schema: {
          body: {
            type: 'object',
            additionalProperties: false,
            properties: {
              query: { type: 'object' },
              vector: vectorSchema,
              k: { type: 'integer', minimum: 1, maximum: maxK },
              candidates: { type: 'integer', minimum: 1, maximum: 100_000 },
              filter: { type: 'object' },
              task: { type: 'string', minLength: 1, maxLength: 256 },
            },
            oneOf: [{ required: ['query'] }, { required: ['vector'] }],
          },
        },
      },
      async (request) => {
        const { query, vector, k, candidates, filter, task } = request.body;
        const options = { ...(k !== undefined ? { k } : {}), ...(filter !== undefined ? { filter } : {}) };
        if (query !== undefined) {
          if (retriever === undefined) throw new InvalidArgumentError('This server has no model: search by vector');
          const result = await retriever.retrieve(query, { ...options, ...(candidates !== undefined ? { candidates } : {}), ...(task !== undefined ? { task } : {}) });
          return { items: result.items.map(itemJson), timings: result.timings };
        }
        if (retriever !== undefined && index === retriever.index) {
          const result = await retriever.retrieveByVector(vector!, options);
          return { items: result.items.map(itemJson), timings: result.timings };
        }
        const started = performance.now();
        const live = liveIndex(index);
        if (live === undefined) throw new InvalidArgumentError('The store has no version yet: publish an index first');
        const hits = await searchIndex(index, toQueryVector(vector, live.dim), k ?? 10, filter);
        const totalMs = performance.now() - started;
        return {
          items: hits.map((h) => ({ id: String(h.id), towerScore: h.score, score: h.score })),
          timings: { embedMs: 0, searchMs: totalMs, rankMs: 0, totalMs },
        };
      },
    );

    app.post<{ Body: { items: { id: number | string; vector?: number[]; record?: Record<string, unknown>; attributes?: Record<string, unknown> }[] } }>(
      '/v1/items',
      {
        schema: {
          body: {
            type: 'object',
            additionalProperties: false,
            required: ['items'],
            properties: {
              items: {
                type: 'array',
                minItems: 1,
                maxItems: MAX_BATCH,
                items: {
                  type: 'object',
                  additionalProperties: false,
                  required: ['id'],
                  properties: { id: idSchema, vector: vectorSchema, record: { type: 'object' }, attributes: { type: 'object' } },
                  oneOf: [{ required: ['vector'] }, { required: ['record'] }],
                },
              },
            },
          },
        },
      },
      async (request) => this.#serialMutation(() => this.#upsert(request.body.items)),
    );

    app.delete<{ Params: { id: string } }>(
      '/v1/items/:id',
      { schema: { params: { type: 'object', properties: { id: { type: 'string', pattern: '^[0-9]{1,20}$' } }, required: ['id'] } } },
      async (request) =>
        this.#serialMutation(async () => {
          const target = mutableIndex(index);
          const id = toIdArray([BigInt(request.params.id)], 'id');
          if ((await target.remove(id)) === 0) throw new UnknownIdError(`No item with id ${request.params.id}`);
          this.#dirty = true;
          return { deleted: request.params.id };
        }),
    );
  }

  async #upsert(items: { id: number | string; vector?: number[]; record?: Record<string, unknown>; attributes?: Record<string, unknown> }[]): Promise<{ upserted: number; replaced: number }> {
    const index = mutableIndex(this.#index!);
    const ids = toIdArray(items.map((item) => BigInt(item.id)), 'items[].id');
    const seen = new Set<bigint>();
    ids.forEach((id, i) => {
      if (seen.has(id)) throw new DuplicateIdError(`Expected distinct ids for items but received ${id} twice (items[${i}])`);
      seen.add(id);
    });
    const vectors = new Float32Array(items.length * index.dim);
    const byRecord: number[] = [];
    items.forEach((item, i) => {
      if (item.vector !== undefined) vectors.set(toQueryVector(item.vector, index.dim), i * index.dim);
      else byRecord.push(i);
    });
    if (byRecord.length > 0) {
      const model = this.#options.retriever?.model as { embedItems?: (records: unknown[]) => Promise<Float32Array> } | undefined;
      if (typeof model?.embedItems !== 'function') throw new InvalidArgumentError('This server has no item tower: upsert items by vector');
      const embedded = await model.embedItems(byRecord.map((i) => items[i]!.record));
      byRecord.forEach((item, j) => vectors.set(embedded.subarray(j * index.dim, (j + 1) * index.dim), item * index.dim));
    }
    const withAttributes = items.some((item) => item.attributes !== undefined);
    if (withAttributes && index instanceof HnswIndex && index.attributes === undefined) {
      throw new InvalidArgumentError('This HnswIndex has no attributes schema: leave the attributes out');
    }
    const replaced = ids.filter((id) => index.has(id)).length;
    const attributes = withAttributes || index.attributes !== undefined ? { attributes: items.map((item) => (item.attributes ?? {}) as Record<string, never>) } : {};
    // upsert replaces the ids already present and adds the others, as one change to searches.
    await index.upsert(ids, vectors, attributes);
    this.#dirty = true;
    return { upserted: items.length, replaced };
  }

  #memoryRoutes(memory: MemoryStore, maxK: number): void {
    const app = this.app;
    app.post<{ Params: { namespace: string }; Body: { text: string; metadata?: Record<string, unknown> } }>(
      '/v1/memory/:namespace',
      {
        schema: {
          params: namespaceParams,
          body: {
            type: 'object',
            additionalProperties: false,
            required: ['text'],
            properties: { text: { type: 'string', minLength: 1 }, metadata: { type: 'object' } },
          },
        },
      },
      async (request, reply) => {
        const id = await memory.remember(request.params.namespace, request.body.text, request.body.metadata ?? {});
        return reply.code(201).send({ id });
      },
    );
    app.post<{ Params: { namespace: string }; Body: { text: string; k?: number; filter?: object } }>(
      '/v1/memory/:namespace/recall',
      {
        schema: {
          params: namespaceParams,
          body: {
            type: 'object',
            additionalProperties: false,
            required: ['text'],
            properties: { text: { type: 'string' }, k: { type: 'integer', minimum: 1, maximum: maxK }, filter: { type: 'object' } },
          },
        },
      },
      async (request) => {
        const { text, k, filter } = request.body;
        const memories = await memory.recall(request.params.namespace, text, { ...(k !== undefined ? { k } : {}), ...(filter !== undefined ? { filter } : {}) });
        return { memories };
      },
    );
    app.delete<{ Params: { namespace: string; id: string } }>(
      '/v1/memory/:namespace/:id',
      {
        schema: {
          params: {
            type: 'object',
            properties: { namespace: { type: 'string', maxLength: 128 }, id: { type: 'string', pattern: '^[1-9][0-9]{0,15}$' } },
            required: ['namespace', 'id'],
          },
        },
      },
      async (request) => {
        await memory.forget(request.params.namespace, Number(request.params.id));
        return { forgotten: Number(request.params.id) };
      },
    );
    app.delete<{ Params: { namespace: string } }>('/v1/memory/:namespace', { schema: { params: namespaceParams } }, async (request) => {
      const dropped = await memory.dropNamespace(request.params.namespace);
      if (!dropped) throw new HttpError(404, 'EBRIX_NOT_FOUND', `No namespace ${request.params.namespace}`);
      return { dropped: request.params.namespace };
    });
  }

  #serialMutation<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#mutations.then(task, task);
    this.#mutations = run.catch(() => undefined);
    return run;
  }

  #notReady(): string | undefined {
    if (this.#closing !== undefined) return 'The server is shutting down';
    if (this.#options.memory?.closed) return 'The memory store is closed';
    const index = this.#index;
    if (index === undefined) return undefined;
    if (index instanceof IndexStore) {
      try {
        if (index.current() === undefined) return 'The index store has no version yet';
      } catch {
        return 'The index store is closed';
      }
      return undefined;
    }
    return index.disposed ? 'The index has been disposed' : undefined;
  }

  #info(): Record<string, unknown> {
    const retriever = this.#options.retriever;
    const model = retriever?.model as { version: string; dim: number; manifest?: { name: string; metric: string; tasks: string[]; towers: { query: { features: FeatureSpec[] } } } } | undefined;
    const index = this.#index;
    let live: ReturnType<typeof liveIndex>;
    try {
      live = index === undefined ? undefined : liveIndex(index);
    } catch {
      live = undefined;
    }
    return {
      model:
        model === undefined
          ? null
          : { name: model.manifest?.name ?? null, version: model.version, dim: model.dim, metric: model.manifest?.metric ?? null },
      tasks: model?.manifest?.tasks ?? [],
      queryFields: (model?.manifest?.towers.query.features ?? []).flatMap((f) =>
        f.kind === 'dense' ? f.fields.map((field) => ({ field, kind: 'dense' })) : [{ field: f.field, kind: f.kind }],
      ),
      index:
        index === undefined
          ? null
          : {
              type: index instanceof IndexStore ? 'store' : index instanceof FlatIndex ? 'flat' : index instanceof IvfPqIndex ? 'ivfpq' : 'hnsw',
              size: live !== undefined && !live.disposed ? live.size : 0,
              dim: live?.dim ?? null,
              ...(index instanceof IndexStore ? { version: index.current()?.version ?? null } : {}),
            },
      ranker: retriever?.ranked ?? false,
      memory: this.#options.memory !== undefined,
    };
  }
}

/** Creates the service (routes registered, not listening): `await server.listen()` to serve. */
export async function createServer(options: ServerOptions): Promise<EbrixServer> {
  const server = new EbrixServer(options);
  await server.app.ready();
  return server;
}

function itemJson(item: RetrievedItem<unknown>): Record<string, unknown> {
  return { ...item, id: String(item.id) };
}

/** The index upserts and deletes change: an IndexStore's versions are immutable. */
function mutableIndex(index: RetrievalIndex): FlatIndex | IvfPqIndex | HnswIndex {
  if (index instanceof IndexStore) {
    throw new HttpError(501, 'EBRIX_NOT_SUPPORTED', "An IndexStore's versions cannot be changed: build and publish a new version");
  }
  return index;
}

function requirePort(port: unknown): number {
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65535) throw invalid('a port from 0 to 65535', 'options.port', port);
  return port;
}

/** The status, code and message a failed request answers with. */
function toHttpError(error: unknown): { status: number; code: string; message: string } {
  if (error instanceof HttpError) return { status: error.status, code: error.code, message: error.message };
  if (error instanceof EbrixError) return { status: STATUS_BY_CODE[error.code] ?? 500, code: error.code, message: error.message };
  const e = error as FastifyError;
  if (e?.validation) return { status: 400, code: 'EBRIX_INVALID_ARGUMENT', message: `Invalid request: ${e.message}` };
  switch (e?.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return { status: 400, code: 'EBRIX_MALFORMED_JSON', message: `The body is not valid JSON: ${e.message}` };
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { status: 413, code: 'EBRIX_PAYLOAD_TOO_LARGE', message: e.message };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return { status: 415, code: 'EBRIX_UNSUPPORTED_MEDIA_TYPE', message: `${e.message}: send application/json` };
  }
  // A body the JSON parser refused for another reason (e.g. a __proto__ key) carries a 400.
  if (e instanceof SyntaxError || (typeof e?.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500)) {
    return { status: e.statusCode ?? 400, code: e instanceof SyntaxError ? 'EBRIX_MALFORMED_JSON' : 'EBRIX_BAD_REQUEST', message: e.message };
  }
  return { status: 500, code: 'EBRIX_INTERNAL', message: 'Internal error' };
}
