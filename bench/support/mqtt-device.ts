import { readFile } from "node:fs/promises";
import mqtt, { ErrorWithSubackPacket, type IClientOptions, type MqttClient } from "mqtt";
import type { KeyPair } from "../../test/harness/pki.js";

export interface DeviceEndpoint {
  readonly host: string;
  readonly mtlsPort: number;
  readonly caFile: string;
}

/** An ordinary MQTT v5 client that authenticates with its certificate and does not reconnect by itself. */
export async function connectWithCertificate(
  endpoint: DeviceEndpoint,
  pair: KeyPair,
  options: IClientOptions = {},
): Promise<MqttClient> {
  return mqtt.connectAsync({
    protocol: "mqtts",
    host: endpoint.host,
    port: endpoint.mtlsPort,
    protocolVersion: 5,
    ca: await readFile(endpoint.caFile),
    cert: await readFile(pair.certFile),
    key: await readFile(pair.keyFile),
    reconnectPeriod: 0,
    connectTimeout: 5_000,
    ...options,
  });
}

/** SUBACK reason codes; mqtt.js rejects a refused subscription, so they are read from its error too. */
export async function subackCodes(client: MqttClient, filter: string): Promise<number[]> {
  try {
    const granted = await client.subscribeAsync(filter, { qos: 1 });
    return granted.map((g) => g.qos);
  } catch (error) {
    if (error instanceof ErrorWithSubackPacket) return error.packet.granted.map(Number);
    throw error;
  }
}

/** PUBACK reason code of a QoS 1 publish (0 success, 16 no subscribers, 135 not authorized). */
export async function pubackCode(
  client: MqttClient,
  topic: string,
  payload: string,
  retain = false,
): Promise<number> {
  try {
    const packet = await client.publishAsync(topic, payload, { qos: 1, retain });
    return (packet as { reasonCode?: number } | undefined)?.reasonCode ?? 0;
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (typeof code === "number") return code;
    throw error;
  }
}
