import { readFile } from "node:fs/promises";
import type { Command } from "commander";

/** Where a command reads and writes; the real process's streams, or a test's. */
export interface CliIo {
  readonly stdout: { write(text: string): unknown };
  readonly stderr: { write(text: string): unknown; readonly isTTY?: boolean };
  readonly stdin: AsyncIterable<Buffer | string> & { readonly isTTY?: boolean };
  readonly env: NodeJS.ProcessEnv;
}

/** One command of the CLI, built for the streams it writes to; one module per command under commands/. */
export type CommandFactory = (io: CliIo) => Command;

/** The command line was wrong (a flag, an argument, a setting): exit 2 with what to do. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** The command ran and what it checked failed (exit 1); it has printed why. */
export class CheckFailed extends Error {
  override name = "CheckFailed";
}

export const ExitCode = { ok: 0, failed: 1, usage: 2 } as const;

/** A file's text, or standard input's for "-"; `pipeHint` says how to pipe when stdin is a terminal. */
export async function readInput(io: CliIo, file: string, pipeHint: string): Promise<string> {
  if (file === "-") {
    if (io.stdin.isTTY) throw new UsageError(`standard input is a terminal: ${pipeHint}`);
    let text = "";
    for await (const chunk of io.stdin) text += String(chunk);
    return text;
  }
  try {
    return await readFile(file, "utf8");
  } catch (error) {
    throw new UsageError(`cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
}
