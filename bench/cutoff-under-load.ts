/**
 * How long a cut-off takes while another tenant's devices are being provisioned (issue 9 part 4,
 * test audit T14), against a baseline measured in the same run on an idle operator, and where the
 * time goes.
 *
 * What runs where (one machine, all processes sharing its cores): each run starts a fresh stack
 * (kube-apiserver, etcd, cert-manager, Mosquitto, each its own process); the operator runs as its
 * own process (`iot-tenant-operator run` from source, as in its pod), so that this process's load
 * generator, poller and MQTT clients do not share its event loop. This process then:
 *  1. baseline: `--cutoffs` connected devices of tenant "quiet" are disabled one after another on
 *     an idle operator; each sample is the time from sending `spec.enabled: false` to the device's
 *     live MQTT connection closing, as this process sees it;
 *  2. under load: `--devices` new Devices of tenant "busy" are created (50 requests at a time;
 *     this process counts them Ready from a watch, not by listing); while they are being provisioned (not all Ready: checked at the disable and at the drop), as
 *     many other quiet devices are disabled the same way; beside it the provisioning throughput
 *     (busy devices Ready per second, from the first create to the last Ready);
 *  3. suspend: every busy device connects, then the busy tenant is suspended; time to the first,
 *     median, p99 and last dropped connection.
 * With --cutoffs-only a run ends after step 2 (creating stops; throughput is the devices Ready by
 * then per second): on a loaded machine provisioning thousands of devices can take an hour.
 * Cut-off samples are kept only when the busy tenant still had devices not Ready both when the
 * disable was sent and when the connection dropped.
 *
 * Each cut-off is split into stages (bench/support/cutoff-trace.ts) by joining this process's
 * timestamps with the two lines the operator logs per cut-off; beside them the event-loop delay of
 * the operator (its nodejs_eventloop_lag_* metrics, scraped every second) and of this process, and
 * the machine's load average at the start and end of each phase.
 *
 *   npx tsx bench/cutoff-under-load.ts [--devices 500] [--cutoffs 10] [--runs 3] [--gap-ms 1000] [--cutoffs-only]
 *
 * Prints a table (median and min–max over the runs) and writes bench/results/cutoff-under-load.json;
 * with fewer than 3 runs (not publishable) it writes bench/results/partial/cutoff-under-load.json.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { KubeConfig } from "@kubernetes/client-node";
import type { MqttClient } from "mqtt";
import { API_VERSION } from "../src/api/group.js";
import { operatorConfigSchema } from "../src/config.js";
import { Resource } from "../src/controllers/resources.js";
import { install } from "../src/install.js";
import { createLogger } from "../src/observability/logger.js";
import { isReady } from "../src/runtime/conditions.js";
import { Informer } from "../src/runtime/informer.js";
import { KubeApiError, KubeClient } from "../src/runtime/kube-client.js";
import { type KubeObject, type ResourceType, resourcePath } from "../src/runtime/kube-object.js";
import { freePort } from "../test/harness/ports.js";
import { killServersOnSignal, type ManagedProcess, startProcess } from "../test/harness/process.js";
import { repoRoot, type StackEnv, stackVariables, startStack } from "../test/harness/stack.js";
import { type CutoffRun, cutoffFigures, type PhaseConditions, pooledP99 } from "./support/cutoff-figures.js";
import { type CutoffSample, STAGE_MEANING, stageSummary, traceCutoffs } from "./support/cutoff-trace.js";
import { connectWithPem, type DeviceEndpoint } from "./support/mqtt-device.js";
import { MIN_RUNS, RESULTS_DIR, writeResults } from "./support/results.js";
import { summarize } from "./support/stats.js";

const { values: args } = parseArgs({
  options: {
    devices: { type: "string", default: "500" },
    cutoffs: { type: "string", default: "10" },
    runs: { type: "string", default: "3" },
    "gap-ms": { type: "string", default: "1000" },
    "cutoffs-only": { type: "boolean", default: false },
  },
});
const deviceCount = Number(args.devices);
const cutoffCount = Number(args.cutoffs);
const runCount = Number(args.runs);
const gapMs = Number(args["gap-ms"]);
const cutoffsOnly = args["cutoffs-only"];

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

/**
 * Concurrent creates in one namespace race on its ResourceQuota's usage: the API server answers
 * 409 "the object has been modified" to the losers, which a client retries.
 */
async function createRetryingConflicts(
  client: KubeClient,
  device: Parameters<KubeClient["create"]>[1],
): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await client.create(Resource.device, device);
      return;
    } catch (error) {
      const conflict =
        error instanceof KubeApiError && error.code === 409 && error.reason !== "AlreadyExists";
      if (!conflict || attempt === 10) throw error;
      await sleep(100 * attempt);
    }
  }
}

function createDevices(
  client: KubeClient,
  namespace: string,
  names: readonly string[],
  stopped: () => boolean = () => false,
): Promise<void> {
  return (async () => {
    for (let i = 0; i < names.length && !stopped(); i += CREATE_CONCURRENCY) {
      await Promise.all(
        names.slice(i, i + CREATE_CONCURRENCY).map((name) =>
          createRetryingConflicts(client, {
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

/** Wall-clock milliseconds with sub-millisecond resolution: comparable with the operator's log. */
const epochNow = () => performance.timeOrigin + performance.now();

/** Resolves with the time (epoch ms) at which `client`'s connection closed. */
function closedAt(client: MqttClient, timeoutMs = DROP_TIMEOUT_MS): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("connection not dropped in time")), timeoutMs);
    client.once("close", () => {
      clearTimeout(timer);
      resolve(epochNow());
    });
  });
}

/** Disables `device` and returns when the change was sent and answered and the live connection closed. */
async function cutOff(
  client: KubeClient,
  operator: ManagedProcess,
  live: MqttClient,
  device: string,
): Promise<CutoffSample> {
  const dropped = Promise.race([
    closedAt(live),
    operator.exited.then((code) => fail(`the operator exited (${code}); see ${operator.logFile}`)),
  ]);
  const sentAt = epochNow();
  await client.mergePatch(Resource.device, { namespace: QUIET, name: device }, { spec: { enabled: false } });
  const patchedAt = epochNow();
  return { key: `${QUIET}/${device}`, tenant: QUIET, device, sentAt, patchedAt, closedAt: await dropped };
}

const totalMs = (sample: CutoffSample) => sample.closedAt - sample.sentAt;

/** One cut-off's total and, once the operator has logged them, its stages. */
async function describe(sample: CutoffSample, operatorLog: string): Promise<string> {
  // The controller logs when its reconcile ends, after the status write: it may come later.
  let [traced] = traceCutoffs([sample], await readFile(operatorLog, "utf8"));
  for (let attempt = 0; !traced && attempt < 20; attempt++) {
    await sleep(250);
    [traced] = traceCutoffs([sample], await readFile(operatorLog, "utf8"));
  }
  const stages = traced
    ? Object.entries(traced.ms)
        .map(([stage, ms]) => `${stage} ${ms.toFixed(0)}`)
        .join(", ")
    : "untraced";
  return `${totalMs(sample).toFixed(0)} ms (${stages}${traced ? `; adapter ${traced.behind}` : ""})`;
}

/**
 * On this shared 2-core machine the default lease (15 s, renewed within 10 s) was lost under the
 * provisioning load and the operator exited, as it must; a pod would restart. The bench measures
 * cut-offs, not fail-over, so its single replica gets a lease it keeps under load.
 */
const BENCH_LEASE = {
  LEASE_DURATION_SECONDS: "120",
  LEASE_RENEW_DEADLINE_SECONDS: "90",
  LEASE_RETRY_PERIOD_SECONDS: "2",
} as const;

/** The operator as its own process, logging at info (one line per cut-off stage), its /metrics on `probePort`. */
async function startOperatorProcess(env: StackEnv): Promise<ManagedProcess & { probePort: number }> {
  const probePort = await freePort();
  const operator = startProcess(
    "operator",
    process.execPath,
    ["--import", "tsx", join(repoRoot, "test/fixtures/operator-cli.ts"), "run"],
    {
      logFile: join(env.stateDir, "operator.log"),
      cwd: repoRoot,
      env: {
        ...process.env,
        ...stackVariables(env),
        PROBE_BIND_ADDRESS: `127.0.0.1:${probePort}`,
        LOG_LEVEL: "info",
        ...BENCH_LEASE,
      },
    },
  );
  return { ...operator, probePort };
}

/**
 * Samples, while a phase runs, the operator's event-loop delay (p99 and max of each second, from
 * its metrics, which reset on every scrape), this process's own, and the machine's load average.
 */
function watchConditions(probePort: number): { stop(): Promise<PhaseConditions> } {
  const loadAtStart = loadavg();
  const operatorP99: number[] = [];
  const operatorMax: number[] = [];
  const own = monitorEventLoopDelay({ resolution: 10 });
  own.enable();
  let running = true;
  const scraping = (async () => {
    while (running) {
      await sleep(1_000);
      const text = await fetch(`http://127.0.0.1:${probePort}/metrics`)
        .then((r) => r.text())
        .catch(() => "");
      const gauge = (name: string) => {
        const match = new RegExp(`^${name}(?:\\{[^}]*\\})? ([^ ]+)$`, "m").exec(text);
        return match ? Number(match[1]) * 1000 : undefined;
      };
      const p99 = gauge("nodejs_eventloop_lag_p99_seconds");
      const max = gauge("nodejs_eventloop_lag_max_seconds");
      if (p99 !== undefined) operatorP99.push(p99);
      if (max !== undefined) operatorMax.push(max);
    }
  })();
  return {
    async stop() {
      running = false;
      await scraping;
      own.disable();
      return {
        loadAverage: { start: loadAtStart, end: loadavg() },
        operatorEventLoopDelayMs: {
          p99PerSecond: summarize(operatorP99),
          maxPerSecond: summarize(operatorMax),
        },
        benchEventLoopDelayMs: { p99: own.percentile(99) / 1e6, max: own.max / 1e6 },
      };
    },
  };
}

/** Every busy device connected, then the whole tenant cut off at once: when each connection dropped. */
async function suspendAll(
  client: KubeClient,
  endpoint: DeviceEndpoint,
  open: MqttClient[],
): Promise<NonNullable<CutoffRun["suspend"]>> {
  const fleet = await connectAll(client, endpoint, BUSY);
  open.push(...fleet.values());
  const drops = [...fleet.values()].map((c) => closedAt(c, SUSPEND_TIMEOUT_MS).catch(() => undefined));
  const suspendedAt = epochNow();
  await client.mergePatch(Resource.tenant, { name: BUSY }, { spec: { suspended: true } });
  const closed = (await Promise.all(drops)).filter((at) => at !== undefined);
  const dropsMs = closed.map((at) => at - suspendedAt);
  return {
    connected: fleet.size,
    notDropped: fleet.size - closed.length,
    dropsMs: summarize(dropsMs),
    firstMs: Math.min(...dropsMs),
  };
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
  const config = operatorConfigSchema.parse({ ...stackVariables(env), PROBE_BIND_ADDRESS: "127.0.0.1:0" });
  await install(client, config);
  const operator = await startOperatorProcess(env);
  const endpoint: DeviceEndpoint = env.broker;
  const open: MqttClient[] = [];
  // Busy devices are counted from a watch: listing thousands of them every second (as this bench
  // once did) loaded the API server whose answer to the disable is part of every sample.
  const busy = new Informer(
    client,
    { resource: Resource.device, namespace: BUSY },
    createLogger({ level: "warn" }),
  );
  try {
    await applyReadyTenant(client, QUIET, {});
    await applyReadyTenant(client, BUSY, { devices: { maxDevices: deviceCount } });
    busy.start();
    await busy.waitForSync();
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

    const idleConditions = watchConditions(operator.probePort);
    const baseline: CutoffSample[] = [];
    for (const victim of victims.slice(0, cutoffCount)) {
      const sample = await cutOff(client, operator, victimClient(victim), victim);
      baseline.push(sample);
      process.stdout.write(`  run ${run}: cut-off idle ${await describe(sample, operator.logFile)}\n`);
      await sleep(gapMs);
    }
    const idle = await idleConditions.stop();

    // Under load: the busy tenant's devices are created at once; a poller tracks how many are Ready.
    const busyNames = Array.from({ length: deviceCount }, (_, i) => `meter-${i}`);
    const createdFrom = performance.now();
    let ready = 0;
    let lastReadyAt = 0;
    let stopped = false;
    const creating = createDevices(client, BUSY, busyNames, () => stopped);
    creating.catch(() => {}); // awaited below; this only keeps an early failure from counting as unhandled
    const busyReady = () => busy.list(BUSY).filter(isReady).length;
    const polling = (async () => {
      while (ready < deviceCount && !stopped) {
        await sleep(1_000);
        ready = busyReady();
        lastReadyAt = performance.now();
        if (performance.now() - createdFrom > 60 * 60_000) fail("busy devices not Ready after an hour");
      }
    })();
    polling.catch(() => {});
    // Let a backlog build before the first cut-off.
    await until(
      "a backlog",
      async () => (busy.count(BUSY) >= Math.min(deviceCount, 100) ? true : undefined),
      120_000,
    );
    const loadConditions = watchConditions(operator.probePort);
    const underLoad: CutoffSample[] = [];
    let discarded = 0;
    for (const victim of victims.slice(cutoffCount)) {
      const loadedBefore = ready < deviceCount;
      const sample = await cutOff(client, operator, victimClient(victim), victim);
      const stillLoaded = busyReady() < deviceCount;
      if (loadedBefore && stillLoaded) underLoad.push(sample);
      else discarded++;
      process.stdout.write(
        `  run ${run}: cut-off under load ${await describe(sample, operator.logFile)} (busy Ready ${ready}/${deviceCount})\n`,
      );
      await sleep(gapMs);
    }
    const loaded = await loadConditions.stop();
    // --cutoffs-only: the run ends with the cut-offs; throughput is what was Ready by then.
    stopped = cutoffsOnly;
    await creating;
    await polling;
    const readyAtEnd = cutoffsOnly ? busyReady() : deviceCount;
    const provisioningSeconds = ((cutoffsOnly ? performance.now() : lastReadyAt) - createdFrom) / 1000;
    const suspend = cutoffsOnly ? undefined : await suspendAll(client, endpoint, open);

    const operatorLog = await readFile(operator.logFile, "utf8");
    const tracedIdle = traceCutoffs(baseline, operatorLog);
    const tracedLoad = traceCutoffs(underLoad, operatorLog);
    return {
      baselineMs: baseline.map(totalMs),
      underLoadMs: underLoad.map(totalMs),
      discarded,
      provisioningSeconds,
      devicesPerSecond: readyAtEnd / provisioningSeconds,
      ...(suspend ? { suspend } : {}),
      stages: {
        idle: { ...stageSummary(tracedIdle), untraced: baseline.length - tracedIdle.length },
        underLoad: { ...stageSummary(tracedLoad), untraced: underLoad.length - tracedLoad.length },
      },
      conditions: { idle, underLoad: loaded },
      samples: { idle: tracedIdle, underLoad: tracedLoad },
    };
  } finally {
    await Promise.all(open.map((c) => c.endAsync(true).catch(() => undefined)));
    await busy.stop();
    await operator.stop(10_000);
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
    `\n${runCount} runs, fresh stack each, operator in its own process, load generator and MQTT clients in this one, one machine; ${cutoffCount} cut-offs per phase per run (${samples} under load kept, ${discarded} discarded: load was over)\n`,
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
  console.log("stages:");
  for (const [stage, meaning] of Object.entries(STAGE_MEANING)) console.log(`  ${stage}: ${meaning}`);
  const results = {
    benchmark: "cutoff-under-load",
    parameters: {
      devices: deviceCount,
      cutoffs: cutoffCount,
      cutoffsOnly,
      gapMs,
      pooledP99: pooled,
      samples,
      discarded,
      placement:
        "operator in its own process; load generator, poller and MQTT clients in the bench process; stack processes beside them; one machine",
      stages: STAGE_MEANING,
    },
    runs,
    figures,
  };
  if (runCount >= MIN_RUNS) {
    try {
      console.log(`\nwrote ${await writeResults(repoRoot, results)}`);
      return;
    } catch (error) {
      console.error(error instanceof Error ? error.message : error);
    }
  }
  // Too few runs (or not valid) to publish: kept for reading, outside the results the README table is made from.
  const dir = join(repoRoot, RESULTS_DIR, "partial");
  await mkdir(dir, { recursive: true });
  const out = join(dir, "cutoff-under-load.json");
  const command = ["npx tsx", "bench/cutoff-under-load.ts", ...process.argv.slice(2)].join(" ");
  await writeFile(
    out,
    `${JSON.stringify({ ...results, command, recordedAt: new Date().toISOString() }, null, 2)}\n`,
  );
  console.log(`\nwrote ${out} (fewer than ${MIN_RUNS} runs: not a publishable result)`);
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
