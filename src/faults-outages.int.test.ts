import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, describe, expect, inject, it } from "vitest";
import { restartMosquitto } from "../bench/support/mosquitto-process.js";
import { adminConnection, type Broker, startMosquitto } from "../test/harness/mosquitto.js";
import type { ManagedProcess } from "../test/harness/process.js";
import { stackVariables } from "../test/harness/stack.js";
import { differencesFromDesired, issuedSerial } from "../test/support/desired-state.js";
import { eventually, uniqueName } from "../test/support/kube.js";
import { kubectl } from "../test/support/kubectl.js";
import {
  applyDevice,
  applyReadyTenant,
  readyDevice,
  stackOperatorConfig,
  startTestOperator,
} from "../test/support/operator.js";

/**
 * Outages of the components the operator depends on, each on an instance of its own so the shared
 * stack stays healthy for the other test files: the broker stopped for 30 s during device churn.
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
        last = await differencesFromDesired(tenant, kept, revoked, adminConnection(broker));
        return last.length === 0 ? true : undefined;
      },
      120_000,
    ).catch((error: Error) => {
      throw new Error(`${error.message}:\n${last.join("\n")}`);
    });
    await conditionBecomes(["tenant", tenant], "BrokerReady", "True");
    console.log(`[faults] converged ${Date.now() - upAt} ms after the broker came back`);
  }, 240_000);
});
