import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { MqttClient } from "mqtt";
import mqtt from "mqtt";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { restartMosquitto } from "../../bench/support/mosquitto-process.js";
import { connectWithCertificate, publishCode, subscribeCodes } from "../../bench/support/mqtt-device.js";
import { startMosquitto } from "../../test/harness/mosquitto.js";
import { issueCertificate, type KeyPair } from "../../test/harness/pki.js";
import {
  adminConnection,
  connectWithPassword,
  NOT_AUTHORIZED,
  receivedBeforeSentinel,
} from "../../test/support/mqtt.js";
import type { BrokerDevice, BrokerStatus } from "./adapter.js";
import { type Acl, canonicalAcls, desiredDevice, desiredGate } from "./desired.js";
import { DynsecClient } from "./dynsec-client.js";
import { BrokerUnavailableError, type CommandEvent, MosquittoDynsecAdapter } from "./mosquitto-dynsec.js";
import { gateObservationOf, observationOf } from "./plan.js";
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

/** The operator's entries in the broker (device and gate roles, gate groups, clients), sorted. */
async function brokerStateOf(admin: DynsecClient, prefix: string) {
  const roles = (await admin.run({ command: "listRoles", verbose: true })) as {
    roles: Array<{ rolename: string; acls: unknown[] }>;
  };
  const groups = (await admin.run({ command: "listGroups", verbose: true })) as {
    groups: Array<{ groupname: string; roles: Array<{ rolename: string }> }>;
  };
  const clients = (await admin.run({ command: "listClients", verbose: true })) as {
    clients: Array<{
      username: string;
      textname?: string;
      roles: Array<{ rolename: string }>;
      groups: Array<{ groupname: string }>;
    }>;
  };
  return {
    roles: roles.roles
      .filter((r) => r.rolename.startsWith(prefix))
      .map((r) => ({ rolename: r.rolename, acls: canonicalAcls(r.acls as Acl[]) }))
      .sort((a, b) => a.rolename.localeCompare(b.rolename)),
    groups: groups.groups
      .filter((g) => g.groupname.startsWith(prefix))
      .map((g) => ({ groupname: g.groupname, roles: g.roles.map((r) => r.rolename).sort() }))
      .sort((a, b) => a.groupname.localeCompare(b.groupname)),
    clients: clients.clients
      .filter((c) => c.textname?.startsWith(prefix))
      .map((c) => ({
        username: c.username,
        textname: c.textname,
        roles: c.roles.map((r) => r.rolename).sort(),
        groups: c.groups.map((g) => g.groupname).sort(),
      }))
      .sort((a, b) => a.username.localeCompare(b.username)),
  };
}

/** What brokerStateOf should read once the adapter converged on `devices`. */
function expectedStateOf(prefix: string, devices: readonly BrokerDevice[]) {
  const observed = devices.map((d) => observationOf(desiredDevice(prefix, d)));
  const gates = [...new Map(devices.map((d) => [d.tenant, desiredGate(prefix, d)])).values()];
  return {
    roles: [
      ...observed.flatMap((o) => (o.role ? [o.role] : [])),
      ...gates.map((gate) => ({
        rolename: gate.name,
        acls: canonicalAcls(gateObservationOf(gate).acls ?? []),
      })),
    ].sort((a, b) => a.rolename.localeCompare(b.rolename)),
    groups: gates
      .map((gate) => ({ groupname: gate.name, roles: [...(gateObservationOf(gate).groupRoles ?? [])] }))
      .sort((a, b) => a.groupname.localeCompare(b.groupname)),
    clients: observed
      .flatMap((o) => o.clients)
      .map((c) => ({ ...c, roles: [...c.roles].sort(), groups: [...c.groups].sort() }))
      .sort((a, b) => a.username.localeCompare(b.username)),
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
        `tenants/+/devices/sensor-1/#`,
        "tenants/#",
        "+/+/devices/#",
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
      // A sentinel published after the messages under test ends each wait: absence by order, not by the clock.
      const end = `${subtree}/end`;
      const seenByReader = receivedBeforeSentinel(reader, end, async () => undefined);
      const seenByOwn = await receivedBeforeSentinel(own, end, async () => {
        expect(await publishCode(own, `${subtree}/temp`, "21.5")).toBeLessThan(128);
        expect(await publishCode(neighbour, `tenants/${a}/devices/sensor-2/temp`, "19")).toBeLessThan(128);
        expect(await publishCode(foreign, `tenants/${b}/devices/sensor-1/temp`, "live", true)).toBeLessThan(
          128,
        );
        await publishCode(own, end, "");
      });
      expect(seenByOwn).toEqual([`${subtree}/temp=21.5`]);
      expect((await seenByReader).sort()).toEqual([
        `tenants/${a}/devices/sensor-1/temp=21.5`,
        `tenants/${a}/devices/sensor-2/temp=19`,
      ]);

      // A retained message of the other tenant is not delivered to a fresh session either.
      const late = await connectWithCertificate(endpoint, await certificate(a, "sensor-1"));
      const seenLate = await receivedBeforeSentinel(late, end, async () => {
        expect(await subscribeCodes(late, `tenants/${b}/devices/sensor-1/temp`)).toEqual([REFUSED]);
        expect(await subscribeCodes(late, `${subtree}/#`)).toEqual([1]);
        await publishCode(late, end, "");
      });
      expect(seenLate).toEqual([]);
      await late.endAsync();
    } finally {
      await Promise.all([own, neighbour, foreign, reader].map((c) => c.endAsync()));
    }
  });

  it("drops a disabled device at once, leaves it powerless, and restores it when enabled", async () => {
    const tenant = `c${run}`;
    const spec = device(tenant, "door");
    await adapter.applyDevice(spec);
    const pair = await certificate(tenant, "door");
    const live = await connectWithCertificate(endpoint, pair);
    expect(await subscribeCodes(live, `tenants/${tenant}/devices/door/#`)).toEqual([1]);

    const dropped = closed(live);
    await adapter.applyDevice({ ...spec, enabled: false });
    expect(await dropped).toBeLessThan(10_000);

    const again = await connectWithCertificate(endpoint, pair);
    expect(await subscribeCodes(again, `tenants/${tenant}/devices/door/#`)).toEqual([REFUSED]);
    expect(await publishCode(again, `tenants/${tenant}/devices/door/state`, "open")).toBe(REFUSED);
    await again.endAsync();

    await adapter.applyDevice(spec);
    const restored = await connectWithCertificate(endpoint, pair);
    expect(await subscribeCodes(restored, `tenants/${tenant}/devices/door/#`)).toEqual([1]);
    const dropOnDelete = closed(restored);
    await adapter.removeDevice(spec);
    expect(await dropOnDelete).toBeLessThan(10_000);
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
    for (const ms of await Promise.all(drops)) expect(ms).toBeLessThan(10_000);
    const probe = await connectWithCertificate(endpoint, await certificate(tenant, "m1"));
    expect(await subscribeCodes(probe, `tenants/${tenant}/devices/m1/#`)).toEqual([REFUSED]);
    await probe.endAsync();

    await Promise.all(fleet.map((d) => adapter.applyDevice(d)));
    const back = await connectWithCertificate(endpoint, await certificate(tenant, "m2"));
    expect(await subscribeCodes(back, `tenants/${tenant}/devices/m2/#`)).toEqual([1]);
    await back.endAsync();
  });

  it("suspends a whole tenant with two broker commands, whatever its size: every device dropped and powerless on reconnect, all served again on resume", async () => {
    const tenant = `w${run}`;
    const own = `w${run}:`;
    const commands: string[] = [];
    const counted = new MosquittoDynsecAdapter({
      connection,
      ownerPrefix: own,
      onCommand: (event) => commands.push(event.command),
    });
    const fleet = Array.from({ length: 12 }, (_, i) => device(tenant, `w${i}`));
    const connectAll = () =>
      Promise.all(
        fleet.map(async (d) => connectWithCertificate(endpoint, await certificate(tenant, d.device))),
      );
    const subtree = (d: BrokerDevice) => `tenants/${tenant}/devices/${d.device}`;
    try {
      await Promise.all(fleet.map((d) => counted.applyDevice(d)));
      const clients = await connectAll();
      const drops = clients.map(closed);

      commands.length = 0;
      await Promise.all(fleet.map((d) => counted.applyDevice({ ...d, suspended: true })));
      expect(commands).toEqual(["modifyRole", "addGroupRole"]);
      for (const ms of await Promise.all(drops)) expect(ms).toBeLessThan(10_000);
      const probes = await connectAll();
      for (const [i, probe] of probes.entries()) {
        const d = fleet[i] as BrokerDevice;
        expect(await subscribeCodes(probe, `${subtree(d)}/#`)).toEqual([REFUSED]);
        expect(await subscribeCodes(probe, `$share/g/${subtree(d)}/#`)).toEqual([REFUSED]);
        expect(await publishCode(probe, `${subtree(d)}/telemetry`, "x")).toBe(REFUSED);
      }
      await Promise.all(probes.map((probe) => probe.endAsync()));

      // Positive twin: resumed, each device is served again, also two commands.
      commands.length = 0;
      await Promise.all(fleet.map((d) => counted.applyDevice(d)));
      expect(commands).toEqual(["modifyRole", "removeGroupRole"]);
      const back = await connectAll();
      for (const [i, client] of back.entries()) {
        const d = fleet[i] as BrokerDevice;
        expect(await subscribeCodes(client, `${subtree(d)}/#`)).toEqual([1]);
        expect(await publishCode(client, `${subtree(d)}/telemetry`, "x")).toBe(0);
      }
      await Promise.all(back.map((client) => client.endAsync()));
    } finally {
      await counted.syncAll([]);
      await counted.close();
    }
  });

  it("deletes a tenant by cutting every device off first, in two commands, then removing each", async () => {
    const tenant = `x${run}`;
    const own = `x${run}:`;
    const commands: string[] = [];
    const counted = new MosquittoDynsecAdapter({
      connection,
      ownerPrefix: own,
      onCommand: (event) => commands.push(event.command),
    });
    const fleet = Array.from({ length: 6 }, (_, i) => device(tenant, `x${i}`));
    try {
      await Promise.all(fleet.map((d) => counted.applyDevice(d)));
      const clients = await Promise.all(
        fleet.map(async (d) => connectWithCertificate(endpoint, await certificate(tenant, d.device))),
      );
      const drops = clients.map(closed);
      commands.length = 0;
      await counted.removeTenant({ tenant });
      expect(commands.slice(0, 2)).toEqual(["modifyRole", "addGroupRole"]);
      expect(commands.slice(-2)).toEqual(["deleteGroup", "deleteRole"]);
      for (const ms of await Promise.all(drops)) expect(ms).toBeLessThan(10_000);
      expect(await brokerStateOf(admin, own)).toEqual({ roles: [], groups: [], clients: [] });
    } finally {
      await counted.close();
    }
  });

  it("kicks a device whose grants narrow, so an old subscription stops delivering", async () => {
    const tenant = `n${run}`;
    const wide = device(tenant, "gw", { topics: { publish: [], subscribe: ["shared/#"] } });
    await adapter.applyDevice(wide);
    const client = await connectWithCertificate(endpoint, await certificate(tenant, "gw"));
    expect(await subscribeCodes(client, `tenants/${tenant}/shared/#`)).toEqual([1]);
    const dropped = closed(client);
    await adapter.applyDevice(device(tenant, "gw"));
    expect(await dropped).toBeLessThan(10_000);
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
    const connect = (secret: string) => connectWithPassword(`${tenant}/legacy`, secret);
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
    // The admin listener is the operator's alone: a device's valid credentials do not open it.
    for (const protocol of ["mqtt", "mqtts"] as const)
      await expect(
        mqtt.connectAsync({
          protocol,
          host: stack.broker.host,
          port: stack.broker.adminPort,
          ca: await readFile(stack.broker.caFile),
          username: `${tenant}/legacy`,
          password: "rotated",
          reconnectPeriod: 0,
          connectTimeout: 5_000,
        }),
      ).rejects.toThrow();
  });

  it("refuses the broker admin's credentials on the device password listener and serves them on the admin listener", async () => {
    await expect(connectWithPassword(stack.broker.adminUsername, stack.broker.adminPassword)).rejects.toThrow(
      /Not authorized/,
    );
    const operator = await DynsecClient.connect(connection);
    expect(await operator.run({ command: "getDefaultACLAccess" })).toBeDefined();
    await operator.close();
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
      const foreignAcls = [{ acltype: "subscribePattern", topic: "foreign/#", priority: 0, allow: true }];
      await admin.run({ command: "createRole", rolename: foreignRole, acls: foreignAcls });
      await admin.run({ command: "createRole", rolename: `${own}stray` });
      await admin.run({
        command: "modifyRole",
        rolename: `${own}${tenant}:keep`,
        acls: [{ acltype: "subscribePattern", topic: "#", priority: 0, allow: true }],
      });

      const report = await scoped.syncAll([keep]);
      expect(report.orphansDeleted).toBe(2);
      expect(await brokerStateOf(admin, own)).toEqual(expectedStateOf(own, [keep]));
      expect(await admin.run({ command: "getRole", rolename: foreignRole })).toEqual({
        role: { rolename: foreignRole, acls: foreignAcls },
      });
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
      expect(await brokerStateOf(admin, own)).toEqual({ roles: [], groups: [], clients: [] });
    } finally {
      await restarted.close();
    }
  });
});

describe("MosquittoDynsecAdapter: client ids, sessions and receive checks", () => {
  let dir: string;
  let adapter: MosquittoDynsecAdapter;
  const prefix = `isess-${run}:`;
  const endpoint = stack.broker;

  const pair = (tenant: string, name: string) =>
    issueCertificate(dir, stack.broker.deviceCA, `${tenant}-${name}-${randomUUID()}`, {
      subject: `/O=${tenant}/CN=${name}`,
      usages: ["clientAuth"],
    });

  /** An MQTT 3.1.1 device with a persistent session (clean session off) and the client id it chooses. */
  async function persistentDevice(tenant: string, name: string, clientId: string): Promise<MqttClient> {
    return connectWithCertificate(endpoint, await pair(tenant, name), {
      protocolVersion: 4,
      clean: false,
      clientId,
    });
  }

  /** A device of the topic's tenant that may publish anywhere under its root sends the messages under test. */
  const commanders = new Map<string, Promise<MqttClient>>();
  async function publish(topic: string, payload: string, retain = false): Promise<void> {
    const tenant = topic.split("/")[1] ?? "";
    let commander = commanders.get(tenant);
    if (!commander) {
      commander = adapter
        .applyDevice(device(tenant, "commander", { topics: { publish: ["#"], subscribe: [] } }))
        .then(() => pair(tenant, "commander"))
        .then((commanderPair) => connectWithCertificate(endpoint, commanderPair));
      commanders.set(tenant, commander);
    }
    expect(await publishCode(await commander, topic, payload, retain)).toBeLessThan(128);
  }
  const cmd = (tenant: string, name: string) => `tenants/${tenant}/devices/${name}/cmd`;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "broker-sessions-"));
    adapter = new MosquittoDynsecAdapter({ connection, ownerPrefix: prefix });
  });
  afterAll(async () => {
    await Promise.all([...commanders.values()].map(async (c) => (await c).endAsync(true)));
    await adapter.close();
  });

  it.each([
    ["a device of another tenant", (t: string) => [`${t}a`, "sensor-1", `${t}b`, "sensor-1"]],
    ["a sibling device of the same tenant", (t: string) => [`${t}a`, "sensor-1", `${t}a`, "sensor-2"]],
  ])("%s that uses a device's client id neither takes over its session nor knocks it off", async (_, names) => {
    const [victimTenant, victimName, thiefTenant, thiefName] = names(`t${randomUUID().slice(0, 6)}`) as [
      string,
      string,
      string,
      string,
    ];
    await adapter.applyDevice(device(victimTenant, victimName));
    await adapter.applyDevice(device(thiefTenant, thiefName));
    const clientId = `shared-${randomUUID()}`;
    const victim = await persistentDevice(victimTenant, victimName, clientId);
    expect(await subscribeCodes(victim, cmd(victimTenant, victimName))).toEqual([1]);

    // While the victim is online: the thief connects with its client id.
    const thief = await persistentDevice(thiefTenant, thiefName, clientId);
    const thiefOwn = `tenants/${thiefTenant}/devices/${thiefName}/sentinel`;
    expect(await subscribeCodes(thief, thiefOwn)).toEqual([1]);
    const seenByVictim = await receivedBeforeSentinel(victim, cmd(victimTenant, victimName), () =>
      publish(cmd(victimTenant, victimName), "online"),
    );
    expect({ seenByVictim, victimConnected: victim.connected }).toEqual({
      seenByVictim: [],
      victimConnected: true,
    });
    expect(await receivedBeforeSentinel(thief, thiefOwn, () => publish(thiefOwn, "s"))).toEqual([]);
    await thief.endAsync();

    // While the victim is offline with a queued message: the thief resumes nothing.
    await victim.endAsync();
    await publish(cmd(victimTenant, victimName), "queued");
    const again = await persistentDevice(thiefTenant, thiefName, clientId);
    await subscribeCodes(again, thiefOwn);
    expect(await receivedBeforeSentinel(again, thiefOwn, () => publish(thiefOwn, "s"))).toEqual([]);
    await again.endAsync();

    // Positive twin: the victim's own session kept the queued message for it.
    const back = await persistentDevice(victimTenant, victimName, clientId);
    const queued = new Promise((resolve) =>
      back.once("message", (topic, payload) => resolve(`${topic}=${payload}`)),
    );
    expect(await queued).toBe(`${cmd(victimTenant, victimName)}=queued`);
    await back.endAsync();
  });

  /** Connects as the device (MQTT 3.1.1, clean session off), disconnects, and tells whether the broker had a session for it. */
  async function hadSession(tenant: string, name: string): Promise<boolean> {
    const identity = await pair(tenant, name);
    const client = mqtt.connect({
      protocol: "mqtts",
      host: endpoint.host,
      port: endpoint.mtlsPort,
      protocolVersion: 4,
      clean: false,
      clientId: "any",
      reconnectPeriod: 0,
      ca: await readFile(endpoint.caFile),
      cert: await readFile(identity.certFile),
      key: await readFile(identity.keyFile),
    });
    const connack = await new Promise<{ sessionPresent: boolean }>((resolve, reject) => {
      client.once("connect", resolve);
      client.once("error", reject);
    });
    await client.endAsync();
    return connack.sessionPresent;
  }

  it("discards a removed device's session, so a device later given its name resumes nothing", async () => {
    const tenant = `r${randomUUID().slice(0, 6)}`;
    const spec = device(tenant, "s1");
    await adapter.applyDevice(spec);
    const first = await persistentDevice(tenant, "s1", "any");
    expect(await subscribeCodes(first, cmd(tenant, "s1"))).toEqual([1]);
    await first.endAsync();
    // Positive twin: the session is there while the device is.
    expect(await hadSession(tenant, "s1")).toBe(true);
    await adapter.removeDevice(spec);
    await adapter.applyDevice(spec);
    expect(await hadSession(tenant, "s1")).toBe(false);
  });

  it("clears a deleted tenant's retained messages and no one else's", async () => {
    const [gone, kept] = [`g${randomUUID().slice(0, 6)}`, `k${randomUUID().slice(0, 6)}`];
    await publish(`tenants/${gone}/devices/s1/state`, "left behind", true);
    await publish(`tenants/${gone}/devices/s1/a/b`, "deeper", true);
    await publish(`tenants/${kept}/devices/s1/state`, "still mine", true);
    await adapter.purgeTenant({ tenant: gone, topicRoot: `tenants/${gone}` });

    await adapter.applyDevice(device(gone, "reader", { topics: { publish: ["#"], subscribe: ["#"] } }));
    const reader = await connectWithCertificate(endpoint, await pair(gone, "reader"));
    const end = `tenants/${gone}/end`;
    const seen = await receivedBeforeSentinel(reader, end, async () => {
      expect(await subscribeCodes(reader, `tenants/${gone}/#`)).toEqual([1]);
      await publishCode(reader, end, "");
    });
    expect(seen).toEqual([]);
    await reader.endAsync();

    // Positive twin: the other tenant's retained message is still delivered.
    await adapter.applyDevice(device(kept, "reader", { topics: { publish: [], subscribe: ["#"] } }));
    const other = await connectWithCertificate(endpoint, await pair(kept, "reader"));
    const retained = new Promise((resolve) => other.once("message", (t, p) => resolve(`${t}=${p}`)));
    expect(await subscribeCodes(other, `tenants/${kept}/#`)).toEqual([1]);
    expect(await retained).toBe(`tenants/${kept}/devices/s1/state=still mine`);
    await other.endAsync();
  });

  it.each([
    ["narrowed while offline", false],
    ["disabled, then enabled again with a narrower grant", true],
  ])("a resumed session receives nothing beyond the device's current grant: %s", async (_, viaDisable) => {
    const tenant = `w${randomUUID().slice(0, 6)}`;
    const wide = device(tenant, "gw", { topics: { publish: ["devices/gw/#"], subscribe: ["devices/#"] } });
    await adapter.applyDevice(wide);
    await adapter.applyDevice(device(tenant, "sensor-2"));
    const clientId = `gw-${randomUUID()}`;
    const gw = await persistentDevice(tenant, "gw", clientId);
    expect(await subscribeCodes(gw, `tenants/${tenant}/devices/#`)).toEqual([1]);
    const dropped = closed(gw);
    if (viaDisable) await adapter.applyDevice({ ...wide, enabled: false });
    else await gw.endAsync();
    await dropped;
    await publish(cmd(tenant, "sensor-2"), "queued-while-offline");
    await adapter.applyDevice(device(tenant, "gw"));

    const resumed = await persistentDevice(tenant, "gw", clientId);
    const own = `tenants/${tenant}/devices/gw/sentinel`;
    // Its own subscription carries the sentinel whether or not the session kept the old one (a kick drops it).
    expect(await subscribeCodes(resumed, own)).toEqual([1]);
    const seen = await receivedBeforeSentinel(resumed, own, async () => {
      await publish(cmd(tenant, "sensor-2"), "live");
      await publish(own, "s");
    });
    expect(seen).toEqual([]);
    await resumed.endAsync();
  });
});

describe("MosquittoDynsecAdapter: a cut-off overtakes a device being provisioned", () => {
  // Pauses 200 times each change's duration, so that what a cut-off waits for shows above the
  // event-loop delays of a loaded machine (at 50, a 2 ms command's half pause was 50 ms).
  const PACING = 200;
  let dir: string;
  let adapter: MosquittoDynsecAdapter;
  const prefix = `overtake-${run}:`;
  const tenant = `o${run}`;
  const commands: Array<CommandEvent & { sentAt: number; ackedAt: number }> = [];
  let onCommand: (event: CommandEvent) => void = () => undefined;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "broker-overtake-"));
    adapter = new MosquittoDynsecAdapter({
      connection,
      ownerPrefix: prefix,
      pacing: PACING,
      onCommand: (event) => {
        const ackedAt = performance.now();
        commands.push({ ...event, sentAt: ackedAt - event.durationMs, ackedAt });
        onCommand(event);
      },
    });
  });
  afterAll(() => adapter.close());

  it("kicks a disabled device between a new device's commands, without waiting out their pause; the new device is still provisioned", async () => {
    const victim = device(tenant, "victim");
    await adapter.applyDevice(victim);
    const victimPair = await issueCertificate(dir, stack.broker.deviceCA, "victim", {
      subject: `/O=${tenant}/CN=victim`,
      usages: ["clientAuth"],
    });
    const live = await connectWithCertificate(stack.broker, victimPair);
    const dropped = closed(live);

    // The disable arrives as the new device's first command is answered: its pause begins.
    const newcomer = device(tenant, "newcomer");
    const newcomerOwner = `${prefix}${tenant}:newcomer`;
    let disabling: Promise<void> | undefined;
    onCommand = (event) => {
      if (event.owner !== newcomerOwner || disabling) return;
      disabling = adapter.applyDevice({ ...victim, enabled: false });
    };
    await adapter.applyDevice(newcomer);
    await disabling;
    await dropped;

    const victimOwner = `${prefix}${tenant}:victim`;
    const newcomerFirst = commands.findIndex((c) => c.owner === newcomerOwner);
    const kick = commands.findIndex((c, i) => i > newcomerFirst && c.owner === victimOwner);
    const newcomerRest = commands.findIndex((c, i) => i > newcomerFirst && c.owner === newcomerOwner);
    // The kick went before the rest of the new device's commands ...
    expect(kick).toBeGreaterThan(newcomerFirst);
    expect(kick).toBeLessThan(newcomerRest);
    // ... and did not wait for the pause after its first one (which was then paid after the kick).
    const first = commands[newcomerFirst] as (typeof commands)[number];
    const kicked = commands[kick] as (typeof commands)[number];
    expect(kicked.sentAt - first.ackedAt).toBeLessThan((first.durationMs * PACING) / 2);

    // Positive twin: the interrupted device was provisioned all the same and can use its subtree.
    const newcomerPair = await issueCertificate(dir, stack.broker.deviceCA, "newcomer", {
      subject: `/O=${tenant}/CN=newcomer`,
      usages: ["clientAuth"],
    });
    const served = await connectWithCertificate(stack.broker, newcomerPair);
    expect(await subscribeCodes(served, `tenants/${tenant}/devices/newcomer/#`)).toEqual([1]);
    await served.endAsync();
    const again = await connectWithCertificate(stack.broker, victimPair);
    expect(await subscribeCodes(again, `tenants/${tenant}/devices/victim/#`)).toEqual([REFUSED]);
    await again.endAsync();
  });

  it("answers a device it already holds at once, not behind the devices queued for it (a restart re-applies every device)", async () => {
    const held = device(tenant, "held");
    await adapter.applyDevice(held);
    const queued = ["q1", "q2", "q3"].map((name) => adapter.applyDevice(device(tenant, name)));
    const sentBefore = commands.length;
    const started = performance.now();
    await adapter.applyDevice({ ...held });
    const answeredMs = performance.now() - started;
    const stillQueued = await Promise.race([Promise.all(queued).then(() => false), Promise.resolve(true)]);
    // Each queued device costs two commands and their paced pauses (hundreds of ms here).
    expect(stillQueued).toBe(true);
    expect(answeredMs).toBeLessThan(50);
    await Promise.all(queued);
    // Twin: nothing was sent for the held device, three new devices got theirs.
    const sent = commands.slice(sentBefore).map((c) => c.owner);
    expect(sent).not.toContain(`${prefix}${tenant}:held`);
    expect(new Set(sent)).toEqual(new Set(["q1", "q2", "q3"].map((d) => `${prefix}${tenant}:${d}`)));
  });
});

describe("MosquittoDynsecAdapter during a broker outage", () => {
  it("reports BrokerSynced=False while the broker is down and heals by itself", async () => {
    const dir = await mkdtemp(join(tmpdir(), "broker-outage-"));
    const broker = await startMosquitto({
      stateDir: dir,
      deviceRootCA: stack.deviceRootCA,
      deviceCA: stack.broker.deviceCA,
    });
    const statuses: BrokerStatus[] = [];
    const adapter = new MosquittoDynsecAdapter({
      connection: adminConnection(broker),
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
