import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually, uniqueName } from "../../test/support/kube.js";
import { kubectl } from "../../test/support/kubectl.js";
import { applyManifest, startTestOperator } from "../../test/support/operator.js";
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

async function get(args: string[]): Promise<Obj | undefined> {
  const result = await kubectl(["get", "-o", "json", ...args]);
  return result.ok ? (JSON.parse(result.stdout) as Obj) : undefined;
}

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
      expect(await get(["rolebinding", "iot-tenant-admins", "-n", ns])).toBeDefined();
      expect(await get(["limitrange", "iot-tenant-limits", "-n", ns])).toBeDefined();
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
    const untouched = await get(["namespace", foreign]);
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

  it("leaves nothing behind when a Tenant is deleted", async () => {
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
    expect((await kubectl(["delete", "tenant", name, "--wait=false"])).ok).toBe(true);
    await eventually(
      "tenant gone",
      async () => ((await get(["tenant", name])) === undefined ? true : undefined),
      90_000,
    );
    const kinds =
      "namespaces,networkpolicies,rolebindings,resourcequotas,limitranges,secrets,certificates,issuers";
    await eventually(
      "nothing labelled for the tenant",
      async () =>
        (await list([kinds, "-A", "-l", `iot.tenant-operator.io/tenant=${name}`])).length === 0
          ? true
          : undefined,
      90_000,
    );
  });
});
