import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { createCA, issueCertificate, type KeyPair } from "../../test/harness/pki.js";
import { newCaKey, signTenantCa } from "../pki/tenant-ca.js";
import type { BrokerDevice } from "./adapter.js";
import {
  type AuthorizationRequest,
  decideLogin,
  type LoginDirectory,
  type TenantTrust,
} from "./nats-login.js";

const sensor: BrokerDevice = {
  tenant: "acme",
  device: "s1",
  topicRoot: "tenants/acme",
  credentials: { type: "password", username: "acme/s1", password: "right" },
  enabled: true,
  suspended: false,
};
const certificateDevice: BrokerDevice = {
  ...sensor,
  device: "s2",
  credentials: { type: "x509", username: "CN=s2,O=acme" },
};
const globexDevice: BrokerDevice = {
  ...certificateDevice,
  tenant: "globex",
  topicRoot: "tenants/globex",
  credentials: { type: "x509", username: "CN=s2,O=globex" },
};
const known = new Map([sensor, certificateDevice, globexDevice].map((d) => [d.credentials.username, d]));

function request(overrides: {
  user?: string;
  pass?: string;
  clientId?: string;
  type?: string;
  chains?: string[][];
}): AuthorizationRequest {
  return {
    server_id: { id: "NSERVER", name: "n1" },
    user_nkey: "UUSER",
    client_info: {
      type: overrides.type ?? "mqtt",
      mqtt_id: overrides.clientId ?? overrides.user ?? "acme/s1",
    },
    connect_opts:
      "chains" in overrides ? {} : { user: overrides.user ?? "acme/s1", pass: overrides.pass ?? "right" },
    ...(overrides.chains ? { client_tls: { verified_chains: overrides.chains } } : {}),
  };
}

describe("decideLogin", () => {
  const trust = new Map<string, TenantTrust>();
  const directory = (devices = known): LoginDirectory => ({
    deviceByUsername: (u) => devices.get(u),
    tenantTrust: (t) => trust.get(t),
  });
  const decide = (r: AuthorizationRequest, devices = known) => decideLogin(r, directory(devices));

  /** PEMs: the root, each tenant's CA (as the operator signs it), and leaves by name. */
  const pem: Record<string, string> = {};
  beforeAll(async () => {
    const dir = await mkdtemp(join(tmpdir(), "nats-login-"));
    const root = await createCA(dir, "root", "root");
    const rootPems = {
      certificatePem: await readFile(root.certFile, "utf8"),
      keyPem: await readFile(root.keyFile, "utf8"),
    };
    pem.root = rootPems.certificatePem;
    const cas: Record<string, KeyPair> = {};
    for (const tenant of ["acme", "globex"]) {
      const keyPem = newCaKey();
      const certificatePem = await signTenantCa({ tenant, keyPem, root: rootPems, nowMs: Date.now() });
      const pair = { certFile: join(dir, `${tenant}.crt`), keyFile: join(dir, `${tenant}.key`) };
      await Promise.all([writeFile(pair.certFile, certificatePem), writeFile(pair.keyFile, keyPem)]);
      cas[tenant] = pair;
      pem[tenant] = certificatePem;
    }
    const leaves: [string, KeyPair, string][] = [
      ["acme-s2", cas.acme as KeyPair, "/O=acme/CN=s2"],
      ["acme-s2-renewed", cas.acme as KeyPair, "/O=acme/CN=s2"],
      ["root-s2", root, "/O=acme/CN=s2"],
      ["acme-signs-globex", cas.acme as KeyPair, "/O=globex/CN=s2"],
      ["acme-s2-extra-ou", cas.acme as KeyPair, "/O=acme/OU=x/CN=s2"],
      ["acme-signs-both-orgs", cas.acme as KeyPair, "/O=acme/O=globex/CN=s2"],
      ["acme-smuggles-globex", cas.acme as KeyPair, "/O=acme/CN=s2,O=globex"],
    ];
    for (const [name, signer, subject] of leaves) {
      const issued = await issueCertificate(dir, signer, name, { subject, usages: ["clientAuth"] });
      pem[name] = await readFile(issued.certFile, "utf8");
    }
    trust.set("acme", { caCertificatePem: pem.acme ?? "", revokedSerials: new Set() });
    trust.set("globex", { caCertificatePem: pem.globex ?? "", revokedSerials: new Set() });
  });
  const chain = (leaf: string, ...issuers: string[]) => [[leaf, ...issuers].map((name) => pem[name] ?? "")];
  const certificateLogin = (leaf: string, issuers = ["acme", "root"], clientId = "acme/s2") =>
    request({ chains: chain(leaf, ...issuers), clientId });

  it("admits a served device with its password and <tenant>/<device> as client id, with exactly its grant", () => {
    const decision = decide(request({}));
    expect(decision).toMatchObject({ allow: true, device: sensor });
    expect(decision.allow && decision.permissions.sub).toEqual([
      "tenants.acme.devices.s1",
      "tenants.acme.devices.s1.>",
    ]);
  });

  it("admits a certificate from the device's tenant CA, naming its serial", () => {
    const decision = decide(certificateLogin("acme-s2"));
    expect(decision).toMatchObject({ allow: true, device: certificateDevice });
    expect(decision.allow && decision.certificateSerial).toMatch(/^[0-9a-f]+$/);
  });

  it.each([
    ["a wrong password", () => request({ pass: "wrong" }), "unknown user"],
    ["an unknown user", () => request({ user: "acme/nobody" }), "unknown user"],
    ["a certificate identity with a password", () => request({ user: "CN=s2,O=acme" }), "unknown user"],
    [
      "another device's client id",
      () => request({ clientId: "acme/s9" }),
      "the MQTT client id must be <tenant>/<device>",
    ],
    ["a NATS-protocol client", () => request({ type: "nats" }), "only MQTT devices log in here"],
    [
      "a password login with a certificate",
      () => ({ ...request({}), client_tls: { verified_chains: chain("acme-s2", "acme", "root") } }),
      "a login presents a certificate or a password, not both",
    ],
    [
      "a root-signed certificate with the device's subject",
      () => certificateLogin("root-s2", ["root"]),
      "the certificate is not from the device's tenant CA",
    ],
    [
      "tenant A's CA signing tenant B's subject",
      () => certificateLogin("acme-signs-globex", ["acme", "root"], "globex/s2"),
      "the certificate is not from the device's tenant CA",
    ],
    ["a subject with more than O and CN", () => certificateLogin("acme-s2-extra-ou"), "unknown user"],
    [
      "tenant A's CA signing both organizations",
      () => certificateLogin("acme-signs-both-orgs", ["acme", "root"], "globex/s2"),
      "unknown user",
    ],
    [
      "tenant B's organization smuggled into the CN",
      () => certificateLogin("acme-smuggles-globex", ["acme", "root"], "globex/s2"),
      "unknown user",
    ],
    [
      "a certificate with another client id",
      () => certificateLogin("acme-s2", ["acme", "root"], "acme/s1"),
      "the MQTT client id must be <tenant>/<device>",
    ],
    [
      "no certificate for an x509 device",
      () => request({ user: "CN=s2,O=acme", pass: "", clientId: "acme/s2" }),
      "unknown user",
    ],
  ])("refuses %s", (_name, r, reason) => expect(decide(r())).toEqual({ allow: false, reason }));

  it("refuses a revoked certificate and admits the device's renewed one", () => {
    const revoked = decide(certificateLogin("acme-s2"));
    const serial = revoked.allow ? (revoked.certificateSerial ?? "") : "";
    trust.set("acme", { caCertificatePem: pem.acme ?? "", revokedSerials: new Set([serial]) });
    try {
      expect(decide(certificateLogin("acme-s2"))).toEqual({
        allow: false,
        reason: "the certificate is revoked",
      });
      expect(decide(certificateLogin("acme-s2-renewed"))).toMatchObject({ allow: true });
    } finally {
      trust.set("acme", { caCertificatePem: pem.acme ?? "", revokedSerials: new Set() });
    }
  });

  it("refuses every certificate of a tenant whose CA it does not know", () => {
    expect(
      decideLogin(certificateLogin("acme-s2"), { ...directory(), tenantTrust: () => undefined }),
    ).toEqual({
      allow: false,
      reason: "the certificate is not from the device's tenant CA",
    });
  });

  it.each([
    ["disabled", { enabled: false }],
    ["suspended", { suspended: true }],
  ])("refuses a %s device even with the right password or certificate", (_name, change) => {
    const devices = new Map([
      ["acme/s1", { ...sensor, ...change }],
      ["CN=s2,O=acme", { ...certificateDevice, ...change }],
    ]);
    expect(decide(request({}), devices)).toEqual({ allow: false, reason: "device is cut off" });
    expect(decide(certificateLogin("acme-s2"), devices)).toEqual({
      allow: false,
      reason: "device is cut off",
    });
  });
});
