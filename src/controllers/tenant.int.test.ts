import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually, uniqueName } from "../../test/support/kube.js";
import { applyObjects, kubectl } from "../../test/support/kubectl.js";
import {
  applyManifest,
  applyReadyTenant,
  stackOperatorConfig,
  startTestOperator,
} from "../../test/support/operator.js";
import { parseTenant } from "../api/tenant.js";
import { desiredTenant } from "../desired/tenant.js";
import type { RunningOperator } from "../operator.js";

/**
 * The Tenant reconciler running for real against the stack: it creates, converges, prunes only
 * what it owns (I7), restores what is tampered with, reports truthfully and cleans up on deletion.
 */

interface Obj {
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    uid: string;
    ownerReferences?: Array<{ uid: string }>;
  };
  status?: {
    conditions?: Array<{ type: string; status: string; reason: string; message: string }>;
    namespaces?: string[];
  };
  spec?: Record<string, unknown>;
}

/** The object, or undefined only when the API server says NotFound; any other failure throws. */
async function get(args: string[]): Promise<Obj | undefined> {
  const result = await kubectl(["get", "-o", "json", ...args]);
  if (result.ok) return JSON.parse(result.stdout) as Obj;
  if (/NotFound/.test(result.stderr)) return undefined;
  throw new Error(result.stderr);
}

/** Every namespace name a policy's selectors list, each once. */
const namespacesIn = (policy: Obj | undefined): string[] => [
  ...new Set(
    [...JSON.stringify(policy?.spec ?? {}).matchAll(/"values":\[([^\]]*)\]/g)].flatMap(
      (m) => JSON.parse(`[${m[1]}]`) as string[],
    ),
  ),
];

async function list(args: string[]): Promise<Obj[]> {
  const result = await kubectl(["get", "-o", "json", ...args]);
  if (!result.ok) throw new Error(result.stderr);
  return (JSON.parse(result.stdout) as { items: Obj[] }).items;
}

const condition = (tenant: Obj | undefined, type: string) =>
  tenant?.status?.conditions?.find((c) => c.type === type);

function tenantManifest(name: string, spec: Record<string, unknown>) {
  return { apiVersion: "iot.tenant-operator.io/v1alpha1", kind: "Tenant", metadata: { name }, spec };
}

const policyNames = async (namespace: string) =>
  (await list(["networkpolicies", "-n", namespace])).map((p) => p.metadata.name).sort();

describe("the Tenant reconciler", () => {
  let operator: RunningOperator;
  beforeAll(async () => {
    operator = await startTestOperator();
  });
  afterAll(async () => {
    await operator?.stop();
  });

  it("turns a Tenant into isolated namespaces, policies, RBAC, quota and a CA, and reports Ready", async () => {
    const name = uniqueName("acme");
    const [prod, staging] = [`${name}-prod`, `${name}-staging`];
    await applyManifest(
      tenantManifest(name, {
        namespaces: [prod, staging],
        admins: [{ kind: "Group", name: `${name}-admins` }],
        network: { allowFromNamespaces: ["monitoring"] },
        devices: { maxDevices: 5 },
        quota: { hard: { pods: 10 } },
      }),
    );
    const ready = await eventually(
      "Tenant Ready",
      async () => {
        const tenant = await get(["tenant", name]);
        return condition(tenant, "Ready")?.status === "True" ? tenant : undefined;
      },
      90_000,
    );
    expect(ready.status?.namespaces).toEqual([prod, staging]);
    for (const ns of [prod, staging]) {
      const namespace = await get(["namespace", ns]);
      expect(namespace?.metadata.labels).toMatchObject({
        "iot.tenant-operator.io/tenant": name,
        "pod-security.kubernetes.io/enforce": "restricted",
      });
      expect(namespace?.metadata.ownerReferences?.[0]?.uid).toBe(ready.metadata.uid);
      expect(await policyNames(ns)).toEqual([
        "iot-allow-broker",
        "iot-allow-dns",
        "iot-allow-from-namespaces",
        "iot-allow-same-tenant",
        "iot-default-deny",
      ]);
      const quota = await get(["resourcequota", "iot-tenant-quota", "-n", ns]);
      expect(quota?.spec).toEqual({ hard: { pods: "10", "count/devices.iot.tenant-operator.io": "5" } });
      const binding = (await get(["rolebinding", "iot-tenant-admins", "-n", ns])) as
        | (Obj & { subjects?: unknown; roleRef?: unknown })
        | undefined;
      expect(binding?.subjects).toEqual([
        { kind: "Group", name: `${name}-admins`, apiGroup: "rbac.authorization.k8s.io" },
      ]);
      expect(binding?.roleRef).toEqual({
        apiGroup: "rbac.authorization.k8s.io",
        kind: "ClusterRole",
        name: "iot-tenant-admin",
      });
      const desiredLimits = desiredTenant(
        { ...parseTenant(tenantManifest(name, {})), metadata: ready.metadata },
        stackOperatorConfig(),
      ).namespaced.find((o) => o.kind === "LimitRange");
      expect((await get(["limitrange", "iot-tenant-limits", "-n", ns]))?.spec).toEqual(desiredLimits?.spec);
      const asAdmin = { user: "someone", groups: [`${name}-admins`] };
      const created = await kubectl(["-n", ns, "create", "configmap", "by-group-admin"], { as: asAdmin });
      expect(created.stderr).toBe("");
    }
    // The operator signs the tenant CA itself (src/pki/tenant-ca.ts); cert-manager's Issuer uses it.
    const ca = (await get(["secret", `tenant-${name}-ca`, "-n", "iot-system"])) as
      | { data?: object }
      | undefined;
    expect(Object.keys(ca?.data ?? {}).sort()).toEqual(["ca.crt", "tls.crt", "tls.key"]);
    expect(await get(["issuer", `tenant-${name}-ca`, "-n", "iot-system"])).toBeDefined();
  });

  it("prunes exactly what a spec change no longer wants", async () => {
    const name = uniqueName("prune");
    const [a, b] = [`${name}-a`, `${name}-b`];
    await applyManifest(
      tenantManifest(name, { namespaces: [a, b], network: { allowEgressCIDRs: ["10.20.0.0/16"] } }),
    );
    await eventually(
      "both namespaces with egress policy",
      async () => ((await get(["networkpolicy", "iot-allow-egress-cidrs", "-n", b])) ? true : undefined),
      60_000,
    );
    await applyManifest(tenantManifest(name, { namespaces: [a], network: {} }));
    await eventually(
      "namespace b deleted",
      async () => {
        const nsB = await get(["namespace", b]);
        return nsB === undefined ? true : undefined;
      },
      60_000,
    );
    await eventually("egress policy pruned in a", async () =>
      (await get(["networkpolicy", "iot-allow-egress-cidrs", "-n", a])) === undefined ? true : undefined,
    );
    expect(await policyNames(a)).toEqual([
      "iot-allow-broker",
      "iot-allow-dns",
      "iot-allow-same-tenant",
      "iot-default-deny",
    ]);
  });

  it("never adopts or touches a namespace it did not create (I7)", async () => {
    const name = uniqueName("squat");
    const foreign = `${name}-existing`;
    expect((await kubectl(["create", "namespace", foreign])).ok).toBe(true);
    await kubectl(["-n", foreign, "create", "configmap", "precious", "--from-literal=keep=me"]);
    await applyManifest(tenantManifest(name, { namespaces: [foreign, `${name}-own`] }));
    const tenant = await eventually(
      "NamespaceNotOwned reported",
      async () => {
        const t = await get(["tenant", name]);
        return condition(t, "NamespacesReady")?.reason === "NamespaceNotOwned" ? t : undefined;
      },
      60_000,
    );
    expect(condition(tenant, "NamespacesReady")?.message).toContain(foreign);
    expect(condition(tenant, "Ready")?.status).toBe("False");
    await eventually("own namespace isolated", async () =>
      (await policyNames(`${name}-own`)).length ? true : undefined,
    );
    // The namespace it does not own is not let in through its policies either (I1).
    for (const policy of await list(["networkpolicies", "-n", `${name}-own`])) {
      expect(namespacesIn(policy)).not.toContain(foreign);
    }
    expect(namespacesIn(await get(["networkpolicy", "iot-allow-same-tenant", "-n", `${name}-own`]))).toEqual([
      `${name}-own`,
    ]);
    const untouched = await get(["namespace", foreign]);
    expect(untouched).toBeDefined();
    expect(untouched?.metadata).not.toHaveProperty("deletionTimestamp");
    expect(untouched?.metadata.labels?.["iot.tenant-operator.io/tenant"]).toBeUndefined();
    expect(untouched?.metadata.ownerReferences).toBeUndefined();
    expect(await policyNames(foreign)).toEqual([]);
    const events = await list(["events", "--field-selector", `involvedObject.name=${name}`, "-A"]);
    expect(events.map((e) => (e as unknown as { reason: string }).reason)).toContain("NamespaceNotOwned");

    await kubectl(["delete", "tenant", name, "--wait=false"]);
    await eventually(
      "tenant gone",
      async () => ((await get(["tenant", name])) === undefined ? true : undefined),
      60_000,
    );
    expect(await get(["configmap", "precious", "-n", foreign])).toBeDefined();
  });

  it("restores a NetworkPolicy deleted by hand within seconds", async () => {
    const name = uniqueName("heal");
    await applyManifest(tenantManifest(name, {}));
    await eventually(
      "default deny present",
      async () => get(["networkpolicy", "iot-default-deny", "-n", name]),
      60_000,
    );
    const deletedAt = Date.now();
    expect((await kubectl(["-n", name, "delete", "networkpolicy", "iot-default-deny"])).ok).toBe(true);
    await eventually(
      "default deny restored",
      async () => get(["networkpolicy", "iot-default-deny", "-n", name]),
      10_000,
    );
    expect(Date.now() - deletedAt).toBeLessThan(10_000);
  });

  it("refuses to open a tenant's namespaces to another tenant's namespace", async () => {
    const [first, second] = [uniqueName("one"), uniqueName("two")];
    await applyManifest(tenantManifest(first, {}));
    await eventually("first tenant's namespace", async () => get(["namespace", first]), 60_000);
    await applyManifest(tenantManifest(second, { network: { allowFromNamespaces: [first, "monitoring"] } }));
    const tenant = await eventually(
      "NamespaceOfOtherTenant",
      async () => {
        const t = await get(["tenant", second]);
        return condition(t, "NetworkIsolated")?.reason === "NamespaceOfOtherTenant" ? t : undefined;
      },
      60_000,
    );
    expect(condition(tenant, "NetworkIsolated")?.message).toContain(first);
    const policy = await eventually("allow-from policy", async () =>
      get(["networkpolicy", "iot-allow-from-namespaces", "-n", second]),
    );
    expect(JSON.stringify(policy.spec)).not.toContain(first);
    expect(JSON.stringify(policy.spec)).toContain("monitoring");
  });

  it("drops another tenant's namespace from its allow-list when that tenant claims it later (I1, reverse order)", async () => {
    const [first, second] = [uniqueName("late"), uniqueName("lister")];
    // Ready, so that it is not requeued while waiting: the namespace event must tell it about the new owner.
    await applyReadyTenant(second, { network: { allowFromNamespaces: [first, "monitoring"] } });
    expect(namespacesIn(await get(["networkpolicy", "iot-allow-from-namespaces", "-n", second]))).toContain(
      first,
    );
    await applyManifest(tenantManifest(first, {}));
    const tenant = await eventually(
      "NamespaceOfOtherTenant once the other tenant owns it",
      async () => {
        const t = await get(["tenant", second]);
        return condition(t, "NetworkIsolated")?.reason === "NamespaceOfOtherTenant" ? t : undefined;
      },
      60_000,
    );
    expect(condition(tenant, "NetworkIsolated")?.message).toContain(first);
    await eventually("namespace gone from the allow-list policy", async () => {
      const policy = await get(["networkpolicy", "iot-allow-from-namespaces", "-n", second]);
      return namespacesIn(policy).includes(first) ? undefined : policy;
    });
    expect(namespacesIn(await get(["networkpolicy", "iot-allow-from-namespaces", "-n", second]))).toEqual([
      "monitoring",
    ]);
  });

  it("never binds a ServiceAccount of another tenant's namespace as admin; one from a platform namespace is bound (I5)", async () => {
    const [owner, borrower, platform] = [uniqueName("sa-own"), uniqueName("sa-borrow"), uniqueName("gitops")];
    await applyManifest(tenantManifest(owner, {}));
    await eventually("owner's namespace", async () => get(["namespace", owner]), 60_000);
    expect((await kubectl(["create", "namespace", platform])).ok).toBe(true);
    await applyManifest(
      tenantManifest(borrower, {
        admins: [
          { kind: "ServiceAccount", namespace: owner, name: "ci" },
          { kind: "ServiceAccount", namespace: platform, name: "flux" },
        ],
      }),
    );
    const tenant = await eventually(
      "AdminOfOtherTenant",
      async () => {
        const t = await get(["tenant", borrower]);
        return condition(t, "AdminsBound")?.reason === "AdminOfOtherTenant" ? t : undefined;
      },
      60_000,
    );
    expect(condition(tenant, "AdminsBound")?.message).toContain(`${owner}/ci`);
    expect(condition(tenant, "Ready")?.status).toBe("False");
    const binding = (await eventually("admin binding", async () =>
      get(["rolebinding", "iot-tenant-admins", "-n", borrower]),
    )) as Obj & { subjects?: unknown };
    expect(binding.subjects).toEqual([{ kind: "ServiceAccount", name: "flux", namespace: platform }]);
    const canI = async (sa: string) =>
      (
        await kubectl([
          "auth",
          "can-i",
          "create",
          "configmaps",
          "-n",
          borrower,
          `--as=system:serviceaccount:${sa}`,
        ])
      ).stdout.trim();
    expect(await canI(`${owner}:ci`)).toBe("no");
    expect(await canI(`${platform}:flux`)).toBe("yes");
  });

  it("reports another tenant's namespace in spec.namespaces as not owned and leaves that tenant's objects alone (I7)", async () => {
    const [owner, squatter] = [uniqueName("owner"), uniqueName("squatter")];
    await applyManifest(tenantManifest(owner, {}));
    const ownerPolicy = await eventually(
      "owner isolated",
      async () => get(["networkpolicy", "iot-allow-same-tenant", "-n", owner]),
      60_000,
    );
    const ownerNamespace = await get(["namespace", owner]);
    await applyManifest(tenantManifest(squatter, { namespaces: [owner, `${squatter}-own`] }));
    await eventually(
      "NamespaceNotOwned",
      async () => {
        const t = await get(["tenant", squatter]);
        return condition(t, "NamespacesReady")?.reason === "NamespaceNotOwned" ? t : undefined;
      },
      60_000,
    );
    await eventually("squatter's own namespace isolated", async () =>
      get(["networkpolicy", "iot-allow-same-tenant", "-n", `${squatter}-own`]),
    );
    expect(
      namespacesIn(await get(["networkpolicy", "iot-allow-same-tenant", "-n", `${squatter}-own`])),
    ).toEqual([`${squatter}-own`]);
    const after = await get(["namespace", owner]);
    expect(after?.metadata.labels).toEqual(ownerNamespace?.metadata.labels);
    expect(after?.metadata.ownerReferences).toEqual(ownerNamespace?.metadata.ownerReferences);
    const policyAfter = await get(["networkpolicy", "iot-allow-same-tenant", "-n", owner]);
    expect(policyAfter?.metadata.ownerReferences).toEqual(ownerPolicy.metadata.ownerReferences);
    expect(policyAfter?.spec).toEqual(ownerPolicy.spec);
  });

  it("never prunes a labelled object it does not own (I7)", async () => {
    const name = uniqueName("planted");
    await applyManifest(tenantManifest(name, { network: { allowEgressCIDRs: ["10.30.0.0/16"] } }));
    await eventually(
      "egress policy",
      async () => get(["networkpolicy", "iot-allow-egress-cidrs", "-n", name]),
      60_000,
    );
    await applyObjects([
      {
        apiVersion: "networking.k8s.io/v1",
        kind: "NetworkPolicy",
        metadata: {
          name: "platform-planted",
          namespace: name,
          labels: {
            "iot.tenant-operator.io/tenant": name,
            "app.kubernetes.io/managed-by": "iot-tenant-operator",
          },
        },
        spec: { podSelector: {}, policyTypes: ["Ingress"] },
      },
    ]);
    await applyManifest(tenantManifest(name, { network: {} }));
    await eventually("owned egress policy pruned", async () =>
      (await get(["networkpolicy", "iot-allow-egress-cidrs", "-n", name])) === undefined ? true : undefined,
    );
    expect(await get(["networkpolicy", "platform-planted", "-n", name])).toBeDefined();
  });

  it("leaves nothing of its own behind when a Tenant is deleted, and nothing else is touched (I7)", async () => {
    const name = uniqueName("gone");
    await applyManifest(tenantManifest(name, { namespaces: [`${name}-x`, `${name}-y`] }));
    await eventually(
      "PKI ready",
      async () => {
        const t = await get(["tenant", name]);
        return condition(t, "PKIReady")?.status === "True" ? true : undefined;
      },
      90_000,
    );
    // Look-alikes in the operator's namespace: the operator's labels, but not the Tenant's by owner.
    const labels = {
      "iot.tenant-operator.io/tenant": name,
      "app.kubernetes.io/managed-by": "iot-tenant-operator",
    };
    await applyObjects([
      {
        apiVersion: "v1",
        kind: "Secret",
        metadata: { name: `planted-${name}`, namespace: "iot-system", labels },
      },
      {
        apiVersion: "cert-manager.io/v1",
        kind: "Certificate",
        metadata: { name: `planted-${name}`, namespace: "iot-system", labels },
        spec: { secretName: `planted-cert-${name}`, commonName: "x", issuerRef: { name: "nobody" } },
      },
    ]);
    try {
      expect((await kubectl(["delete", "tenant", name, "--wait=false"])).ok).toBe(true);
      await eventually(
        "tenant gone",
        async () => ((await get(["tenant", name])) === undefined ? true : undefined),
        90_000,
      );
      // What it owned is gone, checked by name (NotFound, not any failure) ...
      for (const object of [
        ["-n", "iot-system", "secret", `tenant-${name}-ca`],
        ["-n", "iot-system", "issuer", `tenant-${name}-ca`],
        ["-n", "iot-system", "secret", `tenant-${name}-crl`],
        ["namespace", `${name}-x`],
        ["namespace", `${name}-y`],
      ])
        await eventually(
          `${object.join(" ")} gone`,
          async () => ((await get(object)) === undefined ? true : undefined),
          90_000,
        );
      const kinds =
        "namespaces,networkpolicies,rolebindings,resourcequotas,limitranges,secrets,certificates,issuers";
      await eventually(
        "nothing labelled for the tenant but the look-alikes",
        async () => {
          const left = await list([kinds, "-A", "-l", `iot.tenant-operator.io/tenant=${name}`]);
          return left.every((o) => o.metadata.name === `planted-${name}`) ? true : undefined;
        },
        90_000,
      );
      // ... and what it did not own survives.
      expect(await get(["-n", "iot-system", "secret", `planted-${name}`])).toBeDefined();
      expect(await get(["-n", "iot-system", "certificate", `planted-${name}`])).toBeDefined();
    } finally {
      await kubectl([
        "-n",
        "iot-system",
        "delete",
        "secret,certificate",
        `planted-${name}`,
        "--ignore-not-found",
      ]);
    }
  });
});
