import type { IClientOptions, MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually, uniqueName } from "../../test/support/kube.js";
import { kubectl } from "../../test/support/kubectl.js";
import {
  connectRecording,
  connectWithCertificate,
  connectWithPassword,
  NOT_AUTHORIZED,
  publishCode,
  receivedBeforeSentinel,
  subscribeCodes,
  type TlsMaterial,
} from "../../test/support/mqtt.js";
import {
  applyDevice,
  applyReadyTenant,
  deviceReadyReason,
  readyAtCurrentGeneration,
  readyDevice,
  secretData,
  startTestOperator,
} from "../../test/support/operator.js";
import type { RunningOperator } from "../operator.js";

/**
 * MQTT sessions end to end, through the operator, cert-manager and the real Mosquitto: a client id
 * belongs to one identity (no session takeover across tenants or between siblings), a resumed session
 * never receives more than the device's current grant, and nothing a deleted tenant left under its
 * topic root reaches the next tenant given that root.
 */

async function deviceTls(namespace: string, name: string): Promise<TlsMaterial> {
  const data = await secretData(namespace, `${name}-mqtt`);
  return { ca: data["ca.crt"] ?? "", cert: data["tls.crt"] ?? "", key: data["tls.key"] ?? "" };
}

/** MQTT 3.1.1 with clean session off: the session, its subscriptions and queued messages outlive the connection. */
const persistent = (clientId: string): IClientOptions => ({ protocolVersion: 4, clean: false, clientId });

describe("MQTT sessions and client ids through the operator", () => {
  let operator: RunningOperator;
  const tenantA = uniqueName("sa");
  const tenantB = uniqueName("sb");
  const rootA = `tenants/${tenantA}`;
  const rootB = `tenants/${tenantB}`;
  const open: MqttClient[] = [];
  const track = (client: MqttClient) => {
    open.push(client);
    return client;
  };
  /** A device of tenant A allowed to command every device of it: the sender of the messages under test. */
  let commander: MqttClient;
  const command = async (topic: string, payload: string) =>
    expect(await publishCode(commander, topic, payload)).toBeLessThan(128);

  beforeAll(async () => {
    operator = await startTestOperator();
    await applyReadyTenant(tenantA);
    await applyReadyTenant(tenantB);
    await applyDevice(tenantA, "commander", { topics: { publish: ["devices/+/cmd"], subscribe: [] } });
    await readyDevice(tenantA, "commander");
    commander = track(await connectWithCertificate(await deviceTls(tenantA, "commander")));
  });
  afterAll(async () => {
    await Promise.all(open.map((c) => c.endAsync(true).catch(() => undefined)));
    await operator?.stop();
  });

  it.each([
    ["a device of another tenant", () => [tenantB, "thief"]],
    ["a sibling device of the same tenant", () => [tenantA, "sibling"]],
  ])("%s cannot take over a device's session by using its client id (I2, I4)", async (_, thiefOf) => {
    const [thiefTenant, thiefName] = thiefOf() as [string, string];
    const victimName = uniqueName("victim");
    await Promise.all([applyDevice(tenantA, victimName), applyDevice(thiefTenant, thiefName)]);
    await Promise.all([readyDevice(tenantA, victimName), readyDevice(thiefTenant, thiefName)]);
    const victimTls = await deviceTls(tenantA, victimName);
    const thiefTls = await deviceTls(thiefTenant, thiefName);
    const clientId = `victim-${victimName}`;
    const victimCmd = `${rootA}/devices/${victimName}/cmd`;
    const thiefOwn = `tenants/${thiefTenant}/devices/${thiefName}/sentinel`;

    const victim = track(await connectWithCertificate(victimTls, persistent(clientId)));
    expect(await subscribeCodes(victim, victimCmd)).toEqual([1]);
    const thief = track(await connectWithCertificate(thiefTls, persistent(clientId)));
    expect(await subscribeCodes(thief, thiefOwn)).toEqual([1]);
    // The victim still holds its session and its connection; the thief got none of its messages.
    const victimConnected = victim.connected;
    const seenByVictim = await receivedBeforeSentinel(victim, victimCmd, () =>
      command(victimCmd, "online"),
    ).catch((error: Error) => error.message);
    expect({ victimConnected, seenByVictim }).toEqual({ victimConnected: true, seenByVictim: [] });
    expect(await receivedBeforeSentinel(thief, thiefOwn, () => publishCode(thief, thiefOwn, "s"))).toEqual(
      [],
    );
    await thief.endAsync();

    await victim.endAsync();
    await command(victimCmd, "queued while offline");
    const again = track(await connectWithCertificate(thiefTls, persistent(clientId)));
    expect(await subscribeCodes(again, thiefOwn)).toEqual([1]);
    expect(await receivedBeforeSentinel(again, thiefOwn, () => publishCode(again, thiefOwn, "s"))).toEqual(
      [],
    );
    await again.endAsync();

    // Positive twin: the victim's own session kept the message queued for it.
    const back = track(await connectWithCertificate(victimTls, persistent(clientId)));
    const queued = await new Promise((resolve) => back.once("message", (t, p) => resolve(`${t}=${p}`)));
    expect(queued).toBe(`${victimCmd}=queued while offline`);
  });

  it.each([
    ["its grant narrowed while offline", false],
    ["disabled, narrowed and enabled again", true],
  ])("a device resuming its session after %s receives nothing beyond its current grant (I2)", async (_, viaDisable) => {
    const gw = uniqueName("gw");
    const neighbour = uniqueName("nb");
    const wide = { topics: { publish: [`devices/${gw}/#`], subscribe: ["devices/#"] } };
    await Promise.all([applyDevice(tenantA, gw, wide), applyDevice(tenantA, neighbour)]);
    await Promise.all([readyDevice(tenantA, gw), readyDevice(tenantA, neighbour)]);
    const tls = await deviceTls(tenantA, gw);
    const clientId = `gw-${gw}`;
    const session = await connectWithCertificate(tls, persistent(clientId));
    expect(await subscribeCodes(session, `${rootA}/devices/#`)).toEqual([1]);
    // The wide grant really delivered a neighbour's messages before it was narrowed.
    const neighbourCmd = `${rootA}/devices/${neighbour}/cmd`;
    const own = `${rootA}/devices/${gw}/sentinel`;
    expect(
      await receivedBeforeSentinel(session, own, async () => {
        await command(neighbourCmd, "while wide");
        await publishCode(session, own, "s");
      }),
    ).toEqual([`${neighbourCmd}=while wide`]);

    const closed = new Promise((resolve) => session.once("close", () => resolve(true)));
    if (viaDisable) {
      await applyDevice(tenantA, gw, { ...wide, enabled: false });
      await deviceReadyReason(tenantA, gw, "Disabled");
    } else await session.endAsync();
    await closed;
    await applyDevice(tenantA, gw);
    await readyAtCurrentGeneration(tenantA, gw);
    await command(neighbourCmd, "queued while offline");

    const { client: resumed, received } = await connectRecording(tls, persistent(clientId));
    track(resumed);
    // Its own subscription carries the sentinel whether or not the session kept the old one (a kick drops it).
    expect(await subscribeCodes(resumed, own)).toEqual([1]);
    await receivedBeforeSentinel(resumed, own, async () => {
      await command(neighbourCmd, "live");
      await publishCode(resumed, own, "s");
    });
    expect(received.filter((m) => !m.startsWith(`${own}=`))).toEqual([]);
  });

  it("drops a live session that uses a password when the password is rotated (I4)", async () => {
    const legacy = uniqueName("legacy");
    await applyDevice(tenantA, legacy, { authentication: { type: "password" } });
    await readyDevice(tenantA, legacy);
    const before = await secretData(tenantA, `${legacy}-mqtt`);
    const live = track(await connectWithPassword(before.username ?? "", before.password ?? ""));
    expect(await subscribeCodes(live, `${rootA}/devices/${legacy}/#`)).toEqual([1]);
    const closed = new Promise((resolve) => live.once("close", () => resolve(true)));
    const rotated = await kubectl([
      "-n",
      tenantA,
      "annotate",
      "device",
      legacy,
      "iot.tenant-operator.io/rotate-password=session-test",
    ]);
    expect(rotated.ok).toBe(true);
    expect(await closed).toBe(true);
    await expect(connectWithPassword(before.username ?? "", before.password ?? "")).rejects.toThrow(
      /Not authorized|Bad username or password/,
    );
  });

  it("grants a Device's spec.topics under its own tenant's root only (I2)", async () => {
    const reader = uniqueName("reader");
    await applyDevice(tenantA, reader, { topics: { publish: [], subscribe: ["#"] } });
    await readyDevice(tenantA, reader);
    const client = track(await connectWithCertificate(await deviceTls(tenantA, reader)));
    expect(await subscribeCodes(client, `${rootA}/#`)).toEqual([1]);
    for (const filter of [
      "#",
      "+/#",
      "tenants/#",
      `tenants/+/devices/${reader}/#`,
      "+/+/devices/#",
      `${rootB}/#`,
      `$share/g/${rootB}/#`,
    ])
      expect([filter, await subscribeCodes(client, filter)]).toEqual([filter, [NOT_AUTHORIZED]]);
    expect(await publishCode(client, `${rootA}/devices/${reader}/x`, "x")).toBe(NOT_AUTHORIZED);
    const seen = await receivedBeforeSentinel(client, `${rootA}/devices/${reader}/cmd`, () =>
      command(`${rootA}/devices/${reader}/cmd`, "s"),
    );
    expect(seen).toEqual([]);
  });
});

describe("what a deleted tenant leaves on the broker", () => {
  let operator: RunningOperator;
  beforeAll(async () => {
    operator = await startTestOperator();
  });
  afterAll(async () => {
    await operator?.stop();
  });

  it("purges retained messages under a deleted tenant's topic root before another tenant gets it (I2)", async () => {
    const [first, second] = [uniqueName("rx"), uniqueName("ry")];
    const topicRoot = `fleet/${uniqueName("root")}`;
    await applyReadyTenant(first, { broker: { topicRoot } });
    await applyDevice(first, "sensor");
    await readyDevice(first, "sensor");
    const old = await connectWithCertificate(await deviceTls(first, "sensor"));
    expect(await publishCode(old, `${topicRoot}/devices/sensor/state`, "left behind", true)).toBeLessThan(
      128,
    );
    await old.endAsync(true);

    expect((await kubectl(["delete", "tenant", first, "--wait=false"])).ok).toBe(true);
    await eventually(
      `Tenant ${first} gone`,
      async () => {
        const result = await kubectl(["get", "tenant", first]);
        return !result.ok && /NotFound/.test(result.stderr) ? true : undefined;
      },
      120_000,
    );

    await applyReadyTenant(second, { broker: { topicRoot } });
    await applyDevice(second, "sensor");
    await readyDevice(second, "sensor");
    const tls = await deviceTls(second, "sensor");
    const client = await connectWithCertificate(tls);
    try {
      const sentinel = `${topicRoot}/devices/sensor/sentinel`;
      const seen = await receivedBeforeSentinel(client, sentinel, async () => {
        expect(await subscribeCodes(client, `${topicRoot}/devices/sensor/#`)).toEqual([1]);
        await publishCode(client, sentinel, "s");
      });
      expect(seen).toEqual([]);

      // Positive twin: the new tenant's own retained message is kept and delivered.
      expect(await publishCode(client, `${topicRoot}/devices/sensor/state`, "mine", true)).toBeLessThan(128);
      const fresh = await connectWithCertificate(tls);
      const retained = new Promise((resolve) => fresh.once("message", (t, p) => resolve(`${t}=${p}`)));
      expect(await subscribeCodes(fresh, `${topicRoot}/devices/sensor/state`)).toEqual([1]);
      expect(await retained).toBe(`${topicRoot}/devices/sensor/state=mine`);
      await fresh.endAsync(true);
    } finally {
      await client.endAsync(true);
      await kubectl(["delete", "tenant", second, "--wait=false"]);
    }
  });
});
