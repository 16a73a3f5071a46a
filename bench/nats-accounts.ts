/**
 * The NATS backend on a fresh 3-node cluster per run: devices provisioned per second (applyDevice),
 * device logins per second through the operator's auth callout and their latency, an ordinary
 * client's round trip while devices log in, and cut-off latency (disable → connection closed) with
 * the device on another node than the operator's connection.
 *
 *   npx tsx bench/nats-accounts.ts [devices=200] [runs=3]
 *
 * Account keys are kept in memory here: the operator writes one Secret per tenant, never per device.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createAccount } from "@nats-io/nkeys";
import mqtt, { type MqttClient } from "mqtt";
import type { BrokerDevice } from "../src/broker/adapter.js";
import { NatsAccountsAdapter } from "../src/broker/nats-accounts.js";
import { bootstrapKeys } from "../src/broker/nats-claims.js";
import { probeOptions } from "../src/verify/mqtt-probe.js";
import { type NatsCluster, startNatsCluster } from "../test/harness/nats.js";
import { createCA } from "../test/harness/pki.js";
import { repoRoot } from "../test/harness/stack.js";
import { spread, writeResults } from "./support/results.js";

const deviceCount = Number(process.argv[2] ?? 200);
const runCount = Number(process.argv[3] ?? 3);
const TENANT = "bench";

function percentile(values: readonly number[], p: number): number {
  const sorted = values.toSorted((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
}

function device(index: number): BrokerDevice {
  return {
    tenant: TENANT,
    device: `d${index}`,
    topicRoot: `tenants/${TENANT}`,
    credentials: { type: "password", username: `${TENANT}/d${index}`, password: `pw-${index}` },
    enabled: true,
    suspended: false,
  };
}

function connect(cluster: NatsCluster, ca: Buffer, d: BrokerDevice, node: number): Promise<MqttClient> {
  const password = d.credentials.type === "password" ? d.credentials.password : "";
  return mqtt.connectAsync(
    probeOptions(cluster.host, cluster.nodes[node % cluster.nodes.length]?.mqttPort ?? 0, {
      ca,
      protocolVersion: 4,
      clientId: d.credentials.username,
      username: d.credentials.username,
      password,
    }),
  );
}

/** Round trips of one client to itself (QoS 1 publish → delivery) until `stop` resolves. */
async function roundTrips(client: MqttClient, topic: string, stop: Promise<void>): Promise<number[]> {
  let done = false;
  void stop.then(() => {
    done = true;
  });
  await client.subscribeAsync(topic, { qos: 1 });
  const samples: number[] = [];
  while (!done) {
    const started = performance.now();
    const arrived = new Promise<void>((resolve) => client.once("message", () => resolve()));
    await client.publishAsync(topic, "x", { qos: 1 });
    await arrived;
    samples.push(performance.now() - started);
    await new Promise((r) => setTimeout(r, 10));
  }
  return samples;
}

async function oneRun(index: number) {
  const dir = await mkdtemp(join(tmpdir(), "nats-bench-"));
  const rootCA = await createCA(dir, "root", "bench root CA");
  const cluster = await startNatsCluster({ stateDir: dir, deviceRootCA: rootCA });
  const ca = await readFile(cluster.caFile);
  const seeds = new Map<string, string>();
  const adapter = new NatsAccountsAdapter({
    servers: cluster.urls.slice(0, 1),
    clusterSize: cluster.nodes.length,
    keys: bootstrapKeys(cluster.seeds),
    accountKeys: {
      accountSeed: async (tenant) => {
        const seed = seeds.get(tenant) ?? new TextDecoder().decode(createAccount().getSeed());
        seeds.set(tenant, seed);
        return seed;
      },
      existingAccountSeed: async (tenant) => seeds.get(tenant),
      deleteAccount: async (tenant) => {
        seeds.delete(tenant);
      },
      tenants: async () => [...seeds.keys()],
    },
    tenantExists: () => true,
    tenantLimits: () => ({
      connections: deviceCount + 10,
      subscriptions: 20 * (deviceCount + 10),
      payloadBytes: 65_536,
      jetStreamBytes: 1 << 30,
    }),
  });
  const clients: MqttClient[] = [];
  try {
    const devices = Array.from({ length: deviceCount }, (_, i) => device(i));
    const probe = device(deviceCount);
    let started = performance.now();
    for (const d of [probe, ...devices]) await adapter.applyDevice(d);
    const provisionedPerSecond = (devices.length + 1) / ((performance.now() - started) / 1000);

    const probeClient = await connect(cluster, ca, probe, 1);
    clients.push(probeClient);
    const idle = await roundTrips(probeClient, `tenants/${TENANT}/devices/${probe.device}/rt`, sleep(2_000));

    let finishLogins!: () => void;
    const loginsDone = new Promise<void>((resolve) => {
      finishLogins = resolve;
    });
    const underLoad = roundTrips(probeClient, `tenants/${TENANT}/devices/${probe.device}/rt`, loginsDone);
    const loginMs: number[] = [];
    started = performance.now();
    for (const [i, d] of devices.entries()) {
      const t0 = performance.now();
      clients.push(await connect(cluster, ca, d, i));
      loginMs.push(performance.now() - t0);
    }
    const loginsPerSecond = devices.length / ((performance.now() - started) / 1000);
    finishLogins();
    const busy = await underLoad;

    const cutOffMs: number[] = [];
    for (const [i, d] of devices.slice(0, Math.min(50, devices.length)).entries()) {
      const client = clients[i + 1] as MqttClient;
      const closed = new Promise<void>((resolve) => client.once("close", () => resolve()));
      const t0 = performance.now();
      await adapter.applyDevice({ ...d, enabled: false });
      await closed;
      cutOffMs.push(performance.now() - t0);
    }
    const run = {
      run: index,
      devices: deviceCount,
      provisionedPerSecond,
      loginsPerSecond,
      loginP50Ms: percentile(loginMs, 50),
      loginP99Ms: percentile(loginMs, 99),
      roundTripIdleP99Ms: percentile(idle, 99),
      roundTripDuringLoginsP99Ms: percentile(busy, 99),
      cutOffP50Ms: percentile(cutOffMs, 50),
      cutOffP99Ms: percentile(cutOffMs, 99),
    };
    console.log(JSON.stringify(run));
    return run;
  } finally {
    await Promise.all(clients.map((c) => c.endAsync(true).catch(() => undefined)));
    await adapter.close();
    await cluster.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function main(): Promise<void> {
  const runs: Awaited<ReturnType<typeof oneRun>>[] = [];
  for (let i = 0; i < runCount; i++) runs.push(await oneRun(i));
  const figure = (label: string, unit: string, pick: (r: (typeof runs)[number]) => number) =>
    spread(`${label}, ${deviceCount} devices, NATS 3 nodes`, unit, runs.map(pick));
  const figures = [
    figure("devices provisioned (applyDevice)", "devices/s", (r) => r.provisionedPerSecond),
    figure("device logins through the auth callout", "logins/s", (r) => r.loginsPerSecond),
    figure("device login p99", "ms", (r) => r.loginP99Ms),
    figure("round trip p99, idle", "ms", (r) => r.roundTripIdleP99Ms),
    figure("round trip p99, during logins", "ms", (r) => r.roundTripDuringLoginsP99Ms),
    figure("cut-off p99 (disable → closed, other node)", "ms", (r) => r.cutOffP99Ms),
  ];
  for (const f of figures)
    console.log(
      `${f.label}: median ${f.median.toFixed(1)} ${f.unit} (${f.min.toFixed(1)}–${f.max.toFixed(1)})`,
    );
  const out = await writeResults(repoRoot, {
    benchmark: "nats-accounts",
    parameters: { devices: deviceCount, nodes: 3, cutOffs: Math.min(50, deviceCount) },
    runs,
    figures,
  });
  console.log(`wrote ${out}`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
