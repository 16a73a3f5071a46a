/**
 * Condition types and reasons that the operator writes into status.conditions. Scripts, alerts and
 * GitOps health checks match on these strings, so they are part of the API: add, never rename.
 */

export const TenantConditionType = {
  /** Everything below is True: the tenant is isolated and its devices can be served. */
  Ready: "Ready",
  NamespacesReady: "NamespacesReady",
  NetworkIsolated: "NetworkIsolated",
  PKIReady: "PKIReady",
  BrokerReady: "BrokerReady",
  /** spec.admins are bound in every tenant namespace. */
  AdminsBound: "AdminsBound",
  /** True while a condition is False for a reason only a person can fix; kstatus (Flux, kubectl wait) reports Failed. */
  Stalled: "Stalled",
} as const;
export type TenantConditionType = (typeof TenantConditionType)[keyof typeof TenantConditionType];

export const DeviceConditionType = {
  /** Credentials issued and the broker grants exactly the device's topics. */
  Ready: "Ready",
  CredentialsIssued: "CredentialsIssued",
  BrokerSynced: "BrokerSynced",
  /** True while a condition is False for a reason only a person can fix; kstatus (Flux, kubectl wait) reports Failed. */
  Stalled: "Stalled",
} as const;
export type DeviceConditionType = (typeof DeviceConditionType)[keyof typeof DeviceConditionType];

export const ConditionReason = {
  /** The condition holds. */
  Reconciled: "Reconciled",
  /** Work is under way, e.g. a Certificate waits for cert-manager. */
  Progressing: "Progressing",
  /** Another condition of the same object is not True; Ready uses this. */
  DependencyNotReady: "DependencyNotReady",
  /** A namespace in spec.namespaces exists and was not created by this tenant (never adopted). */
  NamespaceNotOwned: "NamespaceNotOwned",
  /** spec.network.allowFromNamespaces names a namespace that another tenant owns. */
  NamespaceOfOtherTenant: "NamespaceOfOtherTenant",
  /** spec.admins names a ServiceAccount in another tenant's namespace; it is not bound. */
  AdminOfOtherTenant: "AdminOfOtherTenant",
  /** spec.broker.topicRoot equals, contains or lies inside another tenant's root. */
  TopicRootConflict: "TopicRootConflict",
  /** The tenant's intermediate CA or its Issuer is not ready yet. */
  IssuerNotReady: "IssuerNotReady",
  /** The root CA Secret (ROOT_CA_SECRET in the operator's namespace) is missing or has no tls.crt/tls.key. */
  RootCANotFound: "RootCANotFound",
  /** A Secret named like the tenant's CA exists and was not created for this tenant (never taken over). */
  CANotOwned: "CANotOwned",
  /** The broker refused or could not be reached; retried with backoff. */
  BrokerError: "BrokerError",
  /** spec.suspended is true: every device is cut off from the broker. */
  Suspended: "Suspended",
  /** spec.enabled of the device is false: it is cut off from the broker. */
  Disabled: "Disabled",
  /** The device reported tampering (or an admin quarantined it): cut off and its credentials revoked until released. */
  Quarantined: "Quarantined",
  /** The Device's namespace belongs to no Tenant. */
  TenantNotFound: "TenantNotFound",
  /** The tenant already has spec.devices.maxDevices devices. */
  DeviceLimitReached: "DeviceLimitReached",
  /** Another Device of the same tenant (in another of its namespaces) has this name; the older one keeps it. */
  DeviceNameTaken: "DeviceNameTaken",
  /** The effective certificate settings (device overrides over tenant defaults) renew after expiry. */
  InvalidCertificateSettings: "InvalidCertificateSettings",
  /** Stalled is True: the message names the condition whose reason waiting will not fix. */
  ActionRequired: "ActionRequired",
} as const;
export type ConditionReason = (typeof ConditionReason)[keyof typeof ConditionReason];

/**
 * Reasons that retrying will not clear: a person must change a spec, a conflicting object or the
 * operator's setup. A False condition with one of them makes the object Stalled.
 */
export const REASONS_NEEDING_A_PERSON: ReadonlySet<ConditionReason> = new Set([
  ConditionReason.NamespaceNotOwned,
  ConditionReason.NamespaceOfOtherTenant,
  ConditionReason.AdminOfOtherTenant,
  ConditionReason.TopicRootConflict,
  ConditionReason.RootCANotFound,
  ConditionReason.CANotOwned,
  ConditionReason.TenantNotFound,
  ConditionReason.DeviceLimitReached,
  ConditionReason.DeviceNameTaken,
  ConditionReason.InvalidCertificateSettings,
  ConditionReason.Quarantined,
]);
