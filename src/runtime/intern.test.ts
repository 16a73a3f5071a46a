import { describe, expect, it } from "vitest";
import { StringTable } from "./intern.js";

describe("StringTable", () => {
  it("keeps every value as it was, shared or not", () => {
    const table = new StringTable();
    const object = {
      metadata: { name: "d-1", namespace: "acme", labels: { tier: "edge" }, finalizers: ["x/y"] },
      status: { conditions: [{ type: "Ready", status: "True", lastTransitionTime: "2026-11-28T00:00:00Z" }] },
      spec: { usages: ["client auth", "digital signature"], count: 3, enabled: false, nothing: null },
    };
    const before = structuredClone(object);
    table.internValues(object);
    expect(object).toEqual(before);
  });

  it.each([
    ["a recurring value", { status: "True" }, { status: "True" }, 1],
    ["recurring array items", { usages: ["client auth"] }, { usages: ["client auth"] }, 1],
    [
      "names, uids, versions and timestamps: unique per object",
      { name: "a", uid: "u1" },
      { name: "b", uid: "u2" },
      0,
    ],
    ["a long message about one object", { message: "x".repeat(201) }, { message: "y".repeat(201) }, 0],
  ])("tables %s once", (_, first, second, size) => {
    const table = new StringTable();
    table.internValues(first);
    table.internValues(second);
    expect(table.size).toBe(size);
  });

  it("empties its table when full, so values seen once do not pile up", () => {
    const table = new StringTable();
    for (let i = 0; i < 10_000; i++) table.intern(`value-${i}`);
    expect(table.size).toBe(10_000);
    table.intern("one more");
    expect(table.size).toBe(1);
  });
});
