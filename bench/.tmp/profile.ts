import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { API_VERSION } from "/work/wt/fleet/src/api/group.js";
import { operatorConfigSchema } from "/work/wt/fleet/src/config.js";
import { Resource } from "/work/wt/fleet/src/controllers/resources.js";
import { install } from "/work/wt/fleet/src/install.js";
import { createLogger } from "/work/wt/fleet/src/observability/logger.js";
import { startOperator } from "/work/wt/fleet/src/operator.js";
import { isReady } from "/work/wt/fleet/src/runtime/conditions.js";
import { KubeClient } from "/work/wt/fleet/src/runtime/kube-client.js";
import { resourcePath } from "/work/wt/fleet/src/runtime/kube-object.js";
import { killServersOnSignal } from "/work/wt/fleet/test/harness/process.js";
import { stackVariables, startStack } from "/work/wt/fleet/test/harness/stack.js";
const N = Number(process.argv[2] ?? 200);
const cmArgs = process.argv[3] ? process.argv[3].split(",") : undefined;
killServersOnSignal();
const stateDir = await mkdtemp(join(tmpdir(), "bench-profile-"));
const stack = await startStack(stateDir, cmArgs ? { certManagerArgs: cmArgs } : {});
try {
  const kc = new KubeConfig(); kc.loadFromFile(stack.env.kubeconfig);
  const client = new KubeClient(kc, { fieldManager: "bench-user" });
  const config = operatorConfigSchema.parse({ ...stackVariables(stack.env), PROBE_BIND_ADDRESS: "127.0.0.1:0", LOG_LEVEL: "warn" });
  await install(client, config);
  const op = await startOperator({ kubeConfig: kc, config, logger: createLogger({ level: "warn" }), leaderElection: false });
  await client.apply(Resource.tenant, { apiVersion: API_VERSION, kind: "Tenant", metadata: { name: "p" }, spec: { devices: { maxDevices: N } } });
  while (!isReady(await client.get(Resource.tenant, { name: "p" }))) await new Promise(r => setTimeout(r, 300));
  const t0 = Date.now();
  let next = 0;
  await Promise.all(Array.from({ length: 16 }, async () => { while (next < N) { const i = next++; await client.apply(Resource.device, { apiVersion: API_VERSION, kind: "Device", metadata: { namespace: "p", name: `d-${i}` }, spec: {} }); } }));
  console.log("created in", (Date.now() - t0) / 1000);
  for (;;) {
    const list = await client.request({ verb: "list", method: "GET", path: resourcePath(Resource.device, { namespace: "p" }) }) as any;
    const ready = list.items.filter((i: any) => isReady(i)).length;
    if (ready >= N) break;
    await new Promise(r => setTimeout(r, 1000));
  }
  const total = (Date.now() - t0) / 1000;
  const certs = (await client.request({ verb: "list", method: "GET", path: resourcePath(Resource.certificate, { namespace: "iot-system" }) }) as any).items;
  const secrets = (await client.request({ verb: "list", method: "GET", path: resourcePath(Resource.secret, { namespace: "iot-system" }) }) as any).items;
  const devices = (await client.request({ verb: "list", method: "GET", path: resourcePath(Resource.device, { namespace: "p" }) }) as any).items;
  const ts = (s?: string) => s ? (Date.parse(s) - t0) / 1000 : NaN;
  const cond = (o: any, t: string) => ts(o?.status?.conditions?.find((c: any) => c.type === t)?.lastTransitionTime);
  const rows = devices.map((d: any) => {
    const c = certs.find((x: any) => x.metadata.name === `p.${d.metadata.name}`);
    const s = secrets.find((x: any) => x.metadata.name === `p.${d.metadata.name}`);
    return { created: ts(d.metadata.creationTimestamp), cert: ts(c?.metadata.creationTimestamp), certReady: cond(c, "Ready"), secret: ts(s?.metadata.creationTimestamp), ready: cond(d, "Ready") };
  });
  const pct = (k: string, p: number) => { const v = rows.map((r: any) => r[k]).filter((x: number) => !Number.isNaN(x)).sort((a: number, b: number) => a - b); return v[Math.ceil(p / 100 * v.length) - 1]; };
  for (const k of ["created", "cert", "certReady", "secret", "ready"]) console.log(k, "p50", pct(k, 50), "p99", pct(k, 99), "max", pct(k, 100));
  const m = await op.manager.metrics.registry.getMetricsAsJSON();
  for (const x of m as any[]) if (["controller_runtime_reconcile_total", "rest_client_requests_total", "iot_broker_commands_total"].includes(x.name)) console.log(x.name, JSON.stringify(x.values.map((v: any) => [v.labels, v.value])));
  console.log("total", total);
  await op.stop();
} finally { await stack.stop(); }
