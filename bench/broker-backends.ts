/**
 * Mosquitto and NATS side by side, in the same run, each at the fleet sizes it is meant for
 * (issue 12): Mosquitto 2.0.11 with dynamic security on one node, NATS as a 3-node cluster with an
 * account per tenant and logins decided by the operator's auth callout.
 *
 * For each backend and size, on a fresh broker:
 *  1. baseline: an ordinary client's round trip (publish to itself, QoS 0) on the idle broker;
 *  2. devices are added through the adapter (`BULK_CONCURRENCY` calls in flight, as the
 *     operator's workers would): devices per second, and the round trip p99 meanwhile. NATS servers
 *     hold no per-device state, so its whole fleet goes through the adapter; Mosquitto's dynsec
 *     file gets all but the last `--provision` devices written directly before the broker starts
 *     (one paced command per entry would take hours at these sizes);
 *  3. `--logins` of those devices log in (password over TLS, MQTT 3.1.1, one after another):
 *     logins per second, login p99, round trip p99 meanwhile;
 *  4. `--cutoffs` of the connected devices are disabled one after another: time from
 *     `applyDevice(enabled: false)` to the device's connection closing;
 *  5. memory: the broker's RSS (NATS: the sum of the three servers' `/varz` mem; Mosquitto:
 *     /proc VmRSS) and the growth of this process's heap, where the adapter keeps its state.
 * The adapter, the clients and the measurements share this process: a busy event loop makes the
 * figures larger, never smaller.
 *
 *   npx tsx bench/broker-backends.ts [--nats 10000,50000] [--mosquitto 10000] [--provision 300]
 *     [--logins 200] [--cutoffs 30] [--runs 3]
 *
 * Prints a table (median and min–max over the runs) and writes bench/results/broker-backends.json.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setImmediate, setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { createAccount } from "@nats-io/nkeys";
import mqtt, { type MqttClient } from "mqtt";
import { z } from "zod";
import type { BrokerAdapter, BrokerDevice } from "../src/broker/adapter.js";
import { MosquittoDynsecAdapter } from "../src/broker/mosquitto-dynsec.js";
import { NatsAccountsAdapter } from "../src/broker/nats-accounts.js";
import { bootstrapKeys } from "../src/broker/nats-claims.js";
import { deviceSubject, subjectUsername } from "../src/broker/subject.js";
import { probeOptions } from "../src/verify/mqtt-probe.js";
import { adminConnection } from "../test/harness/mosquitto.js";
import { startNatsCluster } from "../test/harness/nats.js";
import { createCA, createIntermediateCA, type IntermediateCA } from "../test/harness/pki.js";
import { repoRoot } from "../test/harness/stack.js";
import { startMosquittoWithFleet } from "./support/mosquitto-process.js";
import { type Figure, MIN_RUNS, spread, writeResults } from "./support/results.js";
import { RoundTripProbe } from "./support/round-trip.js";
import { summarize } from "./support/stats.js";

const { values: args } = parseArgs({
  options: {
    nats: { type: "string", default: "10000,50000" },
    mosquitto: { type: "string", default: "10000" },
    provision: { type: "string", default: "300" },
    logins: { type: "string", default: "200" },
    cutoffs: { type: "string", default: "30" },
    "idle-seconds": { type: "string", default: "5" },
    runs: { type: "string", default: "3" },
  },
});
const sizes = (list: string | undefined) => (list ?? "").split(",").filter(Boolean).map(Number);
const provisionCount = Number(args.provision);
const loginCount = Number(args.logins);
const cutoffCount = Number(args.cutoffs);
const idleMs = Number(args["idle-seconds"]) * 1_000;
const runCount = Number(args.runs);

const TENANT = "bench";
const PROBE = "probe";
/** Adapter calls in flight while the fleet is put in place through applyDevice. */
const BULK_CONCURRENCY = 500;

type Kind = "mosquitto" | "nats";

/** One broker under test, its probe device provisioned and `preloaded` devices already in place. */
interface Backend {
  readonly adapter: BrokerAdapter;
  readonly preloaded: number;
  /** A password device's MQTT 3.1.1 login over TLS (the n-th login: NATS spreads them over its nodes). */
  login(device: BrokerDevice, n: number): Promise<MqttClient>;
  brokerRssBytes(): Promise<number>;
  stop(): Promise<void>;
}

function passwordDevice(name: string): BrokerDevice {
  return {
    tenant: TENANT,
    device: name,
    topicRoot: `tenants/${TENANT}`,
    credentials: { type: "password", username: `${TENANT}/${name}`, password: `pw-${name}-0123456789` },
    enabled: true,
    suspended: false,
  };
}

/** Mosquitto's preloaded fleet is certificate devices: their entries cost the broker the same, and they never log in here. */
function certificateDevice(name: string): BrokerDevice {
  return {
    ...passwordDevice(name),
    credentials: { type: "x509", username: subjectUsername(deviceSubject(TENANT, name)) },
  };
}

const preloadName = (i: number) => `preloaded-${i}`;
const newName = (i: number) => `new-${i}`;

function loginOptions(device: BrokerDevice) {
  const password = device.credentials.type === "password" ? device.credentials.password : "";
  return {
    protocolVersion: 4 as const,
    clientId: device.credentials.username,
    username: device.credentials.username,
    password,
  };
}

async function rssOfPid(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1];
  if (kb === undefined) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(kb) * 1024;
}

/** Everything but the last `--provision` devices is preloaded: one paced command per entry would take hours. */
async function startMosquittoBackend(dir: string, ca: IntermediateCA, size: number): Promise<Backend> {
  const preloaded = size - provisionCount;
  const fleet = [
    passwordDevice(PROBE),
    ...Array.from({ length: preloaded - 1 }, (_, i) => certificateDevice(preloadName(i))),
  ];
  const { broker, process: server } = await startMosquittoWithFleet(dir, ca, fleet);
  const adapter = new MosquittoDynsecAdapter({ connection: adminConnection(broker) });
  // The probe's password is set through the adapter: dynsec stores only its salted hash.
  await adapter.applyDevice(passwordDevice(PROBE));
  const caPem = await readFile(broker.caFile);
  return {
    adapter,
    preloaded,
    login: (device) =>
      mqtt.connectAsync(
        probeOptions(broker.host, broker.passwordPort, { ca: caPem, ...loginOptions(device) }),
      ),
    brokerRssBytes: () => rssOfPid(server.pid),
    stop: async () => {
      await adapter.close();
      await server.stop();
    },
  };
}

const varzMem = z.object({ mem: z.number() });

/** Nothing is preloaded: NATS servers hold no per-device state, so the whole fleet goes through the adapter. */
async function startNatsBackend(dir: string, ca: IntermediateCA): Promise<Backend> {
  const cluster = await startNatsCluster({ stateDir: dir, deviceRootCA: ca.issuer });
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
      connections: loginCount + 10,
      subscriptions: 20 * (loginCount + 10),
      payloadBytes: 65_536,
      jetStreamBytes: 1 << 30,
    }),
  });
  // The probe pushes the tenant's account; the fleet then only adds login decisions.
  await adapter.applyDevice(passwordDevice(PROBE));
  const caPem = await readFile(cluster.caFile);
  return {
    adapter,
    preloaded: 1,
    login: (device, n) => {
      const node = cluster.nodes[n % cluster.nodes.length];
      if (!node) throw new Error("a NATS cluster without nodes");
      return mqtt.connectAsync(
        probeOptions(cluster.host, node.mqttPort, { ca: caPem, ...loginOptions(device) }),
      );
    },
    brokerRssBytes: async () => {
      let total = 0;
      for (const node of cluster.nodes) {
        const response = await fetch(`http://${cluster.host}:${node.monitorPort}/varz`);
        total += varzMem.parse(await response.json()).mem;
      }
      return total;
    },
    stop: async () => {
      await adapter.close();
      await cluster.stop();
    },
  };
}

/**
 * `count` tasks, `width` at a time. Between batches the event loop gets a turn, as it would in the
 * operator (each reconcile waits on the API server): NATS's applyDevice settles in microtasks only,
 * and without the turn the round-trip probe beside it would never run.
 */
async function inBatches(count: number, width: number, task: (i: number) => Promise<void>): Promise<void> {
  for (let from = 0; from < count; from += width) {
    await Promise.all(Array.from({ length: Math.min(width, count - from) }, (_, k) => task(from + k)));
    await setImmediate();
  }
}

setFlagsFromString("--expose-gc");
const collectGarbage = runInNewContext("gc") as () => void;

function heapUsed(): number {
  collectGarbage();
  return process.memoryUsage().heapUsed;
}

interface Measurement {
  readonly kind: Kind;
  readonly size: number;
  readonly roundTripIdleP99Ms: number;
  readonly added: number;
  readonly addedPerSecond: number;
  readonly roundTripProvisioningP99Ms: number;
  readonly loginsPerSecond: number;
  readonly loginP99Ms: number;
  readonly roundTripLoginsP99Ms: number;
  readonly cutOffP50Ms: number;
  readonly cutOffP99Ms: number;
  readonly brokerRssMiB: number;
  readonly adapterHeapMiB: number;
  readonly loadAverage: readonly number[];
}

async function measure(kind: Kind, size: number, dir: string, ca: IntermediateCA): Promise<Measurement> {
  const heapBefore = heapUsed();
  const backend =
    kind === "nats" ? await startNatsBackend(dir, ca) : await startMosquittoBackend(dir, ca, size);
  const clients: MqttClient[] = [];
  try {
    const probeDevice = passwordDevice(PROBE);
    const probe = await RoundTripProbe.start(
      await backend.login(probeDevice, 0),
      `tenants/${TENANT}/devices/${PROBE}/rtt`,
    );
    try {
      const idleFrom = performance.now();
      await sleep(idleMs);
      const provisionFrom = performance.now();
      const added = Array.from({ length: size - backend.preloaded }, (_, i) => passwordDevice(newName(i)));
      await inBatches(added.length, BULK_CONCURRENCY, (i) =>
        backend.adapter.applyDevice(added[i] as BrokerDevice),
      );
      const loginFrom = performance.now();
      const loginMs: number[] = [];
      for (const [n, device] of added.slice(0, loginCount).entries()) {
        const t0 = performance.now();
        clients.push(await backend.login(device, n + 1));
        loginMs.push(performance.now() - t0);
      }
      const loginTo = performance.now();

      const cutOffMs: number[] = [];
      for (const [n, device] of added.slice(0, Math.min(cutoffCount, clients.length)).entries()) {
        const client = clients[n] as MqttClient;
        const closed = new Promise<void>((resolve) => client.once("close", () => resolve()));
        const t0 = performance.now();
        await backend.adapter.applyDevice({ ...device, enabled: false });
        await closed;
        cutOffMs.push(performance.now() - t0);
      }
      const cutOffs = summarize(cutOffMs);
      const measurement: Measurement = {
        kind,
        size,
        roundTripIdleP99Ms: summarize(probe.between(idleFrom, provisionFrom)).p99,
        added: added.length,
        addedPerSecond: added.length / ((loginFrom - provisionFrom) / 1_000),
        roundTripProvisioningP99Ms: summarize(probe.between(provisionFrom, loginFrom)).p99,
        loginsPerSecond: loginMs.length / ((loginTo - loginFrom) / 1_000),
        loginP99Ms: summarize(loginMs).p99,
        roundTripLoginsP99Ms: summarize(probe.between(loginFrom, loginTo)).p99,
        cutOffP50Ms: cutOffs.p50,
        cutOffP99Ms: cutOffs.p99,
        brokerRssMiB: (await backend.brokerRssBytes()) / 2 ** 20,
        adapterHeapMiB: (heapUsed() - heapBefore) / 2 ** 20,
        loadAverage: (await readFile("/proc/loadavg", "utf8")).split(" ").slice(0, 3).map(Number),
      };
      console.log(`  ${JSON.stringify(measurement)}`);
      return measurement;
    } finally {
      await probe.stop();
    }
  } finally {
    await Promise.all(clients.map((client) => client.endAsync(true).catch(() => undefined)));
    await backend.stop();
  }
}

const cases: ReadonlyArray<{ kind: Kind; size: number }> = [
  ...sizes(args.mosquitto).map((size) => ({ kind: "mosquitto" as const, size })),
  ...sizes(args.nats).map((size) => ({ kind: "nats" as const, size })),
];

const LABELS: ReadonlyArray<[keyof Measurement, string, string]> = [
  ["roundTripIdleP99Ms", "round trip p99, idle", "ms"],
  ["addedPerSecond", "devices added through the adapter", "devices/s"],
  ["roundTripProvisioningP99Ms", "round trip p99 while they are added", "ms"],
  ["loginsPerSecond", `${loginCount} logins, one after another`, "logins/s"],
  ["loginP99Ms", "login p99", "ms"],
  ["roundTripLoginsP99Ms", "round trip p99 during the logins", "ms"],
  ["cutOffP50Ms", "cut-off p50 (disable → connection closed)", "ms"],
  ["cutOffP99Ms", `cut-off p99 (${cutoffCount} disables)`, "ms"],
  ["brokerRssMiB", "broker memory (RSS, all nodes)", "MiB"],
  ["adapterHeapMiB", "adapter heap growth (operator side)", "MiB"],
];

const BACKEND_NAME: Record<Kind, string> = {
  mosquitto: "Mosquitto 2.0.11",
  nats: "NATS 3 nodes",
};

function figuresOf(runs: ReadonlyArray<readonly Measurement[]>): Figure[] {
  return cases.flatMap(({ kind, size }, index) =>
    LABELS.flatMap(([key, label, unit]) => {
      const values = runs.map((run) => run[index]?.[key]);
      if (!values.every((value): value is number => typeof value === "number")) return [];
      return [spread(`${label}, ${BACKEND_NAME[kind]}, ${size} devices`, unit, values)];
    }),
  );
}

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), "bench-backends-"));
  try {
    const rootCA = await createCA(root, "device-root", "bench device root");
    const ca = await createIntermediateCA(root, rootCA, "device-ca", "bench device CA");
    const runs: Measurement[][] = [];
    for (let r = 0; r < runCount; r++) {
      console.log(`run ${r + 1}/${runCount}`);
      const run: Measurement[] = [];
      for (const { kind, size } of cases)
        run.push(await measure(kind, size, join(root, `${r}-${kind}-${size}`), ca));
      runs.push(run);
    }
    const figures = figuresOf(runs);
    const f = (n: number) => (n >= 100 ? n.toFixed(0) : n.toFixed(1));
    for (const figure of figures)
      console.log(
        `${figure.label}: median ${f(figure.median)} ${figure.unit} (${f(figure.min)}–${f(figure.max)})`,
      );
    if (runCount < MIN_RUNS) {
      console.log(`not written: a results file needs at least ${MIN_RUNS} runs`);
      return;
    }
    const out = await writeResults(repoRoot, {
      benchmark: "broker-backends",
      parameters: {
        mosquitto: sizes(args.mosquitto),
        nats: sizes(args.nats),
        provision: provisionCount,
        logins: loginCount,
        cutoffs: cutoffCount,
        idleSeconds: idleMs / 1_000,
        runs: runCount,
      },
      runs,
      figures,
    });
    console.log(`wrote ${out}`);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

await main();
