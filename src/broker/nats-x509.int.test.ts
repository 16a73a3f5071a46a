import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { connect, jwtAuthenticator } from "@nats-io/transport-node";
import type { MqttClient } from "mqtt";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { type NatsCluster, startNatsCluster } from "../../test/harness/nats.js";
import { createCA, issueCertificate, type KeyPair } from "../../test/harness/pki.js";
import { adminKubeConfig } from "../../test/support/kube.js";
import {
  closed,
  connectNatsMqtt,
  eventuallyConnects,
  LOGIN_REFUSED,
  REFUSED,
} from "../../test/support/nats-mqtt.js";
import { OPERATOR_NAMESPACE } from "../api/group.js";
import { SecretAccountKeyStore } from "../controllers/nats-keys.js";
import { describeCertificate } from "../desired/device.js";
import { newCaKey, signTenantCa } from "../pki/tenant-ca.js";
import { KubeClient } from "../runtime/kube-client.js";
import { subscribeCodes } from "../verify/mqtt-probe.js";
import type { BrokerDevice } from "./adapter.js";
import { NatsAccountsAdapter } from "./nats-accounts.js";
import { bootstrapKeys, bootstrapUserJwt } from "./nats-claims.js";
import type { TenantTrust } from "./nats-login.js";

/**
 * x509 devices on NATS: the MQTT listeners verify a client certificate when one is presented
 * (`verify: optional`, against the device root), and the operator's auth callout accepts it only
 * from the device's own tenant CA, for a served device, unrevoked. Each refusal is checked for the
 * callout's reason, each with its positive twin.
 */

const stack = inject("stack");
const run = Date.now().toString(36);

interface DeviceCertificate {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly serialNumber: string;
}

function x509Device(tenant: string, name: string, extra: Partial<BrokerDevice> = {}): BrokerDevice {
  return {
    tenant,
    device: name,
    topicRoot: `tenants/${tenant}`,
    credentials: { type: "x509", username: `CN=${name},O=${tenant}` },
    enabled: true,
    suspended: false,
    ...extra,
  };
}

describe("x509 devices on a real 3-node NATS cluster", () => {
  let cluster: NatsCluster;
  let adapter: NatsAccountsAdapter;
  /** An operator replica's adapter: the callout, which answers once it has been given devices. */
  let newAdapter: () => NatsAccountsAdapter;
  let ca: Buffer;
  let dir: string;
  const trust = new Map<string, { caCertificatePem: string; revokedSerials: Set<string> }>();
  const tenantCAs = new Map<string, KeyPair>();
  /** The callout's refusals as it logs them: client id and reason. */
  const refusals: { clientId?: string; reason: string }[] = [];

  /** The tenant's CA as the operator signs it (its key under the device root), known to the callout. */
  async function tenantCA(tenant: string): Promise<KeyPair> {
    const known = tenantCAs.get(tenant);
    if (known) return known;
    const [rootCertificatePem, rootKeyPem] = await Promise.all(
      [stack.deviceRootCA.certFile, stack.deviceRootCA.keyFile].map((f) => readFile(f, "utf8")),
    );
    const keyPem = newCaKey();
    const certificatePem = await signTenantCa({
      tenant,
      keyPem,
      root: { certificatePem: rootCertificatePem ?? "", keyPem: rootKeyPem ?? "" },
      nowMs: Date.now(),
    });
    const pair = { certFile: join(dir, `${tenant}-ca.crt`), keyFile: join(dir, `${tenant}-ca.key`) };
    await Promise.all([writeFile(pair.certFile, certificatePem), writeFile(pair.keyFile, keyPem)]);
    const withChain = { ...pair, chainFile: pair.certFile };
    tenantCAs.set(tenant, withChain);
    trust.set(tenant, { caCertificatePem: certificatePem, revokedSerials: new Set() });
    return withChain;
  }

  let issued = 0;
  /** A client certificate `subject` (openssl -subj form) signed by `signer`, carrying its chain. */
  async function certificate(signer: KeyPair, subject: string): Promise<DeviceCertificate> {
    const pair = await issueCertificate(dir, signer, `device-${issued++}`, {
      subject,
      usages: ["clientAuth"],
    });
    const [cert, key] = await Promise.all([readFile(pair.certFile), readFile(pair.keyFile)]);
    return { cert, key, serialNumber: describeCertificate(cert.toString()).serialNumber };
  }

  /** A certificate for `d` from its tenant's CA. */
  async function ownCertificate(d: BrokerDevice): Promise<DeviceCertificate> {
    return certificate(await tenantCA(d.tenant), `/O=${d.tenant}/CN=${d.device}`);
  }

  function connectWith(
    login: { certificate?: DeviceCertificate; username?: string; password?: string },
    clientId: string,
    node = 0,
  ): Promise<MqttClient> {
    const port = cluster.nodes[node]?.mqttPort ?? 0;
    const { certificate: presented, ...credentials } = login;
    return connectNatsMqtt({
      host: cluster.host,
      port,
      ca,
      clientId,
      ...credentials,
      ...(presented ? { cert: presented.cert, key: presented.key } : {}),
    });
  }

  const clientIdOf = (d: BrokerDevice) => `${d.tenant}/${d.device}`;

  /** Expects the login to be refused, and returns the callout's reason for it. */
  async function refusalReason(login: Promise<MqttClient>, clientId: string): Promise<string> {
    const before = refusals.length;
    await expect(login).rejects.toThrow(LOGIN_REFUSED);
    const deadline = Date.now() + 10_000;
    for (;;) {
      const found = refusals.slice(before).find((r) => r.clientId === clientId);
      if (found) return found.reason;
      if (Date.now() > deadline) throw new Error(`no refusal of ${clientId} logged by the callout`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  beforeAll(async () => {
    dir = join(stack.stateDir, `nats-x509-${run}`);
    await mkdir(dir, { recursive: true });
    cluster = await startNatsCluster({ stateDir: dir, deviceRootCA: stack.deviceRootCA });
    ca = await readFile(cluster.caFile);
    const logger = pino(
      { level: "info" },
      {
        write(line: string) {
          const entry = JSON.parse(line) as { msg?: string; clientId?: string; reason?: string };
          if (entry.msg === "login refused")
            refusals.push({
              reason: entry.reason ?? "",
              ...(entry.clientId ? { clientId: entry.clientId } : {}),
            });
        },
      },
    );
    newAdapter = () =>
      new NatsAccountsAdapter({
        servers: cluster.urls,
        clusterSize: cluster.nodes.length,
        keys: bootstrapKeys(cluster.seeds),
        accountKeys: new SecretAccountKeyStore(new KubeClient(adminKubeConfig()), OPERATOR_NAMESPACE),
        tenantLimits: () => ({
          connections: 10,
          subscriptions: 100,
          payloadBytes: 64 * 1024,
          jetStreamBytes: 64 << 20,
        }),
        tenantExists: () => true,
        tenantTrust: (tenant): TenantTrust | undefined => trust.get(tenant),
        logger,
      });
    adapter = newAdapter();
  });
  afterAll(async () => {
    await adapter?.close();
    await cluster?.stop();
  });

  it("logs in a device with a certificate from its tenant's CA, as <tenant>/<device> with exactly its grant; refuses it without the certificate or with another client id", async () => {
    const tenant = `a${run}`;
    const d = x509Device(tenant, "sensor-1");
    await adapter.applyDevice(d);
    const own = await ownCertificate(d);
    expect(
      await refusalReason(
        connectWith({ username: d.credentials.username, password: "x" }, clientIdOf(d)),
        clientIdOf(d),
      ),
    ).toBe("unknown user");
    expect(await refusalReason(connectWith({}, clientIdOf(d), 1), clientIdOf(d))).toBe("unknown user");
    expect(
      await refusalReason(connectWith({ certificate: own }, `${tenant}/sensor-2`), `${tenant}/sensor-2`),
    ).toBe("the MQTT client id must be <tenant>/<device>");
    const client = await eventuallyConnects(() => connectWith({ certificate: own }, clientIdOf(d), 2));
    try {
      expect(await subscribeCodes(client, `tenants/${tenant}/devices/sensor-1/#`)).toEqual([1]);
      expect(await subscribeCodes(client, `tenants/${tenant}/#`)).toEqual([REFUSED]);
      expect(await subscribeCodes(client, "#")).toEqual([REFUSED]);
    } finally {
      await client.endAsync(true);
    }
  });

  it("refuses a certificate the root CA signed directly, even with the device's subject (I3)", async () => {
    const tenant = `r${run}`;
    const d = x509Device(tenant, "sensor-1");
    await adapter.applyDevice(d);
    await tenantCA(tenant);
    const rootSigned = await certificate(stack.deviceRootCA, `/O=${tenant}/CN=sensor-1`);
    expect(await refusalReason(connectWith({ certificate: rootSigned }, clientIdOf(d)), clientIdOf(d))).toBe(
      "the certificate is not from the device's tenant CA",
    );
    // Positive twin: the same subject from the tenant's CA.
    const own = await eventuallyConnects(async () =>
      connectWith({ certificate: await ownCertificate(d) }, clientIdOf(d), 1),
    );
    await own.endAsync(true);
  });

  it("refuses a certificate tenant A's CA signed with tenant B's subject (I3)", async () => {
    const [a, b] = [`ca${run}`, `cb${run}`];
    const victim = x509Device(b, "sensor-1");
    await Promise.all([adapter.applyDevice(x509Device(a, "sensor-1")), adapter.applyDevice(victim)]);
    const forged = await certificate(await tenantCA(a), `/O=${b}/CN=sensor-1`);
    expect(
      await refusalReason(connectWith({ certificate: forged }, clientIdOf(victim)), clientIdOf(victim)),
    ).toBe("the certificate is not from the device's tenant CA");
    // Positive twin: B's device with B's own certificate.
    const own = await eventuallyConnects(async () =>
      connectWith({ certificate: await ownCertificate(victim) }, clientIdOf(victim), 1),
    );
    await own.endAsync(true);
  });

  it("drops a live connection on every node when its certificate is revoked, and refuses that certificate next (I4)", async () => {
    const tenant = `v${run}`;
    const d = x509Device(tenant, "sensor-1");
    await adapter.applyDevice(d);
    const [old, renewed] = [await ownCertificate(d), await ownCertificate(d)];
    const live = await eventuallyConnects(() => connectWith({ certificate: old }, clientIdOf(d), 2));
    const gone = closed(live);
    // As the revocation controller reports it, before the tenant's CRL reaches the trust cache.
    const started = performance.now();
    await adapter.certificatesRevoked(tenant, [old.serialNumber]);
    await gone;
    console.log(
      `[nats-x509] revoked certificate's connection dropped after ${(performance.now() - started).toFixed(0)} ms`,
    );
    expect(await refusalReason(connectWith({ certificate: old }, clientIdOf(d), 1), clientIdOf(d))).toBe(
      "the certificate is revoked",
    );
    // Positive twin: the device's renewed certificate logs in, and a later revocation of another
    // serial leaves it connected.
    const current = await eventuallyConnects(() => connectWith({ certificate: renewed }, clientIdOf(d), 0));
    try {
      await adapter.certificatesRevoked(tenant, [old.serialNumber, "0badc0de"]);
      expect(current.connected).toBe(true);
      expect(await subscribeCodes(current, `tenants/${tenant}/devices/sensor-1/#`)).toEqual([1]);
    } finally {
      await current.endAsync(true);
    }
  });

  it("drops a disabled or deleted x509 device on every node and refuses its certificate next (I4)", async () => {
    const tenant = `d${run}`;
    const d = x509Device(tenant, "sensor-1");
    await adapter.applyDevice(d);
    const own = await ownCertificate(d);
    const live = await eventuallyConnects(() => connectWith({ certificate: own }, clientIdOf(d), 1));
    const disabled = closed(live);
    await adapter.applyDevice({ ...d, enabled: false });
    expect(await disabled).toBeLessThan(10_000);
    expect(await refusalReason(connectWith({ certificate: own }, clientIdOf(d), 2), clientIdOf(d))).toBe(
      "device is cut off",
    );
    // Positive twin: enabled again, it logs in; deleted, it is dropped and refused.
    await adapter.applyDevice(d);
    const again = await eventuallyConnects(() => connectWith({ certificate: own }, clientIdOf(d), 0));
    const deleted = closed(again);
    await adapter.removeDevice(d);
    expect(await deleted).toBeLessThan(10_000);
    expect(await refusalReason(connectWith({ certificate: own }, clientIdOf(d), 2), clientIdOf(d))).toBe(
      "unknown user",
    );
  });

  it("logs in a password device without a certificate, and refuses a password login that also presents a certificate", async () => {
    const tenant = `p${run}`;
    const withPassword: BrokerDevice = {
      ...x509Device(tenant, "pw-1"),
      credentials: { type: "password", username: `${tenant}/pw-1`, password: `secret-${run}` },
    };
    const certified = x509Device(tenant, "sensor-1");
    await Promise.all([adapter.applyDevice(withPassword), adapter.applyDevice(certified)]);
    const login = { username: `${tenant}/pw-1`, password: `secret-${run}` };
    const client = await eventuallyConnects(() => connectWith(login, `${tenant}/pw-1`, 1));
    await client.endAsync(true);
    const someCertificate = await ownCertificate(certified);
    expect(
      await refusalReason(
        connectWith({ ...login, certificate: someCertificate }, `${tenant}/pw-1`),
        `${tenant}/pw-1`,
      ),
    ).toBe("a login presents a certificate or a password, not both");
  });

  it("refuses a certificate no CA under the device root signed in the TLS handshake", async () => {
    const tenant = `f${run}`;
    const d = x509Device(tenant, "sensor-1");
    await adapter.applyDevice(d);
    const strangerDir = join(dir, "stranger");
    await mkdir(strangerDir, { recursive: true });
    const stranger = await createCA(strangerDir, "stranger", "stranger");
    const forged = await certificate(stranger, `/O=${tenant}/CN=sensor-1`);
    // The server's TLS alert, before any MQTT: the callout is never asked.
    await expect(connectWith({ certificate: forged }, clientIdOf(d))).rejects.toThrow(
      /alert (bad certificate|unknown ca)/,
    );
    // Positive twin: its own certificate.
    const own = await eventuallyConnects(async () =>
      connectWith({ certificate: await ownCertificate(d) }, clientIdOf(d)),
    );
    await own.endAsync(true);
  });

  it("seals the callout's requests to the operator's xkey: another listener with the callout user's credentials reads no password", async () => {
    const tenant = `x${run}`;
    const d: BrokerDevice = {
      ...x509Device(tenant, "pw-1"),
      credentials: { type: "password", username: `${tenant}/pw-1`, password: `sealed-${run}` },
    };
    await adapter.applyDevice(d);
    const keys = bootstrapKeys(cluster.seeds);
    const eavesdropper = await connect({
      servers: [...cluster.urls],
      authenticator: jwtAuthenticator(
        await bootstrapUserJwt(keys, "calloutUser"),
        keys.calloutUser.getSeed(),
      ),
    });
    try {
      const seen = eavesdropper.subscribe("$SYS.REQ.USER.AUTH", { max: 1 });
      await eavesdropper.flush();
      const client = await eventuallyConnects(() =>
        connectWith({ username: d.credentials.username, password: `sealed-${run}` }, clientIdOf(d)),
      );
      await client.endAsync(true);
      for await (const request of seen) {
        // A plain request is a JWT whose claims (base64url) carry connect_opts.pass.
        const claims = Buffer.from(request.string().split(".")[1] ?? "", "base64url").toString();
        expect(claims.includes(`sealed-${run}`), "the password readable in the request").toBe(false);
        expect(request.headers?.get("Nats-Server-Xkey")).toMatch(/^X/);
      }
    } finally {
      await eavesdropper.close();
    }
  });

  it("keeps a connected x509 device while the auth callout is away, refuses a new certificate login then, and serves it once the callout is back", async () => {
    const tenant = `w${run}`;
    const d = x509Device(tenant, "sensor-1");
    await adapter.applyDevice(d);
    const own = await ownCertificate(d);
    const connected = await eventuallyConnects(() => connectWith({ certificate: own }, clientIdOf(d), 0));
    await adapter.close();
    try {
      // No answer: the server refuses after its callout timeout.
      await expect(connectWith({ certificate: own }, clientIdOf(d), 1)).rejects.toThrow(LOGIN_REFUSED);
      expect(connected.connected).toBe(true);
      expect(await subscribeCodes(connected, `tenants/${tenant}/devices/sensor-1/#`)).toEqual([1]);
    } finally {
      adapter = newAdapter();
    }
    await adapter.applyDevice(d);
    const again = await eventuallyConnects(() => connectWith({ certificate: own }, clientIdOf(d), 1));
    await Promise.all([again.endAsync(true), connected.endAsync(true)]);
  });
});
