import { readFile } from "node:fs/promises";
import mqtt, { ErrorWithReasonCode, ErrorWithSubackPacket, type MqttClient } from "mqtt";
import { inject } from "vitest";

/** MQTT v5 SUBACK/PUBACK reason "Not authorized". */
export const NOT_AUTHORIZED = 135;

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

/** A device connection to the stack broker's mTLS listener (MQTT v5, no automatic reconnect). */
export function connectWithCertificate(tls: TlsMaterial, clientId?: string): Promise<MqttClient> {
  const { broker } = inject("stack");
  return mqtt.connectAsync({
    protocol: "mqtts",
    host: broker.host,
    port: broker.mtlsPort,
    protocolVersion: 5,
    ...tls,
    ...(clientId ? { clientId } : {}),
    reconnectPeriod: 0,
    connectTimeout: 5_000,
  });
}

/** A device connection to the stack broker's password listener (TLS server auth only). */
export async function connectWithPassword(username: string, password: string): Promise<MqttClient> {
  const { broker } = inject("stack");
  return mqtt.connectAsync({
    protocol: "mqtts",
    host: broker.host,
    port: broker.passwordPort,
    protocolVersion: 5,
    ca: await readFile(broker.caFile),
    username,
    password,
    reconnectPeriod: 0,
    connectTimeout: 5_000,
  });
}

/** SUBACK reason codes; mqtt.js rejects a refused subscription, so read the codes from its error too. */
export async function subscribeCodes(client: MqttClient, filter: string): Promise<number[]> {
  try {
    const granted = await client.subscribeAsync(filter, { qos: 1 });
    return granted.map((g) => g.qos);
  } catch (error) {
    if (error instanceof ErrorWithSubackPacket) return error.packet.granted.map(Number);
    throw error;
  }
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

/** Publishes at QoS 1 and returns the PUBACK reason code (0 or 16 = accepted, 135 = not authorized). */
export async function publishCode(
  client: MqttClient,
  topic: string,
  payload: string,
  retain = false,
): Promise<number> {
  try {
    const packet = (await client.publishAsync(topic, payload, { qos: 1, retain })) as
      | { reasonCode?: number }
      | undefined;
    return packet?.reasonCode ?? 0;
  } catch (error) {
    // mqtt.js rejects a PUBACK that carries a failure reason; the code is on the error.
    if (error instanceof ErrorWithReasonCode) return error.code;
    throw error;
  }
}
