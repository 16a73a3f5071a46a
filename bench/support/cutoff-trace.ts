import { type Summary, summarize } from "./stats.js";

/**
 * Where one cut-off's time went, joined from the bench's own timestamps and the two lines the
 * operator logs per cut-off ("cut-off reconciled" by the Device controller, "cut-off sent to the
 * broker" by the Mosquitto adapter). All times are epoch milliseconds on one machine's clock.
 */
export interface CutoffSample {
  /** `namespace/name` of the Device. */
  readonly key: string;
  readonly tenant: string;
  readonly device: string;
  /** The bench sent `spec.enabled: false`, got the API server's answer, saw the connection close. */
  readonly sentAt: number;
  readonly patchedAt: number;
  readonly closedAt: number;
}

/** Consecutive stages: they add up to the total. */
export const STAGES = ["toQueue", "queue", "reconcile", "adapterWait", "brokerCommand", "toClose"] as const;
export type Stage = (typeof STAGES)[number];

/** Informative spans beside the consecutive stages. */
type Span = "apiWrite" | "kick" | "total";

export const STAGE_MEANING: Record<Stage | Span, string> = {
  apiWrite: "bench sends the patch → API server answers (informative, overlaps toQueue)",
  toQueue:
    "patch sent → the operator's informer queued the Device key (API write, watch, operator event loop)",
  queue: "queued → a worker took the key",
  reconcile: "taken → the reconcile asked the broker adapter to remove the device",
  adapterWait: "asked → the adapter sent the first command (waiting out the command or pause in flight)",
  brokerCommand: "first command (deleteClient) sent → Mosquitto answered",
  toClose:
    "answered → the bench saw the device's connection close (negative: the kick came before the answer reached the operator)",
  kick: "first command sent → connection closed (brokerCommand + toClose: the broker's part)",
  total: "patch sent → connection closed",
};

export interface TracedCutoff {
  readonly key: string;
  /** What the adapter was doing when the cut-off arrived: idle, command, pause or read. */
  readonly behind: string;
  readonly ms: Record<Stage | Span, number>;
}

const reconciledSchema = (line: Record<string, unknown>) =>
  line.msg === "cut-off reconciled" &&
  line.controller === "device" &&
  typeof line.key === "string" &&
  typeof line.dueAt === "number"
    ? { key: line.key, dueAt: line.dueAt, takenAt: Number(line.takenAt) }
    : undefined;

const sentSchema = (line: Record<string, unknown>) =>
  line.msg === "cut-off sent to the broker" &&
  typeof line.device === "string" &&
  typeof line.tenant === "string"
    ? {
        owner: `${line.tenant}/${line.device}`,
        requestedAt: Number(line.requestedAt),
        sentAt: Number(line.sentAt),
        ackedAt: Number(line.ackedAt),
        behind: String(line.behind),
      }
    : undefined;

function parseLines(log: string): Array<Record<string, unknown>> {
  const lines: Array<Record<string, unknown>> = [];
  for (const text of log.split("\n")) {
    if (!text.startsWith("{")) continue;
    try {
      lines.push(JSON.parse(text) as Record<string, unknown>);
    } catch {
      // A line cut by a concurrent write: not one of ours.
    }
  }
  return lines;
}

/**
 * Joins each sample with the operator's first lines for its Device after the patch was sent;
 * a sample without both lines is left out (reported as untraced by the caller).
 */
export function traceCutoffs(samples: readonly CutoffSample[], operatorLog: string): TracedCutoff[] {
  const lines = parseLines(operatorLog);
  const reconciled = lines.map(reconciledSchema).filter((l) => l !== undefined);
  const sent = lines.map(sentSchema).filter((l) => l !== undefined);
  const traced: TracedCutoff[] = [];
  for (const sample of samples) {
    // The controller's clock is whole milliseconds: allow one.
    const queued = reconciled.find((l) => l.key === sample.key && l.dueAt >= sample.sentAt - 1);
    const broker = sent.find(
      (l) => l.owner === `${sample.tenant}/${sample.device}` && l.requestedAt >= sample.sentAt - 1,
    );
    if (!queued || !broker) continue;
    traced.push({
      key: sample.key,
      behind: broker.behind,
      ms: {
        apiWrite: sample.patchedAt - sample.sentAt,
        toQueue: queued.dueAt - sample.sentAt,
        queue: queued.takenAt - queued.dueAt,
        reconcile: broker.requestedAt - queued.takenAt,
        adapterWait: broker.sentAt - broker.requestedAt,
        brokerCommand: broker.ackedAt - broker.sentAt,
        toClose: sample.closedAt - broker.ackedAt,
        kick: sample.closedAt - broker.sentAt,
        total: sample.closedAt - sample.sentAt,
      },
    });
  }
  return traced;
}

/** p50/p95/p99/max per stage over the traced cut-offs, and how often each adapter activity was in the way. */
export function stageSummary(traced: readonly TracedCutoff[]): {
  readonly stages: Record<Stage | Span, Summary>;
  readonly behind: Record<string, number>;
} {
  const names = ["apiWrite", ...STAGES, "kick", "total"] as const;
  const stages = Object.fromEntries(
    names.map((name) => [name, summarize(traced.map((t) => t.ms[name]))]),
  ) as Record<Stage | Span, Summary>;
  const behind: Record<string, number> = {};
  for (const t of traced) behind[t.behind] = (behind[t.behind] ?? 0) + 1;
  return { stages, behind };
}
