/**
 * The alternative to per-device dynsec roles: Mosquitto's classic ACL file next to dynsec.
 * Run: npx tsx bench/acl-file-alternative.ts [--devices 6000]
 * Measures what the design decision rests on: whether a pattern ACL refuses foreign SUBSCRIBEs, and
 * what per-device grants cost when they live in the ACL file (a full reload on SIGHUP) instead.
 * Writes bench/results/acl-file-alternative.json.
 */
import { appendFile, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import type { MqttClient } from "mqtt";
import { startMosquitto } from "../test/harness/mosquitto.js";
import { createCA, createIntermediateCA, issueCertificate } from "../test/harness/pki.js";
import { restartMosquitto } from "./support/mosquitto-process.js";
import { connectWithCertificate, subscribeCodes } from "./support/mqtt-device.js";
import { summarize } from "./support/stats.js";

const { values: args } = parseArgs({ options: { devices: { type: "string", default: "6000" } } });
const devices = Number(args.devices);

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
      const subackCodes = {
        "#": await subscribeCodes(probe, "#"),
        "tenants/other/#": await subscribeCodes(probe, "tenants/other/#"),
        "$share/g/tenants/other/#": await subscribeCodes(probe, "$share/g/tenants/other/#"),
      };
      await probe.unsubscribeAsync(["#", "tenants/other/#", "$share/g/tenants/other/#"]);
      await probe.subscribeAsync("tenants/bench/devices/probe/rtt", { qos: 0 });
      const topic = "tenants/bench/devices/probe/rtt";
      const idle = summarize(await roundTrips(probe, topic, 3_000));
      // A reload rereads the whole file: the cost of changing one device's grants.
      const during = roundTrips(probe, topic, 3_000);
      await sleep(500);
      const signalled = performance.now();
      globalThis.process.kill(process.pid, "SIGHUP");
      const reload = summarize(await during);
      const result = {
        devices,
        subscribeCodesOutsideTheGrant: subackCodes,
        idleRoundTripMs: idle,
        roundTripAcrossOneReloadMs: reload,
        reloadSignalledAtMs: signalled,
      };
      console.log(`ACL file with ${devices} per-device user blocks (plus pattern tenants/%u/#):`);
      console.log(`  SUBACK codes outside the grant (0 = granted): ${JSON.stringify(subackCodes)}`);
      console.log(
        `  round trip idle       p50 ${idle.p50.toFixed(1)} ms, p99 ${idle.p99.toFixed(1)} ms, max ${idle.max.toFixed(1)} ms`,
      );
      console.log(
        `  across one SIGHUP     p50 ${reload.p50.toFixed(1)} ms, p99 ${reload.p99.toFixed(1)} ms, max ${reload.max.toFixed(1)} ms (the stall of one change)`,
      );
      await mkdir("bench/results", { recursive: true });
      await writeFile("bench/results/acl-file-alternative.json", `${JSON.stringify(result, null, 2)}\n`);
    } finally {
      await probe.endAsync();
      await process.stop();
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

await main();
