import type { Clock } from "./clock.js";
import type { RateLimiter } from "./rate-limiter.js";

/** What the queue reports; implemented by the Prometheus metrics, absent in most unit tests. */
export interface WorkQueueMetrics {
  depth(items: number): void;
  added(): void;
  /** Seconds a key waited between being queued and handed to a worker. */
  queued(waitSeconds: number): void;
  retried(): void;
}

/**
 * A keyed work queue with client-go's guarantees: a key queued several times before a worker
 * takes it is processed once; a key is never handed to two workers at once (re-adding it while
 * it is processed queues it again for after `done`); keys come out in the order they went in.
 */
export class WorkQueue {
  private readonly order: string[] = [];
  /** Keys that need processing: queued, or re-added while being processed. */
  private readonly dirty = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly queuedAt = new Map<string, number>();
  /** Delayed adds, one per key: the earliest wins. */
  private readonly waiting = new Map<string, { readyAt: number; cancel: () => void }>();
  private readonly waiters: Array<(key: string | undefined) => void> = [];
  private readonly idleWaiters: Array<() => void> = [];
  private shuttingDown = false;

  constructor(
    private readonly clock: Clock,
    private readonly rateLimiter: RateLimiter,
    private readonly metrics?: WorkQueueMetrics,
  ) {}

  add(key: string): void {
    if (this.shuttingDown || this.dirty.has(key)) return;
    this.metrics?.added();
    this.dirty.add(key);
    this.queuedAt.set(key, this.clock.now());
    if (this.processing.has(key)) return;
    this.enqueue(key);
  }

  /** Adds `key` once `delayMs` has passed; an earlier pending add of the same key is kept. */
  addAfter(key: string, delayMs: number): void {
    if (this.shuttingDown) return;
    if (delayMs <= 0) {
      this.add(key);
      return;
    }
    const readyAt = this.clock.now() + delayMs;
    const pending = this.waiting.get(key);
    if (pending && pending.readyAt <= readyAt) return;
    pending?.cancel();
    const cancel = this.clock.setTimer(() => {
      this.waiting.delete(key);
      this.add(key);
    }, delayMs);
    this.waiting.set(key, { readyAt, cancel });
  }

  /** Re-adds `key` after the rate limiter's delay: the per-key backoff and the global bucket. */
  addRateLimited(key: string): void {
    this.metrics?.retried();
    this.addAfter(key, this.rateLimiter.when(key));
  }

  /** Ends the backoff of `key` (after it was processed successfully or given up on). */
  forget(key: string): void {
    this.rateLimiter.forget(key);
  }

  retries(key: string): number {
    return this.rateLimiter.retries(key);
  }

  /**
   * The next key to process, waiting until there is one. After `shutDown` the keys still
   * queued are handed out; then it resolves `undefined`.
   */
  get(): Promise<string | undefined> {
    const key = this.order.shift();
    if (key !== undefined) return Promise.resolve(this.take(key));
    if (this.shuttingDown) return Promise.resolve(undefined);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Marks `key` as processed; if it was re-added meanwhile, it is queued again. */
  done(key: string): void {
    this.processing.delete(key);
    if (this.dirty.has(key)) this.enqueue(key);
    this.notifyIfIdle();
  }

  /** Stops accepting keys and drops delayed ones; queued keys are still handed out. */
  shutDown(): void {
    this.shuttingDown = true;
    for (const pending of this.waiting.values()) pending.cancel();
    this.waiting.clear();
    if (this.order.length === 0) for (const resolve of this.waiters.splice(0)) resolve(undefined);
    this.notifyIfIdle();
  }

  /** Resolves once nothing is queued or being processed (meant for after `shutDown`). */
  drained(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Keys waiting for a worker (not counting delayed or in-flight keys). */
  get length(): number {
    return this.order.length;
  }

  private enqueue(key: string): void {
    const waiter = this.waiters.shift();
    if (waiter) {
      waiter(this.take(key));
      return;
    }
    this.order.push(key);
    this.metrics?.depth(this.order.length);
  }

  private take(key: string): string {
    this.processing.add(key);
    this.dirty.delete(key);
    const queuedAt = this.queuedAt.get(key);
    this.queuedAt.delete(key);
    if (queuedAt !== undefined) this.metrics?.queued((this.clock.now() - queuedAt) / 1000);
    this.metrics?.depth(this.order.length);
    if (this.shuttingDown && this.order.length === 0) {
      for (const resolve of this.waiters.splice(0)) resolve(undefined);
    }
    return key;
  }

  private isIdle(): boolean {
    return this.order.length === 0 && this.processing.size === 0;
  }

  private notifyIfIdle(): void {
    if (this.isIdle()) for (const resolve of this.idleWaiters.splice(0)) resolve();
  }
}
