import { join } from "node:path";
import { inject } from "vitest";
import { freePort } from "../harness/ports.js";
import { type ManagedProcess, startProcess } from "../harness/process.js";
import { repoRoot, stackVariables } from "../harness/stack.js";

/** A real `iot-tenant-operator run` process that a test can SIGKILL, and its /metrics port. */
export interface OperatorProcess extends ManagedProcess {
  readonly probePort: number;
}

/**
 * Lease timings short enough that a killed leader's lease expires within a test's patience, and
 * long enough that a leader on a loaded 2-core CI machine does not miss its renewal: with 3 s and
 * a 2 s renew deadline, the leader lost its lease a few seconds after 24 Devices started
 * reconciling, in 3 of 4 runs of src/operator.int.test.ts, and exited.
 */
export const TEST_LEASE_SECONDS = { duration: 6, renewDeadline: 4, retryPeriod: 1 } as const;

/**
 * Starts the operator's command line from source against the shared stack, with leader election
 * on (so several may run) and its log in the stack's state directory under `name`.
 */
export async function startOperatorProcess(
  name: string,
  env: Record<string, string> = {},
): Promise<OperatorProcess> {
  const stack = inject("stack");
  const probePort = await freePort();
  const operator = startProcess(
    name,
    process.execPath,
    ["--import", "tsx", join(repoRoot, "test/fixtures/operator-cli.ts"), "run"],
    {
      logFile: join(stack.stateDir, `${name}.log`),
      cwd: repoRoot,
      env: {
        ...process.env,
        ...stackVariables(stack),
        PROBE_BIND_ADDRESS: `127.0.0.1:${probePort}`,
        LEASE_DURATION_SECONDS: String(TEST_LEASE_SECONDS.duration),
        LEASE_RENEW_DEADLINE_SECONDS: String(TEST_LEASE_SECONDS.renewDeadline),
        LEASE_RETRY_PERIOD_SECONDS: String(TEST_LEASE_SECONDS.retryPeriod),
        LOG_LEVEL: "info",
        ...env,
      },
    },
  );
  return { ...operator, probePort };
}

/**
 * The sum of a Prometheus counter's samples on `port`'s /metrics whose labels include `labels`;
 * 0 when the process does not answer (not started yet, or killed).
 */
export async function metricSum(
  port: number,
  name: string,
  labels: Record<string, string> = {},
  exclude: Record<string, string> = {},
): Promise<number> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`).catch(() => undefined);
  if (!response?.ok) return 0;
  const text = await response.text();
  let sum = 0;
  for (const line of text.split("\n")) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? ([^ ]+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const sample = Object.fromEntries(
      [...(match[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]),
    );
    const matches = Object.entries(labels).every(([k, v]) => sample[k] === v);
    const excluded = Object.entries(exclude).some(([k, v]) => sample[k] === v);
    if (matches && !excluded) sum += Number(match[3]);
  }
  return sum;
}
