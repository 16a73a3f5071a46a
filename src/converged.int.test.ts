import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { untilIdle } from "../test/support/idle.js";
import { eventually, uniqueName } from "../test/support/kube.js";
import { kubectl } from "../test/support/kubectl.js";
import { adminConnection } from "../test/support/mqtt.js";
import { applyDevice, applyReadyTenant, readyDevice, startTestOperator } from "../test/support/operator.js";
import { DynsecClient } from "./broker/dynsec-client.js";
import { DEFAULT_OWNER_PREFIX } from "./broker/mosquitto-dynsec.js";
import type { RunningOperator } from "./operator.js";

/**
 * Converged means silent: once every Tenant and Device is Ready, neither touching them nor the
 * periodic broker resync makes the operator write to Kubernetes or send a mutating broker command.
 * A dedicated operator with a short resync, so the resync falls inside the observation window.
 */
describe("a converged operator", () => {
  const RESYNC_MS = 1_000;
  let operator: RunningOperator;

  beforeAll(async () => {
    operator = await startTestOperator(undefined, { brokerResyncIntervalMs: RESYNC_MS });
  });
  afterAll(async () => {
    await operator?.stop();
  });

  const reconciles = async () =>
    (await operator.manager.metrics.reconcileTotal.get()).values.reduce((sum, v) => sum + v.value, 0);
  /** Mutating broker commands sent so far, by command. */
  const brokerCommands = async () =>
    Object.fromEntries(
      (await operator.manager.metrics.brokerCommands.get()).values.map((v) => [
        `${v.labels.command}/${v.labels.result}`,
        v.value,
      ]),
    );

  it("sends no Kubernetes write and no broker command across touches and broker resyncs", async () => {
    const tenant = uniqueName("quiet");
    await applyReadyTenant(tenant, { admins: [{ kind: "User", name: `admin-${tenant}` }] });
    await Promise.all([
      applyDevice(tenant, "cert"),
      applyDevice(tenant, "pass", { authentication: { type: "password" } }),
    ]);
    await Promise.all([readyDevice(tenant, "cert"), readyDevice(tenant, "pass")]);
    await untilIdle(operator.manager.metrics);
    const writes = await operator.manager.metrics.writeRequests();
    const commands = await brokerCommands();
    expect(commands["createClient/ok"]).toBeGreaterThan(0);

    // Label changes wake both reconcilers without changing anything they own; each one is seen.
    for (const round of [1, 2, 3]) {
      const before = await reconciles();
      expect((await kubectl(["label", "--overwrite", "tenant", tenant, `touch=${round}`])).ok).toBe(true);
      expect(
        (await kubectl(["-n", tenant, "label", "--overwrite", "device", "cert", "pass", `touch=${round}`]))
          .ok,
      ).toBe(true);
      await eventually(`reconciled after touch ${round}`, async () =>
        (await reconciles()) >= before + 3 ? true : undefined,
      );
    }
    // An observation window, not a synchronisation: at least two broker resyncs fall inside it.
    await new Promise((resolve) => setTimeout(resolve, 2.5 * RESYNC_MS));
    await untilIdle(operator.manager.metrics);
    expect(await operator.manager.metrics.writeRequests()).toBe(writes);
    expect(await brokerCommands()).toEqual(commands);

    // Control: the resync does run at this interval, and its commands are counted: an orphan role
    // planted under the operator's prefix is deleted by the next resync, with exactly one command.
    const admin = await DynsecClient.connect(adminConnection(inject("stack").broker));
    const orphan = `${DEFAULT_OWNER_PREFIX}${tenant}:orphan`;
    try {
      await admin.run({ command: "createRole", rolename: orphan });
      await eventually(
        "orphan role deleted by a resync",
        async () => {
          const roles = (await admin.run({ command: "listRoles" })) as { roles: string[] };
          return roles.roles.includes(orphan) ? undefined : true;
        },
        10 * RESYNC_MS,
      );
    } finally {
      await admin.close();
    }
    await untilIdle(operator.manager.metrics);
    expect(await brokerCommands()).toEqual({
      ...commands,
      "deleteRole/ok": (commands["deleteRole/ok"] ?? 0) + 1,
    });
    expect(await operator.manager.metrics.writeRequests()).toBe(writes);
  });
});
