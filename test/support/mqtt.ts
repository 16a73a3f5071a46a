import { readFile } from "node:fs/promises";
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";
import { inject } from "vitest";
import { DynsecClient } from "../../src/broker/dynsec-client.js";
import { NOT_AUTHORIZED, probeOptions, publishCode, subscribeCodes } from "../../src/verify/mqtt-probe.js";
import { adminConnection } from "../harness/mosquitto.js";

export { adminConnection, NOT_AUTHORIZED, publishCode, subscribeCodes };

export interface TlsMaterial {
  readonly ca: string | Buffer;
  readonly cert: string | Buffer;
  readonly key: string | Buffer;
}

export async function tlsFromFiles(files: { certFile: string; keyFile: string }): Promise<TlsMaterial> {
  const stack = inject("stack");
  return {
    ca: await readFile(stack.broker.caFile),
    cert: await readFile(files.certFile),
    key: await readFile(files.keyFile),
  };
}

/** MQTT v5 over TLS to one of the stack broker's listeners, without automatic reconnects. */
function connectTls(port: number, options: IClientOptions): Promise<MqttClient> {
  return mqtt.connectAsync(probeOptions(inject("stack").broker.host, port, options));
}

/**
 * A device connection to the mTLS listener that records every message from the first one on: a
 * resumed session's queued messages arrive right after the CONNACK, before a later listener.
 */
export async function connectRecording(
  tls: TlsMaterial,
  options: IClientOptions = {},
): Promise<{ client: MqttClient; received: string[] }> {
  const { broker } = inject("stack");
  const received: string[] = [];
  const client = mqtt.connect(probeOptions(broker.host, broker.mtlsPort, { ...tls, ...options }));
  client.on("message", (topic, payload) => received.push(`${topic}=${payload.toString()}`));
  await new Promise<void>((resolve, reject) => {
    client.once("connect", () => resolve());
    client.once("error", reject);
  });
  return { client, received };
}

/** A device connection to the mTLS listener: the certificate is the identity. */
export function connectWithCertificate(tls: TlsMaterial, options: IClientOptions = {}): Promise<MqttClient> {
  return connectTls(inject("stack").broker.mtlsPort, { ...tls, ...options });
}

/** A device connection to the password listener (TLS server auth only). */
export async function connectWithPassword(username: string, password: string): Promise<MqttClient> {
  const { broker } = inject("stack");
  return connectTls(broker.passwordPort, { ca: await readFile(broker.caFile), username, password });
}

/** Collects every message the client receives, for "never receives" assertions. */
export function collectMessages(
  client: MqttClient,
): Array<{ topic: string; payload: string; retain: boolean }> {
  const received: Array<{ topic: string; payload: string; retain: boolean }> = [];
  client.on("message", (topic, payload, packet) =>
    received.push({ topic, payload: payload.toString(), retain: packet.retain }),
  );
  return received;
}

/** True once the broker refuses this certificate in the TLS handshake because it is revoked. */
export function refusedAsRevoked(tls: TlsMaterial): Promise<true | undefined> {
  return connectWithCertificate(tls).then(
    async (client) => {
      await client.endAsync(true);
      return undefined;
    },
    (error: Error) => (/revoked/.test(error.message) ? true : undefined),
  );
}

/**
 * Every message `client` receives until one arrives on `sentinelTopic`, which `sendSentinel` publishes
 * after the messages under test: the broker routes in order, so what has not arrived before the
 * sentinel was not delivered. Absence proven by order, not by a timeout.
 */
export async function receivedBeforeSentinel(
  client: MqttClient,
  sentinelTopic: string,
  sendSentinel: () => Promise<unknown>,
  timeoutMs = 10_000,
): Promise<string[]> {
  const received: string[] = [];
  let onMessage: (topic: string, payload: Buffer) => void = () => undefined;
  const sentinel = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no sentinel on ${sentinelTopic} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    onMessage = (topic, payload) => {
      if (topic === sentinelTopic) {
        clearTimeout(timer);
        resolve();
      } else received.push(`${topic}=${payload.toString()}`);
    };
    client.on("message", onMessage);
  });
  try {
    await sendSentinel();
    await sentinel;
  } finally {
    client.off("message", onMessage);
  }
  return received;
}

/**
 * Whether a cut-off device gets nothing: the broker refuses the connection (a TLS alert such as a revoked
 * certificate or a CA it no longer trusts; an unknown password client) or accepts it and answers
 * SUBSCRIBE and PUBLISH in `subtree` with 135.
 */
export async function grantsNothing(connect: () => Promise<MqttClient>, subtree: string): Promise<boolean> {
  // The adapter ends a removed device's session, which can drop a reconnect made just before: ask again.
  for (let attempt = 1; ; attempt++) {
    let client: MqttClient;
    try {
      client = await connect();
    } catch (error) {
      if (/revoked|alert|Not authorized|Bad User Name or Password/i.test((error as Error).message))
        return true;
      throw error;
    }
    try {
      const subscribed = await subscribeCodes(client, `${subtree}/#`);
      const published = await publishCode(client, `${subtree}/telemetry`, "x");
      return subscribed[0] === NOT_AUTHORIZED && published === NOT_AUTHORIZED;
    } catch (error) {
      if (attempt >= 5 || client.connected) throw error;
    } finally {
      await client.endAsync(true);
    }
  }
}

/** The operator's dynamic-security entries of one tenant (role and client names `iot:<tenant>:<device>`). */
export async function brokerEntriesOf(tenant: string): Promise<{ roles: string[]; clients: string[] }> {
  const admin = await DynsecClient.connect(adminConnection(inject("stack").broker));
  try {
    const prefix = `iot:${tenant}:`;
    const roles = (await admin.run({ command: "listRoles", verbose: true })) as {
      roles: Array<{ rolename: string }>;
    };
    const clients = (await admin.run({ command: "listClients", verbose: true })) as {
      clients: Array<{ textname?: string }>;
    };
    return {
      roles: roles.roles.flatMap((r) => (r.rolename.startsWith(prefix) ? [r.rolename] : [])).sort(),
      clients: clients.clients.flatMap((c) => (c.textname?.startsWith(prefix) ? [c.textname] : [])).sort(),
    };
  } finally {
    await admin.close();
  }
}
