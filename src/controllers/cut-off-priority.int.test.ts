import type { MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually, objectApi, uniqueName } from "../../test/support/kube.js";
import { kubectl } from "../../test/support/kubectl.js";
import { connectWithPassword, subscribeCodes } from "../../test/support/mqtt.js";
import {
  applyDevice,
  applyReadyTenant,
  readyDevice,
  startTestOperator,
} from "../../test/support/operator.js";
import { API_VERSION } from "../api/group.js";
import { DEVICE_FINALIZER } from "../desired/labels.js";
import type { RunningOperator } from "../operator.js";

/**
 * A cut-off does not wait behind another tenant's provisioning (I4, I6): with a backlog of new
 * Devices of one tenant still unprocessed, disabling a device of another tenant drops it first.
 */

const BACKLOG = 300;

/** A password device's broker login, from the Secret the operator writes into its namespace. */
async function passwordLogin(namespace: string, name: string): Promise<[username: string, password: string]> {
  const result = await kubectl(["get", "secret", `${name}-mqtt`, "-n", namespace, "-o", "json"]);
  if (!result.ok) throw new Error(result.stderr);
  const data = (JSON.parse(result.stdout) as { data: Record<string, string> }).data;
  const text = (key: string) => Buffer.from(data[key] ?? "", "base64").toString("utf8");
  return [text("username"), text("password")];
}

/** Devices of `namespace` the operator has not reconciled once yet (it adds its finalizer first). */
async function unreconciled(namespace: string): Promise<number> {
  const result = await kubectl(["get", "devices", "-n", namespace, "-o", "json"]);
  if (!result.ok) throw new Error(result.stderr);
  const { items } = JSON.parse(result.stdout) as { items: Array<{ metadata: { finalizers?: string[] } }> };
  return items.filter((d) => !d.metadata.finalizers?.includes(DEVICE_FINALIZER)).length;
}

/** Keys queued or being reconciled by the operator's `controller`. */
async function queuedWork(operator: RunningOperator, controller: string): Promise<number> {
  const { queueDepth, activeWorkers } = operator.manager.metrics;
  const queued = (await queueDepth.get()).values.filter((s) => s.labels.name === controller);
  const active = (await activeWorkers.get()).values.filter((s) => s.labels.controller === controller);
  return [...queued, ...active].reduce((sum, s) => sum + s.value, 0);
}

describe("cut-off priority under another tenant's provisioning backlog", () => {
  let operator: RunningOperator;
  const busy = uniqueName("busy");
  const quiet = uniqueName("quiet");
  const open: MqttClient[] = [];
  const track = (client: MqttClient) => {
    open.push(client);
    return client;
  };

  beforeAll(async () => {
    operator = await startTestOperator();
    await applyReadyTenant(busy, { devices: { maxDevices: BACKLOG } });
    await applyReadyTenant(quiet);
  });
  afterAll(async () => {
    await Promise.all(open.map((c) => c.endAsync(true).catch(() => undefined)));
    await operator?.stop();
  });

  it("drops a disabled device of one tenant before another tenant's backlog is through", async () => {
    // Password devices: no waiting on issuance, so no delayed requeue of theirs is pending later.
    const password = { authentication: { type: "password" } };
    await applyDevice(quiet, "victim", password);
    await applyDevice(quiet, "bystander", password);
    await Promise.all([readyDevice(quiet, "victim"), readyDevice(quiet, "bystander")]);
    const victimLogin = await passwordLogin(quiet, "victim");
    const victim = track(await connectWithPassword(...victimLogin));
    const bystander = track(await connectWithPassword(...(await passwordLogin(quiet, "bystander"))));
    expect(await subscribeCodes(victim, `tenants/${quiet}/devices/victim/#`)).toEqual([1]);
    let bystanderDropped = false;
    bystander.once("close", () => {
      bystanderDropped = true;
    });
    const dropped = new Promise<void>((resolve) => victim.once("close", () => resolve()));

    // Nothing of the quiet tenant may be queued already: the disable must get in line on its own.
    await eventually("the operator idle", async () =>
      (await queuedWork(operator, "device")) + (await queuedWork(operator, "tenant")) === 0
        ? true
        : undefined,
    );

    // The backlog: many new Devices of the busy tenant at once, faster than the operator takes them.
    const api = objectApi();
    const names = Array.from({ length: BACKLOG }, (_, i) => `meter-${i}`);
    for (let i = 0; i < names.length; i += 50) {
      await Promise.all(
        names.slice(i, i + 50).map((name) =>
          api.create({
            apiVersion: API_VERSION,
            kind: "Device",
            metadata: { name, namespace: busy },
            spec: {},
          }),
        ),
      );
    }
    const waitingBefore = await unreconciled(busy);
    expect(waitingBefore).toBeGreaterThan(0);

    await applyDevice(quiet, "victim", { ...password, enabled: false });
    await dropped;
    const waitingAfter = await unreconciled(busy);
    // Devices queued before the disable were still waiting when the disabled device was dropped.
    expect(waitingAfter).toBeGreaterThan(0);

    await expect(connectWithPassword(...victimLogin)).rejects.toThrow(
      /Not authorized|Bad User Name or Password/i,
    );
    // The positive twin: the tenant's other device keeps its connection and its access.
    expect(bystanderDropped).toBe(false);
    expect(await subscribeCodes(bystander, `tenants/${quiet}/devices/bystander/#`)).toEqual([1]);
    // And the backlog is worked off, not starved by the cut-off.
    await eventually(
      "backlog reconciled",
      async () => ((await unreconciled(busy)) === 0 ? true : undefined),
      120_000,
    );
  }, 300_000);
});
