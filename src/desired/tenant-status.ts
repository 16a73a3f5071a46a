import { ConditionReason, TenantConditionType } from "../api/conditions.js";
import type { ConditionUpdate } from "../runtime/conditions.js";
import { stalledCondition } from "./stalled.js";

/** What the Tenant reconciler observed, reduced to what its conditions depend on. */
export interface TenantObservation {
  readonly wantedNamespaces: number;
  /** Owned by the tenant, existing and not terminating. */
  readonly readyNamespaces: readonly string[];
  /** Existing namespaces the tenant wants but does not own (never adopted, I7). */
  readonly notOwned: readonly string[];
  /** Ready namespaces whose device quota the quota controller has not counted yet. */
  readonly quotaPending: readonly string[];
  readonly foreignAllowFrom: readonly string[];
  /** ServiceAccount admins (namespace/name) from another tenant's namespace. */
  readonly foreignAdmins: readonly string[];
  /** The tenant CA the operator signs, and the cert-manager Issuer that uses it. */
  readonly pki: { readonly ready: boolean; readonly reason: ConditionReason; readonly message: string };
  readonly broker: { readonly ready: boolean; readonly message: string };
  readonly topicRoot: string;
  /** The older tenant whose topic root overlaps this one's. */
  readonly rootConflict?: string | undefined;
}

function namespacesReady(o: TenantObservation): ConditionUpdate {
  const type = TenantConditionType.NamespacesReady;
  if (o.notOwned.length) {
    return {
      type,
      status: "False",
      reason: ConditionReason.NamespaceNotOwned,
      message: `namespaces exist and do not belong to this tenant; they are left alone: ${o.notOwned.join(", ")}`,
    };
  }
  if (o.readyNamespaces.length < o.wantedNamespaces) {
    return {
      type,
      status: "False",
      reason: ConditionReason.Progressing,
      message: "waiting for namespaces to be created or to finish terminating",
    };
  }
  if (o.quotaPending.length) {
    // Until then the API server refuses every Device in these namespaces.
    return {
      type,
      status: "False",
      reason: ConditionReason.Progressing,
      message: `waiting for the quota controller to account for the device quota in ${o.quotaPending.join(", ")}`,
    };
  }
  return { type, status: "True", reason: ConditionReason.Reconciled };
}

function networkIsolated(o: TenantObservation): ConditionUpdate {
  const type = TenantConditionType.NetworkIsolated;
  if (o.foreignAllowFrom.length) {
    return {
      type,
      status: "False",
      reason: ConditionReason.NamespaceOfOtherTenant,
      message: `spec.network.allowFromNamespaces names namespaces of other tenants; they are not allowed in: ${o.foreignAllowFrom.join(", ")}`,
    };
  }
  if (!o.readyNamespaces.length) {
    return {
      type,
      status: "False",
      reason: ConditionReason.DependencyNotReady,
      message: "no namespace of the tenant is ready yet",
    };
  }
  return {
    type,
    status: "True",
    reason: ConditionReason.Reconciled,
    message: `default-deny and allow-list policies in ${o.readyNamespaces.join(", ")}`,
  };
}

function adminsBound(o: TenantObservation): ConditionUpdate {
  const type = TenantConditionType.AdminsBound;
  return o.foreignAdmins.length
    ? {
        type,
        status: "False",
        reason: ConditionReason.AdminOfOtherTenant,
        message: `spec.admins names ServiceAccounts in other tenants' namespaces; their admins could act as them, so they are not bound: ${o.foreignAdmins.join(", ")}`,
      }
    : { type, status: "True", reason: ConditionReason.Reconciled };
}

function pkiReady(o: TenantObservation): ConditionUpdate {
  return o.pki.ready
    ? { type: TenantConditionType.PKIReady, status: "True", reason: ConditionReason.Reconciled }
    : {
        type: TenantConditionType.PKIReady,
        status: "False",
        reason: o.pki.reason,
        message: o.pki.message,
      };
}

function brokerReady(o: TenantObservation): ConditionUpdate {
  const type = TenantConditionType.BrokerReady;
  if (o.rootConflict) {
    return {
      type,
      status: "False",
      reason: ConditionReason.TopicRootConflict,
      message: `topic root ${o.topicRoot} overlaps the root of the older tenant ${o.rootConflict}; no device gets broker access until spec.broker.topicRoot is unique`,
    };
  }
  return o.broker.ready
    ? { type, status: "True", reason: ConditionReason.Reconciled, message: o.broker.message }
    : { type, status: "False", reason: ConditionReason.BrokerError, message: o.broker.message };
}

/** The Tenant's conditions, then Stalled, then Ready: True only when every condition before Stalled is. */
export function tenantConditions(o: TenantObservation): ConditionUpdate[] {
  const parts = [namespacesReady(o), networkIsolated(o), adminsBound(o), pkiReady(o), brokerReady(o)];
  const notReady = parts.filter((c) => c.status !== "True").map((c) => c.type);
  return [
    ...parts,
    stalledCondition(parts),
    notReady.length
      ? {
          type: TenantConditionType.Ready,
          status: "False",
          reason: ConditionReason.DependencyNotReady,
          message: `not ready: ${notReady.join(", ")}`,
        }
      : {
          type: TenantConditionType.Ready,
          status: "True",
          reason: ConditionReason.Reconciled,
          message: "tenant is isolated and ready",
        },
  ];
}
