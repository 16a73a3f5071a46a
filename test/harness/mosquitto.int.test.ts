import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import mqtt, { ErrorWithSubackPacket, type MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { DynsecClient } from "../../src/broker/dynsec-client.js";
import { createCA, issueCertificate, type KeyPair } from "./pki.js";

const stack = inject("stack");
const REFUSED = 135; // MQTT v5 SUBACK reason "Not authorized"

async function connectDevice(pair: KeyPair): Promise<MqttClient> {
  return mqtt.connectAsync({
    protocol: "mqtts",
    host: stack.broker.host,
    port: stack.broker.mtlsPort,
    protocolVersion: 5,
    ca: await readFile(stack.broker.caFile),
    cert: await readFile(pair.certFile),
    key: await readFile(pair.keyFile),
    reconnectPeriod: 0,
    connectTimeout: 5_000,
  });
}

/** SUBACK reason codes; mqtt.js rejects a refused subscription, so read the codes from its error too. */
async function grantedCodes(client: MqttClient, filter: string): Promise<number[]> {
  try {
    const granted = await client.subscribeAsync(filter, { qos: 1 });
    return granted.map((g) => g.qos);
  } catch (error) {
    if (error instanceof ErrorWithSubackPacket) return error.packet.granted.map(Number);
    throw error;
  }
}

describe("the real Mosquitto with dynamic security and mTLS", () => {
  let dynsec: DynsecClient;
  let dir: string;
  const tenant = `t${Date.now().toString(36)}`;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "mqtt-smoke-"));
    dynsec = await DynsecClient.connect({
      host: stack.broker.host,
      port: stack.broker.adminPort,
      username: stack.broker.adminUsername,
      password: stack.broker.adminPassword,
    });
  });
  afterAll(async () => {
    await dynsec.close();
  });

  it("enforces a dynsec role on a client identified by its certificate subject", async () => {
    const device = await issueCertificate(dir, stack.deviceRootCA, "dev-1", {
      subject: `/O=${tenant}/CN=dev-1`,
      usages: ["clientAuth"],
    });
    const own = `smoke/${tenant}/dev-1`;
    await dynsec.run({
      command: "createRole",
      rolename: `${tenant}-dev-1`,
      acls: [
        { acltype: "publishClientSend", topic: `${own}/#`, allow: true },
        { acltype: "subscribePattern", topic: `${own}/#`, allow: true },
      ],
    });
    await dynsec.run({
      command: "createClient",
      username: `CN=dev-1,O=${tenant}`,
      roles: [{ rolename: `${tenant}-dev-1` }],
    });

    const client = await connectDevice(device);
    try {
      expect(await grantedCodes(client, `${own}/#`)).toEqual([1]);
      const received = new Promise<string>((resolve) =>
        client.once("message", (topic, payload) => resolve(`${topic}=${payload.toString()}`)),
      );
      await client.publishAsync(`${own}/telemetry`, "21.5", { qos: 1 });
      expect(await received).toBe(`${own}/telemetry=21.5`);

      expect(await grantedCodes(client, `smoke/${tenant}/dev-2/#`)).toEqual([REFUSED]);
      expect(await grantedCodes(client, "#")).toEqual([REFUSED]);
    } finally {
      await client.endAsync();
    }
  });

  it("refuses everything to a certificate client with no dynsec entry", async () => {
    const stranger = await issueCertificate(dir, stack.deviceRootCA, "stranger", {
      subject: `/O=${tenant}/CN=stranger`,
      usages: ["clientAuth"],
    });
    const client = await connectDevice(stranger);
    try {
      expect(await grantedCodes(client, `smoke/${tenant}/stranger/#`)).toEqual([REFUSED]);
    } finally {
      await client.endAsync();
    }
  });

  it("refuses a TLS handshake with a certificate from an unknown CA", async () => {
    const rogueCA = await createCA(dir, "rogue-ca", "rogue");
    const rogue = await issueCertificate(dir, rogueCA, "rogue-device", {
      subject: `/O=${tenant}/CN=dev-1`,
      usages: ["clientAuth"],
    });
    await expect(connectDevice(rogue)).rejects.toThrow();
  });

  it("answers dynsec errors as errors", async () => {
    await expect(dynsec.run({ command: "deleteRole", rolename: `${tenant}-missing` })).rejects.toThrow(
      /deleteRole/,
    );
  });
});
