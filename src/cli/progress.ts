/**
 * Progress of a long command on stderr: a bar redrawn in place when stderr is a terminal, otherwise
 * (a CI log, a file) a plain line every few seconds, so logs stay readable.
 */

export interface ProgressStream {
  write(text: string): unknown;
  readonly isTTY?: boolean;
}

export interface Progress {
  /** One more item done (failed or not). */
  advance(failed: boolean): void;
  finish(): void;
}

const BAR_WIDTH = 30;
const TTY_REDRAW_MS = 100;
const LOG_LINE_MS = 5_000;

/** The progress line for `done` of `total` items after `elapsedMs`: a bar for a terminal, plain text otherwise. */
export function progressLine(
  state: { done: number; failed: number; total: number; elapsedMs: number },
  bar: boolean,
): string {
  const { done, failed, total, elapsedMs } = state;
  const fraction = total ? done / total : 1;
  const rate = elapsedMs > 0 ? Math.round((done * 1000) / elapsedMs) : 0;
  const counts = `${done}/${total} (${Math.floor(fraction * 100)}%), ${failed} failed, ${rate}/s`;
  if (!bar) return counts;
  const filled = Math.round(fraction * BAR_WIDTH);
  return `[${"#".repeat(filled)}${".".repeat(BAR_WIDTH - filled)}] ${counts}`;
}

export function progress(
  stream: ProgressStream,
  label: string,
  total: number,
  now: () => number = Date.now,
): Progress {
  const start = now();
  const tty = stream.isTTY === true;
  let done = 0;
  let failed = 0;
  let shownAt = start;
  const show = (final: boolean) => {
    const line = `${label} ${progressLine({ done, failed, total, elapsedMs: now() - start }, tty)}`;
    stream.write(tty ? `\r\x1b[2K${line}${final ? "\n" : ""}` : `${line}\n`);
    shownAt = now();
  };
  return {
    advance(itemFailed) {
      done += 1;
      if (itemFailed) failed += 1;
      if (now() - shownAt >= (tty ? TTY_REDRAW_MS : LOG_LINE_MS)) show(false);
    },
    finish() {
      show(true);
    },
  };
}
