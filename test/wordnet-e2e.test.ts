// End to end on the embedded default: the WordNet model trained as `npm start` trains it (five
// epochs, the best on the validation synsets kept; about 100 s on 2 cores), exported, served by
// a Retriever and by the main job, whose first example query must find the tiger.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { FlatIndex } from '../lib/index/flat.js';
import { TwoTowerModel } from '../lib/model/two-tower.js';
import { Retriever } from '../lib/serve/retriever.js';
import { runWordNetJob, wordnetRanker } from '../lib/serve/wordnet-job.js';
import { trainWordNet, wordnetItemRecord, type TrainWordNetResult } from '../lib/train/wordnet-model.js';
import { loadWordNet, wordnetQueries } from '../lib/train/wordnet.js';

let dir = '';
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('WordNet end to end', () => {
  let trained: TrainWordNetResult;

  it('trains and exports the default model, reporting held-out recall per task', async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ebrix-wordnet-'));
    trained = await trainWordNet({ out: path.join(dir, 'wordnet') });
    const test = trained.test!;
    console.info(
      `WordNet, ${trained.fit.steps} steps: ${trained.fit.seconds.toFixed(1)} s, ${Math.round(trained.fit.examplesPerSecond)} examples/s; held-out recall@10 ` +
        Object.entries(test.perTask).map(([task, m]) => `${task} ${m.recallAt[10]!.toFixed(3)}`).join(', '),
    );
    expect(trained.items).toBe(117_791);
    expect(Object.keys(test.perTask).sort()).toEqual(['gloss', 'synonym', 'usage']);
    // BM25 over the same text gets 0.16 and 0.92 (the README's table: 0.38 and 0.91 for this
    // model); chance is 10 / 117,791.
    expect(test.perTask.gloss!.recallAt[10]).toBeGreaterThan(0.3);
    expect(test.perTask.synonym!.recallAt[10]).toBeGreaterThan(0.85);
    // Each epoch was scored on the validation synsets (the mean of the three tasks' recall@10:
    // gloss and synonym as above, usage near 0), and the trainer ends holding the best one's
    // parameters (its step count is that epoch's).
    const validation = trained.fit.bestValidation!;
    expect(validation.step).toBe(trained.fit.steps);
    expect(validation.metric).toBeGreaterThan(0.35);
    expect(validation.metric).toBeLessThan(0.6);
  }, 300_000);

  it('the Retriever on the exported package reaches the recall the trainer reported for reverse-dictionary queries', async () => {
    const items = await loadWordNet();
    const records = items.map(wordnetItemRecord);
    const split = wordnetQueries(items, { seed: 1 });
    await using model = await TwoTowerModel.load(path.join(dir, 'wordnet'));
    using index = new FlatIndex({ dim: model.dim, metric: 'ip', modelVersion: model.version });
    for (let start = 0; start < records.length; start += 4096) {
      const part = records.slice(start, start + 4096);
      await index.add(
        part.map((_, i) => start + i),
        await model.embedItems(part),
      );
    }
    // The job's ranker: tower score + BM25 + exact-name bonus.
    const retriever = new Retriever({ model, index, items: records, ranker: wordnetRanker(records), candidates: 100, k: 10 });
    // The held-out gloss queries, each with its synsets (a few definitions are shared).
    const relevant = new Map<string, Set<number>>();
    for (const q of split.test) if (q.task === 'gloss') relevant.set(q.text, (relevant.get(q.text) ?? new Set()).add(q.item));
    let recall = 0;
    for (const [text, targets] of relevant) {
      const result = await retriever.retrieve({ text }, { task: 'gloss' });
      recall += result.items.filter((it) => targets.has(Number(it.id))).length / targets.size;
    }
    recall /= relevant.size;
    const reported = trained.test!.perTask.gloss!.recallAt[10]!;
    console.info(`Retriever gloss recall@10 over ${relevant.size} held-out queries: ${recall.toFixed(4)} (trainer reported ${reported.toFixed(4)})`);
    expect(recall).toBeGreaterThanOrEqual(reported - 0.005);
    await retriever.dispose();
  }, 300_000);

  it('the main job builds the index once, serves the page and API, and starts again from the saved files', async () => {
    const lines: string[] = [];
    const start = async (): Promise<{ seconds: number; hits: unknown[] }> => {
      const started = performance.now();
      let stop!: () => void;
      const until = new Promise<void>((resolve) => (stop = resolve));
      let hits: unknown[] = [];
      await runWordNetJob({
        dir,
        port: 0,
        until,
        log: (line) => lines.push(line),
        onListening: async (url) => {
          const page = await fetch(url);
          expect(page.status).toBe(200);
          expect(await page.text()).toContain('<html');
          const response = await fetch(`${url}/v1/search`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ query: { text: 'automobile' }, k: 3, task: 'synonym' }),
          });
          expect(response.status).toBe(200);
          hits = ((await response.json()) as { items: unknown[] }).items;
          stop();
        },
      });
      return { seconds: (performance.now() - started) / 1000, hits };
    };
    const first = await start();
    expect(lines.some((l) => l.startsWith('embedding 117791 synsets'))).toBe(true);
    expect(first.hits).toHaveLength(3);
    expect(JSON.stringify(first.hits[0])).toContain('automobile');
    lines.length = 0;
    const second = await start();
    expect(lines.some((l) => l.startsWith('embedding'))).toBe(false);
    const examples = lines.filter((l) => l.startsWith('  ['));
    expect(examples.length).toBe(3);
    // The example: the definition-like query finds the tiger among the five printed.
    expect(examples[0]).toContain('"a large wild cat with a striped coat" →');
    expect(examples[0]).toMatch(/(→|;) tiger Panthera tigris \(/);
    console.info(`main job start-up with a trained model: ${first.seconds.toFixed(1)} s building the index, ${second.seconds.toFixed(1)} s from the saved files`);
    expect(second.seconds).toBeLessThan(10);
  }, 300_000);
});
