import { AsnConvert } from "@peculiar/asn1-schema";
import { CRLNumber, id_ce_cRLNumber } from "@peculiar/asn1-x509";
import { crypto, keyMatches, signingKey } from "./keys.js";
import * as x509 from "./x509.js";

/**
 * X.509 v2 CRLs (RFC 5280 §5) signed with a tenant's CA key. cert-manager issues certificates but
 * publishes no revocation, so the operator lists the certificates of deleted devices and of
 * superseded keys itself. Each CRL carries the CRL number and the AuthorityKeyIdentifier
 * (RFC 5280 §5.2.1, §5.2.3) of the CA that signs it.
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

/** The CA's own key identifier when it has one, so chain builders match the CRL to it; else one from its key. */
async function authorityKeyIdentifier(ca: x509.X509Certificate): Promise<x509.Extension> {
  const own = ca.getExtension(x509.SubjectKeyIdentifierExtension);
  return own
    ? new x509.AuthorityKeyIdentifierExtension(own.keyId)
    : x509.AuthorityKeyIdentifierExtension.create(ca.publicKey, false, crypto);
}

/** A signed CRL in PEM form. */
export async function signCrl(input: CrlInput): Promise<string> {
  const ca = new x509.X509Certificate(input.caCertificatePem);
  if (!keyMatches(ca, input.caKeyPem)) throw new Error("the CA key does not match the CA certificate");
  const { key, algorithm } = await signingKey(input.caKeyPem);
  const crl = await x509.X509CrlGenerator.create(
    {
      // The CA's subject as encoded in its certificate: a CRL's issuer must match it byte for byte.
      issuer: ca.subjectName,
      thisUpdate: input.thisUpdate,
      nextUpdate: input.nextUpdate,
      signingAlgorithm: algorithm,
      signingKey: key,
      entries: [...input.revoked]
        .sort((a, b) => a.serialNumber.localeCompare(b.serialNumber))
        // A reason code gives each entry its one extension (an empty extension list is not DER).
        .map((r) => ({
          serialNumber: r.serialNumber,
          revocationDate: r.revokedAt,
          reason: x509.X509CrlReason.cessationOfOperation,
        })),
      extensions: [
        await authorityKeyIdentifier(ca),
        new x509.Extension(id_ce_cRLNumber, false, AsnConvert.serialize(new CRLNumber(input.number))),
      ],
    },
    crypto,
  );
  return `${x509.PemConverter.encode(crl.rawData, "X509 CRL")}\n`;
}
