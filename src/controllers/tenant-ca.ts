import { ConditionReason } from "../api/conditions.js";
import { tenantCAName } from "../api/derived-names.js";
import type { OperatorConfig } from "../config.js";
import { MANAGED_BY_LABEL, MANAGER, managedLabels, TENANT_LABEL } from "../desired/labels.js";
import { ownerReferenceTo } from "../desired/tenant.js";
import { newCaKey, signTenantCa, type TenantCaDecision, tenantCaDecision } from "../pki/tenant-ca.js";
import type { ReconcileContext } from "../runtime/controller.js";
import type { Informer } from "../runtime/informer.js";
import { KubeApiError } from "../runtime/kube-client.js";
import { objectKey } from "../runtime/kube-object.js";
import type { Manager } from "../runtime/manager.js";
import { Resource } from "./resources.js";
import { base64, type Secret, secretText } from "./secrets.js";

/**
 * The tenant's CA key pair in the operator's namespace (`tenant-<t>-ca`: tls.crt, tls.key, ca.crt),
 * signed by the operator with the root CA key from ROOT_CA_SECRET. cert-manager's CA Issuer of the
 * tenant reads it to issue device certificates. Written only when the pure decision asks for it,
 * and only over a Secret this Tenant owns (I7).
 */

export interface TenantCaStatus {
  readonly ready: boolean;
  /** Why it is not ready: waiting (IssuerNotReady), or a problem only a person can fix. */
  readonly reason: ConditionReason;
  readonly message: string;
  /** When the CA is next due for renewal, or a retry while it is not ready. */
  readonly requeueAfterMs: number;
}

const RETRY_MS = 5_000;
/** A Secret in the way that is not ours: only its owner can clear it; its changes are watched when labelled. */
const NOT_OURS_RETRY_MS = 60_000;
const MAX_REQUEUE_MS = 24 * 3_600_000;

const notOurs = (namespace: string, name: string): TenantCaStatus => ({
  ready: false,
  reason: ConditionReason.CANotOwned,
  message: `Secret ${namespace}/${name} exists and is not this tenant's: it is left alone`,
  requeueAfterMs: NOT_OURS_RETRY_MS,
});

export class TenantCA {
  /** The root CA Secret only; it carries no tenant labels. */
  readonly root: Informer<Secret>;
  /** The operator's per-tenant Secrets, shared with the revocation controller. */
  readonly secrets: Informer<Secret>;

  constructor(
    private readonly manager: Manager,
    private readonly config: OperatorConfig,
  ) {
    this.root = manager.informer<Secret>(Resource.secret, {
      namespace: config.OPERATOR_NAMESPACE,
      fieldSelector: `metadata.name=${config.ROOT_CA_SECRET}`,
    });
    this.secrets = manager.informer<Secret>(Resource.secret, {
      labelSelector: `${TENANT_LABEL},${MANAGED_BY_LABEL}=${MANAGER}`,
    });
  }

  async reconcile(
    tenant: { metadata: { name: string; uid?: string | undefined } },
    context: ReconcileContext,
  ): Promise<TenantCaStatus> {
    const namespace = this.config.OPERATOR_NAMESPACE;
    const root = this.root.get(objectKey({ namespace, name: this.config.ROOT_CA_SECRET }));
    const [rootCertificatePem, rootKeyPem] = [secretText(root, "tls.crt"), secretText(root, "tls.key")];
    if (!rootCertificatePem || !rootKeyPem)
      return {
        ready: false,
        reason: ConditionReason.RootCANotFound,
        message: `root CA Secret ${namespace}/${this.config.ROOT_CA_SECRET} has no tls.crt/tls.key`,
        requeueAfterMs: RETRY_MS,
      };
    const name = tenantCAName(tenant.metadata.name);
    // Absent from the cache of Secrets labelled as ours: read it, so that a Secret of that name that
    // is someone else's is found (and left alone) by a read, not by a create refused on every retry.
    const current =
      this.secrets.get(objectKey({ namespace, name })) ??
      ((await this.manager.client.get(Resource.secret, { namespace, name }, context.signal)) as
        | Secret
        | undefined);
    if (current && !current.metadata.ownerReferences?.some((r) => r.uid === tenant.metadata.uid))
      return notOurs(namespace, name);
    const nowMs = this.manager.clock.now();
    const decision = await tenantCaDecision({
      tenant: tenant.metadata.name,
      current: current && {
        certificatePem: secretText(current, "tls.crt"),
        keyPem: secretText(current, "tls.key"),
      },
      rootCertificatePem,
      nowMs,
    });
    if (decision.action === "keep")
      return {
        ready: true,
        reason: ConditionReason.Reconciled,
        message: "tenant CA signed by the root CA",
        requeueAfterMs: Math.min(decision.renewAtMs - nowMs, MAX_REQUEUE_MS),
      };
    const written = await this.write(
      tenant,
      current,
      decision,
      { certificatePem: rootCertificatePem, keyPem: rootKeyPem },
      context,
    );
    return written
      ? {
          ready: false,
          reason: ConditionReason.IssuerNotReady,
          message: `tenant CA ${decision.action}d: ${decision.reason}`,
          requeueAfterMs: RETRY_MS,
        }
      : notOurs(namespace, name);
  }

  /** Creates or replaces the CA Secret; false when a Secret of that name exists that is not ours. */
  private async write(
    tenant: { metadata: { name: string; uid?: string | undefined } },
    current: Secret | undefined,
    decision: Exclude<TenantCaDecision, { action: "keep" }>,
    root: { certificatePem: string; keyPem: string },
    context: ReconcileContext,
  ): Promise<boolean> {
    const keyPem = decision.action === "renew" ? (secretText(current, "tls.key") ?? newCaKey()) : newCaKey();
    const certificatePem = await signTenantCa({
      tenant: tenant.metadata.name,
      keyPem,
      root,
      nowMs: this.manager.clock.now(),
    });
    const object = {
      apiVersion: "v1",
      kind: "Secret",
      metadata: {
        name: tenantCAName(tenant.metadata.name),
        namespace: this.config.OPERATOR_NAMESPACE,
        labels: managedLabels(tenant.metadata.name),
        ownerReferences: [ownerReferenceTo("Tenant", tenant)],
        ...(current ? { resourceVersion: current.metadata.resourceVersion } : {}),
      },
      type: "kubernetes.io/tls",
      data: {
        "tls.crt": base64(certificatePem),
        "tls.key": base64(keyPem),
        "ca.crt": base64(root.certificatePem),
      },
    };
    try {
      // Create, never apply: a Secret of that name that we cannot see (not labelled as ours) is someone
      // else's and must make this fail (409) rather than be taken over.
      if (current) await this.manager.client.update(Resource.secret, object, context.signal);
      else await this.manager.client.create(Resource.secret, object, context.signal);
    } catch (error) {
      if (!current && error instanceof KubeApiError && error.code === 409) return false;
      throw error;
    }
    context.logger.info(
      { tenant: tenant.metadata.name, action: decision.action, reason: decision.reason },
      "tenant CA signed",
    );
    return true;
  }
}
