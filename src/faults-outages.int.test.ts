import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { KubeConfig } from "@kubernetes/client-node";
import { afterAll, describe, expect, inject, it } from "vitest";
import { restartMosquitto } from "../bench/support/mosquitto-process.js";
import { compactEtcd } from "../test/harness/control-plane.js";
import { adminConnection, type Broker, startMosquitto } from "../test/harness/mosquitto.js";
import type { ManagedProcess } from "../test/harness/process.js";
import { stackVariables, startStack } from "../test/harness/stack.js";
import { differencesFromDesired, issuedSerial, sharedStack } from "../test/support/desired-state.js";
import { eventually, uniqueName } from "../test/support/kube.js";
import { eventuallyNotFound, kubectl, kubectlOn } from "../test/support/kubectl.js";
import {
  applyDevice,
  applyReadyTenant,
  readyDevice,
  stackOperatorConfig,
  startTestOperator,
} from "../test/support/operator.js";
import { API_VERSION } from "./api/group.js";

/**
 * Outages of the components the operator depends on, each on an instance of its own so the shared
 * stack stays healthy for the other test files: the broker stopped for 30 s during device churn
 * (a Mosquitto of its own beside the shared control plane), kube-apiserver restarted with etcd
 * compacted meanwhile (a whole stack of its own: restarting the shared API server would fail the
 * requests of whatever test file runs beside this one, and the harness that owns it is in another
 * process).
 */

const BROKER_DOWN_MS = 30_000;

const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

interface Condition {
  type: string;
  status: string;
  reason: string;
  message?: string;
}

async function conditions(args: readonly string[]): Promise<Condition[]> {
  const result = await kubectl(["get", ...args, "-o", "jsonpath={.status.conditions}"]);
  return result.ok && result.stdout ? (JSON.parse(result.stdout) as Condition[]) : [];
}

/** Resolves with the condition once `type` has `status` on the object. */
function conditionBecomes(args: readonly string[], type: string, status: string): Promise<Condition> {
  return eventually(
    `${args.join(" ")} ${type}=${status}`,
    async () => (await conditions(args)).find((c) => c.type === type && c.status === status),
    60_000,
  );
}

describe("the broker stopped for 30 s during device churn", () => {
  it("says so in the Tenant's and the Devices' conditions while it is down, then converges with no grant lost or left over", async () => {
    // A broker of its own, trusting the stack's device root CA, so that stopping it disturbs no other test.
    const dir = await mkdtemp(join(tmpdir(), "faults-broker-"));
    const broker: Broker = await startMosquitto({
      stateDir: dir,
      deviceRootCA: inject("stack").deviceRootCA,
    });
    let restarted: ManagedProcess | undefined;
    cleanups.push(async () => {
      await restarted?.stop();
      await broker.stop();
      await rm(dir, { recursive: true, force: true });
    });
    const { broker: _shared, ...stack } = inject("stack");
    const config = stackOperatorConfig(stackVariables({ ...stack, broker }));
    const operator = await startTestOperator(config);
    cleanups.push(() => operator.stop());

    const tenant = uniqueName("outage");
    const before = ["a-0", "a-1", "a-2", "a-3", "a-4", "a-5"];
    await applyReadyTenant(tenant);
    await Promise.all(before.map((d) => applyDevice(tenant, d)));
    await Promise.all(before.map((d) => readyDevice(tenant, d)));

    await broker.stop();
    const downAt = Date.now();
    // Before anything changes in the cluster: the outage alone is reported.
    const tenantDown = await conditionBecomes(["tenant", tenant], "BrokerReady", "False");
    expect(tenantDown.reason).toBe("BrokerError");
    expect(tenantDown.message).toMatch(/broker|ECONNREFUSED|connect/i);

    // Churn while it is down: new devices, deleted ones, a changed grant.
    const added = ["b-0", "b-1", "b-2", "b-3"];
    await Promise.all(added.map((d) => applyDevice(tenant, d)));
    const deleted = ["a-0", "a-1"];
    const revoked: string[] = [];
    for (const device of deleted) {
      const serial = await issuedSerial(tenant, device);
      if (serial) revoked.push(serial);
      expect((await kubectl(["-n", tenant, "delete", "device", device, "--wait=false"])).ok).toBe(true);
    }
    await applyDevice(tenant, "a-2", { topics: { publish: ["devices/a-2/#", "shared/a-2"] } });
    for (const device of added) {
      const synced = await conditionBecomes(["device", device, "-n", tenant], "BrokerSynced", "False");
      expect(synced.reason).toBe("BrokerError");
    }
    const changed = await conditionBecomes(["device", "a-2", "-n", tenant], "Ready", "False");
    console.log(`[faults] while the broker is down: a-2 Ready=False (${changed.reason}: ${changed.message})`);
    // The deleted devices wait on their finalizer: their broker entries cannot be removed yet.
    for (const device of deleted)
      expect((await kubectl(["-n", tenant, "get", "device", device])).ok).toBe(true);
    expect((await conditions(["tenant", tenant])).find((c) => c.type === "BrokerReady")?.status).toBe(
      "False",
    );

    await sleep(Math.max(0, BROKER_DOWN_MS - (Date.now() - downAt)));
    restarted = await restartMosquitto(broker);
    const upAt = Date.now();
    const kept = [...before.filter((d) => !deleted.includes(d)), ...added];
    let last: string[] = [];
    await eventually(
      "cluster, CRL and broker exactly the desired state",
      async () => {
        last = await differencesFromDesired(tenant, kept, revoked, {
          ...sharedStack(),
          broker: adminConnection(broker),
        });
        return last.length === 0 ? true : undefined;
      },
      120_000,
    ).catch((error: Error) => {
      throw new Error(`${error.message}:\n${last.join("\n")}`);
    });
    await conditionBecomes(["tenant", tenant], "BrokerReady", "True");
    console.log(`[faults] converged ${Date.now() - upAt} ms after the broker came back`);
    // The cluster is shared with the test files after this one: nothing of this tenant stays.
    expect((await kubectl(["delete", "tenant", tenant, "--wait=false"])).ok).toBe(true);
    await eventuallyNotFound(["namespace", tenant], 120_000);
  }, 240_000);
});

/** Devices converging when kube-apiserver goes away. */
const RESTART_FLEET = 12;

describe("kube-apiserver restarted and etcd compacted during reconciliation", () => {
  it("recovers without restarting: every informer relists on 410 Gone and the tenant converges", async () => {
    const dir = await mkdtemp(join(tmpdir(), "faults-apiserver-"));
    const own = await startStack(dir);
    cleanups.push(async () => {
      await own.stop();
      await rm(dir, { recursive: true, force: true });
    });
    const on = {
      binDir: own.env.binDir,
      kubeconfig: own.env.kubeconfig,
      broker: adminConnection(own.env.broker),
    };
    const kube = async (args: readonly string[], stdin?: string) => {
      const result = await kubectlOn(on, args, stdin === undefined ? {} : { stdin });
      if (!result.ok) throw new Error(result.stderr);
      return result.stdout;
    };
    const apply = (kind: string, metadata: Record<string, string>, spec: Record<string, unknown> = {}) =>
      kube(
        ["apply", "--server-side", "--field-manager=platform-team", "-f", "-"],
        JSON.stringify({ apiVersion: API_VERSION, kind, metadata, spec }),
      );
    const readyCount = async (tenant: string) =>
      (
        await kube([
          "get",
          "devices",
          "-n",
          tenant,
          "-o",
          "jsonpath={.items[*].status.conditions[?(@.type=='Ready')].status}",
        ])
      )
        .split(" ")
        .filter((s) => s === "True").length;

    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(own.env.kubeconfig);
    const operator = await startTestOperator(stackOperatorConfig(stackVariables(own.env)), { kubeConfig });
    cleanups.push(() => operator.stop());
    let ended = false;
    void operator.done.then(
      () => (ended = true),
      () => (ended = true),
    );
    const { metrics } = operator.manager;
    const sum = async (counter: "informerLists" | "informerWatchRestarts", reason?: string) =>
      (await metrics[counter].get()).values
        .filter(
          (sample) => reason === undefined || (sample.labels as Record<string, unknown>).reason === reason,
        )
        .reduce((total, sample) => total + sample.value, 0);

    const tenant = uniqueName("restart");
    await apply("Tenant", { name: tenant });
    await eventually(
      `Tenant ${tenant} Ready`,
      async () =>
        (await kube([
          "get",
          "tenant",
          tenant,
          "-o",
          "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
        ])) === "True"
          ? true
          : undefined,
      90_000,
    );
    const devices = Array.from({ length: RESTART_FLEET }, (_, i) => `w-${i}`);
    for (const device of devices) await apply("Device", { name: device, namespace: tenant });
    await eventually(
      "a first device Ready",
      async () => ((await readyCount(tenant)) > 0 ? true : undefined),
      90_000,
    );

    const listsBefore = await sum("informerLists");
    const goneBefore = await sum("informerWatchRestarts", "gone");
    await own.controlPlane.restartApiServer(() => compactEtcd(own.env.etcdUrl));
    const notReadyAtRestart = RESTART_FLEET - (await readyCount(tenant));
    console.log(
      `[faults] kube-apiserver restarted, etcd compacted, with ${notReadyAtRestart} devices not Ready`,
    );
    // Changes right after the restart reach the operator through its new watches.
    const deleted = devices.slice(0, 2);
    const revoked: string[] = [];
    for (const device of deleted) {
      const serial = await issuedSerial(tenant, device, on);
      if (serial) revoked.push(serial);
      await kube(["-n", tenant, "delete", "device", device, "--wait=false"]);
    }
    const added = ["x-0", "x-1"];
    for (const device of added) await apply("Device", { name: device, namespace: tenant });

    const kept = [...devices.filter((d) => !deleted.includes(d)), ...added];
    let last: string[] = [];
    await eventually(
      "cluster, CRL and broker exactly the desired state",
      async () => {
        last = await differencesFromDesired(tenant, kept, revoked, on);
        return last.length === 0 ? true : undefined;
      },
      180_000,
    ).catch((error: Error) => {
      throw new Error(`${error.message}:\n${last.join("\n")}`);
    });
    const gone = (await sum("informerWatchRestarts", "gone")) - goneBefore;
    const lists = (await sum("informerLists")) - listsBefore;
    console.log(`[faults] after the restart: ${gone} watches answered 410 Gone, ${lists} relists`);

    // Every informer's resourceVersion was compacted away: each one got 410 and listed again.
    const informers = (await metrics.informerSynced.get()).values.length;
    expect(gone).toBeGreaterThanOrEqual(informers);
    expect(lists).toBeGreaterThanOrEqual(informers);
    // The same operator, still running: it recovered without a restart.
    expect(ended).toBe(false);
  }, 300_000);
});
