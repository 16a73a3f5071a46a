import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { adminKubeConfig, uniqueName } from "../../test/support/kube.js";
import { applyObjects } from "../../test/support/kubectl.js";
import {
  applyDevice,
  applyReadyTenant,
  readyDevice,
  startTestOperator,
} from "../../test/support/operator.js";
import type { RunningOperator } from "../operator.js";
import { KubeClient } from "../runtime/kube-client.js";
import { type IsolationCheck, verifyIsolation } from "./isolation.js";

/** `iot-tenant-operator verify` passes on what the operator built, and fails for the right reason when isolation is broken. */
describe("verifyIsolation", () => {
  let operator: RunningOperator;
  const [a, b] = [uniqueName("va"), uniqueName("vb")];
  const run = () =>
    verifyIsolation(new KubeClient(adminKubeConfig()), {
      operatorNamespace: "iot-system",
      broker: { host: inject("stack").broker.host, mtlsPort: inject("stack").broker.mtlsPort },
    });
  const about = (checks: IsolationCheck[], tenant: string) => checks.filter((c) => c.tenant === tenant);

  beforeAll(async () => {
    operator = await startTestOperator();
    await applyReadyTenant(a, { admins: [{ kind: "User", name: `admin-${a}` }] });
    await applyReadyTenant(b, { admins: [{ kind: "Group", name: `admins-${b}` }] });
    await Promise.all([applyDevice(a, "probe"), applyDevice(b, "probe")]);
    await Promise.all([readyDevice(a, "probe"), readyDevice(b, "probe")]);
  });
  afterAll(async () => {
    await operator?.stop();
  });

  it("passes every check for tenants the operator isolated", async () => {
    const checks = [...about(await run(), a), ...about(await run(), b)];
    expect(checks.filter((c) => !c.ok)).toEqual([]);
    expect(new Set(checks.map((c) => c.property))).toEqual(new Set(["I1", "I2", "I5"]));
    expect(checks.find((c) => c.property === "I2" && c.tenant === a)?.detail).toMatch(
      /subscriptions refused by the broker/,
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
});
