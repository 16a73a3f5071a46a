import { createHash, createPublicKey, type KeyObject, sign, verify } from "node:crypto";
import { z } from "zod";

/**
 * The audit trail's record format and its proof: JSON lines, each carrying the SHA-256 of the record
 * before it, and every so often a checkpoint signed with the operator's Ed25519 key over the chain
 * up to it. Editing, removing or reordering a record breaks the hashes after it; rewriting the chain
 * from there on needs the key to re-sign the next checkpoint. No IO.
 */

export const AUDIT_FORMAT_VERSION = 1;
/** `prev` of the first record. */
export const GENESIS_HASH = "0".repeat(64);
export const CHECKPOINT_KIND = "Checkpoint";

const hex64 = z.string().regex(/^[0-9a-f]{64}$/);

export const auditRecordSchema = z.strictObject({
  v: z.literal(AUDIT_FORMAT_VERSION),
  seq: z.int().min(0),
  time: z.iso.datetime(),
  prev: hex64,
  /** What happened, e.g. `AuthenticationRefused`, `DeviceDisabled`, or `Checkpoint`. */
  kind: z.string().min(1),
  /** `cluster`, `broker` or `audit` (the trail's own records). */
  source: z.enum(["cluster", "broker", "audit"]),
  tenant: z.string().optional(),
  /** `namespace/name` of the Device. */
  device: z.string().optional(),
  /** How many occurrences this record stands for (broker events are aggregated per interval). */
  count: z.int().min(1).optional(),
  detail: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).optional(),
  /** On a checkpoint: the signer's public key (SPKI DER, base64) and its signature over `seq` and `prev`. */
  checkpoint: z.strictObject({ publicKey: z.string(), signature: z.string() }).optional(),
  hash: hex64,
});
export type AuditRecord = z.infer<typeof auditRecordSchema>;
export type AuditEntry = Omit<AuditRecord, "v" | "seq" | "time" | "prev" | "hash" | "checkpoint">;

/** Where the chain stands: the next record gets `seq` and links to `hash`. */
export interface ChainHead {
  readonly seq: number;
  readonly hash: string;
}

export const GENESIS_HEAD: ChainHead = { seq: 0, hash: GENESIS_HASH };

/** JSON with object keys sorted at every level, so the hash does not depend on key order. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

export function recordHash(record: Omit<AuditRecord, "hash">): string {
  return createHash("sha256").update(canonicalJson(record)).digest("hex");
}

function checkpointMessage(seq: number, prev: string): Buffer {
  return Buffer.from(`iot-tenant-operator audit checkpoint v${AUDIT_FORMAT_VERSION} ${seq} ${prev}`);
}

/** The next record of the chain after `head`. */
export function chainRecord(head: ChainHead, entry: AuditEntry, time: Date): AuditRecord {
  const body = {
    ...entry,
    v: AUDIT_FORMAT_VERSION,
    seq: head.seq,
    time: time.toISOString(),
    prev: head.hash,
  } as const;
  return { ...body, hash: recordHash(body) };
}

/** A checkpoint after `head`: signs the hash of every record before it, through `prev`. */
export function checkpointRecord(
  head: ChainHead,
  key: { privateKey: KeyObject; publicKey: KeyObject },
  time: Date,
): AuditRecord {
  const body = {
    v: AUDIT_FORMAT_VERSION,
    seq: head.seq,
    time: time.toISOString(),
    prev: head.hash,
    kind: CHECKPOINT_KIND,
    source: "audit",
    checkpoint: {
      publicKey: key.publicKey.export({ format: "der", type: "spki" }).toString("base64"),
      signature: sign(null, checkpointMessage(head.seq, head.hash), key.privateKey).toString("base64"),
    },
  } as const;
  return { ...body, hash: recordHash(body) };
}

export function headAfter(record: AuditRecord): ChainHead {
  return { seq: record.seq + 1, hash: record.hash };
}

export type VerifyResult =
  | { readonly ok: true; readonly records: number; readonly checkpoints: number; readonly head: ChainHead }
  | { readonly ok: false; readonly line: number; readonly seq?: number; readonly problem: string };

/**
 * Checks an audit file: the first problem found, by line (1-based), or OK. `trustedKey` pins the
 * checkpoint signer; without it a checkpoint is checked against the key it names, which proves
 * only that whoever wrote it held that key.
 */
export function verifyAuditLog(text: string, trustedKey?: KeyObject): VerifyResult {
  const lines = text.split("\n").filter((line, index, all) => line !== "" || index < all.length - 1);
  const parsed = lines.map((line) => {
    try {
      return auditRecordSchema.safeParse(JSON.parse(line)).data;
    } catch {
      return undefined;
    }
  });
  const seqsAhead = new Set(parsed.flatMap((r) => (r ? [r.seq] : [])));
  const trusted = trustedKey?.export({ format: "der", type: "spki" }).toString("base64");
  let head = GENESIS_HEAD;
  let checkpoints = 0;
  let lastCheckpointLine = 0;
  for (const [index, record] of parsed.entries()) {
    const line = index + 1;
    if (!record) return { ok: false, line, problem: "not an audit record (edited or corrupted)" };
    const { hash, ...body } = record;
    if (recordHash(body) !== hash)
      return { ok: false, line, seq: record.seq, problem: "edited: the record does not match its hash" };
    if (record.seq !== head.seq) {
      const problem =
        record.seq < head.seq
          ? `reordered or repeated: seq ${record.seq} after seq ${head.seq - 1}`
          : seqsAhead.has(head.seq)
            ? `reordered: seq ${record.seq} where seq ${head.seq} belongs (it comes later)`
            : `removed: seq ${head.seq}${record.seq - 1 > head.seq ? `..${record.seq - 1}` : ""} missing before this record`;
      return { ok: false, line, seq: record.seq, problem };
    }
    if (record.prev !== head.hash) {
      // The record before matched its own hash, so it was rewritten with a new hash (or this one was).
      return {
        ok: false,
        line: line - 1,
        seq: record.seq - 1,
        problem: "edited: the record was rewritten with a new hash (the next record does not link to it)",
      };
    }
    if (record.checkpoint) {
      const problem = checkpointProblem(record, trusted);
      if (problem)
        return { ok: false, line, seq: record.seq, problem: `${problem} (after line ${lastCheckpointLine})` };
      checkpoints += 1;
      lastCheckpointLine = line;
    }
    seqsAhead.delete(record.seq);
    head = headAfter(record);
  }
  return { ok: true, records: parsed.length, checkpoints, head };
}

function checkpointProblem(record: AuditRecord, trusted: string | undefined): string | undefined {
  const { publicKey, signature } = record.checkpoint ?? { publicKey: "", signature: "" };
  if (trusted !== undefined && publicKey !== trusted)
    return "checkpoint signed by another key than the trusted one";
  try {
    const key = createPublicKey({ key: Buffer.from(publicKey, "base64"), format: "der", type: "spki" });
    if (verify(null, checkpointMessage(record.seq, record.prev), key, Buffer.from(signature, "base64")))
      return undefined;
  } catch {
    // An unreadable key is a bad signature.
  }
  return "checkpoint signature does not match the chain: a record since the previous checkpoint was rewritten";
}

/** `audit verify`'s words for a result. */
export function formatVerifyResult(file: string, result: VerifyResult): string {
  if (result.ok)
    return `OK ${file}: ${result.records} records, ${result.checkpoints} signed checkpoints, next seq ${result.head.seq}`;
  return `FAIL ${file}:${result.line}${result.seq === undefined ? "" : ` (seq ${result.seq})`}: ${result.problem}`;
}
