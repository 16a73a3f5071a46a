import { ErrorWithReasonCode, ErrorWithSubackPacket, type IClientOptions, type MqttClient } from "mqtt";

/**
 * A one-shot MQTT v5 connection over TLS to a device listener: no automatic reconnect, so a probe
 * sees exactly how the broker answers this one connection.
 */
export function probeOptions(host: string, port: number, extra: IClientOptions = {}): IClientOptions {
  return {
    protocol: "mqtts",
    host,
    port,
    protocolVersion: 5,
    reconnectPeriod: 0,
    connectTimeout: 5_000,
    ...extra,
  };
}

/** MQTT v5 SUBACK/PUBACK reason "Not authorized". */
export const NOT_AUTHORIZED = 135;

/** SUBACK reason codes of one SUBSCRIBE; mqtt.js rejects a refused subscription, so the codes come from its error too. */
export async function subscribeCodes(client: MqttClient, filter: string): Promise<number[]> {
  try {
    const granted = await client.subscribeAsync(filter, { qos: 1 });
    return granted.map((g) => g.qos);
  } catch (error) {
    if (error instanceof ErrorWithSubackPacket) return error.packet.granted.map(Number);
    throw error;
  }
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
