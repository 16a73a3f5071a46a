import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { MqttClient } from "mqtt";
import { afterEach, describe, expect, it } from "vitest";
import { createCA, issueCertificate } from "../../test/harness/pki.js";
import { counter, eventsOf, eventWithReason, newTrail, records, until } from "../../test/support/audit.js";
import { adminKubeConfig, eventually, uniqueName } from "../../test/support/kube.js";
import { kubectl } from "../../test/support/kubectl.js";
import {
  brokerEntriesOf,
  connectWithCertificate,
  connectWithPassword,
  NOT_AUTHORIZED,
  publishCode,
  refusedAsRevoked,
  tlsFromFiles,
} from "../../test/support/mqtt.js";
import {
  applyDevice,
  applyManifest,
  applyReadyTenant,
  deviceReadyReason,
  deviceTls,
  readyDevice,
  secretData,
  stackOperatorConfig,
  startTestOperator,
} from "../../test/support/operator.js";
import { API_VERSION } from "../api/group.js";
import { tamperReportTopic } from "../broker/tamper-report.js";
import { main, processIo } from "../cli/main.js";
import { QUARANTINE_ANNOTATION } from "../desired/labels.js";
import { install } from "../install.js";
import { createLogger } from "../observability/logger.js";
import { type RunningOperator, startOperator } from "../operator.js";
import { KubeClient } from "../runtime/kube-client.js";
import { verifyAuditLog } from "./chain.js";

/**
 * Security events end to end: the real operator, cert-manager and Mosquitto 2.0.11. What the broker
 * refuses and what happens to Devices and Tenants becomes a counter, an aggregated Event and a
 * record in a hash-chained, signed audit file that `audit verify` checks.
 */

const running: RunningOperator[] = [];
const open: MqttClient[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.endAsync(true).catch(() => undefined)));
  await Promise.all(running.splice(0).map((o) => o.stop()));
});

/** An operator writing its own trail (file and Secret), so each test's chain starts at seq 0. */
async function startAuditedOperator(trail: { file: string; secret: string }): Promise<RunningOperator> {
  const operator = await startTestOperator(
    stackOperatorConfig({ AUDIT_LOG_FILE: trail.file, AUDIT_SECRET: trail.secret }),
  );
  running.push(operator);
  return operator;
}

/** A replica with leader election on `lease`, as in a Deployment of two. */
async function startElectedOperator(
  trail: { file: string; secret: string },
  lease: string,
  identity: string,
): Promise<RunningOperator> {
  const config = stackOperatorConfig({ AUDIT_LOG_FILE: trail.file, AUDIT_SECRET: trail.secret });
  const kubeConfig = adminKubeConfig();
  await install(new KubeClient(kubeConfig), config);
  const operator = await startOperator({
    kubeConfig,
    config,
    identity,
    logger: createLogger({ level: config.LOG_LEVEL }),
    leaderElection: {
      namespace: config.OPERATOR_NAMESPACE,
      name: lease,
      leaseDurationMs: 3_000,
      renewDeadlineMs: 2_000,
      retryPeriodMs: 500,
    },
    informerDefaults: { retryInitialMs: 100, retryMaxMs: 2_000 },
  });
  running.push(operator);
  return operator;
}

async function stopped(operator: RunningOperator): Promise<void> {
  running.splice(running.indexOf(operator), 1);
  await operator.stop();
}

/** A certificate with the device's subject from a CA the broker does not trust. */
async function foreignTls(tenant: string, device: string) {
  const dir = await mkdtemp(join(tmpdir(), "foreign-ca-"));
  const ca = await createCA(dir, "foreign", "foreign CA");
  const leaf = await issueCertificate(dir, ca, "leaf", {
    subject: `/O=${tenant}/CN=${device}`,
    usages: ["clientAuth"],
  });
  return tlsFromFiles(leaf);
}

describe("security events, the audit trail and presence", () => {
  it("records broker refusals and cluster changes as counters, aggregated Events and audit records, with no secret in any record", async () => {
    const trail = await newTrail();
    const operator = await startAuditedOperator(trail);
    const tenant = uniqueName("sec");
    await applyReadyTenant(tenant);
    await applyDevice(tenant, "meter");
    await applyDevice(tenant, "pump", { authentication: { type: "password" } });
    await readyDevice(tenant, "meter");
    const pump = await readyDevice(tenant, "pump");
    const tls = await deviceTls(tenant, "meter");
    const password = (await secretData(tenant, "pump-mqtt")).password ?? "";
    expect(password).not.toBe("");

    // The right identity is let in: Connected, and presence shows it.
    const first = await connectWithCertificate(tls);
    open.push(first);
    await eventWithReason(tenant, "meter", "Connected");
    await until("meter shown connected", async () => {
      const table = await kubectl(["get", "devices", "-n", tenant, "meter"]);
      return (
        /CONNECTED\s+LAST-SEEN/.test(table.stdout) &&
        /meter\s+true\s+x509\s+True\s+Reconciled\s+true\s/.test(table.stdout)
      );
    });

    // The same identity again, 20 times: each connection takes the session over from the one before.
    for (let i = 0; i < 20; i++) open.push(await connectWithCertificate(tls));
    await until(
      "20 takeovers counted",
      async () => (await counter(operator, tenant, "SessionTakenOver")) === 20,
    );
    const takeovers = (await eventsOf(tenant, "meter")).filter((e) => e.reason === "SessionTakenOver");
    expect(takeovers).toHaveLength(1);
    expect(takeovers[0]?.type).toBe("Warning");

    // Refused logins: a wrong password, and a certificate from a CA the broker does not trust.
    await expect(connectWithPassword(pump.username ?? "", "not-the-password")).rejects.toThrow(
      /[Nn]ot authori[sz]ed/,
    );
    // The broker's refusal reaches the client as a TLS alert (not a timeout under load).
    await expect(connectWithCertificate(await foreignTls(tenant, "meter"))).rejects.toThrow(/unknown ca/);
    await until("refusals counted", async () => (await counter(operator, "", "AuthenticationRefused")) >= 2);
    // Positive twin: the right password is let in.
    open.push(await connectWithPassword(pump.username ?? "", password));
    await eventWithReason(tenant, "pump", "Connected");

    // Presence is coalesced: meter's 21 connects and 21 disconnects are at most one status write per
    // 30 s; once its connections close it shows disconnected within that interval.
    await Promise.all(open.splice(0).map((c) => c.endAsync(true)));
    await eventually(
      "meter shown disconnected",
      async () => {
        const table = await kubectl(["get", "devices", "-n", tenant, "meter"]);
        return /meter\s+true\s+x509\s+True\s+Reconciled\s+false\s/.test(table.stdout) ? true : undefined;
      },
      90_000,
    );
    const { values } = await operator.manager.metrics.apiRequests.get();
    const presenceWrites = values
      .filter((v) => v.labels.verb === "patch" && v.labels.resource === "devices/status")
      .reduce((sum, v) => sum + v.value, 0);
    // meter: connected, then disconnected 30 s later; pump: connected, then disconnected.
    expect(presenceWrites).toBeLessThanOrEqual(4);

    // Cluster side: disabled, enabled again, suspended, resumed, deleted.
    await applyDevice(tenant, "meter", { enabled: false });
    await deviceReadyReason(tenant, "meter", "Disabled");
    await eventWithReason(tenant, "meter", "DeviceDisabled");
    await applyDevice(tenant, "meter", { enabled: true });
    await readyDevice(tenant, "meter");
    await eventWithReason(tenant, "meter", "DeviceEnabled");
    await applyManifest({
      apiVersion: API_VERSION,
      kind: "Tenant",
      metadata: { name: tenant },
      spec: { suspended: true },
    });
    await eventWithReason("default", tenant, "TenantSuspended");
    expect(await counter(operator, tenant, "TenantSuspended")).toBe(1);
    await applyManifest({
      apiVersion: API_VERSION,
      kind: "Tenant",
      metadata: { name: tenant },
      spec: { suspended: false },
    });
    await until("resumption counted", async () => (await counter(operator, tenant, "TenantResumed")) === 1);
    // Deleting the x509 device revokes its certificate.
    expect((await kubectl(["delete", "device", "pump", "meter", "-n", tenant, "--wait=true"])).ok).toBe(true);
    await until("deletions counted", async () => (await counter(operator, tenant, "DeviceDeleted")) === 2);
    await until(
      "revocation counted",
      async () => (await counter(operator, tenant, "CredentialsRevoked")) === 1,
    );

    await stopped(operator);
    const text = await readFile(trail.file, "utf8");
    expect(verifyAuditLog(text)).toMatchObject({ ok: true });
    const all = await records(trail.file);
    const kinds = (device: string) =>
      new Set(all.filter((r) => r.device === `${tenant}/${device}`).map((r) => r.kind));
    expect([...kinds("meter")]).toEqual(
      expect.arrayContaining([
        "DeviceRegistered",
        "CredentialsIssued",
        "Connected",
        "SessionTakenOver",
        "DeviceDisabled",
        "DeviceEnabled",
        "DeviceDeleted",
        "CredentialsRevoked",
      ]),
    );
    expect([...kinds("pump")]).toEqual(
      expect.arrayContaining(["DeviceRegistered", "CredentialsIssued", "Connected", "DeviceDeleted"]),
    );
    const takeoverRecords = all.filter(
      (r) => r.kind === "SessionTakenOver" && r.device === `${tenant}/meter`,
    );
    expect(takeoverRecords.reduce((sum, r) => sum + (r.count ?? 1), 0)).toBe(20);
    const refusals = all.filter((r) => r.kind === "AuthenticationRefused");
    expect(refusals.map((r) => r.detail?.reason)).toEqual(
      expect.arrayContaining(["not authorised", expect.stringMatching(/^TLS: .*certificate verify failed/)]),
    );
    expect(all.filter((r) => r.tenant === tenant).map((r) => r.kind)).toEqual(
      expect.arrayContaining(["TenantSuspended", "TenantResumed"]),
    );
    expect(all.some((r) => r.kind === "Checkpoint")).toBe(true);

    // No record holds key material or a password.
    const key = await secretData("iot-system", trail.secret);
    for (const record of all) {
      const line = JSON.stringify(record);
      expect(line).not.toMatch(/-----BEGIN|PRIVATE KEY|password"\s*:/i);
      expect(line).not.toContain(password);
      for (const secret of [tls.key, key["private.pem"] ?? ""]) {
        const body = String(secret).replace(/-----[^-]+-----|\s/g, "");
        expect(body.length).toBeGreaterThan(40);
        expect(line).not.toContain(body.slice(0, 40));
      }
    }
  }, 300_000);

  it("detects a removed, a reordered and an edited record of a real audit file, and accepts it untouched", async () => {
    const trail = await newTrail();
    const operator = await startAuditedOperator(trail);
    const tenant = uniqueName("tam");
    await applyReadyTenant(tenant);
    for (const name of ["d1", "d2"]) await applyDevice(tenant, name);
    await readyDevice(tenant, "d1");
    await readyDevice(tenant, "d2");
    await stopped(operator);
    const lines = (await readFile(trail.file, "utf8")).split("\n").filter(Boolean);
    expect(lines.length).toBeGreaterThanOrEqual(5);
    const publicKey = join(await mkdtemp(join(tmpdir(), "key-")), "public.pem");
    await writeFile(publicKey, (await secretData("iot-system", trail.secret))["public.pem"] ?? "");

    const verify = async (content: string[]) => {
      const file = join(await mkdtemp(join(tmpdir(), "tampered-")), "audit.log");
      await writeFile(file, content.map((l) => `${l}\n`).join(""));
      const out: string[] = [];
      const io = { ...processIo(), stdout: { write: (t: string) => out.push(t) } };
      const code = await main(["audit", "verify", file, "--public-key", publicKey], io);
      return { code, out: out.join("") };
    };
    expect(await verify(lines)).toMatchObject({ code: 0, out: expect.stringMatching(/^OK /) });
    expect(await verify(lines.toSpliced(2, 1))).toMatchObject({
      code: 1,
      out: expect.stringMatching(/:3 \(seq 3\): removed: seq 2 missing/),
    });
    expect(await verify([lines[0], lines[2], lines[1], ...lines.slice(3)] as string[])).toMatchObject({
      code: 1,
      out: expect.stringMatching(/:2 \(seq 2\): reordered/),
    });
    // Edit which Device a record names.
    const target = lines.findIndex((l) => l.includes(`"device":"${tenant}/`));
    expect(target).toBeGreaterThanOrEqual(0);
    const edited = lines.map((l, i) =>
      i === target ? l.replace(/"device":"[^"]+"/, `"device":"${tenant}/someone-else"`) : l,
    );
    expect(await verify(edited)).toMatchObject({
      code: 1,
      out: expect.stringContaining(`:${target + 1} (seq ${target}): edited`),
    });
  }, 300_000);

  it("continues one chain across a leader change and a restart, without a gap or a fork", async () => {
    const leaderNode = await newTrail();
    const standbyNode = {
      file: join(await mkdtemp(join(tmpdir(), "audit-")), "audit.log"),
      secret: leaderNode.secret,
    };
    const lease = uniqueName("audit-lease");
    const tenant = uniqueName("chn");
    const leader = await startElectedOperator(leaderNode, lease, "replica-a");
    await eventually("replica-a leads", async () => (leader.manager.isLeader ? true : undefined));
    const standby = await startElectedOperator(standbyNode, lease, "replica-b");
    await applyReadyTenant(tenant);
    await applyDevice(tenant, "a");
    await readyDevice(tenant, "a");
    // The standby watches too, but only the leader writes the trail.
    expect(standby.manager.isLeader).toBe(false);
    expect(await readFile(standbyNode.file, "utf8").catch(() => "")).toBe("");

    // A graceful stop closes the trail before the lease is released; the standby takes over.
    await stopped(leader);
    await eventually("replica-b leads", async () => (standby.manager.isLeader ? true : undefined), 60_000);
    await applyDevice(tenant, "b");
    await readyDevice(tenant, "b");
    await stopped(standby);
    // replica-b restarts on its node, with its file.
    const restarted = await startAuditedOperator(standbyNode);
    await applyDevice(tenant, "c");
    await readyDevice(tenant, "c");
    await stopped(restarted);

    const [leaderRecords, standbyRecords] = [await records(leaderNode.file), await records(standbyNode.file)];
    expect(leaderRecords.map((r) => r.device)).toContain(`${tenant}/a`);
    expect(standbyRecords.map((r) => r.device)).toEqual(
      expect.arrayContaining([`${tenant}/b`, `${tenant}/c`]),
    );
    // What a collector ships from both nodes is one chain: the new leader went on from the old one's head.
    expect(standbyRecords[0]?.seq).toBe(leaderRecords.length);
    const shipped = (await readFile(leaderNode.file, "utf8")) + (await readFile(standbyNode.file, "utf8"));
    expect(verifyAuditLog(shipped)).toMatchObject({
      ok: true,
      records: leaderRecords.length + standbyRecords.length,
    });
    // One node's file alone is not the whole chain, and says what is missing.
    expect(verifyAuditLog(await readFile(standbyNode.file, "utf8"))).toMatchObject({
      ok: false,
      line: 1,
      problem: expect.stringMatching(/^removed: seq 0\.\./),
    });
  }, 300_000);
});

describe("tamper reports and quarantine", () => {
  const QUARANTINING = { devicePolicy: { quarantineOn: ["TamperReported"] } };
  const report = (tenant: string, device: string) => ({
    topic: tamperReportTopic(`tenants/${tenant}`, device),
    payload: JSON.stringify({ type: "enclosureOpened", message: "lid switch" }),
  });
  const annotationOf = async (tenant: string, device: string) =>
    (await kubectl(["get", "device", device, "-n", tenant, "-o", `jsonpath={.metadata.annotations}`])).stdout;
  const dropped = (client: MqttClient, what: string) => until(what, async () => !client.connected);
  const release = async (tenant: string, device: string) =>
    expect(
      (await kubectl(["annotate", "device", device, "-n", tenant, `${QUARANTINE_ANNOTATION}-`])).ok,
    ).toBe(true);

  it("quarantines a device that reports tampering where the Tenant asks: dropped, credentials revoked, Ready=False Quarantined, through a restart, until an admin releases it", async () => {
    const trail = await newTrail();
    let operator = await startAuditedOperator(trail);
    const tenant = uniqueName("qua");
    await applyReadyTenant(tenant, QUARANTINING);
    await applyDevice(tenant, "meter");
    await applyDevice(tenant, "pump", { authentication: { type: "password" } });
    const before = await readyDevice(tenant, "meter");
    const pump = await readyDevice(tenant, "pump");
    const tls = await deviceTls(tenant, "meter");
    const password = (await secretData(tenant, "pump-mqtt")).password ?? "";
    const meter = await connectWithCertificate(tls);
    const pumpClient = await connectWithPassword(pump.username ?? "", password);
    open.push(meter, pumpClient);

    for (const [client, name] of [
      [meter, "meter"],
      [pumpClient, "pump"],
    ] as const) {
      const { topic, payload } = report(tenant, name);
      expect(await publishCode(client, topic, payload)).toBe(0);
    }
    // Recorded: Event, counter; then quarantined: connection cut, Ready=False Quarantined.
    await eventWithReason(tenant, "meter", "TamperReported");
    await eventWithReason(tenant, "pump", "TamperReported");
    await until("reports counted", async () => (await counter(operator, tenant, "TamperReported")) === 2);
    await deviceReadyReason(tenant, "meter", "Quarantined");
    await deviceReadyReason(tenant, "pump", "Quarantined");
    await eventWithReason(tenant, "meter", "DeviceQuarantined");
    await dropped(meter, "meter's connection dropped");
    await dropped(pumpClient, "pump's connection dropped");
    expect(await annotationOf(tenant, "meter")).toContain("TamperReported at");
    // Credentials revoked: the certificate is on the CRL, the password refused, both Secrets gone.
    await eventually("meter's certificate refused as revoked", () => refusedAsRevoked(tls), 60_000);
    await expect(connectWithPassword(pump.username ?? "", password)).rejects.toThrow(/[Nn]ot authori[sz]ed/);
    for (const name of ["meter-mqtt", "pump-mqtt"])
      expect((await kubectl(["get", "secret", name, "-n", tenant])).stderr).toMatch(/NotFound/);

    // The quarantine is in the API, not in the operator: a new operator keeps both cut off.
    await stopped(operator);
    operator = await startAuditedOperator(trail);
    // A Device provisioned by the new operator shows it synced the broker and reconciled the tenant.
    await applyDevice(tenant, "witness");
    await readyDevice(tenant, "witness");
    expect((await brokerEntriesOf(tenant)).clients).toEqual([`iot:${tenant}:witness`]);
    await deviceReadyReason(tenant, "meter", "Quarantined");
    expect(await refusedAsRevoked(tls)).toBe(true);
    await expect(connectWithPassword(pump.username ?? "", password)).rejects.toThrow(/[Nn]ot authori[sz]ed/);

    // Release: the admin removes the annotation; the devices come back with new credentials.
    await release(tenant, "meter");
    await release(tenant, "pump");
    const after = await readyDevice(tenant, "meter");
    await readyDevice(tenant, "pump");
    await eventWithReason(tenant, "meter", "DeviceReleased");
    expect(after.certificate?.serialNumber).toBeDefined();
    expect(after.certificate?.serialNumber).not.toBe(before.certificate?.serialNumber);
    open.push(await connectWithCertificate(await deviceTls(tenant, "meter")));
    const newPassword = (await secretData(tenant, "pump-mqtt")).password ?? "";
    expect(newPassword).not.toBe(password);
    open.push(await connectWithPassword(pump.username ?? "", newPassword));

    await stopped(operator);
    const all = await records(trail.file);
    const kinds = new Set(all.filter((r) => r.device === `${tenant}/meter`).map((r) => r.kind));
    expect([...kinds]).toEqual(
      expect.arrayContaining(["TamperReported", "DeviceQuarantined", "CredentialsRevoked", "DeviceReleased"]),
    );
    const tamper = all.find((r) => r.kind === "TamperReported" && r.device === `${tenant}/meter`);
    expect(tamper?.detail).toMatchObject({ type: "enclosureOpened", message: "lid switch" });
  }, 300_000);

  it("only records a tamper report where the Tenant has no quarantine policy", async () => {
    const trail = await newTrail();
    const operator = await startAuditedOperator(trail);
    const tenant = uniqueName("rec");
    await applyReadyTenant(tenant);
    await applyDevice(tenant, "meter");
    await readyDevice(tenant, "meter");
    const meter = await connectWithCertificate(await deviceTls(tenant, "meter"));
    open.push(meter);
    const { topic, payload } = report(tenant, "meter");
    expect(await publishCode(meter, topic, payload)).toBe(0);
    await eventWithReason(tenant, "meter", "TamperReported");
    expect(await counter(operator, tenant, "TamperReported")).toBe(1);
    // Recorded only: still Ready, still connected, no quarantine annotation.
    await readyDevice(tenant, "meter");
    expect(meter.connected).toBe(true);
    expect(await publishCode(meter, `tenants/${tenant}/devices/meter/readings`, "1")).toBe(0);
    expect(await annotationOf(tenant, "meter")).not.toContain(QUARANTINE_ANNOTATION);
  }, 300_000);

  it("does not quarantine a released device again from a retained copy of its report after a restart", async () => {
    const trail = await newTrail();
    let operator = await startAuditedOperator(trail);
    const tenant = uniqueName("ret");
    await applyReadyTenant(tenant, QUARANTINING);
    await applyDevice(tenant, "meter");
    await applyDevice(tenant, "witness");
    await readyDevice(tenant, "meter");
    await readyDevice(tenant, "witness");
    const meter = await connectWithCertificate(await deviceTls(tenant, "meter"));
    open.push(meter);
    const { topic, payload } = report(tenant, "meter");
    expect(await publishCode(meter, topic, payload, true)).toBe(0);
    await deviceReadyReason(tenant, "meter", "Quarantined");
    await release(tenant, "meter");
    await readyDevice(tenant, "meter");

    await stopped(operator);
    operator = await startAuditedOperator(trail);
    // The broker sends the retained copy right after the new operator subscribes, so before any
    // later fresh report; once a fresh one has quarantined the witness, the copy has been seen.
    const witness = await connectWithCertificate(await deviceTls(tenant, "witness"));
    open.push(witness);
    const fresh = report(tenant, "witness");
    await eventually(
      "a fresh report quarantined the witness",
      async () => {
        expect(await publishCode(witness, fresh.topic, fresh.payload)).toBe(0);
        return (await annotationOf(tenant, "witness")).includes(QUARANTINE_ANNOTATION) ? true : undefined;
      },
      60_000,
    );
    await deviceReadyReason(tenant, "witness", "Quarantined");
    await readyDevice(tenant, "meter");
    expect(await annotationOf(tenant, "meter")).not.toContain(QUARANTINE_ANNOTATION);
  }, 300_000);

  it("lets no device report for a sibling: a forged report is refused by the broker and quarantines nobody but its sender", async () => {
    const trail = await newTrail();
    const operator = await startAuditedOperator(trail);
    const tenant = uniqueName("frg");
    await applyReadyTenant(tenant, QUARANTINING);
    // The attacker may publish anywhere in the tenant's tree.
    await applyDevice(tenant, "attacker", { topics: { publish: ["#"], subscribe: [] } });
    await applyDevice(tenant, "victim");
    await readyDevice(tenant, "attacker");
    await readyDevice(tenant, "victim");
    const attacker = await connectWithCertificate(await deviceTls(tenant, "attacker"));
    const victim = await connectWithCertificate(await deviceTls(tenant, "victim"));
    open.push(attacker, victim);

    const forged = report(tenant, "victim");
    expect(await publishCode(attacker, forged.topic, forged.payload)).toBe(NOT_AUTHORIZED);
    // Positive twin: the grant still reaches the rest of the victim's subtree.
    expect(await publishCode(attacker, `tenants/${tenant}/devices/victim/readings`, "1")).toBe(0);
    // The payload names no one: a report on the sender's own topic that mentions the victim is the sender's.
    const own = report(tenant, "attacker");
    expect(
      await publishCode(attacker, own.topic, JSON.stringify({ type: "other", message: "victim was opened" })),
    ).toBe(0);
    await deviceReadyReason(tenant, "attacker", "Quarantined");
    await dropped(attacker, "the attacker's connection dropped");
    expect(await counter(operator, tenant, "TamperReported")).toBe(1);
    await readyDevice(tenant, "victim");
    expect(victim.connected).toBe(true);
    expect(await annotationOf(tenant, "victim")).not.toContain(QUARANTINE_ANNOTATION);
    expect((await eventsOf(tenant, "victim")).map((e) => e.reason)).not.toContain("TamperReported");
  }, 300_000);
});
