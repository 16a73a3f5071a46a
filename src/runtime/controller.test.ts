import { describe, expect, it } from "vitest";
import { addedOrDeleted, beyondStatus, type Change } from "./controller.js";
import type { KubeObject } from "./kube-object.js";

const object = (metadata: Partial<KubeObject["metadata"]> = {}): KubeObject => ({
  metadata: { name: "a", uid: "u", resourceVersion: "1", generation: 1, labels: { l: "1" }, ...metadata },
});

describe("which changes are mapped", () => {
  it.each<[string, Change, boolean, boolean]>([
    ["an add", { current: object() }, true, true],
    ["a delete", { current: object(), deleted: true }, true, true],
    ["a status update", { previous: object(), current: object({ resourceVersion: "2" }) }, false, false],
    ["a new generation", { previous: object(), current: object({ generation: 2 }) }, true, false],
    ["new labels", { previous: object(), current: object({ labels: { l: "2" } }) }, true, false],
    [
      "deletion requested",
      { previous: object(), current: object({ deletionTimestamp: "2026-01-01T00:00:00Z" }) },
      true,
      false,
    ],
  ])("%s: beyond status %s, added or deleted %s", (_, change, beyond, membership) => {
    expect(beyondStatus(change)).toBe(beyond);
    expect(addedOrDeleted(change)).toBe(membership);
  });
});
