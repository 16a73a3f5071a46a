import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { restartMosquitto } from "../../bench/support/mosquitto-process.js";
import { startMosquitto } from "../../test/harness/mosquitto.js";
import { adminKubeConfig, eventually, uniqueName } from "../../test/support/kube.js";
import { applyObjects, kubectl } from "../../test/support/kubectl.js";
import { adminConnection } from "../../test/support/mqtt.js";
import {
  applyManifest,
  applyReadyTenant,
  readyDevice,
  stackOperatorConfig,
  startTestOperator,
} from "../../test/support/operator.js";
import { API_VERSION } from "../api/group.js";
import { DynsecClient } from "../broker/dynsec-client.js";
import { MosquittoDynsecAdapter } from "../broker/mosquitto-dynsec.js";
import { tenantPolicyParams } from "../desired/cluster.js";
import type { RunningOperator } from "../operator.js";
import { KubeClient } from "../runtime/kube-client.js";
import { PROBE_LABEL } from "./broker-checks.js";
import { formatChecks, type IsolationCheck, verifyIsolation } from "./isolation.js";

/** `iot-tenant-operator verify` passes on what the operator built, and fails for the right reason when isolation is broken. */
describe("verifyIsolation", () => {
  let operator: RunningOperator;
  const config = stackOperatorConfig();
  const [a, b] = [uniqueName("va"), uniqueName("vb")];
  const { broker } = inject("stack");
  const run = (tenants: string[]) =>
    verifyIsolation(new KubeClient(adminKubeConfig()), {
      config,
      tenants,
      broker: {
        host: broker.host,
        mtlsPort: broker.mtlsPort,
        admin: adminConnection(broker),
        adminUsername: broker.adminUsername,
      },
    });
  /**
   * FAILs about tenants. Rows about the whole broker or cluster ("*") see every other test file's
   * leftovers in the shared stack, so each has a test of its own that provokes it on purpose.
   */
  const failed = (checks: IsolationCheck[]) => checks.filter((c) => c.result === "FAIL" && c.tenant !== "*");
  const about = (checks: IsolationCheck[], tenant: string) => checks.filter((c) => c.tenant === tenant);
  /** A Device verify may probe the broker with. */
  const applyProbe = (namespace: string) =>
    applyManifest({
      apiVersion: API_VERSION,
      kind: "Device",
      metadata: { name: "probe", namespace, labels: { [PROBE_LABEL]: "true" } },
      spec: {},
    });

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
    await Promise.all([applyProbe(a), applyProbe(b)]);
    await Promise.all([readyDevice(a, "probe"), readyDevice(b, "probe")]);
  });
  afterAll(async () => {
    await operator?.stop();
  });

  it("passes every check for tenants the operator isolated, and skips none", async () => {
    const checks = await run([a, b]);
    expect(failed(checks)).toEqual([]);
    expect(checks.filter((c) => c.result === "SKIP")).toEqual([]);
    expect(new Set(checks.map((c) => c.property))).toEqual(
      new Set(["I1", "I2", "I3", "I4", "I5", "I6", "I7"]),
    );
    expect(checks.find((c) => c.property === "I2" && c.tenant === a)?.detail).toMatch(
      new RegExp(`^own tenants/${a}/devices/probe/# granted; \\d+ subscriptions outside it refused`),
    );
    expect(checks.find((c) => c.check.startsWith("a device of"))?.detail).toMatch(
      /each got a session of its own/,
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

  it("fails I3 when the key of a CA the broker trusts sits outside the operator's Secrets (a root behind a ClusterIssuer)", async () => {
    const root = JSON.parse(
      (await kubectl(["-n", "iot-system", "get", "secret", config.ROOT_CA_SECRET, "-o", "json"])).stdout,
    ) as { data: Record<string, string> };
    const copy = uniqueName("root-copy");
    await kubectl(["create", "namespace", copy]);
    try {
      const before = await run([a]);
      // Other files may plant look-alikes in the shared stack: this test looks for its own copy only.
      expect(before.find((c) => c.check.startsWith("no key of a CA"))?.detail).not.toContain(copy);
      expect(before.find((c) => c.check === `the tenant's CA can sign only subjects O=${a}`)?.result).toBe(
        "PASS",
      );
      expect(before.find((c) => c.check.includes("refuses leaves the root signs"))?.result).toBe("PASS");
      await applyObjects([
        {
          apiVersion: "v1",
          kind: "Secret",
          type: "kubernetes.io/tls",
          metadata: { name: "device-root", namespace: copy },
          data: { "tls.crt": root.data["tls.crt"], "tls.key": root.data["tls.key"] },
        },
      ]);
      const leak = (await run([a])).find((c) => c.check.startsWith("no key of a CA"));
      expect(leak).toMatchObject({ result: "FAIL", detail: expect.stringContaining(`${copy}/device-root`) });
    } finally {
      await kubectl(["delete", "namespace", copy, "--wait=false"]);
    }
  });

  it("reports SKIP, never PASS, for broker checks of a tenant with no probe Device", async () => {
    const lonely = uniqueName("vc");
    await applyReadyTenant(lonely);
    const brokerChecks = about(await run([lonely]), lonely).filter((c) => c.property === "I2");
    expect(brokerChecks.map((c) => [c.check, c.result])).toEqual([
      ["broker isolation", "SKIP"],
      ["client id takeover", "SKIP"],
    ]);
    expect(formatChecks(brokerChecks)).toMatch(/^SKIP/m);
    expect(formatChecks(brokerChecks)).not.toMatch(/^PASS/m);
  });

  it("fails when a device is granted another tenant's topics, delivery is allowed by default, or a broker client has no Device", async () => {
    const admin = await DynsecClient.connect(adminConnection(broker));
    const role = `iot:${a}:probe`;
    const { role: original } = (await admin.run({ command: "getRole", rolename: role })) as {
      role: { acls: unknown[] };
    };
    try {
      await admin.run({
        command: "modifyRole",
        rolename: role,
        acls: [...original.acls, { acltype: "subscribePattern", topic: `tenants/${b}/#`, allow: true }],
      });
      await admin.run({
        command: "setDefaultACLAccess",
        acls: [{ acltype: "publishClientReceive", allow: true }],
      });
      await admin.run({ command: "createClient", username: `ghost-${a}`, textname: `iot:${a}:ghost` });

      const checks = await run([a, b]);
      const refused = [...about(checks, a), ...about(checks, "*")].filter((c) => c.result === "FAIL");
      expect(refused.find((c) => c.check.includes("cannot subscribe outside"))?.detail).toBe(
        `granted: tenants/${b}/#`,
      );
      expect(refused.find((c) => c.check.startsWith("delivery"))?.detail).toMatch(/delivers by default/);
      expect(refused.find((c) => c.property === "I4" && c.tenant === a)?.detail).toBe(
        `no Device behind: ghost-${a} (ghost)`,
      );
    } finally {
      await admin.run({ command: "modifyRole", rolename: role, acls: original.acls });
      await admin.run({
        command: "setDefaultACLAccess",
        acls: [{ acltype: "publishClientReceive", allow: false }],
      });
      await admin.run({ command: "deleteClient", username: `ghost-${a}` });
      await admin.close();
    }
  });

  it("fails the client-id takeover probe on a broker that lets a device claim any client id", async () => {
    const dir = await mkdtemp(join(tmpdir(), "verify-takeover-"));
    const weak = await startMosquitto({ stateDir: dir, deviceRootCA: inject("stack").deviceRootCA });
    await weak.stop();
    const configText = await readFile(weak.configFile, "utf8");
    await writeFile(weak.configFile, configText.replaceAll("use_username_as_clientid true\n", ""));
    // The tenants' CRLs as the operator published them: without them the broker refuses their chains.
    await writeFile(weak.crlFile, await readFile(broker.crlFile));
    const restarted = await restartMosquitto(weak);
    const adapter = new MosquittoDynsecAdapter({ connection: adminConnection(weak) });
    try {
      for (const tenant of [a, b]) {
        const { username } = await readyDevice(tenant, "probe");
        await adapter.applyDevice({
          tenant,
          device: "probe",
          topicRoot: `tenants/${tenant}`,
          credentials: { type: "x509", username: username ?? "" },
          enabled: true,
          suspended: false,
        });
      }
      const checks = await verifyIsolation(new KubeClient(adminKubeConfig()), {
        config,
        tenants: [a, b],
        broker: { host: weak.host, mtlsPort: weak.mtlsPort },
      });
      const takeover = about(checks, a).find((c) => c.check.includes("take over"));
      expect(takeover).toMatchObject({
        result: "FAIL",
        detail: expect.stringMatching(/it was disconnected$/),
      });
      // The same probe passes on the stack's broker (first test): the FAIL is the broker's, not the probe's.
      expect(about(checks, a).find((c) => c.check.includes("cannot subscribe outside"))?.result).toBe("PASS");
    } finally {
      await adapter.close();
      await restarted.stop();
    }
  });
});
