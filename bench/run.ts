// ebrix bench CLI.
//
//   npm run bench -- [options]          (same as: npx tsx bench/run.ts [options])
//
//   --quick                 small run for a laptop or CI (about 1 min per suite on 2 cores): MNIST,
//                           synthetic 100000x128 (ivfpq: 50000x128), 30 latency samples, fewer
//                           plain-TS queries, short ceilings; models: 0.8 s load runs, 10,000
//                           corpus items; ivfpq: fewer sweep points and timed queries
//   --suite NAME[,NAME]     suites to run (default: all; available: flat, models, ivfpq, lifecycle, train, serve)
//   --synthetic LIST        synthetic clustered sets as <count>x<dim>, comma separated
//                           (default 1000000x128,200000x768; with --quick 100000x128 for flat and
//                           50000x128 for ivfpq; "none" for none)
//   --no-mnist              skip the MNIST dataset
//   --threads N             threads for ebrix and usearch (default: all hardware threads), and
//                           onnxruntime intra-op threads for the models suite (default: its own)
//   --queries N             batch size, and queries held out of each dataset (default 1000)
//   --plain-ts-queries N    queries the plain TS loop runs (default: sized by a flop budget)
//   --seed N                seed for data generation and the MNIST shuffle (default 42)
//   --out DIR               where JSON + Markdown go (default bench/results)
//   --help
//
// Every run measures the machine's ceilings (FMA peak and read bandwidth at 1 thread and all
// threads) before and after the suites and keeps the best of the two, then runs the peers (usearch exactSearch, a plain TS loop) on the same data in
// the same process, and writes bench-<timestamp>.{json,md,svg} plus latest.{json,md,svg}. Suite
// models builds a two-tower package in a temp dir and measures the query tower under concurrent
// load (per-call against micro-batched), corpus embedding and feature encoding (--quick: shorter
// runs, 10,000 items instead of 100,000). Suite ivfpq sweeps recall@10 against QPS for IvfPqIndex
// (8-bit and 4-bit codes) and the HNSW peers usearch (f32, i8) and hnswlib-node on the same data.
// Suite lifecycle measures filtered search, mapped opens and latency under a writer. Suite train
// trains the WordNet default model (5 epochs; --quick: 1) and its single-task baselines, and
// compares held-out recall with a BM25 baseline over the same text. Suite serve runs the main
// job's WordNet service on loopback (its model and indexes in ./models, trained and built there
// when missing; autocannon at 1, 16 and 64 connections: query tower → flat or HNSW index →
// hybrid re-ranker) against tower inference alone, over HTTP and in process (--quick: 2 s runs).

import { parseArgs } from 'node:util';
import { hardwareThreads } from '../lib/index.js';
import { parseSyntheticSpec } from './datasets.js';
import { bestCeilings, describeMachine, measureCeilings, type Ceiling } from './machine.js';
import { renderCeilingsConsole, renderConsole, renderMachineConsole, writeReport, type BenchReport } from './report.js';
import { attachCeilings, runFlatSuite, type DatasetPlan, type FlatSuiteOptions } from './suites/flat.js';
import { runModelsSuite, type ModelsSuiteSettings } from './suites/models.js';
import type { IvfPqSuiteOptions } from './suites/ivfpq.js';

const SUITES = ['flat', 'models', 'ivfpq', 'lifecycle', 'train', 'serve'] as const;
type SuiteName = (typeof SUITES)[number];

const USAGE = `Usage: npm run bench -- [--quick] [--suite flat,models,ivfpq,lifecycle,train,serve] [--synthetic 1000000x128,200000x768] [--no-mnist]
                       [--threads N] [--queries N] [--plain-ts-queries N] [--seed N] [--out bench/results]`;

interface CliOptions {
  quick: boolean;
  suites: SuiteName[];
  synthetic: Array<{ n: number; dim: number }>;
  /** The sets of suite ivfpq: --synthetic when given, else its own default. */
  ivfpqSynthetic: Array<{ n: number; dim: number }>;
  mnist: boolean;
  threads: number;
  /** --threads as given, for onnxruntime; undefined leaves onnxruntime its own default. */
  modelThreads: number | undefined;
  queries: number;
  plainTsQueries: number | undefined;
  seed: number;
  outDir: string;
}

function positiveInteger(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const parsed = Number(value);
  if (!Number.isSafeInteger(parsed) || parsed < 1) {
    throw new Error(`Expected a positive integer for ${flag} but received ${value}`);
  }
  return parsed;
}

function parseCli(argv: string[]): CliOptions | null {
  const { values } = parseArgs({
    args: argv.filter((arg, i) => !(i === 0 && arg === '--')),
    options: {
      quick: { type: 'boolean', default: false },
      suite: { type: 'string', multiple: true },
      synthetic: { type: 'string' },
      'no-mnist': { type: 'boolean', default: false },
      threads: { type: 'string' },
      queries: { type: 'string' },
      'plain-ts-queries': { type: 'string' },
      seed: { type: 'string' },
      out: { type: 'string', default: 'bench/results' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return null;

  const quick = values.quick ?? false;
  const suiteNames = (values.suite ?? [...SUITES]).flatMap((s) => s.split(',')).map((s) => s.trim());
  for (const name of suiteNames) {
    if (!(SUITES as readonly string[]).includes(name)) {
      throw new Error(`Expected one of ${SUITES.join(', ')} for --suite but received ${name}`);
    }
  }
  const syntheticSpec = values.synthetic ?? (quick ? '100000x128' : '1000000x128,200000x768');
  const ivfpqSpec = values.synthetic ?? (quick ? '50000x128' : '1000000x128,200000x768');
  const threads = positiveInteger(values.threads, '--threads');
  return {
    quick,
    suites: [...new Set(suiteNames)] as SuiteName[],
    synthetic: syntheticSpec === 'none' ? [] : parseSyntheticSpec(syntheticSpec),
    ivfpqSynthetic: ivfpqSpec === 'none' ? [] : parseSyntheticSpec(ivfpqSpec),
    mnist: !(values['no-mnist'] ?? false),
    threads: threads ?? hardwareThreads(),
    modelThreads: threads,
    queries: positiveInteger(values.queries, '--queries') ?? 1000,
    plainTsQueries: positiveInteger(values['plain-ts-queries'], '--plain-ts-queries'),
    seed: positiveInteger(values.seed, '--seed') ?? 42,
    outDir: values.out ?? 'bench/results',
  };
}

function progress(startedAt: number): (line: string) => void {
  return (line) => {
    const elapsed = ((performance.now() - startedAt) / 1000).toFixed(1).padStart(6);
    process.stderr.write(`  [${elapsed} s] ${line}\n`);
  };
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  let options: CliOptions | null;
  try {
    options = parseCli(argv);
  } catch (error) {
    console.error(`${error instanceof Error ? error.message : String(error)}\n${USAGE}`);
    process.exitCode = 2;
    return;
  }
  if (!options) {
    console.log(USAGE);
    return;
  }
  const started = performance.now();
  const startedAt = new Date().toISOString();
  const log = progress(started);

  const machine = describeMachine();
  console.log(`ebrix bench${options.quick ? ' (quick)' : ''}`);
  console.log(renderMachineConsole({ machine, startedAt }));
  console.log('');

  const ceilingOptions = {
    threadCounts: [1, machine.hardwareThreads, options.threads],
    fmaDurationMs: options.quick ? 200 : 1000,
    readBytes: (options.quick ? 256 : 1024) * 2 ** 20,
  };
  log('measuring ceilings (FMA peak, read bandwidth)');
  const ceilingsBefore: Ceiling[] = await measureCeilings(ceilingOptions);
  console.log(renderCeilingsConsole(ceilingsBefore));
  console.log('');

  const suites: BenchReport['suites'] = {};
  if (options.suites.includes('flat')) {
    const datasets: DatasetPlan[] = [
      ...(options.mnist ? [{ kind: 'mnist' } as const] : []),
      ...options.synthetic.map(({ n, dim }) => ({ kind: 'clustered', n, dim }) as const),
    ];
    const flatOptions: FlatSuiteOptions = {
      datasets,
      queries: options.queries,
      seed: options.seed,
      k: 10,
      threads: options.threads,
      batch: options.quick ? { minSeconds: 0.3, maxRuns: 3 } : { minSeconds: 2, maxRuns: 5 },
      latency: options.quick
        ? { maxSamples: 30, minSamples: 30, maxSeconds: Number.POSITIVE_INFINITY }
        : { maxSamples: 200, minSamples: 200, maxSeconds: Number.POSITIVE_INFINITY },
      peerLatency: options.quick
        ? { maxSamples: 30, minSamples: 5, maxSeconds: 1 }
        : { maxSamples: 200, minSamples: 10, maxSeconds: 5 },
      plainTsQueries: options.plainTsQueries,
      plainTsFlopBudget: options.quick ? 0.6e9 : 3e9,
      log,
    };
    suites.flat = await runFlatSuite(flatOptions);
  }
  if (options.suites.includes('models')) {
    const modelsSettings: ModelsSuiteSettings = {
      seed: options.seed,
      modelThreads: options.modelThreads,
      indexThreads: options.threads,
      callers: [1, 16, 64],
      load: options.quick
        ? { warmupSeconds: 0.15, seconds: 0.8, minRequests: 100 }
        : { warmupSeconds: 0.5, seconds: 4, minRequests: 200 },
      batching: { maxBatchSize: 64, maxDelayMs: 2 },
      corpusItems: options.quick ? 10_000 : 100_000,
      corpusBatchSize: 256,
      repeat: options.quick ? { minSeconds: 0.25, maxRuns: 10 } : { minSeconds: 1, maxRuns: 30 },
      encodeRecords: options.quick
        ? [
            { batch: 1, records: 512, forwardRecords: 16 },
            { batch: 64, records: 2048, forwardRecords: 64 },
          ]
        : [
            { batch: 1, records: 2048, forwardRecords: 64 },
            { batch: 64, records: 4096, forwardRecords: 256 },
          ],
      log,
    };
    suites.models = await runModelsSuite(modelsSettings);
  }
  if (options.suites.includes('ivfpq')) {
    // Loaded only when asked for: it needs IvfPqIndex and the hnswlib-node addon.
    const { runIvfPqSuite, NPROBES, EFS, REFINE_FACTORS } = await import('./suites/ivfpq.js');
    const ivfpqOptions: IvfPqSuiteOptions = {
      datasets: [
        ...(options.mnist ? [{ kind: 'mnist' } as const] : []),
        ...options.ivfpqSynthetic.map(({ n, dim }) => ({ kind: 'clustered', n, dim }) as const),
      ],
      queries: options.queries,
      seed: options.seed,
      k: 10,
      threads: options.threads,
      nprobes: options.quick ? [1, 2, 4, 8, 16, 32] : NPROBES,
      efs: options.quick ? [10, 16, 32, 64, 128, 256] : EFS,
      refineFactors: REFINE_FACTORS,
      trainPointsPerList: options.quick ? 8 : 32,
      trainIterations: options.quick ? 4 : 10,
      graph: options.quick ? { connectivity: 16, expansionAdd: 64 } : { connectivity: 16, expansionAdd: 100 },
      sweep: options.quick
        ? {
            singleQueries: 200,
            singleMinQueries: 30,
            singleMaxSeconds: 0.2,
            batchQueries: 250,
            batch: { minSeconds: 0, maxRuns: 1 },
            warmupQueries: 8,
          }
        : {
            singleQueries: 1000,
            singleMinQueries: 100,
            singleMaxSeconds: 2,
            batchQueries: options.queries,
            batch: { minSeconds: 1, maxRuns: 3 },
            warmupQueries: 16,
          },
      scoringQueries: options.quick ? 5 : 20,
      scoringNlist: 8,
      trainTarget: options.quick ? null : { n: 1_000_000, dim: 128, nlist: 1024, m: 32 },
      log,
    };
    suites.ivfpq = await runIvfPqSuite(ivfpqOptions);
  }

  if (options.suites.includes('lifecycle')) {
    const { runLifecycleSuite } = await import('./suites/lifecycle.js');
    suites.lifecycle = await runLifecycleSuite({
      n: options.quick ? 200_000 : 1_000_000,
      dim: 128,
      seed: options.seed,
      openRepeats: options.quick ? 5 : 9,
      latencySeconds: options.quick ? 2 : 6,
      writerRate: 1000,
      filterQueries: options.quick ? 20 : 100,
      ivfpqN: options.quick ? 100_000 : 1_000_000,
      log,
    });
  }

  if (options.suites.includes('train')) {
    // Loaded only when asked for: it reads WordNet and needs minisearch.
    const { runTrainSuite } = await import('./suites/train.js');
    const { WORDNET_BATCH_SIZE, WORDNET_EPOCHS } = await import('../lib/train/wordnet-model.js');
    suites.train = await runTrainSuite({
      epochs: options.quick ? 1 : WORDNET_EPOCHS,
      batchSize: WORDNET_BATCH_SIZE,
      extraNegatives: 512,
      threads: options.threads,
      seed: options.seed,
      modelSeeds: options.quick ? 1 : 3,
      singleTask: true,
      log,
    });
  }

  if (options.suites.includes('serve')) {
    // Loaded only when asked for: it needs autocannon and Fastify.
    const { runServeSuite } = await import('./suites/serve.js');
    suites.serve = await runServeSuite({
      seed: options.seed,
      modelsDir: 'models',
      concurrency: [1, 16, 64],
      seconds: options.quick ? 2 : 8,
      warmupSeconds: options.quick ? 0.5 : 2,
      candidates: 100,
      k: 10,
      log,
    });
  }

  log('measuring ceilings again (the best of both rounds is the reference)');
  const ceilingsAfter = await measureCeilings(ceilingOptions);
  const ceilings = bestCeilings(ceilingsBefore, ceilingsAfter);
  if (suites.flat) attachCeilings(suites.flat, ceilings);

  const report: BenchReport = {
    tool: 'ebrix-bench',
    formatVersion: 1,
    startedAt,
    finishedAt: new Date().toISOString(),
    durationSeconds: (performance.now() - started) / 1000,
    argv,
    options: { ...options },
    machine,
    ceilings,
    ceilingRounds: { before: ceilingsBefore, after: ceilingsAfter },
    suites,
  };
  console.log('');
  console.log(renderConsole(report));
  const paths = await writeReport(report, options.outDir);
  console.log(`Wrote ${paths.join(', ')}`);
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
  process.exitCode = 1;
});
