import type { MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { eventually, uniqueName } from "../../test/support/kube.js";
import { kubectl } from "../../test/support/kubectl.js";
import {
  collectMessages,
  connectWithCertificate,
  connectWithPassword,
  NOT_AUTHORIZED,
  publishCode,
  refusedAsRevoked,
  subscribeCodes,
  type TlsMaterial,
} from "../../test/support/mqtt.js";
import {
  applyDevice,
  applyManifest,
  applyReadyTenant,
  deviceReadyReason,
  readyDevice,
  startTestOperator,
} from "../../test/support/operator.js";
import type { RunningOperator } from "../operator.js";

/**
 * Devices end to end with the real cert-manager and the real Mosquitto: credentials are issued and
 * mirrored, the broker grants exactly the device's topics (I2), a tenant cannot get another tenant's
 * identity (I3), and a disabled, suspended or deleted device is cut off at once (I4).
 */

async function secretData(namespace: string, name: string): Promise<Record<string, string>> {
  const result = await kubectl(["get", "secret", name, "-n", namespace, "-o", "json"]);
  if (!result.ok) throw new Error(result.stderr);
  const data = (JSON.parse(result.stdout) as { data: Record<string, string> }).data;
  return Object.fromEntries(
    Object.entries(data).map(([k, v]) => [k, Buffer.from(v, "base64").toString("utf8")]),
  );
}

async function deviceTls(namespace: string, name: string): Promise<TlsMaterial> {
  const data = await secretData(namespace, `${name}-mqtt`);
  return { ca: data["ca.crt"] ?? "", cert: data["tls.crt"] ?? "", key: data["tls.key"] ?? "" };
}

/** Resolves with how long after `since` the client's connection closed. */
function closedWithin(client: MqttClient, since: () => number): Promise<number> {
  return new Promise((resolve) => client.once("close", () => resolve(Date.now() - since())));
}

describe("the Device reconciler with cert-manager and Mosquitto", () => {
  let operator: RunningOperator;
  const logLines: string[] = [];
  const tenantA = uniqueName("ta");
  const tenantB = uniqueName("tb");
  const rootA = `tenants/${tenantA}`;
  const rootB = `tenants/${tenantB}`;
  const open: MqttClient[] = [];
  const track = (client: MqttClient) => {
    open.push(client);
    return client;
  };

  beforeAll(async () => {
    operator = await startTestOperator(undefined, { logLines });
    await applyReadyTenant(tenantA, { admins: [{ kind: "User", name: `alice-${tenantA}` }] });
    await applyReadyTenant(tenantB);
  });
  afterAll(async () => {
    await Promise.all(open.map((c) => c.endAsync(true).catch(() => undefined)));
    await operator?.stop();
  });

  it("issues a certificate, mirrors it into the device's namespace and reports it", async () => {
    await applyDevice(tenantA, "sensor-1");
    const status = await readyDevice(tenantA, "sensor-1");
    expect(status.username).toBe(`CN=sensor-1,O=${tenantA}`);
    expect(status.secretName).toBe("sensor-1-mqtt");
    expect(status.certificate?.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(Date.parse(status.certificate?.notAfter ?? "")).toBeGreaterThan(Date.now() + 80 * 86_400_000);
    const data = await secretData(tenantA, "sensor-1-mqtt");
    expect(Object.keys(data).sort()).toEqual(["ca.crt", "tls.crt", "tls.key"]);
    const metrics = await operator.manager.metrics.registry.metrics();
    expect(metrics).toMatch(/^iot_broker_commands_total\{command="createClient",result="ok"\} [1-9]/m);
    expect(metrics).toMatch(/^iot_broker_synced 1$/m);
  });

  it("lets a device publish and subscribe in its own subtree only (I2)", async () => {
    await applyDevice(tenantB, "sensor-1");
    await applyDevice(tenantA, "sensor-2");
    await Promise.all([
      readyDevice(tenantB, "sensor-1"),
      readyDevice(tenantA, "sensor-2"),
      readyDevice(tenantA, "sensor-1"),
    ]);
    const b = track(await connectWithCertificate(await deviceTls(tenantB, "sensor-1")));
    expect(await publishCode(b, `${rootB}/devices/sensor-1/state`, "b-retained", true)).toBeLessThan(128);

    const a = track(await connectWithCertificate(await deviceTls(tenantA, "sensor-1")));
    const received = collectMessages(a);
    const own = `${rootA}/devices/sensor-1`;
    expect(await subscribeCodes(a, `${own}/#`)).toEqual([1]);
    expect(await publishCode(a, `${own}/telemetry`, "21.5")).toBeLessThan(128);
    await eventually(
      "own message",
      async () => (received.some((m) => m.topic === `${own}/telemetry`) ? true : undefined),
      5_000,
    );

    for (const filter of [
      `${rootA}/devices/sensor-2/#`,
      `${rootB}/#`,
      `${rootB}/devices/sensor-1/#`,
      "#",
      "+/#",
      "$SYS/#",
      "$CONTROL/#",
      `$share/g/${rootB}/#`,
      `$share/g/${rootA}/devices/sensor-2/#`,
    ]) {
      expect([filter, await subscribeCodes(a, filter)]).toEqual([filter, [NOT_AUTHORIZED]]);
    }
    expect(await publishCode(a, `${rootB}/devices/sensor-1/cmd`, "x")).toBe(NOT_AUTHORIZED);
    expect(await publishCode(a, `${rootA}/devices/sensor-2/cmd`, "x")).toBe(NOT_AUTHORIZED);

    expect(await publishCode(b, `${rootB}/devices/sensor-1/state`, "b-live")).toBeLessThan(128);
    await new Promise((r) => setTimeout(r, 300));
    expect(received.filter((m) => m.topic.startsWith(rootB))).toEqual([]);
  });

  it("cannot hand a tenant a certificate that claims another tenant (I3)", async () => {
    const alice = { user: `alice-${tenantA}` };
    const certificate = JSON.stringify({
      apiVersion: "cert-manager.io/v1",
      kind: "Certificate",
      metadata: { name: "forged", namespace: tenantA },
      spec: {
        secretName: "forged",
        commonName: "sensor-1",
        subject: { organizations: [tenantB] },
        issuerRef: { name: `tenant-${tenantB}-ca` },
      },
    });
    for (const attempt of [
      kubectl(["create", "-f", "-"], { as: alice, stdin: certificate }),
      kubectl(["-n", "iot-system", "get", "secret", `tenant-${tenantB}-ca`], { as: alice }),
      kubectl(["-n", "iot-system", "get", "certificates"], { as: alice }),
      kubectl(["-n", tenantB, "create", "-f", "-"], {
        as: alice,
        stdin: JSON.stringify({
          apiVersion: "iot.tenant-operator.io/v1alpha1",
          kind: "Device",
          metadata: { name: "mole", namespace: tenantB },
          spec: {},
        }),
      }),
    ]) {
      const result = await attempt;
      expect(result.ok).toBe(false);
      expect(result.stderr).toMatch(/forbidden/i);
    }
    // A Device named like another tenant's device still gets its own tenant's identity.
    expect(
      (
        await kubectl(["-n", tenantA, "create", "-f", "-"], {
          as: alice,
          stdin: JSON.stringify({
            apiVersion: "iot.tenant-operator.io/v1alpha1",
            kind: "Device",
            metadata: { name: "twin", namespace: tenantA },
            spec: {},
          }),
        })
      ).ok,
    ).toBe(true);
    await applyDevice(tenantB, "twin");
    const [mine, theirs] = await Promise.all([readyDevice(tenantA, "twin"), readyDevice(tenantB, "twin")]);
    expect(mine.username).toBe(`CN=twin,O=${tenantA}`);
    expect(theirs.username).toBe(`CN=twin,O=${tenantB}`);
  });

  it("drops a disabled device within a second and gives it nothing after reconnecting (I4)", async () => {
    await applyDevice(tenantA, "lost-1");
    await readyDevice(tenantA, "lost-1");
    const tls = await deviceTls(tenantA, "lost-1");
    const live = track(await connectWithCertificate(tls));
    expect(await subscribeCodes(live, `${rootA}/devices/lost-1/#`)).toEqual([1]);
    let disabledAt = 0;
    const dropped = closedWithin(live, () => disabledAt);
    disabledAt = Date.now();
    await applyDevice(tenantA, "lost-1", { enabled: false });
    expect(await dropped).toBeLessThan(1_000);

    const again = track(await connectWithCertificate(tls));
    expect(await subscribeCodes(again, `${rootA}/devices/lost-1/#`)).toEqual([NOT_AUTHORIZED]);
    expect(await publishCode(again, `${rootA}/devices/lost-1/telemetry`, "x")).toBe(NOT_AUTHORIZED);
  });

  it("cuts off a deleted device and removes its credentials", async () => {
    await applyDevice(tenantA, "lost-2");
    await readyDevice(tenantA, "lost-2");
    const tls = await deviceTls(tenantA, "lost-2");
    const live = track(await connectWithCertificate(tls));
    let deletedAt = 0;
    const dropped = closedWithin(live, () => deletedAt);
    deletedAt = Date.now();
    expect((await kubectl(["-n", tenantA, "delete", "device", "lost-2", "--wait=false"])).ok).toBe(true);
    expect(await dropped).toBeLessThan(1_000);
    // A reconnect gets nothing: every SUBSCRIBE refused, or the handshake once the CRL lists it. (The
    // adapter also discards the deleted device's session, which drops a reconnect made in between.)
    const outcome = await eventually("a reconnect answered", async () => {
      const again = await connectWithCertificate(tls).catch((error: Error) => error);
      if (again instanceof Error) return /revoked/.test(again.message) ? "revoked" : undefined;
      const codes = await subscribeCodes(track(again), `${rootA}/devices/lost-2/#`).catch(() => undefined);
      return codes && `SUBACK ${codes.join(",")}`;
    });
    expect(["revoked", `SUBACK ${NOT_AUTHORIZED}`]).toContain(outcome);
    // Then the tenant's CRL lists the certificate and the broker refuses the handshake itself.
    await eventually("certificate revoked at the TLS layer", () => refusedAsRevoked(tls), 30_000);
    await eventually(
      "credentials gone",
      async () => ((await kubectl(["-n", tenantA, "get", "secret", "lost-2-mqtt"])).ok ? undefined : true),
      60_000,
    );
  });

  it("suspends every device of a tenant and restores them when unsuspended", async () => {
    const name = uniqueName("tsus");
    await applyReadyTenant(name);
    await applyDevice(name, "meter");
    await readyDevice(name, "meter");
    const tls = await deviceTls(name, "meter");
    const live = track(await connectWithCertificate(tls));
    const dropped = closedWithin(live, () => 0);
    await applyReadyTenant(name, { suspended: true });
    await dropped;
    const suspended = track(await connectWithCertificate(tls));
    expect(await subscribeCodes(suspended, `tenants/${name}/devices/meter/#`)).toEqual([NOT_AUTHORIZED]);
    await applyReadyTenant(name, { suspended: false });
    await eventually(
      "access restored",
      async () => {
        const client = track(await connectWithCertificate(tls));
        const codes = await subscribeCodes(client, `tenants/${name}/devices/meter/#`);
        await client.endAsync(true);
        return codes[0] === 1 ? true : undefined;
      },
      30_000,
    );
  });

  it("gives a password device a generated password that works in its own subtree only", async () => {
    await applyDevice(tenantA, "legacy-1", { authentication: { type: "password" } });
    const status = await readyDevice(tenantA, "legacy-1");
    const data = await secretData(tenantA, "legacy-1-mqtt");
    expect(data.username).toBe(status.username);
    expect(data.password?.length).toBeGreaterThanOrEqual(24);
    const client = track(await connectWithPassword(data.username ?? "", data.password ?? ""));
    expect(await subscribeCodes(client, `${rootA}/devices/legacy-1/#`)).toEqual([1]);
    expect(await subscribeCodes(client, `${rootA}/devices/sensor-1/#`)).toEqual([NOT_AUTHORIZED]);
    await expect(connectWithPassword(data.username ?? "", "wrong-password")).rejects.toThrow();
  });

  it("mirrors a renewed certificate into the device's Secret again", async () => {
    await applyDevice(tenantA, "renewing");
    const before = await readyDevice(tenantA, "renewing");
    const mirroredBefore = await secretData(tenantA, "renewing-mqtt");
    // What `cmctl renew` does: ask cert-manager to issue now.
    const renew = await kubectl([
      "-n",
      "iot-system",
      "patch",
      "certificate",
      `${tenantA}.renewing`,
      "--subresource=status",
      "--type=json",
      "-p",
      JSON.stringify([
        {
          op: "add",
          path: "/status/conditions/-",
          value: {
            type: "Issuing",
            status: "True",
            reason: "ManuallyTriggered",
            message: "test",
            lastTransitionTime: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
          },
        },
      ]),
    ]);
    expect(renew.stderr).toBe("");
    const after = await eventually(
      "new serial in status",
      async () => {
        const status = await readyDevice(tenantA, "renewing");
        return status.certificate?.serialNumber !== before.certificate?.serialNumber ? status : undefined;
      },
      60_000,
    );
    const superseded = {
      ca: mirroredBefore["ca.crt"] ?? "",
      cert: mirroredBefore["tls.crt"] ?? "",
      key: mirroredBefore["tls.key"] ?? "",
    };
    await eventually("superseded certificate revoked", () => refusedAsRevoked(superseded), 30_000);
    const mirroredAfter = await secretData(tenantA, "renewing-mqtt");
    expect(mirroredAfter["tls.crt"]).not.toBe(mirroredBefore["tls.crt"]);
    expect(mirroredAfter["tls.key"]).not.toBe(mirroredBefore["tls.key"]);
    expect(after.certificate?.sha256).not.toBe(before.certificate?.sha256);
    const client = track(await connectWithCertificate(await deviceTls(tenantA, "renewing")));
    expect(await subscribeCodes(client, `${rootA}/devices/renewing/#`)).toEqual([1]);
  });

  it("replaces a password device's password on request and refuses the old one", async () => {
    await applyDevice(tenantA, "legacy-2", { authentication: { type: "password" } });
    await readyDevice(tenantA, "legacy-2");
    const before = await secretData(tenantA, "legacy-2-mqtt");
    expect(
      (
        await kubectl([
          "-n",
          tenantA,
          "annotate",
          "device",
          "legacy-2",
          "iot.tenant-operator.io/rotate-password=2026-11-25",
        ])
      ).ok,
    ).toBe(true);
    const after = await eventually("password replaced", async () => {
      const data = await secretData(tenantA, "legacy-2-mqtt");
      return data.password !== before.password ? data : undefined;
    });
    const client = await eventually("new password accepted", async () =>
      connectWithPassword(after.username ?? "", after.password ?? "").catch(() => undefined),
    );
    track(client);
    expect(await subscribeCodes(client, `${rootA}/devices/legacy-2/#`)).toEqual([1]);
    await expect(connectWithPassword(before.username ?? "", before.password ?? "")).rejects.toThrow();
  });

  it("gives no broker access to a tenant whose topic root lies inside another tenant's (I2)", async () => {
    const mallory = uniqueName("mallory");
    await applyManifest({
      apiVersion: "iot.tenant-operator.io/v1alpha1",
      kind: "Tenant",
      metadata: { name: mallory },
      spec: { broker: { topicRoot: `${rootA}/devices` } },
    });
    const condition = (type: string) =>
      kubectl(["get", "tenant", mallory, "-o", `jsonpath={.status.conditions[?(@.type=='${type}')].reason}`]);
    await eventually(
      "namespace usable",
      async () => ((await condition("NamespacesReady")).stdout === "Reconciled" ? true : undefined),
      90_000,
    );
    expect((await condition("BrokerReady")).stdout).toBe("TopicRootConflict");
    await applyDevice(mallory, "sensor-1");
    await deviceReadyReason(mallory, "sensor-1", "TopicRootConflict");
    expect((await kubectl(["get", "secret", "sensor-1-mqtt", "-n", mallory])).ok).toBe(false);
  });

  it("holds a tenant to maxDevices: the API server refuses one namespace's excess, the operator the tenant's (I6)", async () => {
    const small = uniqueName("small");
    const [first, second] = [`${small}-a`, `${small}-b`];
    await applyReadyTenant(small, { namespaces: [first, second], devices: { maxDevices: 1 } });
    await applyDevice(first, "only");
    await readyDevice(first, "only");
    const refused = await kubectl(["-n", first, "create", "-f", "-"], {
      stdin: JSON.stringify({
        apiVersion: "iot.tenant-operator.io/v1alpha1",
        kind: "Device",
        metadata: { name: "extra", namespace: first },
        spec: {},
      }),
    });
    expect(refused.ok).toBe(false);
    expect(refused.stderr).toMatch(/exceeded quota: iot-tenant-quota.*count\/devices.iot.tenant-operator.io/);
    await applyDevice(second, "over");
    await deviceReadyReason(second, "over", "DeviceLimitReached");
    expect((await kubectl(["get", "secret", "over-mqtt", "-n", second])).ok).toBe(false);
  });

  it("makes no write request once everything has converged, even when reconciles run again", async () => {
    const quiet = uniqueName("quiet");
    await applyReadyTenant(quiet, { admins: [{ kind: "User", name: `admin-${quiet}` }] });
    await Promise.all([
      applyDevice(quiet, "cert"),
      applyDevice(quiet, "pass", { authentication: { type: "password" } }),
    ]);
    await Promise.all([readyDevice(quiet, "cert"), readyDevice(quiet, "pass")]);
    // Settle: the last status writes and events of the other tests land first.
    await new Promise((r) => setTimeout(r, 3_000));
    const reconciles = async (controller: string) =>
      (await operator.manager.metrics.reconcileTotal.get()).values
        .filter((v) => v.labels.controller === controller)
        .reduce((sum, v) => sum + v.value, 0);
    const before = await operator.manager.metrics.writeRequests();
    const [tenantsBefore, devicesBefore] = [await reconciles("tenant"), await reconciles("device")];
    // Label changes wake both reconcilers without changing anything they own.
    for (const round of [1, 2, 3]) {
      await kubectl(["label", "--overwrite", "tenant", quiet, `touch=${round}`]);
      await kubectl(["-n", quiet, "label", "--overwrite", "device", "cert", "pass", `touch=${round}`]);
      await new Promise((r) => setTimeout(r, 1_000));
    }
    expect(await operator.manager.metrics.writeRequests()).toBe(before);
    expect(await reconciles("tenant")).toBeGreaterThanOrEqual(tenantsBefore + 3);
    expect(await reconciles("device")).toBeGreaterThanOrEqual(devicesBefore + 6);
  });

  it("keeps a device name to the first Device that took it across the tenant's namespaces", async () => {
    const twins = uniqueName("twins");
    const [first, second] = [`${twins}-a`, `${twins}-b`];
    await applyReadyTenant(twins, { namespaces: [first, second] });
    await applyDevice(first, "pump");
    const original = await readyDevice(first, "pump");
    await applyDevice(second, "pump");
    await deviceReadyReason(second, "pump", "DeviceNameTaken");
    expect((await kubectl(["get", "secret", "pump-mqtt", "-n", second])).ok).toBe(false);
    expect((await readyDevice(first, "pump")).username).toBe(original.username);
  });

  it("never writes secret material to its logs", async () => {
    const secrets = await Promise.all(
      [
        [tenantA, "sensor-1-mqtt", "tls.key"],
        [tenantA, "legacy-1-mqtt", "password"],
        [tenantA, "legacy-2-mqtt", "password"],
      ].map(async ([namespace = "", name = "", key = ""]) => (await secretData(namespace, name))[key] ?? ""),
    );
    const keyBody = (secrets[0] ?? "").split("\n").slice(1, 2).join("");
    expect(logLines.length).toBeGreaterThan(50);
    const logs = logLines.join("");
    for (const secret of [keyBody, secrets[1], secrets[2], inject("stack").broker.adminPassword]) {
      expect(secret?.length).toBeGreaterThan(10);
      expect(logs).not.toContain(secret);
    }
  });
});
