import mqtt, { type MqttClient } from "mqtt";
import { probeOptions } from "../../src/verify/mqtt-probe.js";

/** MQTT 3.1.1 SUBACK "failure": NATS speaks 3.1.1 only. */
export const REFUSED = 0x80;
/** A refused login: CONNACK 5 (or 4), or, when the refusal races the CONNECT, a close without CONNACK. */
export const LOGIN_REFUSED = /Not authorized|Bad username or password|closed without CONNACK/;

/**
 * A device's MQTT connection (3.1.1 unless asked) over TLS to one broker listener (NATS speaks 3.1.1 only): with a
 * username and password, or with a client certificate. Resolves on CONNACK 0; rejects on a refusal
 * and on a connection the server closes without one (over an account's connection limit).
 * `received`, when given, gets every message from the first one on (a resumed session's queued
 * messages arrive right after the CONNACK).
 */
export function connectNatsMqtt(options: {
  readonly host: string;
  readonly port: number;
  readonly ca: Buffer;
  readonly clientId: string;
  readonly username?: string;
  readonly password?: string;
  /** A client certificate (PEM, with its chain) and its key, for x509 devices. */
  readonly cert?: string | Buffer;
  readonly key?: string | Buffer;
  readonly clean?: boolean;
  readonly received?: string[];
  /** 4 (MQTT 3.1.1, the default) or 5. */
  readonly protocolVersion?: 4 | 5;
}): Promise<MqttClient> {
  const { host, port, received, protocolVersion = 4, ...login } = options;
  const client = mqtt.connect(
    probeOptions(host, port, { ...login, protocolVersion, connectTimeout: 10_000 }),
  );
  if (received) client.on("message", (topic, payload) => received.push(`${topic}=${payload.toString()}`));
  return new Promise((resolve, reject) => {
    const fail = (error: Error) => {
      reject(error);
      client.end(true);
    };
    client.once("connect", () => resolve(client));
    client.once("error", fail);
    client.once("close", () =>
      fail(new Error(`${options.username ?? options.clientId} on port ${port}: closed without CONNACK`)),
    );
  });
}

/** Resolves with the milliseconds until the server closes `client`. */
export function closed(client: MqttClient): Promise<number> {
  const started = performance.now();
  return new Promise((resolve) => client.once("close", () => resolve(performance.now() - started)));
}

/**
 * Connects, retrying: a device's first login of a new account, and a login right after its own
 * session was cut off, may be closed once while the account's R3 streams are created or cleaned
 * up; devices retry.
 */
export async function eventuallyConnects(
  connect: () => Promise<MqttClient>,
  timeoutMs = 30_000,
): Promise<MqttClient> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await connect();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}
