import { tenantCAName } from "../api/derived-names.js";
import type { OperatorConfig } from "../config.js";
import type { KubeObject } from "./tenant.js";

/**
 * The cert-manager CA Issuer of a tenant, in the operator's namespace: it issues the tenant's device
 * certificates from the tenant CA Secret, which the operator signs itself (src/pki/tenant-ca.ts).
 * Only the operator's namespace can reference it, and no Issuer anywhere holds the root key.
 */
export function tenantPki(
  tenant: string,
  config: Pick<OperatorConfig, "OPERATOR_NAMESPACE">,
  meta: (name: string, namespace: string) => KubeObject["metadata"],
): KubeObject[] {
  const caName = tenantCAName(tenant);
  return [
    {
      apiVersion: "cert-manager.io/v1",
      kind: "Issuer",
      // Owned by the Tenant like everything else it gets: the finalizer deletes only what the Tenant owns (I7).
      metadata: meta(caName, config.OPERATOR_NAMESPACE),
      spec: { ca: { secretName: caName } },
    },
  ];
}
