import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { DynsecClient } from "../../src/broker/dynsec-client.js";
import {
  adminConnection,
  connectWithCertificate,
  NOT_AUTHORIZED,
  subscribeCodes,
  tlsFromFiles,
} from "../support/mqtt.js";
import { createCA, issueCertificate, type KeyPair } from "./pki.js";

const stack = inject("stack");
const connectDevice = async (pair: KeyPair) => connectWithCertificate(await tlsFromFiles(pair));

describe("the real Mosquitto with dynamic security and mTLS", () => {
  let dynsec: DynsecClient;
  let dir: string;
  const tenant = `t${Date.now().toString(36)}`;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "mqtt-smoke-"));
    dynsec = await DynsecClient.connect(adminConnection(stack.broker));
  });
  afterAll(async () => {
    await dynsec.close();
  });

  it("enforces a dynsec role on a client identified by its certificate subject", async () => {
    const device = await issueCertificate(dir, stack.broker.deviceCA, "dev-1", {
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
        // Delivery is denied by default: a subscriber receives only what a role lets it receive.
        { acltype: "publishClientReceive", topic: `${own}/#`, allow: true },
      ],
    });
    await dynsec.run({
      command: "createClient",
      username: `CN=dev-1,O=${tenant}`,
      roles: [{ rolename: `${tenant}-dev-1` }],
    });

    const client = await connectDevice(device);
    try {
      expect(await subscribeCodes(client, `${own}/#`)).toEqual([1]);
      const received = new Promise<string>((resolve) =>
        client.once("message", (topic, payload) => resolve(`${topic}=${payload.toString()}`)),
      );
      await client.publishAsync(`${own}/telemetry`, "21.5", { qos: 1 });
      expect(await received).toBe(`${own}/telemetry=21.5`);

      expect(await subscribeCodes(client, `smoke/${tenant}/dev-2/#`)).toEqual([NOT_AUTHORIZED]);
      expect(await subscribeCodes(client, "#")).toEqual([NOT_AUTHORIZED]);
    } finally {
      await client.endAsync();
      // The broker is shared with the rest of the run: leave no client that verify would rightly call an orphan.
      await dynsec.run({ command: "deleteClient", username: `CN=dev-1,O=${tenant}` });
      await dynsec.run({ command: "deleteRole", rolename: `${tenant}-dev-1` });
    }
  });

  it("refuses everything to a certificate client with no dynsec entry", async () => {
    const stranger = await issueCertificate(dir, stack.broker.deviceCA, "stranger", {
      subject: `/O=${tenant}/CN=stranger`,
      usages: ["clientAuth"],
    });
    const client = await connectDevice(stranger);
    try {
      expect(await subscribeCodes(client, `smoke/${tenant}/stranger/#`)).toEqual([NOT_AUTHORIZED]);
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
