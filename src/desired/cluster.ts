import { API_GROUP } from "../api/group.js";
import type { OperatorConfig } from "../config.js";
import { MANAGED_BY_LABEL, MANAGER, TENANT_LABEL } from "./labels.js";
import { type KubeObject, TENANT_ADMIN_CLUSTER_ROLE } from "./tenant.js";

/**
 * Cluster-scoped objects that every tenant shares: the tenant-admin ClusterRole and the
 * admission policy that keeps tenants' hands off what the operator manages (I5).
 * They are installed with the operator (Helm chart or `iot-tenant-operator install`).
 */

export const TENANT_GUARD_POLICY = "iot-tenant-guard";

const readWrite = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"];
const readOnly = ["get", "list", "watch"];

/**
 * What a tenant admin may do in the tenant's namespaces: run workloads and register devices.
 * Deliberately absent: writing NetworkPolicies, quotas, LimitRanges, Roles or RoleBindings
 * (no escalation, no opening the network) and any cert-manager resource (no minting device identities, I3).
 */
export function tenantAdminClusterRole(): KubeObject {
  return {
    apiVersion: "rbac.authorization.k8s.io/v1",
    kind: "ClusterRole",
    metadata: { name: TENANT_ADMIN_CLUSTER_ROLE, labels: { [MANAGED_BY_LABEL]: MANAGER } },
    rules: [
      { apiGroups: [API_GROUP], resources: ["devices"], verbs: readWrite },
      { apiGroups: [API_GROUP], resources: ["devices/status"], verbs: readOnly },
      {
        apiGroups: [""],
        resources: ["pods", "services", "configmaps", "secrets", "persistentvolumeclaims", "serviceaccounts"],
        verbs: readWrite,
      },
      { apiGroups: [""], resources: ["pods/log", "pods/status", "events", "endpoints"], verbs: readOnly },
      { apiGroups: [""], resources: ["pods/exec", "pods/portforward"], verbs: ["create", "get"] },
      {
        apiGroups: ["apps"],
        resources: ["deployments", "statefulsets", "daemonsets", "replicasets"],
        verbs: readWrite,
      },
      {
        apiGroups: ["apps"],
        resources: ["deployments/scale", "statefulsets/scale"],
        verbs: ["get", "update", "patch"],
      },
      { apiGroups: ["batch"], resources: ["jobs", "cronjobs"], verbs: readWrite },
      { apiGroups: ["autoscaling"], resources: ["horizontalpodautoscalers"], verbs: readWrite },
      { apiGroups: ["policy"], resources: ["poddisruptionbudgets"], verbs: readWrite },
      { apiGroups: ["networking.k8s.io"], resources: ["ingresses"], verbs: readWrite },
      { apiGroups: ["networking.k8s.io"], resources: ["networkpolicies"], verbs: readOnly },
      { apiGroups: [""], resources: ["resourcequotas", "limitranges"], verbs: readOnly },
      { apiGroups: ["rbac.authorization.k8s.io"], resources: ["roles", "rolebindings"], verbs: readOnly },
    ],
  };
}

const labelOf = (object: string, label: string) =>
  `(has(${object}.metadata.labels) && '${label}' in ${object}.metadata.labels ? ${object}.metadata.labels['${label}'] : '')`;

/**
 * A ValidatingAdmissionPolicy (in-tree CEL: no webhook that could take the cluster down)
 * for every namespace that belongs to a tenant. Exempt: the operator itself, cluster admins
 * (system:masters) and the control plane's own controllers (garbage collector, namespace
 * deletion), which must be able to clean up.
 */
export function tenantGuardPolicy(
  config: Pick<OperatorConfig, "OPERATOR_NAMESPACE" | "OPERATOR_SERVICE_ACCOUNT">,
): KubeObject[] {
  const operator = `system:serviceaccount:${config.OPERATOR_NAMESPACE}:${config.OPERATOR_SERVICE_ACCOUNT}`;
  const tenantNamespaces = { matchExpressions: [{ key: TENANT_LABEL, operator: "Exists" }] };
  const managedBefore = `${labelOf("oldObject", MANAGED_BY_LABEL)} == '${MANAGER}'`;
  const managedAfter = `${labelOf("object", MANAGED_BY_LABEL)} == '${MANAGER}'`;
  const labels = { [MANAGED_BY_LABEL]: MANAGER };
  return [
    {
      apiVersion: "admissionregistration.k8s.io/v1",
      kind: "ValidatingAdmissionPolicy",
      metadata: { name: TENANT_GUARD_POLICY, labels },
      spec: {
        failurePolicy: "Fail",
        matchConstraints: {
          namespaceSelector: tenantNamespaces,
          resourceRules: [
            {
              apiGroups: ["*"],
              apiVersions: ["*"],
              operations: ["CREATE", "UPDATE", "DELETE"],
              resources: ["*"],
            },
          ],
        },
        matchConditions: [
          {
            name: "not-the-operator-or-the-control-plane",
            expression:
              `request.userInfo.username != '${operator}' && ` +
              `!('system:masters' in request.userInfo.groups) && ` +
              `!request.userInfo.username.startsWith('system:serviceaccount:kube-system:') && ` +
              `request.userInfo.username != 'system:kube-controller-manager'`,
          },
        ],
        validations: [
          {
            expression: `request.operation == 'CREATE' || !(${managedBefore})`,
            messageExpression: `'${MANAGER} manages ' + oldObject.kind + ' ' + oldObject.metadata.name + '; tenants cannot change or delete it'`,
            reason: "Forbidden",
          },
          {
            expression: `request.operation == 'DELETE' || !(${managedAfter})`,
            message: `the label ${MANAGED_BY_LABEL}=${MANAGER} is reserved for the operator`,
            reason: "Forbidden",
          },
          {
            expression:
              `request.operation == 'DELETE' || ${labelOf("object", TENANT_LABEL)} == '' || ` +
              `${labelOf("object", TENANT_LABEL)} == ${labelOf("namespaceObject", TENANT_LABEL)}`,
            message: `the label ${TENANT_LABEL} must name the tenant that owns the namespace`,
            reason: "Forbidden",
          },
        ],
      },
    },
    {
      apiVersion: "admissionregistration.k8s.io/v1",
      kind: "ValidatingAdmissionPolicyBinding",
      metadata: { name: TENANT_GUARD_POLICY, labels },
      spec: {
        policyName: TENANT_GUARD_POLICY,
        validationActions: ["Deny"],
        matchResources: { namespaceSelector: tenantNamespaces },
      },
    },
  ];
}

export function clusterObjects(
  config: Pick<OperatorConfig, "OPERATOR_NAMESPACE" | "OPERATOR_SERVICE_ACCOUNT">,
): KubeObject[] {
  return [tenantAdminClusterRole(), ...tenantGuardPolicy(config)];
}
