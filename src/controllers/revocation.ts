import { createHash } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { z } from "zod";
import { tenantCAName } from "../api/derived-names.js";
import type { OperatorConfig } from "../config.js";
import { MANAGED_BY_LABEL, MANAGER, managedLabels, TENANT_LABEL } from "../desired/labels.js";
import { signCrl } from "../pki/crl.js";
import { applyIfChanged } from "../runtime/apply.js";
import type { ReconcileContext, ReconcileRequest, ReconcileResult } from "../runtime/controller.js";
import type { Informer } from "../runtime/informer.js";
import { objectKey } from "../runtime/kube-object.js";
import type { Manager } from "../runtime/manager.js";
import { Resource } from "./resources.js";
import { base64, type Secret, secretText } from "./secrets.js";

/**
 * Revocation: per tenant CA, the list of certificates that must no longer be accepted (deleted
 * devices, superseded keys) and a CRL signed with the tenant's CA key; all tenants' CRLs combined
 * for the broker (`crlfile`), which Mosquitto re-reads on SIGHUP. The broker's dynamic-security
 * cut-off acts at once; the CRL makes a revoked certificate fail the TLS handshake itself.
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

const revokedSchema = z.array(
  z.object({
    serialNumber: z.string(),
    revokedAt: z.iso.datetime(),
    notAfter: z.iso.datetime(),
    device: z.string(),
  }),
);
export type Revocation = z.infer<typeof revokedSchema>[number];

export function tenantCrlName(tenant: string): string {
  return `tenant-${tenant}-crl`;
}

const digest = (text: string) => createHash("sha256").update(text).digest("hex").slice(0, 16);

function revocationsOf(secret: Secret | undefined): Revocation[] {
  const parsed = revokedSchema.safeParse(JSON.parse(secretText(secret, "revoked.json") ?? "[]"));
  return parsed.success ? parsed.data : [];
}

export class RevocationReconciler {
  private readonly tenants: Informer;
  private readonly secrets: Informer<Secret>;
  /** Tenants whose CRL the broker holds since the last publication. */
  private published = new Set<string>();

  constructor(
    private readonly manager: Manager,
    private readonly config: OperatorConfig,
  ) {
    this.tenants = manager.informer(Resource.tenant);
    this.secrets = manager.informer<Secret>(Resource.secret, { labelSelector: MANAGED_SECRETS });
  }

  register(): void {
    this.manager.addController({
      name: "revocation",
      for: this.tenants,
      watches: [
        {
          informer: this.secrets as Informer,
          map: (secret) => {
            const tenant = secret.metadata.labels?.[TENANT_LABEL];
            return tenant && secret.metadata.namespace === this.config.OPERATOR_NAMESPACE ? [tenant] : [];
          },
        },
      ],
      reconcile: (request, context) => this.reconcile(request, context),
    });
  }

  /** Whether a device of `tenant` can pass the broker's CRL check yet (its CA's CRL is published). */
  isPublished(tenant: string): boolean {
    return this.published.has(tenant);
  }

  /** Adds a certificate to the tenant's revocation list; the CRL is re-signed by the next reconcile. */
  async revoke(tenant: string, revocation: Revocation, signal: AbortSignal): Promise<void> {
    const target = { namespace: this.config.OPERATOR_NAMESPACE, name: tenantCrlName(tenant) };
    const current = (await this.manager.client.get(Resource.secret, target, signal)) as Secret | undefined;
    const revoked = revocationsOf(current);
    if (revoked.some((r) => r.serialNumber === revocation.serialNumber)) return;
    const data = { ...current?.data, "revoked.json": base64(JSON.stringify([...revoked, revocation])) };
    const object = {
      apiVersion: "v1",
      kind: "Secret",
      metadata: {
        ...target,
        labels: { ...managedLabels(tenant), [CRL_LABEL]: "true" },
        ...(current ? { resourceVersion: current.metadata.resourceVersion } : {}),
      },
      type: "Opaque",
      data,
    };
    // Optimistic: a concurrent revocation makes this a 409 and the caller's reconcile retries.
    if (current) await this.manager.client.update(Resource.secret, object, signal);
    else await this.manager.client.create(Resource.secret, object, signal);
  }

  async reconcile(
    request: ReconcileRequest,
    context: ReconcileContext,
  ): Promise<ReconcileResult | undefined> {
    const tenant = this.tenants.get(request.key);
    const result = tenant ? await this.signTenantCrl(request.name, context) : undefined;
    await this.publish(context);
    return result;
  }

  private async signTenantCrl(
    tenant: string,
    context: ReconcileContext,
  ): Promise<ReconcileResult | undefined> {
    const namespace = this.config.OPERATOR_NAMESPACE;
    const ca = this.secrets.get(objectKey({ namespace, name: tenantCAName(tenant) }));
    const [caCertificatePem, caKeyPem] = [secretText(ca, "tls.crt"), secretText(ca, "tls.key")];
    if (!caCertificatePem || !caKeyPem) return { requeueAfterMs: 5_000 };
    const current = this.secrets.get(objectKey({ namespace, name: tenantCrlName(tenant) }));
    const now = this.manager.clock.now();
    const revoked = revocationsOf(current).filter((r) => Date.parse(r.notAfter) > now);
    const listDigest = digest(`${JSON.stringify(revoked)}|${digest(caCertificatePem)}`);
    const signedUntil = Number(
      current?.metadata.annotations?.["iot.tenant-operator.io/crl-next-update"] ?? 0,
    );
    const fresh = current?.metadata.annotations?.["iot.tenant-operator.io/crl-digest"] === listDigest;
    if (fresh && secretText(current, "ca.crl") && signedUntil - now > RESIGN_BEFORE_MS) {
      return { requeueAfterMs: signedUntil - now - RESIGN_BEFORE_MS };
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
        data: { "revoked.json": base64(JSON.stringify(revoked)), "ca.crl": base64(crl) },
      },
      current,
      context.signal,
    );
    context.logger.info({ tenant, revoked: revoked.length, number }, "tenant CRL signed");
    return { requeueAfterMs: CRL_LIFETIME_MS - RESIGN_BEFORE_MS };
  }

  /**
   * Hands every tenant's CRL to the broker: a Secret in the broker's namespace to mount as its
   * `crlfile`, and, for a broker on this host, the file itself plus SIGHUP so it re-reads it.
   */
  private async publish(context: ReconcileContext): Promise<void> {
    const crls = this.secrets
      .list(this.config.OPERATOR_NAMESPACE)
      .filter((s) => s.metadata.labels?.[CRL_LABEL] === "true" && secretText(s, "ca.crl"))
      .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
    const tenants = crls.map((s) => s.metadata.labels?.[TENANT_LABEL] ?? "");
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
    this.published = new Set(tenants);
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
