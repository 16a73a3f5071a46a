/**
 * Turns a burst of occurrences into a bounded number of writes, the way client-go's EventCorrelator
 * keeps a noisy object from flooding the API server: per key at most one write per `intervalMs`
 * (carrying how many occurrences it stands for and the latest value), and at most `writesPerSecond`
 * over all keys (a token bucket holding one second's worth), oldest pending first. Keys idle for an
 * interval are forgotten; past `maxKeys` new keys are dropped and counted. Pure: time comes in as
 * arguments.
 */
export interface CoalescerPolicy {
  readonly intervalMs: number;
  readonly writesPerSecond: number;
  readonly maxKeys: number;
}

export interface Coalesced<V> {
  readonly key: string;
  readonly value: V;
  /** Occurrences since the previous write of this key. */
  readonly count: number;
}

interface Entry<V> {
  value: V;
  count: number;
  /** When the oldest unwritten occurrence came. */
  pendingSince: number;
  lastWrite: number | undefined;
}

export class Coalescer<V> {
  private readonly entries = new Map<string, Entry<V>>();
  /** Occurrences refused because `maxKeys` keys were pending. */
  private dropped = 0;
  private tokens: number;
  private refilledAt: number | undefined;

  constructor(private readonly policy: CoalescerPolicy) {
    this.tokens = policy.writesPerSecond;
  }

  offer(key: string, value: V, now: number): void {
    const entry = this.entries.get(key);
    if (entry) {
      if (entry.count === 0) entry.pendingSince = now;
      entry.value = value;
      entry.count += 1;
      return;
    }
    if (this.entries.size >= this.policy.maxKeys) this.forgetIdle(now);
    if (this.entries.size >= this.policy.maxKeys) {
      this.dropped += 1;
      return;
    }
    this.entries.set(key, { value, count: 1, pendingSince: now, lastWrite: undefined });
  }

  /** The writes that are due now, as many as the rate allows; the rest wait for a later call. */
  take(now: number): Coalesced<V>[] {
    const { writesPerSecond } = this.policy;
    const elapsed = this.refilledAt === undefined ? 0 : Math.max(0, now - this.refilledAt);
    this.tokens = Math.min(writesPerSecond, this.tokens + (elapsed / 1000) * writesPerSecond);
    this.refilledAt = now;
    const budget = Math.floor(this.tokens);
    const due = [...this.entries.entries()]
      .filter(
        ([, e]) => e.count > 0 && (e.lastWrite === undefined || now - e.lastWrite >= this.policy.intervalMs),
      )
      .sort(([, a], [, b]) => a.pendingSince - b.pendingSince)
      .slice(0, Math.max(0, budget));
    this.tokens -= due.length;
    const writes = due.map(([key, e]) => ({ key, value: e.value, count: e.count }));
    for (const [, entry] of due) {
      entry.lastWrite = now;
      entry.count = 0;
    }
    this.forgetIdle(now);
    return writes;
  }

  /** Everything pending, whatever the interval (on shutdown). */
  drain(): Coalesced<V>[] {
    const pending = [...this.entries.entries()].filter(([, e]) => e.count > 0);
    this.entries.clear();
    return pending.map(([key, e]) => ({ key, value: e.value, count: e.count }));
  }

  /** Occurrences dropped since the previous call. */
  takeDropped(): number {
    const dropped = this.dropped;
    this.dropped = 0;
    return dropped;
  }

  get size(): number {
    return this.entries.size;
  }

  private forgetIdle(now: number): void {
    for (const [key, e] of this.entries)
      if (e.count === 0 && e.lastWrite !== undefined && now - e.lastWrite >= this.policy.intervalMs)
        this.entries.delete(key);
  }
}
