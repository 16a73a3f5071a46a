import { createPrivateKey, createPublicKey, webcrypto } from "node:crypto";
import type * as x509 from "./x509.js";

/**
 * PEM keys as WebCrypto signing keys for @peculiar/x509. The crypto provider is passed to each
 * call instead of set globally, so nothing here is module state.
 */

type CreateCrl = Parameters<typeof x509.X509CrlGenerator.create>;
/** Node's WebCrypto, typed as the library declares it (this project compiles without the DOM lib). */
export const crypto = webcrypto as unknown as NonNullable<CreateCrl[1]>;

export interface SigningKey {
  readonly key: CreateCrl[0]["signingKey"];
  readonly algorithm: CreateCrl[0]["signingAlgorithm"];
}

const CURVES: Record<string, string> = { prime256v1: "P-256", secp384r1: "P-384", secp521r1: "P-521" };

/** A CA's PEM private key (EC or RSA, as cert-manager and openssl write them), to sign with SHA-256. */
export async function signingKey(pem: string): Promise<SigningKey> {
  const object = createPrivateKey(pem);
  const curve = CURVES[object.asymmetricKeyDetails?.namedCurve ?? ""];
  const pkcs8 = object.export({ format: "der", type: "pkcs8" });
  if (object.asymmetricKeyType === "ec" && curve) {
    const key = await webcrypto.subtle.importKey(
      "pkcs8",
      pkcs8,
      { name: "ECDSA", namedCurve: curve },
      false,
      ["sign"],
    );
    return {
      key: key as SigningKey["key"],
      algorithm: { name: "ECDSA", hash: "SHA-256" } as SigningKey["algorithm"],
    };
  }
  if (object.asymmetricKeyType === "rsa") {
    const algorithm = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" };
    const key = await webcrypto.subtle.importKey("pkcs8", pkcs8, algorithm, false, ["sign"]);
    return { key: key as SigningKey["key"], algorithm: algorithm as SigningKey["algorithm"] };
  }
  throw new Error(`cannot sign with a ${object.asymmetricKeyType} key: use EC (P-256/384/521) or RSA`);
}

/** Whether `pem` is the private key of `certificate`: their SubjectPublicKeyInfo are the same. */
export function keyMatches(certificate: x509.X509Certificate, pem: string): boolean {
  const fromKey = createPublicKey(pem).export({ format: "der", type: "spki" });
  return fromKey.equals(Buffer.from(certificate.publicKey.rawData));
}
