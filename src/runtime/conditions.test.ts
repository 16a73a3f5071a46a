import { describe, expect, it } from "vitest";
import { type Condition, conditionTime, findCondition, isConditionTrue, setCondition } from "./conditions.js";

const T0 = Date.parse("2026-01-01T00:00:00.000Z");
const T1 = T0 + 60_500;

const ready = (status: Condition["status"], at: number, generation = 1): Condition => ({
  type: "Ready",
  status,
  reason: status === "True" ? "Reconciled" : "Failed",
  message: "",
  observedGeneration: generation,
  lastTransitionTime: conditionTime(at),
});

describe("setCondition", () => {
  it.each([
    {
      name: "adds a new condition stamped now",
      before: [],
      update: { type: "Ready", status: "True", reason: "Reconciled" },
      expected: [ready("True", T1, 2)],
    },
    {
      name: "keeps lastTransitionTime when the status stays, updating reason, message and generation",
      before: [ready("True", T0)],
      update: { type: "Ready", status: "True", reason: "StillFine", message: "ok" },
      expected: [{ ...ready("True", T0, 2), reason: "StillFine", message: "ok" }],
    },
    {
      name: "moves lastTransitionTime when the status flips",
      before: [ready("True", T0)],
      update: { type: "Ready", status: "False", reason: "Failed" },
      expected: [ready("False", T1, 2)],
    },
    {
      name: "leaves other conditions and their order alone",
      before: [{ ...ready("True", T0), type: "Synced" }, ready("True", T0)],
      update: { type: "Ready", status: "False", reason: "Failed" },
      expected: [{ ...ready("True", T0), type: "Synced" }, ready("False", T1, 2)],
    },
  ] as const)("$name", ({ before, update, expected }) => {
    expect(setCondition(before, update, { generation: 2, nowMs: T1 })).toEqual(expected);
  });

  it("is a no-op when nothing changes, so the status compares equal and is not written", () => {
    const current = [ready("True", T0, 3)];
    const next = setCondition(
      current,
      { type: "Ready", status: "True", reason: "Reconciled" },
      { generation: 3, nowMs: T1 },
    );
    expect(next).toEqual(current);
  });

  it("does not mutate its input", () => {
    const current = [ready("True", T0)];
    setCondition(current, { type: "Ready", status: "False", reason: "Failed" }, { generation: 2, nowMs: T1 });
    expect(current).toEqual([ready("True", T0)]);
  });
});

describe("conditionTime", () => {
  it("drops sub-second precision, which the API server does not store", () => {
    expect(conditionTime(T1)).toBe("2026-01-01T00:01:00Z");
  });
});

describe("findCondition / isConditionTrue", () => {
  it("finds by type", () => {
    const conditions = [ready("False", T0)];
    expect(findCondition(conditions, "Ready")?.status).toBe("False");
    expect(isConditionTrue(conditions, "Ready")).toBe(false);
    expect(isConditionTrue(undefined, "Ready")).toBe(false);
    expect(isConditionTrue([ready("True", T0)], "Ready")).toBe(true);
  });
});
