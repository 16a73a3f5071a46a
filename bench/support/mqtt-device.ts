import { readFile } from "node:fs/promises";
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";
import { probeOptions } from "../../src/verify/mqtt-probe.js";
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
  return mqtt.connectAsync(
    probeOptions(endpoint.host, endpoint.mtlsPort, {
      ca: await readFile(endpoint.caFile),
      cert: pem.cert,
      key: pem.key,
      ...options,
    }),
  );
}

export { publishCode, subscribeCodes } from "../../src/verify/mqtt-probe.js";
