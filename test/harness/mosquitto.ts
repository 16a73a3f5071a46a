import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { userInfo } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import mqtt from "mqtt";
import { adminClientOptions, type DynsecConnection } from "../../src/broker/dynsec-client.js";
import { initialDynsecState } from "../../src/broker/dynsec-state.js";
import { mosquittoConfig } from "../../src/broker/mosquitto-config.js";
import { signCrl } from "../../src/pki/crl.js";
import {
  createCA,
  createIntermediateCA,
  type IntermediateCA,
  issueCertificate,
  type KeyPair,
} from "./pki.js";
import { freePort } from "./ports.js";
import { type ManagedProcess, startProcess, waitUntil } from "./process.js";

const run = promisify(execFile);

const buildScript = resolve(dirname(fileURLToPath(import.meta.url)), "../tools/build-mosquitto.sh");

export interface Broker {
  readonly host: string;
  /** mTLS listener for devices: client certificate required, subject is the username. */
  readonly mtlsPort: number;
  /** TLS listener for password devices: no client certificate, username and password checked by dynsec. */
  readonly passwordPort: number;
  /** Loopback mTLS listener for the dynamic-security admin client; it trusts only the admin CA. */
  readonly adminPort: number;
  /** The admin certificate's CN: the broker's dynsec admin client, which has no password. */
  readonly adminUsername: string;
  /** The admin's client certificate and its encrypted key, issued by a CA of its own. */
  readonly adminCertFile: string;
  readonly adminKeyFile: string;
  /** Passphrase of adminKeyFile. */
  readonly adminPassword: string;
  /** Verifies the broker's server certificate (the device root CA). */
  readonly caFile: string;
  readonly configFile: string;
  readonly dynsecFile: string;
  /** The broker's `crlfile`: the operator rewrites it and sends SIGHUP to the PID in `pidFile`. */
  readonly crlFile: string;
  readonly pidFile: string;
  /** The CRL of the harness's device CA, which the operator puts in front of the tenants' CRLs. */
  readonly baseCrlFile: string;
  /** An intermediate CA the broker trusts without the operator, for tests of the broker alone (any subject). */
  readonly deviceCA: IntermediateCA;
  stop(): Promise<void>;
}

export interface BrokerOptions {
  readonly stateDir: string;
  /** The root CA that device certificates chain to; it also signs the broker's server certificate. */
  readonly deviceRootCA: KeyPair;
  /** The intermediate CA the broker trusts without the operator; default: a new one under the root. */
  readonly deviceCA?: IntermediateCA;
}

/**
 * The broker and its dynamic-security plugin, built (or found cached) by test/tools/build-mosquitto.sh:
 * Debian's 2.0.11 with the project's patch. Never Debian's installed binary, which crashes on the
 * session-expiry defect the patch fixes; a failed build fails the caller.
 */
export async function mosquittoBuild(): Promise<{ readonly broker: string; readonly dynsecPlugin: string }> {
  const { stdout } = await run("bash", [buildScript], { maxBuffer: 1 << 20 });
  const dir = stdout.trim();
  return { broker: join(dir, "mosquitto"), dynsecPlugin: join(dir, "mosquitto_dynamic_security.so") };
}

export async function startMosquitto(options: BrokerOptions): Promise<Broker> {
  const dir = join(options.stateDir, "mosquitto");
  await mkdir(dir, { recursive: true });
  const host = "127.0.0.1";
  const build = await mosquittoBuild();
  const [mtlsPort, passwordPort, adminPort] = await Promise.all([freePort(), freePort(), freePort()]);
  const adminUsername = "operator-admin";
  const adminPassword = randomBytes(18).toString("base64url");
  // The admin listener trusts a CA of its own: no device certificate, whoever signed it, opens it.
  const adminCA = await createCA(dir, "broker-admin-ca", "iot-tenant-operator broker admin CA");
  const admin = await issueCertificate(dir, adminCA, "broker-admin", {
    subject: `/CN=${adminUsername}`,
    usages: ["clientAuth"],
  });
  const adminKeyFile = join(dir, "broker-admin.enc.key");
  await run("openssl", [
    "pkey",
    "-in",
    admin.keyFile,
    "-aes256",
    "-passout",
    `pass:${adminPassword}`,
    "-out",
    adminKeyFile,
  ]);
  await rm(admin.keyFile);
  const serverCert = await issueCertificate(dir, options.deviceRootCA, "broker", {
    subject: "/CN=mosquitto",
    dnsNames: ["localhost"],
    ips: [host],
    usages: ["serverAuth"],
  });
  const dynsecFile = join(dir, "dynamic-security.json");
  await writeFile(dynsecFile, initialDynsecState(adminUsername));

  // Mosquitto refuses to start with a crlfile that holds no CRL, and with a crlfile it refuses every
  // client certificate whose issuer has no CRL there. So the file starts with the CRL of the
  // harness's device CA, and the tenants' CRLs follow: the root CA gets
  // none, so a certificate the root signed directly never passes (I3).
  const baseCrlFile = join(dir, "base.crl");
  const crlFile = join(dir, "crl.pem");
  const pidFile = join(dir, "mosquitto.pid");
  // Tests that drive the broker without the operator issue their device certificates here.
  const deviceCA =
    options.deviceCA ??
    (await createIntermediateCA(dir, options.deviceRootCA, "harness-device-ca", "harness device CA"));
  const emptyCrl = async (ca: KeyPair) =>
    signCrl({
      caCertificatePem: await readFile(ca.certFile, "utf8"),
      caKeyPem: await readFile(ca.keyFile, "utf8"),
      revoked: [],
      thisUpdate: new Date(Date.now() - 60_000),
      nextUpdate: new Date(Date.now() + 30 * 86_400_000),
      number: 1,
    });
  const baseCrl = await emptyCrl(deviceCA);
  await writeFile(baseCrlFile, baseCrl);
  await writeFile(crlFile, baseCrl);

  const configFile = join(dir, "mosquitto.conf");
  await writeFile(
    configFile,
    mosquittoConfig({
      bindAddress: host,
      mtlsPort,
      passwordPort,
      adminPort,
      rootCaFile: options.deviceRootCA.certFile,
      adminCaFile: adminCA.certFile,
      serverCertFile: serverCert.certFile,
      serverKeyFile: serverCert.keyFile,
      crlFile,
      dynsecPlugin: build.dynsecPlugin,
      dynsecStateFile: dynsecFile,
      pidFile,
      // Started as root, mosquitto would drop to user 'mosquitto', which cannot read these keys.
      runAsRoot: userInfo().uid === 0,
    }),
  );

  const broker: ManagedProcess = startProcess("mosquitto", build.broker, ["-c", configFile], {
    logFile: join(dir, "mosquitto.log"),
  });
  const endpoint = {
    host,
    mtlsPort,
    passwordPort,
    adminPort,
    adminUsername,
    adminCertFile: admin.certFile,
    adminKeyFile,
    adminPassword,
    caFile: options.deviceRootCA.certFile,
  };
  await waitUntilAdminConnects(adminConnection(endpoint), broker);

  return {
    ...endpoint,
    configFile,
    dynsecFile,
    crlFile,
    pidFile,
    baseCrlFile,
    deviceCA,
    stop: () => broker.stop(),
  };
}

/** The dynamic-security admin connection of a broker the harness started. */
export function adminConnection(
  broker: Pick<Broker, "host" | "adminPort" | "caFile" | "adminCertFile" | "adminKeyFile" | "adminPassword">,
): DynsecConnection {
  return {
    host: broker.host,
    port: broker.adminPort,
    caFile: broker.caFile,
    certFile: broker.adminCertFile,
    keyFile: broker.adminKeyFile,
    passphrase: broker.adminPassword,
  };
}

/** Waits until the broker's admin listener accepts the admin, i.e. the broker is up and has loaded dynsec. */
export async function waitUntilAdminConnects(
  connection: DynsecConnection,
  broker: ManagedProcess,
): Promise<void> {
  const options = await adminClientOptions(connection, { connectTimeout: 2_000 });
  await waitUntil(
    "mosquitto",
    () =>
      new Promise<boolean>((resolve) => {
        const client = mqtt.connect(options);
        client.once("connect", () => client.end(true, () => resolve(true)));
        client.once("error", () => client.end(true, () => resolve(false)));
      }),
    { timeoutMs: 60_000, process: broker },
  );
}
