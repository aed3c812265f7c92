/**
 * The embedding checkpoint of `embedCorpus`: an append-only log of embedded batches, so a
 * crashed run resumes with no duplicates and no gaps.
 *
 * Layout (little-endian):
 *   header:  "EBRXEMB1" (8 bytes) | dim u32 | version byte length u32 | version (UTF-8),
 *            zero-padded to a multiple of 8
 *   batch:   count u32 | crc32 of the payload u32 | payload = ids u64 × count, then
 *            vectors f32 × count × dim
 * A batch is appended and fsynced after its vectors are in the index. A torn last batch (a
 * crash mid-write) fails its length or CRC check and is cut off on the next open; everything
 * before it is trusted.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { crc32 } from 'node:zlib';

import { CorruptFileError, VersionMismatchError } from '../errors.js';

const MAGIC = Buffer.from('EBRXEMB1', 'ascii');

export interface CheckpointBatch {
  ids: BigUint64Array;
  vectors: Float32Array;
}

/** A log record above this size could be written short by one write() call; refuse it. */
export const MAX_RECORD_BYTES = 1 << 30;

export class EmbeddingCheckpoint {
  #end = -1;

  private constructor(
    private readonly handle: FileHandle,
    readonly path: string,
    readonly dim: number,
    private readonly headerBytes: number,
  ) {}

  /**
   * Opens (or creates) the log for `modelVersion` and `dim`. Read the committed batches with
   * `replay()` before appending. A log of another model version is EBRIX_VERSION_MISMATCH.
   */
  static async open(path: string, modelVersion: string, dim: number): Promise<EmbeddingCheckpoint> {
    // Not 'a' mode: appends go to the end of the valid records, which moves back when a torn
    // tail is cut off.
    const handle = await open(path, 'r+').catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return open(path, 'w+');
      throw error;
    });
    try {
      const size = (await handle.stat()).size;
      const header = encodeHeader(modelVersion, dim);
      if (size === 0) {
        await writeFully(handle, header, 0);
        await handle.sync();
      } else {
        const existing = Buffer.alloc(Math.min(size, header.length + 4096));
        await readFully(handle, existing, 0);
        checkHeader(existing, path, modelVersion, dim);
      }
      return new EmbeddingCheckpoint(handle, path, dim, header.length);
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  /**
   * Yields the committed batches in order, one at a time (the log is never held in memory
   * whole). When done, cuts off a torn or corrupt tail so that appends continue after the
   * last good record.
   */
  async *replay(): AsyncGenerator<CheckpointBatch> {
    const size = (await this.handle.stat()).size;
    const dim = this.dim;
    let offset = this.headerBytes;
    const prefix = Buffer.alloc(8);
    while (offset + 8 <= size) {
      await readFully(this.handle, prefix, offset);
      const count = prefix.readUInt32LE(0);
      const payloadBytes = count * 8 + count * dim * 4;
      if (count === 0 || payloadBytes > MAX_RECORD_BYTES || offset + 8 + payloadBytes > size) break;
      const payload = Buffer.alloc(payloadBytes);
      await readFully(this.handle, payload, offset + 8);
      if (crc32(payload) !== prefix.readUInt32LE(4)) break;
      // Copy into fresh arrays: the payload's offsets need not suit a BigUint64Array view.
      const ids = new BigUint64Array(count);
      new Uint8Array(ids.buffer).set(payload.subarray(0, count * 8));
      const vectors = new Float32Array(count * dim);
      new Uint8Array(vectors.buffer).set(payload.subarray(count * 8));
      offset += 8 + payloadBytes;
      yield { ids, vectors };
    }
    if (offset < size) {
      await this.handle.truncate(offset);
      await this.handle.sync();
    }
    this.#end = offset;
  }

  /** Appends one batch and makes it durable. */
  async append(batch: CheckpointBatch): Promise<void> {
    if (this.#end < 0) throw new Error('replay() the checkpoint before appending to it');
    const count = batch.ids.length;
    const payload = Buffer.concat([
      Buffer.from(batch.ids.buffer, batch.ids.byteOffset, batch.ids.byteLength),
      Buffer.from(batch.vectors.buffer, batch.vectors.byteOffset, batch.vectors.byteLength),
    ]);
    if (payload.length > MAX_RECORD_BYTES) throw new RangeError(`A checkpoint batch is limited to ${MAX_RECORD_BYTES} bytes`);
    const prefix = Buffer.alloc(8);
    prefix.writeUInt32LE(count, 0);
    prefix.writeUInt32LE(crc32(payload), 4);
    const record = Buffer.concat([prefix, payload]);
    await writeFully(this.handle, record, this.#end);
    await this.handle.sync();
    this.#end += record.length;
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

async function writeFully(handle: FileHandle, bytes: Buffer, position: number): Promise<void> {
  for (let done = 0; done < bytes.length; ) {
    const { bytesWritten } = await handle.write(bytes, done, bytes.length - done, position + done);
    if (bytesWritten <= 0) throw new Error('write made no progress');
    done += bytesWritten;
  }
}

async function readFully(handle: FileHandle, into: Buffer, position: number): Promise<void> {
  for (let done = 0; done < into.length; ) {
    const { bytesRead } = await handle.read(into, done, into.length - done, position + done);
    if (bytesRead <= 0) throw new CorruptFileError('unexpected end of the checkpoint file');
    done += bytesRead;
  }
}

function encodeHeader(modelVersion: string, dim: number): Buffer {
  const version = Buffer.from(modelVersion, 'utf8');
  const length = Math.ceil((MAGIC.length + 8 + version.length) / 8) * 8;
  const header = Buffer.alloc(length);
  MAGIC.copy(header, 0);
  header.writeUInt32LE(dim, 8);
  header.writeUInt32LE(version.length, 12);
  version.copy(header, 16);
  return header;
}

function checkHeader(bytes: Buffer, path: string, modelVersion: string, dim: number): void {
  if (bytes.length < 16 || !bytes.subarray(0, 8).equals(MAGIC)) {
    throw new CorruptFileError(`${path} is not an ebrix embedding checkpoint`);
  }
  const versionLength = bytes.readUInt32LE(12);
  if (16 + versionLength > bytes.length) throw new CorruptFileError(`${path} has a truncated header`);
  const version = bytes.subarray(16, 16 + versionLength).toString('utf8');
  if (version !== modelVersion) {
    throw new VersionMismatchError(`${path} holds embeddings of model version ${version}, not ${modelVersion}`);
  }
  if (bytes.readUInt32LE(8) !== dim) {
    throw new CorruptFileError(`${path} holds ${bytes.readUInt32LE(8)}-d embeddings, expected ${dim}`);
  }
}
