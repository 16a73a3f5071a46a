import { describe, expect, it } from "vitest";
import { stageSummary, traceCutoffs } from "./cutoff-trace.js";

const sample = {
  key: "quiet/victim-1",
  tenant: "quiet",
  device: "victim-1",
  sentAt: 1_000,
  patchedAt: 1_400,
  closedAt: 1_700,
};

const line = (fields: Record<string, unknown>) => JSON.stringify({ level: 30, ...fields });
const reconciled = (key: string, dueAt: number) =>
  line({
    controller: "device",
    key,
    dueAt,
    takenAt: dueAt + 10,
    doneAt: dueAt + 900,
    msg: "cut-off reconciled",
  });
const sent = (device: string, requestedAt: number) =>
  line({
    component: "broker",
    tenant: "quiet",
    device,
    requestedAt,
    sentAt: requestedAt + 50,
    ackedAt: requestedAt + 80,
    behind: "pause",
    msg: "cut-off sent to the broker",
  });

describe("traceCutoffs", () => {
  it("splits a cut-off into consecutive stages that add up to its total", () => {
    const log = [reconciled("quiet/victim-1", 1_500), "not json", sent("victim-1", 1_520)].join("\n");
    const [traced] = traceCutoffs([sample], log);
    expect(traced).toEqual({
      key: "quiet/victim-1",
      behind: "pause",
      ms: {
        apiWrite: 400,
        toQueue: 500,
        queue: 10,
        reconcile: 10,
        adapterWait: 50,
        brokerCommand: 30,
        toClose: 100,
        kick: 130,
        total: 700,
      },
    });
    const { toQueue, queue, reconcile, adapterWait, brokerCommand, toClose, total } = traced?.ms ?? {};
    expect(
      (toQueue ?? 0) +
        (queue ?? 0) +
        (reconcile ?? 0) +
        (adapterWait ?? 0) +
        (brokerCommand ?? 0) +
        (toClose ?? 0),
    ).toBe(total);
  });

  it.each([
    {
      name: "lines of an earlier cut-off of the same device",
      log: [reconciled("quiet/victim-1", 900), sent("victim-1", 920)],
    },
    { name: "another device's lines", log: [reconciled("quiet/victim-2", 1_500), sent("victim-2", 1_520)] },
    { name: "the controller's line only", log: [reconciled("quiet/victim-1", 1_500)] },
  ])("leaves a cut-off untraced given $name", ({ log }) => {
    expect(traceCutoffs([sample], log.join("\n"))).toEqual([]);
  });

  it("counts what the adapter was doing when the cut-offs arrived", () => {
    const log = [reconciled("quiet/victim-1", 1_500), sent("victim-1", 1_520)].join("\n");
    expect(stageSummary(traceCutoffs([sample], log)).behind).toEqual({ pause: 1 });
  });
});
