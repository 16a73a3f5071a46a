/**
 * The operator's own cost at fleet size: one tenant of `--devices` Devices, the operator running as
 * its own process (`bin/iot-tenant-operator.js run`, the compiled build: `npm run build` first) with
 * the chart's process settings (OPERATOR_PROCESS_ENV, OPERATOR_NODE_FLAGS) and the image's allocator
 * (jemalloc, preloaded), on a fresh stack, `--runs` times. Per run:
 * - convergence: every Device's time to Ready (p50/p99) and the total;
 * - memory: the operator's RSS after convergence, against its RSS on the same stack before any
 *   Device existed (the same-run baseline);
 * - idle: over `--idle` seconds after convergence, the operator's CPU and the API server's writes
 *   (apiserver_request_total by verb and resource; leader-election lease renewals shown apart);
 * - restart: the operator stopped (SIGTERM) and started again: seconds until /readyz, until its
 *   queues are empty (caught up), the writes it made meanwhile, and how long a Device disabled right
 *   after that takes to show Ready=False (ready to react), the broker commands it sent meanwhile;
 *   the catch-up against the same-run
 *   baseline of listing what its caches hold.
 * Writes are counted twice: all of the API server's (apiserver_request_total, which includes
 * cert-manager's and its Events) and the operator's own (its rest_client_requests_total).
 * With `--heap-snapshot DIR` the restarted operator writes a V8 heap snapshot into DIR at the end of
 * the run (for finding what the memory holds; it inflates RSS, so it is taken after every figure).
 * The operator's memory (RSS, V8 heap used and reserved, external) is also sampled as the Ready count
 * passes 1,000, 5,000 and 10,000. Everything known so far is rewritten, stage by stage, to
 * bench/results/progress/operator-scale-<devices>.json, so a long run that is cut short still leaves
 * its figures (that folder is not read by `npm run perf:table`, which wants 3 complete runs).
 *
 * `--broker nats` runs it against a 3-node NATS cluster instead of Mosquitto (a fleet past Mosquitto's
 * reach: dynamic security rewrites its whole file on every command, see the README).
 *
 *   npx tsx bench/operator-scale.ts [--devices 1000] [--runs 3] [--idle 30] [--broker mosquitto|nats]
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { loadavg, tmpdir, uptime } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { KubeConfig } from "@kubernetes/client-node";
import { z } from "zod";
import { API_VERSION } from "../src/api/group.js";
import { operatorConfigSchema } from "../src/config.js";
import { Resource } from "../src/controllers/resources.js";
import { OPERATOR_NODE_FLAGS, OPERATOR_PROCESS_ENV } from "../src/deploy/chart.js";
import { install } from "../src/install.js";
import { isReady } from "../src/runtime/conditions.js";
import { KubeClient } from "../src/runtime/kube-client.js";
import { type KubeObject, type ResourceType, resourcePath } from "../src/runtime/kube-object.js";
import { killServersOnSignal } from "../test/harness/process.js";
import { repoRoot, stackVariables, startNatsStack, startStack } from "../test/harness/stack.js";
import { describeMachine, MIN_RUNS, RESULTS_DIR, spread, writeResults } from "./support/results.js";
import { percentile, type Summary, summarize } from "./support/stats.js";

const { values } = parseArgs({
  options: {
    devices: { type: "string", default: "1000" },
    runs: { type: "string", default: "3" },
    idle: { type: "string", default: "30" },
    "heap-snapshot": { type: "string" },
    broker: { type: "string", default: "mosquitto" },
  },
});
const deviceCount = Number(values.devices);
const runCount = Number(values.runs);
const idleSeconds = Number(values.idle);
const heapSnapshotDir = values["heap-snapshot"];
const brokerKind = z.enum(["mosquitto", "nats"]).parse(values.broker);
const IN_FLIGHT = 16;
const USER_FIELD_MANAGER = "bench-user";
const WRITE_VERBS = new Set(["POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"]);
/** The verbs of the operator's own client (src/runtime/kube-client.ts) that write. */
const OPERATOR_WRITE_VERBS = new Set(["create", "update", "patch", "apply", "delete"]);

/** The operator's memory at one moment, in MB. */
interface Memory {
  readonly rssMb: number;
  readonly heapUsedMb: number;
  readonly heapTotalMb: number;
  readonly externalMb: number;
}

/** The operator as the Ready count passed `ready`. */
interface Checkpoint extends Memory {
  readonly ready: number;
  readonly elapsedS: number;
  readonly loadAverage: number;
}

interface Run {
  readonly devices: Summary;
  readonly convergeMs: number;
  readonly rssBeforeMb: number;
  readonly rssConvergedMb: number;
  readonly heapConvergedMb: number;
  readonly memoryConverged: Memory;
  readonly checkpoints: readonly Checkpoint[];
  /** Times the operator exited on its own and was started again (see supervise). */
  readonly exits: number;
  readonly idle: {
    cpuPercent: number;
    writes: Record<string, number>;
    leaseWrites: number;
    operatorWrites: Record<string, number>;
  };
  readonly restart: {
    readyMs: number;
    caughtUpMs: number;
    writes: Record<string, number>;
    leaseWrites: number;
    operatorWrites: Record<string, number>;
    brokerCommands: number;
    reactMs: number;
    rssMb: number;
    listBaselineMs: number;
  };
  readonly loadAverage: number;
}

const CHECKPOINTS = [1_000, 5_000, 10_000];

/** What a run has got to so far, rewritten as it goes (see the header). */
const progress: {
  command: string;
  startedAt: string;
  parameters: Record<string, number>;
  broker: string;
  machine?: Awaited<ReturnType<typeof describeMachine>>;
  runs: Run[];
  current?: { run: number; checkpoints: Checkpoint[] } & Record<string, unknown>;
} = {
  command: ["npx tsx", "bench/operator-scale.ts", ...process.argv.slice(2)].join(" "),
  startedAt: new Date().toISOString(),
  parameters: { devices: deviceCount, runs: runCount, idleSeconds },
  broker: brokerKind,
  runs: [],
};
const progressFile = join(
  repoRoot,
  RESULTS_DIR,
  "progress",
  `operator-scale-${deviceCount}${brokerKind === "nats" ? "-nats" : ""}.json`,
);

/** `uptime`'s line: seconds up and the load averages, since other work shares the machine. */
function uptimeLine(): string {
  return `up ${Math.round(uptime())} s, load average ${loadavg()
    .map((l) => l.toFixed(2))
    .join(", ")}`;
}

async function saveProgress(stage: string, fields: Record<string, unknown> = {}): Promise<void> {
  if (progress.current)
    Object.assign(progress.current, fields, { stage, at: new Date().toISOString(), uptime: uptimeLine() });
  progress.machine ??= await describeMachine();
  await mkdir(join(repoRoot, RESULTS_DIR, "progress"), { recursive: true });
  await writeFile(progressFile, `${JSON.stringify(progress, null, 2)}\n`);
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

/** This machine's jemalloc (Debian's libjemalloc2, which scripts/bootstrap.sh installs), as the image preloads it. */
function findJemalloc(): string {
  const found = /libjemalloc\.so\.2 .*=> (\S+)/.exec(
    execFileSync("ldconfig", ["-p"], { encoding: "utf8" }),
  )?.[1];
  if (!found)
    throw new Error("libjemalloc.so.2 not found: install Debian's libjemalloc2 (npm run bootstrap)");
  return found;
}

/** Looked up once, before any stack starts: a machine without it fails at once. */
const JEMALLOC = findJemalloc();

/** The operator as a process of its own, the way a Deployment runs it. */
class OperatorProcess {
  private constructor(
    readonly child: ChildProcess,
    readonly port: number,
    readonly exited: Promise<void>,
  ) {}

  static async start(env: Record<string, string>): Promise<OperatorProcess> {
    const port = await freePort();
    const entry = [...OPERATOR_NODE_FLAGS, join(repoRoot, "bin/iot-tenant-operator.js"), "run"];
    const child = spawn(process.execPath, entry, {
      env: {
        ...process.env,
        ...OPERATOR_PROCESS_ENV,
        LD_PRELOAD: JEMALLOC,
        ...env,
        ...(heapSnapshotDir
          ? {
              NODE_OPTIONS: `${OPERATOR_PROCESS_ENV.NODE_OPTIONS} --heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${heapSnapshotDir}`,
            }
          : {}),
        PROBE_BIND_ADDRESS: `127.0.0.1:${port}`,
        LOG_LEVEL: "warn",
      },
      stdio: ["ignore", "ignore", "inherit"],
    });
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    // Ctrl-C ends the bench through process.exit (killServersOnSignal): take the operator along.
    const orphaned = () => child.kill("SIGKILL");
    process.once("exit", orphaned);
    void exited.then(() => process.off("exit", orphaned));
    return new OperatorProcess(child, port, exited);
  }

  async stop(): Promise<void> {
    this.child.kill("SIGTERM");
    await this.exited;
  }

  /** Resident set size from /proc, in MB. */
  async rssMb(): Promise<number> {
    const status = await readFile(`/proc/${this.child.pid}/status`, "utf8");
    return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? Number.NaN) / 1024;
  }

  /** CPU seconds used so far (user + system). */
  async cpuSeconds(): Promise<number> {
    const fields = (await readFile(`/proc/${this.child.pid}/stat`, "utf8")).split(") ")[1]?.split(" ") ?? [];
    return (Number(fields[11]) + Number(fields[12])) / 100;
  }

  async metrics(): Promise<string> {
    return (await fetch(`http://127.0.0.1:${this.port}/metrics`)).text();
  }

  async memory(): Promise<Memory> {
    const text = await this.metrics();
    const mb = (name: string) => sample(text, name) / 2 ** 20;
    return {
      rssMb: await this.rssMb(),
      heapUsedMb: mb("nodejs_heap_size_used_bytes"),
      heapTotalMb: mb("nodejs_heap_size_total_bytes"),
      externalMb: mb("nodejs_external_memory_bytes"),
    };
  }

  /** Writes a heap snapshot into `dir` (started with --heapsnapshot-signal); resolves to its path. */
  async heapSnapshot(dir: string): Promise<string> {
    const snapshots = async () => (await readdir(dir)).filter((f) => f.endsWith(".heapsnapshot"));
    const before = new Set(await snapshots());
    this.child.kill("SIGUSR2");
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      this.assertAlive();
      const written = (await snapshots()).find((f) => !before.has(f));
      // The snapshot is written on the main thread: once it answers again, the file is complete.
      if (written && (await this.ready())) return join(dir, written);
    }
  }

  /** The operator's own API writes so far (its rest_client_requests_total), by `verb resource`. */
  async ownWrites(): Promise<Map<string, number>> {
    const lines = (await this.metrics()).split("\n");
    return writesByVerb(lines, "rest_client_requests_total", OPERATOR_WRITE_VERBS);
  }

  /** Fails fast when the process is gone: a wait on its endpoints would otherwise never end. */
  assertAlive(): void {
    if (this.child.exitCode !== null || this.child.signalCode !== null)
      throw new Error(`the operator exited (${this.child.exitCode ?? this.child.signalCode})`);
  }

  async ready(): Promise<boolean> {
    return fetch(`http://127.0.0.1:${this.port}/readyz`).then(
      (response) => response.ok,
      () => false,
    );
  }
}

/** Sum of a metric's samples whose labels match `where`. */
function sample(text: string, name: string, where: (labels: string) => boolean = () => true): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const labels = line.slice(name.length, line.lastIndexOf(" "));
    if (where(labels)) sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

/** The API server's write requests so far, by `verb resource`. */
async function apiServerWrites(client: KubeClient): Promise<Map<string, number>> {
  const lines: string[] = [];
  await client.stream(
    { verb: "get", method: "GET", path: "/metrics", signal: new AbortController().signal },
    (line) => {
      if (line.startsWith("apiserver_request_total{")) lines.push(line);
    },
  );
  return writesByVerb(lines, "apiserver_request_total", WRITE_VERBS);
}

/** A request counter's samples with a writing verb, summed by `verb resource[/subresource]`. */
function writesByVerb(lines: readonly string[], metric: string, verbs: ReadonlySet<string>) {
  const writes = new Map<string, number>();
  for (const line of lines) {
    if (!line.startsWith(`${metric}{`)) continue;
    const verb = /verb="([^"]*)"/.exec(line)?.[1] ?? "";
    if (!verbs.has(verb)) continue;
    const resource = /resource="([^"]*)"/.exec(line)?.[1] ?? "";
    const subresource = /subresource="([^"]*)"/.exec(line)?.[1];
    const key = `${verb} ${resource}${subresource ? `/${subresource}` : ""}`;
    writes.set(key, (writes.get(key) ?? 0) + Number(line.slice(line.lastIndexOf(" ") + 1)));
  }
  return writes;
}

/** Writes between two readings; lease renewals (leader election) counted apart. */
function writesBetween(before: Map<string, number>, after: Map<string, number>) {
  const writes: Record<string, number> = {};
  let leaseWrites = 0;
  for (const [key, value] of after) {
    const delta = value - (before.get(key) ?? 0);
    if (delta <= 0) continue;
    if (key.endsWith(" leases")) leaseWrites += delta;
    else writes[key] = delta;
  }
  return { writes, leaseWrites };
}

const total = (writes: Record<string, number>) => Object.values(writes).reduce((a, b) => a + b, 0);
const withoutEvents = (writes: Record<string, number>) =>
  Object.fromEntries(Object.entries(writes).filter(([key]) => !key.endsWith(" events")));

/** Resolves once the operator's queues are empty and no reconcile ran over three polls. */
async function untilCaughtUp(operator: OperatorProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = Number.NaN;
  let quiet = 0;
  while (quiet < 3) {
    if (Date.now() > deadline) throw new Error(`operator not caught up after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
    const text = await operator.metrics().catch(() => "");
    const busy = sample(text, "workqueue_depth") + sample(text, "controller_runtime_active_workers");
    const reconciles = sample(text, "controller_runtime_reconcile_total");
    quiet = text && busy === 0 && reconciles === last ? quiet + 1 : 0;
    last = reconciles;
  }
}

/**
 * Watches the namespace's Devices; each one's time to Ready after `start`, once all are Ready.
 * `onReady` hears the count each time it grows.
 */
async function timesToReady(
  client: KubeClient,
  namespace: string,
  start: number,
  onReady: (count: number) => void,
): Promise<number[]> {
  const done = new Map<string, number>();
  const abort = new AbortController();
  const path = resourcePath(Resource.device, { namespace });
  // A 10,000-device run at a few devices per second takes most of an hour on the 2-core machine.
  const deadline = setTimeout(() => abort.abort(), Math.max(60, deviceCount / 100) * 60_000);
  try {
    while (done.size < deviceCount && !abort.signal.aborted) {
      const list = (await client.request({ verb: "list", method: "GET", path })) as {
        metadata: { resourceVersion: string };
        items: KubeObject[];
      };
      for (const item of list.items)
        if (isReady(item) && !done.has(item.metadata.name)) {
          done.set(item.metadata.name, performance.now() - start);
          onReady(done.size);
        }
      if (done.size >= deviceCount) break;
      await client
        .stream(
          {
            verb: "watch",
            method: "GET",
            path,
            query: { watch: true, resourceVersion: list.metadata.resourceVersion, timeoutSeconds: 120 },
            signal: abort.signal,
          },
          (line) => {
            const event = JSON.parse(line) as { object?: KubeObject };
            const item = event.object;
            if (item?.metadata?.name && isReady(item) && !done.has(item.metadata.name)) {
              done.set(item.metadata.name, performance.now() - start);
              onReady(done.size);
              if (done.size >= deviceCount) abort.abort();
            }
          },
        )
        .catch(() => undefined);
    }
  } finally {
    clearTimeout(deadline);
  }
  if (done.size < deviceCount) throw new Error(`only ${done.size} of ${deviceCount} Devices Ready`);
  return [...done.values()];
}

async function inParallel<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await work(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** The same-run floor for a cold cache: listing, paged, what the operator's informers hold. */
async function listBaseline(client: KubeClient, operatorNamespace: string): Promise<number> {
  const started = performance.now();
  const lists: Array<[ResourceType, Record<string, string>]> = [
    [Resource.tenant, {}],
    [Resource.namespace, {}],
    [Resource.device, {}],
    [Resource.secret, { labelSelector: "iot.tenant-operator.io/tenant" }],
    [Resource.certificate, { labelSelector: "iot.tenant-operator.io/tenant" }],
  ];
  for (const [resource, query] of lists) {
    let continueToken: string | undefined;
    do {
      const page = (await client.request({
        verb: "list",
        method: "GET",
        path: resourcePath(
          resource,
          resource === Resource.certificate ? { namespace: operatorNamespace } : {},
        ),
        query: { ...query, limit: 500, continue: continueToken },
      })) as { metadata?: { continue?: string } };
      continueToken = page.metadata?.continue || undefined;
    } while (continueToken);
  }
  return performance.now() - started;
}

/** The stack with the chosen broker: the operator's settings for it, its kubeconfig, its stop. */
async function startBenchStack(stateDir: string) {
  if (brokerKind === "nats") {
    const stack = await startNatsStack(stateDir);
    return { kubeconfig: stack.variables.KUBECONFIG as string, env: stack.variables, stop: stack.stop };
  }
  const stack = await startStack(stateDir);
  return { kubeconfig: stack.env.kubeconfig, env: stackVariables(stack.env), stop: stack.stop };
}

async function oneRun(r: number): Promise<Run> {
  const stateDir = await mkdtemp(join(tmpdir(), "bench-scale-"));
  const stack = await startBenchStack(stateDir);
  let operator: OperatorProcess | undefined;
  let supervising = true;
  try {
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(stack.kubeconfig);
    const client = new KubeClient(kubeConfig, { fieldManager: USER_FIELD_MANAGER });
    const { env } = stack;
    const config = operatorConfigSchema.parse({ ...env, PROBE_BIND_ADDRESS: "127.0.0.1:0" });
    await install(client, config);
    const tenant = `scale-${r}`;
    progress.current = { run: r, checkpoints: [] };
    operator = await OperatorProcess.start(env);
    // As its Deployment would, start the operator again when it exits on its own (a lost lease on a
    // loaded machine); each such exit is counted, and the stages below use the running one.
    let exits = 0;
    const supervise = (process: OperatorProcess) => {
      void process.exited.then(async () => {
        if (!supervising) return;
        exits++;
        console.log(`  the operator exited on its own (${exits}); starting it again`);
        operator = await OperatorProcess.start(env);
        supervise(operator);
        await saveProgress("operator restarted by the supervisor", { exits });
      });
    };
    supervise(operator);
    await client.apply(Resource.tenant, {
      apiVersion: API_VERSION,
      kind: "Tenant",
      metadata: { name: tenant },
      spec: { devices: { maxDevices: deviceCount } },
    });
    for (;;) {
      const observed = await client.get(Resource.tenant, { name: tenant });
      if (isReady(observed)) break;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    await untilCaughtUp(operator, 120_000);
    const rssBeforeMb = await operator.rssMb();

    console.log(`run ${r + 1}/${runCount}: ${deviceCount} Devices…`);
    const start = performance.now();
    const names = Array.from({ length: deviceCount }, (_, i) => `d-${i}`);
    const checkpoints: Checkpoint[] = [];
    const sampled: Array<Promise<void>> = [];
    let readyCount = 0;
    const onReady = (count: number) => {
      readyCount = count;
      if (!CHECKPOINTS.includes(count)) return;
      sampled.push(
        (operator as OperatorProcess).memory().then(async (memory) => {
          const elapsedS = (performance.now() - start) / 1000;
          checkpoints.push({ ready: count, elapsedS, loadAverage: loadavg()[0] ?? 0, ...memory });
          console.log(
            `  ${count} Ready after ${elapsedS.toFixed(0)} s: RSS ${memory.rssMb.toFixed(0)} MB, heap ${memory.heapUsedMb.toFixed(0)} MB`,
          );
          await saveProgress("converging", { ready: count, checkpoints });
        }),
      );
    };
    const ticker = setInterval(() => {
      const elapsedS = (performance.now() - start) / 1000;
      void saveProgress("converging", { ready: readyCount, elapsedS, checkpoints });
    }, 60_000);
    await saveProgress("converging", { ready: 0, checkpoints });
    const ready = timesToReady(client, tenant, start, onReady).finally(() => clearInterval(ticker));
    // Awaited below, once every Device is applied; a failure meanwhile must not go unhandled.
    ready.catch(() => undefined);
    await inParallel(names, IN_FLIGHT, async (name) => {
      const device = {
        apiVersion: API_VERSION,
        kind: "Device",
        metadata: { namespace: tenant, name },
        spec: {},
      };
      // An API server starved of CPU answers 500 (e.g. "resource quota evaluation timed out"); the
      // apply is idempotent, so it is sent again.
      for (let attempt = 1; ; attempt++) {
        try {
          await client.apply(Resource.device, device);
          return;
        } catch (error) {
          if (attempt === 5) throw error;
          await new Promise((resolve) => setTimeout(resolve, 1000 * attempt));
        }
      }
    });
    const times = await ready;
    await Promise.all(sampled);
    const convergeMs = Math.max(...times);
    const devices = summarize(times);
    await saveProgress("converged", { convergeMs, devices });
    await untilCaughtUp(operator, 10 * 60_000);
    const memoryConverged = await operator.memory();
    const { rssMb: rssConvergedMb, heapUsedMb: heapConvergedMb } = memoryConverged;
    await saveProgress("caught up", { memoryConverged });
    console.log(
      `  Ready in ${(convergeMs / 1000).toFixed(1)} s (p50 ${(percentile(times, 50) / 1000).toFixed(1)} s), RSS ${rssConvergedMb.toFixed(0)} MB`,
    );

    const writesBefore = await apiServerWrites(client);
    const ownWritesBefore = await operator.ownWrites();
    const cpuBefore = await operator.cpuSeconds();
    await new Promise((resolve) => setTimeout(resolve, idleSeconds * 1000));
    const cpuPercent = (((await operator.cpuSeconds()) - cpuBefore) / idleSeconds) * 100;
    const idle = {
      cpuPercent,
      ...writesBetween(writesBefore, await apiServerWrites(client)),
      operatorWrites: writesBetween(ownWritesBefore, await operator.ownWrites()).writes,
    };
    await saveProgress("idle measured", { idle });
    console.log(
      `  idle ${idleSeconds} s: CPU ${cpuPercent.toFixed(2)} %, writes ${JSON.stringify(idle.writes)}, the operator's own ${JSON.stringify(idle.operatorWrites)}`,
    );

    supervising = false;
    await operator.stop();
    const listBaselineMs = await listBaseline(client, config.OPERATOR_NAMESPACE);
    const beforeRestart = await apiServerWrites(client);
    const restartedAt = performance.now();
    operator = await OperatorProcess.start(env);
    while (!(await operator.ready())) {
      operator.assertAlive();
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const readyMs = performance.now() - restartedAt;
    await untilCaughtUp(operator, 10 * 60_000);
    const caughtUpMs = performance.now() - restartedAt;
    const restartWrites = {
      ...writesBetween(beforeRestart, await apiServerWrites(client)),
      // A fresh process: everything it counted is since the restart.
      operatorWrites: writesBetween(new Map(), await operator.ownWrites()).writes,
    };
    const brokerCommands = sample(await operator.metrics(), "iot_broker_commands_total");
    const rssMb = await operator.rssMb();
    await saveProgress("restarted", {
      restart: { readyMs, caughtUpMs, ...restartWrites, brokerCommands, rssMb, listBaselineMs },
    });
    const probe = names[0] as string;
    const disabledAt = performance.now();
    await client.apply(Resource.device, {
      apiVersion: API_VERSION,
      kind: "Device",
      metadata: { namespace: tenant, name: probe },
      spec: { enabled: false },
    });
    while (isReady(await client.get(Resource.device, { namespace: tenant, name: probe })))
      await new Promise((resolve) => setTimeout(resolve, 20));
    const reactMs = performance.now() - disabledAt;
    console.log(
      `  restart: ready ${(readyMs / 1000).toFixed(1)} s, caught up ${(caughtUpMs / 1000).toFixed(1)} s (listing alone ${(listBaselineMs / 1000).toFixed(1)} s), writes ${JSON.stringify(restartWrites.writes)}, the operator's own ${JSON.stringify(restartWrites.operatorWrites)}, broker commands ${brokerCommands}, reacts in ${reactMs.toFixed(0)} ms`,
    );
    if (heapSnapshotDir) console.log(`  heap snapshot: ${await operator.heapSnapshot(heapSnapshotDir)}`);
    return {
      devices,
      convergeMs,
      rssBeforeMb,
      rssConvergedMb,
      heapConvergedMb,
      memoryConverged,
      checkpoints,
      exits,
      idle,
      restart: { readyMs, caughtUpMs, ...restartWrites, brokerCommands, reactMs, rssMb, listBaselineMs },
      loadAverage: loadavg()[0] ?? 0,
    };
  } finally {
    supervising = false;
    await operator?.stop();
    await stack.stop();
    await rm(stateDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  killServersOnSignal();
  if (heapSnapshotDir) await mkdir(heapSnapshotDir, { recursive: true });
  const runs: Run[] = [];
  for (let r = 0; r < runCount; r++) {
    runs.push(await oneRun(r));
    progress.runs = runs;
    progress.current = undefined;
    await saveProgress("run done");
  }
  const s = (ms: number) => ms / 1000;
  const figures = [
    spread(
      `${deviceCount} Devices in one tenant to Ready, operator process (${brokerKind})`,
      "s",
      runs.map((run) => s(run.convergeMs)),
    ),
    spread(
      "a Device's time to Ready, p50",
      "s",
      runs.map((run) => s(run.devices.p50)),
    ),
    spread(
      "a Device's time to Ready, p99",
      "s",
      runs.map((run) => s(run.devices.p99)),
    ),
    spread(
      `operator RSS with ${deviceCount} Devices converged`,
      "MB",
      runs.map((run) => run.rssConvergedMb),
    ),
    spread(
      "operator RSS: converged ÷ before any Device",
      "×",
      runs.map((run) => run.rssConvergedMb / run.rssBeforeMb),
    ),
    spread(
      `operator CPU while idle (${idleSeconds} s window)`,
      "% of a core",
      runs.map((run) => run.idle.cpuPercent),
    ),
    spread(
      "API writes while idle, lease renewals apart",
      "writes",
      runs.map((run) => total(run.idle.writes)),
    ),
    spread(
      "the operator's own API writes while idle besides Events, lease renewals apart",
      "writes",
      runs.map((run) => total(withoutEvents(run.idle.operatorWrites))),
    ),
    spread(
      "the operator's own Events while idle (security events drain at ≤ 10/s after a burst)",
      "writes",
      runs.map((run) => total(run.idle.operatorWrites) - total(withoutEvents(run.idle.operatorWrites))),
    ),
    spread(
      "restart: seconds until /readyz",
      "s",
      runs.map((run) => s(run.restart.readyMs)),
    ),
    spread(
      "restart: seconds until caught up (queues empty)",
      "s",
      runs.map((run) => s(run.restart.caughtUpMs)),
    ),
    spread(
      "restart: caught up ÷ listing the cached objects alone",
      "×",
      runs.map((run) => run.restart.caughtUpMs / run.restart.listBaselineMs),
    ),
    spread(
      "restart: API writes until caught up, lease renewals apart",
      "writes",
      runs.map((run) => total(run.restart.writes)),
    ),
    spread(
      "restart: the operator's own API writes until caught up, lease renewals apart",
      "writes",
      runs.map((run) => total(run.restart.operatorWrites)),
    ),
    spread(
      "restart: broker commands until caught up",
      "commands",
      runs.map((run) => run.restart.brokerCommands),
    ),
    spread(
      "restart: a Device disabled right after catch-up shows Ready=False",
      "ms",
      runs.map((run) => run.restart.reactMs),
    ),
  ];
  console.log("\n| figure | median | min–max |\n|---|---|---|");
  for (const figure of figures)
    console.log(
      `| ${figure.label} | ${figure.median.toFixed(2)} ${figure.unit} | ${figure.min.toFixed(2)}–${figure.max.toFixed(2)} |`,
    );
  console.log(
    `load average at the end of each run: ${runs.map((run) => run.loadAverage.toFixed(2)).join(", ")}`,
  );
  // Every run in full, also when there are too few runs for a results file.
  console.log(JSON.stringify(runs));
  if (runs.length < MIN_RUNS) {
    console.log(`\nfewer than ${MIN_RUNS} runs, no results file: the record is ${progressFile}`);
    return;
  }
  const out = await writeResults(repoRoot, {
    benchmark: brokerKind === "nats" ? "operator-scale-nats" : "operator-scale",
    parameters: { devices: deviceCount, runs: runCount, idleSeconds },
    runs,
    figures,
  });
  console.log(`\nwrote ${out}`);
}

main().catch(async (error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  await saveProgress("failed", { error: String(error) });
  process.exit(1);
});
