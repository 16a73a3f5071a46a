import { generateKeyPairSync } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  type AuditRecord,
  canonicalJson,
  chainRecord,
  checkpointRecord,
  GENESIS_HEAD,
  headAfter,
  recordHash,
  verifyAuditLog,
} from "./chain.js";

const key = generateKeyPairSync("ed25519");
const at = new Date("2026-11-28T05:00:00Z");

/** seq 0..5 events, a checkpoint at seq 3 and one at the end (seq 7). */
function chain(): AuditRecord[] {
  const records: AuditRecord[] = [];
  let head = GENESIS_HEAD;
  const push = (record: AuditRecord) => {
    records.push(record);
    head = headAfter(record);
  };
  for (let i = 0; i < 6; i++) {
    if (i === 3) push(checkpointRecord(head, key, at));
    push(
      chainRecord(
        head,
        { kind: "DeviceRegistered", source: "cluster", tenant: "acme", device: `acme/d${i}` },
        at,
      ),
    );
  }
  push(checkpointRecord(head, key, at));
  return records;
}

const text = (records: readonly AuditRecord[]) => records.map((r) => `${JSON.stringify(r)}\n`).join("");

/** Rewrites a record's content and its hash, and every later record's link and hash, as a forger without the key would. */
function rewriteFrom(records: AuditRecord[], index: number, change: Partial<AuditRecord>): AuditRecord[] {
  const out = records.slice(0, index);
  let prev = index === 0 ? GENESIS_HEAD.hash : (out[index - 1]?.hash ?? "");
  for (const [i, record] of records.slice(index).entries()) {
    const { hash: _hash, ...body } = { ...record, ...(i === 0 ? change : {}), prev };
    const hash = recordHash(body);
    out.push({ ...body, hash });
    prev = hash;
  }
  return out;
}

describe("verifyAuditLog", () => {
  it("accepts an untouched chain, also against the pinned key", () => {
    expect(verifyAuditLog(text(chain()))).toMatchObject({ ok: true, records: 8, checkpoints: 2 });
    expect(verifyAuditLog(text(chain()), key.publicKey)).toMatchObject({ ok: true });
  });

  const tampered: [string, (records: AuditRecord[]) => string, { line: number; problem: RegExp }][] = [
    ["a removed record", (r) => text(r.toSpliced(2, 1)), { line: 3, problem: /^removed: seq 2 missing/ }],
    [
      "two removed records",
      (r) => text(r.toSpliced(1, 2)),
      { line: 2, problem: /^removed: seq 1\.\.2 missing/ },
    ],
    ["a removed first record", (r) => text(r.slice(1)), { line: 1, problem: /^removed: seq 0 missing/ }],
    [
      "two records swapped",
      (r) => text([r[0], r[2], r[1], ...r.slice(3)] as AuditRecord[]),
      { line: 2, problem: /^reordered: seq 2 where seq 1 belongs/ },
    ],
    [
      "a record repeated",
      (r) => text([...r.slice(0, 3), r[1], ...r.slice(3)] as AuditRecord[]),
      { line: 4, problem: /^reordered or repeated: seq 1 after seq 2/ },
    ],
    [
      "an edited field",
      (r) => text(r).replace('"device":"acme/d1"', '"device":"acme/dX"'),
      { line: 2, problem: /^edited: the record does not match its hash/ },
    ],
    [
      "an edited field with its hash recomputed",
      (r) => text(rewriteFrom(r, 1, { device: "acme/dX" }).slice(0, 2).concat(r.slice(2))),
      { line: 2, problem: /^edited: the record was rewritten with a new hash/ },
    ],
    [
      "the chain rewritten from an edit on",
      (r) => text(rewriteFrom(r, 1, { device: "acme/dX" })),
      { line: 4, problem: /^checkpoint signature does not match the chain/ },
    ],
    [
      "a line that is no record",
      (r) => text(r).replace(/^.*\n/, "not json\n"),
      { line: 1, problem: /^not an audit record/ },
    ],
  ];
  it.each(tampered)("reports %s", (_name, tamper, expected) => {
    const result = verifyAuditLog(tamper(chain()));
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expect(result.line).toBe(expected.line);
      expect(result.problem).toMatch(expected.problem);
    }
  });

  it("refuses checkpoints signed by a key other than the pinned one", () => {
    const other = generateKeyPairSync("ed25519");
    const result = verifyAuditLog(text(chain()), other.publicKey);
    expect(result).toMatchObject({ ok: false, line: 4, problem: /another key than the trusted one/ });
  });
});

describe("canonicalJson", () => {
  it("does not depend on key order", () => {
    expect(canonicalJson({ b: 1, a: { d: [1, { y: 2, x: 1 }], c: "s" } })).toBe(
      canonicalJson({ a: { c: "s", d: [1, { x: 1, y: 2 }] }, b: 1 }),
    );
  });
});
