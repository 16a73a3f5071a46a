import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { appendFileSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { z } from "zod";
import type { Logger } from "../observability/logger.js";
import type { Clock } from "../runtime/clock.js";
import { KubeApiError, type KubeClient } from "../runtime/kube-client.js";
import type { KubeObject, ResourceType } from "../runtime/kube-object.js";
import {
  type AuditEntry,
  type AuditRecord,
  type ChainHead,
  chainRecord,
  checkpointRecord,
  GENESIS_HEAD,
  headAfter,
} from "./chain.js";

const SECRET: ResourceType = { apiVersion: "v1", kind: "Secret", plural: "secrets", namespaced: true };

/** The Secret's keys: the signing key pair and where the chain stands. */
const PRIVATE_KEY = "private.pem";
const PUBLIC_KEY = "public.pem";
const HEAD = "head.json";

const headSchema = z.object({
  seq: z.int().min(0),
  hash: z.string(),
  /** seq of the last checkpoint and when it was written. */
  checkpointSeq: z.int().min(-1),
  checkpointTime: z.number(),
});
export type PersistedHead = z.infer<typeof headSchema>;

const FRESH_HEAD: PersistedHead = { ...GENESIS_HEAD, checkpointSeq: -1, checkpointTime: 0 };

export interface CheckpointPolicy {
  /** A checkpoint after at most this many records… */
  readonly everyRecords: number;
  /** …or once this long has passed since the last one, if records came since. */
  readonly everyMs: number;
}

export const DEFAULT_CHECKPOINTS: CheckpointPolicy = { everyRecords: 100, everyMs: 60_000 };

/**
 * The records a batch of entries becomes after `head`, checkpoints included where the policy asks
 * (and at the end when `final`), and the head after them. Pure.
 */
export function chainBatch(
  head: PersistedHead,
  entries: readonly AuditEntry[],
  key: { privateKey: KeyObject; publicKey: KeyObject },
  now: number,
  policy: CheckpointPolicy,
  final = false,
): { records: AuditRecord[]; head: PersistedHead } {
  const records: AuditRecord[] = [];
  let current = head;
  const time = new Date(now);
  const advance = (record: AuditRecord, checkpoint: boolean) => {
    records.push(record);
    const next: ChainHead = headAfter(record);
    current = checkpoint
      ? { ...next, checkpointSeq: record.seq, checkpointTime: now }
      : { ...current, ...next };
  };
  const checkpointDue = () => {
    const since = current.seq - current.checkpointSeq - 1;
    return since > 0 && (since >= policy.everyRecords || now - current.checkpointTime >= policy.everyMs);
  };
  for (const entry of entries) {
    advance(chainRecord(current, entry, time), false);
    if (current.seq - current.checkpointSeq - 1 >= policy.everyRecords)
      advance(checkpointRecord(current, key, time), true);
  }
  if (checkpointDue() || (final && current.seq - current.checkpointSeq - 1 > 0))
    advance(checkpointRecord(current, key, time), true);
  return { records, head: current };
}

export interface AuditTrailOptions {
  readonly client: KubeClient;
  readonly namespace: string;
  /** Holds the signing key and the chain head; only the operator may read it. */
  readonly secretName: string;
  /** The JSON-lines file a log collector tails. */
  readonly file: string;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly checkpoints?: CheckpointPolicy;
  /** How long an appended entry waits for others to share its batch (one Secret update per batch). */
  readonly batchDelayMs?: number;
}

/**
 * Appends audit records to a file, one chain across restarts and leader changes. The chain head is
 * kept in a Secret next to the signing key and moved forward with an optimistic update
 * (resourceVersion) *before* the batch is written: two writers can never extend the same head, so
 * the chain does not fork, and a new leader continues from the last head any leader committed. The
 * records follow in the same tick, synchronously; a process that dies between the two leaves a gap
 * the verifier reports at the exact seq. At most one Secret update per batch delay (4 a second).
 */
export class AuditTrail {
  private queue: AuditEntry[] = [];
  private flushing: Promise<void> = Promise.resolve();
  private scheduled: (() => void) | undefined;
  private key: { privateKey: KeyObject; publicKey: KeyObject } | undefined;
  /** The Secret as last read or written: its resourceVersion guards the next head update. */
  private secret: (KubeObject & { data?: unknown }) | undefined;
  private readonly policy: CheckpointPolicy;
  private readonly batchDelayMs: number;

  constructor(private readonly options: AuditTrailOptions) {
    this.policy = options.checkpoints ?? DEFAULT_CHECKPOINTS;
    this.batchDelayMs = options.batchDelayMs ?? 250;
  }

  /** Loads (or creates) the signing key; entries appended before are written with the first batch. */
  async start(): Promise<void> {
    const secret = await this.readOrCreateSecret();
    this.secret = secret;
    const data = secret.data as Record<string, string>;
    this.key = {
      privateKey: createPrivateKey(decode(data[PRIVATE_KEY])),
      publicKey: createPublicKey(decode(data[PUBLIC_KEY])),
    };
    mkdirSync(dirname(this.options.file), { recursive: true });
  }

  /** Queues an entry; it is written within `batchDelayMs`, with whatever else came meanwhile. */
  append(entry: AuditEntry): void {
    this.queue.push(entry);
    this.scheduled ??= this.options.clock.setTimer(() => {
      this.scheduled = undefined;
      void this.flush();
    }, this.batchDelayMs);
  }

  /** Writes what is queued and a closing checkpoint. */
  async stop(): Promise<void> {
    this.scheduled?.();
    this.scheduled = undefined;
    await this.flush(true);
  }

  /** Writes the queued entries now (tests and shutdown). */
  flush(final = false): Promise<void> {
    this.flushing = this.flushing
      .then(() => this.writeBatch(final))
      .catch((error: unknown) => {
        this.options.logger.error({ err: error }, "audit records not written; retrying with the next batch");
      });
    return this.flushing;
  }

  private async writeBatch(final: boolean): Promise<void> {
    const key = this.key;
    if (!key || (this.queue.length === 0 && !final)) return;
    // A copy: entries appended while this batch is in flight belong to the next one.
    const entries = [...this.queue];
    for (;;) {
      this.secret ??= await this.readOrCreateSecret();
      const secret = this.secret;
      const head = headSchema.parse(JSON.parse(decode((secret.data as Record<string, string>)[HEAD])));
      const batch = chainBatch(head, entries, key, this.options.clock.now(), this.policy, final);
      if (batch.records.length === 0) return;
      try {
        this.secret = await this.options.client.update(SECRET, {
          ...secret,
          apiVersion: "v1",
          kind: "Secret",
          metadata: { ...secret.metadata, name: this.options.secretName, namespace: this.options.namespace },
          data: { ...(secret.data as Record<string, string>), [HEAD]: encode(JSON.stringify(batch.head)) },
        });
      } catch (error) {
        // Another writer moved the head first: chain after its records instead of beside them.
        this.secret = undefined;
        if (error instanceof KubeApiError && error.code === 409) continue;
        throw error;
      }
      this.queue = this.queue.slice(entries.length);
      appendFileSync(this.options.file, batch.records.map((r) => `${JSON.stringify(r)}\n`).join(""));
      return;
    }
  }

  private async readOrCreateSecret(): Promise<KubeObject & { data?: unknown }> {
    const target = { namespace: this.options.namespace, name: this.options.secretName };
    const existing = await this.options.client.get(SECRET, target);
    if (existing) return existing as KubeObject & { data?: unknown };
    const { privateKey, publicKey } = generateKeyPairSync("ed25519");
    try {
      return (await this.options.client.create(SECRET, {
        apiVersion: "v1",
        kind: "Secret",
        metadata: target,
        type: "Opaque",
        data: {
          [PRIVATE_KEY]: encode(privateKey.export({ format: "pem", type: "pkcs8" }).toString()),
          [PUBLIC_KEY]: encode(publicKey.export({ format: "pem", type: "spki" }).toString()),
          [HEAD]: encode(JSON.stringify(FRESH_HEAD)),
        },
      })) as KubeObject & { data?: unknown };
    } catch (error) {
      // Another replica created it meanwhile: use that one's key.
      if (error instanceof KubeApiError && error.code === 409) return this.readOrCreateSecret();
      throw error;
    }
  }
}

const encode = (text: string) => Buffer.from(text).toString("base64");
const decode = (base64: string | undefined) => Buffer.from(base64 ?? "", "base64").toString("utf8");
