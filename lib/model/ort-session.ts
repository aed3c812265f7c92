/**
 * WorkerSession: an onnxruntime-node session run in a worker thread (see ort-worker.ts).
 * Inputs are transferred, not copied, to the worker and outputs back, so the cost over a
 * direct session is one message round trip (tens of microseconds).
 */
import { Worker } from 'node:worker_threads';
import type { InferenceSession } from 'onnxruntime-node';

import { EbrixError } from '../errors.js';

export interface WireTensor {
  type: 'float32' | 'int32' | 'int64';
  data: Float32Array | Int32Array | BigInt64Array;
  dims: number[];
}

export interface SessionInfo {
  inputNames: string[];
  outputNames: string[];
  /** Input name → element type ('float32', 'int64', …). */
  inputTypes: Record<string, string>;
}

export type WorkerRequest =
  | { op: 'open'; id: number; bytes: Uint8Array; options: InferenceSession.SessionOptions }
  | { op: 'run'; id: number; feeds: Record<string, WireTensor>; outputs: string[] }
  | { op: 'release'; id: number };

export type WorkerReply =
  | { id: number; ok: true; info?: SessionInfo; outputs?: Record<string, WireTensor> }
  | { id: number; ok: false; message: string };

interface Pending {
  resolve: (reply: WorkerReply & { ok: true }) => void;
  reject: (error: Error) => void;
}

// Compiled (dist/*.js) the worker is plain JavaScript; run from the TypeScript sources (tests,
// benches) it is loaded through tsx, the dev dependency that runs them.
const fromSources = import.meta.url.endsWith('.ts');
const workerUrl = new URL(fromSources ? './ort-worker.ts' : './ort-worker.js', import.meta.url);

function startWorker(): Worker {
  if (!fromSources) return new Worker(workerUrl);
  const boot = `import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${JSON.stringify(workerUrl.href)}); })`;
  return new Worker(boot, { eval: true });
}

export class WorkerSession {
  readonly info: SessionInfo;
  #worker: Worker | undefined;
  #pending = new Map<number, Pending>();
  #nextId = 1;
  /** Set once the worker has died: every later request fails with it at once. */
  #dead: Error | undefined;

  private constructor(worker: Worker, info: SessionInfo) {
    this.#worker = worker;
    this.info = info;
  }

  static async open(bytes: Uint8Array, options: InferenceSession.SessionOptions): Promise<WorkerSession> {
    const worker = startWorker();
    const session = new WorkerSession(worker, { inputNames: [], outputNames: [], inputTypes: {} });
    const die = (error: Error): void => {
      session.#dead ??= error;
      for (const p of session.#pending.values()) p.reject(error);
      session.#pending.clear();
    };
    worker.on('message', (message: WorkerReply) => {
      const p = session.#pending.get(message.id);
      if (p === undefined) return;
      session.#pending.delete(message.id);
      if (session.#pending.size === 0) worker.unref();
      if (message.ok) p.resolve(message);
      else p.reject(new Error(message.message));
    });
    worker.on('error', (error) => die(new EbrixError('EBRIX_INTERNAL', `onnxruntime worker failed: ${error.message}`)));
    worker.on('exit', (code) => die(new EbrixError('EBRIX_INTERNAL', `onnxruntime worker exited (code ${code})`)));
    try {
      const reply = await session.#request({ op: 'open', id: 0, bytes, options });
      (session as { info: SessionInfo }).info = reply.info!;
    } catch (error) {
      await worker.terminate();
      throw error;
    }
    return session;
  }

  /** Runs one batch; the feeds' buffers are transferred to the worker (unusable afterwards). */
  async run(feeds: Record<string, WireTensor>, outputs: string[]): Promise<Record<string, WireTensor>> {
    const transfer = [...new Set(Object.values(feeds).map((t) => t.data.buffer as ArrayBuffer))];
    const reply = await this.#request({ op: 'run', id: 0, feeds, outputs }, transfer);
    return reply.outputs!;
  }

  async release(): Promise<void> {
    const worker = this.#worker;
    if (worker === undefined) return;
    try {
      if (this.#dead === undefined) await this.#request({ op: 'release', id: 0 });
    } finally {
      this.#worker = undefined;
      await worker.terminate();
    }
  }

  #request(request: WorkerRequest, transfer: ArrayBuffer[] = []): Promise<WorkerReply & { ok: true }> {
    const worker = this.#worker;
    if (worker === undefined) return Promise.reject(new EbrixError('EBRIX_DISPOSED', 'The session has been released'));
    if (this.#dead !== undefined) return Promise.reject(this.#dead);
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      // Posted first: if postMessage throws (an uncloneable option), nothing is left pending.
      worker.postMessage({ ...request, id }, transfer);
      this.#pending.set(id, { resolve, reject });
      worker.ref();
    });
  }
}
