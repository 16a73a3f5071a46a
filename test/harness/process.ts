import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";

/** A server process that the harness started and must stop. */
export interface ManagedProcess {
  readonly name: string;
  readonly pid: number;
  readonly logFile: string;
  /** Resolves with the exit code (or signal name) when the process ends. */
  readonly exited: Promise<number | string>;
  stop(graceMs?: number): Promise<void>;
}

const running = new Set<ChildProcess>();

// However the process that started them ends, no server may outlive it.
function killAllSync(): void {
  for (const child of running) child.kill("SIGKILL");
}
process.once("exit", killAllSync);

/** Kills every started server when this process is interrupted or terminated. */
export function killServersOnSignal(): void {
  const codes = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 } as const;
  for (const [signal, code] of Object.entries(codes)) {
    process.once(signal, () => {
      killAllSync();
      process.exit(code);
    });
  }
}

export function startProcess(
  name: string,
  command: string,
  args: readonly string[],
  options: { logFile: string; env?: NodeJS.ProcessEnv; cwd?: string },
): ManagedProcess {
  // The child writes its log file itself: piped through this process, a busy event loop here
  // (a benchmark's clients) would block the child's writes to stdout, which are synchronous on a pipe.
  const log = openSync(options.logFile, "a");
  const child = spawn(command, args, {
    cwd: options.cwd,
    env: options.env ?? process.env,
    stdio: ["ignore", log, log],
  });
  closeSync(log);
  if (child.pid === undefined) throw new Error(`${name}: could not start ${command}`);
  running.add(child);
  const exited = new Promise<number | string>((resolve) => {
    child.once("exit", (code, signal) => {
      running.delete(child);
      resolve(code ?? signal ?? "unknown");
    });
  });
  return {
    name,
    pid: child.pid,
    logFile: options.logFile,
    exited,
    async stop(graceMs = 5_000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const outcome = await Promise.race([exited, sleep(graceMs, "timeout")]);
      if (outcome === "timeout") {
        child.kill("SIGKILL");
        await exited;
      }
    },
  };
}

/** Polls `probe` until it returns true, failing with the process log's tail when it does not. */
export async function waitUntil(
  what: string,
  probe: () => Promise<boolean>,
  options: { timeoutMs: number; intervalMs?: number; process?: ManagedProcess },
): Promise<void> {
  const deadline = Date.now() + options.timeoutMs;
  let lastError: unknown;
  let died: number | string | undefined;
  options.process?.exited.then((code) => {
    died = code;
  });
  while (Date.now() < deadline) {
    if (died !== undefined)
      throw new Error(`${what}: process exited (${died}); see ${options.process?.logFile}`);
    try {
      if (await probe()) return;
    } catch (error) {
      lastError = error;
    }
    await sleep(options.intervalMs ?? 200);
  }
  const detail = lastError instanceof Error ? `: ${lastError.message}` : "";
  const log = options.process ? `; see ${options.process.logFile}` : "";
  throw new Error(`${what}: not ready after ${options.timeoutMs} ms${detail}${log}`);
}

/** Whether a process of this pid exists (signal 0 tests without signalling). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
