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
  | 'EBRIX_NATIVE_LOAD'
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

const byCode: Partial<Record<EbrixErrorCode, new (message: string) => EbrixError>> = {
  EBRIX_INVALID_ARGUMENT: InvalidArgumentError,
  EBRIX_DIM_MISMATCH: DimensionMismatchError,
  EBRIX_INVALID_VECTOR: InvalidVectorError,
  EBRIX_DUPLICATE_ID: DuplicateIdError,
};

const knownCodes = new Set<string>([
  'EBRIX_INVALID_ARGUMENT',
  'EBRIX_DIM_MISMATCH',
  'EBRIX_INVALID_VECTOR',
  'EBRIX_DUPLICATE_ID',
  'EBRIX_DISPOSED',
  'EBRIX_UNSUPPORTED_SIMD',
  'EBRIX_OUT_OF_MEMORY',
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
      if (code === 'EBRIX_DISPOSED') return new DisposedError('index');
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
