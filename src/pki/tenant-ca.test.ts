import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";
import { createCA, issueCertificate, type KeyPair } from "../../test/harness/pki.js";
import {
  isTrustedSigner,
  type KeyPairPem,
  newCaKey,
  signTenantCa,
  TENANT_CA_LIFETIME_MS,
  TENANT_CA_RENEW_BEFORE_MS,
  tenantCaDecision,
} from "./tenant-ca.js";

const run = promisify(execFile);
const NOW = Date.parse("2026-06-01T00:00:00Z");

/** A self-signed root made by openssl, as the platform team would make one. */
async function opensslRoot(dir: string, name: string): Promise<KeyPairPem & KeyPair> {
  const pair = await createCA(dir, name, name);
  return {
    ...pair,
    certificatePem: await readFile(pair.certFile, "utf8"),
    keyPem: await readFile(pair.keyFile, "utf8"),
  };
}

describe("tenant CA signing", () => {
  let dir: string;
  let root: Awaited<ReturnType<typeof opensslRoot>>;
  let acme: KeyPairPem;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "tenant-ca-unit-"));
    root = await opensslRoot(dir, "root");
    const keyPem = newCaKey();
    acme = {
      keyPem,
      certificatePem: await signTenantCa({ tenant: "acme", keyPem, root, nowMs: Date.now() }),
    };
  });

  it.each([
    ["the root itself", async () => root.certificatePem, true],
    ["a tenant CA the root signed", async () => acme.certificatePem, true],
    [
      "a leaf the root signed (no CA: it cannot sign identities)",
      async () => {
        const leaf = await issueCertificate(dir, root, "leaf-of-root", {
          subject: "/O=acme/CN=x",
          usages: ["clientAuth"],
        });
        return readFile(leaf.certFile, "utf8");
      },
      false,
    ],
    ["another root", async () => (await opensslRoot(dir, "other-root")).certificatePem, false],
    ["not a certificate", async () => "garbage", false],
  ])("isTrustedSigner: %s", async (_what, pem, expected) => {
    const { X509Certificate } = await import("./x509.js");
    expect(await isTrustedSigner(await pem(), new X509Certificate(root.certificatePem))).toBe(expected);
  });

  /** openssl's verdict on a client certificate with `subject` that the acme CA signs. */
  async function verifyLeaf(subject: string): Promise<string> {
    const name = randomBytes(4).toString("hex");
    const ca = { certFile: join(dir, `${name}-ca.crt`), keyFile: join(dir, `${name}-ca.key`) };
    await writeFile(ca.certFile, acme.certificatePem);
    await writeFile(ca.keyFile, acme.keyPem);
    const leaf = await issueCertificate(dir, ca, name, { subject, usages: ["clientAuth"] });
    const result = await run("openssl", [
      "verify",
      "-CAfile",
      root.certFile,
      "-untrusted",
      ca.certFile,
      leaf.certFile,
    ]).catch((error: { stdout: string; stderr: string }) => error);
    return `${result.stdout}${result.stderr}`;
  }

  it.each([
    ["the tenant's own subject", "/O=acme/CN=sensor-1", /: OK/],
    ["another tenant's subject", "/O=globex/CN=sensor-1", /permitted subtree violation/],
    ["the tenant's O after the CN", "/CN=sensor-1/O=acme", /permitted subtree violation/],
    ["a longer organization", "/O=acmex/CN=sensor-1", /permitted subtree violation/],
    ["no organization", "/CN=sensor-1", /permitted subtree violation/],
  ])("lets OpenSSL accept a leaf only under O=<tenant>: %s", async (_, subject, verdict) => {
    expect(await verifyLeaf(subject)).toMatch(verdict);
  });

  it("is a CA for device certificates only: path length 0, keyCertSign and cRLSign, its name constraint not critical", async () => {
    const file = join(dir, "acme-ca.crt");
    await writeFile(file, acme.certificatePem);
    const { stdout } = await run("openssl", ["x509", "-in", file, "-noout", "-text"]);
    expect(stdout).toMatch(/Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    expect(stdout).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign/);
    // Not critical, so Go (nats-server) verifies chains through it; OpenSSL enforces it all the same (above).
    expect(stdout).toMatch(/Name Constraints: \s*Permitted:\s+DirName:O = acme\s/);
    expect(stdout).toMatch(/Issuer: CN = root/);
  });

  it.each<[string, () => Promise<Parameters<typeof tenantCaDecision>[0]>, RegExp | "keep"]>([
    [
      "nothing yet",
      async () => ({
        tenant: "acme",
        current: undefined,
        rootCertificatePem: root.certificatePem,
        nowMs: NOW,
      }),
      /issue/,
    ],
    [
      "a certificate without its key",
      async () => ({
        tenant: "acme",
        current: { certificatePem: acme.certificatePem },
        rootCertificatePem: root.certificatePem,
        nowMs: NOW,
      }),
      /issue/,
    ],
    [
      "a key that is not the certificate's",
      async () => ({
        tenant: "acme",
        current: { ...acme, keyPem: newCaKey() },
        rootCertificatePem: root.certificatePem,
        nowMs: NOW,
      }),
      /issue/,
    ],
    [
      "garbage",
      async () => ({
        tenant: "acme",
        current: { certificatePem: "x", keyPem: "y" },
        rootCertificatePem: root.certificatePem,
        nowMs: NOW,
      }),
      /issue/,
    ],
    [
      "its own valid CA",
      async () => ({
        tenant: "acme",
        current: acme,
        rootCertificatePem: root.certificatePem,
        nowMs: Date.now(),
      }),
      "keep",
    ],
    [
      "another tenant's CA",
      async () => ({
        tenant: "globex",
        current: acme,
        rootCertificatePem: root.certificatePem,
        nowMs: Date.now(),
      }),
      /renew.*subject/,
    ],
    [
      "a CA of another root",
      async () => ({
        tenant: "acme",
        current: acme,
        rootCertificatePem: (await opensslRoot(dir, "other-root")).certificatePem,
        nowMs: Date.now(),
      }),
      /renew.*root/,
    ],
    [
      "a CA due for renewal",
      async () => ({
        tenant: "acme",
        current: acme,
        rootCertificatePem: root.certificatePem,
        nowMs: Date.now() + TENANT_CA_LIFETIME_MS - TENANT_CA_RENEW_BEFORE_MS + 60_000,
      }),
      /renew.*due/,
    ],
    [
      "an unconstrained CA with the right subject",
      async () => {
        // What cert-manager wrote before: the same subject, no NameConstraints.
        const file = (ext: string) => join(dir, `plain.${ext}`);
        await writeFile(file("key"), acme.keyPem);
        await writeFile(
          file("ext"),
          "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
        );
        await run("openssl", [
          "req",
          "-new",
          "-key",
          file("key"),
          "-out",
          file("csr"),
          "-subj",
          "/O=acme/CN=acme device CA",
        ]);
        await run(
          "openssl",
          ["x509", "-req", "-in", file("csr"), "-CA", root.certFile, "-CAkey", root.keyFile].concat([
            "-set_serial",
            "0x77",
            "-days",
            "300",
            "-extfile",
            file("ext"),
            "-out",
            file("crt"),
          ]),
        );
        return {
          tenant: "acme",
          current: { certificatePem: await readFile(file("crt"), "utf8"), keyPem: acme.keyPem },
          rootCertificatePem: root.certificatePem,
          nowMs: Date.now(),
        };
      },
      /renew.*name constraints/,
    ],
    [
      "a CA whose name constraint is critical (signed before NATS verified device chains)",
      async () => {
        const file = (ext: string) => join(dir, `critical.${ext}`);
        await writeFile(file("key"), acme.keyPem);
        await writeFile(
          file("ext"),
          "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n" +
            "nameConstraints=critical,permitted;dirName:tenant\n[tenant]\nO=acme\n",
        );
        await run(
          "openssl",
          ["req", "-new", "-key", file("key"), "-out", file("csr")].concat([
            "-subj",
            "/O=acme/CN=acme device CA",
          ]),
        );
        await run(
          "openssl",
          ["x509", "-req", "-in", file("csr"), "-CA", root.certFile, "-CAkey", root.keyFile].concat([
            "-set_serial",
            "0x78",
            "-days",
            "300",
            "-extfile",
            file("ext"),
            "-out",
            file("crt"),
          ]),
        );
        return {
          tenant: "acme",
          current: { certificatePem: await readFile(file("crt"), "utf8"), keyPem: acme.keyPem },
          rootCertificatePem: root.certificatePem,
          nowMs: Date.now(),
        };
      },
      /renew.*name constraints/,
    ],
  ])("decides what to do with %s", async (_, input, expected) => {
    const decision = await tenantCaDecision(await input());
    if (expected === "keep") {
      expect(decision.action).toBe("keep");
    } else {
      expect(`${decision.action}: ${"reason" in decision ? decision.reason : ""}`).toMatch(expected);
    }
  });

  it("keeps the key on renewal, so device chains stay valid", async () => {
    const renewed = await signTenantCa({
      tenant: "acme",
      keyPem: acme.keyPem,
      root,
      nowMs: Date.now() + 1_000,
    });
    expect(renewed).not.toBe(acme.certificatePem);
    const decision = await tenantCaDecision({
      tenant: "acme",
      current: { certificatePem: renewed, keyPem: acme.keyPem },
      rootCertificatePem: root.certificatePem,
      nowMs: Date.now(),
    });
    expect(decision.action).toBe("keep");
  });

  it("never outlives the root", async () => {
    const longAfter = Date.now() + 30 * 365 * 86_400_000;
    const pem = await signTenantCa({
      tenant: "acme",
      keyPem: acme.keyPem,
      root,
      nowMs: longAfter - TENANT_CA_LIFETIME_MS,
    });
    const file = join(dir, "capped.crt");
    await writeFile(file, pem);
    const [rootEnd, caEnd] = await Promise.all(
      [root.certFile, file].map(
        async (f) => (await run("openssl", ["x509", "-in", f, "-noout", "-enddate"])).stdout,
      ),
    );
    expect(caEnd).toBe(rootEnd);
  });
});
