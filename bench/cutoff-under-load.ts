/**
 * How long a cut-off takes while another tenant's devices are being provisioned (issue 9 part 4,
 * test audit T14), against a baseline measured in the same run on an idle operator.
 *
 * Each run starts a fresh stack (control plane, cert-manager, Mosquitto) and runs the operator in
 * this process, then:
 *  1. baseline: `--cutoffs` connected devices of tenant "quiet" are disabled one after another on
 *     an idle operator; each sample is the time from sending `spec.enabled: false` to the device's
 *     live MQTT connection closing;
 *  2. under load: `--devices` new Devices of tenant "busy" are created at once; while they are
 *     being provisioned (not all Ready: checked at the disable and at the drop), as many other
 *     quiet devices are disabled the same way; beside it the provisioning throughput (busy
 *     devices Ready per second, from the first create to the last Ready);
 *  3. suspend: every busy device connects, then the busy tenant is suspended; time to the first,
 *     median, p99 and last dropped connection.
 * Cut-off samples are kept only when the busy tenant still had devices not Ready both when the
 * disable was sent and when the connection dropped. The close is observed in this process, which
 * also runs the operator: a busy event loop makes the figures larger, never smaller.
 *
 *   npx tsx bench/cutoff-under-load.ts [--devices 500] [--cutoffs 10] [--runs 3] [--gap-ms 1000]
 *
 * Prints a table (median and min–max over the runs) and writes bench/results/cutoff-under-load.json.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { KubeConfig } from "@kubernetes/client-node";
import type { MqttClient } from "mqtt";
import { API_VERSION } from "../src/api/group.js";
import { operatorConfigSchema } from "../src/config.js";
import { Resource } from "../src/controllers/resources.js";
import { install } from "../src/install.js";
import { createLogger } from "../src/observability/logger.js";
import { startOperator } from "../src/operator.js";
import { isReady } from "../src/runtime/conditions.js";
import { KubeClient } from "../src/runtime/kube-client.js";
import { type KubeObject, type ResourceType, resourcePath } from "../src/runtime/kube-object.js";
import { killServersOnSignal } from "../test/harness/process.js";
import { repoRoot, type StackEnv, stackVariables, startStack } from "../test/harness/stack.js";
import { type CutoffRun, cutoffFigures, pooledP99 } from "./support/cutoff-figures.js";
import { connectWithPem, type DeviceEndpoint } from "./support/mqtt-device.js";
import { writeResults } from "./support/results.js";
import { summarize } from "./support/stats.js";

const { values: args } = parseArgs({
  options: {
    devices: { type: "string", default: "500" },
    cutoffs: { type: "string", default: "10" },
    runs: { type: "string", default: "3" },
    "gap-ms": { type: "string", default: "1000" },
  },
});
const deviceCount = Number(args.devices);
const cutoffCount = Number(args.cutoffs);
const runCount = Number(args.runs);
const gapMs = Number(args["gap-ms"]);

const QUIET = "quiet";
const BUSY = "busy";
const CREATE_CONCURRENCY = 50;
const DROP_TIMEOUT_MS = 120_000;
/** Generous: a whole tenant is cut off by its broker gate at once, but 5,000 closes are observed here. */
const SUSPEND_TIMEOUT_MS = 600_000;

function fail(message: string): never {
  throw new Error(message);
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) fail(`${what}: not reached in ${timeoutMs / 1000} s`);
    await sleep(250);
  }
}

async function list(client: KubeClient, resource: ResourceType, namespace: string): Promise<KubeObject[]> {
  const body = (await client.request({
    verb: "list",
    method: "GET",
    path: resourcePath(resource, { namespace }),
  })) as { items: KubeObject[] };
  return body.items;
}

async function applyReadyTenant(
  client: KubeClient,
  name: string,
  spec: Record<string, unknown>,
): Promise<void> {
  // Created, not applied: an apply under the operator's field manager would be undone by the operator's own applies.
  await client.create(Resource.tenant, { apiVersion: API_VERSION, kind: "Tenant", metadata: { name }, spec });
  await until(
    `Tenant ${name} Ready`,
    async () => (isReady(await client.get(Resource.tenant, { name })) ? true : undefined),
    180_000,
  );
}

function createDevices(client: KubeClient, namespace: string, names: readonly string[]): Promise<void> {
  return (async () => {
    for (let i = 0; i < names.length; i += CREATE_CONCURRENCY) {
      await Promise.all(
        names.slice(i, i + CREATE_CONCURRENCY).map((name) =>
          client.create(Resource.device, {
            apiVersion: API_VERSION,
            kind: "Device",
            metadata: { name, namespace },
            spec: {},
          }),
        ),
      );
    }
  })();
}

async function readyCount(client: KubeClient, namespace: string): Promise<number> {
  return (await list(client, Resource.device, namespace)).filter(isReady).length;
}

/** Connects every device of `namespace` whose mirrored credentials exist; returns the clients by device. */
async function connectAll(
  client: KubeClient,
  endpoint: DeviceEndpoint,
  namespace: string,
): Promise<Map<string, MqttClient>> {
  const secrets = (await list(client, Resource.secret, namespace)) as Array<
    KubeObject & { data?: Record<string, string> }
  >;
  const clients = new Map<string, MqttClient>();
  const text = (value: string | undefined) => Buffer.from(value ?? "", "base64");
  const credentials = secrets.filter((s) => s.metadata.name.endsWith("-mqtt") && s.data?.["tls.crt"]);
  for (let i = 0; i < credentials.length; i += 100) {
    await Promise.all(
      credentials.slice(i, i + 100).map(async (secret) => {
        const device = secret.metadata.name.replace(/-mqtt$/, "");
        clients.set(
          device,
          await connectWithPem(endpoint, {
            cert: text(secret.data?.["tls.crt"]),
            key: text(secret.data?.["tls.key"]),
          }),
        );
      }),
    );
  }
  return clients;
}

/** Resolves with the time (performance.now) at which `client`'s connection closed. */
function closedAt(client: MqttClient, timeoutMs = DROP_TIMEOUT_MS): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("connection not dropped in time")), timeoutMs);
    client.once("close", () => {
      clearTimeout(timer);
      resolve(performance.now());
    });
  });
}

/** Disables `device` and returns the time from sending the change to its live connection closing. */
async function cutOff(client: KubeClient, live: MqttClient, device: string): Promise<number> {
  const dropped = closedAt(live);
  const sentAt = performance.now();
  await client.mergePatch(Resource.device, { namespace: QUIET, name: device }, { spec: { enabled: false } });
  return (await dropped) - sentAt;
}

async function oneRun(run: number): Promise<CutoffRun> {
  const stateDir = await mkdtemp(join(tmpdir(), "bench-cutoff-"));
  const stack = await startStack(stateDir);
  try {
    return await measure(run, stack.env);
  } finally {
    await stack.stop();
    await rm(stateDir, { recursive: true, force: true });
  }
}

async function measure(run: number, env: StackEnv): Promise<CutoffRun> {
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(env.kubeconfig);
  const client = new KubeClient(kubeConfig, { fieldManager: "bench-user" });
  const config = operatorConfigSchema.parse({
    ...stackVariables(env),
    PROBE_BIND_ADDRESS: "127.0.0.1:0",
    LOG_LEVEL: "warn",
  });
  await install(client, config);
  const operator = await startOperator({
    kubeConfig,
    config,
    logger: createLogger({ level: "warn" }),
    leaderElection: false,
  });
  const endpoint: DeviceEndpoint = env.broker;
  const open: MqttClient[] = [];
  try {
    await applyReadyTenant(client, QUIET, {});
    await applyReadyTenant(client, BUSY, { devices: { maxDevices: deviceCount } });
    const victims = Array.from({ length: 2 * cutoffCount }, (_, i) => `victim-${i}`);
    await createDevices(client, QUIET, victims);
    await until(
      "victims Ready",
      async () => ((await readyCount(client, QUIET)) === victims.length ? true : undefined),
      300_000,
    );
    const live = await connectAll(client, endpoint, QUIET);
    open.push(...live.values());
    const victimClient = (name: string) => live.get(name) ?? fail(`victim ${name} not connected`);

    const baselineMs: number[] = [];
    for (const victim of victims.slice(0, cutoffCount)) {
      baselineMs.push(await cutOff(client, victimClient(victim), victim));
      process.stdout.write(`  run ${run}: cut-off idle ${baselineMs.at(-1)?.toFixed(0)} ms\n`);
      await sleep(gapMs);
    }

    // Under load: the busy tenant's devices are created at once; a poller tracks how many are Ready.
    const busyNames = Array.from({ length: deviceCount }, (_, i) => `meter-${i}`);
    const createdFrom = performance.now();
    let ready = 0;
    let lastReadyAt = 0;
    const creating = createDevices(client, BUSY, busyNames);
    creating.catch(() => {}); // awaited below; this only keeps an early failure from counting as unhandled
    const polling = (async () => {
      while (ready < deviceCount) {
        // Listing thousands of Devices every second would load the API server the operator needs.
        await sleep(Math.max(1_000, deviceCount));
        ready = await readyCount(client, BUSY);
        lastReadyAt = performance.now();
        if (performance.now() - createdFrom > 60 * 60_000) fail("busy devices not Ready after an hour");
      }
    })();
    polling.catch(() => {});
    // Let a backlog build before the first cut-off.
    await until(
      "a backlog",
      async () =>
        (await list(client, Resource.device, BUSY)).length >= Math.min(deviceCount, 100) ? true : undefined,
      120_000,
    );
    const underLoadMs: number[] = [];
    let discarded = 0;
    for (const victim of victims.slice(cutoffCount)) {
      const loadedBefore = ready < deviceCount;
      const ms = await cutOff(client, victimClient(victim), victim);
      const stillLoaded = (await readyCount(client, BUSY)) < deviceCount;
      if (loadedBefore && stillLoaded) underLoadMs.push(ms);
      else discarded++;
      process.stdout.write(
        `  run ${run}: cut-off under load ${ms.toFixed(0)} ms (busy Ready ${ready}/${deviceCount})\n`,
      );
      await sleep(gapMs);
    }
    await creating;
    await polling;
    const provisioningSeconds = (lastReadyAt - createdFrom) / 1000;

    // Suspend: every busy device connected, then the whole tenant cut off at once.
    const fleet = await connectAll(client, endpoint, BUSY);
    open.push(...fleet.values());
    const drops = [...fleet.values()].map((c) => closedAt(c, SUSPEND_TIMEOUT_MS).catch(() => undefined));
    const suspendedAt = performance.now();
    await client.mergePatch(Resource.tenant, { name: BUSY }, { spec: { suspended: true } });
    const closed = (await Promise.all(drops)).filter((at) => at !== undefined);
    const dropsMs = closed.map((at) => at - suspendedAt);
    return {
      baselineMs,
      underLoadMs,
      discarded,
      provisioningSeconds,
      devicesPerSecond: deviceCount / provisioningSeconds,
      suspend: {
        connected: fleet.size,
        notDropped: fleet.size - closed.length,
        dropsMs: summarize(dropsMs),
        firstMs: Math.min(...dropsMs),
      },
    };
  } finally {
    await Promise.all(open.map((c) => c.endAsync(true).catch(() => undefined)));
    await operator.stop();
  }
}

async function main(): Promise<void> {
  killServersOnSignal();
  const runs: CutoffRun[] = [];
  for (let run = 1; run <= runCount; run++) {
    console.log(
      `run ${run}/${runCount}: ${deviceCount} devices provisioned, ${cutoffCount} cut-offs idle and under load`,
    );
    runs.push(await oneRun(run));
  }
  const figures = cutoffFigures(runs, deviceCount);
  const pooled = pooledP99(runs);
  const samples = runs.reduce((sum, r) => sum + r.underLoadMs.length, 0);
  const discarded = runs.reduce((sum, r) => sum + r.discarded, 0);
  console.log(
    `\n${runCount} runs, fresh stack each, operator in-process; ${cutoffCount} cut-offs per phase per run (${samples} under load kept, ${discarded} discarded: load was over)\n`,
  );
  console.log(`| ${"measure".padEnd(64)} | unit      | median | min–max         |`);
  console.log(`|${"-".repeat(66)}|-----------|--------|-----------------|`);
  const fmt = (n: number) => (n >= 100 ? n.toFixed(0) : n.toFixed(1));
  for (const f of figures) {
    console.log(
      `| ${f.label.padEnd(64)} | ${f.unit.padEnd(9)} | ${fmt(f.median).padStart(6)} | ${`${fmt(f.min)}–${fmt(f.max)}`.padEnd(15)} |`,
    );
  }
  console.log(
    `pooled over all runs: cut-off p99 idle ${fmt(pooled.baselineMs)} ms, under load ${fmt(pooled.underLoadMs)} ms`,
  );
  const out = await writeResults(repoRoot, {
    benchmark: "cutoff-under-load",
    parameters: { devices: deviceCount, cutoffs: cutoffCount, gapMs, pooledP99: pooled, samples, discarded },
    runs,
    figures,
  });
  console.log(`\nwrote ${out}`);
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
