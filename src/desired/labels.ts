import { API_GROUP } from "../api/group.js";

/** The label that ties every object the operator makes to its tenant; tenants can neither set nor remove it. */
export const TENANT_LABEL = `${API_GROUP}/tenant`;
export const DEVICE_LABEL = `${API_GROUP}/device`;
/** On objects in the operator's namespace: the namespace of the Device they serve. */
export const DEVICE_NAMESPACE_LABEL = `${API_GROUP}/device-namespace`;
/** On objects in the operator's namespace: the UID of the Device they serve, so only that Device's cleanup removes them. */
export const DEVICE_UID_LABEL = `${API_GROUP}/device-uid`;
export const DEVICE_FINALIZER = `${API_GROUP}/broker`;
/** Set to a new value to have a password device's password replaced. */
export const ROTATE_PASSWORD_ANNOTATION = `${API_GROUP}/rotate-password`;
/**
 * On a Device: it is quarantined, the value says why. The operator sets it when the Tenant's
 * devicePolicy asks; removing it (a tenant admin or the platform, never the device) releases it.
 */
export const QUARANTINE_ANNOTATION = `${API_GROUP}/quarantined`;
export const MANAGED_BY_LABEL = "app.kubernetes.io/managed-by";
export const MANAGER = "iot-tenant-operator";
/** Kubernetes sets this label on every namespace to its name; nobody can change it. */
export const NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name";
export const TENANT_FINALIZER = `${API_GROUP}/cleanup`;

export function managedLabels(tenant: string): Record<string, string> {
  return { [TENANT_LABEL]: tenant, [MANAGED_BY_LABEL]: MANAGER };
}
