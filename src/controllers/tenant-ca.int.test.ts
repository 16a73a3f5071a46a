import { execFile } from "node:child_process";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { eventually, uniqueName } from "../../test/support/kube.js";
import { kubectl } from "../../test/support/kubectl.js";
import { connectWithCertificate, subscribeCodes, type TlsMaterial } from "../../test/support/mqtt.js";
import {
  applyDevice,
  applyManifest,
  applyReadyTenant,
  readyDevice,
  startTestOperator,
  TEST_INGRESS_DOMAIN,
} from "../../test/support/operator.js";
import { API_VERSION } from "../api/group.js";
import { MANAGED_BY_LABEL, MANAGER, TENANT_LABEL } from "../desired/labels.js";
import type { RunningOperator } from "../operator.js";
import * as x509 from "../pki/x509.js";

/**
 * I3 against the real cert-manager and Mosquitto: nothing a tenant admin can drive (cert-manager
 * resources, annotated Ingresses) yields a certificate the broker trusts. Certificates forged with
 * another tenant's subject (from the root, from the tenant's own CA) are refused in the shared
 * isolation suite (src/verify/shared-isolation.int.test.ts), which runs against every backend.
 */

const run = promisify(execFile);

async function secretData(namespace: string, name: string): Promise<Record<string, string>> {
  const result = await kubectl(["get", "secret", name, "-n", namespace, "-o", "json"]);
  if (!result.ok) throw new Error(result.stderr);
  const data = (JSON.parse(result.stdout) as { data: Record<string, string> }).data;
  return Object.fromEntries(
    Object.entries(data).map(([k, v]) => [k, Buffer.from(v, "base64").toString("utf8")]),
  );
}

/** Whether the broker accepts the certificate and lets it subscribe in `topic`. */
async function accepted(tls: TlsMaterial, topic: string): Promise<boolean> {
  const client = await connectWithCertificate(tls).catch(() => undefined);
  if (!client) return false;
  try {
    return (await subscribeCodes(client, topic))[0] === 1;
  } finally {
    await client.endAsync(true);
  }
}

describe("device identities come only from the tenant's own CA (I3)", () => {
  let operator: RunningOperator;
  let dir: string;
  const tenantA = uniqueName("ca-a");
  const tenantB = uniqueName("ca-b");
  const alice = { user: `alice-${tenantA}` };
  const ownTopicOf = (tenant: string) => `tenants/${tenant}/devices/sensor-1/#`;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "tenant-ca-"));
    operator = await startTestOperator();
    await applyReadyTenant(tenantA, { admins: [{ kind: "User", name: alice.user }] });
    await applyReadyTenant(tenantB);
    await applyDevice(tenantA, "sensor-1");
    await applyDevice(tenantB, "sensor-1");
    await Promise.all([readyDevice(tenantA, "sensor-1"), readyDevice(tenantB, "sensor-1")]);
  }, 180_000);
  afterAll(async () => {
    await operator?.stop();
  });

  it("issues device certificates that can only be client identities of their tenant (T7)", async () => {
    const ca = new x509.X509Certificate(
      (await secretData("iot-system", `tenant-${tenantA}-ca`))["tls.crt"] ?? "",
    );
    const [leafPem] = (await secretData(tenantA, "sensor-1-mqtt"))["tls.crt"]?.match(
      /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g,
    ) ?? [""];
    const leaf = new x509.X509Certificate(leafPem ?? "");
    expect(leaf.subject).toBe(`O=${tenantA}, CN=sensor-1`);
    expect(leaf.getExtension(x509.BasicConstraintsExtension)?.ca ?? false).toBe(false);
    const usages = leaf.getExtension(x509.KeyUsagesExtension)?.usages ?? 0;
    expect(usages & x509.KeyUsageFlags.keyCertSign).toBe(0);
    expect(leaf.getExtension(x509.ExtendedKeyUsageExtension)?.usages).toEqual([
      x509.ExtendedKeyUsage.clientAuth,
    ]);
    expect(leaf.issuer).toBe(ca.subject);
    expect(await leaf.verify({ publicKey: ca, signatureOnly: true })).toBe(true);

    // The tenant CA: signed by the root, path length 0, and constrained to its tenant's subjects.
    const root = new x509.X509Certificate(await readFile(inject("stack").deviceRootCA.certFile, "utf8"));
    expect(ca.issuer).toBe(root.subject);
    expect(await ca.verify({ publicKey: root, signatureOnly: true })).toBe(true);
    expect(ca.getExtension(x509.BasicConstraintsExtension)).toMatchObject({ ca: true, pathLength: 0 });
    const caFile = join(dir, "issued-ca.crt");
    await writeFile(caFile, ca.toString("pem"));
    const { stdout: text } = await run("openssl", [
      "x509",
      "-in",
      caFile,
      "-noout",
      "-ext",
      "nameConstraints",
    ]);
    // Not critical: nats-server (Go) refuses chains through a critical directoryName constraint.
    expect(text).not.toContain("critical");
    expect(text).toContain(`DirName:O = ${tenantA}`);
  });

  it.each([
    ["unlabelled", {}],
    ["labelled as the operator's", { [MANAGED_BY_LABEL]: MANAGER }],
  ])("never takes over a CA Secret it did not create, %s (I7)", async (_, labels) => {
    const name = uniqueName("ca-squat");
    const planted = {
      apiVersion: "v1",
      kind: "Secret",
      metadata: {
        name: `tenant-${name}-ca`,
        namespace: "iot-system",
        labels: { ...labels, [TENANT_LABEL]: name },
      },
      stringData: { "tls.crt": "theirs" },
    };
    expect((await kubectl(["create", "-f", "-"], { stdin: JSON.stringify(planted) })).ok).toBe(true);
    await applyManifest({ apiVersion: API_VERSION, kind: "Tenant", metadata: { name }, spec: {} });
    await eventually(`${name}: PKIReady=False naming the Secret`, async () => {
      const path =
        "jsonpath={.status.conditions[?(@.type=='PKIReady')].reason}: {.status.conditions[?(@.type=='PKIReady')].message}";
      const result = await kubectl(["get", "tenant", name, "-o", path]);
      return /^CANotOwned: .*is not this tenant's/.test(result.stdout) ? true : undefined;
    });
    expect((await secretData("iot-system", `tenant-${name}-ca`))["tls.crt"]).toBe("theirs");
    await kubectl(["delete", "tenant", name, "--wait=false"]);
  });

  it("gives a tenant admin no cert-manager object anywhere that could sign", async () => {
    expect((await kubectl(["get", "clusterissuer", "iot-root-ca"])).stderr).toMatch(/NotFound/);
    const issuer = (namespace?: string) =>
      JSON.stringify({
        apiVersion: "cert-manager.io/v1",
        kind: namespace ? "Issuer" : "ClusterIssuer",
        metadata: { name: "mine", ...(namespace ? { namespace } : {}) },
        spec: { ca: { secretName: "iot-root-ca" } },
      });
    const certificate = (namespace: string, kind: string, name: string) =>
      JSON.stringify({
        apiVersion: "cert-manager.io/v1",
        kind: "Certificate",
        metadata: { name: "forged", namespace },
        spec: {
          secretName: "forged",
          commonName: "sensor-1",
          subject: { organizations: [tenantB] },
          usages: ["client auth"],
          issuerRef: { kind, name },
        },
      });
    const request = (namespace: string) =>
      JSON.stringify({
        apiVersion: "cert-manager.io/v1",
        kind: "CertificateRequest",
        metadata: { name: "forged", namespace },
        spec: { request: "", issuerRef: { kind: "ClusterIssuer", name: "iot-root-ca" } },
      });
    for (const [what, stdin] of [
      ["Certificate from the root", certificate(tenantA, "ClusterIssuer", "iot-root-ca")],
      ["Certificate from B's CA", certificate("iot-system", "Issuer", `tenant-${tenantB}-ca`)],
      ["CertificateRequest here", request(tenantA)],
      ["CertificateRequest in iot-system", request("iot-system")],
      ["Issuer here", issuer(tenantA)],
      ["Issuer in iot-system", issuer("iot-system")],
      ["ClusterIssuer", issuer()],
    ] as const) {
      const result = await kubectl(["create", "-f", "-"], { as: alice, stdin });
      expect([what, result.ok, result.stderr]).toEqual([what, false, expect.stringMatching(/forbidden/i)]);
    }
    // Positive twin: the same admin can create ordinary objects in the tenant's namespace.
    expect((await kubectl(["-n", tenantA, "create", "configmap", uniqueName("ok")], { as: alice })).ok).toBe(
      true,
    );
  });

  /** Annotated Ingresses as users write them: a subject claiming B's device, from three issuers. */
  const ingressAttempts = {
    "via-root": { "cert-manager.io/cluster-issuer": "iot-root-ca" },
    "via-b": { "cert-manager.io/issuer": `tenant-${tenantB}-ca` },
    "via-self": { "cert-manager.io/issuer": "self" },
  };

  function annotatedIngress(namespace: string, name: string, annotations: Record<string, string>): string {
    // Tenant Ingress hosts must lie under the namespace's own domain (the cluster's admission policy).
    const host = `${name}.${namespace}.${TEST_INGRESS_DOMAIN}`;
    const backend = { service: { name: "web", port: { number: 80 } } };
    return JSON.stringify({
      apiVersion: "networking.k8s.io/v1",
      kind: "Ingress",
      metadata: {
        name,
        namespace,
        annotations: {
          "cert-manager.io/common-name": "sensor-1",
          "cert-manager.io/subject-organizations": tenantB,
          "cert-manager.io/usages": "client auth",
          ...annotations,
        },
      },
      spec: {
        tls: [{ hosts: [host], secretName: `${name}-tls` }],
        rules: [{ host, http: { paths: [{ path: "/", pathType: "Prefix", backend }] } }],
      },
    });
  }

  /** Creates the attempts in `namespace`; resolves what the shim made of each that was admitted. */
  async function shimOutcomes(
    namespace: string,
    as?: { user: string },
  ): Promise<Record<string, "refused" | "issuer not found" | TlsMaterial>> {
    // A SelfSigned Issuer the platform team made: the shim's positive twin.
    const selfSigned = {
      apiVersion: "cert-manager.io/v1",
      kind: "Issuer",
      metadata: { name: "self", namespace },
    };
    expect(
      (
        await kubectl(["create", "-f", "-"], {
          stdin: JSON.stringify({ ...selfSigned, spec: { selfSigned: {} } }),
        })
      ).ok,
    ).toBe(true);
    const outcomes: Record<string, "refused" | "issuer not found" | TlsMaterial> = {};
    const ca = await readFile(inject("stack").broker.caFile);
    for (const [name, annotations] of Object.entries(ingressAttempts)) {
      const created = await kubectl(["create", "-f", "-"], {
        ...(as ? { as } : {}),
        stdin: annotatedIngress(namespace, name, annotations),
      });
      if (!created.ok) {
        // The cluster's admission policy may refuse the annotations outright, naming them.
        expect(created.stderr).toMatch(/cert-manager\.io\//);
        outcomes[name] = "refused";
        continue;
      }
      outcomes[name] = await eventually(
        `${name}: a certificate, or an issuer that is not there`,
        async () => {
          const data = await secretData(namespace, `${name}-tls`).catch(() => undefined);
          if (data?.["tls.crt"]) return { ca, cert: data["tls.crt"], key: data["tls.key"] ?? "" };
          const listed = await kubectl(["-n", namespace, "get", "certificaterequests", "-o", "json"]);
          const requests =
            (
              JSON.parse(listed.stdout || "{}") as {
                items?: Array<{
                  metadata: { name: string };
                  status?: { conditions?: Array<{ message?: string }> };
                }>;
              }
            ).items ?? [];
          const notFound = requests.some(
            (r) =>
              r.metadata.name.startsWith(`${name}-tls`) &&
              r.status?.conditions?.some((c) => /not found/.test(c.message ?? "")),
          );
          return notFound ? ("issuer not found" as const) : undefined;
        },
        90_000,
      );
    }
    return outcomes;
  }

  it("turns no annotated Ingress in a tenant namespace into a certificate the broker accepts", async () => {
    const outcomes = await shimOutcomes(tenantA, alice);
    for (const [name, outcome] of Object.entries(outcomes)) {
      if (typeof outcome === "object")
        expect([name, await accepted(outcome, ownTopicOf(tenantB))]).toEqual([name, false]);
    }
  });

  it("gives cert-manager's ingress-shim no path to the root from any namespace", async () => {
    // Outside every tenant, so no admission policy stands in front of the shim: the PKI alone holds.
    const scratch = uniqueName("shim");
    expect((await kubectl(["create", "namespace", scratch])).ok).toBe(true);
    const outcomes = await shimOutcomes(scratch);
    expect(outcomes["via-root"]).toBe("issuer not found");
    expect(outcomes["via-b"]).toBe("issuer not found");
    // Positive twin: the shim runs and issues from the namespace's own issuer, which the broker refuses.
    const self = outcomes["via-self"];
    expect(typeof self).toBe("object");
    if (typeof self === "object") expect(await accepted(self, ownTopicOf(tenantB))).toBe(false);
    await kubectl(["delete", "namespace", scratch, "--wait=false"]);
  });
});
