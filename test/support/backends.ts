import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { MqttClient } from "mqtt";
import { inject } from "vitest";
import { OPERATOR_NAMESPACE } from "../../src/api/group.js";
import type { OperatorConfig } from "../../src/config.js";
import type { RunningOperator } from "../../src/operator.js";
import { startMosquitto } from "../harness/mosquitto.js";
import { type NatsCluster, startNatsCluster } from "../harness/nats.js";
import { mosquittoVariables, NATS_KEYS_SECRET, natsKeysSecret } from "../harness/stack.js";
import { kubectl } from "./kubectl.js";
import type { TlsMaterial } from "./mqtt.js";
import { connectNatsMqtt, LOGIN_REFUSED } from "./nats-mqtt.js";
import { applyManifest, stackOperatorConfig, startTestOperator } from "./operator.js";

/**
 * How a device logs in: the password the operator generated, or its certificate. `clientId` is the
 * identity's own, `<tenant>/<device>`: NATS requires it (it cannot rewrite client ids); Mosquitto
 * replaces whatever a device sends with its username.
 */
export type DeviceLogin =
  | {
      readonly type: "password";
      readonly clientId: string;
      readonly username: string;
      readonly password: string;
    }
  | {
      readonly type: "x509";
      readonly clientId: string;
      readonly username: string;
      readonly tls: TlsMaterial;
    };

export interface ConnectOptions {
  /** Default: the login's own client id. */
  readonly clientId?: string;
  /** MQTT clean session; false keeps the session (subscriptions, queued messages) across connections. */
  readonly clean?: boolean;
  /** Which broker node (NATS has three); the default is the first. */
  readonly node?: number;
  /** Filled with every message from the first one on (a resumed session's arrive right after CONNACK). */
  readonly received?: string[];
  /** MQTT 5 instead of 3.1.1; only where `capabilities.mqtt5`. */
  readonly mqtt5?: boolean;
}

/** What a backend can do; the suite skips a case, with the reason, when its backend lacks one. */
export interface BackendCapabilities {
  /** MQTT 5 (reason codes, shared subscriptions). */
  readonly mqtt5: boolean;
}

/** One broker backend with the real operator in front of it: what the shared isolation suite attacks. */
export interface Backend {
  readonly nodes: number;
  /**
   * How the broker refuses a revoked certificate once the tenant's CRL lists it: Mosquitto fails the
   * TLS handshake (OpenSSL's CRL check); NATS's auth callout refuses the login (CONNACK 5).
   */
  readonly revokedCertificateRefusal: RegExp;
  /** A device's MQTT connection over TLS (3.1.1 unless `mqtt5`); resolves on CONNACK 0, rejects on a refusal. */
  connect(login: DeviceLogin, options?: ConnectOptions): Promise<MqttClient>;
  stop(): Promise<void>;
}

export interface BackendFixture {
  readonly kind: OperatorConfig["BROKER_KIND"];
  /** Known before the start: the suite decides at collection which cases to skip. */
  readonly capabilities: BackendCapabilities;
  /** Starts the broker (or uses the stack's) and the operator configured for it. */
  start(): Promise<Backend>;
}

function mqtt311(
  host: string,
  port: number,
  ca: Buffer,
  login: DeviceLogin,
  options: ConnectOptions,
): Promise<MqttClient> {
  return connectNatsMqtt({
    host,
    port,
    ca,
    clientId: options.clientId ?? login.clientId,
    clean: options.clean ?? true,
    protocolVersion: options.mqtt5 ? 5 : 4,
    ...(options.received ? { received: options.received } : {}),
    ...(login.type === "password"
      ? { username: login.username, password: login.password }
      : { cert: login.tls.cert, key: login.tls.key }),
  });
}

/**
 * A Mosquitto of this file's own (the password listener for password devices, the mTLS listener for
 * certificates), and the operator in front of it: a broker this suite makes fail stays its own.
 */
const mosquitto: BackendFixture = {
  kind: "mosquitto",
  capabilities: { mqtt5: true },
  async start() {
    const stack = inject("stack");
    const broker = await startMosquitto({
      stateDir: join(stack.stateDir, `mosquitto-${Date.now().toString(36)}`),
      deviceRootCA: stack.deviceRootCA,
    });
    let operator: RunningOperator | undefined;
    const stop = async () => {
      await operator?.stop();
      await broker.stop();
    };
    try {
      const ca = await readFile(broker.caFile);
      operator = await startTestOperator(stackOperatorConfig(mosquittoVariables(broker)));
      return {
        nodes: 1,
        revokedCertificateRefusal: /revoked/,
        connect: (login, options = {}) =>
          mqtt311(
            broker.host,
            login.type === "password" ? broker.passwordPort : broker.mtlsPort,
            ca,
            login,
            options,
          ),
        stop,
      };
    } catch (error) {
      await stop();
      throw error;
    }
  },
};

/** A 3-node NATS cluster of this file's own, and the operator with BROKER_KIND=nats in front of it. */
const nats: BackendFixture = {
  kind: "nats",
  // nats-server speaks MQTT 3.1.1 only.
  capabilities: { mqtt5: false },
  async start() {
    const stack = inject("stack");
    const cluster: NatsCluster = await startNatsCluster({
      stateDir: join(stack.stateDir, `nats-${Date.now().toString(36)}`),
      deviceRootCA: stack.deviceRootCA,
    });
    let operator: RunningOperator | undefined;
    const stop = async () => {
      await operator?.stop();
      await cluster.stop();
      await kubectl(["-n", OPERATOR_NAMESPACE, "delete", "secret", NATS_KEYS_SECRET, "--ignore-not-found"]);
    };
    try {
      const ca = await readFile(cluster.caFile);
      await applyManifest(natsKeysSecret(cluster));
      operator = await startTestOperator(natsOperatorConfig(cluster));
      return {
        nodes: cluster.nodes.length,
        revokedCertificateRefusal: LOGIN_REFUSED,
        connect: (login, options = {}) => {
          const node = cluster.nodes[(options.node ?? 0) % cluster.nodes.length];
          return mqtt311(cluster.host, node?.mqttPort ?? 0, ca, login, options);
        },
        stop,
      };
    } catch (error) {
      await stop();
      throw error;
    }
  },
};

/** The operator's configuration for a NATS cluster of a test's own. */
export function natsOperatorConfig(cluster: NatsCluster): OperatorConfig {
  const port = String(cluster.nodes[0]?.mqttPort);
  // The stack's Mosquitto CRL file and PID are not this broker's: the operator must not reload it.
  const {
    BROKER_CRL_FILE: _crlFile,
    BROKER_PID_FILE: _pidFile,
    BROKER_CRL_INCLUDE_FILE: _crlInclude,
    ...config
  } = stackOperatorConfig({
    BROKER_KIND: "nats",
    BROKER_HOST: cluster.host,
    BROKER_MTLS_PORT: port,
    BROKER_PASSWORD_PORT: port,
    BROKER_CA_FILE: cluster.caFile,
    NATS_URLS: cluster.urls.join(","),
    NATS_CLUSTER_SIZE: String(cluster.nodes.length),
    NATS_KEYS_SECRET,
  });
  return config;
}

/** Every backend the operator supports: the shared isolation suite runs against each. */
export const BACKENDS: readonly BackendFixture[] = [mosquitto, nats];
