import { randomBytes } from "node:crypto";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { MqttClient } from "mqtt";
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from "vitest";
import { issueCertificate, type KeyPair } from "../../test/harness/pki.js";
import {
  BACKENDS,
  type Backend,
  type ConnectOptions,
  type DeviceLogin,
} from "../../test/support/backends.js";
import { eventually, uniqueName } from "../../test/support/kube.js";
import { eventuallyNotFound, kubectl } from "../../test/support/kubectl.js";
import { receivedBeforeSentinel, tlsFromFiles } from "../../test/support/mqtt.js";
import { closed, eventuallyConnects, LOGIN_REFUSED, REFUSED } from "../../test/support/nats-mqtt.js";
import {
  applyDevice,
  applyReadyTenant,
  deviceReadyReason,
  deviceTls,
  readyAtCurrentGeneration,
  secretData,
} from "../../test/support/operator.js";
import { NOT_AUTHORIZED, publishCode, subscribeCodes } from "./mqtt-probe.js";

/**
 * The isolation suite every broker backend must pass, run unchanged against each (Mosquitto, and a
 * 3-node NATS cluster) with the real operator in front: devices attack other tenants' topics,
 * retained messages, sessions and client ids, their siblings' subtrees, and cut-offs. Every case
 * speaks MQTT 3.1.1 (NATS speaks nothing else); a case that needs what a backend lacks (MQTT 5,
 * certificate devices) is skipped with the reason in its name. One broker and operator per backend,
 * fresh tenants per test.
 */

const PASSWORD = { authentication: { type: "password" } } as const;
/** A refusal at login, or a TLS alert (an untrusted or revoked certificate). */
const MQTT311 = "the backend speaks MQTT 3.1.1 only";
/** What a skipped case's name says about why it is skipped on this backend. */
const unless = (capable: boolean, reason: string) => (capable ? "" : ` [skipped: ${reason}]`);
const REFUSED_AT_LOGIN = new RegExp(`${LOGIN_REFUSED.source}|revoked|alert|certificate`, "i");

/** `promise`, or a failure naming `what` after `ms`: a step that never settles fails with its name. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The SUBACK codes, or none when the server closes the connection first (a cut-off racing the SUBSCRIBE). */
function subscribeOrClosed(client: MqttClient, filter: string): Promise<number[]> {
  return Promise.race([subscribeCodes(client, filter), closed(client).then(() => [])]);
}

describe.each(BACKENDS)("shared isolation suite on $kind", (fixture) => {
  let backend: Backend;
  let dir: string;
  /** Every tenant this backend's tests made; `pending` those of the running test. */
  const tenants: string[] = [];
  let pending: string[] = [];
  const open: MqttClient[] = [];
  const track = (client: MqttClient) => {
    open.push(client);
    return client;
  };
  const { mqtt5 } = fixture.capabilities;

  beforeAll(async () => {
    const started = performance.now();
    dir = await mkdtemp(join(tmpdir(), "shared-isolation-"));
    backend = await fixture.start();
    console.log(
      `[shared-isolation] ${fixture.kind} with operator up in ${(performance.now() - started).toFixed(0)} ms`,
    );
  });
  // Each test's tenants go when it ends, so the broker cleans them up while the next test runs.
  afterEach(async () => {
    const done = pending;
    pending = [];
    await Promise.all(open.splice(0).map((c) => c.endAsync(true).catch(() => undefined)));
    if (done.length > 0) await kubectl(["delete", "tenant", ...done, "--ignore-not-found", "--wait=false"]);
  });
  afterAll(async () => {
    if (!backend) return;
    try {
      // Deleted while this backend's operator runs, so its finalizers go and the next backend's operator inherits nothing.
      await Promise.all(tenants.map((t) => eventuallyNotFound(["tenant", t], 180_000)));
    } finally {
      await backend.stop();
    }
  });

  async function newTenant(prefix: string): Promise<string> {
    const name = uniqueName(prefix);
    tenants.push(name);
    pending.push(name);
    await applyReadyTenant(name);
    return name;
  }

  /** A password Device (the credentials every backend serves), Ready at its current spec. */
  async function passwordDevice(
    tenant: string,
    name: string,
    spec: Record<string, unknown> = {},
  ): Promise<DeviceLogin> {
    await applyDevice(tenant, name, { ...PASSWORD, ...spec });
    await readyAtCurrentGeneration(tenant, name);
    const { username = "", password = "" } = await secretData(tenant, `${name}-mqtt`);
    return { type: "password", clientId: `${tenant}/${name}`, username, password };
  }

  async function certificateDevice(
    tenant: string,
    name: string,
    spec: Record<string, unknown> = {},
  ): Promise<DeviceLogin> {
    await applyDevice(tenant, name, spec);
    const status = await readyAtCurrentGeneration(tenant, name);
    return {
      type: "x509",
      clientId: `${tenant}/${name}`,
      username: status.username ?? "",
      tls: await deviceTls(tenant, name),
    };
  }

  /** A Device that logs in with `credentials`. */
  function newDevice(
    credentials: DeviceLogin["type"],
    tenant: string,
    name: string,
    spec: Record<string, unknown> = {},
  ): Promise<DeviceLogin> {
    return credentials === "password"
      ? passwordDevice(tenant, name, spec)
      : certificateDevice(tenant, name, spec);
  }

  /** A login that must work: a new account's first logins may be closed once while its streams are made. */
  async function connect(login: DeviceLogin, options: ConnectOptions = {}): Promise<MqttClient> {
    return track(await eventuallyConnects(() => backend.connect(login, options)));
  }

  /** The login is refused, or it connects and may not even subscribe in `subtree` (a Mosquitto certificate). */
  async function cutOff(login: DeviceLogin, subtree: string, options: ConnectOptions = {}): Promise<boolean> {
    let client: MqttClient;
    try {
      client = await backend.connect(login, options);
    } catch (error) {
      if (REFUSED_AT_LOGIN.test((error as Error).message)) return true;
      throw error;
    }
    try {
      const codes = await subscribeOrClosed(client, `${subtree}/#`);
      return codes.length === 0 || codes[0] === REFUSED;
    } finally {
      await client.endAsync(true);
    }
  }

  /** `client` subscribes to `topic` and gets what `send` publishes there (positive twins). */
  async function delivered(
    client: MqttClient,
    topic: string,
    send: () => Promise<unknown>,
  ): Promise<string[]> {
    // Listening before the SUBSCRIBE: retained messages follow the SUBACK at once.
    const received: string[] = [];
    const onMessage = (t: string, p: Buffer) => received.push(`${t}=${p.toString()}`);
    client.on("message", onMessage);
    try {
      expect(await subscribeCodes(client, topic)).toEqual([1]);
      await send();
      return await eventually(
        `a message on ${topic}`,
        async () => (received.length > 0 ? received : undefined),
        15_000,
      );
    } finally {
      client.off("message", onMessage);
    }
  }

  it("refuses another tenant's topics to subscribe (exact, #, +, $share/, $-prefixed) and to publish, and serves the tenant's own (I2)", async () => {
    const [a, b] = await Promise.all([newTenant("ia"), newTenant("ib")]);
    const [wide, victim] = await Promise.all([
      passwordDevice(a, "wide", { topics: { publish: ["#"], subscribe: ["#"] } }),
      passwordDevice(b, "sensor"),
    ]);
    const [attacker, target] = await Promise.all([connect(wide), connect(victim)]);
    const [rootA, rootB] = [`tenants/${a}`, `tenants/${b}`];
    const ownB = `${rootB}/devices/sensor`;
    for (const filter of [
      `${ownB}/cmd`,
      `${ownB}/#`,
      `${rootB}/#`,
      `${rootB}/+/sensor/#`,
      "tenants/+/devices/sensor/#",
      "tenants/#",
      "#",
      "+/#",
      "+/+/devices/#",
      `$share/g/${rootB}/#`,
      `$share/g/${ownB}/cmd`,
      "$share/g/#",
      "$SYS/#",
      "$SYS/broker/clients/connected",
      "$CONTROL/#",
      "$MQTT/#",
    ])
      expect([filter, await subscribeCodes(attacker, filter)]).toEqual([filter, [REFUSED]]);
    // Publishes into B's tree are dropped: B's device sees only its own message before its sentinel.
    expect(await subscribeCodes(target, `${ownB}/#`)).toEqual([1]);
    const seenByB = await receivedBeforeSentinel(target, `${ownB}/sentinel`, async () => {
      for (const topic of [`${ownB}/cmd`, `${rootB}/broadcast`, `$share/g/${ownB}/cmd`])
        await attacker.publishAsync(topic, "from-a", { qos: 1 });
      await target.publishAsync(`${ownB}/own`, "from-b", { qos: 1 });
      await target.publishAsync(`${ownB}/sentinel`, "s", { qos: 1 });
    });
    expect(seenByB).toEqual([`${ownB}/own=from-b`]);
    // Positive twin: its own tenant's tree, subscribed with a wildcard, delivers its own publish.
    expect(
      await delivered(attacker, `${rootA}/#`, () =>
        attacker.publishAsync(`${rootA}/devices/x/t`, "21", { qos: 1 }),
      ),
    ).toEqual([`${rootA}/devices/x/t=21`]);
  });

  it("refuses a sibling's subtree to a device with the default grant, and serves it to a device granted it (I2)", async () => {
    const a = await newTenant("is");
    const [plain, sibling, granted] = await Promise.all([
      passwordDevice(a, "plain"),
      passwordDevice(a, "sibling"),
      passwordDevice(a, "reader", { topics: { publish: [], subscribe: ["devices/sibling/#"] } }),
    ]);
    const root = `tenants/${a}/devices`;
    const [p, s, r] = await Promise.all([connect(plain), connect(sibling), connect(granted)]);
    for (const filter of [
      `${root}/sibling/#`,
      `${root}/sibling/state`,
      `${root}/+/state`,
      `${root}/#`,
      `tenants/${a}/#`,
    ])
      expect([filter, await subscribeCodes(p, filter)]).toEqual([filter, [REFUSED]]);
    expect(await subscribeCodes(s, `${root}/sibling/#`)).toEqual([1]);
    const seenBySibling = await receivedBeforeSentinel(s, `${root}/sibling/sentinel`, async () => {
      await p.publishAsync(`${root}/sibling/cmd`, "from-plain", { qos: 1 });
      await s.publishAsync(`${root}/sibling/sentinel`, "s", { qos: 1 });
    });
    expect(seenBySibling).toEqual([]);
    // Positive twin: the device granted the sibling's subtree receives what the sibling publishes there.
    expect(
      await delivered(r, `${root}/sibling/#`, () =>
        s.publishAsync(`${root}/sibling/state`, "on", { qos: 1 }),
      ),
    ).toEqual([`${root}/sibling/state=on`]);
  });

  it("never delivers another tenant's retained messages, and delivers the tenant's own (I2)", async () => {
    const [a, b] = await Promise.all([newTenant("ra"), newTenant("rb")]);
    const [writer, readerB, readerA] = await Promise.all([
      passwordDevice(b, "writer"),
      passwordDevice(b, "reader", { topics: { publish: [], subscribe: ["devices/writer/#"] } }),
      passwordDevice(a, "reader", { topics: { publish: [], subscribe: ["#"] } }),
    ]);
    const state = `tenants/${b}/devices/writer/state`;
    const w = await connect(writer);
    await w.publishAsync(state, "secret", { qos: 1, retain: true });
    await w.endAsync(true);
    const received: string[] = [];
    const thief = await connect(readerA, { received });
    for (const filter of [state, `tenants/${b}/#`, "tenants/+/devices/writer/state", "#"])
      expect([filter, await subscribeCodes(thief, filter)]).toEqual([filter, [REFUSED]]);
    // Its own tenant's tree (granted) holds nothing of B's: the sentinel, published after, comes first.
    const own = `tenants/${a}/devices/reader/sentinel`;
    expect(await subscribeCodes(thief, `tenants/${a}/#`)).toEqual([1]);
    const sentinelIn = new Promise<void>((resolve) => thief.on("message", (t) => t === own && resolve()));
    const sender = await connect(
      await passwordDevice(a, "sender", { topics: { publish: ["#"], subscribe: [] } }),
    );
    await sender.publishAsync(own, "s", { qos: 1 });
    await sentinelIn;
    expect(received.filter((m) => !m.startsWith(`${own}=`))).toEqual([]);
    // Positive twin: B's own reader gets the retained message.
    const rb = await connect(readerB);
    expect(await delivered(rb, state, async () => undefined)).toEqual([`${state}=secret`]);
  });

  for (const credentials of ["password", "x509"] as const) {
    it.each([
      ["a device of another tenant", "other"],
      ["a sibling device of the same tenant", "sibling"],
    ] as const)(`%s that uses a ${credentials} device's client id neither takes over its session nor knocks it off (I1, I4)`, async (_, whose) => {
      const a = await newTenant("ca");
      const thiefTenant = whose === "other" ? await newTenant("cb") : a;
      const [victimLogin, thiefLogin, commanderLogin] = await Promise.all([
        newDevice(credentials, a, "victim"),
        newDevice(credentials, thiefTenant, "thief"),
        passwordDevice(a, "commander", { topics: { publish: ["devices/+/cmd"], subscribe: [] } }),
      ]);
      const cmd = `tenants/${a}/devices/victim/cmd`;
      const thiefOwn = `tenants/${thiefTenant}/devices/thief/sentinel`;
      const commander = await connect(commanderLogin);
      const victimReceived: string[] = [];
      const victim = await connect(victimLogin, { clean: false, received: victimReceived });
      expect(await subscribeCodes(victim, cmd)).toEqual([1]);

      /** The thief with the victim's client id and a kept session: refused, or connected as itself and given nothing of the victim's. */
      async function thiefGetsNothing(): Promise<void> {
        const thief = await backend
          .connect(thiefLogin, { clientId: victimLogin.clientId, clean: false })
          .catch((error: Error) => {
            expect(error.message).toMatch(LOGIN_REFUSED);
            return undefined;
          });
        if (!thief) return;
        expect(await subscribeCodes(thief, thiefOwn)).toEqual([1]);
        expect(
          await receivedBeforeSentinel(thief, thiefOwn, () => thief.publishAsync(thiefOwn, "s", { qos: 1 })),
        ).toEqual([]);
        await thief.endAsync();
      }

      await thiefGetsNothing();
      // The victim kept its connection and its session: a command still reaches it.
      expect(victim.connected).toBe(true);
      await commander.publishAsync(cmd, "online", { qos: 1 });
      await eventually("the victim's command", async () =>
        victimReceived.includes(`${cmd}=online`) ? true : undefined,
      );
      expect(victim.connected).toBe(true);

      // While the victim is away with a message queued: the thief resumes nothing.
      await victim.endAsync();
      await commander.publishAsync(cmd, "queued while offline", { qos: 1 });
      await thiefGetsNothing();
      // Positive twin: the victim's own session kept the message for it.
      const back: string[] = [];
      await connect(victimLogin, { clean: false, received: back });
      await eventually("the queued command", async () =>
        back.includes(`${cmd}=queued while offline`) ? true : undefined,
      );
    });

    it.each([
      ["while connected (the live subscription stops)", "live"],
      ["while its session waits offline (the resumed session gets nothing beyond the new grant)", "offline"],
    ] as const)(`narrowing a ${credentials} device's topics %s stops delivery (I2)`, async (_, when) => {
      const a = await newTenant("na");
      const root = `tenants/${a}/devices`;
      const wide = { topics: { publish: ["devices/gw/#"], subscribe: ["devices/#"] } };
      const [gwLogin, , commanderLogin] = await Promise.all([
        newDevice(credentials, a, "gw", wide),
        passwordDevice(a, "neighbour"),
        passwordDevice(a, "commander", { topics: { publish: ["devices/+/cmd"], subscribe: [] } }),
      ]);
      const commander = await connect(commanderLogin);
      const neighbourCmd = `${root}/neighbour/cmd`;
      const own = `${root}/gw/sentinel`;
      const session = await connect(gwLogin, { clean: false });
      // The wide grant really delivered a neighbour's messages before it was narrowed.
      expect(
        await delivered(session, `${root}/#`, () =>
          commander.publishAsync(neighbourCmd, "while wide", { qos: 1 }),
        ),
      ).toEqual([`${neighbourCmd}=while wide`]);

      const dropped = closed(session);
      if (when === "offline") await session.endAsync();
      await applyDevice(a, "gw", credentials === "password" ? PASSWORD : {});
      await readyAtCurrentGeneration(a, "gw");
      // Both backends drop a live connection whose grant narrowed: its old subscriptions would deliver on.
      await within(dropped, 30_000, "the live connection dropped");
      await commander.publishAsync(neighbourCmd, "queued while offline", { qos: 1 });

      const received: string[] = [];
      const resumed = await connect(gwLogin, { clean: false, received });
      // Its own subscription carries the sentinel whether or not the session kept the old one.
      expect(await subscribeCodes(resumed, own)).toEqual([1]);
      await receivedBeforeSentinel(resumed, own, async () => {
        await commander.publishAsync(neighbourCmd, "live", { qos: 1 });
        await resumed.publishAsync(own, "s", { qos: 1 });
      });
      expect(received.filter((m) => !m.startsWith(`${own}=`))).toEqual([]);
      expect(await subscribeCodes(resumed, `${root}/#`)).toEqual([REFUSED]);
    });
  }

  it("disabling a device drops its live connection and refuses its next login; enabled again, it logs in (I4)", async () => {
    const a = await newTenant("da");
    const login = await passwordDevice(a, "meter");
    const subtree = `tenants/${a}/devices/meter`;
    const dropped = closed(await connect(login));
    await applyDevice(a, "meter", { ...PASSWORD, enabled: false });
    await deviceReadyReason(a, "meter", "Disabled");
    await within(dropped, 30_000, "the live connection dropped");
    for (let node = 0; node < backend.nodes; node++)
      expect(await cutOff(login, subtree, { node })).toBe(true);
    await applyDevice(a, "meter", { ...PASSWORD, enabled: true });
    await readyAtCurrentGeneration(a, "meter");
    const again = await connect(login, { node: backend.nodes - 1 });
    expect(await subscribeCodes(again, `${subtree}/#`)).toEqual([1]);
  });

  it("deleting a device drops its live connection and refuses its next login; its sibling stays (I4)", async () => {
    const a = await newTenant("dd");
    const [login, siblingLogin] = await Promise.all([passwordDevice(a, "gone"), passwordDevice(a, "stays")]);
    const sibling = await connect(siblingLogin);
    const dropped = closed(await connect(login));
    expect((await kubectl(["-n", a, "delete", "device", "gone", "--wait=false"])).ok).toBe(true);
    await within(dropped, 30_000, "the live connection dropped");
    await eventuallyNotFound(["-n", a, "device", "gone"]);
    expect(await cutOff(login, `tenants/${a}/devices/gone`)).toBe(true);
    expect(sibling.connected).toBe(true);
    expect(await subscribeCodes(sibling, `tenants/${a}/devices/stays/#`)).toEqual([1]);
  });

  it("suspending a tenant drops every device's live connection and refuses their logins; resumed, they log in (I4)", async () => {
    const a = await newTenant("su");
    const logins = await Promise.all([passwordDevice(a, "one"), passwordDevice(a, "two")]);
    const clients = await Promise.all(logins.map((login, node) => connect(login, { node })));
    const drops = clients.map(closed);
    await applyReadyTenant(a, { suspended: true });
    await within(Promise.all(drops), 30_000, "the suspended tenant's live connections dropped");
    for (const [i, login] of logins.entries())
      expect(await cutOff(login, `tenants/${a}/devices/${["one", "two"][i]}`)).toBe(true);
    await applyReadyTenant(a, { suspended: false });
    const back = await eventually(
      "the resumed tenant's device served",
      async () => {
        const client = await backend.connect(logins[0] as DeviceLogin).catch(() => undefined);
        if (!client) return undefined;
        if ((await subscribeOrClosed(client, `tenants/${a}/devices/one/#`))[0] === 1) return track(client);
        await client.endAsync(true);
        return undefined;
      },
      60_000,
    );
    expect(back.connected).toBe(true);
  });

  it("deleting a tenant drops its devices' live connections and refuses their logins; another tenant's device stays (I4)", async () => {
    const [doomed, other] = await Promise.all([newTenant("dt"), newTenant("ok")]);
    const [login, otherLogin] = await Promise.all([
      passwordDevice(doomed, "meter"),
      passwordDevice(other, "meter"),
    ]);
    const survivor = await connect(otherLogin);
    const dropped = closed(await connect(login, { node: backend.nodes - 1 }));
    expect((await kubectl(["delete", "tenant", doomed, "--wait=false"])).ok).toBe(true);
    await within(dropped, 30_000, "the live connection dropped");
    await eventuallyNotFound(["tenant", doomed], 120_000);
    expect(await cutOff(login, `tenants/${doomed}/devices/meter`)).toBe(true);
    expect(survivor.connected).toBe(true);
    expect(await subscribeCodes(survivor, `tenants/${other}/devices/meter/#`)).toEqual([1]);
  });

  it("refuses a wrong password and another device's password, and serves the device's own (I1)", async () => {
    const [a, b] = await Promise.all([newTenant("pa"), newTenant("pb")]);
    const [login, sibling, foreign] = await Promise.all([
      passwordDevice(a, "meter"),
      passwordDevice(a, "sibling"),
      passwordDevice(b, "meter"),
    ]);
    if (login.type !== "password" || sibling.type !== "password" || foreign.type !== "password")
      throw new Error("password devices");
    for (const password of ["wrong", "", sibling.password, foreign.password])
      await expect(backend.connect({ ...login, password })).rejects.toThrow(LOGIN_REFUSED);
    const own = await connect(login);
    expect(await subscribeCodes(own, `tenants/${a}/devices/meter/#`)).toEqual([1]);
  });

  it("a rotated password drops the live connection and refuses the old password; the new one is served (I4)", async () => {
    const a = await newTenant("ro");
    const before = await passwordDevice(a, "meter");
    const dropped = closed(await connect(before));
    expect(
      (
        await kubectl([
          "-n",
          a,
          "annotate",
          "device",
          "meter",
          "iot.tenant-operator.io/rotate-password=shared-suite",
        ])
      ).ok,
    ).toBe(true);
    await within(dropped, 30_000, "the live connection dropped");
    const after = await eventually("password replaced", async () => {
      const data = await secretData(a, "meter-mqtt");
      return before.type === "password" && data.password !== before.password ? data : undefined;
    });
    await expect(backend.connect(before)).rejects.toThrow(LOGIN_REFUSED);
    const fresh = await connect({
      type: "password",
      clientId: before.clientId,
      username: after.username ?? "",
      password: after.password ?? "",
    });
    expect(await subscribeCodes(fresh, `tenants/${a}/devices/meter/#`)).toEqual([1]);
  });

  describe("certificate devices", () => {
    /** A tenant's CA key pair as files: what an attacker who got hold of it could sign with. */
    async function tenantCaFiles(tenant: string): Promise<KeyPair> {
      const data = await secretData("iot-system", `tenant-${tenant}-ca`);
      const certFile = join(dir, `${tenant}-ca.crt`);
      const keyFile = join(dir, `${tenant}-ca.key`);
      await writeFile(certFile, data["tls.crt"] ?? "");
      await writeFile(keyFile, data["tls.key"] ?? "");
      // A device sends its CA's certificate after its own.
      return { certFile, keyFile, chainFile: certFile };
    }

    /** A certificate `ca` signed for `subject`, presented with the client id of the identity it claims. */
    async function forged(ca: KeyPair, subject: string, clientId: string): Promise<DeviceLogin> {
      const leaf = await issueCertificate(dir, ca, randomBytes(6).toString("hex"), {
        subject,
        usages: ["clientAuth"],
      });
      return { type: "x509", clientId, username: subject, tls: await tlsFromFiles(leaf) };
    }

    it(`refuses certificates for another tenant's device from the root directly and from the tenant's own CA, and serves its own CA's (I3)`, async () => {
      const [a, b] = await Promise.all([newTenant("xa"), newTenant("xb")]);
      await Promise.all([certificateDevice(a, "sensor-1"), certificateDevice(b, "sensor-1")]);
      const victim = `tenants/${b}/devices/sensor-1`;
      const caA = await tenantCaFiles(a);
      for (const [what, ca, subject] of [
        ["the root CA, B's subject", inject("stack").deviceRootCA, `/O=${b}/CN=sensor-1`],
        ["A's CA, B's subject", caA, `/O=${b}/CN=sensor-1`],
        ["A's CA, B's subject in the other order", caA, `/CN=sensor-1/O=${b}`],
        ["A's CA, both organizations", caA, `/O=${a}/O=${b}/CN=sensor-1`],
        ["A's CA, B's organization in the CN", caA, `/O=${a}/CN=sensor-1,O=${b}`],
      ] as const)
        expect([what, await cutOff(await forged(ca, subject, `${b}/sensor-1`), victim)]).toEqual([
          what,
          true,
        ]);
      // Positive twin: A's CA with A's own subject is A's device.
      const own = await connect(await forged(caA, `/O=${a}/CN=sensor-1`, `${a}/sensor-1`));
      expect(await subscribeCodes(own, `tenants/${a}/devices/sensor-1/#`)).toEqual([1]);
    });

    it(`refuses a deleted device's revoked certificate and serves a live one (I4)`, async () => {
      const a = await newTenant("xr");
      const [gone, stays] = await Promise.all([certificateDevice(a, "gone"), certificateDevice(a, "stays")]);
      const dropped = closed(await connect(gone));
      expect((await kubectl(["-n", a, "delete", "device", "gone", "--wait=false"])).ok).toBe(true);
      await within(dropped, 30_000, "the live connection dropped");
      expect(await cutOff(gone, `tenants/${a}/devices/gone`)).toBe(true);
      // Then the tenant's CRL lists it, and the broker refuses the certificate as revoked.
      await eventually(
        "certificate refused as revoked",
        () =>
          backend.connect(gone).then(
            async (client) => {
              await client.endAsync(true);
              return undefined;
            },
            (error: Error) => (backend.revokedCertificateRefusal.test(error.message) ? true : undefined),
          ),
        60_000,
      );
      const live = await connect(stays);
      expect(await subscribeCodes(live, `tenants/${a}/devices/stays/#`)).toEqual([1]);
    });
  });

  describe("MQTT 5", () => {
    it.skipIf(!mqtt5)(
      `answers a publish outside the grant with PUBACK 135 and one inside with success${unless(mqtt5, MQTT311)}`,
      async () => {
        const [a, b] = await Promise.all([newTenant("m5"), newTenant("m6")]);
        const login = await passwordDevice(a, "meter");
        const client = await connect(login, { mqtt5: true });
        expect(await publishCode(client, `tenants/${b}/devices/meter/cmd`, "x")).toBe(NOT_AUTHORIZED);
        expect(await publishCode(client, `tenants/${a}/devices/x/cmd`, "x")).toBe(NOT_AUTHORIZED);
        expect(await publishCode(client, `tenants/${a}/devices/meter/t`, "x")).toBeLessThan(128);
      },
    );

    it.skipIf(!mqtt5)(
      `serves a shared subscription in the device's own subtree and refuses one in another tenant's${unless(mqtt5, `shared subscriptions are MQTT 5; ${MQTT311}`)}`,
      async () => {
        const [a, b] = await Promise.all([newTenant("s5"), newTenant("s6")]);
        const login = await passwordDevice(a, "meter");
        await passwordDevice(b, "meter");
        const client = await connect(login, { mqtt5: true });
        expect(await subscribeCodes(client, `$share/g/tenants/${b}/devices/meter/#`)).toEqual([
          NOT_AUTHORIZED,
        ]);
        expect(
          await delivered(client, `$share/g/tenants/${a}/devices/meter/#`, () =>
            client.publishAsync(`tenants/${a}/devices/meter/t`, "own", { qos: 1 }),
          ),
        ).toEqual([`tenants/${a}/devices/meter/t=own`]);
      },
    );
  });
});
