/**
 * How long the operator takes to turn Tenants and Devices into Ready, isolated objects, against
 * baselines that do the same work without the operator, in the same stack, `--runs` times:
 * - tenants: the API server takes the namespaces, policies, RBAC, quotas and the tenant CA
 *   Certificate and Issuer straight from desiredTenant, and cert-manager issues each CA;
 * - devices: the API server takes the objects a Ready device has (Device, Certificate,
 *   CertificateRequest, issued and mirrored Secrets, Ready status) and the broker its role and
 *   client (unpaced), as fast as they are accepted: as many devices in flight as the operator has
 *   device workers.
 * Each phase reports every device's time to Ready (p50/p99) and the total. Tenants and Devices are
 * applied under a field manager of their own, as a user's kubectl would.
 * The operator runs only in its own phase and starts each run converged on the earlier runs.
 *
 *   npx tsx bench/tenant-provisioning.ts [--tenants 5] [--devices 20] [--runs 3]
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { KubeConfig } from "@kubernetes/client-node";
import { deviceCertificateName, tenantCAName } from "../src/api/derived-names.js";
import { parseDevice } from "../src/api/device.js";
import { API_VERSION } from "../src/api/group.js";
import { parseTenant } from "../src/api/tenant.js";
import { MosquittoDynsecAdapter } from "../src/broker/mosquitto-dynsec.js";
import { operatorConfigSchema } from "../src/config.js";
import { Resource, resourceOf } from "../src/controllers/resources.js";
import { brokerDevice, credentialsSecret, deviceCertificate } from "../src/desired/device.js";
import { DEVICES_QUOTA_RESOURCE, desiredTenant, type KubeObject } from "../src/desired/tenant.js";
import { install } from "../src/install.js";
import { createLogger } from "../src/observability/logger.js";
import { startOperator } from "../src/operator.js";
import { newCaKey, signTenantCa } from "../src/pki/tenant-ca.js";
import { isReady } from "../src/runtime/conditions.js";
import { KubeClient } from "../src/runtime/kube-client.js";
import { type ResourceType, resourcePath } from "../src/runtime/kube-object.js";
import { adminConnection } from "../test/harness/mosquitto.js";
import { issueCertificate } from "../test/harness/pki.js";
import { killServersOnSignal } from "../test/harness/process.js";
import { repoRoot, stackVariables, startStack } from "../test/harness/stack.js";
import { untilIdle } from "../test/support/idle.js";
import { spread, writeResults } from "./support/results.js";
import { type Summary, summarize } from "./support/stats.js";

const { values } = parseArgs({
  options: {
    tenants: { type: "string", default: "5" },
    devices: { type: "string", default: "20" },
    runs: { type: "string", default: "3" },
  },
});
const tenantCount = Number(values.tenants);
const devicesPerTenant = Number(values.devices);
const runCount = Number(values.runs);
const deviceCount = tenantCount * devicesPerTenant;
const BASELINE_LABEL = "bench.iot.tenant-operator.io/baseline";
const CERTIFICATE_REQUEST: ResourceType = {
  apiVersion: "cert-manager.io/v1",
  kind: "CertificateRequest",
  plural: "certificaterequests",
  namespaced: true,
};
const spec = {
  admins: [{ kind: "Group", name: "admins" }],
  quota: { hard: { pods: "20" } },
  devices: { maxDevices: Math.max(100, devicesPerTenant) },
};
/** Devices written at once by the user and by the baseline; the operator has as many device workers. */
const IN_FLIGHT = 16;
/** A user's kubectl, not the operator: the operator must not own the fields of what users write. */
const USER_FIELD_MANAGER = "bench-user";

const tenantNames = (prefix: string) => Array.from({ length: tenantCount }, (_, i) => `${prefix}-${i}`);
const deviceTargets = (prefix: string) =>
  Array.from({ length: deviceCount }, (_, i) => ({
    namespace: `${prefix}-${i % tenantCount}`,
    name: `sensor-${Math.floor(i / tenantCount)}`,
  }));

/** Runs `work` for every item, at most `limit` at once. */
async function inParallel<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await work(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** Lists until every target is Ready; each one's time to Ready in ms after `start`. */
async function timesToReady(
  client: KubeClient,
  resource: ResourceType,
  targets: ReadonlyArray<{ namespace?: string; name: string }>,
  start: number,
): Promise<number[]> {
  const wanted = new Set(targets.map((t) => `${t.namespace ?? ""}/${t.name}`));
  const done = new Map<string, number>();
  const deadline = Date.now() + 15 * 60_000;
  while (done.size < wanted.size) {
    if (Date.now() > deadline) throw new Error(`only ${done.size} of ${wanted.size} Ready after 15 minutes`);
    const list = (await client.request({ verb: "list", method: "GET", path: resourcePath(resource) })) as {
      items: Array<{ metadata: { namespace?: string; name: string } }>;
    };
    const now = performance.now() - start;
    for (const item of list.items) {
      const key = `${item.metadata.namespace ?? ""}/${item.metadata.name}`;
      if (wanted.has(key) && !done.has(key) && isReady(item)) done.set(key, now);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  return [...done.values()];
}

interface Run {
  readonly operator: { tenants: Summary; devices: Summary; tenantsMs: number; devicesMs: number };
  readonly baseline: { devices: Summary; tenantsMs: number; devicesMs: number };
  /** `uptime`'s one-minute load average when the run ended: other work on the machine shows here. */
  readonly loadAverage: number;
}

async function main(): Promise<void> {
  killServersOnSignal();
  const stateDir = await mkdtemp(join(tmpdir(), "bench-tenants-"));
  const stack = await startStack(stateDir);
  try {
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(stack.env.kubeconfig);
    const client = new KubeClient(kubeConfig, { fieldManager: USER_FIELD_MANAGER });
    const config = operatorConfigSchema.parse({
      ...stackVariables(stack.env),
      PROBE_BIND_ADDRESS: "127.0.0.1:0",
      LOG_LEVEL: "warn",
    });
    await install(client, config);
    await quotaCountsDevices(client);
    // One real key pair and CSR stand for every baseline device: the API server does not look inside.
    const material = await issueCertificate(stateDir, stack.env.deviceRootCA, "baseline-device", {
      subject: "/O=baseline/CN=sensor",
      usages: ["clientAuth"],
    });
    const base64 = async (file: string) => (await readFile(file)).toString("base64");
    const pem = {
      cert: await base64(material.certFile),
      key: await base64(material.keyFile),
      csr: await base64(join(stateDir, "baseline-device.csr")),
    };
    const broker = new MosquittoDynsecAdapter({
      connection: adminConnection(stack.env.broker),
      ownerPrefix: "bench-baseline:",
      pacing: 0,
    });

    const runs: Run[] = [];
    try {
      for (let r = 0; r < runCount; r++) {
        console.log(`run ${r + 1}/${runCount}: operator…`);
        const operator = await operatorPhase(kubeConfig, client, config, `op${r}`);
        console.log(`run ${r + 1}/${runCount}: baseline…`);
        const baseline = await baselinePhase(client, config, broker, pem, `base${r}`);
        runs.push({ operator, baseline, loadAverage: loadavg()[0] ?? 0 });
        console.log(
          `  tenants ${(operator.tenantsMs / 1000).toFixed(1)} s (baseline ${(baseline.tenantsMs / 1000).toFixed(1)} s), devices ${(operator.devicesMs / 1000).toFixed(1)} s, p50 ${(operator.devices.p50 / 1000).toFixed(1)} s, p99 ${(operator.devices.p99 / 1000).toFixed(1)} s (baseline ${(baseline.devicesMs / 1000).toFixed(1)} s, p50 ${(baseline.devices.p50 / 1000).toFixed(1)} s, p99 ${(baseline.devices.p99 / 1000).toFixed(1)} s), load ${loadavg()[0]?.toFixed(2)}`,
        );
      }
    } finally {
      await broker.close();
    }

    const seconds = (pick: (run: Run) => number) => runs.map((run) => pick(run) / 1000);
    const figures = [
      spread(
        `${tenantCount} Tenants to Ready, operator (CA issuance included)`,
        "s",
        seconds((run) => run.operator.tenantsMs),
      ),
      spread(
        `the same tenant objects and CA issuance, API server + cert-manager alone`,
        "s",
        seconds((run) => run.baseline.tenantsMs),
      ),
      spread(
        "tenants: operator ÷ baseline",
        "×",
        runs.map((run) => run.operator.tenantsMs / run.baseline.tenantsMs),
      ),
      spread(
        `${deviceCount} Devices to Ready (${devicesPerTenant} per tenant), operator`,
        "s",
        seconds((run) => run.operator.devicesMs),
      ),
      spread(
        "a Device's time to Ready, p50, operator",
        "s",
        seconds((run) => run.operator.devices.p50),
      ),
      spread(
        "a Device's time to Ready, p99, operator",
        "s",
        seconds((run) => run.operator.devices.p99),
      ),
      spread(
        "the same device objects written, API server + broker alone",
        "s",
        seconds((run) => run.baseline.devicesMs),
      ),
      spread(
        "a device's objects written, p50, baseline",
        "s",
        seconds((run) => run.baseline.devices.p50),
      ),
      spread(
        "a device's objects written, p99, baseline",
        "s",
        seconds((run) => run.baseline.devices.p99),
      ),
      spread(
        "devices: operator ÷ baseline",
        "×",
        runs.map((run) => run.operator.devicesMs / run.baseline.devicesMs),
      ),
      spread(
        "Devices Ready per second, operator",
        "/s",
        runs.map((run) => deviceCount / (run.operator.devicesMs / 1000)),
      ),
    ];
    for (const figure of figures) {
      console.log(
        `${figure.label}: median ${figure.median.toFixed(2)} ${figure.unit} (${figure.min.toFixed(2)}–${figure.max.toFixed(2)})`,
      );
    }
    const out = await writeResults(repoRoot, {
      benchmark: "tenant-provisioning",
      parameters: { tenants: tenantCount, devicesPerTenant, runs: runCount },
      runs,
      figures,
    });
    console.log(`\nwrote ${out}`);
  } finally {
    await stack.stop();
    await rm(stateDir, { recursive: true, force: true });
  }
}

/**
 * A CRD installed moments ago is counted by quotas only after kube-controller-manager's next
 * discovery pass (about 30 s); wait for it so that no phase includes it.
 */
async function quotaCountsDevices(client: KubeClient): Promise<void> {
  const namespace = "bench-quota-probe";
  await client.apply(Resource.namespace, {
    apiVersion: "v1",
    kind: "Namespace",
    metadata: { name: namespace },
  });
  await client.apply(Resource.resourceQuota, {
    apiVersion: "v1",
    kind: "ResourceQuota",
    metadata: { name: "devices", namespace },
    spec: { hard: { [DEVICES_QUOTA_RESOURCE]: "1" } },
  });
  for (;;) {
    const quota = (await client.get(Resource.resourceQuota, { namespace, name: "devices" })) as {
      status?: { used?: Record<string, string> };
    };
    if (quota?.status?.used?.[DEVICES_QUOTA_RESOURCE]) return;
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function operatorPhase(
  kubeConfig: KubeConfig,
  client: KubeClient,
  config: ReturnType<typeof operatorConfigSchema.parse>,
  prefix: string,
): Promise<Run["operator"]> {
  const operator = await startOperator({
    kubeConfig,
    config,
    logger: createLogger({ level: "warn" }),
    leaderElection: false,
  });
  try {
    // Converged on the earlier runs' objects before the clock starts.
    await untilIdle(operator.manager.metrics, { timeoutMs: 10 * 60_000 });
    const tenants = tenantNames(prefix);
    const tenantsStart = performance.now();
    for (const name of tenants) {
      await client.apply(Resource.tenant, {
        apiVersion: API_VERSION,
        kind: "Tenant",
        metadata: { name },
        spec,
      });
    }
    const tenantTimes = await timesToReady(
      client,
      Resource.tenant,
      tenants.map((name) => ({ name })),
      tenantsStart,
    );
    const devices = deviceTargets(prefix);
    const devicesStart = performance.now();
    await inParallel(devices, IN_FLIGHT, async (device) => {
      await client.apply(Resource.device, {
        apiVersion: API_VERSION,
        kind: "Device",
        metadata: device,
        spec: {},
      });
    });
    const deviceTimes = await timesToReady(client, Resource.device, devices, devicesStart);
    return {
      tenants: summarize(tenantTimes),
      devices: summarize(deviceTimes),
      tenantsMs: Math.max(...tenantTimes),
      devicesMs: Math.max(...deviceTimes),
    };
  } finally {
    await operator.stop();
  }
}

async function baselinePhase(
  client: KubeClient,
  config: ReturnType<typeof operatorConfigSchema.parse>,
  broker: MosquittoDynsecAdapter,
  pem: { cert: string; key: string; csr: string },
  prefix: string,
): Promise<Run["baseline"]> {
  const marked = (object: KubeObject): KubeObject => {
    // Owner references to a Tenant or Device that does not exist would be collected: the baseline owns nothing.
    const { ownerReferences: _owner, ...metadata } = object.metadata;
    return { ...object, metadata: { ...metadata, labels: { ...metadata.labels, [BASELINE_LABEL]: "true" } } };
  };
  const tenants = tenantNames(prefix).map((name) => ({
    ...parseTenant({ apiVersion: API_VERSION, kind: "Tenant", metadata: { name }, spec }),
    metadata: { name, uid: "00000000-0000-0000-0000-000000000000" },
  }));

  const rootSecret = (await client.get(Resource.secret, {
    namespace: config.OPERATOR_NAMESPACE,
    name: config.ROOT_CA_SECRET,
  })) as { data?: Record<string, string> } | undefined;
  const text = (key: string) => Buffer.from(rootSecret?.data?.[key] ?? "", "base64").toString("utf8");
  const root = { certificatePem: text("tls.crt"), keyPem: text("tls.key") };

  const tenantsStart = performance.now();
  for (const tenant of tenants) {
    const { name } = tenant.metadata;
    await client.apply(
      Resource.tenant,
      marked({ apiVersion: API_VERSION, kind: "Tenant", metadata: { name }, spec }),
    );
    const desired = desiredTenant(tenant, config);
    for (const object of [...desired.namespaces, ...desired.namespaced, ...desired.pki]) {
      await client.apply(resourceOf(object), marked(object));
    }
    // The tenant CA the operator signs itself, for cert-manager's CA Issuer to issue from.
    await client.apply(
      Resource.secret,
      marked({
        apiVersion: "v1",
        kind: "Secret",
        metadata: { namespace: config.OPERATOR_NAMESPACE, name: tenantCAName(name) },
        type: "kubernetes.io/tls",
        data: await tenantCaData(name, root),
      } as KubeObject),
    );
  }
  await timesToReady(
    client,
    Resource.issuer,
    tenants.map((t) => ({ namespace: config.OPERATOR_NAMESPACE, name: tenantCAName(t.metadata.name) })),
    tenantsStart,
  );
  for (const { metadata } of tenants) await writeReady(client, Resource.tenant, { name: metadata.name });
  const tenantsMs = performance.now() - tenantsStart;

  const devicesStart = performance.now();
  const readyAfter: number[] = [];
  await inParallel(deviceTargets(prefix), IN_FLIGHT, async (target) => {
    const tenant = tenants.find((t) => t.metadata.name === target.namespace) ?? tenants[0];
    if (!tenant) throw new Error("no tenant");
    const device = {
      ...parseDevice({ apiVersion: API_VERSION, kind: "Device", metadata: target, spec: {} }),
      metadata: { ...target, uid: "00000000-0000-0000-0000-000000000000" },
    };
    const name = deviceCertificateName(tenant.metadata.name, target.name);
    const namespace = config.OPERATOR_NAMESPACE;
    const certificate = deviceCertificate(device, tenant, namespace);
    const tls = { "tls.crt": pem.cert, "tls.key": pem.key, "ca.crt": pem.cert };
    for (const object of [
      { apiVersion: API_VERSION, kind: "Device", metadata: target, spec: {} },
      // An issuer group nobody serves: cert-manager neither approves nor signs what the baseline writes.
      {
        ...certificate,
        spec: { ...(certificate.spec as object), issuerRef: { group: "bench.invalid", name: "none" } },
      },
      {
        apiVersion: CERTIFICATE_REQUEST.apiVersion,
        kind: CERTIFICATE_REQUEST.kind,
        metadata: { name: `${name}-1`, namespace, labels: certificate.metadata.labels },
        spec: {
          request: pem.csr,
          usages: ["client auth", "digital signature", "key encipherment"],
          issuerRef: { group: "bench.invalid", name: "none" },
        },
      },
      {
        apiVersion: "v1",
        kind: "Secret",
        metadata: { name, namespace, labels: certificate.metadata.labels },
        type: "kubernetes.io/tls",
        data: tls,
      },
      credentialsSecret(device, tenant.metadata.name, { type: "kubernetes.io/tls", data: tls }),
    ] as KubeObject[]) {
      const resource = object.kind === "CertificateRequest" ? CERTIFICATE_REQUEST : resourceOf(object);
      await client.apply(resource, marked(object));
    }
    await broker.applyDevice(
      brokerDevice(device, tenant, { type: "x509", username: `CN=${target.name},O=${tenant.metadata.name}` }),
    );
    await writeReady(client, Resource.device, target);
    readyAfter.push(performance.now() - devicesStart);
  });
  const devicesMs = performance.now() - devicesStart;

  // Leave nothing for the next run's operator to see.
  for (const resource of [CERTIFICATE_REQUEST, Resource.certificate, Resource.issuer, Resource.secret]) {
    await client.request({
      verb: "delete",
      method: "DELETE",
      path: resourcePath(resource, { namespace: config.OPERATOR_NAMESPACE }),
      query: { labelSelector: BASELINE_LABEL },
    });
  }
  for (const { metadata } of tenants) {
    await client.delete(Resource.tenant, { name: metadata.name });
    await client.delete(Resource.namespace, { name: metadata.name });
  }
  await broker.syncAll([]);
  for (const { metadata } of tenants) {
    while (await client.get(Resource.namespace, { name: metadata.name })) {
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  return { devices: summarize(readyAfter), tenantsMs, devicesMs };
}

/** A tenant CA Secret's data, signed with the root as the operator signs it. */
async function tenantCaData(
  tenant: string,
  root: { certificatePem: string; keyPem: string },
): Promise<Record<string, string>> {
  const keyPem = newCaKey();
  const certificatePem = await signTenantCa({ tenant, keyPem, root, nowMs: Date.now() });
  const b64 = (text: string) => Buffer.from(text).toString("base64");
  return { "tls.crt": b64(certificatePem), "tls.key": b64(keyPem), "ca.crt": b64(root.certificatePem) };
}

/** The status write the operator makes once an object is Ready. */
async function writeReady(
  client: KubeClient,
  resource: ResourceType,
  target: { namespace?: string; name: string },
): Promise<void> {
  await client.applyStatus(resource, {
    apiVersion: resource.apiVersion,
    kind: resource.kind,
    metadata: target,
    status: {
      conditions: [
        {
          type: "Ready",
          status: "True",
          reason: "Baseline",
          message: "written by the baseline",
          lastTransitionTime: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
        },
      ],
    },
  });
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
