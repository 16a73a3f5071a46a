import { createHash, X509Certificate } from "node:crypto";
import { deviceCertificateName, deviceSecretName, tenantCAName } from "../api/derived-names.js";
import { AuthenticationType, type Device } from "../api/device.js";
import type { Tenant } from "../api/tenant.js";
import type { BrokerDevice } from "../broker/adapter.js";
import { certificateUsername } from "../broker/subject.js";
import { DEVICE_LABEL, DEVICE_NAMESPACE_LABEL, DEVICE_UID_LABEL, managedLabels } from "./labels.js";
import { type KubeObject, ownerReferenceTo, tenantTopicRoot } from "./tenant.js";

/**
 * Desired state of a Device: its Certificate (x509) in the operator's namespace, the Secret
 * with its credentials in its own namespace, and what the broker must grant it. No IO.
 */

type DeviceInput = Pick<Device, "spec"> & { metadata: { name: string; namespace?: string; uid?: string } };
type TenantInput = Pick<Tenant, "spec"> & { metadata: { name: string; uid?: string | undefined } };

const KEY_SIZES = { ECDSA: 256, RSA: 2048, Ed25519: undefined } as const;

function deviceLabels(tenant: string, device: DeviceInput): Record<string, string> {
  return {
    ...managedLabels(tenant),
    [DEVICE_LABEL]: device.metadata.name,
    [DEVICE_NAMESPACE_LABEL]: device.metadata.namespace ?? "",
    ...(device.metadata.uid ? { [DEVICE_UID_LABEL]: device.metadata.uid } : {}),
  };
}

/**
 * Whether an object the operator made for a device (labelled by deviceLabels) serves `device`. An
 * object from before UIDs were recorded serves the Device of its namespace and name.
 */
export function servesDevice(
  object: { metadata: { labels?: Record<string, string> | undefined } } | undefined,
  device: { namespace: string; name: string; uid?: string | undefined },
): boolean {
  const labels = object?.metadata.labels ?? {};
  const uid = labels[DEVICE_UID_LABEL];
  return (
    labels[DEVICE_NAMESPACE_LABEL] === device.namespace &&
    labels[DEVICE_LABEL] === device.name &&
    (uid === undefined || device.uid === undefined || uid === device.uid)
  );
}

/**
 * The device's client certificate, in the operator's namespace where tenants have no rights (I3):
 * subject O=<tenant>, CN=<device> (the broker username), client auth only, signed by the tenant's CA.
 */
export function deviceCertificate(
  device: DeviceInput,
  tenant: TenantInput,
  operatorNamespace: string,
): KubeObject {
  const tenantName = tenant.metadata.name;
  const defaults = tenant.spec.devices.certificate;
  const name = deviceCertificateName(tenantName, device.metadata.name);
  const algorithm = defaults.keyAlgorithm;
  const size = KEY_SIZES[algorithm];
  return {
    apiVersion: "cert-manager.io/v1",
    kind: "Certificate",
    metadata: {
      name,
      namespace: operatorNamespace,
      labels: deviceLabels(tenantName, device),
      // The Device lives in another namespace and cannot own it; its Tenant can, so that a deleted
      // Tenant's finalizer recognises it by owner rather than by label (I7).
      ownerReferences: [ownerReferenceTo("Tenant", tenant)],
    },
    spec: {
      secretName: name,
      secretTemplate: { labels: deviceLabels(tenantName, device) },
      commonName: device.metadata.name,
      subject: { organizations: [tenantName] },
      duration: device.spec.certificate?.duration ?? defaults.duration,
      renewBefore: device.spec.certificate?.renewBefore ?? defaults.renewBefore,
      privateKey: { algorithm, ...(size ? { size } : {}), rotationPolicy: "Always", encoding: "PKCS8" },
      usages: ["client auth", "digital signature", "key encipherment"],
      issuerRef: { group: "cert-manager.io", kind: "Issuer", name: tenantCAName(tenantName) },
    },
  };
}

/** The Secret the device (or its workload) mounts; owned by the Device so it goes with it. */
export function credentialsSecret(
  device: DeviceInput,
  tenant: string,
  content: { type: "kubernetes.io/tls" | "Opaque"; data: Record<string, string> },
): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata: {
      name: deviceSecretName(device.metadata.name),
      namespace: device.metadata.namespace ?? "",
      labels: deviceLabels(tenant, device),
      ownerReferences: [ownerReferenceTo("Device", device)],
    },
    type: content.type,
    data: content.data,
  };
}

export interface IssuedCertificate {
  readonly username: string;
  readonly serialNumber: string;
  readonly notAfter: string;
  readonly sha256: string;
}

/**
 * What the broker will see of an issued certificate. The username is derived from the
 * certificate itself, not from a template, so it is what Mosquitto computes.
 */
export function describeCertificate(pem: string): IssuedCertificate {
  const certificate = new X509Certificate(pem);
  return {
    username: certificateUsername(certificate),
    serialNumber: certificate.serialNumber.toLowerCase(),
    notAfter: new Date(certificate.validTo).toISOString().replace(".000Z", "Z"),
    sha256: createHash("sha256").update(certificate.raw).digest("hex"),
  };
}

/** What the broker must grant the device: its own subtree plus its spec's topics, under the tenant root. */
export function brokerDevice(
  device: DeviceInput,
  tenant: TenantInput,
  credentials: BrokerDevice["credentials"],
): BrokerDevice {
  return {
    tenant: tenant.metadata.name,
    device: device.metadata.name,
    topicRoot: tenantTopicRoot(tenant),
    credentials,
    ...(device.spec.topics ? { topics: device.spec.topics } : {}),
    enabled: device.spec.enabled,
    suspended: tenant.spec.suspended,
  };
}

export function isPasswordDevice(device: DeviceInput): boolean {
  return device.spec.authentication.type === AuthenticationType.Password;
}
