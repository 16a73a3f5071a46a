import { API_VERSION } from "../api/group.js";
import { TENANT_LABEL } from "../desired/labels.js";
import { byLabel, type Informer } from "../runtime/informer.js";
import type { KubeObject, ResourceType } from "../runtime/kube-object.js";
import { secretCacheForm } from "./secrets.js";

/**
 * No reconciler reads a Certificate's status (cert-manager rewrites it several times per issuance;
 * the issued Secret is what counts), so the cache keeps one Certificate per device without it.
 */
function withoutStatus(object: KubeObject): KubeObject {
  const { status: _status, ...rest } = object as KubeObject & { status?: unknown };
  return rest;
}

/** Every kind the operator reads or writes, named once so that RBAC, informers and pruning agree. */
export const Resource = {
  tenant: { apiVersion: API_VERSION, kind: "Tenant", plural: "tenants", namespaced: false },
  device: { apiVersion: API_VERSION, kind: "Device", plural: "devices", namespaced: true },
  namespace: { apiVersion: "v1", kind: "Namespace", plural: "namespaces", namespaced: false },
  secret: {
    apiVersion: "v1",
    kind: "Secret",
    plural: "secrets",
    namespaced: true,
    cacheForm: secretCacheForm,
  },
  configMap: { apiVersion: "v1", kind: "ConfigMap", plural: "configmaps", namespaced: true },
  resourceQuota: { apiVersion: "v1", kind: "ResourceQuota", plural: "resourcequotas", namespaced: true },
  limitRange: { apiVersion: "v1", kind: "LimitRange", plural: "limitranges", namespaced: true },
  networkPolicy: {
    apiVersion: "networking.k8s.io/v1",
    kind: "NetworkPolicy",
    plural: "networkpolicies",
    namespaced: true,
  },
  roleBinding: {
    apiVersion: "rbac.authorization.k8s.io/v1",
    kind: "RoleBinding",
    plural: "rolebindings",
    namespaced: true,
  },
  clusterRole: {
    apiVersion: "rbac.authorization.k8s.io/v1",
    kind: "ClusterRole",
    plural: "clusterroles",
    namespaced: false,
  },
  validatingAdmissionPolicy: {
    apiVersion: "admissionregistration.k8s.io/v1",
    kind: "ValidatingAdmissionPolicy",
    plural: "validatingadmissionpolicies",
    namespaced: false,
  },
  validatingAdmissionPolicyBinding: {
    apiVersion: "admissionregistration.k8s.io/v1",
    kind: "ValidatingAdmissionPolicyBinding",
    plural: "validatingadmissionpolicybindings",
    namespaced: false,
  },
  customResourceDefinition: {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    plural: "customresourcedefinitions",
    namespaced: false,
  },
  certificate: {
    apiVersion: "cert-manager.io/v1",
    kind: "Certificate",
    plural: "certificates",
    namespaced: true,
    cacheForm: withoutStatus,
  },
  issuer: { apiVersion: "cert-manager.io/v1", kind: "Issuer", plural: "issuers", namespaced: true },
} as const satisfies Record<string, ResourceType>;

/** The ResourceType of a desired object, by its apiVersion and kind. */
export function resourceOf(object: { apiVersion: string; kind: string }): ResourceType {
  const found = Object.values(Resource).find(
    (r) => r.apiVersion === object.apiVersion && r.kind === object.kind,
  );
  if (!found) throw new Error(`no resource type for ${object.apiVersion} ${object.kind}`);
  return found;
}

/** The informer index of objects by their tenant label. */
export const TENANT_INDEX = "tenant";

/** `informer` with its objects indexed by tenant label, so a tenant's lookups cost its own objects. */
export function indexedByTenant<T extends Informer>(informer: T): T {
  informer.addIndex(TENANT_INDEX, byLabel(TENANT_LABEL));
  return informer;
}
