import { ConditionReason } from "../api/conditions.js";

/**
 * Whether a Device may have credentials and broker access: a chain of policies, each able to refuse
 * with a reason, checked in order against one tenant's view. No IO; the reconciler gathers the view.
 */

/** A Device as admission sees it. */
export interface AdmissionDevice {
  readonly uid: string;
  readonly namespace: string;
  readonly name: string;
  /** RFC 3339, from metadata.creationTimestamp: the older Device wins a clash. */
  readonly createdAt: string;
}

export interface TenantAdmissionView {
  /** Undefined when the Device's namespace belongs to no Tenant. */
  readonly tenant:
    | {
        readonly name: string;
        readonly deleting: boolean;
        readonly maxDevices: number;
        /** The older tenant whose topic root overlaps this tenant's, if any. */
        readonly rootOwner: string | undefined;
      }
    | undefined;
  /** Every Device of the tenant, across its namespaces, that is not being deleted. */
  readonly devices: readonly AdmissionDevice[];
}

export interface Refusal {
  readonly reason: ConditionReason;
  readonly message: string;
}

/** The view with what the policies ask of it computed once: the age order and each name's first holder. */
interface Prepared {
  readonly tenant: NonNullable<TenantAdmissionView["tenant"]> | undefined;
  readonly position: ReadonlyMap<string, number>;
  readonly holder: ReadonlyMap<string, AdmissionDevice>;
}

type Policy = (device: AdmissionDevice, view: Prepared) => Refusal | undefined;

const tenantPresent: Policy = (device, { tenant }) =>
  !tenant
    ? {
        reason: ConditionReason.TenantNotFound,
        message: `namespace ${device.namespace} belongs to no Tenant`,
      }
    : tenant.deleting
      ? { reason: ConditionReason.TenantNotFound, message: `tenant ${tenant.name} is being deleted` }
      : undefined;

const topicRootUnique: Policy = (_, { tenant }) =>
  tenant?.rootOwner
    ? {
        reason: ConditionReason.TopicRootConflict,
        message: `the tenant's topic root overlaps tenant ${tenant.rootOwner}'s; no broker access until it is unique`,
      }
    : undefined;

/** Broker identities and certificate names carry tenant and device name only, so a name is one device's. */
const nameFree: Policy = (device, { holder }) => {
  const first = holder.get(device.name);
  return first && first.uid !== device.uid
    ? {
        reason: ConditionReason.DeviceNameTaken,
        message: `Device ${first.namespace}/${first.name} of the same tenant already has this name`,
      }
    : undefined;
};

const withinLimit: Policy = (device, { tenant, position }) =>
  tenant && (position.get(device.uid) ?? Number.POSITIVE_INFINITY) >= tenant.maxDevices
    ? {
        reason: ConditionReason.DeviceLimitReached,
        message: `the tenant allows ${tenant.maxDevices} devices (spec.devices.maxDevices)`,
      }
    : undefined;

const POLICIES: readonly Policy[] = [tenantPresent, topicRootUnique, nameFree, withinLimit];

function prepare(view: TenantAdmissionView): Prepared {
  const ordered = [...view.devices].sort(
    (a, b) =>
      a.createdAt.localeCompare(b.createdAt) ||
      `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`),
  );
  const holder = new Map<string, AdmissionDevice>();
  for (const device of ordered) if (!holder.has(device.name)) holder.set(device.name, device);
  return { tenant: view.tenant, position: new Map(ordered.map((d, i) => [d.uid, i])), holder };
}

function firstRefusal(device: AdmissionDevice, prepared: Prepared): Refusal | undefined {
  for (const policy of POLICIES) {
    const refusal = policy(device, prepared);
    if (refusal) return refusal;
  }
  return undefined;
}

/** Undefined when `device` is admitted; otherwise the first policy's refusal. */
export function admitDevice(device: AdmissionDevice, view: TenantAdmissionView): Refusal | undefined {
  return firstRefusal(device, prepare(view));
}

/** Every Device of the view with its verdict, the view prepared once (the broker's full resync). */
export function admitDevices(view: TenantAdmissionView): Map<string, Refusal | undefined> {
  const prepared = prepare(view);
  return new Map(view.devices.map((device) => [device.uid, firstRefusal(device, prepared)]));
}

/** The Device that holds `name` in the tenant, admitted or not: the oldest one with that name. */
export function nameHolder(view: TenantAdmissionView, name: string): AdmissionDevice | undefined {
  return prepare(view).holder.get(name);
}
