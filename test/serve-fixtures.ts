/**
 * Small real model packages for the serving tests, written to a temp dir: seeded, untrained
 * towers (serving does not care what the weights learned).
 *
 * - catalog: query `{ text }` → item `{ title, price, rating, category }`, task 'click';
 * - text: query `{ text }` → item `{ text }`, both towers the same network (same features,
 *   same seed), so a text recalls itself first: what the memory tests rely on.
 */
import path from 'node:path';

import { FlatIndex, type Ids } from '../lib/index.js';
import { initTower } from '../lib/model/compose.js';
import type { FeatureSpec } from '../lib/model/features.js';
import { buildTowerModel } from '../lib/model/onnx/tower.js';
import { writeModelPackage } from '../lib/model/package.js';
import type { TwoTowerModel } from '../lib/model/two-tower.js';
import { embedCorpus } from '../lib/serve/embed-corpus.js';

export const DIM = 16;

export const CATALOG_QUERY: FeatureSpec[] = [{ kind: 'text', name: 'q', field: 'text', maxLength: 12, ngrams: 2, buckets: 4000 }];
export const CATALOG_ITEM: FeatureSpec[] = [
  { kind: 'text', name: 'title', field: 'title', maxLength: 16, buckets: 4000 },
  { kind: 'dense', name: 'numbers', fields: ['price', 'rating'], mean: [50, 3], std: [30, 1.5] },
];
const TEXT_FEATURES: FeatureSpec[] = [{ kind: 'text', name: 'text', field: 'text', maxLength: 24, buckets: 8000 }];

const WORDS = 'red green blue small large wooden steel chair table lamp desk sofa shelf bed rug clock'.split(' ');
const CATEGORIES = ['home', 'office', 'garden'];

export interface CatalogItem extends Record<string, unknown> {
  id: number;
  title: string;
  price: number;
  rating: number;
  category: string;
}

export function catalogItem(i: number): CatalogItem {
  const words = [WORDS[i % WORDS.length]!, WORDS[(i * 7 + 3) % WORDS.length]!, WORDS[(i * 13 + 5) % WORDS.length]!];
  return { id: 1000 + i, title: `${words.join(' ')} ${i}`, price: (i * 37) % 100, rating: 1 + (i % 5), category: CATEGORIES[i % 3]! };
}

export async function catalogPackage(dir: string, name: string, seed: number): Promise<string> {
  const target = path.join(dir, name);
  const q = initTower({ name: 'query', features: CATALOG_QUERY, embeddingDim: 8, hidden: [16], outputDim: DIM, tasks: ['click'], normalize: true, seed });
  const it = initTower({ name: 'item', features: CATALOG_ITEM, embeddingDim: 8, hidden: [16], outputDim: DIM, tasks: ['click'], normalize: true, seed: seed + 1 });
  await writeModelPackage(target, {
    name,
    dim: DIM,
    metric: 'ip',
    tasks: ['click'],
    query: { features: CATALOG_QUERY, onnx: buildTowerModel(q) },
    item: { features: CATALOG_ITEM, onnx: buildTowerModel(it) },
  });
  return target;
}

export async function textPackage(dir: string, name: string, seed: number): Promise<string> {
  const target = path.join(dir, name);
  const tower = (towerName: string) =>
    initTower({ name: towerName, features: TEXT_FEATURES, embeddingDim: 16, hidden: [], outputDim: DIM, normalize: true, seed });
  await writeModelPackage(target, {
    name,
    dim: DIM,
    metric: 'cosine',
    query: { features: TEXT_FEATURES, onnx: buildTowerModel(tower('query')) },
    item: { features: TEXT_FEATURES, onnx: buildTowerModel(tower('item')) },
  });
  return target;
}

/** A FlatIndex of `count` catalog items (with category and price attributes), bound to the model's version. */
export async function catalogIndex(model: TwoTowerModel, count: number, first = 0): Promise<FlatIndex> {
  const index = new FlatIndex({ dim: model.dim, metric: 'ip', attributes: { category: 'category', price: 'number' } });
  const items = Array.from({ length: count }, (_, i) => catalogItem(first + i));
  const records = [...items];
  // embedCorpus adds in item order, so the attribute records follow the same order.
  const sink = {
    dim: index.dim,
    get modelVersion() {
      return index.modelVersion;
    },
    bindModelVersion: (v: string) => index.bindModelVersion(v),
    add: (ids: Ids, vectors: Float32Array) =>
      index.add(ids, vectors, { attributes: records.splice(0, ids.length).map((r) => ({ category: r.category, price: r.price })) }),
  };
  await embedCorpus({ model, items, index: sink, batchSize: 64, progressBar: false });
  return index;
}
