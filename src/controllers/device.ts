import { randomBytes } from "node:crypto";
import { ConditionReason, DeviceConditionType } from "../api/conditions.js";
import {
  deviceCertificateName,
  deviceSecretName,
  passwordBrokerUsername,
  tenantCAName,
} from "../api/derived-names.js";
import type { Device } from "../api/device.js";
import type { Tenant } from "../api/tenant.js";
import type { BrokerAdapter, BrokerDevice, SyncReport } from "../broker/adapter.js";
import type { OperatorConfig } from "../config.js";
import {
  brokerDevice,
  credentialsSecret,
  describeCertificate,
  deviceCertificate,
  type IssuedCertificate,
  isPasswordDevice,
} from "../desired/device.js";
import { type ConditionOutcome, deviceConditions } from "../desired/device-status.js";
import {
  DEVICE_FINALIZER,
  DEVICE_LABEL,
  DEVICE_NAMESPACE_LABEL,
  ROTATE_PASSWORD_ANNOTATION,
  TENANT_LABEL,
} from "../desired/labels.js";
import { tenantNamespaces, topicRootConflict } from "../desired/tenant.js";
import { applyIfChanged, applyStatusIfChanged } from "../runtime/apply.js";
import { conditionsOf, isReady, setCondition } from "../runtime/conditions.js";
import type { ReconcileContext, ReconcileRequest, ReconcileResult } from "../runtime/controller.js";
import { errorMessage } from "../runtime/errors.js";
import { ensureFinalizer, removeFinalizer } from "../runtime/finalizers.js";
import type { Informer } from "../runtime/informer.js";
import { type KubeObject, objectKey, parseObjectKey } from "../runtime/kube-object.js";
import type { Manager } from "../runtime/manager.js";
import { deviceChangePriority, tenantChangePriority } from "./cut-off.js";
import { type Parsed, parseDeviceObject, parseTenantObject, tenantPlacement } from "./parse.js";
import { Resource } from "./resources.js";
import { MANAGED_SECRETS, type RevocationReconciler } from "./revocation.js";
import { base64, type Secret, secretText } from "./secrets.js";
import { overlappingTenants, type TenantBroker } from "./tenant.js";

const managedSelector = MANAGED_SECRETS;
const REQUEUE_WHILE_ISSUING_MS = 3_000;
/** Reconciles waiting on the paced broker or the API server must not hold up a cut-off. */
const DEVICE_WORKERS = 16;

type ParsedDevice = Parsed<Device>;
type ParsedTenant = Parsed<Tenant>;

const createdAt = (object: KubeObject) => String(object.metadata.creationTimestamp ?? "");

/**
 * Device → credentials and broker access: a certificate from the tenant's CA (or a generated
 * password) mirrored into the device's namespace, and exactly the device's topics on the broker.
 * A disabled, suspended or deleted device is cut off (the adapter kicks its live connection).
 */
export class DeviceReconciler implements TenantBroker {
  private readonly devices: Informer;
  private readonly namespaces: Informer;
  private readonly tenants: Informer;
  private readonly certificates: Informer;
  private readonly secrets: Informer<Secret>;

  constructor(
    private readonly manager: Manager,
    private readonly config: OperatorConfig,
    private readonly broker: BrokerAdapter,
    private readonly revocations: RevocationReconciler,
  ) {
    this.devices = manager.informer(Resource.device);
    this.namespaces = manager.informer(Resource.namespace);
    this.tenants = manager.informer(Resource.tenant);
    this.certificates = manager.informer(Resource.certificate, {
      namespace: config.OPERATOR_NAMESPACE,
      labelSelector: managedSelector,
    });
    this.secrets = manager.informer<Secret>(Resource.secret, { labelSelector: managedSelector });
  }

  register(): void {
    const devicesInNamespaces = (namespaces: readonly string[]) =>
      namespaces.flatMap((ns) => this.devices.list(ns).map((d) => objectKey(d.metadata)));
    const byDeviceLabels = (object: KubeObject) => {
      const device = object.metadata.labels?.[DEVICE_LABEL];
      const namespace = object.metadata.labels?.[DEVICE_NAMESPACE_LABEL];
      if (device && namespace) return [objectKey({ namespace, name: device })];
      // A tenant CA Secret: its renewal changes every device's ca.crt.
      const tenant = object.metadata.labels?.[TENANT_LABEL];
      return tenant ? this.keysOfTenant(tenant) : [];
    };
    this.manager.addController({
      name: "device",
      for: this.devices,
      priority: deviceChangePriority,
      fairnessGroup: (key) =>
        this.namespaces.get(parseObjectKey(key).namespace ?? "")?.metadata.labels?.[TENANT_LABEL] ?? key,
      maxConcurrentReconciles: DEVICE_WORKERS,
      watches: [
        {
          informer: this.tenants,
          priority: tenantChangePriority,
          map: (tenant) =>
            [tenant.metadata.name, ...overlappingTenants(this.tenants, tenant)].flatMap((t) =>
              this.keysOfTenant(t),
            ),
        },
        { informer: this.namespaces, map: (ns) => devicesInNamespaces([ns.metadata.name]) },
        { informer: this.certificates, map: byDeviceLabels },
        { informer: this.secrets as Informer, map: byDeviceLabels },
      ],
      reconcile: (request, context) => this.reconcile(request, context),
    });
  }

  tenantStatus(): { ready: boolean; message: string } {
    const status = this.broker.status();
    return status.synced
      ? { ready: true, message: "broker reachable and in sync" }
      : { ready: false, message: status.message };
  }

  /** The tenant is going away: cut every one of its devices off now rather than one by one. */
  async removeTenant(tenant: string): Promise<void> {
    for (const key of this.keysOfTenant(tenant)) {
      await this.broker.removeDevice({ tenant, device: parseObjectKey(key).name });
    }
  }

  /** Hands the broker every provisionable device; it deletes the operator's entries that are not among them. */
  resyncBroker(): Promise<SyncReport> {
    return this.broker.syncAll(this.allBrokerDevices());
  }

  private allBrokerDevices(): BrokerDevice[] {
    return this.devices.list().flatMap((object) => {
      const device = parseDeviceObject(object);
      const tenant = this.tenantOf(device);
      if (!tenant || object.metadata.deletionTimestamp || this.admissionProblem(device, tenant)) return [];
      const credentials = this.currentCredentials(device, tenant);
      return credentials ? [brokerDevice(device, tenant, credentials)] : [];
    });
  }

  async reconcile(
    request: ReconcileRequest,
    context: ReconcileContext,
  ): Promise<ReconcileResult | undefined> {
    const observed = this.devices.get(request.key);
    if (!observed) return undefined;
    const device = parseDeviceObject(observed);
    const tenant = this.tenantOf(device);
    const { signal } = context;
    const log = context.logger.child({ device: request.key, tenant: tenant?.metadata.name });

    if (observed.metadata.deletionTimestamp) {
      await this.finalize(observed, device, signal);
      return undefined;
    }
    if (!tenant) {
      await this.writeStatus(observed, device, tenant, context, {
        credentials: {
          status: "False",
          reason: ConditionReason.TenantNotFound,
          message: `namespace ${request.namespace} belongs to no Tenant`,
        },
      });
      return undefined;
    }
    await ensureFinalizer(this.manager.client, Resource.device, observed, DEVICE_FINALIZER, signal);

    const blocked = this.admissionProblem(device, tenant);
    if (blocked) {
      await this.broker.removeDevice({ tenant: tenant.metadata.name, device: device.metadata.name });
      await this.writeStatus(observed, device, tenant, context, {
        credentials: { status: "False", ...blocked },
      });
      return undefined;
    }

    const issued = isPasswordDevice(device)
      ? await this.ensurePassword(device, tenant, signal)
      : await this.ensureCertificate(device, tenant, signal);
    if (!issued) {
      await this.writeStatus(observed, device, tenant, context, {
        credentials: {
          status: "False",
          reason: ConditionReason.Progressing,
          message: "waiting for cert-manager to issue the certificate",
        },
      });
      return { requeueAfterMs: REQUEUE_WHILE_ISSUING_MS };
    }

    const desired = brokerDevice(device, tenant, issued.credentials);
    let broker: ConditionOutcome;
    try {
      await this.broker.applyDevice(desired);
      broker = {
        status: "True",
        reason: ConditionReason.Reconciled,
        message: "the broker holds the device's access",
      };
    } catch (error) {
      log.warn({ err: errorMessage(error) }, "broker sync failed");
      broker = { status: "False", reason: ConditionReason.BrokerError, message: errorMessage(error) };
    }
    await this.writeStatus(observed, device, tenant, context, {
      credentials: { status: "True", reason: ConditionReason.Reconciled },
      broker,
      username: issued.credentials.username,
      certificate: issued.certificate,
    });
    if (broker.status !== "True") throw new Error(`broker: ${broker.message}`);
    return undefined;
  }

  private keysOfTenant(tenant: string): string[] {
    const observed = this.tenants.get(tenant);
    if (!observed) return [];
    return tenantNamespaces(tenantPlacement(observed)).flatMap((ns) =>
      this.devices.list(ns).map((d) => objectKey(d.metadata)),
    );
  }

  /** The Tenant that owns the Device's namespace (by owner UID, so a label alone cannot claim one). */
  private tenantOf(device: ParsedDevice): ParsedTenant | undefined {
    const namespace = this.namespaces.get(device.metadata.namespace ?? "");
    const name = namespace?.metadata.labels?.[TENANT_LABEL];
    const observed = name ? this.tenants.get(name) : undefined;
    if (!observed || !namespace?.metadata.ownerReferences?.some((ref) => ref.uid === observed.metadata.uid)) {
      return undefined;
    }
    return parseTenantObject(observed);
  }

  /** Name clashes across the tenant's namespaces and the tenant-wide device limit; the older Device wins. */
  private admissionProblem(
    device: ParsedDevice,
    tenant: ParsedTenant,
  ): { reason: string; message: string } | undefined {
    const rootOwner = topicRootConflict(tenant, this.tenants.list().map(tenantPlacement));
    if (rootOwner) {
      return {
        reason: ConditionReason.TopicRootConflict,
        message: `the tenant's topic root overlaps tenant ${rootOwner}'s; no broker access until it is unique`,
      };
    }
    const all = tenantNamespaces(tenant)
      .flatMap((ns) => this.devices.list(ns))
      .filter((d) => !d.metadata.deletionTimestamp)
      .sort(
        (a, b) =>
          createdAt(a).localeCompare(createdAt(b)) ||
          objectKey(a.metadata).localeCompare(objectKey(b.metadata)),
      );
    const first = all.find((d) => d.metadata.name === device.metadata.name);
    if (first && first.metadata.uid !== device.metadata.uid) {
      return {
        reason: ConditionReason.DeviceNameTaken,
        message: `Device ${first.metadata.namespace}/${first.metadata.name} of the same tenant already has this name`,
      };
    }
    const position = all.findIndex((d) => d.metadata.uid === device.metadata.uid);
    if (position >= tenant.spec.devices.maxDevices) {
      return {
        reason: ConditionReason.DeviceLimitReached,
        message: `the tenant allows ${tenant.spec.devices.maxDevices} devices (spec.devices.maxDevices)`,
      };
    }
    return undefined;
  }

  private currentCredentials(
    device: ParsedDevice,
    tenant: ParsedTenant,
  ): BrokerDevice["credentials"] | undefined {
    const tenantName = tenant.metadata.name;
    if (isPasswordDevice(device)) {
      const password = secretText(
        this.secrets.get(
          objectKey({ namespace: device.metadata.namespace, name: deviceSecretName(device.metadata.name) }),
        ),
        "password",
      );
      return password
        ? { type: "password", username: passwordBrokerUsername(tenantName, device.metadata.name), password }
        : undefined;
    }
    const pem = secretText(this.issuedSecret(tenantName, device.metadata.name), "tls.crt");
    return pem ? { type: "x509", username: describeCertificate(pem).username } : undefined;
  }

  private issuedSecret(tenant: string, device: string): Secret | undefined {
    return this.secrets.get(
      objectKey({ namespace: this.config.OPERATOR_NAMESPACE, name: deviceCertificateName(tenant, device) }),
    );
  }

  private async ensureCertificate(
    device: ParsedDevice,
    tenant: ParsedTenant,
    signal: AbortSignal,
  ): Promise<{ credentials: BrokerDevice["credentials"]; certificate: IssuedCertificate } | undefined> {
    const certificate = deviceCertificate(device, tenant, this.config.OPERATOR_NAMESPACE);
    await applyIfChanged(
      this.manager.client,
      Resource.certificate,
      certificate,
      this.certificates.get(objectKey(certificate.metadata)),
      signal,
    );
    const issued = this.issuedSecret(tenant.metadata.name, device.metadata.name);
    const caSecret = this.secrets.get(
      objectKey({ namespace: this.config.OPERATOR_NAMESPACE, name: tenantCAName(tenant.metadata.name) }),
    );
    const [crt, key] = [issued?.data?.["tls.crt"], issued?.data?.["tls.key"]];
    // The device verifies the broker with the root CA, which is the tenant CA's own ca.crt.
    const rootCA = caSecret?.data?.["ca.crt"];
    // Until the broker holds this tenant's CRL, it refuses every certificate of the tenant's CA.
    if (!crt || !key || !rootCA || !this.revocations.isPublished(tenant.metadata.name)) return undefined;
    const described = describeCertificate(Buffer.from(crt, "base64").toString("utf8"));
    const previous = (device as { status?: { certificate?: { serialNumber?: string; notAfter?: string } } })
      .status?.certificate;
    if (previous?.serialNumber && previous.notAfter && previous.serialNumber !== described.serialNumber) {
      // Renewed with a new key: the old certificate must not work any more.
      await this.revocations.revoke(
        tenant.metadata.name,
        {
          serialNumber: previous.serialNumber,
          notAfter: previous.notAfter,
          revokedAt: new Date(this.manager.clock.now()).toISOString(),
          device: objectKey(device.metadata),
        },
        signal,
      );
    }
    const mirror = credentialsSecret(device, tenant.metadata.name, {
      type: "kubernetes.io/tls",
      data: { "tls.crt": crt, "tls.key": key, "ca.crt": rootCA },
    });
    await applyIfChanged(
      this.manager.client,
      Resource.secret,
      mirror,
      this.secrets.get(objectKey(mirror.metadata)),
      signal,
    );
    return { credentials: { type: "x509", username: described.username }, certificate: described };
  }

  private async ensurePassword(
    device: ParsedDevice,
    tenant: ParsedTenant,
    signal: AbortSignal,
  ): Promise<{ credentials: BrokerDevice["credentials"]; certificate?: undefined }> {
    const username = passwordBrokerUsername(tenant.metadata.name, device.metadata.name);
    const secretKey = objectKey({
      namespace: device.metadata.namespace,
      name: deviceSecretName(device.metadata.name),
    });
    const existing = this.secrets.get(secretKey);
    const rotation = device.metadata.annotations?.[ROTATE_PASSWORD_ANNOTATION] ?? "";
    const rotated = (existing?.metadata.annotations?.[ROTATE_PASSWORD_ANNOTATION] ?? "") !== rotation;
    const password = (!rotated && secretText(existing, "password")) || randomBytes(24).toString("base64url");
    const secret = credentialsSecret(device, tenant.metadata.name, {
      type: "Opaque",
      data: {
        username: base64(username),
        password: base64(password),
      },
    });
    secret.metadata.annotations = { [ROTATE_PASSWORD_ANNOTATION]: rotation };
    await applyIfChanged(this.manager.client, Resource.secret, secret, existing, signal);
    return { credentials: { type: "password", username, password } };
  }

  /** Cut off from the broker first, then remove what garbage collection cannot: the Certificate and its Secret. */
  private async finalize(observed: KubeObject, device: ParsedDevice, signal: AbortSignal): Promise<void> {
    if (!observed.metadata.finalizers?.includes(DEVICE_FINALIZER)) return;
    const tenant = this.namespaces.get(device.metadata.namespace ?? "")?.metadata.labels?.[TENANT_LABEL];
    if (tenant) {
      await this.broker.removeDevice({ tenant, device: device.metadata.name });
      const name = deviceCertificateName(tenant, device.metadata.name);
      const pem = secretText(this.issuedSecret(tenant, device.metadata.name), "tls.crt");
      if (pem) {
        const issued = describeCertificate(pem);
        await this.revocations.revoke(
          tenant,
          {
            serialNumber: issued.serialNumber,
            notAfter: issued.notAfter,
            revokedAt: new Date(this.manager.clock.now()).toISOString(),
            device: objectKey(device.metadata),
          },
          signal,
        );
      }
      await this.manager.client.delete(
        Resource.certificate,
        { namespace: this.config.OPERATOR_NAMESPACE, name },
        { signal },
      );
      await this.manager.client.delete(
        Resource.secret,
        { namespace: this.config.OPERATOR_NAMESPACE, name },
        { signal },
      );
    }
    await removeFinalizer(this.manager.client, Resource.device, observed, DEVICE_FINALIZER, signal);
  }

  private async writeStatus(
    observed: KubeObject,
    device: ParsedDevice,
    tenant: ParsedTenant | undefined,
    context: ReconcileContext,
    outcome: {
      credentials: ConditionOutcome;
      broker?: ConditionOutcome;
      username?: string;
      certificate?: IssuedCertificate | undefined;
    },
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
    );
    const wasReady = isReady(observed);
    if (wasReady !== ready) {
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
