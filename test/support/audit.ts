import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type AuditRecord, auditRecordSchema } from "../../src/audit/chain.js";
import type { RunningOperator } from "../../src/operator.js";
import { eventually, uniqueName } from "./kube.js";
import { kubectl } from "./kubectl.js";

/** What the security-event tests read of an operator's trail, Events and counters. */

/** A fresh audit file and signing-key Secret, so a trail's chain starts at seq 0. */
export async function newTrail(): Promise<{ file: string; secret: string }> {
  const dir = await mkdtemp(join(tmpdir(), "audit-"));
  return { file: join(dir, "audit.log"), secret: uniqueName("audit") };
}

export const records = async (file: string): Promise<AuditRecord[]> =>
  (await readFile(file, "utf8"))
    .split("\n")
    .filter(Boolean)
    .map((line) => auditRecordSchema.parse(JSON.parse(line)));

export interface EventView {
  reason: string;
  type: string;
  note?: string;
  regarding: { name: string; kind: string };
  series?: { count: number };
}

/** The events.k8s.io Events in `namespace` regarding an object called `name`. */
export async function eventsOf(namespace: string, name: string): Promise<EventView[]> {
  const result = await kubectl(["get", "events.v1.events.k8s.io", "-n", namespace, "-o", "json"]);
  if (!result.ok) throw new Error(result.stderr);
  return (JSON.parse(result.stdout) as { items: EventView[] }).items.filter((e) => e.regarding.name === name);
}

export const eventWithReason = (namespace: string, name: string, reason: string) =>
  eventually(
    `Event ${reason} on ${namespace}/${name}`,
    async () => (await eventsOf(namespace, name)).find((e) => e.reason === reason),
    60_000,
  );

/** iot_security_events_total{tenant,kind} of the operator. */
export async function counter(operator: RunningOperator, tenant: string, kind: string): Promise<number> {
  const { values } = await operator.manager.metrics.securityEvents.get();
  return values.find((v) => v.labels.tenant === tenant && v.labels.kind === kind)?.value ?? 0;
}

export const until = (what: string, probe: () => Promise<boolean>) =>
  eventually(what, async () => ((await probe()) ? true : undefined), 60_000);
