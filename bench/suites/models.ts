// Suite "models": the serving-time model stack on a realistic two-tower package built by the
// bench itself (a seeded, untrained tower: inference cost does not depend on the weights).
//
//   1. query tower under load: 1 / 16 / 64 concurrent callers, each awaiting one request at a
//      time, through per-call `embedQueries([record])` and through the micro-batched
//      `embedQuery(record)`; the per-call path is the peer the batcher has to beat;
//   2. corpus embedding: `embedCorpus` into a FlatIndex, beside raw `embedItems` batches;
//   3. feature encoding: `FeatureEncoder.encode` per record against the tower inference it
//      feeds, with the plain TypeScript forward pass (`towerForward`) as the peer of onnxruntime.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

import { FlatIndex } from '../../lib/index.js';
import { initTower, type TowerShape } from '../../lib/model/compose.js';
import { FeatureEncoder, fitDense, type FeatureSpec } from '../../lib/model/features.js';
import { buildTowerModel, towerForward, type TowerDefinition } from '../../lib/model/onnx/tower.js';
import { writeModelPackage } from '../../lib/model/package.js';
import { TwoTowerModel } from '../../lib/model/two-tower.js';
import { embedCorpus } from '../../lib/serve/embed-corpus.js';
import { CATEGORY_COUNT, REGIONS, RecordGenerator, makeVocabulary, type ItemRecord, type QueryRecord } from '../records.js';
import { median, nowMs, percentile, repeatTimed, timed, type RepeatPolicy } from '../timing.js';

export const QUERY_MODES = ['per-call', 'micro-batched'] as const;
export type QueryMode = (typeof QUERY_MODES)[number];

export interface ModelsSuiteSettings {
  seed: number;
  /** onnxruntime intra-op threads per session; undefined leaves onnxruntime's default. */
  modelThreads: number | undefined;
  /** Native threads of the FlatIndex that embedCorpus fills. */
  indexThreads: number;
  /** Concurrent callers per load run, e.g. [1, 16, 64]. */
  callers: number[];
  load: {
    /** Untimed run at the same concurrency before each timed one. */
    warmupSeconds: number;
    /** Callers stop issuing new requests after this long... */
    seconds: number;
    /** ...unless fewer requests than this have completed (p99 needs samples). */
    minRequests: number;
  };
  batching: { maxBatchSize: number; maxDelayMs: number };
  /** Items embedCorpus embeds; the raw embedItems runs embed the same items in the same batches. */
  corpusItems: number;
  corpusBatchSize: number;
  /** Repetition of the encode / inference / raw embedItems runs (median of the runs). */
  repeat: RepeatPolicy;
  /** Records per encode and embedQueries run, per batch size. */
  encodeRecords: { batch: number; records: number; forwardRecords: number }[];
  log: (line: string) => void;
}

export interface ModelDescription {
  description: string;
  dim: number;
  queryFeatures: FeatureSpec[];
  itemFeatures: FeatureSpec[];
  embeddingDim: number;
  hidden: number[];
  layerNorm: boolean;
  normalize: boolean;
  /** Parameters (tables, layers, heads) per tower. */
  queryParameters: number;
  itemParameters: number;
  queryOnnxBytes: number;
  itemOnnxBytes: number;
  vocabularyWords: number;
  zipfExponent: number;
  /** initTower + buildTowerModel + writeModelPackage, both towers. */
  buildSeconds: number;
  /** TwoTowerModel.load: checksums and two onnxruntime sessions. */
  loadSeconds: number;
  /** 'onnxruntime default' or the --threads value passed to TwoTowerModel.load. */
  threads: number | 'onnxruntime default';
}

export interface QueryLoadResult {
  mode: QueryMode;
  callers: number;
  requests: number;
  seconds: number;
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Longest event-loop stall seen during the run (perf_hooks monitorEventLoopDelay). */
  eventLoopMaxMs: number;
  /** Micro-batched only (from batchingStats over the timed run): calls / batches. */
  meanBatchSize: number | null;
  batches: number | null;
  /** Micro-batched only: this row's requests/s over per-call's at the same concurrency. */
  throughputVsPerCall: number | null;
}

export interface TailCheck {
  callers: number;
  batchedP99Ms: number;
  perCallSingleP50Ms: number;
  maxDelayMs: number;
  /** 2 × perCallSingleP50Ms + maxDelayMs. */
  boundMs: number;
  pass: boolean;
}

export interface CorpusResult {
  items: number;
  batchSize: number;
  /** Generating the item records (not part of any timing). */
  generateSeconds: number;
  seconds: number;
  itemsPerSecond: number;
  eventLoopMaxMs: number;
  indexSize: number;
  raw: { items: number; runs: number; seconds: number; itemsPerSecond: number };
  /** embedCorpus items/s over raw embedItems items/s. */
  corpusVsRaw: number;
}

export interface EncodingResult {
  batch: number;
  records: number;
  encodeUsPerRecord: number;
  /** model.embedQueries(batch): encode + onnxruntime session. */
  embedUsPerRecord: number;
  /** embedUsPerRecord − encodeUsPerRecord: the session's share. */
  inferenceUsPerRecord: number;
  /** encode / inference (target ≤ maxEncodeFraction). */
  encodeFraction: number;
  pass: boolean;
  /** Plain TypeScript forward pass (towerForward) on the encoded batch, µs per record. */
  plainTsUsPerRecord: number;
  plainTsRecords: number;
  /** plainTsUsPerRecord / inferenceUsPerRecord. */
  onnxSpeedupVsPlainTs: number;
}

export interface ModelsSuiteResult {
  model: ModelDescription;
  batching: { maxBatchSize: number; maxDelayMs: number };
  load: QueryLoadResult[];
  tailCheck: TailCheck | null;
  corpus: CorpusResult;
  encoding: EncodingResult[];
  maxEncodeFraction: number;
}

export const MAX_ENCODE_FRACTION = 0.1;
export const HASH_BUCKETS = 100_000;
export const EMBEDDING_DIM = 64;
export const HIDDEN = [256, 128];
export const OUTPUT_DIM = 64;
export const VOCABULARY_WORDS = 5000;
const QUERY_POOL = 4096;

export const QUERY_FEATURES: FeatureSpec[] = [
  { kind: 'text', name: 'query', field: 'text', maxLength: 32, ngrams: 2, buckets: HASH_BUCKETS },
  { kind: 'categorical', name: 'region', field: 'region', vocabulary: REGIONS },
];

export function itemFeatures(sample: readonly ItemRecord[]): FeatureSpec[] {
  return [
    { kind: 'text', name: 'title', field: 'title', maxLength: 32, ngrams: 2, buckets: HASH_BUCKETS },
    { kind: 'categorical', name: 'category', field: 'category', buckets: CATEGORY_COUNT * 2 },
    fitDense('numbers', ['price', 'rating'], sample),
  ];
}

function parameterCount(def: TowerDefinition): number {
  let count = 0;
  for (const table of Object.values(def.tables)) count += table.data.length;
  for (const layer of def.layers) count += layer.weight.length + layer.bias.length + (layer.layerNorm ? 2 * layer.outDim : 0);
  for (const head of def.heads) count += head.weight.length + head.bias.length;
  return count;
}

function chunks<T>(records: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < records.length; i += size) out.push(records.slice(i, i + size));
  return out;
}

/** Watches the event loop for stalls over one measured run. */
function loopMonitor(): { stop: () => number } {
  const histogram: IntervalHistogram = monitorEventLoopDelay({ resolution: 1 });
  histogram.enable();
  return {
    stop: () => {
      histogram.disable();
      return histogram.max / 1e6;
    },
  };
}

/**
 * `callers` loops, each awaiting one request at a time until `seconds` have passed and at
 * least `minRequests` have completed in all; returns every request's latency in seconds.
 */
async function driveCallers(
  call: (record: QueryRecord) => Promise<unknown>,
  records: readonly QueryRecord[],
  callers: number,
  seconds: number,
  minRequests: number,
): Promise<{ latencies: number[]; seconds: number }> {
  const latencies: number[] = [];
  let next = 0;
  const start = nowMs();
  const deadline = start + seconds * 1e3;
  const caller = async (): Promise<void> => {
    while (nowMs() < deadline || latencies.length < minRequests) {
      const record = records[next++ % records.length]!;
      const t0 = nowMs();
      await call(record);
      latencies.push((nowMs() - t0) / 1e3);
    }
  };
  await Promise.all(Array.from({ length: callers }, caller));
  return { latencies, seconds: (nowMs() - start) / 1e3 };
}

async function measureQueryLoad(
  model: TwoTowerModel,
  pool: readonly QueryRecord[],
  settings: ModelsSuiteSettings,
): Promise<QueryLoadResult[]> {
  const { load, log } = settings;
  const results: QueryLoadResult[] = [];
  const batcherCounts = (): { calls: number; batches: number } => {
    const stats = model.batchingStats()[''];
    return { calls: stats?.calls ?? 0, batches: stats?.batches ?? 0 };
  };
  for (const mode of QUERY_MODES) {
    const call =
      mode === 'per-call'
        ? (record: QueryRecord) => model.embedQueries([record])
        : (record: QueryRecord) => model.embedQuery(record);
    for (const callers of settings.callers) {
      log(`models: query tower, ${mode}, ${callers} caller${callers === 1 ? '' : 's'}`);
      await driveCallers(call, pool, callers, load.warmupSeconds, callers);
      const before = batcherCounts();
      const monitor = loopMonitor();
      const { latencies, seconds } = await driveCallers(call, pool, callers, load.seconds, load.minRequests);
      const eventLoopMaxMs = monitor.stop();
      const after = batcherCounts();
      const batches = after.batches - before.batches;
      results.push({
        mode,
        callers,
        requests: latencies.length,
        seconds,
        requestsPerSecond: latencies.length / seconds,
        p50Ms: percentile(latencies, 50) * 1e3,
        p99Ms: percentile(latencies, 99) * 1e3,
        maxMs: percentile(latencies, 100) * 1e3,
        eventLoopMaxMs,
        meanBatchSize: mode === 'micro-batched' && batches > 0 ? (after.calls - before.calls) / batches : null,
        batches: mode === 'micro-batched' ? batches : null,
        throughputVsPerCall: null,
      });
    }
  }
  for (const row of results) {
    if (row.mode === 'per-call') continue;
    const peer = results.find((r) => r.mode === 'per-call' && r.callers === row.callers);
    row.throughputVsPerCall = peer ? row.requestsPerSecond / peer.requestsPerSecond : null;
  }
  return results;
}

function tailCheckOf(load: readonly QueryLoadResult[], maxDelayMs: number): TailCheck | null {
  const single = load.find((r) => r.mode === 'per-call' && r.callers === 1);
  const busiest = load
    .filter((r) => r.mode === 'micro-batched')
    .reduce<QueryLoadResult | undefined>((best, r) => (best === undefined || r.callers > best.callers ? r : best), undefined);
  if (!single || !busiest) return null;
  const boundMs = 2 * single.p50Ms + maxDelayMs;
  return {
    callers: busiest.callers,
    batchedP99Ms: busiest.p99Ms,
    perCallSingleP50Ms: single.p50Ms,
    maxDelayMs,
    boundMs,
    pass: busiest.p99Ms <= boundMs,
  };
}

/**
 * Like repeatTimed for several functions, run in turn (a, b, a, b, …) so that load from
 * elsewhere on the machine lands on all of them alike: their ratio is what gets reported.
 */
async function alternateTimed(fns: ReadonlyArray<() => unknown>, policy: RepeatPolicy): Promise<number[][]> {
  const runs = fns.map((): number[] => []);
  let spent = 0;
  while (runs[0]!.length < policy.maxRuns && (runs[0]!.length === 0 || spent < policy.minSeconds)) {
    for (let i = 0; i < fns.length; i++) {
      const { seconds } = await timed(fns[i]!);
      runs[i]!.push(seconds);
      spent += seconds;
    }
  }
  return runs;
}

async function measureEncoding(
  model: TwoTowerModel,
  queryTower: TowerDefinition,
  pool: readonly QueryRecord[],
  settings: ModelsSuiteSettings,
): Promise<EncodingResult[]> {
  const encoder = new FeatureEncoder(model.manifest.towers.query.features);
  const results: EncodingResult[] = [];
  for (const { batch, records, forwardRecords } of settings.encodeRecords) {
    settings.log(`models: feature encoding and query inference at batch ${batch}`);
    const batches = chunks(pool.slice(0, Math.max(batch, records - (records % batch))), batch);
    const count = batches.length * batch;
    for (const b of batches) encoder.encode(b);
    await model.embedQueries(batches[0]!);
    const [encodeRuns, embedRuns] = await alternateTimed(
      [
        () => {
          for (const b of batches) encoder.encode(b);
        },
        async () => {
          for (const b of batches) await model.embedQueries(b);
        },
      ],
      settings.repeat,
    );
    const encodeUsPerRecord = (median(encodeRuns!) / count) * 1e6;
    const embedUsPerRecord = (median(embedRuns!) / count) * 1e6;
    const inferenceUsPerRecord = embedUsPerRecord - encodeUsPerRecord;
    const encodeFraction = encodeUsPerRecord / inferenceUsPerRecord;

    const forwardBatches = batches.slice(0, Math.max(1, Math.floor(forwardRecords / batch)));
    const forwardInputs = forwardBatches.map((b) => encoder.encode(b));
    towerForward(queryTower, forwardInputs[0]!);
    const plainRuns = await repeatTimed(() => {
      for (const inputs of forwardInputs) towerForward(queryTower, inputs);
    }, { minSeconds: settings.repeat.minSeconds / 2, maxRuns: settings.repeat.maxRuns });
    const plainTsRecords = forwardBatches.length * batch;
    const plainTsUsPerRecord = (median(plainRuns) / plainTsRecords) * 1e6;

    results.push({
      batch,
      records: count,
      encodeUsPerRecord,
      embedUsPerRecord,
      inferenceUsPerRecord,
      encodeFraction,
      pass: encodeFraction <= MAX_ENCODE_FRACTION,
      plainTsUsPerRecord,
      plainTsRecords,
      onnxSpeedupVsPlainTs: plainTsUsPerRecord / inferenceUsPerRecord,
    });
  }
  return results;
}

async function measureCorpus(model: TwoTowerModel, generator: RecordGenerator, settings: ModelsSuiteSettings): Promise<CorpusResult> {
  const { corpusItems: n, corpusBatchSize: batchSize, log } = settings;
  log(`models: generating ${n.toLocaleString('en-US')} item records`);
  const { value: items, seconds: generateSeconds } = await timed(() => generator.items(n));

  const rawBatches = chunks(items, batchSize);
  const rawItems = items.length;
  log(`models: raw embedItems, ${rawBatches.length} batches of ${batchSize}`);
  await model.embedItems(rawBatches[0]!);
  const rawRuns = await repeatTimed(async () => {
    for (const b of rawBatches) await model.embedItems(b);
  }, settings.repeat);
  const rawSeconds = median(rawRuns);

  log(`models: embedCorpus of ${n.toLocaleString('en-US')} items into a FlatIndex`);
  const index = new FlatIndex({ dim: model.dim, metric: 'ip', threads: settings.indexThreads });
  try {
    let nextReport = 0.25;
    const monitor = loopMonitor();
    const result = await embedCorpus({
      model,
      items,
      index,
      batchSize,
      total: n,
      progressBar: false,
      onProgress: ({ done, itemsPerSecond }) => {
        if (done / n < nextReport) return;
        nextReport += 0.25;
        log(`models: embedCorpus ${done.toLocaleString('en-US')} / ${n.toLocaleString('en-US')} (${Math.round(itemsPerSecond).toLocaleString('en-US')} items/s)`);
      },
    });
    const eventLoopMaxMs = monitor.stop();
    const rawItemsPerSecond = rawItems / rawSeconds;
    return {
      items: result.items,
      batchSize,
      generateSeconds,
      seconds: result.seconds,
      itemsPerSecond: result.itemsPerSecond,
      eventLoopMaxMs,
      indexSize: index.size,
      raw: { items: rawItems, runs: rawRuns.length, seconds: rawSeconds, itemsPerSecond: rawItemsPerSecond },
      corpusVsRaw: result.itemsPerSecond / rawItemsPerSecond,
    };
  } finally {
    index.dispose();
  }
}

export async function runModelsSuite(settings: ModelsSuiteSettings): Promise<ModelsSuiteResult> {
  const { log } = settings;
  const vocabulary = makeVocabulary(VOCABULARY_WORDS, settings.seed);
  const generator = new RecordGenerator(vocabulary, settings.seed);
  const pool = generator.queries(QUERY_POOL);
  const dir = await mkdtemp(join(tmpdir(), 'ebrix-bench-models-'));
  try {
    log('models: building the model package');
    const build = await timed(async () => {
      const shape = (name: string, features: FeatureSpec[], seed: number): TowerShape => ({
        name,
        features,
        embeddingDim: EMBEDDING_DIM,
        hidden: HIDDEN,
        outputDim: OUTPUT_DIM,
        layerNorm: true,
        normalize: true,
        seed,
      });
      // The dense statistics come from a sample drawn ahead of the corpus on the same stream,
      // as a trainer would fit them on its training data, not on the items it serves.
      const item = itemFeatures(generator.items(1000));
      const queryTower = initTower(shape('query', QUERY_FEATURES, settings.seed));
      const itemTower = initTower(shape('item', item, settings.seed + 1));
      const query = { features: QUERY_FEATURES, onnx: buildTowerModel(queryTower) };
      const itemFiles = { features: item, onnx: buildTowerModel(itemTower) };
      await writeModelPackage(dir, { name: 'bench-two-tower', dim: OUTPUT_DIM, metric: 'ip', query, item: itemFiles });
      return { queryTower, itemTower, item, queryBytes: query.onnx.byteLength, itemBytes: itemFiles.onnx.byteLength };
    });
    const { queryTower, itemTower, item } = build.value;

    log(`models: loading (onnxruntime threads: ${settings.modelThreads ?? 'default'})`);
    const loaded = await timed(() =>
      TwoTowerModel.load(dir, {
        ...(settings.modelThreads !== undefined ? { threads: settings.modelThreads } : {}),
        batching: { ...settings.batching },
      }),
    );
    const model = loaded.value;
    try {
      const load = await measureQueryLoad(model, pool, settings);
      const encoding = await measureEncoding(model, queryTower, pool, settings);
      const corpus = await measureCorpus(model, generator, settings);
      return {
        model: {
          description:
            `seeded untrained two-tower package: query = text(${HASH_BUCKETS.toLocaleString('en-US')} hashed buckets, maxLength 32, ngrams 2) + region(${REGIONS.length} values); ` +
            `item = title text(same) + category(${(CATEGORY_COUNT * 2).toLocaleString('en-US')} hashed buckets) + dense(price, rating); ` +
            `embedding ${EMBEDDING_DIM}, MLP ${HIDDEN.join('→')}, LayerNorm, output ${OUTPUT_DIM}, L2-normalised`,
          dim: model.dim,
          queryFeatures: QUERY_FEATURES,
          itemFeatures: item,
          embeddingDim: EMBEDDING_DIM,
          hidden: HIDDEN,
          layerNorm: true,
          normalize: true,
          queryParameters: parameterCount(queryTower),
          itemParameters: parameterCount(itemTower),
          queryOnnxBytes: build.value.queryBytes,
          itemOnnxBytes: build.value.itemBytes,
          vocabularyWords: vocabulary.words.length,
          zipfExponent: vocabulary.zipfExponent,
          buildSeconds: build.seconds,
          loadSeconds: loaded.seconds,
          threads: settings.modelThreads ?? 'onnxruntime default',
        },
        batching: { ...settings.batching },
        load,
        tailCheck: tailCheckOf(load, settings.batching.maxDelayMs),
        corpus,
        encoding,
        maxEncodeFraction: MAX_ENCODE_FRACTION,
      };
    } finally {
      await model.dispose();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
