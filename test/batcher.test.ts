import { spawnSync } from 'node:child_process';
import { afterEach, describe, expect, it, vi } from 'vitest';

import { DisposedError, EbrixError, InvalidArgumentError, OverloadedError } from '../lib/errors.js';
import { Batcher, type BatcherOptions } from '../lib/serve/batcher.js';
import { rng } from './helpers.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A batch function that doubles its inputs and remembers every batch it was given. */
function doubler(): { fn: (inputs: number[]) => number[]; batches: number[][] } {
  const batches: number[][] = [];
  return {
    batches,
    fn: (inputs) => {
      batches.push([...inputs]);
      return inputs.map((x) => x * 2);
    },
  };
}

/** A promise settled from outside, to hold a batch in flight for as long as a test needs. */
function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void; reject: (error: unknown) => void } {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('Batcher options', () => {
  const fn = (inputs: number[]): number[] => inputs;

  it.each<[string, unknown]>([
    ['maxBatchSize', { maxBatchSize: 0, maxDelayMs: 1 }],
    ['maxBatchSize', { maxBatchSize: 1.5, maxDelayMs: 1 }],
    ['maxBatchSize', { maxDelayMs: 1 }],
    ['maxDelayMs', { maxBatchSize: 4, maxDelayMs: -1 }],
    ['maxDelayMs', { maxBatchSize: 4, maxDelayMs: Number.NaN }],
    ['maxDelayMs', { maxBatchSize: 4, maxDelayMs: 2 ** 31 }],
    ['maxDelayMs', { maxBatchSize: 4, maxDelayMs: '5' }],
    ['maxQueue', { maxBatchSize: 4, maxDelayMs: 1, maxQueue: 3 }],
    ['maxQueue', { maxBatchSize: 4, maxDelayMs: 1, maxQueue: 8.5 }],
    ['maxConcurrentBatches', { maxBatchSize: 4, maxDelayMs: 1, maxConcurrentBatches: 0 }],
    ['options', null],
  ])('rejects a bad %s', (name, options) => {
    const build = (): unknown => new Batcher(fn, options as BatcherOptions);
    expect(build).toThrow(InvalidArgumentError);
    expect(build).toThrow(new RegExp(`^Expected .* for ${name} but received `));
  });

  it('rejects a non-function', () => {
    expect(() => new Batcher(42 as never, { maxBatchSize: 1, maxDelayMs: 0 })).toThrow(
      'Expected a function for fn but received 42',
    );
  });

  it('fills in defaults', () => {
    const batcher = new Batcher(fn, { maxBatchSize: 8, maxDelayMs: 0 });
    expect(batcher.maxQueue).toBe(80);
    expect(batcher.maxConcurrentBatches).toBe(1);
  });
});

describe('Batcher ordering', () => {
  it('gives each of 100 concurrent callers its own result, in FIFO batches', async () => {
    const next = rng(7);
    const batches: number[][] = [];
    const batcher = new Batcher(
      async (inputs: number[]) => {
        batches.push([...inputs]);
        await sleep(next() * 4);
        return inputs.map((x) => `row-${x}`);
      },
      { maxBatchSize: 8, maxDelayMs: 2, maxConcurrentBatches: 3, maxQueue: 100 },
    );
    const calls: Promise<string>[] = [];
    for (let i = 0; i < 100; i++) {
      calls.push(batcher.call(i));
      // Spread arrivals over several ticks so deadline and size flushes interleave.
      if (i % 17 === 0) await sleep(next() * 3);
    }
    const results = await Promise.all(calls);
    expect(results).toEqual(Array.from({ length: 100 }, (_, i) => `row-${i}`));
    expect(batches.flat()).toEqual(Array.from({ length: 100 }, (_, i) => i));
    expect(Math.max(...batches.map((b) => b.length))).toBeLessThanOrEqual(8);
    const stats = batcher.stats();
    expect(stats.calls).toBe(100);
    expect(stats.batches).toBe(batches.length);
    expect(stats.inFlight).toBe(0);
    expect(stats.queued).toBe(0);
    await batcher.close();
  });

  it('accepts array-likes such as typed arrays as results', async () => {
    const batcher = new Batcher((inputs: number[]) => Float32Array.from(inputs, (x) => x / 2), {
      maxBatchSize: 3,
      maxDelayMs: 0,
    });
    await expect(Promise.all([batcher.call(1), batcher.call(2), batcher.call(3)])).resolves.toEqual([0.5, 1, 1.5]);
  });
});

describe('Batcher flushing', () => {
  it('caps batches at maxBatchSize', async () => {
    const { fn, batches } = doubler();
    const batcher = new Batcher(fn, { maxBatchSize: 4, maxDelayMs: 0, maxQueue: 100 });
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => batcher.call(i)));
    expect(results).toEqual(Array.from({ length: 10 }, (_, i) => i * 2));
    expect(batches.map((b) => b.length)).toEqual([4, 4, 2]);
    expect(batcher.stats().batchSizes).toEqual({ 2: 1, 4: 2 });
  });

  it('sends a lone call out at the deadline, not before', async () => {
    const { fn, batches } = doubler();
    const batcher = new Batcher(fn, { maxBatchSize: 16, maxDelayMs: 30 });
    const start = performance.now();
    const result = await batcher.call(21);
    const elapsed = performance.now() - start;
    expect(result).toBe(42);
    expect(batches).toEqual([[21]]);
    // Node measures a timeout from the event loop's cached millisecond clock, which lags
    // performance.now() by however long the current tick has run, so timers fire up to a
    // few ms early by this clock (the exact deadline is checked with fake timers below).
    // The upper bound is loose for loaded CI machines.
    expect(elapsed).toBeGreaterThanOrEqual(25);
    expect(elapsed).toBeLessThan(250);
    const wait = batcher.stats().queueWaitMs;
    expect(wait.max).toBeGreaterThanOrEqual(25);
  });

  it('measures the deadline from the oldest waiting call (fake clock)', async () => {
    vi.useFakeTimers();
    const { fn, batches } = doubler();
    const batcher = new Batcher(fn, { maxBatchSize: 16, maxDelayMs: 10 });
    const first = batcher.call(1);
    await vi.advanceTimersByTimeAsync(6);
    const second = batcher.call(2);
    await vi.advanceTimersByTimeAsync(3);
    expect(batches).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(batches).toEqual([[1, 2]]);
    await expect(Promise.all([first, second])).resolves.toEqual([2, 4]);
    const wait = batcher.stats().queueWaitMs;
    expect(wait.max).toBeCloseTo(10, 5);
    expect(wait.mean).toBeCloseTo(7, 5);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('flushes on size long before the deadline', async () => {
    const { fn, batches } = doubler();
    const batcher = new Batcher(fn, { maxBatchSize: 3, maxDelayMs: 10_000 });
    const start = performance.now();
    const results = await Promise.all([batcher.call(1), batcher.call(2), batcher.call(3)]);
    expect(results).toEqual([2, 4, 6]);
    expect(batches).toEqual([[1, 2, 3]]);
    expect(performance.now() - start).toBeLessThan(1_000);
  });

  it('gathers calls of the same tick when maxDelayMs is 0', async () => {
    const { fn, batches } = doubler();
    const batcher = new Batcher(fn, { maxBatchSize: 64, maxDelayMs: 0 });
    const first = await Promise.all([batcher.call(1), batcher.call(2), batcher.call(3)]);
    const second = await batcher.call(4);
    expect(first).toEqual([2, 4, 6]);
    expect(second).toBe(8);
    expect(batches).toEqual([[1, 2, 3], [4]]);
  });

  it('flush() dispatches what is waiting at once', async () => {
    vi.useFakeTimers();
    const { fn, batches } = doubler();
    const batcher = new Batcher(fn, { maxBatchSize: 16, maxDelayMs: 1_000 });
    const calls = [batcher.call(1), batcher.call(2)];
    batcher.flush();
    expect(batcher.stats().queued).toBe(0);
    expect(batcher.stats().inFlight).toBe(2);
    await expect(Promise.all(calls)).resolves.toEqual([2, 4]);
    expect(batches).toEqual([[1, 2]]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('arms a timer only while calls wait', async () => {
    vi.useFakeTimers();
    const { fn } = doubler();
    const batcher = new Batcher(fn, { maxBatchSize: 2, maxDelayMs: 50 });
    expect(vi.getTimerCount()).toBe(0);
    const a = batcher.call(1);
    expect(vi.getTimerCount()).toBe(1);
    const b = batcher.call(2); // fills the batch: the deadline timer goes away
    expect(vi.getTimerCount()).toBe(0);
    await expect(Promise.all([a, b])).resolves.toEqual([2, 4]);
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe('Batcher dispatchWhenIdle', () => {
  it('sends a lone call at the end of the tick instead of at the deadline', async () => {
    const { fn, batches } = doubler();
    const batcher = new Batcher(fn, { maxBatchSize: 8, maxDelayMs: 1000, dispatchWhenIdle: true });
    const started = performance.now();
    const calls = [batcher.call(1), batcher.call(2)];
    expect(await Promise.all(calls)).toEqual([2, 4]);
    expect(performance.now() - started).toBeLessThan(900); // well before the 1000 ms deadline
    expect(batches).toEqual([[1, 2]]);
    await batcher.close();
  });

  it('gathers calls while a batch is in flight and sends them when it settles', async () => {
    const gates: Array<ReturnType<typeof deferred<void>>> = [];
    const batches: number[][] = [];
    const batcher = new Batcher(
      async (inputs: number[]) => {
        batches.push([...inputs]);
        const gate = deferred<void>();
        gates.push(gate);
        await gate.promise;
        return inputs.map((x) => x + 1);
      },
      { maxBatchSize: 64, maxDelayMs: 10_000, dispatchWhenIdle: true },
    );
    const first = batcher.call(0);
    await sleep(5);
    expect(batches).toEqual([[0]]);
    const rest = Array.from({ length: 10 }, (_, i) => batcher.call(i + 1));
    await sleep(5);
    expect(batches.length).toBe(1); // busy: the others wait, far from their deadline
    gates[0]!.resolve();
    expect(await first).toBe(1);
    await sleep(5);
    expect(batches[1]).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    gates[1]!.resolve();
    expect(await Promise.all(rest)).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    await batcher.close();
  });
});

describe('Batcher errors', () => {
  it('fails only the caller whose slot holds an Error', async () => {
    const batcher = new Batcher(
      (inputs: number[]) => inputs.map((x) => (x % 2 === 1 ? new RangeError(`odd ${x}`) : x * 10)),
      { maxBatchSize: 4, maxDelayMs: 0 },
    );
    const settled = await Promise.allSettled([1, 2, 3, 4].map((x) => batcher.call(x)));
    expect(settled.map((s) => s.status)).toEqual(['rejected', 'fulfilled', 'rejected', 'fulfilled']);
    expect(settled[0]).toMatchObject({ reason: new RangeError('odd 1') });
    expect(settled[1]).toMatchObject({ value: 20 });
    expect(settled[2]).toMatchObject({ reason: new RangeError('odd 3') });
    expect(settled[3]).toMatchObject({ value: 40 });
    expect(batcher.stats().failed).toBe(2);
  });

  it('fails the whole batch when fn rejects, and runs the next batch', async () => {
    const boom = new Error('tower crashed');
    let batchNo = 0;
    const batcher = new Batcher(
      async (inputs: number[]) => {
        batchNo++;
        if (batchNo === 1) throw boom;
        return inputs;
      },
      { maxBatchSize: 2, maxDelayMs: 0 },
    );
    const settled = await Promise.allSettled([1, 2, 3, 4].map((x) => batcher.call(x)));
    expect(settled).toEqual([
      { status: 'rejected', reason: boom },
      { status: 'rejected', reason: boom },
      { status: 'fulfilled', value: 3 },
      { status: 'fulfilled', value: 4 },
    ]);
    expect(batcher.stats()).toMatchObject({ failed: 2, batches: 2, inFlight: 0 });
  });

  it('handles a synchronous throw like a rejection', async () => {
    const boom = new TypeError('bad tensor');
    let threw = false;
    const batcher = new Batcher(
      (inputs: number[]) => {
        if (!threw) {
          threw = true;
          throw boom;
        }
        return inputs;
      },
      { maxBatchSize: 2, maxDelayMs: 0 },
    );
    // The throw must not escape call() itself.
    const calls = [1, 2, 3].map((x) => batcher.call(x));
    const settled = await Promise.allSettled(calls);
    expect(settled).toEqual([
      { status: 'rejected', reason: boom },
      { status: 'rejected', reason: boom },
      { status: 'fulfilled', value: 3 },
    ]);
  });

  it('fails every caller with EBRIX_INTERNAL when fn returns the wrong number of results', async () => {
    const batcher = new Batcher((inputs: number[]) => inputs.slice(1), { maxBatchSize: 3, maxDelayMs: 0 });
    const settled = await Promise.allSettled([1, 2, 3].map((x) => batcher.call(x)));
    for (const s of settled) {
      expect(s.status).toBe('rejected');
      const reason = (s as PromiseRejectedResult).reason as EbrixError;
      expect(reason).toBeInstanceOf(EbrixError);
      expect(reason.code).toBe('EBRIX_INTERNAL');
      expect(reason.message).toBe(
        'Expected 3 results (one per input) from the batch function but received an array of length 2',
      );
    }
    expect(batcher.stats().failed).toBe(3);
  });

  it('fails every caller when fn resolves to something that is not array-like', async () => {
    const batcher = new Batcher(() => undefined as never, { maxBatchSize: 1, maxDelayMs: 0 });
    await expect(batcher.call(1)).rejects.toMatchObject({ code: 'EBRIX_INTERNAL' });
  });
});

describe('Batcher back-pressure', () => {
  it('rejects the call beyond maxQueue with OverloadedError and counts it', async () => {
    const gate = deferred<void>();
    const batcher = new Batcher(
      async (inputs: number[]) => {
        await gate.promise;
        return inputs;
      },
      { maxBatchSize: 2, maxDelayMs: 0, maxQueue: 4 },
    );
    // Two go in flight at once (a full batch), then four fill the queue behind them.
    const accepted = [1, 2, 3, 4, 5, 6].map((x) => batcher.call(x));
    expect(batcher.stats()).toMatchObject({ inFlight: 2, queued: 4 });
    const overflow = batcher.call(7);
    await expect(overflow).rejects.toBeInstanceOf(OverloadedError);
    await expect(overflow).rejects.toMatchObject({ code: 'EBRIX_OVERLOADED' });
    expect(batcher.stats()).toMatchObject({ calls: 6, rejectedOverloaded: 1, queued: 4 });
    gate.resolve();
    await expect(Promise.all(accepted)).resolves.toEqual([1, 2, 3, 4, 5, 6]);
    // In-flight calls do not count against the queue: it has room again.
    await expect(batcher.call(8)).resolves.toBe(8);
  });

  it.each([1, 3])('never runs more than %i batches at once', async (maxConcurrentBatches) => {
    let running = 0;
    let peak = 0;
    const sizes: number[] = [];
    const batcher = new Batcher(
      async (inputs: number[]) => {
        running++;
        peak = Math.max(peak, running);
        sizes.push(inputs.length);
        await sleep(3);
        running--;
        return inputs;
      },
      { maxBatchSize: 4, maxDelayMs: 1, maxConcurrentBatches, maxQueue: 64 },
    );
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => batcher.call(i)));
    expect(results).toEqual(Array.from({ length: 40 }, (_, i) => i));
    expect(peak).toBe(maxConcurrentBatches);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(4);
    // Everything beyond the first slots waited, so full batches were the rule.
    expect(sizes.filter((s) => s === 4).length).toBe(10);
  });

  it('dispatches calls that waited out their deadline as soon as a batch settles', async () => {
    vi.useFakeTimers();
    const gates: ReturnType<typeof deferred<void>>[] = [];
    const batches: number[][] = [];
    const batcher = new Batcher(
      async (inputs: number[]) => {
        batches.push([...inputs]);
        const gate = deferred<void>();
        gates.push(gate);
        await gate.promise;
        return inputs;
      },
      { maxBatchSize: 4, maxDelayMs: 5 },
    );
    const first = batcher.call(1);
    await vi.advanceTimersByTimeAsync(5);
    expect(batches).toEqual([[1]]);
    const rest = [2, 3, 4, 5, 6].map((x) => batcher.call(x)); // one full batch and one partial wait
    await vi.advanceTimersByTimeAsync(20);
    expect(batches).toEqual([[1]]);
    expect(batcher.stats()).toMatchObject({ inFlight: 1, queued: 5 });
    expect(vi.getTimerCount()).toBe(0); // due calls need no timer: the settling batch pumps
    gates[0]!.resolve();
    await vi.advanceTimersByTimeAsync(0);
    expect(batches).toEqual([[1], [2, 3, 4, 5]]);
    gates[1]!.resolve();
    await vi.advanceTimersByTimeAsync(0);
    expect(batches).toEqual([[1], [2, 3, 4, 5], [6]]);
    gates[2]!.resolve();
    await expect(Promise.all([first, ...rest])).resolves.toEqual([1, 2, 3, 4, 5, 6]);
  });
});

describe('Batcher close', () => {
  it('dispatches waiting calls, resolves when all settle, then rejects new calls', async () => {
    const { fn, batches } = doubler();
    const batcher = new Batcher(fn, { maxBatchSize: 4, maxDelayMs: 60_000, maxQueue: 16 });
    const calls = [1, 2, 3, 4, 5, 6].map((x) => batcher.call(x));
    expect(batcher.stats().inFlight).toBe(4);
    expect(batcher.stats().queued).toBe(2);
    const settledBefore: number[] = [];
    for (const c of calls) void c.then((v) => settledBefore.push(v));
    await batcher.close();
    expect(batcher.closed).toBe(true);
    expect(settledBefore).toEqual([2, 4, 6, 8, 10, 12]);
    expect(batches).toEqual([
      [1, 2, 3, 4],
      [5, 6],
    ]);
    await expect(batcher.call(7)).rejects.toBeInstanceOf(DisposedError);
    await expect(batcher.call(7)).rejects.toMatchObject({ code: 'EBRIX_DISPOSED', message: 'The batcher has been disposed' });
    await batcher.close(); // idempotent
    expect(batcher.stats().calls).toBe(6);
  });

  it('resolves close even when the last batch fails', async () => {
    const batcher = new Batcher(
      async (): Promise<number[]> => {
        await sleep(2);
        throw new Error('down');
      },
      { maxBatchSize: 8, maxDelayMs: 1_000 },
    );
    const call = batcher.call(1);
    const closed = batcher.close();
    await expect(call).rejects.toThrow('down');
    await expect(closed).resolves.toBeUndefined();
  });

  it('supports await using', async () => {
    const { fn } = doubler();
    let pending: Promise<number>;
    {
      await using batcher = new Batcher(fn, { maxBatchSize: 8, maxDelayMs: 1_000 });
      pending = batcher.call(5);
    }
    await expect(pending).resolves.toBe(10);
  });

  it('leaves nothing that keeps the process alive once closed, yet the deadline fires while awaited', () => {
    // A child process exits on its own only when no timer is left behind; it must still get
    // its result though nothing but the batcher's own timer keeps its event loop running.
    const script = `
      import { Batcher } from './lib/serve/batcher.ts';
      const b = new Batcher((xs) => xs.map((x) => x + 1), { maxBatchSize: 64, maxDelayMs: 20 });
      const r = await b.call(1);
      b.call(2);
      await b.close();
      console.log('result', r);
    `;
    const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: new URL('..', import.meta.url),
      encoding: 'utf8',
      timeout: 10_000,
    });
    expect(child.stderr).toBe('');
    expect(child.stdout.trim()).toBe('result 2');
    expect(child.status).toBe(0);
  });
});

describe('Batcher stats', () => {
  it('keeps a histogram and sane queue-wait percentiles', async () => {
    vi.useFakeTimers();
    const { fn } = doubler();
    const batcher = new Batcher(fn, { maxBatchSize: 3, maxDelayMs: 8, maxQueue: 30 });
    const calls: Promise<number>[] = [];
    // Three full batches at once, then a pair that waits out the deadline.
    for (let i = 0; i < 9; i++) calls.push(batcher.call(i));
    await vi.advanceTimersByTimeAsync(0);
    calls.push(batcher.call(9));
    await vi.advanceTimersByTimeAsync(2);
    calls.push(batcher.call(10));
    await vi.advanceTimersByTimeAsync(10);
    await Promise.all(calls);
    const stats = batcher.stats();
    expect(stats).toMatchObject({
      calls: 11,
      batches: 4,
      rejectedOverloaded: 0,
      failed: 0,
      inFlight: 0,
      queued: 0,
      batchSizes: { 2: 1, 3: 3 },
    });
    const { p50, p99, max, mean } = stats.queueWaitMs;
    expect(p50).toBe(0);
    expect(p99).toBeCloseTo(8, 5);
    expect(max).toBeCloseTo(8, 5);
    expect(mean).toBeCloseTo((8 + 6) / 11, 5);
    expect(p50).toBeLessThanOrEqual(p99);
  });

  it('reports zeros before any dispatch', () => {
    const batcher = new Batcher((xs: number[]) => xs, { maxBatchSize: 2, maxDelayMs: 1 });
    expect(batcher.stats()).toEqual({
      calls: 0,
      batches: 0,
      rejectedOverloaded: 0,
      failed: 0,
      inFlight: 0,
      queued: 0,
      batchSizes: {},
      queueWaitMs: { p50: 0, p99: 0, max: 0, mean: 0 },
    });
  });

  it('bounds the queue-wait window to recent calls', async () => {
    vi.useFakeTimers();
    const batcher = new Batcher((xs: number[]) => xs, { maxBatchSize: 512, maxDelayMs: 1_000, maxQueue: 5000 });
    const slow = batcher.call(-1);
    await vi.advanceTimersByTimeAsync(50);
    batcher.flush();
    await slow;
    expect(batcher.stats().queueWaitMs.max).toBe(50);
    // 4096 calls that fill their batches at once push the slow one out of the window.
    for (let round = 0; round < 8; round++) {
      await Promise.all(Array.from({ length: 512 }, (_, i) => batcher.call(i)));
    }
    expect(batcher.stats().calls).toBe(1 + 8 * 512);
    expect(batcher.stats().queueWaitMs).toEqual({ p50: 0, p99: 0, max: 0, mean: 0 });
  });
});
