import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";
import { repoRoot } from "../../test/harness/stack.js";
import { uniqueName } from "../../test/support/kube.js";
import { applyObjects, kubectl } from "../../test/support/kubectl.js";
import {
  stackOperatorConfig,
  TEST_INGRESS_DOMAIN,
  TEST_TENANT_PRIORITY_CLASS,
} from "../../test/support/operator.js";
import { parseTenant } from "../api/tenant.js";
import { clusterObjects } from "./cluster.js";
import { MANAGED_BY_LABEL, MANAGER, TENANT_LABEL } from "./labels.js";
import { desiredTenant, TenantObjectName } from "./tenant.js";

/**
 * I5 against the real API server: what a tenant admin can and cannot do once a tenant's
 * objects, the tenant-admin ClusterRole and the admission policy are in place.
 */

async function createTenant(name: string, admin: { kind: "User" | "Group"; name: string }) {
  const manifest = {
    apiVersion: "iot.tenant-operator.io/v1alpha1",
    kind: "Tenant",
    metadata: { name },
    spec: { admins: [admin] },
  };
  const created = await kubectl(["create", "-o", "json", "-f", "-"], { stdin: JSON.stringify(manifest) });
  if (!created.ok) throw new Error(created.stderr);
  const tenant = {
    ...parseTenant(JSON.parse(created.stdout)),
    metadata: JSON.parse(created.stdout).metadata,
  };
  const desired = desiredTenant(tenant, stackOperatorConfig());
  await applyObjects(desired.namespaces);
  await applyObjects(desired.namespaced);
}

/**
 * The real Gateway CRD, from the Gateway API module that the stack's cert-manager is built with
 * (the module cache holds it since the build).
 */
async function gatewayCrdFile(): Promise<string> {
  const goMod = await readFile(join(repoRoot, "test/tools/cert-manager/go.mod"), "utf8");
  const version = /sigs\.k8s\.io\/gateway-api (v\S+)/.exec(goMod)?.[1];
  if (!version) throw new Error("cert-manager's go.mod names no gateway-api version");
  const { stdout } = await promisify(execFile)("go", ["env", "GOMODCACHE"]);
  return join(
    stdout.trim(),
    `sigs.k8s.io/gateway-api@${version}`,
    "config/crd/standard/gateway.networking.k8s.io_gateways.yaml",
  );
}

/** Creates `object` with a server dry run as `as`: it passes RBAC and every admission check, and nothing is stored. */
function dryRunCreate(object: unknown, as: { user: string; groups?: string[] }) {
  return kubectl(["create", "--dry-run=server", "-o", "name", "-f", "-"], {
    as,
    stdin: JSON.stringify(object),
  });
}

describe("a tenant admin (I5)", () => {
  const tenantA = uniqueName("ta");
  const tenantB = uniqueName("tb");
  const alice = { user: `alice-${tenantA}` };
  const bobGroup = `admins-${tenantB}`;

  beforeAll(async () => {
    await kubectl(["apply", "--server-side", "-f", join(repoRoot, "crds")]);
    await kubectl(["wait", "--for=condition=Established", "crd/tenants.iot.tenant-operator.io"]);
    const config = stackOperatorConfig();
    await applyObjects([
      { apiVersion: "v1", kind: "Namespace", metadata: { name: config.OPERATOR_NAMESPACE } },
    ]);
    await applyObjects(clusterObjects(config));
    await applyObjects([
      {
        apiVersion: "scheduling.k8s.io/v1",
        kind: "PriorityClass",
        metadata: { name: TEST_TENANT_PRIORITY_CLASS },
        value: 100,
      },
    ]);
    await createTenant(tenantA, { kind: "User", name: alice.user });
    await createTenant(tenantB, { kind: "Group", name: bobGroup });
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
    { what: "read a Secret", args: (ns: string, secret: string) => ["-n", ns, "get", "secret", secret] },
    { what: "list Devices", args: (ns: string) => ["-n", ns, "get", "devices"] },
    {
      what: "create a ConfigMap",
      args: (ns: string) => ["-n", ns, "create", "configmap", uniqueName("cm")],
    },
  ])("may $what in its own namespace and not in another tenant's (RBAC)", async ({ args }) => {
    const own = await kubectl(args(tenantA, "device-creds"), { as: alice });
    expect(own.stderr).not.toMatch(/forbidden/i);
    expect(own.ok).toBe(true);
    const foreign = await kubectl(args(tenantB, "private"), { as: alice });
    expect(foreign.ok).toBe(false);
    expect(foreign.stderr).toMatch(/forbidden/i);
  });

  it("is bound as a group, too: the group's member works in its namespace and not in the other", async () => {
    const bob = { user: "bob", groups: [bobGroup] };
    const own = await kubectl(["-n", tenantB, "create", "configmap", uniqueName("cm")], { as: bob });
    expect(own.stderr).toBe("");
    const foreign = await kubectl(["-n", tenantA, "create", "configmap", uniqueName("cm")], { as: bob });
    expect(foreign.stderr).toMatch(/forbidden/i);
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

  it("may delete its own Secret and label an object with its own tenant (the twins of the refusals)", async () => {
    const secret = uniqueName("mine");
    expect((await kubectl(["-n", tenantA, "create", "secret", "generic", secret], { as: alice })).ok).toBe(
      true,
    );
    const deleted = await kubectl(["-n", tenantA, "delete", "secret", secret], { as: alice });
    expect(deleted.stderr).toBe("");
    const labelled = await kubectl(["create", "-f", "-"], {
      as: alice,
      stdin: forgedConfigMap({ [TENANT_LABEL]: tenantA }),
    });
    expect(labelled.stderr).toBe("");
  });

  const restricted = {
    securityContext: { runAsNonRoot: true, runAsUser: 1000, seccompProfile: { type: "RuntimeDefault" } },
    containers: [
      {
        name: "app",
        image: "registry.example/app:1",
        securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ["ALL"] } },
      },
    ],
  };
  const inA = (apiVersion: string, kind: string, spec: object, metadata: object = {}) => ({
    apiVersion,
    kind,
    metadata: { name: uniqueName(kind.toLowerCase()), namespace: tenantA, ...metadata },
    spec,
  });
  const pod = (extra: object = {}) => inA("v1", "Pod", { ...restricted, ...extra });
  const template = (extra: object = {}, labels: Record<string, string> = { app: "web" }) => ({
    metadata: { labels },
    spec: { ...restricted, ...extra },
  });
  const deployment = (extra: object = {}, labels?: Record<string, string>) =>
    inA("apps/v1", "Deployment", {
      selector: { matchLabels: { app: "web" } },
      template: template(extra, { app: "web", ...labels }),
    });
  const cronJob = (extra: object) =>
    inA("batch/v1", "CronJob", {
      schedule: "* * * * *",
      jobTemplate: { spec: { template: template({ restartPolicy: "Never", ...extra }) } },
    });
  const service = (extra: object) =>
    inA("v1", "Service", { selector: { app: "web" }, ports: [{ port: 80 }], ...extra });
  const claim = (extra: object = {}) =>
    inA("v1", "PersistentVolumeClaim", {
      accessModes: ["ReadWriteOnce"],
      resources: { requests: { storage: "1Gi" } },
      ...extra,
    });
  const ingress = (rules: object[], extra: object = {}, annotations: Record<string, string> = {}) =>
    inA(
      "networking.k8s.io/v1",
      "Ingress",
      { rules, ...extra },
      Object.keys(annotations).length ? { annotations } : {},
    );
  const backend = { service: { name: "web", port: { number: 80 } } };
  const hostRule = (host?: string) => ({
    ...(host ? { host } : {}),
    http: { paths: [{ path: "/", pathType: "Prefix", backend }] },
  });
  const ownHost = () => `web.${tenantA}.${TEST_INGRESS_DOMAIN}`;
  const otherTenantsHost = () => `web.${tenantB}.${TEST_INGRESS_DOMAIN}`;

  it.each([
    {
      what: "a Service with spec.externalIPs (traffic interception, CVE-2020-8554)",
      refused: () => service({ externalIPs: ["10.0.0.10"] }),
      message: /spec\.externalIPs is refused/,
      allowed: () => service({}),
    },
    {
      what: "a NodePort Service",
      refused: () => service({ type: "NodePort" }),
      message: /spec\.type: NodePort is not on the platform allow-list/,
      allowed: () => service({ type: "ClusterIP" }),
    },
    {
      what: "a LoadBalancer Service",
      refused: () => service({ type: "LoadBalancer" }),
      message: /spec\.type: LoadBalancer is not on the platform allow-list/,
      allowed: () => service({ type: "ClusterIP" }),
    },
    {
      what: "an ExternalName Service (a confused deputy for ingress controllers)",
      refused: () =>
        inA("v1", "Service", { type: "ExternalName", externalName: "web.other.svc.cluster.local" }),
      message: /spec\.type: ExternalName is not on the platform allow-list/,
      allowed: () => service({}),
    },
    {
      what: "a Pod with the system-node-critical priority class",
      refused: () => pod({ priorityClassName: "system-node-critical" }),
      message: /spec\.priorityClassName: system-node-critical is not on the platform allow-list/,
      allowed: () => pod({ priorityClassName: TEST_TENANT_PRIORITY_CLASS }),
    },
    {
      what: "a Pod with the system-cluster-critical priority class",
      refused: () => pod({ priorityClassName: "system-cluster-critical" }),
      message: /spec\.priorityClassName: system-cluster-critical is not on the platform allow-list/,
      allowed: () => pod(),
    },
    {
      what: "a Deployment whose pods would get a critical priority class (pods come from the controller)",
      refused: () => deployment({ priorityClassName: "system-node-critical" }),
      message: /spec\.template\.spec\.priorityClassName: system-node-critical/,
      allowed: () => deployment({ priorityClassName: TEST_TENANT_PRIORITY_CLASS }),
    },
    {
      what: "a CronJob whose pods would get a critical priority class",
      refused: () => cronJob({ priorityClassName: "system-cluster-critical" }),
      message: /spec\.jobTemplate\.spec\.template\.spec\.priorityClassName: system-cluster-critical/,
      allowed: () => cronJob({}),
    },
    {
      what: "a Deployment whose pods would carry the operator's label",
      refused: () => deployment({}, { [MANAGED_BY_LABEL]: MANAGER }),
      message: /templates cannot carry the label/,
      allowed: () => deployment({}, { [TENANT_LABEL]: tenantA }),
    },
    {
      what: "a Deployment whose pods would carry another tenant's label",
      refused: () => deployment({}, { [TENANT_LABEL]: tenantB }),
      message: /templates cannot carry the label/,
      allowed: () => deployment({}),
    },
    {
      what: "a claim that binds a PersistentVolume by name (another tenant's volume)",
      refused: () => claim({ volumeName: `pv-of-${tenantB}` }),
      message: /spec\.volumeName is refused/,
      allowed: () => claim(),
    },
    {
      what: "an Ingress for another tenant's host",
      refused: () => ingress([hostRule(otherTenantsHost())]),
      message: /spec\.rules\[\]\.host and spec\.tls\[\]\.hosts must lie under .*, not: web\./,
      allowed: () => ingress([hostRule(ownHost())]),
    },
    {
      what: "an Ingress rule without a host (catches every host)",
      refused: () => ingress([hostRule()]),
      message: /must lie under .*, not: \(no host\)/,
      allowed: () => ingress([hostRule(`${tenantA}.${TEST_INGRESS_DOMAIN}`)]),
    },
    {
      what: "an Ingress with a default backend",
      refused: () => ingress([hostRule(ownHost())], { defaultBackend: backend }),
      message: /spec\.defaultBackend is refused/,
      allowed: () => ingress([hostRule(ownHost())]),
    },
    {
      what: "an Ingress with TLS for another tenant's host",
      refused: () =>
        ingress([hostRule(ownHost())], { tls: [{ hosts: [otherTenantsHost()], secretName: "t" }] }),
      message: /must lie under .*, not: web\./,
      allowed: () => ingress([hostRule(ownHost())], { tls: [{ hosts: [ownHost()], secretName: "t" }] }),
    },
    ...[
      "cert-manager.io/cluster-issuer",
      "cert-manager.io/issuer",
      "cert-manager.io/common-name",
      "cert-manager.io/subject-organizations",
      "cert-manager.io/usages",
      "cert-manager.io/duration",
      "acme.cert-manager.io/http01-edit-in-place",
    ].map((annotation) => ({
      what: `an Ingress annotated ${annotation} (cert-manager's ingress-shim would issue from it)`,
      refused: () =>
        ingress(
          [hostRule(ownHost())],
          { tls: [{ hosts: [ownHost()], secretName: "t" }] },
          { [annotation]: "x" },
        ),
      message: new RegExp(`annotation ${annotation.replaceAll(".", "\\.")} is refused`),
      allowed: () =>
        ingress(
          [hostRule(ownHost())],
          { tls: [{ hosts: [ownHost()], secretName: "t" }] },
          { "nginx.ingress.kubernetes.io/ssl-redirect": "true" },
        ),
    })),
  ])("cannot create $what; the allowed twin is admitted (admission policy)", async ({
    refused,
    message,
    allowed,
  }) => {
    const denied = await dryRunCreate(refused(), alice);
    expect(denied.ok).toBe(false);
    expect(denied.stderr).toMatch(/ValidatingAdmissionPolicy 'iot-tenant-guard'/);
    expect(denied.stderr).toMatch(message);
    const admitted = await dryRunCreate(allowed(), alice);
    expect(admitted.stderr).toBe("");
    expect(admitted.ok).toBe(true);
  });

  it("cannot annotate a Gateway for cert-manager either, where the platform lets tenants create Gateways", async () => {
    // A user of the tenant's namespace whom the platform lets create Gateways (alice keeps the plain role).
    const gatewayUser = { user: `gateways-${tenantA}` };
    const crd = await kubectl(["apply", "--server-side", "-f", await gatewayCrdFile()]);
    expect(crd.stderr).toBe("");
    await kubectl(["wait", "--for=condition=Established", "crd/gateways.gateway.networking.k8s.io"]);
    await applyObjects([
      {
        apiVersion: "rbac.authorization.k8s.io/v1",
        kind: "Role",
        metadata: { name: "gateways", namespace: tenantA },
        rules: [{ apiGroups: ["gateway.networking.k8s.io"], resources: ["gateways"], verbs: ["create"] }],
      },
      {
        apiVersion: "rbac.authorization.k8s.io/v1",
        kind: "RoleBinding",
        metadata: { name: "gateways", namespace: tenantA },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "gateways" },
        subjects: [{ kind: "User", name: gatewayUser.user, apiGroup: "rbac.authorization.k8s.io" }],
      },
    ]);
    const gateway = (annotations: Record<string, string>) => ({
      apiVersion: "gateway.networking.k8s.io/v1",
      kind: "Gateway",
      metadata: { name: uniqueName("gw"), namespace: tenantA, annotations },
      spec: { gatewayClassName: "platform", listeners: [{ name: "http", port: 80, protocol: "HTTP" }] },
    });
    const denied = await dryRunCreate(gateway({ "cert-manager.io/issuer": "x" }), gatewayUser);
    expect(denied.stderr).toMatch(/ValidatingAdmissionPolicy 'iot-tenant-guard'/);
    expect(denied.stderr).toMatch(/annotation cert-manager\.io\/issuer is refused/);
    const admitted = await dryRunCreate(gateway({ "example.com/team": "web" }), gatewayUser);
    expect(admitted.stderr).toBe("");
    expect(admitted.ok).toBe(true);
  });

  it.each([
    {
      what: "add an ephemeral container (pods/ephemeralcontainers)",
      args: ["patch", "pods", "--subresource=ephemeralcontainers"],
      twin: ["patch", "pods"],
    },
    {
      what: "write a Service's status (services/status)",
      args: ["update", "services", "--subresource=status"],
      twin: ["update", "services"],
    },
    {
      what: "request ServiceAccount tokens (serviceaccounts/token)",
      args: ["create", "serviceaccounts", "--subresource=token"],
      twin: ["create", "serviceaccounts"],
    },
    {
      what: "write Endpoints (selector-less Services pointing anywhere)",
      args: ["create", "endpoints"],
      twin: ["get", "endpoints"],
    },
    {
      what: "write EndpointSlices",
      args: ["create", "endpointslices.discovery.k8s.io"],
      twin: ["get", "endpoints"],
    },
    {
      what: "evict pods through the eviction API",
      args: ["create", "pods", "--subresource=eviction"],
      twin: ["delete", "pods"],
    },
    {
      what: "create Gateway API routes",
      args: ["create", "httproutes.gateway.networking.k8s.io"],
      twin: ["create", "ingresses.networking.k8s.io"],
    },
    {
      what: "create Gateways",
      args: ["create", "gateways.gateway.networking.k8s.io"],
      twin: ["create", "ingresses.networking.k8s.io"],
    },
    {
      what: "create cert-manager CertificateRequests",
      args: ["create", "certificaterequests.cert-manager.io"],
      twin: ["create", "configmaps"],
    },
    {
      what: "create cert-manager Issuers",
      args: ["create", "issuers.cert-manager.io"],
      twin: ["create", "configmaps"],
    },
  ])("cannot $what in its own namespace (RBAC), while the twin is allowed", async ({ args, twin }) => {
    const canI = async (request: string[]) =>
      (await kubectl(["auth", "can-i", ...request, "-n", tenantA], { as: alice })).stdout.trim();
    expect(await canI(args)).toBe("no");
    expect(await canI(twin)).toBe("yes");
  });

  it.each([
    ["create", "persistentvolumes"],
    ["create", "priorityclasses.scheduling.k8s.io"],
    ["create", "namespaces"],
    ["update", "namespaces"],
    ["create", "validatingadmissionpolicybindings.admissionregistration.k8s.io"],
  ])("cannot %s %s (cluster-scoped, RBAC)", async (...request) => {
    const answer = await kubectl(["auth", "can-i", ...request], { as: alice });
    expect(answer.stdout.trim()).toBe("no");
  });

  it("may exec and port-forward into its own pods, not into another tenant's (RBAC)", async () => {
    for (const sub of ["exec", "portforward"]) {
      const canI = async (ns: string) =>
        (
          await kubectl(["auth", "can-i", "create", "pods", `--subresource=${sub}`, "-n", ns], { as: alice })
        ).stdout.trim();
      expect(await canI(tenantA)).toBe("yes");
      expect(await canI(tenantB)).toBe("no");
    }
  });
});
