/**
 * `npm run demo`: the operator's whole job on a local stack. Starts the control plane, cert-manager
 * and Mosquitto, installs and runs the operator (its real executable), applies the example tenants
 * and devices, waits until they are Ready, and prints what they became, the isolation report, a
 * refused cross-tenant attempt in the API server's audit log, the security Events and the operator's
 * audit trail checked.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { freePort } from "../test/harness/ports.js";
import { killServersOnSignal, startProcess } from "../test/harness/process.js";
import { repoRoot, stackVariables, startStack } from "../test/harness/stack.js";

const run = promisify(execFile);

async function main(): Promise<void> {
  killServersOnSignal();
  const stateDir = await mkdtemp(join(tmpdir(), "iot-demo-"));
  const started = Date.now();
  console.log(
    "starting etcd, kube-apiserver, kube-controller-manager, cert-manager and Mosquitto on 127.0.0.1 …",
  );
  const stack = await startStack(stateDir);
  const { env } = stack;
  const operatorEnv = {
    ...process.env,
    ...stackVariables(env),
    PROBE_BIND_ADDRESS: `127.0.0.1:${await freePort()}`,
    // Tenants may create Ingresses only under <namespace>.<domain>; verify then proves the foreign-host refusal.
    TENANT_INGRESS_DOMAIN: "apps.demo.test",
  };
  const cli = join(repoRoot, "bin/iot-tenant-operator.js");
  const kubectl = (...args: string[]) =>
    run(join(env.binDir, "kubectl"), [`--kubeconfig=${env.kubeconfig}`, ...args], { maxBuffer: 16 << 20 });
  try {
    await run(process.execPath, [cli, "install"], { env: operatorEnv });
    const operatorLog = join(stateDir, "operator.log");
    const operator = startProcess("iot-tenant-operator", process.execPath, [cli, "run"], {
      logFile: operatorLog,
      env: operatorEnv,
    });
    console.log(`operator running (pid ${operator.pid}, logs in ${operatorLog})`);

    const examples = ["acme", "globex"].map((t) => join(repoRoot, "examples", t));
    for (const dir of examples) await kubectl("apply", "--server-side", "-f", join(dir, "tenant.yaml"));
    await kubectl("wait", "--for=condition=Ready", "--timeout=180s", "tenant/acme", "tenant/globex");
    for (const dir of examples) await kubectl("apply", "--server-side", "-f", dir);
    await kubectl("wait", "--for=condition=Ready", "--timeout=180s", "devices", "--all", "-A");
    console.log(`\nready after ${Math.round((Date.now() - started) / 1000)} s\n`);

    console.log((await kubectl("get", "tenants", "-o", "wide")).stdout);
    console.log((await kubectl("get", "devices", "-A")).stdout);
    console.log(
      (
        await kubectl(
          "get",
          "namespaces",
          "-l",
          "iot.tenant-operator.io/tenant",
          "-L",
          "iot.tenant-operator.io/tenant,pod-security.kubernetes.io/enforce",
        )
      ).stdout,
    );
    console.log((await kubectl("get", "networkpolicies", "-n", "acme")).stdout);

    const verify = await run(process.execPath, [cli, "verify"], { env: operatorEnv }).catch(
      (error: { stdout?: string; code?: number }) => ({ stdout: error.stdout ?? "", failed: true }),
    );
    console.log(verify.stdout);

    // A globex admin tries to delete an acme device: RBAC refuses it, and the API server's audit
    // log (the policy the README gives) says who tried what.
    const attempt = await kubectl(
      "--as=eve",
      "--as-group=globex-admins",
      "-n",
      "acme",
      "delete",
      "device",
      "thermostat-lobby",
      "--wait=false",
    ).catch((error: { stderr?: string }) => ({ stdout: error.stderr ?? "" }));
    console.log(`a globex admin deletes an acme device: ${attempt.stdout.trim()}`);
    await sleep(1_000);
    const refused = (await readFile(env.apiServerAuditLog, "utf8"))
      .split("\n")
      .filter((line) => line.includes('"thermostat-lobby"') && line.includes('"eve"'))
      .map(
        (line) =>
          JSON.parse(line) as {
            verb: string;
            impersonatedUser?: { username?: string };
            objectRef?: { resource?: string };
            responseStatus?: { code?: number };
          },
      )
      .map(
        (e) =>
          `  ${e.impersonatedUser?.username} ${e.verb} ${e.objectRef?.resource}/thermostat-lobby -> ${e.responseStatus?.code}`,
      );
    console.log(`kube-apiserver audit log:\n${refused.join("\n")}\n`);

    // What the operator saw: security Events, then its audit trail checked.
    const events = JSON.parse(
      (await kubectl("get", "events.v1.events.k8s.io", "-A", "-o", "json")).stdout,
    ) as {
      items: Array<{
        reason: string;
        type: string;
        note?: string;
        regarding: { kind: string; name: string };
        series?: { count: number };
      }>;
    };
    const security = events.items.filter(
      (e) => e.type === "Warning" || /Connected|Registered|Credentials/.test(e.reason),
    );
    for (const e of security.slice(-15))
      console.log(
        `  ${e.type} ${e.reason} ${e.regarding.kind}/${e.regarding.name} x${e.series?.count ?? 1}: ${e.note ?? ""}`,
      );
    await operator.stop();
    const trail = await run(process.execPath, [
      cli,
      "audit",
      "verify",
      stackVariables(env).AUDIT_LOG_FILE ?? "",
    ]).catch((error: { stdout?: string }) => ({ stdout: error.stdout ?? "" }));
    console.log(`\n${trail.stdout}`);
    if ("failed" in verify) process.exitCode = 1;
  } finally {
    await stack.stop();
    await sleep(100);
  }
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
