/**
 * How long the operator takes to turn Tenants and Devices into Ready, isolated objects, against
 * a baseline in the same run: the API server alone creating the same namespaces, policies, RBAC
 * and quotas straight from desiredTenant (no operator, no cert-manager, no broker). The ratio is
 * the operator's overhead; absolute times depend on the machine.
 *
 *   npx tsx bench/tenant-provisioning.ts [--tenants 20] [--devices 2]
 */
import { mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { KubeConfig } from "@kubernetes/client-node";
import { parseTenant } from "../src/api/tenant.js";
import { operatorConfigSchema } from "../src/config.js";
import { Resource, resourceOf } from "../src/controllers/resources.js";
import { desiredTenant } from "../src/desired/tenant.js";
import { install } from "../src/install.js";
import { createLogger } from "../src/observability/logger.js";
import { startOperator } from "../src/operator.js";
import { isReady } from "../src/runtime/conditions.js";
import { KubeClient } from "../src/runtime/kube-client.js";
import { killServersOnSignal } from "../test/harness/process.js";
import { repoRoot, stackVariables, startStack } from "../test/harness/stack.js";
import { summarize } from "./support/stats.js";

const { values } = parseArgs({
  options: { tenants: { type: "string", default: "20" }, devices: { type: "string", default: "2" } },
});
const tenantCount = Number(values.tenants);
const devicesPerTenant = Number(values.devices);

/** Polls until every object is Ready; returns each one's time to Ready in ms after `start`. */
async function timesToReady(
  client: KubeClient,
  targets: Array<{
    resource: typeof Resource.tenant | typeof Resource.device;
    namespace?: string;
    name: string;
  }>,
  start: number,
): Promise<number[]> {
  const done = new Map<string, number>();
  const deadline = Date.now() + 10 * 60_000;
  while (done.size < targets.length) {
    if (Date.now() > deadline)
      throw new Error(`only ${done.size} of ${targets.length} Ready after 10 minutes`);
    for (const target of targets) {
      const key = `${target.namespace ?? ""}/${target.name}`;
      if (done.has(key)) continue;
      if (isReady(await client.get(target.resource, target))) done.set(key, performance.now() - start);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return [...done.values()];
}

async function main(): Promise<void> {
  killServersOnSignal();
  const stack = await startStack(await mkdtemp(join(tmpdir(), "bench-tenants-")));
  try {
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(stack.env.kubeconfig);
    const client = new KubeClient(kubeConfig);
    const config = operatorConfigSchema.parse({
      ...stackVariables(stack.env),
      PROBE_BIND_ADDRESS: "127.0.0.1:0",
      LOG_LEVEL: "warn",
    });
    await install(client, config);
    const spec = { admins: [{ kind: "Group", name: "admins" }], quota: { hard: { pods: "20" } } };

    // Baseline: the API server writing what the operator would write for each tenant, one SSA at a time.
    const baselineStart = performance.now();
    for (let i = 0; i < tenantCount; i++) {
      const tenant = {
        ...parseTenant({
          apiVersion: "iot.tenant-operator.io/v1alpha1",
          kind: "Tenant",
          metadata: { name: `base-${i}` },
          spec,
        }),
        metadata: { name: `base-${i}`, uid: "00000000-0000-0000-0000-000000000000" },
      };
      const desired = desiredTenant(tenant, config);
      for (const object of [...desired.namespaces, ...desired.namespaced]) {
        // Owner references to a Tenant that does not exist would be collected: the baseline owns nothing.
        const { ownerReferences: _owner, ...metadata } = object.metadata;
        await client.apply(resourceOf(object), { ...object, metadata });
      }
    }
    const baselineMs = performance.now() - baselineStart;
    // A CRD installed moments ago is counted by quotas only after kube-controller-manager's next
    // discovery pass (about 30 s); wait for it so the operator's numbers do not include it.
    while (
      !(
        (await client.get(Resource.resourceQuota, { namespace: "base-0", name: "iot-tenant-quota" })) as {
          status?: { used?: Record<string, string> };
        }
      )?.status?.used?.["count/devices.iot.tenant-operator.io"]
    ) {
      await new Promise((r) => setTimeout(r, 500));
    }

    const operator = await startOperator({
      kubeConfig,
      config,
      logger: createLogger({ level: "warn" }),
      leaderElection: false,
    });
    try {
      const tenantsStart = performance.now();
      for (let i = 0; i < tenantCount; i++) {
        await client.apply(Resource.tenant, {
          apiVersion: Resource.tenant.apiVersion,
          kind: "Tenant",
          metadata: { name: `bench-${i}` },
          spec,
        });
      }
      const tenantTimes = await timesToReady(
        client,
        Array.from({ length: tenantCount }, (_, i) => ({ resource: Resource.tenant, name: `bench-${i}` })),
        tenantsStart,
      );
      const devicesStart = performance.now();
      const devices = Array.from({ length: tenantCount * devicesPerTenant }, (_, i) => ({
        resource: Resource.device,
        namespace: `bench-${i % tenantCount}`,
        name: `sensor-${Math.floor(i / tenantCount)}`,
      }));
      for (const device of devices) {
        await client.apply(Resource.device, {
          apiVersion: Resource.device.apiVersion,
          kind: "Device",
          metadata: { name: device.name, namespace: device.namespace },
          spec: {},
        });
      }
      const deviceTimes = await timesToReady(client, devices, devicesStart);
      const tenantsMs = Math.max(...tenantTimes);
      const devicesMs = Math.max(...deviceTimes);
      const rows = [
        ["baseline: API server writes the same objects", tenantCount, baselineMs, 1],
        ["operator: Tenants to Ready (incl. CA issuance)", tenantCount, tenantsMs, tenantsMs / baselineMs],
        [
          "operator: Devices to Ready (cert, mirror, broker)",
          devices.length,
          devicesMs,
          devicesMs / baselineMs,
        ],
      ] as const;
      console.log(
        `\n${tenantCount} tenants × ${devicesPerTenant} devices, one operator, 2-core loopback stack\n`,
      );
      console.log(
        "| phase                                              | objects | total s | per object ms | vs baseline |",
      );
      console.log(
        "|----------------------------------------------------|---------|---------|---------------|-------------|",
      );
      for (const [phase, count, ms, ratio] of rows) {
        console.log(
          `| ${phase.padEnd(50)} | ${String(count).padStart(7)} | ${(ms / 1000).toFixed(1).padStart(7)} | ${(ms / count).toFixed(0).padStart(13)} | ${ratio.toFixed(2).padStart(10)}× |`,
        );
      }
      const tenantSummary = summarize(tenantTimes);
      const deviceSummary = summarize(deviceTimes);
      console.log(
        `\ntime to Ready (ms): tenants p50 ${tenantSummary.p50.toFixed(0)} p95 ${tenantSummary.p95.toFixed(0)}; devices p50 ${deviceSummary.p50.toFixed(0)} p95 ${deviceSummary.p95.toFixed(0)}`,
      );
      const out = join(repoRoot, "bench/results/tenant-provisioning.json");
      await mkdir(dirname(out), { recursive: true });
      await writeFile(
        out,
        `${JSON.stringify({ tenants: tenantCount, devicesPerTenant, baselineMs, tenantsMs, devicesMs, tenantTimes: tenantSummary, deviceTimes: deviceSummary }, null, 2)}\n`,
      );
      console.log(`\nwrote ${out}`);
    } finally {
      await operator.stop();
    }
  } finally {
    await stack.stop();
  }
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
