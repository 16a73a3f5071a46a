import { describe, expect, it } from "vitest";
import { QUARANTINE_ANNOTATION } from "./labels.js";
import { quarantineNote, quarantineOf, shouldQuarantine } from "./quarantine.js";

describe("shouldQuarantine", () => {
  it.each([
    { kind: "TamperReported", quarantineOn: ["TamperReported"], quarantined: false, expected: true },
    // Positive twin's denials: no policy, another kind, already quarantined.
    { kind: "TamperReported", quarantineOn: undefined, quarantined: false, expected: false },
    { kind: "TamperReported", quarantineOn: [], quarantined: false, expected: false },
    { kind: "AuthenticationRefused", quarantineOn: ["TamperReported"], quarantined: false, expected: false },
    { kind: "TamperReported", quarantineOn: ["TamperReported"], quarantined: true, expected: false },
  ])("$kind with quarantineOn=$quarantineOn, quarantined=$quarantined → $expected", (row) => {
    expect(shouldQuarantine(row)).toBe(row.expected);
  });
});

describe("quarantineOf", () => {
  it.each<{ annotations: Record<string, string> | undefined; expected: string | undefined }>([
    { annotations: undefined, expected: undefined },
    { annotations: { other: "x" }, expected: undefined },
    { annotations: { [QUARANTINE_ANNOTATION]: "TamperReported at …" }, expected: "TamperReported at …" },
    // An empty value still quarantines: only removing the annotation releases.
    { annotations: { [QUARANTINE_ANNOTATION]: "" }, expected: "" },
  ])("$annotations → $expected", ({ annotations, expected }) => {
    expect(quarantineOf({ metadata: { annotations } })).toBe(expected);
  });
});

describe("quarantineNote", () => {
  it("says what and when, bounded", () => {
    expect(quarantineNote("TamperReported", "enclosureOpened", new Date("2026-01-02T03:04:05Z"))).toBe(
      "TamperReported at 2026-01-02T03:04:05.000Z: enclosureOpened",
    );
    expect(quarantineNote("TamperReported", "x".repeat(2000), new Date(0))).toHaveLength(1024);
  });
});
