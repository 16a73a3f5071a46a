import { join } from "node:path";
import { afterAll, describe, expect, inject, it } from "vitest";
import { freePort } from "../test/harness/ports.js";
import { type ManagedProcess, startProcess } from "../test/harness/process.js";
import { repoRoot, stackVariables } from "../test/harness/stack.js";
import { adminKubeConfig, eventually, uniqueName } from "../test/support/kube.js";
import { kubectl } from "../test/support/kubectl.js";
import { adminConnection } from "../test/support/mqtt.js";
import {
  applyDevice,
  applyReadyTenant,
  deviceReadyReason,
  readyDevice,
  stackOperatorConfig,
} from "../test/support/operator.js";
import { DynsecClient } from "./broker/dynsec-client.js";
import { install } from "./install.js";
import { KubeClient } from "./runtime/kube-client.js";

/**
 * Crash safety of the whole operator: a real `iot-tenant-operator run` process is SIGKILLed in
 * the middle of provisioning and while a deletion waits on its finalizer; a new process must
 * converge the cluster and the broker to exactly the desired state.
 */
describe("the operator killed mid-provisioning", () => {
  const started: ManagedProcess[] = [];
  const tenant = uniqueName("crash");

  async function startOperatorProcess(name: string): Promise<ManagedProcess> {
    const stack = inject("stack");
    const operator = startProcess(
      name,
      process.execPath,
      ["--import", "tsx", join(repoRoot, "test/fixtures/operator-cli.ts"), "run"],
      {
        logFile: join(stack.stateDir, `${name}.log`),
        cwd: repoRoot,
        env: {
          ...process.env,
          ...stackVariables(stack),
          PROBE_BIND_ADDRESS: `127.0.0.1:${await freePort()}`,
          // A killed leader's lease must expire quickly for the next process to take over.
          LEASE_DURATION_SECONDS: "3",
          LEASE_RENEW_DEADLINE_SECONDS: "2",
          LEASE_RETRY_PERIOD_SECONDS: "0.5",
          LOG_LEVEL: "info",
        },
      },
    );
    started.push(operator);
    return operator;
  }

  afterAll(async () => {
    await Promise.all(started.map((p) => p.stop()));
  });

  it("converges the cluster and the broker after a SIGKILL", async () => {
    const devices = Array.from({ length: 8 }, (_, i) => `unit-${i}`);
    await install(new KubeClient(adminKubeConfig()), stackOperatorConfig());
    const first = await startOperatorProcess("operator-1");
    await applyReadyTenant(tenant);
    await Promise.all(devices.map((d) => applyDevice(tenant, d)));
    await readyDevice(tenant, "unit-0");
    process.kill(first.pid, "SIGKILL");
    expect(await first.exited).toBe("SIGKILL");

    // While no operator runs: one device goes away (its finalizer holds it) and one is disabled.
    expect((await kubectl(["-n", tenant, "delete", "device", "unit-7", "--wait=false"])).ok).toBe(true);
    await applyDevice(tenant, "unit-6", { enabled: false });

    await startOperatorProcess("operator-2");
    const statuses = await Promise.all(devices.slice(0, 6).map((d) => readyDevice(tenant, d)));
    await eventually(
      "unit-7 deleted",
      async () => ((await kubectl(["-n", tenant, "get", "device", "unit-7"])).ok ? undefined : true),
      60_000,
    );
    await deviceReadyReason(tenant, "unit-6", "Disabled");

    const { broker } = inject("stack");
    const dynsec = await DynsecClient.connect(adminConnection(broker));
    try {
      const listed = (await dynsec.run({ command: "listClients", verbose: true })) as {
        clients: Array<{ username: string; roles?: Array<{ rolename: string }> }>;
      };
      const ofTenant = listed.clients.filter((c) => c.username.endsWith(`,O=${tenant}`));
      expect(ofTenant.map((c) => c.username).sort()).toEqual(statuses.map((s) => s.username).sort());
      for (const client of ofTenant) expect(client.roles?.length).toBe(1);
    } finally {
      await dynsec.close();
    }
  });
});
