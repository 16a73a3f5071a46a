import { execFile } from "node:child_process";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";
import { signCrl } from "./crl.js";
import * as x509 from "./x509.js";

const run = promisify(execFile);

/** A CA made by openssl with the given key type, as cert-manager or a platform team would hold one. */
async function opensslCA(
  dir: string,
  name: string,
  key: string[],
): Promise<{ certFile: string; certificatePem: string; keyPem: string }> {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  await run(
    "openssl",
    ["req", "-x509", "-newkey", ...key, "-nodes", "-keyout", keyFile, "-out", certFile].concat(
      ["-days", "30", "-subj", `/O=${name}/CN=${name} device CA`],
      ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
    ),
  );
  return {
    certFile,
    certificatePem: await readFile(certFile, "utf8"),
    keyPem: await readFile(keyFile, "utf8"),
  };
}

describe("signCrl", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "crl-unit-"));
  });

  it.each([
    ["EC P-256", ["ec", "-pkeyopt", "ec_paramgen_curve:P-256"]],
    ["EC P-384", ["ec", "-pkeyopt", "ec_paramgen_curve:P-384"]],
    ["RSA 2048", ["rsa:2048"]],
  ])("writes a CRL that openssl verifies with the %s CA, with AKI, number and entries", async (name, key) => {
    const ca = await opensslCA(dir, name.replace(/\W/g, "").toLowerCase(), key);
    const pem = await signCrl({
      caCertificatePem: ca.certificatePem,
      caKeyPem: ca.keyPem,
      revoked: [
        { serialNumber: "ff01", revokedAt: new Date("2026-01-02T03:04:05Z") },
        { serialNumber: "0a", revokedAt: new Date("2026-01-01T00:00:00Z") },
      ],
      thisUpdate: new Date(Date.now() - 60_000),
      nextUpdate: new Date(Date.now() + 86_400_000),
      number: 300,
    });
    expect(pem).toMatch(/^-----BEGIN X509 CRL-----\n[\s\S]+\n-----END X509 CRL-----\n$/);
    const file = join(dir, `${name}.crl`);
    await writeFile(file, pem);
    const verified = await run("openssl", ["crl", "-in", file, "-CAfile", ca.certFile, "-verify", "-noout"]);
    expect(`${verified.stdout}${verified.stderr}`).toMatch(/verify OK/);

    const { stdout: text } = await run("openssl", ["crl", "-in", file, "-noout", "-text"]);
    const { stdout: ski } = await run("openssl", [
      "x509",
      "-in",
      ca.certFile,
      "-noout",
      "-ext",
      "subjectKeyIdentifier",
    ]);
    const keyId = ski.split("\n")[1]?.trim() ?? "missing";
    expect(text).toMatch(new RegExp(`Authority Key Identifier:\\s*\\n\\s*(keyid:)?${keyId}`));
    expect(text).toMatch(/CRL Number:\s*\n\s*300/);
    expect(text).toMatch(/Serial Number: 0A[\s\S]+Serial Number: FF01/);
    expect(text).toMatch(/Cessation Of Operation/);

    // The issuer must be the CA's subject byte for byte, or OpenSSL never matches the two.
    const crl = new x509.X509Crl(pem);
    const certificate = new x509.X509Certificate(ca.certificatePem);
    expect(Buffer.from(crl.issuerName.toArrayBuffer())).toEqual(
      Buffer.from(certificate.subjectName.toArrayBuffer()),
    );
  });

  it.each([
    ["another CA's key", ["ec", "-pkeyopt", "ec_paramgen_curve:P-256"], /does not match/],
    ["an Ed25519 CA key", ["ed25519"], /cannot sign with a ed25519 key/],
  ])("refuses %s", async (_, key, error) => {
    const ca = await opensslCA(dir, "mismatch", ["ec", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    const other = await opensslCA(dir, `other${key.length}`, key);
    const input = {
      revoked: [],
      thisUpdate: new Date(),
      nextUpdate: new Date(Date.now() + 60_000),
      number: 1,
    };
    const caCertificatePem = key[0] === "ed25519" ? other.certificatePem : ca.certificatePem;
    await expect(signCrl({ ...input, caCertificatePem, caKeyPem: other.keyPem })).rejects.toThrow(error);
  });
});
