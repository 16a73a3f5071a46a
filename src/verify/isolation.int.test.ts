import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { restartMosquitto } from "../../bench/support/mosquitto-process.js";
import { startMosquitto } from "../../test/harness/mosquitto.js";
import { adminKubeConfig, uniqueName } from "../../test/support/kube.js";
import { applyObjects } from "../../test/support/kubectl.js";
import { adminConnection } from "../../test/support/mqtt.js";
import {
  applyManifest,
  applyReadyTenant,
  readyDevice,
  startTestOperator,
} from "../../test/support/operator.js";
import { API_VERSION } from "../api/group.js";
import { DynsecClient } from "../broker/dynsec-client.js";
import { MosquittoDynsecAdapter } from "../broker/mosquitto-dynsec.js";
import type { RunningOperator } from "../operator.js";
import { KubeClient } from "../runtime/kube-client.js";
import { PROBE_LABEL } from "./broker-checks.js";
import { formatChecks, type IsolationCheck, verifyIsolation } from "./isolation.js";

/** `iot-tenant-operator verify` passes on what the operator built, and fails for the right reason when isolation is broken. */
describe("verifyIsolation", () => {
  let operator: RunningOperator;
  const [a, b] = [uniqueName("va"), uniqueName("vb")];
  const { broker } = inject("stack");
  const run = () =>
    verifyIsolation(new KubeClient(adminKubeConfig()), {
      operatorNamespace: "iot-system",
      broker: {
        host: broker.host,
        mtlsPort: broker.mtlsPort,
        admin: adminConnection(broker),
        adminUsername: broker.adminUsername,
      },
    });
  /** A Device verify may probe the broker with. */
  const applyProbe = (namespace: string) =>
    applyManifest({
      apiVersion: API_VERSION,
      kind: "Device",
      metadata: { name: "probe", namespace, labels: { [PROBE_LABEL]: "true" } },
      spec: {},
    });
  const about = (checks: IsolationCheck[], tenant: string) => checks.filter((c) => c.tenant === tenant);

  beforeAll(async () => {
    operator = await startTestOperator();
    await applyReadyTenant(a, { admins: [{ kind: "User", name: `admin-${a}` }] });
    await applyReadyTenant(b, { admins: [{ kind: "Group", name: `admins-${b}` }] });
    await Promise.all([applyProbe(a), applyProbe(b)]);
    await Promise.all([readyDevice(a, "probe"), readyDevice(b, "probe")]);
  });
  afterAll(async () => {
    await operator?.stop();
  });

  it("passes every check for tenants the operator isolated", async () => {
    const checks = [...about(await run(), a), ...about(await run(), b)];
    expect(checks.filter((c) => !c.ok)).toEqual([]);
    expect(new Set(checks.map((c) => c.property))).toEqual(new Set(["I1", "I2", "I4", "I5"]));
    expect(checks.filter((c) => c.skipped)).toEqual([]);
    expect(checks.find((c) => c.property === "I2" && c.tenant === a)?.detail).toMatch(
      new RegExp(`^own tenants/${a}/devices/probe/# granted; \\d+ subscriptions outside it refused`),
    );
    expect(checks.find((c) => c.check.startsWith("a device of"))?.detail).toMatch(
      /each got a session of its own/,
    );
  });

  it("fails when a policy opens a tenant to another tenant, or RBAC lets an admin read another tenant", async () => {
    await applyObjects([
      {
        apiVersion: "networking.k8s.io/v1",
        kind: "NetworkPolicy",
        metadata: { name: "backdoor", namespace: a },
        spec: {
          podSelector: {},
          ingress: [
            {
              from: [
                {
                  namespaceSelector: {
                    matchExpressions: [{ key: "kubernetes.io/metadata.name", operator: "In", values: [b] }],
                  },
                },
              ],
            },
          ],
        },
      },
      {
        apiVersion: "rbac.authorization.k8s.io/v1",
        kind: "RoleBinding",
        metadata: { name: "leak", namespace: b },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "view" },
        subjects: [{ kind: "User", name: `admin-${a}`, apiGroup: "rbac.authorization.k8s.io" }],
      },
      {
        apiVersion: "rbac.authorization.k8s.io/v1",
        kind: "Role",
        metadata: { name: "secrets-reader", namespace: b },
        rules: [{ apiGroups: [""], resources: ["secrets"], verbs: ["get"] }],
      },
      {
        apiVersion: "rbac.authorization.k8s.io/v1",
        kind: "RoleBinding",
        metadata: { name: "leak-secrets", namespace: b },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "secrets-reader" },
        subjects: [{ kind: "User", name: `admin-${a}`, apiGroup: "rbac.authorization.k8s.io" }],
      },
    ]);
    const failed = about(await run(), a).filter((c) => !c.ok);
    expect(failed.map((c) => c.property).sort()).toEqual(["I1", "I5"]);
    expect(failed.find((c) => c.property === "I1")?.detail).toBe(`backdoor → ${b}`);
    expect(failed.find((c) => c.property === "I5")?.detail).toMatch(new RegExp(`read Secrets of ${b}`));
  });

  it("reports SKIP, never PASS, for broker checks of a tenant with no probe Device", async () => {
    const lonely = uniqueName("vc");
    await applyReadyTenant(lonely);
    const broker = about(await run(), lonely).filter((c) => c.property === "I2");
    expect(broker.map((c) => [c.check, c.skipped])).toEqual([
      ["broker isolation", true],
      ["client id takeover", true],
    ]);
    expect(formatChecks(broker)).toMatch(/^SKIP/m);
    expect(formatChecks(broker)).not.toMatch(/^PASS/m);
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

      const checks = await run();
      const failed = [...about(checks, a), ...about(checks, "*")].filter((c) => !c.ok);
      expect(failed.find((c) => c.check.includes("cannot subscribe outside"))?.detail).toBe(
        `granted: tenants/${b}/#`,
      );
      expect(failed.find((c) => c.check.startsWith("delivery"))?.detail).toMatch(/delivers by default/);
      expect(failed.find((c) => c.property === "I4" && c.tenant === a)?.detail).toBe(
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
    const config = await readFile(weak.configFile, "utf8");
    await writeFile(weak.configFile, config.replaceAll("use_username_as_clientid true\n", ""));
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
        operatorNamespace: "iot-system",
        broker: { host: weak.host, mtlsPort: weak.mtlsPort },
      });
      const takeover = about(checks, a).find((c) => c.check.includes("take over"));
      expect(takeover).toMatchObject({ ok: false, detail: expect.stringMatching(/it was disconnected$/) });
      // The same probe passes on the stack's broker (first test): the FAIL is the broker's, not the probe's.
      expect(about(checks, a).find((c) => c.check.includes("cannot subscribe outside"))?.ok).toBe(true);
    } finally {
      await adapter.close();
      await restarted.stop();
    }
  });
});
