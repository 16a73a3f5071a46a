import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import mqtt, { type MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { connectWithCertificate, publishCode, subscribeCodes } from "../../bench/support/mqtt-device.js";
import { adminConnection, type Broker, startMosquitto } from "../../test/harness/mosquitto.js";
import { issueCertificate, type KeyPair } from "../../test/harness/pki.js";
import type { BrokerDevice } from "./adapter.js";
import { adminClientOptions, DynsecClient } from "./dynsec-client.js";
import { MosquittoDynsecAdapter } from "./mosquitto-dynsec.js";
import { deviceSubject, subjectUsername } from "./subject.js";

const stack = inject("stack");
const run = Date.now().toString(36);
/** The device's MQTT 5 session expiry: long enough for the reload to land first, short enough to wait for. */
const SESSION_EXPIRY_SECONDS = 3;

function device(tenant: string, name: string): BrokerDevice {
  return {
    tenant,
    device: name,
    topicRoot: `tenants/${tenant}`,
    credentials: { type: "x509", username: subjectUsername(deviceSubject(tenant, name)) },
    enabled: true,
    suspended: false,
  };
}

/** Resolves once process `pid` is gone. */
function pidGone(pid: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setInterval(() => {
      try {
        process.kill(pid, 0);
      } catch {
        clearInterval(timer);
        resolve();
      }
    }, 200);
  });
}

/** The first line the broker logs (log_dest topic) that contains `text`. */
function logged(watcher: MqttClient, text: string): Promise<string> {
  return new Promise((resolve) => {
    const onMessage = (_topic: string, payload: Buffer) => {
      const line = payload.toString();
      if (!line.includes(text)) return;
      watcher.off("message", onMessage);
      resolve(line);
    };
    watcher.on("message", onMessage);
  });
}

// Mosquitto 2.0.x re-checks every session on a reload (SIGHUP, which the operator sends after each CRL
// rewrite) and "disconnects" an offline one from the mTLS listener again: its context goes onto the
// session-expiry list a second time, and once the session expires that entry points at freed memory,
// which the broker reads when the next session goes offline (use-after-free; a crash for every tenant
// once the memory is reused, I6). Fixed by test/tools/mosquitto/session-expiry-kick.patch.
describe("Mosquitto with offline persistent sessions across a reload", () => {
  let dir: string;
  let broker: Broker;
  let adapter: MosquittoDynsecAdapter;
  let watcher: MqttClient;
  const tenant = `x${run}`;
  const bystanderTenant = `y${run}`;

  const pair = (t: string, name: string): Promise<KeyPair> =>
    issueCertificate(dir, broker.deviceCA, `${t}-${name}`, {
      subject: `/O=${t}/CN=${name}`,
      usages: ["clientAuth"],
    });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "broker-session-expiry-"));
    broker = await startMosquitto({
      stateDir: dir,
      deviceRootCA: stack.deviceRootCA,
      deviceCA: stack.broker.deviceCA,
    });
    adapter = new MosquittoDynsecAdapter({ connection: adminConnection(broker) });
    watcher = await mqtt.connectAsync(await adminClientOptions(adminConnection(broker)));
    await watcher.subscribeAsync("$SYS/broker/log/N", { qos: 0 });
  });
  afterAll(async () => {
    await watcher?.endAsync(true);
    await adapter?.close();
    await broker?.stop();
  });

  /** Connects with an MQTT 5 session that outlives the connection by `seconds`, and disconnects. */
  async function leaveSession(spec: BrokerDevice, identity: KeyPair, seconds: number): Promise<void> {
    const username = spec.credentials.username;
    const client = await connectWithCertificate(broker, identity, {
      clean: false,
      clientId: username, // the listener makes the client id the username whatever the device sends
      properties: { sessionExpiryInterval: seconds },
    });
    expect(await subscribeCodes(client, `${spec.topicRoot}/devices/${spec.device}/cmd`)).toEqual([1]);
    const gone = logged(watcher, `Client ${username} disconnected`);
    await client.endAsync();
    await gone;
  }

  /** Whether the broker expired `username`'s session, died first, or did neither in time. */
  function expiryOf(username: string, pid: number): Promise<string> {
    return Promise.race([
      logged(watcher, `Expiring client ${username} due to timeout`).then(() => "expired"),
      pidGone(pid).then(() => "broker exited"),
      new Promise<string>((resolve) => setTimeout(() => resolve("not expired within 30 s"), 30_000)),
    ]);
  }

  it("expires a session that was offline during a reload, and every later one, and keeps serving every tenant", async () => {
    const sensor = device(tenant, "sensor");
    const witness = device(bystanderTenant, "witness");
    await Promise.all(
      [sensor, witness, device(bystanderTenant, "sensor")].map((d) => adapter.applyDevice(d)),
    );
    const sensorPair = await pair(tenant, "sensor");
    const pid = Number(await readFile(broker.pidFile, "utf8"));

    await leaveSession(sensor, sensorPair, SESSION_EXPIRY_SECONDS);
    // What the operator does after each CRL rewrite; the reload disconnects the offline session again.
    const reDisconnected = logged(watcher, `Client ${sensor.credentials.username} disconnected`);
    process.kill(pid, "SIGHUP");
    await reDisconnected;
    expect(await expiryOf(sensor.credentials.username, pid)).toBe("expired");
    // Connected right away, another tenant's device may get the expired session's memory.
    const bystander = await connectWithCertificate(broker, await pair(bystanderTenant, "sensor"));
    // A session that goes offline after that one is put on the list, and expires.
    await leaveSession(witness, await pair(bystanderTenant, "witness"), 1);
    expect(await expiryOf(witness.credentials.username, pid)).toBe("expired");

    // Still serving: an admin command answers, the other tenant's device round-trips on its connection.
    const admin = await DynsecClient.connect(adminConnection(broker));
    try {
      expect(await admin.run({ command: "getClient", username: sensor.credentials.username })).toMatchObject({
        client: { username: sensor.credentials.username },
      });
    } finally {
      await admin.close();
    }
    const echo = `tenants/${bystanderTenant}/devices/sensor/echo`;
    expect(await subscribeCodes(bystander, echo)).toEqual([1]);
    const received = new Promise((resolve) => bystander.once("message", (t, p) => resolve(`${t}=${p}`)));
    expect(await publishCode(bystander, echo, "still here")).toBeLessThan(128);
    expect(await received).toBe(`${echo}=still here`);
    await bystander.endAsync();

    // Positive twin: the device itself is served again.
    const again = await connectWithCertificate(broker, sensorPair);
    expect(await subscribeCodes(again, `tenants/${tenant}/devices/sensor/cmd`)).toEqual([1]);
    await again.endAsync();
  });
});
