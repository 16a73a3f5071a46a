import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { adminKubeConfig, eventually, uniqueName } from "../../test/support/kube.js";
import { applyObjects, kubectl } from "../../test/support/kubectl.js";
import {
  applyDevice,
  applyReadyTenant,
  readyDevice,
  stackOperatorConfig,
  startTestOperator,
} from "../../test/support/operator.js";
import { tenantPolicyParams } from "../desired/cluster.js";
import type { RunningOperator } from "../operator.js";
import { KubeClient } from "../runtime/kube-client.js";
import { type IsolationCheck, verifyIsolation } from "./isolation.js";

/** `iot-tenant-operator verify` passes on what the operator built, and fails for the right reason when isolation is broken. */
describe("verifyIsolation", () => {
  let operator: RunningOperator;
  const config = stackOperatorConfig();
  const [a, b] = [uniqueName("va"), uniqueName("vb")];
  const run = (tenants: string[]) =>
    verifyIsolation(new KubeClient(adminKubeConfig()), {
      config,
      tenants,
      broker: { host: inject("stack").broker.host, mtlsPort: inject("stack").broker.mtlsPort },
    });
  const failed = (checks: IsolationCheck[]) => checks.filter((c) => c.result === "FAIL");

  /** A Tenant of its own for a test that breaks something, with an admin to ask as; deleted afterwards. */
  async function withDedicatedTenant(test: (tenant: string) => Promise<void>): Promise<void> {
    const tenant = uniqueName("vx");
    await applyReadyTenant(tenant, { admins: [{ kind: "User", name: `admin-${tenant}` }] });
    try {
      await test(tenant);
    } finally {
      await kubectl(["delete", "tenant", tenant, "--wait=false"]);
    }
  }

  beforeAll(async () => {
    operator = await startTestOperator(config);
    await applyReadyTenant(a, { admins: [{ kind: "User", name: `admin-${a}` }] });
    await applyReadyTenant(b, { admins: [{ kind: "Group", name: `admins-${b}` }] });
    await Promise.all([applyDevice(a, "probe"), applyDevice(b, "probe")]);
    await Promise.all([readyDevice(a, "probe"), readyDevice(b, "probe")]);
  });
  afterAll(async () => {
    await operator?.stop();
  });

  it("passes every check for tenants the operator isolated, and skips none", async () => {
    const checks = await run([a, b]);
    expect(failed(checks)).toEqual([]);
    expect(checks.filter((c) => c.result === "SKIP")).toEqual([]);
    expect(new Set(checks.map((c) => c.property))).toEqual(new Set(["I1", "I2", "I3", "I5", "I6", "I7"]));
    expect(checks.find((c) => c.property === "I2" && c.tenant === a)?.detail).toMatch(
      /subscriptions refused by the broker/,
    );
    // The refusals are the API server's own words.
    expect(checks.find((c) => c.check.includes("NodePort"))?.detail).toMatch(/iot-tenant-guard/);
    expect(checks.find((c) => c.check.includes("other tenants' namespaces"))?.detail).toMatch(
      /requests over \d+ other tenants denied/,
    );
  });

  it("fails I1 when a policy admits another tenant's or any foreign namespace", async () => {
    await withDedicatedTenant(async (tenant) => {
      await applyObjects([
        {
          apiVersion: "networking.k8s.io/v1",
          kind: "NetworkPolicy",
          metadata: { name: "backdoor", namespace: tenant },
          spec: {
            podSelector: {},
            ingress: [
              {
                from: [
                  {
                    namespaceSelector: {
                      matchExpressions: [
                        { key: "kubernetes.io/metadata.name", operator: "In", values: [b, "kube-public"] },
                      ],
                    },
                  },
                ],
              },
            ],
          },
        },
      ]);
      const open = failed(await run([tenant]));
      expect(open.map((c) => c.property)).toEqual(["I1"]);
      expect(open[0]?.detail).toBe(`backdoor → ${b}, backdoor → kube-public`);
    });
  });

  it("fails I5 when RBAC lets an admin into another tenant's namespace", async () => {
    await withDedicatedTenant(async (tenant) => {
      const leak = {
        apiVersion: "rbac.authorization.k8s.io/v1",
        kind: "RoleBinding",
        metadata: { name: uniqueName("leak"), namespace: b },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "iot-tenant-admin" },
        subjects: [{ kind: "User", name: `admin-${tenant}`, apiGroup: "rbac.authorization.k8s.io" }],
      };
      await applyObjects([leak]);
      try {
        const open = failed(await run([tenant]));
        expect(open.map((c) => c.property)).toEqual(["I5"]);
        expect(open[0]?.detail).toMatch(new RegExp(`allowed to: get devices in ${b} \\(${b}\\)`));
      } finally {
        await kubectl(["delete", "rolebinding", leak.metadata.name, "-n", b]);
      }
    });
  });

  it("fails I5 when a tenant's ServiceAccount is bound in another tenant's namespace (a borrowed admin)", async () => {
    await withDedicatedTenant(async (tenant) => {
      const borrowed = {
        apiVersion: "rbac.authorization.k8s.io/v1",
        kind: "RoleBinding",
        metadata: { name: uniqueName("borrowed"), namespace: b },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "iot-tenant-admin" },
        subjects: [{ kind: "ServiceAccount", name: "ci", namespace: tenant }],
      };
      await applyObjects([
        { apiVersion: "v1", kind: "ServiceAccount", metadata: { name: "ci", namespace: tenant } },
        borrowed,
      ]);
      try {
        const open = failed(await run([tenant]));
        expect(open.map((c) => c.property)).toEqual(["I5"]);
        expect(open[0]?.detail).toContain(`${tenant}/ci may create pods in ${b} (${b})`);
      } finally {
        await kubectl(["delete", "rolebinding", borrowed.metadata.name, "-n", b]);
      }
    });
  });

  it("fails I6 when the platform's allow-lists let critical priority and NodePorts through", async () => {
    await withDedicatedTenant(async (tenant) => {
      await applyObjects([
        tenantPolicyParams({
          ...config,
          TENANT_PRIORITY_CLASSES: [...config.TENANT_PRIORITY_CLASSES, "system-node-critical"],
          TENANT_SERVICE_TYPES: ["ClusterIP", "NodePort"],
        }),
      ]);
      try {
        const open = await eventually("the admission policy sees the new allow-lists", async () => {
          const checks = failed(await run([tenant]));
          return checks.length >= 2 ? checks : undefined;
        });
        expect(open.map((c) => `${c.property} ${c.check}`).sort()).toEqual([
          `I6 admin User admin-${tenant} cannot create a NodePort Service`,
          `I6 admin User admin-${tenant} cannot create a Pod with priority class system-node-critical`,
        ]);
        expect(open[0]?.detail).toBe("admitted by the API server (server dry run)");
      } finally {
        await applyObjects([tenantPolicyParams(config)]);
        await eventually("allow-lists restored", async () =>
          failed(await run([tenant])).length === 0 ? true : undefined,
        );
      }
    });
  });

  it("fails I7 for an object that carries the operator's labels and has no owner", async () => {
    await withDedicatedTenant(async (tenant) => {
      await applyObjects([
        {
          apiVersion: "networking.k8s.io/v1",
          kind: "NetworkPolicy",
          metadata: {
            name: "planted",
            namespace: tenant,
            labels: {
              "iot.tenant-operator.io/tenant": tenant,
              "app.kubernetes.io/managed-by": "iot-tenant-operator",
            },
          },
          spec: { podSelector: {}, policyTypes: ["Ingress"] },
        },
      ]);
      const open = failed(await run([tenant]));
      expect(open.map((c) => c.property)).toEqual(["I7"]);
      expect(open[0]?.detail).toBe(`NetworkPolicy ${tenant}/planted: no owner reference`);
    });
  });
});
