import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import type { OperatorMetrics } from "../observability/metrics.js";
import { type Clock, systemClock } from "./clock.js";
import { classifyError, errorMessage, terminalReason } from "./errors.js";
import type { EventRecorder } from "./events.js";
import type { Informer } from "./informer.js";
import { groupOf, type KubeObject, objectKey, parseObjectKey } from "./kube-object.js";
import { controllerRateLimiter, type RateLimiter } from "./rate-limiter.js";
import { WorkQueue } from "./work-queue.js";

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

export interface OwnedWatch {
  readonly informer: Informer;
}

export interface MappedWatch<T extends KubeObject = KubeObject> {
  readonly informer: Informer<T>;
  /** The primary keys to reconcile when `object` changes. */
  readonly map: (object: T) => readonly string[];
}

export interface ControllerOptions<T extends KubeObject = KubeObject> {
  readonly name: string;
  /** The primary kind: each of its objects is one key. */
  readonly for: Informer<T>;
  /** Children whose controller owner reference points at a primary object. */
  readonly owns?: readonly OwnedWatch[];
  readonly watches?: readonly MappedWatch[];
  readonly reconcile: Reconcile;
  readonly maxConcurrentReconciles?: number;
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
 * Runs `reconcile` for the keys of one primary kind: informer callbacks only enqueue keys; a
 * bounded pool of workers takes them from a de-duplicating queue, so one key is never
 * reconciled twice at once; failures are retried with per-key exponential backoff.
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
    this.queue = new WorkQueue(
      this.clock,
      options.rateLimiter ?? controllerRateLimiter(this.clock),
      deps.metrics?.forQueue(options.name),
    );
    const enqueue = (object: KubeObject) => this.queue.add(objectKey(object.metadata));
    options.for.addHandler({ onAdd: enqueue, onUpdate: (_, current) => enqueue(current), onDelete: enqueue });
    const primary = options.for.resource;
    for (const owned of options.owns ?? []) {
      const enqueueOwner = (object: KubeObject) => {
        const owner = object.metadata.ownerReferences?.find(
          (reference) =>
            reference.controller === true &&
            reference.kind === primary.kind &&
            groupOf(reference.apiVersion) === groupOf(primary.apiVersion),
        );
        if (owner) {
          this.queue.add(
            objectKey({
              namespace: primary.namespaced ? object.metadata.namespace : undefined,
              name: owner.name,
            }),
          );
        }
      };
      owned.informer.addHandler({
        onAdd: enqueueOwner,
        // A child that changed owner must reach both the old and the new owner.
        onUpdate: (previous, current) => {
          enqueueOwner(previous);
          enqueueOwner(current);
        },
        onDelete: enqueueOwner,
      });
    }
    for (const watch of options.watches ?? []) {
      const enqueueMapped = (object: KubeObject) => {
        for (const key of watch.map(object)) this.queue.add(key);
      };
      watch.informer.addHandler({
        onAdd: enqueueMapped,
        onUpdate: (previous, current) => {
          enqueueMapped(previous);
          enqueueMapped(current);
        },
        onDelete: enqueueMapped,
      });
    }
  }

  get informers(): Informer[] {
    return [
      this.options.for as unknown as Informer,
      ...(this.options.owns ?? []).map((owned) => owned.informer),
      ...(this.options.watches ?? []).map((watch) => watch.informer),
    ];
  }

  /** Starts the workers; `leadership` aborts in-flight reconciles when this replica must stop at once. */
  start(leadership: AbortSignal): void {
    const workers = this.options.maxConcurrentReconciles ?? 1;
    this.logger.info({ workers }, "starting workers");
    this.workers = Array.from({ length: workers }, () => this.work(leadership));
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

  private async work(leadership: AbortSignal): Promise<void> {
    for (;;) {
      const key = await this.queue.get();
      if (key === undefined) return;
      try {
        if (!leadership.aborted) await this.process(key, leadership);
      } finally {
        this.queue.done(key);
      }
    }
  }

  private async process(key: string, signal: AbortSignal): Promise<void> {
    const reconcileID = randomUUID();
    const logger = this.logger.child({ key, reconcileID });
    const context: ReconcileContext = { logger, reconcileID, signal };
    const metrics = this.deps.metrics;
    const labels = { controller: this.name };
    const startedAt = this.clock.now();
    metrics?.activeWorkers.inc(labels);
    try {
      const result = await this.options.reconcile({ key, ...parseObjectKey(key) }, context);
      this.queue.forget(key);
      if (result?.requeueAfterMs !== undefined) {
        this.queue.addAfter(key, result.requeueAfterMs);
        metrics?.reconcileTotal.inc({ ...labels, result: "requeue_after" });
      } else {
        metrics?.reconcileTotal.inc({ ...labels, result: "success" });
      }
      logger.debug({ durationMs: this.clock.now() - startedAt }, "reconciled");
    } catch (error) {
      await this.handleFailure(key, error, context);
    } finally {
      metrics?.activeWorkers.dec(labels);
      metrics?.reconcileDuration.observe(labels, (this.clock.now() - startedAt) / 1000);
    }
  }

  private async handleFailure(key: string, error: unknown, context: ReconcileContext): Promise<void> {
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
      this.queue.addRateLimited(key);
      return;
    }
    if (kind === "transient") {
      const retries = this.queue.retries(key);
      context.logger.warn({ err: message, retries }, "reconcile failed, retrying with backoff");
      metrics?.reconcileTotal.inc({ ...labels, result: "error" });
      metrics?.reconcileErrors.inc(labels);
      this.queue.addRateLimited(key);
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
