import { readFile } from "node:fs/promises";
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";
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
  return connectWithPem(
    endpoint,
    { cert: await readFile(pair.certFile), key: await readFile(pair.keyFile) },
    options,
  );
}

/** The same with the certificate and key in memory (e.g. read from a device's mirrored Secret). */
export async function connectWithPem(
  endpoint: DeviceEndpoint,
  pem: { readonly cert: string | Buffer; readonly key: string | Buffer },
  options: IClientOptions = {},
): Promise<MqttClient> {
  return mqtt.connectAsync({
    protocol: "mqtts",
    host: endpoint.host,
    port: endpoint.mtlsPort,
    protocolVersion: 5,
    ca: await readFile(endpoint.caFile),
    cert: pem.cert,
    key: pem.key,
    reconnectPeriod: 0,
    connectTimeout: 5_000,
    ...options,
  });
}

export { publishCode, subscribeCodes } from "../../src/verify/mqtt-probe.js";
