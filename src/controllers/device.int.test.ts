import type { MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { eventually, impersonatedKubeConfig, uniqueName } from "../../test/support/kube.js";
import { eventuallyNotFound, kubectl, notFound } from "../../test/support/kubectl.js";
import {
  brokerEntriesOf,
  collectMessages,
  connectWithCertificate,
  connectWithPassword,
  grantsNothing,
  NOT_AUTHORIZED,
  publishCode,
  refusedAsRevoked,
  subscribeCodes,
} from "../../test/support/mqtt.js";
import {
  applyDevice,
  applyManifest,
  applyReadyTenant,
  deleteWithoutFinalizers,
  deviceReadyReason,
  deviceTls,
  readyDevice,
  secretData,
  startTestOperator,
} from "../../test/support/operator.js";
import { deviceCertificateName } from "../api/derived-names.js";
import type { RunningOperator } from "../operator.js";
import { KubeClient } from "../runtime/kube-client.js";
import { Resource } from "./resources.js";
import { MANAGED_SECRETS } from "./revocation.js";
import { contentDigest, type Secret } from "./secrets.js";

/**
 * Devices end to end with the real cert-manager and the real Mosquitto: credentials are issued and
 * mirrored, the broker grants exactly the device's topics (I2), a tenant cannot get another tenant's
 * identity (I3), and a disabled, suspended or deleted device is cut off at once (I4).
 */

/** A live connection, closed by the broker within `ms`. */
function droppedWithin(client: MqttClient, ms: number): Promise<true> {
  return eventually("live connection dropped", async () => (client.connected ? undefined : true), ms);
}

/** Resolves with how long after `since` the client's connection closed. */
function closedWithin(client: MqttClient, since: () => number): Promise<number> {
  return new Promise((resolve) => client.once("close", () => resolve(Date.now() - since())));
}

const RESYNC_MS = 1_000;

/** Wakes the Device and Tenant reconcilers without changing what they own, then lets two broker resyncs pass. */
async function reconcileAndResync(tenant: string, device: string, round: string): Promise<void> {
  await kubectl(["label", "--overwrite", "tenant", tenant, `touch=${round}`]);
  await kubectl(["-n", tenant, "label", "--overwrite", "device", device, `touch=${round}`]);
  await new Promise((r) => setTimeout(r, 2.5 * RESYNC_MS));
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
    // A short broker resync, so that a cut-off is seen to survive it (the default is 5 minutes).
    operator = await startTestOperator(undefined, { logLines, brokerResyncIntervalMs: RESYNC_MS });
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

  it("keeps a tenant admin's hands off the credentials the operator made, but not off her own Secrets (I5)", async () => {
    const alice = { user: `alice-${tenantA}` };
    await applyDevice(tenantA, "guarded");
    await readyDevice(tenantA, "guarded");
    const before = await secretData(tenantA, "guarded-mqtt");
    // She may read it (her device needs it) ...
    expect((await kubectl(["-n", tenantA, "get", "secret", "guarded-mqtt"], { as: alice })).ok).toBe(true);
    // ... but not delete, edit or relabel it: the admission policy names itself.
    for (const attempt of [
      ["delete", "secret", "guarded-mqtt"],
      ["patch", "secret", "guarded-mqtt", "--type=merge", "-p", '{"data":{"tls.key":"Zm9yZ2Vk"}}'],
      ["label", "--overwrite", "secret", "guarded-mqtt", "iot.tenant-operator.io/tenant-"],
      ["label", "--overwrite", "secret", "guarded-mqtt", `iot.tenant-operator.io/tenant=${tenantB}`],
    ]) {
      const result = await kubectl(["-n", tenantA, ...attempt], { as: alice });
      expect(result.ok, attempt.join(" ")).toBe(false);
      expect(result.stderr).toMatch(/iot-tenant-guard/);
    }
    expect(await secretData(tenantA, "guarded-mqtt")).toEqual(before);
    // The positive twins: the same verbs on a Secret of her own are allowed.
    const own = ["-n", tenantA];
    expect(
      (await kubectl([...own, "create", "secret", "generic", "mine", "--from-literal=k=v"], { as: alice }))
        .ok,
    ).toBe(true);
    expect(
      (
        await kubectl([...own, "patch", "secret", "mine", "--type=merge", "-p", '{"data":{"k":"dw=="}}'], {
          as: alice,
        })
      ).ok,
    ).toBe(true);
    expect((await kubectl([...own, "label", "secret", "mine", "team=a"], { as: alice })).ok).toBe(true);
    expect((await kubectl([...own, "delete", "secret", "mine"], { as: alice })).ok).toBe(true);
  });

  it("drops a disabled device at once and gives it nothing after reconnecting (I4)", async () => {
    await applyDevice(tenantA, "lost-1");
    await readyDevice(tenantA, "lost-1");
    const tls = await deviceTls(tenantA, "lost-1");
    const live = track(await connectWithCertificate(tls));
    expect(await subscribeCodes(live, `${rootA}/devices/lost-1/#`)).toEqual([1]);
    let disabledAt = 0;
    const dropped = closedWithin(live, () => disabledAt);
    disabledAt = Date.now();
    await applyDevice(tenantA, "lost-1", { enabled: false });
    // A functional bound: the latency itself is measured in bench/cutoff-under-load.ts.
    expect(await dropped).toBeLessThan(10_000);

    const again = track(await connectWithCertificate(tls));
    expect(await subscribeCodes(again, `${rootA}/devices/lost-1/#`)).toEqual([NOT_AUTHORIZED]);
    expect(await publishCode(again, `${rootA}/devices/lost-1/telemetry`, "x")).toBe(NOT_AUTHORIZED);
    // And it stays so: reconciles of its Device and Tenant and broker resyncs give nothing back.
    await reconcileAndResync(tenantA, "lost-1", "lost-1");
    expect(await grantsNothing(() => connectWithCertificate(tls), `${rootA}/devices/lost-1`)).toBe(true);
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
    // A functional bound: the latency itself is measured in bench/cutoff-under-load.ts.
    expect(await dropped).toBeLessThan(10_000);
    // Refused at the handshake if the CRL is already reloaded, else connected and granted nothing.
    expect(await grantsNothing(() => connectWithCertificate(tls), `${rootA}/devices/lost-2`)).toBe(true);
    // Then the tenant's CRL lists the certificate and the broker refuses the handshake itself.
    await eventually("certificate revoked at the TLS layer", () => refusedAsRevoked(tls), 30_000);
    await eventuallyNotFound(["-n", tenantA, "secret", "lost-2-mqtt"]);
    await eventuallyNotFound(["-n", "iot-system", "certificate", `${tenantA}.lost-2`]);
    await eventuallyNotFound(["-n", "iot-system", "secret", `${tenantA}.lost-2`]);
    await eventuallyNotFound(["-n", tenantA, "device", "lost-2"]);
    await reconcileAndResync(tenantA, "sensor-1", "lost-2");
    expect(await grantsNothing(() => connectWithCertificate(tls), `${rootA}/devices/lost-2`)).toBe(true);
    expect(await notFound(["-n", tenantA, "device", "lost-2"])).toBe(true);
  });

  it("cuts off a Device whose finalizer a tenant admin stripped before deleting it (I4)", async () => {
    const alice = new KubeClient(impersonatedKubeConfig(`alice-${tenantA}`));
    await applyDevice(tenantA, "stripped-cert");
    await applyDevice(tenantA, "stripped-pass", { authentication: { type: "password" } });
    await Promise.all([readyDevice(tenantA, "stripped-cert"), readyDevice(tenantA, "stripped-pass")]);
    const tls = await deviceTls(tenantA, "stripped-cert");
    const { username = "", password = "" } = await secretData(tenantA, "stripped-pass-mqtt");
    const liveCert = track(await connectWithCertificate(tls));
    const livePass = track(await connectWithPassword(username, password));

    await deleteWithoutFinalizers(alice, tenantA, "stripped-cert");
    await deleteWithoutFinalizers(alice, tenantA, "stripped-pass");
    await Promise.all([droppedWithin(liveCert, 10_000), droppedWithin(livePass, 10_000)]);
    expect(await grantsNothing(() => connectWithCertificate(tls), `${rootA}/devices/stripped-cert`)).toBe(
      true,
    );
    expect(
      await grantsNothing(() => connectWithPassword(username, password), `${rootA}/devices/stripped-pass`),
    ).toBe(true);
    await eventually("certificate revoked at the TLS layer", () => refusedAsRevoked(tls), 30_000);
    for (const name of ["stripped-cert", "stripped-pass"]) {
      await eventuallyNotFound(["-n", tenantA, "secret", `${name}-mqtt`]);
      expect(await notFound(["-n", tenantA, "device", name])).toBe(true);
    }
    await eventuallyNotFound(["-n", "iot-system", "certificate", `${tenantA}.stripped-cert`]);
    await eventuallyNotFound(["-n", "iot-system", "secret", `${tenantA}.stripped-cert`]);
    const entries = await brokerEntriesOf(tenantA);
    for (const name of ["stripped-cert", "stripped-pass"]) {
      expect(entries.roles).not.toContain(`iot:${tenantA}:${name}`);
      expect(entries.clients).not.toContain(`iot:${tenantA}:${name}`);
    }
    // Nothing brings either back: neither the broker resync nor the operator re-creating the Device.
    await reconcileAndResync(tenantA, "sensor-1", "stripped");
    expect(
      await grantsNothing(() => connectWithPassword(username, password), `${rootA}/devices/stripped-pass`),
    ).toBe(true);
    for (const name of ["stripped-cert", "stripped-pass"])
      expect(await notFound(["-n", tenantA, "device", name])).toBe(true);
  });

  it("revokes a deleted Device's certificate even when a Device of the same name replaces it at once (I4)", async () => {
    const alice = new KubeClient(impersonatedKubeConfig(`alice-${tenantA}`));
    await applyDevice(tenantA, "phoenix");
    const before = await readyDevice(tenantA, "phoenix");
    const old = await deviceTls(tenantA, "phoenix");
    await deleteWithoutFinalizers(alice, tenantA, "phoenix");
    await applyDevice(tenantA, "phoenix");
    const after = await eventually("the new Device has its own certificate", async () => {
      const status = await readyDevice(tenantA, "phoenix");
      return status.certificate?.serialNumber !== before.certificate?.serialNumber ? status : undefined;
    });
    expect(after.username).toBe(before.username);
    await eventually("the old certificate revoked at the TLS layer", () => refusedAsRevoked(old), 30_000);
    const renewed = await eventually("the new key pair mirrored", async () => {
      const tls = await deviceTls(tenantA, "phoenix");
      return tls.cert !== old.cert ? tls : undefined;
    });
    const client = track(await connectWithCertificate(renewed));
    expect(await subscribeCodes(client, `${rootA}/devices/phoenix/#`)).toEqual([1]);
  });

  it("cuts off and cleans up every device of a deleted Tenant (I4)", async () => {
    const doomed = uniqueName("doomed");
    await applyReadyTenant(doomed);
    await applyDevice(doomed, "cert");
    await applyDevice(doomed, "pass", { authentication: { type: "password" } });
    await Promise.all([readyDevice(doomed, "cert"), readyDevice(doomed, "pass")]);
    const tls = await deviceTls(doomed, "cert");
    const { username = "", password = "" } = await secretData(doomed, "pass-mqtt");
    const liveCert = track(await connectWithCertificate(tls));
    const livePass = track(await connectWithPassword(username, password));

    expect((await kubectl(["delete", "tenant", doomed, "--wait=false"])).ok).toBe(true);
    await Promise.all([droppedWithin(liveCert, 30_000), droppedWithin(livePass, 30_000)]);
    const root = `tenants/${doomed}/devices`;
    expect(await grantsNothing(() => connectWithCertificate(tls), `${root}/cert`)).toBe(true);
    expect(await grantsNothing(() => connectWithPassword(username, password), `${root}/pass`)).toBe(true);
    await eventuallyNotFound(["tenant", doomed], 120_000);
    await eventuallyNotFound(["namespace", doomed], 120_000);
    for (const [kind, name] of [
      ["certificate", `${doomed}.cert`],
      ["secret", `${doomed}.cert`],
      ["certificate", `tenant-${doomed}-ca`],
      ["secret", `tenant-${doomed}-ca`],
      ["secret", `tenant-${doomed}-crl`],
    ] as const) {
      await eventuallyNotFound(["-n", "iot-system", kind, name]);
    }
    expect(await brokerEntriesOf(doomed)).toEqual({ roles: [], clients: [] });
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
    const subtree = `tenants/${name}/devices/meter`;
    expect(await grantsNothing(() => connectWithCertificate(tls), subtree)).toBe(true);
    await reconcileAndResync(name, "meter", "suspended");
    expect(await grantsNothing(() => connectWithCertificate(tls), subtree)).toBe(true);
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

  it("issues no new device certificate once a tenant's revocation list is full, and keeps its devices working (I6)", async () => {
    const churner = uniqueName("churn");
    await applyReadyTenant(churner, { devices: { maxDevices: 2 } });
    await applyDevice(churner, "kept");
    await readyDevice(churner, "kept");
    const crl = ["-n", "iot-system", "secret", `tenant-${churner}-crl`];
    const listed = async () =>
      JSON.parse(
        Buffer.from(
          (await kubectl(["get", ...crl, "-o", "jsonpath={.data.revoked\\.json}"])).stdout,
          "base64",
        ).toString("utf8") || "[]",
      ) as unknown[];
    const original = await listed();
    // What a tenant churning through devices leaves behind: 2 devices + 100 head room, all unexpired.
    const notAfter = new Date(Date.now() + 30 * 86_400_000).toISOString();
    const churned = Array.from({ length: 102 }, (_, i) => ({
      serialNumber: (0x1000 + i).toString(16),
      revokedAt: new Date().toISOString(),
      notAfter,
      device: `${churner}/gone-${i}`,
    }));
    const patch = (entries: unknown[]) =>
      kubectl([
        "patch",
        ...crl,
        "--type=merge",
        "-p",
        JSON.stringify({ data: { "revoked.json": Buffer.from(JSON.stringify(entries)).toString("base64") } }),
      ]);
    expect((await patch([...original, ...churned])).ok).toBe(true);
    try {
      await eventually("the churned entries on the CRL", async () =>
        (await listed()).length >= 102 ? true : undefined,
      );
      await applyDevice(churner, "newcomer");
      await eventually("newcomer waits for room on the revocation list", async () => {
        const message = (
          await kubectl([
            "-n",
            churner,
            "get",
            "device",
            "newcomer",
            "-o",
            "jsonpath={.status.conditions[?(@.type=='CredentialsIssued')].message}",
          ])
        ).stdout;
        return /room on the tenant's revocation list/.test(message) ? true : undefined;
      });
      expect(await notFound(["-n", "iot-system", "certificate", `${churner}.newcomer`])).toBe(true);
      // The positive twin: the device that already has its certificate keeps working.
      const kept = track(await connectWithCertificate(await deviceTls(churner, "kept")));
      expect(await subscribeCodes(kept, `tenants/${churner}/devices/kept/#`)).toEqual([1]);
    } finally {
      await patch(original);
    }
    // Room again: the newcomer gets its certificate.
    await readyDevice(churner, "newcomer");
  });

  it("gives no broker access to a tenant whose topic root lies inside or around another tenant's (I2)", async () => {
    // Tenant A's root, and a later tenant's root inside it and around it.
    const base = uniqueName("nest");
    const owner = uniqueName("owner");
    await applyReadyTenant(owner, { broker: { topicRoot: `${base}/owner` } });
    await applyDevice(owner, "sensor-1");
    await readyDevice(owner, "sensor-1");
    // Age is the creation time, to the second, then the name: the intruders must come a second later
    // (a fast run created one in the owner's second, and "inside-…" sorts before "owner-…").
    const created = await kubectl(["get", "tenant", owner, "-o", "jsonpath={.metadata.creationTimestamp}"]);
    await new Promise((r) => setTimeout(r, Math.max(0, Date.parse(created.stdout) + 1_100 - Date.now())));
    for (const [intruder, topicRoot] of [
      [uniqueName("inside"), `${base}/owner/devices`],
      [uniqueName("around"), base],
    ] as const) {
      await applyManifest({
        apiVersion: "iot.tenant-operator.io/v1alpha1",
        kind: "Tenant",
        metadata: { name: intruder },
        spec: { broker: { topicRoot } },
      });
      const condition = (type: string) =>
        kubectl([
          "get",
          "tenant",
          intruder,
          "-o",
          `jsonpath={.status.conditions[?(@.type=='${type}')].reason}`,
        ]);
      await eventually(
        "namespace usable",
        async () => ((await condition("NamespacesReady")).stdout === "Reconciled" ? true : undefined),
        90_000,
      );
      expect((await condition("BrokerReady")).stdout).toBe("TopicRootConflict");
      await applyDevice(intruder, "sensor-1");
      await deviceReadyReason(intruder, "sensor-1", "TopicRootConflict");
      expect(await notFound(["secret", "sensor-1-mqtt", "-n", intruder])).toBe(true);
      expect(await notFound(["-n", "iot-system", "certificate", `${intruder}.sensor-1`])).toBe(true);
      expect(await brokerEntriesOf(intruder)).toEqual({ roles: [], clients: [] });
    }
    // The older tenant keeps everything.
    const ownerBroker = await kubectl([
      "get",
      "tenant",
      owner,
      "-o",
      "jsonpath={.status.conditions[?(@.type=='BrokerReady')].status}",
    ]);
    expect(ownerBroker.stdout).toBe("True");
    const client = track(await connectWithCertificate(await deviceTls(owner, "sensor-1")));
    expect(await subscribeCodes(client, `${base}/owner/devices/sensor-1/#`)).toEqual([1]);
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
    expect(await notFound(["secret", "over-mqtt", "-n", second])).toBe(true);
    expect(await brokerEntriesOf(small)).toEqual({
      roles: [`iot:${small}:only`],
      clients: [`iot:${small}:only`],
    });
    // The device within the limit keeps its access.
    await readyDevice(first, "only");
    const client = track(await connectWithCertificate(await deviceTls(first, "only")));
    expect(await subscribeCodes(client, `tenants/${small}/devices/only/#`)).toEqual([1]);
  });

  it("keeps a device name to the first Device that took it, and deleting the refused one leaves the first alone", async () => {
    const twins = uniqueName("twins");
    const [first, second] = [`${twins}-a`, `${twins}-b`];
    await applyReadyTenant(twins, { namespaces: [first, second] });
    await applyDevice(first, "pump");
    const original = await readyDevice(first, "pump");
    const tls = await deviceTls(first, "pump");
    const live = track(await connectWithCertificate(tls));
    const own = `tenants/${twins}/devices/pump`;
    expect(await subscribeCodes(live, `${own}/#`)).toEqual([1]);

    await applyDevice(second, "pump");
    await deviceReadyReason(second, "pump", "DeviceNameTaken");
    expect(await notFound(["secret", "pump-mqtt", "-n", second])).toBe(true);
    expect((await kubectl(["-n", second, "delete", "device", "pump"])).ok).toBe(true);
    await eventuallyNotFound(["-n", second, "device", "pump"]);

    expect(live.connected).toBe(true);
    const after = await readyDevice(first, "pump");
    expect(after.username).toBe(original.username);
    expect(after.certificate?.serialNumber).toBe(original.certificate?.serialNumber);
    expect(await publishCode(live, `${own}/telemetry`, "still here")).toBeLessThan(128);
    expect(await refusedAsRevoked(tls)).toBeUndefined();
    expect((await brokerEntriesOf(twins)).clients).toEqual([`iot:${twins}:pump`]);
    expect((await deviceTls(first, "pump")).cert).toBe(tls.cert);
  });

  it("never writes secret material to its logs", async () => {
    await applyDevice(tenantA, "quiet-cert");
    await applyDevice(tenantA, "quiet-pass", { authentication: { type: "password" } });
    await Promise.all([readyDevice(tenantA, "quiet-cert"), readyDevice(tenantA, "quiet-pass")]);
    const raw = async (name: string) => {
      const result = await kubectl(["get", "secret", name, "-n", tenantA, "-o", "json"]);
      return (JSON.parse(result.stdout) as { data: Record<string, string> }).data;
    };
    const [cert, pass] = [await raw("quiet-cert-mqtt"), await raw("quiet-pass-mqtt")];
    const key = Buffer.from(cert["tls.key"] ?? "", "base64").toString("utf8");
    const password = Buffer.from(pass.password ?? "", "base64").toString("utf8");
    const adminPassword = inject("stack").broker.adminPassword;
    const base64 = (text: string) => Buffer.from(text).toString("base64");
    const forbidden = [
      key.split("\n").slice(1, 2).join(""),
      cert["tls.key"] ?? "",
      password,
      pass.password ?? "",
      base64(password),
      adminPassword,
      base64(adminPassword),
    ];
    expect(logLines.length).toBeGreaterThan(50);
    const logs = logLines.join("");
    for (const secret of forbidden) {
      expect(secret.length).toBeGreaterThan(10);
      expect(logs).not.toContain(secret);
    }
  });

  it("caches no certificate or key bytes of a device's credentials, only their digests; a password device keeps its password", async () => {
    await applyDevice(tenantA, "cached-cert");
    await applyDevice(tenantA, "cached-pass", { authentication: { type: "password" } });
    await Promise.all([readyDevice(tenantA, "cached-cert"), readyDevice(tenantA, "cached-pass")]);
    const raw = async (namespace: string, name: string) => {
      const result = await kubectl(["get", "secret", name, "-n", namespace, "-o", "json"]);
      return (JSON.parse(result.stdout) as { data: Record<string, string> }).data;
    };
    const issued = await raw("iot-system", deviceCertificateName(tenantA, "cached-cert"));
    const mirror = await raw(tenantA, "cached-cert-mqtt");
    const pass = await raw(tenantA, "cached-pass-mqtt");
    const cache = operator.manager.informer<Secret>(Resource.secret, { labelSelector: MANAGED_SECRETS });
    const cached = JSON.stringify(cache.list());
    for (const bytes of [issued["tls.key"], issued["tls.crt"], mirror["tls.key"], mirror["tls.crt"]]) {
      expect(bytes?.length).toBeGreaterThan(100);
      expect(cached).not.toContain(bytes);
    }
    // What the reconcilers read instead: a digest of each key and the certificate's broker identity.
    const cachedMirror = cache.get(`${tenantA}/cached-cert-mqtt`);
    expect(cachedMirror?.digests?.["tls.key"]).toBe(contentDigest(mirror["tls.key"] ?? ""));
    expect(cachedMirror?.certificate?.username).toBe(`CN=cached-cert,O=${tenantA}`);
    expect(cache.get(`${tenantA}/cached-pass-mqtt`)?.data).toEqual({ password: pass.password });
  });
});
