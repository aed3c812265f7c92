/**
 * Typed errors. Every error ebrix throws is an `EbrixError` with a stable `code`; the
 * subclasses let callers `instanceof`-check the common cases.
 */

export type EbrixErrorCode =
  | 'EBRIX_INVALID_ARGUMENT'
  | 'EBRIX_DIM_MISMATCH'
  | 'EBRIX_INVALID_VECTOR'
  | 'EBRIX_DUPLICATE_ID'
  | 'EBRIX_DISPOSED'
  | 'EBRIX_UNSUPPORTED_SIMD'
  | 'EBRIX_OUT_OF_MEMORY'
  | 'EBRIX_DEVICE_UNAVAILABLE'
  | 'EBRIX_NOT_TRAINED'
  | 'EBRIX_UNKNOWN_ID'
  | 'EBRIX_NATIVE_LOAD'
  | 'EBRIX_INVALID_RECORD'
  | 'EBRIX_INVALID_SPEC'
  | 'EBRIX_CORRUPT_MODEL'
  | 'EBRIX_CORRUPT_FILE'
  | 'EBRIX_IO'
  | 'EBRIX_OVERLOADED'
  | 'EBRIX_VERSION_MISMATCH'
  | 'EBRIX_INTERNAL';

export class EbrixError extends Error {
  readonly code: EbrixErrorCode;
  constructor(code: EbrixErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

export class InvalidArgumentError extends EbrixError {
  constructor(message: string) {
    super('EBRIX_INVALID_ARGUMENT', message);
  }
}

export class DimensionMismatchError extends EbrixError {
  constructor(message: string) {
    super('EBRIX_DIM_MISMATCH', message);
  }
}

export class InvalidVectorError extends EbrixError {
  constructor(message: string) {
    super('EBRIX_INVALID_VECTOR', message);
  }
}

export class DuplicateIdError extends EbrixError {
  constructor(message: string) {
    super('EBRIX_DUPLICATE_ID', message);
  }
}

export class DisposedError extends EbrixError {
  constructor(what: string) {
    super('EBRIX_DISPOSED', `The ${what} has been disposed`);
  }
}

/** Host or device memory ran out; the operation left the index unchanged. */
export class OutOfMemoryError extends EbrixError {
  constructor(message: string) {
    super('EBRIX_OUT_OF_MEMORY', message);
  }
}

/**
 * No usable GPU: ebrix was built without CUDA, the CUDA addon or driver does not load, the
 * device is missing or too old, or a CUDA call failed. The message says which.
 */
export class DeviceUnavailableError extends EbrixError {
  constructor(message: string) {
    super('EBRIX_DEVICE_UNAVAILABLE', message);
  }
}

/** An index that needs train() first (IvfPqIndex) was searched or added to before it. */
export class NotTrainedError extends EbrixError {
  constructor(message: string) {
    super('EBRIX_NOT_TRAINED', message);
  }
}

/** An id the index does not hold was named (HnswIndex.remove); nothing was changed. */
export class UnknownIdError extends EbrixError {
  constructor(message: string) {
    super('EBRIX_UNKNOWN_ID', message);
  }
}

/** A record handed to a feature encoder lacks a field or holds the wrong type or a NaN. */
export class InvalidRecordError extends EbrixError {
  constructor(message: string) {
    super('EBRIX_INVALID_RECORD', message);
  }
}

/** A feature spec, tower definition or model manifest is malformed. */
export class InvalidSpecError extends EbrixError {
  constructor(message: string) {
    super('EBRIX_INVALID_SPEC', message);
  }
}

/** A model package failed its manifest or checksum checks. */
export class CorruptModelError extends EbrixError {
  constructor(message: string) {
    super('EBRIX_CORRUPT_MODEL', message);
  }
}

/** A file ebrix wrote (index, checkpoint) is truncated, tampered with or not ours. */
export class CorruptFileError extends EbrixError {
  constructor(message: string) {
    super('EBRIX_CORRUPT_FILE', message);
  }
}

/** The file system refused an operation (missing file, permissions, disk full); the message says which. */
export class IoError extends EbrixError {
  constructor(message: string) {
    super('EBRIX_IO', message);
  }
}

/** A bounded queue is full; the caller should shed load or retry later. */
export class OverloadedError extends EbrixError {
  constructor(message: string) {
    super('EBRIX_OVERLOADED', message);
  }
}

/** A model and an index (or two models) of different versions were combined. */
export class VersionMismatchError extends EbrixError {
  constructor(message: string) {
    super('EBRIX_VERSION_MISMATCH', message);
  }
}

const byCode: Partial<Record<EbrixErrorCode, new (message: string) => EbrixError>> = {
  EBRIX_INVALID_ARGUMENT: InvalidArgumentError,
  EBRIX_DIM_MISMATCH: DimensionMismatchError,
  EBRIX_INVALID_VECTOR: InvalidVectorError,
  EBRIX_DUPLICATE_ID: DuplicateIdError,
  EBRIX_OUT_OF_MEMORY: OutOfMemoryError,
  EBRIX_DEVICE_UNAVAILABLE: DeviceUnavailableError,
  EBRIX_NOT_TRAINED: NotTrainedError,
  EBRIX_CORRUPT_FILE: CorruptFileError,
  EBRIX_IO: IoError,
  EBRIX_UNKNOWN_ID: UnknownIdError,
  EBRIX_INVALID_SPEC: InvalidSpecError,
  EBRIX_OVERLOADED: OverloadedError,
};

const knownCodes = new Set<string>([
  'EBRIX_INVALID_RECORD',
  'EBRIX_INVALID_SPEC',
  'EBRIX_CORRUPT_MODEL',
  'EBRIX_CORRUPT_FILE',
  'EBRIX_IO',
  'EBRIX_OVERLOADED',
  'EBRIX_VERSION_MISMATCH',
  'EBRIX_INVALID_ARGUMENT',
  'EBRIX_DIM_MISMATCH',
  'EBRIX_INVALID_VECTOR',
  'EBRIX_DUPLICATE_ID',
  'EBRIX_DISPOSED',
  'EBRIX_UNSUPPORTED_SIMD',
  'EBRIX_OUT_OF_MEMORY',
  'EBRIX_DEVICE_UNAVAILABLE',
  'EBRIX_NOT_TRAINED',
  'EBRIX_UNKNOWN_ID',
  'EBRIX_NATIVE_LOAD',
  'EBRIX_INTERNAL',
]);

/** Turns an error raised by the addon (a plain Error with a `code`) into its typed class. */
export function fromNative(error: unknown): Error {
  if (error instanceof EbrixError) return error;
  if (error instanceof Error) {
    const code = (error as Error & { code?: unknown }).code;
    if (typeof code === 'string' && knownCodes.has(code)) {
      const Typed = byCode[code as EbrixErrorCode];
      if (Typed) return new Typed(error.message);
      if (code === 'EBRIX_DISPOSED') {
        // The addon names what was disposed ("The trainer has been disposed").
        return new DisposedError(/^The (.+) has been disposed$/.exec(error.message)?.[1] ?? 'index');
      }
      return new EbrixError(code as EbrixErrorCode, error.message);
    }
    return error;
  }
  return new EbrixError('EBRIX_INTERNAL', String(error));
}

/** Runs a native call, rethrowing its error as the typed class. */
export function callNative<T>(fn: () => T): T {
  try {
    return fn();
  } catch (error) {
    throw fromNative(error);
  }
}

/** Awaits a native promise, rejecting with the typed class. */
export async function awaitNative<T>(promise: Promise<T>): Promise<T> {
  try {
    return await promise;
  } catch (error) {
    throw fromNative(error);
  }
}
