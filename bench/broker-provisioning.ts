/**
 * Data-plane round trip while devices are provisioned into Mosquitto 2.0.11 with dynamic security.
 * Run: npx tsx bench/broker-provisioning.ts [--preload 5000] [--provision 1000] [--idle-seconds 10]
 *        [--sizes 1000,2000,4000,8000]
 * Prints a table and writes bench/results/broker-provisioning.json.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import type { MqttClient } from "mqtt";
import type { BrokerDevice } from "../src/broker/adapter.js";
import { desiredDevice } from "../src/broker/desired.js";
import { DynsecClient } from "../src/broker/dynsec-client.js";
import {
  type CommandEvent,
  DEFAULT_OWNER_PREFIX,
  MosquittoDynsecAdapter,
} from "../src/broker/mosquitto-dynsec.js";
import { observationOf } from "../src/broker/plan.js";
import { deviceSubject, subjectUsername } from "../src/broker/subject.js";
import { type Broker, startMosquitto } from "../test/harness/mosquitto.js";
import {
  createCA,
  createIntermediateCA,
  type IntermediateCA,
  issueCertificate,
  type KeyPair,
} from "../test/harness/pki.js";
import type { ManagedProcess } from "../test/harness/process.js";
import { appendToDynsecFile, restartMosquitto } from "./support/mosquitto-process.js";
import { connectWithCertificate } from "./support/mqtt-device.js";
import { linearFit, type Summary, summarize } from "./support/stats.js";

const BOUND_MS = 100;
const TENANT = "bench";
const PROBE_DEVICE = "probe";

const { values: args } = parseArgs({
  options: {
    preload: { type: "string", default: "5000" },
    provision: { type: "string", default: "1000" },
    "idle-seconds": { type: "string", default: "10" },
    sizes: { type: "string", default: "1000,2000,4000,8000" },
  },
});
const preload = Number(args.preload);
const provision = Number(args.provision);
const idleMs = Number(args["idle-seconds"]) * 1_000;
const sizes = (args.sizes ?? "").split(",").filter(Boolean).map(Number);

function benchDevice(name: string): BrokerDevice {
  return {
    tenant: TENANT,
    device: name,
    topicRoot: `tenants/${TENANT}`,
    credentials: { type: "x509", username: subjectUsername(deviceSubject(TENANT, name)) },
    enabled: true,
    suspended: false,
  };
}

const preloadName = (i: number) => `pre-${i}`;
const newName = (i: number) => `new-${i}`;

/** A broker whose dynsec file already holds `count` devices as the adapter would have created them. */
async function brokerWithFleet(
  dir: string,
  ca: IntermediateCA,
  count: number,
): Promise<{ broker: Broker; process: ManagedProcess }> {
  const broker = await startMosquitto({ stateDir: dir, deviceRootCA: ca.issuer, deviceCA: ca });
  await broker.stop();
  const fleet = [
    benchDevice(PROBE_DEVICE),
    ...Array.from({ length: count }, (_, i) => benchDevice(preloadName(i))),
  ];
  const observed = fleet.map((device) => observationOf(desiredDevice(DEFAULT_OWNER_PREFIX, device)));
  await appendToDynsecFile(broker.dynsecFile, {
    roles: observed.flatMap((o) => (o.role ? [o.role] : [])),
    clients: observed.flatMap((o) =>
      o.clients.map((c) => ({
        username: c.username,
        textname: c.textname ?? "",
        roles: c.roles.map((rolename) => ({ rolename })),
      })),
    ),
  });
  return { broker, process: await restartMosquitto(broker) };
}

/** Publishes to its own subtree and waits for the message back, over and over, until stopped. */
class RoundTripProbe {
  private readonly samples: Array<{ at: number; ms: number }> = [];
  private running = true;
  private readonly done: Promise<void>;

  constructor(private readonly client: MqttClient) {
    this.done = this.loop();
  }

  static async start(broker: Broker, pair: KeyPair): Promise<RoundTripProbe> {
    const client = await connectWithCertificate(broker, pair);
    await client.subscribeAsync(`tenants/${TENANT}/devices/${PROBE_DEVICE}/rtt`, { qos: 0 });
    return new RoundTripProbe(client);
  }

  /** Round trips that started within [from, to). */
  between(from: number, to: number): number[] {
    return this.samples.filter((s) => s.at >= from && s.at < to).map((s) => s.ms);
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.done;
    await this.client.endAsync();
  }

  private async loop(): Promise<void> {
    let sequence = 0;
    while (this.running) {
      const id = String(++sequence);
      const at = performance.now();
      const back = new Promise<void>((resolve) => {
        const onMessage = (_topic: string, payload: Buffer) => {
          if (payload.toString() !== id) return;
          this.client.off("message", onMessage);
          resolve();
        };
        this.client.on("message", onMessage);
      });
      this.client.publish(`tenants/${TENANT}/devices/${PROBE_DEVICE}/rtt`, id, { qos: 0 });
      await Promise.race([back, sleep(10_000, undefined, { ref: false })]);
      this.samples.push({ at, ms: performance.now() - at });
      await sleep(10);
    }
  }
}

interface ProvisioningRun {
  readonly pacing: number;
  readonly idle: Summary;
  readonly during: Summary;
  readonly commandMs: Summary;
  readonly commands: number;
  readonly seconds: number;
  readonly devicesPerSecond: number;
  readonly cutOffMs?: number;
  readonly resync?: { readonly seconds: number; readonly commands: number; readonly rtt: Summary };
}

async function provisioningRun(
  dir: string,
  ca: IntermediateCA,
  probePair: KeyPair,
  cutPair: KeyPair,
  pacing: number,
): Promise<ProvisioningRun> {
  const { broker, process } = await brokerWithFleet(dir, ca, preload);
  const connection = {
    host: broker.host,
    port: broker.adminPort,
    username: broker.adminUsername,
    password: broker.adminPassword,
  };
  const events: CommandEvent[] = [];
  const adapter = new MosquittoDynsecAdapter({
    connection,
    pacing,
    onCommand: (event) => events.push(event),
  });
  const probe = await RoundTripProbe.start(broker, probePair);
  try {
    const idleFrom = performance.now();
    await sleep(idleMs);
    const idleTo = performance.now();
    const fleet = Array.from({ length: provision }, (_, i) => benchDevice(newName(i)));
    await Promise.all(fleet.map((device) => adapter.applyDevice(device)));
    const provisionedAt = performance.now();
    const seconds = (provisionedAt - idleTo) / 1_000;
    const commandMs = summarize(events.map((e) => e.durationMs));
    const commands = events.length;

    // Cut-off at this fleet size: a connected device is removed; time until its connection drops.
    const cutClient = await connectWithCertificate(broker, cutPair);
    const dropped = new Promise<number>((resolve) => {
      const from = performance.now();
      cutClient.once("close", () => resolve(performance.now() - from));
    });
    await adapter.removeDevice({ tenant: TENANT, device: newName(0) });
    const cutOffMs = await dropped;

    const all = [
      benchDevice(PROBE_DEVICE),
      ...Array.from({ length: preload }, (_, i) => benchDevice(preloadName(i))),
      ...fleet.slice(1),
    ];
    const resyncFrom = performance.now();
    const report = await adapter.syncAll(all);
    const resyncTo = performance.now();
    return {
      pacing,
      idle: summarize(probe.between(idleFrom, idleTo)),
      during: summarize(probe.between(idleTo, provisionedAt)),
      commandMs,
      commands,
      seconds,
      devicesPerSecond: provision / seconds,
      cutOffMs,
      resync: {
        seconds: (resyncTo - resyncFrom) / 1_000,
        commands: report.commands,
        rtt: summarize(probe.between(resyncFrom, resyncTo)),
      },
    };
  } finally {
    await probe.stop();
    await adapter.close();
    await process.stop();
  }
}

/** Median duration of one mutating command (createRole, then deleteRole) with `size` devices present. */
async function commandCostAt(
  dir: string,
  ca: IntermediateCA,
  size: number,
): Promise<{ size: number; medianMs: number }> {
  const { broker, process } = await brokerWithFleet(dir, ca, size);
  const admin = await DynsecClient.connect({
    host: broker.host,
    port: broker.adminPort,
    username: broker.adminUsername,
    password: broker.adminPassword,
  });
  const durations: number[] = [];
  try {
    for (let i = 0; i < 10; i++) {
      for (const command of [
        { command: "createRole", rolename: `cost-${i}` },
        { command: "deleteRole", rolename: `cost-${i}` },
      ]) {
        const started = performance.now();
        await admin.run(command);
        durations.push(performance.now() - started);
        await sleep(performance.now() - started);
      }
    }
  } finally {
    await admin.close();
    await process.stop();
  }
  return { size, medianMs: summarize(durations).p50 };
}

const f = (n: number | undefined, digits = 1) =>
  n === undefined || Number.isNaN(n) ? "—" : n.toFixed(digits);

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), "bench-broker-"));
  try {
    const rootCA = await createCA(root, "device-root", "bench device root");
    const ca = await createIntermediateCA(root, rootCA, "device-ca", "bench device CA");
    const probePair = await issueCertificate(root, ca, "probe", {
      subject: `/O=${TENANT}/CN=${PROBE_DEVICE}`,
      usages: ["clientAuth"],
    });
    const cutPair = await issueCertificate(root, ca, "cut", {
      subject: `/O=${TENANT}/CN=${newName(0)}`,
      usages: ["clientAuth"],
    });

    console.log(`preloaded ${preload} devices, provisioning ${provision} more (2 dynsec commands each)…`);
    const paced = await provisioningRun(join(root, "paced"), ca, probePair, cutPair, 1);
    console.log(`paced run done in ${f(paced.seconds)} s; unpaced run…`);
    const unpaced = await provisioningRun(join(root, "unpaced"), ca, probePair, cutPair, 0);
    console.log("per-command cost at fleet sizes…");
    const costs = [];
    for (const size of sizes) costs.push(await commandCostAt(join(root, `size-${size}`), ca, size));

    const fit = linearFit(costs.map((c) => ({ x: c.size, y: c.medianMs })));
    const stallLimit = (BOUND_MS - fit.intercept) / fit.slope;
    const rttLimit = (BOUND_MS - paced.idle.p99 - fit.intercept) / fit.slope;
    const row = (name: string, s: Summary, ratioTo?: Summary) =>
      `| ${name.padEnd(34)} | ${f(s.p50).padStart(7)} | ${f(s.p95).padStart(7)} | ${f(s.p99).padStart(7)} | ${f(s.max).padStart(7)} | ${String(s.count).padStart(6)} | ${ratioTo ? `${f(s.p99 / ratioTo.p99, 2)}×` : "1×"} |`;
    const lines = [
      "",
      `Round trip of an ordinary client (ms), ${preload} devices preloaded, ${provision} provisioned:`,
      "| phase                              |     p50 |     p95 |     p99 |     max | probes | p99 vs idle |",
      "|------------------------------------|---------|---------|---------|---------|--------|-------------|",
      row("idle", paced.idle),
      row("provisioning, paced (chosen)", paced.during, paced.idle),
      row("provisioning, unpaced", unpaced.during, paced.idle),
      row(`full resync of ${preload + provision}, no drift`, paced.resync?.rtt ?? summarize([]), paced.idle),
      "",
      "| run      | commands | cmd p50 ms | cmd p99 ms | seconds | devices/s | cut-off ms |",
      "|----------|----------|------------|------------|---------|-----------|------------|",
      ...[paced, unpaced].map(
        (r) =>
          `| ${(r.pacing ? "paced" : "unpaced").padEnd(8)} | ${String(r.commands).padStart(8)} | ${f(r.commandMs.p50).padStart(10)} | ${f(r.commandMs.p99).padStart(10)} | ${f(r.seconds).padStart(7)} | ${f(r.devicesPerSecond).padStart(9)} | ${f(r.cutOffMs).padStart(10)} |`,
      ),
      "",
      "Broker cost of one dynsec change (median, ms) by devices present:",
      "| devices | ms per command |",
      "|---------|----------------|",
      ...costs.map((c) => `| ${String(c.size).padStart(7)} | ${f(c.medianMs, 2).padStart(14)} |`),
      "",
      `Full resync of ${preload + provision} devices with no drift: ${f(paced.resync?.seconds, 2)} s, ${paced.resync?.commands} commands.`,
      "",
      `Fit: ${f(fit.intercept, 2)} ms + ${f(fit.slope * 1000, 2)} ms per 1,000 devices.`,
      `One command stalls the broker for ${BOUND_MS} ms at ≈ ${Math.round(stallLimit)} devices; ` +
        `with the idle p99 (${f(paced.idle.p99)} ms) added, the ${BOUND_MS} ms p99 bound breaks at ≈ ${Math.round(rttLimit)} devices.`,
    ];
    console.log(lines.join("\n"));

    await mkdir("bench/results", { recursive: true });
    await writeFile(
      "bench/results/broker-provisioning.json",
      `${JSON.stringify(
        {
          broker: "mosquitto 2.0.11 + dynamic security",
          boundMs: BOUND_MS,
          preload,
          provision,
          paced,
          unpaced,
          ratios: {
            pacedP99VsIdle: paced.during.p99 / paced.idle.p99,
            unpacedP99VsIdle: unpaced.during.p99 / paced.idle.p99,
            unpacedP99VsPaced: unpaced.during.p99 / paced.during.p99,
            pacedSecondsVsUnpaced: paced.seconds / unpaced.seconds,
          },
          commandCost: { points: costs, fit, stallLimitDevices: stallLimit, roundTripLimitDevices: rttLimit },
        },
        null,
        2,
      )}\n`,
    );
    console.log("\nwrote bench/results/broker-provisioning.json");
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

await main();
