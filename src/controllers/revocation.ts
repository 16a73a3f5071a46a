import { createHash } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { tenantCAName } from "../api/derived-names.js";
import type { OperatorConfig } from "../config.js";
import { MANAGED_BY_LABEL, MANAGER, managedLabels, TENANT_LABEL } from "../desired/labels.js";
import {
  CRL_PUBLISHED_ANNOTATION,
  mergeRevocations,
  parseRevocations,
  REVOCATION_KEY,
  REVOCATION_LABEL,
  REVOKED_KEY,
  type Revocation,
  tenantCrlName,
} from "../desired/revocation.js";
import { signCrl } from "../pki/crl.js";
import { applyIfChanged } from "../runtime/apply.js";
import type { ReconcileContext, ReconcileRequest, ReconcileResult } from "../runtime/controller.js";
import { byLabel, type Informer } from "../runtime/informer.js";
import { objectKey } from "../runtime/kube-object.js";
import type { Manager } from "../runtime/manager.js";
import { indexedByTenant, Resource, TENANT_INDEX } from "./resources.js";
import { base64, type Secret, secretText } from "./secrets.js";

/**
 * Revocation: per tenant CA, the list of certificates that must no longer be accepted (deleted
 * devices, superseded keys) and a CRL signed with the tenant's CA key; all tenants' CRLs combined
 * for the broker (`crlfile`), which Mosquitto re-reads on SIGHUP. The broker's dynamic-security
 * cut-off acts at once; the CRL makes a revoked certificate fail the TLS handshake itself.
 * Requests arrive as revocation record Secrets (desired/revocation.ts); this controller alone
 * writes the tenant's CRL Secret, so concurrent requests never conflict.
 */

export const CRL_LABEL = "iot.tenant-operator.io/crl";
/** The operator's Secrets that belong to a tenant: CAs, issued certificates, mirrors, CRLs. */
export const MANAGED_SECRETS = `${TENANT_LABEL},${MANAGED_BY_LABEL}=${MANAGER}`;
export const BROKER_CRL_SECRET = "iot-broker-crl";
/** The key of BROKER_CRL_SECRET that the broker mounts as its `crlfile`. */
export const BROKER_CRL_KEY = "crl.pem";
const CRL_LIFETIME_MS = 7 * 86_400_000;
/** Re-signed when less than this is left, so the broker never holds an expired CRL. */
const RESIGN_BEFORE_MS = 2 * 86_400_000;

const digest = (text: string) => createHash("sha256").update(text).digest("hex").slice(0, 16);

function revocationsOf(secret: Secret | undefined): Revocation[] {
  return parseRevocations(secretText(secret, REVOKED_KEY) ?? "[]");
}

export class RevocationReconciler {
  private readonly tenants: Informer;
  private readonly secrets: Informer<Secret>;

  /**
   * `onRevocations` hears each tenant's revoked serials once its CRL is signed: a broker that checks
   * certificates itself (NATS: the operator's auth callout) refuses them and drops their connections.
   */
  constructor(
    private readonly manager: Manager,
    private readonly config: OperatorConfig,
    private readonly onRevocations?: (tenant: string, serials: readonly string[]) => Promise<void>,
  ) {
    this.tenants = manager.informer(Resource.tenant);
    this.secrets = indexedByTenant(
      manager.informer<Secret>(Resource.secret, { labelSelector: MANAGED_SECRETS }),
    );
    this.secrets.addIndex(CRL_LABEL, byLabel(CRL_LABEL));
  }

  register(): void {
    this.manager.addController({
      name: "revocation",
      for: this.tenants,
      watches: [
        {
          informer: this.secrets as Informer,
          // What a tenant's CRL is made of: its CA, its revocation records, the CRL itself. Issued
          // device certificates and mirrors do not change it (thousands of them must not re-run this).
          map: (secret) => {
            const labels = secret.metadata.labels ?? {};
            const tenant = labels[TENANT_LABEL];
            const input =
              labels[REVOCATION_LABEL] === "true" ||
              labels[CRL_LABEL] === "true" ||
              secret.metadata.name === tenantCAName(tenant ?? "");
            return tenant && input && secret.metadata.namespace === this.config.OPERATOR_NAMESPACE
              ? [tenant]
              : [];
          },
        },
      ],
      reconcile: (request, context) => this.reconcile(request, context),
    });
  }

  async reconcile(
    request: ReconcileRequest,
    context: ReconcileContext,
  ): Promise<ReconcileResult | undefined> {
    const { signal } = context;
    const records = this.secrets
      .byIndex(TENANT_INDEX, request.name)
      .filter(
        (s) =>
          s.metadata.labels?.[REVOCATION_LABEL] === "true" &&
          s.metadata.namespace === this.config.OPERATOR_NAMESPACE,
      );
    const tenant = this.tenants.get(request.key);
    if (!tenant || tenant.metadata.deletionTimestamp) {
      // Its CA goes with it: nothing it signed is trusted any more, so there is nothing left to revoke.
      const crl = { namespace: this.config.OPERATOR_NAMESPACE, name: tenantCrlName(request.name) };
      await this.manager.client.delete(Resource.secret, crl, { signal });
      for (const record of records)
        await this.manager.client.delete(Resource.secret, record.metadata, { signal });
      await this.publish(context);
      return undefined;
    }
    const result = await this.signTenantCrl(request.name, records, context);
    await this.publish(context);
    if (result.revoked)
      await this.onRevocations?.(
        request.name,
        result.revoked.map((r) => r.serialNumber),
      );
    if (result.folded) {
      for (const record of records)
        await this.manager.client.delete(Resource.secret, record.metadata, { signal });
    }
    return { requeueAfterMs: result.requeueAfterMs };
  }

  /** Signs the tenant's CRL with the requested revocations in it; `folded` once the CRL Secret holds them. */
  private async signTenantCrl(
    tenant: string,
    records: readonly Secret[],
    context: ReconcileContext,
  ): Promise<{ folded: boolean; requeueAfterMs: number; revoked?: readonly Revocation[] }> {
    const namespace = this.config.OPERATOR_NAMESPACE;
    const ca = this.secrets.get(objectKey({ namespace, name: tenantCAName(tenant) }));
    const [caCertificatePem, caKeyPem] = [secretText(ca, "tls.crt"), secretText(ca, "tls.key")];
    if (!caCertificatePem || !caKeyPem) return { folded: false, requeueAfterMs: 5_000 };
    const current = this.secrets.get(objectKey({ namespace, name: tenantCrlName(tenant) }));
    const now = this.manager.clock.now();
    const requested = records.flatMap((record) =>
      parseRevocations(`[${secretText(record, REVOCATION_KEY)}]`),
    );
    const revoked = mergeRevocations(revocationsOf(current), requested, now);
    const listDigest = digest(`${JSON.stringify(revoked)}|${digest(caCertificatePem)}`);
    const signedUntil = Number(
      current?.metadata.annotations?.["iot.tenant-operator.io/crl-next-update"] ?? 0,
    );
    const fresh = current?.metadata.annotations?.["iot.tenant-operator.io/crl-digest"] === listDigest;
    if (fresh && secretText(current, "ca.crl") && signedUntil - now > RESIGN_BEFORE_MS) {
      return { folded: true, requeueAfterMs: signedUntil - now - RESIGN_BEFORE_MS, revoked };
    }
    const number = Number(current?.metadata.annotations?.["iot.tenant-operator.io/crl-number"] ?? 0) + 1;
    const nextUpdate = now + CRL_LIFETIME_MS;
    const crl = await signCrl({
      caCertificatePem,
      caKeyPem,
      revoked: revoked.map((r) => ({ serialNumber: r.serialNumber, revokedAt: new Date(r.revokedAt) })),
      // A minute back, so a broker whose clock is slightly behind still accepts it.
      thisUpdate: new Date(now - 60_000),
      nextUpdate: new Date(nextUpdate),
      number,
    });
    await applyIfChanged(
      this.manager.client,
      Resource.secret,
      {
        apiVersion: "v1",
        kind: "Secret",
        metadata: {
          namespace,
          name: tenantCrlName(tenant),
          labels: { ...managedLabels(tenant), [CRL_LABEL]: "true" },
          annotations: {
            "iot.tenant-operator.io/crl-digest": listDigest,
            "iot.tenant-operator.io/crl-number": String(number),
            "iot.tenant-operator.io/crl-next-update": String(nextUpdate),
          },
        },
        type: "Opaque",
        data: { [REVOKED_KEY]: base64(JSON.stringify(revoked)), "ca.crl": base64(crl) },
      },
      current,
      context.signal,
    );
    context.logger.info({ tenant, revoked: revoked.length, number }, "tenant CRL signed");
    return { folded: true, requeueAfterMs: CRL_LIFETIME_MS - RESIGN_BEFORE_MS, revoked };
  }

  /**
   * Hands every tenant's CRL to the broker: a Secret in the broker's namespace to mount as its
   * `crlfile`, and, for a broker on this host, the file itself plus SIGHUP so it re-reads it.
   */
  private async publish(context: ReconcileContext): Promise<void> {
    const crls = this.secrets
      .byIndex(CRL_LABEL, "true")
      .filter((s) => s.metadata.namespace === this.config.OPERATOR_NAMESPACE && secretText(s, "ca.crl"))
      .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
    const include = this.config.BROKER_CRL_INCLUDE_FILE
      ? await readFile(this.config.BROKER_CRL_INCLUDE_FILE, "utf8")
      : "";
    const combined = include + crls.map((s) => secretText(s, "ca.crl")).join("");
    const target = { namespace: this.config.BROKER_NAMESPACE, name: BROKER_CRL_SECRET };
    await applyIfChanged(
      this.manager.client,
      Resource.secret,
      {
        apiVersion: "v1",
        kind: "Secret",
        metadata: { ...target, labels: { [MANAGED_BY_LABEL]: MANAGER, [CRL_LABEL]: "true" } },
        type: "Opaque",
        data: { [BROKER_CRL_KEY]: base64(combined) },
      },
      await this.manager.client.get(Resource.secret, target, context.signal),
      context.signal,
    );
    if (this.config.BROKER_CRL_FILE) await this.reloadLocalBroker(this.config.BROKER_CRL_FILE, combined);
    // Now the broker holds these CRLs: their tenants' certificates can pass its CRL check.
    for (const crl of crls) {
      if (crl.metadata.annotations?.[CRL_PUBLISHED_ANNOTATION] === "true") continue;
      await this.manager.client.mergePatch(
        Resource.secret,
        crl.metadata,
        { metadata: { annotations: { [CRL_PUBLISHED_ANNOTATION]: "true" } } },
        context.signal,
      );
    }
  }

  private async reloadLocalBroker(file: string, combined: string): Promise<void> {
    const previous = await readFile(file, "utf8").catch(() => "");
    if (previous === combined) return;
    await writeFile(file, combined);
    if (this.config.BROKER_PID_FILE) {
      const pid = Number((await readFile(this.config.BROKER_PID_FILE, "utf8")).trim());
      process.kill(pid, "SIGHUP");
    }
  }
}
