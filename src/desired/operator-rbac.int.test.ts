import { readFile } from "node:fs/promises";
import { KubeConfig } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { adminKubeConfig, eventually, uniqueName } from "../../test/support/kube.js";
import { applyObjects, kubectl } from "../../test/support/kubectl.js";
import {
  applyDevice,
  applyReadyTenant,
  readyDevice,
  stackOperatorConfig,
} from "../../test/support/operator.js";
import { install } from "../install.js";
import { createLogger } from "../observability/logger.js";
import { type RunningOperator, startOperator } from "../operator.js";
import { KubeClient } from "../runtime/kube-client.js";
import { operatorRbac } from "./operator-rbac.js";

/**
 * Least privilege, proved: the operator runs as its ServiceAccount with exactly the RBAC of the
 * chart (and under the admission policy, which exempts only that ServiceAccount) and still does
 * its whole job; the same identity cannot escalate.
 */
describe("the operator's own RBAC", () => {
  const namespace = "iot-system";
  const serviceAccount = "iot-tenant-operator";
  const admin = new KubeClient(adminKubeConfig());
  let operator: RunningOperator;

  async function serviceAccountKubeConfig(): Promise<KubeConfig> {
    const review = (await admin.request({
      verb: "create",
      method: "POST",
      path: `/api/v1/namespaces/${namespace}/serviceaccounts/${serviceAccount}/token`,
      body: {
        apiVersion: "authentication.k8s.io/v1",
        kind: "TokenRequest",
        spec: { expirationSeconds: 3600 },
      },
    })) as { status: { token: string } };
    const stack = inject("stack");
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [
        {
          name: "local",
          server: stack.server,
          caData: (await readFile(`${stack.stateDir}/pki/kubernetes-ca.crt`)).toString("base64"),
        },
      ],
      users: [{ name: "operator", token: review.status.token }],
      contexts: [{ name: "local", cluster: "local", user: "operator" }],
      currentContext: "local",
    });
    return kc;
  }

  beforeAll(async () => {
    const config = stackOperatorConfig();
    await install(admin, config);
    await applyObjects(operatorRbac(namespace, serviceAccount));
    operator = await startOperator({
      kubeConfig: await serviceAccountKubeConfig(),
      config,
      logger: createLogger({ level: config.LOG_LEVEL }),
      leaderElection: {
        namespace,
        name: uniqueName("rbac-test-lease"),
        leaseDurationMs: 4_000,
        renewDeadlineMs: 3_000,
        retryPeriodMs: 500,
      },
    });
  });
  afterAll(async () => {
    await operator?.stop();
  });

  it("is enough to provision, cut off and delete a tenant and its devices", async () => {
    const tenant = uniqueName("rbac");
    await applyReadyTenant(tenant, { admins: [{ kind: "User", name: `admin-${tenant}` }] });
    await applyDevice(tenant, "sensor");
    const status = await readyDevice(tenant, "sensor");
    expect(status.username).toBe(`CN=sensor,O=${tenant}`);
    expect((await kubectl(["-n", tenant, "delete", "networkpolicy", "iot-default-deny"])).ok).toBe(true);
    await eventually("policy restored by the operator's ServiceAccount", async () =>
      (await kubectl(["-n", tenant, "get", "networkpolicy", "iot-default-deny"])).ok ? true : undefined,
    );
    expect((await kubectl(["delete", "tenant", tenant, "--wait=false"])).ok).toBe(true);
    await eventually(
      "tenant gone",
      async () => ((await kubectl(["get", "tenant", tenant])).ok ? undefined : true),
      90_000,
    );
  });

  it.each([
    ["create", "rbac.authorization.k8s.io", "clusterrolebindings", ""],
    ["bind", "rbac.authorization.k8s.io", "clusterroles", "cluster-admin"],
    ["escalate", "rbac.authorization.k8s.io", "clusterroles", ""],
    ["create", "", "pods", "default"],
    ["create", "cert-manager.io", "certificates", "default"],
    ["delete", "apiextensions.k8s.io", "customresourcedefinitions", ""],
    ["patch", "admissionregistration.k8s.io", "validatingadmissionpolicies", ""],
  ])("does not allow %s %s/%s", async (verb, group, resource, scope) => {
    const namespaced = scope === "default";
    const result = await kubectl([
      "auth",
      "can-i",
      verb,
      `${resource}${group ? `.${group}` : ""}${!namespaced && scope ? `/${scope}` : ""}`,
      ...(namespaced ? ["-n", scope] : []),
      `--as=system:serviceaccount:${namespace}:${serviceAccount}`,
    ]);
    expect(result.stdout.trim()).toBe("no");
  });
});
