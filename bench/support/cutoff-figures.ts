import { STAGES, type stageSummary, type TracedCutoff } from "./cutoff-trace.js";
import { type Figure, spread } from "./results.js";
import { percentile, type Summary } from "./stats.js";

/** What else was going on during a phase: the machine's load and both event loops' delay. */
export interface PhaseConditions {
  /** os.loadavg() (1, 5, 15 minutes) when the phase started and ended. */
  readonly loadAverage: { readonly start: number[]; readonly end: number[] };
  /** The operator's event-loop delay, one p99 and one max per second of the phase. */
  readonly operatorEventLoopDelayMs: { readonly p99PerSecond: Summary; readonly maxPerSecond: Summary };
  readonly benchEventLoopDelayMs: { readonly p99: number; readonly max: number };
}

type PhaseStages = ReturnType<typeof stageSummary> & {
  /** Cut-offs whose operator log lines were not found. */
  readonly untraced: number;
};

/** One run of bench/cutoff-under-load.ts. */
export interface CutoffRun {
  readonly baselineMs: number[];
  readonly underLoadMs: number[];
  /** Cut-offs left out because the busy tenant's devices were all Ready by then. */
  readonly discarded: number;
  /** From the first create to the last Ready, or (--cutoffs-only) to the end of the cut-offs. */
  readonly provisioningSeconds: number;
  readonly devicesPerSecond: number;
  /** Absent with --cutoffs-only. */
  readonly suspend?: {
    readonly connected: number;
    /** Still connected when the bench stopped waiting: a cut-off that did not happen. */
    readonly notDropped: number;
    readonly dropsMs: Summary;
    readonly firstMs: number;
  };
  readonly stages: { readonly idle: PhaseStages; readonly underLoad: PhaseStages };
  readonly conditions: { readonly idle: PhaseConditions; readonly underLoad: PhaseConditions };
  readonly samples: { readonly idle: TracedCutoff[]; readonly underLoad: TracedCutoff[] };
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
    ...STAGES.flatMap((stage) => [
      per(`  under load, stage ${stage} p50`, "ms", (r) => r.stages.underLoad.stages[stage].p50),
      per(`  under load, stage ${stage} p99`, "ms", (r) => r.stages.underLoad.stages[stage].p99),
    ]),
    per(
      "  under load, span kick (broker command sent → closed) p99",
      "ms",
      (r) => r.stages.underLoad.stages.kick.p99,
    ),
    per(
      "operator event-loop delay under load, worst second's max",
      "ms",
      (r) => r.conditions.underLoad.operatorEventLoopDelayMs.maxPerSecond.max,
    ),
    per(
      "machine load average (1 min) at the end of the cut-offs under load",
      "load",
      (r) => r.conditions.underLoad.loadAverage.end[0] ?? Number.NaN,
    ),
    per(
      `provisioning throughput beside the cut-offs (${devices} devices${runs.some((r) => !r.suspend) ? ", Ready by the last cut-off" : ""})`,
      "devices/s",
      (r) => r.devicesPerSecond,
    ),
    ...(runs.every((r) => r.suspend)
      ? [
          per(
            `suspend ${devices} connected devices: last drop`,
            "ms",
            (r) => r.suspend?.dropsMs.max ?? Number.NaN,
          ),
          per(
            `suspend ${devices} connected devices: still connected at the end`,
            "devices",
            (r) => r.suspend?.notDropped ?? Number.NaN,
          ),
        ]
      : []),
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
