import { stringify } from "yaml";
import { passwordBrokerUsername, tenantCAName, x509BrokerUsername } from "../api/derived-names.js";
import { type Device, parseDevice } from "../api/device.js";
import { parseTenant, type Tenant } from "../api/tenant.js";
import type { DeviceCredentials } from "../broker/adapter.js";
import { type Acl, desiredDevice } from "../broker/desired.js";
import { DEFAULT_OWNER_PREFIX } from "../broker/mosquitto-dynsec.js";
import type { OperatorConfig } from "../config.js";
import { brokerDevice, credentialsSecret, deviceCertificate, isPasswordDevice } from "../desired/device.js";
import {
  desiredTenant,
  type KubeObject,
  type TenantDesiredConfig,
  tenantNamespaces,
} from "../desired/tenant.js";
import { UsageError } from "./io.js";

/**
 * What the operator makes of Tenants and Devices, computed by the functions its reconcilers use, as
 * YAML documents with the broker's grants as comments (so the output still applies with kubectl).
 * The API server assigns uids, and the CA and device keys are made at run time: placeholders show
 * where they go.
 */

export type RenderConfig = TenantDesiredConfig & Pick<OperatorConfig, "ROOT_CA_SECRET">;

export const uidPlaceholder = (kind: "Tenant" | "Device", key: string) => `<uid of ${kind} ${key}>`;
const ISSUED = "<issued by the operator>";

/** The Tenants and Devices among YAML documents; anything else is refused with its position. */
export function tenantsAndDevices(documents: readonly unknown[]): { tenants: Tenant[]; devices: Device[] } {
  const tenants: Tenant[] = [];
  const devices: Device[] = [];
  documents.forEach((document, index) => {
    if (document === null || document === undefined) return;
    const kind = (document as { kind?: unknown }).kind;
    const where = `document ${index + 1}`;
    try {
      if (kind === "Tenant") tenants.push(parseTenant(document));
      else if (kind === "Device") devices.push(parseDevice(document));
      else throw new Error(`is a ${String(kind)}; render takes Tenants and Devices`);
    } catch (error) {
      throw new UsageError(`${where}: ${error instanceof Error ? error.message : String(error)}`);
    }
  });
  if (!tenants.length && !devices.length) throw new UsageError("no Tenant or Device in the input");
  return { tenants, devices };
}

export function render(documents: readonly unknown[], config: RenderConfig): string {
  const { tenants, devices } = tenantsAndDevices(documents);
  const owned = new Map(tenants.map((tenant) => [tenant, [] as Device[]]));
  for (const device of devices) {
    const namespace = device.metadata.namespace;
    if (!namespace) throw new UsageError(`Device ${device.metadata.name} has no metadata.namespace`);
    const tenant = tenants.find((t) => tenantNamespaces(t).includes(namespace));
    if (!tenant)
      throw new UsageError(
        `Device ${namespace}/${device.metadata.name}: no Tenant in the input owns namespace ${namespace}; pass its Tenant too`,
      );
    owned.get(tenant)?.push(device);
  }
  return [...owned].map(([tenant, ownDevices]) => renderTenant(tenant, ownDevices, config)).join("");
}

function renderTenant(parsed: Tenant, devices: readonly Device[], config: RenderConfig): string {
  const name = parsed.metadata.name;
  const tenant = { ...parsed, metadata: { ...parsed.metadata, uid: uidPlaceholder("Tenant", name) } };
  const desired = desiredTenant(tenant, config);
  const ca = tenantCAName(name);
  return [
    comment([`Tenant ${name}`]),
    ...[...desired.namespaces, ...desired.namespaced].map(document),
    comment([
      `CA of tenant ${name}: Secret ${config.OPERATOR_NAMESPACE}/${ca}, a key pair the operator makes and signs`,
      `with the root CA in Secret ${config.ROOT_CA_SECRET}, name-constrained to O=${name}; this Issuer uses it.`,
    ]),
    ...desired.pki.map(document),
    ...devices.map((device) => renderDevice(device, tenant, config)),
  ].join("");
}

function renderDevice(parsed: Device, tenant: Tenant, config: RenderConfig): string {
  const key = `${parsed.metadata.namespace}/${parsed.metadata.name}`;
  const device = { ...parsed, metadata: { ...parsed.metadata, uid: uidPlaceholder("Device", key) } };
  const password = isPasswordDevice(device);
  const secret = credentialsSecret(
    device,
    tenant.metadata.name,
    password
      ? { type: "Opaque", data: { username: ISSUED, password: ISSUED } }
      : { type: "kubernetes.io/tls", data: { "tls.crt": ISSUED, "tls.key": ISSUED, "ca.crt": ISSUED } },
  );
  return [
    comment([`Device ${key}`]),
    ...(password ? [] : [document(deviceCertificate(device, tenant, config.OPERATOR_NAMESPACE))]),
    document(secret),
    comment(brokerGrants(device, tenant)),
  ].join("");
}

const ACL_VERBS: Readonly<Record<string, string>> = {
  publishClientSend: "publish",
  subscribePattern: "subscribe",
  publishClientReceive: "receive",
};

/** One dynamic-security ACL as a line: what it lets the device do, on which topic. */
export function grantLine(acl: Acl): string {
  return `  ${(ACL_VERBS[acl.acltype] ?? acl.acltype).padEnd(9)} ${acl.topic}${acl.allow ? "" : "  (denied)"}`;
}

/** The device's dynamic-security entries, one grant a line. */
export function brokerGrants(device: Device, tenant: Tenant): string[] {
  const { name } = device.metadata;
  const credentials: DeviceCredentials = isPasswordDevice(device)
    ? { type: "password", username: passwordBrokerUsername(tenant.metadata.name, name), password: ISSUED }
    : { type: "x509", username: x509BrokerUsername(tenant.metadata.name, name) };
  const desired = desiredDevice(DEFAULT_OWNER_PREFIX, brokerDevice(device, tenant, credentials));
  return [
    `broker grants of ${desired.owner} (Mosquitto dynamic security role and client):`,
    desired.client
      ? `  client    ${desired.client.username} (${credentials.type === "x509" ? "client certificate" : "password"})`
      : `  client    none: the device is ${device.spec.enabled ? "in a suspended tenant" : "disabled"}; the role stays`,
    ...desired.acls.map(grantLine),
    "  anything else is denied",
  ];
}

function document(object: KubeObject): string {
  return `---\n${stringify(object)}`;
}

function comment(lines: readonly string[]): string {
  return lines.map((line) => `# ${line}\n`).join("");
}
