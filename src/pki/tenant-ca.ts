import { createPublicKey, generateKeyPairSync, randomBytes } from "node:crypto";
import { AsnConvert } from "@peculiar/asn1-schema";
import {
  Name as AsnName,
  GeneralName,
  GeneralSubtree,
  GeneralSubtrees,
  id_ce_nameConstraints,
  NameConstraints,
} from "@peculiar/asn1-x509";
import { crypto, keyMatches, signingKey } from "./keys.js";
import * as x509 from "./x509.js";

/**
 * A tenant's intermediate CA, signed by the operator with the device root key. Its NameConstraints
 * extension permits only subjects that begin with O=<tenant>, so a TLS peer (OpenSSL in Mosquitto)
 * refuses any certificate below it that names another tenant: the CA of tenant A cannot mint an
 * identity of tenant B (I3). cert-manager cannot write directoryName constraints (its
 * NameConstraints has DNS, IP, email and URI only), hence signed here; the cert-manager CA Issuer
 * of the tenant still issues the device certificates from this key pair.
 *
 * The extension is NOT critical (RFC 5280 asks for critical): Go's crypto/x509, which nats-server
 * verifies client certificates with, does not implement directoryName constraints and refuses
 * every chain through a CA with a critical one ("x509: unhandled critical extension"). OpenSSL
 * enforces the constraint whether critical or not, and the NATS auth callout accepts a device
 * certificate only from its own tenant's CA (broker/nats-login.ts), so both brokers still hold I3.
 */

export const TENANT_CA_LIFETIME_MS = 5 * 365 * 86_400_000;
/** Renewed (same key, so device chains stay valid) when less than this is left. */
export const TENANT_CA_RENEW_BEFORE_MS = 365 * 86_400_000;
/** Back-dated a little, so a peer whose clock is slightly behind accepts a fresh CA. */
const BACKDATE_MS = 5 * 60_000;

export interface KeyPairPem {
  readonly certificatePem: string;
  readonly keyPem: string;
}

export type TenantCaDecision =
  | { readonly action: "keep"; readonly renewAtMs: number }
  | { readonly action: "renew"; readonly reason: string }
  | { readonly action: "issue"; readonly reason: string };

const ORGANIZATION = "2.5.4.10";
const COMMON_NAME = "2.5.4.3";

/** The subject of the tenant's CA: the same O=<tenant> its device certificates carry. */
function tenantCaSubject(tenant: string): x509.JsonName {
  return [{ [ORGANIZATION]: [tenant] }, { [COMMON_NAME]: [`${tenant} device CA`] }];
}

/** DER of NameConstraints { permittedSubtrees: [ directoryName: O=<tenant> ] }. */
export function tenantNameConstraints(tenant: string): ArrayBuffer {
  const permitted = AsnConvert.parse(new x509.Name([{ [ORGANIZATION]: [tenant] }]).toArrayBuffer(), AsnName);
  return AsnConvert.serialize(
    new NameConstraints({
      permittedSubtrees: new GeneralSubtrees([
        new GeneralSubtree({ base: new GeneralName({ directoryName: permitted }) }),
      ]),
    }),
  );
}

function sameBytes(a: ArrayBuffer | undefined, b: ArrayBuffer): boolean {
  return a !== undefined && Buffer.from(a).equals(Buffer.from(b));
}

/**
 * Why `certificate` is not exactly the CA this tenant needs from `root` (undefined when it is): the
 * tenant's subject, non-critical NameConstraints O=<tenant>, a CA with path length 0, signed by the root.
 */
export async function tenantCaProblem(
  tenant: string,
  certificate: x509.X509Certificate,
  root: x509.X509Certificate,
): Promise<string | undefined> {
  const constraints = certificate.getExtension(id_ce_nameConstraints);
  const basic = certificate.getExtension(x509.BasicConstraintsExtension);
  if (certificate.subject !== new x509.Name(tenantCaSubject(tenant)).toString())
    return "subject is not the tenant's";
  if (!constraints || constraints.critical || !sameBytes(constraints.value, tenantNameConstraints(tenant)))
    return "name constraints are not the tenant's";
  if (!basic?.ca || basic.pathLength !== 0) return "basic constraints";
  if (certificate.issuer !== root.subject || !(await certificate.verify({ publicKey: root }, crypto)))
    return "not signed by the current root CA";
  return undefined;
}

/**
 * Whether `certificatePem` holds a certificate the broker would trust as a signer of device
 * identities: the root itself or any CA certificate the root signed. Its key belongs nowhere but in
 * the operator's own Secrets.
 */
export async function isTrustedSigner(certificatePem: string, root: x509.X509Certificate): Promise<boolean> {
  let certificate: x509.X509Certificate;
  try {
    certificate = new x509.X509Certificate(certificatePem);
  } catch {
    return false;
  }
  if (sameBytes(certificate.rawData, root.rawData)) return true;
  const basic = certificate.getExtension(x509.BasicConstraintsExtension);
  return (
    basic?.ca === true &&
    certificate.issuer === root.subject &&
    (await certificate.verify({ publicKey: root }, crypto))
  );
}

/**
 * What to do with the tenant's CA Secret: keep it, re-sign its key (renew), or make a new key pair
 * (issue). Pure: the certificate is renewed whenever it is not exactly what this tenant needs from
 * this root, so a changed root or a tampered certificate heals on the next reconcile.
 */
export async function tenantCaDecision(input: {
  readonly tenant: string;
  readonly current: Partial<KeyPairPem> | undefined;
  readonly rootCertificatePem: string;
  readonly nowMs: number;
}): Promise<TenantCaDecision> {
  const { current, nowMs } = input;
  if (!current?.certificatePem || !current.keyPem) return { action: "issue", reason: "no CA key pair" };
  let certificate: x509.X509Certificate;
  try {
    certificate = new x509.X509Certificate(current.certificatePem);
    if (!keyMatches(certificate, current.keyPem))
      return { action: "issue", reason: "the key does not match the certificate" };
  } catch {
    return { action: "issue", reason: "the CA key pair does not parse" };
  }
  const problem = await tenantCaProblem(
    input.tenant,
    certificate,
    new x509.X509Certificate(input.rootCertificatePem),
  );
  if (problem) return { action: "renew", reason: problem };
  const renewAtMs = certificate.notAfter.getTime() - TENANT_CA_RENEW_BEFORE_MS;
  if (nowMs >= renewAtMs) return { action: "renew", reason: "due for renewal" };
  return { action: "keep", renewAtMs };
}

/** A new EC P-256 key in PKCS#8 PEM. */
export function newCaKey(): string {
  return generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({
    format: "pem",
    type: "pkcs8",
  }) as string;
}

/**
 * The tenant's CA certificate for `keyPem`, signed by the root: CA with path length 0 (it signs
 * device certificates only), keyCertSign + cRLSign, NameConstraints O=<tenant> (not critical: see above), never
 * valid beyond the root.
 */
export async function signTenantCa(input: {
  readonly tenant: string;
  readonly keyPem: string;
  readonly root: KeyPairPem;
  readonly nowMs: number;
}): Promise<string> {
  const root = new x509.X509Certificate(input.root.certificatePem);
  const signer = await signingKey(input.root.keyPem);
  const publicKey = await new x509.PublicKey(
    createPublicKey(input.keyPem).export({ format: "der", type: "spki" }),
  ).export({ name: "ECDSA", namedCurve: "P-256" }, ["verify"], crypto);
  const notAfter = Math.min(input.nowMs + TENANT_CA_LIFETIME_MS, root.notAfter.getTime());
  const rootKeyId = root.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId;
  const certificate = await x509.X509CertificateGenerator.create(
    {
      serialNumber: randomBytes(16)
        .toString("hex")
        .replace(/^[89a-f]/, "7"),
      subject: tenantCaSubject(input.tenant),
      issuer: root.subjectName,
      notBefore: new Date(input.nowMs - BACKDATE_MS),
      notAfter: new Date(notAfter),
      publicKey,
      signingKey: signer.key,
      signingAlgorithm: signer.algorithm,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        new x509.Extension(id_ce_nameConstraints, false, tenantNameConstraints(input.tenant)),
        await x509.SubjectKeyIdentifierExtension.create(publicKey, false, crypto),
        rootKeyId
          ? new x509.AuthorityKeyIdentifierExtension(rootKeyId)
          : await x509.AuthorityKeyIdentifierExtension.create(root.publicKey, false, crypto),
      ],
    },
    crypto,
  );
  return `${certificate.toString("pem")}\n`;
}
