import { createHash } from "node:crypto";
import { API_GROUP } from "../api/group.js";
import { describeCertificate, type IssuedCertificate } from "../desired/device.js";
import { DEVICE_LABEL } from "../desired/labels.js";
import { REVOCATION_LABEL } from "../desired/revocation.js";
import type { ApplyIntent } from "../runtime/kube-client.js";
import type { KubeObject } from "../runtime/kube-object.js";

/**
 * A Secret as the informers cache it: `data` values are base64. A device's credentials (the issued
 * key pair in the operator's namespace, its mirror, a password Secret: two per device, thousands per
 * tenant) keep a digest of each key instead of its bytes, and what the broker sees of the certificate;
 * of their bytes only the password stays, which the broker needs at every resync. The few Secrets
 * per tenant whose bytes a reconciler reads (CA, CRL, revocation records, root CA) are kept whole.
 */
export type Secret = KubeObject & {
  data?: Record<string, string>;
  type?: string;
  /** A device's credentials: digest of each key's base64 value. */
  digests?: Record<string, string>;
  /** A device's credentials with a `tls.crt` that parses. */
  certificate?: IssuedCertificate;
};

/** The one key of a device's credentials whose bytes stay in the cache. */
const KEPT_KEY = "password";

export function contentDigest(base64Value: string): string {
  return createHash("sha256").update(base64Value).digest("hex").slice(0, 32);
}

function isDeviceCredentials(secret: KubeObject): boolean {
  const labels = secret.metadata.labels ?? {};
  return labels[DEVICE_LABEL] !== undefined && labels[REVOCATION_LABEL] !== "true";
}

function describedOrUndefined(base64Pem: string | undefined): IssuedCertificate | undefined {
  if (base64Pem === undefined) return undefined;
  try {
    return describeCertificate(Buffer.from(base64Pem, "base64").toString("utf8"));
  } catch {
    // Not a certificate: the device waits for one, as when the key is missing.
    return undefined;
  }
}

/**
 * Only the operator's own annotations: cert-manager writes nine of its own on every issued key pair
 * (names, SANs, issuer), which no reconciler reads — at 10,000 devices a few MB of heap.
 */
function withOwnAnnotations(metadata: KubeObject["metadata"]): KubeObject["metadata"] {
  const { annotations, ...rest } = metadata;
  const own = Object.entries(annotations ?? {}).filter(([key]) => key.startsWith(`${API_GROUP}/`));
  return own.length > 0 ? { ...rest, annotations: Object.fromEntries(own) } : rest;
}

/** Resource.secret's cache form (see Secret). */
export function secretCacheForm(object: KubeObject): KubeObject {
  const { data, ...rest } = object as Secret;
  if (data === undefined || !isDeviceCredentials(object)) return object;
  const kept = data[KEPT_KEY];
  const certificate = describedOrUndefined(data["tls.crt"]);
  return {
    ...rest,
    metadata: withOwnAnnotations(rest.metadata),
    ...(kept === undefined ? {} : { data: { [KEPT_KEY]: kept } }),
    digests: Object.fromEntries(Object.entries(data).map(([key, value]) => [key, contentDigest(value)])),
    ...(certificate ? { certificate } : {}),
  } as Secret;
}

/**
 * The cache form of a device's key pair Secret `shape` (its metadata and type) holding the key pair of
 * `issued` (cached) and `caCrt`: what the cache holds once it is written, known without the bytes.
 */
export function cachedKeyPair(shape: ApplyIntent, issued: Secret, caCrt: string): ApplyIntent {
  const { data: _none, ...rest } = shape;
  return {
    ...rest,
    digests: {
      "tls.crt": issued.digests?.["tls.crt"] ?? "",
      "tls.key": issued.digests?.["tls.key"] ?? "",
      "ca.crt": contentDigest(caCrt),
    },
    ...(issued.certificate ? { certificate: issued.certificate } : {}),
  };
}

/** One key of a Secret as text, or undefined when absent. */
export function secretText(secret: Secret | undefined, key: string): string | undefined {
  const value = secret?.data?.[key];
  return value === undefined ? undefined : Buffer.from(value, "base64").toString("utf8");
}

export function base64(text: string): string {
  return Buffer.from(text).toString("base64");
}
