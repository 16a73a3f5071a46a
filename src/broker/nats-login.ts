import { createHash, timingSafeEqual, X509Certificate } from "node:crypto";
import { z } from "zod";
import type { BrokerDevice } from "./adapter.js";
import { type DevicePermissions, devicePermissions } from "./nats-subjects.js";
import { certificateUsername, deviceSubject, subjectUsername } from "./subject.js";

/** The part of nats-server's authorization request (`$SYS.REQ.USER.AUTH`) the decision reads. */
export const authorizationRequestSchema = z.object({
  server_id: z.object({ id: z.string().min(1), name: z.string() }),
  user_nkey: z.string().min(1),
  client_info: z.object({
    type: z.string().optional(),
    mqtt_id: z.string().optional(),
  }),
  connect_opts: z.object({
    user: z.string().optional(),
    pass: z.string().optional(),
  }),
  /**
   * The TLS session. With `verify: optional` the server verifies a presented client certificate
   * against the device root and sends the chains it built (PEM, leaf first); `certs` would be an
   * unverified one, which the decision never accepts.
   */
  client_tls: z
    .object({
      verified_chains: z.array(z.array(z.string())).nullish(),
      certs: z.array(z.string()).nullish(),
    })
    .nullish(),
});
export type AuthorizationRequest = z.infer<typeof authorizationRequestSchema>;

/** What the operator knows of a tenant's device PKI: its CA (cert-manager's issuer) and its revocations. */
export interface TenantTrust {
  readonly caCertificatePem: string;
  /** Lower-case hex serials of the tenant's revoked certificates (its CRL). */
  readonly revokedSerials: ReadonlySet<string>;
}

export interface LoginDirectory {
  /** The device with these credentials' username (a password device's, or a certificate subject). */
  deviceByUsername(username: string): BrokerDevice | undefined;
  tenantTrust(tenant: string): TenantTrust | undefined;
}

export type LoginDecision =
  | {
      readonly allow: true;
      readonly device: BrokerDevice;
      readonly permissions: DevicePermissions;
      /** The serial of the certificate it logged in with (lower-case hex), so a revocation finds the connection. */
      readonly certificateSerial?: string;
    }
  | { readonly allow: false; readonly reason: string };

/** The MQTT client id a device must use on NATS, whatever its credentials: no device can take over another's session. */
export function deviceClientId(device: Pick<BrokerDevice, "tenant" | "device">): string {
  return `${device.tenant}/${device.device}`;
}

function sameSecret(given: string, expected: string): boolean {
  const digest = (text: string) => createHash("sha256").update(text, "utf8").digest();
  return timingSafeEqual(digest(given), digest(expected));
}

function sameKey(a: X509Certificate, b: X509Certificate): boolean {
  const spki = (c: X509Certificate) => c.publicKey.export({ format: "der", type: "spki" });
  return spki(a).equals(spki(b));
}

const refuse = (reason: string): LoginDecision => ({ allow: false, reason });

/** The served device a login names, before any check that it may log in now. */
type Identified =
  | { readonly device: BrokerDevice; readonly certificateSerial?: string }
  | { readonly refused: string };

function passwordIdentity(request: AuthorizationRequest, directory: LoginDirectory): Identified {
  const device = directory.deviceByUsername(request.connect_opts.user ?? "");
  const { credentials } = device ?? {};
  if (!device || credentials?.type !== "password") return { refused: "unknown user" };
  if (!sameSecret(request.connect_opts.pass ?? "", credentials.password)) return { refused: "unknown user" };
  return { device };
}

/**
 * A certificate login: the server verified the chain up to the device root; the leaf's subject must
 * be exactly O=<tenant>,CN=<device> of an x509 device, the CA that issued it must be that tenant's
 * own (by key: a root-signed leaf, or one another tenant's CA signed, is refused), and its serial
 * must not be revoked.
 */
function certificateIdentity(chains: readonly (readonly string[])[], directory: LoginDirectory): Identified {
  const parsed = chains.map((chain) => chain.map((pem) => new X509Certificate(pem)));
  const leaf = parsed[0]?.[0];
  if (!leaf) return { refused: "unknown user" };
  const username = certificateUsername(leaf);
  const device = directory.deviceByUsername(username);
  if (
    !device ||
    device.credentials.type !== "x509" ||
    username !== subjectUsername(deviceSubject(device.tenant, device.device))
  )
    return { refused: "unknown user" };
  const trust = directory.tenantTrust(device.tenant);
  const tenantCa = trust && new X509Certificate(trust.caCertificatePem);
  // The issuer is the chain's second certificate; exactly three: leaf, tenant CA, root.
  const fromTenantCa = parsed.some((chain) => {
    const issuer = chain[1];
    return chain.length === 3 && tenantCa !== undefined && issuer !== undefined && sameKey(issuer, tenantCa);
  });
  if (!trust || !fromTenantCa) return { refused: "the certificate is not from the device's tenant CA" };
  const certificateSerial = leaf.serialNumber.toLowerCase();
  if (trust.revokedSerials.has(certificateSerial)) return { refused: "the certificate is revoked" };
  return { device, certificateSerial };
}

/**
 * Whether a login may proceed, and as whom. The broker asks for every connection, so this is the
 * whole policy: only MQTT clients; a login presents a verified client certificate or a password,
 * never both; either names a device the operator currently serves (enabled, tenant not suspended)
 * with credentials of that kind; the MQTT client id is `<tenant>/<device>`, so no device can take
 * over or knock off another's session; the device gets exactly its own grant.
 */
export function decideLogin(request: AuthorizationRequest, directory: LoginDirectory): LoginDecision {
  if (request.client_info.type !== "mqtt") return refuse("only MQTT devices log in here");
  const chains = request.client_tls?.verified_chains ?? [];
  if (chains.length > 0 && request.connect_opts.pass !== undefined)
    return refuse("a login presents a certificate or a password, not both");
  const identified =
    chains.length > 0 ? certificateIdentity(chains, directory) : passwordIdentity(request, directory);
  if ("refused" in identified) return refuse(identified.refused);
  const { device } = identified;
  if (!device.enabled || device.suspended) return refuse("device is cut off");
  if (request.client_info.mqtt_id !== deviceClientId(device))
    return refuse("the MQTT client id must be <tenant>/<device>");
  return {
    allow: true,
    device,
    permissions: devicePermissions(device),
    ...(identified.certificateSerial ? { certificateSerial: identified.certificateSerial } : {}),
  };
}
