import { watchTopics } from "../broker/admin-session.js";
import type { DynsecConnection } from "../broker/dynsec-client.js";
import {
  BROKER_LOG_TOPIC,
  type BrokerLogState,
  type BrokerSecurityEvent,
  foldBrokerLog,
  INITIAL_BROKER_LOG_STATE,
  parseBrokerLogLine,
} from "../broker/log-events.js";
import { parseTamperReport, parseTamperReportTopic, TAMPER_REPORT_FILTERS } from "../broker/tamper-report.js";
import { parseTenantObject, tenantPlacement } from "../controllers/parse.js";
import { Resource } from "../controllers/resources.js";
import { QUARANTINE_ANNOTATION, TENANT_LABEL } from "../desired/labels.js";
import { quarantineNote, quarantineOf, shouldQuarantine } from "../desired/quarantine.js";
import { REVOCATION_LABEL } from "../desired/revocation.js";
import { tenantNamespaces, tenantTopicRoot, topicRootConflict } from "../desired/tenant.js";
import { sleep } from "../runtime/clock.js";
import type { Informer } from "../runtime/informer.js";
import { KubeApiError } from "../runtime/kube-client.js";
import { type KubeObject, objectKey, parseObjectKey } from "../runtime/kube-object.js";
import type { Manager } from "../runtime/manager.js";
import type { AuditEntry } from "./chain.js";
import {
  deviceSecurityEvents,
  revocationSecurityEvents,
  type SecurityEvent,
  tenantSecurityEvents,
} from "./cluster-events.js";
import { Coalescer } from "./coalesce.js";
import { PresenceWriter } from "./presence.js";
import type { AuditTrail } from "./trail.js";

/**
 * The bound on Kubernetes Events from security events: per object and reason (and note, for the
 * cluster's one-off events) at most one write every 30 s carrying the count of what happened
 * meanwhile, and at most 10 writes a second over all objects. Broker events go into the audit trail
 * aggregated the same way per kind, identity and source host, every 10 s.
 */
export const EVENT_LIMITS = { intervalMs: 30_000, writesPerSecond: 10, maxKeys: 10_000 } as const;
export const BROKER_AUDIT_LIMITS = { intervalMs: 10_000, writesPerSecond: 1_000, maxKeys: 10_000 } as const;
const TICK_MS = 1_000;

/**
 * Turns what the informers and the broker's log report into security events and records each as a
 * counter, an aggregated Kubernetes Event on its Device or Tenant, and an audit record. Runs on the
 * leader only, so one replica writes the trail.
 */
export class SecurityMonitor {
  private readonly devices: Informer;
  private readonly tenants: Informer;
  private readonly namespaces: Informer;
  private readonly revocations: Informer;
  private readonly events = new Coalescer<SecurityEvent>(EVENT_LIMITS);
  private readonly brokerAudit = new Coalescer<AuditEntry>(BROKER_AUDIT_LIMITS);
  private readonly presence: PresenceWriter;
  /** Broker username → `namespace/name` of its Device, from Device status. */
  private readonly usernames = new Map<string, string>();
  /** Quarantines to record on their Device (`namespace/name` → why), written at the next tick and retried until written. */
  private readonly quarantines = new Map<string, string>();
  private brokerLog: BrokerLogState = INITIAL_BROKER_LOG_STATE;
  private running = false;
  private wake: () => void = () => undefined;

  constructor(
    private readonly manager: Manager,
    private readonly trail: AuditTrail,
    /** Mosquitto's admin connection, for its $SYS log and tamper reports; absent: neither (NATS's are not read yet). */
    private readonly broker: DynsecConnection | undefined,
    operatorNamespace: string,
  ) {
    this.devices = manager.informer(Resource.device);
    this.tenants = manager.informer(Resource.tenant);
    this.namespaces = manager.informer(Resource.namespace);
    this.revocations = manager.informer(Resource.secret, {
      namespace: operatorNamespace,
      labelSelector: `${REVOCATION_LABEL}=true`,
    });
    this.presence = new PresenceWriter(
      manager.client,
      manager.clock,
      manager.logger.child({ component: "presence" }),
    );
  }

  register(): void {
    const tenantOf = (device: KubeObject) =>
      this.namespaces.get(device.metadata.namespace ?? "")?.metadata.labels?.[TENANT_LABEL];
    this.devices.addHandler({
      onAdd: (device) => {
        this.indexUsername(undefined, device);
        this.observe(deviceSecurityEvents(undefined, device, tenantOf(device)));
      },
      onUpdate: (before, after) => {
        this.indexUsername(before, after);
        this.observe(deviceSecurityEvents(before, after, tenantOf(after)));
      },
      onDelete: (device) => {
        this.indexUsername(device, undefined);
        this.observe(deviceSecurityEvents(device, undefined, tenantOf(device)));
      },
    });
    this.tenants.addHandler({
      onUpdate: (before, after) => this.observe(tenantSecurityEvents(before, after)),
    });
    this.revocations.addHandler({
      onAdd: (record) =>
        this.observe(revocationSecurityEvents(record, record.metadata.labels?.[TENANT_LABEL])),
    });
  }

  /**
   * Runs while this replica leads: the broker's log, and the aggregated writes every second, or at
   * once after an event so its writes follow the change that caused it (the bounds are the
   * coalescers', not the loop's).
   */
  async run(signal: AbortSignal): Promise<void> {
    const { logger, clock } = this.manager;
    await this.trail.start();
    for (const device of this.devices.list()) this.indexUsername(undefined, device);
    const log =
      this.broker &&
      (await watchTopics(
        this.broker,
        [BROKER_LOG_TOPIC, ...TAMPER_REPORT_FILTERS],
        (message) =>
          message.topic.startsWith("$SYS/")
            ? this.onBrokerLog(message.payload.toString("utf8"))
            : this.onTamperReport(message),
        (error) => logger.warn({ err: error }, "broker log subscription"),
      ));
    this.running = true;
    try {
      while (!signal.aborted) {
        await Promise.race([sleep(clock, TICK_MS, signal), new Promise<void>((wake) => (this.wake = wake))]);
        await this.tick();
      }
    } finally {
      this.running = false;
      await log?.close();
      for (const { value, count } of this.brokerAudit.drain()) this.trail.append({ ...value, count });
      await this.trail.stop();
    }
  }

  private indexUsername(before: KubeObject | undefined, after: KubeObject | undefined): void {
    const username = (o: KubeObject | undefined) =>
      (o as { status?: { username?: string } } | undefined)?.status?.username;
    const old = username(before);
    if (old && old !== username(after)) this.usernames.delete(old);
    const current = username(after);
    if (after && current) this.usernames.set(current, `${after.metadata.namespace}/${after.metadata.name}`);
  }

  private observe(events: readonly SecurityEvent[]): void {
    if (!this.running) return;
    const now = this.manager.clock.now();
    for (const event of events) {
      this.manager.metrics.securityEvent(event);
      const regarding = event.regarding ?? (event.device ? this.devices.get(event.device) : undefined);
      if (regarding) {
        const key = [regarding.metadata.uid, event.kind, event.source === "cluster" ? event.note : ""].join(
          "|",
        );
        this.events.offer(key, { ...event, regarding }, now);
        this.wake();
      }
      const entry = auditEntry(event);
      if (event.source === "cluster") this.trail.append(entry);
      else
        this.brokerAudit.offer(
          [event.kind, event.device ?? "", event.detail?.remoteHost ?? "", event.detail?.reason ?? ""].join(
            "|",
          ),
          entry,
          now,
        );
    }
  }

  private onBrokerLog(payload: string): void {
    this.manager.logger.trace({ payload }, "broker log line");
    const line = parseBrokerLogLine(payload);
    if (!line) return;
    const { state, events } = foldBrokerLog(this.brokerLog, line);
    this.brokerLog = state;
    this.observe(events.flatMap((event) => this.fromBroker(event)));
  }

  /**
   * A device's report on its reserved topic. The topic names the reporter (no device may publish on
   * another's), so the payload is only what happened. A retained copy is no new report.
   */
  private onTamperReport(message: { topic: string; payload: Buffer; retained: boolean }): void {
    const { logger } = this.manager;
    const place = parseTamperReportTopic(message.topic);
    const reporter = place && !message.retained ? this.reporter(place) : undefined;
    if (!reporter) return;
    const device = objectKey(reporter.device.metadata);
    const parsed = parseTamperReport(message.payload);
    if (!parsed.ok) {
      logger.warn({ device, problem: parsed.problem }, "tamper report refused");
      return;
    }
    const { report } = parsed;
    const event: SecurityEvent = {
      kind: "TamperReported",
      source: "broker",
      type: "Warning",
      regarding: reporter.device,
      device,
      tenant: reporter.tenant.metadata.name,
      note: `the device reported ${report.type}${report.message ? `: ${report.message}` : ""}`,
      detail: {
        type: report.type,
        ...(report.observedAt ? { observedAt: report.observedAt } : {}),
        ...(report.message ? { message: report.message } : {}),
      },
    };
    this.observe([event]);
    const quarantine = shouldQuarantine({
      kind: event.kind,
      quarantineOn: reporter.tenant.spec.devicePolicy?.quarantineOn,
      quarantined: quarantineOf(reporter.device) !== undefined,
    });
    if (quarantine && !this.quarantines.has(device)) {
      this.quarantines.set(
        device,
        quarantineNote(event.kind, event.note, new Date(this.manager.clock.now())),
      );
      this.wake();
    }
  }

  /**
   * The Device of a reserved topic: the one of that name in the namespaces of the Tenant that holds
   * the root (a Tenant whose root conflicts holds nothing on the broker), with broker credentials.
   */
  private reporter(place: { topicRoot: string; device: string }) {
    const placements = this.tenants.list().map(tenantPlacement);
    const owner = placements.find(
      (t) => tenantTopicRoot(t) === place.topicRoot && !topicRootConflict(t, placements),
    );
    if (!owner) return undefined;
    const name = owner.metadata.name;
    const devices = tenantNamespaces(owner).flatMap((namespace) => {
      const device = this.devices.get(objectKey({ namespace, name: place.device }));
      const owned = this.namespaces.get(namespace)?.metadata.labels?.[TENANT_LABEL] === name;
      const provisioned = (device as { status?: { username?: string } } | undefined)?.status?.username;
      return device && owned && provisioned ? [device] : [];
    });
    const tenant = this.tenants.get(name);
    if (devices.length !== 1 || !devices[0] || !tenant) return undefined;
    try {
      return { device: devices[0], tenant: parseTenantObject(tenant) };
    } catch {
      return undefined;
    }
  }

  /**
   * Recorded on the Device, where the Device reconciler acts on it and it outlives this replica. A
   * Device gone meanwhile (404) needs none; other failures are retried at the next tick.
   */
  private async recordQuarantines(): Promise<void> {
    for (const [key, note] of this.quarantines) {
      const { namespace = "", name } = parseObjectKey(key);
      try {
        await this.manager.client.mergePatch(
          Resource.device,
          { namespace, name },
          { metadata: { annotations: { [QUARANTINE_ANNOTATION]: note } } },
        );
        this.quarantines.delete(key);
      } catch (error) {
        if (error instanceof KubeApiError && error.code === 404) this.quarantines.delete(key);
        else this.manager.logger.error({ err: error, device: key }, "quarantine not recorded yet; retrying");
      }
    }
  }

  /** A broker event as a security event of its Device; connects and disconnects of no Device (the admin's) are none. */
  private fromBroker(event: BrokerSecurityEvent): SecurityEvent[] {
    const device = event.username === undefined ? undefined : this.usernames.get(event.username);
    const observed = device ? this.devices.get(device) : undefined;
    const tenant =
      observed && this.namespaces.get(observed.metadata.namespace ?? "")?.metadata.labels?.[TENANT_LABEL];
    if (!device && event.kind !== "AuthenticationRefused") return [];
    if (device && (event.kind === "Connected" || event.kind === "Disconnected"))
      this.presence.observe(device, {
        connected: event.kind === "Connected",
        lastSeen: new Date(this.manager.clock.now()).toISOString(),
        ...(event.remoteAddress ? { remoteAddress: event.remoteAddress } : {}),
      });
    const remoteHost = event.remoteAddress?.replace(/:\d+$/, "");
    return [
      {
        kind: event.kind,
        source: "broker",
        type: event.kind === "Connected" || event.kind === "Disconnected" ? "Normal" : "Warning",
        ...(observed ? { regarding: observed } : {}),
        ...(device ? { device } : {}),
        ...(tenant ? { tenant } : {}),
        note: brokerNote(event, remoteHost),
        detail: {
          ...(event.username === undefined ? {} : { username: event.username }),
          ...(remoteHost === undefined ? {} : { remoteHost }),
          ...(event.remoteAddress === undefined ? {} : { remoteAddress: event.remoteAddress }),
          ...(event.detail === undefined ? {} : { reason: event.detail }),
        },
      },
    ];
  }

  private async tick(): Promise<void> {
    // The cut-off first: Events and presence may wait on the API server's rate limit.
    await this.recordQuarantines();
    const now = this.manager.clock.now();
    for (const { value, count } of this.brokerAudit.take(now))
      this.trail.append({ ...value, ...(count > 1 ? { count } : {}) });
    for (const { value, count } of this.events.take(now)) {
      // A terminating namespace refuses new Events (403); the counter and the record still have it.
      const namespace = value.regarding?.metadata.namespace;
      if (!value.regarding || (namespace && this.namespaces.get(namespace)?.metadata.deletionTimestamp))
        continue;
      await this.manager.events.record(
        value.regarding,
        {
          type: value.type,
          reason: value.kind,
          action: value.source === "broker" ? "Observe" : "Audit",
          note: value.note,
        },
        count,
      );
    }
    await this.presence.tick();
    const { securityEventsNotRecorded } = this.manager.metrics;
    securityEventsNotRecorded.inc({ sink: "event" }, this.events.takeDropped());
    securityEventsNotRecorded.inc({ sink: "audit" }, this.brokerAudit.takeDropped());
    securityEventsNotRecorded.inc({ sink: "presence" }, this.presence.takeDropped());
  }
}

/** The Event's note names the host without the port, so repeats from one place aggregate into one Event's series. */
function brokerNote(event: BrokerSecurityEvent, remoteHost: string | undefined): string {
  const from = remoteHost ? ` from ${remoteHost}` : "";
  switch (event.kind) {
    case "Connected":
      return `connected to the broker${from}`;
    case "Disconnected":
      return `disconnected from the broker (${event.detail ?? "disconnected"})`;
    case "AuthenticationRefused":
      return `broker refused a login${from}: ${event.detail ?? ""}`;
    case "SessionTakenOver":
      return "a second connection with this identity took over the session";
  }
}

/** What the trail keeps of an event: no object, only names, and `detail` that never holds secrets. */
function auditEntry(event: SecurityEvent): AuditEntry {
  return {
    kind: event.kind,
    source: event.source,
    ...(event.tenant ? { tenant: event.tenant } : {}),
    ...(event.device ? { device: event.device } : {}),
    ...(event.detail && Object.keys(event.detail).length > 0
      ? { detail: { ...event.detail, note: event.note } }
      : { detail: { note: event.note } }),
  };
}
