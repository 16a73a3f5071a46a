/**
 * How long `devices import` takes for a large CSV file against how long the API server itself needs
 * to take the same Devices, in the same stack, `--runs` times:
 * - import: the real command (in this process): reads the file, checks every row with the Device
 *   schema, server-side applies each Device `--concurrency` at a time, progress on a non-terminal;
 * - baseline: the same Device objects, built in memory, server-side applied by the same client at
 *   the same concurrency, as the same field manager: only what the API server must do.
 * Each run writes into fresh namespaces of one Tenant (creates, not no-op updates); the operator
 * runs only to make the Tenant Ready and is stopped before the first run, so neither phase competes
 * with certificate issuance.
 *
 *   npx tsx bench/device-import.ts [--devices 10000] [--runs 3] [--concurrency 16]
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { parseArgs } from "node:util";
import { KubeConfig } from "@kubernetes/client-node";
import { API_VERSION } from "../src/api/group.js";
import { parseDeviceCsv } from "../src/cli/device-csv.js";
import { IMPORT_FIELD_MANAGER } from "../src/cli/import.js";
import { main } from "../src/cli/main.js";
import { operatorConfigSchema } from "../src/config.js";
import { Resource } from "../src/controllers/resources.js";
import { DEVICES_QUOTA_RESOURCE } from "../src/desired/tenant.js";
import { install } from "../src/install.js";
import { createLogger } from "../src/observability/logger.js";
import { startOperator } from "../src/operator.js";
import { isReady } from "../src/runtime/conditions.js";
import { KubeClient } from "../src/runtime/kube-client.js";
import { killServersOnSignal } from "../test/harness/process.js";
import { repoRoot, stackVariables, startStack } from "../test/harness/stack.js";
import { spread, writeResults } from "./support/results.js";

const { values } = parseArgs({
  options: {
    devices: { type: "string", default: "10000" },
    runs: { type: "string", default: "3" },
    concurrency: { type: "string", default: "16" },
  },
});
const deviceCount = Number(values.devices);
const runCount = Number(values.runs);
const concurrency = Number(values.concurrency);
const TENANT = "import-bench";
const namespaces = Array.from({ length: runCount }, (_, r) => [`import-${r}`, `baseline-${r}`]).flat();

/** The spreadsheet: every tenth device a password device, every fifth with its own topics. */
function csv(namespace: string): string {
  const rows = Array.from({ length: deviceCount }, (_, i) => {
    const name = `sensor-${i}`;
    const topics = i % 5 === 0 ? `devices/${name}/# sites/s${i % 50}/+/telemetry,devices/${name}/#` : ",";
    return `${name},${namespace},${i % 10 === 0 ? "password" : "x509"},true,${topics}`;
  });
  return `name,namespace,authentication,enabled,publish,subscribe\n${rows.join("\n")}\n`;
}

async function timed(what: () => Promise<void>): Promise<number> {
  const start = performance.now();
  await what();
  return performance.now() - start;
}

async function importPhase(file: string, env: NodeJS.ProcessEnv): Promise<number> {
  let stderr = "";
  let code = -1;
  const ms = await timed(async () => {
    code = await main(["devices", "import", "--tenant", TENANT, "--concurrency", String(concurrency), file], {
      stdout: { write: () => true },
      stderr: { write: (text: string) => (stderr += text), isTTY: false },
      stdin: Object.assign(Readable.from([]), { isTTY: true }),
      env,
    });
  });
  if (code !== 0) throw new Error(`import failed (${code}): ${stderr.slice(-2000)}`);
  return ms;
}

async function baselinePhase(client: KubeClient, text: string, namespace: string): Promise<number> {
  // Built before the clock starts: the baseline is the API server's work alone.
  const devices = parseDeviceCsv(text, { name: TENANT, namespaces: [namespace] }).rows.map((r) => r.device);
  let next = 0;
  return timed(async () => {
    const worker = async () => {
      for (let device = devices[next++]; device; device = devices[next++])
        await client.applyAs(Resource.device, device, {
          force: true,
          dryRun: false,
        });
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
  });
}

/** A count as the API server writes it: 10000 is "10k". */
function count(quantity: string): number {
  const [, digits = "NaN", suffix = ""] = /^(\d+)(k|M)?$/.exec(quantity) ?? [];
  return Number(digits) * ({ "": 1, k: 1e3, M: 1e6 }[suffix] ?? Number.NaN);
}

/**
 * Waits until the namespace's quota counts `devices` Devices: kube-controller-manager has caught up
 * with a phase's writes, so that the next phase does not pay for them. Before the first run it also
 * waits for the discovery pass after which a freshly installed CRD counts in quotas at all.
 */
async function quotaCounts(client: KubeClient, namespace: string, devices: number): Promise<void> {
  for (;;) {
    const quotas = (await client.request({
      verb: "list",
      method: "GET",
      path: `/api/v1/namespaces/${namespace}/resourcequotas`,
    })) as { items: Array<{ status?: { used?: Record<string, string> } }> };
    const used = quotas.items.map((q) => q.status?.used?.[DEVICES_QUOTA_RESOURCE]);
    if (used.some((quantity) => quantity !== undefined && count(quantity) === devices)) return;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

async function run(): Promise<void> {
  killServersOnSignal();
  const stateDir = await mkdtemp(join(tmpdir(), "bench-import-"));
  const stack = await startStack(stateDir);
  try {
    const variables = stackVariables(stack.env);
    const config = operatorConfigSchema.parse({
      ...variables,
      PROBE_BIND_ADDRESS: "127.0.0.1:0",
      LOG_LEVEL: "warn",
    });
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(stack.env.kubeconfig);
    // The baseline writes as the import does: under its field manager.
    const client = new KubeClient(kubeConfig, { fieldManager: IMPORT_FIELD_MANAGER });
    await install(client, config);

    console.log(`making Tenant ${TENANT} with ${namespaces.length} namespaces Ready (operator running)…`);
    const operator = await startOperator({ kubeConfig, config, logger: createLogger({ level: "warn" }) });
    await client.apply(Resource.tenant, {
      apiVersion: API_VERSION,
      kind: "Tenant",
      metadata: { name: TENANT },
      spec: { namespaces, devices: { maxDevices: 100_000 } },
    });
    for (;;) {
      const tenant = await client.get(Resource.tenant, { name: TENANT });
      if (tenant && isReady(tenant)) break;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    await operator.stop();
    await quotaCounts(client, namespaces[0] ?? "", 0);

    const env = { HOME: "/nonexistent", KUBECONFIG: stack.env.kubeconfig };
    const runs: Array<{ importMs: number; baselineMs: number }> = [];
    for (let r = 0; r < runCount; r++) {
      const file = join(stateDir, `devices-${r}.csv`);
      await writeFile(file, csv(`import-${r}`));
      const baselineText = csv(`baseline-${r}`);
      // Alternate the order so that neither phase always meets a warmer API server.
      let importMs = 0;
      let baselineMs = 0;
      const importing = async () => {
        importMs = await importPhase(file, env);
        await quotaCounts(client, `import-${r}`, deviceCount);
      };
      const baseline = async () => {
        baselineMs = await baselinePhase(client, baselineText, `baseline-${r}`);
        await quotaCounts(client, `baseline-${r}`, deviceCount);
      };
      for (const phase of r % 2 === 0 ? [importing, baseline] : [baseline, importing]) await phase();
      runs.push({ importMs, baselineMs });
      console.log(
        `run ${r + 1}/${runCount}: import ${(importMs / 1000).toFixed(1)} s, baseline ${(baselineMs / 1000).toFixed(1)} s`,
      );
    }

    const figures = [
      spread(
        `${deviceCount} CSV rows, devices import (concurrency ${concurrency})`,
        "s",
        runs.map((r) => r.importMs / 1000),
      ),
      spread(
        "the same Devices server-side applied directly, API server alone",
        "s",
        runs.map((r) => r.baselineMs / 1000),
      ),
      spread(
        "import ÷ baseline",
        "×",
        runs.map((r) => r.importMs / r.baselineMs),
      ),
      spread(
        "rows imported per second",
        "/s",
        runs.map((r) => deviceCount / (r.importMs / 1000)),
      ),
    ];
    console.log(`\n| figure | median | range |\n|---|---|---|`);
    for (const f of figures)
      console.log(
        `| ${f.label} | ${f.median.toFixed(2)} ${f.unit} | ${f.min.toFixed(2)}–${f.max.toFixed(2)} ${f.unit} |`,
      );
    const out = await writeResults(repoRoot, {
      benchmark: "device-import",
      parameters: { devices: deviceCount, runs: runCount, concurrency },
      runs,
      figures,
    });
    console.log(`\nwrote ${out}`);
  } finally {
    await stack.stop();
    await rm(stateDir, { recursive: true, force: true });
  }
}

run().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
