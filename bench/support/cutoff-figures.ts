import { type Figure, spread } from "./results.js";
import { percentile, type Summary } from "./stats.js";

/** One run of bench/cutoff-under-load.ts. */
export interface CutoffRun {
  readonly baselineMs: number[];
  readonly underLoadMs: number[];
  /** Cut-offs left out because the busy tenant's devices were all Ready by then. */
  readonly discarded: number;
  readonly provisioningSeconds: number;
  readonly devicesPerSecond: number;
  readonly suspend: {
    readonly connected: number;
    /** Still connected when the bench stopped waiting: a cut-off that did not happen. */
    readonly notDropped: number;
    readonly dropsMs: Summary;
    readonly firstMs: number;
  };
}

/** The published figures, one value per run; pooled percentiles go into the parameters, not here. */
export function cutoffFigures(runs: readonly CutoffRun[], devices: number): Figure[] {
  const per = (label: string, unit: string, value: (run: CutoffRun) => number) =>
    spread(label, unit, runs.map(value));
  return [
    per("cut-off p50, idle operator (baseline)", "ms", (r) => percentile(r.baselineMs, 50)),
    per("cut-off p99, idle operator (baseline)", "ms", (r) => percentile(r.baselineMs, 99)),
    per(`cut-off p50 while ${devices} devices of another tenant provision`, "ms", (r) =>
      percentile(r.underLoadMs, 50),
    ),
    per(`cut-off p99 while ${devices} devices of another tenant provision`, "ms", (r) =>
      percentile(r.underLoadMs, 99),
    ),
    per(
      `provisioning throughput beside the cut-offs (${devices} devices)`,
      "devices/s",
      (r) => r.devicesPerSecond,
    ),
    per(`suspend ${devices} connected devices: last drop`, "ms", (r) => r.suspend.dropsMs.max),
    per(
      `suspend ${devices} connected devices: still connected at the end`,
      "devices",
      (r) => r.suspend.notDropped,
    ),
  ];
}

/** p99 over every sample of every run: the tail a single run's median hides. */
export function pooledP99(runs: readonly CutoffRun[]): { baselineMs: number; underLoadMs: number } {
  return {
    baselineMs: percentile(
      runs.flatMap((r) => r.baselineMs),
      99,
    ),
    underLoadMs: percentile(
      runs.flatMap((r) => r.underLoadMs),
      99,
    ),
  };
}
