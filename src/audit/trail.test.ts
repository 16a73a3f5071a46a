import { generateKeyPairSync } from "node:crypto";
import { describe, expect, it } from "vitest";
import { GENESIS_HEAD, verifyAuditLog } from "./chain.js";
import { chainBatch, type PersistedHead } from "./trail.js";

const key = generateKeyPairSync("ed25519");
const fresh: PersistedHead = { ...GENESIS_HEAD, checkpointSeq: -1, checkpointTime: 0 };
const entry = (i: number) => ({ kind: "DeviceRegistered", source: "cluster" as const, device: `acme/d${i}` });
const policy = { everyRecords: 3, everyMs: 60_000 };

describe("chainBatch", () => {
  it("puts a checkpoint after every `everyRecords` records and carries the head from batch to batch", () => {
    const first = chainBatch(fresh, [1, 2, 3, 4].map(entry), key, 1_000, policy);
    expect(first.records.map((r) => r.kind)).toEqual([
      "DeviceRegistered",
      "DeviceRegistered",
      "DeviceRegistered",
      "Checkpoint",
      "DeviceRegistered",
    ]);
    expect(first.head).toMatchObject({ seq: 5, checkpointSeq: 3 });
    const second = chainBatch(first.head, [5].map(entry), key, 2_000, policy);
    expect(second.records.map((r) => r.seq)).toEqual([5]);
    const text = [...first.records, ...second.records].map((r) => `${JSON.stringify(r)}\n`).join("");
    expect(verifyAuditLog(text, key.publicKey)).toMatchObject({ ok: true, records: 6, checkpoints: 1 });
  });

  it("checkpoints once `everyMs` passed since the last one, and at the end when asked", () => {
    const head = { seq: 2, hash: "a".repeat(64), checkpointSeq: 0, checkpointTime: 0 };
    expect(chainBatch(head, [entry(1)], key, 60_000, policy).records.map((r) => r.kind)).toEqual([
      "DeviceRegistered",
      "Checkpoint",
    ]);
    expect(chainBatch(head, [], key, 1_000, policy, true).records.map((r) => r.kind)).toEqual(["Checkpoint"]);
    const signed = { seq: 1, hash: "a".repeat(64), checkpointSeq: 0, checkpointTime: 0 };
    expect(chainBatch(signed, [], key, 1_000, policy, true).records).toEqual([]);
  });
});
