/**
 * Worker-thread side of WorkerSession (ort-session.ts). onnxruntime-node's `run` executes
 * on the calling thread, so each tower session lives in a worker of its own: inference never
 * blocks the main event loop, and a long item batch never delays a query tower.
 */
import { parentPort } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';

import type { WorkerReply, WorkerRequest, WireTensor } from './ort-session.js';

let session: ort.InferenceSession | undefined;

function reply(message: WorkerReply, transfer: ArrayBuffer[] = []): void {
  parentPort!.postMessage(message, transfer);
}

function toTensor(t: WireTensor): ort.Tensor {
  switch (t.type) {
    case 'float32':
      return new ort.Tensor('float32', t.data as Float32Array, t.dims);
    case 'int32':
      return new ort.Tensor('int32', t.data as Int32Array, t.dims);
    case 'int64':
      return new ort.Tensor('int64', t.data as BigInt64Array, t.dims);
  }
}

async function handle(request: WorkerRequest): Promise<void> {
  try {
    switch (request.op) {
      case 'open': {
        session = await ort.InferenceSession.create(request.bytes, request.options);
        reply({
          id: request.id,
          ok: true,
          info: {
            inputNames: [...session.inputNames],
            outputNames: [...session.outputNames],
            inputTypes: Object.fromEntries(
              session.inputMetadata.map((m) => [m.name, m.isTensor ? String(m.type) : 'non-tensor']),
            ),
          },
        });
        return;
      }
      case 'run': {
        if (session === undefined) throw new Error('the session is not open');
        const feeds: Record<string, ort.Tensor> = {};
        for (const [name, t] of Object.entries(request.feeds)) feeds[name] = toTensor(t);
        const result = await session.run(feeds, request.outputs);
        const outputs: Record<string, WireTensor> = {};
        const transfer: ArrayBuffer[] = [];
        for (const name of request.outputs) {
          const tensor = result[name];
          if (tensor === undefined) throw new Error(`no output named ${name}`);
          const data = tensor.data;
          if (!(data instanceof Float32Array) && !(data instanceof Int32Array) && !(data instanceof BigInt64Array)) {
            throw new Error(`output ${name} has unsupported type ${tensor.type}`);
          }
          outputs[name] = { type: tensor.type as WireTensor['type'], data, dims: [...tensor.dims] };
          if (data.byteOffset === 0 && data.byteLength === data.buffer.byteLength) transfer.push(data.buffer as ArrayBuffer);
        }
        reply({ id: request.id, ok: true, outputs }, transfer);
        return;
      }
      case 'release': {
        await session?.release();
        session = undefined;
        reply({ id: request.id, ok: true });
        return;
      }
    }
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    try {
      reply({ id: request.id, ok: false, message });
    } catch {
      // Nothing left to tell the caller with; the next request still runs.
    }
  }
}

// Requests are handled one at a time, in order: a session runs one batch at a time anyway,
// and its intra-op threads already use the cores.
let chain = Promise.resolve();
parentPort!.on('message', (request: WorkerRequest) => {
  // handle() never rejects, but a chain must not stay broken if it ever did.
  chain = chain.then(() => handle(request)).catch(() => {});
});
