import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { CONFIG_MAP, NAMESPACE } from "../../test/fixtures/runtime/resources.js";
import { adminKubeConfig, eventually, uniqueName } from "../../test/support/kube.js";
import { KubeClient } from "./kube-client.js";
import { LEASE_RESOURCE } from "./leader-election.js";

const LEASE_DURATION_MS = 3_000;
const RETRY_PERIOD_MS = 500;
const FIXTURE = new URL("../../test/fixtures/runtime/leader-operator.ts", import.meta.url).pathname;

const admin = new KubeClient(adminKubeConfig());
const namespace = uniqueName("runtime-le");
const leaseName = "runtime-test-leader";

interface Replica {
  readonly identity: string;
  readonly child: ChildProcess;
  readonly reconciled: Set<string>;
  readonly messages: string[];
  readonly exited: Promise<number | null>;
}

const replicas: Replica[] = [];

function startReplica(identity: string, leaseDurationMs = LEASE_DURATION_MS): Replica {
  const child = spawn(process.execPath, ["--import", "tsx", FIXTURE], {
    env: {
      ...process.env,
      KUBECONFIG: inject("stack").kubeconfig,
      TEST_NAMESPACE: namespace,
      OPERATOR_IDENTITY: identity,
      LEASE_NAME: leaseName,
      LEASE_DURATION_MS: String(leaseDurationMs),
      RENEW_DEADLINE_MS: "2000",
      RETRY_PERIOD_MS: String(RETRY_PERIOD_MS),
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const replica: Replica = {
    identity,
    child,
    reconciled: new Set(),
    messages: [],
    exited: new Promise((resolve) => child.once("exit", (code) => resolve(code))),
  };
  createInterface(child.stdout as NodeJS.ReadableStream).on("line", (line) => {
    const entry = JSON.parse(line) as { msg: string; reconciled?: string };
    replica.messages.push(entry.msg);
    if (entry.reconciled) replica.reconciled.add(entry.reconciled);
  });
  replicas.push(replica);
  return replica;
}

async function leaseHolder(): Promise<string | undefined> {
  const lease = (await admin.get(LEASE_RESOURCE, { namespace, name: leaseName })) as
    | { spec?: { holderIdentity?: string } }
    | undefined;
  return lease?.spec?.holderIdentity ?? undefined;
}

async function createConfigMap(name: string) {
  await admin.create(CONFIG_MAP, {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: { name, namespace, labels: { "runtime-test/leader": "yes" } },
  });
  return `${namespace}/${name}`;
}

beforeAll(async () => {
  await admin.apply(NAMESPACE, { apiVersion: "v1", kind: "Namespace", metadata: { name: namespace } });
});

afterAll(async () => {
  for (const replica of replicas) replica.child.kill("SIGKILL");
  await Promise.all(replicas.map((replica) => replica.exited));
  await admin.delete(NAMESPACE, { name: namespace });
});

describe("leader election between two operator processes", () => {
  it("lets exactly one reconcile, hands over once the lease expires when the leader dies, and without waiting on SIGTERM", async () => {
    const a = startReplica("replica-a");
    const b = startReplica("replica-b");
    const firstHolder = await eventually("a leader", leaseHolder, 30_000);
    const [leader, standby] = firstHolder === a.identity ? [a, b] : [b, a];
    const keys = await Promise.all(["one", "two", "three"].map((n) => createConfigMap(uniqueName(n))));
    await eventually("leader reconciled all", async () =>
      keys.every((k) => leader.reconciled.has(k)) ? true : undefined,
    );
    await eventually("standby synced and waiting", async () =>
      standby.messages.includes("waiting for leadership") ? true : undefined,
    );
    expect(standby.reconciled.size).toBe(0);

    // Kill the leader without a chance to release: the standby must wait out the lease, and does take over.
    leader.child.kill("SIGKILL");
    const killedAt = performance.now();
    await eventually(
      "standby took over",
      async () => ((await leaseHolder()) === standby.identity ? true : undefined),
      60_000,
    );
    const takeoverMs = performance.now() - killedAt;
    console.log(
      `[leader-election] takeover after SIGKILL: ${Math.round(takeoverMs)} ms (lease ${LEASE_DURATION_MS} ms)`,
    );
    // The last renewal came about one retry period (plus a slow request) before the kill; a standby
    // that did not wait out the lease would take over within one retry period.
    expect(takeoverMs).toBeGreaterThanOrEqual(LEASE_DURATION_MS - 3 * RETRY_PERIOD_MS);
    const afterTakeover = await createConfigMap(uniqueName("four"));
    await eventually("new leader reconciles", async () =>
      standby.reconciled.has(afterTakeover) ? true : undefined,
    );
    expect(keys.every((key) => standby.reconciled.has(key))).toBe(true);

    // A graceful stop releases the lease. Replica c would wait out a 60 s lease it saw held, so
    // taking over well inside that shows the lease was handed over, not expired.
    const c = startReplica("replica-c", 60_000);
    await eventually("replica-c waiting", async () =>
      c.messages.includes("waiting for leadership") ? true : undefined,
    );
    expect(c.reconciled.size).toBe(0);
    standby.child.kill("SIGTERM");
    const terminatedAt = performance.now();
    expect(await standby.exited).toBe(0);
    expect(standby.messages).toContain("leadership released");
    await eventually(
      "replica-c took over",
      async () => ((await leaseHolder()) === c.identity ? true : undefined),
      30_000,
    );
    console.log(
      `[leader-election] handover after SIGTERM: ${Math.round(performance.now() - terminatedAt)} ms`,
    );
    await eventually("replica-c reconciles", async () =>
      c.reconciled.size === keys.length + 1 ? true : undefined,
    );
  });
});
