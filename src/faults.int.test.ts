import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, describe, expect, it } from "vitest";
import { adminKubeConfig, eventually, uniqueName } from "../test/support/kube.js";
import { kubectl } from "../test/support/kubectl.js";
import { differencesFromDesired, issuedSerial } from "../test/support/desired-state.js";
import { applyDevice, applyReadyTenant, stackOperatorConfig } from "../test/support/operator.js";
import {
  metricSum,
  type OperatorProcess,
  startOperatorProcess,
  TEST_LEASE_SECONDS,
} from "../test/support/operator-process.js";
import { install } from "./install.js";
import { KubeClient } from "./runtime/kube-client.js";

/**
 * Faults of the operator process itself, against the shared stack: SIGKILLs at random moments
 * and two replicas under leader election. Each ends with the tenant's cluster objects, CRL and
 * broker entries compared with the desired state (test/support/desired-state.ts).
 */

/** Devices converging while the operator is killed: ~5 devices/s today, so five kills land mid-work. */
const CRASH_FLEET = 120;
const KILLS = 5;
/** Devices deleted right before each kill, so some kills land inside a finalizer. */
const DELETED_PER_KILL = 3;
/** Devices created right before each kill, so every kill lands while certificates are being issued. */
const ADDED_PER_KILL = 10;

const started: OperatorProcess[] = [];
afterAll(async () => {
  await Promise.all(started.map((p) => p.stop()));
});

async function operatorProcess(name: string): Promise<OperatorProcess> {
  const operator = await startOperatorProcess(name);
  started.push(operator);
  return operator;
}

async function readyCount(tenant: string): Promise<number> {
  const result = await kubectl([
    "get",
    "devices",
    "-n",
    tenant,
    "-o",
    "jsonpath={.items[*].status.conditions[?(@.type=='Ready')].status}",
  ]);
  return result.stdout.split(" ").filter((s) => s === "True").length;
}

/** Resolves once this process has reconciled something: it leads and works. */
function working(operator: OperatorProcess): Promise<true> {
  return eventually(
    `${operator.name} reconciling`,
    async () =>
      (await metricSum(operator.probePort, "controller_runtime_reconcile_total")) > 0 ? true : undefined,
    60_000,
  );
}

/** Deletes a Device without waiting for its finalizer; returns the serial it had been issued, if any. */
async function deleteDevice(tenant: string, device: string): Promise<string | undefined> {
  const serial = await issuedSerial(tenant, device);
  const result = await kubectl(["-n", tenant, "delete", "device", device, "--wait=false"]);
  if (!result.ok) throw new Error(result.stderr);
  return serial;
}

async function untilExactlyDesired(tenant: string, kept: readonly string[], revoked: readonly string[]) {
  let last: string[] = [];
  await eventually(
    "cluster, CRL and broker exactly the desired state",
    async () => {
      last = await differencesFromDesired(tenant, kept, revoked);
      return last.length === 0 ? true : undefined;
    },
    240_000,
  ).catch((error: Error) => {
    throw new Error(`${error.message}:\n${last.join("\n")}`);
  });
}

describe("the operator SIGKILLed during a device convergence", () => {
  it(`reaches exactly the desired state after ${KILLS} kills at random moments (${CRASH_FLEET} devices)`, async () => {
    const tenant = uniqueName("kill");
    await install(new KubeClient(adminKubeConfig()), stackOperatorConfig());
    const setup = await operatorProcess("kill-setup");
    await applyReadyTenant(tenant, { devices: { maxDevices: CRASH_FLEET + KILLS * ADDED_PER_KILL } });
    const devices = Array.from({ length: CRASH_FLEET }, (_, i) => `d-${i}`);
    await Promise.all(devices.map((d) => applyDevice(tenant, d)));
    await setup.stop();

    const added = (kill: number) => Array.from({ length: ADDED_PER_KILL }, (_, i) => `k${kill}-${i}`);
    const deleted: string[] = [];
    const revoked: string[] = [];
    const notReadyAtKill: number[] = [];
    for (let kill = 1; kill <= KILLS; kill++) {
      const operator = await operatorProcess(`kill-${kill}`);
      await working(operator);
      await Promise.all(added(kill).map((d) => applyDevice(tenant, d)));
      devices.push(...added(kill));
      // Among devices that may be mid-issuance or already on the broker.
      const victims = devices.filter((d) => !deleted.includes(d)).slice(kill * 7, kill * 7 + DELETED_PER_KILL);
      for (const device of victims) {
        const serial = await deleteDevice(tenant, device);
        deleted.push(device);
        if (serial) revoked.push(serial);
      }
      await sleep(Math.random() * 3_000);
      process.kill(operator.pid, "SIGKILL");
      expect(await operator.exited).toBe("SIGKILL");
      notReadyAtKill.push(devices.length - deleted.length - (await readyCount(tenant)));
      // A deletion that the killed operator saw issue a certificate: that serial must be revoked too.
      for (const device of victims) {
        const serial = await issuedSerial(tenant, device);
        if (serial && !revoked.includes(serial)) revoked.push(serial);
      }
    }
    console.log(`[faults] Devices not Ready at each SIGKILL: ${notReadyAtKill.join(", ")}`);
    // Proof that the kills came mid-convergence.
    expect(notReadyAtKill[0]).toBeGreaterThan(0);

    const last = await operatorProcess("kill-final");
    const kept = devices.filter((d) => !deleted.includes(d));
    await untilExactlyDesired(tenant, kept, revoked);
    await last.stop();
  }, 360_000);
});
