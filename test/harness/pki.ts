import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export interface KeyPair {
  readonly certFile: string;
  readonly keyFile: string;
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
  return { certFile, keyFile };
}

/** An RSA key for signing service-account tokens. */
export async function createSigningKey(dir: string, name: string): Promise<string> {
  const keyFile = join(dir, `${name}.key`);
  await openssl(["genrsa", "-out", keyFile, "2048"], dir);
  return keyFile;
}
