import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { OPERATOR_NAMESPACE } from "../../src/api/group.js";
import { type ControlPlane, startControlPlane } from "./control-plane.js";
import { type Broker, startMosquitto } from "./mosquitto.js";
import { type NatsCluster, startNatsCluster } from "./nats.js";
import { startNode, type TestNode } from "./node.js";
import { createCA, type KeyPair } from "./pki.js";

const run = promisify(execFile);
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/** The Secret in the operator's namespace holding the device root CA that the broker trusts. */
export const ROOT_CA_SECRET = "iot-root-ca";

/** Everything a test or a tool needs to reach the stack; plain data, so vitest can pass it to workers. */
export interface StackEnv {
  readonly kubeconfig: string;
  readonly server: string;
  readonly etcdUrl: string;
  /** kube-apiserver's audit log, written with src/audit/kube-apiserver-audit-policy.yaml. */
  readonly apiServerAuditLog: string;
  readonly binDir: string;
  readonly stateDir: string;
  readonly rootCaSecret: string;
  readonly deviceRootCA: KeyPair;
  readonly broker: Omit<Broker, "stop">;
  /** Present when the stack runs a node (`--with-node`): its name and the images imported into it. */
  readonly node?: { readonly name: string; readonly images: Readonly<Record<string, string>> };
}

export interface StackOptions {
  /** Adds a real node: kubelet, containerd, CNI, kube-proxy, kube-router, kube-scheduler. */
  readonly withNode?: boolean;
  /** Extra cert-manager flags (CERT_MANAGER_FLEET_ARGS when absent). */
  readonly certManagerArgs?: readonly string[];
}

export interface Stack {
  readonly env: StackEnv;
  readonly controlPlane: ControlPlane;
  stop(): Promise<void>;
}

/** Runs a cached build script of test/tools; returns the directory it prints. */
export async function buildWith(script: string): Promise<string> {
  const { stdout } = await run("bash", [join(repoRoot, "test/tools", script)], { maxBuffer: 16 << 20 });
  return stdout.trim();
}

/** Builds (or finds cached) the control-plane binaries; returns their directory. */
export function buildTools(): Promise<string> {
  return buildWith("build.sh");
}

export async function startStack(stateDir: string, options: StackOptions = {}): Promise<Stack> {
  const { withNode = false, certManagerArgs } = options;
  // Installs the node's Debian packages on a fresh machine, then every build below is a cache hit.
  if (withNode)
    await run("bash", [join(repoRoot, "scripts/bootstrap.sh"), "--with-node"], { maxBuffer: 16 << 20 });
  const [binDir, nodeBinDir, imagesDir] = await Promise.all([
    buildTools(),
    withNode ? buildWith("build-node.sh") : undefined,
    withNode ? buildWith("build-images.sh") : undefined,
  ]);
  const deviceRootCA = await createCA(stateDir, "device-root-ca", "iot-tenant-operator device root CA");
  const [controlPlane, broker] = await Promise.allSettled([
    startControlPlane({ binDir, stateDir, withNode, ...(certManagerArgs ? { certManagerArgs } : {}) }),
    startMosquitto({ stateDir, deviceRootCA }),
  ]);
  if (controlPlane.status === "rejected" || broker.status === "rejected") {
    if (controlPlane.status === "fulfilled") await controlPlane.value.stop();
    if (broker.status === "fulfilled") await broker.value.stop();
    throw controlPlane.status === "rejected" ? controlPlane.reason : (broker as PromiseRejectedResult).reason;
  }
  let node: TestNode | undefined;
  const stop = async () => {
    // The node first: it deletes its Pods through the control plane.
    await node?.stop();
    await Promise.all([controlPlane.value.stop(), broker.value.stop()]);
  };
  try {
    await installRootCA(controlPlane.value, deviceRootCA);
    if (nodeBinDir && imagesDir) {
      node = await startNode({ nodeBinDir, imagesDir, stateDir, controlPlane: controlPlane.value });
    }
  } catch (error) {
    await stop();
    throw error;
  }
  const { stop: _brokerStop, ...brokerEnv } = broker.value;
  return {
    env: {
      kubeconfig: controlPlane.value.kubeconfig,
      server: controlPlane.value.server,
      etcdUrl: controlPlane.value.etcdUrl,
      apiServerAuditLog: controlPlane.value.auditLogFile,
      binDir,
      stateDir,
      rootCaSecret: ROOT_CA_SECRET,
      deviceRootCA,
      broker: brokerEnv,
      ...(node ? { node: { name: node.name, images: node.images } } : {}),
    },
    controlPlane: controlPlane.value,
    stop,
  };
}

/** The stack with a 3-node NATS cluster instead of Mosquitto (`npm run stack:up -- --broker nats`). */
export interface NatsStack {
  readonly variables: Record<string, string>;
  readonly binDir: string;
  readonly cluster: NatsCluster;
  stop(): Promise<void>;
}

export async function startNatsStack(stateDir: string): Promise<NatsStack> {
  const binDir = await buildTools();
  const deviceRootCA = await createCA(stateDir, "device-root-ca", "iot-tenant-operator device root CA");
  const [controlPlane, cluster] = await Promise.allSettled([
    startControlPlane({ binDir, stateDir }),
    startNatsCluster({ stateDir, deviceRootCA }),
  ]);
  if (controlPlane.status === "rejected" || cluster.status === "rejected") {
    if (controlPlane.status === "fulfilled") await controlPlane.value.stop();
    if (cluster.status === "fulfilled") await cluster.value.stop();
    throw controlPlane.status === "rejected"
      ? controlPlane.reason
      : (cluster as PromiseRejectedResult).reason;
  }
  const stop = async () => {
    await Promise.all([controlPlane.value.stop(), cluster.value.stop()]);
  };
  try {
    await installRootCA(controlPlane.value, deviceRootCA);
    await installNatsKeys(controlPlane.value, cluster.value);
  } catch (error) {
    await stop();
    throw error;
  }
  const [first] = cluster.value.nodes;
  return {
    binDir,
    cluster: cluster.value,
    variables: {
      KUBECONFIG: controlPlane.value.kubeconfig,
      BROKER_KIND: "nats",
      BROKER_HOST: cluster.value.host,
      // Devices may use any node's MQTT listener; these name the first, NATS_MQTT_PORTS all of them.
      BROKER_MTLS_PORT: String(first?.mqttPort),
      BROKER_PASSWORD_PORT: String(first?.mqttPort),
      NATS_MQTT_PORTS: cluster.value.nodes.map((n) => n.mqttPort).join(","),
      NATS_URLS: cluster.value.urls.join(","),
      NATS_CLUSTER_SIZE: String(cluster.value.nodes.length),
      NATS_KEYS_SECRET,
      BROKER_CA_FILE: cluster.value.caFile,
      ROOT_CA_SECRET,
      IOT_STACK_BIN: binDir,
    },
    stop,
  };
}

/** The Secret in the operator's namespace with the NATS deployment's keys (config NATS_KEYS_SECRET). */
export const NATS_KEYS_SECRET = "iot-nats-keys";

/** The NATS_KEYS_SECRET Secret holding a cluster's keys, for the operator to read. */
export function natsKeysSecret(cluster: Pick<NatsCluster, "seeds">) {
  return {
    apiVersion: "v1",
    kind: "Secret",
    type: "Opaque",
    metadata: { name: NATS_KEYS_SECRET, namespace: OPERATOR_NAMESPACE },
    data: Object.fromEntries(
      Object.entries(cluster.seeds).map(([key, seed]) => [key, Buffer.from(seed).toString("base64")]),
    ),
  };
}

async function installNatsKeys(controlPlane: ControlPlane, cluster: NatsCluster): Promise<void> {
  await controlPlane.kubectl(["apply", "--server-side", "-f", "-"], JSON.stringify(natsKeysSecret(cluster)));
}

/**
 * Puts the device root CA into the operator's namespace as a Secret, where only the operator reads
 * it: it is deliberately no cert-manager (Cluster)Issuer, which every namespace could use (I3).
 */
async function installRootCA(controlPlane: ControlPlane, ca: KeyPair): Promise<void> {
  const [cert, key] = await Promise.all([readFile(ca.certFile), readFile(ca.keyFile)]);
  const manifest = [
    { apiVersion: "v1", kind: "Namespace", metadata: { name: OPERATOR_NAMESPACE } },
    {
      apiVersion: "v1",
      kind: "Secret",
      type: "kubernetes.io/tls",
      metadata: { name: ROOT_CA_SECRET, namespace: OPERATOR_NAMESPACE },
      data: { "tls.crt": cert.toString("base64"), "tls.key": key.toString("base64") },
    },
  ];
  await controlPlane.kubectl(
    ["apply", "--server-side", "-f", "-"],
    manifest.map((m) => JSON.stringify(m)).join("\n"),
  );
}

/**
 * The stack's connection settings under the operator's own configuration names (src/config.ts),
 * so `source .stack/env && iot-tenant-operator run` needs nothing else.
 */
export function stackVariables(env: StackEnv): Record<string, string> {
  return {
    KUBECONFIG: env.kubeconfig,
    ...mosquittoVariables(env.broker),
    ROOT_CA_SECRET: env.rootCaSecret,
    AUDIT_LOG_FILE: join(env.stateDir, "audit.log"),
    IOT_STACK_BIN: env.binDir,
  };
}

/** The operator's settings for one Mosquitto broker. */
export function mosquittoVariables(broker: StackEnv["broker"]): Record<string, string> {
  return {
    BROKER_KIND: "mosquitto",
    BROKER_HOST: broker.host,
    BROKER_MTLS_PORT: String(broker.mtlsPort),
    BROKER_PASSWORD_PORT: String(broker.passwordPort),
    BROKER_ADMIN_PORT: String(broker.adminPort),
    BROKER_ADMIN_USERNAME: broker.adminUsername,
    BROKER_ADMIN_CERT_FILE: broker.adminCertFile,
    BROKER_ADMIN_KEY_FILE: broker.adminKeyFile,
    BROKER_ADMIN_PASSWORD: broker.adminPassword,
    BROKER_CA_FILE: broker.caFile,
    BROKER_CRL_FILE: broker.crlFile,
    BROKER_PID_FILE: broker.pidFile,
    BROKER_CRL_INCLUDE_FILE: broker.baseCrlFile,
  };
}

/** The `.stack/env` contract (DESIGN §8): shell `export` lines, with the stack's kubectl and helm first on PATH. */
export function envFileLines(variables: Record<string, string>, binDir: string): string {
  const quote = (v: string) => `'${v.replaceAll("'", `'\\''`)}'`;
  return `${Object.entries(variables)
    .map(([k, v]) => `export ${k}=${quote(v)}`)
    .join("\n")}\nexport PATH=${quote(binDir)}:"$PATH"\n`;
}

export async function writeEnvFile(
  file: string,
  variables: Record<string, string>,
  binDir: string,
): Promise<void> {
  await writeFile(file, envFileLines(variables, binDir), { mode: 0o600 });
}
