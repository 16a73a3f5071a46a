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
 * (no escalation, no opening the network), any cert-manager resource (no minting device identities, I3),
 * Endpoints and EndpointSlices (no Service pointing at another tenant's pods), Gateway API objects,
 * and the subresources pods/ephemeralcontainers, pods/eviction, services/status and serviceaccounts/token.
 */
export const TENANT_ADMIN_RULES: ReadonlyArray<{
  readonly apiGroups: readonly string[];
  readonly resources: readonly string[];
  readonly verbs: readonly string[];
}> = [
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
];

export function tenantAdminClusterRole(): KubeObject {
  return {
    apiVersion: "rbac.authorization.k8s.io/v1",
    kind: "ClusterRole",
    metadata: { name: TENANT_ADMIN_CLUSTER_ROLE, labels: { [MANAGED_BY_LABEL]: MANAGER } },
    rules: TENANT_ADMIN_RULES.map((rule) => ({
      apiGroups: [...rule.apiGroups],
      resources: [...rule.resources],
      verbs: [...rule.verbs],
    })),
  };
}

const labelOf = (object: string, label: string) =>
  `(has(${object}.metadata.labels) && '${label}' in ${object}.metadata.labels ? ${object}.metadata.labels['${label}'] : '')`;

/** The ConfigMap in the operator's namespace that carries the platform's allow-lists to the admission policy. */
export const TENANT_POLICY_PARAMS = "iot-tenant-policy";

export type GuardConfig = Pick<
  OperatorConfig,
  | "OPERATOR_NAMESPACE"
  | "OPERATOR_SERVICE_ACCOUNT"
  | "TENANT_PRIORITY_CLASSES"
  | "TENANT_SERVICE_TYPES"
  | "TENANT_INGRESS_DOMAIN"
>;

/**
 * The allow-lists as policy parameters: the platform can change them without touching the policy,
 * and the chart fills them from its values.
 */
export function tenantPolicyParams(config: GuardConfig): KubeObject {
  return {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: {
      name: TENANT_POLICY_PARAMS,
      namespace: config.OPERATOR_NAMESPACE,
      labels: { [MANAGED_BY_LABEL]: MANAGER },
    },
    data: {
      priorityClasses: config.TENANT_PRIORITY_CLASSES.join(","),
      serviceTypes: config.TENANT_SERVICE_TYPES.join(","),
      ingressDomain: config.TENANT_INGRESS_DOMAIN ?? "",
    },
  };
}

/** Where each kind that carries a pod template keeps the pod spec; pods created from them by controllers are exempt. */
const podSpecPath = `
  variables.resource == '/pods' ? 'spec' :
  variables.resource == '/podtemplates' ? 'template.spec' :
  variables.resource == 'batch/cronjobs' ? 'spec.jobTemplate.spec.template.spec' :
  variables.resource in ['apps/deployments', 'apps/replicasets', 'apps/statefulsets', 'apps/daemonsets',
    'batch/jobs', '/replicationcontrollers'] ? 'spec.template.spec' : ''`;

const podSpec = `
  request.operation == 'DELETE' || variables.podSpecPath == '' ? null :
  variables.podSpecPath == 'spec' ? object.spec :
  variables.podSpecPath == 'template.spec' ? object.template.spec :
  variables.podSpecPath == 'spec.template.spec' ? object.spec.template.spec :
  object.spec.jobTemplate.spec.template.spec`;

/** Metadata that controllers copy onto the objects they create (pods, jobs, claims): the same label rules apply. */
const templateLabels = `
  (request.operation == 'DELETE' ? [] :
    variables.podSpecPath == 'template.spec' ? [object.template] :
    variables.podSpecPath == 'spec.template.spec' ? [object.spec.template] :
    variables.podSpecPath == 'spec.jobTemplate.spec.template.spec' ? [object.spec.jobTemplate, object.spec.jobTemplate.spec.template] :
    []) +
  (request.operation != 'DELETE' && variables.resource == 'apps/statefulsets' && has(object.spec.volumeClaimTemplates)
    ? object.spec.volumeClaimTemplates : [])`;

const ownHost = (host: string) =>
  `(${host} == variables.ingressSuffix || ${host}.endsWith('.' + variables.ingressSuffix))`;

/** Ingress hosts outside the namespace's own subdomain; a rule without a host catches every host. */
const foreignHosts = `
  variables.resource != 'networking.k8s.io/ingresses' || request.operation == 'DELETE' ? [] :
  (has(object.spec.rules) ? object.spec.rules : []).map(r, has(r.host) ? r.host : '(no host)')
    .filter(h, !${ownHost("h")}) +
  (has(object.spec.tls) ? object.spec.tls : []).filter(t, has(t.hosts))
    .map(t, t.hosts.filter(h, !${ownHost("h")}).join(', ')).filter(h, h != '')`;

const CERT_MANAGER_ANNOTATION = `(k.startsWith('cert-manager.io/') || k.contains('.cert-manager.io/'))`;

/** What a tenant may create or change, checked against the platform's allow-lists (I1, I3, I6). */
function tenantObjectValidations(): object[] {
  const writing = (resource: string) =>
    `variables.resource != '${resource}' || request.operation == 'DELETE' || `;
  const ingress = writing("networking.k8s.io/ingresses");
  return [
    {
      expression: `variables.templateLabels.all(t, !has(t.metadata) || !has(t.metadata.labels) ||
        (!('${MANAGED_BY_LABEL}' in t.metadata.labels && t.metadata.labels['${MANAGED_BY_LABEL}'] == '${MANAGER}') &&
         (!('${TENANT_LABEL}' in t.metadata.labels) || t.metadata.labels['${TENANT_LABEL}'] == variables.namespaceTenant)))`,
      message: `templates cannot carry the label ${MANAGED_BY_LABEL}=${MANAGER} or another tenant's ${TENANT_LABEL}`,
      reason: "Forbidden",
    },
    {
      expression: `variables.podSpec == null || !has(variables.podSpec.priorityClassName) ||
        variables.podSpec.priorityClassName == '' ||
        variables.podSpec.priorityClassName in params.data.priorityClasses.split(',')`,
      messageExpression: `variables.podSpecPath + '.priorityClassName: ' + variables.podSpec.priorityClassName +
        ' is not on the platform allow-list for tenants [' + params.data.priorityClasses + ']'`,
      reason: "Forbidden",
    },
    {
      expression: `${writing("/services")}object.spec.type in params.data.serviceTypes.split(',')`,
      messageExpression: `'spec.type: ' + object.spec.type + ' is not on the platform allow-list for tenants [' + params.data.serviceTypes + ']'`,
      reason: "Forbidden",
    },
    {
      expression: `${writing("/services")}!has(object.spec.externalIPs) || size(object.spec.externalIPs) == 0`,
      message:
        "spec.externalIPs is refused in tenant namespaces: it lets a Service intercept traffic to any address (CVE-2020-8554)",
      reason: "Forbidden",
    },
    {
      expression: `${writing("/persistentvolumeclaims")}!has(object.spec.volumeName) || object.spec.volumeName == '' ||
        (request.operation == 'UPDATE' && has(oldObject.spec.volumeName) && oldObject.spec.volumeName == object.spec.volumeName)`,
      message:
        "spec.volumeName is refused in tenant namespaces: a claim cannot pick a PersistentVolume by name (it may be another tenant's); use a StorageClass",
      reason: "Forbidden",
    },
    {
      expression: `${ingress}params.data.ingressDomain != ''`,
      message:
        "tenants cannot create Ingresses: the platform has set no ingress domain (TENANT_INGRESS_DOMAIN) to give each namespace its own hosts",
      reason: "Forbidden",
    },
    {
      expression: `${ingress}!has(object.spec.defaultBackend)`,
      message:
        "spec.defaultBackend is refused in tenant namespaces: it would receive every other host's traffic",
      reason: "Forbidden",
    },
    {
      expression: `params.data.ingressDomain == '' || size(variables.foreignHosts) == 0`,
      messageExpression: `'spec.rules[].host and spec.tls[].hosts must lie under ' + variables.ingressSuffix + ', not: ' + variables.foreignHosts.join(', ')`,
      reason: "Forbidden",
    },
    {
      expression: `!(variables.resource in ['networking.k8s.io/ingresses', 'gateway.networking.k8s.io/gateways']) ||
        request.operation == 'DELETE' || !has(object.metadata.annotations) ||
        object.metadata.annotations.all(k, !${CERT_MANAGER_ANNOTATION})`,
      messageExpression: `'annotation ' + object.metadata.annotations.filter(k, ${CERT_MANAGER_ANNOTATION}).join(', ') +
        ' is refused in tenant namespaces: tenants cannot have cert-manager issue certificates'`,
      reason: "Forbidden",
    },
  ];
}

/**
 * A ValidatingAdmissionPolicy (in-tree CEL: no webhook that could take the cluster down)
 * for every namespace that belongs to a tenant. Exempt: the operator itself, cluster admins
 * (system:masters) and the control plane's own controllers (garbage collector, namespace
 * deletion, volume binding), which must be able to clean up; what they create from a tenant's
 * template is checked on the template.
 */
export function tenantGuardPolicy(config: GuardConfig): KubeObject[] {
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
        paramKind: { apiVersion: "v1", kind: "ConfigMap" },
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
        variables: [
          { name: "resource", expression: "request.resource.group + '/' + request.resource.resource" },
          { name: "namespaceTenant", expression: labelOf("namespaceObject", TENANT_LABEL) },
          { name: "podSpecPath", expression: podSpecPath.trim() },
          { name: "podSpec", expression: podSpec.trim() },
          { name: "templateLabels", expression: templateLabels.trim() },
          {
            name: "ingressSuffix",
            expression: "namespaceObject.metadata.name + '.' + params.data.ingressDomain",
          },
          { name: "foreignHosts", expression: foreignHosts.trim() },
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
              `${labelOf("object", TENANT_LABEL)} == variables.namespaceTenant`,
            message: `the label ${TENANT_LABEL} must name the tenant that owns the namespace`,
            reason: "Forbidden",
          },
          ...tenantObjectValidations(),
        ],
      },
    },
    {
      apiVersion: "admissionregistration.k8s.io/v1",
      kind: "ValidatingAdmissionPolicyBinding",
      metadata: { name: TENANT_GUARD_POLICY, labels },
      spec: {
        policyName: TENANT_GUARD_POLICY,
        // Without its allow-lists the policy refuses everything it matches rather than nothing.
        paramRef: {
          name: TENANT_POLICY_PARAMS,
          namespace: config.OPERATOR_NAMESPACE,
          parameterNotFoundAction: "Deny",
        },
        validationActions: ["Deny"],
        matchResources: { namespaceSelector: tenantNamespaces },
      },
    },
  ];
}

export function clusterObjects(config: GuardConfig): KubeObject[] {
  return [tenantAdminClusterRole(), tenantPolicyParams(config), ...tenantGuardPolicy(config)];
}
