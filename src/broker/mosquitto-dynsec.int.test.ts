import { spawn } from "node:child_process";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { MqttClient } from "mqtt";
import mqtt from "mqtt";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { restartMosquitto } from "../../bench/support/mosquitto-process.js";
import { connectWithCertificate, publishCode, subscribeCodes } from "../../bench/support/mqtt-device.js";
import { startMosquitto } from "../../test/harness/mosquitto.js";
import { issueCertificate, type KeyPair } from "../../test/harness/pki.js";
import { adminConnection, NOT_AUTHORIZED } from "../../test/support/mqtt.js";
import type { BrokerDevice, BrokerStatus } from "./adapter.js";
import { desiredDevice } from "./desired.js";
import { DynsecClient } from "./dynsec-client.js";
import { BrokerUnavailableError, MosquittoDynsecAdapter } from "./mosquitto-dynsec.js";
import { observationOf } from "./plan.js";
import { deviceSubject, subjectUsername } from "./subject.js";

const stack = inject("stack");
const REFUSED = NOT_AUTHORIZED;
const run = Date.now().toString(36);
const connection = adminConnection(stack.broker);

function device(tenant: string, name: string, extra: Partial<BrokerDevice> = {}): BrokerDevice {
  return {
    tenant,
    device: name,
    topicRoot: `tenants/${tenant}`,
    credentials: { type: "x509", username: subjectUsername(deviceSubject(tenant, name)) },
    enabled: true,
    suspended: false,
    ...extra,
  };
}

function closed(client: MqttClient): Promise<number> {
  const started = performance.now();
  return new Promise((resolve) => client.once("close", () => resolve(performance.now() - started)));
}

/** Messages that arrive on `client` within `ms`. */
async function received(client: MqttClient, ms: number): Promise<string[]> {
  const messages: string[] = [];
  const collect = (topic: string, payload: Buffer) => messages.push(`${topic}=${payload.toString()}`);
  client.on("message", collect);
  await sleep(ms);
  client.off("message", collect);
  return messages;
}

/** The operator's entries in the broker, as the adapter's observation of them should look. */
async function brokerStateOf(admin: DynsecClient, prefix: string) {
  const roles = (await admin.run({ command: "listRoles", verbose: true })) as {
    roles: Array<{ rolename: string; acls: unknown[] }>;
  };
  const clients = (await admin.run({ command: "listClients", verbose: true })) as {
    clients: Array<{ username: string; textname?: string; roles: Array<{ rolename: string }> }>;
  };
  return {
    roles: roles.roles
      .filter((r) => r.rolename.startsWith(prefix))
      .sort((a, b) => a.rolename.localeCompare(b.rolename)),
    clients: clients.clients
      .filter((c) => c.textname?.startsWith(prefix))
      .map((c) => ({ username: c.username, textname: c.textname, roles: c.roles.map((r) => r.rolename) }))
      .sort((a, b) => a.username.localeCompare(b.username)),
  };
}

function expectedStateOf(prefix: string, devices: readonly BrokerDevice[]) {
  const observed = devices.map((d) => observationOf(desiredDevice(prefix, d)));
  return {
    roles: observed
      .flatMap((o) => (o.role ? [o.role] : []))
      .sort((a, b) => a.rolename.localeCompare(b.rolename)),
    clients: observed.flatMap((o) => o.clients).sort((a, b) => a.username.localeCompare(b.username)),
  };
}

describe("MosquittoDynsecAdapter on the real broker", () => {
  let dir: string;
  let admin: DynsecClient;
  let adapter: MosquittoDynsecAdapter;
  const prefix = `itest-${run}:`;
  const certificates = new Map<string, KeyPair>();
  const endpoint = stack.broker;

  async function certificate(tenant: string, name: string): Promise<KeyPair> {
    const key = `${tenant}/${name}`;
    const found = certificates.get(key);
    if (found) return found;
    const pair = await issueCertificate(dir, stack.broker.deviceCA, `${tenant}-${name}`, {
      subject: `/O=${tenant}/CN=${name}`,
      usages: ["clientAuth"],
    });
    certificates.set(key, pair);
    return pair;
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "broker-adapter-"));
    admin = await DynsecClient.connect(connection);
    adapter = new MosquittoDynsecAdapter({ connection, ownerPrefix: prefix });
  });
  afterAll(async () => {
    await adapter.close();
    await admin.close();
  });

  it("lets a device use its own subtree and refuses everything outside it", async () => {
    const [a, b] = [`a${run}`, `b${run}`];
    const app = device(a, "app", { topics: { publish: [], subscribe: ["#"] } });
    await Promise.all(
      [device(a, "sensor-1"), device(a, "sensor-2"), device(b, "sensor-1"), app].map((d) =>
        adapter.applyDevice(d),
      ),
    );
    const [own, neighbour, foreign, reader] = await Promise.all([
      certificate(a, "sensor-1").then((p) => connectWithCertificate(endpoint, p)),
      certificate(a, "sensor-2").then((p) => connectWithCertificate(endpoint, p)),
      certificate(b, "sensor-1").then((p) => connectWithCertificate(endpoint, p)),
      certificate(a, "app").then((p) => connectWithCertificate(endpoint, p)),
    ]);
    try {
      const subtree = `tenants/${a}/devices/sensor-1`;
      expect(await subscribeCodes(own, `${subtree}/#`)).toEqual([1]);
      expect(await subscribeCodes(own, `$share/g/${subtree}/#`)).toEqual([1]);
      await own.unsubscribeAsync(`$share/g/${subtree}/#`);
      for (const filter of [
        `tenants/${a}/devices/sensor-2/#`,
        `tenants/${a}/#`,
        `tenants/${b}/#`,
        `tenants/${b}/devices/sensor-1/#`,
        "#",
        "+/#",
        "$SYS/#",
        "$CONTROL/#",
        `$share/g/tenants/${b}/#`,
      ])
        expect({ filter, codes: await subscribeCodes(own, filter) }).toEqual({ filter, codes: [REFUSED] });
      expect(await publishCode(own, `tenants/${a}/devices/sensor-2/cmd`, "x")).toBe(REFUSED);
      expect(await publishCode(own, `tenants/${b}/devices/sensor-1/cmd`, "x")).toBe(REFUSED);

      expect(await subscribeCodes(reader, `tenants/${a}/#`)).toEqual([1]);
      expect(await subscribeCodes(foreign, `tenants/${b}/devices/sensor-1/#`)).toEqual([1]);
      const seenByOwn = received(own, 600);
      const seenByReader = received(reader, 600);
      await publishCode(own, `${subtree}/temp`, "21.5");
      await publishCode(neighbour, `tenants/${a}/devices/sensor-2/temp`, "19");
      await publishCode(foreign, `tenants/${b}/devices/sensor-1/temp`, "live", true);
      expect(await seenByOwn).toEqual([`${subtree}/temp=21.5`]);
      expect((await seenByReader).sort()).toEqual([
        `tenants/${a}/devices/sensor-1/temp=21.5`,
        `tenants/${a}/devices/sensor-2/temp=19`,
      ]);

      // A retained message of the other tenant is not delivered to a fresh session either.
      const late = await connectWithCertificate(endpoint, await certificate(a, "sensor-1"));
      const seenLate = received(late, 400);
      await subscribeCodes(late, `tenants/${b}/devices/sensor-1/temp`);
      await subscribeCodes(late, `${subtree}/#`);
      expect(await seenLate).toEqual([]);
      await late.endAsync();
    } finally {
      await Promise.all([own, neighbour, foreign, reader].map((c) => c.endAsync()));
    }
  });

  it("drops a disabled device within a second, leaves it powerless, and restores it when enabled", async () => {
    const tenant = `c${run}`;
    const spec = device(tenant, "door");
    await adapter.applyDevice(spec);
    const pair = await certificate(tenant, "door");
    const live = await connectWithCertificate(endpoint, pair);
    expect(await subscribeCodes(live, `tenants/${tenant}/devices/door/#`)).toEqual([1]);

    const dropped = closed(live);
    await adapter.applyDevice({ ...spec, enabled: false });
    expect(await dropped).toBeLessThan(1_000);

    const again = await connectWithCertificate(endpoint, pair);
    expect(await subscribeCodes(again, `tenants/${tenant}/devices/door/#`)).toEqual([REFUSED]);
    expect(await publishCode(again, `tenants/${tenant}/devices/door/state`, "open")).toBe(REFUSED);
    await again.endAsync();

    await adapter.applyDevice(spec);
    const restored = await connectWithCertificate(endpoint, pair);
    expect(await subscribeCodes(restored, `tenants/${tenant}/devices/door/#`)).toEqual([1]);
    const dropOnDelete = closed(restored);
    await adapter.removeDevice(spec);
    expect(await dropOnDelete).toBeLessThan(1_000);
    await adapter.removeDevice(spec);
  });

  it("cuts off every device of a suspended tenant and restores them when unsuspended", async () => {
    const tenant = `s${run}`;
    const fleet = ["m1", "m2"].map((name) => device(tenant, name));
    await Promise.all(fleet.map((d) => adapter.applyDevice(d)));
    const clients = await Promise.all(
      fleet.map(async (d) => connectWithCertificate(endpoint, await certificate(tenant, d.device))),
    );
    const drops = clients.map(closed);
    await Promise.all(fleet.map((d) => adapter.applyDevice({ ...d, suspended: true })));
    for (const ms of await Promise.all(drops)) expect(ms).toBeLessThan(1_000);
    const probe = await connectWithCertificate(endpoint, await certificate(tenant, "m1"));
    expect(await subscribeCodes(probe, `tenants/${tenant}/devices/m1/#`)).toEqual([REFUSED]);
    await probe.endAsync();

    await Promise.all(fleet.map((d) => adapter.applyDevice(d)));
    const back = await connectWithCertificate(endpoint, await certificate(tenant, "m2"));
    expect(await subscribeCodes(back, `tenants/${tenant}/devices/m2/#`)).toEqual([1]);
    await back.endAsync();
  });

  it("kicks a device whose grants narrow, so an old subscription stops delivering", async () => {
    const tenant = `n${run}`;
    const wide = device(tenant, "gw", { topics: { publish: [], subscribe: ["shared/#"] } });
    await adapter.applyDevice(wide);
    const client = await connectWithCertificate(endpoint, await certificate(tenant, "gw"));
    expect(await subscribeCodes(client, `tenants/${tenant}/shared/#`)).toEqual([1]);
    const dropped = closed(client);
    await adapter.applyDevice(device(tenant, "gw"));
    expect(await dropped).toBeLessThan(1_000);
    const again = await connectWithCertificate(endpoint, await certificate(tenant, "gw"));
    expect(await subscribeCodes(again, `tenants/${tenant}/shared/#`)).toEqual([REFUSED]);
    await again.endAsync();
  });

  it("serves password devices with their username and password", async () => {
    const tenant = `p${run}`;
    const password = `pw-${run}-secret`;
    const spec = device(tenant, "legacy", {
      credentials: { type: "password", username: `${tenant}/legacy`, password },
    });
    await adapter.applyDevice(spec);
    await adapter.applyDevice(spec);
    const connect = (secret: string) =>
      mqtt.connectAsync({
        host: stack.broker.host,
        port: stack.broker.adminPort,
        protocolVersion: 5,
        username: `${tenant}/legacy`,
        password: secret,
        reconnectPeriod: 0,
      });
    const client = await connect(password);
    expect(await subscribeCodes(client, `tenants/${tenant}/devices/legacy/#`)).toEqual([1]);
    expect(await subscribeCodes(client, `tenants/${tenant}/#`)).toEqual([REFUSED]);
    await client.endAsync();
    await adapter.applyDevice({
      ...spec,
      credentials: { type: "password", username: `${tenant}/legacy`, password: "rotated" },
    });
    await expect(connect(password)).rejects.toThrow();
    await (await connect("rotated")).endAsync();
  });

  it("deletes orphans and corrects drift within its own prefix only", async () => {
    const own = `r${run}-own:`;
    const foreignRole = `r${run}-foreign:role`;
    const tenant = `r${run}`;
    const keep = device(tenant, "keep");
    const scoped = new MosquittoDynsecAdapter({ connection, ownerPrefix: own });
    try {
      await scoped.applyDevice(keep);
      await scoped.applyDevice(device(tenant, "orphan"));
      await admin.run({ command: "createRole", rolename: foreignRole });
      await admin.run({ command: "createRole", rolename: `${own}stray` });
      await admin.run({
        command: "modifyRole",
        rolename: `${own}${tenant}:keep`,
        acls: [{ acltype: "subscribePattern", topic: "#", priority: 0, allow: true }],
      });

      const report = await scoped.syncAll([keep]);
      expect(report.orphansDeleted).toBe(2);
      expect(await brokerStateOf(admin, own)).toEqual(expectedStateOf(own, [keep]));
      expect(await admin.run({ command: "getRole", rolename: foreignRole })).toBeDefined();
      expect((await scoped.syncAll([keep])).commands).toBe(0);
    } finally {
      await scoped.close();
      await admin.run({ command: "deleteRole", rolename: foreignRole });
    }
  });

  it("leaves the broker exactly in the desired state after being killed mid-provisioning and restarted", async () => {
    const own = `k${run}:`;
    const tenant = `k${run}`;
    const fleet = Array.from({ length: 60 }, (_, i) => device(tenant, `d${i}`));
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        "bench/support/provision-child.ts",
        JSON.stringify({ connection, ownerPrefix: own, devices: fleet }),
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    let commands = 0;
    await new Promise<void>((resolve, reject) => {
      child.once("exit", () => reject(new Error("provisioning finished before it was killed")));
      child.stdout.on("data", (chunk: Buffer) => {
        commands += chunk.toString().split("\n").filter(Boolean).length;
        if (commands >= 25 && child.kill("SIGKILL")) resolve();
      });
    });
    expect((await brokerStateOf(admin, own)).roles.length).toBeLessThan(fleet.length);

    // The restarted operator wants a different fleet: half of it, one device disabled.
    const desired = [...fleet.slice(0, 20), { ...device(tenant, "d3"), enabled: false }].filter(
      (d, i, all) => all.findLastIndex((x) => x.device === d.device) === i,
    );
    const restarted = new MosquittoDynsecAdapter({ connection, ownerPrefix: own });
    try {
      await restarted.syncAll(desired);
      expect(await brokerStateOf(admin, own)).toEqual(expectedStateOf(own, desired));
      await restarted.syncAll([]);
      expect(await brokerStateOf(admin, own)).toEqual({ roles: [], clients: [] });
    } finally {
      await restarted.close();
    }
  });
});

describe("MosquittoDynsecAdapter during a broker outage", () => {
  it("reports BrokerSynced=False while the broker is down and heals by itself", async () => {
    const dir = await mkdtemp(join(tmpdir(), "broker-outage-"));
    const broker = await startMosquitto({ stateDir: dir, deviceRootCA: stack.deviceRootCA });
    const statuses: BrokerStatus[] = [];
    const adapter = new MosquittoDynsecAdapter({
      connection: {
        host: broker.host,
        port: broker.adminPort,
        username: broker.adminUsername,
        password: broker.adminPassword,
      },
      backoff: { initialMs: 100, maxMs: 500 },
    });
    adapter.onStatusChange((status) => statuses.push(status));
    let restarted: Awaited<ReturnType<typeof restartMosquitto>> | undefined;
    try {
      const first = device("outage", "s1");
      await adapter.syncAll([first]);
      expect(adapter.status()).toEqual({ synced: true });

      await broker.stop();
      await expect.poll(() => adapter.status().synced, { timeout: 5_000 }).toBe(false);
      const second = device("outage", "s2");
      await expect(adapter.applyDevice(second)).rejects.toBeInstanceOf(BrokerUnavailableError);

      restarted = await restartMosquitto(broker);
      await expect.poll(() => adapter.status().synced, { timeout: 10_000 }).toBe(true);
      const admin = await DynsecClient.connect(adminConnection(broker));
      try {
        expect(await brokerStateOf(admin, "iot:")).toEqual(expectedStateOf("iot:", [first, second]));
      } finally {
        await admin.close();
      }
      expect(statuses.map((s) => s.synced)).toEqual([true, false, true]);
    } finally {
      await adapter.close();
      await restarted?.stop();
    }
  });
});
