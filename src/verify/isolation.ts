import { z } from "zod";
import { API_GROUP } from "../api/group.js";
import { parseTenantObject } from "../controllers/parse.js";
import { Resource } from "../controllers/resources.js";
import { NAMESPACE_NAME_LABEL } from "../desired/labels.js";
import { TenantObjectName, tenantTopicRoot } from "../desired/tenant.js";
import type { KubeClient } from "../runtime/kube-client.js";
import {
  type KubeObject,
  kubeObjectSchema,
  type ResourceType,
  resourcePath,
} from "../runtime/kube-object.js";
import { type BrokerEndpoint, brokerProbeChecks, brokerStateChecks } from "./broker-checks.js";

/**
 * Answers "can tenant A touch tenant B?" on a live cluster and broker, by looking at what is
 * really there and by asking the real authorities: the API server (SubjectAccessReview) and the
 * broker (a device's own certificate trying another tenant's topics).
 */

export interface IsolationCheck {
  readonly property: "I1" | "I2" | "I4" | "I5";
  /** The tenant the check is about; "*" for the whole broker. */
  readonly tenant: string;
  readonly check: string;
  /** False fails `verify`. */
  readonly ok: boolean;
  /** Nothing to probe with: reported as SKIP, never as PASS; does not fail `verify`. */
  readonly skipped?: boolean;
  readonly detail: string;
}

const listSchema = z.object({ items: z.array(kubeObjectSchema) });
const reviewSchema = z.object({ status: z.object({ allowed: z.boolean() }).loose() });

export interface TenantView {
  readonly name: string;
  readonly namespaces: string[];
  readonly topicRoot: string;
  readonly admins: Array<{ kind: string; name: string; namespace?: string | undefined }>;
}

async function list(client: KubeClient, resource: ResourceType, namespace?: string): Promise<KubeObject[]> {
  const body = await client.request({
    verb: "list",
    method: "GET",
    path: resourcePath(resource, { namespace }),
  });
  return listSchema.parse(body).items;
}

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

async function networkChecks(
  client: KubeClient,
  tenant: TenantView,
  others: TenantView[],
): Promise<IsolationCheck[]> {
  const foreign = new Set(others.flatMap((o) => o.namespaces));
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
      ok: denies,
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
      return parsed.data.matchExpressions.flatMap((e) =>
        e.values.filter((v) => foreign.has(v)).map((v) => `${policy} → ${v}`),
      );
    });
    checks.push({
      property: "I1",
      tenant: tenant.name,
      check: `${namespace}: no policy admits another tenant's namespace`,
      ok: loose.length === 0 && crossing.length === 0,
      detail: loose.length
        ? `selects namespaces by a label a tenant could set: ${loose.map((l) => l.policy).join(", ")}`
        : crossing.length
          ? crossing.join(", ")
          : `${reaches.length} namespace selectors, all by ${NAMESPACE_NAME_LABEL}, none foreign`,
    });
  }
  return checks;
}

async function allowed(
  client: KubeClient,
  subject: TenantView["admins"][number],
  attributes: { verb: string; group: string; resource: string; namespace: string },
): Promise<boolean> {
  const who =
    subject.kind === "User"
      ? { user: subject.name }
      : subject.kind === "Group"
        ? { user: "verify-probe", groups: [subject.name] }
        : { user: `system:serviceaccount:${subject.namespace}:${subject.name}` };
  const body = await client.request({
    verb: "create",
    method: "POST",
    path: "/apis/authorization.k8s.io/v1/subjectaccessreviews",
    body: {
      apiVersion: "authorization.k8s.io/v1",
      kind: "SubjectAccessReview",
      spec: { ...who, resourceAttributes: attributes },
    },
  });
  return reviewSchema.parse(body).status.allowed;
}

async function rbacChecks(
  client: KubeClient,
  tenant: TenantView,
  others: TenantView[],
  operatorNamespace: string,
): Promise<IsolationCheck[]> {
  const own = tenant.namespaces[0];
  if (!own) return [];
  const forbidden = [
    ...others.flatMap((other) =>
      other.namespaces.flatMap((namespace) => [
        { verb: "get", group: "", resource: "secrets", namespace, what: `read Secrets of ${other.name}` },
        {
          verb: "list",
          group: API_GROUP,
          resource: "devices",
          namespace,
          what: `list Devices of ${other.name}`,
        },
      ]),
    ),
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
  ];
  const checks: IsolationCheck[] = [];
  for (const admin of tenant.admins) {
    const granted: string[] = [];
    for (const { what, ...attributes } of forbidden)
      if (await allowed(client, admin, attributes)) granted.push(what);
    checks.push({
      property: "I5",
      tenant: tenant.name,
      check: `admin ${admin.kind} ${admin.name} cannot reach other tenants or escalate`,
      ok: granted.length === 0,
      detail: granted.length
        ? `allowed to: ${granted.join(", ")}`
        : `${forbidden.length} requests denied by the API server`,
    });
  }
  return checks;
}

export async function verifyIsolation(
  client: KubeClient,
  options: { broker?: BrokerEndpoint; operatorNamespace: string },
): Promise<IsolationCheck[]> {
  const tenants: TenantView[] = (await list(client, Resource.tenant)).map((object) => {
    const tenant = parseTenantObject(object);
    const status = (object as { status?: { namespaces?: string[] } }).status;
    return {
      name: tenant.metadata.name,
      namespaces: status?.namespaces ?? [],
      topicRoot: tenantTopicRoot(tenant),
      admins: tenant.spec.admins ?? [],
    };
  });
  const devicesOf = async (tenant: TenantView) =>
    (await Promise.all(tenant.namespaces.map((ns) => list(client, Resource.device, ns)))).flat();
  const checks: IsolationCheck[] = [];
  for (const tenant of tenants) {
    const others = tenants.filter((t) => t !== tenant);
    checks.push(...(await networkChecks(client, tenant, others)));
    checks.push(...(await rbacChecks(client, tenant, others, options.operatorNamespace)));
    if (options.broker)
      checks.push(...(await brokerProbeChecks(client, options.broker, tenant, others, devicesOf)));
  }
  if (options.broker) checks.push(...(await brokerStateChecks(options.broker, tenants, devicesOf)));
  return checks;
}

export function formatChecks(checks: readonly IsolationCheck[]): string {
  const rows = checks.map((c) => [
    c.skipped ? "SKIP" : c.ok ? "PASS" : "FAIL",
    c.property,
    c.tenant,
    c.check,
    c.detail,
  ]);
  const header = ["", "prop", "tenant", "check", "evidence"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => cell.padEnd(widths[i] ?? 0))
      .join("  ")
      .trimEnd();
  const failed = checks.filter((c) => !c.ok).length;
  const skipped = checks.filter((c) => c.skipped).length;
  const unproven = skipped ? ` ${skipped} skipped (nothing to probe with): not proven.` : "";
  return [
    line(header),
    ...rows.map(line),
    "",
    failed === 0
      ? `Can a tenant touch another tenant? No: ${checks.length - skipped} checks passed.${unproven}`
      : `${failed} of ${checks.length} checks FAILED: isolation is broken.${unproven}`,
  ].join("\n");
}
