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

/**
 * A tenant's view with what the policies ask of it computed once: the age order and each name's
 * first holder. Preparing sorts the tenant's devices; a reconciler keeps one while the tenant's
 * devices stay the same, so admitting one device costs a lookup, not a sort.
 */
export interface Admission {
  readonly tenant: NonNullable<TenantAdmissionView["tenant"]> | undefined;
  readonly devices: readonly AdmissionDevice[];
  readonly position: ReadonlyMap<string, number>;
  readonly holder: ReadonlyMap<string, AdmissionDevice>;
}

type Policy = (device: AdmissionDevice, view: Admission) => Refusal | undefined;

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

/** Oldest first; RFC 3339 UTC timestamps order as strings, ties go by namespace/name. */
function olderFirst(a: AdmissionDevice, b: AdmissionDevice): number {
  if (a.createdAt !== b.createdAt) return a.createdAt < b.createdAt ? -1 : 1;
  return `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`);
}

export function prepareAdmission(view: TenantAdmissionView): Admission {
  const ordered = [...view.devices].sort(olderFirst);
  const holder = new Map<string, AdmissionDevice>();
  for (const device of ordered) if (!holder.has(device.name)) holder.set(device.name, device);
  return {
    tenant: view.tenant,
    devices: view.devices,
    position: new Map(ordered.map((d, i) => [d.uid, i])),
    holder,
  };
}

function firstRefusal(device: AdmissionDevice, prepared: Admission): Refusal | undefined {
  for (const policy of POLICIES) {
    const refusal = policy(device, prepared);
    if (refusal) return refusal;
  }
  return undefined;
}

/** Undefined when `device` is admitted; otherwise the first policy's refusal. */
export function admitDevice(device: AdmissionDevice, admission: Admission): Refusal | undefined {
  return firstRefusal(device, admission);
}

/** Every Device of the tenant with its verdict (the broker's full resync). */
export function admitDevices(admission: Admission): Map<string, Refusal | undefined> {
  return new Map(admission.devices.map((device) => [device.uid, firstRefusal(device, admission)]));
}

/** The Device that holds `name` in the tenant, admitted or not: the oldest one with that name. */
export function nameHolder(admission: Admission, name: string): AdmissionDevice | undefined {
  return admission.holder.get(name);
}
