/**
 * `npm run demo`: isolation happening, on a local stack. Starts the control plane, cert-manager and
 * Mosquitto, installs and runs the operator (its real executable), applies the example tenants acme
 * and globex with their devices and shows, with real clients against the real broker and API server:
 * a device's message reaching another device of its tenant, a device refused on the other tenant's
 * topics, a tenant admin refused the other tenant's device Secret, a disabled device dropped while
 * connected (timed), then what was recorded about it (the API server's audit log, the security Events,
 * the operator's audit trail checked) and `verify`'s table.
 *
 * `--with-node` adds a real node to the stack; `--show-denied` (which needs it) then shows, with
 * probe pods in both tenants, a same-tenant connection made and a cross-tenant one refused by the
 * node's NetworkPolicy enforcer. IOT_DEMO_STACK names a JSON StackEnv of a stack already running
 * (the node suite's, whose test runs this demo): the demo uses it, and removes its tenants after.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import type { MqttClient } from "mqtt";
import { connectWithPem, publishCode, subscribeCodes } from "../bench/support/mqtt-device.js";
import { OPERATOR_NAMESPACE } from "../src/api/group.js";
import { kubectlOn } from "../test/harness/kubectl.js";
import { enforced, PROBE_PORT, probesOn } from "../test/harness/netprobe.js";
import { freePort } from "../test/harness/ports.js";
import { killServersOnSignal, startProcess } from "../test/harness/process.js";
import { repoRoot, type StackEnv, stackVariables, startStack } from "../test/harness/stack.js";

const run = promisify(execFile);

/** MQTT v5 reason codes the demo can meet, by name. */
const REASONS: Readonly<Record<number, string>> = {
  0: "Success",
  1: "Granted QoS 1",
  16: "No matching subscribers",
  135: "Not authorized",
  142: "Session taken over",
  152: "Administrative action",
};
const reason = (code: number) => `${code} (${REASONS[code] ?? "see MQTT 5 §2.4"})`;
const seconds = (since: number) => `${((Date.now() - since) / 1000).toFixed(1)} s`;

type Kubectl = (...args: string[]) => Promise<{ stdout: string; stderr: string; ok: boolean }>;

interface Condition {
  readonly type: string;
  readonly status: string;
  readonly reason?: string;
  readonly message?: string;
}
interface Listed {
  readonly kind: string;
  readonly metadata: { readonly name: string; readonly namespace?: string };
  readonly status?: { readonly conditions?: readonly Condition[] };
}

const listedName = (i: Listed) =>
  `${i.kind} ${i.metadata.namespace ? `${i.metadata.namespace}/` : ""}${i.metadata.name}`;

/** The Tenants and Devices the manifests in `paths` define, by `listedName` (they must exist). */
async function tenantsAndDevicesOf(kubectl: Kubectl, paths: readonly string[]): Promise<Set<string>> {
  const { stdout, stderr, ok } = await kubectl("get", ...paths.flatMap((p) => ["-f", p]), "-o", "json");
  if (!ok) throw new Error(stderr);
  const listed = JSON.parse(stdout) as { items?: Listed[] } & Listed;
  return new Set(
    (listed.items ?? [listed]).filter((i) => i.kind === "Tenant" || i.kind === "Device").map(listedName),
  );
}

/**
 * Polls until the `expected` Tenants and Devices are Ready (others a shared stack holds are not
 * the demo's): names each as it gets there and, every few seconds, what the others are waiting
 * for (their Ready condition's reason and message).
 */
async function untilReady(
  kubectl: Kubectl,
  expected: ReadonlySet<string>,
  started: number,
  seen: Set<string>,
): Promise<void> {
  let reportedAt = Date.now();
  const deadline = Date.now() + 180_000;
  for (;;) {
    const { stdout } = await kubectl("get", "tenants,devices", "-A", "-o", "json");
    const items = (JSON.parse(stdout || '{"items":[]}') as { items: Listed[] }).items.filter((i) =>
      expected.has(listedName(i)),
    );
    const ready = (i: Listed) => i.status?.conditions?.find((c) => c.type === "Ready");
    for (const item of items.filter((i) => ready(i)?.status === "True" && !seen.has(listedName(i)))) {
      seen.add(listedName(item));
      console.log(`  [${seconds(started)}] ${listedName(item)} Ready (${seen.size}/${expected.size})`);
    }
    if ([...expected].every((n) => seen.has(n))) return;
    if (Date.now() > deadline) throw new Error(`only ${seen.size} of ${expected.size} Ready after 180 s`);
    if (Date.now() - reportedAt > 3_000) {
      for (const item of items.filter((i) => !seen.has(listedName(i)))) {
        // The Ready condition names the conditions it waits for; theirs say why.
        const waiting = (item.status?.conditions ?? []).filter(
          (c) => c.type !== "Ready" && c.status !== "True",
        );
        const why = waiting.length
          ? waiting.map((c) => `${c.type} ${c.reason}: ${c.message}`).join("; ")
          : (ready(item)?.message ?? "not reconciled yet");
        console.log(`  [${seconds(started)}] ${listedName(item)} waiting: ${why}`);
      }
      reportedAt = Date.now();
    }
    await sleep(250);
  }
}

interface DeviceTls {
  readonly cert: string;
  readonly key: string;
}

async function deviceTls(kubectl: Kubectl, namespace: string, device: string): Promise<DeviceTls> {
  const { stdout } = await kubectl("get", "secret", `${device}-mqtt`, "-n", namespace, "-o", "json");
  const data = (JSON.parse(stdout) as { data: Record<string, string> }).data;
  const text = (key: string) => Buffer.from(data[key] ?? "", "base64").toString("utf8");
  return { cert: text("tls.crt"), key: text("tls.key") };
}

async function showSiblingDelivery(
  connect: (ns: string, device: string) => Promise<MqttClient>,
): Promise<void> {
  console.log("\n1. A device's message reaches another device of its tenant");
  const analytics = await connect("acme", "analytics");
  const gateway = await connect("acme", "gateway-floor-3");
  try {
    const topic = "tenants/acme/sites/hq/floors/3/room-301/telemetry";
    console.log(
      `   acme/analytics subscribes to tenants/acme/#: SUBACK ${reason((await subscribeCodes(analytics, "tenants/acme/#"))[0] ?? -1)}`,
    );
    const received = new Promise<{ topic: string; payload: string }>((resolve) =>
      analytics.once("message", (t, payload) => resolve({ topic: t, payload: payload.toString() })),
    );
    const sent = Date.now();
    console.log(
      `   acme/gateway-floor-3 publishes {"celsius":21.5} to ${topic}: PUBACK ${reason(await publishCode(gateway, topic, '{"celsius":21.5}'))}`,
    );
    const message = await received;
    console.log(
      `   acme/analytics received ${message.payload} on ${message.topic} after ${Date.now() - sent} ms`,
    );
  } finally {
    await Promise.all([analytics.endAsync(true), gateway.endAsync(true)]);
  }
}

async function showCrossTenantRefusal(
  connect: (ns: string, device: string) => Promise<MqttClient>,
): Promise<void> {
  console.log("\n2. A device is refused on the other tenant's topics (the broker's MQTT 5 answers)");
  const thermostat = await connect("acme", "thermostat-lobby");
  try {
    const own = "tenants/acme/devices/thermostat-lobby/state";
    const foreign = "tenants/globex/devices/meter-0001/commands";
    console.log(
      `   acme/thermostat-lobby publishes to its own ${own}: PUBACK ${reason(await publishCode(thermostat, own, "on"))}`,
    );
    console.log(
      `   acme/thermostat-lobby publishes to ${foreign}: PUBACK ${reason(await publishCode(thermostat, foreign, "off"))}`,
    );
    console.log(
      `   acme/thermostat-lobby subscribes to tenants/globex/#: SUBACK ${reason((await subscribeCodes(thermostat, "tenants/globex/#"))[0] ?? -1)}`,
    );
    console.log(
      `   acme/thermostat-lobby subscribes to #: SUBACK ${reason((await subscribeCodes(thermostat, "#"))[0] ?? -1)}`,
    );
  } finally {
    await thermostat.endAsync(true);
  }
}

async function showSecretRefusal(kubectl: Kubectl): Promise<void> {
  console.log("\n3. A tenant admin is refused the other tenant's device Secret (the API server's answer)");
  const asAcmeAdmin = ["--as=alice", "--as-group=acme-admins"];
  const own = await kubectl(
    "get",
    "secret",
    "thermostat-lobby-mqtt",
    "-n",
    "acme",
    "-o",
    "name",
    ...asAcmeAdmin,
  );
  console.log(
    `   alice (acme-admins) reads acme's thermostat-lobby-mqtt: ${own.ok ? `allowed (${own.stdout.trim()})` : own.stderr.trim()}`,
  );
  const foreign = await kubectl(
    "get",
    "secret",
    "meter-0001-mqtt",
    "-n",
    "globex",
    "-o",
    "name",
    ...asAcmeAdmin,
  );
  console.log(
    `   alice (acme-admins) reads globex's meter-0001-mqtt: ${foreign.ok ? "ALLOWED (isolation broken)" : foreign.stderr.trim()}`,
  );
  if (foreign.ok) process.exitCode = 1;
}

async function showCutOff(
  kubectl: Kubectl,
  connect: (ns: string, device: string) => Promise<MqttClient>,
): Promise<void> {
  console.log("\n4. A device disabled while connected is dropped");
  const meter = await connect("globex", "meter-0001");
  const dropped = new Promise<string>((resolve) => {
    meter.once("disconnect", (packet) => resolve(`DISCONNECT ${reason(packet.reasonCode ?? 0)}`));
    meter.once("close", () => resolve("connection closed"));
  });
  const start = Date.now();
  await kubectl(
    "patch",
    "device",
    "meter-0001",
    "-n",
    "globex",
    "--type=merge",
    "-p",
    '{"spec":{"enabled":false}}',
  );
  console.log('   kubectl patch device meter-0001 -n globex -p \'{"spec":{"enabled":false}}\'');
  const timeout = sleep(30_000).then(() => "still connected after 30 s");
  const how = await Promise.race([dropped, timeout]);
  console.log(`   globex/meter-0001: ${how} ${seconds(start)} after the patch`);
  await meter.endAsync(true);
  // Its certificate is still valid until the CRL says otherwise: the broker may let it in, with nothing granted.
  try {
    const again = await connect("globex", "meter-0001");
    const own = "tenants/globex/devices/meter-0001";
    const subscribed = (await subscribeCodes(again, `${own}/#`))[0] ?? -1;
    const published = await publishCode(again, `${own}/telemetry`, "x");
    await again.endAsync(true);
    console.log(
      `   reconnected: SUBSCRIBE ${own}/# -> SUBACK ${reason(subscribed)}, PUBLISH -> PUBACK ${reason(published)}`,
    );
    if (subscribed !== 135 || published !== 135) process.exitCode = 1;
  } catch (error) {
    console.log(`   reconnecting: refused (${error instanceof Error ? error.message : String(error)})`);
  }
}

/**
 * Packets on the node: probe pods in acme (a target and its same-tenant twin) and in globex; the
 * twin's TCP connection to the target is made, globex's is refused by kube-router enforcing the
 * NetworkPolicies the operator made.
 */
async function showPacketRefusal(env: StackEnv): Promise<void> {
  console.log(
    "\n6. A pod is refused a connection to the other tenant's pod (packets on the node; kube-router enforces the operator's NetworkPolicies)",
  );
  const probes = probesOn(env, (args, options) => kubectlOn(env, args, options));
  const started = Date.now();
  const [target, twin, foreign] = await probes.start([
    { namespace: "acme", name: "probe" },
    { namespace: "acme", name: "probe-twin" },
    { namespace: "globex", name: "probe" },
  ]);
  if (!target || !twin || !foreign) throw new Error("the probe pods did not start");
  await enforced([target, twin, foreign]);
  console.log(`   probe pods in acme and globex running and under policy after ${seconds(started)}`);
  for (const [from, expected] of [
    [twin, true],
    [foreign, false],
  ] as const) {
    const outcome = await probes.connect(from, "tcp", target.ip);
    console.log(
      `   ${from.namespace}/${from.name} -> acme/probe (${target.ip}:${PROBE_PORT}) TCP: ${outcome.connected ? "connected" : "refused"} (${outcome.output})`,
    );
    if (outcome.connected !== expected) process.exitCode = 1;
  }
}

/** The refused attempts as the records show them: the API server's audit log, the security Events. */
async function showRecords(kubectl: Kubectl, env: StackEnv): Promise<void> {
  console.log("\n5. What was recorded");
  // The policy the README gives logs Secrets at Metadata: who asked, for what, the answer; no data.
  const refused = (await readFile(env.apiServerAuditLog, "utf8"))
    .split("\n")
    .filter((line) => line.includes('"meter-0001-mqtt"') && line.includes('"alice"'))
    .map(
      (line) =>
        JSON.parse(line) as {
          verb: string;
          impersonatedUser?: { username?: string };
          objectRef?: { resource?: string; namespace?: string };
          responseStatus?: { code?: number };
        },
    );
  for (const e of refused)
    console.log(
      `   kube-apiserver audit: ${e.impersonatedUser?.username} ${e.verb} ${e.objectRef?.resource} ${e.objectRef?.namespace}/meter-0001-mqtt -> ${e.responseStatus?.code}`,
    );
  const { stdout } = await kubectl("get", "events.v1.events.k8s.io", "-A", "-o", "json");
  const events = (
    JSON.parse(stdout) as {
      items: Array<{
        reason: string;
        type: string;
        note?: string;
        regarding: { kind: string; name: string };
        series?: { count: number };
      }>;
    }
  ).items.filter((e) => e.type === "Warning" || /Disabled|Revoked|Disconnected|TakenOver/.test(e.reason));
  for (const e of events.slice(-10))
    console.log(
      `   Event ${e.type} ${e.reason} ${e.regarding.kind}/${e.regarding.name} x${e.series?.count ?? 1}: ${e.note ?? ""}`,
    );
}

/** The running stack IOT_DEMO_STACK names, or a new one (with a node when `withNode`) that `stop` ends. */
async function demoStack(
  stateDir: string,
  withNode: boolean,
): Promise<{ env: StackEnv; stop: () => Promise<void>; attached: boolean }> {
  const file = process.env.IOT_DEMO_STACK;
  if (file) {
    const env = JSON.parse(await readFile(file, "utf8")) as StackEnv;
    if (withNode && !env.node) throw new Error(`--with-node: the stack in ${file} runs no node`);
    return { env, stop: async () => {}, attached: true };
  }
  console.log(
    `starting etcd, kube-apiserver, kube-controller-manager, cert-manager and Mosquitto${withNode ? ", and a node (containerd, kubelet, kube-proxy, kube-router, CoreDNS)" : ""} on this machine …`,
  );
  const stack = await startStack(stateDir, { withNode });
  return { env: stack.env, stop: stack.stop, attached: false };
}

async function main(): Promise<void> {
  const withNode = process.argv.includes("--with-node");
  const showDenied = process.argv.includes("--show-denied");
  if (showDenied && !withNode) {
    throw new Error(
      "--show-denied needs --with-node: the refusal is a packet the node's policy enforcer drops",
    );
  }
  killServersOnSignal();
  const stateDir = await mkdtemp(join(tmpdir(), "iot-demo-"));
  const started = Date.now();
  const stack = await demoStack(stateDir, withNode);
  const { env } = stack;
  console.log(`stack up after ${seconds(started)}`);
  const operatorEnv = {
    ...process.env,
    ...stackVariables(env),
    PROBE_BIND_ADDRESS: `127.0.0.1:${await freePort()}`,
    // The demo's own trail (its file and its chain head), which `audit verify` checks at the end;
    // on a shared stack, the operators of other tests have advanced the default chain head.
    AUDIT_LOG_FILE: join(stateDir, "audit.log"),
    AUDIT_SECRET: `iot-demo-audit-${randomBytes(4).toString("hex")}`,
    // Tenants may create Ingresses only under <namespace>.<domain>; verify then proves the foreign-host refusal.
    TENANT_INGRESS_DOMAIN: "apps.demo.test",
  };
  const cli = join(repoRoot, "bin/iot-tenant-operator.js");
  const kubectl: Kubectl = (...args) => kubectlOn(env, args);
  const connect = async (namespace: string, device: string) =>
    connectWithPem(
      { host: env.broker.host, mtlsPort: env.broker.mtlsPort, caFile: env.broker.caFile },
      await deviceTls(kubectl, namespace, device),
      { clientId: `${namespace}-${device}` },
    );
  try {
    await run(process.execPath, [cli, "install"], { env: operatorEnv });
    console.log(`CRDs, tenant-admin role and admission policy installed after ${seconds(started)}`);
    const operatorLog = join(stateDir, "operator.log");
    const operator = startProcess("iot-tenant-operator", process.execPath, [cli, "run"], {
      logFile: operatorLog,
      env: operatorEnv,
    });
    console.log(`operator running (pid ${operator.pid}, logs in ${operatorLog})`);

    // Tenants first: the API server admits a tenant's Devices once its namespaces exist.
    const examples = ["acme", "globex"].map((t) => join(repoRoot, "examples", t));
    for (const dir of examples) await kubectl("apply", "--server-side", "-f", join(dir, "tenant.yaml"));
    console.log(`Tenants acme and globex applied after ${seconds(started)}`);
    const seen = new Set<string>();
    await untilReady(kubectl, new Set(["Tenant acme", "Tenant globex"]), started, seen);
    for (const dir of examples) await kubectl("apply", "--server-side", "-f", dir);
    await untilReady(kubectl, await tenantsAndDevicesOf(kubectl, examples), started, seen);
    console.log(`\neverything Ready ${seconds(started)} after the start\n`);
    console.log((await kubectl("get", "tenants", "acme", "globex", "-o", "wide")).stdout);
    console.log((await kubectl("get", "devices", "-A")).stdout);

    const shown = Date.now();
    await showSiblingDelivery(connect);
    await showCrossTenantRefusal(connect);
    await showSecretRefusal(kubectl);
    await showCutOff(kubectl, connect);
    console.log(`\n(the four demonstrations took ${seconds(shown)})`);
    await sleep(1_000); // the API server flushes its audit log in batches
    await showRecords(kubectl, env);
    if (showDenied) await showPacketRefusal(env);

    const verify = await run(process.execPath, [cli, "verify"], { env: operatorEnv }).catch(
      (error: { stdout?: string }) => ({ stdout: error.stdout ?? "", failed: true }),
    );
    console.log(`\n${verify.stdout}`);
    // A stack the demo did not start is left as found; the operator finalizes the tenants it removes.
    if (stack.attached) await kubectl("delete", "tenants", "acme", "globex", "--timeout=180s");
    await operator.stop();
    if (stack.attached) {
      await kubectl(
        "delete",
        "secret",
        "-n",
        OPERATOR_NAMESPACE,
        operatorEnv.AUDIT_SECRET,
        "--ignore-not-found",
      );
    }
    // Once the operator has stopped, its audit trail is complete: check it as `audit verify` does.
    const trail = await run(process.execPath, [cli, "audit", "verify", operatorEnv.AUDIT_LOG_FILE]).catch(
      (error: { stdout?: string; stderr?: string }) => ({
        stdout: `${error.stdout ?? ""}${error.stderr ?? ""}`,
        failed: true,
      }),
    );
    console.log(trail.stdout);
    console.log(`demo done in ${seconds(started)}`);
    if ("failed" in verify || "failed" in trail) process.exitCode = 1;
  } finally {
    await stack.stop();
    await sleep(100);
  }
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
