import { readFile } from "node:fs/promises";
import { KubeConfig } from "@kubernetes/client-node";
import type { MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { adminKubeConfig, eventually, uniqueName } from "../../test/support/kube.js";
import { applyObjects, eventuallyNotFound, kubectl } from "../../test/support/kubectl.js";
import {
  connectWithCertificate,
  grantsNothing,
  refusedAsRevoked,
  subscribeCodes,
} from "../../test/support/mqtt.js";
import {
  applyDevice,
  applyReadyTenant,
  deviceTls,
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
  const open: MqttClient[] = [];
  const track = (client: MqttClient) => {
    open.push(client);
    return client;
  };
  const closed = (client: MqttClient) =>
    new Promise<void>((resolve) => client.once("close", () => resolve()));

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
    await Promise.all(open.map((client) => client.endAsync(true).catch(() => undefined)));
    await operator?.stop();
  });

  it("is enough to provision, heal, cut off, suspend and delete a tenant and its devices, with no request refused", async () => {
    const tenant = uniqueName("rbac");
    const root = `tenants/${tenant}`;
    const admins = [{ kind: "User", name: `admin-${tenant}` }];
    await applyReadyTenant(tenant, { admins });
    await Promise.all([applyDevice(tenant, "sensor"), applyDevice(tenant, "meter")]);
    const [status] = await Promise.all([readyDevice(tenant, "sensor"), readyDevice(tenant, "meter")]);
    expect(status.username).toBe(`CN=sensor,O=${tenant}`);
    const [sensor, meter] = await Promise.all([deviceTls(tenant, "sensor"), deviceTls(tenant, "meter")]);

    // Heal: a deleted policy is put back.
    expect((await kubectl(["-n", tenant, "delete", "networkpolicy", "iot-default-deny"])).ok).toBe(true);
    await eventually("policy restored by the operator's ServiceAccount", async () =>
      (await kubectl(["-n", tenant, "get", "networkpolicy", "iot-default-deny"])).ok ? true : undefined,
    );

    // Disable: the live connection drops, and a new one gets nothing.
    const live = track(await connectWithCertificate(sensor));
    expect(await subscribeCodes(live, `${root}/devices/sensor/#`)).toEqual([1]);
    const dropped = closed(live);
    await applyDevice(tenant, "sensor", { enabled: false });
    await dropped;
    expect(await grantsNothing(() => connectWithCertificate(sensor), `${root}/devices/sensor`)).toBe(true);

    // Suspend, then unsuspend: the other device is dropped, refused, then served again.
    const meterLive = track(await connectWithCertificate(meter));
    expect(await subscribeCodes(meterLive, `${root}/devices/meter/#`)).toEqual([1]);
    const meterDropped = closed(meterLive);
    await applyReadyTenant(tenant, { admins, suspended: true });
    await meterDropped;
    expect(await grantsNothing(() => connectWithCertificate(meter), `${root}/devices/meter`)).toBe(true);
    await applyReadyTenant(tenant, { admins, suspended: false });
    await eventually("meter served again", async () => {
      const client = await connectWithCertificate(meter);
      try {
        return (await subscribeCodes(client, `${root}/devices/meter/#`))[0] === 1 ? true : undefined;
      } finally {
        await client.endAsync(true);
      }
    });

    // Delete a device: its finalizer revokes the certificate and removes what it had in iot-system.
    expect((await kubectl(["-n", tenant, "delete", "device", "meter", "--wait=false"])).ok).toBe(true);
    await eventuallyNotFound(["-n", tenant, "device", "meter"], 90_000);
    await eventuallyNotFound(["-n", namespace, "certificate", `${tenant}.meter`]);
    await eventuallyNotFound(["-n", namespace, "secret", `${tenant}.meter`]);
    await eventually("meter's certificate revoked at the TLS layer", () => refusedAsRevoked(meter), 60_000);

    // Delete the tenant: the remaining device's finalizer runs during namespace teardown.
    expect((await kubectl(["delete", "tenant", tenant, "--wait=false"])).ok).toBe(true);
    await eventuallyNotFound(["tenant", tenant], 120_000);
    await eventuallyNotFound(["namespace", tenant], 120_000);
    await eventuallyNotFound(["-n", namespace, "certificate", `${tenant}.sensor`]);
    await eventuallyNotFound(["-n", namespace, "secret", `${tenant}.sensor`]);

    const requests = (await operator.manager.metrics.apiRequests.get()).values;
    expect(requests.filter((sample) => sample.labels.code === "200").length).toBeGreaterThan(0);
    expect(requests.filter((sample) => sample.labels.code === "403")).toEqual([]);
  }, 300_000);

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
