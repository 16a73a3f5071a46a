import type { MqttClient } from "mqtt";
import { afterEach, describe, expect, it } from "vitest";
import { counter, eventWithReason, newTrail, records, until } from "../../test/support/audit.js";
import { adminKubeConfig, eventually, uniqueName } from "../../test/support/kube.js";
import { kubectl } from "../../test/support/kubectl.js";
import { connectWithCertificate } from "../../test/support/mqtt.js";
import {
  applyDevice,
  applyManifest,
  applyReadyTenant,
  deleteWithoutFinalizers,
  deviceReadyReason,
  deviceTls,
  readyDevice,
  secretData,
  stackOperatorConfig,
  startTestOperator,
} from "../../test/support/operator.js";
import { API_VERSION } from "../api/group.js";
import { ROTATE_PASSWORD_ANNOTATION } from "../desired/labels.js";
import type { RunningOperator } from "../operator.js";
import { KubeClient } from "../runtime/kube-client.js";
import type { AuditRecord } from "./chain.js";

/**
 * The security events of credential changes, finalizer tampering, refusals and disconnects, each
 * provoked for real against the operator, cert-manager and Mosquitto 2.0.11, and each seen as an
 * Event on its Device or Tenant, a count in iot_security_events_total and an audit record.
 */

const running: RunningOperator[] = [];
const open: MqttClient[] = [];
const tenants: string[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.endAsync(true).catch(() => undefined)));
  // Tenants go while an operator still runs to take their finalizers off: later tests share the cluster.
  const names = tenants.splice(0);
  if (names.length > 0) {
    expect((await kubectl(["delete", "tenant", ...names, "--wait=false"])).ok).toBe(true);
    await eventually(
      "the test's tenants gone",
      async () =>
        (await kubectl(["get", "tenant", ...names, "-o", "name"])).stdout === "" ? true : undefined,
      180_000,
    );
  }
  await Promise.all(running.splice(0).map((o) => o.stop()));
}, 300_000);

async function startAuditedOperator(trail: { file: string; secret: string }): Promise<RunningOperator> {
  const operator = await startTestOperator(
    stackOperatorConfig({ AUDIT_LOG_FILE: trail.file, AUDIT_SECRET: trail.secret }),
  );
  running.push(operator);
  return operator;
}

function newTenant(prefix: string): string {
  const name = uniqueName(prefix);
  tenants.push(name);
  return name;
}

/** Waits until the trail holds a record matching `wanted` (records are written in batches, broker ones coalesced). */
const recorded = (file: string, what: string, wanted: (r: AuditRecord) => boolean) =>
  eventually(`${what} in the audit trail`, async () => (await records(file)).find(wanted), 60_000);

/** What `cmctl renew` does: ask cert-manager to issue the Certificate now. */
async function renew(certificate: string): Promise<void> {
  const result = await kubectl([
    "-n",
    "iot-system",
    "patch",
    "certificate",
    certificate,
    "--subresource=status",
    "--type=json",
    "-p",
    JSON.stringify([
      {
        op: "add",
        path: "/status/conditions/-",
        value: {
          type: "Issuing",
          status: "True",
          reason: "ManuallyTriggered",
          message: "security event test",
          lastTransitionTime: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
        },
      },
    ]),
  ]);
  expect(result.stderr).toBe("");
}

describe("security events of every kind", () => {
  it("records a renewed certificate, a rotated password and a disconnect as a counter, an Event on the Device and an audit record", async () => {
    const trail = await newTrail();
    const operator = await startAuditedOperator(trail);
    const tenant = newTenant("kin");
    await applyReadyTenant(tenant);
    await applyDevice(tenant, "meter");
    await applyDevice(tenant, "pump", { authentication: { type: "password" } });
    const before = await readyDevice(tenant, "meter");
    await readyDevice(tenant, "pump");

    // A device that connects and then disconnects.
    const meter = await connectWithCertificate(await deviceTls(tenant, "meter"));
    open.push(meter);
    await eventWithReason(tenant, "meter", "Connected");
    await meter.endAsync();
    const disconnected = await eventWithReason(tenant, "meter", "Disconnected");
    expect(disconnected).toMatchObject({ type: "Normal", regarding: { kind: "Device" } });
    await until("disconnect counted", async () => (await counter(operator, tenant, "Disconnected")) >= 1);
    await recorded(
      trail.file,
      "Disconnected",
      (r) => r.kind === "Disconnected" && r.device === `${tenant}/meter`,
    );

    // A renewed certificate: a new serial replaces the old one.
    const renewals = await counter(operator, tenant, "CredentialsRenewed");
    await renew(`${tenant}.meter`);
    const after = await eventually(
      "new serial in status",
      async () => {
        const status = await readyDevice(tenant, "meter");
        return status.certificate?.serialNumber !== before.certificate?.serialNumber ? status : undefined;
      },
      90_000,
    );
    const [serialNumber, previousSerialNumber] = [
      after.certificate?.serialNumber,
      before.certificate?.serialNumber,
    ];
    const renewed = await eventWithReason(tenant, "meter", "CredentialsRenewed");
    expect(renewed.note).toContain(`${serialNumber} replaces ${previousSerialNumber}`);
    await until(
      "renewal counted",
      async () => (await counter(operator, tenant, "CredentialsRenewed")) === renewals + 1,
    );
    await recorded(
      trail.file,
      "CredentialsRenewed",
      (r) =>
        r.kind === "CredentialsRenewed" &&
        r.device === `${tenant}/meter` &&
        r.detail?.serialNumber === serialNumber &&
        r.detail?.previousSerialNumber === previousSerialNumber,
    );

    // A rotated password, asked for by the documented annotation.
    const old = (await secretData(tenant, "pump-mqtt")).password;
    expect(
      (
        await kubectl([
          "-n",
          tenant,
          "annotate",
          "device",
          "pump",
          `${ROTATE_PASSWORD_ANNOTATION}=kinds-test`,
        ])
      ).ok,
    ).toBe(true);
    await eventually(
      "password replaced",
      async () => ((await secretData(tenant, "pump-mqtt")).password !== old ? true : undefined),
      60_000,
    );
    await eventWithReason(tenant, "pump", "CredentialsRotated");
    await until(
      "rotation counted",
      async () => (await counter(operator, tenant, "CredentialsRotated")) === 1,
    );
    await recorded(
      trail.file,
      "CredentialsRotated",
      (r) => r.kind === "CredentialsRotated" && r.device === `${tenant}/pump`,
    );
    // Each credential change is recorded of its own device only.
    const all = await records(trail.file);
    const devicesWith = (kind: string) => new Set(all.filter((r) => r.kind === kind).map((r) => r.device));
    expect([...devicesWith("CredentialsRenewed")]).toEqual([`${tenant}/meter`]);
    expect([...devicesWith("CredentialsRotated")]).toEqual([`${tenant}/pump`]);
  }, 300_000);

  it("records a stripped finalizer and a deletion that skipped it; an ordinary deletion is no such event", async () => {
    const trail = await newTrail();
    const operator = await startAuditedOperator(trail);
    const tenant = newTenant("fin");
    await applyReadyTenant(tenant);
    await applyDevice(tenant, "stripped");
    await applyDevice(tenant, "ordinary");
    await readyDevice(tenant, "stripped");
    await readyDevice(tenant, "ordinary");

    await deleteWithoutFinalizers(new KubeClient(adminKubeConfig()), tenant, "stripped");
    const removed = await eventWithReason(tenant, "stripped", "FinalizerRemoved");
    const skipped = await eventWithReason(tenant, "stripped", "DeviceDeletedWithoutFinalizer");
    for (const event of [removed, skipped])
      expect(event).toMatchObject({ type: "Warning", regarding: { kind: "Device" } });
    await until(
      "finalizer removal counted",
      async () => (await counter(operator, tenant, "FinalizerRemoved")) >= 1,
    );
    await until(
      "deletion without finalizer counted",
      async () => (await counter(operator, tenant, "DeviceDeletedWithoutFinalizer")) === 1,
    );
    for (const kind of ["FinalizerRemoved", "DeviceDeletedWithoutFinalizer"])
      await recorded(trail.file, kind, (r) => r.kind === kind && r.device === `${tenant}/stripped`);

    // Positive twin: a deletion through the finalizer is an ordinary DeviceDeleted.
    expect((await kubectl(["-n", tenant, "delete", "device", "ordinary", "--wait=true"])).ok).toBe(true);
    await eventWithReason(tenant, "ordinary", "DeviceDeleted");
    await until(
      "ordinary deletion counted",
      async () => (await counter(operator, tenant, "DeviceDeleted")) === 1,
    );
    await recorded(
      trail.file,
      "DeviceDeleted",
      (r) => r.kind === "DeviceDeleted" && r.device === `${tenant}/ordinary`,
    );
    expect(await counter(operator, tenant, "DeviceDeletedWithoutFinalizer")).toBe(1);
    const ordinary = (await records(trail.file))
      .filter((r) => r.device === `${tenant}/ordinary`)
      .map((r) => r.kind);
    expect(ordinary).not.toContain("FinalizerRemoved");
    expect(ordinary).not.toContain("DeviceDeletedWithoutFinalizer");
  }, 300_000);

  it("records a Device refused for a taken name and a Tenant naming another tenant's namespace", async () => {
    const trail = await newTrail();
    const operator = await startAuditedOperator(trail);
    const owner = newTenant("own");
    const [first, second] = [`${owner}-a`, `${owner}-b`];
    await applyReadyTenant(owner, { namespaces: [first, second] });

    // The first Device of the name is admitted; a second one in the tenant's other namespace is refused.
    await applyDevice(first, "pump");
    await readyDevice(first, "pump");
    await applyDevice(second, "pump");
    await deviceReadyReason(second, "pump", "DeviceNameTaken");
    const refused = await eventWithReason(second, "pump", "AdmissionRefused");
    expect(refused).toMatchObject({ type: "Warning", regarding: { kind: "Device" } });
    await until("refusal counted", async () => (await counter(operator, owner, "AdmissionRefused")) === 1);
    const refusal = await recorded(
      trail.file,
      "AdmissionRefused",
      (r) => r.kind === "AdmissionRefused" && r.device === `${second}/pump`,
    );
    expect(refusal).toMatchObject({ tenant: owner, detail: { reason: "DeviceNameTaken" } });

    // A Tenant that opens its namespaces to the first tenant's namespace.
    const lister = newTenant("lst");
    await applyManifest({
      apiVersion: API_VERSION,
      kind: "Tenant",
      metadata: { name: lister },
      spec: { network: { allowFromNamespaces: [first, "monitoring"] } },
    });
    const conflict = await eventWithReason("default", lister, "OwnershipConflict");
    expect(conflict).toMatchObject({ type: "Warning", regarding: { kind: "Tenant" } });
    expect(conflict.note).toContain(first);
    await until("conflict counted", async () => (await counter(operator, lister, "OwnershipConflict")) >= 1);
    const record = await recorded(
      trail.file,
      "OwnershipConflict",
      (r) => r.kind === "OwnershipConflict" && r.tenant === lister,
    );
    expect(record.detail).toMatchObject({ reason: "NamespaceOfOtherTenant" });
    // The tenant whose namespace was named has no conflict of its own.
    expect(await counter(operator, owner, "OwnershipConflict")).toBe(0);
  }, 300_000);
});
