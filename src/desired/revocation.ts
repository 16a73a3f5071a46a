import { z } from "zod";
import { API_GROUP } from "../api/group.js";
import { DEVICE_LABEL, DEVICE_NAMESPACE_LABEL, managedLabels } from "./labels.js";
import type { KubeObject } from "./tenant.js";

/**
 * How the Device controller asks for a certificate to be revoked, through the API: a record Secret
 * in the operator's namespace that the revocation controller folds into the tenant's CRL and then
 * deletes. And how the revocation controller says a tenant's CRL is in the broker: an annotation
 * on the tenant's CRL Secret. Neither controller calls the other. No IO.
 */

/** On a revocation record Secret. */
export const REVOCATION_LABEL = `${API_GROUP}/revocation`;
/** On a tenant's CRL Secret once the broker holds that CRL: until then the broker refuses the tenant's certificates. */
export const CRL_PUBLISHED_ANNOTATION = `${API_GROUP}/crl-published`;
/** The record's one data key. */
export const REVOCATION_KEY = "revocation.json";

const revocationSchema = z.object({
  serialNumber: z.string(),
  revokedAt: z.iso.datetime(),
  notAfter: z.iso.datetime(),
  /** `namespace/name` of the Device the certificate was issued to. */
  device: z.string(),
});
export type Revocation = z.infer<typeof revocationSchema>;

/** A JSON list of revocations; entries that do not parse are dropped (a hand-edited Secret cannot stop the rest). */
export function parseRevocations(json: string): Revocation[] {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return [];
  }
  return Array.isArray(value) ? value.flatMap((entry) => revocationSchema.safeParse(entry).data ?? []) : [];
}

/** The CRL's list: what it had plus the new requests, each serial once, expired ones dropped. */
export function mergeRevocations(
  listed: readonly Revocation[],
  requested: readonly Revocation[],
  nowMs: number,
): Revocation[] {
  const bySerial = new Map<string, Revocation>();
  for (const r of [...listed, ...requested])
    if (!bySerial.has(r.serialNumber)) bySerial.set(r.serialNumber, r);
  return [...bySerial.values()].filter((r) => Date.parse(r.notAfter) > nowMs);
}

/** The tenant CRL Secret's list of revocations, which the revocation controller keeps. */
export const REVOKED_KEY = "revoked.json";

/** Head room on top of one revocation per device: devices replaced within a certificate's lifetime. */
export const REVOCATION_HEADROOM = 100;

/**
 * How many unexpired revocations a tenant's CRL may hold before the tenant gets no new device
 * certificate: one per allowed device (a superseded key after renewal) plus head room. All tenants'
 * CRLs share one Secret of at most 1 MiB (about 88 bytes an entry in PEM), so one tenant's device
 * churn must not fill it and stop revocation for every tenant (I6). Existing devices keep renewing.
 */
export function revocationBudget(maxDevices: number): number {
  return maxDevices + REVOCATION_HEADROOM;
}

export function tenantCrlName(tenant: string): string {
  return `tenant-${tenant}-crl`;
}

/** A record asking for `revocation` on the tenant's CRL; named by serial, so asking twice is one record. */
export function revocationRecord(
  tenant: string,
  operatorNamespace: string,
  revocation: Revocation,
  device: { namespace: string; name: string },
): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata: {
      namespace: operatorNamespace,
      name: `revocation-${tenant}-${revocation.serialNumber}`,
      labels: {
        ...managedLabels(tenant),
        [REVOCATION_LABEL]: "true",
        // Its events reach that Device's reconcile only, not every device of the tenant.
        [DEVICE_LABEL]: device.name,
        [DEVICE_NAMESPACE_LABEL]: device.namespace,
      },
    },
    type: "Opaque",
    data: { [REVOCATION_KEY]: Buffer.from(JSON.stringify(revocation)).toString("base64") },
  };
}
