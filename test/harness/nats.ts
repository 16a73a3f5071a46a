import { execFile } from "node:child_process";
import { mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import {
  bootstrapKeys,
  type NatsBootstrapSeeds,
  newBootstrapSeeds,
  serverTrust,
} from "../../src/broker/nats-claims.js";
import { issueCertificate, type KeyPair } from "./pki.js";
import { freePort } from "./ports.js";
import { type ManagedProcess, startProcess, waitUntil } from "./process.js";

const run = promisify(execFile);
const buildScript = resolve(dirname(fileURLToPath(import.meta.url)), "../tools/build-nats.sh");

export interface NatsNode {
  readonly name: string;
  readonly clientPort: number;
  /**
   * MQTT 3.1.1 over TLS; a client certificate is optional and, when presented, verified against the
   * device root. Devices (password or certificate) log in through the auth callout.
   */
  readonly mqttPort: number;
  readonly monitorPort: number;
  readonly routePort: number;
}

export interface NatsCluster {
  readonly host: string;
  readonly nodes: readonly NatsNode[];
  /** The operator's connection: every node's client URL. */
  readonly urls: readonly string[];
  /** Verifies the MQTT listeners' server certificate (the device root CA). */
  readonly caFile: string;
  /** The deployment's keys, which the stack puts into a Secret in the operator's namespace. */
  readonly seeds: NatsBootstrapSeeds;
  readonly stateDir: string;
  /** Stops one node (SIGKILL with `kill`), for fault tests; `start` brings it back with its state. */
  stopNode(name: string, options?: { kill?: boolean }): Promise<void>;
  startNode(name: string): Promise<void>;
  stop(): Promise<void>;
}

/** Builds (or finds cached) nats-server; returns the binary's path. */
export async function natsServerBinary(): Promise<string> {
  const { stdout } = await run("bash", [buildScript], { maxBuffer: 1 << 20 });
  return join(stdout.trim(), "nats-server");
}

/**
 * Three nats-server nodes on loopback: full routes between them, JetStream on each (MQTT streams
 * are R3), operator mode with a system account and a full account resolver, the auth account whose
 * callout the operator answers, and an MQTT listener with TLS on each node.
 */
export async function startNatsCluster(options: {
  readonly stateDir: string;
  readonly deviceRootCA: KeyPair;
}): Promise<NatsCluster> {
  const binary = await natsServerBinary();
  const host = "127.0.0.1";
  // A directory of its own: clusters started beside each other (test files in parallel) never share state.
  await mkdir(options.stateDir, { recursive: true });
  const dir = await mkdtemp(join(options.stateDir, "nats-"));
  const seeds = newBootstrapSeeds();
  const trust = await serverTrust(bootstrapKeys(seeds));
  const serverCert = await issueCertificate(dir, options.deviceRootCA, "nats", {
    subject: "/CN=nats",
    dnsNames: ["localhost"],
    ips: [host],
    usages: ["serverAuth"],
  });
  const nodes: NatsNode[] = [];
  for (const name of ["n1", "n2", "n3"]) {
    const [clientPort, mqttPort, monitorPort, routePort] = await Promise.all([
      freePort(),
      freePort(),
      freePort(),
      freePort(),
    ]);
    nodes.push({ name, clientPort, mqttPort, monitorPort, routePort });
  }
  const configs = new Map<string, string>();
  for (const node of nodes) {
    const nodeDir = join(dir, node.name);
    await mkdir(join(nodeDir, "jwt"), { recursive: true });
    const routes = nodes.filter((n) => n !== node).map((n) => `nats-route://${host}:${n.routePort}`);
    const config = join(nodeDir, "nats.conf");
    await writeFile(
      config,
      `${[
        `server_name: ${node.name}`,
        `listen: "${host}:${node.clientPort}"`,
        `http: "${host}:${node.monitorPort}"`,
        `cluster { name: iot, listen: "${host}:${node.routePort}", routes: ${JSON.stringify(routes)} }`,
        `jetstream { store_dir: ${JSON.stringify(join(nodeDir, "js"))}, max_memory_store: 64MB, max_file_store: 1GB }`,
        // verify: optional: a password device presents no certificate; a presented one must chain to
        // the device root, and the auth callout then accepts it only from the device's tenant CA.
        `mqtt { host: "${host}", port: ${node.mqttPort}, stream_replicas: 3, tls { cert_file: ${JSON.stringify(serverCert.certFile)}, key_file: ${JSON.stringify(serverCert.keyFile)}, ca_file: ${JSON.stringify(options.deviceRootCA.certFile)}, verify: "optional" } }`,
        `operator: ${trust.operatorJwt}`,
        `system_account: ${trust.systemAccount}`,
        `resolver { type: full, dir: ${JSON.stringify(join(nodeDir, "jwt"))}, allow_delete: false, interval: "2m", timeout: "1.9s" }`,
        `resolver_preload { ${Object.entries(trust.preload)
          .map(([k, v]) => `${k}: ${v}`)
          .join("\n")} }`,
        `default_sentinel: ${trust.defaultSentinel}`,
      ].join("\n")}\n`,
    );
    configs.set(node.name, config);
  }

  const processes = new Map<string, ManagedProcess>();
  const start = (node: NatsNode) => {
    processes.set(
      node.name,
      startProcess(`nats-${node.name}`, binary, ["-c", configs.get(node.name) ?? ""], {
        logFile: join(dir, `${node.name}.log`),
      }),
    );
  };
  const healthy = (node: NatsNode) =>
    waitUntil(
      `nats ${node.name}`,
      async () => (await fetch(`http://${host}:${node.monitorPort}/healthz`)).ok,
      { timeoutMs: 90_000, process: processes.get(node.name) },
    );
  for (const node of nodes) start(node);
  const stopAll = () => Promise.all([...processes.values()].map((p) => p.stop())).then(() => undefined);
  try {
    await Promise.all(nodes.map(healthy));
  } catch (error) {
    await stopAll();
    throw error;
  }
  const nodeNamed = (name: string) => {
    const node = nodes.find((n) => n.name === name);
    if (!node) throw new Error(`no NATS node ${name}`);
    return node;
  };
  return {
    host,
    nodes,
    urls: nodes.map((n) => `nats://${host}:${n.clientPort}`),
    caFile: options.deviceRootCA.certFile,
    seeds,
    stateDir: dir,
    async stopNode(name, stopOptions = {}) {
      await processes.get(nodeNamed(name).name)?.stop(stopOptions.kill ? 0 : 5_000);
    },
    async startNode(name) {
      const node = nodeNamed(name);
      start(node);
      await healthy(node);
    },
    stop: stopAll,
  };
}
