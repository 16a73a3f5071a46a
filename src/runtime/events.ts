import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import { type Clock, microTime, systemClock } from "./clock.js";
import { errorMessage } from "./errors.js";
import { FIELD_MANAGER, KubeApiError, type KubeClient } from "./kube-client.js";
import type { KubeObject, ResourceType } from "./kube-object.js";

export const EVENT_RESOURCE: ResourceType = {
  apiVersion: "events.k8s.io/v1",
  kind: "Event",
  plural: "events",
  namespaced: true,
};

export type EventType = "Normal" | "Warning";

export interface EventRecord {
  readonly type: EventType;
  /** CamelCase, why it happened, e.g. `Provisioned`. */
  readonly reason: string;
  /** CamelCase, what the operator did or failed to do, e.g. `Reconcile`. */
  readonly action: string;
  readonly note: string;
}

/** How many distinct events are remembered for aggregation before the oldest are forgotten. */
const MAX_REMEMBERED = 4096;
/** events.k8s.io caps `note` at 1 kB. */
const MAX_NOTE_BYTES = 1024;

/**
 * Records events.k8s.io/v1 Events. A repeat of the same event about the same object becomes a
 * `series` count on the existing Event rather than a new object. Recording is best effort: a
 * failure is logged and never fails the reconcile.
 */
export class EventRecorder {
  private readonly seen = new Map<string, { namespace: string; name: string; count: number }>();

  constructor(
    private readonly client: KubeClient,
    private readonly reportingInstance: string,
    private readonly logger: Logger,
    private readonly clock: Clock = systemClock,
  ) {}

  /** `occurrences` > 1 records that many repeats at once (callers that aggregate bursts themselves). */
  async record(regarding: KubeObject, event: EventRecord, occurrences = 1): Promise<void> {
    const note = truncate(event.note);
    const key = [regarding.metadata.uid, event.type, event.reason, event.action, note].join("\u0000");
    try {
      const previous = this.seen.get(key);
      if (previous && (await this.bumpSeries(previous, occurrences))) return;
      const namespace = regarding.metadata.namespace ?? "default";
      const name = `${regarding.metadata.name}.${randomBytes(8).toString("hex")}`;
      await this.client.create(EVENT_RESOURCE, {
        apiVersion: EVENT_RESOURCE.apiVersion,
        kind: EVENT_RESOURCE.kind,
        metadata: { name, namespace },
        eventTime: microTime(this.clock.now()),
        reportingController: FIELD_MANAGER,
        reportingInstance: this.reportingInstance,
        regarding: {
          apiVersion: regarding.apiVersion,
          kind: regarding.kind,
          name: regarding.metadata.name,
          ...(regarding.metadata.namespace ? { namespace: regarding.metadata.namespace } : {}),
          uid: regarding.metadata.uid,
        },
        type: event.type,
        reason: event.reason,
        action: event.action,
        note,
        ...(occurrences > 1
          ? { series: { count: occurrences, lastObservedTime: microTime(this.clock.now()) } }
          : {}),
      });
      this.remember(key, { namespace, name, count: occurrences });
    } catch (error) {
      this.logger.warn(
        { err: errorMessage(error), reason: event.reason, object: regarding.metadata.name },
        "could not record event",
      );
    }
  }

  /** Counts a repeat on the existing Event; false when that Event is gone (expired) and a new one is needed. */
  private async bumpSeries(
    previous: { namespace: string; name: string; count: number },
    occurrences: number,
  ): Promise<boolean> {
    const count = previous.count + occurrences;
    try {
      await this.client.mergePatch(
        EVENT_RESOURCE,
        { namespace: previous.namespace, name: previous.name },
        { series: { count, lastObservedTime: microTime(this.clock.now()) } },
      );
    } catch (error) {
      if (error instanceof KubeApiError && error.code === 404) return false;
      throw error;
    }
    previous.count = count;
    return true;
  }

  private remember(key: string, entry: { namespace: string; name: string; count: number }): void {
    this.seen.set(key, entry);
    if (this.seen.size > MAX_REMEMBERED) {
      const oldest = this.seen.keys().next().value;
      if (oldest !== undefined) this.seen.delete(oldest);
    }
  }
}

function truncate(note: string): string {
  if (Buffer.byteLength(note) <= MAX_NOTE_BYTES) return note;
  return `${Buffer.from(note)
    .subarray(0, MAX_NOTE_BYTES - 3)
    .toString("utf8")
    .replace(/\uFFFD$/, "")}...`;
}
