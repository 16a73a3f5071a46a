import { randomUUID } from "node:crypto";
import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import type { Logger } from "pino";
import type { OperatorMetrics } from "../observability/metrics.js";
import { type Clock, systemClock } from "./clock.js";
import { classifyError, errorMessage, terminalReason } from "./errors.js";
import type { EventRecorder } from "./events.js";
import type { Informer } from "./informer.js";
import { groupOf, type KubeObject, objectKey, parseObjectKey } from "./kube-object.js";
import { controllerRateLimiter, type RateLimiter } from "./rate-limiter.js";
import { Priority, type TakenKey, WorkQueue } from "./work-queue.js";

export interface ReconcileRequest {
  /** `namespace/name` or `name`. */
  readonly key: string;
  readonly namespace?: string;
  readonly name: string;
}

export interface ReconcileContext {
  readonly logger: Logger;
  readonly reconcileID: string;
  /** Aborts when this replica stops leading or the process shuts down: stop writing. */
  readonly signal: AbortSignal;
}

export interface ReconcileResult {
  /** Reconcile again after this long even if nothing changes (polling, expiry). */
  readonly requeueAfterMs?: number;
}

/**
 * Level-triggered: read the current state (the informer caches), converge, return. Throw to
 * retry with backoff; throw TerminalError when only a change to the object can help.
 */
export type Reconcile = (
  request: ReconcileRequest,
  context: ReconcileContext,
) => Promise<ReconcileResult | undefined>;

/** One informer notification: `previous` is absent for an add; `deleted` marks a delete of `current`. */
export interface Change<T extends KubeObject = KubeObject> {
  readonly previous?: T;
  readonly current: T;
  readonly deleted?: boolean;
}

/** A change beyond a status update: an add, a delete, a new generation (spec) or new labels. */
export function beyondStatus(change: Change): boolean {
  const { previous, current } = change;
  return (
    !previous ||
    change.deleted === true ||
    previous.metadata.generation !== current.metadata.generation ||
    previous.metadata.deletionTimestamp !== current.metadata.deletionTimestamp ||
    JSON.stringify(previous.metadata.labels ?? {}) !== JSON.stringify(current.metadata.labels ?? {})
  );
}

/** An object that appeared or went away. */
export function addedOrDeleted(change: Change): boolean {
  return !change.previous || change.deleted === true;
}

/**
 * The queue priority a change deserves (e.g. Priority.cutOff for one that takes access away);
 * undefined leaves the default: low while the informer delivers its first list, normal after.
 */
export type ChangePriority<T extends KubeObject = KubeObject> = (change: Change<T>) => number | undefined;

export interface OwnedWatch {
  readonly informer: Informer;
}

export interface MappedWatch<T extends KubeObject = KubeObject> {
  readonly informer: Informer<T>;
  /** The primary keys to reconcile when `object` changes. */
  readonly map: (object: T) => readonly string[];
  readonly priority?: ChangePriority<T>;
  /**
   * Only changes for which this holds are mapped (all when absent): e.g. a Certificate's spec, not
   * the status updates its issuer makes, so thousands of them do not each re-run the reconciler.
   */
  readonly when?: (change: Change<T>) => boolean;
}

export interface ControllerOptions<T extends KubeObject = KubeObject> {
  readonly name: string;
  /** The primary kind: each of its objects is one key. */
  readonly for: Informer<T>;
  /** Children whose controller owner reference points at a primary object. */
  readonly owns?: readonly OwnedWatch[];
  readonly watches?: readonly MappedWatch[];
  readonly reconcile: Reconcile;
  /** The priority of a change to a primary object; each watch can have its own. */
  readonly priority?: ChangePriority<T>;
  /** Keys take turns by this group within a priority (e.g. the tenant); defaults to the namespace. */
  readonly fairnessGroup?: (key: string) => string;
  /** Workers; a key is still never reconciled twice at once. */
  readonly maxConcurrentReconciles?: number;
  /**
   * Workers on top that take only keys at Priority.cutOff or above: the priority queue orders keys,
   * but a cut-off would still wait for a worker while every one is busy provisioning.
   */
  readonly cutOffWorkers?: number;
  readonly rateLimiter?: RateLimiter;
  /**
   * Called after a terminal error (an Event is already recorded): the place to set a
   * `Stalled`/`Ready=False` condition on the primary object.
   */
  readonly onTerminalError?: (object: T, error: unknown, context: ReconcileContext) => Promise<void>;
}

export interface ControllerDependencies {
  readonly logger: Logger;
  readonly events: EventRecorder;
  readonly clock?: Clock;
  readonly metrics?: OperatorMetrics;
}

/**
 * Runs `reconcile` for the keys of one primary kind: informer callbacks only enqueue keys, each
 * with a priority; a bounded pool of workers takes them from a de-duplicating priority queue that
 * is fair across groups, so one key is never reconciled twice at once and a cut-off never waits
 * behind provisioning; failures are retried with per-key exponential backoff at the same priority.
 */
export class Controller<T extends KubeObject = KubeObject> {
  readonly name: string;
  readonly queue: WorkQueue;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private workers: Promise<void>[] = [];

  constructor(
    private readonly options: ControllerOptions<T>,
    private readonly deps: ControllerDependencies,
  ) {
    this.name = options.name;
    this.clock = deps.clock ?? systemClock;
    this.logger = deps.logger.child({ controller: options.name });
    this.queue = new WorkQueue(this.clock, options.rateLimiter ?? controllerRateLimiter(this.clock), {
      fairnessGroup: options.fairnessGroup ?? ((key) => parseObjectKey(key).namespace ?? key),
      ...(deps.metrics ? { metrics: deps.metrics.forQueue(options.name) } : {}),
    });
    this.watch(options.for, options.priority, undefined, (object) => [objectKey(object.metadata)]);
    const primary = options.for.resource;
    for (const owned of options.owns ?? []) {
      this.watch(owned.informer, undefined, undefined, (object) => {
        const owner = object.metadata.ownerReferences?.find(
          (reference) =>
            reference.controller === true &&
            reference.kind === primary.kind &&
            groupOf(reference.apiVersion) === groupOf(primary.apiVersion),
        );
        return owner
          ? [
              objectKey({
                namespace: primary.namespaced ? object.metadata.namespace : undefined,
                name: owner.name,
              }),
            ]
          : [];
      });
    }
    for (const watch of options.watches ?? [])
      this.watch(watch.informer, watch.priority, watch.when, watch.map);
  }

  get informers(): Informer[] {
    return [
      this.options.for as unknown as Informer,
      ...(this.options.owns ?? []).map((owned) => owned.informer),
      ...(this.options.watches ?? []).map((watch) => watch.informer),
    ];
  }

  /**
   * Queues the keys `map` gives for every change `informer` reports, at the change's priority. An
   * update reaches the keys of both versions: a child that changed owner concerns both owners.
   */
  private watch<O extends KubeObject>(
    informer: Informer<O>,
    priorityOf: ChangePriority<O> | undefined,
    when: ((change: Change<O>) => boolean) | undefined,
    map: (object: O) => readonly string[],
  ): void {
    const enqueue = (change: Change<O>) => {
      if (when && !when(change)) return;
      const priority = priorityOf?.(change) ?? (informer.hasSynced ? Priority.normal : Priority.low);
      const keys = new Set([...(change.previous ? map(change.previous) : []), ...map(change.current)]);
      for (const key of keys) this.queue.add(key, { priority });
    };
    informer.addHandler({
      onAdd: (current) => enqueue({ current }),
      onUpdate: (previous, current) => enqueue({ previous, current }),
      onDelete: (current) => enqueue({ current, deleted: true }),
    });
  }

  /** Starts the workers; `leadership` aborts in-flight reconciles when this replica must stop at once. */
  start(leadership: AbortSignal): void {
    const workers = this.options.maxConcurrentReconciles ?? 1;
    const cutOffWorkers = this.options.cutOffWorkers ?? 0;
    this.logger.info({ workers, cutOffWorkers }, "starting workers");
    this.workers = [
      ...Array.from({ length: workers }, () => this.work(leadership)),
      ...Array.from({ length: cutOffWorkers }, () => this.work(leadership, Priority.cutOff)),
    ];
  }

  /** Stops taking new keys and waits (up to `timeoutMs`) for queued and in-flight ones to finish. */
  async stop(timeoutMs: number): Promise<boolean> {
    this.queue.shutDown();
    let timedOut = false;
    let cancel = () => {};
    await Promise.race([
      Promise.all(this.workers),
      new Promise<void>((resolve) => {
        cancel = this.clock.setTimer(() => {
          timedOut = true;
          resolve();
        }, timeoutMs);
      }),
    ]);
    cancel();
    if (timedOut) this.logger.warn({ timeoutMs }, "queue not drained before the shutdown timeout");
    return !timedOut;
  }

  private async work(leadership: AbortSignal, minPriority?: number): Promise<void> {
    for (;;) {
      const next = await this.queue.get(minPriority);
      if (next === undefined) return;
      try {
        if (!leadership.aborted) await this.process(next, leadership);
      } finally {
        this.queue.done(next.key);
      }
      // A reconcile served from the caches settles in microtasks: without a macrotask turn, a
      // restart's thousands of them would starve the lease renewal timer and lose leadership.
      await yieldToEventLoop();
    }
  }

  private async process(taken: TakenKey, signal: AbortSignal): Promise<void> {
    const { key, priority } = taken;
    const reconcileID = randomUUID();
    const logger = this.logger.child({ key, reconcileID, priority });
    const context: ReconcileContext = { logger, reconcileID, signal };
    const metrics = this.deps.metrics;
    const labels = { controller: this.name };
    const startedAt = this.clock.now();
    metrics?.activeWorkers.inc(labels);
    try {
      const result = await this.options.reconcile({ key, ...parseObjectKey(key) }, context);
      this.queue.forget(key);
      if (result?.requeueAfterMs !== undefined) {
        // Like controller-runtime: a requeue or retry keeps the priority the key was taken with.
        this.queue.add(key, { afterMs: result.requeueAfterMs, priority });
        metrics?.reconcileTotal.inc({ ...labels, result: "requeue_after" });
      } else {
        metrics?.reconcileTotal.inc({ ...labels, result: "success" });
      }
      logger.debug({ durationMs: this.clock.now() - startedAt }, "reconciled");
    } catch (error) {
      await this.handleFailure(key, priority, error, context);
    } finally {
      const doneAt = this.clock.now();
      metrics?.activeWorkers.dec(labels);
      metrics?.reconcileDuration.observe(labels, (doneAt - startedAt) / 1000);
      // Where a cut-off's time goes (with the broker adapter's line): one line per cut-off, not per key.
      if (priority >= Priority.cutOff)
        logger.info({ dueAt: taken.dueSince, takenAt: startedAt, doneAt }, "cut-off reconciled");
    }
  }

  private async handleFailure(
    key: string,
    priority: number,
    error: unknown,
    context: ReconcileContext,
  ): Promise<void> {
    const metrics = this.deps.metrics;
    const labels = { controller: this.name };
    const kind = classifyError(error);
    const message = errorMessage(error);
    if (context.signal.aborted) {
      context.logger.info({ err: message }, "reconcile interrupted by loss of leadership");
      return;
    }
    if (kind === "conflict") {
      context.logger.debug({ err: message }, "conflict, requeueing");
      metrics?.reconcileTotal.inc({ ...labels, result: "conflict" });
      this.queue.add(key, { rateLimited: true, priority });
      return;
    }
    if (kind === "transient") {
      const retries = this.queue.retries(key);
      context.logger.warn({ err: message, retries }, "reconcile failed, retrying with backoff");
      metrics?.reconcileTotal.inc({ ...labels, result: "error" });
      metrics?.reconcileErrors.inc(labels);
      this.queue.add(key, { rateLimited: true, priority });
      return;
    }
    context.logger.error(
      { err: message },
      "reconcile failed terminally, not retrying until the object changes",
    );
    metrics?.reconcileTotal.inc({ ...labels, result: "terminal" });
    metrics?.terminalReconcileErrors.inc(labels);
    this.queue.forget(key);
    const object = this.options.for.get(key);
    if (!object) return;
    await this.deps.events.record(object, {
      type: "Warning",
      reason: terminalReason(error),
      action: "Reconcile",
      note: message,
    });
    try {
      await this.options.onTerminalError?.(object, error, context);
    } catch (hookError) {
      context.logger.warn(
        { err: errorMessage(hookError) },
        "could not report the terminal error on the object",
      );
    }
  }
}
