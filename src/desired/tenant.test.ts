import { describe, expect, it } from "vitest";
import { parseTenant } from "../api/tenant.js";
import { operatorConfigSchema } from "../config.js";
import {
  canonicalCount,
  DEVICES_QUOTA_RESOURCE,
  desiredTenant,
  foreignAdmins,
  foreignAllowFrom,
  type KubeObject,
  namespacesNamedBy,
  TenantObjectName,
  tenantTopicRoot,
  topicRootConflict,
  topicRootsOverlap,
} from "./tenant.js";

const config = operatorConfigSchema.parse({});

function tenant(spec: Record<string, unknown> = {}, name = "acme") {
  return {
    ...parseTenant({
      apiVersion: "iot.tenant-operator.io/v1alpha1",
      kind: "Tenant",
      metadata: { name },
      spec,
    }),
    metadata: { name, uid: "uid-1" },
  };
}

const byKind = (objects: KubeObject[], kind: string) => objects.filter((o) => o.kind === kind);
const named = (objects: KubeObject[], name: string, namespace: string) =>
  objects.find((o) => o.metadata.name === name && o.metadata.namespace === namespace);

/** Every namespaceSelector in every rule of every policy, anywhere in the spec. */
function namespaceSelectors(value: unknown): unknown[] {
  if (Array.isArray(value)) return value.flatMap(namespaceSelectors);
  if (value === null || typeof value !== "object") return [];
  return Object.entries(value).flatMap(([key, v]) =>
    key === "namespaceSelector" ? [v] : namespaceSelectors(v),
  );
}

describe("desiredTenant", () => {
  it.each([
    { spec: {}, namespaces: ["acme"] },
    { spec: { namespaces: ["acme-prod", "acme-dev"] }, namespaces: ["acme-prod", "acme-dev"] },
  ])("makes owned, labelled, restricted namespaces $namespaces", ({ spec, namespaces }) => {
    const desired = desiredTenant(tenant(spec), config);
    expect(desired.namespaces.map((n) => n.metadata.name)).toEqual(namespaces);
    for (const ns of desired.namespaces) {
      expect(ns.metadata.labels).toMatchObject({
        "iot.tenant-operator.io/tenant": "acme",
        "pod-security.kubernetes.io/enforce": "restricted",
      });
      expect(ns.metadata.ownerReferences).toEqual([
        expect.objectContaining({ kind: "Tenant", name: "acme", uid: "uid-1", controller: true }),
      ]);
    }
  });

  it("denies all traffic by default in every namespace", () => {
    const desired = desiredTenant(tenant({ namespaces: ["a1", "a2"] }), config);
    for (const ns of ["a1", "a2"]) {
      const deny = named(desired.namespaced, TenantObjectName.defaultDeny, ns);
      expect(deny?.spec).toEqual({ podSelector: {}, policyTypes: ["Ingress", "Egress"] });
    }
  });

  it("selects namespaces only by the immutable kubernetes.io/metadata.name label", () => {
    const desired = desiredTenant(
      tenant({ namespaces: ["a1", "a2"], network: { allowFromNamespaces: ["ingress"] } }),
      config,
    );
    const selectors = namespaceSelectors(byKind(desired.namespaced, "NetworkPolicy"));
    expect(selectors.length).toBeGreaterThan(0);
    for (const selector of selectors) {
      expect(selector).toEqual({
        matchExpressions: [{ key: "kubernetes.io/metadata.name", operator: "In", values: expect.any(Array) }],
      });
    }
    const same = named(desired.namespaced, TenantObjectName.allowSameTenant, "a2");
    expect(namespaceSelectors(same)).toEqual([
      { matchExpressions: [{ key: "kubernetes.io/metadata.name", operator: "In", values: ["a1", "a2"] }] },
      { matchExpressions: [{ key: "kubernetes.io/metadata.name", operator: "In", values: ["a1", "a2"] }] },
    ]);
  });

  it.each([
    { network: {}, present: [] as string[] },
    { network: { allowFromNamespaces: ["monitoring"] }, present: [TenantObjectName.allowFromNamespaces] },
    { network: { allowEgressCIDRs: ["10.20.0.0/16"] }, present: [TenantObjectName.allowEgressCidrs] },
  ])("adds allow-list policies only when asked: $network", ({ network, present }) => {
    const names = byKind(desiredTenant(tenant({ network }), config).namespaced, "NetworkPolicy").map(
      (p) => p.metadata.name,
    );
    expect(names).toEqual([
      TenantObjectName.defaultDeny,
      TenantObjectName.allowSameTenant,
      TenantObjectName.allowDns,
      TenantObjectName.allowBroker,
      ...present,
    ]);
  });

  it("allows egress to the broker's namespace on the broker ports and to DNS", () => {
    const desired = desiredTenant(tenant(), {
      ...config,
      BROKER_NAMESPACE: "mqtt",
      BROKER_POD_PORTS: [8883, 443],
    });
    expect(named(desired.namespaced, TenantObjectName.allowBroker, "acme")?.spec).toMatchObject({
      policyTypes: ["Egress"],
      egress: [
        {
          to: [{ namespaceSelector: { matchExpressions: [{ values: ["mqtt"] }] } }],
          ports: [
            { protocol: "TCP", port: 8883 },
            { protocol: "TCP", port: 443 },
          ],
        },
      ],
    });
    expect(named(desired.namespaced, TenantObjectName.allowDns, "acme")?.spec).toMatchObject({
      egress: [{ to: [{ podSelector: { matchLabels: { "k8s-app": "kube-dns" } } }] }],
    });
  });

  it("opens egress CIDRs on the listed ports only", () => {
    const desired = desiredTenant(
      tenant({ network: { allowEgressCIDRs: ["10.20.0.0/16"], egressPorts: [{ port: 443 }] } }),
      config,
    );
    expect(named(desired.namespaced, TenantObjectName.allowEgressCidrs, "acme")?.spec).toMatchObject({
      egress: [{ to: [{ ipBlock: { cidr: "10.20.0.0/16" } }], ports: [{ protocol: "TCP", port: 443 }] }],
    });
  });

  it.each([
    { admins: undefined, subjects: undefined },
    {
      admins: [
        { kind: "User", name: "alice" },
        { kind: "ServiceAccount", name: "ci", namespace: "acme" },
      ],
      subjects: [
        { kind: "User", name: "alice", apiGroup: "rbac.authorization.k8s.io" },
        { kind: "ServiceAccount", name: "ci", namespace: "acme" },
      ],
    },
  ])("binds admins to the tenant-admin ClusterRole: $admins", ({ admins, subjects }) => {
    const binding = named(
      desiredTenant(tenant(admins ? { admins } : {}), config).namespaced,
      TenantObjectName.adminBinding,
      "acme",
    );
    // No admins: no RoleBinding at all, rather than one that binds nobody.
    if (!subjects) {
      expect(binding).toBeUndefined();
      return;
    }
    expect(binding?.subjects).toEqual(subjects);
    expect(binding?.roleRef).toEqual({
      apiGroup: "rbac.authorization.k8s.io",
      kind: "ClusterRole",
      name: "iot-tenant-admin",
    });
  });

  it("gives each namespace default container requests and limits", () => {
    const desired = desiredTenant(tenant({ namespaces: ["a1", "a2"] }), config);
    for (const ns of ["a1", "a2"]) {
      expect(named(desired.namespaced, TenantObjectName.limits, ns)?.spec).toEqual({
        limits: [
          {
            type: "Container",
            defaultRequest: { cpu: "50m", memory: "64Mi" },
            default: { cpu: "500m", memory: "256Mi" },
          },
        ],
      });
    }
  });

  describe("with namespaces that are not the tenant's", () => {
    const facts = { notOwned: new Set(["platform"]), ofOtherTenants: new Set(["globex", "globex-ci"]) };
    const spec = {
      namespaces: ["acme", "platform"],
      network: { allowFromNamespaces: ["monitoring", "globex"] },
      admins: [
        { kind: "ServiceAccount", name: "deployer", namespace: "globex-ci" },
        { kind: "ServiceAccount", name: "flux", namespace: "flux-system" },
        { kind: "User", name: "alice" },
      ],
    };
    const desired = desiredTenant(tenant(spec), config, facts);

    it("creates nothing in a namespace it does not own (I7)", () => {
      expect(desired.namespaces.map((n) => n.metadata.name)).toEqual(["acme"]);
      expect(new Set(desired.namespaced.map((o) => o.metadata.namespace))).toEqual(new Set(["acme"]));
    });

    it("names neither a namespace it does not own nor another tenant's in any policy (I1)", () => {
      const named = byKind(desired.namespaced, "NetworkPolicy").flatMap((p) =>
        namespaceSelectors(p.spec).flatMap(
          (s) => (s as { matchExpressions: Array<{ values: string[] }> }).matchExpressions[0]?.values ?? [],
        ),
      );
      expect(named).not.toContain("platform");
      expect(named).not.toContain("globex");
      expect(named).toContain("monitoring");
    });

    it("binds no ServiceAccount from another tenant's namespace (I5)", () => {
      expect(named(desired.namespaced, TenantObjectName.adminBinding, "acme")?.subjects).toEqual([
        { kind: "ServiceAccount", name: "flux", namespace: "flux-system" },
        { kind: "User", name: "alice", apiGroup: "rbac.authorization.k8s.io" },
      ]);
      expect(foreignAdmins(tenant(spec), facts)).toEqual(["globex-ci/deployer"]);
      expect(foreignAllowFrom(tenant(spec), facts)).toEqual(["globex"]);
    });

    it("knows every namespace the spec names, so a change to any of them reconciles the tenant", () => {
      expect(namespacesNamedBy(tenant(spec)).sort()).toEqual(
        ["acme", "flux-system", "globex", "globex-ci", "monitoring", "platform"].sort(),
      );
    });
  });

  it.each([
    [0, "0"],
    [7, "7"],
    [100, "100"],
    [1000, "1k"],
    [1500, "1500"],
    [10_000, "10k"],
    [100_000, "100k"],
    [2_000_000, "2M"],
  ])("writes the device count %d as the API server stores it: %s", (count, stored) => {
    expect(canonicalCount(count)).toBe(stored);
  });

  it("caps devices through the quota next to the spec's own limits", () => {
    const desired = desiredTenant(
      tenant({ devices: { maxDevices: 7 }, quota: { hard: { pods: "20" } } }),
      config,
    );
    expect(named(desired.namespaced, TenantObjectName.quota, "acme")?.spec).toEqual({
      hard: { pods: "20", [DEVICES_QUOTA_RESOURCE]: "7" },
    });
  });

  it("puts the tenant's CA Issuer in the operator's namespace, on the CA Secret the operator signs", () => {
    const pki = desiredTenant(tenant(), config).pki;
    expect(pki).toHaveLength(1);
    expect(pki[0]).toMatchObject({
      kind: "Issuer",
      metadata: { name: "tenant-acme-ca", namespace: "iot-system" },
      spec: { ca: { secretName: "tenant-acme-ca" } },
    });
  });

  it("refuses a tenant that was never read from the API (no uid to own objects by)", () => {
    const unread = { ...tenant(), metadata: { name: "acme" } };
    expect(() => desiredTenant(unread, config)).toThrow(/no uid/);
  });

  it.each([
    { spec: {}, root: "tenants/acme" },
    { spec: { broker: { topicRoot: "customers/acme-corp" } }, root: "customers/acme-corp" },
  ])("uses topic root $root", ({ spec, root }) => {
    expect(tenantTopicRoot(tenant(spec))).toBe(root);
  });
});

describe("topic roots", () => {
  it.each([
    ["tenants/acme", "tenants/acme", true],
    ["tenants/acme", "tenants/acme/devices", true],
    ["tenants", "tenants/acme", true],
    ["tenants/acme", "tenants/acme-corp", false],
    ["tenants/acme", "customers/acme", false],
  ])("%s and %s overlap: %s", (a, b, overlap) => {
    expect(topicRootsOverlap(a, b)).toBe(overlap);
    expect(topicRootsOverlap(b, a)).toBe(overlap);
  });

  const view = (name: string, created: string, topicRoot?: string) => ({
    metadata: { name, creationTimestamp: created },
    spec: { broker: topicRoot ? { topicRoot } : {} },
  });

  it("lets the older tenant keep an overlapping root", () => {
    const older = view("acme", "2026-01-01T00:00:00Z");
    const squatter = view("mallory", "2026-02-01T00:00:00Z", "tenants/acme/devices");
    expect(topicRootConflict(squatter, [older, squatter])).toBe("acme");
    expect(topicRootConflict(older, [older, squatter])).toBeUndefined();
  });

  it("finds no conflict between distinct roots", () => {
    const tenants = [view("acme", "2026-01-01T00:00:00Z"), view("acme-corp", "2026-01-02T00:00:00Z")];
    expect(tenants.map((t) => topicRootConflict(t, tenants))).toEqual([undefined, undefined]);
  });
});
