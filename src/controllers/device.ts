import { ConditionReason, DeviceConditionType } from "../api/conditions.js";
import { deviceSecretName } from "../api/derived-names.js";
import type { Device } from "../api/device.js";
import type { Tenant } from "../api/tenant.js";
import { PRESENCE_FIELD } from "../audit/presence.js";
import type { BrokerAdapter, BrokerDevice, SyncReport } from "../broker/adapter.js";
import type { OperatorConfig } from "../config.js";
import { brokerDevice } from "../desired/device.js";
import {
  type Admission,
  type AdmissionDevice,
  admitDevice,
  admitDevices,
  nameHolder,
  prepareAdmission,
  type Refusal,
} from "../desired/device-admission.js";
import { type ConditionOutcome, deviceConditions } from "../desired/device-status.js";
import {
  DEVICE_FINALIZER,
  DEVICE_LABEL,
  DEVICE_NAMESPACE_LABEL,
  QUARANTINE_ANNOTATION,
  TENANT_LABEL,
} from "../desired/labels.js";
import { quarantineOf } from "../desired/quarantine.js";
import { tenantNamespaces, topicRootConflict } from "../desired/tenant.js";
import { applyStatusIfChanged } from "../runtime/apply.js";
import { settlesWithin } from "../runtime/clock.js";
import { conditionsOf, isReady, setCondition } from "../runtime/conditions.js";
import {
  beyondStatus,
  type ReconcileContext,
  type ReconcileRequest,
  type ReconcileResult,
} from "../runtime/controller.js";
import { errorMessage } from "../runtime/errors.js";
import { ensureFinalizer, removeFinalizer } from "../runtime/finalizers.js";
import type { Informer } from "../runtime/informer.js";
import { type KubeObject, objectKey, parseObjectKey } from "../runtime/kube-object.js";
import type { Manager } from "../runtime/manager.js";
import { Priority } from "../runtime/work-queue.js";
import { deviceChangePriority, tenantChangePriority } from "./cut-off.js";
import { DeviceCredentialsIssuer, type DeviceIdentity } from "./device-credentials.js";
import { type Parsed, parseDeviceObject, parseTenantObject, tenantPlacement } from "./parse.js";
import { Resource } from "./resources.js";
import { overlappingTenants, type TenantBroker } from "./tenant.js";

/** Reconciles waiting on the paced broker or the API server must not hold up a cut-off. */
const DEVICE_WORKERS = 16;
/** Kept for disable, delete, suspend and revocation: a cut-off never waits for a free worker. */
const CUT_OFF_WORKERS = 4;
/**
 * How long a reconcile waits for the broker to hold a device before it lets its worker go (the
 * broker's answer wakes the key again). Mosquitto adds devices one by one, paced: thousands queued
 * there must not keep the workers from the devices still waiting to be issued certificates.
 */
const BROKER_WAIT_MS = 1_000;

type ParsedDevice = Parsed<Device>;
type ParsedTenant = Parsed<Tenant>;

interface StatusOutcome {
  readonly credentials: ConditionOutcome;
  readonly broker?: ConditionOutcome;
  readonly username?: string;
  readonly certificate?: { serialNumber?: string; notAfter?: string; sha256?: string } | undefined;
}

const candidate = (object: KubeObject): AdmissionDevice => ({
  uid: object.metadata.uid ?? "",
  namespace: object.metadata.namespace ?? "",
  name: object.metadata.name,
  createdAt: String(object.metadata.creationTimestamp ?? ""),
});

const previousCertificate = (object: KubeObject) =>
  (object as { status?: { certificate?: { serialNumber?: string; notAfter?: string } } }).status?.certificate;

/**
 * Device → credentials and broker access: a certificate from the tenant's CA (or a generated
 * password) mirrored into the device's namespace, and exactly the device's topics on the broker.
 * Level-triggered on the Device's key: a Device that is admitted is provisioned; one that is refused
 * is cut off; one that is gone, however it went (finalizer stripped, force delete, deleted while the
 * operator was down), is cut off and its certificate revoked and removed.
 */
export class DeviceReconciler implements TenantBroker {
  private readonly devices: Informer;
  private readonly namespaces: Informer;
  private readonly tenants: Informer;
  private readonly credentials: DeviceCredentialsIssuer;
  /**
   * Bumped by every change that can change who is admitted: a Device added, deleted or being
   * deleted, a namespace or a Tenant changed. Status writes do not bump it, so the admissions
   * prepared per tenant stay valid while thousands of devices are provisioned.
   */
  private admissionVersion = 0;
  private readonly admissions = new Map<string, { version: number; admission: Admission }>();
  /** Wakes a Device whose broker change outlasted BROKER_WAIT_MS once the broker is done with it. */
  private wake: (key: string) => void = () => undefined;

  constructor(
    private readonly manager: Manager,
    config: OperatorConfig,
    private readonly broker: BrokerAdapter,
  ) {
    this.devices = manager.informer(Resource.device);
    this.namespaces = manager.informer(Resource.namespace);
    this.tenants = manager.informer(Resource.tenant);
    this.credentials = new DeviceCredentialsIssuer(manager, config);
    const bump = () => {
      this.admissionVersion++;
    };
    this.devices.addHandler({
      onAdd: bump,
      onDelete: bump,
      onUpdate: (previous, current) => {
        if (previous.metadata.deletionTimestamp !== current.metadata.deletionTimestamp) bump();
      },
    });
    this.tenants.addHandler({
      onAdd: bump,
      onDelete: (tenant) => {
        bump();
        this.admissions.delete(tenant.metadata.name);
      },
      onUpdate: (previous, current) => {
        if (
          previous.metadata.generation !== current.metadata.generation ||
          previous.metadata.deletionTimestamp !== current.metadata.deletionTimestamp
        )
          bump();
      },
    });
    this.namespaces.addHandler({ onAdd: bump, onDelete: bump, onUpdate: bump });
  }

  register(): void {
    const { certificates, secrets } = this.credentials.informers;
    const devicesInNamespace = (namespace: string) =>
      this.devices.list(namespace).map((d) => objectKey(d.metadata));
    // An object serving a device wakes it, and its namesakes that may wait for the name to be free.
    const byDeviceLabels = (object: KubeObject) => {
      const device = object.metadata.labels?.[DEVICE_LABEL];
      const namespace = object.metadata.labels?.[DEVICE_NAMESPACE_LABEL];
      if (device && namespace)
        return [objectKey({ namespace, name: device }), ...this.namesakes(namespace, device)];
      // A tenant CA or CRL Secret: a renewed CA changes every device's ca.crt, a published CRL lets them on.
      const tenant = object.metadata.labels?.[TENANT_LABEL];
      return tenant ? this.keysOfTenant(tenant) : [];
    };
    const controller = this.manager.addController({
      name: "device",
      for: this.devices,
      priority: deviceChangePriority,
      fairnessGroup: (key) =>
        this.namespaces.get(parseObjectKey(key).namespace ?? "")?.metadata.labels?.[TENANT_LABEL] ?? key,
      maxConcurrentReconciles: DEVICE_WORKERS,
      cutOffWorkers: CUT_OFF_WORKERS,
      watches: [
        {
          informer: this.tenants,
          priority: tenantChangePriority,
          map: (tenant) =>
            [tenant.metadata.name, ...overlappingTenants(this.tenants, tenant)].flatMap((t) =>
              this.keysOfTenant(t),
            ),
        },
        { informer: this.namespaces, map: (ns) => devicesInNamespace(ns.metadata.name) },
        // A Device going away frees its name for a namesake in another namespace of the tenant.
        {
          informer: this.devices,
          map: (device) => this.namesakes(device.metadata.namespace ?? "", device.metadata.name),
        },
        // cert-manager updates a Certificate's status several times per issuance; the issued Secret is what counts.
        { informer: certificates, map: byDeviceLabels, when: beyondStatus },
        { informer: secrets as Informer, map: byDeviceLabels },
      ],
      reconcile: (request, context) => this.reconcile(request, context),
    });
    this.wake = (key) => controller.queue.add(key, { priority: Priority.normal });
  }

  tenantStatus(): { ready: boolean; message: string } {
    const status = this.broker.status();
    return status.synced
      ? { ready: true, message: "broker reachable and in sync" }
      : { ready: false, message: status.message };
  }

  onBrokerStatusChange(listener: () => void): () => void {
    return this.broker.onStatusChange(listener);
  }

  /** The tenant is going away: every one of its devices is cut off at once, then removed. */
  removeTenant(tenant: string): Promise<void> {
    return this.broker.removeTenant({ tenant });
  }

  /**
   * Hands the broker the function that computes every admitted device's access from the caches; it
   * asks again at each periodic resync and deletes the operator's entries that are not among them.
   */
  resyncBroker(): Promise<SyncReport> {
    return this.broker.syncAll(() => this.everyBrokerDevice());
  }

  async reconcile(
    request: ReconcileRequest,
    context: ReconcileContext,
  ): Promise<ReconcileResult | undefined> {
    const observed = this.devices.get(request.key);
    const identity = { namespace: request.namespace ?? "", name: request.name };
    if (!observed || observed.metadata.deletionTimestamp) {
      await this.retire(identity, context);
      if (observed) {
        await removeFinalizer(
          this.manager.client,
          Resource.device,
          observed,
          DEVICE_FINALIZER,
          context.signal,
        );
      }
      return undefined;
    }
    const device = parseDeviceObject(observed);
    const tenant = this.tenantOf(identity.namespace);
    const admission = this.admission(tenant);
    const refusal = admitDevice(candidate(observed), admission);
    if (refusal || !tenant) {
      await this.refuse(observed, device, tenant, admission, refusal, context);
      return undefined;
    }
    await ensureFinalizer(this.manager.client, Resource.device, observed, DEVICE_FINALIZER, context.signal);
    const quarantine = quarantineOf(observed);
    if (quarantine !== undefined) {
      await this.quarantine(observed, device, tenant, quarantine, context);
      return undefined;
    }
    return this.provision(observed, device, tenant, context);
  }

  /**
   * A quarantined Device: cut off (its live connection dropped), its credentials revoked, until an
   * admin removes the annotation; it is then provisioned with new credentials like a new Device.
   */
  private async quarantine(
    observed: KubeObject,
    device: ParsedDevice,
    tenant: ParsedTenant,
    why: string,
    context: ReconcileContext,
  ): Promise<void> {
    await this.broker.removeDevice({ tenant: tenant.metadata.name, device: observed.metadata.name });
    await this.credentials.revoke(device, tenant.metadata.name, context.signal);
    await this.writeStatus(observed, device, tenant, context, {
      credentials: {
        status: "False",
        reason: ConditionReason.Quarantined,
        message: `quarantined (${why}); credentials revoked; remove the annotation ${QUARANTINE_ANNOTATION} to release`,
      },
      broker: {
        status: "True",
        reason: ConditionReason.Reconciled,
        message: "the broker holds the device cut off",
      },
    });
  }

  /** An admitted Device: credentials, then exactly its topics on the broker, then its status. */
  private async provision(
    observed: KubeObject,
    device: ParsedDevice,
    tenant: ParsedTenant,
    context: ReconcileContext,
  ): Promise<ReconcileResult | undefined> {
    const { signal } = context;
    const tenantName = tenant.metadata.name;
    // What an earlier Device of this namespace and name left behind is revoked, never taken over.
    await this.credentials.release(candidate(observed), tenantName, observed.metadata.uid, signal);
    const issuance = await this.credentials.issue(device, tenant, previousCertificate(observed), signal);
    if (!issuance.issued) {
      await this.writeStatus(observed, device, tenant, context, {
        credentials: {
          status: "False",
          reason: ConditionReason.Progressing,
          message: `waiting for ${issuance.waitingFor}`,
        },
      });
      // No polling: the Certificate, its issued Secret, the tenant's CA and CRL Secrets wake this key.
      return undefined;
    }
    let broker: ConditionOutcome;
    try {
      const applied = this.broker.applyDevice(brokerDevice(device, tenant, issuance.credentials));
      if (await settlesWithin(this.manager.clock, applied, BROKER_WAIT_MS)) {
        broker = {
          status: "True",
          reason: ConditionReason.Reconciled,
          message: "the broker holds the device's access",
        };
      } else {
        const key = objectKey(observed.metadata);
        void applied.then(
          () => this.wake(key),
          () => this.wake(key),
        );
        broker = {
          status: "False",
          reason: ConditionReason.Progressing,
          message: "queued at the broker, which takes devices one at a time",
        };
      }
    } catch (error) {
      context.logger.warn({ err: error }, "broker sync failed");
      broker = { status: "False", reason: ConditionReason.BrokerError, message: errorMessage(error) };
    }
    await this.writeStatus(observed, device, tenant, context, {
      credentials: { status: "True", reason: ConditionReason.Reconciled },
      broker,
      username: issuance.credentials.username,
      certificate: issuance.certificate,
    });
    if (broker.reason === ConditionReason.BrokerError) throw new Error(`broker: ${broker.message}`);
    return undefined;
  }

  /** A refused Device gets no broker access; the name stays with its holder if that is another Device. */
  private async refuse(
    observed: KubeObject,
    device: ParsedDevice,
    tenant: ParsedTenant | undefined,
    admission: Admission,
    refusal: Refusal | undefined,
    context: ReconcileContext,
  ): Promise<void> {
    const holder = nameHolder(admission, observed.metadata.name);
    if (tenant && (!holder || holder.uid === observed.metadata.uid)) {
      await this.broker.removeDevice({ tenant: tenant.metadata.name, device: observed.metadata.name });
    }
    const reason = refusal ?? { reason: ConditionReason.TenantNotFound, message: "no Tenant" };
    await this.writeStatus(observed, device, tenant, context, {
      credentials: { status: "False", ...reason },
    });
  }

  /**
   * A Device that is gone or going: cut off, its certificate revoked and removed. The broker entry of
   * its name is left alone when another Device holds the name and this one never had a certificate
   * (a refused namesake); a namesake that takes the name over is reconciled after this.
   */
  private async retire(device: DeviceIdentity, context: ReconcileContext): Promise<void> {
    const tenant = this.tenantNameOf(device.namespace);
    if (!tenant) return;
    const holder = nameHolder(this.admission(this.tenantOf(device.namespace), tenant), device.name);
    if (!holder || this.credentials.holdsCertificate(device, tenant)) {
      await this.broker.removeDevice({ tenant, device: device.name });
    }
    await this.credentials.release(device, tenant, undefined, context.signal);
  }

  /** Every admitted device with credentials, as the broker must hold it; computed from the caches. */
  private everyBrokerDevice(): BrokerDevice[] {
    return this.tenants.list().flatMap((object) => {
      const tenant = this.parsedOrUndefined(parseTenantObject, object);
      if (!tenant) return [];
      const verdicts = admitDevices(this.admission(tenant));
      return this.devicesOfTenant(tenant.metadata.name).flatMap((observed) => {
        if (verdicts.get(observed.metadata.uid ?? "") || quarantineOf(observed) !== undefined) return [];
        const device = this.parsedOrUndefined(parseDeviceObject, observed);
        const credentials = device && this.credentials.current(device, tenant.metadata.name);
        return device && credentials ? [brokerDevice(device, tenant, credentials)] : [];
      });
    });
  }

  private parsedOrUndefined<T>(parse: (object: KubeObject) => T, object: KubeObject): T | undefined {
    try {
      return parse(object);
    } catch {
      // Invalid objects get no access; their own reconcile reports why.
      return undefined;
    }
  }

  /** The tenant's admission, prepared again only after a change that can alter it (admissionVersion). */
  private admission(tenant: ParsedTenant | undefined, tenantName?: string): Admission {
    if (!tenant) {
      // A tenant that is gone: its namespaces (while they last) still say which Devices share a name.
      return prepareAdmission({
        tenant: undefined,
        devices: tenantName ? this.devicesOfTenant(tenantName).map(candidate) : [],
      });
    }
    const name = tenant.metadata.name;
    const cached = this.admissions.get(name);
    if (cached?.version === this.admissionVersion) return cached.admission;
    const admission = prepareAdmission({
      tenant: {
        name,
        deleting: Boolean(tenant.metadata.deletionTimestamp),
        maxDevices: tenant.spec.devices.maxDevices,
        rootOwner: topicRootConflict(tenant, this.tenants.list().map(tenantPlacement)),
      },
      devices: this.devicesOfTenant(name).map(candidate),
    });
    this.admissions.set(name, { version: this.admissionVersion, admission });
    return admission;
  }

  /** The tenant's Devices that are not being deleted, in the namespaces it owns. */
  private devicesOfTenant(tenantName: string): KubeObject[] {
    const tenant = this.tenants.get(tenantName);
    const owned = (ns: KubeObject | undefined) =>
      ns?.metadata.labels?.[TENANT_LABEL] === tenantName &&
      (!tenant || ns.metadata.ownerReferences?.some((r) => r.uid === tenant.metadata.uid));
    const namespaces = tenant
      ? tenantNamespaces(tenantPlacement(tenant)).filter((ns) => owned(this.namespaces.get(ns)))
      : this.namespaces
          .list()
          .filter(owned)
          .map((ns) => ns.metadata.name);
    return namespaces.flatMap((ns) => this.devices.list(ns)).filter((d) => !d.metadata.deletionTimestamp);
  }

  /** Devices of the same name in the tenant's other namespaces. */
  private namesakes(namespace: string, name: string): string[] {
    const observed = this.tenants.get(this.tenantNameOf(namespace) ?? "");
    if (!observed) return [];
    return tenantNamespaces(tenantPlacement(observed))
      .filter((ns) => ns !== namespace && this.devices.get(objectKey({ namespace: ns, name })))
      .map((ns) => objectKey({ namespace: ns, name }));
  }

  private keysOfTenant(tenant: string): string[] {
    const observed = this.tenants.get(tenant);
    if (!observed) return [];
    return tenantNamespaces(tenantPlacement(observed)).flatMap((ns) =>
      this.devices.list(ns).map((d) => objectKey(d.metadata)),
    );
  }

  private tenantNameOf(namespace: string): string | undefined {
    return this.namespaces.get(namespace)?.metadata.labels?.[TENANT_LABEL];
  }

  /** The Tenant that owns the namespace (by owner UID, so a label alone cannot claim one). */
  private tenantOf(namespace: string): ParsedTenant | undefined {
    const observedNamespace = this.namespaces.get(namespace);
    const name = observedNamespace?.metadata.labels?.[TENANT_LABEL];
    const observed = name ? this.tenants.get(name) : undefined;
    if (
      !observed ||
      !observedNamespace?.metadata.ownerReferences?.some((r) => r.uid === observed.metadata.uid)
    ) {
      return undefined;
    }
    return parseTenantObject(observed);
  }

  /** The one place that sets a Device's conditions and status, and records an Event when Ready flips. */
  private async writeStatus(
    observed: KubeObject,
    device: ParsedDevice,
    tenant: ParsedTenant | undefined,
    context: ReconcileContext,
    outcome: StatusOutcome,
  ): Promise<void> {
    const at = { generation: observed.metadata.generation, nowMs: this.manager.clock.now() };
    let conditions = conditionsOf(observed);
    const updates = deviceConditions({
      credentials: outcome.credentials,
      ...(outcome.broker ? { broker: outcome.broker } : {}),
      enabled: device.spec.enabled,
      suspended: tenant?.spec.suspended ?? false,
    });
    for (const update of updates) conditions = setCondition(conditions, update, at);
    const ready = updates.find((c) => c.type === DeviceConditionType.Ready)?.status === "True";
    const { serialNumber, notAfter, sha256 } = outcome.certificate ?? {};
    await applyStatusIfChanged(
      this.manager.client,
      Resource.device,
      observed,
      {
        observedGeneration: observed.metadata.generation,
        ...(outcome.username
          ? { username: outcome.username, secretName: deviceSecretName(device.metadata.name) }
          : {}),
        ...(outcome.certificate ? { certificate: { serialNumber, notAfter, sha256 } } : {}),
        conditions,
      },
      context.signal,
      [PRESENCE_FIELD],
    );
    if (isReady(observed) !== ready) {
      await this.manager.events.record(observed, {
        type: ready ? "Normal" : "Warning",
        reason: ready ? "Provisioned" : "NotReady",
        action: "Reconcile",
        note: ready
          ? `broker user ${outcome.username}`
          : (conditions.find((c) => c.type === "Ready")?.message ?? ""),
      });
    }
  }
}
