/**
 * Batcher: turns many concurrent single calls into batched calls of a function, so that a
 * model tower runs one session per batch instead of one per request. Each caller gets its
 * own row (or its own error) back; batches go out when full or when the oldest waiting call
 * has waited `maxDelayMs`, never more than `maxConcurrentBatches` at a time.
 */
import { DisposedError, EbrixError, OverloadedError } from '../errors.js';
import { describe, invalid, requirePositiveInteger } from '../validate.js';

/**
 * The batched function: one result per input, in input order. An `Error` in a slot fails only
 * that caller; a throw or rejection fails the whole batch.
 */
export type BatchFn<I, O> = (inputs: I[]) => Promise<ArrayLike<O | Error>> | ArrayLike<O | Error>;

export interface BatcherOptions {
  /** Dispatch as soon as this many calls wait (integer ≥ 1). */
  maxBatchSize: number;
  /** Dispatch at most this long after the oldest waiting call arrived (≥ 0; 0 = next macrotask). */
  maxDelayMs: number;
  /** Waiting calls beyond this reject at once with OverloadedError (default 10 × maxBatchSize). */
  maxQueue?: number;
  /** Batches in flight at once (default 1); further batches wait their turn in the queue. */
  maxConcurrentBatches?: number;
  /**
   * When no batch is in flight, dispatch what is waiting at the end of the current tick
   * instead of waiting out maxDelayMs (default false). Light load then costs no added
   * latency, and under load calls gather while the previous batch runs.
   */
  dispatchWhenIdle?: boolean;
}

export interface BatcherStats {
  /** Calls accepted into the queue (rejected ones are not counted here). */
  calls: number;
  /** Batches handed to the function. */
  batches: number;
  /** Calls rejected with OverloadedError because the queue was full. */
  rejectedOverloaded: number;
  /** Calls that rejected because of the function: its per-slot Error, throw, or wrong length. */
  failed: number;
  /** Calls handed to the function and not yet settled. */
  inFlight: number;
  /** Calls waiting for a batch. */
  queued: number;
  /** Batch size → number of batches of that size. */
  batchSizes: Record<number, number>;
  /** Milliseconds from call() to dispatch, over the most recent calls (a bounded window). */
  queueWaitMs: { p50: number; p99: number; max: number; mean: number };
}

interface Waiting<I, O> {
  input: I;
  enqueuedAt: number;
  resolve: (value: O) => void;
  reject: (reason: unknown) => void;
}

/** setTimeout clamps longer delays to 1 ms, which would silently turn a long delay into none. */
const MAX_DELAY_MS = 2 ** 31 - 1;
/** Enough samples for a stable p99 while keeping stats() cheap. */
const WAIT_WINDOW = 4096;

// Read through globalThis on every call so that fake clocks installed by tests are honoured.
const now = (): number => globalThis.performance.now();

export class Batcher<I, O> implements AsyncDisposable {
  readonly maxBatchSize: number;
  readonly maxDelayMs: number;
  readonly maxQueue: number;
  readonly maxConcurrentBatches: number;
  readonly dispatchWhenIdle: boolean;

  readonly #fn: BatchFn<I, O>;
  #queue: Waiting<I, O>[] = [];
  /** Calls at the head of the queue that must go out as soon as a slot frees (flush, deadline). */
  #forced = 0;
  #runningBatches = 0;
  #inFlightCalls = 0;
  #closed = false;
  #idleWaiters: (() => void)[] = [];

  #cancelTimer: (() => void) | undefined;
  /** The waiting call the armed timer is the deadline of. */
  #timerHead: Waiting<I, O> | undefined;

  #calls = 0;
  #batches = 0;
  #rejectedOverloaded = 0;
  #failed = 0;
  #batchSizes = new Map<number, number>();
  #waits = new Float64Array(WAIT_WINDOW);
  #waitCount = 0;

  constructor(fn: BatchFn<I, O>, options: BatcherOptions) {
    if (typeof fn !== 'function') throw invalid('a function', 'fn', fn);
    if (options === null || typeof options !== 'object') throw invalid('an options object', 'options', options);
    this.maxBatchSize = requirePositiveInteger(options.maxBatchSize, 'maxBatchSize');
    const delay = options.maxDelayMs;
    if (typeof delay !== 'number' || !(delay >= 0 && delay <= MAX_DELAY_MS)) {
      throw invalid(`a number of milliseconds from 0 to ${MAX_DELAY_MS}`, 'maxDelayMs', delay);
    }
    this.maxDelayMs = delay;
    if (options.maxQueue === undefined) {
      this.maxQueue = 10 * this.maxBatchSize;
    } else {
      // A queue shorter than a batch could never fill one, so size-triggered flushes would
      // silently never happen.
      const q = options.maxQueue;
      if (typeof q !== 'number' || !Number.isInteger(q) || q < this.maxBatchSize || q > Number.MAX_SAFE_INTEGER) {
        throw invalid(`an integer no smaller than maxBatchSize (${this.maxBatchSize})`, 'maxQueue', q);
      }
      this.maxQueue = q;
    }
    this.maxConcurrentBatches =
      options.maxConcurrentBatches === undefined
        ? 1
        : requirePositiveInteger(options.maxConcurrentBatches, 'maxConcurrentBatches');
    this.dispatchWhenIdle = options.dispatchWhenIdle === true;
    this.#fn = fn;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Queues one input and resolves with its row of the batch it lands in. Never throws: a
   * closed batcher rejects with DisposedError, a full queue with OverloadedError.
   */
  call(input: I): Promise<O> {
    if (this.#closed) return Promise.reject(new DisposedError('batcher'));
    if (this.#queue.length >= this.maxQueue) {
      this.#rejectedOverloaded++;
      return Promise.reject(
        new OverloadedError(`The batcher queue is full (${this.maxQueue} calls waiting); shed load or retry later`),
      );
    }
    return new Promise<O>((resolve, reject) => {
      this.#queue.push({ input, enqueuedAt: now(), resolve, reject });
      this.#calls++;
      // Only a full batch goes out from here: with maxDelayMs 0 a clock check would dispatch
      // every call alone instead of gathering the ones issued in the same tick.
      if (this.#queue.length >= this.maxBatchSize) this.#pump();
      else this.#armTimer();
    });
  }

  /** Dispatches every call waiting now, without waiting for its deadline (slots permitting). */
  flush(): void {
    this.#forced = this.#queue.length;
    this.#pump();
  }

  /**
   * Stops accepting calls (later ones reject with DisposedError), dispatches those still
   * waiting, and resolves once every dispatched call has settled. Never rejects; idempotent.
   */
  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#pump();
    }
    if (this.#isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  stats(): BatcherStats {
    const batchSizes: Record<number, number> = {};
    for (const [size, count] of [...this.#batchSizes].sort((a, b) => a[0] - b[0])) batchSizes[size] = count;
    return {
      calls: this.#calls,
      batches: this.#batches,
      rejectedOverloaded: this.#rejectedOverloaded,
      failed: this.#failed,
      inFlight: this.#inFlightCalls,
      queued: this.#queue.length,
      batchSizes,
      queueWaitMs: this.#waitSummary(),
    };
  }

  #isIdle(): boolean {
    return this.#queue.length === 0 && this.#inFlightCalls === 0;
  }

  #headIsDue(): boolean {
    if (this.#closed || this.#forced > 0 || this.#queue.length >= this.maxBatchSize) return true;
    if (this.dispatchWhenIdle && this.#runningBatches === 0) return true;
    const head = this.#queue[0];
    // Calls that waited out their deadline while every slot was busy go as soon as one frees.
    return head !== undefined && head.enqueuedAt + this.maxDelayMs <= now();
  }

  /** Sends out due batches while slots are free, then arms (or drops) the deadline timer. */
  #pump(): void {
    while (this.#queue.length > 0 && this.#runningBatches < this.maxConcurrentBatches && this.#headIsDue()) {
      this.#dispatch(Math.min(this.#queue.length, this.maxBatchSize));
    }
    this.#armTimer();
  }

  #armTimer(): void {
    const head = this.#queue[0];
    // With nothing waiting, or the head already due and only waiting for a slot (a settling
    // batch pumps again), no timer is needed: none is left behind to hold the process open.
    if (head === undefined || this.#closed || this.#forced > 0 || this.#queue.length >= this.maxBatchSize) {
      this.#disarm();
      return;
    }
    if (this.#timerHead === head) return;
    this.#disarm();
    // A head already past its deadline while every slot is busy goes out when the next batch
    // settles (pump checks the clock); a zero-length timer would only fire into a full house.
    const delay = this.dispatchWhenIdle && this.#runningBatches === 0 ? 0 : this.maxDelayMs;
    const remaining = Math.max(0, head.enqueuedAt + delay - now());
    if (remaining === 0 && this.#runningBatches >= this.maxConcurrentBatches) return;
    const onDeadline = (): void => {
      this.#cancelTimer = undefined;
      this.#timerHead = undefined;
      // Force rather than re-check the clock: Node measures timeouts from the loop's cached
      // millisecond clock, so they can fire a little early by performance.now(), and re-arming
      // for the remainder would cost another tick (maxDelayMs is an upper bound anyway).
      if (this.#queue[0] === head) this.#forced = Math.max(this.#forced, 1);
      this.#pump();
    };
    // The timer stays ref'd on purpose: it exists only while callers wait, and an unref'd one
    // would let the process exit under a pending `await batcher.call(...)`.
    if (delay === 0) {
      const handle = setImmediate(onDeadline);
      this.#cancelTimer = () => clearImmediate(handle);
    } else {
      const handle = setTimeout(onDeadline, remaining);
      this.#cancelTimer = () => clearTimeout(handle);
    }
    this.#timerHead = head;
  }

  #disarm(): void {
    this.#cancelTimer?.();
    this.#cancelTimer = undefined;
    this.#timerHead = undefined;
  }

  #dispatch(size: number): void {
    const batch = this.#queue.splice(0, size);
    this.#forced = Math.max(0, this.#forced - size);
    this.#runningBatches++;
    this.#inFlightCalls += size;
    this.#batches++;
    this.#batchSizes.set(size, (this.#batchSizes.get(size) ?? 0) + 1);
    const dispatchedAt = now();
    for (const waiting of batch) this.#recordWait(dispatchedAt - waiting.enqueuedAt);

    const inputs = batch.map((waiting) => waiting.input);
    // Calling fn from a microtask turns a synchronous throw into a rejection and keeps
    // call()/flush() from re-entering fn (or fn from re-entering the batcher) on the same stack.
    Promise.resolve()
      .then(() => this.#fn(inputs))
      .then(
        (outputs) => this.#settle(batch, outputs, undefined),
        (error: unknown) => this.#settle(batch, undefined, { error }),
      );
  }

  #settle(batch: Waiting<I, O>[], outputs: ArrayLike<O | Error> | undefined, failure: { error: unknown } | undefined): void {
    this.#runningBatches--;
    this.#inFlightCalls -= batch.length;

    if (failure === undefined && !isArrayLikeOfLength(outputs, batch.length)) {
      failure = {
        error: new EbrixError(
          'EBRIX_INTERNAL',
          `Expected ${batch.length} results (one per input) from the batch function but received ${describe(outputs)}`,
        ),
      };
    }
    if (failure !== undefined) {
      this.#failed += batch.length;
      for (const waiting of batch) waiting.reject(failure.error);
    } else {
      const rows = outputs as ArrayLike<O | Error>;
      for (let i = 0; i < batch.length; i++) {
        const row = rows[i];
        const waiting = batch[i]!;
        if (row instanceof Error) {
          this.#failed++;
          waiting.reject(row);
        } else {
          waiting.resolve(row as O);
        }
      }
    }

    this.#pump();
    if (this.#isIdle() && this.#idleWaiters.length > 0) {
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const resolve of waiters) resolve();
    }
  }

  #recordWait(ms: number): void {
    this.#waits[this.#waitCount % WAIT_WINDOW] = ms;
    this.#waitCount++;
  }

  #waitSummary(): BatcherStats['queueWaitMs'] {
    const n = Math.min(this.#waitCount, WAIT_WINDOW);
    if (n === 0) return { p50: 0, p99: 0, max: 0, mean: 0 };
    const sorted = this.#waits.slice(0, n).sort();
    let sum = 0;
    for (let i = 0; i < n; i++) sum += sorted[i]!;
    // Nearest-rank percentiles: always a wait that actually happened.
    const rank = (p: number): number => sorted[Math.min(n, Math.max(1, Math.ceil(p * n))) - 1]!;
    return { p50: rank(0.5), p99: rank(0.99), max: sorted[n - 1]!, mean: sum / n };
  }
}

function isArrayLikeOfLength(value: unknown, length: number): value is ArrayLike<unknown> {
  if (value === null || (typeof value !== 'object' && typeof value !== 'function')) return false;
  return (value as { length?: unknown }).length === length;
}
