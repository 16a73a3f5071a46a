import { describe, expect, it } from "vitest";
import {
  mergeRevocations,
  parseRevocations,
  REVOCATION_HEADROOM,
  REVOCATION_KEY,
  revocationBudget,
  revocationRecord,
} from "./revocation.js";

const revocation = (serialNumber: string, notAfter = "2027-01-01T00:00:00Z") => ({
  serialNumber,
  notAfter,
  revokedAt: "2026-11-28T00:00:00Z",
  device: "acme/pump",
});
const now = Date.parse("2026-12-01T00:00:00Z");

describe("mergeRevocations", () => {
  it.each<[string, string[], string[], string[]]>([
    ["a new request is added", ["a"], ["b"], ["a", "b"]],
    ["a serial asked for twice is listed once", ["a"], ["a", "a"], ["a"]],
    ["nothing requested keeps the list", ["a", "b"], [], ["a", "b"]],
    ["an empty list takes the requests", [], ["c"], ["c"]],
  ])("%s", (_, listed, requested, expected) => {
    const merged = mergeRevocations(
      listed.map((s) => revocation(s)),
      requested.map((s) => revocation(s)),
      now,
    );
    expect(merged.map((r) => r.serialNumber)).toEqual(expected);
  });

  it("drops certificates that have expired: the broker refuses them anyway", () => {
    const merged = mergeRevocations([revocation("old", "2026-11-30T00:00:00Z")], [revocation("new")], now);
    expect(merged.map((r) => r.serialNumber)).toEqual(["new"]);
  });
});

describe("parseRevocations", () => {
  it.each<[string, string, number]>([
    ["a valid list", JSON.stringify([revocation("a"), revocation("b")]), 2],
    ["an entry that does not parse is dropped, not the rest", JSON.stringify([revocation("a"), { x: 1 }]), 1],
    ["not JSON", "{", 0],
    ["not a list", JSON.stringify(revocation("a")), 0],
  ])("%s", (_, json, count) => {
    expect(parseRevocations(json)).toHaveLength(count);
  });
});

describe("revocationRecord", () => {
  const record = revocationRecord("acme", "iot-system", revocation("0a1b"), {
    namespace: "acme",
    name: "pump",
  });

  it("is named by tenant and serial, so asking twice is one record", () => {
    expect(record.metadata).toMatchObject({ namespace: "iot-system", name: "revocation-acme-0a1b" });
  });

  it("carries the revocation the revocation controller reads back", () => {
    const data = (record as unknown as { data: Record<string, string> }).data[REVOCATION_KEY] ?? "";
    expect(parseRevocations(`[${Buffer.from(data, "base64").toString("utf8")}]`)).toEqual([
      revocation("0a1b"),
    ]);
  });
});

describe("revocationBudget", () => {
  it.each([
    [0, REVOCATION_HEADROOM],
    [2, 2 + REVOCATION_HEADROOM],
    [10_000, 10_000 + REVOCATION_HEADROOM],
  ])("for maxDevices %i is %i: one superseded key per device plus head room", (maxDevices, budget) => {
    expect(revocationBudget(maxDevices)).toBe(budget);
  });
});
