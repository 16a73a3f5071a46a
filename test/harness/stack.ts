import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { OPERATOR_NAMESPACE } from "../../src/api/group.js";
import { type ControlPlane, type ControlPlaneOptions, startControlPlane } from "./control-plane.js";
import { type Broker, startMosquitto } from "./mosquitto.js";
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
  readonly binDir: string;
  readonly stateDir: string;
  readonly rootCaSecret: string;
  readonly deviceRootCA: KeyPair;
  readonly broker: Omit<Broker, "stop">;
}

export interface Stack {
  readonly env: StackEnv;
  readonly controlPlane: ControlPlane;
  stop(): Promise<void>;
}

/** Builds (or finds cached) the control-plane binaries; returns their directory. */
export async function buildTools(): Promise<string> {
  const { stdout } = await run("bash", [join(repoRoot, "test/tools/build.sh")], { maxBuffer: 16 << 20 });
  return stdout.trim();
}

export async function startStack(
  stateDir: string,
  options: Pick<ControlPlaneOptions, "certManagerArgs"> = {},
): Promise<Stack> {
  const binDir = await buildTools();
  const deviceRootCA = await createCA(stateDir, "device-root-ca", "iot-tenant-operator device root CA");
  const [controlPlane, broker] = await Promise.allSettled([
    startControlPlane({ binDir, stateDir, ...options }),
    startMosquitto({ stateDir, deviceRootCA }),
  ]);
  if (controlPlane.status === "rejected" || broker.status === "rejected") {
    if (controlPlane.status === "fulfilled") await controlPlane.value.stop();
    if (broker.status === "fulfilled") await broker.value.stop();
    throw controlPlane.status === "rejected" ? controlPlane.reason : (broker as PromiseRejectedResult).reason;
  }
  const stop = async () => {
    await Promise.all([controlPlane.value.stop(), broker.value.stop()]);
  };
  try {
    await installRootCA(controlPlane.value, deviceRootCA);
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
      binDir,
      stateDir,
      rootCaSecret: ROOT_CA_SECRET,
      deviceRootCA,
      broker: brokerEnv,
    },
    controlPlane: controlPlane.value,
    stop,
  };
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
    BROKER_HOST: env.broker.host,
    BROKER_MTLS_PORT: String(env.broker.mtlsPort),
    BROKER_PASSWORD_PORT: String(env.broker.passwordPort),
    BROKER_ADMIN_PORT: String(env.broker.adminPort),
    BROKER_ADMIN_USERNAME: env.broker.adminUsername,
    BROKER_ADMIN_CERT_FILE: env.broker.adminCertFile,
    BROKER_ADMIN_KEY_FILE: env.broker.adminKeyFile,
    BROKER_ADMIN_PASSWORD: env.broker.adminPassword,
    BROKER_CA_FILE: env.broker.caFile,
    BROKER_CRL_FILE: env.broker.crlFile,
    BROKER_PID_FILE: env.broker.pidFile,
    BROKER_CRL_INCLUDE_FILE: env.broker.baseCrlFile,
    ROOT_CA_SECRET: env.rootCaSecret,
    IOT_STACK_BIN: env.binDir,
  };
}

/** The `.stack/env` contract (DESIGN §8): shell `export` lines, with the stack's kubectl and helm first on PATH. */
export function envFileLines(env: StackEnv): string {
  const quote = (v: string) => `'${v.replaceAll("'", `'\\''`)}'`;
  return `${Object.entries(stackVariables(env))
    .map(([k, v]) => `export ${k}=${quote(v)}`)
    .join("\n")}\nexport PATH=${quote(env.binDir)}:"$PATH"\n`;
}

export async function writeEnvFile(file: string, env: StackEnv): Promise<void> {
  await writeFile(file, envFileLines(env), { mode: 0o600 });
}
