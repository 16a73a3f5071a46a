import { afterAll, describe, expect, inject, it } from "vitest";
import type { ManagedProcess } from "../test/harness/process.js";
import { revokedSerials } from "../test/support/desired-state.js";
import { adminKubeConfig, eventually, uniqueName } from "../test/support/kube.js";
import { eventuallyNotFound, kubectl, notFound } from "../test/support/kubectl.js";
import {
  adminConnection,
  brokerEntriesOf,
  connectWithCertificate,
  connectWithPassword,
  grantsNothing,
  refusedAsRevoked,
} from "../test/support/mqtt.js";
import {
  applyDevice,
  applyReadyTenant,
  conditionOf,
  deviceConditions,
  deviceReadyReason,
  deviceTls,
  readyDevice,
  secretData,
  stackOperatorConfig,
  startTestOperator,
} from "../test/support/operator.js";
import { startOperatorProcess } from "../test/support/operator-process.js";
import { gateName } from "./broker/desired.js";
import { DynsecClient } from "./broker/dynsec-client.js";
import { DEFAULT_OWNER_PREFIX } from "./broker/mosquitto-dynsec.js";
import { install } from "./install.js";
import { KubeClient } from "./runtime/kube-client.js";

/** The tenant's Devices that are Ready now. */
async function readyDevices(namespace: string): Promise<string[]> {
  const all = await deviceConditions(namespace);
  return [...all].filter(([, c]) => conditionOf(c, "Ready")?.status === "True").map(([name]) => name);
}

/**
 * Crash safety of the whole operator: a real `iot-tenant-operator run` process is SIGKILLed in
 * the middle of provisioning and while a deletion waits on its finalizer; a new process must
 * converge the cluster and the broker to exactly the desired state.
 */
describe("the operator stopped or killed mid-work", () => {
  const started: ManagedProcess[] = [];
  const tenant = uniqueName("crash");

  async function operatorProcess(name: string): Promise<ManagedProcess> {
    const operator = await startOperatorProcess(name);
    started.push(operator);
    return operator;
  }

  afterAll(async () => {
    await Promise.all(started.map((p) => p.stop()));
  });

  it("converges the cluster and the broker after a SIGKILL", async () => {
    // Enough devices that the operator's concurrent workers and the broker's queue are still busy
    // when the first is Ready.
    const devices = Array.from({ length: 40 }, (_, i) => `unit-${i}`);
    await install(new KubeClient(adminKubeConfig()), stackOperatorConfig());
    const first = await operatorProcess("operator-1");
    await applyReadyTenant(tenant);
    await Promise.all(devices.map((d) => applyDevice(tenant, d)));
    // Killed as soon as any device is Ready (waiting for one chosen device let the whole fleet finish
    // when that one came last).
    await eventually("a first device Ready", async () =>
      (await readyDevices(tenant)).length > 0 ? true : undefined,
    );
    process.kill(first.pid, "SIGKILL");
    expect(await first.exited).toBe("SIGKILL");
    // Proof that the kill came mid-provisioning: some device was not Ready yet.
    const readyAtKill = await readyDevices(tenant);
    expect(readyAtKill.length).toBeLessThan(devices.length);
    console.log(`[crash] ${readyAtKill.length} of ${devices.length} devices Ready at the kill`);
    // The device deleted while no operator runs was Ready, so its certificate must end on the CRL.
    const deleted = readyAtKill[0] ?? "";
    const deletedStatus = await readyDevice(tenant, deleted);
    const [disabled, ...kept] = devices.filter((d) => d !== deleted);

    // While no operator runs: one device goes away (its finalizer holds it) and one is disabled.
    expect((await kubectl(["-n", tenant, "delete", "device", deleted, "--wait=false"])).ok).toBe(true);
    await applyDevice(tenant, disabled ?? "", { enabled: false });

    const second = await operatorProcess("operator-2");
    const statuses = await Promise.all(kept.map((d) => readyDevice(tenant, d)));
    await eventuallyNotFound(["-n", tenant, "device", deleted]);
    await eventuallyNotFound(["-n", "iot-system", "certificate", `${tenant}.${deleted}`]);
    await eventuallyNotFound(["-n", "iot-system", "secret", `${tenant}.${deleted}`]);
    await eventually("the deleted device's serial on the tenant CRL", async () =>
      (await revokedSerials(tenant)).includes(deletedStatus.certificate?.serialNumber ?? "-")
        ? true
        : undefined,
    );
    await deviceReadyReason(tenant, disabled ?? "", "Disabled");

    const owners = (names: readonly string[]) => names.map((d) => `iot:${tenant}:${d}`).sort();
    await eventually("the broker holds exactly the desired devices", async () => {
      const entries = await brokerEntriesOf(tenant);
      const expected = { roles: owners([disabled ?? "", ...kept]), clients: owners(kept) };
      return JSON.stringify(entries) === JSON.stringify(expected) ? true : undefined;
    });
    const { broker } = inject("stack");
    const dynsec = await DynsecClient.connect(adminConnection(broker));
    try {
      const listed = (await dynsec.run({ command: "listClients", verbose: true })) as {
        clients: Array<{ username: string; roles?: Array<{ rolename: string }> }>;
      };
      const ofTenant = listed.clients.filter((c) => c.username.endsWith(`,O=${tenant}`));
      expect(ofTenant.map((c) => c.username).sort()).toEqual(statuses.map((s) => s.username).sort());
      // Its own role and its tenant's gate, nothing more.
      for (const client of ofTenant) {
        expect(client.roles?.map((r) => r.rolename)).toContain(gateName(DEFAULT_OWNER_PREFIX, tenant));
        expect(client.roles?.length).toBe(2);
      }
    } finally {
      await dynsec.close();
    }
    await second.stop();
  });

  it("cleans up Devices deleted while it was stopped, and they stay cut off across resyncs and restarts (I4)", async () => {
    const name = uniqueName("stopped");
    const resync = { brokerResyncIntervalMs: 1_000 };
    let operator = await startTestOperator(undefined, resync);
    try {
      await applyReadyTenant(name);
      await applyDevice(name, "cert");
      await applyDevice(name, "pass", { authentication: { type: "password" } });
      await applyDevice(name, "kept");
      const [cert] = await Promise.all([
        readyDevice(name, "cert"),
        readyDevice(name, "pass"),
        readyDevice(name, "kept"),
      ]);
      const tls = await deviceTls(name, "cert");
      const { username = "", password = "" } = await secretData(name, "pass-mqtt");
      const liveCert = await connectWithCertificate(tls);
      const livePass = await connectWithPassword(username, password);

      await operator.stop();
      // The finalizer stripped (as a tenant admin could) and the Devices deleted while no operator runs.
      for (const device of ["cert", "pass"]) {
        const strip = await kubectl([
          "-n",
          name,
          "patch",
          "device",
          device,
          "--type=json",
          "-p",
          JSON.stringify([{ op: "remove", path: "/metadata/finalizers" }]),
        ]);
        expect(strip.stderr).toBe("");
        expect((await kubectl(["-n", name, "delete", "device", device])).ok).toBe(true);
      }
      expect(liveCert.connected && livePass.connected).toBe(true);

      operator = await startTestOperator(undefined, resync);
      await eventually(
        "live connections dropped",
        async () => (liveCert.connected || livePass.connected ? undefined : true),
        30_000,
      );
      const root = `tenants/${name}/devices`;
      expect(await grantsNothing(() => connectWithPassword(username, password), `${root}/pass`)).toBe(true);
      await eventually("certificate revoked at the TLS layer", () => refusedAsRevoked(tls), 30_000);
      expect(await revokedSerials(name)).toContain(cert.certificate?.serialNumber);
      await eventuallyNotFound(["-n", "iot-system", "certificate", `${name}.cert`]);
      await eventuallyNotFound(["-n", "iot-system", "secret", `${name}.cert`]);
      await eventuallyNotFound(["-n", name, "secret", "cert-mqtt"]);
      await eventuallyNotFound(["-n", name, "secret", "pass-mqtt"]);
      const owners = { roles: [`iot:${name}:kept`], clients: [`iot:${name}:kept`] };
      // The client goes first (that kicks); its role follows.
      await eventually("the broker holds only the kept device", async () =>
        JSON.stringify(await brokerEntriesOf(name)) === JSON.stringify(owners) ? true : undefined,
      );

      // Reconciles, broker resyncs and another restart give nothing back.
      await kubectl(["label", "--overwrite", "tenant", name, "touch=1"]);
      await kubectl(["-n", name, "label", "--overwrite", "device", "kept", "touch=1"]);
      await new Promise((r) => setTimeout(r, 2_500));
      await operator.stop();
      operator = await startTestOperator(undefined, resync);
      await readyDevice(name, "kept");
      await new Promise((r) => setTimeout(r, 2_500));
      expect(await grantsNothing(() => connectWithPassword(username, password), `${root}/pass`)).toBe(true);
      expect(await refusedAsRevoked(tls)).toBe(true);
      expect(await brokerEntriesOf(name)).toEqual(owners);
      for (const device of ["cert", "pass"])
        expect(await notFound(["-n", name, "device", device])).toBe(true);
      await Promise.all([liveCert.endAsync(true), livePass.endAsync(true)]);
    } finally {
      await operator.stop();
    }
  });
});
