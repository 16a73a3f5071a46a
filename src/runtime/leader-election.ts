import type { Logger } from "pino";
import { z } from "zod";
import type { OperatorMetrics } from "../observability/metrics.js";
import { type Clock, microTime, sleep, systemClock } from "./clock.js";
import { errorMessage } from "./errors.js";
import { KubeApiError, type KubeClient } from "./kube-client.js";
import type { ResourceType } from "./kube-object.js";

export const LEASE_RESOURCE: ResourceType = {
  apiVersion: "coordination.k8s.io/v1",
  kind: "Lease",
  plural: "leases",
  namespaced: true,
};

export interface LeaderElectionConfig {
  readonly namespace: string;
  readonly name: string;
  /** Unique per replica, e.g. the pod name. */
  readonly identity: string;
  /** How long standbys wait after the last observed renewal before taking over (default 15 s). */
  readonly leaseDurationMs?: number;
  /** How long the leader keeps trying to renew before it gives up leading (default 10 s). */
  readonly renewDeadlineMs?: number;
  /** Interval between attempts to acquire or renew (default 2 s). */
  readonly retryPeriodMs?: number;
}

const leaseSchema = z.looseObject({
  metadata: z.looseObject({ resourceVersion: z.string() }),
  spec: z
    .looseObject({
      holderIdentity: z.string().nullish(),
      leaseDurationSeconds: z.number().nullish(),
      acquireTime: z.string().nullish(),
      renewTime: z.string().nullish(),
      leaseTransitions: z.number().nullish(),
    })
    .optional(),
});
type Lease = z.infer<typeof leaseSchema>;

export type LeadershipOutcome = "lost" | "stopped";

/**
 * Lease-based leader election with client-go's semantics: a lease counts as expired when its
 * record has not changed for `leaseDuration` of *our* clock (so clock skew between replicas does
 * not matter); every write is an optimistic update on resourceVersion, so two candidates cannot
 * both win.
 */
export class LeaderElector {
  readonly leaseDurationMs: number;
  readonly renewDeadlineMs: number;
  readonly retryPeriodMs: number;
  private observed: { resourceVersion: string; holder: string | undefined; atMs: number } | undefined;
  private leading = false;
  /** When the lease was last read or written successfully, leader or not. */
  private lastContactMs: number | undefined;

  constructor(
    private readonly client: KubeClient,
    private readonly config: LeaderElectionConfig,
    private readonly logger: Logger,
    private readonly clock: Clock = systemClock,
    private readonly metrics?: OperatorMetrics,
  ) {
    this.leaseDurationMs = config.leaseDurationMs ?? 15_000;
    this.renewDeadlineMs = config.renewDeadlineMs ?? 10_000;
    this.retryPeriodMs = config.retryPeriodMs ?? 2_000;
    if (!(this.leaseDurationMs > this.renewDeadlineMs && this.renewDeadlineMs > this.retryPeriodMs)) {
      throw new Error("leader election needs leaseDuration > renewDeadline > retryPeriod");
    }
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** A standby that still reaches the lease is healthy; one that has not for a lease duration is not. */
  get isHealthy(): boolean {
    return this.lastContactMs !== undefined && this.clock.now() - this.lastContactMs < this.leaseDurationMs;
  }

  /** Tries every retry period until the lease is ours (true) or `signal` aborts (false). */
  async acquire(signal: AbortSignal): Promise<boolean> {
    this.logger.info({ lease: this.config.name, identity: this.config.identity }, "waiting for leadership");
    while (!signal.aborted) {
      if (await this.tryAcquireOrRenew(signal)) {
        this.setLeading(true);
        this.logger.info({ lease: this.config.name, identity: this.config.identity }, "leadership acquired");
        return true;
      }
      await sleep(this.clock, this.retryPeriodMs * (1 + Math.random() * 0.2), signal);
    }
    return false;
  }

  /**
   * Renews every retry period until `signal` aborts ("stopped") or no renewal succeeded for the
   * renew deadline ("lost"). The caller must stop all work at once on "lost".
   */
  async holdUntilLost(signal: AbortSignal): Promise<LeadershipOutcome> {
    let lastRenewMs = this.clock.now();
    while (!signal.aborted) {
      await sleep(this.clock, this.retryPeriodMs, signal);
      if (signal.aborted) break;
      const remainingMs = this.renewDeadlineMs - (this.clock.now() - lastRenewMs);
      const attempt = AbortSignal.any([signal, AbortSignal.timeout(Math.max(1, remainingMs))]);
      if (await this.tryAcquireOrRenew(attempt)) {
        lastRenewMs = this.clock.now();
      } else if (this.clock.now() - lastRenewMs >= this.renewDeadlineMs || this.observedOtherHolder()) {
        this.setLeading(false);
        this.logger.error({ lease: this.config.name, identity: this.config.identity }, "leadership lost");
        return "lost";
      }
    }
    return "stopped";
  }

  /** Gives the lease up (after work has stopped) so a standby takes over without waiting for expiry. */
  async release(): Promise<void> {
    if (!this.leading) return;
    this.setLeading(false);
    try {
      const lease = await this.read(AbortSignal.timeout(this.renewDeadlineMs));
      if (!lease || lease.spec?.holderIdentity !== this.config.identity) return;
      const now = microTime(this.clock.now());
      await this.write(
        lease,
        { ...lease.spec, holderIdentity: null, leaseDurationSeconds: 1, renewTime: now, acquireTime: now },
        AbortSignal.timeout(this.renewDeadlineMs),
      );
      this.logger.info({ lease: this.config.name, identity: this.config.identity }, "leadership released");
    } catch (error) {
      this.logger.warn({ lease: this.config.name, err: errorMessage(error) }, "could not release the lease");
    }
  }

  private observedOtherHolder(): boolean {
    return this.observed !== undefined && this.observed.holder !== this.config.identity;
  }

  private setLeading(leading: boolean): void {
    this.leading = leading;
    this.metrics?.isLeader.set({ lease: this.config.name }, leading ? 1 : 0);
  }

  private async tryAcquireOrRenew(signal: AbortSignal): Promise<boolean> {
    const now = this.clock.now();
    const { identity } = this.config;
    const leaseDurationSeconds = Math.ceil(this.leaseDurationMs / 1000);
    try {
      const lease = await this.read(signal);
      if (!lease) {
        await this.client.create(
          LEASE_RESOURCE,
          {
            apiVersion: LEASE_RESOURCE.apiVersion,
            kind: LEASE_RESOURCE.kind,
            metadata: { name: this.config.name, namespace: this.config.namespace },
            spec: {
              holderIdentity: identity,
              leaseDurationSeconds,
              acquireTime: microTime(now),
              renewTime: microTime(now),
              leaseTransitions: 0,
            },
          },
          signal,
        );
        this.lastContactMs = now;
        return true;
      }
      this.lastContactMs = now;
      const holder = lease.spec?.holderIdentity ?? undefined;
      if (this.observed?.resourceVersion !== lease.metadata.resourceVersion) {
        this.observed = { resourceVersion: lease.metadata.resourceVersion, holder, atMs: now };
      }
      const heldByOther = holder !== undefined && holder !== identity;
      if (heldByOther && this.observed.atMs + this.leaseDurationMs > now) return false;
      const spec = lease.spec ?? {};
      await this.write(
        lease,
        {
          ...spec,
          holderIdentity: identity,
          leaseDurationSeconds,
          renewTime: microTime(now),
          ...(holder === identity
            ? {}
            : { acquireTime: microTime(now), leaseTransitions: (spec.leaseTransitions ?? 0) + 1 }),
        },
        signal,
      );
      return true;
    } catch (error) {
      // 409: someone else wrote the lease first; they won this round.
      if (!(error instanceof KubeApiError && error.code === 409) && !signal.aborted) {
        this.logger.warn({ lease: this.config.name, err: errorMessage(error) }, "lease request failed");
      }
      return false;
    }
  }

  private async read(signal: AbortSignal): Promise<Lease | undefined> {
    const object = await this.client.get(LEASE_RESOURCE, this.config, signal);
    return object ? leaseSchema.parse(object) : undefined;
  }

  private async write(lease: Lease, spec: Record<string, unknown>, signal: AbortSignal): Promise<void> {
    const written = await this.client.update(
      LEASE_RESOURCE,
      {
        apiVersion: LEASE_RESOURCE.apiVersion,
        kind: LEASE_RESOURCE.kind,
        metadata: {
          name: this.config.name,
          namespace: this.config.namespace,
          resourceVersion: lease.metadata.resourceVersion,
        },
        spec,
      },
      signal,
    );
    this.observed = {
      resourceVersion: written.metadata.resourceVersion,
      holder: (spec.holderIdentity as string | null | undefined) ?? undefined,
      atMs: this.clock.now(),
    };
  }
}
