import { describe, expect, it } from "vitest";
import { QUARANTINE_ANNOTATION } from "../desired/labels.js";
import type { Change } from "../runtime/controller.js";
import type { KubeObject } from "../runtime/kube-object.js";
import { Priority } from "../runtime/work-queue.js";
import { deviceChangePriority, tenantChangePriority } from "./cut-off.js";

const object = (spec: Record<string, unknown>, deletionTimestamp?: string) =>
  ({
    metadata: {
      name: "x",
      namespace: "acme",
      uid: "u",
      resourceVersion: "1",
      ...(deletionTimestamp ? { deletionTimestamp } : {}),
    },
    spec,
  }) as KubeObject;
const gone = "2026-11-28T00:00:00Z";
const quarantined = (o: KubeObject): KubeObject => ({
  ...o,
  metadata: { ...o.metadata, annotations: { [QUARANTINE_ANNOTATION]: "TamperReported at …" } },
});
const cutOff = Priority.cutOff;

describe("deviceChangePriority", () => {
  it.each<[string, Change, number | undefined]>([
    ["created enabled", { current: object({ enabled: true }) }, undefined],
    ["created disabled (or seen so at start-up)", { current: object({ enabled: false }) }, cutOff],
    ["disabled", { previous: object({ enabled: true }), current: object({ enabled: false }) }, cutOff],
    [
      "enabled again",
      { previous: object({ enabled: false }), current: object({ enabled: true }) },
      undefined,
    ],
    [
      "still disabled, other change",
      { previous: object({ enabled: false }), current: object({ enabled: false, x: 1 }) },
      undefined,
    ],
    ["quarantined", { previous: object({}), current: quarantined(object({ enabled: true })) }, cutOff],
    ["released", { previous: quarantined(object({})), current: object({}) }, undefined],
    ["deletion started", { previous: object({}), current: object({}, gone) }, cutOff],
    [
      "finalizer removed while deleting",
      { previous: object({}, gone), current: object({}, gone) },
      undefined,
    ],
    ["deleted", { current: object({ enabled: true }), deleted: true }, cutOff],
    [
      "topics changed",
      { previous: object({ enabled: true }), current: object({ enabled: true, topics: {} }) },
      undefined,
    ],
  ])("%s", (_, change, priority) => {
    expect(deviceChangePriority(change)).toBe(priority);
  });
});

describe("tenantChangePriority", () => {
  it.each<[string, Change, number | undefined]>([
    ["created", { current: object({}) }, undefined],
    ["suspended", { previous: object({ suspended: false }), current: object({ suspended: true }) }, cutOff],
    ["resumed", { previous: object({ suspended: true }), current: object({ suspended: false }) }, undefined],
    ["deletion started", { previous: object({}), current: object({}, gone) }, cutOff],
    ["deleted", { current: object({}, gone), deleted: true }, cutOff],
    ["quota changed", { previous: object({}), current: object({ quota: {} }) }, undefined],
  ])("%s", (_, change, priority) => {
    expect(tenantChangePriority(change)).toBe(priority);
  });
});
