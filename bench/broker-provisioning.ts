/**
 * Data-plane round trip while devices are provisioned into Mosquitto 2.0.11 with dynamic security.
 * Run: npx tsx bench/broker-provisioning.ts [--preload 5000] [--provision 1000] [--idle-seconds 10]
 *        [--sizes 1000,2000,4000,8000] [--runs 3]
 * Each run provisions paced and unpaced on fresh brokers and fits the per-command cost; prints the
 * median and range of each figure over the runs and writes bench/results/broker-provisioning.json.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import type { BrokerDevice } from "../src/broker/adapter.js";
import { DynsecClient } from "../src/broker/dynsec-client.js";
import { type CommandEvent, MosquittoDynsecAdapter } from "../src/broker/mosquitto-dynsec.js";
import { deviceSubject, subjectUsername } from "../src/broker/subject.js";
import { adminConnection } from "../test/harness/mosquitto.js";
import {
  createCA,
  createIntermediateCA,
  type IntermediateCA,
  issueCertificate,
  type KeyPair,
} from "../test/harness/pki.js";
import { repoRoot } from "../test/harness/stack.js";
import { startMosquittoWithFleet } from "./support/mosquitto-process.js";
import { connectWithCertificate } from "./support/mqtt-device.js";
import { spread, writeResults } from "./support/results.js";
import { RoundTripProbe } from "./support/round-trip.js";
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
    runs: { type: "string", default: "3" },
  },
});
const preload = Number(args.preload);
const provision = Number(args.provision);
const idleMs = Number(args["idle-seconds"]) * 1_000;
const sizes = (args.sizes ?? "").split(",").filter(Boolean).map(Number);
const runCount = Number(args.runs);

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

/** A broker whose dynsec file already holds the probe and `count` devices. */
function brokerWithFleet(dir: string, ca: IntermediateCA, count: number) {
  return startMosquittoWithFleet(dir, ca, [
    benchDevice(PROBE_DEVICE),
    ...Array.from({ length: count }, (_, i) => benchDevice(preloadName(i))),
  ]);
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
  const connection = adminConnection(broker);
  const events: CommandEvent[] = [];
  const adapter = new MosquittoDynsecAdapter({
    connection,
    pacing,
    onCommand: (event) => events.push(event),
  });
  const probe = await RoundTripProbe.start(
    await connectWithCertificate(broker, probePair),
    `tenants/${TENANT}/devices/${PROBE_DEVICE}/rtt`,
  );
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
  const admin = await DynsecClient.connect(adminConnection(broker));
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

interface Run {
  readonly paced: ProvisioningRun;
  readonly unpaced: ProvisioningRun;
  readonly commandCost: {
    readonly points: ReadonlyArray<{ size: number; medianMs: number }>;
    readonly fit: { intercept: number; slope: number };
    /** Fleet size at which one command stalls the broker for BOUND_MS. */
    readonly stallLimitDevices: number;
    /** Fleet size at which idle p99 plus one command's stall reaches BOUND_MS. */
    readonly roundTripLimitDevices: number;
  };
}

async function oneRun(root: string, ca: IntermediateCA, probePair: KeyPair, cutPair: KeyPair): Promise<Run> {
  const paced = await provisioningRun(join(root, "paced"), ca, probePair, cutPair, 1);
  console.log(`  paced: ${f(paced.seconds)} s, p99 ${f(paced.during.p99)} ms (idle ${f(paced.idle.p99)} ms)`);
  const unpaced = await provisioningRun(join(root, "unpaced"), ca, probePair, cutPair, 0);
  console.log(`  unpaced: ${f(unpaced.seconds)} s, p99 ${f(unpaced.during.p99)} ms`);
  const points = [];
  for (const size of sizes) points.push(await commandCostAt(join(root, `size-${size}`), ca, size));
  const fit = linearFit(points.map((c) => ({ x: c.size, y: c.medianMs })));
  const stallLimitDevices = (BOUND_MS - fit.intercept) / fit.slope;
  const roundTripLimitDevices = (BOUND_MS - paced.idle.p99 - fit.intercept) / fit.slope;
  console.log(
    `  command cost: ${f(fit.intercept, 2)} ms + ${f(fit.slope * 1000, 2)} ms per 1,000 devices; ${BOUND_MS} ms p99 bound at ≈ ${Math.round(roundTripLimitDevices)} devices`,
  );
  return { paced, unpaced, commandCost: { points, fit, stallLimitDevices, roundTripLimitDevices } };
}

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

    const runs: Run[] = [];
    for (let r = 0; r < runCount; r++) {
      console.log(`run ${r + 1}/${runCount}: ${preload} devices preloaded, ${provision} provisioned…`);
      runs.push(await oneRun(join(root, `run-${r}`), ca, probePair, cutPair));
    }
    const of = (pick: (run: Run) => number) => runs.map(pick);
    const fleet = `${provision} devices provisioned into ${preload}`;
    const figures = [
      spread(
        `idle round trip p99, ${preload} devices`,
        "ms",
        of((r) => r.paced.idle.p99),
      ),
      spread(
        `round trip p99 while ${fleet}, paced`,
        "ms",
        of((r) => r.paced.during.p99),
      ),
      spread(
        `round trip max while ${fleet}, paced`,
        "ms",
        of((r) => r.paced.during.max),
      ),
      spread(
        `round trip p99 while ${fleet}, unpaced`,
        "ms",
        of((r) => r.unpaced.during.p99),
      ),
      spread(
        `devices provisioned per second, paced`,
        "/s",
        of((r) => r.paced.devicesPerSecond),
      ),
      spread(
        `cut-off of a connected device at ${preload + provision}`,
        "ms",
        of((r) => r.paced.cutOffMs ?? NaN),
      ),
      spread(
        `fleet at which one dynsec command stalls the broker ${BOUND_MS} ms (fit over ${sizes.join(", ")})`,
        "devices",
        of((r) => r.commandCost.stallLimitDevices),
      ),
      spread(
        `fleet at which idle p99 + one command reach ${BOUND_MS} ms`,
        "devices",
        of((r) => r.commandCost.roundTripLimitDevices),
      ),
    ];
    for (const figure of figures) {
      console.log(
        `${figure.label}: median ${f(figure.median)} ${figure.unit} (${f(figure.min)}–${f(figure.max)})`,
      );
    }
    const out = await writeResults(repoRoot, {
      benchmark: "broker-provisioning",
      parameters: {
        broker: "mosquitto 2.0.11 + dynamic security",
        boundMs: BOUND_MS,
        preload,
        provision,
        idleSeconds: idleMs / 1000,
        sizes,
        runs: runCount,
      },
      runs,
      figures,
    });
    console.log(`\nwrote ${out}`);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

await main();
