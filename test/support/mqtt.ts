import { readFile } from "node:fs/promises";
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";
import { inject } from "vitest";
import { DynsecClient, type DynsecConnection } from "../../src/broker/dynsec-client.js";
import { NOT_AUTHORIZED, publishCode, subscribeCodes } from "../../src/verify/mqtt-probe.js";

export { NOT_AUTHORIZED, publishCode, subscribeCodes };

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
  const { broker } = inject("stack");
  return mqtt.connectAsync({
    protocol: "mqtts",
    host: broker.host,
    port,
    protocolVersion: 5,
    reconnectPeriod: 0,
    connectTimeout: 5_000,
    ...options,
  });
}

/** A device connection to the mTLS listener: the certificate is the identity. */
export function connectWithCertificate(tls: TlsMaterial): Promise<MqttClient> {
  return connectTls(inject("stack").broker.mtlsPort, tls);
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

/** The dynamic-security admin connection of a broker the harness started. */
export function adminConnection(broker: {
  host: string;
  adminPort: number;
  adminUsername: string;
  adminPassword: string;
}): DynsecConnection {
  return {
    host: broker.host,
    port: broker.adminPort,
    username: broker.adminUsername,
    password: broker.adminPassword,
  };
}

/**
 * Whether a cut-off device gets nothing: the broker refuses the handshake (revoked certificate, unknown
 * password client) or accepts the connection and answers SUBSCRIBE and PUBLISH in `subtree` with 135.
 */
export async function grantsNothing(connect: () => Promise<MqttClient>, subtree: string): Promise<boolean> {
  let client: MqttClient;
  try {
    client = await connect();
  } catch (error) {
    if (/revoked|Not authorized|Bad User Name or Password/i.test((error as Error).message)) return true;
    throw error;
  }
  try {
    const subscribed = await subscribeCodes(client, `${subtree}/#`);
    const published = await publishCode(client, `${subtree}/telemetry`, "x");
    return subscribed[0] === NOT_AUTHORIZED && published === NOT_AUTHORIZED;
  } finally {
    await client.endAsync(true);
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
