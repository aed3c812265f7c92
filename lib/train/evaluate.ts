/**
 * Retrieval metrics against the full item corpus: the corpus is embedded with the item tower,
 * put in an exact FlatIndex, and every query's top results are compared with its relevant
 * items. Not in-batch metrics: a model that only separates a batch's items scores low here.
 */
import { FlatIndex } from '../index/flat.js';
import { NO_ID } from '../index/ids.js';
import type { TwoTowerModel } from '../model/two-tower.js';
import { invalid, requirePositiveInteger } from '../validate.js';
import type { Trainer } from './trainer.js';

export interface EvaluationPair {
  query: Record<string, unknown>;
  /** Position of the relevant item in the corpus. */
  item: number;
  /** Task head to embed the query with (default: the model's default output). */
  task?: string;
}

export interface RetrievalMetrics {
  /** Distinct queries (pairs with the same task and query record are one query with several relevant items). */
  queries: number;
  /** Mean over queries of |relevant ∩ top k| / |relevant|. */
  recallAt: Record<number, number>;
  /** Mean of 1 / rank of the first relevant item within the top `mrrDepth` (0 if none). */
  mrr: number;
  /** Fraction of queries with a relevant item in the top k (the `k` option). */
  hitRate: number;
}

export interface EvaluationResult extends RetrievalMetrics {
  k: number;
  perTask: Record<string, RetrievalMetrics>;
  seconds: number;
}

export interface EvaluateOptions {
  corpus: readonly Record<string, unknown>[];
  /** The cut-off of hitRate (default 10). */
  k?: number;
  /** Cut-offs of recallAt (default [1, 10, 100] plus k). */
  ks?: number[];
  /** Depth of the MRR (default 100). */
  mrrDepth?: number;
  /** Records per embedding call (default 1024). */
  batchSize?: number;
}

/** What evaluation needs of a model: both towers, per task. */
export interface Embedder {
  dim: number;
  embedQueries(records: readonly unknown[], task: string | undefined): Promise<Float32Array>;
  embedItems(records: readonly unknown[], task: string | undefined): Promise<Float32Array>;
  /** A name per distinct item embedding: tasks with the same name share the corpus vectors. */
  itemOutput(task: string | undefined): string;
}

function modelEmbedder(model: TwoTowerModel): Embedder {
  const m = model.manifest;
  return {
    dim: m.dim,
    embedQueries: (records, task) => model.embedQueries(records, task === undefined ? {} : { task }),
    embedItems: (records, task) => model.embedItems(records, task === undefined ? {} : { task }),
    itemOutput: (task) => (task === undefined ? m.towers.item.output : (m.towers.item.taskOutputs[task] ?? `?${task}`)),
  };
}

/** Evaluation through the trainer's native forward pass (no export needed), e.g. for early stopping. */
export function trainerEmbedder(trainer: Trainer): Embedder {
  const m = trainer.model;
  return {
    dim: m.spec.dim,
    embedQueries: (records, task) => trainer.embed('query', records, task),
    embedItems: (records, task) => trainer.embed('item', records, task),
    itemOutput: (task) => {
      const t = m.tasks.find((x) => x.name === (task ?? m.spec.defaultTask));
      return t === undefined ? `?${task}` : m.itemHeads[t.itemHead]!;
    },
  };
}

/**
 * Recall@K, MRR and hit rate of `pairs` against `options.corpus`, overall and per task, with
 * a model package (its exported ONNX towers) or a Trainer (its native forward pass).
 */
export async function evaluate(
  model: TwoTowerModel | Trainer | Embedder,
  pairs: readonly EvaluationPair[],
  options: EvaluateOptions,
): Promise<EvaluationResult> {
  const started = performance.now();
  const embedder: Embedder =
    'manifest' in model ? modelEmbedder(model as TwoTowerModel) : 'fit' in model ? trainerEmbedder(model as Trainer) : (model as Embedder);
  if (options === null || typeof options !== 'object') throw invalid('an options object', 'options', options);
  const corpus = options.corpus;
  if (!Array.isArray(corpus) || corpus.length === 0) throw invalid('a non-empty array of item records', 'options.corpus', corpus);
  if (!Array.isArray(pairs) || pairs.length === 0) throw invalid('a non-empty array of pairs', 'pairs', pairs);
  const k = options.k === undefined ? 10 : requirePositiveInteger(options.k, 'options.k', corpus.length);
  const ks = [...new Set([...(options.ks ?? [1, 10, 100]), k])]
    .map((x) => requirePositiveInteger(x, 'options.ks[]'))
    .filter((x) => x <= corpus.length)
    .sort((a, b) => a - b);
  const mrrDepth = Math.min(options.mrrDepth === undefined ? 100 : requirePositiveInteger(options.mrrDepth, 'options.mrrDepth'), corpus.length);
  const batchSize = options.batchSize === undefined ? 1024 : requirePositiveInteger(options.batchSize, 'options.batchSize');
  const depth = Math.max(mrrDepth, ...ks);

  // One query per (task, record), with all its relevant items.
  const queries = new Map<string, { task: string | undefined; query: Record<string, unknown>; relevant: Set<number> }>();
  pairs.forEach((p, i) => {
    if (p === null || typeof p !== 'object' || p.query === null || typeof p.query !== 'object') throw invalid('a { query, item } pair', `pairs[${i}]`, p);
    if (!Number.isInteger(p.item) || p.item < 0 || p.item >= corpus.length) throw invalid(`an item position from 0 to ${corpus.length - 1}`, `pairs[${i}].item`, p.item);
    const key = `${p.task ?? ''}\u0000${JSON.stringify(p.query)}`;
    let q = queries.get(key);
    if (q === undefined) queries.set(key, (q = { task: p.task, query: p.query, relevant: new Set() }));
    q.relevant.add(p.item);
  });

  const embedAll = async (records: readonly unknown[], embed: (r: readonly unknown[]) => Promise<Float32Array>): Promise<Float32Array> => {
    const out = new Float32Array(records.length * embedder.dim);
    for (let start = 0; start < records.length; start += batchSize) {
      out.set(await embed(records.slice(start, start + batchSize)), start * embedder.dim);
    }
    return out;
  };

  // Group queries by the item embedding their task scores against: one index each.
  const byOutput = new Map<string, { task: string | undefined; list: Array<{ task: string | undefined; query: Record<string, unknown>; relevant: Set<number> }> }>();
  for (const q of queries.values()) {
    const output = embedder.itemOutput(q.task);
    let group = byOutput.get(output);
    if (group === undefined) byOutput.set(output, (group = { task: q.task, list: [] }));
    group.list.push(q);
  }

  const totals = new Map<string, { n: number; recall: Float64Array; rr: number; hits: number }>();
  const add = (name: string, recall: number[], rr: number, hit: boolean): void => {
    let t = totals.get(name);
    if (t === undefined) totals.set(name, (t = { n: 0, recall: new Float64Array(ks.length), rr: 0, hits: 0 }));
    t.n++;
    recall.forEach((r, i) => (t!.recall[i]! += r));
    t.rr += rr;
    if (hit) t.hits++;
  };

  for (const group of byOutput.values()) {
    using index = new FlatIndex({ dim: embedder.dim, metric: 'ip' });
    const vectors = await embedAll(corpus, (r) => embedder.embedItems(r, group.task));
    await index.add(
      Array.from({ length: corpus.length }, (_, i) => i),
      vectors,
    );
    // Queries of one task at a time: each is embedded with its own head.
    const byTask = new Map<string | undefined, typeof group.list>();
    for (const q of group.list) {
      const list = byTask.get(q.task) ?? [];
      list.push(q);
      byTask.set(q.task, list);
    }
    for (const [task, list] of byTask) {
      const qv = await embedAll(
        list.map((q) => q.query),
        (r) => embedder.embedQueries(r, task),
      );
      const result = await index.search(qv, depth);
      list.forEach((q, i) => {
        const ids = result.row(i).ids;
        let first = -1;
        const found = new Array<number>(ks.length).fill(0);
        for (let r = 0; r < depth; r++) {
          const id = ids[r]!;
          if (id === NO_ID || !q.relevant.has(Number(id))) continue;
          if (first < 0) first = r;
          ks.forEach((cut, c) => {
            if (r < cut) found[c]!++;
          });
        }
        const recall = found.map((f) => f / q.relevant.size);
        const rr = first >= 0 && first < mrrDepth ? 1 / (first + 1) : 0;
        const hit = first >= 0 && first < k;
        add('', recall, rr, hit);
        add(task ?? '(default)', recall, rr, hit);
      });
    }
  }

  const metrics = (t: { n: number; recall: Float64Array; rr: number; hits: number }): RetrievalMetrics => ({
    queries: t.n,
    recallAt: Object.fromEntries(ks.map((cut, c) => [cut, t.recall[c]! / t.n])),
    mrr: t.rr / t.n,
    hitRate: t.hits / t.n,
  });
  const overall = metrics(totals.get('')!);
  const perTask = Object.fromEntries([...totals].filter(([name]) => name !== '').map(([name, t]) => [name, metrics(t)]));
  return { ...overall, k, perTask, seconds: (performance.now() - started) / 1000 };
}
