import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { repoRoot } from "../../test/harness/stack.js";
import { uniqueName } from "../../test/support/kube.js";
import { applyObjects, kubectl } from "../../test/support/kubectl.js";
import { parseTenant } from "../api/tenant.js";
import { operatorConfigSchema } from "../config.js";
import { clusterObjects } from "./cluster.js";
import { MANAGED_BY_LABEL, MANAGER, TENANT_LABEL } from "./labels.js";
import { desiredTenant, TenantObjectName } from "./tenant.js";

/**
 * I5 against the real API server: what a tenant admin can and cannot do once a tenant's
 * objects, the tenant-admin ClusterRole and the admission policy are in place.
 */

const config = operatorConfigSchema.parse({});

async function createTenant(name: string, admin: string) {
  const manifest = {
    apiVersion: "iot.tenant-operator.io/v1alpha1",
    kind: "Tenant",
    metadata: { name },
    spec: { admins: [{ kind: "User", name: admin }] },
  };
  const created = await kubectl(["create", "-o", "json", "-f", "-"], { stdin: JSON.stringify(manifest) });
  if (!created.ok) throw new Error(created.stderr);
  const tenant = {
    ...parseTenant(JSON.parse(created.stdout)),
    metadata: JSON.parse(created.stdout).metadata,
  };
  const desired = desiredTenant(tenant, config);
  await applyObjects(desired.namespaces);
  await applyObjects(desired.namespaced);
}

describe("a tenant admin (I5)", () => {
  const tenantA = uniqueName("ta");
  const tenantB = uniqueName("tb");
  const alice = { user: `alice-${tenantA}` };

  beforeAll(async () => {
    await kubectl(["apply", "--server-side", "-f", join(repoRoot, "crds")]);
    await kubectl(["wait", "--for=condition=Established", "crd/tenants.iot.tenant-operator.io"]);
    await applyObjects(clusterObjects(config));
    await createTenant(tenantA, alice.user);
    await createTenant(tenantB, `bob-${tenantB}`);
    await applyObjects([
      {
        apiVersion: "v1",
        kind: "Secret",
        metadata: {
          name: "device-creds",
          namespace: tenantA,
          labels: { [TENANT_LABEL]: tenantA, [MANAGED_BY_LABEL]: MANAGER },
        },
        stringData: { password: "s3cret" },
      },
      {
        apiVersion: "v1",
        kind: "Secret",
        metadata: { name: "private", namespace: tenantB },
        stringData: { k: "v" },
      },
    ]);
  });

  it("may run workloads in its own namespace", async () => {
    const created = await kubectl(
      ["-n", tenantA, "create", "configmap", "app-settings", "--from-literal=a=b"],
      { as: alice },
    );
    expect(created.stderr).toBe("");
    expect(created.ok).toBe(true);
  });

  it.each([
    {
      what: "delete the default-deny NetworkPolicy",
      args: (a: string) => ["-n", a, "delete", "networkpolicy", TenantObjectName.defaultDeny],
    },
    {
      what: "create its own NetworkPolicy",
      args: (a: string) => ["-n", a, "create", "-f", "-"],
      stdin: (a: string) =>
        JSON.stringify({
          apiVersion: "networking.k8s.io/v1",
          kind: "NetworkPolicy",
          metadata: { name: "open", namespace: a },
          spec: { podSelector: {}, ingress: [{}] },
        }),
    },
    {
      what: "edit the ResourceQuota",
      args: (a: string) => [
        "-n",
        a,
        "patch",
        "resourcequota",
        TenantObjectName.quota,
        "--type=merge",
        "-p",
        '{"spec":{"hard":{"pods":"1000"}}}',
      ],
    },
    {
      what: "bind itself to cluster-admin",
      args: (a: string) => [
        "-n",
        a,
        "create",
        "rolebinding",
        "escalate",
        "--clusterrole=cluster-admin",
        `--user=alice-${a}`,
      ],
    },
    {
      what: "create a cert-manager Certificate",
      args: (a: string) => ["-n", a, "create", "-f", "-"],
      stdin: (a: string) =>
        JSON.stringify({
          apiVersion: "cert-manager.io/v1",
          kind: "Certificate",
          metadata: { name: "forged", namespace: a },
          spec: {
            secretName: "forged",
            commonName: "x",
            issuerRef: { name: "iot-root-ca", kind: "ClusterIssuer" },
          },
        }),
    },
    { what: "list namespaces", args: () => ["get", "namespaces"] },
  ])("cannot $what (RBAC)", async ({ args, stdin }) => {
    const result = await kubectl(args(tenantA), { as: alice, ...(stdin ? { stdin: stdin(tenantA) } : {}) });
    expect(result.ok).toBe(false);
    expect(result.stderr).toMatch(/forbidden/i);
  });

  it.each([
    { what: "read another tenant's Secret", args: () => ["-n", tenantB, "get", "secret", "private"] },
    { what: "list another tenant's Devices", args: () => ["-n", tenantB, "get", "devices"] },
    {
      what: "create a ConfigMap in another tenant's namespace",
      args: () => ["-n", tenantB, "create", "configmap", "x"],
    },
  ])("cannot $what (RBAC)", async ({ args }) => {
    const result = await kubectl(args(), { as: alice });
    expect(result.ok).toBe(false);
    expect(result.stderr).toMatch(/forbidden/i);
  });

  const forgedConfigMap = (labels: Record<string, string>) =>
    JSON.stringify({
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: uniqueName("forged"), namespace: tenantA, labels },
    });

  it.each([
    {
      what: "delete a Secret the operator manages",
      args: () => ["-n", tenantA, "delete", "secret", "device-creds"],
      message: /iot-tenant-operator manages Secret device-creds/,
    },
    {
      what: "strip the tenant label from a Secret the operator manages",
      args: () => ["-n", tenantA, "label", "secret", "device-creds", `${TENANT_LABEL}-`],
      message: /iot-tenant-operator manages Secret device-creds/,
    },
    {
      what: "forge the managed-by label",
      args: () => ["create", "-f", "-"],
      stdin: () => forgedConfigMap({ [MANAGED_BY_LABEL]: MANAGER }),
      message: /reserved for the operator/,
    },
    {
      what: "label an object as another tenant's",
      args: () => ["create", "-f", "-"],
      stdin: () => forgedConfigMap({ [TENANT_LABEL]: tenantB }),
      message: /must name the tenant that owns the namespace/,
    },
  ])("cannot $what (admission policy)", async ({ args, stdin, message }) => {
    const result = await kubectl(args(), { as: alice, ...(stdin ? { stdin: stdin() } : {}) });
    expect(result.ok).toBe(false);
    expect(result.stderr).toMatch(message);
    expect(result.stderr).toMatch(/ValidatingAdmissionPolicy 'iot-tenant-guard'/);
  });
});
