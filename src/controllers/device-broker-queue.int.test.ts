import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { differencesFromDesired } from "../../test/support/desired-state.js";
import { eventually, uniqueName } from "../../test/support/kube.js";
import { eventuallyNotFound, kubectl } from "../../test/support/kubectl.js";
import {
  applyDevice,
  applyReadyTenant,
  conditionOf,
  type DeviceCondition,
  deviceConditions,
  startTestOperator,
} from "../../test/support/operator.js";
import type { RunningOperator } from "../operator.js";

/**
 * A broker that takes devices slowly (Mosquitto rewrites its whole dynamic-security file on every
 * command, so at fleet size each device costs it seconds) must not hold the Device workers: devices
 * queued there let their worker go, so the devices behind them still get their certificates, and each
 * status says where its device waits.
 */

/** Mosquitto's pause after each command, as a multiple of the command's duration (the product's is 1). */
const SLOW_BROKER_PACING = 200;
const DEVICES = 24;

/** Waits until every Device of `tenant` has condition `type` True; resolves with all their conditions. */
function everyDevice(tenant: string, type: string, timeoutMs: number) {
  return eventually(
    `every device ${type}`,
    async () => {
      const all = await deviceConditions(tenant);
      const done = [...all.values()].filter((c) => conditionOf(c, type)?.status === "True");
      return done.length === DEVICES ? all : undefined;
    },
    timeoutMs,
  );
}

describe("a slow broker", () => {
  let operator: RunningOperator;
  const tenant = uniqueName("slowbroker");

  beforeAll(async () => {
    operator = await startTestOperator(undefined, { brokerPacing: SLOW_BROKER_PACING });
    await applyReadyTenant(tenant);
  });
  afterAll(async () => {
    // Removing the tenant through the slow broker would take minutes: an operator at the product's
    // pace cleans up instead.
    await operator?.stop();
    const cleaner = await startTestOperator();
    await kubectl(["delete", "tenant", tenant, "--wait=false"]);
    await eventuallyNotFound(["namespace", tenant], 120_000).catch(() => undefined);
    await cleaner.stop();
  });

  it("holds no Device worker: devices queued there report it, the ones behind them are still issued, all end Ready and exact", async () => {
    const names = Array.from({ length: DEVICES }, (_, i) => `q-${i}`);
    await Promise.all(names.map((name) => applyDevice(tenant, name)));

    // Only a reconcile that let go of its worker can write this: before, a status with issued
    // credentials was written after the broker had answered, never while it still queued the device.
    const queued = await eventually(
      "a device issued and queued at the broker",
      async () => {
        const all = await deviceConditions(tenant);
        const waiting = [...all].filter(
          ([, c]) =>
            conditionOf(c, "CredentialsIssued")?.status === "True" &&
            conditionOf(c, "BrokerSynced")?.reason === "Progressing",
        );
        return waiting.length > 0 ? { waiting, all } : undefined;
      },
      90_000,
    );
    const [name, conditions] = queued.waiting[0] as [string, DeviceCondition[]];
    expect(conditionOf(conditions, "BrokerSynced")).toMatchObject({
      status: "False",
      message: "queued at the broker, which takes devices one at a time",
    });
    expect(conditionOf(conditions, "Ready")).toMatchObject({ status: "False", reason: "Progressing" });
    console.log(
      `[slow broker] ${queued.waiting.length} of ${DEVICES} devices issued and queued at the broker at once (e.g. ${name})`,
    );

    // Every certificate is issued while the broker still has devices to add: its queue held no worker.
    const issued = await everyDevice(tenant, "CredentialsIssued", 90_000);
    const notYetReady = [...issued.values()].filter((c) => conditionOf(c, "Ready")?.status !== "True").length;
    console.log(`[slow broker] all ${DEVICES} issued while ${notYetReady} still waited for the broker`);

    // One deadline for the whole queue: the broker's pause grows with its commands' duration, so a
    // loaded machine slows it more than anything else here, and the device it takes last waits for all.
    await everyDevice(tenant, "Ready", 400_000);
    expect(await differencesFromDesired(tenant, names, [])).toEqual([]);
  }, 600_000);
});
