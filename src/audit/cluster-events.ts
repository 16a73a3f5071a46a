import { ConditionReason } from "../api/conditions.js";
import { DEVICE_FINALIZER, ROTATE_PASSWORD_ANNOTATION } from "../desired/labels.js";
import { quarantineOf } from "../desired/quarantine.js";
import { parseRevocations, REVOCATION_KEY } from "../desired/revocation.js";
import type { KubeObject } from "../runtime/kube-object.js";

/**
 * Security events of the cluster side, read off the changes the informers see (before → after of a
 * Device, a Tenant or a revocation record), so no reconciler has to report them. Pure.
 */

export const SecurityEventKind = {
  DeviceRegistered: "DeviceRegistered",
  CredentialsIssued: "CredentialsIssued",
  /** A new certificate for the device (renewal; cert-manager rotates the key with it by default). */
  CredentialsRenewed: "CredentialsRenewed",
  /** A new password asked for with the rotate-password annotation. */
  CredentialsRotated: "CredentialsRotated",
  CredentialsRevoked: "CredentialsRevoked",
  DeviceDisabled: "DeviceDisabled",
  DeviceEnabled: "DeviceEnabled",
  DeviceDeleted: "DeviceDeleted",
  /** Gone without passing through the operator's finalizer (stripped, or deleted before it was set). */
  DeviceDeletedWithoutFinalizer: "DeviceDeletedWithoutFinalizer",
  /** The operator's finalizer removed from a Device that is not being deleted: not something the operator does. */
  FinalizerRemoved: "FinalizerRemoved",
  /** The operator refused the Device (name taken, device limit, no Tenant, invalid settings). */
  AdmissionRefused: "AdmissionRefused",
  TenantSuspended: "TenantSuspended",
  TenantResumed: "TenantResumed",
  /** A Tenant names a namespace, root, CA or admin that belongs to someone else. */
  OwnershipConflict: "OwnershipConflict",
  Connected: "Connected",
  Disconnected: "Disconnected",
  AuthenticationRefused: "AuthenticationRefused",
  SessionTakenOver: "SessionTakenOver",
  /** The device reported a security incident on its reserved topic (src/broker/tamper-report.ts). */
  TamperReported: "TamperReported",
  /** The quarantine annotation was set: by the Tenant's devicePolicy, or by an admin. */
  DeviceQuarantined: "DeviceQuarantined",
  /** The quarantine annotation was removed: an admin released the device. */
  DeviceReleased: "DeviceReleased",
} as const;
export type SecurityEventKind = (typeof SecurityEventKind)[keyof typeof SecurityEventKind];

export interface SecurityEvent {
  readonly kind: SecurityEventKind;
  readonly source: "cluster" | "broker";
  readonly type: "Normal" | "Warning";
  /** The Device or Tenant the Event is recorded on; absent when the broker names nobody. */
  readonly regarding?: KubeObject;
  readonly tenant?: string;
  /** `namespace/name` of the Device. */
  readonly device?: string;
  readonly note: string;
  readonly detail?: Readonly<Record<string, string | number | boolean>>;
}

const ADMISSION_REFUSALS: ReadonlySet<string> = new Set([
  ConditionReason.DeviceLimitReached,
  ConditionReason.DeviceNameTaken,
  ConditionReason.TenantNotFound,
  ConditionReason.InvalidCertificateSettings,
]);

const OWNERSHIP_CONFLICTS: ReadonlySet<string> = new Set([
  ConditionReason.NamespaceNotOwned,
  ConditionReason.NamespaceOfOtherTenant,
  ConditionReason.AdminOfOtherTenant,
  ConditionReason.TopicRootConflict,
  ConditionReason.CANotOwned,
]);

interface Condition {
  readonly type: string;
  readonly reason?: string;
  readonly message?: string;
}

interface Observed {
  readonly spec?: { enabled?: boolean; suspended?: boolean };
  readonly status?: {
    conditions?: Condition[];
    username?: string;
    certificate?: { serialNumber?: string; notAfter?: string };
  };
}

const view = (object: KubeObject | undefined): Observed => (object ?? {}) as Observed;
const deviceKey = (object: KubeObject) => `${object.metadata.namespace ?? ""}/${object.metadata.name}`;
const conditionReasons = (object: KubeObject | undefined, among: ReadonlySet<string>) =>
  (view(object).status?.conditions ?? []).filter((c) => c.reason !== undefined && among.has(c.reason));

/** Events of one change to a Device; `tenant` is the Tenant of its namespace, if any. */
export function deviceSecurityEvents(
  before: KubeObject | undefined,
  after: KubeObject | undefined,
  tenant: string | undefined,
): SecurityEvent[] {
  const object = after ?? before;
  if (!object) return [];
  const base = {
    source: "cluster",
    regarding: object,
    device: deviceKey(object),
    ...(tenant ? { tenant } : {}),
  } as const;
  const event = (
    kind: SecurityEventKind,
    type: "Normal" | "Warning",
    note: string,
    detail?: SecurityEvent["detail"],
  ) => ({
    ...base,
    kind,
    type,
    note,
    ...(detail ? { detail } : {}),
  });
  if (!after) {
    // The DELETED event carries the last stored state: one that went through graceful deletion (the
    // finalizer) has a deletionTimestamp; one deleted at once had no finalizer left to hold it.
    const gracefully = Boolean(object.metadata.deletionTimestamp);
    return [
      gracefully
        ? event("DeviceDeleted", "Normal", "Device deleted; its credentials are revoked")
        : event(
            "DeviceDeletedWithoutFinalizer",
            "Warning",
            "Device deleted without passing through the operator's finalizer; it is cut off and its certificate revoked after the fact",
          ),
    ];
  }
  if (!before) return [event("DeviceRegistered", "Normal", "Device registered")];
  const events: SecurityEvent[] = [];
  const [was, is] = [view(before), view(after)];
  if ((was.spec?.enabled ?? true) !== (is.spec?.enabled ?? true))
    events.push(
      is.spec?.enabled === false
        ? event("DeviceDisabled", "Normal", "Device disabled: cut off from the broker")
        : event("DeviceEnabled", "Normal", "Device enabled again"),
    );
  const [wasQuarantined, isQuarantined] = [quarantineOf(before), quarantineOf(after)];
  if (wasQuarantined === undefined && isQuarantined !== undefined)
    events.push(
      event("DeviceQuarantined", "Warning", `Device quarantined: ${isQuarantined}`, {
        reason: isQuarantined,
      }),
    );
  if (wasQuarantined !== undefined && isQuarantined === undefined)
    events.push(event("DeviceReleased", "Normal", "Device released from quarantine"));
  const [oldSerial, newSerial] = [
    was.status?.certificate?.serialNumber,
    is.status?.certificate?.serialNumber,
  ];
  if (newSerial && newSerial !== oldSerial)
    events.push(
      oldSerial
        ? event("CredentialsRenewed", "Normal", `certificate ${newSerial} replaces ${oldSerial}`, {
            serialNumber: newSerial,
            previousSerialNumber: oldSerial,
          })
        : event("CredentialsIssued", "Normal", `certificate ${newSerial} issued`, {
            serialNumber: newSerial,
          }),
    );
  else if (!newSerial && is.status?.username && !was.status?.username)
    events.push(event("CredentialsIssued", "Normal", "password issued", { username: is.status.username }));
  const rotation = (o: KubeObject) => o.metadata.annotations?.[ROTATE_PASSWORD_ANNOTATION];
  if (rotation(after) !== undefined && rotation(after) !== rotation(before))
    events.push(event("CredentialsRotated", "Normal", "new password requested"));
  // One refusal per reason: the operator writes it into both CredentialsIssued and Ready.
  const hadRefusal = new Set(conditionReasons(before, ADMISSION_REFUSALS).map((c) => c.reason));
  const refusals = new Map(conditionReasons(after, ADMISSION_REFUSALS).map((c) => [c.reason, c]));
  for (const [reason, refusal] of refusals)
    if (!hadRefusal.has(reason))
      events.push(event("AdmissionRefused", "Warning", refusal.message ?? "", { reason: reason ?? "" }));
  if (
    before.metadata.finalizers?.includes(DEVICE_FINALIZER) &&
    !after.metadata.finalizers?.includes(DEVICE_FINALIZER) &&
    !after.metadata.deletionTimestamp
  )
    events.push(event("FinalizerRemoved", "Warning", "the operator's finalizer was removed by someone else"));
  return events;
}

/** Events of one change to a Tenant. */
export function tenantSecurityEvents(
  before: KubeObject | undefined,
  after: KubeObject | undefined,
): SecurityEvent[] {
  if (!before || !after) return [];
  const base = { source: "cluster", regarding: after, tenant: after.metadata.name } as const;
  const events: SecurityEvent[] = [];
  const [was, is] = [view(before).spec?.suspended ?? false, view(after).spec?.suspended ?? false];
  if (was !== is)
    events.push(
      is
        ? { ...base, kind: "TenantSuspended", type: "Normal", note: "Tenant suspended: every device cut off" }
        : { ...base, kind: "TenantResumed", type: "Normal", note: "Tenant resumed" },
    );
  const had = new Set(conditionReasons(before, OWNERSHIP_CONFLICTS).map((c) => `${c.type}/${c.reason}`));
  for (const conflict of conditionReasons(after, OWNERSHIP_CONFLICTS))
    if (!had.has(`${conflict.type}/${conflict.reason}`))
      events.push({
        ...base,
        kind: "OwnershipConflict",
        type: "Warning",
        note: conflict.message ?? "",
        detail: { reason: conflict.reason ?? "" },
      });
  return events;
}

/** A new revocation record Secret: the Device's certificate is being revoked. */
export function revocationSecurityEvents(
  record: KubeObject & { data?: Record<string, string> },
  tenant: string | undefined,
): SecurityEvent[] {
  const text = Buffer.from(record.data?.[REVOCATION_KEY] ?? "", "base64").toString("utf8");
  return parseRevocations(`[${text}]`).map((revocation) => ({
    kind: "CredentialsRevoked",
    source: "cluster",
    type: "Normal",
    device: revocation.device,
    ...(tenant ? { tenant } : {}),
    note: `certificate ${revocation.serialNumber} revoked`,
    detail: { serialNumber: revocation.serialNumber },
  }));
}
