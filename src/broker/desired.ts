import { createHash } from "node:crypto";
import type { BrokerDevice, DeviceRef } from "./adapter.js";
import { tamperReportTopic, tamperReportTopicOfAnyDevice } from "./tamper-report.js";

export interface Acl {
  /** dynsec ACL type, e.g. publishClientSend or subscribePattern. */
  readonly acltype: string;
  readonly topic: string;
  readonly priority: number;
  readonly allow: boolean;
}

/** A dynsec client the operator owns: `owner` (its textname) ties it to its device's role. */
export interface DesiredClient {
  readonly username: string;
  readonly password?: string;
  /** Fingerprint of the password kept in textdescription, so that a changed password is seen as drift. */
  readonly passwordFingerprint?: string;
}

/** The broker state of one device: its role always, its client only while it may connect. */
export interface DesiredDevice {
  /** Role name, also the textname of the device's client; starts with the owner prefix. */
  readonly owner: string;
  /** The tenant's gate (role and group) that the client holds above its own role. */
  readonly gate: string;
  readonly acls: readonly Acl[];
  readonly client?: DesiredClient;
}

/**
 * A tenant's gate: one role that every device client of the tenant holds above its own role, and
 * one group they are all in. Suspending the tenant fills the role with denials and adds it to the
 * group, which kicks every member: a whole tenant is cut off by two commands, whatever its size.
 */
export interface DesiredGate {
  /** Role and group name: the owner prefix and the tenant. */
  readonly name: string;
  readonly suspended: boolean;
}

/**
 * Above every device role: dynsec checks a client's roles by priority and the first matching ACL
 * decides, so a suspended gate's denials win over any grant.
 */
export const GATE_PRIORITY = 1000;

/** What a suspended tenant's devices may do: nothing, shared subscriptions included. */
export const SUSPENDED_ACLS: readonly Acl[] = canonicalAcls([
  { acltype: "publishClientSend", topic: "#", priority: 0, allow: false },
  { acltype: "publishClientReceive", topic: "#", priority: 0, allow: false },
  { acltype: "subscribePattern", topic: "#", priority: 0, allow: false },
  { acltype: "subscribePattern", topic: "$share/#", priority: 0, allow: false },
]);

/** Own subtree of every device, relative to the tenant root. */
export function ownSubtree(device: string): string {
  return `devices/${device}/#`;
}

/** Role name and client textname of a device; tenant and device names are DNS labels, so ':' cannot occur in them. */
export function ownerName(prefix: string, tenant: string, device: string): string {
  return `${prefix}${tenant}:${device}`;
}

/** Role and group name of a tenant's gate; unlike a device's owner name it has no second ':'. */
export function gateName(prefix: string, tenant: string): string {
  return `${prefix}${tenant}`;
}

/** The tenant of a gate name, or undefined for any other name. */
export function gateTenant(prefix: string, name: string): string | undefined {
  if (!name.startsWith(prefix)) return undefined;
  const tenant = name.slice(prefix.length);
  return tenant && !tenant.includes(":") ? tenant : undefined;
}

/** Tenant and device of an owner name, or undefined for a name the operator did not make. */
export function ownerRef(prefix: string, owner: string): DeviceRef | undefined {
  if (!owner.startsWith(prefix)) return undefined;
  const [tenant, device, ...rest] = owner.slice(prefix.length).split(":");
  return tenant && device && rest.length === 0 ? { tenant, device } : undefined;
}

function aclKey(acl: Acl): string {
  return `${acl.acltype}\u0000${acl.topic}\u0000${acl.priority}\u0000${acl.allow}`;
}

/** ACLs in a canonical order without duplicates, so that two lists compare by value. */
export function canonicalAcls(acls: readonly Acl[]): Acl[] {
  const unique = new Map(acls.map((acl) => [aclKey(acl), acl]));
  return [...unique.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, acl]) => acl);
}

export function sameAcls(a: readonly Acl[], b: readonly Acl[]): boolean {
  const left = canonicalAcls(a).map(aclKey);
  const right = canonicalAcls(b).map(aclKey);
  return left.length === right.length && left.every((key, index) => key === right[index]);
}

/** True when `current` grants something that `next` does not: live sessions must then be kicked. */
export function narrows(current: readonly Acl[], next: readonly Acl[]): boolean {
  const kept = new Set(next.map(aclKey));
  return current.some((acl) => !kept.has(aclKey(acl)));
}

/**
 * dynsec's default for whatever no role grants: everything is denied, delivery to a subscriber
 * included. dynsec's own default lets every existing subscription receive (`publishClientReceive`
 * true), so a session resumed after its grant narrowed kept getting what it no longer may read.
 */
export const DEFAULT_ACL_ACCESS: Readonly<Record<string, boolean>> = {
  publishClientSend: false,
  publishClientReceive: false,
  subscribe: false,
  unsubscribe: true,
};

/**
 * Exact grants under the tenant root: `topics` if the Device names any, else its own subtree.
 * Subscribe grants also cover the shared-subscription form `$share/<any group>/<filter>`, because
 * dynsec matches the whole filter, and carry a receive grant for the same filter: the broker checks
 * every delivery against the device's current grant (the default denies), so a resumed or older
 * subscription never delivers more than the device may read now.
 */
export function deviceAcls(
  topicRoot: string,
  device: BrokerDevice["device"],
  topics: BrokerDevice["topics"],
): Acl[] {
  // spec.topics, when given, is the whole grant (least privilege: it can be narrower than the
  // device's own subtree); without it the device has exactly its own subtree.
  const granted = topics ?? { publish: [ownSubtree(device)], subscribe: [ownSubtree(device)] };
  // Every device may report on its own reserved topic and no device on another's, whatever its
  // grant, so the topic of a tamper report names its reporter. dynsec checks higher priorities first
  // and allows one ACL per topic and type, hence the grants that repeat these topics are left out.
  const ownReport = tamperReportTopic(topicRoot, device);
  const anyReport = tamperReportTopicOfAnyDevice(topicRoot);
  const publish = granted.publish
    .map((filter) => `${topicRoot}/${filter}`)
    .filter((topic) => topic !== ownReport && topic !== anyReport);
  const subscribe = granted.subscribe.map((filter) => `${topicRoot}/${filter}`);
  return canonicalAcls([
    { acltype: "publishClientSend", topic: ownReport, priority: 2, allow: true },
    { acltype: "publishClientSend", topic: anyReport, priority: 1, allow: false },
    ...publish.map((topic): Acl => ({ acltype: "publishClientSend", topic, priority: 0, allow: true })),
    ...subscribe.flatMap((topic): Acl[] => [
      { acltype: "subscribePattern", topic, priority: 0, allow: true },
      { acltype: "subscribePattern", topic: `$share/+/${topic}`, priority: 0, allow: true },
      { acltype: "publishClientReceive", topic, priority: 0, allow: true },
    ]),
  ]);
}

export function passwordFingerprint(password: string): string {
  return `sha256:${createHash("sha256").update(password, "utf8").digest("hex")}`;
}

/**
 * The broker state one device should have; a disabled device keeps its role but has no client. A
 * suspended tenant's device keeps its client: the tenant's gate (desiredGate) cuts them all off.
 */
export function desiredDevice(prefix: string, device: BrokerDevice): DesiredDevice {
  const owner = ownerName(prefix, device.tenant, device.device);
  const gate = gateName(prefix, device.tenant);
  const acls = deviceAcls(device.topicRoot, device.device, device.topics);
  if (!device.enabled) return { owner, gate, acls };
  const { credentials } = device;
  const client: DesiredClient =
    credentials.type === "password"
      ? {
          username: credentials.username,
          password: credentials.password,
          passwordFingerprint: passwordFingerprint(credentials.password),
        }
      : { username: credentials.username };
  return { owner, gate, acls, client };
}

/** The gate of the device's tenant as the device says it should be. */
export function desiredGate(prefix: string, device: BrokerDevice): DesiredGate {
  return { name: gateName(prefix, device.tenant), suspended: device.suspended };
}
