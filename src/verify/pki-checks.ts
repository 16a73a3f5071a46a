import { z } from "zod";
import { tenantCAName } from "../api/derived-names.js";
import type { OperatorConfig } from "../config.js";
import { Resource } from "../controllers/resources.js";
import { BROKER_CRL_KEY, BROKER_CRL_SECRET } from "../controllers/revocation.js";
import { isTrustedSigner, tenantCaProblem } from "../pki/tenant-ca.js";
import * as x509 from "../pki/x509.js";
import type { KubeClient } from "../runtime/kube-client.js";
import { resourcePath } from "../runtime/kube-object.js";
import type { IsolationCheck, TenantView } from "./isolation.js";

/**
 * I3 on a live cluster: every certificate path the broker trusts goes through a tenant CA. The
 * root's key and every CA the root signed live only in the operator's own Secrets (no copy behind a
 * ClusterIssuer or elsewhere); each tenant CA can sign only its own tenant's subjects; the broker's
 * CRLs come from tenant CAs only, so it refuses any leaf the root signs directly.
 */

const secretSchema = z
  .object({
    metadata: z.object({ name: z.string(), namespace: z.string().optional() }).loose(),
    data: z.record(z.string(), z.string()).optional(),
  })
  .loose();
const secretListSchema = z.object({ items: z.array(secretSchema) });
type SecretData = z.infer<typeof secretSchema>;

const text = (secret: SecretData | undefined, key: string) => {
  const value = secret?.data?.[key];
  return value === undefined ? undefined : Buffer.from(value, "base64").toString("utf8");
};

export async function pkiChecks(
  client: KubeClient,
  config: Pick<OperatorConfig, "OPERATOR_NAMESPACE" | "ROOT_CA_SECRET" | "BROKER_NAMESPACE">,
  tenants: readonly TenantView[],
  checked: readonly TenantView[],
): Promise<IsolationCheck[]> {
  const get = async (namespace: string, name: string) => {
    const found = await client.get(Resource.secret, { namespace, name });
    return found ? secretSchema.parse(found) : undefined;
  };
  const rootPem = text(await get(config.OPERATOR_NAMESPACE, config.ROOT_CA_SECRET), "tls.crt");
  if (!rootPem) {
    const detail = `Secret ${config.OPERATOR_NAMESPACE}/${config.ROOT_CA_SECRET} not readable: nothing to compare with`;
    return [
      { property: "I3", tenant: "*", check: "device CAs stay with the operator", result: "SKIP", detail },
    ];
  }
  const root = new x509.X509Certificate(rootPem);
  const checks: IsolationCheck[] = [];

  for (const tenant of checked) {
    const caPem = text(await get(config.OPERATOR_NAMESPACE, tenantCAName(tenant.name)), "tls.crt");
    const problem = caPem
      ? await tenantCaProblem(tenant.name, new x509.X509Certificate(caPem), root)
      : "no CA certificate yet";
    checks.push({
      property: "I3",
      tenant: tenant.name,
      check: `the tenant's CA can sign only subjects O=${tenant.name}`,
      result: caPem === undefined ? "SKIP" : problem ? "FAIL" : "PASS",
      detail: problem ?? "critical NameConstraints, path length 0, signed by the root",
    });
  }

  // Every TLS Secret in the cluster: the key of the root or of a CA it signed may sit only in the operator's.
  const allowed = new Set([
    `${config.OPERATOR_NAMESPACE}/${config.ROOT_CA_SECRET}`,
    ...tenants.map((t) => `${config.OPERATOR_NAMESPACE}/${tenantCAName(t.name)}`),
  ]);
  const secrets = secretListSchema.parse(
    await client.request({
      verb: "list",
      method: "GET",
      path: resourcePath(Resource.secret, {}),
      query: { fieldSelector: "type=kubernetes.io/tls" },
    }),
  ).items;
  const leaked: string[] = [];
  for (const secret of secrets) {
    const where = `${secret.metadata.namespace}/${secret.metadata.name}`;
    const pem = text(secret, "tls.crt");
    if (allowed.has(where) || !pem || !secret.data?.["tls.key"]) continue;
    if (await isTrustedSigner(pem, root)) leaked.push(where);
  }
  checks.push({
    property: "I3",
    tenant: "*",
    check: "no key of a CA the broker trusts outside the operator's Secrets",
    result: leaked.length ? "FAIL" : "PASS",
    detail: leaked.length
      ? `signing key of the root or a CA it signed in: ${leaked.join(", ")}`
      : `${secrets.length} TLS Secrets checked`,
  });

  const bundle = text(await get(config.BROKER_NAMESPACE, BROKER_CRL_SECRET), BROKER_CRL_KEY);
  if (bundle === undefined) {
    checks.push({
      property: "I3",
      tenant: "*",
      check: "the broker refuses leaves the root signs directly",
      result: "SKIP",
      detail: `Secret ${config.BROKER_NAMESPACE}/${BROKER_CRL_SECRET} not found: no CRL bundle to read`,
    });
    return checks;
  }
  const issuers = [...bundle.matchAll(/-----BEGIN X509 CRL-----[\s\S]+?-----END X509 CRL-----/g)].map(
    (m) => new x509.X509Crl(m[0]).issuer,
  );
  const rootCrls = issuers.filter((issuer) => issuer === root.subject).length;
  checks.push({
    property: "I3",
    tenant: "*",
    check: "the broker refuses leaves the root signs directly",
    result: rootCrls ? "FAIL" : "PASS",
    detail: rootCrls
      ? "the broker's CRL bundle holds the root's CRL: it accepts leaves the root signs directly"
      : `${issuers.length} CRLs in the broker's bundle, none from the root: a leaf without a tenant CA is refused`,
  });
  return checks;
}
