/**
 * The alternative to per-device dynsec roles: Mosquitto's classic ACL file next to dynsec.
 * Run: npx tsx bench/acl-file-alternative.ts [--devices 6000] [--runs 3]
 * Measures what the design decision rests on: whether a pattern ACL refuses foreign SUBSCRIBEs, and
 * what per-device grants cost when they live in the ACL file (a full reload on SIGHUP) instead, once
 * per run on the same broker. Writes bench/results/acl-file-alternative.json.
 */
import { appendFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import type { MqttClient } from "mqtt";
import { startMosquitto } from "../test/harness/mosquitto.js";
import { createCA, createIntermediateCA, issueCertificate } from "../test/harness/pki.js";
import { repoRoot } from "../test/harness/stack.js";
import { restartMosquitto } from "./support/mosquitto-process.js";
import { connectWithCertificate, subscribeCodes } from "./support/mqtt-device.js";
import { spread, writeResults } from "./support/results.js";
import { type Summary, summarize } from "./support/stats.js";

const { values: args } = parseArgs({
  options: { devices: { type: "string", default: "6000" }, runs: { type: "string", default: "3" } },
});
const devices = Number(args.devices);
const runCount = Number(args.runs);

/** Round trips of `client` on `topic` for `ms`, one after the other. */
async function roundTrips(client: MqttClient, topic: string, ms: number): Promise<number[]> {
  const samples: number[] = [];
  const until = performance.now() + ms;
  for (let i = 0; performance.now() < until; i++) {
    const at = performance.now();
    const back = new Promise<void>((resolve) => client.once("message", () => resolve()));
    client.publish(topic, String(i), { qos: 0 });
    await Promise.race([back, sleep(10_000, undefined, { ref: false })]);
    samples.push(performance.now() - at);
    await sleep(5);
  }
  return samples;
}

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), "bench-acl-file-"));
  try {
    const rootCA = await createCA(root, "device-root", "bench device root");
    const ca = await createIntermediateCA(root, rootCA, "device-ca", "bench device CA");
    const probePair = await issueCertificate(root, ca, "probe", {
      subject: "/O=bench/CN=probe",
      usages: ["clientAuth"],
    });
    const broker = await startMosquitto({ stateDir: root, deviceRootCA: ca.issuer, deviceCA: ca });
    await broker.stop();
    // One user block per device: the only way the ACL file can carry per-device grants (spec.topics).
    const aclFile = join(dirname(broker.configFile), "acl");
    const perDevice = Array.from(
      { length: devices },
      (_, i) =>
        `user CN=d${i},O=bench\ntopic readwrite tenants/bench/devices/d${i}/#\ntopic read tenants/bench/shared/#\n`,
    );
    await writeFile(
      aclFile,
      `pattern readwrite tenants/%u/#\nuser CN=probe,O=bench\ntopic readwrite tenants/bench/devices/probe/#\n${perDevice.join("")}`,
    );
    await appendFile(broker.configFile, `acl_file ${aclFile}\n`);
    const process = await restartMosquitto(broker);
    const probe = await connectWithCertificate(broker, probePair);
    try {
      const topic = "tenants/bench/devices/probe/rtt";
      const foreign = ["#", "tenants/other/#", "$share/g/tenants/other/#"];
      const runs: Array<{
        subscribeCodesOutsideTheGrant: Record<string, number[]>;
        idleRoundTripMs: Summary;
        roundTripAcrossOneReloadMs: Summary;
      }> = [];
      for (let r = 0; r < runCount; r++) {
        const subackCodes = Object.fromEntries(
          await Promise.all(
            foreign.map(async (filter) => [filter, await subscribeCodes(probe, filter)] as const),
          ),
        );
        await probe.unsubscribeAsync(foreign);
        await probe.subscribeAsync(topic, { qos: 0 });
        const idle = summarize(await roundTrips(probe, topic, 3_000));
        // A reload rereads the whole file: the cost of changing one device's grants.
        const during = roundTrips(probe, topic, 3_000);
        await sleep(500);
        globalThis.process.kill(process.pid, "SIGHUP");
        const reload = summarize(await during);
        await probe.unsubscribeAsync(topic);
        runs.push({
          subscribeCodesOutsideTheGrant: subackCodes,
          idleRoundTripMs: idle,
          roundTripAcrossOneReloadMs: reload,
        });
        console.log(
          `run ${r + 1}/${runCount}: SUBACK outside the grant ${JSON.stringify(subackCodes)}; idle p99 ${idle.p99.toFixed(1)} ms; across one SIGHUP max ${reload.max.toFixed(1)} ms`,
        );
      }
      const granted = (run: (typeof runs)[number]) =>
        Object.values(run.subscribeCodesOutsideTheGrant).filter((codes) => (codes[0] ?? 128) < 128).length;
      const figures = [
        spread(`foreign filters granted at SUBSCRIBE (of ${foreign.length})`, "filters", runs.map(granted)),
        spread(
          `idle round trip p99, ${devices} per-device ACL entries`,
          "ms",
          runs.map((r) => r.idleRoundTripMs.p99),
        ),
        spread(
          `longest round trip across one reload (SIGHUP), ${devices} per-device ACL entries`,
          "ms",
          runs.map((r) => r.roundTripAcrossOneReloadMs.max),
        ),
      ];
      for (const figure of figures) {
        console.log(
          `${figure.label}: median ${figure.median.toFixed(1)} ${figure.unit} (${figure.min.toFixed(1)}–${figure.max.toFixed(1)})`,
        );
      }
      const out = await writeResults(repoRoot, {
        benchmark: "acl-file-alternative",
        parameters: { devices, runs: runCount, windowMs: 3_000 },
        runs,
        figures,
      });
      console.log(`wrote ${out}`);
    } finally {
      await probe.endAsync();
      await process.stop();
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

await main();
