import { API_GROUP } from "../api/group.js";
import { MANAGED_BY_LABEL, MANAGER } from "./labels.js";
import { type KubeObject, TENANT_ADMIN_CLUSTER_ROLE } from "./tenant.js";

/**
 * What the operator itself may do: exactly what its reconcilers read and write, nothing more.
 * Cluster-wide where tenant namespaces are (they come and go), namespaced to its own namespace
 * for the PKI and its lease. It may bind the tenant-admin ClusterRole but holds no escalate right.
 */

export const OPERATOR_ROLE = "iot-tenant-operator";

const watchVerbs = ["get", "list", "watch"];
const ownVerbs = ["get", "list", "watch", "create", "patch", "update", "delete"];

export function operatorClusterRules() {
  return [
    {
      apiGroups: [API_GROUP],
      resources: ["tenants", "devices"],
      verbs: ["get", "list", "watch", "patch", "update"],
    },
    {
      apiGroups: [API_GROUP],
      resources: ["tenants/status", "devices/status"],
      verbs: ["get", "patch", "update"],
    },
    { apiGroups: [""], resources: ["namespaces"], verbs: ownVerbs },
    { apiGroups: [""], resources: ["secrets", "resourcequotas", "limitranges"], verbs: ownVerbs },
    { apiGroups: ["networking.k8s.io"], resources: ["networkpolicies"], verbs: ownVerbs },
    { apiGroups: ["rbac.authorization.k8s.io"], resources: ["rolebindings"], verbs: ownVerbs },
    {
      apiGroups: ["rbac.authorization.k8s.io"],
      resources: ["clusterroles"],
      verbs: ["bind"],
      resourceNames: [TENANT_ADMIN_CLUSTER_ROLE],
    },
    { apiGroups: ["events.k8s.io"], resources: ["events"], verbs: ["create", "patch"] },
  ];
}

export function operatorNamespaceRules() {
  return [
    { apiGroups: ["cert-manager.io"], resources: ["certificates", "issuers"], verbs: ownVerbs },
    { apiGroups: ["cert-manager.io"], resources: ["certificaterequests"], verbs: watchVerbs },
    {
      apiGroups: ["coordination.k8s.io"],
      resources: ["leases"],
      verbs: ["get", "list", "watch", "create", "update"],
    },
  ];
}

/** The ServiceAccount, ClusterRole(Binding) and Role(Binding) the operator runs with. */
export function operatorRbac(namespace: string, serviceAccount: string): KubeObject[] {
  const labels = { [MANAGED_BY_LABEL]: MANAGER };
  const subject = { kind: "ServiceAccount", name: serviceAccount, namespace };
  return [
    { apiVersion: "v1", kind: "ServiceAccount", metadata: { name: serviceAccount, namespace, labels } },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "ClusterRole",
      metadata: { name: OPERATOR_ROLE, labels },
      rules: operatorClusterRules(),
    },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "ClusterRoleBinding",
      metadata: { name: OPERATOR_ROLE, labels },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: OPERATOR_ROLE },
      subjects: [subject],
    },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "Role",
      metadata: { name: OPERATOR_ROLE, namespace, labels },
      rules: operatorNamespaceRules(),
    },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "RoleBinding",
      metadata: { name: OPERATOR_ROLE, namespace, labels },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: OPERATOR_ROLE },
      subjects: [subject],
    },
  ];
}
