import { randomBytes } from "node:crypto";
import {
  deviceCertificateName,
  deviceSecretName,
  passwordBrokerUsername,
  tenantCAName,
} from "../api/derived-names.js";
import type { Device } from "../api/device.js";
import type { Tenant } from "../api/tenant.js";
import type { DeviceCredentials } from "../broker/adapter.js";
import type { OperatorConfig } from "../config.js";
import {
  credentialsSecret,
  deviceCertificate,
  type IssuedCertificate,
  isPasswordDevice,
  servesDevice,
} from "../desired/device.js";
import { ROTATE_PASSWORD_ANNOTATION } from "../desired/labels.js";
import {
  CRL_PUBLISHED_ANNOTATION,
  parseRevocations,
  REVOKED_KEY,
  revocationBudget,
  revocationRecord,
  tenantCrlName,
} from "../desired/revocation.js";
import { applyIfChanged, cachedIntentChanges } from "../runtime/apply.js";
import type { Informer } from "../runtime/informer.js";
import { objectKey } from "../runtime/kube-object.js";
import type { Manager } from "../runtime/manager.js";
import type { Parsed } from "./parse.js";
import { Resource } from "./resources.js";
import { MANAGED_SECRETS } from "./revocation.js";
import { base64, cachedKeyPair, type Secret, secretText } from "./secrets.js";

/** Where a Device lives; `uid` names one Device of that namespace and name, absent means any. */
export interface DeviceIdentity {
  readonly namespace: string;
  readonly name: string;
  readonly uid?: string | undefined;
}

export type Issuance =
  | {
      readonly issued: true;
      readonly credentials: DeviceCredentials;
      readonly certificate?: IssuedCertificate;
    }
  | { readonly issued: false; readonly waitingFor: string };

const identityOf = (device: Parsed<Device>): DeviceIdentity => ({
  namespace: device.metadata.namespace ?? "",
  name: device.metadata.name,
  uid: device.metadata.uid,
});

/**
 * A Device's credentials: a certificate from its tenant's CA (cert-manager issues it in the operator's
 * namespace; the key pair is mirrored into the device's namespace) or a generated password; and their
 * release once the Device is gone: the certificate revoked (a record the revocation controller folds
 * into the tenant's CRL) and its objects in the operator's namespace deleted. Objects are bound to one
 * Device by the namespace, name and UID in their labels: nothing serving another Device is touched.
 */
export class DeviceCredentialsIssuer {
  private readonly certificates: Informer;
  private readonly secrets: Informer<Secret>;

  constructor(
    private readonly manager: Manager,
    private readonly config: OperatorConfig,
  ) {
    this.certificates = manager.informer(Resource.certificate, {
      namespace: config.OPERATOR_NAMESPACE,
      labelSelector: MANAGED_SECRETS,
    });
    this.secrets = manager.informer<Secret>(Resource.secret, { labelSelector: MANAGED_SECRETS });
  }

  /** The informers whose changes can change a Device's credentials. */
  get informers(): { certificates: Informer; secrets: Informer<Secret> } {
    return { certificates: this.certificates, secrets: this.secrets };
  }

  issue(
    device: Parsed<Device>,
    tenant: Parsed<Tenant>,
    previous: { serialNumber?: string; notAfter?: string } | undefined,
    signal: AbortSignal,
  ): Promise<Issuance> {
    return isPasswordDevice(device)
      ? this.issuePassword(device, tenant.metadata.name, signal)
      : this.issueCertificate(device, tenant, previous, signal);
  }

  /** The credentials the caches hold for an admitted Device, or undefined while it has none. */
  current(device: Parsed<Device>, tenant: string): DeviceCredentials | undefined {
    if (isPasswordDevice(device)) {
      const secret = this.mirror(device);
      const password = ownedBy(secret, device.metadata.uid) ? secretText(secret, "password") : undefined;
      return password
        ? { type: "password", username: passwordBrokerUsername(tenant, device.metadata.name), password }
        : undefined;
    }
    const issued = this.issuedSecret(tenant, device.metadata.name);
    const certificate = servesDevice(issued, identityOf(device)) ? issued?.certificate : undefined;
    return certificate && this.crlPublished(tenant)
      ? { type: "x509", username: certificate.username }
      : undefined;
  }

  /** Whether a certificate (or its key pair) in the operator's namespace serves the Device. */
  holdsCertificate(device: DeviceIdentity, tenant: string): boolean {
    const name = deviceCertificateName(tenant, device.name);
    return (
      servesDevice(this.certificates.get(this.operatorKey(name)), device) ||
      servesDevice(this.issuedSecret(tenant, device.name), device)
    );
  }

  /**
   * Revokes and deletes the certificate that serves a Device of this namespace and name other than
   * `keep` (every one when `keep` is undefined): a deleted Device, or an earlier Device of the name.
   */
  async release(
    device: { namespace: string; name: string },
    tenant: string,
    keep: string | undefined,
    signal: AbortSignal,
  ): Promise<void> {
    const stale = (object: { metadata: { labels?: Record<string, string> } } | undefined) =>
      servesDevice(object, device) && !(keep !== undefined && servesDevice(object, { ...device, uid: keep }));
    const name = deviceCertificateName(tenant, device.name);
    const certificate = this.certificates.get(this.operatorKey(name));
    const issued = this.issuedSecret(tenant, device.name);
    const issuedCertificate = stale(issued) ? issued?.certificate : undefined;
    // The record first: once the Secret is gone, nothing says which serial to revoke.
    if (issuedCertificate) await this.requestRevocation(tenant, device, issuedCertificate, signal);
    const target = { namespace: this.config.OPERATOR_NAMESPACE, name };
    if (stale(certificate)) await this.manager.client.delete(Resource.certificate, target, { signal });
    if (stale(issued)) await this.manager.client.delete(Resource.secret, target, { signal });
  }

  /**
   * Revokes everything a quarantined Device holds: its certificate (as on release) and the key pair
   * or password mirrored into its namespace, so that a released Device gets new credentials.
   */
  async revoke(device: Parsed<Device>, tenant: string, signal: AbortSignal): Promise<void> {
    await this.release(identityOf(device), tenant, undefined, signal);
    const mirror = this.mirror(device);
    if (mirror && ownedBy(mirror, device.metadata.uid))
      await this.manager.client.delete(
        Resource.secret,
        { namespace: device.metadata.namespace, name: mirror.metadata.name },
        { signal },
      );
  }

  private async issueCertificate(
    device: Parsed<Device>,
    tenant: Parsed<Tenant>,
    previous: { serialNumber?: string; notAfter?: string } | undefined,
    signal: AbortSignal,
  ): Promise<Issuance> {
    const identity = identityOf(device);
    const tenantName = tenant.metadata.name;
    const certificate = deviceCertificate(device, tenant, this.config.OPERATOR_NAMESPACE);
    const existing = this.certificates.get(objectKey(certificate.metadata));
    if (existing && !servesDevice(existing, identity)) {
      return { issued: false, waitingFor: "the certificate of an earlier Device of this name to be revoked" };
    }
    const revoked = this.revokedCount(tenantName);
    const budget = revocationBudget(tenant.spec.devices.maxDevices);
    if (!existing && revoked >= budget) {
      return {
        issued: false,
        waitingFor: `room on the tenant's revocation list (${revoked} unexpired revocations, at most ${budget}: maxDevices + ${budget - tenant.spec.devices.maxDevices}; entries leave as their certificates expire)`,
      };
    }
    await applyIfChanged(this.manager.client, Resource.certificate, certificate, existing, signal);
    const issued = this.issuedSecret(tenantName, device.metadata.name);
    const described = issued?.certificate;
    // The device verifies the broker with the root CA, which is the tenant CA's own ca.crt.
    const rootCA = this.secrets.get(this.operatorKey(tenantCAName(tenantName)))?.data?.["ca.crt"];
    if (!issued || !described || !issued.digests?.["tls.key"] || !rootCA || !servesDevice(issued, identity)) {
      return { issued: false, waitingFor: "cert-manager to issue the certificate" };
    }
    // Until the broker holds this tenant's CRL, it refuses every certificate of the tenant's CA.
    if (!this.crlPublished(tenantName))
      return { issued: false, waitingFor: "the tenant's CRL in the broker" };
    if (previous?.serialNumber && previous.notAfter && previous.serialNumber !== described.serialNumber) {
      // Renewed with a new key: the old certificate must not work any more.
      await this.requestRevocation(
        tenantName,
        identity,
        { serialNumber: previous.serialNumber, notAfter: previous.notAfter },
        signal,
      );
    }
    if (!(await this.mirrorKeyPair(device, tenantName, issued, rootCA, signal)))
      return { issued: false, waitingFor: "the cache to hold the certificate cert-manager issued last" };
    return {
      issued: true,
      credentials: { type: "x509", username: described.username },
      certificate: described,
    };
  }

  /**
   * Mirrors the issued key pair into the device's namespace unless the mirror already holds it. The
   * cache keeps digests, not key bytes: the issued Secret is read only when the mirror must be written
   * (a new or renewed certificate). False when what was read is not what the cache holds yet.
   */
  private async mirrorKeyPair(
    device: Parsed<Device>,
    tenant: string,
    issued: Secret,
    rootCA: string,
    signal: AbortSignal,
  ): Promise<boolean> {
    const shape = credentialsSecret(device, tenant, {
      type: "kubernetes.io/tls",
      data: {},
    });
    const observed = this.mirror(device);
    if (!cachedIntentChanges(cachedKeyPair(shape, issued, rootCA), observed)) return true;
    const read = (await this.manager.client.get(Resource.secret, issued.metadata, signal)) as
      | Secret
      | undefined;
    const [crt, key] = [read?.data?.["tls.crt"], read?.data?.["tls.key"]];
    if (!crt || !key || read?.metadata.resourceVersion !== issued.metadata.resourceVersion) return false;
    const mirror = { ...shape, data: { "tls.crt": crt, "tls.key": key, "ca.crt": rootCA } };
    await applyIfChanged(this.manager.client, Resource.secret, mirror, observed, signal);
    return true;
  }

  private async issuePassword(
    device: Parsed<Device>,
    tenant: string,
    signal: AbortSignal,
  ): Promise<Issuance> {
    const username = passwordBrokerUsername(tenant, device.metadata.name);
    const existing = this.mirror(device);
    const rotation = device.metadata.annotations?.[ROTATE_PASSWORD_ANNOTATION] ?? "";
    const rotated = (existing?.metadata.annotations?.[ROTATE_PASSWORD_ANNOTATION] ?? "") !== rotation;
    const kept =
      !rotated && ownedBy(existing, device.metadata.uid) ? secretText(existing, "password") : undefined;
    const password = kept || randomBytes(24).toString("base64url");
    const secret = credentialsSecret(device, tenant, {
      type: "Opaque",
      data: { username: base64(username), password: base64(password) },
    });
    secret.metadata.annotations = { [ROTATE_PASSWORD_ANNOTATION]: rotation };
    await applyIfChanged(this.manager.client, Resource.secret, secret, existing, signal);
    return { issued: true, credentials: { type: "password", username, password } };
  }

  private requestRevocation(
    tenant: string,
    device: { namespace: string; name: string },
    certificate: { serialNumber: string; notAfter: string },
    signal: AbortSignal,
  ): Promise<boolean> {
    const record = revocationRecord(
      tenant,
      this.config.OPERATOR_NAMESPACE,
      {
        serialNumber: certificate.serialNumber,
        notAfter: certificate.notAfter,
        revokedAt: new Date(this.manager.clock.now()).toISOString(),
        device: objectKey(device),
      },
      device,
    );
    return applyIfChanged(
      this.manager.client,
      Resource.secret,
      record,
      this.secrets.get(objectKey(record.metadata)),
      signal,
    );
  }

  /** Parsed once per version of the tenant's CRL Secret, not on every Device reconcile. */
  private readonly revokedCounts = new Map<string, { version: string; count: number }>();

  private revokedCount(tenant: string): number {
    const crl = this.secrets.get(this.operatorKey(tenantCrlName(tenant)));
    const version = crl?.metadata.resourceVersion ?? "";
    const cached = this.revokedCounts.get(tenant);
    if (cached?.version === version) return cached.count;
    const count = parseRevocations(secretText(crl, REVOKED_KEY) ?? "[]").length;
    this.revokedCounts.set(tenant, { version, count });
    return count;
  }

  private crlPublished(tenant: string): boolean {
    const crl = this.secrets.get(this.operatorKey(tenantCrlName(tenant)));
    return crl?.metadata.annotations?.[CRL_PUBLISHED_ANNOTATION] === "true";
  }

  private mirror(device: Parsed<Device>): Secret | undefined {
    return this.secrets.get(
      objectKey({ namespace: device.metadata.namespace, name: deviceSecretName(device.metadata.name) }),
    );
  }

  private issuedSecret(tenant: string, device: string): Secret | undefined {
    return this.secrets.get(this.operatorKey(deviceCertificateName(tenant, device)));
  }

  private operatorKey(name: string): string {
    return objectKey({ namespace: this.config.OPERATOR_NAMESPACE, name });
  }
}

function ownedBy(secret: Secret | undefined, uid: string | undefined): boolean {
  return secret?.metadata.ownerReferences?.some((reference) => reference.uid === uid) ?? false;
}
