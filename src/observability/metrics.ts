import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { WorkQueueMetrics } from "../runtime/work-queue.js";

/** Kubernetes verbs as the runtime issues them. */
export type ApiVerb = "get" | "list" | "watch" | "create" | "update" | "patch" | "apply" | "delete";

/** Verbs that change cluster state: after convergence none of these should be counted any more. */
export const WRITE_VERBS: readonly ApiVerb[] = ["create", "update", "patch", "apply", "delete"];

export type ReconcileResult = "success" | "requeue_after" | "error" | "conflict" | "terminal";

/**
 * The operator's Prometheus metrics, in its own registry so several managers (tests) can share a
 * process. Names follow controller-runtime's so existing dashboards apply.
 */
export class OperatorMetrics {
  readonly registry = new Registry();
  readonly reconcileTotal: Counter<"controller" | "result">;
  readonly reconcileErrors: Counter<"controller">;
  readonly terminalReconcileErrors: Counter<"controller">;
  readonly reconcileDuration: Histogram<"controller">;
  readonly activeWorkers: Gauge<"controller">;
  readonly queueDepth: Gauge<"name" | "priority">;
  readonly queueAdds: Counter<"name">;
  readonly queueLatency: Histogram<"name" | "priority">;
  readonly queueRetries: Counter<"name">;
  readonly apiRequests: Counter<"verb" | "code" | "resource">;
  readonly informerLists: Counter<"resource">;
  readonly informerWatchRestarts: Counter<"resource" | "reason">;
  readonly informerSynced: Gauge<"resource">;
  readonly isLeader: Gauge<"lease">;
  readonly brokerCommands: Counter<"command" | "result">;
  readonly brokerCommandDuration: Histogram<"command">;
  readonly brokerSynced: Gauge;
  readonly brokerCutOffStage: Histogram<"stage" | "behind">;
  readonly securityEvents: Counter<"tenant" | "kind">;
  readonly securityEventsNotRecorded: Counter<"sink">;

  constructor(options: { readonly processMetrics?: boolean } = {}) {
    const registers = [this.registry];
    if (options.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
    const durationBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
    this.reconcileTotal = new Counter({
      name: "controller_runtime_reconcile_total",
      help: "Reconciliations per controller and result",
      labelNames: ["controller", "result"],
      registers,
    });
    this.reconcileErrors = new Counter({
      name: "controller_runtime_reconcile_errors_total",
      help: "Reconciliations that failed with a transient error",
      labelNames: ["controller"],
      registers,
    });
    this.terminalReconcileErrors = new Counter({
      name: "controller_runtime_terminal_reconcile_errors_total",
      help: "Reconciliations that failed with a terminal error (not retried)",
      labelNames: ["controller"],
      registers,
    });
    this.reconcileDuration = new Histogram({
      name: "controller_runtime_reconcile_time_seconds",
      help: "Time per reconciliation",
      labelNames: ["controller"],
      buckets: durationBuckets,
      registers,
    });
    this.activeWorkers = new Gauge({
      name: "controller_runtime_active_workers",
      help: "Workers currently reconciling",
      labelNames: ["controller"],
      registers,
    });
    this.queueDepth = new Gauge({
      name: "workqueue_depth",
      help: "Keys waiting for a worker, by queue priority (100 cut-off, 0 normal, -100 initial list)",
      labelNames: ["name", "priority"],
      registers,
    });
    this.queueAdds = new Counter({
      name: "workqueue_adds_total",
      help: "Keys added to the queue",
      labelNames: ["name"],
      registers,
    });
    this.queueLatency = new Histogram({
      name: "workqueue_queue_duration_seconds",
      help: "Time a key waits in the queue before a worker takes it, by queue priority",
      labelNames: ["name", "priority"],
      buckets: durationBuckets,
      registers,
    });
    this.queueRetries = new Counter({
      name: "workqueue_retries_total",
      help: "Keys re-added with backoff",
      labelNames: ["name"],
      registers,
    });
    this.apiRequests = new Counter({
      name: "rest_client_requests_total",
      help: "Kubernetes API requests by verb, resource and HTTP status (or 'error' when no response came)",
      labelNames: ["verb", "code", "resource"],
      registers,
    });
    this.informerLists = new Counter({
      name: "informer_lists_total",
      help: "Full lists per resource (initial sync and relists after 410 Gone)",
      labelNames: ["resource"],
      registers,
    });
    this.informerWatchRestarts = new Counter({
      name: "informer_watch_restarts_total",
      help: "Watch connections re-opened, by reason",
      labelNames: ["resource", "reason"],
      registers,
    });
    this.informerSynced = new Gauge({
      name: "informer_synced",
      help: "1 once the informer has completed its first list",
      labelNames: ["resource"],
      registers,
    });
    this.isLeader = new Gauge({
      name: "leader_election_master_status",
      help: "1 while this replica holds the lease",
      labelNames: ["lease"],
      registers,
    });
    this.brokerCommands = new Counter({
      name: "iot_broker_commands_total",
      help: "Mutating broker commands by command and result (ok or error)",
      labelNames: ["command", "result"],
      registers,
    });
    this.brokerCommandDuration = new Histogram({
      name: "iot_broker_command_duration_seconds",
      help: "Time the broker took per command; on Mosquitto 2.0 it grows with the fleet and stalls every client meanwhile",
      labelNames: ["command"],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers,
    });
    this.brokerCutOffStage = new Histogram({
      name: "iot_broker_cutoff_seconds",
      help: "A cut-off in the broker adapter: stage wait (asked for until its first command is sent) and command (until the broker answered), by what the adapter was doing when it was asked (idle, command, pause, read)",
      labelNames: ["stage", "behind"],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    });
    this.brokerSynced = new Gauge({
      name: "iot_broker_synced",
      help: "1 while the broker is reachable and holds the desired state",
      registers,
    });
    this.securityEvents = new Counter({
      name: "iot_security_events_total",
      help: "Security events by tenant and kind (every occurrence, before Events and audit records are aggregated)",
      labelNames: ["tenant", "kind"],
      registers,
    });
    this.securityEventsNotRecorded = new Counter({
      name: "iot_security_events_not_recorded_total",
      help: "Occurrences an aggregator dropped because too many distinct keys were pending (sink: event, audit, presence)",
      labelNames: ["sink"],
      registers,
    });
  }

  /** One security event; `tenant` is empty when the broker names nobody (a refused login). */
  securityEvent(event: { readonly tenant?: string | undefined; readonly kind: string }): void {
    this.securityEvents.inc({ tenant: event.tenant ?? "", kind: event.kind });
  }

  /** One mutating command the broker adapter sent. */
  brokerCommand(event: {
    readonly command: string;
    readonly durationMs: number;
    readonly error?: string;
  }): void {
    this.brokerCommands.inc({ command: event.command, result: event.error === undefined ? "ok" : "error" });
    this.brokerCommandDuration.observe({ command: event.command }, event.durationMs / 1000);
  }

  /** One cut-off's first broker command (epoch milliseconds). */
  brokerCutOff(event: {
    readonly requestedAt: number;
    readonly sentAt: number;
    readonly ackedAt: number;
    readonly behind: string;
  }): void {
    const { behind } = event;
    this.brokerCutOffStage.observe({ stage: "wait", behind }, (event.sentAt - event.requestedAt) / 1000);
    this.brokerCutOffStage.observe({ stage: "command", behind }, (event.ackedAt - event.sentAt) / 1000);
  }

  forQueue(name: string): WorkQueueMetrics {
    return {
      depth: (priority, items) => this.queueDepth.set({ name, priority }, items),
      added: () => this.queueAdds.inc({ name }),
      queued: (priority, seconds) => this.queueLatency.observe({ name, priority }, seconds),
      retried: () => this.queueRetries.inc({ name }),
    };
  }

  /** Write requests issued so far (what a converged operator must stop adding to). */
  async writeRequests(): Promise<number> {
    const { values } = await this.apiRequests.get();
    return values
      .filter((sample) => WRITE_VERBS.includes(sample.labels.verb as ApiVerb))
      .reduce((sum, sample) => sum + sample.value, 0);
  }
}
