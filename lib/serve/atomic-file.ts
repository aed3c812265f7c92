/**
 * Durable small-file writes for the serving layer: a temporary file beside the target,
 * synced, renamed over it, and the directory synced, so that after a crash the target holds
 * either the old bytes or the new ones, never a mix.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import path from 'node:path';

import { IoError } from '../errors.js';

export async function writeFileAtomic(file: string, data: string | Uint8Array): Promise<void> {
  const temp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    const handle = await open(temp, 'w');
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, file);
    await syncDirectory(path.dirname(file));
  } catch (error) {
    await rm(temp, { force: true });
    throw asIoError(error, file);
  }
}

/** Makes a rename or a new entry in `dir` durable. Some file systems refuse to sync a directory; that is not an error. */
export async function syncDirectory(dir: string): Promise<void> {
  let handle;
  try {
    handle = await open(dir, 'r');
    await handle.sync();
  } catch {
    // EISDIR / EINVAL / EPERM on platforms that cannot open or sync directories.
  } finally {
    await handle?.close();
  }
}

/** A Node file-system error as EBRIX_IO naming the path; ebrix errors pass through. */
export function asIoError(error: unknown, where: string): Error {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  if (error instanceof Error && typeof code === 'string' && !code.startsWith('EBRIX_')) {
    return new IoError(`${error.message} (${where})`);
  }
  return error as Error;
}
