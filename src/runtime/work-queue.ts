import type { Clock } from "./clock.js";
import type { RateLimiter } from "./rate-limiter.js";

/**
 * How urgent a key is; higher goes first. The levels follow controller-runtime's priority queue:
 * what an informer's first list delivers is low (the operator starting up re-checks everything),
 * ordinary changes are normal, and a change that takes access away overtakes both.
 */
export const Priority = {
  low: -100,
  normal: 0,
  /** Disable, delete, suspend, revoke: access must go now, not after the provisioning backlog. */
  cutOff: 100,
} as const;

export interface AddOptions {
  /** Defaults to Priority.normal. A key already waiting keeps the higher of the two. */
  readonly priority?: number;
  /** Ready only after this long; a key already due (or due sooner) keeps the earlier time. */
  readonly afterMs?: number;
  /** Delay by the rate limiter instead (per-key backoff, global bucket); counts as a retry. */
  readonly rateLimited?: boolean;
}

export interface QueuedKey {
  readonly key: string;
  readonly priority: number;
}

/** A key handed to a worker, with when it became due (clock time): how long it waited. */
export interface TakenKey extends QueuedKey {
  readonly dueSince: number;
}

/** What the queue reports; implemented by the Prometheus metrics, absent in most unit tests. */
export interface WorkQueueMetrics {
  /** Keys of `priority` waiting for a worker. */
  depth(priority: number, items: number): void;
  added(): void;
  /** Seconds a key of `priority` waited between being due and handed to a worker. */
  queued(priority: number, waitSeconds: number): void;
  retried(): void;
}

/**
 * The ready keys: the highest priority first; within a priority the fairness groups (tenants)
 * take turns, one key each; within a group, first in first out. Pure bookkeeping, no time.
 */
export class FairPriorityQueue {
  /** priority → group → keys. Map keeps insertion order: the first group is the one whose turn it is. */
  private readonly levels = new Map<number, Map<string, Set<string>>>();
  private count = 0;

  get length(): number {
    return this.count;
  }

  highestPriority(): number {
    return Math.max(...this.levels.keys());
  }

  lengthAt(priority: number): number {
    let keys = 0;
    for (const group of this.levels.get(priority)?.values() ?? []) keys += group.size;
    return keys;
  }

  push(key: string, group: string, priority: number): void {
    let groups = this.levels.get(priority);
    if (!groups) {
      groups = new Map();
      this.levels.set(priority, groups);
    }
    let keys = groups.get(group);
    if (!keys) {
      // A group that had nothing waiting joins at the end of the round.
      keys = new Set();
      groups.set(group, keys);
    }
    if (keys.has(key)) return;
    keys.add(key);
    this.count++;
  }

  delete(key: string, group: string, priority: number): void {
    const groups = this.levels.get(priority);
    const keys = groups?.get(group);
    if (!groups || !keys?.delete(key)) return;
    this.count--;
    if (keys.size === 0) groups.delete(group);
    if (groups.size === 0) this.levels.delete(priority);
  }

  /** Takes the next key: the first key of the group whose turn it is, at the highest priority (at least `minPriority`). */
  shift(minPriority = Number.NEGATIVE_INFINITY): QueuedKey | undefined {
    if (this.count === 0) return undefined;
    const priority = Math.max(...this.levels.keys());
    if (priority < minPriority) return undefined;
    const groups = this.levels.get(priority) as Map<string, Set<string>>;
    const [group, keys] = groups.entries().next().value as [string, Set<string>];
    const key = keys.values().next().value as string;
    keys.delete(key);
    this.count--;
    // Served: the group goes to the end of the round (or leaves it when it has nothing left).
    groups.delete(group);
    if (keys.size > 0) groups.set(group, keys);
    if (groups.size === 0) this.levels.delete(priority);
    return { key, priority };
  }
}

interface Due {
  priority: number;
  group: string;
  /** When the key became due, for the queue-wait metric. */
  since: number;
}

interface Delayed {
  readonly readyAt: number;
  priority: number;
  readonly cancel: () => void;
}

export interface WorkQueueOptions {
  readonly metrics?: WorkQueueMetrics;
  /** The group a key takes turns in (e.g. its tenant); defaults to the key itself. */
  readonly fairnessGroup?: (key: string) => string;
}

/**
 * A keyed priority work queue with client-go's guarantees and controller-runtime's ordering:
 * a key added several times before a worker takes it is processed once, at the highest priority
 * it was added with and at the earliest time asked for; a key is never handed to two workers at
 * once (re-adding it while it is processed queues it again for after `done`); higher priorities
 * go first, and within one priority the fairness groups take turns, so one tenant's churn cannot
 * starve another's.
 */
export class WorkQueue {
  private readonly ready = new FairPriorityQueue();
  /** Keys that need processing now: in `ready`, or re-added while being processed. */
  private readonly due = new Map<string, Due>();
  private readonly processing = new Set<string>();
  /** Delayed adds, one per key: the earliest time and the highest priority win. */
  private readonly delayed = new Map<string, Delayed>();
  /** Workers waiting for a key of at least `minPriority`, in the order they asked. */
  private readonly waiters: Array<{
    readonly minPriority: number;
    readonly resolve: (item: TakenKey | undefined) => void;
  }> = [];
  private readonly idleWaiters: Array<() => void> = [];
  private readonly fairnessGroup: (key: string) => string;
  private readonly metrics: WorkQueueMetrics | undefined;
  private shuttingDown = false;

  constructor(
    private readonly clock: Clock,
    private readonly rateLimiter: RateLimiter,
    options: WorkQueueOptions = {},
  ) {
    this.metrics = options.metrics;
    this.fairnessGroup = options.fairnessGroup ?? ((key) => key);
  }

  add(key: string, options: AddOptions = {}): void {
    if (this.shuttingDown) return;
    const priority = options.priority ?? Priority.normal;
    let delayMs = options.afterMs ?? 0;
    if (options.rateLimited) {
      this.metrics?.retried();
      delayMs = this.rateLimiter.when(key);
    }
    if (delayMs > 0) this.addDelayed(key, priority, delayMs);
    else this.addNow(key, priority);
  }

  /** Ends the backoff of `key` (after it was processed successfully or given up on). */
  forget(key: string): void {
    this.rateLimiter.forget(key);
  }

  retries(key: string): number {
    return this.rateLimiter.retries(key);
  }

  /**
   * The next key to process and the priority it was queued with, waiting until there is one of at
   * least `minPriority` (a worker kept for cut-offs asks for Priority.cutOff only). After `shutDown`
   * the keys still queued are handed out; then it resolves `undefined`.
   */
  get(minPriority = Number.NEGATIVE_INFINITY): Promise<TakenKey | undefined> {
    const next = this.ready.shift(minPriority);
    if (next) return Promise.resolve(this.take(next));
    if (this.shuttingDown) return Promise.resolve(undefined);
    return new Promise((resolve) => this.waiters.push({ minPriority, resolve }));
  }

  /** Marks `key` as processed; if it was re-added meanwhile, it is queued again. */
  done(key: string): void {
    this.processing.delete(key);
    const due = this.due.get(key);
    if (due) this.enqueue(key, due);
    this.notifyIfIdle();
  }

  /** Stops accepting keys and drops delayed ones; queued keys are still handed out. */
  shutDown(): void {
    this.shuttingDown = true;
    for (const pending of this.delayed.values()) pending.cancel();
    this.delayed.clear();
    this.releaseWaiters();
    this.notifyIfIdle();
  }

  /** Resolves once nothing is queued or being processed (meant for after `shutDown`). */
  drained(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Keys waiting for a worker (not counting delayed or in-flight keys). */
  get length(): number {
    return this.ready.length;
  }

  private addNow(key: string, priority: number): void {
    // Due now beats a later delayed add of the same key: one reconcile covers both.
    const pending = this.delayed.get(key);
    if (pending) {
      pending.cancel();
      this.delayed.delete(key);
      priority = Math.max(priority, pending.priority);
    }
    const due = this.due.get(key);
    if (due) {
      if (priority > due.priority) this.raise(key, due, priority);
      return;
    }
    this.metrics?.added();
    const entry = { priority, group: this.fairnessGroup(key), since: this.clock.now() };
    this.due.set(key, entry);
    if (!this.processing.has(key)) this.enqueue(key, entry);
  }

  private addDelayed(key: string, priority: number, delayMs: number): void {
    const due = this.due.get(key);
    if (due) {
      // Already due: it runs before the delay would end anyway.
      if (priority > due.priority) this.raise(key, due, priority);
      return;
    }
    const readyAt = this.clock.now() + delayMs;
    const pending = this.delayed.get(key);
    if (pending && pending.readyAt <= readyAt) {
      pending.priority = Math.max(pending.priority, priority);
      return;
    }
    pending?.cancel();
    const entry: Delayed = {
      readyAt,
      priority: Math.max(priority, pending?.priority ?? priority),
      cancel: this.clock.setTimer(() => {
        this.delayed.delete(key);
        this.addNow(key, entry.priority);
      }, delayMs),
    };
    this.delayed.set(key, entry);
  }

  private raise(key: string, due: Due, priority: number): void {
    if (!this.processing.has(key)) {
      this.ready.delete(key, due.group, due.priority);
      this.ready.push(key, due.group, priority);
      this.reportDepth(due.priority);
      this.reportDepth(priority);
    }
    due.priority = priority;
  }

  private enqueue(key: string, due: Due): void {
    // A worker waiting for this priority means nothing of it is ready: handing the key over
    // directly keeps the order.
    const index = this.waiters.findIndex((waiter) => waiter.minPriority <= due.priority);
    const waiter = index >= 0 ? this.waiters.splice(index, 1)[0] : undefined;
    if (waiter) {
      waiter.resolve(this.take({ key, priority: due.priority }));
      return;
    }
    this.ready.push(key, due.group, due.priority);
    this.reportDepth(due.priority);
  }

  private take(next: QueuedKey): TakenKey {
    const { key, priority } = next;
    this.processing.add(key);
    const due = this.due.get(key);
    this.due.delete(key);
    const now = this.clock.now();
    if (due) this.metrics?.queued(priority, (now - due.since) / 1000);
    this.reportDepth(priority);
    if (this.shuttingDown) this.releaseWaiters();
    return { key, priority, dueSince: due?.since ?? now };
  }

  /** While shutting down, a waiting worker that can take none of what is left stops. */
  private releaseWaiters(): void {
    const highest = this.ready.length === 0 ? Number.NEGATIVE_INFINITY : this.ready.highestPriority();
    for (const waiter of [...this.waiters]) {
      if (this.ready.length > 0 && waiter.minPriority <= highest) continue;
      this.waiters.splice(this.waiters.indexOf(waiter), 1);
      waiter.resolve(undefined);
    }
  }

  private reportDepth(priority: number): void {
    this.metrics?.depth(priority, this.ready.lengthAt(priority));
  }

  private isIdle(): boolean {
    return this.ready.length === 0 && this.processing.size === 0;
  }

  private notifyIfIdle(): void {
    if (this.isIdle()) for (const resolve of this.idleWaiters.splice(0)) resolve();
  }
}
