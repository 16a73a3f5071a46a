import { describe, expect, it } from "vitest";
import { APPLIED_DIGEST_ANNOTATION, intentDigest, isContainedIn, needsApply } from "./apply.js";
import type { KubeObject } from "./kube-object.js";

describe("isContainedIn", () => {
  it.each([
    { name: "equal scalars", intent: 1, observed: 1, expected: true },
    { name: "different scalars", intent: "a", observed: "b", expected: false },
    {
      name: "fields the server added are ignored",
      intent: { a: 1 },
      observed: { a: 1, b: 2 },
      expected: true,
    },
    { name: "a missing field differs", intent: { a: { b: 1 } }, observed: { a: {} }, expected: false },
    { name: "arrays must match exactly", intent: { a: [1] }, observed: { a: [1, 2] }, expected: false },
    {
      name: "equal arrays of objects",
      intent: { a: [{ x: 1 }] },
      observed: { a: [{ x: 1 }] },
      expected: true,
    },
    { name: "object vs array", intent: { a: {} }, observed: { a: [] }, expected: false },
  ])("$name → $expected", ({ intent, observed, expected }) => {
    expect(isContainedIn(intent, observed)).toBe(expected);
  });
});

describe("needsApply", () => {
  const intent = {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: { name: "cm", namespace: "ns", labels: { app: "x" } },
    data: { a: "1" },
  };
  const observedAfterApply = (applied: typeof intent, extra: Record<string, unknown> = {}): KubeObject => ({
    ...applied,
    metadata: {
      ...applied.metadata,
      uid: "u",
      resourceVersion: "7",
      annotations: { [APPLIED_DIGEST_ANNOTATION]: intentDigest(applied) },
    },
    ...extra,
  });

  it("applies when the object does not exist", () => {
    expect(needsApply(intent, undefined)).toBe(true);
  });

  it("does nothing when the object already holds the intent, whatever the server added", () => {
    expect(needsApply(intent, observedAfterApply(intent, { binaryData: {} }))).toBe(false);
  });

  it("does nothing when the same intent is built with its keys in another order", () => {
    const reordered = { data: { a: "1" }, kind: "ConfigMap", apiVersion: "v1", metadata: intent.metadata };
    expect(needsApply(reordered, observedAfterApply(intent))).toBe(false);
  });

  it("applies when someone changed a field we own", () => {
    const drifted = observedAfterApply(intent);
    expect(needsApply(intent, { ...drifted, data: { a: "2" } })).toBe(true);
  });

  it("applies when the intent drops a field, which only the digest can tell", () => {
    const before = { ...intent, data: { a: "1", b: "2" } };
    expect(needsApply(intent, observedAfterApply(before))).toBe(true);
  });
});
