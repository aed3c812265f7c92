/**
 * Progress for long work: a one-line bar on a TTY (redrawn at most every 100 ms) and nothing
 * elsewhere, so logs and CI output stay clean.
 */
export interface Progress {
  update(done: number, total?: number): void;
  finish(): void;
}

export function progressBar(label: string, stream: NodeJS.WriteStream = process.stderr, enabled = stream.isTTY === true): Progress {
  if (!enabled) return { update: () => {}, finish: () => {} };
  const started = performance.now();
  let lastDraw = 0;
  const draw = (done: number, total: number | undefined): void => {
    const seconds = (performance.now() - started) / 1000;
    const rate = seconds > 0 ? done / seconds : 0;
    const width = 24;
    const bar =
      total && total > 0 ? `[${'#'.repeat(Math.round((Math.min(done, total) / total) * width)).padEnd(width, '.')}] ` : '';
    const count = total ? `${done.toLocaleString('en-US')}/${total.toLocaleString('en-US')}` : done.toLocaleString('en-US');
    stream.write(`\r${label} ${bar}${count} (${Math.round(rate).toLocaleString('en-US')}/s)\x1b[K`);
  };
  let latest = { done: 0, total: undefined as number | undefined };
  return {
    update(done, total) {
      latest = { done, total };
      const now = performance.now();
      if (now - lastDraw < 100) return;
      lastDraw = now;
      draw(done, total);
    },
    finish() {
      draw(latest.done, latest.total);
      stream.write('\n');
    },
  };
}
