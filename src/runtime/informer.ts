import type { Logger } from "pino";
import type { z } from "zod";
import type { OperatorMetrics } from "../observability/metrics.js";
import { type Clock, sleep, systemClock } from "./clock.js";
import { errorMessage } from "./errors.js";
import { cacheStrings } from "./intern.js";
import { KubeApiError, type KubeClient } from "./kube-client.js";
import {
  type KubeObject,
  kubeObjectSchema,
  objectKey,
  type ResourceType,
  resourcePath,
} from "./kube-object.js";

/** Callbacks for cache changes. They run synchronously inside the informer: enqueue keys, do nothing else. */
export interface InformerHandler<T extends KubeObject> {
  onAdd?(object: T): void;
  onUpdate?(previous: T, current: T): void;
  onDelete?(object: T): void;
}

export interface InformerOptions<T extends KubeObject> {
  readonly resource: ResourceType;
  /** Watch one namespace only; all namespaces when absent. */
  readonly namespace?: string;
  readonly labelSelector?: string;
  readonly fieldSelector?: string;
  /** Parses every object at the boundary; defaults to the generic metadata schema. */
  readonly schema?: z.ZodType<T>;
  readonly clock?: Clock;
  /** With bookmarks on, a healthy watch is never silent this long; longer means the connection is stalled. */
  readonly inactivityTimeoutMs?: number;
  /** Server-side watch duration; each watch gets a random length between this and twice this. */
  readonly watchTimeoutSeconds?: number;
  /** Backoff after a failed list or watch: initial delay, doubling up to max. */
  readonly retryInitialMs?: number;
  readonly retryMaxMs?: number;
  readonly pageSize?: number;
}

class WatchExpired extends Error {}

/** The values an object is filed under in one index (e.g. its tenant label); none leaves it out. */
export type IndexFunction<T extends KubeObject> = (object: T) => readonly string[];

/** Files each cached object under the values `indexOf` gives it, so a lookup costs what it finds. */
class CacheIndex<T extends KubeObject> {
  private readonly buckets = new Map<string, Map<string, T>>();

  constructor(private readonly indexOf: IndexFunction<T>) {}

  add(key: string, object: T): void {
    for (const value of this.indexOf(object)) {
      let bucket = this.buckets.get(value);
      if (!bucket) {
        bucket = new Map();
        this.buckets.set(value, bucket);
      }
      bucket.set(key, object);
    }
  }

  remove(key: string, object: T): void {
    for (const value of this.indexOf(object)) {
      const bucket = this.buckets.get(value);
      bucket?.delete(key);
      if (bucket?.size === 0) this.buckets.delete(value);
    }
  }

  get(value: string): T[] {
    return [...(this.buckets.get(value)?.values() ?? [])];
  }

  count(value: string): number {
    return this.buckets.get(value)?.size ?? 0;
  }
}

const byNamespace = (object: KubeObject) =>
  object.metadata.namespace === undefined ? [] : [object.metadata.namespace];

/** Index by the value of one label: `byLabel(TENANT_LABEL)` finds a tenant's objects. */
export function byLabel(label: string): IndexFunction<KubeObject> {
  return (object) => {
    const value = object.metadata.labels?.[label];
    return value === undefined ? [] : [value];
  };
}

/**
 * A list-then-watch cache of one resource. It lists before reporting synced, resumes the watch
 * from the last resourceVersion (bookmarks keep it fresh), relists on 410 Gone, restarts with
 * backoff on any other failure, and treats a watch silent for too long as stalled.
 * The cache is keyed by namespace/name but compares UIDs, so a delete and re-create shows as
 * such; managedFields are dropped to save memory, and a kind's `cacheForm` keeps only what the
 * reconcilers read. Cached objects are shared: never mutate them.
 */
export class Informer<T extends KubeObject = KubeObject> {
  readonly resource: ResourceType;
  private readonly store = new Map<string, T>();
  /** Like controller-runtime's cache: a namespace index always, more by name (addIndex). */
  private readonly namespaces = new CacheIndex<T>(byNamespace);
  private readonly indexes = new Map<string, CacheIndex<T>>();
  private readonly handlers: InformerHandler<T>[] = [];
  private readonly schema: z.ZodType<T>;
  private readonly clock: Clock;
  private resourceVersion: string | undefined;
  private synced = false;
  private readonly syncWaiters: Array<() => void> = [];
  private running: { abort: AbortController; loop: Promise<void> } | undefined;

  constructor(
    private readonly client: KubeClient,
    private readonly options: InformerOptions<T>,
    private readonly logger: Logger,
    private readonly metrics?: OperatorMetrics,
  ) {
    this.resource = options.resource;
    this.schema = options.schema ?? (kubeObjectSchema as unknown as z.ZodType<T>);
    this.clock = options.clock ?? systemClock;
  }

  addHandler(handler: InformerHandler<T>): void {
    this.handlers.push(handler);
  }

  get hasSynced(): boolean {
    return this.synced;
  }

  /** Resolves once the first list is in the cache, or when `signal` aborts. */
  waitForSync(signal?: AbortSignal): Promise<void> {
    if (this.synced || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      this.syncWaiters.push(resolve);
      signal?.addEventListener("abort", () => resolve(), { once: true });
    });
  }

  /**
   * Adds an index before the informer starts; informers are shared, so adding the same name again
   * keeps the first (callers using one name must mean one function, e.g. `byLabel(TENANT_LABEL)`).
   */
  addIndex(name: string, indexOf: IndexFunction<T>): void {
    if (this.running) throw new Error("indexes must be added before the informer starts");
    if (!this.indexes.has(name)) this.indexes.set(name, new CacheIndex(indexOf));
  }

  get(key: string): T | undefined {
    return this.store.get(key);
  }

  list(namespace?: string): T[] {
    return namespace === undefined ? [...this.store.values()] : this.namespaces.get(namespace);
  }

  /** How many cached objects are in `namespace`, without copying them. */
  count(namespace: string): number {
    return this.namespaces.count(namespace);
  }

  /** The cached objects that index `name` files under `value`. */
  byIndex(name: string, value: string): T[] {
    const index = this.indexes.get(name);
    if (!index) throw new Error(`no index ${name} on ${this.resource.plural}`);
    return index.get(value);
  }

  /** Starts listing and watching in the background. After `stop`, starting again resumes from the last resourceVersion. */
  start(): void {
    if (this.running) return;
    const abort = new AbortController();
    this.running = { abort, loop: this.run(abort.signal) };
  }

  async stop(): Promise<void> {
    const running = this.running;
    if (!running) return;
    this.running = undefined;
    running.abort.abort();
    await running.loop;
  }

  private get label(): string {
    return this.options.namespace
      ? `${this.resource.plural}@${this.options.namespace}`
      : this.resource.plural;
  }

  private async run(signal: AbortSignal): Promise<void> {
    let failures = 0;
    while (!signal.aborted) {
      try {
        if (this.resourceVersion === undefined) await this.relist(signal);
        await this.watch(signal);
        failures = 0;
      } catch (error) {
        if (signal.aborted) break;
        if (error instanceof WatchExpired) {
          this.logger.info({ resource: this.label }, "watch expired (410 Gone), relisting");
          this.metrics?.informerWatchRestarts.inc({ resource: this.label, reason: "gone" });
          this.resourceVersion = undefined;
          continue;
        }
        failures += 1;
        const delayMs = Math.min(
          (this.options.retryInitialMs ?? 500) * 2 ** (failures - 1),
          this.options.retryMaxMs ?? 30_000,
        );
        this.logger.warn(
          { resource: this.label, err: errorMessage(error), failures, retryInMs: delayMs },
          "list/watch failed, retrying",
        );
        this.metrics?.informerWatchRestarts.inc({ resource: this.label, reason: "error" });
        await sleep(this.clock, delayMs, signal);
      }
    }
  }

  private async relist(signal: AbortSignal): Promise<void> {
    const listed = new Map<string, T>();
    let continueToken: string | undefined;
    let listResourceVersion = "";
    do {
      let page: { metadata?: { resourceVersion?: string; continue?: string }; items?: unknown[] };
      try {
        page = (await this.client.request({
          verb: "list",
          method: "GET",
          path: resourcePath(this.resource, { namespace: this.options.namespace }),
          query: {
            labelSelector: this.options.labelSelector,
            fieldSelector: this.options.fieldSelector,
            limit: this.options.pageSize ?? 500,
            continue: continueToken,
          },
          signal,
        })) as typeof page;
      } catch (error) {
        // The continue token outlived its snapshot: start the list over.
        if (error instanceof KubeApiError && error.code === 410 && continueToken !== undefined) {
          listed.clear();
          continueToken = undefined;
          continue;
        }
        throw error;
      }
      for (const item of page.items ?? []) {
        const object = this.parse(item);
        listed.set(objectKey(object.metadata), object);
      }
      continueToken = page.metadata?.continue || undefined;
      listResourceVersion = page.metadata?.resourceVersion ?? listResourceVersion;
    } while (continueToken !== undefined);

    for (const [key, previous] of this.store) {
      if (!listed.has(key)) this.remove(key, previous);
    }
    for (const object of listed.values()) this.upsert(object);
    this.resourceVersion = listResourceVersion;
    this.metrics?.informerLists.inc({ resource: this.label });
    this.logger.debug(
      { resource: this.label, objects: listed.size, resourceVersion: listResourceVersion },
      "listed",
    );
    if (!this.synced) {
      this.synced = true;
      this.metrics?.informerSynced.set({ resource: this.label }, 1);
      for (const resolve of this.syncWaiters.splice(0)) resolve();
    }
  }

  /** One watch connection; returns when it ends normally or goes quiet, throws on errors. */
  private async watch(parentSignal: AbortSignal): Promise<void> {
    const stalled = new AbortController();
    const signal = AbortSignal.any([parentSignal, stalled.signal]);
    const inactivityMs = this.options.inactivityTimeoutMs ?? 120_000;
    let cancelTimer = () => {};
    const resetInactivityTimer = () => {
      cancelTimer();
      cancelTimer = this.clock.setTimer(() => stalled.abort(), inactivityMs);
    };
    const baseTimeout = this.options.watchTimeoutSeconds ?? 300;
    let failure: Error | undefined;
    resetInactivityTimer();
    try {
      await this.client.stream(
        {
          verb: "watch",
          method: "GET",
          path: resourcePath(this.resource, { namespace: this.options.namespace }),
          query: {
            watch: true,
            allowWatchBookmarks: true,
            resourceVersion: this.resourceVersion,
            labelSelector: this.options.labelSelector,
            fieldSelector: this.options.fieldSelector,
            timeoutSeconds: Math.floor(baseTimeout * (1 + Math.random())),
          },
          signal,
        },
        (line) => {
          resetInactivityTimer();
          if (failure) return;
          try {
            this.handleWatchEvent(JSON.parse(line));
          } catch (error) {
            failure = error instanceof Error ? error : new Error(String(error));
            stalled.abort();
          }
        },
      );
    } catch (error) {
      if (error instanceof KubeApiError && error.code === 410) throw new WatchExpired(error.message);
      throw error;
    } finally {
      cancelTimer();
    }
    if (failure) throw failure;
    if (stalled.signal.aborted && !parentSignal.aborted) {
      this.logger.info({ resource: this.label, inactivityMs }, "watch silent for too long, reconnecting");
      this.metrics?.informerWatchRestarts.inc({ resource: this.label, reason: "stalled" });
    }
  }

  private handleWatchEvent(event: { type?: string; object?: unknown }): void {
    switch (event.type) {
      case "ADDED":
      case "MODIFIED": {
        const object = this.parse(event.object);
        this.upsert(object);
        this.resourceVersion = object.metadata.resourceVersion;
        return;
      }
      case "DELETED": {
        const object = this.parse(event.object);
        const key = objectKey(object.metadata);
        const cached = this.store.get(key);
        if (cached) this.remove(key, object);
        this.resourceVersion = object.metadata.resourceVersion;
        return;
      }
      case "BOOKMARK": {
        const version = (event.object as { metadata?: { resourceVersion?: string } } | undefined)?.metadata
          ?.resourceVersion;
        if (version) this.resourceVersion = version;
        return;
      }
      case "ERROR": {
        const status = event.object as { code?: number; reason?: string; message?: string } | undefined;
        if (status?.code === 410) throw new WatchExpired(status.message ?? "Gone");
        throw new Error(
          `watch error ${status?.code ?? "?"} ${status?.reason ?? ""}: ${status?.message ?? ""}`,
        );
      }
      default:
        throw new Error(`unknown watch event type ${String(event.type)}`);
    }
  }

  private parse(raw: unknown): T {
    const object = this.schema.parse(raw);
    // Lists leave apiVersion/kind off their items; events and owner references need them.
    const filled = { ...object, apiVersion: this.resource.apiVersion, kind: this.resource.kind } as T;
    const { managedFields: _dropped, ...metadata } = filled.metadata;
    const kept = { ...filled, metadata } as T;
    const cached = (this.resource.cacheForm?.(kept) ?? kept) as T;
    cacheStrings.internValues(cached);
    return cached;
  }

  private upsert(object: T): void {
    const key = objectKey(object.metadata);
    const previous = this.store.get(key);
    if (previous && previous.metadata.uid !== object.metadata.uid) {
      this.remove(key, previous);
      this.upsert(object);
      return;
    }
    if (previous && previous.metadata.resourceVersion === object.metadata.resourceVersion) return;
    if (previous) this.unindex(key, previous);
    this.store.set(key, object);
    this.index(key, object);
    for (const handler of this.handlers) {
      if (previous) handler.onUpdate?.(previous, object);
      else handler.onAdd?.(object);
    }
  }

  private remove(key: string, object: T): void {
    const cached = this.store.get(key);
    if (cached) this.unindex(key, cached);
    this.store.delete(key);
    for (const handler of this.handlers) handler.onDelete?.(object);
  }

  private index(key: string, object: T): void {
    this.namespaces.add(key, object);
    for (const index of this.indexes.values()) index.add(key, object);
  }

  private unindex(key: string, object: T): void {
    this.namespaces.remove(key, object);
    for (const index of this.indexes.values()) index.remove(key, object);
  }
}
