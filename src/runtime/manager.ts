import { hostname } from "node:os";
import type { z } from "zod";
import { createLogger, type Logger } from "../observability/logger.js";
import { OperatorMetrics } from "../observability/metrics.js";
import { type ProbeServer, startProbeServer } from "../observability/probe-server.js";
import { type Clock, systemClock } from "./clock.js";
import type { ClusterAccess } from "./cluster-access.js";
import { Controller, type ControllerOptions } from "./controller.js";
import { errorMessage } from "./errors.js";
import { EventRecorder } from "./events.js";
import { Informer, type InformerOptions } from "./informer.js";
import { KubeClient } from "./kube-client.js";
import type { KubeObject, ResourceType } from "./kube-object.js";
import { type LeaderElectionConfig, LeaderElector } from "./leader-election.js";

export interface ManagerOptions {
  readonly kubeConfig: ClusterAccess;
  /** Unique per replica: the lease holder and the Events' reporting instance. Defaults to the host name. */
  readonly identity?: string;
  readonly logger?: Logger;
  readonly metrics?: OperatorMetrics;
  readonly clock?: Clock;
  /** Without it every replica reconciles (fine for one replica and for tests). */
  readonly leaderElection?: Omit<LeaderElectionConfig, "identity">;
  /** The /healthz, /readyz and /metrics server; off when absent. Port 0 picks a free port. */
  readonly probes?: { readonly host?: string; readonly port: number };
  /** How long SIGTERM waits for in-flight reconciles before giving up (default 30 s). */
  readonly shutdownTimeoutMs?: number;
  /** Watch tuning applied to every informer (tests shorten the retry backoff). */
  readonly informerDefaults?: Pick<
    InformerOptions<KubeObject>,
    "inactivityTimeoutMs" | "watchTimeoutSeconds" | "retryInitialMs" | "retryMaxMs"
  >;
}

/** Thrown out of `run` when the lease was lost: the process should exit so it restarts clean. */
export class LeadershipLostError extends Error {
  constructor() {
    super("leader election lost");
    this.name = "LeadershipLostError";
  }
}

/**
 * Wires the runtime together: shared informers (run on every replica so standbys stay warm),
 * leader election, controllers (only on the leader), probes and metrics, and the graceful drain.
 */
export class Manager {
  readonly client: KubeClient;
  readonly events: EventRecorder;
  readonly metrics: OperatorMetrics;
  readonly logger: Logger;
  readonly clock: Clock;
  readonly identity: string;
  private readonly informers = new Map<string, Informer<KubeObject>>();
  private readonly controllers: Controller<KubeObject>[] = [];
  private readonly leaderRunnables: Array<(signal: AbortSignal) => Promise<void>> = [];
  private readonly elector: LeaderElector | undefined;
  private readonly stopping = new AbortController();
  private probeServer: ProbeServer | undefined;
  private leading = false;
  private runPromise: Promise<void> | undefined;

  constructor(private readonly options: ManagerOptions) {
    this.identity = options.identity ?? hostname();
    this.logger = options.logger ?? createLogger();
    this.metrics = options.metrics ?? new OperatorMetrics();
    this.clock = options.clock ?? systemClock;
    this.client = new KubeClient(options.kubeConfig, { metrics: this.metrics });
    this.events = new EventRecorder(this.client, this.identity, this.logger, this.clock);
    this.elector = options.leaderElection
      ? new LeaderElector(
          this.client,
          { ...options.leaderElection, identity: this.identity },
          this.logger,
          this.clock,
          this.metrics,
        )
      : undefined;
  }

  /** The shared informer for `resource` (one per resource, namespace and selector). */
  informer<T extends KubeObject = KubeObject>(
    resource: ResourceType,
    options: {
      namespace?: string;
      labelSelector?: string;
      fieldSelector?: string;
      schema?: z.ZodType<T>;
    } = {},
  ): Informer<T> {
    const key = [
      resource.apiVersion,
      resource.plural,
      options.namespace,
      options.labelSelector,
      options.fieldSelector,
    ].join("|");
    let informer = this.informers.get(key);
    if (!informer) {
      if (this.runPromise) throw new Error("informers must be created before the manager runs");
      informer = new Informer<T>(
        this.client,
        { ...this.options.informerDefaults, ...options, resource, clock: this.clock },
        this.logger,
        this.metrics,
      ) as unknown as Informer<KubeObject>;
      this.informers.set(key, informer);
    }
    return informer as unknown as Informer<T>;
  }

  addController<T extends KubeObject>(options: ControllerOptions<T>): Controller<T> {
    if (this.runPromise) throw new Error("controllers must be added before the manager runs");
    const controller = new Controller<T>(options, {
      logger: this.logger,
      events: this.events,
      clock: this.clock,
      metrics: this.metrics,
    });
    this.controllers.push(controller as unknown as Controller<KubeObject>);
    return controller;
  }

  /**
   * Work that runs only while this replica leads, like controller-runtime's leader-election
   * runnables: started with the controllers, its signal aborted when leadership ends, and awaited
   * before the lease is released, so a successor never overlaps with it on a graceful stop.
   */
  addLeaderRunnable(run: (signal: AbortSignal) => Promise<void>): void {
    if (this.runPromise) throw new Error("runnables must be added before the manager runs");
    this.leaderRunnables.push(run);
  }

  get probePort(): number | undefined {
    return this.probeServer?.port;
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** Why /readyz fails: informers not synced, or a standby that cannot reach its lease. */
  notReadyReason(): string | undefined {
    const unsynced = [...this.informers.values()].filter((informer) => !informer.hasSynced);
    if (unsynced.length > 0)
      return `informers not synced: ${unsynced.map((i) => i.resource.plural).join(", ")}`;
    if (this.elector && !this.elector.isLeader && !this.elector.isHealthy)
      return "cannot reach the leader election lease";
    return undefined;
  }

  /** Starts the probe server; resolves with the port once it listens. Called by `run` if not before. */
  async listen(): Promise<number | undefined> {
    if (this.options.probes && !this.probeServer) {
      this.probeServer = await startProbeServer({
        host: this.options.probes.host ?? "127.0.0.1",
        port: this.options.probes.port,
        registry: this.metrics.registry,
        notReadyReason: () => this.notReadyReason(),
      });
      this.logger.info({ port: this.probeServer.port }, "serving /healthz, /readyz and /metrics");
    }
    return this.probeServer?.port;
  }

  /**
   * Runs until `stop` (resolves) or until leadership is lost (rejects with LeadershipLostError,
   * after stopping all reconciles at once).
   */
  run(): Promise<void> {
    this.runPromise ??= this.runUntilStopped();
    return this.runPromise;
  }

  /** Graceful stop: no new reconciles, drain in-flight ones (bounded), release the lease, stop informers. */
  async stop(): Promise<void> {
    this.stopping.abort();
    await this.runPromise?.catch(() => {});
  }

  /** SIGTERM/SIGINT → graceful stop. Returns a function that removes the handlers. */
  stopOnSignals(): () => void {
    const onSignal = (signal: NodeJS.Signals) => {
      this.logger.info({ signal }, "shutting down");
      void this.stop();
    };
    process.once("SIGTERM", onSignal);
    process.once("SIGINT", onSignal);
    return () => {
      process.off("SIGTERM", onSignal);
      process.off("SIGINT", onSignal);
    };
  }

  private async runUntilStopped(): Promise<void> {
    const stopSignal = this.stopping.signal;
    const shutdownTimeoutMs = this.options.shutdownTimeoutMs ?? 30_000;
    await this.listen();
    const informers = [
      ...new Set([...this.informers.values(), ...this.controllers.flatMap((c) => c.informers)]),
    ];
    for (const informer of informers) informer.start();
    try {
      await Promise.all(informers.map((informer) => informer.waitForSync(stopSignal)));
      if (stopSignal.aborted) return;
      this.logger.info({ informers: informers.length }, "caches synced");
      if (this.elector && !(await this.elector.acquire(stopSignal))) return;

      const leadership = new AbortController();
      this.leading = true;
      for (const controller of this.controllers) controller.start(leadership.signal);
      const runnables = this.leaderRunnables.map((run) =>
        run(leadership.signal).catch((error: unknown) =>
          this.logger.error({ err: error }, "leader runnable failed"),
        ),
      );
      const outcome = this.elector
        ? await this.elector.holdUntilLost(stopSignal)
        : await untilAborted(stopSignal);
      this.leading = false;
      if (outcome === "lost") {
        leadership.abort();
        await Promise.all([...this.controllers.map((controller) => controller.stop(0)), ...runnables]);
        throw new LeadershipLostError();
      }
      const drained = await Promise.all(
        this.controllers.map((controller) => controller.stop(shutdownTimeoutMs)),
      );
      leadership.abort();
      await Promise.all(runnables);
      this.logger.info({ drained: drained.every(Boolean) }, "controllers stopped");
      await this.elector?.release();
    } catch (error) {
      if (!(error instanceof LeadershipLostError))
        this.logger.error({ err: errorMessage(error) }, "manager failed");
      throw error;
    } finally {
      await Promise.all(informers.map((informer) => informer.stop()));
      await this.probeServer?.close();
      this.probeServer = undefined;
    }
  }
}

function untilAborted(signal: AbortSignal): Promise<"stopped"> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve("stopped");
    else signal.addEventListener("abort", () => resolve("stopped"), { once: true });
  });
}
