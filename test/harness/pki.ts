import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { appendFile, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export interface KeyPair {
  readonly certFile: string;
  readonly keyFile: string;
  /** An intermediate CA's own certificate, which every certificate it issues carries after its own. */
  readonly chainFile?: string;
}

async function openssl(args: readonly string[], cwd: string): Promise<void> {
  await run("openssl", args, { cwd });
}

/** A self-signed CA (EC P-256) valid for ten years. */
export async function createCA(dir: string, name: string, commonName: string): Promise<KeyPair> {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  await openssl(
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      keyFile,
      "-out",
      certFile,
      "-days",
      "3650",
      "-subj",
      `/CN=${commonName}`,
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    ],
    dir,
  );
  return { certFile, keyFile };
}

/** A leaf certificate signed by `ca`; `subject` is in openssl `-subj` form. */
export async function issueCertificate(
  dir: string,
  ca: KeyPair,
  name: string,
  options: {
    subject: string;
    dnsNames?: readonly string[];
    ips?: readonly string[];
    usages: readonly string[];
  },
): Promise<KeyPair> {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  const csrFile = join(dir, `${name}.csr`);
  const extFile = join(dir, `${name}.ext`);
  const altNames = [
    ...(options.dnsNames ?? []).map((d) => `DNS:${d}`),
    ...(options.ips ?? []).map((ip) => `IP:${ip}`),
  ];
  const extensions = [
    "basicConstraints=critical,CA:FALSE",
    "keyUsage=critical,digitalSignature,keyEncipherment",
    `extendedKeyUsage=${options.usages.join(",")}`,
    ...(altNames.length ? [`subjectAltName=${altNames.join(",")}`] : []),
  ];
  await writeFile(extFile, `${extensions.join("\n")}\n`);
  await openssl(
    [
      "req",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      keyFile,
      "-out",
      csrFile,
      "-subj",
      options.subject,
    ],
    dir,
  );
  await openssl(
    [
      "x509",
      "-req",
      "-in",
      csrFile,
      "-CA",
      ca.certFile,
      "-CAkey",
      ca.keyFile,
      // A random serial instead of a serial file: tests issue from one CA in parallel.
      "-set_serial",
      `0x${randomBytes(12).toString("hex")}`,
      "-days",
      "3650",
      "-extfile",
      extFile,
      "-out",
      certFile,
    ],
    dir,
  );
  if (ca.chainFile) await appendFile(certFile, await readFile(ca.chainFile));
  return { certFile, keyFile };
}

export interface IntermediateCA extends KeyPair {
  readonly chainFile: string;
  readonly issuer: KeyPair;
}

/** An intermediate CA (EC P-256, path length 0) signed by `root`; what it issues carries it as chain. */
export async function createIntermediateCA(
  dir: string,
  root: KeyPair,
  name: string,
  commonName: string,
): Promise<IntermediateCA> {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  const csrFile = join(dir, `${name}.csr`);
  const extFile = join(dir, `${name}.ext`);
  await writeFile(
    extFile,
    "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
  );
  await openssl(
    ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", keyFile].concat([
      "-out",
      csrFile,
      "-subj",
      `/CN=${commonName}`,
    ]),
    dir,
  );
  await openssl(
    ["x509", "-req", "-in", csrFile, "-CA", root.certFile, "-CAkey", root.keyFile]
      .concat(["-set_serial", `0x${randomBytes(12).toString("hex")}`, "-days", "3650"])
      .concat(["-extfile", extFile, "-out", certFile]),
    dir,
  );
  return { certFile, keyFile, chainFile: certFile, issuer: root };
}

/** An RSA key for signing service-account tokens. */
export async function createSigningKey(dir: string, name: string): Promise<string> {
  const keyFile = join(dir, `${name}.key`);
  await openssl(["genrsa", "-out", keyFile, "2048"], dir);
  return keyFile;
}
