import { API_VERSION } from "../api/group.js";
import type { Tenant } from "../api/tenant.js";
import { DEFAULT_TOPIC_ROOT_PREFIX } from "../api/topics.js";
import type { OperatorConfig } from "../config.js";
import { managedLabels, NAMESPACE_NAME_LABEL } from "./labels.js";
import { tenantPki } from "./tenant-pki.js";

/**
 * Desired state of a Tenant: spec in, Kubernetes objects out. No IO; the tenant
 * reconciler applies what this returns and prunes what it no longer returns.
 */

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    ownerReferences?: OwnerReference[];
  };
  [field: string]: unknown;
}

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller: boolean;
  blockOwnerDeletion: boolean;
}

export type TenantDesiredConfig = Pick<
  OperatorConfig,
  "OPERATOR_NAMESPACE" | "BROKER_NAMESPACE" | "BROKER_POD_PORTS" | "DNS_NAMESPACE" | "DNS_POD_LABEL"
>;

export const TENANT_ADMIN_CLUSTER_ROLE = "iot-tenant-admin";
export const DEVICES_QUOTA_RESOURCE = "count/devices.iot.tenant-operator.io";

/** Names of the per-namespace objects; fixed so that pruning and the admission policy can find them. */
export const TenantObjectName = {
  defaultDeny: "iot-default-deny",
  allowSameTenant: "iot-allow-same-tenant",
  allowDns: "iot-allow-dns",
  allowBroker: "iot-allow-broker",
  allowFromNamespaces: "iot-allow-from-namespaces",
  allowEgressCidrs: "iot-allow-egress-cidrs",
  adminBinding: "iot-tenant-admins",
  quota: "iot-tenant-quota",
  limits: "iot-tenant-limits",
} as const;

export function tenantNamespaces(tenant: {
  metadata: { name: string };
  spec: { namespaces?: readonly string[] | undefined };
}): string[] {
  return tenant.spec.namespaces?.length ? [...tenant.spec.namespaces] : [tenant.metadata.name];
}

export function tenantTopicRoot(tenant: {
  metadata: { name: string };
  spec: { broker: { topicRoot?: string | undefined } };
}): string {
  return tenant.spec.broker.topicRoot ?? `${DEFAULT_TOPIC_ROOT_PREFIX}${tenant.metadata.name}`;
}

/** Whether two topic roots share a subtree: equal, or one lies inside the other (level-wise). */
export function topicRootsOverlap(a: string, b: string): boolean {
  return a === b || a.startsWith(`${b}/`) || b.startsWith(`${a}/`);
}

export interface TenantRootView {
  metadata: { name: string; creationTimestamp?: unknown };
  spec: { broker: { topicRoot?: string | undefined } };
}

/**
 * The older tenant whose topic root overlaps this tenant's, if any: it keeps the root and this
 * tenant gets no broker access until the overlap is gone, or its devices could reach the other's topics (I2).
 */
export function topicRootConflict(
  tenant: TenantRootView,
  others: readonly TenantRootView[],
): string | undefined {
  const age = (t: TenantRootView) => `${String(t.metadata.creationTimestamp ?? "")}/${t.metadata.name}`;
  const root = tenantTopicRoot(tenant);
  return others.find(
    (other) =>
      other.metadata.name !== tenant.metadata.name &&
      age(other) < age(tenant) &&
      topicRootsOverlap(root, tenantTopicRoot(other)),
  )?.metadata.name;
}

/** The controller reference that makes an object the Tenant's or Device's: GC and the I7 checks rely on it. */
export function ownerReferenceTo(
  kind: "Tenant" | "Device",
  owner: { metadata: { name: string; uid?: string | undefined } },
): OwnerReference {
  if (!owner.metadata.uid)
    throw new Error(`${kind} ${owner.metadata.name} has no uid: read it from the API first`);
  return {
    apiVersion: API_VERSION,
    kind,
    name: owner.metadata.name,
    uid: owner.metadata.uid,
    controller: true,
    blockOwnerDeletion: true,
  };
}

export interface TenantDesiredState {
  /** Namespaces first: everything else lives in them. */
  namespaces: KubeObject[];
  /** Policies, RBAC and quotas inside the tenant's namespaces. */
  namespaced: KubeObject[];
  /** The tenant's CA Issuer in the operator's namespace (the CA Secret is signed, not derived). */
  pki: KubeObject[];
}

type TenantInput = Pick<Tenant, "metadata" | "spec"> & { metadata: { uid?: string } };

/**
 * What the cluster says about the namespaces a Tenant's spec names. A namespace that is not the
 * tenant's never enters its policies (I1) or its admins (I5), and is never written to (I7).
 */
export interface NamespaceFacts {
  /** Namespaces in spec.namespaces that exist and were not created for this tenant. */
  readonly notOwned: ReadonlySet<string>;
  /** Namespaces that belong to other tenants. */
  readonly ofOtherTenants: ReadonlySet<string>;
}

const NO_FACTS: NamespaceFacts = { notOwned: new Set(), ofOtherTenants: new Set() };

export interface NamespacesNamed {
  metadata: { name: string };
  spec: {
    namespaces?: readonly string[] | undefined;
    network?: { allowFromNamespaces?: readonly string[] | undefined } | undefined;
    admins?: ReadonlyArray<{ namespace?: string | undefined }> | undefined;
  };
}

/** Every namespace a Tenant's spec names: its own, its allow-list, its ServiceAccount admins'. */
export function namespacesNamedBy(tenant: NamespacesNamed): string[] {
  return [
    ...tenantNamespaces(tenant),
    ...(tenant.spec.network?.allowFromNamespaces ?? []),
    ...(tenant.spec.admins ?? []).flatMap((admin) => (admin.namespace ? [admin.namespace] : [])),
  ];
}

/** allowFromNamespaces entries that belong to another tenant: never let in (I1). */
export function foreignAllowFrom(tenant: Pick<Tenant, "spec">, facts: NamespaceFacts): string[] {
  return (tenant.spec.network.allowFromNamespaces ?? []).filter((ns) => facts.ofOtherTenants.has(ns));
}

/**
 * A count as the API server stores the quantity (1000 is "1k", 1500 stays "1500"): sent any other
 * way, it differs from what is read back and every reconcile would write the quota again.
 */
export function canonicalCount(count: number): string {
  const suffixes = ["", "k", "M", "G", "T", "P", "E"];
  let mantissa = count;
  let power = 0;
  while (mantissa !== 0 && mantissa % 1000 === 0 && power < suffixes.length - 1) {
    mantissa /= 1000;
    power++;
  }
  return `${mantissa}${suffixes[power]}`;
}

/**
 * ServiceAccount admins from another tenant's namespace: never bound, or that tenant's admins,
 * who can run pods as the ServiceAccount, would administer this tenant too (I5).
 */
export function foreignAdmins(tenant: Pick<Tenant, "spec">, facts: NamespaceFacts): string[] {
  return (tenant.spec.admins ?? [])
    .filter((admin) => admin.namespace !== undefined && facts.ofOtherTenants.has(admin.namespace))
    .map((admin) => `${admin.namespace}/${admin.name}`);
}

export function desiredTenant(
  tenant: TenantInput,
  config: TenantDesiredConfig,
  facts: NamespaceFacts = NO_FACTS,
): TenantDesiredState {
  const name = tenant.metadata.name;
  const namespaces = tenantNamespaces(tenant).filter((ns) => !facts.notOwned.has(ns));
  const owner = ownerReferenceTo("Tenant", tenant);
  const labels = managedLabels(name);
  const meta = (objectName: string, namespace?: string) => ({
    name: objectName,
    ...(namespace ? { namespace } : {}),
    labels: { ...labels },
    ownerReferences: [owner],
  });

  return {
    namespaces: namespaces.map((ns) => ({
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { ...meta(ns), labels: { ...labels, ...restrictedPodSecurity } },
    })),
    namespaced: namespaces.flatMap((ns) => [
      ...networkPolicies(tenant, namespaces, facts, config).map((policy) => ({
        apiVersion: "networking.k8s.io/v1",
        kind: "NetworkPolicy",
        metadata: meta(policy.name, ns),
        spec: policy.spec,
      })),
      ...adminBinding(tenant, facts, ns, meta),
      {
        apiVersion: "v1",
        kind: "ResourceQuota",
        metadata: meta(TenantObjectName.quota, ns),
        spec: {
          hard: {
            // The API server stores quantities as strings; sending them as such keeps a converged tenant write-free.
            ...Object.fromEntries(
              Object.entries(tenant.spec.quota?.hard ?? {}).map(([k, v]) => [k, String(v)]),
            ),
            [DEVICES_QUOTA_RESOURCE]: canonicalCount(tenant.spec.devices.maxDevices),
          },
        },
      },
      {
        apiVersion: "v1",
        kind: "LimitRange",
        metadata: meta(TenantObjectName.limits, ns),
        spec: {
          limits: [
            {
              type: "Container",
              defaultRequest: { cpu: "50m", memory: "64Mi" },
              default: { cpu: "500m", memory: "256Mi" },
            },
          ],
        },
      },
    ]),
    pki: tenantPki(name, config, meta),
  };
}

const restrictedPodSecurity = {
  "pod-security.kubernetes.io/enforce": "restricted",
  "pod-security.kubernetes.io/enforce-version": "latest",
  "pod-security.kubernetes.io/audit": "restricted",
  "pod-security.kubernetes.io/warn": "restricted",
};

/** Selects namespaces by the label Kubernetes itself sets and nobody can change (I1), never by a tenant's label. */
function namespacesNamed(names: readonly string[]) {
  return { matchExpressions: [{ key: NAMESPACE_NAME_LABEL, operator: "In", values: [...names].sort() }] };
}

function networkPolicies(
  tenant: TenantInput,
  namespaces: readonly string[],
  facts: NamespaceFacts,
  config: TenantDesiredConfig,
): Array<{ name: string; spec: Record<string, unknown> }> {
  const all = { podSelector: {} };
  const [dnsKey = "", dnsValue = ""] = config.DNS_POD_LABEL.split("=");
  const { allowEgressCIDRs = [], egressPorts = [] } = tenant.spec.network;
  const allowFromNamespaces = (tenant.spec.network.allowFromNamespaces ?? []).filter(
    (ns) => !facts.ofOtherTenants.has(ns),
  );
  const policies: Array<{ name: string; spec: Record<string, unknown> }> = [
    { name: TenantObjectName.defaultDeny, spec: { ...all, policyTypes: ["Ingress", "Egress"] } },
    {
      name: TenantObjectName.allowSameTenant,
      spec: {
        ...all,
        policyTypes: ["Ingress", "Egress"],
        ingress: [{ from: [{ namespaceSelector: namespacesNamed(namespaces) }] }],
        egress: [{ to: [{ namespaceSelector: namespacesNamed(namespaces) }] }],
      },
    },
    {
      name: TenantObjectName.allowDns,
      spec: {
        ...all,
        policyTypes: ["Egress"],
        egress: [
          {
            to: [
              {
                namespaceSelector: namespacesNamed([config.DNS_NAMESPACE]),
                podSelector: { matchLabels: { [dnsKey]: dnsValue } },
              },
            ],
            ports: [
              { protocol: "UDP", port: 53 },
              { protocol: "TCP", port: 53 },
            ],
          },
        ],
      },
    },
    {
      name: TenantObjectName.allowBroker,
      spec: {
        ...all,
        policyTypes: ["Egress"],
        egress: [
          {
            to: [{ namespaceSelector: namespacesNamed([config.BROKER_NAMESPACE]) }],
            ports: config.BROKER_POD_PORTS.map((port) => ({ protocol: "TCP", port })),
          },
        ],
      },
    },
  ];
  if (allowFromNamespaces.length) {
    policies.push({
      name: TenantObjectName.allowFromNamespaces,
      spec: {
        ...all,
        policyTypes: ["Ingress"],
        ingress: [{ from: [{ namespaceSelector: namespacesNamed(allowFromNamespaces) }] }],
      },
    });
  }
  if (allowEgressCIDRs.length) {
    policies.push({
      name: TenantObjectName.allowEgressCidrs,
      spec: {
        ...all,
        policyTypes: ["Egress"],
        egress: [
          {
            to: [...allowEgressCIDRs].sort().map((cidr) => ({ ipBlock: { cidr } })),
            ...(egressPorts.length
              ? { ports: egressPorts.map((p) => ({ protocol: p.protocol, port: p.port })) }
              : {}),
          },
        ],
      },
    });
  }
  return policies;
}

function adminBinding(
  tenant: TenantInput,
  facts: NamespaceFacts,
  namespace: string,
  meta: (name: string, namespace?: string) => KubeObject["metadata"],
): KubeObject[] {
  const admins = (tenant.spec.admins ?? []).filter(
    (admin) => admin.namespace === undefined || !facts.ofOtherTenants.has(admin.namespace),
  );
  if (!admins.length) return [];
  return [
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "RoleBinding",
      metadata: meta(TenantObjectName.adminBinding, namespace),
      roleRef: {
        apiGroup: "rbac.authorization.k8s.io",
        kind: "ClusterRole",
        name: TENANT_ADMIN_CLUSTER_ROLE,
      },
      subjects: admins.map((admin) =>
        admin.kind === "ServiceAccount"
          ? { kind: "ServiceAccount", name: admin.name, namespace: admin.namespace }
          : { kind: admin.kind, name: admin.name, apiGroup: "rbac.authorization.k8s.io" },
      ),
    },
  ];
}
