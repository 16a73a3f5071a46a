import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { type NatsCluster, startNatsCluster } from "../../test/harness/nats.js";
import { NATS_KEYS_SECRET, natsKeysSecret } from "../../test/harness/stack.js";
import { natsOperatorConfig } from "../../test/support/backends.js";
import { eventually, uniqueName } from "../../test/support/kube.js";
import { eventuallyNotFound, kubectl } from "../../test/support/kubectl.js";
import { receivedBeforeSentinel } from "../../test/support/mqtt.js";
import {
  closed,
  connectNatsMqtt,
  eventuallyConnects,
  LOGIN_REFUSED,
  REFUSED,
} from "../../test/support/nats-mqtt.js";
import { accountConnLimits } from "../../test/support/nats-system.js";
import {
  applyDevice,
  applyManifest,
  applyReadyTenant,
  deviceReadyReason,
  deviceTls,
  readyAtCurrentGeneration,
  readyDevice,
  secretData,
  startTestOperator,
} from "../../test/support/operator.js";
import { OPERATOR_NAMESPACE } from "../api/group.js";
import { natsAccountSecretName } from "../controllers/nats-keys.js";
import { REVOKED_KEY, tenantCrlName } from "../desired/revocation.js";
import type { RunningOperator } from "../operator.js";
import { subscribeCodes } from "../verify/mqtt-probe.js";
import { keyFromSeed } from "./nats-claims.js";

/**
 * The whole operator with BROKER_KIND=nats on a real 3-node NATS cluster: Tenants and Devices
 * (password and x509) from the API server become accounts and logins that the cluster enforces.
 */
describe("the operator with BROKER_KIND=nats", () => {
  const stack = inject("stack");
  const [tenantA, tenantB, tenantX, tenantL] = [
    uniqueName("natsa"),
    uniqueName("natsb"),
    uniqueName("natsx"),
    uniqueName("natsl"),
  ];
  const device = "sensor-1";
  let cluster: NatsCluster;
  let operator: RunningOperator;
  let ca: Buffer;

  beforeAll(async () => {
    cluster = await startNatsCluster({
      stateDir: join(stack.stateDir, "nats-operator"),
      deviceRootCA: stack.deviceRootCA,
    });
    ca = await readFile(cluster.caFile);
    await applyManifest(natsKeysSecret(cluster));
    operator = await startTestOperator(natsOperatorConfig(cluster));
  });

  afterAll(async () => {
    // Leaves no Tenant behind for the next operator test's operator to reconcile.
    if (operator) {
      const tenants = [tenantA, tenantB, tenantX, tenantL];
      await kubectl(["delete", "tenant", ...tenants, "--ignore-not-found", "--wait=false"]);
      await Promise.all(tenants.map((t) => eventuallyNotFound(["tenant", t], 60_000)));
      await operator.stop();
    }
    await cluster?.stop();
    await kubectl(["-n", OPERATOR_NAMESPACE, "delete", "secret", NATS_KEYS_SECRET, "--ignore-not-found"]);
  });

  interface Credentials {
    readonly username: string;
    readonly password: string;
  }

  /** The credentials the operator put in the Device's Secret. */
  async function credentialsOf(tenant: string): Promise<Credentials> {
    const { username = "", password = "" } = await secretData(tenant, `${device}-mqtt`);
    return { username, password };
  }

  /** A login on one node; the client id is the username unless given. */
  function login(
    credentials: Credentials,
    node: number,
    clientId = credentials.username,
  ): Promise<MqttClient> {
    const port = cluster.nodes[node]?.mqttPort ?? 0;
    return connectNatsMqtt({ host: cluster.host, port, ca, ...credentials, clientId });
  }

  it("provisions password devices that log in as <tenant>/<device>, stay in their subtree, and are cut off by disable and Tenant deletion", async () => {
    await Promise.all([applyReadyTenant(tenantA), applyReadyTenant(tenantB)]);
    await Promise.all([
      applyDevice(tenantA, device, { authentication: { type: "password" } }),
      applyDevice(tenantB, device, { authentication: { type: "password" } }),
    ]);
    const [statusA] = await Promise.all([readyDevice(tenantA, device), readyDevice(tenantB, device)]);
    expect(statusA.username).toBe(`${tenantA}/${device}`);
    const [credsA, credsB] = await Promise.all([credentialsOf(tenantA), credentialsOf(tenantB)]);
    expect(credsA.username).toBe(`${tenantA}/${device}`);

    // Its own credentials under another client id are refused: the client id is the identity (I1).
    await expect(login(credsA, 1, `${tenantA}/other`)).rejects.toThrow(LOGIN_REFUSED);
    const [a, b] = await Promise.all([
      eventuallyConnects(() => login(credsA, 0)),
      eventuallyConnects(() => login(credsB, 1)),
    ]);
    const ownA = `tenants/${tenantA}/devices/${device}`;
    const ownB = `tenants/${tenantB}/devices/${device}`;
    try {
      // Its own subtree: subscribed, and its own publish arrives (I2).
      expect(await subscribeCodes(a, `${ownA}/#`)).toEqual([1]);
      expect(
        await receivedBeforeSentinel(a, `${ownA}/sentinel`, () =>
          a
            .publishAsync(`${ownA}/t`, "21", { qos: 1 })
            .then(() => a.publishAsync(`${ownA}/sentinel`, "s", { qos: 1 })),
        ),
      ).toEqual([`${ownA}/t=21`]);
      // The other tenant's topic: the subscription is refused and a publish never reaches B's device,
      // which does receive its own (the sentinel proves the order).
      expect(await subscribeCodes(a, `${ownB}/#`)).toEqual([REFUSED]);
      expect(await subscribeCodes(b, `${ownB}/#`)).toEqual([1]);
      await a.publishAsync(`${ownB}/t`, "from-a", { qos: 0 });
      expect(
        await receivedBeforeSentinel(b, `${ownB}/sentinel`, () =>
          b
            .publishAsync(`${ownB}/own`, "from-b", { qos: 1 })
            .then(() => b.publishAsync(`${ownB}/sentinel`, "s", { qos: 1 })),
        ),
      ).toEqual([`${ownB}/own=from-b`]);

      // Disabling the Device drops its live connection on its node and refuses its next login.
      const dropped = closed(a);
      await applyDevice(tenantA, device, { authentication: { type: "password" }, enabled: false });
      await deviceReadyReason(tenantA, device, "Disabled");
      console.log(
        `[nats-operator] disabled device's connection dropped after ${(await dropped).toFixed(0)} ms`,
      );
      await expect(login(credsA, 2)).rejects.toThrow(LOGIN_REFUSED);
      // Positive twin: enabled again, the same credentials log in.
      await applyDevice(tenantA, device, { authentication: { type: "password" }, enabled: true });
      await readyAtCurrentGeneration(tenantA, device);
      const again = await eventuallyConnects(() => login(credsA, 2));

      // Deleting the Tenant closes its account: the live connection drops, no login of it works.
      const closedWithTenant = closed(again);
      expect((await kubectl(["delete", "tenant", tenantA, "--wait=false"])).ok).toBe(true);
      await closedWithTenant;
      await eventuallyNotFound(["tenant", tenantA], 60_000);
      // Its account key is gone too: a later Tenant of that name gets a new, empty account.
      await eventuallyNotFound(["-n", OPERATOR_NAMESPACE, "secret", natsAccountSecretName(tenantA)]);
      await expect(login(credsA, 0)).rejects.toThrow(LOGIN_REFUSED);
      // Positive twin: the other tenant's device stays connected and logs in afresh.
      expect(b.connected).toBe(true);
      await b.endAsync(true);
      const freshB = await eventuallyConnects(() => login(credsB, 0));
      await freshB.endAsync(true);
    } finally {
      await Promise.all([a.endAsync(true), b.endAsync(true)]);
    }
  });

  it("provisions x509 devices whose cert-manager certificate from the tenant CA logs in as <tenant>/<device>; a deleted device's certificate is dropped, revoked and refused, even for a new Device of that name", async () => {
    await applyReadyTenant(tenantX);
    await applyDevice(tenantX, device);
    const status = await readyDevice(tenantX, device);
    expect(status.username).toBe(`CN=${device},O=${tenantX}`);
    const first = await deviceTls(tenantX, device);
    const clientId = `${tenantX}/${device}`;
    const loginWith = (tls: { cert: string | Buffer; key: string | Buffer }, node: number) =>
      connectNatsMqtt({
        host: cluster.host,
        port: cluster.nodes[node]?.mqttPort ?? 0,
        ca,
        clientId,
        cert: Buffer.from(tls.cert),
        key: Buffer.from(tls.key),
      });
    // Without its certificate the device's identity does not log in.
    await expect(
      connectNatsMqtt({ host: cluster.host, port: cluster.nodes[0]?.mqttPort ?? 0, ca, clientId }),
    ).rejects.toThrow(LOGIN_REFUSED);
    const client = await eventuallyConnects(() => loginWith(first, 1));
    const own = `tenants/${tenantX}/devices/${device}`;
    expect(await subscribeCodes(client, `${own}/#`)).toEqual([1]);
    expect(await subscribeCodes(client, `tenants/${tenantX}/#`)).toEqual([REFUSED]);

    // Deleting the Device drops its live connection and puts its certificate on the tenant's CRL.
    const dropped = closed(client);
    expect((await kubectl(["-n", tenantX, "delete", "device", device, "--wait=false"])).ok).toBe(true);
    console.log(
      `[nats-operator] deleted x509 device's connection dropped after ${(await dropped).toFixed(0)} ms`,
    );
    await eventually(
      "the deleted device's serial on the tenant's CRL",
      async () => {
        const crl = await kubectl([
          "-n",
          OPERATOR_NAMESPACE,
          "get",
          "secret",
          tenantCrlName(tenantX),
          "-o",
          "json",
        ]);
        if (!crl.ok) return undefined;
        const data = (JSON.parse(crl.stdout) as { data: Record<string, string> }).data[REVOKED_KEY] ?? "";
        return Buffer.from(data, "base64")
          .toString()
          .includes(status.certificate?.serialNumber ?? "?")
          ? true
          : undefined;
      },
      60_000,
    );
    await eventuallyNotFound(["-n", tenantX, "device", device]);
    // A new Device of that name gets a new certificate; the old one stays refused (revoked), the new one logs in.
    await applyDevice(tenantX, device);
    const renewed = await eventually(
      "the new Device's certificate",
      async () => {
        const current = await readyDevice(tenantX, device);
        return current.certificate?.serialNumber !== status.certificate?.serialNumber ? current : undefined;
      },
      90_000,
    );
    expect(renewed.username).toBe(status.username);
    const second = await deviceTls(tenantX, device);
    await expect(loginWith(first, 2)).rejects.toThrow(LOGIN_REFUSED);
    const again = await eventuallyConnects(() => loginWith(second, 2));
    expect(await subscribeCodes(again, `${own}/#`)).toEqual([1]);
    await again.endAsync(true);
  });

  it("applies a Tenant's changed device limit to its account when the Tenant changes, on every server (I6)", async () => {
    await applyReadyTenant(tenantL, { devices: { maxDevices: 3 } });
    await applyDevice(tenantL, device, { authentication: { type: "password" } });
    await readyDevice(tenantL, device);
    const { seed = "" } = await secretData(OPERATOR_NAMESPACE, natsAccountSecretName(tenantL));
    const account = keyFromSeed(seed).getPublicKey();
    expect(await accountConnLimits(cluster, account)).toEqual([3, 3, 3]);
    // Only the Tenant changes; none of its devices does.
    await applyReadyTenant(tenantL, { devices: { maxDevices: 7 } });
    await eventually(
      "the account's new connection limit on every server",
      async () =>
        (await accountConnLimits(cluster, account)).every((conn) => conn === 7) ? true : undefined,
      30_000,
    );
  });
});
