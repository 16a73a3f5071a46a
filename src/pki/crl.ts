import { createPrivateKey, sign, X509Certificate } from "node:crypto";

/**
 * X.509 v2 CRLs (RFC 5280 §5) signed with a tenant's CA key. cert-manager issues certificates but
 * publishes no revocation, so the operator lists the certificates of deleted devices and of
 * superseded keys itself. Node has no CRL API: this is a small DER writer for exactly that.
 */

export interface RevokedCertificate {
  /** Hex serial, as X509Certificate.serialNumber gives it. */
  readonly serialNumber: string;
  readonly revokedAt: Date;
}

export interface CrlInput {
  readonly caCertificatePem: string;
  readonly caKeyPem: string;
  readonly revoked: readonly RevokedCertificate[];
  readonly thisUpdate: Date;
  readonly nextUpdate: Date;
  /** Monotonic CRL number (RFC 5280 §5.2.3). */
  readonly number: number;
}

function length(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let rest = n; rest > 0; rest >>= 8) bytes.unshift(rest & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function tlv(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), length(body.length), body]);
}

const sequence = (...content: Buffer[]) => tlv(0x30, ...content);

function unsignedInteger(bytes: Buffer): Buffer {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  const trimmed = bytes.subarray(start);
  // A leading 1 bit would make the INTEGER negative.
  return tlv(0x02, (trimmed[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.from([0]), trimmed]) : trimmed);
}

const hexBytes = (hex: string) => Buffer.from(hex.length % 2 ? `0${hex}` : hex, "hex");
const integer = (n: number) => unsignedInteger(hexBytes(n.toString(16)));

function oid(dotted: string): Buffer {
  const [first = 0, second = 0, ...rest] = dotted.split(".").map(Number);
  const bytes = [40 * first + second];
  for (const arc of rest) {
    const base128: number[] = [arc & 0x7f];
    for (let v = arc >> 7; v > 0; v >>= 7) base128.unshift((v & 0x7f) | 0x80);
    bytes.push(...base128);
  }
  return tlv(0x06, Buffer.from(bytes));
}

/** UTCTime until 2049, GeneralizedTime after (RFC 5280 §4.1.2.5). */
function time(date: Date): Buffer {
  const iso = date.toISOString().replace(/[-:T]/g, "").slice(0, 14);
  return date.getUTCFullYear() < 2050
    ? tlv(0x17, Buffer.from(`${iso.slice(2)}Z`))
    : tlv(0x18, Buffer.from(`${iso}Z`));
}

/** Reads one TLV at `offset`: where its content starts and ends. */
function readTlv(der: Buffer, offset: number): { tag: number; start: number; end: number } {
  const tag = der[offset] ?? 0;
  let lengthByte = der[offset + 1] ?? 0;
  let start = offset + 2;
  let size = lengthByte;
  if (lengthByte & 0x80) {
    lengthByte &= 0x7f;
    size = 0;
    for (let i = 0; i < lengthByte; i++) size = size * 256 + (der[start + i] ?? 0);
    start += lengthByte;
  }
  return { tag, start, end: start + size };
}

/** The DER of the certificate's subject Name: a CRL's issuer must be byte-for-byte the CA's subject. */
export function subjectNameDer(certificate: X509Certificate): Buffer {
  const der = certificate.raw;
  const tbs = readTlv(der, readTlv(der, 0).start);
  let cursor = tbs.start;
  const fields: Array<{ start: number; end: number }> = [];
  while (cursor < tbs.end && fields.length < 6) {
    const field = readTlv(der, cursor);
    if (!(fields.length === 0 && field.tag === 0xa0)) fields.push({ start: cursor, end: field.end });
    cursor = field.end;
  }
  // serialNumber, signature, issuer, validity, subject
  const subject = fields[4];
  if (!subject) throw new Error("certificate has no subject");
  return der.subarray(subject.start, subject.end);
}

function signatureAlgorithm(keyType: string | undefined): { algorithm: Buffer; digest: string | null } {
  switch (keyType) {
    case "ec":
      return { algorithm: sequence(oid("1.2.840.10045.4.3.2")), digest: "sha256" };
    case "rsa":
      return { algorithm: sequence(oid("1.2.840.113549.1.1.11"), tlv(0x05)), digest: "sha256" };
    case "ed25519":
      return { algorithm: sequence(oid("1.3.101.112")), digest: null };
    default:
      throw new Error(`cannot sign a CRL with a ${keyType} key`);
  }
}

/** A signed CRL in PEM form. */
export function signCrl(input: CrlInput): string {
  const ca = new X509Certificate(input.caCertificatePem);
  const key = createPrivateKey(input.caKeyPem);
  if (!ca.checkPrivateKey(key)) throw new Error("the CA key does not match the CA certificate");
  const { algorithm, digest } = signatureAlgorithm(key.asymmetricKeyType);
  const revoked = [...input.revoked]
    .sort((a, b) => a.serialNumber.localeCompare(b.serialNumber))
    .map((r) => sequence(unsignedInteger(hexBytes(r.serialNumber)), time(r.revokedAt)));
  const crlNumber = sequence(oid("2.5.29.20"), tlv(0x04, integer(input.number)));
  const tbs = sequence(
    integer(1),
    algorithm,
    subjectNameDer(ca),
    time(input.thisUpdate),
    time(input.nextUpdate),
    ...(revoked.length ? [sequence(...revoked)] : []),
    tlv(0xa0, sequence(crlNumber)),
  );
  const signature = sign(digest, tbs, key);
  const der = sequence(tbs, algorithm, tlv(0x03, Buffer.from([0]), signature));
  const base64 = der.toString("base64").replace(/.{64}/g, "$&\n").replace(/\n$/, "");
  return `-----BEGIN X509 CRL-----\n${base64}\n-----END X509 CRL-----\n`;
}
