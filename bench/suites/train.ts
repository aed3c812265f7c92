// Suite "train": the WordNet default model (lib/train/wordnet-model.ts), trained natively and
// measured on the held-out synsets against two baselines in the same run:
//
//   1. the multi-task model (gloss, usage, synonym sharing one item tower): total time,
//      examples/s and examples/s per thread, recall@10 and MRR per task (exact search over
//      every synset with the trainer's native forward pass; the exported ONNX towers give the
//      same vectors to 1e-4, see test/train.test.ts);
//   2. BM25 (MiniSearch) over the same item text the item tower reads (lemmas, hypernym lemmas,
//      lexicographer file), with the same query text;
//   3. one single-task model per task, same spec and epochs, trained on that task's queries only.
//
// Every model trains at most `epochs` epochs and keeps the epoch that scored best on its own
// tasks' validation queries (wordnetValidation, as `ebrix train` does), so no model is judged
// at an epoch count that suits another: the multi-task model peaks earlier than the single-task
// ones. The time includes those validations.
//
// With `modelSeeds` > 1 every model is trained that many times (model seeds seed, seed + 1, …;
// the split stays that of `seed`) and the comparison is of the means: one seed's recall moves
// by as much as 0.018 with the initialisation alone (gloss, validation split: single-task 0.295 /
// 0.283 / 0.301, multi-task 0.287 / 0.289 / 0.284 for model seeds 42 / 43 / 44), three
// times the 2% target.

import { hardwareThreads } from '../../lib/index.js';
import { evaluate, type RetrievalMetrics } from '../../lib/train/evaluate.js';
import { Trainer } from '../../lib/train/trainer.js';
import { loadWordNet, wordnetQueries, type WordNetTask } from '../../lib/train/wordnet.js';
import {
  WORDNET_TASKS,
  WORDNET_TRAINER_OPTIONS,
  wordnetExamples,
  wordnetItemRecord,
  wordnetItemText,
  wordnetModelSpec,
  wordnetPairs,
  wordnetValidation,
} from '../../lib/train/wordnet-model.js';
import { bm25Evaluate } from '../baselines/bm25.js';

export interface TrainSuiteOptions {
  epochs: number;
  batchSize: number;
  extraNegatives: number;
  threads: number;
  seed: number;
  /** Models trained per configuration, with model seeds seed, seed + 1, … (default 1). */
  modelSeeds?: number;
  /** Train the single-task baselines too. */
  singleTask: boolean;
  log: (line: string) => void;
}

export interface TrainedModelResult {
  tasks: WordNetTask[];
  /** The model seed (initialisation and batch order). */
  modelSeed: number;
  trainExamples: number;
  steps: number;
  /** The epoch whose parameters were kept (best on the validation queries). */
  keptEpoch?: number;
  /** Training time, the validations after each epoch included. */
  seconds: number;
  examplesPerSecond: number;
  examplesPerSecondPerThread: number;
  perTask: Record<string, RetrievalMetrics>;
}

export interface TrainSuiteResult {
  synsets: number;
  threads: number;
  epochs: number;
  testQueries: Record<string, number>;
  loadSeconds: number;
  /** The first model seed's multi-task model (its time is the training-time figure). */
  multiTask: TrainedModelResult;
  bm25: Record<string, RetrievalMetrics>;
  /** The first model seed's single-task models. */
  singleTask: Record<string, TrainedModelResult>;
  /** Every model seed's models, in seed order (the first equals multiTask / singleTask). */
  seeds: Array<{ modelSeed: number; multiTask: TrainedModelResult; singleTask: Record<string, TrainedModelResult> }>;
}

export async function runTrainSuite(options: TrainSuiteOptions): Promise<TrainSuiteResult> {
  const log = options.log;
  const loadStarted = performance.now();
  const items = await loadWordNet();
  const split = wordnetQueries(items, { seed: options.seed });
  const records = items.map(wordnetItemRecord);
  const loadSeconds = (performance.now() - loadStarted) / 1000;
  log(`train: WordNet ${items.length} synsets, ${split.train.length} training and ${split.test.length} test queries (${loadSeconds.toFixed(1)} s)`);

  const train = async (tasks: readonly WordNetTask[], modelSeed: number): Promise<TrainedModelResult> => {
    const queries = split.train.filter((q) => tasks.includes(q.task));
    const test = split.test.filter((q) => tasks.includes(q.task));
    const spec = wordnetModelSpec(items, queries, { tasks, seed: modelSeed });
    using trainer = new Trainer(spec, { ...WORDNET_TRAINER_OPTIONS, threads: options.threads });
    const fit = await trainer.fit(wordnetExamples(items, queries, records), {
      epochs: options.epochs,
      batchSize: options.batchSize,
      extraNegatives: options.extraNegatives,
      corpus: records,
      corpusKey: (r) => r.key as string,
      // Each model keeps its best epoch on its own tasks' validation queries, as `ebrix train` does.
      validation: wordnetValidation(items, split.valid, records, tasks),
      progressBar: false,
      progressEvery: 50,
      onProgress: (p) => {
        if (p.step % 200 === 0) log(`train [${tasks.join('+')}] step ${p.step}, ${Math.round(p.examplesPerSecond)} examples/s, loss ${p.loss.toFixed(3)}`);
      },
    });
    const result = await evaluate(trainer, wordnetPairs(test), { corpus: records, k: 10 });
    const keptStep = fit.bestValidation?.step ?? fit.steps;
    const keptEpoch = Math.round((keptStep * fit.epochs) / fit.steps);
    log(`train [${tasks.join('+')}] seed ${modelSeed}: ${fit.steps} steps in ${fit.seconds.toFixed(1)} s, kept epoch ${keptEpoch}, recall@10 ${result.recallAt[10]!.toFixed(3)}`);
    return {
      tasks: [...tasks],
      modelSeed,
      trainExamples: queries.length,
      steps: fit.steps,
      keptEpoch,
      seconds: fit.seconds,
      examplesPerSecond: fit.examplesPerSecond,
      examplesPerSecondPerThread: fit.examplesPerSecond / options.threads,
      perTask: result.perTask,
    };
  };

  const seedCount = options.modelSeeds ?? 1;
  if (!Number.isInteger(seedCount) || seedCount < 1) throw new Error(`modelSeeds must be a positive integer, not ${seedCount}`);
  const seeds: TrainSuiteResult['seeds'] = [];
  for (let i = 0; i < seedCount; i++) {
    const modelSeed = options.seed + i;
    const multiTask = await train(WORDNET_TASKS, modelSeed);
    const singleTask: Record<string, TrainedModelResult> = {};
    if (options.singleTask) for (const task of WORDNET_TASKS) singleTask[task] = await train([task], modelSeed);
    seeds.push({ modelSeed, multiTask, singleTask });
  }
  const itemText = records.map((r, id) => ({ id, text: wordnetItemText(r) }));
  const bm25: Record<string, RetrievalMetrics> = {};
  for (const task of WORDNET_TASKS) {
    const test = split.test.filter((q) => q.task === task);
    bm25[task] = bm25Evaluate(itemText, test, { ks: [1, 10, 100] });
    log(`train: BM25 ${task} recall@10 ${bm25[task]!.recallAt[10]!.toFixed(3)}`);
  }
  return {
    synsets: items.length,
    threads: options.threads,
    epochs: options.epochs,
    testQueries: Object.fromEntries(WORDNET_TASKS.map((t) => [t, split.test.filter((q) => q.task === t).length])),
    loadSeconds,
    multiTask: seeds[0]!.multiTask,
    bm25,
    singleTask: seeds[0]!.singleTask,
    seeds,
  };
}

export function defaultTrainThreads(): number {
  return hardwareThreads();
}

const f3 = (x: number | undefined): string => (x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(3));

/** Mean of a metric over the seeds' models (undefined when a seed lacks the model). */
function meanOver(values: Array<number | undefined>): number | undefined {
  if (values.length === 0 || values.some((v) => v === undefined)) return undefined;
  return (values as number[]).reduce((a, b) => a + b, 0) / values.length;
}

export function trainLines(r: TrainSuiteResult): string[] {
  const m = r.multiTask;
  const seeds = r.seeds ?? [{ modelSeed: m.modelSeed, multiTask: m, singleTask: r.singleTask }];
  const several = seeds.length > 1;
  const lines = [
    `WordNet 3.1: ${r.synsets.toLocaleString('en-US')} synsets; held-out test queries ${Object.entries(r.testQueries).map(([t, n]) => `${t} ${n}`).join(', ')}`,
    `multi-task model: ${m.trainExamples.toLocaleString('en-US')} training queries × ${r.epochs} epochs in ${m.seconds.toFixed(1)} s on ${r.threads} threads, ` +
      `validation after each epoch included ` +
      `(${Math.round(m.examplesPerSecond).toLocaleString('en-US')} examples/s, ${Math.round(m.examplesPerSecondPerThread).toLocaleString('en-US')} per thread)`,
    `kept epoch (best on validation) by seed: ${seeds
      .map((s) => `seed ${s.modelSeed} multi ${s.multiTask.keptEpoch ?? '–'}, ${WORDNET_TASKS.map((t) => `${t} ${s.singleTask[t]?.keptEpoch ?? '–'}`).join(' ')}`)
      .join('; ')}`,
    ...(several
      ? [`models trained with ${seeds.length} model seeds (${seeds.map((s) => s.modelSeed).join(', ')}; one split): model and single-task columns are means over them`]
      : []),
    '| task | model recall@10 | model MRR | BM25 recall@10 | BM25 MRR | model / BM25 (recall@10) | single-task recall@10 | single-task MRR | multi / single (recall@10) |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  const ratio = (a: number | undefined, c: number | undefined): string => (a !== undefined && c ? `${(a / c).toFixed(2)}×` : '–');
  for (const task of WORDNET_TASKS) {
    const of = (x: RetrievalMetrics | undefined, f: (x: RetrievalMetrics) => number | undefined) => (x ? f(x) : undefined);
    const mt = (f: (x: RetrievalMetrics) => number | undefined) => meanOver(seeds.map((s) => of(s.multiTask.perTask[task], f)));
    const st = (f: (x: RetrievalMetrics) => number | undefined) => meanOver(seeds.map((s) => of(s.singleTask[task]?.perTask[task], f)));
    const b = r.bm25[task];
    const mRecall = mt((x) => x.recallAt[10]);
    const sRecall = st((x) => x.recallAt[10]);
    lines.push(
      `| ${task} | ${f3(mRecall)} | ${f3(mt((x) => x.mrr))} | ${f3(b?.recallAt[10])} | ${f3(b?.mrr)} | ${ratio(mRecall, b?.recallAt[10])} | ` +
        `${f3(sRecall)} | ${f3(st((x) => x.mrr))} | ${ratio(mRecall, sRecall)} |`,
    );
  }
  if (several) {
    for (const task of WORDNET_TASKS) {
      const per = seeds.map((s) => {
        const a = s.multiTask.perTask[task]?.recallAt[10];
        const c = s.singleTask[task]?.perTask[task]?.recallAt[10];
        return `seed ${s.modelSeed} ${f3(a)} / ${f3(c)} (${ratio(a, c)})`;
      });
      lines.push(`${task} recall@10 multi / single by seed: ${per.join('; ')}`);
    }
  }
  for (const [task, s] of Object.entries(r.singleTask)) {
    lines.push(`single-task ${task}: ${s.trainExamples.toLocaleString('en-US')} queries, ${s.seconds.toFixed(1)} s`);
  }
  return lines;
}
