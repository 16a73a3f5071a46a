import { z } from "zod";
import { API_GROUP } from "../api/group.js";
import type { OperatorConfig } from "../config.js";
import { parseTenantObject } from "../controllers/parse.js";
import { Resource } from "../controllers/resources.js";
import { TENANT_ADMIN_RULES, TENANT_POLICY_PARAMS } from "../desired/cluster.js";
import { MANAGED_BY_LABEL, MANAGER, NAMESPACE_NAME_LABEL, TENANT_LABEL } from "../desired/labels.js";
import { DEVICES_QUOTA_RESOURCE, TenantObjectName, tenantTopicRoot } from "../desired/tenant.js";
import { KubeApiError, type KubeClient } from "../runtime/kube-client.js";
import {
  type KubeObject,
  kubeObjectSchema,
  type ResourceType,
  resourcePath,
} from "../runtime/kube-object.js";
import { type BrokerEndpoint, brokerProbeChecks, brokerStateChecks } from "./broker-checks.js";
import { pkiChecks } from "./pki-checks.js";

/**
 * Answers "can tenant A touch tenant B?" on a live cluster and broker, by looking at what is
 * really there and by asking the real authorities: the API server (SubjectAccessReview, server
 * dry runs as each tenant admin) and the broker (a device's own certificate trying another
 * tenant's topics). A check that had nothing to ask with says SKIP, never PASS.
 */

export type CheckResult = "PASS" | "FAIL" | "SKIP";

export interface IsolationCheck {
  readonly property: "I1" | "I2" | "I3" | "I4" | "I5" | "I6" | "I7";
  /** The tenant the check is about; "*" for the whole broker. */
  readonly tenant: string;
  readonly check: string;
  readonly result: CheckResult;
  readonly detail: string;
}

export interface VerifyOptions {
  readonly config: Pick<
    OperatorConfig,
    "OPERATOR_NAMESPACE" | "DNS_NAMESPACE" | "BROKER_NAMESPACE" | "ROOT_CA_SECRET"
  >;
  readonly broker?: BrokerEndpoint;
  /** Check only these tenants; every tenant still counts as "another tenant" for them. */
  readonly tenants?: readonly string[];
}

const listSchema = z.object({ items: z.array(kubeObjectSchema) });
const reviewSchema = z.object({ status: z.object({ allowed: z.boolean() }).loose() });
const SAR_CONCURRENCY = 16;
const serviceAccountResource: ResourceType = {
  apiVersion: "v1",
  kind: "ServiceAccount",
  plural: "serviceaccounts",
  namespaced: true,
};

type Admin = { kind: string; name: string; namespace?: string | undefined };

export interface TenantView {
  readonly name: string;
  /** Namespaces whose controller owner is this Tenant, by UID: what the cluster says, not the status. */
  readonly namespaces: string[];
  readonly allowFrom: string[];
  readonly topicRoot: string;
  readonly admins: Admin[];
}

async function list(client: KubeClient, resource: ResourceType, namespace?: string): Promise<KubeObject[]> {
  const body = await client.request({
    verb: "list",
    method: "GET",
    path: resourcePath(resource, { namespace }),
  });
  return listSchema.parse(body).items;
}

/** Runs `work` over `items` with at most `limit` in flight, keeping the order of results. */
async function pooled<T, R>(items: readonly T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await work(items[index] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

const passOrFail = (open: boolean): CheckResult => (open ? "FAIL" : "PASS");

/** Every namespaceSelector in a policy's rules: the only way a policy can reach across namespaces. */
function namespaceSelectors(value: unknown): unknown[] {
  if (Array.isArray(value)) return value.flatMap(namespaceSelectors);
  if (value === null || typeof value !== "object") return [];
  return Object.entries(value).flatMap(([key, v]) =>
    key === "namespaceSelector" ? [v] : namespaceSelectors(v),
  );
}

const selectorSchema = z.object({
  matchExpressions: z.array(
    z.object({
      key: z.literal(NAMESPACE_NAME_LABEL),
      operator: z.literal("In"),
      values: z.array(z.string()),
    }),
  ),
});

/**
 * I1: every policy in the tenant's namespaces names only the tenant's own namespaces, plus what
 * the one policy made for it may name: DNS, the broker, the allow-list minus other tenants' namespaces.
 */
async function networkChecks(
  client: KubeClient,
  tenant: TenantView,
  others: TenantView[],
  config: VerifyOptions["config"],
): Promise<IsolationCheck[]> {
  if (!tenant.namespaces.length) {
    return [
      {
        property: "I1",
        tenant: tenant.name,
        check: "network policies",
        result: "SKIP",
        detail: "the tenant owns no namespace yet",
      },
    ];
  }
  const ofOthers = new Set(others.flatMap((o) => o.namespaces));
  const permittedBy: Record<string, string[]> = {
    [TenantObjectName.allowDns]: [config.DNS_NAMESPACE],
    [TenantObjectName.allowBroker]: [config.BROKER_NAMESPACE],
    [TenantObjectName.allowFromNamespaces]: tenant.allowFrom.filter((ns) => !ofOthers.has(ns)),
  };
  const checks: IsolationCheck[] = [];
  for (const namespace of tenant.namespaces) {
    const policies = await list(client, Resource.networkPolicy, namespace);
    const deny = policies.find((p) => p.metadata.name === TenantObjectName.defaultDeny) as
      | (KubeObject & {
          spec?: { podSelector?: object; policyTypes?: string[]; ingress?: unknown; egress?: unknown };
        })
      | undefined;
    const denies =
      deny?.spec !== undefined &&
      Object.keys(deny.spec.podSelector ?? { x: 1 }).length === 0 &&
      ["Ingress", "Egress"].every((t) => deny.spec?.policyTypes?.includes(t)) &&
      deny.spec.ingress === undefined &&
      deny.spec.egress === undefined;
    checks.push({
      property: "I1",
      tenant: tenant.name,
      check: `${namespace}: default deny for ingress and egress`,
      result: passOrFail(!denies),
      detail: denies ? "iot-default-deny selects every pod, allows nothing" : "missing or weakened",
    });
    const reaches = policies.flatMap((policy) =>
      namespaceSelectors((policy as { spec?: unknown }).spec).map((selector) => ({
        policy: policy.metadata.name,
        selector,
      })),
    );
    const loose = reaches.filter(({ selector }) => !selectorSchema.safeParse(selector).success);
    const crossing = reaches.flatMap(({ policy, selector }) => {
      const parsed = selectorSchema.safeParse(selector);
      if (!parsed.success) return [];
      const permitted = new Set([...tenant.namespaces, ...(permittedBy[policy] ?? [])]);
      return parsed.data.matchExpressions.flatMap((e) =>
        e.values.filter((v) => !permitted.has(v)).map((v) => `${policy} → ${v}`),
      );
    });
    checks.push({
      property: "I1",
      tenant: tenant.name,
      check: `${namespace}: policies name only the tenant's namespaces and its allow-lists`,
      result: passOrFail(loose.length > 0 || crossing.length > 0),
      detail: loose.length
        ? `selects namespaces by a label a tenant could set: ${loose.map((l) => l.policy).join(", ")}`
        : crossing.length
          ? crossing.join(", ")
          : `${reaches.length} namespace selectors, all by ${NAMESPACE_NAME_LABEL}, none foreign`,
    });
  }
  return checks;
}

/** The identity the API server sees for an admin subject (a Group is asked as a member of it). */
function identityOf(admin: Admin): { user: string; groups: string[] } {
  if (admin.kind === "User") return { user: admin.name, groups: ["system:authenticated"] };
  if (admin.kind === "Group")
    return { user: `iot-verify-member-of:${admin.name}`, groups: [admin.name, "system:authenticated"] };
  return {
    user: `system:serviceaccount:${admin.namespace}:${admin.name}`,
    groups: ["system:serviceaccounts", `system:serviceaccounts:${admin.namespace}`, "system:authenticated"],
  };
}

interface Access {
  verb: string;
  group: string;
  resource: string;
  subresource?: string;
  namespace?: string;
}

async function allowed(client: KubeClient, admin: Admin, access: Access): Promise<boolean> {
  const body = await client.request({
    verb: "create",
    method: "POST",
    path: "/apis/authorization.k8s.io/v1/subjectaccessreviews",
    body: {
      apiVersion: "authorization.k8s.io/v1",
      kind: "SubjectAccessReview",
      spec: { ...identityOf(admin), resourceAttributes: access },
    },
  });
  return reviewSchema.parse(body).status.allowed;
}

/** Every (verb, resource) the tenant-admin ClusterRole grants: what an admin must hold nowhere else. */
function adminSurface(): Access[] {
  return TENANT_ADMIN_RULES.flatMap((rule) =>
    rule.apiGroups.flatMap((group) =>
      rule.resources.flatMap((path) => {
        const [resource = "", subresource] = path.split("/");
        return rule.verbs.map((verb) => ({ verb, group, resource, ...(subresource ? { subresource } : {}) }));
      }),
    ),
  );
}

/** What the tenant-admin role deliberately leaves out, in the tenant's own namespace and cluster-wide. */
function withheld(own: string, operatorNamespace: string): Array<Access & { what: string }> {
  return [
    {
      verb: "get",
      group: "",
      resource: "secrets",
      namespace: operatorNamespace,
      what: "read device keys and CAs",
    },
    {
      verb: "create",
      group: "cert-manager.io",
      resource: "certificates",
      namespace: own,
      what: "mint a certificate",
    },
    {
      verb: "create",
      group: "cert-manager.io",
      resource: "certificaterequests",
      namespace: own,
      what: "request a certificate",
    },
    {
      verb: "create",
      group: "cert-manager.io",
      resource: "issuers",
      namespace: own,
      what: "create an Issuer",
    },
    {
      verb: "delete",
      group: "networking.k8s.io",
      resource: "networkpolicies",
      namespace: own,
      what: "delete its NetworkPolicies",
    },
    { verb: "update", group: "", resource: "resourcequotas", namespace: own, what: "raise its quota" },
    {
      verb: "create",
      group: "rbac.authorization.k8s.io",
      resource: "rolebindings",
      namespace: own,
      what: "bind roles",
    },
    { verb: "create", group: "", resource: "endpoints", namespace: own, what: "write Endpoints" },
    {
      verb: "create",
      group: "discovery.k8s.io",
      resource: "endpointslices",
      namespace: own,
      what: "write EndpointSlices",
    },
    {
      verb: "patch",
      group: "",
      resource: "pods",
      subresource: "ephemeralcontainers",
      namespace: own,
      what: "add ephemeral containers",
    },
    {
      verb: "update",
      group: "",
      resource: "services",
      subresource: "status",
      namespace: own,
      what: "write Service status",
    },
    {
      verb: "create",
      group: "",
      resource: "serviceaccounts",
      subresource: "token",
      namespace: own,
      what: "request ServiceAccount tokens",
    },
    {
      verb: "create",
      group: "gateway.networking.k8s.io",
      resource: "gateways",
      namespace: own,
      what: "create Gateways",
    },
    { verb: "create", group: "", resource: "persistentvolumes", what: "create PersistentVolumes" },
    {
      verb: "create",
      group: "scheduling.k8s.io",
      resource: "priorityclasses",
      what: "create PriorityClasses",
    },
    { verb: "update", group: "", resource: "namespaces", what: "relabel namespaces" },
  ];
}

/** I5 by SubjectAccessReview: each admin over the whole tenant-admin surface in every other tenant's namespace. */
async function rbacChecks(
  client: KubeClient,
  tenant: TenantView,
  others: TenantView[],
  operatorNamespace: string,
): Promise<IsolationCheck[]> {
  const own = tenant.namespaces[0];
  if (!own || !tenant.admins.length) return [];
  const surface = adminSurface();
  const checks: IsolationCheck[] = [];
  for (const admin of tenant.admins) {
    const foreign = others.flatMap((other) =>
      other.namespaces.flatMap((namespace) =>
        surface.map((access) => ({ ...access, namespace, other: other.name })),
      ),
    );
    const crossing = (
      await pooled(foreign, SAR_CONCURRENCY, async ({ other, ...access }) =>
        (await allowed(client, admin, access))
          ? `${access.verb} ${access.resource}${access.subresource ? `/${access.subresource}` : ""} in ${access.namespace} (${other})`
          : undefined,
      )
    ).filter((x) => x !== undefined);
    checks.push({
      property: "I5",
      tenant: tenant.name,
      check: `admin ${admin.kind} ${admin.name}: nothing of the tenant-admin surface in other tenants' namespaces`,
      result: passOrFail(crossing.length > 0),
      detail: crossing.length
        ? `allowed to: ${crossing.slice(0, 5).join(", ")}${crossing.length > 5 ? ` and ${crossing.length - 5} more` : ""}`
        : `${foreign.length} requests over ${others.length} other tenants denied by the API server`,
    });
    const escalations = withheld(own, operatorNamespace);
    const granted = (
      await pooled(escalations, SAR_CONCURRENCY, async ({ what, ...access }) =>
        (await allowed(client, admin, access)) ? what : undefined,
      )
    ).filter((x) => x !== undefined);
    checks.push({
      property: "I5",
      tenant: tenant.name,
      check: `admin ${admin.kind} ${admin.name}: no escalation, no rights the role leaves out`,
      result: passOrFail(granted.length > 0),
      detail: granted.length
        ? `allowed to: ${granted.join(", ")}`
        : `${escalations.length} requests denied by the API server`,
    });
  }
  return checks;
}

const probeKind = {
  pod: { apiVersion: "v1", kind: "Pod", plural: "pods", namespaced: true },
  service: { apiVersion: "v1", kind: "Service", plural: "services", namespaced: true },
  claim: {
    apiVersion: "v1",
    kind: "PersistentVolumeClaim",
    plural: "persistentvolumeclaims",
    namespaced: true,
  },
  deployment: { apiVersion: "apps/v1", kind: "Deployment", plural: "deployments", namespaced: true },
  ingress: { apiVersion: "networking.k8s.io/v1", kind: "Ingress", plural: "ingresses", namespaced: true },
  configMap: Resource.configMap,
} as const satisfies Record<string, ResourceType>;

interface Probe {
  readonly property: IsolationCheck["property"];
  readonly what: string;
  readonly resource: ResourceType;
  /** What a tenant admin must not be able to create. */
  readonly refused: Record<string, unknown>;
  /** The same object with the allowed value: admitted, so the refusal is about that one field. */
  readonly twin: Record<string, unknown>;
}

/** One object of each class the platform refuses to tenants, each with its admitted twin. */
function refusedObjectClasses(own: string, other: string, ingressDomain: string): Probe[] {
  const meta = (extra: object = {}) => ({ name: "iot-verify-probe", namespace: own, ...extra });
  const podSpec = (extra: object = {}) => ({
    securityContext: { runAsNonRoot: true, runAsUser: 1000, seccompProfile: { type: "RuntimeDefault" } },
    containers: [
      {
        name: "probe",
        image: "registry.invalid/probe:1",
        securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ["ALL"] } },
      },
    ],
    ...extra,
  });
  const pod = (extra: object = {}) => ({
    apiVersion: "v1",
    kind: "Pod",
    metadata: meta(),
    spec: podSpec(extra),
  });
  const deployment = (extra: object = {}, labels: Record<string, string> = {}) => ({
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: meta(),
    spec: {
      selector: { matchLabels: { app: "probe" } },
      template: { metadata: { labels: { app: "probe", ...labels } }, spec: podSpec(extra) },
    },
  });
  const service = (extra: object) => ({
    apiVersion: "v1",
    kind: "Service",
    metadata: meta(),
    spec: { selector: { app: "probe" }, ports: [{ port: 80 }], ...extra },
  });
  const claim = (extra: object = {}) => ({
    apiVersion: "v1",
    kind: "PersistentVolumeClaim",
    metadata: meta(),
    spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "1Gi" } }, ...extra },
  });
  const ingress = (host: string, annotations: Record<string, string> = {}) => ({
    apiVersion: "networking.k8s.io/v1",
    kind: "Ingress",
    metadata: meta({ annotations }),
    spec: {
      rules: [
        {
          host,
          http: {
            paths: [
              {
                path: "/",
                pathType: "Prefix",
                backend: { service: { name: "probe", port: { number: 80 } } },
              },
            ],
          },
        },
      ],
    },
  });
  const configMap = (labels: Record<string, string>) => ({
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: meta({ labels }),
  });
  const ownHost = `probe.${own}.${ingressDomain || "invalid"}`;
  return [
    {
      property: "I1",
      what: "a Service with spec.externalIPs",
      resource: probeKind.service,
      refused: service({ externalIPs: ["192.0.2.10"] }),
      twin: service({}),
    },
    {
      property: "I1",
      what: "an ExternalName Service",
      resource: probeKind.service,
      refused: service({
        type: "ExternalName",
        externalName: `probe.${other}.svc.cluster.local`,
        selector: undefined,
        ports: undefined,
      }),
      twin: service({}),
    },
    {
      property: "I1",
      what: `an Ingress for a host of ${other}`,
      resource: probeKind.ingress,
      refused: ingress(`probe.${other}.${ingressDomain || "invalid"}`),
      twin: ingress(ownHost),
    },
    {
      property: "I3",
      what: "an Ingress annotated cert-manager.io/cluster-issuer",
      resource: probeKind.ingress,
      refused: ingress(ownHost, { "cert-manager.io/cluster-issuer": "iot-root-ca" }),
      twin: ingress(ownHost),
    },
    {
      property: "I5",
      what: "a claim binding a PersistentVolume by name",
      resource: probeKind.claim,
      refused: claim({ volumeName: `pv-of-${other}` }),
      twin: claim(),
    },
    {
      property: "I5",
      what: "a ConfigMap carrying the operator's label",
      resource: probeKind.configMap,
      refused: configMap({ [MANAGED_BY_LABEL]: MANAGER }),
      twin: configMap({}),
    },
    {
      property: "I5",
      what: `a ConfigMap labelled as ${other}'s`,
      resource: probeKind.configMap,
      refused: configMap({ [TENANT_LABEL]: other }),
      twin: configMap({}),
    },
    {
      property: "I5",
      what: "a Deployment whose pods carry the operator's label",
      resource: probeKind.deployment,
      refused: deployment({}, { [MANAGED_BY_LABEL]: MANAGER }),
      twin: deployment(),
    },
    {
      property: "I6",
      what: "a NodePort Service",
      resource: probeKind.service,
      refused: service({ type: "NodePort" }),
      twin: service({}),
    },
    {
      property: "I6",
      what: "a LoadBalancer Service",
      resource: probeKind.service,
      refused: service({ type: "LoadBalancer" }),
      twin: service({}),
    },
    {
      property: "I6",
      what: "a Pod with priority class system-node-critical",
      resource: probeKind.pod,
      refused: pod({ priorityClassName: "system-node-critical" }),
      twin: pod(),
    },
    {
      property: "I6",
      what: "a Deployment whose pods get priority class system-cluster-critical",
      resource: probeKind.deployment,
      refused: deployment({ priorityClassName: "system-cluster-critical" }),
      twin: deployment(),
    },
  ];
}

type Answer = { admitted: true } | { admitted: false; message: string };

/** What a workload identity of one tenant must not be able to do in another tenant's namespace. */
const workloadReach: ReadonlyArray<Omit<Access, "namespace">> = [
  { verb: "create", group: "", resource: "pods" },
  { verb: "get", group: "", resource: "secrets" },
  { verb: "list", group: API_GROUP, resource: "devices" },
];

/**
 * I5 from the other side: the tenant's ServiceAccounts (anyone who runs pods in its namespaces
 * holds their tokens) reach no other tenant's namespace, e.g. through a RoleBinding that names them.
 */
async function serviceAccountChecks(
  client: KubeClient,
  tenant: TenantView,
  others: TenantView[],
): Promise<IsolationCheck[]> {
  const accounts = (
    await Promise.all(tenant.namespaces.map((ns) => list(client, serviceAccountResource, ns)))
  ).flat();
  if (!accounts.length) return [];
  const requests = accounts.flatMap((account) =>
    others.flatMap((other) =>
      other.namespaces.flatMap((namespace) =>
        workloadReach.map((access) => ({ account, other: other.name, access: { ...access, namespace } })),
      ),
    ),
  );
  const reaching = (
    await pooled(requests, SAR_CONCURRENCY, async ({ account, other, access }) => {
      const subject = {
        kind: "ServiceAccount",
        name: account.metadata.name,
        namespace: account.metadata.namespace,
      };
      return (await allowed(client, subject, access))
        ? `${account.metadata.namespace}/${account.metadata.name} may ${access.verb} ${access.resource} in ${access.namespace} (${other})`
        : undefined;
    })
  ).filter((x) => x !== undefined);
  return [
    {
      property: "I5",
      tenant: tenant.name,
      check: `its ${accounts.length} ServiceAccounts reach no other tenant`,
      result: passOrFail(reaching.length > 0),
      detail: reaching.length ? reaching.join(", ") : `${requests.length} requests denied by the API server`,
    },
  ];
}

/** Creates `object` with a server dry run as `admin`: RBAC and every admission check run, nothing is stored. */
async function dryRunAs(
  client: KubeClient,
  admin: Admin,
  resource: ResourceType,
  object: Record<string, unknown>,
  namespace: string,
): Promise<Answer> {
  try {
    await client.request({
      verb: "create",
      method: "POST",
      path: resourcePath(resource, { namespace }),
      query: { dryRun: "All" },
      body: object,
      impersonate: identityOf(admin),
    });
    return { admitted: true };
  } catch (error) {
    // A 4xx is the API server's refusal; anything else means it could not be asked.
    if (error instanceof KubeApiError && error.code >= 400 && error.code < 500)
      return {
        admitted: false,
        message: `${error.code} ${error.reason}: ${error.message.split(": ").slice(3).join(": ")}`,
      };
    throw error;
  }
}

/** I1/I3/I5/I6 by the API server's own answer: each refused object class, created as each admin, with its twin. */
async function admissionChecks(
  client: KubeClient,
  tenant: TenantView,
  others: TenantView[],
  ingressDomain: string,
): Promise<IsolationCheck[]> {
  const own = tenant.namespaces[0];
  if (!own || !tenant.admins.length) {
    return [
      {
        property: "I5",
        tenant: tenant.name,
        check: "tenant admins' rights",
        result: "SKIP",
        detail: !own ? "the tenant owns no namespace yet" : "spec.admins is empty: no identity to ask as",
      },
    ];
  }
  const other = others.find((o) => o.namespaces.length)?.namespaces[0] ?? "another-tenant";
  const checks: IsolationCheck[] = [];
  for (const admin of tenant.admins) {
    for (const probe of refusedObjectClasses(own, other, ingressDomain)) {
      const check = `admin ${admin.kind} ${admin.name} cannot create ${probe.what}`;
      const base = { property: probe.property, tenant: tenant.name, check };
      const refused = await dryRunAs(client, admin, probe.resource, probe.refused, own);
      if (refused.admitted) {
        checks.push({ ...base, result: "FAIL", detail: "admitted by the API server (server dry run)" });
        continue;
      }
      const twin = await dryRunAs(client, admin, probe.resource, probe.twin, own);
      checks.push(
        twin.admitted
          ? { ...base, result: "PASS", detail: refused.message }
          : {
              ...base,
              result: "SKIP",
              detail: `the allowed twin was refused too, so the refusal proves nothing: ${twin.message}`,
            },
      );
    }
  }
  return checks;
}

/** I6: the quota that caps devices (and whatever else the spec sets) is in every tenant namespace. */
async function quotaChecks(client: KubeClient, tenant: TenantView): Promise<IsolationCheck[]> {
  return Promise.all(
    tenant.namespaces.map(async (namespace): Promise<IsolationCheck> => {
      const quota = (await client.get(Resource.resourceQuota, { namespace, name: TenantObjectName.quota })) as
        | (KubeObject & { spec?: { hard?: Record<string, string> } })
        | undefined;
      const hard = quota?.spec?.hard ?? {};
      const devices = hard[DEVICES_QUOTA_RESOURCE];
      const others = Object.entries(hard).filter(([resource]) => resource !== DEVICES_QUOTA_RESOURCE);
      return {
        property: "I6",
        tenant: tenant.name,
        check: `${namespace}: ResourceQuota caps devices`,
        result: passOrFail(devices === undefined),
        detail:
          devices === undefined
            ? `${TenantObjectName.quota} missing or without ${DEVICES_QUOTA_RESOURCE}`
            : `${DEVICES_QUOTA_RESOURCE}=${devices}; ${
                others.length
                  ? others.map(([resource, value]) => `${resource}=${value}`).join(", ")
                  : "no compute limits: spec.quota sets none"
              }`,
      };
    }),
  );
}

/** Kinds the operator labels as its own; each object must have a live owner (I7). */
const ownedKinds = [
  Resource.namespace,
  Resource.networkPolicy,
  Resource.roleBinding,
  Resource.resourceQuota,
  Resource.limitRange,
  Resource.secret,
  Resource.certificate,
  Resource.issuer,
];

/**
 * I7: every object carrying the operator's label has a live owner: a controller reference to an
 * existing Tenant or Device by UID or, in the operator's namespace (where a cluster-scoped Tenant
 * cannot own by reference), a tenant label naming an existing Tenant.
 */
async function ownershipChecks(
  client: KubeClient,
  tenants: KubeObject[],
  checked: readonly string[],
  everyTenant: boolean,
  operatorNamespace: string,
): Promise<IsolationCheck[]> {
  const devices = await list(client, Resource.device);
  const liveUids = new Set([...tenants, ...devices].map((o) => o.metadata.uid));
  const liveTenants = new Set(tenants.map((t) => t.metadata.name));
  const orphans: Array<{ tenant: string; what: string }> = [];
  const unlisted: string[] = [];
  for (const kind of ownedKinds) {
    let objects: KubeObject[];
    try {
      objects = listSchema.parse(
        await client.request({
          verb: "list",
          method: "GET",
          path: resourcePath(kind, {}),
          query: { labelSelector: `${MANAGED_BY_LABEL}=${MANAGER}` },
        }),
      ).items;
    } catch (error) {
      if (error instanceof KubeApiError && error.code === 404) {
        unlisted.push(kind.plural);
        continue;
      }
      throw error;
    }
    for (const object of objects) {
      const tenant = object.metadata.labels?.[TENANT_LABEL] ?? "";
      const owner = object.metadata.ownerReferences?.find((ref) => ref.controller);
      const where = `${kind.kind} ${object.metadata.namespace ? `${object.metadata.namespace}/` : ""}${object.metadata.name}`;
      if (owner) {
        if (!liveUids.has(owner.uid))
          orphans.push({ tenant, what: `${where}: its owner ${owner.kind} ${owner.name} is gone` });
      } else if (object.metadata.namespace === operatorNamespace) {
        if (tenant && !liveTenants.has(tenant))
          orphans.push({ tenant, what: `${where}: Tenant ${tenant} is gone` });
      } else {
        orphans.push({ tenant, what: `${where}: no owner reference` });
      }
    }
  }
  const skipped = unlisted.length ? ` (not served here: ${unlisted.join(", ")})` : "";
  const rows: IsolationCheck[] = checked.map((tenant) => {
    const own = orphans.filter((o) => o.tenant === tenant);
    return {
      property: "I7",
      tenant,
      check: "every object labelled for the tenant has a live owner",
      result: passOrFail(own.length > 0),
      detail: own.length ? own.map((o) => o.what).join("; ") : `no orphan${skipped}`,
    };
  });
  // Orphans of no live tenant belong to nobody's row: reported when the whole cluster is verified.
  if (everyTenant) {
    rows.push(
      ...orphans
        .filter((o) => !liveTenants.has(o.tenant))
        .map(
          (o): IsolationCheck => ({
            property: "I7",
            tenant: o.tenant || "-",
            check: "object labelled by the operator has a live owner",
            result: "FAIL",
            detail: o.what,
          }),
        ),
    );
  }
  return rows;
}

export async function verifyIsolation(client: KubeClient, options: VerifyOptions): Promise<IsolationCheck[]> {
  const tenantObjects = await list(client, Resource.tenant);
  const namespaces = await list(client, Resource.namespace);
  const tenants: TenantView[] = tenantObjects.map((object) => {
    const tenant = parseTenantObject(object);
    return {
      name: tenant.metadata.name,
      namespaces: namespaces
        .filter((ns) =>
          ns.metadata.ownerReferences?.some((r) => r.controller && r.uid === object.metadata.uid),
        )
        .map((ns) => ns.metadata.name),
      allowFrom: tenant.spec.network.allowFromNamespaces ?? [],
      topicRoot: tenantTopicRoot(tenant),
      admins: tenant.spec.admins ?? [],
    };
  });
  const params = (await client.get(Resource.configMap, {
    namespace: options.config.OPERATOR_NAMESPACE,
    name: TENANT_POLICY_PARAMS,
  })) as (KubeObject & { data?: Record<string, string> }) | undefined;
  const ingressDomain = params?.data?.ingressDomain ?? "";
  const checked = tenants.filter((t) => !options.tenants || options.tenants.includes(t.name));
  // Listed once per tenant: the broker probes and the broker state checks both ask.
  const devicesListed = new Map<string, Promise<KubeObject[]>>();
  const devicesOf = (tenant: TenantView) => {
    const listed =
      devicesListed.get(tenant.name) ??
      Promise.all(tenant.namespaces.map((ns) => list(client, Resource.device, ns))).then((l) => l.flat());
    devicesListed.set(tenant.name, listed);
    return listed;
  };
  const checks: IsolationCheck[] = [];
  for (const tenant of checked) {
    const others = tenants.filter((t) => t !== tenant);
    checks.push(...(await networkChecks(client, tenant, others, options.config)));
    checks.push(...(await rbacChecks(client, tenant, others, options.config.OPERATOR_NAMESPACE)));
    checks.push(...(await serviceAccountChecks(client, tenant, others)));
    checks.push(...(await admissionChecks(client, tenant, others, ingressDomain)));
    checks.push(...(await quotaChecks(client, tenant)));
    if (options.broker)
      checks.push(...(await brokerProbeChecks(client, options.broker, tenant, others, devicesOf)));
  }
  if (options.broker) checks.push(...(await brokerStateChecks(options.broker, tenants, devicesOf)));
  checks.push(...(await pkiChecks(client, options.config, tenants, checked)));
  checks.push(
    ...(await ownershipChecks(
      client,
      tenantObjects,
      checked.map((t) => t.name),
      options.tenants === undefined,
      options.config.OPERATOR_NAMESPACE,
    )),
  );
  return checks;
}

export function formatChecks(checks: readonly IsolationCheck[]): string {
  const rows = checks.map((c) => [c.result, c.property, c.tenant, c.check, c.detail]);
  const header = ["", "prop", "tenant", "check", "evidence"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => cell.padEnd(widths[i] ?? 0))
      .join("  ")
      .trimEnd();
  const count = (result: CheckResult) => checks.filter((c) => c.result === result).length;
  const [failed, skipped] = [count("FAIL"), count("SKIP")];
  const skippedNote = skipped ? ` ${skipped} could not run (SKIP): see why above.` : "";
  return [
    line(header),
    ...rows.map(line),
    "",
    failed === 0
      ? `Can a tenant touch another tenant? No open path found: ${count("PASS")} checks passed.${skippedNote}`
      : `${failed} of ${checks.length} checks FAILED: isolation is broken.${skippedNote}`,
  ].join("\n");
}
